"""Fault injection under load: hub broker killed, gateway SIGKILLed, telemetry budget exhausted, wall clock jumps.

After each fault: no accepted event lost (per-source `sequence` at the hub is exactly 1..max, and every id
left in the outbox at a restart arrives), duplicates bounded by what can be in flight, and
`PRAGMA integrity_check` is ok.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bench.load import LoadDriver, LoadProcessor
from bench.spine import GatewayProc, manifest_dict
from edge.brokers import Mosquitto
from edge.clock import SystemClock
from edge.config import Manifest
from edge.db import integrity_check
from edge.gateway import Gateway
from firmware_sim.hub import HubProcess

ROOT = "retail/v1/demo"
pytestmark = pytest.mark.timeout(120)


def by_source(events: list[dict[str, Any]]) -> dict[str, list[int]]:
    """source -> received sequence numbers (duplicates kept)."""
    out: dict[str, list[int]] = defaultdict(list)
    for e in events:
        out[str(e["source"])].append(int(e["sequence"]))
    return out


def assert_contiguous(events: list[dict[str, Any]], source: str) -> int:
    """Every sequence 1..max of `source` arrived; return max."""
    seqs = by_source(events)[source]
    assert seqs, f"nothing from {source}"
    got = set(seqs)
    missing = sorted(set(range(1, max(got) + 1)) - got)
    assert not missing, f"{source}: {len(missing)} sequences lost, first {missing[:10]}"
    return max(got)


def at_least(n: int) -> Any:
    """A hub condition: `n` distinct events received (redeliveries after a kill do not count)."""
    return lambda h: len({e["id"] for e in h.events()}) >= n


def dupes(events: list[dict[str, Any]]) -> int:
    ids = [e["id"] for e in events]
    return len(ids) - len(set(ids))


async def until(pred: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.05)


def make_gateway(manifest: Manifest, url: str, data: Path, drivers: list[LoadDriver], **kw: Any) -> Gateway:
    m = manifest.model_copy(update={"api": manifest.api.model_copy(update={"enabled": False}),
                                    "hub": manifest.hub.model_copy(update={"reconnect_max": 0.5})})
    gw = Gateway(m, hub_url=url, data_dir=data, extra_drivers=[(d, "load") for d in drivers], install_rules=False,
                 **kw)
    gw.pipeline.add_processor(LoadProcessor())
    return gw


async def test_hub_killed_repeatedly_under_load(demo_manifest: Manifest, tmp_path: Path) -> None:
    broker = Mosquitto(workdir=tmp_path / "mq", persistent=True)
    broker.start()
    hub = HubProcess(broker.port, f"{ROOT}/events/#", tmp_path / "hub.log")
    await asyncio.sleep(1.5)  # let the broker save the hub's persistent session
    total = 15_000
    drv = LoadDriver("dev-a", total, per_tick=50, interval=0.01)
    gw = make_gateway(demo_manifest, broker.url, tmp_path / "d", [drv])
    try:
        async with gw:
            for k in range(3):
                want = 2000 * (k + 1)
                await asyncio.to_thread(hub.wait_for, at_least(want), 30)
                broker.checkpoint()  # the hub broker's own durability is not under test
                broker.kill()
                await asyncio.sleep(1.5)
                broker.start()
            await asyncio.to_thread(
                hub.wait_for, lambda h: len({e["sequence"] for e in h.events()}) >= total + 1, 60)
            await until(lambda: gw.outbox.depth == 0)
        events = hub.events()
        assert assert_contiguous(events, "/stores/demo/dev-a") == total + 1  # 1 is the "online" status event
        # resends only of what was in flight: per kill at most the window plus one commit interval of acks
        assert dupes(events) <= 3 * (demo_manifest.hub.inflight + 200)
    finally:
        hub.close()
        broker.stop()
    assert integrity_check(tmp_path / "d" / "edge.db") == "ok"


def outbox_ids(db: Path) -> set[str]:
    c = sqlite3.connect(db)
    try:
        return {str(r[0]) for r in c.execute("SELECT id FROM outbox_pending")}  # not yet acknowledged
    finally:
        c.close()


def test_gateway_sigkilled_repeatedly_under_load(tmp_path: Path) -> None:
    broker = Mosquitto(workdir=tmp_path / "mq")
    broker.start()
    hub = HubProcess(broker.port, f"{ROOT}/events/#", tmp_path / "hub.log")
    data = tmp_path / "var"
    db = data / "edge.db"
    load = {"id": "load-a", "type": "load", "per_tick": 50, "interval_s": 0.01}
    pending: set[str] = set()
    kills = 4
    try:
        for k in range(kills):
            gw = GatewayProc(manifest_dict(data, broker.url, [load]), tmp_path)
            try:
                want = 1500 * (k + 1)
                hub.wait_for(at_least(want), 40)
                assert gw.proc.poll() is None, (tmp_path / "gateway.log").read_text()[-2000:]
            finally:
                gw.kill()
            assert integrity_check(db) == "ok"
            pending |= outbox_ids(db)  # accepted, not yet acknowledged: must arrive after the restart
        # last restart: the device is quiet, the outbox drains, then a clean stop
        gw = GatewayProc(manifest_dict(data, broker.url, [{**load, "total": 0}]), tmp_path)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and (outbox_ids(db) if db.exists() else {"?"}):
            time.sleep(0.2)
        time.sleep(0.5)
        assert gw.stop() == 0
        assert not outbox_ids(db), "outbox did not drain"
        events = hub.events()
        last = assert_contiguous(events, "/stores/demo/load-a")
        c = sqlite3.connect(db)
        committed = int(c.execute("SELECT last FROM sequences WHERE source='load-a'").fetchone()[0])
        c.close()
        assert last == committed  # everything committed arrived, nothing beyond was invented
        got = {e["id"] for e in events}
        assert pending <= got, f"{len(pending - got)} ids that were in the outbox never arrived"
        assert last > 1500 * kills
        assert dupes(events) <= kills * 400  # window (20) + acks of one commit interval not yet deleted
    finally:
        hub.close()
        broker.stop()
    assert integrity_check(db) == "ok"


async def test_telemetry_budget_exhausted_while_hub_down(demo_manifest: Manifest, tmp_path: Path) -> None:
    broker = Mosquitto(workdir=tmp_path / "mq")  # down while the budget overflows
    storage = demo_manifest.storage.model_copy(
        update={"budgets": demo_manifest.storage.budgets.model_copy(update={"telemetry_mb": 0.3})})
    tele = LoadDriver("sensor-t", 6000, cls="telemetry", per_tick=100, interval=0.005)
    ledger = LoadDriver("sensor-l", 3000, cls="ledger", per_tick=50, interval=0.005)
    alerts = LoadDriver("sensor-a", 300, cls="alert", per_tick=10, interval=0.01)
    gw = make_gateway(demo_manifest.model_copy(update={"storage": storage}), broker.url, tmp_path / "d",
                      [tele, ledger, alerts])
    async with gw:
        await until(lambda: tele.next_n > 6000 and ledger.next_n > 3000 and alerts.next_n > 300)
        await gw.outbox.flush()
        broker.start()
        hub = HubProcess(broker.port, f"{ROOT}/#", tmp_path / "hub.log")
        try:
            await until(lambda: gw.outbox.depth == 0, 40)
            await asyncio.sleep(0.5)
            events = hub.events()
        finally:
            hub.close()
            broker.stop()
    assert assert_contiguous(events, "/stores/demo/sensor-l") == 3001
    assert assert_contiguous(events, "/stores/demo/sensor-a") == 301
    # telemetry: what is missing is exactly what the gap events announce
    tele_seqs = set(by_source(events)["/stores/demo/sensor-t"])
    announced: set[int] = set()
    for e in events:
        if e["type"] == "retail.gap.v1" and e["data"]["gap_source"] == "sensor-t":
            announced |= set(range(e["data"]["first"], e["data"]["last"] + 1))
    assert announced, "budget never exceeded: the test did not exercise the fault"
    assert tele_seqs | announced == set(range(1, 6002))
    assert not tele_seqs & announced
    assert_contiguous(events, "/stores/demo/gateway")  # the gap events themselves are sequenced
    assert integrity_check(tmp_path / "d" / "edge.db") == "ok"


class JumpingClock(SystemClock):
    """The system clock plus an offset that a test can step (NTP correction, bad RTC)."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def now(self) -> datetime:
        """Wall time plus the offset."""
        return super().now() + self.offset


async def test_wall_clock_jumps_back_and_forth(mosquitto: Mosquitto, demo_manifest: Manifest, tmp_path: Path) -> None:
    clock = JumpingClock()
    hub = HubProcess(mosquitto.port, f"{ROOT}/events/#", tmp_path / "hub.log")
    total = 6000
    drv = LoadDriver("dev-a", total, per_tick=50, interval=0.01, clock=clock)
    gw = make_gateway(demo_manifest, mosquitto.url, tmp_path / "d", [drv], clock=clock)
    try:
        async with gw:
            for jump in (timedelta(hours=-3), timedelta(days=400), timedelta(seconds=-30)):
                n = drv.next_n
                await until(lambda n=n: drv.next_n > n + 1000)
                clock.offset += jump
            await asyncio.to_thread(hub.wait_for, lambda h: len(h.events()) >= total, 30)
            await until(lambda: gw.outbox.depth == 0)
        events = hub.events()
    finally:
        hub.close()
    assert assert_contiguous(events, "/stores/demo/dev-a") == total + 1
    assert dupes(events) == 0  # the hub stayed up: nothing was re-sent
    years = {str(e["time"])[:4] for e in events}
    assert len(years) >= 2  # the jumps are visible in event times, and nothing else changed
    assert integrity_check(tmp_path / "d" / "edge.db") == "ok"
