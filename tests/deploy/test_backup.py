"""`edge-gateway backup` while the daemon (`edge-gateway run`, a process) writes scans from a pty scanner; the copy
passes `PRAGMA integrity_check` and restores; `restore` refuses while the daemon runs and refuses bad files."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import yaml

from bench.spine import manifest_dict
from edge.backup import BackupError, backup, check_file, in_use, restore
from edge.brokers import free_port
from edge.schema import MIGRATIONS
from tests.faults.daemon import healthz, until

pytestmark = pytest.mark.timeout(120)
REPO = Path(__file__).resolve().parents[2]
GTIN = "05449000000996"  # cola-330 in firmware_sim/demo_manifest.yaml


def rows(db: Path) -> int:
    """Outbox rows of a database file, read through its own connection."""
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return int(c.execute("SELECT count(*) FROM outbox").fetchone()[0])
    finally:
        c.close()


def sequences(db: Path) -> dict[str, int]:
    """The last sequence number per source of a database file."""
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return {str(r[0]): int(r[1]) for r in c.execute("SELECT source, last FROM sequences")}
    finally:
        c.close()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`edge-gateway ARGS` from the development tree."""
    return subprocess.run([sys.executable, "-m", "edge", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=60, check=False)


class Daemon:
    """`edge-gateway run` on a manifest whose one device is a serial scanner on a pty the test types into."""

    def __init__(self, tmp: Path) -> None:
        self.data = tmp / "data"
        self.api = free_port()
        self.master, slave = os.openpty()
        self.port = os.ttyname(slave)
        self._slave = slave
        raw = manifest_dict(self.data, f"mqtt://127.0.0.1:{free_port()}",  # no hub: the store works offline
                            [{"id": "scanner-1", "type": "scanner_serial", "port": self.port, "role": "receive"}],
                            api_port=self.api)
        self.manifest = tmp / "manifest.yaml"
        self.manifest.write_text(yaml.safe_dump(raw))
        self.log = tmp / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.typed = 0
        self._stop = threading.Event()
        self._typist: threading.Thread | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(self.manifest)],
                                         stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        until(lambda: healthz(self.api)[0] == 200, 60, "/healthz 200", self.log)

    def type_scans(self) -> None:
        """Type a scan every 5 ms on another thread until `stop_typing` (bounded: 20,000 scans)."""
        def run() -> None:
            while not self._stop.is_set() and self.typed < 20_000:
                os.write(self.master, f"{GTIN}\r".encode())
                self.typed += 1
                self._stop.wait(0.005)
        self._stop.clear()
        self._typist = threading.Thread(target=run, daemon=True)
        self._typist.start()

    def stop_typing(self) -> None:
        self._stop.set()
        if self._typist is not None:
            self._typist.join(10)

    def stop(self) -> None:
        self.stop_typing()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def close(self) -> None:
        self.stop()
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path)
    try:
        yield d
    finally:
        d.close()


def test_backup_while_the_daemon_writes_then_restore(daemon: Daemon, tmp_path: Path) -> None:
    db = daemon.data / "edge.db"
    daemon.start()
    daemon.type_scans()
    until(lambda: rows(db) > 50, 60, "scans committed", daemon.log)
    copy = tmp_path / "backups" / "store.db"
    res = cli("backup", "--data-dir", str(daemon.data), "--to", str(copy))  # while scans keep arriving
    assert res.returncode == 0, res.stderr
    assert f"{copy}: ok" in res.stdout and "integrity ok" in res.stdout
    until(lambda: rows(db) > rows(copy) + 20, 60, "the daemon kept writing after the backup", daemon.log)
    assert daemon.proc is not None and daemon.proc.poll() is None
    # the copy, checked independently of edge.backup: sound, one file, this release's schema, the scans
    c = sqlite3.connect(copy)
    try:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert c.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert c.execute("SELECT count(*) FROM outbox WHERE type = 'retail.scan.received.v1'").fetchone()[0] > 0
    finally:
        c.close()
    assert not list(copy.parent.glob(".*partial"))

    # restore refuses while the daemon has the database open, and changes nothing
    refused = cli("restore", str(copy), "--data-dir", str(daemon.data))
    assert refused.returncode == 1
    assert "open by a running gateway: stop it first" in refused.stderr
    assert not list(daemon.data.glob("replaced-*"))

    daemon.stop()
    live = rows(db)
    assert live > rows(copy)
    res = cli("restore", str(copy), "--data-dir", str(daemon.data))
    assert res.returncode == 0, res.stderr
    (aside,) = daemon.data.glob("replaced-*")
    assert f"the previous database is in {aside}" in res.stdout
    assert rows(aside / "edge.db") == live  # the old database is kept whole
    assert rows(db) == rows(copy)
    # no sequence number is handed out twice: the restored counters start where the replaced database ended
    used, restored = sequences(aside / "edge.db"), sequences(db)
    assert restored == used and sequences(copy) != used
    skipped = [(s, sequences(copy).get(s, 0) + 1, n) for s, n in sorted(used.items()) if n > sequences(copy).get(s, 0)]
    assert skipped and all(f"sequences {a}..{b} of {s} were used after the backup" in res.stdout for s, a, b in skipped)
    # the daemon starts on the restored database, announces the skipped ranges and goes on writing
    daemon.start()
    before = rows(db)
    daemon.type_scans()
    until(lambda: rows(db) > before + 10, 60, "scans committed after the restore", daemon.log)
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        gaps = [orjson.loads(r[0])["data"] for r in c.execute(
            "SELECT payload FROM outbox WHERE type = 'retail.gap.v1'")]
        assert c.execute("SELECT count(*) FROM kv WHERE key = 'restored_gaps'").fetchone()[0] == 0
        new = {s: [int(r[0]) for r in c.execute("SELECT sequence FROM outbox WHERE source = ? AND sequence >= ?",
                                                (s, a))] for s, a, _ in skipped}
    finally:
        c.close()
    assert sorted((g["gap_source"], g["first"], g["last"]) for g in gaps
                  if g["reason"] == "restored from backup") == skipped
    for s, _, b in skipped:  # numbers after the restore come after the skipped range
        assert all(n > b for n in new[s]), (s, b, new[s][:5])
    assert any(new[s] and min(new[s]) == b + 1 for s, _, b in skipped)  # the scanner's source went on at once


def _db_with(tmp: Path, name: str, sql: str) -> Path:
    p = tmp / name
    c = sqlite3.connect(p)
    c.executescript(sql)
    c.close()
    return p


@pytest.fixture
def good_copy(tmp_path: Path) -> Path:
    """A backup of a freshly migrated state database (what the gateway creates at start)."""
    from edge.db import migrate

    data = tmp_path / "src"
    data.mkdir()
    c = sqlite3.connect(data / "edge.db", isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    migrate(c)
    c.close()
    return backup(data, tmp_path / "good.db").path


@pytest.mark.parametrize(("case", "reason"), [
    ("missing", "no such file"),
    ("text", "not a readable SQLite database"),
    ("foreign", "not a gateway state database"),
    ("newer", "is newer than this release knows"),
    ("truncated", "not a readable SQLite database"),
])
def test_restore_refuses_bad_files_and_changes_nothing(tmp_path: Path, good_copy: Path, case: str,
                                                       reason: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    live = data / "edge.db"
    live.write_bytes(good_copy.read_bytes())
    before = live.read_bytes()
    bad = tmp_path / f"{case}.db"
    if case == "text":
        bad.write_text("not a database\n" * 100)
    elif case == "foreign":
        _db_with(tmp_path, bad.name, "CREATE TABLE t(x); PRAGMA user_version=3;")
    elif case == "newer":
        bad.write_bytes(good_copy.read_bytes())
        c = sqlite3.connect(bad)
        c.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
        c.close()
    elif case == "truncated":
        bad.write_bytes(good_copy.read_bytes()[: good_copy.stat().st_size // 2])
    with pytest.raises(BackupError, match=reason):
        restore(bad, data)
    assert live.read_bytes() == before
    assert not list(data.glob("replaced-*")) and not list(data.glob(".edge.db*"))


def test_backup_needs_a_database_and_restore_refuses_the_live_file(tmp_path: Path, good_copy: Path) -> None:
    with pytest.raises(BackupError, match="no state database here"):
        backup(tmp_path / "nowhere")
    data = good_copy.parent
    live = data / "edge.db"
    live.write_bytes(good_copy.read_bytes())
    with pytest.raises(BackupError, match="the live database itself"):
        restore(live, data)
    assert check_file(live).schema_version == len(MIGRATIONS)


def test_in_use_follows_open_connections(tmp_path: Path, good_copy: Path) -> None:
    db = tmp_path / "edge.db"
    db.write_bytes(good_copy.read_bytes())
    assert not in_use(db)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); "
         "c.execute('PRAGMA journal_mode=WAL'); c.execute('SELECT count(*) FROM outbox').fetchone(); "
         "print('open', flush=True); sys.stdin.read()", str(db)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        assert in_use(db)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(10)
    assert not in_use(db)
