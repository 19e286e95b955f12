"""Benchmarks of the rules engine and the local API (not timed assertions: they return figures).

- `bench_sightings`: POST /api/v1/sightings -> offer reply latency, open-loop at 200 requests/s against a
  running gateway (private mosquitto as the hub, API on a loopback port).
- `bench_pick_to_alert`: a pick on the simulated serial weight shelf (firmware_sim.shelf, real driver over a
  pty, shelf processor with its settle window) that takes a cell below min -> `retail.alert.opened.v1`
  received by an MQTT subscriber of the hub; plus `bench_stock_to_alert`, the same from a weight-origin
  StockUpdate handed to the gateway's pipeline (rules + outbox + uplink only).
"""

from __future__ import annotations

import asyncio
import gc
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from bench.load import LoadDriver, LoadProcessor
from bench.paced import PacedLoadDriver
from bench.runtime import runtime_python
from bench.spine import GatewayProc, Subscriber
from edge.brokers import Mosquitto, free_port, wait_port
from edge.cli import settle_heap
from edge.config import Manifest, parse_manifest
from edge.gateway import Gateway
from edge.processing import StockUpdate
from firmware_sim.world import demo_manifest_text

REPO = Path(__file__).resolve().parent.parent
ROOT = "retail/v1/demo"
TOKEN = "bench-token-0123456789abcdef"
UUID = "e2c56db5-dffb-48d2-b060-d0f5a71096e0"


PICK_DEBOUNCE_S = 2.0  # a realistic debounce (longer than the shelf's 0.8 s settle window)


def _manifest_raw(tmp: Path, debounce_s: float = 0.0, api_listen: str = "127.0.0.1:0") -> dict[str, Any]:
    """The demo store (no devices) with the bench's token, restock defaults, one beacon and one offer."""
    raw: dict[str, Any] = yaml.safe_load(demo_manifest_text())
    raw["store"].update(opening_time="00:00", closing_time="00:00")
    raw["storage"] = {"data_dir": str(tmp)}
    raw["api"] = {"listen": api_listen, "tokens": [{"token": TOKEN, "roles": ["admin"], "name": "bench"}]}
    raw["rules"] = {"defaults": {"min": 3, "debounce_s": debounce_s, "cooldown_s": 0, "clear_margin": 1}}
    raw["offers"] = {
        "retention_s": 60,
        "beacons": [{"id": "b1", "zone": "aisle-1", "uuid": UUID, "major": 1, "minor": 1}],
        "offers": [
            {
                "id": "o1",
                "zone": "aisle-1",
                "sku": "cola-330",
                "title": "Bench offer",
                "min_dwell_s": 0,
                "per_shopper_max": 1_000_000,
                "per_shopper_cooldown_s": 0,
                "global_max_per_hour": 1_000_000,
            }
        ],
    }
    return raw


def _manifest(tmp: Path, debounce_s: float = 0.0) -> Manifest:
    return parse_manifest(yaml.safe_dump(_manifest_raw(tmp, debounce_s)), "bench-manifest.yaml")


def _pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p * (len(s) - 1))))] if s else float("nan")


async def _load(port: int, n: int, rate: float) -> tuple[list[float], int, int, float]:
    """Open-loop POST /api/v1/sightings at `rate` per second: (latencies s, errors, offers, elapsed s)."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    latencies: list[float] = []
    errors = 0
    offered = 0
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", headers=headers, limits=limits, timeout=10
    ) as client:

        async def one(i: int) -> None:
            nonlocal errors, offered
            body = {"shopper": f"s{i % 50}", "consent": True, "beacon": {"uuid": UUID, "major": 1, "minor": 1}}
            t0 = time.perf_counter()
            try:
                r = await client.post("/api/v1/sightings", json=body)
            except httpx.HTTPError:
                errors += 1
                return
            latencies.append(time.perf_counter() - t0)
            if r.status_code != 200:
                errors += 1
            elif r.json()["offers"]:
                offered += 1

        await one(-1)  # warm up
        latencies.clear()
        offered = 0
        start = time.perf_counter()
        tasks = []
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        return latencies, errors, offered, time.perf_counter() - start


async def _seed_stock(manifest: Manifest, hub_url: str, data_dir: Path) -> None:
    """Put 20 of the promoted SKU on its shelf (offers are made only for what is on the shelf): a short
    in-process gateway run on the daemon's data directory; the daemon loads the stock when it starts."""
    async with Gateway(manifest, hub_url=hub_url, data_dir=data_dir) as gw:
        now = gw.clock.now()
        gw.pipeline.route(
            [StockUpdate(shelf="shelf-a1", sku="cola-330", time=now, origin="manual", source="bench", count=20)], now
        )
        await gw.outbox.flush()


def _sightings(quick: bool) -> dict[str, float | str]:
    """The daemon as deployed (`python -m edge run` from the runtime venv, see bench/runtime.py) with its
    API on a loopback port and a private mosquitto as the hub; the load generator is its own process (2
    cores: client and gateway do not share a GIL or an event loop)."""
    n = 200 if quick else 2000
    rate = 200.0
    python, note = runtime_python()
    with tempfile.TemporaryDirectory(prefix="bench-rules-") as tmp:
        work = Path(tmp)
        broker = Mosquitto(workdir=work / "mq")
        broker.start()
        try:
            port = free_port()
            raw = _manifest_raw(work / "var", api_listen=f"127.0.0.1:{port}")
            asyncio.run(_seed_stock(parse_manifest(yaml.safe_dump(raw), "bench-manifest.yaml"), broker.url,
                                    work / "var"))
            raw["hub"]["url"] = broker.url
            gw = GatewayProc(raw, work, plain=True, python=python)
            try:
                wait_port(port, 60)
                load = subprocess.run(
                    [sys.executable, "-m", "bench.rules", "--load", str(port), str(n), str(rate)],
                    stdout=subprocess.PIPE, cwd=REPO, check=True, timeout=300,
                )
            finally:
                gw.stop()
        finally:
            broker.stop()
    res = orjson.loads(load.stdout.splitlines()[-1])
    latencies, errors, offered, elapsed = res["latencies"], res["errors"], res["offered"], res["elapsed"]
    return {
        "sightings_requests": float(n),
        "sightings_rate_rps": n / elapsed,
        "sightings_p50_ms": statistics.median(latencies) * 1000 if latencies else float("nan"),
        "sightings_p99_ms": _pct(latencies, 0.99) * 1000,
        "sightings_errors": float(errors),
        "sightings_offered": float(offered),
        "sightings_python": note,
    }


def bench_sightings(quick: bool) -> dict[str, float | str]:
    """POST /api/v1/sightings -> offer reply, p50/p99 in ms at 200 requests/s (200 requests quick, else 2000)."""
    return _sightings(quick)


class _AlertWatcher:
    """An MQTT subscriber of the hub side that timestamps every alert-opened event on arrival."""

    def __init__(self, port: int, topic: str) -> None:
        self.opened: dict[str, float] = {}
        self.lock = threading.Lock()
        ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{uuid.uuid4().hex[:8]}")
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not ready.wait(10):
            raise TimeoutError("could not subscribe")

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        t = time.perf_counter()
        body = orjson.loads(msg.payload)
        for ev in body if isinstance(body, list) else [body]:
            if ev.get("type") == "retail.alert.opened.v1":
                with self.lock:
                    self.opened[str(ev["data"]["alert_id"])] = t

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


async def _pick_to_alert(quick: bool) -> dict[str, float]:
    rounds = 20 if quick else 200
    with tempfile.TemporaryDirectory(prefix="bench-rules-") as tmp:
        (Path(tmp) / "mq").mkdir(exist_ok=True)
        broker = Mosquitto(workdir=Path(tmp) / "mq")
        broker.start()
        watcher = _AlertWatcher(broker.port, "retail/v1/demo/alerts")
        latencies: list[float] = []
        try:
            m = _manifest(Path(tmp) / "var")
            async with Gateway(m, hub_url=broker.url, data_dir=Path(tmp) / "var") as gw:
                await asyncio.sleep(0.5)  # uplink connected
                for _ in range(rounds):
                    now = gw.clock.now()
                    gw.pipeline.route(
                        [
                            StockUpdate(
                                shelf="shelf-a1", sku="cola-330", time=now, origin="manual", source="bench", count=20
                            )
                        ],
                        now,
                    )
                    await asyncio.sleep(0.02)
                    before = set(watcher.opened)
                    t0 = time.perf_counter()
                    now = gw.clock.now()
                    gw.pipeline.route(
                        [
                            StockUpdate(
                                shelf="shelf-a1", sku="cola-330", time=now, origin="weight", source="bench", count=2
                            )
                        ],
                        now,
                    )
                    deadline = t0 + 5
                    while time.perf_counter() < deadline:
                        with watcher.lock:
                            new = set(watcher.opened) - before
                            if new:
                                latencies.append(watcher.opened[new.pop()] - t0)
                                break
                        await asyncio.sleep(0.001)
                await gw.rules.stop()
        finally:
            watcher.close()
            broker.stop()
    return {
        "pick_to_alert_rounds": float(len(latencies)),
        "pick_to_alert_p50_ms": statistics.median(latencies) * 1000 if latencies else float("nan"),
        "pick_to_alert_p99_ms": _pct(latencies, 0.99) * 1000,
    }


def bench_stock_to_alert(quick: bool) -> dict[str, float]:
    """Weight-origin stock claim below min (at the pipeline) -> alert opened on the hub's MQTT, p50/p99 in ms."""
    return {k.replace("pick_to_alert", "stock_to_alert"): v for k, v in asyncio.run(_pick_to_alert(quick)).items()}


# ---- pick -> alert on the serial weight shelf, under half of the sustainable load ----------------------
#
# The simulated shelf controller runs in its own process (a real controller is its own MCU: its 80 Hz
# frames must not wait for the gateway's event loop), the hub side is two `mosquitto_sub` (C) processes that
# timestamp arrivals, and the background load is a `PacedLoadDriver` device inside the gateway whose
# events (ledger class, `events/test`) go through the whole pipeline, outbox and uplink to the hub.

SHELF = "shelf-a1"
PICK_LEFT = 2  # a pick leaves 2 on the lane: below min 3, above out-of-stock
OK_SHARE = 0.95  # a rate is sustained when the hub receives at least this share of it ...
BEHIND_S = 0.25  # ... and, at the end of the step, the hub is at most this long (at that rate) behind


class _SimShelf:
    """The demo's serial shelf controller simulator (firmware_sim.shelf) in a child process, over stdin/stdout.

    Only the serial shelf: with the Modbus shelf too, stopping the gateway sometimes hung for good (the Modbus
    driver's task stayed "cancelling" while it kept polling; see docs/benchmarks.md)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lock = asyncio.Lock()

    @classmethod
    async def start(cls, workdir: Path, manifest_file: Path, log: Path) -> tuple[_SimShelf, list[dict[str, Any]]]:
        """Start the child; returns it and the manifest device sections pointing at its ptys."""
        with log.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.rules", "--shelf-sim", str(workdir), str(manifest_file),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=err, cwd=REPO,
            )
        sim = cls(proc)
        try:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            sections: list[dict[str, Any]] = orjson.loads(line)["sections"]
        except BaseException:
            await sim.stop()
            tail = (await asyncio.to_thread(log.read_text))[-2000:]
            raise RuntimeError(f"the shelf simulator did not start: {tail}") from None
        return sim, sections

    async def cmd(self, verb: str, lane: str) -> float:
        """`pick` (down to PICK_LEFT) or `restock` a lane of SHELF; returns the wall time it happened."""
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        async with self.lock:
            self.proc.stdin.write(f"{verb} {lane}\n".encode())
            await self.proc.stdin.drain()
            return float(orjson.loads(await asyncio.wait_for(self.proc.stdout.readline(), 10))["t"])

    async def stop(self) -> None:
        """Close its stdin (it stops its simulators and exits); kill it by PID if it does not."""
        if self.proc.returncode is not None:
            return
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 5)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


async def _shelf_sim_main(workdir: str, manifest_file: str) -> None:
    """The child: World + the serial shelf at 80 Hz; one JSON line of sections, then one reply per command."""
    from edge.clock import SystemClock
    from firmware_sim.shelf import SerialShelfSim, lane_sections, lanes_for
    from firmware_sim.world import World

    def reply(obj: dict[str, Any]) -> None:
        sys.stdout.write(orjson.dumps(obj).decode() + "\n")
        sys.stdout.flush()

    m = parse_manifest(await asyncio.to_thread(Path(manifest_file).read_text), manifest_file)
    world = World(m, SystemClock(), fill=1.0)
    lanes = lanes_for(world, SHELF)
    part = SerialShelfSim(world, Path(workdir) / f"{SHELF}.tty", lanes, hz=80.0)  # an HX711 at 80 samples/s
    part.start()
    zone = world.lanes[(SHELF, lanes[0].lane)].zone
    reply({"sections": [{"id": f"{SHELF}-ctrl", "type": "shelf_serial", "zone": zone, "port": str(part.port.link),
                         "lanes": lane_sections(lanes)}]})
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while words := (await reader.readline()).decode().split():
            lane = world.lanes[(SHELF, words[1])]
            if words[0] == "pick":
                world.pick(SHELF, lane.lane, lane.count - PICK_LEFT)
            else:
                world.receive(lane.sku, lane.capacity)
                world.restock(SHELF, lane.lane)
            reply({"t": time.time(), "count": lane.count})
    finally:
        await part.stop()


class _HubEvents:
    """Events as a hub `mosquitto_sub` received them: (receive wall time, CloudEvent), read as they come."""

    def __init__(self, sub: Subscriber) -> None:
        self.sub = sub
        self.seen: list[tuple[float, dict[str, Any]]] = []
        self._offset = 0

    def poll(self) -> None:
        """Read complete new lines."""
        with self.sub.out.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self._offset += end
        for line in data[:end].splitlines():
            parts = line.split(b" ", 2)
            if len(parts) == 3:
                body = orjson.loads(parts[2])
                for ev in body if isinstance(body, list) else [body]:
                    self.seen.append((float(parts[0]), ev))

    def find(self, kind: str, sku: str, after: float, count: int | None = None) -> tuple[float, float] | None:
        """The first `retail.<kind>.v1` (e.g. `alert.opened`) of SKU on SHELF (with that `count`) received after
        `after`: (receive time, the event's time)."""
        for t, ev in self.seen:
            data = ev.get("data") or {}
            if t >= after and ev.get("type") == f"retail.{kind}.v1" and data.get("sku") == sku \
                    and data.get("shelf") == SHELF and (count is None or data.get("count") == count):
                return t, datetime.fromisoformat(ev["time"]).timestamp()
        return None


async def _until(pred: Any, limit_s: float, step_s: float = 0.01) -> Any:
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        if got := pred():
            return got
        await asyncio.sleep(step_s)
    return None


async def _ramp(gw: Gateway, drv: PacedLoadDriver, hub: Subscriber, quick: bool) -> tuple[float, list[str]]:
    """The sustainable load: the highest rate the gateway carries to the hub with the backlog bounded (at least
    OK_SHARE of it arrives during a step, and at the step's end the hub is at most BEHIND_S behind the
    schedule). Steps from 1,000/s double up (or halve down) to bracket it, then bisect. Between steps the load
    stops and the hub catches up. Returns the rate and every step as text."""
    step_s, settle_s = (1.0, 0.3) if quick else (3.0, 0.5)
    base = hub.count() - drv.produced  # events of the load source at the hub = hub.count() - base
    steps: list[str] = []

    async def step(rate: float) -> bool:
        drv.set_rate(rate)
        await asyncio.sleep(settle_s)
        t0, h0 = time.monotonic(), hub.count()
        depth = 0
        while time.monotonic() < t0 + step_s:
            await asyncio.sleep(0.05)
            depth = max(depth, gw.outbox.depth)
        t1, h1 = time.monotonic(), hub.count()
        achieved = (h1 - h0) / (t1 - t0)
        behind = drv.due() - (h1 - base)
        ok = achieved >= OK_SHARE * rate and behind <= max(100.0, BEHIND_S * rate)
        steps.append(f"{rate:.0f}:{'ok' if ok else 'over'}@{achieved:.0f} behind {behind:.0f} depth {depth}")
        drv.set_rate(0)
        drv.skip_backlog()
        await _until(lambda: hub.count() - base >= drv.produced, 30, 0.05)  # the hub caught up
        return ok

    lo, hi = 0.0, 0.0
    rate = 1000.0
    if await step(rate):
        lo = rate
        while lo < 64_000 and await step(lo * 2):
            lo *= 2
        hi = lo * 2
    else:
        hi = rate
        while hi > 125 and not await step(hi / 2):
            hi /= 2
        lo = hi / 2 if hi > 125 else 0.0
    for _ in range(3 if quick else 4):
        mid = round((lo + hi) / 2 / 50) * 50
        if hi - lo <= 100 or mid in (lo, hi):
            break
        if await step(mid):
            lo = mid
        else:
            hi = mid
    return lo, steps


class _GcPauses:
    """A `gc.callbacks` hook: how many full (oldest-generation) collections ran and the longest pause of any."""

    def __init__(self) -> None:
        self.full = 0
        self.longest = 0.0
        self._t = 0.0

    def observe(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t = time.perf_counter()
            return
        self.longest = max(self.longest, time.perf_counter() - self._t)
        self.full += info["generation"] == 2


async def _shelf_pick_to_alert(quick: bool) -> dict[str, float | str]:
    rounds_per_lane, budget_s = (6, 14.0) if quick else (50, 240.0)
    lanes = ("l1", "l2")
    with tempfile.TemporaryDirectory(prefix="bench-rules-") as tmp:
        work = Path(tmp)
        (work / "mq").mkdir()
        (work / "sim").mkdir()
        broker = Mosquitto(workdir=work / "mq")
        broker.start()
        alerts_sub = Subscriber(broker.port, f"{ROOT}/alerts", work / "alerts.txt")
        load_sub = Subscriber(broker.port, f"{ROOT}/events/test", work / "load.txt")
        stock_sub = Subscriber(broker.port, f"{ROOT}/events/stock", work / "stock.txt")
        hub_alerts, hub_stock = _HubEvents(alerts_sub), _HubEvents(stock_sub)
        base = _manifest(work / "var", PICK_DEBOUNCE_S)
        (work / "base.yaml").write_text(yaml.safe_dump(base.model_dump(mode="json", exclude_none=True)))
        sim: _SimShelf | None = None
        latencies: list[float] = []
        missed = 0
        lags: list[float] = []
        raised: list[float] = []
        to_hub: list[float] = []
        stamped: list[float] = []
        late: list[float] = []
        parts: list[tuple[float, float, float, float]] = []  # per round: over the debounce = stamp + late + to hub
        gc_pauses = _GcPauses()
        try:
            sim, sections = await _SimShelf.start(work / "sim", work / "base.yaml", work / "sim.log")
            raw_m = {**base.model_dump(mode="json", exclude_none=True), "devices": sections}
            manifest = parse_manifest(yaml.safe_dump(raw_m), "bench-shelf.yaml")
            drv = PacedLoadDriver("load-bg")
            gw = Gateway(manifest, hub_url=broker.url, data_dir=work / "var", extra_drivers=[(drv, "load")])
            gw.pipeline.add_processor(LoadProcessor())
            async with gw:
                settle_heap()  # as `edge-gateway run` does once started (edge/cli.py)
                capacity = {ln.id: ln.capacity for ln in (manifest.shelf(SHELF) or _no_shelf()).lanes}
                sku = {ln.id: ln.sku for ln in (manifest.shelf(SHELF) or _no_shelf()).lanes}

                def full() -> bool:
                    cells = {c.sku: c.count for c in gw.stock.cells(shelf=SHELF) if c.version > 0}
                    return all(cells.get(sku[ln]) == capacity[ln] for ln in lanes)

                if not await _until(full, 30):
                    raise RuntimeError("the gateway never saw the simulated shelf full")
                await _until(gw.uplink.connected.is_set, 10)
                sustainable, steps = await _ramp(gw, drv, load_sub, quick)
                background = sustainable / 2
                drv.set_rate(background)
                await asyncio.sleep(1.0)  # steady state before the first pick

                async def probe() -> None:  # event-loop lag and outbox depth while the rounds run
                    while True:
                        t = time.perf_counter()
                        await asyncio.sleep(0.01)
                        lags.append(time.perf_counter() - t - 0.01)
                        depths.append(gw.outbox.depth)

                async def lane_rounds(lane: str, start_delay: float) -> None:
                    nonlocal missed
                    await asyncio.sleep(start_delay)
                    for _ in range(rounds_per_lane):
                        if time.monotonic() > stop_at:
                            return
                        t_pick = await shelf.cmd("pick", lane)
                        got = await _until(lambda t=t_pick: hub_alerts.find("alert.opened", sku[lane], t),
                                           PICK_DEBOUNCE_S + 10)
                        if got is None:
                            missed += 1
                        else:
                            latencies.append(got[0] - t_pick)
                            raised.append(got[1] - t_pick)  # the alert event's time: when the gateway raised it
                            to_hub.append(got[0] - got[1])
                            hub_stock.poll()
                            changed = hub_stock.find("stock.changed", sku[lane], t_pick, PICK_LEFT)
                            if changed is not None:  # its time: the first reading of the settled weight
                                stamped.append(changed[1] - t_pick)
                                late.append(got[1] - changed[1] - PICK_DEBOUNCE_S)
                                parts.append((got[0] - t_pick - PICK_DEBOUNCE_S, stamped[-1], late[-1], to_hub[-1]))
                        t_restock = await shelf.cmd("restock", lane)
                        await _until(lambda t=t_restock: hub_alerts.find("alert.resolved", sku[lane], t), 15)
                        await _until(full, 10)
                        await asyncio.sleep(random.uniform(0.05, 0.3))  # decorrelate from the 80 Hz frames

                async def poll_alerts() -> None:
                    while True:
                        hub_alerts.poll()
                        await asyncio.sleep(0.01)

                shelf = sim
                depths: list[int] = []
                t0, h0 = time.monotonic(), load_sub.count()
                stop_at = t0 + budget_s
                helpers = [asyncio.create_task(probe()), asyncio.create_task(poll_alerts())]
                gc.callbacks.append(gc_pauses.observe)
                try:
                    await asyncio.gather(*(lane_rounds(ln, i * PICK_DEBOUNCE_S / 2) for i, ln in enumerate(lanes)))
                finally:
                    gc.callbacks.remove(gc_pauses.observe)
                    for task in helpers:
                        task.cancel()
                    await asyncio.gather(*helpers, return_exceptions=True)
                achieved = (load_sub.count() - h0) / (time.monotonic() - t0)
                drv.set_rate(0)
                await gw.rules.stop()
        finally:
            gc.unfreeze()
            if sim is not None:
                await sim.stop()
            alerts_sub.close()
            load_sub.close()
            stock_sub.close()
            broker.stop()
    p50 = statistics.median(latencies) * 1000 if latencies else float("nan")
    p99 = _pct(latencies, 0.99) * 1000
    return {
        "rules_sustainable_load_eps": sustainable,
        "rules_load_steps": ", ".join(steps),
        "rules_background_load_eps": achieved,
        "rules_background_outbox_depth_max": float(max(depths, default=0)),
        "rules_loop_lag_p99_ms": _pct(lags, 0.99) * 1000,
        "rules_loop_lag_max_ms": max(lags, default=float("nan")) * 1000,
        "rules_gc_full_collections": float(gc_pauses.full),
        "rules_gc_pause_max_ms": gc_pauses.longest * 1000,
        "shelf_pick_to_alert_rounds": float(len(latencies)),
        "shelf_pick_to_alert_missed": float(missed),
        "shelf_pick_debounce_s": PICK_DEBOUNCE_S,
        "shelf_pick_to_alert_p50_ms": p50,
        "shelf_pick_to_alert_p99_ms": p99,
        "shelf_pick_to_alert_max_ms": max(latencies, default=float("nan")) * 1000,
        # where the time goes (wall clock of this machine; event times are the gateway's clock, the same one):
        # pick -> the time stamped on the StockChanged (sampling + serial + driver read), then the debounce
        # deadline's lateness (raised - stamp - debounce), then raised -> received by the hub (outbox + uplink)
        "shelf_pick_to_stamp_p99_ms": _pct(stamped, 0.99) * 1000,
        "shelf_deadline_late_p99_ms": _pct(late, 0.99) * 1000,
        "shelf_pick_to_alert_raised_p99_ms": _pct(raised, 0.99) * 1000,
        "shelf_alert_raised_to_hub_p50_ms": _pct(to_hub, 0.5) * 1000,
        "shelf_alert_raised_to_hub_p99_ms": _pct(to_hub, 0.99) * 1000,
        "shelf_pick_to_alert_slowest": ", ".join(
            "{:.0f}={:.0f}+{:.0f}+{:.0f}".format(*(1000 * x for x in r)) for r in sorted(parts, reverse=True)[:3]
        ),
        "shelf_pick_to_alert_p99_over_debounce_ms": p99 - PICK_DEBOUNCE_S * 1000,
        "shelf_pick_to_alert_p99_over_p50": p99 / p50 if p50 else float("nan"),
    }


def _no_shelf() -> Any:
    raise RuntimeError(f"the demo manifest has no {SHELF}")


def bench_pick_to_alert(quick: bool) -> dict[str, float | str]:
    """A pick on the simulated serial weight shelf taking a lane below min -> alert opened on MQTT, p50/p99 ms,
    while a background device produces half of the gateway's sustainable load through the whole pipeline.

    First finds the sustainable load (`rules_sustainable_load_eps`: a ramp, see `_ramp`), then runs pick
    rounds on two lanes at half of it (`rules_background_load_eps`: achieved at the hub). Includes the
    shelf's settle window and the serial link; also reports the idle pipeline-only figure
    (`stock_to_alert_*`) from `bench_stock_to_alert`.
    """
    return {**asyncio.run(_shelf_pick_to_alert(quick)), **bench_stock_to_alert(quick)}


# ---- a staff alert behind a backlog read back from disk after an outage -------------------------------


async def alert_behind_backlog(workdir: Path, backlog: int = 20_000) -> dict[str, float]:
    """The hub (a persistent private mosquitto, its subscriber's session kept) is down while `backlog` ledger
    events and one real low-stock alert are committed; the hub comes back, and once the backlog is flowing a
    second alert (a stock-out) is raised. Returns where the alerts arrived among the backlog and how long the
    live one took from being raised to reaching the hub's subscriber (batching off, the default)."""
    broker = Mosquitto(workdir=workdir / "hub", persistent=True)
    (workdir / "hub").mkdir(parents=True, exist_ok=True)
    broker.start()
    sub = Subscriber(broker.port, f"{ROOT}/#", workdir / "hub.txt", client_id="hub-backlog", persistent=True)
    try:
        broker.stop()  # the subscriber's session (and subscription) survives in the broker's persistence
        raw = _manifest_raw(workdir / "var")
        raw["api"] = {"enabled": False}
        raw["hub"] = {**raw.get("hub", {}), "url": broker.url, "reconnect_min": 0.1, "reconnect_max": 0.5}
        m = parse_manifest(yaml.safe_dump(raw), "bench-manifest.yaml")
        bulk = LoadDriver("dev-bulk", backlog, per_tick=backlog)
        gw = Gateway(m, hub_url=broker.url, data_dir=workdir / "var", extra_drivers=[(bulk, "counting")])
        gw.pipeline.add_processor(LoadProcessor())
        async with gw:
            await _wait(lambda: gw.outbox.depth >= backlog and gw.rules.engine.ready, 120, "backlog committed")
            now = gw.clock.now()
            gw.pipeline.route([StockUpdate(shelf="shelf-a1", sku="cola-330", time=now, origin="weight",
                                           source="bench-shelf", count=2)], now)  # low stock during the outage
            await _wait(lambda: len(gw.rules.engine.book.live) == 1, 30, "outage alert raised")
            await gw.outbox.flush()
            await asyncio.to_thread(broker.start)
            await _wait(lambda: sub.count() >= 1_000, 60, "backlog flowing")
            now = gw.clock.now()
            raised = time.time()
            gw.pipeline.route([StockUpdate(shelf="shelf-b1", sku="choc-100", time=now, origin="weight",
                                           source="bench-shelf", count=0)], now)  # a stock-out while it drains
            hub_log = workdir / "hub.txt"

            def delivered() -> bool:
                data = hub_log.read_bytes()
                done = data.count(b'"type":"test.counted.v1"') >= backlog
                return done and data.count(b'"retail.alert.opened.v1"') >= 2

            await _wait(delivered, 180, "everything delivered")
            await _wait(lambda: gw.outbox.depth == 0, 30, "outbox drained")
        arrivals = [(t, orjson.loads(p)) for t, topic, p in sub.lines() if "/events/" in topic or "/alerts" in topic]
        kinds = [("bulk" if str(e.get("type", "")).startswith("test.") else
                  "alert" if str(e.get("type", "")).startswith("retail.alert.") else "other", e, t)
                 for t, e in arrivals]
        bulk_pos = [i for i, (k, _, _) in enumerate(kinds) if k == "bulk"]
        alerts = [(i, e, t) for i, (k, e, t) in enumerate(kinds) if k == "alert"]
        outage = next((i, t) for i, e, t in alerts if e["data"]["kind"] == "low_stock")
        live = next((i, t) for i, e, t in alerts if e["data"]["kind"] == "out_of_stock")
        ns = [int(e["data"]["n"]) for k, e, _ in kinds if k == "bulk"]
        return {
            "alert_behind_backlog_ms": round((live[1] - raised) * 1000, 1),
            "backlog_events": float(backlog),
            "backlog_before_outage_alert": float(sum(1 for i in bulk_pos if i < outage[0])),
            "backlog_after_live_alert": float(sum(1 for i in bulk_pos if i > live[0])),
            "backlog_in_order": float(ns == sorted(ns) and len(set(ns)) == backlog),
            "alerts_in_order": float([e["data"]["kind"] for _, e, _ in alerts] == ["low_stock", "out_of_stock"]),
        }
    finally:
        sub.close()
        broker.stop()


async def _wait(pred: Callable[[], object], limit_s: float, what: str) -> None:
    deadline = time.monotonic() + limit_s
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {limit_s} s")
        await asyncio.sleep(0.02)


def bench_alert_behind_backlog(quick: bool) -> dict[str, float]:
    """A staff alert raised while 20,000 events queued during a hub outage drain (batching off): ms from
    raised to received by the hub's subscriber, and how many backlog events arrived after it (not a timed
    assertion; the goal is <= 1,000 ms)."""
    del quick  # one run of the goal's size either way (about ten seconds)
    with tempfile.TemporaryDirectory(prefix="bench-alert-") as tmp:
        return asyncio.run(alert_behind_backlog(Path(tmp), 20_000))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--load":
        # The load generator's own full collections (this process imports the gateway's modules) would stall
        # its event loop and count as reply latency: what is loaded by now is kept out of the collector's sight.
        gc.collect()
        gc.freeze()
        lat, err, off, el = asyncio.run(_load(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])))
        print(orjson.dumps({"latencies": lat, "errors": err, "offered": off, "elapsed": el}).decode())
        raise SystemExit(0)
    if len(sys.argv) == 4 and sys.argv[1] == "--shelf-sim":
        asyncio.run(_shelf_sim_main(sys.argv[2], sys.argv[3]))
        raise SystemExit(0)
    q = "--quick" in sys.argv
    print(orjson.dumps({**bench_sightings(q), **bench_pick_to_alert(q)}).decode())
