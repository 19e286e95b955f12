"""The `traffic` processor shared by `ble` scanners and `door_counter`s: beacon health, presence, door
counts, and interval/hourly foot-traffic aggregates (pure: `now` comes in, events go out).

Register both device types with processor key "traffic" so one instance sees every scanner and door.
`view(now)` returns a `TrafficView` snapshot for the API.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import orjson

from drivers.ble.processor import BleProcessor
from drivers.ble.reads import Advert, AdvertsDropped
from drivers.door.protocol import CounterDelta
from drivers.door.reads import DoorCounts, DoorRebooted
from drivers.traffic.aggregate import Summary, TrafficAggregator, TrafficView
from drivers.traffic.events import TrafficHourly, TrafficInterval
from edge.clock import Clock
from edge.driver import Malformed, Reading
from edge.events import Event, MalformedInput
from edge.processing import Output
from edge.runtime import TRAFFIC_HOUR_KEY, Delete, StateWrite, Upsert

if TYPE_CHECKING:
    from edge.config import Manifest

SOURCE = "traffic"
MALFORMED_REPORT_S = 60.0
HOUR_KEY = TRAFFIC_HOUR_KEY  # the closed hours the API serves (GET /api/v1/traffic?day)
"""Each closed hour is kept as a `kv` row `traffic.hour/<store-local YYYY-MM-DDTHH>` (JSON: start, end, entries,
exits, staff_entries, visitors, occupancy), committed with its `retail.traffic.hourly.v1` event, for the
dashboard's "same weekday last week" (the events themselves are telemetry: gone once the hub has them)."""
KEEP_DAYS = 15
"""An hour's row is deleted when the same hour KEEP_DAYS later closes: at most 15 x 25 rows."""


def hour_key(start: datetime, tz: ZoneInfo) -> str:
    """The kv key of the hour starting at `start` (store-local date and hour)."""
    return HOUR_KEY + start.astimezone(tz).strftime("%Y-%m-%dT%H")


class TrafficProcessor:
    """Readings of BLE scanners and door counters in; beacon alerts and traffic aggregates out."""

    reading_types: tuple[type[Reading], ...] = (Advert, AdvertsDropped, DoorCounts, DoorRebooted, Malformed)

    def __init__(self, manifest: Manifest, clock: Clock, random: Callable[[int], bytes] = os.urandom) -> None:
        now = clock.now()  # construction time only: the starting period (feed/tick get `now`)
        traffic = manifest.traffic
        self.agg = TrafficAggregator(
            now, traffic.interval_s, manifest.store.timezone,
            manifest.store.closing_time if traffic.reset_at_closing else None,
        )
        devices = manifest.typed_devices()
        scanners = {d.id: d.zone for d in devices if d.type == "ble" and d.zone is not None}
        self.ble = BleProcessor(manifest.beacons, scanners, traffic, self.agg, random)
        self._bits = {d.id: int(getattr(d, "counter_bits", 32)) for d in devices if d.type == "door_counter"}
        self.doors: dict[str, tuple[CounterDelta, CounterDelta]] = {}  # door -> (in, out) counters
        self._door_malformed: dict[str, tuple[int, str]] = {}
        self._last = now
        self._next_malformed = now.timestamp() + MALFORMED_REPORT_S

    def feed(self, reading: Reading, now: datetime) -> Sequence[Output | StateWrite]:
        """Handle one reading."""
        self._last = now
        out: list[Output | StateWrite] = []
        if isinstance(reading, Advert):
            out += self.ble.feed(reading, now)
        elif isinstance(reading, DoorCounts):
            out += self._door(reading, now)
        elif isinstance(reading, DoorRebooted):
            for tracker in self.doors.get(reading.device_id, ()):
                tracker.reboot()
        elif isinstance(reading, AdvertsDropped):
            self.ble.dropped += reading.count
        elif isinstance(reading, Malformed) and reading.device_id in self._bits:
            n, _ = self._door_malformed.get(reading.device_id, (0, ""))
            self._door_malformed[reading.device_id] = (n + 1, reading.reason)
        out += self._summaries(self.agg.tick(now))
        return out

    def tick(self, now: datetime) -> Sequence[Output | StateWrite]:
        """Timeouts, period closes, malformed-frame summaries."""
        self._last = now
        out: list[Output | StateWrite] = list(self.ble.tick(now))
        out += self._summaries(self.agg.tick(now))
        if now.timestamp() >= self._next_malformed:
            self._next_malformed = now.timestamp() + MALFORMED_REPORT_S
            for counts in (self.ble.malformed, self._door_malformed):
                for dev, (n, reason) in sorted(counts.items()):
                    out.append(MalformedInput(source=dev, time=now, device=dev, count=n, last_reason=reason))
                counts.clear()
        return out

    def view(self, now: datetime | None = None) -> TrafficView:
        """Today's totals, occupancy and zone presence (at the last time seen unless `now` is given)."""
        return self.agg.view(now or self._last)

    def beacon_status(self) -> dict[str, dict[str, object]]:
        """Beacon id -> last_seen_t, battery_mv, silent, battery_low."""
        return self.ble.health.status()

    def _door(self, r: DoorCounts, now: datetime) -> list[Event]:
        pair = self.doors.get(r.device_id)
        if pair is None:
            bits = self._bits.get(r.device_id, 32)  # a door not in the manifest (hot reload): 32-bit counters
            pair = self.doors[r.device_id] = (CounterDelta(bits), CounterDelta(bits))
        d_in = pair[0].update(r.total_in)
        d_out = pair[1].update(r.total_out)
        if d_in or d_out:
            self.agg.door(d_in, d_out, now)
        return []

    def _summaries(self, summaries: list[Summary]) -> list[Event | StateWrite]:
        out: list[Event | StateWrite] = []
        for s in summaries:
            cls = TrafficHourly if s.hourly else TrafficInterval
            out.append(cls(source=SOURCE, time=s.end, start=s.start, end=s.end, entries=s.entries, exits=s.exits,
                           staff_entries=s.staff_entries, visitors=s.visitors, occupancy=s.occupancy,
                           zones=s.zones))
            if s.hourly:
                row = {k: v for k, v in s.as_dict().items() if k != "zones"}
                out.append(Upsert("kv", {"key": hour_key(s.start, self.agg.tz), "value": orjson.dumps(row).decode()}))
                out.append(Delete("kv", {"key": hour_key(s.start - timedelta(days=KEEP_DAYS), self.agg.tz)}))
        return out
