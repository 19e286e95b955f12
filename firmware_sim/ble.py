"""Simulated BLE world on a private BlueZ: python-dbusmock's `bluez5` template on a private dbus-daemon.

`PrivateBluez` spawns `dbus-daemon --session --print-address --nofork` (its session policy lets anyone own
any name, which is all a mock needs) and `python -m dbusmock --system --template bluez5` with
`DBUS_SYSTEM_BUS_ADDRESS` pointing at that daemon, then drives the mock over D-Bus (dbus_fast): adapters
(`org.bluez.Mock.AddAdapter`), devices (`org.freedesktop.DBus.Mock.AddObject` + an explicit
`InterfacesAdded`, because the template's `AddDevice` announces `ManufacturerData`/`ServiceData` as arrays,
which bleak rejects) and adverts (`UpdateProperties`, one `PropertiesChanged` carrying RSSI,
ManufacturerData a{qv} and ServiceData a{sv} together: bleak reports one advert per PropertiesChanged of a
Device1 while discovering). The template's `StartDiscovery` only flips `Discovering`; the adverts are ours.

Bleak reads `DBUS_SYSTEM_BUS_ADDRESS` when its BlueZ manager first connects (once per event loop), so set
it in `os.environ` before any `ble` driver starts: `BleSimPart.start` does that for the demo.

`BleSimPart` fills it with store beacons (iBeacon and Eddystone UID+TLM with decaying batteries, one of
them silent) and shoppers' phones that walk between zones, rotate their random addresses and show noisy
RSSI on every zone's scanner (one adapter per zone).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from firmware_sim.ble_frames import EDDYSTONE_SERVICE_UUID, eddystone_tlm, eddystone_uid, ibeacon
from firmware_sim.world import World, WorldChange

DEVICE_IFACE = "org.bluez.Device1"
MOCK_IFACE = "org.freedesktop.DBus.Mock"


class BluezSimError(RuntimeError):
    """The private D-Bus / BlueZ mock could not be started (message says what is missing)."""


class PrivateBluez:
    """A private dbus-daemon with the dbusmock bluez5 template, and a client to drive it."""

    def __init__(self, log_file: Path | None = None) -> None:
        self.address = ""
        self._daemon: subprocess.Popen[str] | None = None
        self._mock: subprocess.Popen[bytes] | None = None
        self._bus: MessageBus | None = None
        self._log_file = log_file
        self.adapters: list[str] = []

    @property
    def daemon_pid(self) -> int | None:
        """PID of the dbus-daemon."""
        return self._daemon.pid if self._daemon else None

    @property
    def mock_pid(self) -> int | None:
        """PID of the bluez mock."""
        return self._mock.pid if self._mock else None

    async def start(self) -> str:
        """Start both processes, connect; returns the bus address (for DBUS_SYSTEM_BUS_ADDRESS)."""
        exe = shutil.which("dbus-daemon")
        if exe is None:
            raise BluezSimError("dbus-daemon is not installed (apt-get install dbus): the BLE simulation needs it")
        self._daemon = await asyncio.to_thread(
            subprocess.Popen, [exe, "--session", "--print-address", "--nofork"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            start_new_session=True,  # a terminal's Ctrl-C is for the demo, which stops the bus after the gateway
        )
        stdout = self._daemon.stdout
        assert stdout is not None
        try:
            line = await asyncio.wait_for(asyncio.to_thread(stdout.readline), 10)
        except TimeoutError:
            line = ""
        if not line.strip():
            await self.stop()
            raise BluezSimError("dbus-daemon did not print its address")
        self.address = line.strip()
        self._bus = await MessageBus(bus_address=self.address).connect()
        await self.start_bluez()
        return self.address

    async def start_bluez(self) -> None:
        """(Re)start bluetoothd's mock and wait until it owns org.bluez."""
        self._mock = await asyncio.to_thread(self._spawn_mock)
        for _ in range(200):
            if await self._has_owner():
                self.adapters = []
                return
            if self._mock.poll() is not None:
                break
            await asyncio.sleep(0.025)
        raise BluezSimError("python-dbusmock's bluez5 template did not start (is python-dbusmock installed?)")

    def _spawn_mock(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=self.address)
        cmd = [sys.executable, "-m", "dbusmock", "--system", "--template", "bluez5"]
        if self._log_file is None:
            return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True)
        with open(self._log_file, "ab") as log:  # the child keeps its own copy of the descriptor
            return subprocess.Popen(cmd, env=env, stdout=log, stderr=log, start_new_session=True)

    async def kill_bluez(self) -> None:
        """Kill the mock (bluetoothd crashing or restarting); the bus stays."""
        if self._mock is not None:
            self._mock.kill()
            await asyncio.to_thread(self._mock.wait)
            self._mock = None

    async def stop(self) -> None:
        """Disconnect and kill both processes by PID."""
        if self._bus is not None:
            self._bus.disconnect()
            self._bus = None
        await self.kill_bluez()
        if self._daemon is not None:
            self._daemon.kill()
            await asyncio.to_thread(self._daemon.wait)
            if self._daemon.stdout:
                self._daemon.stdout.close()
            self._daemon = None

    async def _call(self, path: str, interface: str, member: str, signature: str = "", *,
                    body: list[Any] | None = None, destination: str = "org.bluez") -> list[Any]:
        if self._bus is None:
            raise BluezSimError("not started")
        reply = await self._bus.call(Message(destination=destination, path=path, interface=interface,
                                             member=member, signature=signature, body=body or []))
        if reply is None or reply.message_type == MessageType.ERROR:
            raise BluezSimError(f"{member} failed: {reply.body if reply else 'no reply'}")
        return list(reply.body)

    async def _has_owner(self) -> bool:
        body = await self._call("/org/freedesktop/DBus", "org.freedesktop.DBus", "NameHasOwner", "s",
                                body=["org.bluez"], destination="org.freedesktop.DBus")
        return bool(body[0])

    async def add_adapter(self, name: str) -> str:
        """Add adapter `name` (hci0..hci9); returns its object path."""
        body = await self._call("/", "org.bluez.Mock", "AddAdapter", "ss", body=[name, f"sim-{name}"])
        self.adapters.append(name)
        return str(body[0])

    async def add_device(self, adapter: str, address: str, rssi: int, mfg: dict[int, bytes], *,
                         svc: dict[str, bytes], name: str | None = None) -> str:
        """Announce a device on `adapter` with its first advert; returns its object path."""
        path = f"/org/bluez/{adapter}/dev_{address.replace(':', '_').upper()}"
        props: dict[str, Variant] = {
            "Address": Variant("s", address), "AddressType": Variant("s", "random"),
            "Adapter": Variant("o", f"/org/bluez/{adapter}"), "Alias": Variant("s", name or address),
            "Paired": Variant("b", False), "Connected": Variant("b", False), "Trusted": Variant("b", False),
            "Blocked": Variant("b", False), "ServicesResolved": Variant("b", False),
            "LegacyPairing": Variant("b", False), "UUIDs": Variant("as", []), "RSSI": Variant("n", rssi),
            **_adv_props(mfg, svc),
        }
        if name:
            props["Name"] = Variant("s", name)
        await self._call("/", MOCK_IFACE, "AddObject", "ssa{sv}a(ssss)", body=[path, DEVICE_IFACE, props, []])
        await self._call("/", MOCK_IFACE, "EmitSignal", "sssav", body=[
            "org.freedesktop.DBus.ObjectManager", "InterfacesAdded", "oa{sa{sv}}",
            [Variant("o", path), Variant("a{sa{sv}}", {DEVICE_IFACE: props})],
        ])
        return path

    async def advert(self, path: str, rssi: int, mfg: dict[int, bytes], svc: dict[str, bytes]) -> None:
        """One advertisement report: RSSI and both data dictionaries in one PropertiesChanged."""
        await self._call(path, MOCK_IFACE, "UpdateProperties", "sa{sv}",
                         body=[DEVICE_IFACE, {"RSSI": Variant("n", rssi), **_adv_props(mfg, svc)}])

    async def discovering(self, adapter: str) -> bool:
        """Whether `adapter` is discovering now."""
        body = await self._call(f"/org/bluez/{adapter}", "org.freedesktop.DBus.Properties", "Get", "ss",
                                body=["org.bluez.Adapter1", "Discovering"])
        return bool(body[0].value)

    async def remove_device(self, adapter: str, path: str) -> None:
        """The device went away (BlueZ dropped it, or the phone took a new random address)."""
        await self._call(f"/org/bluez/{adapter}", "org.bluez.Adapter1", "RemoveDevice", "o", body=[path])


def _adv_props(mfg: dict[int, bytes], svc: dict[str, bytes]) -> dict[str, Variant]:
    return {"ManufacturerData": Variant("a{qv}", {k: Variant("ay", v) for k, v in mfg.items()}),
            "ServiceData": Variant("a{sv}", {k: Variant("ay", v) for k, v in svc.items()})}


def random_address(rng: random.Random) -> str:
    """A random static/resolvable-looking BLE address."""
    b = [rng.randrange(256) for _ in range(6)]
    b[0] = (b[0] & 0x3F) | 0x40  # resolvable private address (top bits 01), as phones use
    return ":".join(f"{x:02X}" for x in b)


# ---- the simulated store ------------------------------------------------------------------


@dataclass(slots=True)
class SimBeacon:
    """A store beacon: iBeacon or Eddystone (UID + TLM alternately), with a battery that decays."""

    id: str
    zone: str
    kind: str
    address: str
    uuid: str = "e2c56db5-dffb-48d2-b060-d0f5a71096e0"
    major: int = 1
    minor: int = 1
    namespace: str = "edd1ebeac04e5defa017"
    instance: str = "000000000001"
    battery_mv: float = 3000.0
    decay_mv_per_s: float = 0.0
    silent: bool = False
    staff_badge: bool = False
    adv_count: int = 0
    uptime_s: float = 0.0
    paths: dict[str, str] = field(default_factory=dict)

    def frames(self) -> tuple[dict[int, bytes], dict[str, bytes]]:
        """The next advert's manufacturer and service data."""
        self.adv_count += 1
        if self.kind == "ibeacon":
            return {0x004C: ibeacon(self.uuid, self.major, self.minor, -59)}, {}
        if self.adv_count % 2:
            return {}, {EDDYSTONE_SERVICE_UUID: eddystone_uid(self.namespace, self.instance, -20)}
        tlm = eddystone_tlm(int(self.battery_mv), 21.5, self.adv_count, self.uptime_s)
        return {}, {EDDYSTONE_SERVICE_UUID: tlm}

    def manifest(self) -> dict[str, Any]:
        """Its `beacons:` entry."""
        base: dict[str, Any] = {"id": self.id, "zone": self.zone, "kind": self.kind, "silent_after_s": 60,
                                "low_battery_mv": 2500, "staff_badge": self.staff_badge}
        if self.kind == "ibeacon":
            return {**base, "uuid": self.uuid, "major": self.major, "minor": self.minor}
        return {**base, "namespace": self.namespace, "instance": self.instance}


@dataclass(slots=True)
class SimPhone:
    """A shopper's phone: a zone it is in (None = outside), a random address it rotates."""

    address: str
    zone: str | None
    born: float
    paths: dict[str, str] = field(default_factory=dict)


class BleStore:
    """Drives beacons and phones on a `PrivateBluez`, one adapter per zone; `step(dt)` = one round of adverts."""

    def __init__(self, bluez: PrivateBluez, zones: dict[str, str], seed: int = 11,
                 rotate_s: float = 900.0, noise_db: float = 3.0) -> None:
        self.bluez = bluez
        self.zones = zones  # adapter -> zone
        self.rng = random.Random(seed)
        self.beacons: list[SimBeacon] = []
        self.phones: list[SimPhone] = []
        self.rotate_s = rotate_s
        self.noise_db = noise_db
        self.t = 0.0

    def rssi(self, adapter: str, zone: str | None, near: float = -58.0, far: float = -95.0) -> int:
        """Noisy RSSI of something in `zone` as heard by `adapter`'s scanner."""
        base = near if zone is not None and self.zones[adapter] == zone else far
        return max(-127, min(0, round(self.rng.gauss(base, self.noise_db))))

    async def add_beacon(self, beacon: SimBeacon) -> None:
        """Install a beacon (announced on every adapter)."""
        self.beacons.append(beacon)
        for adapter in self.zones:
            mfg, svc = beacon.frames()
            beacon.paths[adapter] = await self.bluez.add_device(adapter, beacon.address,
                                                                self.rssi(adapter, beacon.zone), mfg, svc=svc)

    async def add_phone(self, zone: str | None, address: str | None = None) -> SimPhone:
        """A shopper's phone appears in `zone`."""
        phone = SimPhone(address or random_address(self.rng), zone, self.t)
        self.phones.append(phone)
        await self._announce(phone)
        return phone

    async def _announce(self, phone: SimPhone) -> None:
        mfg = {0x004C: bytes([0x10, 0x05, 0x03, 0x1C, self.rng.randrange(256), 0x8A, 0x3F])}  # Apple nearby info
        for adapter in self.zones:
            phone.paths[adapter] = await self.bluez.add_device(adapter, phone.address,
                                                               self.rssi(adapter, phone.zone), mfg, svc={})

    async def remove_phone(self, phone: SimPhone) -> None:
        """The phone leaves (BlueZ forgets it)."""
        for adapter, path in phone.paths.items():
            with contextlib.suppress(BluezSimError):
                await self.bluez.remove_device(adapter, path)
        self.phones.remove(phone)

    async def rotate(self, phone: SimPhone) -> None:
        """The phone takes a new random address (iOS/Android do, ~every 15 min)."""
        for adapter, path in phone.paths.items():
            with contextlib.suppress(BluezSimError):
                await self.bluez.remove_device(adapter, path)
        phone.address, phone.born, phone.paths = random_address(self.rng), self.t, {}
        await self._announce(phone)

    async def step(self, dt: float = 1.0) -> None:
        """`dt` seconds pass: every non-silent beacon and every phone advertises once on every adapter."""
        self.t += dt
        for b in self.beacons:
            b.uptime_s += dt
            b.battery_mv = max(0.0, b.battery_mv - b.decay_mv_per_s * dt)
            if b.silent:
                continue
            mfg, svc = b.frames()
            for adapter, path in b.paths.items():
                await self.bluez.advert(path, self.rssi(adapter, b.zone), mfg, svc)
        for p in list(self.phones):
            if self.t - p.born >= self.rotate_s:
                await self.rotate(p)
            for adapter, path in p.paths.items():
                await self.bluez.advert(path, self.rssi(adapter, p.zone), {0x004C: b"\x10\x05\x03\x1c\x00\x8a\x3f"}, {})


class BleSimPart:
    """Demo sim part: a private BlueZ with one adapter per zone, store beacons and walking shoppers.

    Sets `os.environ["DBUS_SYSTEM_BUS_ADDRESS"]` so bleak (same process) finds the mock. `beacons_manifest()`
    gives the `beacons:` entries the demo manifest must carry for health alerts.
    """

    name = "ble"

    def __init__(self, period_s: float = 1.0, max_zones: int = 4, shoppers: int = 6,
                 low_battery_in_s: float = 120.0) -> None:
        self.period_s = period_s
        self.low_battery_in_s = low_battery_in_s  # the second zone's Eddystone drops below 2500 mV this late
        self.max_zones = max_zones
        self.shoppers = shoppers
        self.bluez: PrivateBluez | None = None
        self.store: BleStore | None = None
        self._task: asyncio.Task[None] | None = None
        self._hot_zones: list[str] = []
        self._world: World | None = None

    async def start(self, world: World, workdir: Path, local_broker_url: str | None) -> list[dict[str, Any]]:
        """Start dbus-daemon + bluez mock + the store; return one `ble` device section per zone."""
        self._world = world
        zones = [z.id for z in world.manifest.zones][: self.max_zones]
        if not zones:
            return []
        self.bluez = PrivateBluez(workdir / "bluez-mock.log")
        address = await self.bluez.start()
        os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = address
        adapters = {f"hci{i}": z for i, z in enumerate(zones)}
        for a in adapters:
            await self.bluez.add_adapter(a)
        store = self.store = BleStore(self.bluez, adapters, rotate_s=300.0)
        rng = store.rng
        for i, z in enumerate(zones):
            kind = "ibeacon" if i % 2 == 0 else "eddystone"
            await store.add_beacon(SimBeacon(id=f"beacon-{z}", zone=z, kind=kind, address=random_address(rng),
                                             major=1, minor=i + 1, instance=f"{i + 1:012x}",
                                             battery_mv=2500.0 + 0.5 * self.low_battery_in_s if i == 1 else 3000.0,
                                             decay_mv_per_s=0.5 if i == 1 else 0.0, silent=(i == 2)))
        await store.add_beacon(SimBeacon(id="badge-staff-1", zone=zones[-1], kind="ibeacon",
                                         address=random_address(rng), major=9, minor=1, staff_badge=True))
        for _ in range(self.shoppers):
            await store.add_phone(rng.choice(zones))
        world.listeners.append(self._on_world)
        self._task = asyncio.create_task(self._run(), name="ble-sim")
        return [{"id": f"ble-{z}", "type": "ble", "zone": z, "adapter": a} for a, z in adapters.items()]

    def beacons_manifest(self) -> list[dict[str, Any]]:
        """`beacons:` entries for the simulated beacons."""
        return [b.manifest() for b in (self.store.beacons if self.store else [])]

    def _on_world(self, change: WorldChange) -> None:
        # a pick or a return means a shopper stands at that shelf: walk a phone to its zone
        if change.kind in ("pick", "return") and self.store is not None and self._world is not None:
            shelf = self._world.manifest.shelf(change.shelf)
            if shelf is not None and shelf.zone in self.store.zones.values() and len(self._hot_zones) < 100:
                self._hot_zones.append(shelf.zone)

    async def _run(self) -> None:
        store = self.store
        assert store is not None
        zones = list(store.zones.values())
        while True:
            await asyncio.sleep(self.period_s)
            rng = store.rng
            if store.phones and (self._hot_zones or rng.random() < 0.2):
                zone = self._hot_zones.pop(0) if self._hot_zones else rng.choice([*zones, None])
                phone = rng.choice(store.phones)
                if zone is None:
                    await store.remove_phone(phone)
                    await store.add_phone(rng.choice(zones))
                else:
                    phone.zone = zone
            try:
                await store.step(self.period_s)
            except BluezSimError:
                continue  # the mock is being restarted (demo of BlueZ failure): try again next period

    async def stop(self) -> None:
        """Stop the adverts and both processes."""
        # bleak keeps one process-wide connection to the system bus (this simulation's private one) and warns
        # when it goes away; here that is the simulated store closing, not a fault worth a warning
        logging.getLogger("bleak.backends.bluezdbus.manager").setLevel(logging.ERROR)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.bluez is not None:
            await self.bluez.stop()
