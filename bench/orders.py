"""Online orders (issue 16; docs/benchmarks.md): `cmd/order.reserve` -> reply latency at 50 orders/s over MQTT
while the simulated store's devices run.

The real gateway (pipeline, outbox with SQLite and fsync, uplink, rules, orders) against a private mosquitto
on loopback, with the demo's shelf, RFID and door simulators feeding it and a random shopper every second
(`World.step`); the simulators run in a child process (`python -m bench.orders sims <dir> <broker url>`), as a
store's devices are not in the gateway's process. The hub is a paho client that signs each request as
docs/commands.md says (firmware_sim.hub.signed) and sends it at a fixed pace of 50 per second; the latency is
from just before the publish to the reply's arrival (the reply comes after the order and its events are
committed). Each order asks for 1-2 units of a random catalog SKU: once a SKU's ATP is used up its orders are
short (still committed).
Bounded: `n` orders, then the run ends. Figures are measured, not asserted (goal: p99 <= 20 ms).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from edge.brokers import Mosquitto
from edge.clock import SystemClock
from edge.config import parse_manifest
from edge.gateway import Gateway
from edge.tcp import no_delay, quick_ack
from firmware_sim.hub import signed
from firmware_sim.world import World, demo_manifest_text

ROOT = "retail/v1/demo"
KID, SECRET = "bench", "bench-command-key-0123456789abcdef"
RATE = 50.0
REPO = Path(__file__).resolve().parents[1]


class _Hub:
    """Sends signed order.reserve requests and times their replies (receive time by request id).

    Its socket has the options our own MQTT sessions use (edge/tcp.py): no Nagle, and the broker's PUBACK
    acknowledged at once. With paho's defaults (`plain`, `python -m bench.orders --plain-hub`) the hub's own
    kernel held each request behind the previous PUBACK, and mosquitto (Nagle on by default) held each reply
    until the hub's delayed ACK or its next request: 0-20 ms each way at 50 requests/s, p50 20 ms of the
    reply time while the gateway's own part was ~2 ms (docs/orders.md). A hub that times its replies tunes
    its client as we tune ours; the broker is left as installed.
    """

    def __init__(self, port: int, *, plain: bool = False) -> None:
        self.sent: dict[str, float] = {}
        self.got: dict[str, tuple[float, bool]] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.me = f"bench-{uuid.uuid4().hex[:8]}"
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.me)
        self.client.on_connect = lambda c, *_: c.subscribe(f"{ROOT}/reply/{self.me}/#", qos=1)
        self.client.on_subscribe = lambda *_: self._ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=30)
        if not plain:
            no_delay(self.client.socket())
            self.client.on_publish = lambda c, *_: quick_ack(c.socket())
        self.client.loop_start()
        if not self._ready.wait(10):
            raise TimeoutError("bench hub could not subscribe")

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        t = time.perf_counter()
        body = orjson.loads(msg.payload)
        with self._lock:
            self.got.setdefault(str(body.get("id")), (t, bool(body.get("ok"))))

    def send(self, rid: str, args: dict[str, Any]) -> None:
        """Sign and publish one request (QoS 1)."""
        req = signed({"id": rid, "reply_to": f"{ROOT}/reply/{self.me}/{rid}", **args},
                     topic=f"{ROOT}/cmd/order.reserve", kid=KID, secret=SECRET)  # fmt: skip
        payload = orjson.dumps(req)
        self.sent[rid] = time.perf_counter()
        self.client.publish(f"{ROOT}/cmd/order.reserve", payload, qos=1)

    def close(self) -> None:
        """Disconnect."""
        self.client.loop_stop()
        self.client.disconnect()


async def _sims_main(work: Path, broker_url: str) -> None:
    """The child: the demo's shelf, RFID and door simulators and a random shopper every second; prints the
    device sections as one JSON line, runs until its stdin closes."""
    from edge.demo import sim_parts  # the demo's simulators (composition-root code; the bench may use it)

    world = World(parse_manifest(demo_manifest_text(), "demo_manifest.yaml"), SystemClock())
    devices: list[dict[str, Any]] = []
    started = []
    for part in [p for p in sim_parts() if p.name in ("shelf", "rfid", "door")]:
        try:
            devices += await part.start(world, work / part.name, broker_url)
            started.append(part)
        except Exception:  # a simulator that cannot run here: the others still load the gateway
            continue
    print(orjson.dumps(devices, option=orjson.OPT_NON_STR_KEYS).decode(), flush=True)
    life = asyncio.create_task(_store_life(world))
    try:
        await asyncio.to_thread(sys.stdin.read)
    finally:
        life.cancel()
        for part in started:
            await part.stop()


async def _run(broker: Mosquitto, work: Path, n: int, plain_hub: bool) -> tuple[list[float], int, int]:
    clock = SystemClock()
    sims = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.orders", "sims", str(work), broker.url, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, cwd=REPO)  # fmt: skip
    try:
        assert sims.stdout is not None
        line = await asyncio.wait_for(sims.stdout.readline(), 60)
        devices: list[dict[str, Any]] = orjson.loads(line)
        raw: dict[str, Any] = yaml.safe_load(demo_manifest_text())
        raw["devices"] = devices
        raw["api"] = {"enabled": False}
        raw["storage"] = {"data_dir": str(work / "var")}
        raw["local_broker"] = {"url": broker.url}
        raw["hub"] = {**raw.get("hub", {}), "commands": {"keys": [{"id": KID, "secret": SECRET}]}}
        raw["store"] = {**raw["store"], "opening_time": "00:00", "closing_time": "00:00"}
        manifest = parse_manifest(yaml.safe_dump(raw, sort_keys=False), "bench-orders.yaml")
        skus = [c.sku for c in manifest.catalog]
        async with Gateway(manifest, clock=clock, hub_url=broker.url, data_dir=work / "var") as gw:
            await asyncio.wait_for(gw.uplink.connected.wait(), 20)
            await asyncio.sleep(3)  # devices online, cmd/+ subscribed
            hub = await asyncio.to_thread(lambda: _Hub(broker.port, plain=plain_hub))
            rng = random.Random(5)
            try:
                start = time.perf_counter()
                for i in range(n):
                    delay = start + i / RATE - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    due = (clock.now() + timedelta(hours=2)).isoformat()
                    args = {"order_id": f"B-{i}", "mode": "pickup", "due": due,
                            "lines": [{"sku": rng.choice(skus), "qty": rng.randint(1, 2)}]}
                    await asyncio.to_thread(hub.send, f"r{i}", args)
                limit = time.monotonic() + 20
                while len(hub.got) < n and time.monotonic() < limit:  # noqa: ASYNC110 - replies arrive on paho's thread
                    await asyncio.sleep(0.05)
            finally:
                hub.close()
        lat = [(hub.got[r][0] - t0) * 1000 for r, t0 in hub.sent.items() if r in hub.got]
        ok = sum(1 for _, good in hub.got.values() if good)
        return lat, ok, n - len(lat)
    finally:
        if sims.stdin is not None:
            sims.stdin.close()
        try:
            await asyncio.wait_for(sims.wait(), 20)
        except TimeoutError:
            sims.kill()
            await sims.wait()


async def _store_life(world: World) -> None:
    """A random shopper (or restock) every second, as in the demo."""
    while True:
        await asyncio.sleep(1.0)
        world.step()


def bench_orders(quick: bool, *, plain_hub: bool = False) -> dict[str, float]:
    """order.reserve -> reply latency (ms) at 50 orders/s over MQTT, with the simulated devices running
    (`plain_hub`: the hub client with paho's socket defaults, see `_Hub`)."""
    n = 250 if quick else 1500
    with tempfile.TemporaryDirectory(prefix="bench-orders-") as d:
        broker = Mosquitto(workdir=Path(d) / "broker")
        broker.start()
        try:
            lat, ok, missed = asyncio.run(_run(broker, Path(d), n, plain_hub))
        finally:
            broker.stop()
    xs = sorted(lat)

    def q(p: float) -> float:
        return round(xs[min(len(xs) - 1, int(p * len(xs)))], 2) if xs else float("nan")

    return {
        "orders_sent": float(n),
        "orders_rate_per_s": RATE,
        "orders_reserve_reply_ms_p50": round(statistics.median(xs), 2) if xs else float("nan"),
        "orders_reserve_reply_ms_p99": q(0.99),
        "orders_reserve_reply_ms_max": round(xs[-1], 2) if xs else float("nan"),
        "orders_replies_ok": float(ok),
        "orders_replies_missing": float(missed),
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["sims"]:
        asyncio.run(_sims_main(Path(sys.argv[2]), sys.argv[3]))
    elif sys.argv[1:2] == ["where"]:  # python -m bench.orders where [--full] [--plain-hub]: the hops
        from bench.orders_where import where

        where(quick="--full" not in sys.argv, plain_hub="--plain-hub" in sys.argv)
    else:  # python -m bench.orders [--full] [--plain-hub]
        print(orjson.dumps(bench_orders(quick="--full" not in sys.argv, plain_hub="--plain-hub" in sys.argv)).decode())
