"""When the outbox commits, and the MQTT sockets' options: latency at a quiet store's pace.

A quiet store (most of the day) must not pay the group-commit wait: with the writer idle a batch is committed
at once. The hub's acknowledgements ride along with the next commit of events instead of a commit each,
and still reach the disk within `ack_delay` when no events come. Our MQTT sockets send at once (no Nagle)
and acknowledge at once (edge/tcp.py).
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import time
from pathlib import Path

from edge.brokers import Mosquitto
from edge.config import Manifest
from edge.mqtt_session import MqttSession, SessionOptions
from edge.tcp import no_delay, quick_ack
from tests.edge.fakes import CountingDriver
from tests.edge.test_uplink import _until, make_gateway


def _watermark(db: Path) -> int:
    c = sqlite3.connect(db)
    try:
        row = c.execute("SELECT value FROM kv WHERE key='outbox.acked_through'").fetchone()
        return int(row[0]) if row else 0
    finally:
        c.close()


async def test_idle_writer_commits_at_once_and_acks_ride_along(
    mosquitto: Mosquitto, demo_manifest: Manifest, tmp_path: Path
) -> None:
    # a long group-commit interval: a batch that waited for it would take 400 ms to be committed
    storage = demo_manifest.storage.model_copy(update={"commit_interval_ms": 400})
    gw = make_gateway(demo_manifest, mosquitto.url, tmp_path / "d", [CountingDriver("dev-a", 0)], storage=storage)
    async with gw:
        await asyncio.wait_for(gw.uplink.connected.wait(), 10)
        await _until(lambda: gw.outbox.depth == 0)
        await asyncio.sleep(0.3)
        ob = gw.outbox
        commits0 = ob.metrics.value("edge_outbox_commits_total")
        loop = asyncio.get_running_loop()
        from tests.edge.fakes import Counted

        t0 = loop.time()
        await ob.submit([Counted(source="dev-a", time=gw.clock.now(), n=1)])
        assert loop.time() - t0 < 0.2  # committed at once, not after the 400 ms interval
        await _until(lambda: ob.depth == 0, 10)  # published and acknowledged
        # the acknowledgement waited for company: none came, so it got its own commit within ack_delay
        await _until(lambda: _watermark(tmp_path / "d" / "edge.db") == ob.acked_through, 5)
        assert ob.metrics.value("edge_outbox_commits_total") - commits0 == 2
        # a burst of events acknowledged one by one: far fewer commits than acknowledgements
        commits1 = ob.metrics.value("edge_outbox_commits_total")
        for n in range(2, 42):
            await ob.submit([Counted(source="dev-a", time=gw.clock.now(), n=n)])
        await _until(lambda: ob.depth == 0, 10)
        await _until(lambda: _watermark(tmp_path / "d" / "edge.db") == ob.acked_through, 5)
        # (one commit per event, as each submit waits for its own; without the ride-along up to 80)
        assert ob.metrics.value("edge_outbox_commits_total") - commits1 <= 45
        # behind a running commit, a batch goes as soon as that commit finished, not after the 400 ms
        slow = asyncio.ensure_future(gw.db.write(lambda _c: time.sleep(0.15)))  # the writer is busy for 150 ms
        first = ob.submit([Counted(source="dev-a", time=gw.clock.now(), n=100)])
        await asyncio.sleep(0.02)  # the committer has started the first commit (queued behind the slow write)
        t0 = loop.time()
        await ob.submit([Counted(source="dev-a", time=gw.clock.now(), n=101)])
        assert first.done()
        assert loop.time() - t0 < 0.35
        await slow


async def test_mqtt_sockets_send_and_acknowledge_at_once(mosquitto: Mosquitto) -> None:
    session = MqttSession(SessionOptions(host="127.0.0.1", port=mosquitto.port, client_id="nodelay-test"))
    await session.open()
    try:
        sock = session.client.socket()
        assert isinstance(sock, socket.socket)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        await session.publish("t/x", b"1")  # the PUBACK path sets TCP_QUICKACK; it must not break anything
    finally:
        await session.close()
    a, b = socket.socketpair()  # not TCP: the options are refused, and the helpers say nothing
    try:
        no_delay(a)
        quick_ack(a)
    finally:
        a.close()
        b.close()
