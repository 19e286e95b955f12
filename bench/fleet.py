"""Fleet benchmark (`python -m bench.fleet`, or `edge-gateway bench --only fleet`): N simulated stores against a
three-node NATS cluster, HQ's view of them, measured in one run. docs/fleet.md has the figures and what they
imply for 500 and 5,000 stores.

One run: the hub (a `NatsCluster` of 3 nodes, the nats-server of `$EDGE_NATS_SERVER` or the installed one, or
a mosquitto with `--hub mosquitto`); a tap on the hub subscribed to `retail/v1/#` that counts every message the
stores publish and its bytes (MQTT PUBLISH as sent: fixed header, topic, packet id, payload; TLS not counted),
what each payload would be deflated (zlib, level 6, per message: the uplink does not compress, so this is the
figure a per-message compression would give), and the events in it (a batch is a JSON array); the fleet
(`edge-gateway fleet-sim` in its own process: every `batch_every`-th store batches its uplink, so one run
measures both); HQ's reader (edge/hq.py) following the retained `state/stock/+` live. Figures:

- messages, events and bytes per store per day at the demo's rates (24 h of the demo's store life), batched
  and not, with the deflated bytes beside them;
- the hub's load for N stores: messages/s and bytes/s in, each node's CPU (share of one core, from
  /proc/PID/stat) and RSS (/proc/PID/status), and the fleet process's CPU per store;
- shelf change in a store -> HQ's view: from the World's change (written by fleet-sim with its wall time) to
  the HQ reader applying the retained `state/stock/{shelf}` message that shows the new count (p50/p99/max);
  a change overtaken by the next one on the same cell before the store published it is not counted;
- fan-out: `cmd/stock.get` to every store at once, answers within the timeout and their times;
- HQ reader memory per store (tracemalloc: the view of the live stores, and of 2,000 synthetic store ids
  carrying one real store's documents).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

from edge.brokers import BrokerProcess, Mosquitto, NatsCluster, nats_binary
from edge.hq import SUBSCRIPTIONS, ChainView, HqClient
from edge.mqtt_sub import SubOptions, Subscriber

PREFIX = "retail/v1"
DAY = 86400.0


def _proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (and its reaped children) from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _wire_bytes(topic: str, payload: bytes) -> int:
    """An MQTT 3.1.1 QoS 1 PUBLISH's size on the wire: fixed header, remaining length, topic, packet id, payload."""
    n = 2 + len(topic.encode()) + 2 + len(payload)
    return 1 + (1 if n < 128 else 2 if n < 16384 else 3 if n < 2097152 else 4) + n


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


class Tap:
    """A subscriber on the hub counting what the stores publish, per store and kind."""

    def __init__(self, url: str) -> None:
        self.opts = SubOptions.from_url(url, client_id=f"bench-tap-{os.getpid()}", topic=f"{PREFIX}/#", qos=0,
                                        max_packet=4 * 1024 * 1024)
        self.counting = False
        self.per_store: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.topics: dict[str, int] = defaultdict(int)  # messages by topic group (events/stock, state/atp, ...)
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    async def run(self) -> None:
        async with Subscriber(self.opts) as sub:
            self.ready.set()
            async for batch in sub.batches():
                if not self.counting:
                    continue
                for topic, payload in batch:
                    levels = topic.split("/")
                    if len(levels) < 4 or levels[3] in ("cmd", "reply") or payload is None:
                        continue
                    kind = "status" if levels[3] == "status" else "state" if levels[3] == "state" else "events"
                    c = self.per_store[levels[2]]
                    c[f"{kind}_msgs"] += 1
                    c[f"{kind}_bytes"] += _wire_bytes(topic, payload)
                    c[f"{kind}_deflated"] += _wire_bytes(topic, zlib.compress(payload, 6))
                    if kind == "events":
                        c["events"] += payload.count(b'"specversion"')
                    group = "/".join(levels[3:5]) if kind != "status" else "status"
                    self.topics[group] += 1


class LatencyWatch:
    """Matches the fleet's shelf changes (JSON lines) with HQ's view of the same cell."""

    def __init__(self, changes: Path, view: ChainView) -> None:
        self.path = changes
        self.view = view
        self.offset = 0
        self.pending: dict[tuple[str, str, str], list[tuple[float, int]]] = defaultdict(list)
        self.latencies: list[float] = []
        self.by_shelf: dict[str, list[float]] = defaultdict(list)
        self.changes = 0
        self.counting = False

    def _read_new(self) -> None:
        with contextlib.suppress(FileNotFoundError), self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        for line in data[:end].splitlines():
            c = orjson.loads(line)
            key = (c["store"], c["shelf"], c["sku"])
            self.pending[key].append((float(c["t"]), int(c["count"])))
            self.changes += 1

    def on_update(self, topic: str, now: float) -> None:
        self._read_new()
        levels = topic.split("/")
        store, shelf = levels[2], levels[-1]
        view = self.view.stores.get(store)
        if view is None:
            return
        for sku, cell in view.shelves.get(shelf, {}).items():
            waiting = self.pending.get((store, shelf, sku))
            if not waiting:
                continue
            # the newest change whose count HQ now shows; it and every older one are settled
            hit = next((i for i in range(len(waiting) - 1, -1, -1) if waiting[i][1] == cell.count), None)
            if hit is None:
                continue
            if self.counting:
                self.latencies.append(now - waiting[hit][0])
                self.by_shelf[shelf].append(now - waiting[hit][0])
            del waiting[:hit + 1]


async def _wait_line(proc: subprocess.Popen[bytes], text: bytes, within: float) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), max(0.1, deadline - time.monotonic()))
        if not line:
            raise RuntimeError(f"fleet-sim exited {proc.wait()} before saying {text!r}")
        if text in line:
            return
    raise TimeoutError(f"fleet-sim did not say {text!r} within {within}s")


def _nats_version() -> str:
    binary = nats_binary()
    if binary is None:
        return "none"
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False, timeout=10).stdout
    return out.strip().rpartition(" ")[2] or "?"


async def measure(stores: int, warmup_s: float, window_s: float, hub: str, batch_every: int = 2) -> dict[str, Any]:
    """One run; the figures (see the module doc)."""
    work = Path(tempfile.mkdtemp(prefix="edge-bench-fleet-"))
    brokers: list[BrokerProcess] = []
    cluster: NatsCluster | None = None
    if hub == "mosquitto":
        m = Mosquitto(workdir=work / "hub")
        await asyncio.to_thread(m.start)
        brokers, urls, hub_name = [m], [m.url], "mosquitto"
    else:
        cluster = NatsCluster(3, workdir=work / "hub")
        await asyncio.to_thread(cluster.start, 60.0)
        brokers, urls, hub_name = list(cluster.nodes), cluster.urls, f"nats-server {_nats_version()} x3"
    changes = work / "changes.jsonl"
    fleet: subprocess.Popen[bytes] | None = None
    tap = Tap(urls[0])
    tap_task = asyncio.create_task(tap.run())
    out: dict[str, Any] = {"fleet_stores": stores, "fleet_hub": hub_name, "fleet_window_s": window_s}
    try:
        await asyncio.wait_for(tap.ready.wait(), 30)
        argv = [sys.executable, "-m", "edge", "fleet-sim", "--stores", str(stores), "--hub", ",".join(urls),
                "--data-dir", str(work / "fleet"), "--batch-every", str(batch_every), "--changes", str(changes)]
        fleet = await asyncio.to_thread(
            subprocess.Popen, argv, stdout=subprocess.PIPE, stderr=(work / "fleet.log").open("wb"),
            start_new_session=True)
        t_start = time.monotonic()
        await _wait_line(fleet, b"stores running", 60 + 5 * stores)
        out["fleet_start_s"] = round(time.monotonic() - t_start, 1)
        view = ChainView(PREFIX)
        watch = LatencyWatch(changes, view)
        async with HqClient(urls[-1], view, SUBSCRIPTIONS["stock"], live=True) as hq:
            hq.on_update = watch.on_update
            await hq.snapshot(30)
            await asyncio.sleep(warmup_s)
            # the window
            cpu0 = {b.proc.pid: _proc_cpu_s(b.proc.pid) for b in brokers if b.proc is not None}
            fcpu0, t0 = _proc_cpu_s(fleet.pid), time.monotonic()
            rss: dict[int, float] = defaultdict(float)
            tap.counting = watch.counting = True
            end = t0 + window_s
            while time.monotonic() < end:
                for pid in cpu0:
                    rss[pid] = max(rss[pid], _proc_rss_mb(pid))
                rss[fleet.pid] = max(rss[fleet.pid], _proc_rss_mb(fleet.pid))
                await asyncio.sleep(min(5.0, max(0.0, end - time.monotonic())))
            tap.counting = watch.counting = False
            elapsed = time.monotonic() - t0
            cpu = {pid: (_proc_cpu_s(pid) - c) / elapsed for pid, c in cpu0.items()}
            fleet_cpu = (_proc_cpu_s(fleet.pid) - fcpu0) / elapsed
            # fan-out: every store at once, three rounds
            asked = answered = 0
            times: list[float] = []
            for _ in range(3):
                answers = await hq.fan_out(sorted(view.stores), "stock.get", {}, 5.0)
                asked += len(answers)
                answered += sum(1 for a in answers if a.ok)
                times += [a.seconds for a in answers if a.ok and a.seconds is not None]
        out.update(_traffic(tap, stores, batch_every, elapsed))
        out.update({
            "fleet_hub_msgs_per_s": round(sum(c[f"{k}_msgs"] for c in tap.per_store.values()
                                              for k in ("events", "state", "status")) / elapsed, 1),
            "fleet_hub_bytes_per_s": round(sum(c[f"{k}_bytes"] for c in tap.per_store.values()
                                               for k in ("events", "state", "status")) / elapsed),
            "fleet_hub_cpu_pct_per_node": [round(100 * v, 1) for v in cpu.values()],
            "fleet_hub_rss_mb_per_node": [round(rss[pid], 1) for pid in cpu0],
            "fleet_sim_cpu_pct": round(100 * fleet_cpu, 1),
            "fleet_sim_cpu_pct_per_store": round(100 * fleet_cpu / stores, 2),
            "fleet_sim_rss_mb": round(rss[fleet.pid], 1),
            "fleet_shelf_changes": watch.changes,
            "fleet_change_to_hq_n": len(watch.latencies),
            "fleet_change_to_hq_p50_s": round(_pct(watch.latencies, 0.5), 3),
            "fleet_change_to_hq_p99_s": round(_pct(watch.latencies, 0.99), 3),
            "fleet_change_to_hq_max_s": round(max(watch.latencies, default=float("nan")), 3),
            "fleet_change_to_hq_by_shelf_p50_p99_s": {
                k: [round(_pct(v, 0.5), 2), round(_pct(v, 0.99), 2), len(v)]
                for k, v in sorted(watch.by_shelf.items())},
            "fleet_msgs_per_store_day_by_topic": {
                k: round(n / stores * DAY / elapsed) for k, n in sorted(tap.topics.items(), key=lambda kv: -kv[1])},
            "fleet_fanout_answered": f"{answered}/{asked}",
            "fleet_fanout_p50_ms": round(1000 * _pct(times, 0.5), 1),
            "fleet_fanout_p99_ms": round(1000 * _pct(times, 0.99), 1),
        })
        out.update(await _hq_memory(urls[0], stores))
    finally:
        if fleet is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(fleet.pid, signal.SIGTERM)
            try:
                await asyncio.to_thread(fleet.wait, 120)
            except subprocess.TimeoutExpired:
                fleet.kill()
                fleet.wait(10)
        tap_task.cancel()
        with contextlib.suppress(BaseException):
            await tap_task
        if cluster is not None:
            await asyncio.to_thread(cluster.stop)
        for b in brokers:
            await asyncio.to_thread(b.stop)
    return out


def _traffic(tap: Tap, stores: int, batch_every: int, elapsed: float) -> dict[str, Any]:
    """Per store per day, batched and not (the stores that batch are every `batch_every`-th)."""
    out: dict[str, Any] = {}
    groups: dict[str, list[dict[str, float]]] = {"batched": [], "single": []}
    for store, c in tap.per_store.items():
        i = int(store.rsplit("-", 1)[1])
        groups["batched" if batch_every and i % batch_every == 0 else "single"].append(c)
    scale = DAY / elapsed
    for name, cs in groups.items():
        if not cs:
            continue
        def day(key: str, cs: list[dict[str, float]] = cs) -> float:
            return statistics.fmean(sum(c[f"{k}_{key}"] for k in ("events", "state", "status")) for c in cs) * scale
        out[f"fleet_{name}_stores"] = len(cs)
        out[f"fleet_{name}_msgs_per_store_day"] = round(day("msgs"))
        out[f"fleet_{name}_mb_per_store_day"] = round(day("bytes") / 1e6, 2)
        out[f"fleet_{name}_deflated_mb_per_store_day"] = round(day("deflated") / 1e6, 2)
        out[f"fleet_{name}_events_per_store_day"] = round(statistics.fmean(c["events"] for c in cs) * scale)
        out[f"fleet_{name}_state_msgs_per_store_day"] = round(statistics.fmean(c["state_msgs"] for c in cs) * scale)
    return out


class _Keep(ChainView):
    """A view that also keeps one store's messages (to replay them under other store ids)."""

    def __init__(self, store: str) -> None:
        super().__init__(PREFIX)
        self.store = store
        self.kept: list[tuple[str, bytes]] = []

    def apply(self, topic: str, payload: bytes | None) -> bool:
        if payload is not None and topic.startswith(f"{PREFIX}/{self.store}/"):
            self.kept.append((topic.split("/", 3)[3], payload))
        return super().apply(topic, payload)


async def _hq_memory(url: str, stores: int) -> dict[str, Any]:
    """tracemalloc bytes of the HQ view per store: the live fleet, and 2,000 ids replaying one store's documents."""
    tracemalloc.start()
    try:
        keep = _Keep("store-001")
        before = tracemalloc.get_traced_memory()[0]
        async with HqClient(url, keep, SUBSCRIPTIONS["stores"] + ("state/atp/+",)) as hq:
            await hq.snapshot(30)
        live = tracemalloc.get_traced_memory()[0] - before
        kept, keep.kept = keep.kept, []
        n = 2000
        view = ChainView(PREFIX)
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            for suffix, payload in kept:
                view.apply(f"{PREFIX}/hq-mem-{i:05d}/{suffix}", payload)
        synthetic = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    return {"fleet_hq_kb_per_store_live": round(live / max(1, len(keep.stores)) / 1024, 1),
            "fleet_hq_live_stores": len(keep.stores),
            "fleet_hq_kb_per_store_2000": round(synthetic / n / 1024, 1),
            "fleet_hq_docs_per_store": len(kept)}


def bench_fleet(quick: bool) -> dict[str, Any]:
    """The suite's `fleet` section (not in the default run: `--only fleet`)."""
    if quick:
        return asyncio.run(measure(4, 10, 30, "nats"))
    return asyncio.run(measure(20, 30, 180, "nats"))


def main() -> int:
    """`python -m bench.fleet [--stores N] [--window S] [--hub nats|mosquitto]`: one run, a table, a JSON line."""
    ap = argparse.ArgumentParser(prog="python -m bench.fleet")
    ap.add_argument("--stores", type=int, default=20, choices=range(1, 201), metavar="1..200")
    ap.add_argument("--warmup", type=float, default=30.0)
    ap.add_argument("--window", type=float, default=180.0)
    ap.add_argument("--hub", choices=["nats", "mosquitto"], default="nats")
    ap.add_argument("--batch-every", type=int, default=2)
    args = ap.parse_args()
    figures = asyncio.run(measure(args.stores, args.warmup, args.window, args.hub, args.batch_every))
    width = max(len(k) for k in figures)
    for k, v in figures.items():
        print(f"{k:<{width}}  {v}")
    print(orjson.dumps(figures).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
