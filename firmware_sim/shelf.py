"""Simulated weight shelves reading the World: a serial shelf controller on a pseudo-terminal, a Modbus-RTU
weight transmitter line (pymodbus server on a pty), and an MQTT shelf publisher.

Grams of a lane = items really on it x unit weight + tare + a resting hand + HX711-like noise + slow drift.
Faults on demand: NaN, stuck ADC, corrupted checksums / CRCs, garbage, silence, unplugging the port.
The serial protocol is docs/shelf-protocol.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import math
import os
import random
import tty
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drivers.shelf.serial_line import encode, encode_weight
from firmware_sim.world import World

FIRMWARE = "sim-1.2"


@dataclass
class LaneSim:
    """One simulated load cell: which World lane it weighs and how it misbehaves."""

    shelf: str
    lane: str
    channel: str
    tare_g: float
    noise_g: float = 1.2
    drift_g_per_h: float = 2.0
    fault: str | None = None  # "nan" | "stuck" | "crc" | "garbage" | "silent" | "adc"
    stuck_value: float | None = None

    def grams(self, world: World, hours: float, rng: random.Random) -> float:
        """What the ADC reads now."""
        truth = world.lanes[(self.shelf, self.lane)]
        g = truth.count * truth.unit_weight_g + self.tare_g + truth.hand_g + self.drift_g_per_h * hours
        if truth.hand_g:
            g += rng.gauss(0, 25.0)  # a hand trembles
        return g + rng.gauss(0, self.noise_g)


class PtyPort:
    """A pseudo-terminal standing in for a USB serial adapter, reachable under a stable symlink.

    `unplug()` closes the master side (the reader sees EIO/EOF); `replug()` opens a new pty and points the
    same symlink at it, as udev does with /dev/serial/by-id/... when the adapter comes back.
    """

    def __init__(self, link: Path) -> None:
        self.link = link
        self.master: int | None = None
        self._slave: int | None = None
        self.replug()

    def replug(self) -> None:
        """Create a fresh pty behind the link."""
        self.unplug()
        master, slave = os.openpty()
        tty.setraw(slave)
        flags = fcntl.fcntl(master, fcntl.F_GETFL)
        fcntl.fcntl(master, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        self.master, self._slave = master, slave
        tmp = self.link.with_suffix(".tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(os.ttyname(slave))
        tmp.replace(self.link)

    def unplug(self) -> None:
        """Close the pty: the device is gone."""
        for fd in (self.master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.master = self._slave = None

    def write(self, data: bytes) -> None:
        """Send bytes to whoever has the port open; dropped when nobody reads (like a UART)."""
        if self.master is None:
            return
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self.master, data)

    def read(self) -> bytes:
        """Bytes the host sent (non-blocking; b"" when none)."""
        if self.master is None:
            return b""
        try:
            return os.read(self.master, 4096)
        except (BlockingIOError, OSError):
            return b""


class SerialShelfSim:
    """A shelf controller streaming `W` lines for its lanes at `hz` on a pty."""

    def __init__(self, world: World, link: Path, lanes: list[LaneSim], hz: float = 10.0, seed: int = 11) -> None:
        self.world = world
        self.port = PtyPort(link)
        self.lanes = lanes
        self.hz = hz
        self.rng = random.Random(seed)
        self._seq = 0
        self._t0 = world.clock.monotonic()
        self._task: asyncio.Task[None] | None = None
        self.lines_sent = 0

    def frame(self) -> bytes:
        """One sampling period's worth of lines (all lanes)."""
        hours = (self.world.clock.monotonic() - self._t0) / 3600.0
        out = bytearray()
        if self.lines_sent % max(1, int(self.hz * 10)) == 0:  # hello at boot and every 10 s
            out += encode(f"H,{FIRMWARE},{len(self.lanes)},{int(self.hz)}")
        for ln in self.lanes:
            self._seq += 1
            if ln.fault == "silent":
                continue
            if ln.fault == "adc":
                out += encode(f"F,{ln.channel},adc")
                continue
            if ln.fault == "garbage":
                out += bytes(self.rng.randrange(256) for _ in range(20)) + b"\r\n"
                continue
            g = ln.grams(self.world, hours, self.rng)
            if ln.fault == "nan":
                g = math.nan
            elif ln.fault == "stuck":
                if ln.stuck_value is None:
                    ln.stuck_value = round(g, 1)
                g = ln.stuck_value
            line = encode_weight(self._seq, ln.channel, g, stable=self.world.lanes[(ln.shelf, ln.lane)].hand_g == 0)
            if ln.fault == "crc":
                line = line[:-4] + (b"00" if line[-4:-2] != b"00" else b"11") + b"\r\n"
            out += line
        self.lines_sent += 1
        return bytes(out)

    def set_fault(self, fault: str | None, channel: str | None = None) -> None:
        """Make one lane (or every lane) misbehave; None heals it."""
        for ln in self.lanes:
            if channel is None or ln.channel == channel:
                ln.fault = fault
                ln.stuck_value = None

    async def run(self) -> None:
        """Stream until cancelled."""
        period = 1.0 / self.hz
        while True:
            self.port.write(self.frame())
            await asyncio.sleep(period)

    def start(self) -> None:
        """Start streaming in the background."""
        self._task = asyncio.get_running_loop().create_task(self.run(), name=f"shelf-sim {self.port.link.name}")

    async def stop(self) -> None:
        """Stop streaming and unplug."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.port.unplug()


def lanes_for(world: World, shelf: str, tare_g: float = 850.0) -> list[LaneSim]:
    """One simulated load cell per planogram lane of `shelf`, channels numbered from 1."""
    keys = [k for k in world.lanes if k[0] == shelf]
    return [LaneSim(shelf, lane, str(i + 1), tare_g + 37.5 * i) for i, (_, lane) in enumerate(keys)]


def lane_sections(lanes: list[LaneSim], by: str = "channel") -> list[dict[str, Any]]:
    """Manifest `lanes:` entries for simulated lanes."""
    return [
        {
            "channel": ln.channel if by == "channel" else f"{ln.shelf}:{ln.lane}",
            "shelf": ln.shelf,
            "lane": ln.lane,
            "tare_g": ln.tare_g,
        }
        for ln in lanes
    ]
