"""Foot-traffic aggregation: door deltas, staff entries and zone presence into interval and hourly figures.

Pure and clock-injected: every call gets `now` (aware UTC). Intervals are aligned to multiples of
`interval_s` since the epoch; hours and days are store-local (manifest `store.timezone`). Occupancy is
sum(in) - sum(out), clamped at 0 on every step, and reset to 0 at the store's closing time. Visitors are
entries minus staff entries, never below 0. Dwell statistics are median and p90 (linear interpolation)
over visits that *ended* in the period.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

MAX_DWELLS = 100_000  # per zone and period; a store day never comes close, this only bounds memory


def percentile(values: Sequence[float], p: float) -> float | None:
    """The p-quantile (0..1) of `values` by linear interpolation; None when empty."""
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * p
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclass(slots=True)
class _ZoneBucket:
    seen: set[str] = field(default_factory=set)
    entries: int = 0
    exits: int = 0
    dwells: list[float] = field(default_factory=list)

    def add_dwell(self, d: float) -> None:
        if len(self.dwells) < MAX_DWELLS:
            self.dwells.append(d)


@dataclass(slots=True)
class _Bucket:
    start: datetime
    entries: int = 0
    exits: int = 0
    staff: int = 0
    zones: dict[str, _ZoneBucket] = field(default_factory=dict)

    def zone(self, z: str) -> _ZoneBucket:
        b = self.zones.get(z)
        if b is None:
            b = self.zones[z] = _ZoneBucket()
        return b


@dataclass(frozen=True, slots=True, kw_only=True)
class Summary:
    """Figures of one closed period (`hourly` tells an hour rollup from an interval)."""

    start: datetime
    end: datetime
    hourly: bool
    entries: int
    exits: int
    staff_entries: int
    visitors: int
    occupancy: int
    zones: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"start": _iso(self.start), "end": _iso(self.end), "entries": self.entries, "exits": self.exits,
                "staff_entries": self.staff_entries, "visitors": self.visitors, "occupancy": self.occupancy,
                "zones": self.zones}


@dataclass(frozen=True, slots=True, kw_only=True)
class ZonePresence:
    """One zone now and today: devices present, distinct devices today, dwell of today's visits."""

    zone: str
    present: int
    unique_today: int
    dwell_median_s: float | None
    dwell_p90_s: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class TrafficView:
    """What the API shows of foot traffic: today's totals (store-local day), occupancy, zone presence,
    the recent closed intervals and today's hours (newest last)."""

    time: datetime
    day: date
    entries_today: int
    exits_today: int
    staff_entries_today: int
    visitors_today: int
    occupancy: int
    zones: dict[str, ZonePresence]
    recent_intervals: tuple[Summary, ...]
    hours_today: tuple[Summary, ...]
    hour_now: Summary | None = None
    """The current hour so far (not closed yet)."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form for the API."""
        return {
            "time": _iso(self.time), "day": self.day.isoformat(), "entries_today": self.entries_today,
            "exits_today": self.exits_today, "staff_entries_today": self.staff_entries_today,
            "visitors_today": self.visitors_today, "occupancy": self.occupancy,
            "zones": {z: {"present": p.present, "unique_today": p.unique_today,
                          "dwell_median_s": p.dwell_median_s, "dwell_p90_s": p.dwell_p90_s}
                      for z, p in self.zones.items()},
            "recent_intervals": [s.as_dict() for s in self.recent_intervals],
            "hours_today": [s.as_dict() for s in self.hours_today],
            "hour_now": self.hour_now.as_dict() if self.hour_now is not None else None,
        }


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


class TrafficAggregator:
    """Accumulates traffic; `tick(now)` closes intervals and hours and returns their summaries."""

    def __init__(
        self,
        now: datetime,
        interval_s: int = 60,
        timezone: str = "UTC",
        closing_time: str | None = "21:00",
        keep_intervals: int = 120,
    ) -> None:
        self.interval_s = interval_s
        self.tz = ZoneInfo(timezone)
        self._closing = time.fromisoformat(closing_time) if closing_time else None
        self.occupancy = 0
        self._present: dict[str, set[str]] = {}
        self._iv = _Bucket(self._align(now))
        self._hour = _Bucket(self._hour_start(now))
        self._day = _Bucket(self._day_start(now))
        self._last = now
        self._recent: deque[Summary] = deque(maxlen=keep_intervals)
        self._hours: list[Summary] = []
        self._pending: list[Summary] = []

    # ---- inputs ----
    def door(self, entries: int, exits: int, now: datetime) -> None:
        """Door deltas (people in, people out) counted at `now`."""
        self._roll(now)
        for b in (self._iv, self._hour, self._day):
            b.entries += entries
            b.exits += exits
        self.occupancy = max(0, self.occupancy + entries - exits)

    def staff_entry(self, now: datetime) -> None:
        """A staff member came in (not a visitor)."""
        self._roll(now)
        for b in (self._iv, self._hour, self._day):
            b.staff += 1

    def entered(self, zone: str, key: str, now: datetime) -> None:
        """Anonymous device `key` entered `zone`."""
        self._roll(now)
        self._present.setdefault(zone, set()).add(key)
        for b in (self._iv, self._hour, self._day):
            zb = b.zone(zone)
            zb.seen.add(key)
            zb.entries += 1

    def exited(self, zone: str, key: str, dwell_s: float, now: datetime) -> None:
        """Anonymous device `key` left `zone` after `dwell_s`."""
        self._roll(now)
        self._present.get(zone, set()).discard(key)
        for b in (self._iv, self._hour, self._day):
            zb = b.zone(zone)
            zb.exits += 1
            zb.add_dwell(dwell_s)

    # ---- time ----
    def tick(self, now: datetime) -> list[Summary]:
        """Close every period that ended by `now` (and any closed by earlier inputs); closing-time reset."""
        self._roll(now)
        out, self._pending = self._pending, []
        return out

    def _roll(self, now: datetime) -> None:
        out = self._pending
        now = max(now, self._last)  # wall clock stepped back: keep periods monotonic
        iv_end = self._iv.start + timedelta(seconds=self.interval_s)
        if now >= iv_end:
            out.append(self._summary(self._iv, iv_end, hourly=False))
            self._recent.append(out[-1])
            self._iv = self._fresh(self._align(now))
        hour_start = self._hour_start(now)
        if hour_start != self._hour.start:
            end = self._hour.start + timedelta(hours=1)
            out.append(self._summary(self._hour, end, hourly=True))
            self._hours.append(out[-1])
            self._hour = self._fresh(hour_start)
        day_start = self._day_start(now)
        if day_start != self._day.start:
            self._day = self._fresh(day_start)
            self._hours = []
        if self._closing is not None:
            local_last, local_now = self._last.astimezone(self.tz), now.astimezone(self.tz)
            d = local_last.date()
            while d <= local_now.date():
                close = datetime.combine(d, self._closing, self.tz)
                if local_last < close <= local_now:
                    self.occupancy = 0
                d += timedelta(days=1)
        self._last = now

    def view(self, now: datetime) -> TrafficView:
        """A snapshot for the API (pure: does not close periods)."""
        day = self._day
        zones = {}
        for z in sorted(set(day.zones) | set(self._present)):
            zb = day.zones.get(z) or _ZoneBucket()
            zones[z] = ZonePresence(zone=z, present=len(self._present.get(z, ())), unique_today=len(zb.seen),
                                    dwell_median_s=percentile(zb.dwells, 0.5), dwell_p90_s=percentile(zb.dwells, 0.9))
        return TrafficView(
            time=now, day=day.start.astimezone(self.tz).date(), entries_today=day.entries, exits_today=day.exits,
            staff_entries_today=day.staff, visitors_today=max(0, day.entries - day.staff),
            occupancy=self.occupancy, zones=zones, recent_intervals=tuple(self._recent),
            hours_today=tuple(self._hours),
            hour_now=self._summary(self._hour, self._hour.start + timedelta(hours=1), hourly=True),
        )

    # ---- internals ----
    def _fresh(self, start: datetime) -> _Bucket:
        b = _Bucket(start)
        for z, keys in self._present.items():  # who is still there counts in the new period too
            if keys:
                b.zone(z).seen.update(keys)
        return b

    def _align(self, now: datetime) -> datetime:
        ts = now.timestamp()
        return datetime.fromtimestamp(ts - ts % self.interval_s, UTC)

    def _hour_start(self, now: datetime) -> datetime:
        local = now.astimezone(self.tz)
        return local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)

    def _day_start(self, now: datetime) -> datetime:
        local = now.astimezone(self.tz)
        return datetime.combine(local.date(), time(0), self.tz).astimezone(UTC)

    def _summary(self, b: _Bucket, end: datetime, hourly: bool) -> Summary:
        zones = [
            {"zone": z, "unique": len(zb.seen), "entries": zb.entries, "exits": zb.exits,
             "present": len(self._present.get(z, ())), "dwell_median_s": percentile(zb.dwells, 0.5),
             "dwell_p90_s": percentile(zb.dwells, 0.9)}
            for z, zb in sorted(b.zones.items())
        ]
        return Summary(start=b.start, end=end, hourly=hourly, entries=b.entries, exits=b.exits,
                       staff_entries=b.staff, visitors=max(0, b.entries - b.staff), occupancy=self.occupancy,
                       zones=zones)
