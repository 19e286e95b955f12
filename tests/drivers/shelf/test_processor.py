"""The shelf processor: samples of planogram lanes -> StockUpdate(count) and shelf events."""

from __future__ import annotations

import random
from datetime import timedelta

from drivers.shelf.events import ShelfCountChanged, ShelfFault, ShelfFaultCleared
from drivers.shelf.processor import ShelfProcessor
from drivers.shelf.reads import WeightFault, WeightSample
from edge.clock import ManualClock
from edge.config import Manifest
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
