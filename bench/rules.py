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
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from edge.brokers import Mosquitto
from edge.config import Manifest, parse_manifest
from edge.gateway import Gateway
from edge.processing import StockUpdate
from firmware_sim.world import demo_manifest_text

TOKEN = "bench-token-0123456789abcdef"
UUID = "e2c56db5-dffb-48d2-b060-d0f5a71096e0"


PICK_DEBOUNCE_S = 2.0  # a realistic debounce (longer than the shelf's 0.8 s settle window)


def _manifest(tmp: Path, debounce_s: float = 0.0) -> Manifest:
    raw = yaml.safe_load(demo_manifest_text())
    raw["store"].update(opening_time="00:00", closing_time="00:00")
    raw["storage"] = {"data_dir": str(tmp)}
    raw["api"] = {"listen": "127.0.0.1:0", "tokens": [{"token": TOKEN, "roles": ["admin"], "name": "bench"}]}
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
    return parse_manifest(yaml.safe_dump(raw), "bench-manifest.yaml")


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


async def _sightings(quick: bool) -> dict[str, float]:
    n = 200 if quick else 2000
    rate = 200.0
    with tempfile.TemporaryDirectory(prefix="bench-rules-") as tmp:
        broker = Mosquitto(workdir=Path(tmp) / "mq")
        (Path(tmp) / "mq").mkdir(exist_ok=True)
        broker.start()
        try:
            m = _manifest(Path(tmp) / "var")
            async with Gateway(m, hub_url=broker.url, data_dir=Path(tmp) / "var") as gw:
                now = gw.clock.now()
                gw.pipeline.route(
                    [
                        StockUpdate(
                            shelf="shelf-a1", sku="cola-330", time=now, origin="manual", source="bench", count=20
                        )
                    ],
                    now,
                )
                # the load generator is its own process (2 cores: client and gateway do not share a GIL/loop)
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "bench.rules",
                    "--load",
                    str(gw.api.port),
                    str(n),
                    str(rate),
                    stdout=asyncio.subprocess.PIPE,
                )
                out, _ = await proc.communicate()
                res = orjson.loads(out.splitlines()[-1])
                latencies, errors, offered, elapsed = res["latencies"], res["errors"], res["offered"], res["elapsed"]
                await gw.rules.stop()
        finally:
            broker.stop()
    return {
        "sightings_requests": float(n),
        "sightings_rate_rps": n / elapsed,
        "sightings_p50_ms": statistics.median(latencies) * 1000 if latencies else float("nan"),
        "sightings_p99_ms": _pct(latencies, 0.99) * 1000,
        "sightings_errors": float(errors),
        "sightings_offered": float(offered),
    }


def bench_sightings(quick: bool) -> dict[str, float]:
    """POST /api/v1/sightings -> offer reply, p50/p99 in ms at 200 requests/s (200 requests quick, else 2000)."""
    return asyncio.run(_sightings(quick))


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


async def _shelf_pick_to_alert(quick: bool) -> dict[str, float]:
    from edge.clock import SystemClock
    from firmware_sim.shelf import ShelfSimPart
    from firmware_sim.world import World

    rounds = 3 if quick else 20
    with tempfile.TemporaryDirectory(prefix="bench-rules-") as tmp:
        (Path(tmp) / "mq").mkdir(exist_ok=True)
        broker = Mosquitto(workdir=Path(tmp) / "mq")
        broker.start()
        watcher = _AlertWatcher(broker.port, "retail/v1/demo/alerts")
        base = _manifest(Path(tmp) / "var", PICK_DEBOUNCE_S)
        world = World(base, SystemClock(), fill=1.0)
        part = ShelfSimPart(hz=80.0)  # an HX711 at its 80 samples/s rate
        latencies: list[float] = []
        try:
            sections = await part.start(world, Path(tmp) / "sim", None)
            raw_m = {**base.model_dump(mode="json", exclude_none=True), "devices": sections}
            manifest = parse_manifest(yaml.safe_dump(raw_m), "bench-shelf.yaml")
            async with Gateway(manifest, hub_url=broker.url, data_dir=Path(tmp) / "var") as gw:

                def cola() -> int | None:
                    c = gw.stock.get("shelf-a1", "cola-330")
                    return c.count if c is not None and c.version > 0 else None

                async def until(pred: Any, limit_s: float = 20.0) -> bool:
                    end = time.perf_counter() + limit_s
                    while time.perf_counter() < end:
                        if pred():
                            return True
                        await asyncio.sleep(0.005)
                    return False

                await until(lambda: cola() == 24)
                for _ in range(rounds):
                    before = set(watcher.opened)
                    t0 = time.perf_counter()
                    world.pick("shelf-a1", "l1", world.count("shelf-a1", "cola-330") - 2)
                    if await until(lambda b=before: set(watcher.opened) - b):
                        with watcher.lock:
                            latencies.append(watcher.opened[(set(watcher.opened) - before).pop()] - t0)
                    world.receive("cola-330", 24)
                    world.restock("shelf-a1", "l1")
                    await until(lambda: not gw.rules.engine.book.live)
                await gw.rules.stop()
        finally:
            await part.stop()
            watcher.close()
            broker.stop()
    p50 = statistics.median(latencies) * 1000 if latencies else float("nan")
    p99 = _pct(latencies, 0.99) * 1000
    return {
        "shelf_pick_to_alert_rounds": float(len(latencies)),
        "shelf_pick_debounce_s": PICK_DEBOUNCE_S,
        "shelf_pick_to_alert_p50_ms": p50,
        "shelf_pick_to_alert_p99_ms": p99,
        "shelf_pick_to_alert_p99_over_debounce_ms": p99 - PICK_DEBOUNCE_S * 1000,
        "shelf_pick_to_alert_p99_over_p50": p99 / p50 if p50 else float("nan"),
    }


def bench_pick_to_alert(quick: bool) -> dict[str, float]:
    """A pick on the simulated serial weight shelf taking cola below min -> alert opened on MQTT, p50/p99 ms.

    Includes the shelf's settle window and the serial link; also reports the pipeline-only figure
    (`stock_to_alert_*`) from `bench_stock_to_alert`.
    """
    return {**asyncio.run(_shelf_pick_to_alert(quick)), **bench_stock_to_alert(quick)}


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--load":
        lat, err, off, el = asyncio.run(_load(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])))
        print(orjson.dumps({"latencies": lat, "errors": err, "offered": off, "elapsed": el}).decode())
        raise SystemExit(0)
    q = "--quick" in sys.argv
    print(orjson.dumps({**bench_sightings(q), **bench_pick_to_alert(q)}).decode())
