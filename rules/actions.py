"""What the pure rules decide: raise or clear one alert condition. The alert book turns them into events.

Conditions come in families: at most one alert per family and subject is live at a time. `low_stock` and
`out_of_stock` of one shelf x SKU cell are one family ("stock"): a stock-out while the low-stock alert is
open supersedes it (same alert, escalated), and recovering to a low count downgrades it again.
"""

from __future__ import annotations

from dataclasses import dataclass

LOW_STOCK = "low_stock"
OUT_OF_STOCK = "out_of_stock"
DEVICE_OFFLINE = "device_offline"
DEVICE_FAULT = "device_fault"
LANE_FAULT = "lane_fault"
UNKNOWN_OBJECT = "unknown_object"
BEACON_BATTERY_LOW = "beacon_battery_low"
BEACON_SILENT = "beacon_silent"
KINDS = (LOW_STOCK, OUT_OF_STOCK, DEVICE_OFFLINE, DEVICE_FAULT, LANE_FAULT, UNKNOWN_OBJECT, BEACON_BATTERY_LOW,
         BEACON_SILENT)
PICK_TASK = "pick_task"
"""Not an alert: the staff notice of an online order's pick tasks (rules/notify.py); a channel's `kinds` may name it."""

STOCK = "stock"
FAMILY = {LOW_STOCK: STOCK, OUT_OF_STOCK: STOCK}
"""kind -> family; a kind not listed is a family of its own."""
SEVERITY = {LOW_STOCK: 1, OUT_OF_STOCK: 2}
"""Within a family, a raise of a more severe kind supersedes (escalates) the live alert; a less severe one
downgrades it."""

Key = tuple[str, str, str, str]


def family(kind: str) -> str:
    """The condition family of an alert kind."""
    return FAMILY.get(kind, kind)


def condition_key(kind: str, shelf: str | None, sku: str | None, device: str | None) -> Key:
    """Which condition this is: at most one alert per key is live at a time."""
    return (family(kind), shelf or "", sku or "", device or "")


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertRaise:
    """A condition held long enough (debounced, in opening hours, not muted, out of cooldown): open an alert
    (or, when its family already has one live, supersede or downgrade that alert)."""

    kind: str
    shelf: str | None = None
    sku: str | None = None
    device: str | None = None
    count: int | None = None
    threshold: int | None = None
    restock_qty: int | None = None
    days_of_cover: float | None = None
    escalate_after_s: float | None = None
    message: str = ""

    @property
    def key(self) -> Key:
        """The condition's family key (see `condition_key`)."""
        return condition_key(self.kind, self.shelf, self.sku, self.device)


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertClear:
    """A condition is over (stock recovered, device back): resolve its family's live alert, if any."""

    kind: str
    shelf: str | None = None
    sku: str | None = None
    device: str | None = None
    count: int | None = None
    reason: str = "recovered"

    @property
    def key(self) -> Key:
        """The condition's family key, as in `AlertRaise.key`."""
        return condition_key(self.kind, self.shelf, self.sku, self.device)


Action = AlertRaise | AlertClear
