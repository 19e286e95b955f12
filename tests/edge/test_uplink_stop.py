"""Stopping the uplink while it connects always stops it (a gateway stopped right after it started hung in
its stop about one time in fifteen: Python 3.11's `asyncio.wait_for` inside `MqttSession.open` drops a
cancel that arrives together with the broker's CONNACK, and the uplink served on)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from edge.brokers import Mosquitto
from edge.clock import SystemClock
from edge.commands import CommandRouter
from edge.config import HubConfig
from edge.db import Database
from edge.metrics import Metrics
from edge.outbox import Outbox
from edge.uplink import Uplink


async def test_a_cancel_during_connect_always_stops_the_uplink(mosquitto: Mosquitto, tmp_path: Path) -> None:
    db = Database(tmp_path / "edge.db")
    await db.open()
    metrics = Metrics()
    clock = SystemClock()
    outbox = Outbox(db, store_id="s1", topic_root="retail/v1/s1", clock=clock, metrics=metrics,
                    telemetry_budget_bytes=1 << 20)
    await outbox.open()
    rng = random.Random(7)
    stuck = 0
    try:
        for _ in range(150):
            up = Uplink(HubConfig(url=mosquitto.url), outbox, store_id="s1", topic_root="retail/v1/s1", clock=clock,
                        metrics=metrics, commands=CommandRouter(metrics))
            task = asyncio.create_task(up.run())
            await asyncio.sleep(rng.uniform(0.0, 0.006))  # around the time the broker's CONNACK comes back
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=5)
            if not done:
                stuck += 1
                task.cancel()  # a second cancel gets it out (the first was lost)
                await asyncio.wait({task}, timeout=5)
            outbox.listeners.clear()
            outbox.retained_listeners.clear()
    finally:
        await db.close()
    assert stuck == 0
