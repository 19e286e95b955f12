"""Events of the weight shelves (topic `events/shelf`); values live in the payload, ids in `subject`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from edge.events import Event, EventClass


@dataclass(frozen=True, slots=True, kw_only=True)
class ShelfUnknownObject(Event):
    """A lane settled at a weight that is no whole number of units; its count is held (raised once)."""

    TYPE: ClassVar[str] = "retail.shelf.unknown_object.v1"
    CLASS: ClassVar[EventClass] = EventClass.ALERT
    TOPIC: ClassVar[str] = "events/shelf"

    shelf: str
    lane: str
    sku: str
    net_g: float
    residual_units: float
    held_count: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ShelfFault(Event):
    """A lane's weight cannot be trusted (nan, stuck, crc, timeout, device code); its count is held."""

    TYPE: ClassVar[str] = "retail.shelf.fault.v1"
    CLASS: ClassVar[EventClass] = EventClass.CONTROL
    TOPIC: ClassVar[str] = "events/shelf"

    device: str
    shelf: str
    lane: str
    code: str
    held_count: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ShelfFaultCleared(Event):
    """A lane's fault ended: good samples again."""

    TYPE: ClassVar[str] = "retail.shelf.fault_cleared.v1"
    CLASS: ClassVar[EventClass] = EventClass.CONTROL
    TOPIC: ClassVar[str] = "events/shelf"

    device: str
    shelf: str
    lane: str
    code: str


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
