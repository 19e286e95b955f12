"""The outbox's acknowledged prefix (watermark): budget accounting, restart, journal retention, migration."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from edge.brokers import Mosquitto
from edge.config import Manifest
from edge.db import integrity_check, migrate
from edge.schema import MIGRATIONS
from firmware_sim.hub import HubRecorder
from tests.edge.fakes import CountingDriver
from tests.edge.test_uplink import ROOT, _until, make_gateway, ns


async def test_acknowledged_telemetry_does_not_count_against_the_budget(
    mosquitto: Mosquitto, demo_manifest: Manifest, tmp_path: Path
) -> None:
    """Ten times the budget of telemetry flows through a connected hub: nothing is dropped, no gap."""
    storage = demo_manifest.storage.model_copy(
        update={"budgets": demo_manifest.storage.budgets.model_copy(update={"telemetry_mb": 0.1})})
    total = 3000  # ~450 bytes each: ~13x the 100 kB budget over the run, never that much pending at once
    tele = CountingDriver("sensor-t", total, cls="telemetry", per_tick=10, interval=0.01)
    hub = HubRecorder(mosquitto.port, f"{ROOT}/events/#")
    gw = make_gateway(demo_manifest, mosquitto.url, tmp_path / "d", [tele], storage=storage)
    try:
        async with gw:
            await _until(lambda: tele.next_n > total and gw.outbox.depth == 0, 60)
            assert gw.metrics.value("edge_outbox_dropped_total", **{"class": "telemetry"}) == 0
            assert gw.outbox.telemetry_bytes == 0  # acknowledged telemetry is deleted and uncounted
            assert await gw.query("SELECT count(*) AS n FROM outbox WHERE class='telemetry'") == [{"n": 0}]
        got = ns(hub.events("events/test-telemetry"))
        assert set(got) == set(range(1, total + 1))
        assert not hub.events("events/gap")
    finally:
        hub.close()


async def test_watermark_survives_restart_and_journal_retention(
    mosquitto: Mosquitto, demo_manifest: Manifest, tmp_path: Path
) -> None:
    """Acknowledged rows are not sent again after a restart; the retention sweep trims the journal's old end."""
    data = tmp_path / "d"
    hub = HubRecorder(mosquitto.port, f"{ROOT}/events/#")
    try:
        gw = make_gateway(demo_manifest, mosquitto.url, data, [CountingDriver("dev-a", 300)])
        async with gw:
            await _until(lambda: len(ns(hub.events("events/test"))) >= 300 and gw.outbox.depth == 0, 30)
            mark = gw.outbox.acked_through
        assert mark > 0
        c = sqlite3.connect(data / "edge.db")
        try:
            assert int(c.execute("SELECT value FROM kv WHERE key='outbox.acked_through'").fetchone()[0]) == mark
            assert c.execute("SELECT count(*) FROM outbox_pending").fetchone()[0] == 0
            # age the first 100 journal rows past the retention period
            c.execute("UPDATE outbox SET created = created - 8 * 86400 WHERE seq <= (SELECT min(seq) + 99 FROM outbox)")
            c.commit()
            oldest = c.execute("SELECT min(seq) FROM outbox").fetchone()[0]
        finally:
            c.close()
        before = len(hub.events("events/test"))
        gw = make_gateway(demo_manifest, mosquitto.url, data, [CountingDriver("dev-a", 310, start=301)])
        async with gw:
            await _until(lambda: len(hub.events("events/test")) >= before + 10 and gw.outbox.depth == 0, 30)
            await asyncio.sleep(0.2)
        assert ns(hub.events("events/test")) == list(range(1, 311))  # nothing sent twice after the restart
        c = sqlite3.connect(data / "edge.db")
        try:
            assert c.execute("SELECT min(seq) FROM outbox").fetchone()[0] == oldest + 100  # swept at start
        finally:
            c.close()
    finally:
        hub.close()
    assert integrity_check(data / "edge.db") == "ok"


def test_migration_turns_acked_stamps_into_the_watermark(tmp_path: Path) -> None:
    """A database of schema 3 (per-row `acked` stamps) keeps its journal and re-sends only what was pending."""
    db = tmp_path / "old.db"
    c = sqlite3.connect(db, isolation_level=None)
    for sql in MIGRATIONS[:3]:
        c.executescript(sql)
    c.execute("PRAGMA user_version=3")
    now = time.time()
    for i in range(1, 11):
        acked = now if i <= 6 or i == 8 else None  # 8 was acknowledged out of order
        c.execute("INSERT INTO outbox(id, source, sequence, type, class, topic, payload, size, created, acked)"
                  " VALUES (?,?,?,?,?,?,?,?,?,?)", (f"id-{i}", "d", i, "t.v1", "ledger", "t", b"{}", 2, now, acked))
    assert migrate(c) == len(MIGRATIONS)
    assert c.execute("SELECT value FROM kv WHERE key='outbox.acked_through'").fetchone()[0] == "6"
    assert [r[0] for r in c.execute("SELECT sequence FROM outbox_pending ORDER BY seq")] == [7, 8, 9, 10]
    assert c.execute("SELECT count(*) FROM outbox").fetchone()[0] == 10  # the journal is kept
    c.close()
    assert integrity_check(db) == "ok"
