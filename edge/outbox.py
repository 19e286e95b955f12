"""Store-and-forward outbox: an event is accepted once committed here, and leaves only after PUBACK.

`submit()` assigns the CloudEvents id (UUIDv7) and the per-source sequence, serialises the envelope and
queues it with any state rows that must change with it; the committer writes everything queued in one
transaction at once when the writer thread is idle, else as soon as the running commit finished, waiting
at most `commit_interval` (group commit: a batch forms while the previous commit runs); it resolves the
submitters' futures and hands the new rows to the uplink. The hub's acknowledgements ride along with the
next commit (or `ack_delay` later). Telemetry over its disk budget is dropped oldest first inside the same
transaction, and a `Gap` event (never dropped) announces each dropped range; drops are counted per class.

Only a PUBACK ends a row's time in the queue. The uplink sends rows in `seq` order and reports the
acknowledged prefix (`ack_through`): every row at or below the watermark `kv['outbox.acked_through']` is
acknowledged, every row above it pending (the `outbox_pending` view). Acknowledged telemetry is deleted;
acknowledged ledger, alert and control rows stay as the event journal until the retention period has
passed (one write per event, no second copy, no per-row acknowledgement write).

A commit that fails for a storage reason (SQLITE_FULL, SQLITE_IOERR, locked: `edge.db.is_transient`) is
logged once with SQLite's own error and retried with backoff: its batch (events, their sequence numbers,
state writes, acknowledgements) stays in memory in order, ahead of what arrived since, so nothing
accepted is lost and no sequence number is skipped. The first SQLITE_FULL releases the space reserve
(`edge.db.SpaceReserve`) and starts shedding telemetry: every telemetry event from then on (and in the
batch kept for retry) is dropped with a `Gap` event (reason "disk full") while alerts, ledger and control
events commit into the reserve's space. Once the file system has room for the reserve again it is taken
back and telemetry is accepted again, by itself. Any other commit error (a wrong statement: a bug) fails
the batch's futures and ends the committer, a core task whose failure ends the process (edge.health).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, NamedTuple

import orjson

from edge.backup import RESTORED_GAPS
from edge.clock import Clock
from edge.db import Database, SpaceReserve, describe, is_disk_full, is_transient
from edge.envelope import encode
from edge.events import Event, EventClass, Gap
from edge.ids import uuid7, uuid7_many
from edge.metrics import Metrics
from edge.runtime import Delete, StateWrite, Upsert

log = logging.getLogger(__name__)

_TELEMETRY = EventClass.TELEMETRY.value
_WATERMARK = "outbox.acked_through"
_SAFE_TABLE = frozenset("abcdefghijklmnopqrstuvwxyz_0123456789")


class OutRow(NamedTuple):
    """A committed outbox row, as the uplink publishes it (a tuple: one is made per event)."""

    seq: int
    topic: str
    payload: bytes
    cls: str


@dataclass(slots=True)
class _Batch:
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    telemetry_bytes: int = 0
    writes: list[StateWrite] = field(default_factory=list)
    retained: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    sources: dict[str, int] = field(default_factory=dict)
    futures: list[asyncio.Future[None]] = field(default_factory=list)
    since: float = 0.0  # monotonic time of the first submission
    shed: list[int] = field(default_factory=lambda: [0, 0])  # telemetry shed (count, bytes), for `drops`
    trimmed: list[tuple[Any, ...]] = field(default_factory=list)  # gap rows the budget trim made (filled on failure)

    def merge(self, later: _Batch) -> None:
        """Append `later` (queued after this batch) to this one, keeping the order."""
        self.rows += later.rows
        self.telemetry_bytes += later.telemetry_bytes
        self.writes += later.writes
        self.retained.update(later.retained)
        for source, seq in later.sources.items():
            self.sources[source] = max(seq, self.sources.get(source, 0))
        self.futures += later.futures
        if later.since and (not self.since or later.since < self.since):
            self.since = later.since
        self.shed = [self.shed[0] + later.shed[0], self.shed[1] + later.shed[1]]

    def __len__(self) -> int:
        return len(self.rows) + len(self.writes) + len(self.retained)


class Sequencer:
    """Per-source sequence numbers: +1 per event, persisted with the event, never reused."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}
        self._lock = threading.Lock()

    def load(self, rows: Sequence[tuple[str, int]]) -> None:
        """Restore the last committed numbers."""
        with self._lock:
            self._last = dict(rows)

    def next(self, source: str) -> int:
        """The next number of `source`."""
        with self._lock:
            n = self._last.get(source, 0) + 1
            self._last[source] = n
            return n

    def rewind(self, before: dict[str, tuple[int, int]]) -> None:
        """Give back numbers that were taken and never used: source -> (first taken, last taken); a source
        that has taken more numbers since keeps them (a hole then needs a gap event instead)."""
        with self._lock:
            for source, (first, last) in before.items():
                if self._last.get(source) == last:
                    self._last[source] = first - 1

    def next_many(self, sources: Sequence[str]) -> list[int]:
        """The next number of each of `sources`, in order (one lock for a whole batch)."""
        out: list[int] = []
        with self._lock:
            last = self._last
            for source in sources:
                n = last[source] = last.get(source, 0) + 1
                out.append(n)
        return out


class Outbox:
    """The durable queue between the pipeline and the uplink."""

    def __init__(
        self,
        db: Database,
        *,
        store_id: str,
        topic_root: str,
        clock: Clock,
        metrics: Metrics,
        telemetry_budget_bytes: int,
        commit_interval: float = 0.02,
        journal_retention_s: float = 7 * 86400,
        max_pending: int = 2_000,
        group_min: int = 1_000,
        ack_delay: float = 0.05,
        reserve: SpaceReserve | None = None,
    ) -> None:
        self.db = db
        self.store_id = store_id
        self.topic_root = topic_root
        self.clock = clock
        self.metrics = metrics
        self.budget = telemetry_budget_bytes
        self.commit_interval = commit_interval
        self.journal_retention_s = journal_retention_s
        self.max_pending = max_pending
        self.group_min = group_min
        self.sequencer = Sequencer()
        self.listeners: list[Callable[[list[OutRow]], None]] = []
        self.retained_listeners: list[Callable[[], None]] = []
        self.depth = 0
        self.telemetry_bytes = 0
        self._tele_db: int | None = 0  # the writer thread's running total (None: count it again)
        self.inflight_floor: Callable[[], int] = lambda: 0  # rows at or below this seq may be in flight
        self._batch = _Batch()
        self._meta: dict[type[Event], tuple[str, str, str]] = {}
        self.acked_through = 0  # every row with seq <= this is acknowledged (committed with the next batch)
        self._acked_through_db = 0
        self._acked_count = 0
        self._retained_acked: list[tuple[str, int]] = []
        self._wake = asyncio.Event()
        self.ack_delay = ack_delay
        self._ack_timer: asyncio.TimerHandle | None = None
        self._room = asyncio.Event()
        self._room.set()
        self._closing = False
        self._last_sweep = 0.0
        self.reserve = reserve
        self.shedding = False  # telemetry is dropped (with gap events) until the space reserve is back
        self.shed_total = 0  # telemetry events shed for lack of space since the process started
        self._shed: dict[str, list[int]] = {}  # source -> [first, last, count] shed since the last gap event
        self._retry: list[tuple[int, _Batch]] = []  # batches of failed commits, by generation
        self._gen = 0
        self._inflight = 0  # commits waiting for the writer thread (the committer's and flush()'s)
        self._idle = asyncio.Event()
        self._idle.set()
        self._errors_seen = 0  # the database's write_errors when the last failure was handled
        self.commits = 0
        self.commit_failures = 0
        self.last_error: str | None = None  # SQLite's error of the failing commit (None once it works)

    # ---- lifecycle ----
    async def open(self) -> None:
        """Load sequences, depth and telemetry size from the database."""

        def load(c: sqlite3.Connection) -> tuple[list[tuple[str, int]], int, int, int]:
            seqs = [(str(r[0]), int(r[1])) for r in c.execute("SELECT source, last FROM sequences")]
            row = c.execute("SELECT value FROM kv WHERE key=?", (_WATERMARK,)).fetchone()
            mark = int(row[0]) if row else 0
            depth = int(c.execute("SELECT count(*) FROM outbox WHERE seq > ?", (mark,)).fetchone()[0])
            tele = int(
                c.execute("SELECT coalesce(sum(size),0) FROM outbox WHERE class='telemetry' AND seq > ?",
                          (mark,)).fetchone()[0]
            )
            return seqs, mark, depth, tele

        seqs, mark, self.depth, self.telemetry_bytes = await self.db.read(load)
        self._tele_db = self.telemetry_bytes
        self.acked_through = self._acked_through_db = mark
        self.sequencer.load(seqs)
        drops = await self.db.query("SELECT class, count, bytes FROM drops")
        for d in drops:
            self.metrics.inc("edge_outbox_dropped_total", float(d["count"]), **{"class": str(d["class"])})
        await self._announce_restored_gaps()

    async def _announce_restored_gaps(self) -> None:
        """Queue a `Gap` per sequence range a restore skipped (edge/backup.py), deleting the record with them."""
        row = await self.db.read(lambda c: c.execute("SELECT value FROM kv WHERE key = ?",
                                                     (RESTORED_GAPS,)).fetchone())
        if row is None:
            return
        try:
            ranges = [(str(src), int(first), int(last)) for src, first, last in orjson.loads(row[0])]
        except (orjson.JSONDecodeError, TypeError, ValueError):
            log.exception("kv %s is unreadable: the ranges a restore skipped are not announced", RESTORED_GAPS)
            ranges = []
        now = self.clock.now()
        gaps = [Gap(source="gateway", time=now, gap_source=src, first=first, last=last, dropped=last - first + 1,
                    event_class="any", reason="restored from backup") for src, first, last in ranges]
        for g in gaps:
            log.warning("restored from a backup: %s's sequences %d..%d were used before and are skipped (a gap "
                        "event says so)", g.gap_source, g.first, g.last)
        self.submit(gaps, [Delete("kv", {"key": RESTORED_GAPS})])

    # ---- producers ----
    def topic(self, suffix: str) -> str:
        """Full topic of a suffix below the store root."""
        return f"{self.topic_root}/{suffix}"

    def submit(
        self,
        events: Sequence[Event],
        writes: Sequence[StateWrite] = (),
        retained: dict[str, tuple[bytes, int]] | None = None,
    ) -> asyncio.Future[None]:
        """Queue events (and state to commit with them); the future resolves when they are committed."""
        b = self._batch
        counts: dict[str, int] = {}
        if events:
            now = time.time()
            store = self.store_id
            rows = b.rows
            sources = b.sources
            seqs = self.sequencer.next_many([ev.source for ev in events])
            staged: list[tuple[Any, ...]] = []
            try:
                for ev, eid, seq in zip(events, uuid7_many(len(events)), seqs, strict=True):
                    kind = type(ev)
                    meta = self._meta.get(kind)
                    if meta is None:
                        meta = self._meta[kind] = (kind.TYPE, kind.CLASS.value, self.topic(kind.TOPIC))
                    etype, cls, topic = meta
                    payload = encode(ev, event_id=eid, sequence=seq, store_id=store)
                    staged.append((eid, ev.source, seq, etype, cls, topic, payload, len(payload), now))
            except BaseException:
                # nothing of this submission is queued: give its sequence numbers back (no hole)
                taken: dict[str, tuple[int, int]] = {}
                for ev, seq in zip(events, seqs, strict=True):
                    taken[ev.source] = (taken.get(ev.source, (seq, seq))[0], seq)
                self.sequencer.rewind(taken)
                raise
            if not len(b):
                b.since = time.monotonic()
            for row in staged:
                etype, cls, size = row[3], row[4], row[7]
                counts[etype] = counts.get(etype, 0) + 1
                if cls == _TELEMETRY:
                    if self.shedding:
                        self._shed_row(b, row)
                        continue
                    b.telemetry_bytes += size
                rows.append(row)
                sources[row[1]] = row[2]
        for etype, n in counts.items():
            self.metrics.inc("edge_events_total", float(n), type=etype)
        if not len(b) and (writes or retained):
            b.since = time.monotonic()
        b.writes.extend(writes)
        if retained:
            b.retained.update(retained)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        b.futures.append(fut)
        if len(b) >= self.max_pending:
            self._room.clear()
        self._wake.set()
        return fut

    def _shed_row(self, b: _Batch, row: tuple[Any, ...]) -> None:
        """Drop one telemetry row for lack of disk space; a gap event announces it with the next commit."""
        source, seq, size = str(row[1]), int(row[2]), int(row[7])
        span = self._shed.get(source)
        if span is None:
            self._shed[source] = [seq, seq, 1]
        else:
            span[0], span[1], span[2] = min(span[0], seq), max(span[1], seq), span[2] + 1
        b.shed[0] += 1
        b.shed[1] += size
        self.metrics.inc("edge_outbox_dropped_total", 1.0, **{"class": _TELEMETRY})
        self.metrics.inc("edge_outbox_shed_total")

    def _announce_shed(self) -> None:
        """Queue one `Gap` event per source whose telemetry was shed since the last announcement."""
        shed, self._shed = self._shed, {}
        now = self.clock.now()
        gaps = [Gap(source="gateway", time=now, gap_source=src, first=first, last=last, dropped=n, reason="disk full")
                for src, (first, last, n) in sorted(shed.items())]
        for g in gaps:  # the state change is logged by `_failed`/`_try_restore`; the detail goes to debug
            log.debug("disk full: shed %d telemetry events of %s (sequences %d..%d)", g.dropped, g.gap_source,
                      g.first, g.last)
            self.shed_total += g.dropped
        self.submit(gaps)

    def commit_lag(self) -> float:
        """Seconds the oldest event not yet committed has waited (0 when everything is committed)."""
        times = [b.since for _, b in self._retry if b.since]
        if len(self._batch) and self._batch.since:
            times.append(self._batch.since)
        return max(0.0, time.monotonic() - min(times)) if times else 0.0

    @property
    def uncommitted(self) -> int:
        """Events, writes and snapshots queued or kept for retry, not yet committed."""
        return len(self._batch) + sum(len(b) for _, b in self._retry)

    async def wait_room(self) -> None:
        """Backpressure: wait while too much is queued and not yet committed."""
        await self._room.wait()

    # ---- the uplink's side ----
    def ack_through(self, seq: int, rows: int) -> None:
        """The hub acknowledged every row up to `seq` (`rows` of them newly): telemetry among them is deleted,
        the rest kept as the journal (with the next commit)."""
        if seq > self.acked_through:
            self.acked_through = seq
            self._acked_count += rows
            self._wake_for_acks()

    def ack_retained(self, topic: str, version: int) -> None:
        """The hub acknowledged a retained snapshot of `version`."""
        self._retained_acked.append((topic, version))
        self._wake_for_acks()

    def _wake_for_acks(self) -> None:
        # Acknowledgements ride along with the next commit of events; only when none comes within
        # `ack_delay` do they get a commit of their own. (A commit per PUBACK burst kept the writer busy
        # with watermark updates while new events queued behind them; after a crash at most `ack_delay`
        # of acknowledged events is sent again.)
        if self._ack_timer is None and not self._wake.is_set():
            self._ack_timer = asyncio.get_running_loop().call_later(self.ack_delay, self._ack_due)

    def _ack_due(self) -> None:
        self._ack_timer = None
        self._wake.set()

    async def fetch(self, after_seq: int, limit: int) -> list[OutRow]:
        """Committed rows after `after_seq` (and after the watermark), in order (a backlog read from disk)."""
        start = max(after_seq, self.acked_through)
        rows = await self.db.read(
            lambda c: c.execute(
                "SELECT seq, topic, payload, class FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (start, limit)
            ).fetchall()
        )
        return [OutRow(int(r[0]), str(r[1]), bytes(r[2]), str(r[3])) for r in rows]

    async def oldest_unacked_created(self) -> float | None:
        """Unix time the oldest committed, unacknowledged row was created (None when there is none)."""
        mark = self.acked_through
        row = await self.db.read(
            lambda c: c.execute("SELECT created FROM outbox WHERE seq > ? ORDER BY seq LIMIT 1", (mark,)).fetchone()
        )
        return float(row[0]) if row else None

    async def retained_due(self) -> list[tuple[str, bytes, int]]:
        """Retained snapshots newer than what the hub has acknowledged."""
        rows = await self.db.read(
            lambda c: c.execute("SELECT topic, payload, version FROM retained WHERE version > published").fetchall()
        )
        return [(str(r[0]), bytes(r[1]), int(r[2])) for r in rows]

    # ---- the committer ----
    async def run(self) -> None:
        """Commit whatever is queued, every `commit_interval`, until `close()`."""
        previous: asyncio.Task[bool] | None = None
        delay = 0.0
        try:
            while True:
                if self.shedding:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0):  # not wait_for: 3.11's can drop a cancel (close())
                            await self._wake.wait()
                    await self._try_restore()
                else:
                    await self._wake.wait()
                # Group commit: while a commit is running, a small batch waits for it to finish (at most
                # `commit_interval`), gathering what arrives meanwhile; a fixed sleep instead made every event
                # behind a running ~1 ms commit wait the whole interval (p50 reading -> hub 5.5 ms vs 1.9-3.7
                # ms, bench.peers.where). A batch that is already large (a busy store, a backlog) is committed
                # at once, so the writer thread and the pipeline work side by side instead of taking turns.
                # With the writer idle (a quiet store: most of the day) the batch goes at once.
                if (self.commit_interval and not self._closing and len(self._batch) < self.group_min
                        and previous is not None and not previous.done()):
                    await asyncio.wait((previous,), timeout=self.commit_interval)
                self._wake.clear()
                # Two commits in flight: the next transaction is queued on the writer thread while the
                # loop finishes the previous one (futures, uplink), so the writer never waits for the loop.
                # The writer runs them in order and their results come back in order.
                current = asyncio.create_task(self._commit())
                if previous is not None:
                    await previous
                previous = current
                if self._retry:
                    # a commit failed: once nothing is in flight (a flush() may have one too), the batches go
                    # back in front, in their order, then retry
                    await previous
                    previous = None
                    while self._inflight:
                        await self._idle.wait()
                    self._requeue()
                    delay = min(max(delay * 2, 0.05), 5.0)
                    await asyncio.sleep(delay)
                    self._wake.set()
                    continue
                if self.last_error is None:
                    delay = 0.0
                if self._closing:
                    await previous
                    previous = None
                    if (not len(self._batch) and self.acked_through == self._acked_through_db
                            and not self._retained_acked):
                        return
        finally:
            if previous is not None and not previous.done():
                previous.cancel()
            if self._ack_timer is not None:
                self._ack_timer.cancel()
                self._ack_timer = None
            left = sum(len(b.rows) for _, b in self._retry) + len(self._batch.rows)
            if left:
                log.error("committer stopped with %d events not committed (never accepted; last error: %s)",
                          left, self.last_error)

    def _requeue(self) -> None:
        """Put the batches of failed commits back in front of what arrived since, in their order."""
        parts = [b for _, b in sorted(self._retry, key=lambda gb: gb[0])]
        self._retry.clear()
        self._errors_seen = self.db.write_errors
        merged = parts[0]
        for later in [*parts[1:], self._batch]:
            merged.merge(later)
        if self.shedding and merged.telemetry_bytes:
            kept = []
            for row in merged.rows:
                if row[4] == _TELEMETRY:
                    self._shed_row(merged, row)
                else:
                    kept.append(row)
            merged.rows = kept
            merged.telemetry_bytes = 0
        self._batch = merged
        if len(merged) >= self.max_pending:
            self._room.clear()

    def _failed(self, exc: BaseException) -> None:
        """A commit failed for a storage reason: log it once (SQLite's own error), release the reserve."""
        self.commit_failures += 1
        self.metrics.inc("edge_outbox_commit_failures_total")
        error = describe(exc)
        if self.last_error is None:
            log.error("commit failed: %s; %d events kept in memory, retrying with backoff", error,
                      sum(len(b.rows) for _, b in self._retry) + len(self._batch.rows))
        self.last_error = error
        if is_disk_full(exc) and not self.shedding:
            self.shedding = True
            freed = self.reserve.release() if self.reserve is not None else 0
            log.error("disk full: %s; alerts, ledger and control events go on, telemetry is shed with gap events "
                      "until space returns", f"released the {freed}-byte space reserve" if freed
                      else "no space reserve to release (storage.reserve_mb)")

    async def _try_restore(self) -> None:
        """While shedding: take the space reserve back once there is room; then accept telemetry again."""
        if self.last_error is not None:
            return  # commits still fail: there is no room yet
        ok = True if self.reserve is None else await asyncio.to_thread(self.reserve.restore)
        if ok:
            self.shedding = False
            log.info("disk space is back: space reserve restored, telemetry accepted again (%d telemetry events "
                     "shed so far, each range announced by a gap event)", self.shed_total)

    async def close(self) -> None:
        """Stop after committing everything queued."""
        self._closing = True
        self._wake.set()

    async def flush(self) -> None:
        """Commit the current batch and pending acknowledgements now (after a failure: once it is committed)."""
        if not await self._commit():
            await self.submit([])  # resolves once the kept batch, which goes first, is committed

    async def _commit(self) -> bool:
        """Commit the current batch and pending acknowledgements; False when a storage failure kept it for retry."""
        if self._shed:
            self._announce_shed()
        if self._ack_timer is not None:
            self._ack_timer.cancel()  # the acknowledgements go with this commit
            self._ack_timer = None
        batch, self._batch = self._batch, _Batch()
        mark, old_mark = self.acked_through, self._acked_through_db
        acked, self._acked_count = self._acked_count, 0
        racked, self._retained_acked = self._retained_acked, []
        if not len(batch) and mark == old_mark and not racked:
            self._room.set()
            if batch.futures:  # submit([]) from flush(): resolved once everything before it is committed
                if self._retry or self._inflight:
                    self._batch.futures[:0] = batch.futures
                    self._wake.set()
                else:
                    for f in batch.futures:
                        if not f.done():
                            f.set_result(None)
            return True
        sweep = time.monotonic() - self._last_sweep > 60
        floor = max(self.inflight_floor(), mark)
        gen, self._gen = self._gen, self._gen + 1
        seen = self._errors_seen

        def txn(c: sqlite3.Connection) -> tuple[int, list[OutRow], list[tuple[int, int]], int]:
            if self.db.write_errors != seen:
                raise _Skipped  # an earlier commit failed: this one must not overtake its batch
            return self._transaction(c, batch, acked=(old_mark, mark), racked=racked, sweep=sweep, floor=floor)

        self._inflight += 1
        self._idle.clear()
        try:
            result = await self.db.write(txn)
        except BaseException as exc:
            self._acked_count += acked  # the watermark goes with the next commit
            self._retained_acked[:0] = racked
            self._tele_db = None  # the transaction may have counted before it failed: count again
            if isinstance(exc, _Skipped) or is_transient(exc) or is_disk_full(exc):
                if batch.trimmed:
                    # the budget trim's gap events took sequence numbers: keep them (announced again by the
                    # next trim if need be) unless they can be given back
                    batch.rows += batch.trimmed
                    batch.trimmed = []
                self._retry.append((gen, batch))
                if not isinstance(exc, _Skipped):
                    self._failed(exc)
                self._wake.set()
                return False
            for f in batch.futures:
                if not f.done():
                    f.set_exception(exc if isinstance(exc, Exception) else RuntimeError("cancelled"))
            raise
        finally:
            self._inflight -= 1
            if not self._inflight:
                self._idle.set()
        if self.last_error is not None:
            log.info("commits work again after %d failures", self.commit_failures)
            self.last_error = None
        self.commits += 1
        self._acked_through_db = mark
        if sweep:
            self._last_sweep = time.monotonic()
        first_seq, gap_rows, dropped, self.telemetry_bytes = result
        new = tuple.__new__  # OutRow(...) goes through a Python-level __new__; this is the same, in C
        rows = [new(OutRow, (first_seq + i, r[5], r[6], r[4])) for i, r in enumerate(batch.rows)]
        rows += gap_rows
        self.depth += len(rows) - acked - len(dropped)
        self.metrics.inc("edge_outbox_commits_total")
        self._room.set()
        for f in batch.futures:
            if not f.done():
                f.set_result(None)
        for listener in self.listeners:
            listener(rows)
        if batch.retained:
            for notify in self.retained_listeners:
                notify()
        return True

    def _transaction(
        self,
        c: sqlite3.Connection,
        b: _Batch,
        *,
        acked: tuple[int, int],
        racked: list[tuple[str, int]],
        sweep: bool,
        floor: int,
    ) -> tuple[int, list[OutRow], list[tuple[int, int]], int]:
        first_seq = 0
        if b.rows:
            first_seq = _insert_rows(c, b.rows)
        if b.writes:
            _apply_writes(c, b.writes)
        if b.retained:
            _many(c, "INSERT INTO retained(topic, payload, version) VALUES ",
                  " ON CONFLICT(topic) DO UPDATE SET payload=excluded.payload, version=excluded.version",
                  [(t, p, v) for t, (p, v) in b.retained.items()])
        old_mark, mark = acked
        acked_tele = 0
        if mark > old_mark:
            acked_tele = int(c.execute("SELECT coalesce(sum(size),0) FROM outbox WHERE class='telemetry' AND seq > ?"
                                       " AND seq <= ?", (old_mark, mark)).fetchone()[0])
            c.execute("DELETE FROM outbox WHERE class='telemetry' AND seq > ? AND seq <= ?", (old_mark, mark))
            c.execute("INSERT INTO kv(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                      (_WATERMARK, str(mark)))
        if racked:
            newest: dict[str, int] = {}
            for t, v in racked:
                newest[t] = max(v, newest.get(t, v))
            # one statement for every acknowledged snapshot (UPDATE ... FROM: SQLite 3.33; Debian 12 has 3.40)
            values = ",".join(["(?,?)"] * len(newest))
            c.execute(f"UPDATE retained SET published=max(published, a.column2) FROM (VALUES {values}) AS a"  # noqa: S608
                      " WHERE retained.topic=a.column1", list(chain.from_iterable(newest.items())))
        if b.shed[0]:
            c.execute(
                "INSERT INTO drops(class, count, bytes) VALUES (?,?,?) ON CONFLICT(class) DO UPDATE"
                " SET count=count+excluded.count, bytes=bytes+excluded.bytes",
                (_TELEMETRY, b.shed[0], b.shed[1]),
            )
        gap_rows: list[OutRow] = []
        dropped: list[tuple[int, int]] = []
        if self._tele_db is None:
            self._tele_db = int(c.execute("SELECT coalesce(sum(size),0) FROM outbox WHERE class='telemetry'"
                                          " AND seq > ?", (mark,)).fetchone()[0]) - b.telemetry_bytes + acked_tele
        tele = self._tele_db + b.telemetry_bytes - acked_tele  # the budget counts pending telemetry only
        if tele > self.budget:
            gap_rows, dropped = self._trim(c, tele - self.budget, floor, b)
            tele -= sum(size for _, size in dropped)
        self._tele_db = tele
        if b.sources:
            _many(c, "INSERT INTO sequences(source, last) VALUES ",
                  " ON CONFLICT(source) DO UPDATE SET last=max(last, excluded.last)", list(b.sources.items()))
        if sweep and self.journal_retention_s >= 0:
            # the journal is the acknowledged prefix, oldest first: find the first row young enough to keep
            cutoff = time.time() - self.journal_retention_s
            keep = c.execute("SELECT seq FROM outbox WHERE seq <= ? AND created >= ? ORDER BY seq LIMIT 1",
                             (mark, cutoff)).fetchone()
            c.execute("DELETE FROM outbox WHERE seq < ?", (int(keep[0]) if keep else mark + 1,))
        return first_seq, gap_rows, dropped, tele

    def _trim(
        self, c: sqlite3.Connection, excess: int, floor: int, b: _Batch
    ) -> tuple[list[OutRow], list[tuple[int, int]]]:
        """Drop the oldest telemetry rows (not in flight) until `excess` bytes are freed; announce gaps."""
        dropped: list[tuple[int, int]] = []
        ranges: dict[str, list[int]] = defaultdict(list)
        freed = 0
        cur = c.execute(
            # `class='telemetry'` spelled out (not bound) so SQLite can use the partial index outbox_telemetry
            "SELECT seq, source, sequence, size FROM outbox WHERE class='telemetry' AND seq > ? ORDER BY seq",
            (floor,),
        )
        for seq, source, sequence, size in cur:
            if freed >= excess:
                break
            dropped.append((int(seq), int(size)))
            ranges[str(source)].append(int(sequence))
            freed += int(size)
        cur.close()
        if not dropped:
            return [], []
        c.executemany("DELETE FROM outbox WHERE seq=?", [(s,) for s, _ in dropped])
        c.execute(
            "INSERT INTO drops(class, count, bytes) VALUES (?,?,?) ON CONFLICT(class) DO UPDATE"
            " SET count=count+excluded.count, bytes=bytes+excluded.bytes",
            (EventClass.TELEMETRY.value, len(dropped), freed),
        )
        self.metrics.inc("edge_outbox_dropped_total", float(len(dropped)), **{"class": EventClass.TELEMETRY.value})
        now = self.clock.now()
        gap_rows: list[OutRow] = []
        for source, seqs in ranges.items():
            gap = Gap(source="gateway", time=now, gap_source=source, first=min(seqs), last=max(seqs),
                      dropped=len(seqs))
            seq_no = self.sequencer.next(gap.source)
            b.sources[gap.source] = seq_no
            eid = uuid7()
            payload = encode(gap, event_id=eid, sequence=seq_no, store_id=self.store_id)
            topic = self.topic(gap.TOPIC)
            row = (eid, gap.source, seq_no, gap.TYPE, gap.CLASS.value, topic, payload, len(payload), time.time())
            b.trimmed.append(row)  # kept (in the retried batch) if this transaction fails: no sequence hole
            c.execute(
                "INSERT INTO outbox(id, source, sequence, type, class, topic, payload, size, created)"
                " VALUES (?,?,?,?,?,?,?,?,?)",
                row,
            )
            rowid = int(c.execute("SELECT last_insert_rowid()").fetchone()[0])
            gap_rows.append(OutRow(rowid, topic, payload, gap.CLASS.value))
            log.warning("telemetry over its disk budget: dropped %d events of %s (sequences %d..%d)",
                        len(seqs), source, min(seqs), max(seqs))
        return gap_rows, dropped


class _Skipped(Exception):
    """A commit queued behind a failed one: not attempted, its batch goes back for retry."""


_INSERT = "INSERT INTO outbox(id, source, sequence, type, class, topic, payload, size, created) VALUES "
_ROW = "(?,?,?,?,?,?,?,?,?)"
_CHUNK = 512  # rows per statement: 4,608 parameters, below SQLite's 32,766
_SQL: dict[int, str] = {}


def _chunks(n: int, chunk: int = _CHUNK) -> list[int]:
    """Statement sizes covering `n` rows: full chunks (a power of two), then powers of two (few distinct
    statements to cache)."""
    sizes = [chunk] * (n // chunk)
    rest = n % chunk
    size = chunk // 2
    while rest:
        if rest >= size:
            sizes.append(size)
            rest -= size
        size //= 2
    return sizes


def _insert_rows(c: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> int:
    """Insert `rows` with multi-row INSERT statements; return the seq of the first.

    One statement per chunk instead of one step per row: the sqlite3 module holds the GIL while it binds and
    releases it around each step, so `executemany` hands the GIL to and from the event loop's thread once per
    row (each handoff may wait for the switch interval); this hands it over a few times per commit.
    AUTOINCREMENT gives the rows of one transaction consecutive seqs, so the first is `last - n + 1`.
    """
    last = 0
    off = 0
    for size in _chunks(len(rows)):
        sql = _SQL.get(size) or _SQL.setdefault(size, _INSERT + ",".join([_ROW] * size))
        cur = c.execute(sql, list(chain.from_iterable(rows[off:off + size])))
        last = int(cur.lastrowid or 0)
        off += size
    return last - len(rows) + 1


def _many(c: sqlite3.Connection, head: str, tail: str, rows: Sequence[Sequence[Any]]) -> None:
    """Run `head` VALUES (...),(...) `tail` over `rows` (all of one width) in a few multi-row statements.

    The same reason as `_insert_rows`: `executemany` is one step, and one or two GIL handoffs between the
    writer thread and the event loop, per row; each handoff may wait a switch interval (5 ms) while the loop
    runs Python. Statement sizes are powers of two, so few distinct statements are prepared and cached.
    """
    width = len(rows[0])
    chunk = _CHUNK
    while chunk > 1 and chunk * width > 8_192:  # SQLite allows 32,766 parameters; stay well below
        chunk //= 2
    one = "(" + ",".join("?" * width) + ")"
    off = 0
    for size in _chunks(len(rows), chunk):
        key = (head, tail, size)
        sql = _MANY.get(key) or _MANY.setdefault(key, head + ",".join([one] * size) + tail)
        c.execute(sql, list(chain.from_iterable(rows[off:off + size])))
        off += size


_MANY: dict[tuple[str, str, int], str] = {}


def _apply_writes(c: sqlite3.Connection, writes: Sequence[StateWrite]) -> None:
    """Apply state writes with few statements: each table's writes in their order, a run of upserts of the
    same columns as multi-row `INSERT OR REPLACE` (SQLite applies the rows in order, so a later row of a key
    replaces an earlier one, as row by row). The tables are independent of each other (no foreign keys or
    triggers: tests/edge/test_commit_statements.py checks edge/schema.py), so one table's writes may go
    before another's that were queued earlier: the result is the same."""
    tables: dict[str, list[StateWrite]] = {}
    for w in writes:
        if not set(w.table) <= _SAFE_TABLE:
            raise ValueError(f"bad table name {w.table!r}")
        tables.setdefault(w.table, []).append(w)
    for table, ws in tables.items():
        run: list[Upsert] = []  # consecutive upserts of this table with the same columns
        last: list[StateWrite | None] = [*ws, None]  # None: the end, which ends the last run
        for x in last:
            if run and not (isinstance(x, Upsert) and x.row.keys() == run[0].row.keys()):
                cols = list(run[0].row)
                if not all(set(col) <= _SAFE_TABLE for col in cols):
                    raise ValueError(f"bad column in {cols!r}")
                _many(c, f"INSERT OR REPLACE INTO {table}({', '.join(cols)}) VALUES ", "",  # noqa: S608
                      [[u.row[k] for k in cols] for u in run])
                run = []
            if isinstance(x, Upsert):
                run.append(x)
            elif x is not None:
                _apply_write(c, x)


def _apply_write(c: sqlite3.Connection, w: StateWrite) -> None:
    if not set(w.table) <= _SAFE_TABLE:
        raise ValueError(f"bad table name {w.table!r}")
    if isinstance(w, Upsert):
        cols = list(w.row)
        if not all(set(col) <= _SAFE_TABLE for col in cols):
            raise ValueError(f"bad column in {cols!r}")
        c.execute(
            f"INSERT OR REPLACE INTO {w.table}({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})",  # noqa: S608
            [w.row[k] for k in cols],
        )
    elif isinstance(w, Delete):
        keys = list(w.key)
        if not all(set(k) <= _SAFE_TABLE for k in keys):
            raise ValueError(f"bad column in {keys!r}")
        where = " AND ".join(f"{k}=?" for k in keys) or "1=1"
        c.execute(f"DELETE FROM {w.table} WHERE {where}", [w.key[k] for k in keys])  # noqa: S608
