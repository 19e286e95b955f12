"""What the pure rules decide: raise or clear one alert condition. The alert book turns them into events."""

from __future__ import annotations

from dataclasses import dataclass

LOW_STOCK = "low_stock"
OUT_OF_STOCK = "out_of_stock"
DEVICE_OFFLINE = "device_offline"
DEVICE_FAULT = "device_fault"
KINDS = (LOW_STOCK, OUT_OF_STOCK, DEVICE_OFFLINE, DEVICE_FAULT)


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertRaise:
    """A condition held long enough (debounced, in opening hours, not muted, out of cooldown): open an alert."""

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
    def key(self) -> tuple[str, str, str, str]:
        """Which condition this is: at most one alert per key is open at a time."""
        return (self.kind, self.shelf or "", self.sku or "", self.device or "")


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertClear:
    """A condition is over (stock recovered, device back): resolve its open alert, if any."""

    kind: str
    shelf: str | None = None
    sku: str | None = None
    device: str | None = None
    count: int | None = None
    reason: str = "recovered"

    @property
    def key(self) -> tuple[str, str, str, str]:
        """The condition's key, as in `AlertRaise.key`."""
        return (self.kind, self.shelf or "", self.sku or "", self.device or "")


Action = AlertRaise | AlertClear
