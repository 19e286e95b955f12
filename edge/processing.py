"""Processors turn a family's readings into events and stock updates (the "normalise" stage).

A processor is synchronous and does no I/O: `feed` gets one reading (or a `ReadingBatch` of one device's
samples, whole, when its family's driver batches: a sample that fails does not take the others' outputs
with it, see `BatchFailed`) and the current time, `tick` is
called periodically so time-based decisions (lost-timeouts, settle windows, dwell) happen without new
readings. One processor instance serves every device of its family, since zones cross devices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal, Protocol

from edge.driver import Reading
from edge.events import Event

if TYPE_CHECKING:
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class StockUpdate:
    """A source's claim about one shelf x SKU cell: an absolute `count` or a relative `delta`."""

    shelf: str
    sku: str
    time: datetime
    origin: str  # "weight" | "rfid" | "scan" | "count" | "manual"
    source: str  # device id or component that made the claim
    count: int | None = None
    delta: int | None = None
    reason: str = ""
    hold: bool = False  # a staff count correction: served until the cell's sensors settle (edge/state.py)

    def __post_init__(self) -> None:
        if (self.count is None) == (self.delta is None):
            raise ValueError("a stock update carries exactly one of count and delta")
        if self.count is not None and self.count < 0:
            raise ValueError("stock count cannot be negative")


@dataclass(frozen=True, slots=True, kw_only=True)
class StockFlag:
    """A source's word on how far one shelf x SKU cell's count can be trusted right now.

    `flag="stale"`: the source that owns the count cannot see the cell (reader offline or not inventorying,
    load cell stuck or unplugged, unknown object on the lane); the last count is kept but must be served as
    stale since `time`. `flag="conflict"`: fused sources disagree beyond tolerance. `on=False` clears it.
    """

    shelf: str
    sku: str
    time: datetime
    origin: str  # "weight" | "rfid" | ...
    source: str  # device id or component
    flag: Literal["stale", "conflict"]
    on: bool
    reason: str = ""


Output = Event | StockUpdate | StockFlag


class BatchFailed(Exception):
    """Raised by a processor's `feed` of a `ReadingBatch` when some of its samples failed: the outputs of
    the others (to be routed as usual) and how many failed; `__cause__` is the first failure."""

    def __init__(self, outputs: Sequence[object], failed: int) -> None:
        super().__init__(f"{failed} sample(s) of a batch failed")
        self.outputs = outputs
        self.failed = failed


class Processor(Protocol):
    """Readings of some types in, events and stock updates out."""

    reading_types: tuple[type[Reading], ...]

    def feed(self, reading: Reading, now: datetime) -> Sequence[Output]:
        """Handle one reading."""
        ...

    def tick(self, now: datetime) -> Sequence[Output]:
        """Make time-based decisions; called about once a second (faster in tests)."""
        ...



class Reactor(Protocol):
    """Reacts to every event the gateway emits (rules engines): pure, no I/O, no clock reads.

    Outputs may be events, stock updates, or state rows (`edge.runtime.Upsert`/`Delete`) to commit with them.
    """

    def react(self, event: Event, now: datetime) -> Sequence[object]:
        """Handle one emitted event."""
        ...

    def tick(self, now: datetime) -> Sequence[object]:
        """Time-based decisions (debounce expiry, escalation), called about once a second."""
        ...
