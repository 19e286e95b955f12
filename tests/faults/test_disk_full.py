"""The disk fills up under the running daemon, then space returns: nothing accepted is lost, nothing stalls.

A REAL small file system: a size-limited tmpfs mounted by the test (`mount -t tmpfs -o size=...`; the
daemon tests need root, as in CI's container; without the privilege they fail, saying so, rather than
fall back to SQLite's `max_page_count`, which would not exercise ENOSPC from the kernel nor a daemon
started on a full disk; only the in-process ordering test falls back, and says so). The daemon runs as a
process (`python -m bench.load run`: `edge-gateway run` with the synthetic `load` family registered) with
its data directory on that file system and a real mosquitto as the hub; the test fills the file system
with a file of its own, then deletes it.

Checked: the failed commit is logged with SQLite's own error (not "cannot rollback"); alerts and ledger
events keep arriving at the hub while the disk is full (the space reserve) and telemetry is shed with
gap events; /healthz says 503 with the disk reason meanwhile and 200 after; when space returns telemetry
flows again by itself; at the end every sequence number the gateway committed arrived at the hub or is
covered by a gap event, and the last numbers at the hub equal the committed ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.load import Counted
from bench.spine import GatewayProc, manifest_dict
from edge.brokers import free_port
from edge.clock import SystemClock
from edge.db import Database, integrity_check
from edge.metrics import Metrics
from edge.outbox import Outbox
from firmware_sim.hub import HubProcess
from tests.faults.daemon import NotifySocket, committed_sequences, healthz, holes_without_gap, hub_broker, short, until

pytestmark = pytest.mark.timeout(240)
ROOT = "retail/v1/demo"
REPO = Path(__file__).resolve().parents[2]


def mount_tmpfs(where: Path, size: str) -> str | None:
    """Mount a tmpfs of `size` at `where`; None when done, else why it could not be."""
    where.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
                         capture_output=True, text=True, check=False)
    return None if res.returncode == 0 else res.stderr.strip() or f"mount exited {res.returncode}"


@contextlib.contextmanager
def small_fs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `where` for the duration."""
    why = mount_tmpfs(where, size)
    if why is not None:
        pytest.fail(f"this test mounts a small tmpfs and needs root (CAP_SYS_ADMIN): {why}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(path: Path) -> int:
    """Take every free byte of `path`'s file system (the fault); return the bytes taken."""
    taken = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        st = os.statvfs(path.parent)
        free = st.f_bavail * st.f_frsize
        with contextlib.suppress(OSError):
            os.posix_fallocate(fd, 0, free)
            taken = free
        chunk = b"\0" * 4096
        while True:  # whatever is left, page by page
            try:
                os.pwrite(fd, chunk, taken)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
            taken += len(chunk)
    finally:
        os.close(fd)
    return taken


def hub_events(hub: HubProcess, source: str) -> list[dict[str, Any]]:
    return [e for e in hub.events() if short(str(e["source"])) == source]


def gaps(hub: HubProcess) -> list[dict[str, Any]]:
    return [e["data"] for e in hub.events() if e.get("type") == "retail.gap.v1"]


def drain_to_hub(data: Path, broker_url: str, api: int, tmp_path: Path, hub: HubProcess, log: Path) -> dict[str, int]:
    """Every accepted event arrives: the outbox drains after the clean stop's last commits, so a new process
    drains it; wait until every committed sequence is at the hub or covered by a gap event. Returns them."""
    committed = committed_sequences(data / "edge.db")
    drain = GatewayProc(manifest_dict(data, broker_url, [], api_port=api), tmp_path)
    try:
        until(lambda: not holes_without_gap(hub.events(), committed), 60,
              "every committed sequence at the hub or covered by a gap event", log)
    finally:
        drain.stop()
    return committed


def test_disk_full_then_space_returns(tmp_path: Path) -> None:
    api = free_port()
    devices = [
        {"id": "tele", "type": "load", "cls": "telemetry", "per_tick": 10, "interval_s": 0.1},
        {"id": "led", "type": "load", "cls": "ledger", "per_tick": 4, "interval_s": 0.1},
        {"id": "alr", "type": "load", "cls": "alert", "per_tick": 1, "interval_s": 0.25},
    ]
    with hub_broker(tmp_path) as (broker, hub), small_fs(tmp_path / "fs", "12m") as fs:
        data = fs / "var"
        manifest = manifest_dict(data, broker.url, devices, api_port=api)
        manifest["storage"]["reserve_mb"] = 1
        gw = GatewayProc(manifest, tmp_path)
        log = tmp_path / "gateway.log"
        filler = fs / "filler"
        try:
            until(lambda: healthz(api)[0] == 200 and len(hub_events(hub, "tele")) > 50
                  and len(hub_events(hub, "alr")) > 2, 60, "daemon up, events at the hub, healthy", log)
            assert (data / "edge.reserve").stat().st_size == 1 << 20

            fill(filler)  # the fault: the disk is full
            until(lambda: "database or disk is full" in log.read_text(errors="replace"), 60,
                  "the failed commit logged with SQLite's error", log)
            until(lambda: any(g["gap_source"] == "tele" and g.get("reason") == "disk full" for g in gaps(hub)),
                  60, "a gap event for shed telemetry at the hub", log)
            status, body = healthz(api)
            assert status == 503, body
            assert body["checks"]["disk"]["ok"] is False and "disk full" in body["checks"]["disk"]["reason"]
            assert gw.proc.poll() is None, "the daemon died"
            # alerts and ledger events still go out while the disk is full (the reserve's space)
            n_alr, n_led = len(hub_events(hub, "alr")), len(hub_events(hub, "led"))
            until(lambda: len(hub_events(hub, "alr")) >= n_alr + 4 and len(hub_events(hub, "led")) >= n_led + 40,
                  60, "alerts and ledger events accepted while the disk is full", log)

            filler.unlink()  # space returns
            until(lambda: healthz(api)[0] == 200, 60, "healthy again once space returned", log)
            assert (data / "edge.reserve").stat().st_size == 1 << 20
            last_gap = max(g["last"] for g in gaps(hub) if g["gap_source"] == "tele")
            until(lambda: any(int(e["sequence"]) > last_gap for e in hub_events(hub, "tele")), 60,
                  "telemetry accepted again after the gap", log)
        finally:
            with contextlib.suppress(FileNotFoundError):
                filler.unlink()
            gw.proc.send_signal(signal.SIGTERM)
            rc = gw.proc.wait(60)
            gw.log.close()
        text = log.read_text(errors="replace")
        assert rc == 0, text[-3000:]
        assert "cannot rollback" not in text
        db = data / "edge.db"
        assert integrity_check(db) == "ok"

        # systemd restarts the daemon while the disk is full again: it starts on the reserve's space
        fill(filler)
        alarm = {"id": "alr2", "type": "load", "cls": "alert", "total": 10, "per_tick": 1, "interval_s": 0.1}
        manifest = manifest_dict(data, broker.url, [alarm], api_port=api)
        manifest["storage"]["reserve_mb"] = 1
        again = GatewayProc(manifest, tmp_path)
        try:
            until(lambda: len(hub_events(hub, "alr2")) >= 10, 60, "alerts accepted by a daemon started on a full disk",
                  log)
            status, body = healthz(api)
            assert status == 503 and body["checks"]["disk"]["ok"] is False, body
            filler.unlink()
            until(lambda: healthz(api)[0] == 200, 60, "healthy once space returned", log)
        finally:
            with contextlib.suppress(FileNotFoundError):
                filler.unlink()
            assert again.stop() == 0
        assert "disk full at start" in log.read_text(errors="replace")

        committed = drain_to_hub(data, broker.url, api, tmp_path, hub, log)
        events = hub.events()
        assert not holes_without_gap(events, committed)
        at_hub: dict[str, int] = {}
        for e in events:
            s = short(str(e["source"]))
            at_hub[s] = max(at_hub.get(s, 0), int(e["sequence"]))
        assert at_hub == committed, (at_hub, committed)  # nothing beyond what was committed, nothing missing


def test_disk_full_without_reserve_fails_commit_check_and_starves_watchdog(tmp_path: Path) -> None:
    """No reserve (`reserve_mb: 0`) and a full disk: even ledger events cannot commit. /healthz says 503 with
    the commit lag and SQLite's error, the watchdog is no longer fed; once space returns both recover and
    every committed event reaches the hub."""
    api = free_port()
    devices = [{"id": "led", "type": "load", "cls": "ledger", "per_tick": 4, "interval_s": 0.1},
               {"id": "tele", "type": "load", "cls": "telemetry", "per_tick": 4, "interval_s": 0.1}]
    sd = NotifySocket(tmp_path / "notify.sock")
    with hub_broker(tmp_path) as (broker, hub), small_fs(tmp_path / "fs", "12m") as fs:
        data = fs / "var"
        manifest = manifest_dict(data, broker.url, devices, api_port=api)
        manifest["storage"]["reserve_mb"] = 0
        manifest["health"] = {"commit_lag_max_s": 2, "stall_s": 2}
        path = tmp_path / "manifest.yaml"
        path.write_text(yaml.safe_dump(manifest))
        log = tmp_path / "gateway.log"
        with log.open("ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "bench.load", "run", "--config", str(path)], stdout=out,
                                    stderr=subprocess.STDOUT, cwd=REPO,
                                    env={**os.environ, "PYTHONPATH": str(REPO), "NOTIFY_SOCKET": sd.env,
                                         "WATCHDOG_USEC": "1500000"})
        filler = fs / "filler"
        try:
            until(lambda: sd.seen("READY") == 1 and healthz(api)[0] == 200 and len(hub_events(hub, "led")) > 10,
                  60, "daemon up, healthy, events at the hub", log)
            fill(filler)

            def commit_failing() -> bool:
                status, body = healthz(api)
                checks = body.get("checks", {})
                return (status == 503 and checks["commit"]["ok"] is False
                        and "database or disk is full" in checks["commit"]["reason"]
                        and "commit: no progress" in checks["progress"]["reason"])

            until(commit_failing, 60, "/healthz 503: commit lag, SQLite's error, no commit progress", log)
            fed = sd.seen("WATCHDOG")
            time.sleep(2.0)  # a window of 4 health samples
            assert commit_failing()
            assert sd.seen("WATCHDOG") == fed, "the watchdog was fed while nothing could be committed"
            assert proc.poll() is None

            filler.unlink()
            until(lambda: healthz(api)[0] == 200, 60, "healthy again once space returned", log)
            until(lambda: sd.seen("WATCHDOG") > fed + 1, 30, "the watchdog fed again", log)
        finally:
            with contextlib.suppress(FileNotFoundError):
                filler.unlink()
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(60)
            sd.close()
        assert rc == 0, log.read_text(errors="replace")[-3000:]
        assert any("STOPPING" in m for m in sd.messages)
        db = data / "edge.db"
        assert integrity_check(db) == "ok"
        drain_to_hub(data, broker.url, api, tmp_path, hub, log)


async def test_outbox_keeps_every_event_in_order_through_failed_commits(tmp_path: Path) -> None:
    """In-process, on a real full tmpfs: events submitted while every commit fails (no reserve), with flush()
    calls racing the committer, are all committed once space returns, in submission order per source, with
    their sequence numbers 1..n and no hole; every submitter's future resolves.

    Where no tmpfs can be mounted (no CAP_SYS_ADMIN) this test alone falls back to SQLite's
    `PRAGMA max_page_count` (the database may not grow: the same SQLITE_FULL, without the kernel's ENOSPC);
    the process tests above need the mount.
    """
    fs = tmp_path / "fs"
    why_not_mounted = mount_tmpfs(fs, "4m")
    with contextlib.ExitStack() as unmount:
        if why_not_mounted is None:
            unmount.callback(subprocess.run, ["umount", "-l", str(fs)], check=False)
        db = Database(fs / "edge.db")
        await db.open()
        metrics = Metrics()
        ob = Outbox(db, store_id="demo", topic_root=ROOT, clock=SystemClock(), metrics=metrics,
                    telemetry_budget_bytes=1 << 30, commit_interval=0.005)
        await ob.open()
        committer = asyncio.create_task(ob.run())
        futures: list[asyncio.Future[None]] = []
        flushes: list[asyncio.Task[None]] = []
        filler = fs / "filler"
        try:
            if why_not_mounted is None:
                await asyncio.to_thread(fill, filler)
            else:  # fallback: cap the database at its current size
                await db.write(lambda c: c.execute("PRAGMA max_page_count=" + str(
                    int(c.execute("PRAGMA page_count").fetchone()[0]))).fetchone())
            n = 0
            while ob.commit_failures < 5 and n < 5000:
                for source in ("led-a", "led-b"):
                    futures.append(ob.submit([Counted(source=source, time=ob.clock.now(), n=n)]))
                n += 1
                if n % 7 == 0:
                    flushes.append(asyncio.create_task(ob.flush()))
                await asyncio.sleep(0.002)
            assert ob.commit_failures >= 5, "the full disk never failed a commit"
            assert "database or disk is full" in str(ob.last_error)
            if why_not_mounted is None:
                filler.unlink()
            else:
                await db.write(lambda c: c.execute("PRAGMA max_page_count=1073741823").fetchone())
            await asyncio.wait_for(asyncio.gather(*futures, *flushes), 60)
            assert ob.last_error is None
            rows = await db.query("SELECT source, sequence FROM outbox ORDER BY seq")
            for source in ("led-a", "led-b"):
                seqs = [int(r["sequence"]) for r in rows if r["source"] == source]
                assert seqs == list(range(1, n + 1)), source
        finally:
            with contextlib.suppress(FileNotFoundError):
                filler.unlink()
            await ob.close()
            await asyncio.wait_for(committer, 30)
            await db.close()
