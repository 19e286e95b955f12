"""A simulated barcode scanner on a pseudo-terminal typing GS1 codes (serial mode, CR terminated).

When the World restocks a lane, the scanner types what a clerk would: `SHELF:<shelf>` then one GS1-128 code
per item (AIM `]C1`, GTIN, expiry, batch, GS-separated), then `RESTOCK:END`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from firmware_sim.shelf import PtyPort
from firmware_sim.world import World, WorldChange


def gs1_128(gtin: str, batch: str = "L01", expiry: str = "271231") -> str:
    """An AIM-prefixed GS1-128 code: (01) GTIN (17) expiry (10) batch."""
    return f"]C101{gtin}17{expiry}10{batch}"


class ScannerSim:
    """Types codes on a pty, the way a serial scanner sends them."""

    def __init__(self, world: World, link: Path, terminator: bytes = b"\r") -> None:
        self.world = world
        self.port = PtyPort(link)
        self.terminator = terminator
        self.typed: list[str] = []

    def type(self, code: str) -> None:
        """Send one scan."""
        self.typed.append(code)
        self.port.write(code.encode() + self.terminator)

    def on_change(self, change: WorldChange) -> None:
        """World listener: a restock becomes a restock scan session."""
        if change.kind != "restock" or change.n <= 0:
            return
        truth = self.world.lanes[(change.shelf, change.lane)]
        item = self.world.manifest.sku(truth.sku)
        if item is None or item.gtin is None:
            return
        self.type(f"SHELF:{change.shelf}")
        for _ in range(change.n):
            self.type(gs1_128(item.gtin))
        self.type("RESTOCK:END")


class ScannerSimPart:
    """Sim part for the demo: one restock scanner on a pty, driven by the World's restocks."""

    name = "scanner"

    def __init__(self) -> None:
        self.sim: ScannerSim | None = None

    async def start(self, world: World, workdir: Path, local_broker_url: str | None) -> list[dict[str, Any]]:
        """Start the scanner and return its device section."""
        os.makedirs(workdir, exist_ok=True)
        self.sim = ScannerSim(world, workdir / "scanner-1.tty")
        world.listeners.append(self.sim.on_change)
        return [
            {
                "id": "scanner-backroom",
                "type": "scanner_serial",
                "port": str(self.sim.port.link),
                "role": "restock",
                "terminator": "CR",
            }
        ]

    async def stop(self) -> None:
        """Stop listening and unplug."""
        if self.sim is not None:
            if self.sim.on_change in self.sim.world.listeners:
                self.sim.world.listeners.remove(self.sim.on_change)
            self.sim.port.unplug()
            self.sim = None
