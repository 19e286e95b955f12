"""BLE scanner driver (`type: ble`): bleak's BleakScanner on one BlueZ adapter, as an async stream.

On Linux bleak talks to BlueZ (bluetoothd) over the D-Bus *system* bus, whose address it takes from
`DBUS_SYSTEM_BUS_ADDRESS` when it first connects (default: unix:path=/run/dbus/system_bus_socket); tests and
the demo point it at a private dbus-daemon running python-dbusmock's `bluez5` template. bleak's detection
callback feeds a bounded queue (overflow is dropped and reported as `AdvertsDropped`); a `finally` stops
the scanner. A watchdog on its own D-Bus connection checks every `WATCHDOG_S` that bluetoothd still owns
`org.bluez` and that the adapter is present, powered and discovering; if not (adapter unplugged, BlueZ
restarted) the stream raises `DeviceError`, and the supervisor marks the scanner offline and restarts it
with backoff. Docs: docs/ble.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from bleak import BleakScanner
from bleak.args.bluez import BlueZScannerArgs, OrPattern
from bleak.assigned_numbers import AdvertisementDataType
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError
from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusError

from drivers.ble.config import BleConfig
from drivers.ble.reads import Advert, AdvertsDropped
from edge.driver import DeviceOnline, DriverContext, Reading
from edge.errors import DeviceError

WATCHDOG_S = 3.0


def _quiet_bleak() -> None:
    # bleak logs every D-Bus signal, raw device addresses included, at DEBUG: keep it at INFO or above
    log = logging.getLogger("bleak")
    if log.getEffectiveLevel() < logging.INFO:
        log.setLevel(logging.INFO)


class BleDriver:
    """Scans on `config.adapter` and yields one `Advert` per advertisement report."""

    def __init__(self, config: BleConfig, ctx: DriverContext) -> None:
        self.config = config
        self.device_id = config.id
        self._clock = ctx.clock
        self.dropped = 0  # total adverts dropped on queue overflow (a metric)
        self.received = 0
        _quiet_bleak()

    def _scanner_args(self) -> BlueZScannerArgs:
        args = BlueZScannerArgs(adapter=self.config.adapter)
        if self.config.scanning_mode == "passive":
            args["or_patterns"] = [
                OrPattern(p.start, AdvertisementDataType(p.ad_type), bytes.fromhex(p.hex))
                for p in self.config.or_patterns
            ]
        return args

    async def stream(self) -> AsyncIterator[Reading]:
        """Start scanning, yield adverts until cancelled; raise DeviceError when BlueZ or the adapter fails."""
        cfg = self.config
        queue: asyncio.Queue[Advert] = asyncio.Queue(maxsize=cfg.queue_size)
        clock = self._clock
        device_id = self.device_id
        pending_drops = 0

        def on_advert(device: BLEDevice, adv: AdvertisementData) -> None:
            nonlocal pending_drops
            try:
                queue.put_nowait(
                    Advert(
                        device_id=device_id,
                        time=clock.now(),
                        address=device.address,
                        rssi=adv.rssi,
                        tx_power=adv.tx_power,
                        manufacturer_data=adv.manufacturer_data,
                        service_data=adv.service_data,
                        local_name=adv.local_name,
                    )
                )
            except asyncio.QueueFull:
                pending_drops += 1
                self.dropped += 1

        watch_bus = await self._open_watch_bus()
        scanner: BleakScanner | None = None
        try:
            try:
                scanner = BleakScanner(
                    detection_callback=on_advert, scanning_mode=cfg.scanning_mode, bluez=self._scanner_args()
                )
                await scanner.start()
            except (BleakError, DBusError, OSError, EOFError) as exc:
                scanner = None
                raise DeviceError(device_id, f"cannot scan on {cfg.adapter}: {exc}") from exc
            yield DeviceOnline(device_id=device_id, time=clock.now(), detail=f"{cfg.adapter} {cfg.scanning_mode}")
            loop = asyncio.get_running_loop()
            next_check = loop.time() + WATCHDOG_S
            while True:
                timeout = max(0.0, next_check - loop.time())
                try:
                    advert = await asyncio.wait_for(queue.get(), timeout)
                except TimeoutError:
                    await self._check(watch_bus)
                    next_check = loop.time() + WATCHDOG_S
                    continue
                if pending_drops:
                    yield AdvertsDropped(device_id=device_id, time=advert.time, count=pending_drops)
                    pending_drops = 0
                self.received += 1
                yield advert
                if loop.time() >= next_check:
                    await self._check(watch_bus)
                    next_check = loop.time() + WATCHDOG_S
        finally:
            if scanner is not None:
                with contextlib.suppress(BleakError, DBusError, OSError, EOFError, AssertionError):
                    await asyncio.wait_for(scanner.stop(), 5.0)
            watch_bus.disconnect()

    async def _open_watch_bus(self) -> MessageBus:
        try:
            return await MessageBus(bus_type=BusType.SYSTEM).connect()
        except (OSError, EOFError, ValueError, DBusError) as exc:
            raise DeviceError(self.device_id, f"cannot reach the D-Bus system bus (is dbus running?): {exc}") from exc

    async def _check(self, bus: MessageBus) -> None:
        """Raise DeviceError unless bluetoothd is there and the adapter is powered and discovering."""
        path = f"/org/bluez/{self.config.adapter}"
        try:
            reply = await asyncio.wait_for(
                bus.call(
                    Message(
                        destination="org.bluez",
                        path=path,
                        interface="org.freedesktop.DBus.Properties",
                        member="GetAll",
                        signature="s",
                        body=["org.bluez.Adapter1"],
                    )
                ),
                5.0,
            )
        except (OSError, EOFError, TimeoutError) as exc:
            raise DeviceError(self.device_id, f"D-Bus connection lost: {exc!r}") from exc
        if reply is None or reply.message_type == MessageType.ERROR:
            err = reply.error_name if reply is not None else "no reply"
            raise DeviceError(self.device_id, f"adapter {self.config.adapter} is gone ({err}); BlueZ restarting?")
        props = reply.body[0]
        if not props.get("Powered") or not props["Powered"].value:
            raise DeviceError(self.device_id, f"adapter {self.config.adapter} is powered off")
        discovering = props.get("Discovering")
        if self.config.scanning_mode == "active" and (discovering is None or not discovering.value):
            raise DeviceError(self.device_id, f"adapter {self.config.adapter} stopped discovering (BlueZ restarted?)")
