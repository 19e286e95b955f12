"""Store-day accuracy (firmware_sim/storeday.py): a compressed store day through every real driver and sim,
the gateway's stock, alerts and traffic compared with the World's truth. See docs/benchmarks.md."""

from __future__ import annotations

import asyncio
from typing import Any

from firmware_sim.storeday import StoreDayConfig, run_storeday


def config(quick: bool) -> StoreDayConfig:
    """Quick: 250 store seconds (about 1 minute); full: 1,500 store seconds (25 store minutes, about 5 minutes)."""
    if quick:
        return StoreDayConfig(sim_s=250.0, outage_at_s=100.0, outage_s=40.0)
    return StoreDayConfig(sim_s=1500.0, outage_at_s=600.0, outage_s=120.0)


def bench_storeday(quick: bool) -> dict[str, Any]:
    """Count accuracy, false/missed alerts, alert latency, visitors error of one compressed store day."""
    return asyncio.run(run_storeday(config(quick)))
