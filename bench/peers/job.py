"""The `peers` benchmark: our gateway, Node-RED and ThingsBoard IoT Gateway on the same shelf job.

Job: shelf sensors publish JSON weight readings to broker A (mosquitto) at QoS 1; every system subscribes at
QoS 1, computes count = round(grams / unit weight) and forwards to broker B (mosquitto, persistence on, "the
hub") at QoS 1, with a low-stock alert (count < THRESHOLD) beside it. Two profiles (bench/peers/score.py):
`change` (forward on change: Node-RED's filter node keyed by topic, ThingsBoard Gateway's
`reportStrategy: ON_CHANGE`, ours as it is) and `every` (forward every reading: the peers only; ours has no
per-reading telemetry option, see docs/benchmarks.md). Each system gets fresh brokers A and B; a persistent
`mosquitto_sub -c` session on B (saved with a checkpoint before B is killed) records what arrives.

Per system and profile: p50/p99 from the reading that caused an output to its arrival at B at 1,000
readings/s; RSS sampled through every phase (median and max); stepped rates (5 s each, bounded drain) up to
the first loss; the outage (B killed for 10 s under 1,000 readings/s, load running 12 s after it returns),
with the loss before, during and after the downtime. Zero loss = every expected output identified and every
reading processed (each system's own processed-readings count). `--runs N` repeats everything N times
(systems interleaved) and reports each figure as a range; a goal is judged on the worst run.
docs/benchmarks.md ("peers") has the definitions and the figures.
"""

from __future__ import annotations

import bisect
import contextlib
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import orjson
import psutil

from bench.peers.loadgen import RID_BASE, Lane, bench_lanes
from bench.peers.score import Matcher, Out, Segment, expected, pct, segments_of, split_by_time, summarise
from bench.spine import Subscriber
from edge.brokers import Mosquitto

REPO = Path(__file__).resolve().parents[2]
THRESHOLD = 5  # alert when count < 5
N_LANES = 200
HOLD_S = 2.0  # each lane holds a count this long, then changes
SETTLE_S = 0.8  # our engine's settle window (the shelf families' default)
STEPS = (1000, 2000, 5000, 10000, 20000, 40000, 60000, 80000)  # readings/s; stepping stops at the first loss
STEP_S = 5.0  # each step offers its rate this long
DRAIN_S = 3.0  # a step passes when every expected output arrived within this long after its last reading
MAX_WORKERS = 12  # load generator processes (one per 5,000 readings/s); the offered rate is reported per step
PROBE_RID = 10**15
START_SKIP_S = SETTLE_S + 0.5  # latency is measured in steady state (see `measure`)
OUTAGE_BEFORE_S, OUTAGE_DOWN_S, OUTAGE_AFTER_S = 2.0, 10.0, 12.0  # 1,000/s throughout; B down in the middle
RSS_EVERY_S = 0.25
PROFILES = ("change", "every")
SYSTEMS = {"change": ("ours", "nodered", "thingsboard"), "every": ("nodered", "thingsboard")}
OURS_NO_EVERY = ("the product has no per-reading telemetry option: the shelf families emit a lane's count "
                 "(retail.shelf.count.v1) and the StockChanged only when the settled count changes")


class Peer(Protocol):
    """A system under test."""

    name: str
    # what an output's time is: "m" (the reading's own send time, carried through), "ms" (the reading's send
    # time in whole ms: the causing reading is the segment's first), "stamp" (the gateway's receive stamp)
    time_kind: str

    def start(self, a_port: int, b_port: int, lanes: list[Lane], threshold: int, workdir: Path,
              profile: str) -> None:
        """Start it against brokers A and B in `profile`."""

    def pids(self) -> list[int]:
        """Its top process ids."""

    def alive(self) -> bool:
        """Still running?"""

    def log_tail(self) -> str:
        """The end of its log."""

    def processed(self) -> int:
        """Readings it has processed so far, by its own count (-1 when it cannot tell now)."""

    def stop(self) -> None:
        """Stop it by PID."""


# ---- what arrives at B ------------------------------------------------------------------------------------

@dataclass
class Arrivals:
    """Parsed lines of B's subscriber, read incrementally, as outputs per kind."""

    path: Path
    lane_index: dict[str, int]
    offset: int = 0
    rids: dict[int, tuple[float, float]] = field(default_factory=dict)  # rid -> (first receive, send ts)
    rid_duplicates: int = 0
    alerts: int = 0
    messages: int = 0
    processed_stat: int = -1  # Node-RED's processed-readings count (its stats message)
    new: dict[str, list[Out]] = field(default_factory=dict)  # kind -> outputs not yet handed to a Matcher

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
            self.messages += 1
            with contextlib.suppress(orjson.JSONDecodeError, KeyError, ValueError, TypeError, AttributeError):
                self._line(recv, parts[1], parts[2])

    def take(self, kind: str) -> list[Out]:
        """The outputs of `kind` parsed since the last call."""
        return self.new.pop(kind, [])

    def _out(self, kind: str, key: str, count: int, t: float, recv: float, sent: float | None = None) -> None:
        li = self.lane_index.get(key)
        if li is not None:
            self.new.setdefault(kind, []).append(Out(li, count, t, recv, sent))

    def _rid(self, m: str, recv: float) -> float | None:
        rid_s, _, ts_s = m.partition(":")
        rid, ts = int(rid_s), float(ts_s)
        if rid in self.rids:
            self.rid_duplicates += 1
        else:
            self.rids[rid] = (recv, ts)
        return ts

    def _line(self, recv: float, topic: bytes, payload: bytes) -> None:
        if topic.startswith(b"stock/"):  # Node-RED
            d = orjson.loads(payload)
            ts = self._rid(str(d["m"]), recv)
            self._out("stock", f"{d['shelf']}:{d['lane']}", int(d["count"]), ts or 0.0, recv, ts)
        elif topic.startswith(b"alerts/"):  # Node-RED
            self.alerts += bool(orjson.loads(payload).get("low", True))
        elif topic == b"stats/nodered":
            self.processed_stat = max(self.processed_stat, int(orjson.loads(payload)["processed"]))
        elif topic == b"v1/gateway/telemetry":  # ThingsBoard: {device: [{ts, values}]}
            for dev, entries in orjson.loads(payload).items():
                key = dev.replace("-", ":", 1)
                for e in entries:
                    v = e.get("values", e)
                    ts = e.get("ts", 0) / 1000
                    sent = self._rid(str(v["m"]), recv) if "m" in v else None
                    if "count" in v:
                        self._out("stock", key, int(v["count"]), ts, recv, sent)
                    self.alerts += v.get("low") is True
        elif topic.endswith((b"/events/stock", b"/events/shelf", b"/alerts")):  # ours: CloudEvents
            ev = orjson.loads(payload)
            for e in ev if isinstance(ev, list) else [ev]:
                self._event(recv, e)

    def _event(self, recv: float, e: dict[str, Any]) -> None:
        typ, d = e.get("type", ""), e.get("data") or {}
        if typ == "retail.stock.changed.v1" and str(d.get("sku", "")).startswith("sku-"):
            _, shelf, lane = str(d["sku"]).split("-", 2)
            self._out("stock", f"{shelf}:{lane}", int(d["count"]), _epoch(e["time"]), recv)
        elif typ == "retail.shelf.count.v1":
            self._out("telemetry", f"{d.get('shelf')}:{d.get('lane')}", int(d["count"]), _epoch(e["time"]), recv)
        elif typ == "retail.alert.opened.v1":
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
    segments: list[Segment]
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
    return Offered(rids, segments_of(segs), sent, sent / span if span > 0 else 0.0, first, last)


# ---- one system ------------------------------------------------------------------------------------------

class System:
    """One system under test in one profile, with its own brokers A and B and B's persistent subscriber."""

    def __init__(self, peer: Peer, work: Path, profile: str) -> None:
        self.peer = peer
        self.work = work
        self.profile = profile
        self.lanes = bench_lanes(N_LANES)
        self.a = Mosquitto(workdir=work / "a")
        self.b = Mosquitto(workdir=work / "b", persistent=True)
        self.sub: Subscriber | None = None
        self.arr = Arrivals(work / "b-sub.log", {ln.key: i for i, ln in enumerate(self.lanes)})
        self.origin = time.time()
        self.phases = 0
        self.stamped = peer.time_kind == "stamp"
        # ours forwards a count once its window settled; the peers forward the first reading of a new count
        self.min_span, self.keep_span = (SETTLE_S + 0.2, SETTLE_S - 0.2) if self.stamped else (0.0, 0.0)
        self.kinds = ("stock", "telemetry") if self.stamped else ("stock",)
        self.matchers = {k: Matcher() for k in self.kinds}
        self.prev: dict[int, int | None] = {}
        self.rss: dict[str, list[float]] = {}
        self._rss_tag: str | None = None
        self._rss_stop = threading.Event()
        self._rss_thread = threading.Thread(target=self._sample_rss, name="rss-sampler", daemon=True)

    def start(self) -> None:
        """Brokers, subscriber, the system; wait until a probe reading goes through (bounded)."""
        self.a.start()
        self.b.start()
        self.sub = Subscriber(self.b.port, "#", self.arr.path, client_id=f"peers-{self.peer.name}", persistent=True)
        self.peer.start(self.a.port, self.b.port, self.lanes, THRESHOLD, self.work / self.peer.name, self.profile)
        self._rss_thread.start()
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
        body = (f'{{"shelf":"{ln.shelf}","lane":"{ln.lane}","grams":{ln.unit_g * (3 + k % 2):.1f},'
                f'"m":"{PROBE_RID + k}:{time.time():.6f}"}}')
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.a.port), "-t", "shelves/probe/weight",
                        "-q", "1", "-m", body], timeout=10, check=False)
        if not self.stamped:
            time.sleep(0.2)
            self.arr.poll()
            return self.arr.messages > 0
        ready: Callable[[], bool] | None = getattr(self.peer, "ready", None)
        return self.peer.processed() > 0 and ready is not None and ready()

    def _sample_rss(self) -> None:
        while not self._rss_stop.wait(RSS_EVERY_S):
            tag = self._rss_tag
            if tag is not None:
                self.rss.setdefault(tag, []).append(self.rss_mb())

    def phase(self, rate: float, duration: float, tag: str, drain: float, *, log: bool = False,
              during: Callable[[], None] | None = None) -> dict[str, Any]:
        """Offer `rate` readings/s for `duration` s, wait up to `drain` s after the last; what was lost."""
        r0 = self._processed()
        self.phases += 1
        self._rss_tag = tag
        procs = offer(self.a.port, rate, duration, self.origin, self.work, tag, log=log,
                      rid_base=self.phases * 16 * RID_BASE)
        try:
            if during is not None:
                during()
            summaries = finish(procs, self.work, tag, duration * 3 + 30)
            off = offered(summaries)
            for m in self.matchers.values():
                m.add_segments(off.segments)
            prev = dict(self.prev)
            exp = expected(off.segments, prev, self.min_span, self.keep_span)
            deadline = time.monotonic() + drain
            while True:
                res = self._loss(off, exp, r0)
                if (res["lost"] == 0 and res["not_processed"] == 0) or time.monotonic() >= deadline:
                    break
                time.sleep(0.1)
        finally:
            self._rss_tag = None
        self.prev = prev
        for m in self.matchers.values():
            m.settle()
        res.update(offered_rate=off.rate, sent=off.sent, target=rate, first=off.first, last=off.last, off=off,
                   exp=exp)
        return res

    def caught_up(self, timeout: float = 90.0) -> float:
        """Wait (bounded) until the system's processed-readings count stopped moving for 1.5 s: an overloaded
        step leaves a backlog (broker A queues QoS 1 readings for it) that must not spill into the next
        phase. Returns the seconds it took."""
        t0 = time.monotonic()
        last, since = self._processed(), time.monotonic()
        while time.monotonic() - t0 < timeout:
            time.sleep(0.25)
            self.arr.poll()
            n = self._processed()
            if n != last:
                last, since = n, time.monotonic()
            elif time.monotonic() - since >= 1.5:
                break
        return time.monotonic() - t0

    def _processed(self) -> int:
        n = self.peer.processed()
        if n < 0 and self.peer.name == "nodered":
            n = self.arr.processed_stat
        return n

    def _loss(self, off: Offered, exp: list[Segment], r0: int) -> dict[str, Any]:
        self.arr.poll()
        done = self._processed()
        not_processed = max(0, off.sent - (done - r0)) if done >= 0 and r0 >= 0 else -1
        if self.profile == "every":
            lost = len(off.rids - self.arr.rids.keys())
            return {"expected": len(off.rids), "lost": lost, "not_processed": not_processed}
        out: dict[str, Any] = {"not_processed": not_processed}
        n_exp = n_lost = 0
        for kind, m in self.matchers.items():
            m.feed(self.arr.take(kind))
            gone = m.lost(exp)
            n_exp += len(exp)
            n_lost += len(gone)
            out[f"lost_{kind}"] = gone
        out.update(expected=n_exp, lost=n_lost)
        return out

    def lost_times(self, res: dict[str, Any]) -> list[float]:
        """The reading times of what was lost in a phase (segment start, or the reading's send time)."""
        if self.profile == "every":
            return summaries_rids(res["off"], self.arr.rids)
        return [s.first for k in self.kinds for s in res.get(f"lost_{k}", [])]

    def latencies(self, res: dict[str, Any], tag: str, *, skip_s: float = 0.0) -> list[float]:
        """Milliseconds from the reading that caused an output to its arrival at B, for outputs caused at
        least `skip_s` after the phase's first reading."""
        first, last = res["first"] + skip_s, res["last"]
        if self.profile == "every":
            return [(recv - ts) * 1000 for recv, ts in self.arr.rids.values() if first <= ts <= last]
        exp: list[Segment] = res["exp"]
        if self.peer.time_kind != "stamp":
            m = self.matchers["stock"]
            out = []
            for s in exp:
                o = m.matched.get((s.lane, s.seg))
                if o is None or not first <= s.first <= last:
                    continue
                sent = o.sent if o.sent is not None else s.first  # ON_CHANGE: the segment's first reading
                out.append((o.recv - sent) * 1000)
            return out
        # ours: the lane count telemetry carries the time the gateway received the reading that decided the
        # count, so it is matched to the lane's last reading sent before it (from the worker's log)
        logs: dict[int, list[float]] = {}
        for f in self.work.glob(f"{tag}-w*.log"):
            for line in f.read_text().splitlines():
                li, ts = line.split()
                logs.setdefault(int(li), []).append(float(ts))
        for v in logs.values():
            v.sort()
        out = []
        tm = self.matchers["telemetry"]
        for s in exp:
            o = tm.matched.get((s.lane, s.seg))
            tss = logs.get(s.lane)
            if o is None or not tss or not first <= o.t <= last + 1:
                continue
            i = bisect.bisect_right(tss, o.t + 0.002) - 1
            if i >= 0:
                out.append((o.recv - tss[i]) * 1000)
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
        self._rss_stop.set()
        with contextlib.suppress(Exception):
            self.peer.stop()
        if self.sub is not None:
            self.sub.close()
        self.a.stop()
        self.b.stop()


def summaries_rids(off: Offered, got: dict[int, tuple[float, float]]) -> list[float]:
    """Send times of the offered readings that did not arrive (profile `every`), from their rid's offset in the
    phase: the workers pace evenly, so rid index / rate approximates the send time."""
    missing = sorted(off.rids - got.keys())
    if not missing:
        return []
    by_worker: dict[int, list[int]] = {}
    for r in off.rids:
        by_worker.setdefault(r // RID_BASE, []).append(r)
    out = []
    span = off.last - off.first
    for r in missing:
        w = by_worker[r // RID_BASE]
        lo = min(w)
        out.append(off.first + span * (r - lo) / max(1, len(w)))
    return out


def _rss_figures(prefix: str, samples: dict[str, list[float]]) -> dict[str, float]:
    lat = samples.get("lat", [])
    every = [x for v in samples.values() for x in v]
    return {f"{prefix}_rss_mb_median_at_1000": pct(lat, 0.5),
            f"{prefix}_rss_mb_max_at_1000": max(lat, default=math.nan),
            f"{prefix}_rss_mb_median": pct(every, 0.5), f"{prefix}_rss_mb_max": max(every, default=math.nan)}


def measure(peer: Peer, profile: str, quick: bool, work: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """All figures of one system in one profile (prefixed `peers_<profile>_<name>_`)."""
    p = f"peers_{profile}_{peer.name}"
    sysm = System(peer, work, profile)
    out: dict[str, Any] = {}
    # Each system starts on a quiet disk: the data earlier sections (or the previous peer) left dirty in the
    # page cache is written out first, so its writeback does not land in this system's fsyncs.
    os.sync()
    try:
        t0 = time.monotonic()
        sysm.start()
        out[f"{p}_start_s"] = time.monotonic() - t0
        sysm.phase(1000, 3.0, "warmup", DRAIN_S)  # JIT, imports, first devices, the lanes' first counts
        res = sysm.phase(1000, 6.0 if quick else 12.0, "lat", DRAIN_S, log=sysm.stamped)
        if (note := getattr(peer, "python_note", None)) is not None:
            out[f"{p}_python"] = note  # ours: which venv the daemon ran from (bench/runtime.py)
        # Steady state: the phase's first START_SKIP_S are left out. The lanes follow the wall-clock schedule
        # through the pause before the phase, so when readings resume every lane that changed meanwhile
        # changes at once (for ours: 200 count changes, ~400 events in one burst).
        lat = sysm.latencies(res, "lat", skip_s=START_SKIP_S)
        out[f"{p}_p50_ms_at_1000"] = pct(lat, 0.5)
        out[f"{p}_p99_ms_at_1000"] = pct(lat, 0.99)
        out[f"{p}_latency_samples"] = float(len(lat))
        out[f"{p}_p99_ms_at_1000_with_start"] = pct(sysm.latencies(res, "lat"), 0.99)
        out[f"{p}_lost_at_1000"] = float(res["lost"])
        log(f"{p}: p50 {out[f'{p}_p50_ms_at_1000']:.1f} ms, p99 {out[f'{p}_p99_ms_at_1000']:.1f} ms ({len(lat)}), "
            f"lost {res['lost']}/{res['expected']}, not processed {res['not_processed']}")
        # stepped rates until the first loss
        steps = list(STEPS)
        best, notes, gen_max = 0.0, [], 0.0
        i = 0
        while i < len(steps):
            rate = steps[i]
            res = sysm.phase(rate, STEP_S, f"step{rate}", DRAIN_S)
            gen_max = max(gen_max, res["offered_rate"])
            ok = res["lost"] == 0 and res["not_processed"] == 0
            note = "ok" if ok else f"lost {res['lost']}/{res['expected']}"
            if res["not_processed"]:
                note += f" unprocessed {res['not_processed']}"
            notes.append(f"{rate}:{note}@{res['offered_rate']:.0f}")
            log(f"{p}: step {rate}/s offered {res['offered_rate']:.0f}/s: {notes[-1]}")
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
                    sysm.caught_up()
                    continue
                break
            best = max(best, float(rate))
            i += 1
            time.sleep(0.5)
        out[f"{p}_max_zero_loss_per_s"] = best
        out[f"{p}_steps"] = ", ".join(notes)
        out[f"{p}_loadgen_max_offered_per_s"] = gen_max
        out[f"{p}_catch_up_s"] = sysm.caught_up()  # the failed step's backlog, before the outage phase
        # the outage: B SIGKILLed for 10 s under 1,000/s, restarted on the same port, load 12 s more
        marks: list[float] = []

        def outage() -> None:
            time.sleep(OUTAGE_BEFORE_S)
            marks.append(time.time())
            sysm.b.stop()  # SIGTERM: mosquitto saves what it accepted (see HUB_STOP in docs/benchmarks.md)
            time.sleep(OUTAGE_DOWN_S)
            sysm.b.start()
            marks.append(time.time())

        res = sysm.phase(1000, OUTAGE_BEFORE_S + OUTAGE_DOWN_S + OUTAGE_AFTER_S, "outage", 20.0 if quick else 30.0,
                         during=outage)
        before, down, after = split_by_time(sysm.lost_times(res), (marks[0], marks[1]))
        out[f"{p}_outage_lost"] = float(res["lost"])
        out[f"{p}_outage_lost_before"] = float(before)
        out[f"{p}_outage_lost_down"] = float(down)
        out[f"{p}_outage_lost_after"] = float(after)
        out[f"{p}_outage_expected"] = float(res["expected"])
        out[f"{p}_outage_not_processed"] = float(res["not_processed"])
        dups = sum(m.duplicates for m in sysm.matchers.values()) + sysm.arr.rid_duplicates
        out[f"{p}_duplicates"] = float(dups)
        out[f"{p}_unidentified_outputs"] = float(sum(m.extra for m in sysm.matchers.values()))
        out[f"{p}_alerts_forwarded"] = float(sysm.arr.alerts)
        out.update(_rss_figures(p, sysm.rss))
        log(f"{p}: outage lost {res['lost']}/{res['expected']} (before {before}, down {down}, after {after}), "
            f"not processed {res['not_processed']}; RSS max {out[f'{p}_rss_mb_max']:.0f} MB")
    finally:
        sysm.stop()
    return out


def _make_peer(name: str) -> tuple[Peer | None, str | None]:
    from bench.peers import node_red, thingsboard
    from bench.peers.ours import Ours

    if name == "ours":
        return Ours(SETTLE_S), None
    if name == "nodered":
        why = node_red.ensure_installed()
        return (node_red.NodeRed(), None) if why is None else (None, why)
    why = thingsboard.ensure_installed()
    return (thingsboard.ThingsBoardGateway(), None) if why is None else (None, why)


def one_run(quick: bool, names: tuple[str, ...], profiles: tuple[str, ...], log: Callable[[str], None],
            tmp: Path) -> dict[str, Any]:
    """Every (profile, system) once; per-run ratios."""
    out: dict[str, Any] = {}
    for profile in profiles:
        for name in SYSTEMS[profile]:
            if name not in names:
                continue
            peer, why = _make_peer(name)
            t0 = time.monotonic()
            if peer is None:
                out[f"peers_{profile}_{name}_unavailable"] = why
                continue
            try:
                out.update(measure(peer, profile, quick, tmp / f"{profile}-{name}", log))
            except Exception as exc:  # one peer failing must not hide the others' figures
                out[f"peers_{profile}_{name}_unavailable"] = f"{type(exc).__name__}: {exc}"[:600]
            out[f"peers_{profile}_{name}_section_s"] = time.monotonic() - t0
        if profile == "every" and "ours" in names:
            out["peers_every_ours_unavailable"] = OURS_NO_EVERY
    ours = out.get("peers_change_ours_max_zero_loss_per_s")
    for other in ("nodered", "thingsboard"):
        theirs = out.get(f"peers_change_{other}_max_zero_loss_per_s")
        if isinstance(ours, float) and isinstance(theirs, float):
            out[f"peers_ours_vs_{other}_rate"] = ours / theirs if theirs else float("inf")
    peer_max = [v for k, v in out.items() if k.endswith("_rss_mb_max") and "_ours_" not in k and v == v]
    peer_med = [v for k, v in out.items() if k.endswith("_rss_mb_median") and "_ours_" not in k and v == v]
    if "peers_change_ours_rss_mb_max" in out and peer_max:
        out["peers_ours_rss_max_vs_smallest_peer_max"] = out["peers_change_ours_rss_mb_max"] / min(peer_max)
        out["peers_ours_rss_median_vs_smallest_peer_median"] = out["peers_change_ours_rss_mb_median"] / min(peer_med)
    return out


# figures whose worst run is the lowest / the highest value (goals are judged on `<figure>_worst`)
WORSE_LOWER = {"peers_ours_vs_nodered_rate", "peers_ours_vs_thingsboard_rate"}
WORSE_HIGHER = {"peers_change_ours_p99_ms_at_1000", "peers_change_ours_outage_lost",
                "peers_ours_rss_max_vs_smallest_peer_max", "peers_ours_rss_median_vs_smallest_peer_median"}


def run_peers(quick: bool, names: tuple[str, ...] = ("ours", "nodered", "thingsboard"),
              profiles: tuple[str, ...] = PROFILES, runs: int = 1) -> dict[str, Any]:
    """`runs` runs of the systems in `names` and `profiles`, each figure as a range over the runs."""

    def log(msg: str) -> None:
        print(f"[peers] {msg}", file=sys.stderr, flush=True)

    if not Mosquitto.available():
        return {"peers_unavailable": "mosquitto is not installed"}
    results = []
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        for r in range(runs):
            log(f"run {r + 1}/{runs} (1-minute load {os.getloadavg()[0]:.2f})")
            results.append(one_run(quick, names, profiles, log, Path(tmp) / f"run{r}"))
            load.append(os.getloadavg()[0])
    out = summarise(results, WORSE_LOWER, WORSE_HIGHER)
    out["peers_loadavg_1min"] = " ".join(f"{x:.2f}" for x in load)  # before the first run and after each
    return out


def bench_peers(quick: bool) -> dict[str, Any]:
    """Ours, Node-RED and ThingsBoard IoT Gateway on the shelf job, both profiles; 3 runs (1 quick)."""
    return run_peers(quick, runs=1 if quick else 3)


def main(argv: list[str]) -> int:
    """`python -m bench.peers.job [--full] [--runs N] [--profile change|every] [ours nodered thingsboard]`."""
    import argparse
    import json

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("systems", nargs="*", default=["ours", "nodered", "thingsboard"])
    ap.add_argument("--full", action="store_true", help="12 s latency phase and 30 s outage drain (else 6 s, 20 s)")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--profile", action="append", choices=PROFILES)
    a = ap.parse_args(argv)
    res = run_peers(not a.full, tuple(a.systems), tuple(a.profile or PROFILES), max(1, a.runs))
    from bench.suite import GOALS

    width = max(len(k) for k in res)
    for k, v in res.items():
        if k.endswith(("_min", "_max")) and k[:-4] in res:
            continue
        goal = GOALS.get(k)
        mark = ""
        if goal and isinstance(v, int | float):
            mark = f"  {goal[0]}  {'met' if goal[1](float(v), res) else 'MISSED'}"
        print(f"{k:<{width}}  {v if isinstance(v, str) else f'{v:.4g}'}{mark}", file=sys.stderr)
    print(json.dumps(res, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
