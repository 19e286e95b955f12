"""The beacon health rule: battery low / silent events of the BLE processor open staff alerts (device = the
beacon) that a recovery of that condition resolves, and that never expire while the condition holds."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from drivers.ble.events import BeaconBatteryLow, BeaconRecovered, BeaconSilent
from edge.config import Manifest
from edge.events import Event
from edge.runtime import Upsert
from edge.state import StockState
from rules.actions import BEACON_BATTERY_LOW, BEACON_SILENT, AlertClear, AlertRaise
from rules.alerts import AlertExpired, AlertOpened, AlertResolved
from rules.beacons import BATTERY_LOW, RECOVERED, SILENT, BeaconSeen, beacon_seen, step_beacons
from rules.config import RulesConfig
from rules.engine import RulesEngine

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
RULES = RulesConfig.model_validate({"defaults": {"min": 3}, "expire_after_s": 600})


@pytest.mark.parametrize(
    ("event_type", "data", "expected"),
    [
        (BATTERY_LOW, {"beacon": "b1", "battery_mv": 2400, "threshold_mv": 2500},
         BeaconSeen(BEACON_BATTERY_LOW, "b1", True, "battery 2400 mV, below 2500 mV")),
        (BATTERY_LOW, {"beacon": "b1", "battery_mv": 10**9, "threshold_mv": 2500},  # not believed: no figure
         BeaconSeen(BEACON_BATTERY_LOW, "b1", True, "battery low")),
        (BATTERY_LOW, {"beacon": "b1", "battery_mv": True, "threshold_mv": None},
         BeaconSeen(BEACON_BATTERY_LOW, "b1", True, "battery low")),
        (SILENT, {"beacon": "b1", "last_seen": T0, "silent_after_s": 30.0},
         BeaconSeen(BEACON_SILENT, "b1", True, "not heard since 2026-01-05T10:00:00Z")),
        (SILENT, {"beacon": "b1", "last_seen": None, "silent_after_s": 30.0},
         BeaconSeen(BEACON_SILENT, "b1", True, "never heard (silent for 30 s)")),
        (SILENT, {"beacon": "b1", "last_seen": None, "silent_after_s": float("nan")},
         BeaconSeen(BEACON_SILENT, "b1", True, "never heard")),
        (RECOVERED, {"beacon": "b1", "condition": "silent", "battery_mv": None},
         BeaconSeen(BEACON_SILENT, "b1", False, "heard again")),
        (RECOVERED, {"beacon": "b1", "condition": "battery_low", "battery_mv": 3000},
         BeaconSeen(BEACON_BATTERY_LOW, "b1", False, "battery replaced (3000 mV)")),
        (RECOVERED, {"beacon": "b1", "condition": "flat", "battery_mv": 3000}, None),
        (RECOVERED, {"beacon": None, "condition": "silent"}, None),
        (BATTERY_LOW, {"beacon": "", "battery_mv": 2400}, None),
        ("retail.beacon.moved.v1", {"beacon": "b1"}, None),
    ],
)
def test_beacon_seen(event_type: str, data: dict[str, object], expected: BeaconSeen | None) -> None:
    assert beacon_seen(event_type, data) == expected


LOW = BeaconSeen(BEACON_BATTERY_LOW, "b1", True, "battery 2400 mV, below 2500 mV")
SIL = BeaconSeen(BEACON_SILENT, "b1", True, "never heard")
BACK = BeaconSeen(BEACON_SILENT, "b1", False, "heard again")


@pytest.mark.parametrize(
    ("inputs", "actions", "held"),
    [
        ([LOW], [AlertRaise(kind=BEACON_BATTERY_LOW, device="b1", message="beacon b1: battery 2400 mV, below 2500 mV")],
         {(BEACON_BATTERY_LOW, "b1")}),
        ([LOW, LOW], [AlertRaise(kind=BEACON_BATTERY_LOW, device="b1",
                                 message="beacon b1: battery 2400 mV, below 2500 mV")],
         {(BEACON_BATTERY_LOW, "b1")}),  # a repeat raises nothing new
        ([SIL, BACK], [AlertRaise(kind=BEACON_SILENT, device="b1", message="beacon b1: never heard"),
                       AlertClear(kind=BEACON_SILENT, device="b1", reason="heard again")], set()),
        ([LOW, SIL, BACK], [AlertRaise(kind=BEACON_BATTERY_LOW, device="b1",
                                       message="beacon b1: battery 2400 mV, below 2500 mV"),
                            AlertRaise(kind=BEACON_SILENT, device="b1", message="beacon b1: never heard"),
                            AlertClear(kind=BEACON_SILENT, device="b1", reason="heard again")],
         {(BEACON_BATTERY_LOW, "b1")}),  # heard again ends silence only, the battery stays low
        ([BACK], [AlertClear(kind=BEACON_SILENT, device="b1", reason="heard again")], set()),  # restored alert
    ],
)
def test_step_beacons(inputs: list[BeaconSeen], actions: list[object], held: set[tuple[str, str]]) -> None:
    state: frozenset[tuple[str, str]] = frozenset()
    out: list[object] = []
    for seen in inputs:
        state, acts = step_beacons(state, seen)
        out += acts
    assert out == actions
    assert state == held


def engine(manifest: Manifest) -> RulesEngine:
    ids = itertools.count(1)
    e = RulesEngine(manifest, rules=RULES, new_id=lambda: f"id-{next(ids)}")
    ok, problems, _ = e.load_body(RULES.model_dump(exclude={"file", "watch_interval_s"}), "start", T0)
    assert ok, problems
    e.restore([], StockState(manifest), T0)
    return e


def low(t: datetime) -> BeaconBatteryLow:
    return BeaconBatteryLow(source="beacons", time=t, subject="b1", beacon="b1", zone="aisle-1", battery_mv=2400,
                            threshold_mv=2500)


def silent(t: datetime) -> BeaconSilent:
    return BeaconSilent(source="beacons", time=t, subject="b1", beacon="b1", zone="aisle-1", last_seen=None,
                        silent_after_s=30.0)


def recovered(t: datetime, condition: str) -> BeaconRecovered:
    return BeaconRecovered(source="beacons", time=t, subject="b1", beacon="b1", zone="aisle-1",
                           condition=condition, battery_mv=3000)


def events(out: object) -> list[Event]:
    assert isinstance(out, list | tuple)
    return [o for o in out if isinstance(o, Event)]


def test_engine_opens_and_resolves_beacon_alerts(demo_manifest: Manifest) -> None:
    e = engine(demo_manifest)
    out = e.react(low(T0), T0)
    [opened] = events(out)
    assert isinstance(opened, AlertOpened)
    assert (opened.kind, opened.device, opened.message) == (BEACON_BATTERY_LOW, "b1",
                                                           "beacon b1: battery 2400 mV, below 2500 mV")
    assert any(isinstance(o, Upsert) and o.table == "alerts" for o in out)
    [s] = events(e.react(silent(T0), T0))
    assert isinstance(s, AlertOpened) and s.kind == BEACON_SILENT
    # heard again: only the silence ends
    [r] = events(e.react(recovered(T0 + timedelta(seconds=5), "silent"), T0 + timedelta(seconds=5)))
    assert isinstance(r, AlertResolved) and (r.kind, r.alert_id, r.reason) == (BEACON_SILENT, s.alert_id,
                                                                               "heard again")
    assert [a.kind for a in e.book.live.values()] == [BEACON_BATTERY_LOW]
    # the battery alert never expires while the battery is low ...
    late = T0 + timedelta(seconds=5000)
    assert [ev for ev in events(e.tick(late)) if isinstance(ev, AlertExpired)] == []
    # ... and a new battery resolves it
    [r2] = events(e.react(recovered(late, "battery_low"), late))
    assert isinstance(r2, AlertResolved) and r2.alert_id == opened.alert_id
    assert r2.reason == "battery replaced (3000 mV)"
    assert e.book.live == {}


def test_restored_beacon_alert_expires_unless_announced_again(demo_manifest: Manifest) -> None:
    """After a restart the beacon processor starts afresh: an alert it does not announce again expires; one it
    announces again is held (and not opened twice)."""
    first = engine(demo_manifest)
    rows = [o.row for o in first.react(low(T0), T0) if isinstance(o, Upsert)]
    rows += [o.row for o in first.react(silent(T0), T0) if isinstance(o, Upsert)]
    e = RulesEngine(demo_manifest, rules=RULES, new_id=lambda: "id-x")
    e.load_body(RULES.model_dump(exclude={"file", "watch_interval_s"}), "start", T0)
    e.restore(rows, StockState(demo_manifest), T0)
    assert events(e.react(low(T0 + timedelta(seconds=1)), T0 + timedelta(seconds=1))) == []  # same alert
    late = T0 + timedelta(seconds=700)
    expired = [ev for ev in events(e.tick(late)) if isinstance(ev, AlertExpired)]
    assert [ev.kind for ev in expired] == [BEACON_SILENT]
    assert [a.kind for a in e.book.live.values()] == [BEACON_BATTERY_LOW]
