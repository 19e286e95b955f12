"""Simulated door counter on a pseudo-terminal, speaking the `$CNT,<in>,<out>*HH` line protocol
(docs/door-protocol.md, encoded by firmware_sim/serial_frames.py).

People come in and leave at random (more picks in the World = busier store); the counters are cumulative,
wrap at 2^bits and restart at 0 when the device "reboots" (`reboot()`), exactly like the real thing.
`entered`/`exited` keep the ground truth for checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import tty
from pathlib import Path
from typing import Any

from firmware_sim.serial_frames import door_counts, door_hello
from firmware_sim.world import World, WorldChange


class DoorSim:
    """One counter: a pty whose slave path the driver opens; `walk_in`/`walk_out` move people."""

    def __init__(self, bits: int = 16, start_in: int = 0, start_out: int = 0, heartbeat_s: float = 2.0) -> None:
        self.modulo = 1 << bits
        self.count_in = start_in % self.modulo
        self.count_out = start_out % self.modulo
        self.entered = 0
        self.exited = 0
        self.heartbeat_s = heartbeat_s
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self._task: asyncio.Task[None] | None = None

    def _send(self, line: bytes) -> None:
        with contextlib.suppress(OSError):
            os.write(self.master, line)

    def report(self) -> None:
        """Send the current counters."""
        self._send(door_counts(self.count_in, self.count_out))

    def walk_in(self, n: int = 1) -> None:
        """`n` people come in."""
        self.count_in = (self.count_in + n) % self.modulo
        self.entered += n
        self.report()

    def walk_out(self, n: int = 1) -> None:
        """`n` people leave."""
        self.count_out = (self.count_out + n) % self.modulo
        self.exited += n
        self.report()

    def reboot(self) -> None:
        """Power cycle: counters restart at 0 and the device says hello."""
        self.count_in = self.count_out = 0
        self._send(door_hello("SIM-PC", "1.0"))

    async def run_heartbeat(self) -> None:
        """Report every `heartbeat_s` (the driver treats long silence as a broken device)."""
        while True:
            await asyncio.sleep(self.heartbeat_s)
            self.report()

    def start(self) -> None:
        """Start the heartbeat task."""
        self._task = asyncio.create_task(self.run_heartbeat(), name="door-sim")

    async def stop(self) -> None:
        """Stop and close the pty."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


class DoorSimPart:
    """Demo sim part: one door counter at the entrance, shoppers entering and leaving."""

    name = "door"

    def __init__(self, period_s: float = 1.0) -> None:
        self.period_s = period_s
        self.door: DoorSim | None = None
        self._task: asyncio.Task[None] | None = None
        self._inside = 0
        self._busy = 0

    async def start(self, world: World, workdir: Path, local_broker_url: str | None) -> list[dict[str, Any]]:
        """Open the pty and start people flowing; returns the `door_counter` device section."""
        del workdir, local_broker_url
        self.door = DoorSim(bits=16, start_in=65_500, start_out=65_490)  # wraps early in the demo
        self.door.start()
        world.listeners.append(self._on_world)
        self._task = asyncio.create_task(self._run(random.Random(13)), name="door-people")
        zone = "entrance" if any(z.id == "entrance" for z in world.manifest.zones) else None
        return [{"id": "door-front", "type": "door_counter", "transport": "serial", "port": self.door.path,
                 "counter_bits": 16, "zone": zone, "read_timeout_s": 10}]

    def _on_world(self, change: WorldChange) -> None:
        if change.kind == "pick":
            self._busy += 1  # picks mean shoppers: let a few more in

    async def _run(self, rng: random.Random) -> None:
        door = self.door
        assert door is not None
        while True:
            await asyncio.sleep(self.period_s)
            if rng.random() < 0.3 + min(0.5, 0.1 * self._busy):
                n = 1 if rng.random() < 0.8 else 2
                door.walk_in(n)
                self._inside += n
                self._busy = max(0, self._busy - 1)
            if self._inside and rng.random() < 0.3:
                door.walk_out(1)
                self._inside -= 1

    async def stop(self) -> None:
        """Stop the people and the device."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.door is not None:
            await self.door.stop()
