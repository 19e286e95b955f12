"""A second simulated store for the demo: what a neighbouring store's gateway publishes to the hub, retained.

It stands for store `demo-north` (the demo manifest lists it under `nearby:`): its `status` (online at
connect, offline as its MQTT will and at a clean stop), its `state/info` and a `state/atp/{sku}` document per
catalog SKU in the shape edge/atp.py publishes, and every `change_every_s` one SKU's figure moves (a sale or a
delivery there), so the demo gateway's nearby answers (GET /api/v1/nearby/{sku}, the dashboard's panel) have
something live to show. It publishes only under its own store root.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from datetime import UTC, datetime
from typing import Any

import aiomqtt
import orjson

from edge.config import Manifest
from firmware_sim.mqtt_pub import broker_address

STORE_ID = "demo-north"


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class NeighbourStore:
    """`await start(url)`, `await stop()`; `figures` is what it published last (sku -> ATP)."""

    def __init__(self, manifest: Manifest, *, store_id: str = STORE_ID, name: str = "Demo Market North",
                 change_every_s: float = 20.0, seed: int = 11) -> None:
        self.manifest = manifest
        self.store_id = store_id
        self.name = name
        self.root = f"{manifest.hub.topic_prefix}/{store_id}"
        self.change_every_s = change_every_s
        self.rng = random.Random(seed)
        self.figures = {c.sku: self.rng.randint(0, 12) for c in manifest.catalog}
        self._versions = dict.fromkeys(self.figures, 0)
        self._task: asyncio.Task[None] | None = None

    async def start(self, url: str) -> None:
        """Connect to the hub and publish; reconnects on its own until `stop`."""
        self._task = asyncio.create_task(self._run(*broker_address(url)), name="sim-neighbour")

    async def stop(self) -> None:
        """Say offline (retained) and disconnect."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    def _atp_doc(self, sku: str) -> bytes:
        item = self.manifest.sku(sku)
        self._versions[sku] += 1
        n = self.figures[sku]
        return orjson.dumps({
            "sku": sku, "gtin": item.gtin if item else None, "name": (item.name or None) if item else None,
            "unit": item.unit if item else "EA", "atp": n, "on_hand": n, "certain": n, "reserved": 0,
            "safety_stock": 0, "certain_only": False, "reasons": [], "version": self._versions[sku],
            "updated": _now()})  # fmt: skip

    def _status(self, state: str) -> bytes:
        return orjson.dumps({"state": state, "store": self.store_id, "time": _now()})

    async def _publish_all(self, client: aiomqtt.Client) -> None:
        info: dict[str, Any] = {"store": self.store_id, "name": self.name, "timezone": self.manifest.store.timezone,
                                "devices": [], "updated": _now()}
        await client.publish(f"{self.root}/status", self._status("online"), qos=1, retain=True)
        await client.publish(f"{self.root}/state/info", orjson.dumps(info), qos=1, retain=True)
        for sku in self.figures:
            await client.publish(f"{self.root}/state/atp/{sku}", self._atp_doc(sku), qos=1, retain=True)

    async def _run(self, host: str, port: int) -> None:
        will = aiomqtt.Will(f"{self.root}/status", orjson.dumps({"state": "offline", "store": self.store_id}),
                            qos=1, retain=True)
        while True:
            try:
                async with aiomqtt.Client(host, port, identifier=f"sim-{self.store_id}", will=will) as client:
                    try:
                        await self._publish_all(client)
                        while True:
                            await asyncio.sleep(self.change_every_s)
                            sku = self.rng.choice(sorted(self.figures))
                            self.figures[sku] = max(0, self.figures[sku] + self.rng.choice((-2, -1, 3, 6)))
                            await client.publish(f"{self.root}/state/atp/{sku}", self._atp_doc(sku), qos=1,
                                                 retain=True)  # fmt: skip
                    except asyncio.CancelledError:
                        with contextlib.suppress(Exception):
                            await asyncio.wait_for(client.publish(f"{self.root}/status", self._status("offline"),
                                                                  qos=1, retain=True), 2.0)  # fmt: skip
                        raise
            except aiomqtt.MqttError:
                await asyncio.sleep(1.0)  # hub away: try again
