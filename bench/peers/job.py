"""The `peers` benchmark: our gateway, Node-RED and ThingsBoard IoT Gateway on the same shelf job, one run.

Job: shelf sensors publish JSON weight readings to broker A (mosquitto); the system computes
count = round(grams / unit weight), forwards a stock event to broker B (mosquitto, persistence on) at QoS 1,
and an alert when the count is below a threshold. Each system gets fresh brokers A and B; a persistent
`mosquitto_sub -c` session on B (saved with a checkpoint before B is killed) records what arrives.

Per system: stepped rates (zero loss = every expected output arrived within the drain time after the last
reading), p50/p99 latency at 1,000 readings/s, RSS of its process(es) at 1,000/s, and the loss while B is
SIGKILLed for 10 s under 1,000/s and restarted on the same port. What "expected output" means differs:
Node-RED and ThingsBoard forward one message per reading; ours forwards a StockChanged (events/stock) and a
lane count telemetry event (events/shelf) per settled count change, and must have processed every reading.
docs/benchmarks.md ("peers") has the definitions and the figures.
"""

from __future__ import annotations

import bisect
import contextlib
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import orjson
import psutil

from bench.peers.loadgen import RID_BASE, Lane, bench_lanes
from bench.spine import Subscriber
from edge.brokers import Mosquitto

REPO = Path(__file__).resolve().parents[2]
THRESHOLD = 5  # alert when count < 5
N_LANES = 200
HOLD_S = 2.0  # each lane holds a count this long, then changes
SETTLE_S = 0.8  # our engine's settle window (the shelf families' default)
STEPS = (1000, 2000, 5000, 10000, 20000, 40000, 60000, 80000)  # readings/s; stepping stops at the first loss
MAX_WORKERS = 12  # load generator processes (one per 5,000 readings/s); the offered rate is reported per step
PROBE_RID = 10**15
START_SKIP_S = SETTLE_S + 0.5  # latency is measured in steady state (see `measure`)
_M = re.compile(rb'"m":\s*"(\d+):([\d.]+)"')


class Peer(Protocol):
    """A system under test."""

    name: str
    one_to_one: bool

    def start(self, a_port: int, b_port: int, lanes: list[Lane], threshold: int, workdir: Path) -> None:
        """Start it against brokers A and B."""

    def pids(self) -> list[int]:
        """Its top process ids."""

    def alive(self) -> bool:
        """Still running?"""

    def log_tail(self) -> str:
        """The end of its log."""

    def stop(self) -> None:
        """Stop it by PID."""


# ---- what arrives at B ------------------------------------------------------------------------------------

@dataclass
class Arrivals:
    """Parsed lines of B's subscriber, read incrementally."""

    path: Path
    offset: int = 0
    rids: dict[int, tuple[float, float]] = field(default_factory=dict)  # rid -> (first receive, reading ts)
    duplicates: int = 0
    alerts: int = 0
    # ours: (lane key, count, event time, receive time) of StockChanged / lane count telemetry
    stock: dict[str, list[tuple[int, float, float]]] = field(default_factory=dict)
    telemetry: dict[str, list[tuple[int, float, float]]] = field(default_factory=dict)

    def poll(self) -> None:
        """Parse every complete line added since the last call."""
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n")
        if end < 0:
            return
        self.offset += end + 1
        for line in data[: end + 1].split(b"\n"):
            parts = line.split(b" ", 2)
            if len(parts) != 3:
                continue
            try:
                recv = float(parts[0])
            except ValueError:
                continue
            self._line(recv, parts[1], parts[2])

    def _line(self, recv: float, topic: bytes, payload: bytes) -> None:
        if topic.startswith(b"stock/") or topic == b"v1/gateway/telemetry":  # Node-RED / ThingsBoard
            for m in _M.finditer(payload):
                rid = int(m.group(1))
                if rid in self.rids:
                    self.duplicates += 1
                else:
                    self.rids[rid] = (recv, float(m.group(2)))
            self.alerts += payload.count(b'"alert":true') + payload.count(b'"alert": true')
        elif topic.startswith(b"alerts/"):
            self.alerts += 1
        elif topic.endswith((b"/events/stock", b"/events/shelf", b"/alerts")):  # ours: CloudEvents
            try:
                ev = orjson.loads(payload)
            except orjson.JSONDecodeError:
                return
            evs = ev if isinstance(ev, list) else [ev]
            for e in evs:
                self._event(recv, e)

    def _event(self, recv: float, e: dict[str, Any]) -> None:
        typ, d = e.get("type", ""), e.get("data") or {}
        if typ == "retail.stock.changed.v1" and str(d.get("sku", "")).startswith("sku-"):
            _, shelf, lane = str(d["sku"]).split("-", 2)
            key = f"{shelf}:{lane}"
            self.stock.setdefault(key, []).append((int(d["count"]), _epoch(e["time"]), recv))
        elif typ == "retail.shelf.count.v1":
            key = f"{d.get('shelf')}:{d.get('lane')}"
            self.telemetry.setdefault(key, []).append((int(d["count"]), _epoch(e["time"]), recv))
        elif "alert" in typ or e.get("type", "").startswith("retail.alert"):
            self.alerts += 1


def _epoch(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


# ---- load ----------------------------------------------------------------------------------------------

def offer(a_port: int, rate: float, duration: float, origin: float, work: Path, tag: str, *, rid_base: int,
          log: bool = False, lanes: int = N_LANES) -> list[subprocess.Popen[bytes]]:
    """Start the load workers (one per 5,000 readings/s, at most MAX_WORKERS); returns their processes."""
    k = max(1, min(MAX_WORKERS, math.ceil(rate / 5000)))
    procs = []
    for w in range(k):
        mine = list(range(w, lanes, k))
        argv = [sys.executable, "-m", "bench.peers.loadgen", "--port", str(a_port), "--topic", f"shelves/w{w}/weight",
                "--lanes", ",".join(map(str, mine)), "--n-lanes", str(lanes), "--rate", str(rate / k),
                "--duration", str(duration), "--hold", str(HOLD_S), "--origin", str(origin), "--worker", str(w),
                "--summary", str(work / f"{tag}-w{w}.json"), "--rid-base", str(rid_base)]
        if log:
            argv += ["--log", str(work / f"{tag}-w{w}.log")]
        procs.append(subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return procs


def finish(procs: list[subprocess.Popen[bytes]], work: Path, tag: str, timeout: float) -> list[dict[str, Any]]:
    """Wait for the workers (bounded) and read their summaries."""
    deadline = time.monotonic() + timeout
    out = []
    for w, p in enumerate(procs):
        try:
            p.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
        f = work / f"{tag}-w{w}.json"
        if f.exists():
            out.append(orjson.loads(f.read_bytes()))
    return out


@dataclass
class Offered:
    """What a phase offered: reading ids, per-lane count segments, the achieved rate."""

    rids: set[int]
    segments: dict[int, list[list[float]]]
    sent: int
    rate: float  # achieved: readings / (last - first)
    first: float
    last: float


def offered(summaries: list[dict[str, Any]]) -> Offered:
    """Merge the workers' summaries."""
    rids: set[int] = set()
    segs: dict[int, list[list[float]]] = {}
    sent = 0
    first, last = float("inf"), 0.0
    for s in summaries:
        r0, n = int(s["rid0"]), int(s["sent"])
        rids.update(range(r0, r0 + n))
        sent += n
        first, last = min(first, float(s["first"])), max(last, float(s["last"]))
        for k, v in s["segments"].items():
            segs[int(k)] = v
    span = last - first
    return Offered(rids, segs, sent, sent / span if span > 0 else 0.0, first, last)


def ours_lost(off: Offered, got: dict[str, list[tuple[int, float, float]]], lanes: list[Lane],
              prev: dict[int, int | None], origin: float) -> tuple[int, int]:
    """(expected, lost) count changes: every segment long enough to settle must show up with its count.

    A segment whose readings span at least settle + 0.2 s must produce an event with its count (timed at or
    after the segment's start), unless the lane's previous segment held the same count already (then
    nothing changed). `prev` carries each lane's last offered count across phases. The segment's start is
    the loadgen's schedule (`segment_of`), not this phase's first reading: a segment that began at the end
    of the previous phase is stamped (StockChanged: when the weight reached the count) before this phase.
    """
    expected = lost = 0
    n_lanes = len(lanes)
    for li, segs in off.segments.items():
        events = sorted(got.get(lanes[li].key, []), key=lambda x: x[1])
        times = [e[1] for e in events]
        last = prev.get(li)
        for seg, count, first, lst, _n in segs:
            c = int(count)
            if lst - first >= SETTLE_S + 0.2 and c != last:
                expected += 1
                start = origin + (int(seg) - li / n_lanes) * HOLD_S
                i = bisect.bisect_left(times, min(first, start) - 0.01)
                if not any(e[0] == c for e in events[i:]):
                    lost += 1
            if lst - first >= SETTLE_S - 0.2:  # could have settled: the lane may hold this count now
                last = c
        prev[li] = last
    return expected, lost


# ---- one system ------------------------------------------------------------------------------------------

class System:
    """One system under test with its own brokers A and B and B's persistent subscriber."""

    def __init__(self, peer: Peer, work: Path, quick: bool) -> None:
        self.peer = peer
        self.work = work
        self.quick = quick
        self.lanes = bench_lanes(N_LANES)
        self.a = Mosquitto(workdir=work / "a")
        self.b = Mosquitto(workdir=work / "b", persistent=True)
        self.sub: Subscriber | None = None
        self.arr = Arrivals(work / "b-sub.log")
        self.origin = time.time()
        self.prev: dict[int, int | None] = {}
        self.readings0 = 0
        self.phases = 0

    def start(self) -> None:
        """Brokers, subscriber, the system; wait until a probe reading goes through (bounded)."""
        self.a.start()
        self.b.start()
        self.sub = Subscriber(self.b.port, "#", self.arr.path, client_id=f"peers-{self.peer.name}", persistent=True)
        self.peer.start(self.a.port, self.b.port, self.lanes, THRESHOLD, self.work / self.peer.name)
        deadline = time.monotonic() + 90
        k = 0
        while time.monotonic() < deadline:
            if not self.peer.alive():
                raise RuntimeError(f"{self.peer.name} exited at start: {self.peer.log_tail()}")
            if self._probe_through(k):
                return
            k += 1
            time.sleep(0.5)
        raise RuntimeError(f"{self.peer.name}: nothing reached broker B within 90 s: {self.peer.log_tail()}")

    def _probe_through(self, k: int) -> bool:
        ln = self.lanes[0]
        body = (f'{{"shelf":"{ln.shelf}","lane":"{ln.lane}","grams":{ln.unit_g * 3:.1f},'
                f'"m":"{PROBE_RID + k}:{time.time():.6f}"}}')
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.a.port), "-t", "shelves/probe/weight",
                        "-m", body], timeout=10, check=False)
        if self.peer.one_to_one:
            time.sleep(0.2)
            self.arr.poll()
            return any(r >= PROBE_RID for r in self.arr.rids)
        from bench.peers.ours import Ours

        assert isinstance(self.peer, Ours)
        n = self.peer.readings()
        if n > 0 and self.peer.uplink_connected():
            self.readings0 = n
            return True
        return False

    def _readings(self) -> int:
        from bench.peers.ours import Ours

        return self.peer.readings() if isinstance(self.peer, Ours) else 0

    def phase(self, rate: float, duration: float, tag: str, drain: float, *, log: bool = False,
              during: Callable[[], None] | None = None) -> dict[str, Any]:
        """Offer `rate` readings/s for `duration` s, wait up to `drain` s after the last; what was lost."""
        r0 = self._readings()
        self.phases += 1
        procs = offer(self.a.port, rate, duration, self.origin, self.work, tag, log=log,
                      rid_base=self.phases * 16 * RID_BASE)
        if during is not None:
            during()
        summaries = finish(procs, self.work, tag, duration * 3 + 30)
        off = offered(summaries)
        deadline = time.monotonic() + drain
        while True:
            self.arr.poll()
            res = self._loss(off, r0, commit=False)
            if res["lost"] == 0 or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        res = self._loss(off, r0, commit=True)
        res.update(offered_rate=off.rate, sent=off.sent, target=rate, first=off.first, last=off.last)
        return res

    def _loss(self, off: Offered, r0: int, *, commit: bool) -> dict[str, Any]:
        if self.peer.one_to_one:
            lost = len(off.rids - self.arr.rids.keys())
            return {"expected": len(off.rids), "lost": lost}
        prev = dict(self.prev)
        e1, l1 = ours_lost(off, self.arr.stock, self.lanes, prev, self.origin)
        e2, l2 = ours_lost(off, self.arr.telemetry, self.lanes, dict(self.prev), self.origin)
        if commit:
            self.prev = prev
        behind = max(0, off.sent - (self._readings() - r0))
        return {"expected": e1 + e2, "lost": l1 + l2 + (1 if behind else 0), "lost_stock": l1,
                "lost_count_telemetry": l2, "readings_not_processed": behind}

    def latencies(self, res: dict[str, Any], tag: str, *, skip_s: float = 0.0) -> list[float]:
        """Milliseconds from reading to B for the phase `tag` (ours: from the reading that settled the count),
        for readings at least `skip_s` after the phase's first one."""
        first, last = res["first"] + skip_s, res["last"]
        if self.peer.one_to_one:
            return [(recv - ts) * 1000 for recv, ts in self.arr.rids.values() if first <= ts <= last]
        logs: dict[int, list[float]] = {}
        for f in self.work.glob(f"{tag}-w*.log"):
            for line in f.read_text().splitlines():
                li, ts = line.split()
                logs.setdefault(int(li), []).append(float(ts))
        key_to_li = {ln.key: i for i, ln in enumerate(self.lanes)}
        out = []
        # the lane count telemetry carries the time the gateway received the reading that decided the count
        # (the StockChanged is stamped earlier: when the weight reached the count), so it is the one timed here
        for key, evs in self.arr.telemetry.items():
            tss = sorted(logs.get(key_to_li.get(key, -1), []))
            for _c, t_ev, recv in evs:
                if not (first <= t_ev <= last + 1) or not tss:
                    continue
                i = bisect.bisect_right(tss, t_ev + 0.002) - 1
                if i >= 0:
                    out.append((recv - tss[i]) * 1000)
        return out

    def rss_mb(self) -> float:
        """RSS of the system's processes and their children."""
        total = 0
        for pid in self.peer.pids():
            with contextlib.suppress(psutil.NoSuchProcess):
                p = psutil.Process(pid)
                total += p.memory_info().rss
                for c in p.children(recursive=True):
                    with contextlib.suppress(psutil.NoSuchProcess):
                        total += c.memory_info().rss
        return total / 2**20

    def stop(self) -> None:
        """Everything by PID."""
        with contextlib.suppress(Exception):
            self.peer.stop()
        if self.sub is not None:
            self.sub.close()
        self.a.stop()
        self.b.stop()


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def measure(peer: Peer, quick: bool, work: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """All figures of one system (prefixed `peers_<name>_`)."""
    name = peer.name
    sysm = System(peer, work, quick)
    out: dict[str, Any] = {}
    step_s, drain = (2.0, 2.0) if quick else (5.0, 3.0)
    # Each system starts on a quiet disk: the data earlier sections (or the previous peer) left dirty in the
    # page cache is written out first, so its writeback does not land in this system's fsyncs (2.4 GB of
    # dirty pages being written back moved ours' p99 at 1,000/s from 5.5-6.9 ms to 10.0 ms).
    os.sync()
    try:
        t0 = time.monotonic()
        sysm.start()
        out[f"peers_{name}_start_s"] = time.monotonic() - t0
        sysm.phase(1000, 2.0, "warmup", drain)  # JIT, imports, first devices: not measured
        # latency and RSS at 1,000/s
        res = sysm.phase(1000, 6.0 if quick else 12.0, "lat", drain, log=True)
        out[f"peers_{name}_rss_mb"] = sysm.rss_mb()
        if (note := getattr(peer, "python_note", None)) is not None:
            out[f"peers_{name}_python"] = note  # ours: which venv the daemon ran from (bench/runtime.py)
        # Steady state: the phase's first START_SKIP_S are left out. The lanes follow the wall-clock schedule
        # through the pause before the phase, so when readings resume every lane that changed meanwhile
        # settles at once (for ours: 200 count changes, ~600 events in one burst; a store never moves
        # 200 lanes in the same second). The figure with them is reported beside it.
        lat = sysm.latencies(res, "lat", skip_s=START_SKIP_S)
        out[f"peers_{name}_p50_ms_at_1000"] = _pct(lat, 0.5)
        out[f"peers_{name}_p99_ms_at_1000"] = _pct(lat, 0.99)
        out[f"peers_{name}_latency_samples"] = len(lat)
        out[f"peers_{name}_p99_ms_at_1000_with_start"] = _pct(sysm.latencies(res, "lat"), 0.99)
        log(f"{name}: p50 {out[f'peers_{name}_p50_ms_at_1000']:.1f} ms, p99 {out[f'peers_{name}_p99_ms_at_1000']:.1f}"
            f" ms ({len(lat)} samples), RSS {out[f'peers_{name}_rss_mb']:.0f} MB, lost {res['lost']}")
        # stepped rates until the first loss
        steps = list(STEPS)
        best, notes, gen_max = 0.0, [], 0.0
        i = 0
        while i < len(steps):
            rate = steps[i]
            res = sysm.phase(rate, step_s, f"step{rate}", drain)
            gen_max = max(gen_max, res["offered_rate"])
            ok = res["lost"] == 0
            notes.append(f"{rate}:{'ok' if ok else 'lost ' + str(res['lost']) + '/' + str(res['expected'])}"
                         f"@{res['offered_rate']:.0f}")
            log(f"{name}: step {rate}/s offered {res['offered_rate']:.0f}/s: {res}"[:400])
            limited = res["offered_rate"] < 0.9 * rate
            if limited:
                notes.append("load generator limit")
            if ok and limited:  # held what was offered, which is less than the step: claim only that, stop
                best = max(best, float(int(res["offered_rate"])))
                break
            if not ok:
                if rate == steps[0] and rate > 250:  # below the first step: find the level it holds
                    steps = [rate // 2] + [s for s in steps if s < rate]
                    i = 0
                    time.sleep(drain)
                    continue
                break
            best = max(best, float(rate))
            i += 1
            time.sleep(0.5)
        out[f"peers_{name}_max_zero_loss_per_s"] = best
        out[f"peers_{name}_steps"] = ", ".join(notes)
        out[f"peers_{name}_loadgen_max_offered_per_s"] = gen_max
        time.sleep(drain)
        # outage: B SIGKILLed for 10 s under 1,000/s, restarted on the same port
        def outage() -> None:
            time.sleep(2.0)
            sysm.b.checkpoint()
            sysm.b.kill()
            time.sleep(10.0)
            sysm.b.start()

        res = sysm.phase(1000, 15.0, "outage", 30.0 if quick else 60.0, during=outage)
        out[f"peers_{name}_outage_lost"] = float(res["lost"])
        out[f"peers_{name}_outage_expected"] = float(res["expected"])
        if not peer.one_to_one:
            out[f"peers_{name}_outage_readings_not_processed"] = float(res["readings_not_processed"])
        out[f"peers_{name}_duplicates"] = float(sysm.arr.duplicates)
        out[f"peers_{name}_alerts_forwarded"] = float(sysm.arr.alerts)
        log(f"{name}: outage {res}"[:400])
    finally:
        sysm.stop()
    return out


def bench_peers(quick: bool) -> dict[str, Any]:
    """Ours, Node-RED and ThingsBoard IoT Gateway on the shelf job; see docs/benchmarks.md ("peers")."""
    return run_peers(quick, ("ours", "nodered", "thingsboard"))


def run_peers(quick: bool, names: tuple[str, ...]) -> dict[str, Any]:
    """The systems in `names` only (for development: `python -m bench.peers.job [--full] ours nodered`)."""
    from bench.peers import node_red, thingsboard
    from bench.peers.ours import Ours

    def log(msg: str) -> None:
        print(f"[peers] {msg}", file=sys.stderr, flush=True)

    if not Mosquitto.available():
        return {"peers_unavailable": "mosquitto is not installed"}
    out: dict[str, Any] = {}
    peers: list[tuple[Peer | None, str | None]] = []
    if "ours" in names:
        peers.append((Ours(SETTLE_S), None))
    if "nodered" in names:
        why = node_red.ensure_installed()
        peers.append((node_red.NodeRed(), None) if why is None else (None, f"nodered: {why}"))
    if "thingsboard" in names:
        why = thingsboard.ensure_installed()
        peers.append((thingsboard.ThingsBoardGateway(), None) if why is None else (None, f"thingsboard: {why}"))
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        for peer, reason in peers:
            if peer is None:
                name = (reason or "?").split(":")[0]
                out[f"peers_{name}_unavailable"] = reason
                continue
            t0 = time.monotonic()
            try:
                out.update(measure(peer, quick, Path(tmp) / peer.name, log))
            except Exception as exc:  # one peer failing must not hide the others' figures
                out[f"peers_{peer.name}_unavailable"] = f"{type(exc).__name__}: {exc}"[:600]
            out[f"peers_{peer.name}_section_s"] = time.monotonic() - t0
    ours = out.get("peers_ours_max_zero_loss_per_s")
    for other in ("nodered", "thingsboard"):
        theirs = out.get(f"peers_{other}_max_zero_loss_per_s")
        if isinstance(ours, float) and isinstance(theirs, float):
            out[f"peers_ours_vs_{other}_rate"] = ours / theirs if theirs else float("inf")
    rss = [out[f"peers_{o}_rss_mb"] for o in ("nodered", "thingsboard") if f"peers_{o}_rss_mb" in out]
    if "peers_ours_rss_mb" in out and rss:
        out["peers_ours_rss_vs_smallest_peer"] = out["peers_ours_rss_mb"] / min(rss)
    return out


if __name__ == "__main__":
    import json

    args = sys.argv[1:]
    full = "--full" in args
    picked = tuple(a for a in args if not a.startswith("-")) or ("ours", "nodered", "thingsboard")
    print(json.dumps(run_peers(not full, picked), default=str))
