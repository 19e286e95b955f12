"""Hub failover against a real three-node NATS cluster (JetStream + MQTT listener on each node, loopback ports):
the node the gateway uses is killed mid-stream twice; every node goes down and comes back; a dead first node."""

from __future__ import annotations

import asyncio
import itertools
import time
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from edge.brokers import Mosquitto, NatsCluster, NatsNode, free_port
from edge.config import HubConfig, Manifest, parse_manifest
from edge.envelope import rfc3339
from edge.errors import ConfigError
from edge.gateway import Gateway
from firmware_sim.hub import HubCommander, HubRecorder
from firmware_sim.world import demo_manifest_text
from tests.edge.fakes import CountingDriver, CountingProcessor

ROOT = "retail/v1/demo"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """Three NATS nodes routed to each other, each with JetStream and an MQTT listener."""
    c = NatsCluster(3, workdir=tmp_path / "hub")
    c.start(timeout=45)
    try:
        yield c
    finally:
        c.stop()


def make_gateway(manifest: Manifest, hub: HubConfig, data: Path, drivers: list[CountingDriver]) -> Gateway:
    m = manifest.model_copy(update={"api": manifest.api.model_copy(update={"enabled": False}), "hub": hub})
    gw = Gateway(m, data_dir=data, extra_drivers=[(d, "counting") for d in drivers], install_rules=False)
    gw.pipeline.add_processor(CountingProcessor())
    return gw


def firsts(events: list[dict[str, Any]], device: str) -> list[int]:
    """The device's counts in the order they first arrived (a re-send after a failover is a duplicate)."""
    return list(dict.fromkeys(int(e["data"]["n"]) for e in events
                              if mine(e, device)))


def mine(e: dict[str, Any], device: str) -> bool:
    """A counted event of this device."""
    return str(e.get("source")).endswith(f"/{device}") and str(e.get("type")).startswith("test.")


def sequences(events: list[dict[str, Any]], device: str) -> list[int]:
    return list(dict.fromkeys(int(e["sequence"]) for e in events
                              if mine(e, device)))


async def until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.05)


def check_complete(events: list[dict[str, Any]], device: str, total: int) -> None:
    """Every count 1..total arrived, and the source's sequence numbers have no hole."""
    got = firsts(events, device)
    missing = sorted(set(range(1, total + 1)) - set(got))
    assert not missing, f"{device}: {len(missing)} missing, e.g. {missing[:5]}"
    seq = sorted(sequences(events, device))
    assert seq == list(range(seq[0], seq[0] + total)), f"{device}: a hole in the source's sequence"


@pytest.mark.alone  # a three-node JetStream cluster at 150 events/s needs the shared cores to itself
async def test_node_in_use_killed_twice_mid_stream(cluster: NatsCluster, demo_manifest: Manifest,
                                                   tmp_path: Path) -> None:
    # the hub side: a persistent QoS 1 subscriber on every node (the one on a node never killed is read)
    recorders = {n.url: HubRecorder(n.port, f"{ROOT}/#") for n in cluster.nodes}
    # ~150 events/s, one message each: a three-node JetStream on this machine's two shared cores keeps up
    total, n_alerts = 3000, 100
    drv = CountingDriver("dev-a", total, per_tick=3, interval=0.02)
    alerts = CountingDriver("dev-alerts", n_alerts, per_tick=1, interval=0.1, cls="alert")
    hub = HubConfig(urls=cluster.urls, reconnect_min=0.1, reconnect_max=1.0, keepalive=5)
    gw = make_gateway(demo_manifest, hub, tmp_path / "d", [drv, alerts])
    try:
        async with gw:
            first = await _kill_node_in_use(gw, cluster, drv, 500)
            second = await _kill_node_in_use(gw, cluster, drv, 1200)
            assert gw.metrics.total("edge_uplink_failovers_total") >= 2
            # the new session re-established what the node holds for the store: retained status, cmd/ subscription
            await _check_session_state(list(recorders.values()), cluster.node_at(gw.uplink.url), since=second[1])
            spared = next(n for n in cluster.nodes if n not in (first[0], second[0]))

            def union(dev: str) -> set[int]:
                return {n for r in recorders.values() for n in firsts(r.events(), dev)}

            try:
                await until(lambda: union("dev-a") >= set(range(1, total + 1))
                            and union("dev-alerts") >= set(range(1, n_alerts + 1)), 45, "the hub has every event")
            except AssertionError:
                raise AssertionError(_missing(recorders, spared.url, total) + f"; outbox depth {gw.outbox.depth}, "
                                     f"killed {first[0].url} {second[0].url}") from None
            await until(lambda: gw.outbox.depth == 0, 20, "outbox drained")
        # Every event reached the hub: the three subscribers together saw all of them. (Each alone should; but
        # nats-server 2.9.10's MQTT, under this machine's load, leaves messages out of a QoS 1 session that another
        # node's session got: a few with no node killed at that time, hundreds while a session's node was down.
        # That is the hub's own delivery, not the gateway's, which had every one acknowledged. docs/fleet.md.)
        # the subscriber on the node never killed (one on a killed node gets its session's backlog redelivered
        # in no particular order when it is back): per topic in order, up to the in-flight window (a message the
        # killed node had not stored yet comes in its re-send, after later ones it had; `sequence` restores it)
        events = recorders[spared.url].events()
        for dev in ("dev-a", "dev-alerts"):
            for got in (firsts(events, dev), sequences(events, dev)):
                late = [(a, b) for a, b in zip(got, itertools.accumulate(got, max), strict=True)
                        if b - a > hub.inflight]
                assert not late, f"{dev}: out of order beyond the in-flight window: {late[:3]}"
        dupes = sum(1 for e in events if str(e.get("type")).startswith("test.")) - len(firsts(events, "dev-a")) - len(
            firsts(events, "dev-alerts"))
        assert dupes <= 2 * (hub.inflight + 1)  # only re-sends of what was in flight at each kill
    finally:
        for r in recorders.values():
            r.close()


def _missing(recorders: dict[str, HubRecorder], spared: str, total: int) -> str:
    """What each hub-side subscriber lacks, as ranges (the failure message)."""
    out = []
    for url, r in recorders.items():
        missing = sorted(set(range(1, total + 1)) - set(firsts(r.events(), "dev-a")))
        ranges: list[list[int]] = []
        for n in missing:
            if ranges and ranges[-1][1] == n - 1:
                ranges[-1][1] = n
            else:
                ranges.append([n, n])
        out.append(f"{url}{' (spared)' if url == spared else ''} lacks {len(missing)}: {ranges[:6]}")
    return "; ".join(out)


async def _kill_node_in_use(gw: Gateway, cluster: NatsCluster, drv: CountingDriver,
                            kill_at: int) -> tuple[NatsNode, str]:
    """Once `kill_at` events were produced, SIGKILL the node the gateway is connected to, wait until the gateway
    is connected to another one, start the killed node again (the cluster keeps its JetStream quorum)."""
    up = gw.uplink
    await until(lambda: up.connected.is_set() and drv.next_n > kill_at, 40, f"{kill_at} events produced")
    node = cluster.node_at(up.url)  # the node the gateway is connected to, from its own state
    node.kill()
    assert drv.total is not None and drv.next_n <= drv.total, "the stream ended before the kill: slow it down"
    since = _rfc(time.time())
    await until(lambda: up.connected.is_set() and up.url != node.url, 40, "connected to another node")
    await asyncio.to_thread(cluster.start_node, node, 40)
    return node, since


async def _check_session_state(recorders: list[HubRecorder], node: NatsNode, since: str) -> None:
    """The status published again (online, since the failover) with retain, read through the new node. (cmd/ on a
    new node: test_failover_sessions_on_mosquitto; through nats-server 2.9 under this load a request or its reply
    is now and then not delivered for tens of seconds, which is the hub's, not the subscription's.)"""
    def republished(h: HubRecorder) -> bool:
        return any(m.topic == f"{ROOT}/status" and m.json()["state"] == "online" and m.json()["time"] >= since
                   for m in h.snapshot())

    # read live by the hub's subscribers: a fresh subscriber's retained copy may be older on nats-server 2.9,
    # whose nodes apply retained updates from the cluster out of order (docs/fleet.md)
    await until(lambda: any(republished(r) for r in recorders), 30, f"status re-published since {since}")
    status = HubRecorder(node.port, f"{ROOT}/status", persistent=False)
    try:
        await asyncio.to_thread(status.wait_for, lambda h: any(m.retain for m in h.snapshot()), 30)
    finally:
        status.close()

@pytest.mark.alone  # a three-node JetStream cluster at 150 events/s needs the shared cores to itself
async def test_every_node_down_store_runs_offline_then_catches_up(cluster: NatsCluster, demo_manifest: Manifest,
                                                                  tmp_path: Path) -> None:
    # persistent QoS 1 subscribers, one per node: each reconnects when its node is back
    recs = [HubRecorder(n.port, f"{ROOT}/#") for n in cluster.nodes]
    total = 3000
    drv = CountingDriver("dev-a", total, per_tick=5, interval=0.02)

    def hub_has() -> set[int]:
        return {n for r in recs for n in firsts(r.events(), "dev-a")}

    hub = HubConfig(urls=cluster.urls, reconnect_min=0.1, reconnect_max=1.0, keepalive=5)
    gw = make_gateway(demo_manifest, hub, tmp_path / "d", [drv])
    try:
        async with gw:
            await until(lambda: len(hub_has()) >= 300, 30, "300 events at the hub")
            for n in cluster.nodes:
                n.kill()  # every node gone at once
            await until(lambda: not gw.uplink.connected.is_set(), 20, "the uplink sees the hub gone")
            held = gw.outbox.depth
            # the store runs on offline: readings keep becoming events, committed to the outbox
            await until(lambda: drv.next_n > total and gw.outbox.depth >= held + 500, 40, "events buffered offline")
            assert not gw.uplink.connected.is_set()
            await asyncio.to_thread(cluster.start, 45)
            await until(lambda: hub_has() >= set(range(1, total + 1)), 45, "the backlog at the hub")
            await until(lambda: gw.outbox.depth == 0, 20, "outbox drained")
        # complete, no hole (the subscribers together, see the first test); not in arrival order: the subscribers'
        # nodes went down too, and nats-server 2.9 hands a reconnected QoS 1 session its backlog in no particular
        # order (docs/fleet.md)
        check_complete([e for r in recs for e in r.events()], "dev-a", total)
    finally:
        for r in recs:
            r.close()


async def test_failover_sessions_on_mosquitto(demo_manifest: Manifest, tmp_path: Path) -> None:
    """hub.urls = [dead, A, B] with the dead node where this store starts (crc32(store id) mod n, docs/fleet.md):
    the uplink moves on to A; A is killed mid-stream, it moves to B, where it publishes its retained status
    again and answers cmd/; each broker got its part in order, together every event once or more."""
    a, b = Mosquitto(workdir=tmp_path / "a"), Mosquitto(workdir=tmp_path / "b")
    a.start()
    b.start()
    dead = f"mqtt://127.0.0.1:{free_port()}"
    start = zlib.crc32(demo_manifest.store.id.encode()) % 3
    urls = [""] * 3
    for k, url in enumerate((dead, a.url, b.url)):
        urls[(start + k) % 3] = url
    rec_a, rec_b = HubRecorder(a.port, f"{ROOT}/#"), HubRecorder(b.port, f"{ROOT}/#")
    total = 2000
    drv = CountingDriver("dev-a", total, per_tick=5, interval=0.01)
    hub = HubConfig(urls=urls, reconnect_min=0.1, reconnect_max=0.5)
    gw = make_gateway(demo_manifest, hub, tmp_path / "d", [drv])
    try:
        async with gw:
            up = gw.uplink
            assert up.urls == [dead, a.url, b.url]
            await until(lambda: up.connected.is_set() and drv.next_n > 500, 30, "sending through A")
            assert up.url == a.url and gw.metrics.total("edge_uplink_failovers_total") >= 1
            a.kill()
            since = _rfc(time.time())
            assert drv.next_n <= total, "the stream ended before the kill: slow it down"
            await until(lambda: up.connected.is_set() and up.url == b.url, 30, "moved to B")
            status = HubRecorder(b.port, f"{ROOT}/status", persistent=False)
            try:
                await asyncio.to_thread(status.wait_for, lambda h: any(
                    m.retain and m.json()["state"] == "online" and m.json()["time"] >= since
                    for m in h.snapshot()), 20)
            finally:
                status.close()
            cmd = HubCommander(b.port, ROOT)
            try:
                assert (await asyncio.to_thread(cmd.call, "stock.get", timeout=20))["ok"]
            finally:
                cmd.replies.close()
            await until(lambda: set(firsts(rec_a.events(), "dev-a")) | set(firsts(rec_b.events(), "dev-a"))
                        >= set(range(1, total + 1)), 30, "every event at the hub")
            await until(lambda: gw.outbox.depth == 0, 20, "outbox drained")
        got_a, got_b = firsts(rec_a.events(), "dev-a"), firsts(rec_b.events(), "dev-a")
        assert got_a == list(range(1, len(got_a) + 1))  # A: a prefix, in order
        assert got_b == list(range(got_b[0], total + 1))  # B: the rest, in order, from the oldest unacknowledged
        assert got_b[0] <= len(got_a) + 1  # no hole between them
        assert len(got_a) - got_b[0] + 1 <= hub.inflight  # duplicates only within the in-flight window
    finally:
        rec_a.close()
        rec_b.close()
        a.stop()
        b.stop()

BASE = demo_manifest_text()


@pytest.mark.parametrize(("hub_yaml", "error"), [
    ("hub:\n  urls: [mqtt://a:1883, mqtt://b:1883]\n", None),
    ("hub:\n  url: mqtt://a:1883\n", None),
    ("hub:\n  url: mqtt://a:1883\n  urls: [mqtt://b:1883]\n", "not both"),
    ("hub:\n  urls: []\n", "at least 1"),
    ("hub:\n  urls: [mqtt://a:1883, mqtt://a:1883]\n", "twice"),
    ("hub:\n  urls: [mqtt://a:1883, http://b]\n", "mqtt"),
    ("hub:\n  urls: [mqtt://a:99999]\n", "65535"),
    ("hub:\n  urls: [" + ", ".join(f"mqtt://n{i}:1883" for i in range(17)) + "]\n", "at most 16"),
    ("hub:\n  urls: mqtt://a:1883\n", "list"),
])
def test_hub_urls_config(hub_yaml: str, error: str | None) -> None:
    text = _with_hub(BASE, hub_yaml)
    if error is None:
        m = parse_manifest(text, "m.yaml")
        assert m.hub.endpoints == (["mqtt://a:1883", "mqtt://b:1883"] if "urls" in hub_yaml else ["mqtt://a:1883"])
        return
    with pytest.raises(ConfigError) as info:
        parse_manifest(text, "m.yaml")
    rendered = "\n".join(i.render() for i in info.value.issues)
    assert "hub" in rendered and error in rendered, rendered


def _with_hub(text: str, hub_yaml: str) -> str:
    """The demo manifest with its `hub:` section replaced."""
    lines = text.splitlines(keepends=True)
    start = next(i for i, ln in enumerate(lines) if ln.startswith("hub:"))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].strip() and not lines[i][0].isspace()),
               len(lines))
    return "".join(lines[:start]) + hub_yaml + "".join(lines[end:])


def _rfc(t: float) -> str:
    """A Unix time as the gateway's RFC 3339 UTC text (comparable as a string with the status' `time`)."""
    return rfc3339(datetime.fromtimestamp(t, UTC))
