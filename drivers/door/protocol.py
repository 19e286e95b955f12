"""Door-counter wire formats (pure): the serial line protocol and the MQTT JSON payload.

Serial (docs/door-protocol.md): ASCII lines `$CNT,<in>,<out>*HH` terminated by CR LF, where `<in>` and
`<out>` are the device's cumulative counters in decimal and `HH` is the NMEA-style checksum: the XOR of
every byte between `$` and `*`, as two hex digits. `$HELLO,<model>,<firmware>*HH` is sent at boot.
MQTT: a JSON object `{"in": <int>, "out": <int>}` (other keys ignored) on the configured topic.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from edge.errors import FrameError


@dataclass(frozen=True, slots=True)
class Counts:
    """Cumulative counters from one frame."""

    total_in: int
    total_out: int


@dataclass(frozen=True, slots=True)
class Hello:
    """The device (re)booted."""

    model: str
    firmware: str


def checksum(body: bytes) -> int:
    """XOR of the bytes between `$` and `*`."""
    c = 0
    for b in body:
        c ^= b
    return c


def encode_line(*fields: str) -> bytes:
    """`$` + comma-joined fields + `*HH` + CR LF."""
    body = ",".join(fields).encode("ascii")
    return b"$" + body + b"*" + f"{checksum(body):02X}".encode() + b"\r\n"


def _counter(text: str, bits: int) -> int:
    if not text.isdigit() or len(text) > 10:
        raise FrameError(f"counter {text[:12]!r} is not a decimal number")
    v = int(text)
    if v >= 1 << bits:
        raise FrameError(f"counter {v} does not fit in {bits} bits")
    return v


def parse_line(line: bytes, bits: int = 32) -> Counts | Hello:
    """One serial line (with or without its CR LF); FrameError when it is not a valid frame."""
    line = line.strip(b"\r\n ")
    if len(line) < 4 or line[:1] != b"$" or line[-3:-2] != b"*":
        raise FrameError("not a $...*HH line", line[:80])
    body, hh = line[1:-3], line[-2:]
    try:
        want = int(hh, 16)
    except ValueError:
        raise FrameError("checksum is not hex", line[:80]) from None
    if checksum(body) != want:
        raise FrameError("checksum mismatch", line[:80])
    try:
        fields = body.decode("ascii").split(",")
    except UnicodeDecodeError:
        raise FrameError("non-ASCII frame", line[:80]) from None
    if fields[0] == "CNT" and len(fields) == 3:
        return Counts(_counter(fields[1], bits), _counter(fields[2], bits))
    if fields[0] == "HELLO" and len(fields) == 3:
        return Hello(fields[1], fields[2])
    raise FrameError(f"unknown frame {fields[0][:12]!r} with {len(fields)} fields", line[:80])


def parse_json(payload: bytes, bits: int = 32) -> Counts:
    """One MQTT payload; FrameError when it is not `{"in": int, "out": int}`."""
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise FrameError("not JSON", payload[:80]) from None
    if not isinstance(obj, dict):
        raise FrameError("JSON payload is not an object", payload[:80])
    vin, vout = obj.get("in"), obj.get("out")
    if type(vin) is not int or type(vout) is not int:
        raise FrameError('"in" and "out" must be integers', payload[:80])
    for v in (vin, vout):
        if not 0 <= v < 1 << bits:
            raise FrameError(f"counter {v} out of range for {bits} bits", payload[:80])
    return Counts(vin, vout)


class CounterDelta:
    """Turns a cumulative counter that may wrap (at 2^bits) or reset (device reboot) into deltas.

    A decrease is a wrap when the wrapped distance is plausible for one report (at most `max_step` people,
    and under half the range): the counter passed its maximum. Otherwise the device restarted and the new
    value is the count since the reboot. The first value is only a baseline (nothing is known about
    what came before).
    """

    def __init__(self, bits: int, max_step: int = 10_000) -> None:
        self.modulo = 1 << bits
        self.max_step = min(max_step, self.modulo // 2)
        self.last: int | None = None
        self.resets = 0
        self.wraps = 0

    def update(self, value: int) -> int:
        """The delta since the previous value (0 for the first)."""
        last, self.last = self.last, value
        if last is None:
            return 0
        if value >= last:
            return value - last
        wrapped = value + self.modulo - last
        if wrapped <= self.max_step:
            self.wraps += 1
            return wrapped
        self.resets += 1
        return value

    def reboot(self) -> None:
        """The device announced a reboot: its next value counts from 0."""
        if self.last is not None:
            self.last = 0
