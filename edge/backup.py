"""`edge-gateway backup` and `edge-gateway restore`: the state database (`<data_dir>/edge.db`) to a file and back.

Backup uses SQLite's online backup API (https://sqlite.org/backup.html, Python's `Connection.backup`) in one
step: it reads one consistent snapshot inside a read transaction, which in WAL mode does not block the
daemon's writer, so it is safe while `edge-gateway run` writes. The copy is written next to its target,
turned into a self-contained rollback-journal file, checked (`PRAGMA integrity_check`, schema version),
fsynced and only then renamed into place: a failed or interrupted backup never leaves a half file under the
target name.

Restore refuses while any process has the database open (the daemon), judged the way SQLite itself judges it:
every connection to a WAL database holds a shared lock on the "DMS" byte (offset 128) of the `-shm` file
(https://sqlite.org/walformat.html, section 2.3.1); a write lock on that byte is refused while one is open.
It checks the file (integrity, a schema version this release knows, the gateway's tables), moves the current
database with its `-wal`/`-shm` aside into `<data_dir>/replaced-<UTC time>/`, and puts the copy in place owned
like the data directory (the service's user), so the next start migrates it if it is older.

A restored database must not hand out a CloudEvents `sequence` number again (CONTRACT: never reused, so the
hub can detect gaps): the backup's per-source counters are older than the numbers the replaced database has
used since. Restore raises them to the replaced database's (when it can still be read) and records each
skipped range under the `kv` key `restored_gaps`; the outbox announces them at the next start as `gap` events
(reason "restored from backup": events of those numbers reached the hub before the restore or were lost with
the replaced database's outbox) and deletes the key in the same transaction.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.schema import MIGRATIONS

DB_NAME = "edge.db"
DMS_OFFSET = 128  # the wal-index dead-man-switch lock byte of the -shm file (walformat.html 2.3.1)
REQUIRED_TABLES = frozenset({"outbox", "sequences", "retained", "stock", "kv"})  # in every schema version
RESTORED_GAPS = "restored_gaps"  # kv key: [[source, first, last], ...] skipped by a restore (edge/outbox.py)


class BackupError(Exception):
    """A backup or restore that cannot be done; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class DbFacts:
    """What a checked database file holds."""

    path: Path
    bytes: int
    schema_version: int
    outbox_rows: int
    carried: tuple[tuple[str, int, int], ...] = ()  # restore: (source, first, last) sequence ranges skipped
    carry_problem: str | None = None  # restore: why the replaced database's sequences could not be read


def _stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_file(path: Path) -> DbFacts:
    """Integrity, schema version and tables of a database file; `BackupError` naming the problem otherwise."""
    if not path.is_file():
        raise BackupError(f"{path}: no such file")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise BackupError(f"{path}: cannot open as SQLite: {exc}") from exc
    try:
        integrity = str(conn.execute("PRAGMA integrity_check").fetchone()[0])
        if integrity != "ok":
            raise BackupError(f"{path}: integrity check failed: {integrity}")
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if version < 1 or not tables >= REQUIRED_TABLES:
            raise BackupError(f"{path}: not a gateway state database (schema version {version}, tables missing: "
                              f"{', '.join(sorted(REQUIRED_TABLES - tables)) or 'none'})")
        if version > len(MIGRATIONS):
            raise BackupError(f"{path}: schema version {version} is newer than this release knows "
                              f"({len(MIGRATIONS)}): restore it with the release that wrote it")
        rows = int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0])
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{path}: not a readable SQLite database: {exc}") from exc
    finally:
        conn.close()
    return DbFacts(path, path.stat().st_size, version, rows)


def backup(data_dir: Path, to: Path | None = None) -> DbFacts:
    """Copy `<data_dir>/edge.db` to `to` (default `<data_dir>/backups/edge-<UTC time>.db`), checked."""
    src = data_dir / DB_NAME
    if not src.is_file():
        raise BackupError(f"{src}: no state database here (is --data-dir the manifest's storage.data_dir?)")
    dest = to if to is not None else data_dir / "backups" / f"edge-{_stamp()}.db"
    if dest.exists() and dest.is_dir():
        dest = dest / f"edge-{_stamp()}.db"
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.partial")
    tmp.unlink(missing_ok=True)
    try:
        # read-write, but only read: as the last connection to close it removes the -wal/-shm it may have
        # created (a read-only one leaves them behind, owned by whoever ran the backup)
        source = sqlite3.connect(src, timeout=30)
        try:
            source.execute("PRAGMA query_only=ON")
            target = sqlite3.connect(tmp)
            try:
                source.backup(target)  # one step: one consistent snapshot, the writer is not blocked (WAL)
                target.execute("PRAGMA journal_mode=DELETE")  # a single self-contained file
            finally:
                target.close()
        finally:
            source.close()
            _own_like(src)
        facts = check_file(tmp)
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        tmp.replace(dest)
        _fsync_dir(dest.parent)
    except sqlite3.Error as exc:
        tmp.unlink(missing_ok=True)
        raise BackupError(f"backup of {src} failed: {exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return DbFacts(dest, facts.bytes, facts.schema_version, facts.outbox_rows)


def _own_like(db: Path) -> None:
    """Give `db`'s -wal/-shm (if any are left) the database file's owner: the daemon must open them."""
    st = db.stat()
    for side in (db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        with contextlib.suppress(FileNotFoundError, PermissionError):
            if side.stat().st_uid != st.st_uid or side.stat().st_gid != st.st_gid:
                os.chown(side, st.st_uid, st.st_gid)


def in_use(db: Path) -> bool:
    """True while some process has the WAL database `db` open (it holds the -shm DMS lock)."""
    shm = db.with_name(db.name + "-shm")
    try:
        fd = os.open(shm, os.O_RDWR)
    except FileNotFoundError:
        return False  # the last connection to close removes it; none is open
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, DMS_OFFSET)
        except OSError:
            return True
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, DMS_OFFSET)
        return False
    finally:
        os.close(fd)


def restore(file: Path, data_dir: Path) -> tuple[DbFacts, Path | None]:
    """Put `file` in place as `<data_dir>/edge.db`; (facts of the restored file, where the old one went)."""
    db = data_dir / DB_NAME
    if not data_dir.is_dir():
        raise BackupError(f"{data_dir}: no such data directory (the manifest's storage.data_dir)")
    if db.exists() and file.resolve() == db.resolve():
        raise BackupError(f"{file} is the live database itself: restore a backup copy")
    if in_use(db):
        raise BackupError(f"{db} is open by a running gateway: stop it first (systemctl stop edge-gateway)")
    facts = check_file(file)
    aside: Path | None = None
    st = data_dir.stat()
    tmp = data_dir / f".{DB_NAME}.restoring"
    shutil.copyfile(file, tmp)
    with contextlib.suppress(PermissionError):  # not root: the file is already ours
        os.chown(tmp, st.st_uid, st.st_gid)
    os.chmod(tmp, 0o640)
    carried, problem = _carry_sequences(tmp, db) if db.exists() else ((), None)
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    parts = [p for p in (db, db.with_name(DB_NAME + "-wal"), db.with_name(DB_NAME + "-shm")) if p.exists()]
    if parts:
        aside = data_dir / f"replaced-{_stamp()}"
        n = 1
        while aside.exists():
            n += 1
            aside = data_dir / f"replaced-{_stamp()}-{n}"
        aside.mkdir()
        for p in parts:
            p.rename(aside / p.name)
    tmp.replace(db)
    _fsync_dir(data_dir)
    return DbFacts(db, facts.bytes, facts.schema_version, facts.outbox_rows, carried, problem), aside


def _carry_sequences(restored: Path, replaced: Path) -> tuple[tuple[tuple[str, int, int], ...], str | None]:
    """Raise `restored`'s per-source sequences to those `replaced` has used; the skipped ranges, recorded in
    `restored` for the outbox to announce (or why `replaced` could not be read: then nothing is carried)."""
    try:
        old = sqlite3.connect(f"file:{replaced}?mode=ro", uri=True)
        try:
            used = {str(r[0]): int(r[1]) for r in old.execute("SELECT source, last FROM sequences")}
        finally:
            old.close()
    except sqlite3.Error as exc:
        return (), f"{replaced}: {exc}"
    conn = sqlite3.connect(restored, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        have = {str(r[0]): int(r[1]) for r in conn.execute("SELECT source, last FROM sequences")}
        row = conn.execute("SELECT value FROM kv WHERE key = ?", (RESTORED_GAPS,)).fetchone()
        gaps: list[list[Any]] = json.loads(row[0]) if row else []
        carried = tuple((src, have.get(src, 0) + 1, last) for src, last in sorted(used.items())
                        if last > have.get(src, 0))
        for src, _, last in carried:
            conn.execute("INSERT INTO sequences(source, last) VALUES (?, ?) ON CONFLICT(source) DO UPDATE "
                         "SET last = excluded.last", (src, last))
        if carried:
            gaps += [list(c) for c in carried]
            conn.execute("INSERT INTO kv(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = "
                         "excluded.value", (RESTORED_GAPS, json.dumps(gaps)))
        conn.execute("COMMIT")
    finally:
        conn.close()
    return carried, None
