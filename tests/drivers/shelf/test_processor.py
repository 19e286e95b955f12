"""The shelf processor: samples of planogram lanes -> StockUpdate(count) and shelf events."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import timedelta

import pytest

from drivers.shelf.events import ShelfCountChanged, ShelfFault, ShelfFaultCleared, ShelfUnknownObject
from drivers.shelf.processor import ShelfProcessor
from drivers.shelf.reads import WeightFault, WeightSample
from edge.clock import ManualClock
from edge.config import Manifest
from edge.driver import DeviceOffline
from edge.processing import Output, StockFlag, StockUpdate
from edge.runtime import Upsert

Out = list[Output | Upsert]


def feed(proc: ShelfProcessor, clock: ManualClock, shelf: str, lane: str, grams: float, seconds: float) -> Out:
    rng = random.Random(2)
    out: list[Output | Upsert] = []
    for _ in range(int(seconds * 80)):
        clock.advance(1 / 80)
        r = WeightSample(device_id="shelf-1", time=clock.now(), shelf=shelf, lane=lane, grams=grams + rng.gauss(0, 1.0))
        out += proc.feed(r, clock.now())
    return out


def test_counts_become_stock_updates(demo_manifest: Manifest, clock: ManualClock) -> None:
    proc = ShelfProcessor(demo_manifest, clock)
    out = feed(proc, clock, "shelf-a1", "l2", 5 * 520.0, 2)  # water-500, 520 g from the catalog
    out += feed(proc, clock, "shelf-a1", "l2", 3 * 520.0, 2)
    updates = [o for o in out if isinstance(o, StockUpdate)]
    assert [(u.shelf, u.sku, u.count, u.origin, u.source) for u in updates] == [
        ("shelf-a1", "water-500", 5, "weight", "shelf-1"),
        ("shelf-a1", "water-500", 3, "weight", "shelf-1"),
    ]
    tele = [o for o in out if isinstance(o, ShelfCountChanged)]
    assert [t.count for t in tele] == [5, 3]
    assert all(t.TOPIC == "events/shelf" and t.subject == "shelf-a1" for t in tele)


def test_silence_fault_and_recovery(demo_manifest: Manifest, clock: ManualClock) -> None:
    proc = ShelfProcessor(demo_manifest, clock)
    feed(proc, clock, "shelf-b1", "l1", 4 * 162.0, 2)
    clock.advance(2)
    assert proc.tick(clock.now()) == []
    clock.advance(4)
    faults = proc.tick(clock.now())
    assert [(type(f), getattr(f, "code", None), getattr(f, "held_count", None)) for f in faults] == [
        (ShelfFault, "timeout", 4), (StockFlag, None, None)
    ]
    assert proc.tick(clock.now() + timedelta(seconds=10)) == []  # raised once
    out = feed(proc, clock, "shelf-b1", "l1", 4 * 162.0, 2)
    # good samples end the fault; the count is trusted again (flag off) once the lane settled
    assert [type(o) for o in out] == [ShelfFaultCleared, StockFlag]


def test_failed_samples_and_unmapped_lanes(demo_manifest: Manifest, clock: ManualClock) -> None:
    proc = ShelfProcessor(demo_manifest, clock)
    feed(proc, clock, "shelf-b1", "l2", 10 * 108.0, 2)
    out: list[Output | Upsert] = []
    for _ in range(3):
        out += proc.feed(
            WeightFault(device_id="shelf-1", time=clock.now(), shelf="shelf-b1", lane="l2", code="crc"), clock.now()
        )
    assert [(type(o), getattr(o, "code", "")) for o in out] == [(ShelfFault, "crc"), (StockFlag, "")]
    assert feed(proc, clock, "nope", "l1", 100.0, 0.1) == []
    assert proc.unmapped == 8


def _kinds(out: Sequence[Output | Upsert]) -> list[tuple[str, object]]:
    """(type, code / on) of every output but the count telemetry."""
    return [
        (type(o).__name__, getattr(o, "on", getattr(o, "code", getattr(o, "count", None))))
        for o in out
        if not isinstance(o, ShelfCountChanged)
    ]


# (what happens on the demo's cola lane shelf-a1/l1: 355 g cans, capacity 24) -> outputs after the first count
PLAUSIBLE = [
    (
        "6 cans + a 2.5 kg bag: unknown object, stale, no 13",
        6, 6 * 355.0 + 2500.0, 6 * 355.0,
        [("StockFlag", True), ("ShelfUnknownObject", "rise"), ("ShelfUnknownObjectCleared", 6), ("StockFlag", False)],
    ),
    (
        "a 12 kg lean on the empty lane: unknown object, stale, no 34",
        0, 12000.0, 0.0,
        [("StockFlag", True), ("ShelfUnknownObject", "capacity"), ("ShelfUnknownObjectCleared", 0),
         ("StockFlag", False)],
    ),
    (
        "the bag taken away with a can: the new count ends the unknown object",
        6, 6 * 355.0 + 2500.0, 5 * 355.0,
        [("StockFlag", True), ("ShelfUnknownObject", "rise"), ("StockUpdate", 5), ("ShelfUnknownObjectCleared", 5),
         ("StockFlag", False)],
    ),
    ("a restock to capacity is stock", 6, 24 * 355.0, 24 * 355.0, [("StockUpdate", 24)]),
    (
        "a 12 kg lean shorter than unknown_after_s: stale while it lasts, no event, no count",
        6, 6 * 355.0 + 12000.0, 6 * 355.0, [("StockFlag", True), ("StockFlag", False)],
    ),
]


@pytest.mark.parametrize(("name", "first", "during", "after", "want"), PLAUSIBLE, ids=[p[0] for p in PLAUSIBLE])
def test_plausible_weight(demo_manifest: Manifest, clock: ManualClock, name: str, first: int, during: float,
                          after: float, want: list[tuple[str, object]]) -> None:
    proc = ShelfProcessor(demo_manifest, clock)
    out = feed(proc, clock, "shelf-a1", "l1", first * 355.0, 2)
    assert [o.count for o in out if isinstance(o, StockUpdate)] == [first]
    seconds = 2.5 if "shorter" in name else 5.0
    out = feed(proc, clock, "shelf-a1", "l1", during, seconds) + feed(proc, clock, "shelf-a1", "l1", after, 2)
    assert _kinds(out) == want
    flags = [o for o in out if isinstance(o, StockFlag)]
    assert all((f.shelf, f.sku, f.flag, f.origin) == ("shelf-a1", "cola-330", "stale", "weight") for f in flags)
    unknown = [o for o in out if isinstance(o, ShelfUnknownObject)]
    for u in unknown:
        assert (u.shelf, u.lane, u.sku, u.held_count) == ("shelf-a1", "l1", "cola-330", first)
        assert u.since is not None and u.since < u.time and u.reason.startswith("object on the shelf")


def test_device_offline_faults_its_lanes_only(demo_manifest: Manifest, clock: ManualClock) -> None:
    proc = ShelfProcessor(demo_manifest, clock)
    feed(proc, clock, "shelf-a1", "l1", 5 * 355.0, 2)
    out = proc.feed(DeviceOffline(device_id="shelf-1", time=clock.now(), reason="EOF"), clock.now())
    assert _kinds(out) == [("ShelfFault", "offline"), ("StockFlag", True)]
    fault = out[0]
    assert isinstance(fault, ShelfFault)
    assert (fault.sku, fault.reason, fault.held_count) == ("cola-330", "shelf controller offline", 5)
    assert proc.feed(DeviceOffline(device_id="other", time=clock.now()), clock.now()) == []
    assert proc.stale_cells() == {("shelf-a1", "cola-330"): {"l1"}}
    out = feed(proc, clock, "shelf-a1", "l1", 3 * 355.0, 2)  # back, and two cans went meanwhile
    assert _kinds(out) == [("ShelfFaultCleared", "offline"), ("StockUpdate", 3), ("StockFlag", False)]
    assert proc.stale_cells() == {}


def _empty_lane_manifest(demo_manifest: Manifest, config_tare: float) -> Manifest:
    from drivers.shelf.config import ShelfSerialConfig

    dev = ShelfSerialConfig(id="shelf-1", port="/dev/null", lanes=[
        {"channel": "1", "shelf": "shelf-a1", "lane": "l1", "tare_g": config_tare}],
        counting={"drift_max_g_per_h": 36_000.0, "drift_tau_s": 1.0})
    return demo_manifest.model_copy(update={"devices": [dev]})


def test_tracked_tare_is_saved_and_restored(demo_manifest: Manifest, clock: ManualClock) -> None:
    """The tare tracked on the empty lane goes out as shelf_tares rows; a new processor given those rows starts
    from it; a lane whose manifest tare changed since starts from the manifest."""
    manifest = _empty_lane_manifest(demo_manifest, 900.0)
    proc = ShelfProcessor(manifest, clock)
    out = feed(proc, clock, "shelf-a1", "l1", 870.0, 20)  # the empty tray weighs 870 g, not 900
    rows = [o for o in out if isinstance(o, Upsert)]
    assert rows and all(r.table == "shelf_tares" == proc.state_table for r in rows)
    last = dict(rows[-1].row)
    assert (last["device"], last["shelf"], last["lane"], last["config_tare_g"]) == ("shelf-1", "shelf-a1", "l1", 900.0)
    assert last["tare_g"] == pytest.approx(870.0, abs=1.5)
    again = ShelfProcessor(manifest, clock)
    again.restore_state([last, {"device": "x"}, {**last, "lane": "l2", "tare_g": "nan?"},
                         {**last, "device": "d2", "tare_g": float("nan")}, {**last, "device": "d3", "tare_g": 1e300}])
    assert set(again._restored) == {("shelf-1", "shelf-a1", "l1")}
    feed(again, clock, "shelf-a1", "l1", 870.0 + 4 * 355.0, 0.1)  # a load: no tracking, the tare is the saved one
    eng = again.lane_engine("shelf-1", "shelf-a1", "l1")
    assert eng is not None
    assert eng.tare == last["tare_g"]
    moved = ShelfProcessor(_empty_lane_manifest(demo_manifest, 850.0), clock)
    moved.restore_state([last])
    feed(moved, clock, "shelf-a1", "l1", 850.0 + 4 * 355.0, 0.1)
    eng = moved.lane_engine("shelf-1", "shelf-a1", "l1")
    assert eng is not None
    assert eng.tare == 850.0
