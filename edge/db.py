"""SQLite state database in WAL mode, used from one dedicated thread so the event loop never blocks.

All writes go through `Database.write(fn)`, which runs `fn(conn)` inside one transaction on the writer
thread; reads use a second connection on its own thread (WAL lets readers and the writer work at once).
`synchronous=FULL` makes a committed transaction survive power loss, not only kill -9; group commits
amortise the fsync.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from edge.schema import MIGRATIONS

T = TypeVar("T")


def _connect(path: Path, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


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
    """One writer thread, one reader thread, one file."""

    def __init__(self, path: Path, *, synchronous: str = "FULL") -> None:
        self.path = path
        self._synchronous = synchronous
        self._wpool = ThreadPoolExecutor(1, thread_name_prefix="db-writer")
        self._rpool = ThreadPoolExecutor(1, thread_name_prefix="db-reader")
        self._w: sqlite3.Connection | None = None
        self._r: sqlite3.Connection | None = None
        self.commits = 0

    async def open(self) -> None:
        """Create the file if needed, migrate, open both connections."""
        self.path.parent.mkdir(parents=True, exist_ok=True)

        def _open_w() -> None:
            self._w = _connect(self.path, self._synchronous)
            migrate(self._w)

        def _open_r() -> None:
            self._r = _connect(self.path, self._synchronous)
            self._r.execute("PRAGMA query_only=ON")

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._wpool, _open_w)
        await loop.run_in_executor(self._rpool, _open_r)

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in one IMMEDIATE transaction on the writer thread; commit, or roll back on error."""

        def run() -> T:
            conn = self._w
            assert conn is not None, "database is not open"
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
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

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._rpool, close_r)
        await loop.run_in_executor(self._wpool, close_w)
        self._wpool.shutdown(wait=True)
        self._rpool.shutdown(wait=True)


def integrity_check(path: Path) -> str:
    """`PRAGMA integrity_check` of a database file ('ok' when sound)."""
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()
