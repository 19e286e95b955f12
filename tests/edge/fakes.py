"""Test devices: a counting device family and its processor (fakes of a device, not of the product).

`CountingDriver` yields `Count` readings as fast as asked; `CountingProcessor` turns each into one event
of the class the reading asks for, so spine tests exercise ledger, alert and telemetry paths.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from drivers.base import DeviceOnline, Malformed, Reading
from edge.clock import Clock, SystemClock
from edge.events import Event, EventClass
from edge.processing import Output, StockUpdate


@dataclass(frozen=True, slots=True, kw_only=True)
class Count(Reading):
    """The n-th reading of a counting device."""

    n: int
    cls: str = "ledger"


@dataclass(frozen=True, slots=True, kw_only=True)
class Counted(Event):
    """A ledger test event."""

    TYPE: ClassVar[str] = "test.counted.v1"
    CLASS: ClassVar[EventClass] = EventClass.LEDGER
    TOPIC: ClassVar[str] = "events/test"
    n: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CountedTelemetry(Event):
    """A telemetry test event (droppable)."""

    TYPE: ClassVar[str] = "test.counted.telemetry.v1"
    CLASS: ClassVar[EventClass] = EventClass.TELEMETRY
    TOPIC: ClassVar[str] = "events/test-telemetry"
    n: int
    pad: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class CountedAlert(Event):
    """An alert test event (never dropped)."""

    TYPE: ClassVar[str] = "test.counted.alert.v1"
    CLASS: ClassVar[EventClass] = EventClass.ALERT
    TOPIC: ClassVar[str] = "alerts"
    n: int


class CountingDriver:
    """Yields `total` readings (or forever), `per_tick` at a time, then stays connected."""

    def __init__(self, device_id: str, total: int | None, *, per_tick: int = 100, interval: float = 0.0,
                 cls: str = "ledger", malformed_every: int = 0, start: int = 1, clock: Clock | None = None) -> None:
        self.device_id = device_id
        self.total = total
        self.per_tick = per_tick
        self.interval = interval
        self.cls = cls
        self.malformed_every = malformed_every
        self.next_n = start
        self.clock = clock or SystemClock()

    async def stream(self) -> AsyncIterator[Reading]:
        """Count up."""
        yield DeviceOnline(device_id=self.device_id, time=self.clock.now())
        while self.total is None or self.next_n <= self.total:
            for _ in range(self.per_tick):
                if self.total is not None and self.next_n > self.total:
                    break
                n = self.next_n
                self.next_n += 1
                if self.malformed_every and n % self.malformed_every == 0:
                    yield Malformed(device_id=self.device_id, time=self.clock.now(), reason=f"bad frame {n}")
                    continue
                yield Count(device_id=self.device_id, time=self.clock.now(), n=n, cls=self.cls)
            await asyncio.sleep(self.interval)
        await asyncio.Event().wait()


class CountingProcessor:
    """Count -> one event of the requested class; every 10th ledger count also moves stock."""

    reading_types: tuple[type[Reading], ...] = (Count,)

    def feed(self, reading: Reading, now: datetime) -> Sequence[Output]:
        """One event per reading."""
        assert isinstance(reading, Count)
        if reading.cls == "telemetry":
            return [CountedTelemetry(source=reading.device_id, time=now, n=reading.n, pad="x" * 200)]
        if reading.cls == "alert":
            return [CountedAlert(source=reading.device_id, time=now, n=reading.n)]
        return [Counted(source=reading.device_id, time=now, n=reading.n)]

    def tick(self, now: datetime) -> Sequence[Output]:
        """Nothing time-based."""
        return []


def stock_update(shelf: str, sku: str, count: int, now: datetime) -> StockUpdate:
    """A weight-origin absolute count claim."""
    return StockUpdate(shelf=shelf, sku=sku, time=now, origin="weight", source="test-shelf", count=count)
