"""Door-counter driver (`type: door_counter`): cumulative in/out counters over serial or local MQTT.

Serial: the `$CNT,<in>,<out>*HH` line protocol of docs/door-protocol.md through pyserial-asyncio-fast
(the port may be a device path or any pyserial URL). MQTT: `{"in": n, "out": m}` JSON on `topic` at the
store-local broker or `broker_url` (edge.mqtt_sub, QoS 1). Silence longer than `read_timeout_s` (devices send
a heartbeat every few seconds), a closed port or a lost broker raise `DeviceError` so the supervisor restarts
with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import serial
import serial_asyncio_fast

from drivers.door.config import DoorCounterConfig
from drivers.door.protocol import Counts, Hello, parse_json, parse_line
from drivers.door.reads import DoorCounts, DoorRebooted
from edge.driver import DeviceOnline, DriverContext, Malformed, Reading
from edge.errors import DeviceError, FrameError
from edge.mqtt_sub import MqttSubError, SubOptions, Subscriber

MAX_LINE = 256


class DoorCounterDriver:
    """Yields `DoorCounts` (cumulative, as the device sent them) and `DoorRebooted`."""

    def __init__(self, config: DoorCounterConfig, ctx: DriverContext) -> None:
        self.config = config
        self.device_id = config.id
        self._clock = ctx.clock
        self._ctx = ctx

    def _reading(self, frame: Counts | Hello) -> Reading:
        now = self._clock.now()
        if isinstance(frame, Hello):
            return DoorRebooted(device_id=self.device_id, time=now, model=frame.model, firmware=frame.firmware)
        tin, tout = frame.total_in, frame.total_out
        if self.config.swap_directions:
            tin, tout = tout, tin
        return DoorCounts(device_id=self.device_id, time=now, total_in=tin, total_out=tout)

    def stream(self) -> AsyncIterator[Reading]:
        """Open the transport and yield readings until cancelled."""
        return self._serial() if self.config.transport == "serial" else self._mqtt()

    async def _serial(self) -> AsyncIterator[Reading]:
        cfg = self.config
        try:
            reader, writer = await serial_asyncio_fast.open_serial_connection(
                url=cfg.port, baudrate=cfg.baudrate, limit=4 * MAX_LINE
            )
        except (OSError, serial.SerialException) as exc:
            raise DeviceError(self.device_id, f"cannot open {cfg.port}: {exc}") from exc
        try:
            yield DeviceOnline(device_id=self.device_id, time=self._clock.now(), detail=str(cfg.port))
            while True:
                try:
                    line = await asyncio.wait_for(reader.readuntil(b"\n"), cfg.read_timeout_s)
                except TimeoutError as exc:
                    raise DeviceError(self.device_id, f"silent for {cfg.read_timeout_s:g} s") from exc
                except asyncio.LimitOverrunError as exc:
                    await reader.readexactly(exc.consumed)  # drop the overlong run and resync at the next LF
                    yield Malformed(device_id=self.device_id, time=self._clock.now(), reason="line too long")
                    continue
                except asyncio.IncompleteReadError as exc:
                    raise DeviceError(self.device_id, "serial port closed") from exc
                except (OSError, serial.SerialException) as exc:
                    raise DeviceError(self.device_id, f"serial error: {exc}") from exc
                if not line.strip():
                    continue
                try:
                    yield self._reading(parse_line(line, cfg.counter_bits))
                except FrameError as exc:
                    yield Malformed(device_id=self.device_id, time=self._clock.now(), reason=exc.reason,
                                    raw=line[:MAX_LINE])
        finally:
            writer.close()
            with contextlib.suppress(OSError, serial.SerialException):
                await writer.wait_closed()

    async def _mqtt(self) -> AsyncIterator[Reading]:
        cfg = self.config
        assert cfg.topic is not None  # checked by the config model
        opts = SubOptions.from_url(self._ctx.broker_url(self.device_id, cfg.broker_url),
                                   client_id=f"edge-door-{self.device_id}", topic=cfg.topic, qos=1)
        try:
            async with Subscriber(opts) as sub, contextlib.aclosing(sub.batches()) as batches:
                yield DeviceOnline(device_id=self.device_id, time=self._clock.now(), detail=cfg.topic)
                while True:
                    try:
                        batch = await asyncio.wait_for(anext(batches), cfg.read_timeout_s)
                    except TimeoutError as exc:
                        raise DeviceError(self.device_id, f"no message for {cfg.read_timeout_s:g} s") from exc
                    for _topic, payload in batch:
                        if payload is None:
                            yield Malformed(device_id=self.device_id, time=self._clock.now(),
                                            reason=f"message larger than {opts.max_packet} bytes, dropped")
                            continue
                        try:
                            yield self._reading(parse_json(payload, cfg.counter_bits))
                        except FrameError as exc:
                            yield Malformed(device_id=self.device_id, time=self._clock.now(), reason=exc.reason,
                                            raw=payload[:MAX_LINE])
        except MqttSubError as exc:
            raise DeviceError(self.device_id, f"local broker {opts.host}:{opts.port}: {exc}") from exc
