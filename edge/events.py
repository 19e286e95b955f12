"""Typed events: frozen, slotted, keyword-only dataclasses validated at creation.

Every event published to the hub is one of these. `edge.envelope` is the one place that turns an event
into its CloudEvents 1.0 wire form; the outbox assigns the id and the per-source sequence when it accepts
the event, so both stay the same across retries and restarts.

Families add their own event classes next to their processors (e.g. `drivers/rfid/events.py`) by
subclassing `Event` and setting the three class variables.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar


class EventClass(StrEnum):
    """Delivery class: decides the disk budget and whether an event may ever be dropped."""

    LEDGER = "ledger"  # stock changes and other facts the hub books: never dropped
    ALERT = "alert"  # staff alerts and their lifecycle: never dropped
    CONTROL = "control"  # gap announcements, device status: never dropped
    TELEMETRY = "telemetry"  # raw-ish observations (tag moves, traffic, beacon health): budgeted

    @property
    def droppable(self) -> bool:
        """Only telemetry may be dropped, oldest first, when over its disk budget."""
        return self is EventClass.TELEMETRY


_ENVELOPE_FIELDS = frozenset({"source", "time", "subject"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of all published events.

    `source` is the emitting device id or gateway component (e.g. `rfid-1`, `gateway`, `rules/restock`);
    `time` is when the fact happened, aware UTC; `subject` optionally names what the event is about
    (a shelf id, an alert id) and becomes the CloudEvents `subject`.
    """

    TYPE: ClassVar[str] = ""  # CloudEvents type, reverse-DNS and versioned: "retail.stock.changed.v1"
    CLASS: ClassVar[EventClass] = EventClass.TELEMETRY
    TOPIC: ClassVar[str] = "events"  # topic below the store root, e.g. "events/stock" or "alerts"

    source: str
    time: datetime
    subject: str | None = None

    def __post_init__(self) -> None:
        if not type(self).TYPE:
            raise TypeError(f"{type(self).__name__} must set TYPE")
        if not self.source:
            raise ValueError("event source must not be empty")
        t = self.time
        if t.tzinfo is not UTC and (t.tzinfo is None or t.utcoffset() != timedelta(0)):
            raise ValueError(f"event time must be aware UTC, got {t!r}")

    def data(self) -> dict[str, Any]:
        """The payload: every field except the envelope ones (source, time, subject)."""
        fn = _DATA.get(type(self))
        if fn is None:
            fn = _DATA[type(self)] = _data_function(type(self))
        return fn(self)


_DATA: dict[type, Callable[[Any], dict[str, Any]]] = {}


def _data_function(cls: type[Event]) -> Callable[[Any], dict[str, Any]]:
    """A function returning the payload dict of a `cls` event, generated once per class as
    `lambda e: {"a": e.a, ...}` (what `dataclasses` itself does for `__init__`): the payload is built for
    every event on the hot path, and the generated literal is 3x faster than a loop over the fields."""
    names = [f.name for f in dataclasses.fields(cls) if f.name not in _ENVELOPE_FIELDS]
    assert all(n.isidentifier() for n in names)
    fn: Callable[[Any], dict[str, Any]] = eval(  # noqa: S307 (field names of a dataclass: identifiers)
        "lambda e: {" + ", ".join(f"{n!r}: e.{n}" for n in names) + "}"
    )
    return fn



# ---- events of the spine itself -------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class StockChanged(Event):
    """The count of one SKU on one shelf changed; `version` increases by one per change of that cell."""

    TYPE: ClassVar[str] = "retail.stock.changed.v1"
    CLASS: ClassVar[EventClass] = EventClass.LEDGER
    TOPIC: ClassVar[str] = "events/stock"

    shelf: str
    sku: str
    count: int
    previous: int | None
    delta: int
    version: int
    origin: str  # "weight" | "rfid" | "scan" | "count" | "manual"
    reason: str = ""

    def __post_init__(self) -> None:
        Event.__post_init__(self)
        if self.count < 0:
            raise ValueError("stock count cannot be negative")
        if self.version < 1:
            raise ValueError("stock version starts at 1")


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceStatusChanged(Event):
    """A device went online, offline or faulty; one event per transition, never per reading."""

    TYPE: ClassVar[str] = "retail.device.status.v1"
    CLASS: ClassVar[EventClass] = EventClass.CONTROL
    TOPIC: ClassVar[str] = "events/device"

    device: str
    device_type: str
    state: str  # "online" | "offline" | "fault"
    error: str | None = None
    last_seen: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Gap(Event):
    """Telemetry of `gap_source` in [first, last] was dropped on purpose (disk budget); `dropped` events."""

    TYPE: ClassVar[str] = "retail.gap.v1"
    CLASS: ClassVar[EventClass] = EventClass.CONTROL
    TOPIC: ClassVar[str] = "events/gap"

    gap_source: str
    first: int
    last: int
    dropped: int
    event_class: str = EventClass.TELEMETRY.value
    reason: str = "disk budget"


@dataclass(frozen=True, slots=True, kw_only=True)
class MalformedInput(Event):
    """Summary of malformed frames from one device over an interval (counted, not one per frame)."""

    TYPE: ClassVar[str] = "retail.device.malformed.v1"
    CLASS: ClassVar[EventClass] = EventClass.TELEMETRY
    TOPIC: ClassVar[str] = "events/device"

    device: str
    count: int
    last_reason: str

