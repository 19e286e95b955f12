"""`edge-gateway fleet-sim`: N simulated stores, each a real gateway, against one hub (a cluster or a broker).

Each store is the demo's store with its own store id (`store-001` ...), its own World (seeded apart), its own
simulated devices through their real wire protocols on loopback (the serial shelf controller and the Modbus
weight transmitters on pseudo-terminals, the restock scanner on a pty, the LLRP reader over TCP, the door
counter) and its own `Gateway` (database, outbox, uplink, pipeline, rules) in its own data directory.

How honest it is: all stores run in this one process on one event loop (each gateway has its own paho network
thread and SQLite writer thread, as a daemon has). A store's gateway is the real one; what is shared is the
CPU, so on a loaded machine a store's figures are worse than a store PC's, not better. Left out of each store,
and why: the BLE scanner (the simulated BlueZ needs a private D-Bus, and bleak takes one D-Bus address per
process), the Zebra MQTT reader and the MQTT shelf (they need a store-local broker; the hub's traffic must be
the stores' uplinks only), the local HTTP API (N web servers measure nothing the hub sees). Shoppers pick
`pick_rate` times a second around the clock (the demo's rate), staff restock low lanes, people walk through
the door. Every change of a lane's content can be written to `changes` as a JSON line with its wall time
(the benchmark's HQ side measures from it how long a shelf change takes to reach HQ's view).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import orjson
import yaml

from edge.brokers import Mosquitto, NatsCluster
from edge.clock import SystemClock
from edge.config import parse_manifest
from edge.gateway import Gateway
from firmware_sim.door import DoorSimPart
from firmware_sim.rfid.simpart import RfidSimPart
from firmware_sim.scanner import ScannerSimPart
from firmware_sim.shelf import ShelfSimPart
from firmware_sim.world import World, WorldChange, demo_manifest_text

log = logging.getLogger("fleet")
MAX_STORES = 200
LOOPBACK = ("127.0.0.1", "localhost", "::1")
COUNTED = ("pick", "return", "restock")  # the changes of a lane's content


def store_id(i: int) -> str:
    """The id of the fleet's i-th store (1-based)."""
    return f"store-{i:03d}"


def store_manifest(i: int, hub_urls: list[str], data_dir: Path, devices: list[dict[str, Any]],
                   batch: bool) -> dict[str, Any]:
    """The demo manifest as store i of the fleet: its id, the hub's nodes, its devices, no API, open all day."""
    raw: dict[str, Any] = yaml.safe_load(demo_manifest_text())
    raw["store"] = {**raw["store"], "id": store_id(i), "name": f"Fleet store {i}", "opening_time": "00:00",
                    "closing_time": "00:00"}
    raw["hub"] = {k: v for k, v in raw["hub"].items() if k != "url"} | {
        "urls": hub_urls, "batch": {"enabled": batch}, "reconnect_max": 5}
    raw["storage"] = {**raw.get("storage", {}), "data_dir": str(data_dir)}
    raw["api"] = {**raw.get("api", {}), "enabled": False}
    raw["devices"] = devices
    return raw


class SimStore:
    """One store of the fleet: its World, its simulated devices and its gateway."""

    def __init__(self, i: int, workdir: Path, clock: SystemClock, pick_rate: float) -> None:
        self.i = i
        self.id = store_id(i)
        self.workdir = workdir
        self.world = World(parse_manifest(demo_manifest_text(), "demo_manifest.yaml"), clock, seed=1000 + i)
        self.pick_rate = pick_rate
        self.parts: list[Any] = []
        self.gateway: Gateway | None = None
        self._life: asyncio.Task[None] | None = None

    async def start(self, hub_urls: list[str], batch: bool) -> None:
        """Start the devices, then the gateway, then the shoppers."""
        devices: list[dict[str, Any]] = []
        for part in (ShelfSimPart(), ScannerSimPart(), RfidSimPart(), DoorSimPart()):
            (self.workdir / part.name).mkdir(parents=True, exist_ok=True)
            devices += await part.start(self.world, self.workdir / part.name, None)
            self.parts.append(part)
        raw = store_manifest(self.i, hub_urls, self.workdir / "data", devices, batch)
        manifest = parse_manifest(yaml.safe_dump(raw, sort_keys=False), f"fleet store {self.i}")
        self.gateway = Gateway(manifest, clock=self.world.clock)
        await self.gateway.start()
        self._life = asyncio.create_task(self._store_life(), name=f"{self.id}-life")

    async def _store_life(self) -> None:
        while True:
            self.world.step(self.pick_rate)
            await asyncio.sleep(1.0)

    async def stop(self) -> None:
        """Shoppers, gateway (it flushes), devices."""
        if self._life is not None:
            self._life.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._life
        if self.gateway is not None:
            await self.gateway.stop()
        for part in reversed(self.parts):
            with contextlib.suppress(Exception):
                await part.stop()


def hub_urls_of(hub: str) -> list[str]:
    """The loopback MQTT URLs in `hub` (comma-separated); ValueError for any other host."""
    urls = [u.strip() for u in hub.split(",") if u.strip()]
    for u in urls:
        parts = urlsplit(u)
        if parts.scheme not in ("mqtt", "mqtts") or parts.hostname not in LOOPBACK:
            raise ValueError(f"{u!r}: fleet-sim runs on loopback only: give mqtt://127.0.0.1:PORT URLs")
    if not urls:
        raise ValueError("no hub URL given")
    return urls


async def run_fleet(*, stores: int, hub: str, duration: float | None, data_dir: Path, batch_every: int = 0,
                    changes: Path | None = None, pick_rate: float = 0.3) -> int:
    """Run the fleet until SIGINT/SIGTERM or `duration` seconds; exit 0 after a clean stop, 2 on bad input."""
    if not 1 <= stores <= MAX_STORES:
        print(f"fleet-sim: --stores {stores}: give 1..{MAX_STORES}", file=sys.stderr)
        return 2
    root = await asyncio.to_thread(data_dir.absolute)
    hub_dir = root / "hub"
    owned: NatsCluster | Mosquitto | None = None
    try:
        if hub == "nats":
            owned = NatsCluster(3, workdir=hub_dir)
            await asyncio.to_thread(owned.start, 60.0)
            urls = owned.urls
        elif hub == "mosquitto":
            owned = Mosquitto(workdir=hub_dir)
            await asyncio.to_thread(owned.start)
            urls = [owned.url]
        else:
            urls = hub_urls_of(hub)
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"fleet-sim: {exc}", file=sys.stderr)
        return 2
    out: IO[bytes] | None = changes.open("ab") if changes is not None else None
    clock = SystemClock()
    fleet = [SimStore(i, root / store_id(i), clock, pick_rate) for i in range(1, stores + 1)]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    started: list[SimStore] = []
    try:
        print(f"fleet-sim: hub {', '.join(urls)}", flush=True)
        for s in fleet:
            if out is not None:
                s.world.listeners.append(_recorder(s, out))
            await s.start(urls, batch=batch_every > 0 and s.i % batch_every == 0)
            started.append(s)
        print(f"fleet-sim: {len(started)} stores running", flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), duration)
    finally:
        for s in reversed(started):
            with contextlib.suppress(Exception):
                await s.stop()
        if out is not None:
            out.close()
        if owned is not None:
            await asyncio.to_thread(owned.stop)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    print(f"fleet-sim: stopped {len(started)} stores", flush=True)
    return 0


def _recorder(store: SimStore, out: IO[bytes]) -> Any:
    world = store.world

    def record(change: WorldChange) -> None:
        if change.kind not in COUNTED:
            return
        sku = world.lanes[(change.shelf, change.lane)].sku
        out.write(orjson.dumps({"t": time.time(), "store": store.id, "shelf": change.shelf, "sku": sku,
                                "count": world.count(change.shelf, sku), "kind": change.kind}) + b"\n")
        out.flush()
    return record
