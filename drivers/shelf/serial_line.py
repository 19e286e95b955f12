"""`shelf_serial`: a shelf controller (MCU + HX711 ADCs) on a serial port, speaking the shelf line protocol.

Spec: docs/shelf-protocol.md. ASCII lines with an NMEA-like XOR checksum:
`W,<seq>,<lane>,<grams>,<S|U>*HH\\r\\n` (weight), `F,<lane>,<code>*HH` (fault), `H,<fw>,<lanes>,<hz>*HH`
(hello). A bad line is `Malformed` and skipped (a bad checksum also counts as a failed sample on every lane,
so a noisy cable becomes a `crc` fault); EOF or a read error (port unplugged) raises, and the supervisor
reopens the port when it reappears.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncGenerator
from dataclasses import dataclass

import serial_asyncio_fast

from drivers.shelf.config import ShelfSerialConfig
from drivers.shelf.reads import WeightFault, WeightSample
from edge.driver import DeviceOnline, DriverContext, Malformed, Reading
from edge.errors import DeviceError, FrameError

MAX_LINE = 256  # protocol lines are < 64 bytes; anything longer is garbage


@dataclass(frozen=True, slots=True)
class WeightLine:
    """`W`: one sample of one lane."""

    seq: int
    lane: str
    grams: float
    stable: bool


@dataclass(frozen=True, slots=True)
class FaultLine:
    """`F`: the controller reports a fault on a lane (`*` = every lane)."""

    lane: str
    code: str


@dataclass(frozen=True, slots=True)
class HelloLine:
    """`H`: firmware version, number of lanes, sample rate (sent at boot and every 10 s)."""

    firmware: str
    lanes: int
    hz: int


ShelfLine = WeightLine | FaultLine | HelloLine


def checksum(body: bytes) -> int:
    """XOR of every byte of the body (everything before `*`)."""
    x = 0
    for b in body:
        x ^= b
    return x


def encode(body: str) -> bytes:
    """Frame a body as a protocol line: `body*HH\\r\\n`."""
    raw = body.encode("ascii")
    return raw + b"*%02X\r\n" % checksum(raw)


def encode_weight(seq: int, lane: str, grams: float, stable: bool) -> bytes:
    """A `W` line (grams with one decimal; NaN as `NaN`)."""
    g = "NaN" if math.isnan(grams) else f"{grams:.1f}"
    return encode(f"W,{seq % 65536},{lane},{g},{'S' if stable else 'U'}")


def _field_ok(s: str) -> bool:
    return 0 < len(s) <= 16 and all(c.isalnum() or c in "-_." for c in s)


def decode(line: bytes) -> ShelfLine:
    """Decode one line (with or without CR LF); raise `FrameError` for anything not in the protocol."""
    line = line.rstrip(b"\r\n")
    body, star, cs = line.rpartition(b"*")
    if not star or len(cs) != 2:
        raise FrameError("no checksum", line)
    try:
        want = int(cs, 16)
    except ValueError:
        raise FrameError("checksum is not hex", line) from None
    if checksum(body) != want:
        raise FrameError("bad checksum", line)
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise FrameError("not ASCII", line) from None
    parts = text.split(",")
    kind = parts[0]
    if kind == "W" and len(parts) == 5:
        _, seq, lane, grams, flag = parts
        if not seq.isdigit() or not _field_ok(lane) or flag not in ("S", "U"):
            raise FrameError("bad W fields", line)
        if grams != "NaN" and not _is_decimal(grams):
            raise FrameError("bad grams", line)
        return WeightLine(int(seq) % 65536, lane, float(grams), flag == "S")
    if kind == "F" and len(parts) == 3:
        _, lane, code = parts
        if not (lane == "*" or _field_ok(lane)) or not _field_ok(code):
            raise FrameError("bad F fields", line)
        return FaultLine(lane, code)
    if kind == "H" and len(parts) == 4:
        _, fw, lanes, hz = parts
        if not _field_ok(fw) or not lanes.isdigit() or not hz.isdigit():
            raise FrameError("bad H fields", line)
        return HelloLine(fw, int(lanes), int(hz))
    raise FrameError("unknown line", line)


def _is_decimal(s: str) -> bool:
    body = s[1:] if s[:1] == "-" else s
    whole, _, frac = body.partition(".")
    return 0 < len(whole) <= 9 and whole.isdigit() and (frac == "" or (frac.isdigit() and len(frac) <= 4))


class ShelfSerialDriver:
    """Reads a shelf controller's lines and yields `WeightSample`/`WeightFault` per mapped lane."""

    def __init__(self, config: ShelfSerialConfig, ctx: DriverContext) -> None:
        self.config = config
        self.device_id = config.id
        self._ctx = ctx
        self._lanes = config.lane_by_channel()
        self.firmware: str | None = None
        self.lost = 0  # lines lost according to the sequence numbers

    async def stream(self) -> AsyncGenerator[Reading, None]:
        """Open the port and yield readings until the port goes away (then raise)."""
        cfg = self.config
        clock = self._ctx.clock
        reader, writer = await serial_asyncio_fast.open_serial_connection(
            url=cfg.port, baudrate=cfg.baudrate, limit=4 * MAX_LINE
        )
        last_seq: dict[str, int] = {}
        try:
            yield DeviceOnline(device_id=self.device_id, time=clock.now(), detail=cfg.port)
            while True:
                try:
                    raw = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError as exc:
                    raise DeviceError(self.device_id, f"serial port {cfg.port} closed (EOF)") from exc
                except asyncio.LimitOverrunError as exc:
                    # garbage without line ends: drop what is buffered and resynchronise on the next LF
                    junk = await reader.read(exc.consumed or MAX_LINE)
                    yield Malformed(device_id=self.device_id, time=clock.now(), reason="line too long", raw=junk[:64])
                    continue
                now = clock.now()
                if len(raw) > MAX_LINE:
                    yield Malformed(device_id=self.device_id, time=now, reason="line too long", raw=raw[:64])
                    continue
                try:
                    line = decode(raw)
                except FrameError as err:
                    yield Malformed(device_id=self.device_id, time=now, reason=err.reason, raw=raw[:64])
                    if err.reason == "bad checksum":
                        for each in self._lanes.values():
                            yield WeightFault(
                                device_id=self.device_id, time=now, shelf=each.shelf, lane=each.lane, code="crc"
                            )
                    continue
                if isinstance(line, WeightLine):
                    m = self._lanes.get(line.lane)
                    if m is None:
                        yield Malformed(device_id=self.device_id, time=now, reason=f"unmapped lane {line.lane}")
                        continue
                    prev = last_seq.get(line.lane)
                    if prev is not None:
                        self.lost += (line.seq - prev - 1) % 65536
                    last_seq[line.lane] = line.seq
                    yield WeightSample(
                        device_id=self.device_id,
                        time=now,
                        shelf=m.shelf,
                        lane=m.lane,
                        grams=line.grams,
                        stable=line.stable,
                    )
                elif isinstance(line, FaultLine):
                    targets = self._lanes.values() if line.lane == "*" else filter(None, [self._lanes.get(line.lane)])
                    for m in targets:
                        yield WeightFault(
                            device_id=self.device_id, time=now, shelf=m.shelf, lane=m.lane, code=line.code
                        )
                else:
                    self.firmware = line.firmware
        except OSError as exc:
            raise DeviceError(self.device_id, f"serial port {cfg.port}: {exc}") from exc
        finally:
            writer.close()
