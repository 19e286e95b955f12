"""Simulated weight shelves reading the World: a serial shelf controller on a pseudo-terminal, a Modbus-RTU
weight transmitter line (pymodbus server on a pty), and an MQTT shelf publisher.

Grams of a lane = items really on it x unit weight + tare + a resting hand, a foreign object or a lean (all
World truth) + HX711-like noise + slow drift. Faults on demand: NaN, stuck ADC, corrupted checksums / CRCs,
garbage, silence, unplugging the port; per load cell, on every sim, `stick_cell` (the cell repeats its last
raw value), `unplug_cell` (the cell is gone, as the protocol says it: serial `NaN` samples, Modbus no answer
from its transmitter (timeouts), MQTT `"grams": null`) and `heal_cell`. Foreign objects and leans are World
actions (`World.place_object` / `remove_object`, `World.lean`). The serial protocol is docs/shelf-protocol.md
(encoded by firmware_sim/serial_frames.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import math
import os
import random
import tty
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
from pymodbus import FramerType
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

from firmware_sim.mqtt_pub import broker_address, publish_forever
from firmware_sim.serial_frames import shelf_fault, shelf_hello, shelf_weight, weight_registers
from firmware_sim.world import World

FIRMWARE = "sim-1.2"


@dataclass
class LaneSim:
    """One simulated load cell: which World lane it weighs and how it misbehaves."""

    shelf: str
    lane: str
    channel: str
    tare_g: float
    noise_g: float = 1.2
    drift_g_per_h: float = 2.0
    fault: str | None = None  # "nan" | "stuck" | "crc" | "garbage" | "silent" | "adc" | "unplugged"
    stuck_value: float | None = None
    last_g: float | None = None  # the last value the ADC gave (what a stuck cell repeats)

    def grams(self, world: World, hours: float, rng: random.Random) -> float:
        """What the ADC reads now."""
        truth = world.lanes[(self.shelf, self.lane)]
        g = (truth.count * truth.unit_weight_g + self.tare_g + truth.hand_g + truth.object_g + truth.lean_g
             + self.drift_g_per_h * hours)
        if truth.hand_g:
            g += rng.gauss(0, 25.0)  # a hand trembles
        if truth.lean_g:
            g += rng.gauss(0, 1.0)  # a leaning arm is steadier than a hand, but not still
        return g + rng.gauss(0, self.noise_g)

    def sample(self, world: World, hours: float, rng: random.Random) -> float:
        """What the cell delivers now, faults applied: NaN when unplugged or NaN, the last value when stuck."""
        if self.fault in ("nan", "unplugged"):
            return math.nan
        if self.fault == "stuck":
            if self.stuck_value is None:
                self.stuck_value = round(self.last_g if self.last_g is not None else self.grams(world, hours, rng), 1)
            return self.stuck_value
        g = self.grams(world, hours, rng)
        self.last_g = g
        return g


class CellFaults:
    """Per load cell fault injection shared by the three simulated shelves (`lanes` is theirs)."""

    lanes: list[LaneSim]

    def _cell(self, shelf: str, lane: str) -> LaneSim:
        for ln in self.lanes:
            if ln.shelf == shelf and ln.lane == lane:
                return ln
        raise KeyError(f"no simulated load cell under {shelf}/{lane}")

    def stick_cell(self, shelf: str, lane: str) -> None:
        """The lane's load cell gets stuck: it repeats its last raw value exactly (a frozen ADC)."""
        ln = self._cell(shelf, lane)
        ln.fault, ln.stuck_value = "stuck", None

    def unplug_cell(self, shelf: str, lane: str) -> None:
        """The lane's load cell is unplugged: no reading as the protocol says it (see the module docstring)."""
        self._cell(shelf, lane).fault = "unplugged"

    def heal_cell(self, shelf: str, lane: str) -> None:
        """The lane's load cell works again."""
        ln = self._cell(shelf, lane)
        ln.fault, ln.stuck_value = None, None


class PtyPort:
    """A pseudo-terminal standing in for a USB serial adapter, reachable under a stable symlink.

    `unplug()` closes the master side (the reader sees EIO/EOF); `replug()` opens a new pty and points the
    same symlink at it, as udev does with /dev/serial/by-id/... when the adapter comes back.
    """

    def __init__(self, link: Path) -> None:
        self.link = link
        self.master: int | None = None
        self._slave: int | None = None
        self.replug()

    def replug(self) -> None:
        """Create a fresh pty behind the link."""
        self.unplug()
        master, slave = os.openpty()
        tty.setraw(slave)
        flags = fcntl.fcntl(master, fcntl.F_GETFL)
        fcntl.fcntl(master, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        self.master, self._slave = master, slave
        tmp = self.link.with_suffix(".tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(os.ttyname(slave))
        tmp.replace(self.link)

    def unplug(self) -> None:
        """Close the pty: the device is gone."""
        for fd in (self.master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.master = self._slave = None

    def write(self, data: bytes) -> None:
        """Send bytes to whoever has the port open; dropped when nobody reads (like a UART)."""
        if self.master is None:
            return
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self.master, data)

    def read(self) -> bytes:
        """Bytes the host sent (non-blocking; b"" when none)."""
        if self.master is None:
            return b""
        try:
            return os.read(self.master, 4096)
        except (BlockingIOError, OSError):
            return b""


class SerialShelfSim(CellFaults):
    """A shelf controller streaming `W` lines for its lanes at `hz` on a pty."""

    def __init__(self, world: World, link: Path, lanes: list[LaneSim], hz: float = 10.0, seed: int = 11) -> None:
        self.world = world
        self.port = PtyPort(link)
        self.lanes = lanes
        self.hz = hz
        self.rng = random.Random(seed)
        self._seq = 0
        self._t0 = world.clock.monotonic()
        self._task: asyncio.Task[None] | None = None
        self.lines_sent = 0

    def frame(self) -> bytes:
        """One sampling period's worth of lines (all lanes)."""
        hours = (self.world.clock.monotonic() - self._t0) / 3600.0
        out = bytearray()
        if self.lines_sent % max(1, int(self.hz * 10)) == 0:  # hello at boot and every 10 s
            out += shelf_hello(FIRMWARE, len(self.lanes), int(self.hz))
        for ln in self.lanes:
            self._seq += 1
            if ln.fault == "silent":
                continue
            if ln.fault == "adc":
                out += shelf_fault(ln.channel, "adc")
                continue
            if ln.fault == "garbage":
                out += bytes(self.rng.randrange(256) for _ in range(20)) + b"\r\n"
                continue
            g = ln.sample(self.world, hours, self.rng)
            line = shelf_weight(self._seq, ln.channel, g, stable=self.world.lanes[(ln.shelf, ln.lane)].hand_g == 0)
            if ln.fault == "crc":
                line = line[:-4] + (b"00" if line[-4:-2] != b"00" else b"11") + b"\r\n"
            out += line
        self.lines_sent += 1
        return bytes(out)

    def set_fault(self, fault: str | None, channel: str | None = None) -> None:
        """Make one lane (or every lane) misbehave; None heals it."""
        for ln in self.lanes:
            if channel is None or ln.channel == channel:
                ln.fault = fault
                ln.stuck_value = None

    async def run(self) -> None:
        """Stream until cancelled."""
        period = 1.0 / self.hz
        while True:
            self.port.write(self.frame())
            await asyncio.sleep(period)

    def start(self) -> None:
        """Start streaming in the background."""
        self._task = asyncio.get_running_loop().create_task(self.run(), name=f"shelf-sim {self.port.link.name}")

    async def stop(self) -> None:
        """Stop streaming and unplug."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.port.unplug()


class ModbusShelfSim(CellFaults):
    """A line of Modbus-RTU weight transmitters (unit id per lane) served by pymodbus on a pty.

    Two ptys are bridged: the pymodbus server opens one, the driver opens the other (`port.link`), and the
    bridge copies bytes both ways, which is where line faults are injected: `fault = "crc"` corrupts a byte
    of every response, `"silent"` drops the responses (timeouts). Registers per unit: 0-1 gross, 2-3 net (both
    signed 32-bit, `word_order`), 4 status (bit 0 stable); coil 0 or holding register 10 (write 1) = tare.
    """

    def __init__(self, world: World, link: Path, lanes: list[LaneSim], word_order: str = "big", seed: int = 13) -> None:
        self.world = world
        self.lanes = list(lanes)
        self.units = {int(ln.channel): ln for ln in lanes}
        self.word_order = word_order
        self.port = PtyPort(link)  # the driver's side
        self._server_port = PtyPort(link.with_name(link.name + ".server"))
        self.rng = random.Random(seed)
        self.fault: str | None = None
        self.device_tare: dict[int, float] = dict.fromkeys(self.units, 0.0)
        self.tare_commands = 0
        self._t0 = world.clock.monotonic()
        self._server: Any = None
        self._tasks: list[asyncio.Task[Any]] = []

    async def _action(  # noqa: PLR0917 - the signature is pymodbus' SimAction
        self, unit: int, fc: int, start: int, address: int, count: int, regs: list[int], values: Any
    ) -> None:
        ln = self.units[unit]
        if fc in (5, 6, 15, 16) and values:  # tare: coil 0 or holding register 10
            if (fc in (5, 15) and address == 0 and values[0]) or (fc in (6, 16) and address == 10):
                self.tare_commands += 1
                self.device_tare[unit] = ln.grams(self.world, 0.0, self.rng)
            return
        hours = (self.world.clock.monotonic() - self._t0) / 3600.0
        gross = ln.sample(self.world, hours, self.rng)
        if not math.isfinite(gross):  # a transmitter has no NaN register value: it freezes at the last one
            gross = ln.last_g if ln.last_g is not None else 0.0
        net = gross - self.device_tare[unit]
        block = weight_registers(gross, self.word_order, 0.1) + weight_registers(net, self.word_order, 0.1)
        stable = self.world.lanes[(ln.shelf, ln.lane)].hand_g == 0
        block.append(1 if stable else 0)
        for i, v in enumerate(block):
            if 0 <= i - start < len(regs):
                regs[i - start] = v

    async def start(self) -> None:
        """Start the pymodbus server and the bridge."""
        devices = [
            SimDevice(
                id=unit,
                simdata=(
                    [SimData(0, count=16, values=False, datatype=DataType.BITS)],
                    [SimData(0, count=16, values=False, datatype=DataType.BITS)],
                    [SimData(0, count=16, values=0, datatype=DataType.REGISTERS)],
                    [SimData(0, count=16, values=0, datatype=DataType.REGISTERS)],
                ),
                action=functools.partial(self._action, unit),
            )
            for unit in self.units
        ]
        self._server = ModbusSerialServer(
            devices, framer=FramerType.RTU, port=str(self._server_port.link), baudrate=115200
        )
        await self._server.listen()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._bridge(), name="modbus-sim bridge")]

    async def _bridge(self) -> None:
        while True:
            request = self.port.read()
            if request:
                self._server_port.write(request)
            response = self._server_port.read()
            unit = response[0] if response else 0
            if unit in self.units and self.units[unit].fault == "unplugged":
                response = b""  # that transmitter is gone from the bus: the driver's request times out
            if response and self.fault != "silent":
                if self.fault == "crc":
                    response = response[:-1] + bytes([response[-1] ^ 0x5A])
                self.port.write(response)
            await asyncio.sleep(0.002)

    async def stop(self) -> None:
        """Stop the server and the bridge, unplug both ptys."""
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            await self._server.shutdown()
        self.port.unplug()
        self._server_port.unplug()


class MqttShelfSim(CellFaults):
    """A networked shelf publishing JSON weight readings of its lanes to the store-local broker."""

    def __init__(
        self,
        world: World,
        broker_url: str,
        lanes: list[LaneSim],
        *,
        hz: float = 5.0,
        topic: str = "shelves/{shelf}/weight",
        seed: int = 17,
    ) -> None:
        self.world = world
        self.broker_url = broker_url
        self.lanes = lanes
        self.hz = hz
        self.topic = topic
        self.rng = random.Random(seed)
        self._t0 = world.clock.monotonic()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.sent = 0

    def payloads(self) -> list[tuple[str, bytes]]:
        """(topic, JSON) of one sampling period."""
        hours = (self.world.clock.monotonic() - self._t0) / 3600.0
        out = []
        for ln in self.lanes:
            if ln.fault == "silent":
                continue
            g = ln.sample(self.world, hours, self.rng)
            body: dict[str, Any] = {
                "shelf": ln.shelf,
                "lane": ln.lane,
                "grams": None if math.isnan(g) else round(g, 1),
                "stable": self.world.lanes[(ln.shelf, ln.lane)].hand_g == 0,
                "ts": self.world.clock.now().isoformat().replace("+00:00", "Z"),
            }
            out.append((self.topic.format(shelf=ln.shelf), orjson.dumps(body)))
        return out

    async def run(self) -> None:
        """Publish until cancelled (reconnecting when the broker goes away)."""

        async def cycle(client: aiomqtt.Client) -> None:
            for topic, payload in self.payloads():
                await client.publish(topic, payload)
                self.sent += 1
            await asyncio.sleep(1.0 / self.hz)

        await publish_forever(*broker_address(self.broker_url), cycle, stopping=lambda: self._stopping)

    def start(self) -> None:
        """Start publishing in the background (again after `stop`)."""
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self.run(), name="mqtt shelf sim")

    async def stop(self) -> None:
        """Stop publishing."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def lanes_for(world: World, shelf: str, tare_g: float = 850.0) -> list[LaneSim]:
    """One simulated load cell per planogram lane of `shelf`, channels numbered from 1."""
    keys = [k for k in world.lanes if k[0] == shelf]
    return [LaneSim(shelf, lane, str(i + 1), tare_g + 37.5 * i) for i, (_, lane) in enumerate(keys)]


def lane_sections(lanes: list[LaneSim], by: str = "channel") -> list[dict[str, Any]]:
    """Manifest `lanes:` entries for simulated lanes."""
    return [
        {
            "channel": ln.channel if by == "channel" else f"{ln.shelf}:{ln.lane}",
            "shelf": ln.shelf,
            "lane": ln.lane,
            "tare_g": ln.tare_g,
        }
        for ln in lanes
    ]


class ShelfSimPart:
    """Sim part for the demo: a serial shelf controller for shelf-a1, Modbus transmitters for shelf-b1, and
    (with a local broker) an MQTT shelf for rack-c1. Returns the manifest device sections."""

    name = "shelves"

    def __init__(self, hz: float = 10.0) -> None:
        self.hz = hz
        self.serial: SerialShelfSim | None = None
        self.modbus: ModbusShelfSim | None = None
        self.mqtt: MqttShelfSim | None = None

    async def start(self, world: World, workdir: Path, local_broker_url: str | None) -> list[dict[str, Any]]:
        """Start the simulated shelves and say how the drivers reach them."""
        os.makedirs(workdir, exist_ok=True)
        sections: list[dict[str, Any]] = []
        shelves = {k[0] for k in world.lanes}
        if "shelf-a1" in shelves:
            lanes = lanes_for(world, "shelf-a1")
            self.serial = SerialShelfSim(world, workdir / "shelf-a1.tty", lanes, hz=self.hz)
            self.serial.start()
            sections.append(
                {
                    "id": "shelf-a1-ctrl",
                    "type": "shelf_serial",
                    "zone": world.lanes[lanes[0].shelf, lanes[0].lane].zone,
                    "port": str(self.serial.port.link),
                    "lanes": lane_sections(lanes),
                }
            )
        if "shelf-b1" in shelves:
            lanes = lanes_for(world, "shelf-b1")
            self.modbus = ModbusShelfSim(world, workdir / "rs485-b1.tty", lanes)
            await self.modbus.start()
            sections.append(
                {
                    "id": "shelf-b1-modbus",
                    "type": "shelf_modbus",
                    "port": str(self.modbus.port.link),
                    "baudrate": 115200,
                    "scale": 0.1,
                    "poll_interval_s": 0.1,
                    "timeout_s": 0.3,
                    "lanes": lane_sections(lanes),
                }
            )
        if local_broker_url and "rack-c1" in shelves:
            lanes = lanes_for(world, "rack-c1")
            self.mqtt = MqttShelfSim(world, local_broker_url, lanes, hz=self.hz)
            self.mqtt.start()
            sections.append(
                {
                    "id": "rack-c1-shelf",
                    "type": "shelf_mqtt",
                    "broker_url": local_broker_url,
                    "lanes": lane_sections(lanes, by="key"),
                }
            )
        return sections

    def sim_of(self, shelf: str) -> CellFaults:
        """The simulated shelf that weighs `shelf`'s lanes (for fault injection in scripted days)."""
        for part in (self.serial, self.modbus, self.mqtt):
            if part is not None and any(ln.shelf == shelf for ln in part.lanes):
                return part
        raise KeyError(f"no simulated shelf weighs {shelf}")

    def stick_cell(self, shelf: str, lane: str) -> None:
        """The lane's load cell repeats its last raw value (whichever simulated shelf weighs it)."""
        self.sim_of(shelf).stick_cell(shelf, lane)

    def unplug_cell(self, shelf: str, lane: str) -> None:
        """The lane's load cell is unplugged (serial NaN, Modbus timeouts, MQTT null grams)."""
        self.sim_of(shelf).unplug_cell(shelf, lane)

    def heal_cell(self, shelf: str, lane: str) -> None:
        """The lane's load cell works again."""
        self.sim_of(shelf).heal_cell(shelf, lane)

    async def stop(self) -> None:
        """Stop every simulated shelf."""
        for part in (self.serial, self.modbus, self.mqtt):
            if part is not None:
                await part.stop()
