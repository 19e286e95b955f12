"""A rate-controlled `load` device for benchmarks: `bench.load.Count` readings at a rate that can be changed
while it runs (a ramp to find the sustainable load, then a steady background load).

It speaks no protocol (see bench/load.py): readings are produced on a schedule anchored to the monotonic
clock, `rate` per second, released in small bursts every `tick_s`. When the gateway pushes back (the
pipeline queue is bounded, so `yield` waits) the driver falls behind its schedule; `lag()` says by how many
readings, which is how a benchmark sees that a rate is not sustainable. Feed it to the gateway with
`Gateway(..., extra_drivers=[(driver, "load")])` and `gw.pipeline.add_processor(LoadProcessor())`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from bench.load import Count
from edge.clock import Clock, SystemClock
from edge.driver import DeviceOnline, Reading


class PacedLoadDriver:
    """Yields `Count` readings at `rate` per second (0 = none) until cancelled; `set_rate` changes it live."""

    def __init__(self, device_id: str, rate: float = 0.0, *, tick_s: float = 0.005, cls: str = "ledger",
                 clock: Clock | None = None) -> None:
        self.device_id = device_id
        self.tick_s = tick_s
        self.cls = cls
        self.clock = clock or SystemClock()
        self.produced = 0  # readings handed to the gateway so far
        self.rate = 0.0
        self._base = 0.0  # readings due at `_since`
        self._since = time.monotonic()
        self.set_rate(rate)

    def due(self) -> float:
        """Readings the schedule asked for so far."""
        return self._base + self.rate * (time.monotonic() - self._since)

    def lag(self) -> float:
        """Readings the schedule asked for that the gateway has not taken yet."""
        return self.due() - self.produced

    def set_rate(self, rate: float) -> None:
        """From now on, `rate` readings per second; a backlog already due stays due."""
        now = time.monotonic()
        self._base = self._base + self.rate * (now - self._since)
        self._since = now
        self.rate = max(0.0, rate)

    def skip_backlog(self) -> None:
        """Forget readings that are due but not produced (after an overload step of a ramp)."""
        self._base = float(self.produced)
        self._since = time.monotonic()

    async def stream(self) -> AsyncIterator[Reading]:
        """Online, then readings on schedule."""
        yield DeviceOnline(device_id=self.device_id, time=self.clock.now())
        while True:
            target = int(self.due())
            while self.produced < target:
                self.produced += 1
                yield Count(device_id=self.device_id, time=self.clock.now(), n=self.produced, cls=self.cls)
            await asyncio.sleep(self.tick_s)
