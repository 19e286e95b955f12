"""Each device family unplugged and plugged back in, through the real Gateway and the family's simulator.

Serial shelf: the pty closes and a new one appears behind the same symlink (`PtyPort.replug`). LLRP reader:
the emulator stops (TCP reset) and restarts on the same port. Zebra / MQTT shelf: the store-local mosquitto
is killed and restarted on its port. BlueZ: the bluez mock (bluetoothd) is killed and restarted on the private
bus. After each: `retail.device.status.v1` offline then online at the hub, readings flow again, every
accepted event of the device arrived (per-source sequence 1..max contiguous), `integrity_check` ok.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge.brokers import Mosquitto
from edge.clock import SystemClock
from edge.config import Manifest, parse_manifest
from edge.db import integrity_check
from edge.gateway import Gateway
from edge.supervisor import Backoff
from firmware_sim.hub import HubProcess
from firmware_sim.world import World, demo_manifest_text
from tests.faults.test_faults import assert_contiguous

ROOT = "retail/v1/demo"
pytestmark = pytest.mark.timeout(90)
Action = Callable[[], Awaitable[None]]


def status_events(events: list[dict[str, Any]], device: str) -> list[str]:
    """The device's states as published, in order."""
    return [e["data"]["state"] for e in events
            if e["type"] == "retail.device.status.v1" and e["data"]["device"] == device]


async def until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)


def unplug_manifest(sections: list[dict[str, Any]], local_url: str | None = None,
                    extra: dict[str, Any] | None = None) -> Manifest:
    """The demo store with only `sections` as devices, no API, a hub reconnect capped at 0.5 s."""
    raw: dict[str, Any] = yaml.safe_load(demo_manifest_text())
    raw["api"] = {"enabled": False}
    raw["hub"] = {**raw["hub"], "reconnect_max": 0.5}
    raw["devices"] = sections
    raw.update(extra or {})
    if local_url:
        raw["local_broker"] = {"url": local_url}
    return parse_manifest(yaml.safe_dump(raw), "unplug.yaml")


async def unplug_replug(tmp: Path, hub: Mosquitto, sections: list[dict[str, Any]], device: str,
                        unplug: Action, replug: Action, local_url: str | None = None,
                        extra: dict[str, Any] | None = None) -> None:
    """Run the gateway, unplug, wait offline, replug, wait online + fresh readings; check the hub."""
    manifest = unplug_manifest(sections, local_url, extra)
    recorder = HubProcess(hub.port, f"{ROOT}/events/#", tmp / "hub.log")
    try:
        async with Gateway(manifest, hub_url=hub.url, data_dir=tmp / "var", install_rules=False,
                           backoff=Backoff(initial=0.2, maximum=0.5)) as gw:

            def status() -> Any:
                return next(d for d in gw.devices() if d.device == device)

            await until(lambda: status().state == "online" and status().readings > 0, 20, f"{device} online")
            await unplug()
            await until(lambda: status().state == "offline", 20, f"{device} offline after unplug")
            await replug()
            await until(lambda: status().state == "online", 20, f"{device} online after replug")
            n = status().readings
            await until(lambda: status().readings > n + 2, 20, f"{device} readings after replug")
            await until(lambda: gw.outbox.depth == 0, 20, "outbox drained")
        await asyncio.to_thread(recorder.wait_for,
                                lambda h: status_events(h.events(), device)[-1:] == ["online"], 10)
        events = recorder.events()
    finally:
        recorder.close()
    states = status_events(events, device)
    assert "offline" in states and states.index("offline") < len(states) - 1, states
    assert states[-1] == "online", states
    for source in {str(e["source"]) for e in events}:
        assert_contiguous(events, source)
    assert integrity_check(tmp / "var" / "edge.db") == "ok"


def world() -> World:
    """The demo store's truth."""
    return World(parse_manifest(demo_manifest_text(), "demo"), SystemClock())


async def test_serial_shelf_pty_closed_and_back(mosquitto: Mosquitto, tmp_path: Path) -> None:
    from firmware_sim.shelf import SerialShelfSim, lane_sections, lanes_for

    w = world()
    lanes = lanes_for(w, "shelf-a1")
    sim = SerialShelfSim(w, tmp_path / "shelf.tty", lanes, hz=10)
    sim.start()
    section = {"id": "shelf-a1-ctrl", "type": "shelf_serial", "port": str(sim.port.link),
               "lanes": lane_sections(lanes)}

    async def unplug() -> None:
        sim.port.unplug()

    async def replug() -> None:
        sim.port.replug()

    try:
        await unplug_replug(tmp_path, mosquitto, [section], "shelf-a1-ctrl", unplug, replug)
    finally:
        await sim.stop()


async def test_llrp_reader_reset_and_back(mosquitto: Mosquitto, tmp_path: Path) -> None:
    from firmware_sim.rfid.llrp_reader import LlrpReaderSim
    from firmware_sim.rfid.population import Population

    w = world()
    ants = {1: "apparel"}
    sim = LlrpReaderSim(Population(w, ants, reliability=1.0))
    port = await sim.start()
    section = {"id": "rfid-llrp-1", "type": "llrp", "host": "127.0.0.1", "port": port, "antennas": ants,
               "cycle_ms": 300, "connect_timeout_s": 1.0, "reply_timeout_s": 1.0}

    async def unplug() -> None:
        await sim.stop()

    async def replug() -> None:
        sim.port = port
        await sim.start()

    try:
        await unplug_replug(tmp_path, mosquitto, [section], "rfid-llrp-1", unplug, replug)
    finally:
        await sim.stop()


async def test_local_broker_killed_zebra_reader_recovers(mosquitto: Mosquitto, tmp_path: Path) -> None:
    from firmware_sim.rfid.population import Population
    from firmware_sim.rfid.zebra_mqtt import ZebraMqttSim

    local = Mosquitto(workdir=tmp_path / "local")
    local.start()
    w = world()
    ants = {1: "aisle-1"}
    zebra = ZebraMqttSim(Population(w, ants, reliability=1.0), local.url, "zebra/fx/data", cycle_s=0.3)
    await zebra.start()
    section = {"id": "rfid-zebra-1", "type": "zebra_iotc", "broker_url": local.url, "topic": "zebra/fx/data",
               "antennas": ants}

    async def unplug() -> None:
        local.kill()

    async def replug() -> None:
        local.start()

    try:
        await unplug_replug(tmp_path, mosquitto, [section], "rfid-zebra-1", unplug, replug, local.url)
    finally:
        await zebra.stop()
        local.stop()


async def test_bluez_gone_and_back(mosquitto: Mosquitto, tmp_path: Path) -> None:
    from firmware_sim.ble import BleStore, PrivateBluez, SimBeacon, random_address

    bluez = PrivateBluez(tmp_path / "bluez.log")
    address = await bluez.start()
    old = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
    os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = address
    store = BleStore(bluez, {"hci0": "aisle-1"})
    stop = asyncio.Event()

    async def setup() -> None:
        await bluez.add_adapter("hci0")
        store.beacons.clear()
        await store.add_beacon(SimBeacon(id="b1", zone="aisle-1", kind="ibeacon", address=random_address(store.rng)))

    async def adverts() -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):  # the mock is gone: the next round tries again
                await store.step(0.1)
            await asyncio.sleep(0.1)

    await setup()
    task = asyncio.create_task(adverts())
    section = {"id": "ble-aisle-1", "type": "ble", "zone": "aisle-1", "adapter": "hci0"}

    async def unplug() -> None:
        await bluez.kill_bluez()

    async def replug() -> None:
        await bluez.start_bluez()
        await setup()

    try:
        await unplug_replug(tmp_path, mosquitto, [section], "ble-aisle-1", unplug, replug)
    finally:
        stop.set()
        await task
        await bluez.stop()
        if old is None:
            os.environ.pop("DBUS_SYSTEM_BUS_ADDRESS", None)
        else:
            os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = old
