"""Foot-traffic aggregation: intervals and hours, visitors minus staff, occupancy never negative and reset at
closing, dwell median / p90, zone unique counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.traffic.aggregate import TrafficAggregator, percentile

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def test_interval_and_hour_rollup() -> None:
    agg = TrafficAggregator(T0, 60, "UTC", "21:00")
    agg.door(3, 0, at(5))
    agg.staff_entry(at(6))
    agg.door(0, 1, at(30))
    agg.entered("aisle-1", "k1", at(10))
    agg.entered("aisle-1", "k2", at(11))
    agg.exited("aisle-1", "k1", 40.0, at(50))
    out = agg.tick(at(60))
    assert len(out) == 1
    s = out[0]
    assert (s.start, s.end, s.entries, s.exits, s.staff_entries, s.visitors, s.occupancy) == (
        T0, at(60), 3, 1, 1, 2, 2)
    assert s.zones == [{"zone": "aisle-1", "unique": 2, "entries": 2, "exits": 1, "present": 1,
                        "dwell_median_s": 40.0, "dwell_p90_s": 40.0}]
    agg.door(2, 0, at(90))
    out = agg.tick(at(3600))
    assert [x.hourly for x in out] == [False, True]
    hour = out[1]
    assert (hour.start, hour.end, hour.entries, hour.visitors) == (T0, at(3600), 5, 4)
    assert hour.zones[0]["unique"] == 2
    v = agg.view(at(3601))
    assert (v.entries_today, v.visitors_today, v.occupancy) == (5, 4, 4)
    assert v.zones["aisle-1"].present == 1
    assert v.zones["aisle-1"].unique_today == 2
    assert len(v.hours_today) == 1
    assert v.as_dict()["zones"]["aisle-1"]["dwell_median_s"] == 40.0


def test_next_interval_counts_who_is_still_there() -> None:
    agg = TrafficAggregator(T0, 60, "UTC", None)
    agg.entered("aisle-2", "k", at(1))
    agg.tick(at(60))
    out = agg.tick(at(120))
    assert out[0].zones[0]["unique"] == 1
    assert out[0].zones[0]["entries"] == 0


def test_occupancy_resets_at_closing_in_store_time() -> None:
    # Europe/Berlin: 21:00 local is 20:00 UTC in January
    agg = TrafficAggregator(datetime(2026, 1, 5, 19, 0, tzinfo=UTC), 60, "Europe/Berlin", "21:00")
    agg.door(10, 2, datetime(2026, 1, 5, 19, 30, tzinfo=UTC))
    agg.tick(datetime(2026, 1, 5, 19, 59, tzinfo=UTC))
    assert agg.occupancy == 8
    agg.tick(datetime(2026, 1, 5, 20, 0, 1, tzinfo=UTC))
    assert agg.occupancy == 0
    agg.door(0, 3, datetime(2026, 1, 5, 20, 5, tzinfo=UTC))  # late leavers never push it below 0
    assert agg.occupancy == 0


def test_percentiles() -> None:
    assert percentile([], 0.5) is None
    assert percentile([10.0], 0.9) == 10.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile(list(map(float, range(1, 11))), 0.9) == 9.1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20), st.integers(0, 7200)), max_size=40))
def test_occupancy_never_negative(steps: list[tuple[int, int, int]]) -> None:
    agg = TrafficAggregator(T0, 60, "UTC", "09:30")
    t = 0
    for i, o, dt in steps:
        t += dt
        agg.door(i, o, at(t))
        for s in agg.tick(at(t)):
            assert s.occupancy >= 0
            assert s.visitors >= 0
        assert agg.occupancy >= 0
