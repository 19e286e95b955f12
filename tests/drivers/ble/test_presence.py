"""Zone presence: smoothing, hysteresis under RSSI spikes, dwell, expiry of raw sightings."""

from __future__ import annotations

import pytest

from drivers.ble.config import PresenceConfig
from drivers.ble.presence import PresenceTracker, Transition, ZoneEntered, ZoneExited

CFG = PresenceConfig(hold_s=3.0, exit_after_s=20.0, sighting_ttl_s=60.0)


def feed(tr: PresenceTracker, samples: list[tuple[float, str, float]]) -> list[Transition]:
    out: list[Transition] = []
    for t, scanner, rssi in samples:
        out += tr.observe("k", scanner, {"s-a": "aisle-1", "s-b": "aisle-2"}[scanner], rssi, t)
        out += tr.tick(t)
    return out


@pytest.mark.parametrize(
    ("name", "samples", "zone_at_end"),
    [
        ("steady in aisle-1", [(t, "s-a", -60) for t in range(10)], "aisle-1"),
        ("too weak to enter", [(t, "s-a", -85) for t in range(10)], None),
        ("one spike in aisle-2 does not move", [(t, "s-a", -62) for t in range(10)] + [(10.5, "s-b", -40)]
         + [(t, "s-a", -62) for t in range(11, 20)], "aisle-1"),
        ("short burst (< hold) in aisle-2 does not move",
         [(t, "s-a", -62) for t in range(10)] + [(10 + t / 2, "s-b", -45) for t in range(4)]
         + [(t, "s-a", -62) for t in range(12, 20)] + [(t + 0.5, "s-b", -95) for t in range(12, 20)], "aisle-1"),
        ("sustained stronger aisle-2 moves",
         [(t, "s-a", -62) for t in range(10)] + [(t, "s-b", -50) for t in range(10, 20)]
         + [(t + 0.5, "s-a", -75) for t in range(10, 20)], "aisle-2"),
        ("within the margin stays", [(t, "s-a", -62) for t in range(10)]
         + [x for t in range(10, 30) for x in ((t, "s-b", -59), (t + 0.5, "s-a", -62))], "aisle-1"),
    ],
)
def test_hysteresis(name: str, samples: list[tuple[float, str, float]], zone_at_end: str | None) -> None:
    tr = PresenceTracker(CFG)
    feed(tr, samples)
    assert tr.zone_of("k") == zone_at_end, name


def test_entry_move_exit_and_dwell() -> None:
    tr = PresenceTracker(CFG)
    out = feed(tr, [(t, "s-a", -60) for t in range(30)])
    # the smoothed RSSI climbs from the floor (2 samples), then must hold for hold_s
    assert out == [ZoneEntered("k", "aisle-1", 4.0)]
    out = feed(tr, [x for t in range(30, 60) for x in ((t, "s-b", -50), (t + 0.5, "s-a", -92))])
    assert [type(x).__name__ for x in out] == ["ZoneExited", "ZoneEntered"]
    ex = out[0]
    assert isinstance(ex, ZoneExited)
    assert ex.zone == "aisle-1"
    assert 31.0 <= ex.t <= 40.0  # climb + margin + hold after the walk at t=30
    assert ex.dwell_s == ex.t - 4.0
    out = tr.tick(59.5 + 25)  # silence past exit_after_s
    assert len(out) == 1
    assert isinstance(out[0], ZoneExited)
    assert out[0].zone == "aisle-2"
    assert out[0].t == 59.5  # exit at the last good sighting, not at the tick
    assert tr.present() == {}


def test_raw_sightings_expire() -> None:
    tr = PresenceTracker(CFG)
    for i in range(50):
        tr.observe(f"dev{i}", "s-a", "aisle-1", -95, 0.0)  # too weak to enter anything
    assert len(tr) == 50
    tr.tick(30.0)
    assert len(tr) == 50
    tr.tick(61.0)
    assert len(tr) == 0


def test_flush_exits_everyone() -> None:
    tr = PresenceTracker(PresenceConfig(hold_s=0.0))
    for t in range(3):
        tr.observe("a", "s-a", "aisle-1", -50, float(t))
        tr.observe("b", "s-b", "aisle-2", -50, float(t))
    assert tr.present() == {"aisle-1": 1, "aisle-2": 1}
    out = tr.flush(5.0)
    assert sorted(x.zone for x in out) == ["aisle-1", "aisle-2"]
    assert len(tr) == 0
