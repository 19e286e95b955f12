"""Batch-wise shelf samples (`WeightSamples`): shelf_mqtt decodes a socket read's messages into runs of samples
and `Malformed` in arrival order, nothing lost; the processor takes a batch as it takes the same samples one by
one; a failing sample loses only itself; the supervisor and the pipeline's queue count a batch's samples."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.shelf.config import ShelfMqttConfig
from drivers.shelf.events import ShelfCountChanged
from drivers.shelf.mqtt import ShelfMqttDriver, decode_payload
from drivers.shelf.processor import ShelfProcessor
from drivers.shelf.reads import WeightSample, WeightSamples
from edge.clock import ManualClock, SystemClock
from edge.config import Manifest
from edge.driver import DeviceOnline, DriverContext, Malformed, Reading
from edge.errors import FrameError
from edge.metrics import Metrics
from edge.pipeline import BatchQueue, Pipeline, reading_weight
from edge.processing import BatchFailed, Processor
from edge.state import StockState
from edge.supervisor import Supervisor


def _driver(manifest: Manifest, tmp: Path) -> ShelfMqttDriver:
    return ShelfMqttDriver(ShelfMqttConfig(id="mq-b"), DriverContext(manifest=manifest, clock=SystemClock(),
                                                                      data_dir=tmp))


def _msg(shelf: object, lane: object, grams: object) -> bytes:
    return orjson.dumps({"shelf": shelf, "lane": lane, "grams": grams})


def _flat(readings: list[Reading]) -> list[Reading]:
    out: list[Reading] = []
    for r in readings:
        out += r.expand() if isinstance(r, WeightSamples) else [r]
    return out


def test_decode_keeps_order_and_counts_every_bad_message(demo_manifest: Manifest, tmp_path: Path) -> None:
    drv = _driver(demo_manifest, tmp_path)
    now = SystemClock().now()
    batch: list[tuple[str, bytes | None]] = [
        ("t", _msg("shelf-a1", "l1", 100)),
        ("t", _msg("shelf-a1", "l2", 200.5)),
        ("t", b"{broken"),
        ("t", _msg("shelf-a1", "l1", None)),  # a failed ADC read is a sample (NaN), not a malformed message
        ("t", None),  # larger than max_packet, dropped by the subscriber
        ("t", _msg("shelf-a1", "zz", 1)),
        ("t", _msg("shelf-a1", "l2", "x")),
        ("t", _msg("a/b", "l1", 1)),
        ("t", _msg(["shelf-a1"], "l1", 1)),  # an unhashable id
        ("t", _msg("shelf-a1", "l2", 300)),
    ]
    out = drv.decode(batch, now)
    assert [type(r).__name__ for r in out] == ["WeightSamples", "Malformed", "WeightSamples", "Malformed",
                                               "Malformed", "Malformed", "Malformed", "Malformed", "WeightSamples"]
    assert [len(r) for r in out if isinstance(r, WeightSamples)] == [2, 1, 1]
    assert all(r.time == now and r.device_id == "mq-b" for r in out)
    assert [r.reason for r in out if isinstance(r, Malformed)] == [
        "not JSON", f"message larger than {drv._max_packet} bytes, dropped", "unknown shelf lane",
        "grams must be a number", "shelf and lane must be ids ([A-Za-z0-9_.-])",
        "shelf and lane must be ids ([A-Za-z0-9_.-])"]
    flat = [r for r in _flat(out) if isinstance(r, WeightSample)]
    assert [(r.lane, r.grams) for r in flat[:2]] == [("l1", 100.0), ("l2", 200.5)]
    assert math.isnan(flat[2].grams)
    assert (flat[3].lane, flat[3].grams) == ("l2", 300.0)


_IDS = st.sampled_from(["shelf-a1", "rack-c1", "l1", "l2", "l3", "zz", "a/b", "", 5, None, True])
_MESSAGES = st.lists(st.one_of(
    st.builds(_msg, _IDS, _IDS, st.one_of(st.floats(), st.integers(-2**53, 2**53), st.none(), st.just("NaN"),
                                          st.text(max_size=3))),
    st.binary(max_size=40),
    st.none(),
), max_size=30)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # both fixtures are only read
@given(_MESSAGES)
def test_decode_is_the_one_message_decode_in_order(demo_manifest: Manifest, tmp_path: Path,
                                                   raws: list[bytes | None]) -> None:
    """Whatever a socket read holds, its batch decode is the one-message decode of each, in order: every
    message is one sample or one Malformed, none lost or reordered."""
    drv = _driver(demo_manifest, tmp_path)
    lanes = {(s.id, ln.id) for s in demo_manifest.shelves for ln in s.lanes}
    want: list[tuple[str, str, float] | str] = []
    for raw in raws:
        if raw is None:
            want.append("malformed")
            continue
        try:
            m = decode_payload(raw)
        except FrameError:
            want.append("malformed")
            continue
        want.append((m.shelf, m.lane, m.grams) if (m.shelf, m.lane) in lanes else "malformed")
    got = [(r.shelf, r.lane, r.grams) if isinstance(r, WeightSample) else "malformed"
           for r in _flat(drv.decode([("t", raw) for raw in raws], SystemClock().now()))]
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        if isinstance(g, tuple) and isinstance(w, tuple) and math.isnan(g[2]):
            assert w[:2] == g[:2] and math.isnan(w[2])
        else:
            assert g == w


def _samples(clock: ManualClock, seconds: float, hz: int = 80) -> list[list[tuple[str, str, float, bool]]]:
    """Per tick (1/hz s) a few samples of two lanes whose weights change every second."""
    rng = random.Random(7)
    ticks = []
    for k in range(int(seconds * hz)):
        n1, n2 = 3 + (k // hz) % 3, 6 - (k // hz) % 4
        ticks.append([("shelf-a1", "l1", n1 * 355.0 + rng.gauss(0, 1.0), True),
                      ("shelf-a1", "l2", n2 * 520.0 + rng.gauss(0, 1.0), True),
                      ("shelf-a1", "nope", 1.0, True)])
    return ticks


def test_processor_takes_a_batch_as_the_same_samples_one_by_one(demo_manifest: Manifest) -> None:
    one_clock, batch_clock = ManualClock(), ManualClock()
    one, batched = ShelfProcessor(demo_manifest, one_clock), ShelfProcessor(demo_manifest, batch_clock)
    got_one: list[object] = []
    got_batch: list[object] = []
    for tick in _samples(one_clock, 6):
        for clock in (one_clock, batch_clock):
            clock.advance(1 / 80)
        now = one_clock.now()
        for shelf, lane, grams, stable in tick:
            got_one += one.feed(WeightSample(device_id="shelf-1", time=now, shelf=shelf, lane=lane, grams=grams,
                                             stable=stable), now)
        got_batch += batched.feed(WeightSamples(device_id="shelf-1", time=now, samples=tuple(tick)), now)
    assert got_batch == got_one
    assert sum(type(o).__name__ == "StockUpdate" for o in got_one) >= 6  # the lanes did change
    assert batched.unmapped == one.unmapped == 6 * 80


def test_a_failing_sample_loses_only_itself(demo_manifest: Manifest) -> None:
    clock = ManualClock()
    proc = ShelfProcessor(demo_manifest, clock)
    out: list[object] = []
    failures: list[BatchFailed] = []
    for k in range(160):  # 2 s of a settled lane: its count is decided within the batches
        clock.advance(1 / 80)
        # a sample whose grams are no number (a driver bug) makes the lane engine raise
        bad: Any = ("shelf-a1", "l2", "heavy", True)
        good = ("shelf-a1", "l1", 4 * 355.0 + (k % 3) * 0.5, True)
        batch = WeightSamples(device_id="shelf-1", time=clock.now(), samples=(bad, good) if k % 40 == 0 else (good,))
        try:
            out += proc.feed(batch, clock.now())
        except BatchFailed as exc:
            failures.append(exc)
            out += exc.outputs
    assert [(f.failed, type(f.__cause__)) for f in failures] == [(1, TypeError)] * 4
    assert [(o.shelf, o.lane, o.count) for o in out if isinstance(o, ShelfCountChanged)] == [("shelf-a1", "l1", 4)]
    engine = proc.lane_engine("shelf-1", "shelf-a1", "l1")
    assert engine is not None and engine.count == 4


class _RoomyOutbox:
    async def wait_room(self) -> None:
        return None


async def test_the_pipeline_routes_the_good_samples_of_a_partly_failed_batch(demo_manifest: Manifest) -> None:
    clock = ManualClock()
    p = Pipeline(stock=StockState(demo_manifest), outbox=_RoomyOutbox(), clock=clock,  # type: ignore[arg-type]
                 metrics=Metrics(), tick_interval=3600.0)
    p.add_processor(cast(Processor, ShelfProcessor(demo_manifest, clock)))  # loaded by name, as edge/gateway.py does
    routed: list[object] = []

    def keep(outputs: list[object], _now: object) -> None:
        routed.extend(outputs)

    setattr(p, "route", keep)  # noqa: B010 - what the pipeline routes, without a store behind it
    task = asyncio.create_task(p.run())
    try:
        for k in range(160):  # every batch has two bad samples (a driver bug) beside the lane's good one
            clock.advance(1 / 80)
            bad: Any = ("shelf-a1", "l2", "heavy", True)
            good = ("shelf-a1", "l1", 4 * 355.0 + (k % 3) * 0.5, True)
            await p.queue.put(WeightSamples(device_id="shelf-1", time=clock.now(), samples=(bad, good, bad)))
            await asyncio.sleep(0)
        for _ in range(100):
            if p.queue.empty():
                break
            await asyncio.sleep(0)
        await asyncio.sleep(0)
    finally:
        task.cancel()
    assert not task.done() or task.cancelled()
    assert p.metrics.value("edge_processor_errors_total", processor="ShelfProcessor") == 320  # one per bad sample
    assert [(o.shelf, o.lane, o.count) for o in routed if isinstance(o, ShelfCountChanged)] == [("shelf-a1", "l1", 4)]


async def test_batch_queue_bounds_the_weight_and_keeps_order() -> None:
    q: BatchQueue[list[int]] = BatchQueue(10, len)
    assert q.try_put([1, 2, 3, 4, 5, 6])
    assert q.try_put([7, 8, 9, 10, 11, 12])  # 6 queued < 10: taken, the queue may pass its bound by one item
    assert not q.try_put([13])
    assert q.qsize() == 12
    put = asyncio.ensure_future(q.put([13]))
    await asyncio.sleep(0)
    assert not put.done()  # full: the producer waits (backpressure)
    assert await q.get_batch(8) == [[1, 2, 3, 4, 5, 6]]  # at least one item, then up to a weight of 8
    await asyncio.wait_for(put, 1)
    assert await q.get_batch(100) == [[7, 8, 9, 10, 11, 12], [13]]
    assert q.qsize() == 0 and q.empty()


class _BatchingDevice:
    """A device whose driver yields its samples a read at a time (as shelf_mqtt does)."""

    device_id = "mq-s"

    async def stream(self) -> AsyncIterator[Reading]:
        clock = SystemClock()
        yield DeviceOnline(device_id=self.device_id, time=clock.now())
        for k in range(5):
            yield WeightSamples(device_id=self.device_id, time=clock.now(),
                                samples=tuple(("shelf-a1", "l1", 100.0 + i, True) for i in range(k + 1)))
        yield Malformed(device_id=self.device_id, time=clock.now(), reason="not JSON")
        await asyncio.Event().wait()


async def test_supervisor_and_queue_count_a_batch_as_its_samples() -> None:
    q: BatchQueue[Reading] = BatchQueue(1_000, reading_weight)
    metrics = Metrics()
    sup = Supervisor([(_BatchingDevice(), "shelf_mqtt")], sink=q.put, try_put=q.try_put,
                     on_status=lambda *_: None, clock=SystemClock(), metrics=metrics)
    sup.start()
    try:
        async with asyncio.timeout(5):
            while q.qsize() < 15:
                await asyncio.sleep(0.01)
    finally:
        await sup.stop()
    (status,) = sup.statuses()
    assert status.readings == 1 + 2 + 3 + 4 + 5
    assert status.malformed == 1
    taken = await q.get_batch(1_000)
    assert [len(r) for r in taken if isinstance(r, WeightSamples)] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("n", [1, 3])
def test_expand_gives_the_samples(n: int) -> None:
    t = SystemClock().now() - timedelta(seconds=1)
    b = WeightSamples(device_id="d", time=t, samples=tuple(("s", f"l{i}", float(i), i % 2 == 0) for i in range(n)))
    assert [(w.device_id, w.time, w.lane, w.grams, w.stable) for w in b.expand()] == [
        ("d", t, f"l{i}", float(i), i % 2 == 0) for i in range(n)]
