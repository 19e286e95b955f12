"""The spine against real brokers: order, unique ids, hub outages, late hub, disk budget, commands."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from edge.brokers import BrokerProcess, Mosquitto, NatsMqtt, RabbitMqtt
from edge.config import Manifest
from edge.db import integrity_check
from edge.driver import Reading
from edge.gateway import Gateway
from firmware_sim.hub import HubProcess, HubRecorder
from tests.edge.fakes import CountingDriver, CountingProcessor, stock_update

ROOT = "retail/v1/demo"


def make_gateway(manifest: Manifest, url: str, data: Path, drivers: list[CountingDriver], **kw: Any) -> Gateway:
    m = manifest.model_copy(update={"api": manifest.api.model_copy(update={"enabled": False})})
    if "storage" in kw:
        m = m.model_copy(update={"storage": kw.pop("storage")})
    if "hub" in kw:
        m = m.model_copy(update={"hub": kw.pop("hub")})
    gw = Gateway(m, hub_url=url, data_dir=data, extra_drivers=[(d, "counting") for d in drivers],
                 install_rules=False)
    gw.pipeline.add_processor(CountingProcessor())
    return gw


def ns(events: list[dict[str, Any]], source_suffix: str = "") -> list[int]:
    return [int(e["data"]["n"]) for e in events
            if str(e["source"]).endswith(source_suffix) and str(e["type"]).startswith("test.")]


def _count(db: Path, sql: str) -> int:
    c = sqlite3.connect(db)
    try:
        return int(c.execute(sql).fetchone()[0])
    finally:
        c.close()


@pytest.fixture(params=["mosquitto", "nats", "rabbitmq"])
def hub_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BrokerProcess]:
    broker: BrokerProcess
    if request.param == "mosquitto":
        broker = Mosquitto(workdir=tmp_path, persistent=True)
    elif request.param == "nats":
        broker = NatsMqtt(workdir=tmp_path)
    else:
        if not RabbitMqtt.available():
            pytest.skip("rabbitmq-server with its MQTT plugin is not installed on this machine")
        broker = RabbitMqtt()  # its own directory under /tmp: the rabbitmq user must reach it
    broker.start()
    yield broker
    broker.stop()
    if isinstance(broker, RabbitMqtt):
        shutil.rmtree(broker.workdir, ignore_errors=True)


async def _until(pred: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.05)


async def test_delivers_in_order_with_unique_ids(hub_broker: BrokerProcess, demo_manifest: Manifest,
                                                 tmp_path: Path) -> None:
    hub = HubRecorder(hub_broker.port, f"{ROOT}/#")
    try:
        gw = make_gateway(demo_manifest, hub_broker.url, tmp_path / "d", [CountingDriver("dev-a", 3000)])
        async with gw:
            await asyncio.to_thread(hub.wait_for, lambda h: len(h.events("events/test")) >= 3000)
            await _until(lambda: gw.outbox.depth == 0)
        events = hub.events("events/test")
        assert ns(events) == list(range(1, 3001))
        assert len({e["id"] for e in events}) == 3000
        # sequence 1 of dev-a is its "online" status event; then +1 per event, no gaps
        assert [e["sequence"] for e in events] == list(range(2, 3002))
        e = events[0]
        assert e["specversion"] == "1.0" and e["type"] == "test.counted.v1"
        assert e["source"] == "/stores/demo/dev-a" and str(e["time"]).endswith("Z")
        # acknowledged ledger events stay as the journal (below the watermark); nothing is left pending
        db = tmp_path / "d" / "edge.db"
        sql = "SELECT count(*) FROM outbox WHERE type='test.counted.v1' AND seq <= (SELECT CAST(value AS INTEGER)" \
              " FROM kv WHERE key='outbox.acked_through')"
        assert await asyncio.to_thread(_count, db, sql) == 3000
        assert await asyncio.to_thread(_count, db, "SELECT count(*) FROM outbox_pending") == 0
        status = [m for m in hub.snapshot() if m.topic == f"{ROOT}/status"]
        assert status and status[0].json()["state"] == "online"
    finally:
        hub.close()


async def test_hub_killed_mid_stream_loses_nothing(hub_broker: BrokerProcess, demo_manifest: Manifest,
                                                   tmp_path: Path) -> None:
    hub = HubProcess(hub_broker.port, f"{ROOT}/#", tmp_path / "hub.log")
    await asyncio.sleep(1.5)  # let a persistent broker save the hub's session
    total, n_alerts = 6000, 200
    drv = CountingDriver("dev-a", total, per_tick=20, interval=0.01)
    alerts = CountingDriver("dev-alerts", n_alerts, per_tick=1, interval=0.02, cls="alert")  # the alerts lane too
    hub_cfg = demo_manifest.hub.model_copy(update={"reconnect_max": 1.0})
    gw = make_gateway(demo_manifest, hub_broker.url, tmp_path / "d", [drv, alerts], hub=hub_cfg)

    def complete(h: Any) -> bool:
        return (set(ns(h.events(), "dev-a")) >= set(range(1, total + 1))
                and set(ns(h.events(), "dev-alerts")) >= set(range(1, n_alerts + 1)))

    try:
        async with gw:
            await asyncio.to_thread(hub.wait_for, lambda h: len(h.events()) >= 1000)
            if isinstance(hub_broker, Mosquitto):
                hub_broker.checkpoint()  # the hub's own durability is not what this test measures
            hub_broker.kill()
            await asyncio.sleep(3)  # the hub is gone for several seconds while readings keep coming
            assert drv.next_n > 1000
            hub_broker.start()
            try:
                await asyncio.to_thread(hub.wait_for, complete, 30)
            except TimeoutError:
                seen = set(ns(hub.events(), "dev-a"))
                missing = sorted(set(range(1, total + 1)) - seen)
                raise AssertionError(
                    f"missing {len(missing)}: {missing[:5]}..{missing[-5:]}; depth {gw.outbox.depth}") from None
            await _until(lambda: gw.outbox.depth == 0)
        got = ns(hub.events(), "dev-a")
        assert set(got) == set(range(1, total + 1))  # zero lost
        dupes = len(got) - len(set(got))
        assert dupes <= 2 * demo_manifest.hub.inflight * 50  # only re-sends of what was in flight
        got_alerts = ns(hub.events(), "dev-alerts")
        assert set(got_alerts) == set(range(1, n_alerts + 1))
        # in order apart from re-sends after the outage: each first arrival is the next alert
        firsts = list(dict.fromkeys(got_alerts))
        assert firsts == list(range(1, n_alerts + 1))
    finally:
        hub.close()


async def test_starts_while_hub_down_and_delivers_later(demo_manifest: Manifest, tmp_path: Path) -> None:
    broker = Mosquitto(workdir=tmp_path)  # not started: the hub is down at gateway start
    hub_cfg = demo_manifest.hub.model_copy(update={"reconnect_max": 0.5})
    gw = make_gateway(demo_manifest, broker.url, tmp_path / "d", [CountingDriver("dev-a", 500)], hub=hub_cfg)
    async with gw:
        await _until(lambda: gw.outbox.depth >= 500)
        broker.start()
        hub = HubRecorder(broker.port, f"{ROOT}/events/#")
        try:
            await asyncio.to_thread(hub.wait_for, lambda h: set(ns(h.events())) >= set(range(1, 501)), 30)
        finally:
            hub.close()
            await gw.stop()
            broker.stop()


async def test_disk_budget_keeps_alerts_and_drops_oldest_telemetry(demo_manifest: Manifest, tmp_path: Path) -> None:
    broker = Mosquitto(workdir=tmp_path)  # hub down the whole time: everything stays in the outbox
    storage = demo_manifest.storage.model_copy(
        update={"budgets": demo_manifest.storage.budgets.model_copy(update={"telemetry_mb": 0.2})})
    tele = CountingDriver("sensor-t", 3000, cls="telemetry")
    alerts = CountingDriver("sensor-a", 500, cls="alert")
    gw = make_gateway(demo_manifest, broker.url, tmp_path / "d", [tele, alerts], storage=storage)
    async with gw:
        await _until(lambda: tele.next_n > 3000 and alerts.next_n > 500)
        await asyncio.sleep(0.3)
        await gw.outbox.flush()
        rows = await gw.query("SELECT class, count(*) AS n FROM outbox GROUP BY class")
        by = {r["class"]: r["n"] for r in rows}
        assert by["alert"] == 500  # never dropped
        assert 0 < by["telemetry"] < 3000  # dropped some
        assert gw.outbox.telemetry_bytes <= 0.2 * 1024 * 1024
        kept = await gw.query("SELECT sequence FROM outbox WHERE source='sensor-t' AND class='telemetry' ORDER BY seq")
        seqs = [r["sequence"] for r in kept]
        assert seqs == list(range(seqs[0], 3002))  # the oldest went first (sequence 1 is "online")
        gap_rows = await gw.query("SELECT payload FROM outbox WHERE type='retail.gap.v1'")
        gaps = [orjson.loads(r["payload"]) for r in gap_rows]
        covered = sum(g["data"]["dropped"] for g in gaps if g["data"]["gap_source"] == "sensor-t")
        assert covered == 3000 - len(seqs) == gw.metrics.value("edge_outbox_dropped_total", **{"class": "telemetry"})
        assert min(g["data"]["first"] for g in gaps) == 2  # sequence 1 is the device's "online" event
    assert integrity_check(tmp_path / "d" / "edge.db") == "ok"


async def test_stock_state_retained_and_stock_get_command(mosquitto: Mosquitto, demo_manifest: Manifest,
                                                          tmp_path: Path) -> None:
    hub = HubRecorder(mosquitto.port, "#")
    gw = make_gateway(demo_manifest, mosquitto.url, tmp_path / "d", [])
    try:
        async with gw:
            await asyncio.to_thread(hub.wait_for, lambda h: any(m.topic.endswith("/status") for m in h.snapshot()))
            now = gw.clock.now()
            gw.emit([], [])
            gw.pipeline.route([stock_update("shelf-a1", "cola-330", 12, now)], now)
            gw.pipeline.route([stock_update("shelf-a1", "cola-330", 11, now)], now)
            await asyncio.to_thread(
                hub.wait_for,
                lambda h: any(m.topic == f"{ROOT}/state/stock/shelf-a1" and
                              any(i["count"] == 11 for i in m.json()["items"]) for m in h.snapshot()),
            )
            changes = hub.events("events/stock")
            await asyncio.to_thread(hub.wait_for, lambda h: len(h.events("events/stock")) >= 2)
            changes = hub.events("events/stock")
            assert [c["data"]["version"] for c in changes] == [1, 2]
            assert changes[1]["data"]["delta"] == -1
            hub.client.publish(f"{ROOT}/cmd/stock.get",
                               orjson.dumps({"id": "r1", "reply_to": f"{ROOT}/reply/hq/1", "shelf": "shelf-a1"}), qos=1)
            hub.client.publish(f"{ROOT}/cmd/stock.get", b"{not json", qos=1)
            hub.client.publish(f"{ROOT}/cmd/nope", orjson.dumps({"id": 2, "reply_to": f"{ROOT}/reply/hq/1"}), qos=1)
            try:
                await asyncio.to_thread(hub.wait_for, lambda h: len([m for m in h.snapshot()
                                                                     if m.topic == f"{ROOT}/reply/hq/1"]) >= 2, 5)
            except TimeoutError:
                raise AssertionError([(m.topic, m.payload[:80]) for m in hub.snapshot()]) from None
            replies = {m.json()["id"]: m.json() for m in hub.snapshot() if m.topic == f"{ROOT}/reply/hq/1"}
            assert replies["r1"]["ok"] is True
            cola = next(i for i in replies["r1"]["result"]["items"] if i["sku"] == "cola-330")
            assert cola["count"] == 11 and cola["version"] == 2
            assert replies[2]["ok"] is False and replies[2]["error"]["code"] == "unknown_command"
    finally:
        hub.close()
    # state survives a restart with the same versions
    gw2 = make_gateway(demo_manifest, mosquitto.url, tmp_path / "d", [])
    async with gw2:
        cell = gw2.stock.get("shelf-a1", "cola-330")
        assert cell is not None and (cell.count, cell.version) == (11, 2)


class _Gated:
    """A device that starts producing once `go` is set (here: once the uplink follows the committer live)."""

    def __init__(self, inner: CountingDriver, go: asyncio.Event) -> None:
        self.inner, self.go, self.device_id = inner, go, inner.device_id

    async def stream(self) -> AsyncIterator[Reading]:
        """The inner device's readings, after `go`."""
        await self.go.wait()
        async for r in self.inner.stream():
            yield r


@pytest.mark.parametrize("batched", [False, True], ids=["single", "batched"])
async def test_alerts_go_ahead_of_a_backlog_and_every_topic_keeps_its_order(
        mosquitto: Mosquitto, demo_manifest: Manifest, tmp_path: Path, batched: bool) -> None:
    hub = HubRecorder(mosquitto.port, f"{ROOT}/#")
    go = asyncio.Event()
    bulk = CountingDriver("dev-bulk", 20_000, per_tick=20_000)  # one burst: a backlog for the uplink
    alerts = CountingDriver("dev-alert", 40, per_tick=1, interval=0.02, cls="alert")
    hub_cfg = demo_manifest.hub.model_copy(
        update={"batch": demo_manifest.hub.batch.model_copy(update={"enabled": batched, "max_events": 20})})
    try:
        gw = make_gateway(demo_manifest, mosquitto.url, tmp_path / "d",
                          [_Gated(bulk, go), _Gated(alerts, go)], hub=hub_cfg)  # type: ignore[list-item]
        async with gw:
            # the lane serves alerts committed while the uplink follows the committer (not a disk backlog)
            await asyncio.wait_for(gw.uplink.connected.wait(), 10)
            await _until(lambda: gw.uplink._live_on, 10)
            go.set()
            await asyncio.to_thread(hub.wait_for, lambda h: len(h.events("events/test")) >= 20_000
                                    and len(h.events("/alerts")) >= 40, 60)
            await _until(lambda: gw.outbox.depth == 0)
            ahead = gw.metrics.value("edge_uplink_alerts_ahead_total")
            seq_of = {str(orjson.loads(r["payload"])["id"]): int(r["seq"]) for r in await gw.query(
                "SELECT seq, payload FROM outbox WHERE source IN ('dev-bulk', 'dev-alert')")}
        # every topic in commit order, each event once
        assert ns(hub.events("events/test")) == list(range(1, 20_001))
        assert ns(hub.events("/alerts")) == list(range(1, 41))
        arrived = [e for e in hub.events() if str(e["type"]).startswith("test.")]
        assert len({e["id"] for e in arrived}) == len(arrived) == 20_040
        # ... but an alert overtakes ledger events committed before it
        assert ahead > 0
        seqs = [seq_of[str(e["id"])] for e in arrived]
        later_min = [0] * len(seqs)  # the smallest seq arriving after each position
        low = 1 << 62
        for i in range(len(seqs) - 1, -1, -1):
            later_min[i] = low
            low = min(low, seqs[i])
        overtook = [e["data"]["n"] for i, e in enumerate(arrived)
                    if e["type"] == "test.counted.alert.v1" and later_min[i] < seqs[i]]
        assert overtook
        # the watermark still covers everything: nothing pending, nothing sent twice
        db = tmp_path / "d" / "edge.db"
        assert await asyncio.to_thread(_count, db, "SELECT count(*) FROM outbox_pending") == 0
    finally:
        hub.close()
