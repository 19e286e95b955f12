"""Events of the weight shelves (topic `events/shelf`); values live in the payload, ids in `subject`.

Lane trouble comes in pairs so a rules engine can hold an alert for a while and close it when it ends:
`retail.shelf.fault.v1` / `retail.shelf.fault_cleared.v1` (the load cell cannot be trusted: nan, stuck,
crc, timeout, offline, a device code) and `retail.shelf.unknown_object.v1` /
`retail.shelf.unknown_object_cleared.v1` (the lane settled at a load that is no plausible count). Both pairs
name the lane (`shelf`, `lane`, `sku`) and carry `since`, when the trouble began; while either lasts the
shelf x SKU cell's count is flagged stale (`StockFlag`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from edge.events import Event, EventClass


@dataclass(frozen=True, slots=True, kw_only=True)
class ShelfUnknownObject(Event):
    """A lane settled at a load that is no plausible count (not whole, over capacity, a sudden rise that does
    not fill the lane, negative) for `unknown_after_s`; its count is held and flagged stale (raised once)."""

    TYPE: ClassVar[str] = "retail.shelf.unknown_object.v1"
    CLASS: ClassVar[EventClass] = EventClass.ALERT
    TOPIC: ClassVar[str] = "events/shelf"

    shelf: str
    lane: str
    sku: str
    net_g: float
    residual_units: float
    held_count: int | None
    code: str = ""  # why it is no count: "residual" | "capacity" | "rise" | "negative"
    reason: str = ""  # the same for people, e.g. "more than the lane holds (24)"
    since: datetime | None = None  # when the load settled there


@dataclass(frozen=True, slots=True, kw_only=True)
class ShelfUnknownObjectCleared(Event):
    """The lane settled at a plausible count again: the unknown object is gone (or was counted away)."""

    TYPE: ClassVar[str] = "retail.shelf.unknown_object_cleared.v1"
    CLASS: ClassVar[EventClass] = EventClass.ALERT
    TOPIC: ClassVar[str] = "events/shelf"

    shelf: str
    lane: str
    sku: str
    count: int  # the count the lane settled at
    since: datetime | None = None  # when the unknown object's load had settled


@dataclass(frozen=True, slots=True, kw_only=True)
class ShelfFault(Event):
    """A lane's weight cannot be trusted (nan, stuck, crc, timeout, offline, device code); its count is held
    and flagged stale until the lane settles again."""

    TYPE: ClassVar[str] = "retail.shelf.fault.v1"
    CLASS: ClassVar[EventClass] = EventClass.CONTROL
    TOPIC: ClassVar[str] = "events/shelf"

    device: str
    shelf: str
    lane: str
    code: str
    held_count: int | None
    sku: str = ""
    reason: str = ""  # the code for people, e.g. "load cell not responding"
    since: datetime | None = None  # when the trouble began (first failed or repeated sample, last sample)


@dataclass(frozen=True, slots=True, kw_only=True)
class ShelfFaultCleared(Event):
    """A lane's fault ended: good samples again (its count is trusted again at the next settle)."""

    TYPE: ClassVar[str] = "retail.shelf.fault_cleared.v1"
    CLASS: ClassVar[EventClass] = EventClass.CONTROL
    TOPIC: ClassVar[str] = "events/shelf"

    device: str
    shelf: str
    lane: str
    code: str
    sku: str = ""
    since: datetime | None = None  # when the fault began


@dataclass(frozen=True, slots=True, kw_only=True)
class ShelfCountChanged(Event):
    """Telemetry: a lane settled at a new count (the ledger fact is the StockChanged of its shelf x SKU)."""

    TYPE: ClassVar[str] = "retail.shelf.count.v1"
    CLASS: ClassVar[EventClass] = EventClass.TELEMETRY
    TOPIC: ClassVar[str] = "events/shelf"

    shelf: str
    lane: str
    sku: str
    count: int
    net_g: float
    residual_units: float
    settled_at: datetime | None = None  # when the weight reached this count (the event time is when it was proved)
