"""Weight-shelf lane faults and unknown objects become staff alerts after a hold time (issue 14, "faults
reach people"): the pure rule table-driven, then the engine fed the shelves' own event classes."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.shelf.events import (
    ShelfCountChanged,
    ShelfFault,
    ShelfFaultCleared,
    ShelfUnknownObject,
    ShelfUnknownObjectCleared,
)
from edge.brokers import Mosquitto
from edge.config import Manifest
from edge.gateway import Gateway
from edge.state import StockState
from firmware_sim.hub import HubRecorder
from rules.actions import LANE_FAULT, UNKNOWN_OBJECT, AlertClear, AlertRaise
from rules.alerts import AlertAcknowledged, AlertEscalated, AlertExpired, AlertOpened, AlertResolved
from rules.config import RulesConfig
from rules.engine import RulesEngine, split
from rules.lanes import (
    EVENT_TYPES,
    LANE_FIELDS,
    LaneSeen,
    LaneState,
    lane_condition_holds,
    lane_seen,
    step_lanes,
)

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
HOLD = 60.0


def fault(lane: str, on: bool = True, sku: str = "cola-330", at: datetime | None = None) -> LaneSeen:
    return LaneSeen(LANE_FAULT, "shelf-a1", lane, sku, on, "load cell not responding (stuck)", "shelf-1", at)


def thing(lane: str, on: bool = True, sku: str = "cola-330") -> LaneSeen:
    return LaneSeen(UNKNOWN_OBJECT, "shelf-a1", lane, sku, on, "object on the shelf (+812 g on the lane)")


Step = tuple[float, LaneSeen | None, list[str]]  # seconds after T0, input (None: time), "raise:kind"/"clear:kind"
CASES: dict[str, list[Step]] = {
    "a fault held past the hold time raises, its end clears": [
        (0, fault("a1-l1"), []),
        (59, None, []),
        (60, None, [f"raise:{LANE_FAULT}"]),
        (61, fault("a1-l1"), []),  # repeated while it lasts: nothing new
        (300, fault("a1-l1", on=False), [f"clear:{LANE_FAULT}"]),
    ],
    "a short fault raises nothing": [
        (0, fault("a1-l1"), []),
        (30, fault("a1-l1", on=False), []),
        (120, None, []),
    ],
    "the hold runs from when the trouble began": [
        (30, fault("a1-l1", at=T0), []),
        (60, None, [f"raise:{LANE_FAULT}"]),
    ],
    "two lanes of one cell: one alert, cleared when both are fine": [
        (0, fault("a1-l1"), []),
        (10, fault("a1-l2"), []),
        (70, None, [f"raise:{LANE_FAULT}"]),
        (80, fault("a1-l1", on=False), []),
        (90, fault("a1-l2", on=False), [f"clear:{LANE_FAULT}"]),
    ],
    "an unknown object and a fault are separate conditions": [
        (0, thing("a1-l1"), []),
        (0, fault("a1-l2", sku="water-500"), []),
        (60, None, [f"raise:{UNKNOWN_OBJECT}", f"raise:{LANE_FAULT}"]),
        (70, thing("a1-l1", on=False), [f"clear:{UNKNOWN_OBJECT}"]),
        (80, fault("a1-l2", on=False, sku="water-500"), [f"clear:{LANE_FAULT}"]),
    ],
    "an end for a lane that held nothing is ignored": [
        (0, fault("a1-l1", on=False), []),
        (100, None, []),
    ],
}


@pytest.mark.parametrize("name", list(CASES))
def test_lane_rule(name: str) -> None:
    state = LaneState()
    for offset, seen, expected in CASES[name]:
        state, actions = step_lanes(HOLD, 900.0, state, seen, T0 + timedelta(seconds=offset))
        got = [f"{'raise' if isinstance(a, AlertRaise) else 'clear'}:{a.kind}" for a in actions]
        assert got == expected, f"{name} at +{offset}s: {got} != {expected}"
        for a in actions:
            if isinstance(a, AlertRaise):
                assert a.message.startswith("check shelf-a1 lane a1-l")
                assert a.escalate_after_s == 900.0
                assert isinstance(a, AlertRaise) and not isinstance(a, AlertClear)


RULES = RulesConfig.model_validate(
    {"defaults": {"escalate_after_s": 120}, "lane_fault_hold_s": HOLD, "expire_after_s": 3600}
)


def engine(manifest: Manifest) -> RulesEngine:
    ids = itertools.count(1)
    e = RulesEngine(manifest, rules=RULES, new_id=lambda: f"id-{next(ids)}")
    ok, problems, _ = e.load_body(RULES.model_dump(exclude={"file", "watch_interval_s"}), "start", T0)
    assert ok, problems
    e.restore([], StockState(manifest), T0)
    return e


def lane_of(manifest: Manifest) -> tuple[str, str, str]:
    shelf = manifest.shelves[0]
    return shelf.id, shelf.lanes[0].id, shelf.lanes[0].sku


def test_stuck_load_cell_alert_lifecycle(demo_manifest: Manifest) -> None:
    e = engine(demo_manifest)
    shelf, lane, sku = lane_of(demo_manifest)
    # the fault event names no SKU (an older shelf driver): the planogram gives it
    stuck = ShelfFault(source="shelf-1", time=T0, subject=shelf, device="shelf-1", shelf=shelf, lane=lane,
                       code="stuck", held_count=12)
    assert split(e.react(stuck, T0))[0] == []
    assert split(e.tick(T0 + timedelta(seconds=59)))[0] == []
    (opened,) = split(e.tick(T0 + timedelta(seconds=60)))[0]
    assert isinstance(opened, AlertOpened)
    assert (opened.kind, opened.shelf, opened.sku) == (LANE_FAULT, shelf, sku)
    assert opened.message == f"check {shelf} lane {lane}: load cell not responding (stuck)"
    (esc,) = split(e.tick(T0 + timedelta(seconds=180)))[0]
    assert isinstance(esc, AlertEscalated) and esc.level == 1
    (ack,) = split(e.ack(opened.alert_id, "Sam", T0 + timedelta(seconds=200)))[0]
    assert isinstance(ack, AlertAcknowledged)
    # past expire_after_s with the cell still stuck: stays open
    assert split(e.tick(T0 + timedelta(hours=2)))[0] == []
    cleared = ShelfFaultCleared(source="shelf-1", time=T0, subject=shelf, device="shelf-1", shelf=shelf,
                                lane=lane, code="stuck")
    (resolved,) = split(e.react(cleared, T0 + timedelta(hours=2, seconds=1)))[0]
    assert isinstance(resolved, AlertResolved) and resolved.alert_id == opened.alert_id
    assert e.book.live == {}


def test_unknown_object_alert_and_its_end(demo_manifest: Manifest) -> None:
    e = engine(demo_manifest)
    shelf, lane, sku = lane_of(demo_manifest)
    heavy = ShelfUnknownObject(source="shelf-1", time=T0 + timedelta(seconds=3), subject=shelf, shelf=shelf,
                               lane=lane, sku=sku, net_g=2500.0, residual_units=0.4, held_count=6)
    e.react(heavy, T0 + timedelta(seconds=3))
    (opened,) = split(e.tick(T0 + timedelta(seconds=63)))[0]
    assert isinstance(opened, AlertOpened) and opened.kind == UNKNOWN_OBJECT
    assert opened.message.startswith(f"check {shelf} lane {lane}: object on the shelf")
    gone = ShelfUnknownObjectCleared(source="shelf-1", time=T0, subject=shelf, shelf=shelf, lane=lane, sku=sku,
                                     count=6)
    (resolved,) = split(e.react(gone, T0 + timedelta(seconds=90)))[0]
    assert isinstance(resolved, AlertResolved)


def test_a_settled_count_ends_a_condition_whose_end_event_never_came(demo_manifest: Manifest) -> None:
    e = engine(demo_manifest)
    shelf, lane, sku = lane_of(demo_manifest)
    e.react(ShelfFault(source="shelf-1", time=T0, device="shelf-1", shelf=shelf, lane=lane, code="timeout",
                       held_count=None), T0)
    (opened,) = split(e.tick(T0 + timedelta(seconds=61)))[0]
    counted = ShelfCountChanged(source="shelf-1", time=T0, shelf=shelf, lane=lane, sku=sku, count=5, net_g=1650.0,
                                residual_units=0.0)
    (resolved,) = split(e.react(counted, T0 + timedelta(seconds=70)))[0]
    assert isinstance(opened, AlertOpened)
    assert isinstance(resolved, AlertResolved) and resolved.alert_id == opened.alert_id


def test_restored_lane_alert_stays_while_the_fault_persists_and_expires_when_nobody_reports(
        demo_manifest: Manifest) -> None:
    shelf, lane, sku = lane_of(demo_manifest)
    row = {"id": "old", "kind": LANE_FAULT, "state": "open", "shelf": shelf, "sku": sku,
           "opened_at": T0.isoformat(), "updated_at": T0.isoformat()}
    e = RulesEngine(demo_manifest, rules=RULES, new_id=lambda: "new")
    e.load_body(RULES.model_dump(exclude={"file", "watch_interval_s"}), "start", T0)
    e.restore([row], StockState(demo_manifest), T0)
    # the restarted shelf reports the fault again: no second alert, and it holds past expiry
    e.react(ShelfFault(source="shelf-1", time=T0, device="shelf-1", shelf=shelf, lane=lane, code="stuck",
                       held_count=None), T0 + timedelta(seconds=5))
    assert split(e.tick(T0 + timedelta(seconds=3700)))[0] == []
    assert lane_condition_holds(e.lanes, LANE_FAULT, shelf, sku)
    assert list(e.book.live) == ["old"]
    # a second engine: nobody reports the lane after the restart -> expire_after_s closes it
    e2 = RulesEngine(demo_manifest, rules=RULES, new_id=lambda: "new")
    e2.load_body(RULES.model_dump(exclude={"file", "watch_interval_s"}), "start", T0)
    e2.restore([row], StockState(demo_manifest), T0)
    assert [type(x) for x in split(e2.tick(T0 + timedelta(seconds=3601)))[0]] == [AlertExpired]


async def test_fault_alert_through_a_running_gateway_reaches_the_hub(demo_manifest: Manifest, mosquitto: Mosquitto,
                                                                      tmp_path: Path) -> None:
    # the shelf processor's events go through the real pipeline: the rules see them, the alert is committed
    # and published on {root}/alerts; the fault's end resolves it
    shelf, lane, sku = lane_of(demo_manifest)
    rules = RulesConfig.model_validate({"lane_fault_hold_s": 0.5})
    m = demo_manifest.model_copy(update={"api": demo_manifest.api.model_copy(update={"enabled": False}),
                                         "rules": rules})
    hub = HubRecorder(mosquitto.port, "retail/v1/demo/alerts")
    try:
        async with Gateway(m, hub_url=mosquitto.url, data_dir=tmp_path / "d", tick_interval=0.1) as gw:
            await wait_until(lambda: gw.rules.engine.ready)
            now = gw.clock.now()
            gw.pipeline.route([ShelfFault(source="shelf-1", time=now, subject=shelf, device="shelf-1", shelf=shelf,
                                          lane=lane, code="timeout", held_count=3)], now)
            await asyncio.to_thread(hub.wait_for, lambda h: len(h.events()) >= 1, 20)
            now = gw.clock.now()
            gw.pipeline.route([ShelfFaultCleared(source="shelf-1", time=now, subject=shelf, device="shelf-1",
                                                 shelf=shelf, lane=lane, code="timeout")], now)
            await asyncio.to_thread(hub.wait_for, lambda h: len(h.events()) >= 2, 20)
        opened, resolved = hub.events()
        assert opened["type"] == "retail.alert.opened.v1" and resolved["type"] == "retail.alert.resolved.v1"
        assert opened["data"]["kind"] == LANE_FAULT and opened["data"]["sku"] == sku
        assert opened["data"]["message"].startswith(f"check {shelf} lane {lane}: load cell not responding")
        assert resolved["subject"] == opened["subject"]
    finally:
        hub.close()


async def wait_until(pred: Callable[[], object], limit_s: float = 20.0) -> None:
    deadline = time.monotonic() + limit_s
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.05)


FIELD_VALUES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=12),
                         st.datetimes(timezones=st.just(UTC)), st.datetimes(),
                         st.sampled_from(["shelf-a1", "a1-l1", "a1-l2"]))
LANE_EVENTS = st.tuples(
    st.sampled_from([*sorted(EVENT_TYPES), "retail.shelf.other.v1"]),
    st.dictionaries(st.sampled_from([*LANE_FIELDS, "source"]), FIELD_VALUES, max_size=9),
    st.floats(0, 120),
)


@settings(max_examples=int(os.environ.get("EDGE_FUZZ_EXAMPLES", "10000" if os.environ.get("EDGE_FUZZ") == "long"
                                          else "200")), deadline=None)
@given(st.lists(LANE_EVENTS, max_size=40))
def test_fuzz_lane_events_never_crash_and_alerts_alternate(events: list[tuple[str, dict[str, object], float]]) -> None:
    sku_of = {("shelf-a1", "a1-l1"): "cola-330", ("shelf-a1", "a1-l2"): "cola-330"}
    state, now, live = LaneState(), T0, set()
    for etype, data, dt in events:
        now += timedelta(seconds=dt)
        for seen in [*lane_seen(etype, data, sku_of), None]:
            state, actions = step_lanes(HOLD, None, state, seen, now)
            for a in actions:
                key = (a.kind, a.shelf, a.sku)
                if isinstance(a, AlertRaise):
                    assert key not in live
                    live.add(key)
                else:
                    assert key in live
                    live.remove(key)
    assert live == set(state.raised)
