"""One outbox commit runs a handful of SQLite statements, however many rows, state writes and snapshots it holds.

Each statement the writer thread runs hands the GIL to the event loop's thread and back (the sqlite3 module
releases it around every step), and taking it back may wait a whole switch interval (5 ms) while the loop runs
Python: on the peers job a commit ran 13 statements at the median and 57 at the 99th percentile, and its
body took p99 11.4 ms of which the SQL itself is a fraction (docs/benchmarks.md). Counted here, not timed.
"""

from __future__ import annotations

import re
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from edge.clock import SystemClock
from edge.db import Database
from edge.events import Gap
from edge.metrics import Metrics
from edge.outbox import Outbox
from edge.runtime import Delete, StateWrite, Upsert
from edge.schema import MIGRATIONS


async def _outbox(tmp_path: Path) -> tuple[Database, Outbox]:
    db = Database(tmp_path / "edge.db")
    await db.open()
    ob = Outbox(db, store_id="s1", topic_root="retail/v1/s1", clock=SystemClock(), metrics=Metrics(),
                telemetry_budget_bytes=10_000_000)
    await ob.open()
    await ob.flush()
    return db, ob


def _counting(db: Database) -> list[str]:
    seen: list[str] = []
    assert db._w is not None
    db._w.set_trace_callback(seen.append)  # one call per statement step (executemany: one per row)
    return seen


def _gaps(n: int, sources: int) -> list[Gap]:
    now = datetime.now(UTC)
    return [Gap(source=f"src-{i % sources}", time=now, gap_source="x", first=i, last=i, dropped=1)
            for i in range(n)]


async def test_a_commit_of_many_writes_runs_few_statements(tmp_path: Path) -> None:
    """40 events of 20 sources, 120 state writes over two tables, 20 retained snapshots and 20 acknowledged
    snapshot versions: one commit, at most 16 statements (row by row it was over 200)."""
    db, ob = await _outbox(tmp_path)
    try:
        topics = [f"retail/v1/s1/state/stock/shelf-{i}" for i in range(20)]
        ob.submit([], retained=dict.fromkeys(topics, (b"{}", 1)))
        await ob.flush()
        writes: list[StateWrite] = []
        for i in range(60):  # interleaved tables, as the pipeline makes them (a stock row, then its kv row)
            writes.append(Upsert("kv", {"key": f"k{i}", "value": str(i)}))
            writes.append(Upsert("drops", {"class": f"c{i}", "count": i, "bytes": 2 * i}))
        for t in topics:
            ob.ack_retained(t, 1)
        ob.submit(_gaps(40, 20), writes, retained=dict.fromkeys(topics, (b'{"v":2}', 2)))
        seen = _counting(db)
        await ob.flush()
        body = [s for s in seen if s not in ("BEGIN IMMEDIATE", "COMMIT")]
        assert len(body) <= 16, f"{len(body)} statements: {sorted({re.sub(r'VALUES.*', 'VALUES', s) for s in body})}"
        kv = dict(await db.read(lambda c: c.execute("SELECT key, value FROM kv WHERE key LIKE 'k%'").fetchall()))
        assert kv == {f"k{i}": str(i) for i in range(60)}
        drops = await db.query("SELECT count(*) AS n, sum(bytes) AS b FROM drops WHERE class LIKE 'c%'")
        assert drops == [{"n": 60, "b": sum(2 * i for i in range(60))}]
        seqs = dict(await db.read(lambda c: c.execute("SELECT source, last FROM sequences").fetchall()))
        assert seqs == {f"src-{i}": 2 for i in range(20)}
        ret = await db.query("SELECT count(*) AS n FROM retained WHERE version = 2 AND published = 1")
        assert ret == [{"n": 20}]
    finally:
        await db.close()


async def test_grouped_writes_keep_each_tables_order(tmp_path: Path) -> None:
    """The same key written twice, deleted between writes, different columns: the result of row by row."""
    db, ob = await _outbox(tmp_path)
    try:
        writes: list[StateWrite] = [
            Upsert("kv", {"key": "a", "value": "1"}),
            Upsert("drops", {"class": "x", "count": 1, "bytes": 1}),
            Upsert("kv", {"key": "a", "value": "2"}),  # same key in one run: the later row wins
            Upsert("kv", {"key": "b", "value": "1"}),
            Delete("kv", {"key": "b"}),  # ends the run: b is gone ...
            Upsert("kv", {"value": "3", "key": "c"}),  # ... columns in another order: the same run shape
            Upsert("kv", {"key": "d", "value": "1"}),
            Delete("kv", {"key": "d"}),
            Upsert("kv", {"key": "d", "value": "2"}),  # deleted, then written again: present
            Upsert("drops", {"class": "x", "count": 5, "bytes": 7}),
        ]
        ob.submit([], writes)
        await ob.flush()
        kv = dict(await db.read(lambda c: c.execute("SELECT key, value FROM kv WHERE length(key) = 1").fetchall()))
        assert kv == {"a": "2", "c": "3", "d": "2"}
        assert await db.query("SELECT count, bytes FROM drops WHERE class = 'x'") == [{"count": 5, "bytes": 7}]
    finally:
        await db.close()


async def test_acknowledged_snapshot_versions_keep_the_newest(tmp_path: Path) -> None:
    """Several acknowledgements of one snapshot in one commit (in any order): `published` is the newest."""
    db, ob = await _outbox(tmp_path)
    try:
        ob.submit([], retained={"t/1": (b"{}", 5), "t/2": (b"{}", 3)})
        await ob.flush()
        for topic, version in [("t/1", 4), ("t/1", 5), ("t/1", 2), ("t/2", 1)]:
            ob.ack_retained(topic, version)
        ob.submit([], [Upsert("kv", {"key": "z", "value": "1"})])
        await ob.flush()
        rows = await db.query("SELECT topic, published FROM retained ORDER BY topic")
        assert rows == [{"topic": "t/1", "published": 5}, {"topic": "t/2", "published": 1}]
    finally:
        await db.close()


def test_the_schema_has_no_foreign_keys_or_triggers() -> None:
    """Grouping state writes by table relies on it (edge.outbox._apply_writes): a table's writes may commit
    before another table's that were queued earlier. A foreign key or trigger between tables would need the
    queue's order across tables again."""
    c = sqlite3.connect(":memory:")
    try:
        for sql in MIGRATIONS:
            c.executescript(sql)
        names = [r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        assert names
        for name in names:
            assert not c.execute(f"PRAGMA foreign_key_list({name})").fetchall(), name
        assert not c.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall()
    finally:
        c.close()
