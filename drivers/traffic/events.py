"""Foot-traffic aggregate events (topic `events/traffic`): one per interval, one per hour."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from edge.events import Event, EventClass


@dataclass(frozen=True, slots=True, kw_only=True)
class TrafficInterval(Event):
    """Foot traffic over [start, end): door entries/exits, staff entries, visitors (entries - staff, >= 0),
    occupancy at the end (>= 0) and per zone {zone, unique, entries, exits, present, dwell_median_s,
    dwell_p90_s} from anonymous BLE presence (dwell over visits that ended in the interval, None if none)."""

    TYPE: ClassVar[str] = "retail.traffic.interval.v1"
    CLASS: ClassVar[EventClass] = EventClass.TELEMETRY
    TOPIC: ClassVar[str] = "events/traffic"

    start: datetime
    end: datetime
    entries: int
    exits: int
    staff_entries: int
    visitors: int
    occupancy: int
    zones: list[dict[str, Any]]

    def __post_init__(self) -> None:
        Event.__post_init__(self)
        if min(self.entries, self.exits, self.staff_entries, self.visitors, self.occupancy) < 0:
            raise ValueError("traffic counts cannot be negative")
        if self.end <= self.start:
            raise ValueError("an interval ends after it starts")


@dataclass(frozen=True, slots=True, kw_only=True)
class TrafficHourly(TrafficInterval):
    """The same figures rolled up over one store-local hour."""

    TYPE: ClassVar[str] = "retail.traffic.hourly.v1"
