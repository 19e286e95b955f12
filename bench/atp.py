"""Available-to-promise latency (issue 16; docs/benchmarks.md): how soon after a stock change that moves a SKU's
ATP across a threshold the hub has the new retained `state/atp/{sku}` and the `retail.atp.changed.v1` event.

The real gateway (pipeline, outbox with SQLite, uplink) against a private mosquitto; the hub is a paho client
subscribed to the store's topics. Each round claims a count for cola-330 that moves its ATP from above the
manifest's threshold 5 to below it or back (10 <-> 1), through the pipeline as a shelf processor would, and
times until the hub received the snapshot with that count (`atp_publish_ms_*`) and the crossing event
(`atp_event_ms_*`). The target is <= 1,000 ms; figures are measured, not asserted.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import yaml

from edge.brokers import Mosquitto
from edge.config import parse_manifest
from edge.gateway import Gateway
from edge.processing import StockUpdate
from firmware_sim.hub import HubRecorder
from firmware_sim.world import demo_manifest_text

ROOT = "retail/v1/demo"


async def _rounds(broker: Mosquitto, data: Path, n: int) -> tuple[list[float], list[float]]:
    raw = yaml.safe_load(demo_manifest_text())
    raw["atp"] = {"thresholds": [0, 5]}
    raw["api"] = {"enabled": False}
    raw["storage"] = {"data_dir": str(data)}
    manifest = parse_manifest(yaml.safe_dump(raw), "bench-atp.yaml")
    hub = HubRecorder(broker.port, f"{ROOT}/#", persistent=False)
    publish: list[float] = []
    event: list[float] = []
    try:
        async with Gateway(manifest, hub_url=broker.url, data_dir=data, install_rules=False) as gw:
            await asyncio.wait_for(gw.uplink.connected.wait(), 20)
            for i in range(n):
                count = 10 if i % 2 == 0 else 1
                seen = len(hub.snapshot())
                t0 = time.perf_counter()
                now = gw.clock.now()
                gw.pipeline.route([StockUpdate(shelf="shelf-a1", sku="cola-330", time=now, origin="weight",
                                               source="bench", count=count)], now)  # fmt: skip
                got_snap = got_event = None
                limit = time.monotonic() + 10
                while (got_snap is None or got_event is None) and time.monotonic() < limit:
                    for m in hub.snapshot()[seen:]:
                        if got_snap is None and m.topic == f"{ROOT}/state/atp/cola-330" and \
                                _json(m.payload).get("on_hand") == count:
                            got_snap = time.perf_counter()
                        if got_event is None and m.topic == f"{ROOT}/events/atp":
                            got_event = time.perf_counter()
                    await asyncio.sleep(0.002)
                if got_snap is not None:
                    publish.append((got_snap - t0) * 1000)
                if got_event is not None:
                    event.append((got_event - t0) * 1000)
    finally:
        hub.close()
    return publish, event


def _json(payload: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return {}
    return body if isinstance(body, dict) else {}


def bench_atp(quick: bool) -> dict[str, float]:
    """Latency from a threshold-crossing stock change to the hub's retained ATP and event, in ms."""
    n = 10 if quick else 40
    broker = Mosquitto()
    broker.start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-atp-") as d:
            publish, event = asyncio.run(_rounds(broker, Path(d), n))
    finally:
        broker.stop()

    def q(xs: list[float], p: float) -> float:
        return round(sorted(xs)[min(len(xs) - 1, int(p * len(xs)))], 2) if xs else float("nan")

    return {
        "atp_rounds": float(n),
        "atp_publish_ms_p50": round(statistics.median(publish), 2) if publish else float("nan"),
        "atp_publish_ms_p99": q(publish, 0.99),
        "atp_publish_ms_max": round(max(publish), 2) if publish else float("nan"),
        "atp_event_ms_p50": round(statistics.median(event), 2) if event else float("nan"),
        "atp_event_ms_max": round(max(event), 2) if event else float("nan"),
        "atp_missed": float(2 * n - len(publish) - len(event)),
    }


if __name__ == "__main__":
    print(orjson.dumps(bench_atp(quick=True)).decode())
