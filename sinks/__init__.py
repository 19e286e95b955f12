"""Sinks: optional outputs that deliver the gateway's events elsewhere than the hub (like Telegraf's outputs).

The gateway calls `await install(gw)` once at start (edge/gateway.py, the composition root); nothing here is
imported by `edge` otherwise (the manifest model lives in sinks/config.py, read by edge/config.py).
- sinks/epcis_capture.py: RFID EPCIS 2.0 ObjectEvents to an EPCIS repository's capture interface (docs/epcis.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge.runtime import DeviceStatus, GatewayView


class Sinks:
    """The installed sinks (empty when the manifest configures none)."""

    def __init__(self, parts: list[Any]) -> None:
        self.parts = parts

    def statuses(self) -> list[DeviceStatus]:
        """Device health entries of every sink."""
        return [s for p in self.parts for s in p.statuses()]

    async def stop(self) -> None:
        """Stop every sink."""
        for p in self.parts:
            await p.stop()


async def install(gw: GatewayView) -> Sinks:
    """Start the sinks the manifest configures; returns them (the gateway stops them and lists their status)."""
    parts: list[Any] = []
    cfg = getattr(gw.manifest, "epcis_capture", None)
    if cfg is not None and cfg.enabled:
        from sinks.epcis_capture import EpcisCapture

        sink = EpcisCapture(gw, cfg, getattr(gw, "metrics", None))
        await sink.start()
        parts.append(sink)
    return Sinks(parts)
