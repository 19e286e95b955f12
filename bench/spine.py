"""Spine benchmark: our gateway against a bare baseline of the same shape, plus process RSS and backlog drain.

Everything runs on this machine against private mosquitto brokers (edge.brokers) and a `mosquitto_sub`
subscriber (C, keeps up with any rate) that counts CloudEvents as they arrive:

- baseline: orjson parse -> SQLite executemany (WAL, synchronous=FULL, one transaction per group) -> paho
  QoS 1 publish with 20 in flight -> DELETE after PUBACK (batched into the next transaction);
- raw paho: pre-built payloads published at QoS 1 with 20 in flight, nothing else;
- ours: the real `Gateway` (outbox, uplink, pipeline, supervisor) with `bench.load` devices.
Rates are events that reached the subscriber per second, from the first reading to the N-th arrival.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import psutil
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from bench.load import LoadDriver, LoadProcessor
from bench.runtime import runtime_python
from edge.brokers import Mosquitto, free_port, wait_port
from edge.config import Manifest, parse_manifest
from edge.gateway import Gateway
from firmware_sim.world import demo_manifest_text

ROOT = "retail/v1/demo"
REPO = Path(__file__).resolve().parent.parent
MARK = b'"specversion"'


class Subscriber:
    """`mosquitto_sub -F '%U %t %p'` at QoS 1 into a file; counts CloudEvents as they arrive."""

    def __init__(self, port: int, topic: str, out: Path, *, client_id: str | None = None,
                 persistent: bool = False) -> None:
        self.out = out
        self._fh = out.open("wb")
        argv = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-q", "1",
                "-i", client_id or f"bench-{uuid.uuid4().hex[:8]}", "-F", "%U %t %p"]
        if persistent:
            argv.append("-c")
        self.proc = subprocess.Popen(argv, stdout=self._fh, stderr=subprocess.DEVNULL)
        self._read = 0
        self._count = 0
        self._tail = b""
        time.sleep(0.3)

    def count(self, marker: bytes = MARK) -> int:
        """Events received so far (occurrences of `marker`, read incrementally)."""
        with self.out.open("rb") as f:
            f.seek(self._read)
            data = f.read()
        self._read += len(data)
        chunk = self._tail + data
        keep = len(marker) - 1
        self._count += chunk[: len(chunk) - keep].count(marker) if len(chunk) > keep else 0
        self._tail = chunk[len(chunk) - keep:] if len(chunk) > keep else chunk
        return self._count

    def wait_count(self, n: int, timeout: float, marker: bytes = MARK) -> float:
        """Block until `n` events arrived; return the monotonic time it happened (or raise TimeoutError)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count(marker) >= n:
                return time.monotonic()
            time.sleep(0.005)
        raise TimeoutError(f"only {self._count} of {n} events arrived in {timeout}s")

    def lines(self) -> list[tuple[float, str, bytes]]:
        """(receive time, topic, payload) of every complete line."""
        out = []
        for line in self.out.read_bytes().split(b"\n"):
            parts = line.split(b" ", 2)
            if len(parts) == 3:
                with contextlib.suppress(ValueError):
                    out.append((float(parts[0]), parts[1].decode(), parts[2]))
        return out

    def close(self) -> None:
        """Stop the subscriber (by PID)."""
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._fh.close()


# ---- the baseline and raw paho ----
def _sample_payload(i: int) -> bytes:
    return orjson.dumps({
        "specversion": "1.0", "id": str(uuid.uuid4()), "source": "/stores/demo/dev-a", "type": "test.counted.v1",
        "time": "2026-01-05T10:00:00.000Z", "datacontenttype": "application/json", "sequence": i,
        "data": {"n": i},
    })


class _Publisher:
    """paho client with a window of QoS 1 publishes in flight; `done` collects acknowledged tokens."""

    def __init__(self, port: int, inflight: int = 20) -> None:
        self.window = threading.Semaphore(inflight)
        self.lock = threading.Lock()
        self.acked: list[Any] = []
        self.pending: dict[int, Any] = {}
        self.early: set[int] = set()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"base-{uuid.uuid4().hex[:6]}")
        self.client.max_inflight_messages_set(inflight + 10)
        self.client.max_queued_messages_set(0)
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_publish(self, _c: Any, _u: Any, mid: int, *_a: Any) -> None:
        with self.lock:
            token = self.pending.pop(mid, None)
            if token is not None:
                self.acked.append(token)
            else:
                self.early.add(mid)  # acknowledged before publish() returned its mid
        self.window.release()

    def publish(self, topic: str, payload: bytes, token: Any) -> None:
        """Publish at QoS 1 once the window has room."""
        self.window.acquire()
        info = self.client.publish(topic, payload, qos=1)  # never under self.lock: paho calls back under its own
        with self.lock:
            if info.mid in self.early:
                self.early.discard(info.mid)
                self.acked.append(token)
            else:
                self.pending[info.mid] = token

    def take_acked(self) -> list[Any]:
        """Tokens acknowledged since the last call."""
        with self.lock:
            out, self.acked = self.acked, []
        return out

    def close(self) -> None:
        """Disconnect."""
        self.client.loop_stop()
        self.client.disconnect()


def baseline(port: int, sub: Subscriber, n: int, workdir: Path, *, batched: bool, group: int = 1000,
             batch_events: int = 100) -> float:
    """The bare pipeline of the same shape; events/s that reached the subscriber."""
    db = sqlite3.connect(workdir / f"base-{uuid.uuid4().hex[:6]}.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE outbox(seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT, topic TEXT, payload BLOB)")
    raw = [_sample_payload(i) for i in range(1, n + 1)]
    pub = _Publisher(port)
    start_count = sub.count()
    t0 = time.monotonic()
    try:
        for off in range(0, n, group):
            events = [orjson.loads(r) for r in raw[off: off + group]]
            rows = [(e["id"], f"{ROOT}/events/test", orjson.dumps(e)) for e in events]
            acked = pub.take_acked()
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT INTO outbox(id, topic, payload) VALUES (?,?,?)", rows)
            last = int(db.execute("SELECT seq FROM sqlite_sequence WHERE name='outbox'").fetchone()[0])
            if acked:
                db.executemany("DELETE FROM outbox WHERE seq=?", [(s,) for a in acked for s in a])
            db.execute("COMMIT")
            first = last - len(rows) + 1
            step = batch_events if batched else 1
            for k in range(0, len(rows), step):
                part = rows[k: k + step]
                seqs = list(range(first + k, first + k + len(part)))
                payload = b"[" + b",".join(p for _, _, p in part) + b"]" if batched else part[0][2]
                pub.publish(part[0][1], payload, seqs)
        t1 = sub.wait_count(start_count + n, 120)
        acked = pub.take_acked()
        if acked:
            db.execute("BEGIN IMMEDIATE")
            db.executemany("DELETE FROM outbox WHERE seq=?", [(s,) for a in acked for s in a])
            db.execute("COMMIT")
    finally:
        pub.close()
        db.close()
    return n / (t1 - t0)


def raw_paho(port: int, sub: Subscriber, n: int) -> float:
    """Pre-built payloads at QoS 1, 20 in flight, one event per message; events/s at the subscriber."""
    raw = [_sample_payload(i) for i in range(1, n + 1)]
    pub = _Publisher(port)
    start_count = sub.count()
    t0 = time.monotonic()
    try:
        for i, p in enumerate(raw):
            pub.publish(f"{ROOT}/events/test", p, i)
        t1 = sub.wait_count(start_count + n, 120)
    finally:
        pub.close()
    return n / (t1 - t0)


# ---- ours ----
def bench_manifest(data_dir: Path, hub_url: str, *, batch: bool = False, devices: list[dict[str, Any]] | None = None,
                   api: bool = False) -> Manifest:
    """The demo store's manifest with a private hub, its own data dir, and the given device sections."""
    raw = yaml.safe_load(demo_manifest_text())
    raw["hub"] = {"url": hub_url, "topic_prefix": "retail/v1", "reconnect_max": 1.0,
                  "batch": {"enabled": batch}}
    raw["storage"] = {"data_dir": str(data_dir)}
    raw["api"] = {"enabled": api, "listen": f"127.0.0.1:{free_port()}"}
    raw["devices"] = devices or []
    return parse_manifest(yaml.safe_dump(raw), "bench-manifest.yaml")


async def _ours(url: str, sub: Subscriber, n: int, data: Path, *, batch: bool) -> tuple[float, float]:
    m = bench_manifest(data, url, batch=batch)
    dev = f"dev-{data.name}"  # one device id per run, so a shortfall can be traced to its events
    drv = LoadDriver(dev, n, per_tick=500)
    gw = Gateway(m, hub_url=url, data_dir=data, extra_drivers=[(drv, "load")], install_rules=False)
    gw.pipeline.add_processor(LoadProcessor())
    start_count = sub.count()
    async with gw:
        t0 = time.monotonic()
        commits0 = gw.db.commits
        try:
            t1 = await asyncio.to_thread(sub.wait_count, start_count + n, 300)
        except TimeoutError as exc:
            got = _numbers_from(sub, dev)
            missing = sorted(set(range(1, n + 1)) - got)
            pending = await gw.query("SELECT count(*) AS n, min(seq) AS lo, max(seq) AS hi FROM outbox_pending")
            raise TimeoutError(f"{exc}: {dev} missing {len(missing)} events {missing[:10]}, outbox depth "
                               f"{gw.outbox.depth}, pending {pending}, acked through {gw.outbox.acked_through}, "
                               f"uplink cursor {gw.uplink._cursor}") from None
        commits = gw.db.commits - commits0
    return n / (t1 - t0), 1000 * commits / n


def _numbers_from(sub: Subscriber, dev: str) -> set[int]:
    """The `n` of every load event from `dev` the subscriber received."""
    got: set[int] = set()
    for _t, _topic, payload in sub.lines():
        if dev.encode() not in payload:
            continue
        body = orjson.loads(payload)
        for ev in body if isinstance(body, list) else [body]:
            if str(ev.get("source", "")).endswith("/" + dev) and "n" in (ev.get("data") or {}):
                got.add(int(ev["data"]["n"]))
    return got


def bench_throughput(quick: bool) -> dict[str, Any]:
    """Ours vs baseline vs raw paho, batching on and off; SQLite commits per 1,000 events at saturation.

    The five runs are interleaved and repeated (3 rounds quick, 5 full) so that a burst of other load on the
    machine hits both sides of a ratio; each figure is the median over the rounds and each ratio the median
    of the per-round ratios (`spine_ratio_*_rounds` lists them).
    """
    n = 20_000 if quick else 100_000
    rounds = 3 if quick else 5
    runs: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-spine-") as tmp:
        work = Path(tmp)
        broker = Mosquitto(workdir=work / "mq")
        broker.start()
        sub = Subscriber(broker.port, f"{ROOT}/#", work / "sub.log")
        try:
            for r in range(rounds):
                one = {
                    "spine_baseline_batched_eps": baseline(broker.port, sub, n, work, batched=True),
                }
                one["spine_ours_batched_eps"], one["sqlite_commits_per_1000_events"] = asyncio.run(
                    _ours(broker.url, sub, n, work / f"ours-b{r}", batch=True))
                one["spine_raw_paho_eps"] = raw_paho(broker.port, sub, n)
                one["spine_ours_single_eps"], one["sqlite_commits_per_1000_events_single"] = asyncio.run(
                    _ours(broker.url, sub, n, work / f"ours-s{r}", batch=False))
                one["spine_baseline_single_eps"] = baseline(broker.port, sub, n, work, batched=False)
                one["spine_ratio_batched_vs_baseline"] = (
                    one["spine_ours_batched_eps"] / one["spine_baseline_batched_eps"])
                one["spine_ratio_single_vs_raw_paho"] = one["spine_ours_single_eps"] / one["spine_raw_paho_eps"]
                one["spine_ratio_single_vs_baseline_single"] = (
                    one["spine_ours_single_eps"] / one["spine_baseline_single_eps"])
                for k, v in one.items():
                    runs.setdefault(k, []).append(v)
        finally:
            sub.close()
            broker.stop()
    out: dict[str, Any] = {"spine_rounds": rounds}
    for k, vs in runs.items():
        out[k] = statistics.median(vs)
    for k in ("spine_ratio_batched_vs_baseline", "spine_ratio_single_vs_raw_paho"):
        out[f"{k}_rounds"] = " ".join(f"{v:.2f}" for v in runs[k])
    return out


# ---- gateway processes: RSS idle, with a backlog, drain after an outage ----
class GatewayProc:
    """`python -m bench.load run --config FILE` (the real daemon with the load family registered)."""

    def __init__(self, manifest: dict[str, Any], workdir: Path, *, plain: bool = False,
                 python: str | None = None) -> None:
        self.path = workdir / "manifest.yaml"
        self.path.write_text(yaml.safe_dump(manifest))
        py = python or sys.executable  # bench/runtime.py: the figures about the deployed daemon use its venv
        argv = ([py, "-m", "edge", "run", "--config", str(self.path)] if plain
                else [py, "-m", "bench.load", "run", "--config", str(self.path)])
        self.log = (workdir / "gateway.log").open("ab")
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        self.ps = psutil.Process(self.proc.pid)

    def rss_mb(self) -> float:
        """Resident set size now."""
        return float(self.ps.memory_info().rss) / 2**20

    def kill(self) -> None:
        """SIGKILL, reap."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.log.close()

    def stop(self) -> int:
        """SIGTERM and wait for the clean shutdown."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(10)
        self.log.close()
        return rc


def manifest_dict(data_dir: Path, hub_url: str, devices: list[dict[str, Any]], *, api_port: int | None = None,
                  **hub: Any) -> dict[str, Any]:
    """A manifest (as a dict) of the demo store for a gateway subprocess."""
    raw: dict[str, Any] = yaml.safe_load(demo_manifest_text())
    raw["hub"] = {"url": hub_url, "topic_prefix": "retail/v1", "reconnect_min": 0.1, "reconnect_max": 0.5, **hub}
    raw["storage"] = {"data_dir": str(data_dir)}
    raw["api"] = {"enabled": api_port is not None, "listen": f"127.0.0.1:{api_port or free_port()}"}
    raw["devices"] = devices
    return raw


def outbox_depth(db: Path) -> int:
    """Rows in the outbox, read through a separate read-only connection."""
    try:
        c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    except sqlite3.OperationalError:
        return 0
    try:
        return int(c.execute("SELECT count(*) FROM outbox_pending").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        c.close()


def last_sequence(db: Path, source: str) -> int:
    """The last sequence number committed for `source`."""
    try:
        c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            row = c.execute("SELECT last FROM sequences WHERE source=?", (source,)).fetchone()
        finally:
            c.close()
    except sqlite3.OperationalError:
        return 0
    return int(row[0]) if row else 0


def _rss_idle_once(python: str, settle_s: float) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-rss-") as tmp:
        work = Path(tmp)
        broker = Mosquitto(workdir=work / "mq")
        broker.start()
        api = free_port()
        gw = GatewayProc(manifest_dict(work / "var", broker.url, [], api_port=api), work, plain=True, python=python)
        try:
            wait_port(api, 30)
            time.sleep(settle_s)
            return gw.rss_mb()
        finally:
            gw.stop()
            broker.stop()


def bench_rss_idle(quick: bool) -> dict[str, Any]:
    """RSS of `edge-gateway run` (no devices, API on, hub connected) after it settled: from the runtime venv
    (the figure), and for comparison from the development venv this runs in (test tools installed)."""
    python, note = runtime_python()
    settle_s = 2.0 if quick else 5.0
    out: dict[str, Any] = {"rss_idle_mb": _rss_idle_once(python, settle_s), "rss_python": note}
    if python != sys.executable:
        out["rss_idle_dev_venv_mb"] = _rss_idle_once(sys.executable, settle_s)
    return out


def bench_backlog(quick: bool) -> dict[str, float]:
    """RSS with a large outbox backlog (hub down), then drain rate after the hub returns while ingest goes on."""
    backlog = 200_000 if quick else 1_000_000
    ingest_per_tick, ingest_interval = 50, 0.05  # ~1,000 events/s of live ingest throughout
    out: dict[str, float] = {"backlog_events": float(backlog)}
    with tempfile.TemporaryDirectory(prefix="bench-backlog-") as tmp:
        work = Path(tmp)
        broker = Mosquitto(workdir=work / "mq")  # not started: the hub is down
        devices = [
            {"id": "backlog", "type": "load", "total": backlog, "per_tick": 1000},
            {"id": "ingest", "type": "load", "per_tick": ingest_per_tick, "interval_s": ingest_interval},
        ]
        db = work / "var" / "edge.db"
        gw = GatewayProc(manifest_dict(work / "var", broker.url, devices, batch={"enabled": True}), work,
                         python=runtime_python()[0])
        try:
            t0 = time.monotonic()
            deadline = t0 + (300 if quick else 900)
            while last_sequence(db, "backlog") < backlog + 1 and time.monotonic() < deadline:
                time.sleep(0.5)
            out["backlog_fill_s"] = time.monotonic() - t0
            time.sleep(2)
            out["rss_backlog_mb"] = gw.rss_mb()
            out["backlog_depth_at_rss"] = float(outbox_depth(db))
            # the hub comes back; ingest continues
            broker.start()
            sub = Subscriber(broker.port, f"{ROOT}/events/#", work / "sub.log")
            try:
                s0, ts = last_sequence(db, "ingest"), time.monotonic()
                depth0 = outbox_depth(db)
                t_drain = time.monotonic()
                while time.monotonic() - t_drain < (300 if quick else 900):
                    d = outbox_depth(db)
                    if d < 2000:
                        break
                    time.sleep(0.5)
                drain_s = time.monotonic() - t_drain
                s1, te = last_sequence(db, "ingest"), time.monotonic()
                ingest_eps = (s1 - s0) / (te - ts)
                delivered = sub.count()
                out["drain_s"] = drain_s
                out["drain_events_per_s"] = delivered / drain_s if drain_s else float("nan")
                out["drain_depth_start"] = float(depth0)
                out["drain_ingest_events_per_s"] = ingest_eps
                out["drain_ratio_vs_ingest"] = out["drain_events_per_s"] / ingest_eps if ingest_eps else float("nan")
            finally:
                sub.close()
        finally:
            gw.stop()
            broker.stop()
    return out


if __name__ == "__main__":
    print(bench_throughput(quick=True))
