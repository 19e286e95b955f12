"""SQLite state database in WAL mode, used from one dedicated thread so the event loop never blocks.

All writes go through `Database.write(fn)`, which runs `fn(conn)` inside one transaction on the writer
thread; reads use a second connection on its own thread (WAL lets readers and the writer work at once).
`synchronous=FULL` makes a committed transaction survive power loss, not only kill -9; group commits
amortise the fsync.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from edge.schema import MIGRATIONS

log = logging.getLogger(__name__)
T = TypeVar("T")
# SQLite's primary result codes that say "the storage failed, try again later" (not "this SQL is wrong"):
# BUSY, LOCKED, READONLY, IOERR, FULL, CANTOPEN, PROTOCOL (https://sqlite.org/rescode.html)
TRANSIENT_CODES = frozenset({5, 6, 8, 10, 13, 14, 15})
SQLITE_FULL = 13
WAL_RESTART_PAGES = 16_384  # 64 MiB of 4 KiB pages: beyond this the WAL is made to start over


def _connect(path: Path, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    # 256 KiB of page cache per connection instead of SQLite's 2 MiB: the writer appends at the end of the
    # outbox and the reader scans it in order, so a small working set suffices (RSS matters on a store box:
    # ~1 MB less under load than 1 MiB, same spine throughput; docs/benchmarks.md has the runs)
    conn.execute("PRAGMA cache_size=-256")
    return conn


def is_transient(exc: BaseException) -> bool:
    """True when `exc` is a storage failure worth retrying (disk full, I/O error, locked), not a bad statement."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.OperationalError) and code is not None and (code & 0xFF) in TRANSIENT_CODES


def is_disk_full(exc: BaseException) -> bool:
    """True when `exc` is SQLite's SQLITE_FULL (or an I/O error caused by ENOSPC)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF == SQLITE_FULL:
        return True
    return isinstance(exc, OSError) and exc.errno == 28  # ENOSPC


def describe(exc: BaseException) -> str:
    """SQLite's own error: its message and result code name (e.g. 'database or disk is full [SQLITE_FULL]')."""
    name = getattr(exc, "sqlite_errorname", None)
    return f"{exc} [{name}]" if name else f"{type(exc).__name__}: {exc}"


def migrate(conn: sqlite3.Connection) -> int:
    """Run pending migrations; return the schema version."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    for i, sql in enumerate(MIGRATIONS[version:], start=version + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for stmt in sql.split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            conn.execute(f"PRAGMA user_version={i}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return len(MIGRATIONS)


class Database:
    """One writer thread, one reader thread, one checkpointer thread, one file.

    Checkpoints (copying the WAL back into the database file, with its fsyncs) run on their own connection
    and thread, `PASSIVE`, once a second while there are writes (`run_checkpoints`): SQLite's automatic
    checkpoint would run them inside whichever commit crosses 1,000 WAL pages, so every ~second one commit,
    and every event waiting for it, would take tens of milliseconds longer.
    """

    def __init__(self, path: Path, *, synchronous: str = "FULL") -> None:
        self.path = path
        self._synchronous = synchronous
        self._wpool = ThreadPoolExecutor(1, thread_name_prefix="db-writer")
        self._rpool = ThreadPoolExecutor(1, thread_name_prefix="db-reader")
        self._cpool = ThreadPoolExecutor(1, thread_name_prefix="db-checkpoint")
        self._w: sqlite3.Connection | None = None
        self._r: sqlite3.Connection | None = None
        self._c: sqlite3.Connection | None = None
        self.commits = 0
        self.checkpoints = 0
        self.write_errors = 0  # failed write transactions (counted on the writer thread)
        self.checkpoint_errors = 0

    async def open(self) -> None:
        """Create the file if needed, migrate, open both connections."""
        self.path.parent.mkdir(parents=True, exist_ok=True)

        def _open_w() -> None:
            if self._w is not None:  # a failed open before (disk full at start): start over
                self._w.close()
            self._w = _connect(self.path, self._synchronous)
            migrate(self._w)
            self._w.execute("PRAGMA wal_autocheckpoint=0")  # see run_checkpoints
            self._w.execute("PRAGMA journal_size_limit=16777216")  # a reset WAL file shrinks back to 16 MiB

        def _open_c() -> None:
            self._c = _connect(self.path, self._synchronous)

        def _open_r() -> None:
            self._r = _connect(self.path, self._synchronous)
            self._r.execute("PRAGMA query_only=ON")

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._wpool, _open_w)
        await loop.run_in_executor(self._rpool, _open_r)
        await loop.run_in_executor(self._cpool, _open_c)

    async def run_checkpoints(self, interval: float = 1.0) -> None:
        """Checkpoint the WAL in the background, once per `interval` while there are commits, until cancelled."""
        loop = asyncio.get_running_loop()
        done = self.commits

        def checkpoint() -> int:
            assert self._c is not None, "database is not open"
            row = self._c.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            return int(row[1])  # pages in the WAL

        def restart() -> None:
            assert self._w is not None, "database is not open"
            self._w.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()

        failing = False
        while True:
            await asyncio.sleep(interval)
            if self.commits != done and self._c is not None:
                try:
                    pages = await loop.run_in_executor(self._cpool, checkpoint)
                    if pages > WAL_RESTART_PAGES:
                        # a long burst of writes kept the passive checkpoints from ever finishing at the moment a
                        # write began (only then does the WAL start over): wait for one on the writer's thread
                        await loop.run_in_executor(self._wpool, restart)
                except sqlite3.Error as exc:
                    # a full disk fails the checkpoint too (the database file cannot grow); the WAL keeps every
                    # commit, so try again next interval; log the state change, not every attempt
                    if not is_transient(exc):
                        raise
                    self.checkpoint_errors += 1
                    if not failing:
                        log.warning("WAL checkpoint failed: %s (retrying every %.0f s)", describe(exc), interval)
                    failing = True
                    continue
                if failing:
                    log.info("WAL checkpoint works again")
                failing = False
                done = self.commits
                self.checkpoints += 1

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in one IMMEDIATE transaction on the writer thread; commit, or roll back on error.

        The error raised is the one that failed the transaction: when SQLite has already rolled back by
        itself (SQLITE_FULL, SQLITE_IOERR may do so), no ROLLBACK is sent, whose "cannot rollback - no
        transaction is active" would replace it.
        """

        def run() -> T:
            conn = self._w
            assert conn is not None, "database is not open"
            try:
                conn.execute("BEGIN IMMEDIATE")
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                self.write_errors += 1
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        log.exception("ROLLBACK after a failed transaction failed too")
                raise
            self.commits += 1
            return result

        return await asyncio.get_running_loop().run_in_executor(self._wpool, run)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` on the reader connection's thread."""

        def run() -> T:
            assert self._r is not None, "database is not open"
            return fn(self._r)

        return await asyncio.get_running_loop().run_in_executor(self._rpool, run)

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Read-only query returning dict rows."""
        return await self.read(lambda c: [dict(r) for r in c.execute(sql, params).fetchall()])

    async def close(self) -> None:
        """Close both connections (after a checkpoint) and stop the threads."""

        def close_w() -> None:
            if self._w is not None:
                self._w.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._w.close()
                self._w = None

        def close_r() -> None:
            if self._r is not None:
                self._r.close()
                self._r = None

        def close_c() -> None:
            if self._c is not None:
                self._c.close()
                self._c = None

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._cpool, close_c)
        await loop.run_in_executor(self._rpool, close_r)
        await loop.run_in_executor(self._wpool, close_w)
        self._wpool.shutdown(wait=True)
        self._rpool.shutdown(wait=True)
        self._cpool.shutdown(wait=True)


class SpaceReserve:
    """A preallocated file that keeps `size` bytes of the data directory's file system for the outbox.

    When a commit fails for lack of space the file is deleted: its space lets alerts, ledger and control
    events (and the deletes that free telemetry) commit while telemetry is shed. `restore()` takes the
    space back once the file system has room again (the reserve plus half as much again of headroom).
    """

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size

    @property
    def holds(self) -> bool:
        """The reserve file exists at its full size (or no reserve is configured)."""
        if self.size <= 0:
            return True
        try:
            return self.path.stat().st_size >= self.size
        except OSError:
            return False

    def free_bytes(self) -> int:
        """Bytes available to this process on the data directory's file system."""
        st = os.statvfs(self.path.parent)
        return st.f_bavail * st.f_frsize

    def restore(self) -> bool:
        """Allocate the reserve if the file system has room for it and half as much again; True when it holds."""
        if self.holds:
            return True
        try:
            if self.free_bytes() < self.size + self.size // 2:
                return False
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.size)  # real blocks, not a sparse file
            finally:
                os.close(fd)
        except OSError as exc:
            log.warning("space reserve %s could not be allocated: %s", self.path, exc)
            self.release()
            return False
        return True

    def release(self) -> int:
        """Delete the reserve file; return the bytes freed."""
        try:
            size = self.path.stat().st_size
            self.path.unlink()
        except FileNotFoundError:
            return 0
        return size


def integrity_check(path: Path) -> str:
    """`PRAGMA integrity_check` of a database file ('ok' when sound)."""
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()
