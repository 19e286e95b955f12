"""`python -m tests.faults.faulty run --config FILE`: the real daemon with two test-only device families.

- `load` (bench/load.py): counting devices, so the hub can check per-source sequences;
- `fault`: a device that, when the test drops a file named after a fault into its `trigger_dir`, yields
  one `Poison` reading; its processor turns it into the fault:
  * `encode`: an event whose payload cannot be serialised (a processor bug): `Outbox.submit` raises in
    the pipeline task;
  * `badwrite`: a state write to a table that does not exist (a bug in a state write): the commit fails
    with SQLITE_ERROR, which no retry can fix.
These are bugs injected into a real daemon process, to see what supervision makes of them.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import ClassVar, Literal

from edge.clock import Clock
from edge.config import Manifest
from edge.configbase import DeviceConfigBase
from edge.driver import DeviceOnline, DriverContext, Reading
from edge.events import Event, EventClass
from edge.processing import Output
from edge.runtime import Upsert

FAULTS = ("encode", "badwrite")


@dataclass(frozen=True, slots=True, kw_only=True)
class Poison(Reading):
    """Inject fault `kind`."""

    kind: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Unencodable(Event):
    """An event whose payload the envelope cannot serialise."""

    TYPE: ClassVar[str] = "test.unencodable.v1"
    CLASS: ClassVar[EventClass] = EventClass.LEDGER
    TOPIC: ClassVar[str] = "events/test"
    what: object


class FaultConfig(DeviceConfigBase):
    """A fault injector watching a directory."""

    type: Literal["fault"] = "fault"
    trigger_dir: str


class FaultDriver:
    """Yields a `Poison` reading for each trigger file that appears (and deletes the file)."""

    def __init__(self, config: FaultConfig, ctx: DriverContext) -> None:
        self.device_id = config.id
        self.dir = Path(config.trigger_dir)
        self.clock = ctx.clock

    async def stream(self) -> AsyncIterator[Reading]:
        """Watch the trigger directory."""
        yield DeviceOnline(device_id=self.device_id, time=self.clock.now())
        while True:
            for kind in FAULTS:
                f = self.dir / kind
                if f.exists():
                    f.unlink()
                    yield Poison(device_id=self.device_id, time=self.clock.now(), kind=kind)
            await asyncio.sleep(0.05)


class FaultProcessor:
    """Poison -> the fault."""

    reading_types: tuple[type[Reading], ...] = (Poison,)

    def __init__(self, manifest: Manifest | None = None, clock: Clock | None = None) -> None:
        self.manifest = manifest

    def feed(self, reading: Reading, now: datetime) -> Sequence[Output]:
        """The injected bug."""
        if not isinstance(reading, Poison):
            return ()
        if reading.kind == "encode":
            return [Unencodable(source=reading.device_id, time=now, what=object())]
        return [Upsert("no_such_table", {"x": 1})]  # type: ignore[list-item]

    def tick(self, now: datetime) -> Sequence[Output]:
        """Nothing time-based."""
        return ()


def main(argv: list[str]) -> int:
    """Register `load` and `fault`, then run `edge.cli.main`."""
    from bench.load import register
    from drivers.registry import FAMILIES, PROCESSORS, Family

    register()
    FAMILIES["fault"] = Family("fault", FaultConfig, "tests.faults.faulty:FaultDriver", "fault")
    PROCESSORS["fault"] = "tests.faults.faulty:FaultProcessor"
    from edge.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
