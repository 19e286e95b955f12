"""Events of the barcode scanners (`events/scan`) and of restock sessions (`events/restock`).

Scanned values (batches, serials, raw codes) appear only in payloads; the subject is a manifest id or None.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import ClassVar

from edge.events import Event, EventClass


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanReceived(Event):
    """Goods scanned into the backroom (role `receive`)."""

    TYPE: ClassVar[str] = "retail.scan.received.v1"
    CLASS: ClassVar[EventClass] = EventClass.LEDGER
    TOPIC: ClassVar[str] = "events/scan"

    sku: str
    gtin: str
    qty: int
    batch: str | None = None
    expiry: dt.date | None = None
    serial: str | None = None
    ambiguous: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanLookup(Event):
    """Someone asked what an item is (role `lookup`); the API answers with current stock."""

    TYPE: ClassVar[str] = "retail.scan.lookup.v1"
    CLASS: ClassVar[EventClass] = EventClass.TELEMETRY
    TOPIC: ClassVar[str] = "events/scan"

    sku: str
    gtin: str
    batch: str | None = None
    expiry: dt.date | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanUnknownGtin(Event):
    """A valid GTIN that is not in the catalog."""

    TYPE: ClassVar[str] = "retail.scan.unknown_gtin.v1"
    CLASS: ClassVar[EventClass] = EventClass.CONTROL
    TOPIC: ClassVar[str] = "events/scan"

    gtin: str
    role: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanUnreadable(Event):
    """A scan that is no GS1 code and no control code (or an unusable one); reported, never dropped."""

    TYPE: ClassVar[str] = "retail.scan.unreadable.v1"
    CLASS: ClassVar[EventClass] = EventClass.CONTROL
    TOPIC: ClassVar[str] = "events/scan"

    raw: str
    reason: str
    symbology: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanAmbiguous(Event):
    """A GS1 message without separators whose variable-length tail reads two ways; the GTIN was used."""

    TYPE: ClassVar[str] = "retail.scan.ambiguous.v1"
    CLASS: ClassVar[EventClass] = EventClass.CONTROL
    TOPIC: ClassVar[str] = "events/scan"

    raw: str
    gtin: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanRejected(Event):
    """A readable scan that does not fit the session (no shelf chosen, SKU not on that shelf, unknown shelf)."""

    TYPE: ClassVar[str] = "retail.scan.rejected.v1"
    CLASS: ClassVar[EventClass] = EventClass.CONTROL
    TOPIC: ClassVar[str] = "events/scan"

    role: str
    reason: str
    gtin: str | None = None
    shelf: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanModeChanged(Event):
    """A MODE: barcode switched the scanner's role."""

    TYPE: ClassVar[str] = "retail.scan.mode.v1"
    CLASS: ClassVar[EventClass] = EventClass.TELEMETRY
    TOPIC: ClassVar[str] = "events/scan"

    role: str
    previous: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RestockStarted(Event):
    """Staff started restocking a shelf (mute its low-stock alert until finished)."""

    TYPE: ClassVar[str] = "retail.restock.started.v1"
    CLASS: ClassVar[EventClass] = EventClass.CONTROL
    TOPIC: ClassVar[str] = "events/restock"

    shelf: str
    scanner: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RestockFinished(Event):
    """A restock session ended (RESTOCK:END, another shelf or mode, or the session timeout)."""

    TYPE: ClassVar[str] = "retail.restock.finished.v1"
    CLASS: ClassVar[EventClass] = EventClass.CONTROL
    TOPIC: ClassVar[str] = "events/restock"

    shelf: str
    scanner: str
    items: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CycleCountFinished(Event):
    """A cycle count of a shelf ended and set its counts (SKU -> units)."""

    TYPE: ClassVar[str] = "retail.scan.count.finished.v1"
    CLASS: ClassVar[EventClass] = EventClass.LEDGER
    TOPIC: ClassVar[str] = "events/scan"

    shelf: str
    counts: dict[str, int]
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanPicked(Event):
    """An item scanned for an online order's pick (role `pick`): counts toward the open pick task of that SKU
    (of `order_id` when an ORDER:<id> code was scanned first, else the task due first); edge/orders.py."""

    TYPE: ClassVar[str] = "retail.scan.picked.v1"
    CLASS: ClassVar[EventClass] = EventClass.CONTROL
    TOPIC: ClassVar[str] = "events/scan"

    sku: str
    gtin: str
    qty: int
    order_id: str | None = None
    serial: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanCollected(Event):
    """A COLLECT:<order id> code was scanned: the ready order is handed over (edge/orders.py)."""

    TYPE: ClassVar[str] = "retail.scan.collected.v1"
    CLASS: ClassVar[EventClass] = EventClass.CONTROL
    TOPIC: ClassVar[str] = "events/scan"

    order_id: str
