"""The bleak driver against a real bleak -> D-Bus -> dbusmock bluez5 path on a private dbus-daemon."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path

import pytest

from drivers.ble.adverts import EDDYSTONE_UUID, encode_eddystone_tlm, encode_ibeacon
from drivers.ble.config import BleConfig
from drivers.ble.driver import BleDriver
from drivers.ble.reads import Advert
from edge.clock import SystemClock
from edge.config import Manifest
from edge.driver import DeviceOnline, DriverContext, Reading
from edge.errors import DeviceError
from firmware_sim.ble import PrivateBluez

UUID = "e2c56db5-dffb-48d2-b060-d0f5a71096e0"


def make_driver(manifest: Manifest, tmp_path: Path, adapter: str = "hci0", **kw: object) -> BleDriver:
    cfg = BleConfig.model_validate({"id": "ble-1", "type": "ble", "zone": "entrance", "adapter": adapter, **kw})
    return BleDriver(cfg, DriverContext(manifest=manifest, clock=SystemClock(), data_dir=tmp_path))


class Collector:
    """Runs a driver stream in a task and collects its readings."""

    def __init__(self, stream: AsyncIterator[Reading]) -> None:
        self.readings: list[Reading] = []
        self.error: BaseException | None = None
        self._stream = stream
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async for r in self._stream:
                self.readings.append(r)
        except Exception as exc:
            self.error = exc

    async def wait_for(self, pred: Callable[[], bool], timeout: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not pred():
            if self.task.done() or loop.time() > end:
                raise AssertionError(f"condition not met; error={self.error!r}, got {len(self.readings)} readings")
            await asyncio.sleep(0.02)

    def adverts(self) -> list[Advert]:
        return [r for r in self.readings if isinstance(r, Advert)]

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def test_scans_beacons_and_phones_through_bluez(bluez: PrivateBluez, demo_manifest: Manifest,
                                                      tmp_path: Path) -> None:
    col = Collector(make_driver(demo_manifest, tmp_path).stream())
    try:
        await col.wait_for(lambda: any(isinstance(r, DeviceOnline) for r in col.readings))
        ib = {0x004C: encode_ibeacon(UUID, 1, 2, -59)}
        path = await bluez.add_device("hci0", "C0:FF:EE:00:00:01", -61, ib, svc={})
        tlm = {EDDYSTONE_UUID: encode_eddystone_tlm(2900, 22.0, 5, 10.0)}
        await bluez.advert(path, -55, ib, tlm)
        phone = await bluez.add_device("hci0", "5A:11:22:33:44:55", -70, {}, svc={}, name="Jo's phone")
        await bluez.advert(phone, -66, {0x004C: b"\x10\x05\x03\x1c\x00\x8a\x3f"}, {})
        await col.wait_for(lambda: len(col.adverts()) >= 4)
        by_addr = [(a.address, a.rssi) for a in col.adverts()]
        assert by_addr == [("C0:FF:EE:00:00:01", -61), ("C0:FF:EE:00:00:01", -55),
                           ("5A:11:22:33:44:55", -70), ("5A:11:22:33:44:55", -66)]
        second = col.adverts()[1]
        assert second.manufacturer_data == ib
        assert second.service_data == tlm
        assert col.adverts()[2].local_name == "Jo's phone"
        assert "5A:11" not in repr(col.adverts()[2])  # the raw address stays out of repr / logs
        assert "Jo" not in repr(col.adverts()[2])
    finally:
        await col.stop()
    # the finally of the stream stopped discovery
    assert (await bluez.discovering("hci0")) is False


async def test_missing_adapter_raises(bluez: PrivateBluez, demo_manifest: Manifest, tmp_path: Path) -> None:
    with pytest.raises(DeviceError, match="hci3"):
        async for _ in make_driver(demo_manifest, tmp_path, adapter="hci3").stream():
            pass


async def test_bluez_restart_raises_so_the_supervisor_retries(bluez: PrivateBluez, demo_manifest: Manifest,
                                                              tmp_path: Path) -> None:
    col = Collector(make_driver(demo_manifest, tmp_path).stream())
    try:
        await col.wait_for(lambda: bool(col.readings))
        await bluez.kill_bluez()
        await col.wait_for(col.task.done, timeout=10)
        assert isinstance(col.error, DeviceError)
    finally:
        await col.stop()
    # BlueZ comes back: a fresh stream (what the supervisor does after backoff) scans again
    await bluez.start_bluez()
    await bluez.add_adapter("hci0")
    col = Collector(make_driver(demo_manifest, tmp_path).stream())
    try:
        await col.wait_for(lambda: any(isinstance(r, DeviceOnline) for r in col.readings))
        path = await bluez.add_device("hci0", "C0:FF:EE:00:00:02", -50, {}, svc={})
        await bluez.advert(path, -51, {}, {})
        await col.wait_for(lambda: len(col.adverts()) >= 2)
    finally:
        await col.stop()


async def test_queue_overflow_is_dropped_and_counted(bluez: PrivateBluez, demo_manifest: Manifest,
                                                     tmp_path: Path) -> None:
    driver = make_driver(demo_manifest, tmp_path, queue_size=16)
    stream = driver.stream()
    assert isinstance(stream, AsyncGenerator)
    first = await anext(stream)
    assert isinstance(first, DeviceOnline)
    path = await bluez.add_device("hci0", "C0:FF:EE:00:00:03", -50, {}, svc={})
    for i in range(40):  # nobody reads the stream meanwhile: the bounded queue overflows
        await bluez.advert(path, -50 - i % 10, {}, {})
    await asyncio.sleep(0.3)
    got = [await anext(stream) for _ in range(3)]
    await stream.aclose()
    assert driver.dropped == 41 - 16
    assert any(getattr(r, "count", 0) == 41 - 16 for r in got)
