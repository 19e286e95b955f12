"""The `load` device family: a synthetic device that counts 1, 2, 3... as fast as asked (benchmarks, fault tests).

It speaks no protocol: `LoadDriver` yields `Count` readings (`per_tick` every `interval_s`), and
`LoadProcessor` turns each one into exactly one event of the class the device section asks for, so the
hub can check per-source `sequence` contiguity and every `n`. It is not registered in the production
registry; `register()` adds it, and `python -m bench.load run --config FILE` runs the real daemon
(`edge.cli.main`) with it registered (what the fault-injection suite SIGKILLs).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field

from edge.clock import Clock, SystemClock
from edge.config import Manifest
from edge.configbase import DeviceConfigBase
from edge.driver import DeviceOnline, DriverContext, Malformed, Reading
from edge.events import Event, EventClass
from edge.processing import Output


@dataclass(frozen=True, slots=True, kw_only=True)
class Count(Reading):
    """The n-th reading of a load device."""

    n: int
    cls: str = "ledger"


@dataclass(frozen=True, slots=True, kw_only=True)
class Counted(Event):
    """A ledger load event."""

    TYPE: ClassVar[str] = "test.counted.v1"
    CLASS: ClassVar[EventClass] = EventClass.LEDGER
    TOPIC: ClassVar[str] = "events/test"
    n: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CountedTelemetry(Event):
    """A telemetry load event (droppable over the disk budget)."""

    TYPE: ClassVar[str] = "test.counted.telemetry.v1"
    CLASS: ClassVar[EventClass] = EventClass.TELEMETRY
    TOPIC: ClassVar[str] = "events/test-telemetry"
    n: int
    pad: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class CountedAlert(Event):
    """An alert load event (never dropped)."""

    TYPE: ClassVar[str] = "test.counted.alert.v1"
    CLASS: ClassVar[EventClass] = EventClass.ALERT
    TOPIC: ClassVar[str] = "alerts"
    n: int


class LoadConfig(DeviceConfigBase):
    """A synthetic counting device (benchmarks and fault tests only)."""

    type: Literal["load"] = "load"
    total: int | None = Field(default=None, ge=0, description="readings to produce; none = forever")
    per_tick: int = Field(default=100, ge=1, description="readings per burst")
    interval_s: float = Field(default=0.0, ge=0, description="pause between bursts")
    cls: Literal["ledger", "telemetry", "alert"] = Field(default="ledger", description="class of the events")
    start: int = Field(default=1, ge=1, description="first n")


class LoadDriver:
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

    @classmethod
    def from_config(cls, config: LoadConfig, ctx: DriverContext) -> LoadDriver:
        """The registry's factory: `(config, ctx) -> driver`."""
        return cls(config.id, config.total, per_tick=config.per_tick, interval=config.interval_s, cls=config.cls,
                   start=config.start, clock=ctx.clock)

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


class LoadProcessor:
    """Count -> one event of the requested class."""

    reading_types: tuple[type[Reading], ...] = (Count,)

    def __init__(self, manifest: Manifest | None = None, clock: Clock | None = None) -> None:
        self.manifest = manifest

    def feed(self, reading: Reading, now: datetime) -> Sequence[Output]:
        """One event per reading."""
        if not isinstance(reading, Count):
            return ()
        if reading.cls == "telemetry":
            return [CountedTelemetry(source=reading.device_id, time=now, n=reading.n, pad="x" * 200)]
        if reading.cls == "alert":
            return [CountedAlert(source=reading.device_id, time=now, n=reading.n)]
        return [Counted(source=reading.device_id, time=now, n=reading.n)]

    def tick(self, now: datetime) -> Sequence[Output]:
        """Nothing time-based."""
        return ()


def register() -> None:
    """Add the `load` family to the registry of this process (never done by the product itself)."""
    from drivers.registry import FAMILIES, PROCESSORS, Family

    FAMILIES["load"] = Family("load", LoadConfig, "bench.load:LoadDriver.from_config", "load")
    PROCESSORS["load"] = "bench.load:LoadProcessor"


def main(argv: list[str]) -> int:
    """`python -m bench.load run --config FILE`: the real daemon with the load family registered."""
    register()
    from edge.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
