"""`shelf_modbus`: Modbus-RTU weight transmitters (one unit id per lane) polled with pymodbus 3.x.

Register map, word order, stable bit and tare command are configurable (docs/shelf-protocol.md). A CRC
error, an exception response or a timeout is a failed sample (`WeightFault`): the count engine holds the last
good count and reports a fault after `counting.fault_after` of them in a row. A port that cannot be opened,
or a connection that is gone, raises so the supervisor reopens it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from drivers.shelf.config import ShelfModbusConfig
from drivers.shelf.reads import WeightFault, WeightSample
from edge.driver import DeviceOnline, DriverContext, Reading
from edge.errors import DeviceError, FrameError


def decode_weight(regs: Sequence[int], word_order: str = "big", signed: bool = True, scale: float = 1.0) -> float:
    """Two 16-bit registers -> grams (32-bit value, high word first for "big", last for "little")."""
    if len(regs) != 2 or not all(0 <= r <= 0xFFFF for r in regs):
        raise FrameError(f"a weight needs two 16-bit registers, got {list(regs)!r}")
    hi, lo = (regs[0], regs[1]) if word_order == "big" else (regs[1], regs[0])
    value = (hi << 16) | lo
    if signed and value & 0x8000_0000:
        value -= 1 << 32
    return round(value * scale, 6)


def encode_weight(grams: float, word_order: str = "big", scale: float = 1.0) -> list[int]:
    """Grams -> two registers (signed 32-bit), the inverse of `decode_weight` (for simulators and tests)."""
    value = round(grams / scale) & 0xFFFF_FFFF
    hi, lo = value >> 16, value & 0xFFFF
    return [hi, lo] if word_order == "big" else [lo, hi]


class ShelfModbusDriver:
    """Polls every lane's transmitter in turn and yields `WeightSample` / `WeightFault`."""

    def __init__(self, config: ShelfModbusConfig, ctx: DriverContext) -> None:
        self.config = config
        self.device_id = config.id
        self._ctx = ctx
        self.polls = 0
        self.failures = 0

    def _span(self) -> tuple[int, int, int, int | None]:
        """(start, count, weight offset, status offset) of the one block read per poll."""
        cfg = self.config
        weight = cfg.net_register if cfg.use_net else cfg.weight_register
        regs = [weight, weight + 1] + ([cfg.status_register] if cfg.status_register is not None else [])
        start = min(regs)
        count = max(regs) - start + 1
        if count > 125:
            raise DeviceError(self.device_id, "weight and status registers are too far apart for one read")
        status = cfg.status_register - start if cfg.status_register is not None else None
        return start, count, weight - start, status

    async def stream(self) -> AsyncGenerator[Reading, None]:
        """Open the line, optionally tare, then poll until cancelled; raise when the line is gone."""
        cfg = self.config
        clock = self._ctx.clock
        start, count, w_off, s_off = self._span()
        client = AsyncModbusSerialClient(
            cfg.port,
            framer=FramerType.RTU,
            baudrate=cfg.baudrate,
            parity=cfg.parity,
            stopbits=cfg.stopbits,
            timeout=cfg.timeout_s,
            retries=0,
            reconnect_delay=0,
        )
        try:
            if not await client.connect():
                raise DeviceError(self.device_id, f"cannot open {cfg.port}: check the port and the adapter")
            yield DeviceOnline(device_id=self.device_id, time=clock.now(), detail=cfg.port)
            if cfg.tare_on_start:
                for m in cfg.lanes:
                    await self._tare(client, int(m.channel))
            read = client.read_holding_registers if cfg.register_kind == "holding" else client.read_input_registers
            while True:
                for m in cfg.lanes:
                    self.polls += 1
                    try:
                        rr = await read(start, count=count, device_id=int(m.channel))
                    except ConnectionException as exc:
                        raise DeviceError(self.device_id, f"modbus line {cfg.port} lost: {exc}") from exc
                    except ModbusIOException as exc:
                        code = "crc" if "crc" in str(exc).lower() else "timeout"
                        if not client.connected:
                            raise DeviceError(self.device_id, f"modbus line {cfg.port} lost: {exc}") from exc
                        self.failures += 1
                        yield WeightFault(
                            device_id=self.device_id,
                            time=clock.now(),
                            shelf=m.shelf,
                            lane=m.lane,
                            code=code,
                            detail=str(exc)[:120],
                        )
                        continue
                    except ModbusException as exc:
                        self.failures += 1
                        yield WeightFault(
                            device_id=self.device_id,
                            time=clock.now(),
                            shelf=m.shelf,
                            lane=m.lane,
                            code="crc",
                            detail=str(exc)[:120],
                        )
                        continue
                    now = clock.now()
                    if rr.isError():
                        self.failures += 1
                        yield WeightFault(
                            device_id=self.device_id,
                            time=now,
                            shelf=m.shelf,
                            lane=m.lane,
                            code="exception",
                            detail=str(getattr(rr, "exception_code", "")),
                        )
                        continue
                    regs = list(rr.registers)
                    try:
                        grams = decode_weight(regs[w_off : w_off + 2], cfg.word_order, cfg.signed, cfg.scale)
                    except FrameError as err:
                        self.failures += 1
                        yield WeightFault(
                            device_id=self.device_id,
                            time=now,
                            shelf=m.shelf,
                            lane=m.lane,
                            code="short",
                            detail=err.reason,
                        )
                        continue
                    stable = True if s_off is None else bool(regs[s_off] >> cfg.stable_bit & 1)
                    yield WeightSample(
                        device_id=self.device_id, time=now, shelf=m.shelf, lane=m.lane, grams=grams, stable=stable
                    )
                await clock.sleep(cfg.poll_interval_s)
        finally:
            client.close()

    async def _tare(self, client: AsyncModbusSerialClient, unit: int) -> None:
        cfg = self.config
        try:
            if cfg.tare_kind == "coil":
                rr = await client.write_coil(cfg.tare_address, True, device_id=unit)
            else:
                rr = await client.write_register(cfg.tare_address, cfg.tare_value, device_id=unit)
        except ModbusException as exc:
            raise DeviceError(self.device_id, f"tare command to unit {unit} failed: {exc}") from exc
        if rr.isError():
            raise DeviceError(self.device_id, f"unit {unit} refused the tare command: check tare_address")
