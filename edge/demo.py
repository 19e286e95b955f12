"""`edge-gateway demo`: the whole gateway against the simulated store, with embedded defaults.

Starts a private mosquitto (as hub and store-local broker) when the binary is present, every device
family's simulator through its real wire protocol (LLRP over TCP, Zebra JSON over MQTT, serial shelf and
scanner on pseudo-terminals, Modbus-RTU, BLE through BlueZ on a private D-Bus, a door counter), then the
gateway with the built-in manifest, the API and a live one-line status. A simulator that cannot start
here (no dbus-daemon, say) is reported and left out; the rest of the store runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Any, Protocol

import yaml

from edge.brokers import Mosquitto
from edge.clock import SystemClock
from edge.config import parse_manifest
from edge.gateway import Gateway
from firmware_sim.world import World, demo_manifest_text

log = logging.getLogger("edge.demo")


class SimPart(Protocol):
    """A family's simulated devices (see docs/dev/BRIEF-helpers.md)."""

    name: str

    async def start(self, world: World, workdir: Path, local_broker_url: str | None) -> list[dict[str, Any]]:
        """Start the simulated devices; return manifest device sections pointing at them."""
        ...

    async def stop(self) -> None:
        """Stop them."""
        ...


def sim_parts() -> list[SimPart]:
    """Every family's simulator, in start order (BLE last: it sets the D-Bus address for bleak)."""
    from firmware_sim.ble import BleSimPart
    from firmware_sim.door import DoorSimPart
    from firmware_sim.rfid.simpart import RfidSimPart
    from firmware_sim.scanner import ScannerSimPart
    from firmware_sim.shelf import ShelfSimPart

    return [ShelfSimPart(), ScannerSimPart(), RfidSimPart(), DoorSimPart(), BleSimPart()]


async def run_demo(
    *,
    mqtt: str | None,
    api: str,
    duration: float | None,
    data_dir: Path,
    live_status: bool = True,
) -> int:
    """Run the simulated store; exit 0 after `duration` seconds or on SIGINT/SIGTERM, shut down cleanly."""
    clock = SystemClock()
    # the demo's API token holds every role (only here: `run` takes tokens from the manifest alone)
    token = os.environ.get("EDGE_API_TOKEN")
    if token is not None and len(token) < 16:
        print("demo: EDGE_API_TOKEN is shorter than 16 characters: give a longer one, or none to get one made up",
              file=sys.stderr)
        return 2
    if not token:
        token = secrets.token_urlsafe(24)
        print(f"demo: API token (every role): {token}", file=sys.stderr)
    cmd_key = secrets.token_urlsafe(32)  # the hub's key for state-changing cmd/ requests (docs/commands.md)
    data_dir = Path.cwd() / data_dir if not data_dir.is_absolute() else data_dir
    workdir = data_dir / "sim"
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)

    broker: Mosquitto | None = None
    hub_url = mqtt
    if hub_url is None:
        if Mosquitto.available():
            broker = Mosquitto(workdir=workdir / "broker")
            broker.start()
            hub_url = broker.url
            print(f"demo: private mosquitto on {hub_url} (hub and store-local broker)", file=sys.stderr)
        else:
            hub_url = "mqtt://127.0.0.1:1"
            print("demo: mosquitto is not installed: no hub; events are buffered in the outbox "
                  f"({data_dir / 'edge.db'}) until one is given with --mqtt", file=sys.stderr)
    local_url = hub_url if (mqtt is not None or broker is not None) else None

    raw: dict[str, Any] = yaml.safe_load(demo_manifest_text())
    base = parse_manifest(demo_manifest_text(), "demo_manifest.yaml")
    world = World(base, clock)
    parts = sim_parts()
    started: list[SimPart] = []
    devices: list[dict[str, Any]] = []
    for part in parts:
        try:
            (workdir / part.name).mkdir(parents=True, exist_ok=True)
            devices += await part.start(world, workdir / part.name, local_url)
            started.append(part)
        except Exception as exc:  # a simulator that cannot run here leaves the rest of the store running
            print(f"demo: simulated {part.name} unavailable here: {exc}", file=sys.stderr)
    for part in started:
        beacons = getattr(part, "beacons_manifest", None)
        if beacons is not None:
            raw["beacons"] = beacons()
    raw["devices"] = devices
    raw["storage"] = {**raw.get("storage", {}), "data_dir": str(data_dir)}
    raw["api"] = {**raw.get("api", {}), "listen": api,
                  "tokens": [{"token": token, "roles": ["staff", "hq", "shopper-app", "admin"], "name": "demo"}]}
    raw["hub"] = {**raw.get("hub", {}), "commands": {"keys": [{"id": "demo", "secret": cmd_key}]}}
    if local_url:
        raw["local_broker"] = {"url": local_url}
    manifest = parse_manifest(yaml.safe_dump(raw, sort_keys=False), "demo (built-in)")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with Gateway(manifest, clock=clock, hub_url=hub_url, api_listen=api) as gw:
            port = getattr(gw.api, "port", None)
            if port is not None:
                host = api.rpartition(":")[0]
                print(f"demo: dashboard http://{host}:{port}/  API http://{host}:{port}/api/v1/stock", file=sys.stderr)
            print(f"demo: {len(devices)} simulated devices; store id 'demo'; data in {data_dir}", file=sys.stderr)
            print(f"demo: hub command key id 'demo', secret {cmd_key} (sign cmd/ requests as docs/commands.md "
                  "says, e.g. firmware_sim.hub.HubCommander)", file=sys.stderr)
            tasks = [asyncio.create_task(_store_life(world, clock)),
                     asyncio.create_task(_status_line(gw, live_status))]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), duration)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if live_status:
                print(file=sys.stderr)
            print(f"demo: shutting down ({_status(gw, 0.0)})", file=sys.stderr)
    finally:
        for part in reversed(started):
            with contextlib.suppress(Exception):
                await part.stop()
        if broker is not None:
            broker.stop()
    return 0


async def _store_life(world: World, clock: SystemClock) -> None:
    """Shoppers and staff: one simulated second of store life per real second."""
    while True:
        world.step()
        await clock.sleep(1.0)


def _status(gw: Gateway, rate: float) -> str:
    online = sum(1 for d in gw.devices() if d.state == "online")
    alerts = gw.metrics.value("edge_alerts_open")
    rules = gw.rules
    if rules is not None and hasattr(rules, "open_alerts"):
        alerts = float(rules.open_alerts())
    hub = "up" if gw.uplink.connected.is_set() else "down"
    return (f"{rate:7.1f} events/s | outbox {gw.outbox.depth:6d} | open alerts {int(alerts):3d} | "
            f"devices online {online}/{len(gw.devices())} | hub {hub}")


async def _status_line(gw: Gateway, live: bool) -> None:
    last_total, last_t = gw.metrics.total("edge_events_total"), time.monotonic()
    while True:
        await asyncio.sleep(1.0 if live else 10.0)
        total, now = gw.metrics.total("edge_events_total"), time.monotonic()
        line = _status(gw, (total - last_total) / max(1e-6, now - last_t))
        last_total, last_t = total, now
        if live:
            print(f"\r{line}", end="", file=sys.stderr, flush=True)
        else:
            print(f"demo: {line}", file=sys.stderr, flush=True)
