"""Rules and the people: restock alerts for staff, offers for shoppers, alert webhooks.

The gateway calls `install(gw)` once at start; see rules/service.py (commands, tasks) and rules/engine.py
(the Reactor). Submodules import `edge.config`, so nothing is imported here at package import time
(`edge.config` imports `rules.config` for the manifest sections).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge.runtime import GatewayView
    from rules.service import RulesService  # imported here: edge.config imports rules.config (cycle)


def install(gw: GatewayView) -> RulesService:
    """Build the rules engine, feed it every event, register its commands, start its tasks; returns it."""
    from rules.service import RulesService  # imported here: edge.config imports rules.config (cycle)

    service = RulesService(gw)
    service.start()
    return service
