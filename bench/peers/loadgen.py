"""Shelf-sensor load for the peers benchmark: JSON weight readings published to broker A by `mosquitto_pub -l`.

A worker (`python -m bench.peers.loadgen ...`, one process per share of the lanes) paces readings
round-robin over its lanes and writes one JSON line per reading into the stdin of a `mosquitto_pub -l`
(C, QoS 1, up to MAX_INFLIGHT unacknowledged), so Python only formats lines. Payload:
`{"shelf","lane","grams","m":"<rid>:<ts>"}` where `rid` is unique in the run and `ts` the epoch time the line
was written (Node-RED passes `m` through; ThingsBoard keeps `ts` as the entry's time; ours stamps its own
receive time, matched to the per-lane reading times of the worker's log, see bench/peers/job.py).

Each lane holds a count for `hold_s` seconds, then changes to another one (a deterministic function of the
lane and the segment number of the run's clock), with +/-1.5 g of noise: what a settled shelf looks like to
a counting engine. The worker writes a JSON summary (readings, first/last time, per-lane segments) at exit.
Every loop is bounded by the reading count and by the duration.
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
import psutil

RID_BASE = 10_000_000  # rid = rid_base + worker * RID_BASE + index; the harness gives each phase its rid_base
QOS = 1  # readings in over QoS 1 for every system (the job; each system subscribes at QoS 1 too)
MAX_INFLIGHT = 200  # per worker: the generator must not be what limits the rate (the offered rate is reported)


@dataclass(frozen=True, slots=True)
class Lane:
    """One weighed lane of the benchmark store."""

    shelf: str
    lane: str
    unit_g: float

    @property
    def key(self) -> str:
        """`shelf:lane`."""
        return f"{self.shelf}:{self.lane}"


def bench_lanes(n: int) -> list[Lane]:
    """`n` lanes, four per shelf, unit weights between 100 and 500 g."""
    return [Lane(f"s{i // 4:03d}", f"l{i % 4 + 1}", 100.0 + (i * 37) % 400) for i in range(n)]


def count_at(lane_index: int, segment: int) -> int:
    """The count lane `lane_index` holds in segment `segment`: three counts two apart (base 2..6, so 2..10),
    never equal to the previous segment's, repeating every 3 segments.

    Every change between them, including a jump across the harness's pauses between phases, is a pick or a
    put-back of 2 or 4 items: what a shelf sees. A rise of more than 4 units at once that does not fill the
    lane is an unknown object to a weight-trusting engine (ours: `counting.max_rise_units`), not a count."""
    return 2 + lane_index % 5 + 2 * (segment % 3)


def segment_of(lane_index: int, n_lanes: int, t: float, origin: float, hold_s: float) -> int:
    """Segment number of a lane at time `t` (lanes' segment starts are spread over `hold_s`)."""
    return math.floor((t - origin) / hold_s + lane_index / n_lanes)


def _wait_connected(pid: int, port: int, timeout: float = 10.0) -> None:
    """Wait (bounded) until `mosquitto_pub` holds an established connection to the broker, plus a moment for
    its CONNECT/CONNACK, so the pacing clock starts when the readings can flow."""
    deadline = time.monotonic() + timeout
    proc = psutil.Process(pid)
    while time.monotonic() < deadline:
        try:
            conns = proc.net_connections(kind="tcp")
        except psutil.Error:
            return  # it exited: the summary will show what was sent
        if any(c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED for c in conns):
            time.sleep(0.05)
            return
        time.sleep(0.005)


def run_worker(*, port: int, topic: str, lanes: list[int], n_lanes: int, rate: float, duration: float,
               hold_s: float, origin: float, worker: int, summary: Path, log: Path | None, rid_base: int = 0,
               noise_g: float = 1.5, seed: int = 1) -> dict[str, object]:
    """Publish `rate * duration` readings over `lanes` (indices into `bench_lanes(n_lanes)`); return the summary."""
    all_lanes = bench_lanes(n_lanes)
    mine = [(i, all_lanes[i]) for i in lanes]
    total = int(rate * duration)
    rng = random.Random(seed * 7919 + worker)
    pub = subprocess.Popen(
        [shutil.which("mosquitto_pub") or "mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", topic,
         "-l", "-q", str(QOS), "-M", str(MAX_INFLIGHT), "-i", f"loadgen-{worker}-{port}"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    assert pub.stdin is not None
    out = pub.stdin
    _wait_connected(pub.pid, port)  # readings written before that would wait in the pipe and look late
    logf = log.open("w") if log is not None else None
    segs: dict[int, list[list[float]]] = {}  # lane -> [[segment, count, first_ts, last_ts, n], ...]
    t0 = time.time()
    deadline = t0 + duration * 3 + 5  # bounded even when the machine cannot keep up
    i = 0
    first = last = t0
    try:
        while i < total and time.time() < deadline:
            now = time.time()
            due = min(total, int((now - t0) * rate) + 1)
            chunk: list[str] = []
            while i < due:
                li, ln = mine[i % len(mine)]
                ts = now
                seg = segment_of(li, n_lanes, ts, origin, hold_s)
                c = count_at(li, seg)
                grams = c * ln.unit_g + rng.uniform(-noise_g, noise_g)
                rid = rid_base + worker * RID_BASE + i
                chunk.append(f'{{"shelf":"{ln.shelf}","lane":"{ln.lane}","grams":{grams:.2f},"m":"{rid}:{ts:.6f}"}}\n')
                s = segs.setdefault(li, [])
                if s and s[-1][0] == seg:
                    s[-1][3] = ts
                    s[-1][4] += 1
                else:
                    s.append([seg, c, ts, ts, 1])
                if logf is not None:
                    logf.write(f"{li} {ts:.6f}\n")
                last = ts
                if i == 0:
                    first = ts
                i += 1
            if chunk:
                out.write("".join(chunk).encode())
                out.flush()
            time.sleep(0.002)
    finally:
        out.close()
        try:
            pub.wait(30)
        except subprocess.TimeoutExpired:
            pub.kill()
            pub.wait(5)
        if logf is not None:
            logf.close()
    result: dict[str, object] = {"worker": worker, "rid0": rid_base + worker * RID_BASE, "sent": i,
                                 "target": total, "first": first, "last": last,
                                 "segments": {str(k): v for k, v in segs.items()}}
    summary.write_bytes(orjson.dumps(result))
    return result


def main(argv: list[str]) -> int:
    """`python -m bench.peers.loadgen --port P --topic T --lanes 0,4,8 ...`."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--lanes", required=True, help="comma-separated lane indices")
    ap.add_argument("--n-lanes", type=int, required=True)
    ap.add_argument("--rate", type=float, required=True)
    ap.add_argument("--duration", type=float, required=True)
    ap.add_argument("--hold", type=float, required=True)
    ap.add_argument("--origin", type=float, required=True)
    ap.add_argument("--worker", type=int, required=True)
    ap.add_argument("--summary", type=Path, required=True)
    ap.add_argument("--log", type=Path)
    ap.add_argument("--rid-base", type=int, default=0)
    a = ap.parse_args(argv)
    run_worker(port=a.port, topic=a.topic, lanes=[int(x) for x in a.lanes.split(",")], n_lanes=a.n_lanes,
               rate=a.rate, duration=a.duration, hold_s=a.hold, origin=a.origin, worker=a.worker,
               summary=a.summary, log=a.log, rid_base=a.rid_base)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
