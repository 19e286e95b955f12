"""Beacon health alerts: one event when a condition starts, one when it ends (topic `alerts`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from edge.events import Event, EventClass


@dataclass(frozen=True, slots=True, kw_only=True)
class BeaconBatteryLow(Event):
    """A store beacon's TLM battery voltage fell below its `low_battery_mv`; `subject` is the beacon id."""

    TYPE: ClassVar[str] = "retail.beacon.battery_low.v1"
    CLASS: ClassVar[EventClass] = EventClass.ALERT
    TOPIC: ClassVar[str] = "alerts"

    beacon: str
    zone: str
    battery_mv: int
    threshold_mv: int


@dataclass(frozen=True, slots=True, kw_only=True)
class BeaconSilent(Event):
    """A store beacon has not been heard for `silent_after_s` (dead battery, removed, stolen)."""

    TYPE: ClassVar[str] = "retail.beacon.silent.v1"
    CLASS: ClassVar[EventClass] = EventClass.ALERT
    TOPIC: ClassVar[str] = "alerts"

    beacon: str
    zone: str
    last_seen: datetime | None
    silent_after_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class BeaconRecovered(Event):
    """A beacon condition ended: `condition` is "battery_low" (battery replaced) or "silent" (heard again)."""

    TYPE: ClassVar[str] = "retail.beacon.recovered.v1"
    CLASS: ClassVar[EventClass] = EventClass.ALERT
    TOPIC: ClassVar[str] = "alerts"

    beacon: str
    zone: str
    condition: str
    battery_mv: int | None = None

    def __post_init__(self) -> None:
        Event.__post_init__(self)
        if self.condition not in ("battery_low", "silent"):
            raise ValueError(f"unknown beacon condition {self.condition!r}")
