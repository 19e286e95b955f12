"""What the simulated serial devices put on the wire, written from our device documentation (never from the
drivers' codecs, so a codec bug shows up as a disagreement with the simulator instead of twice):

- door counter (docs/door-protocol.md): `$<FIELDS>*HH` CR LF, HH = XOR of every byte between `$` and `*`,
  two upper-case hex digits; frames `CNT,<in>,<out>` and `HELLO,<model>,<firmware>`;
- serial shelf controller (docs/shelf-protocol.md, "Serial shelf controller"): `<body>*HH` CR LF, HH = XOR
  of every byte before the `*`, two upper-case hex digits; lines `W,<seq>,<lane>,<grams>,<S|U>`,
  `F,<lane>,<code>`, `H,<fw>,<lanes>,<hz>`;
- Modbus weight transmitter (docs/shelf-protocol.md, "Modbus-RTU weight transmitters"): a weight is a
  32-bit value in units of `scale` grams, two 16-bit registers, high word first (`big`) or last (`little`).
"""

from __future__ import annotations

import math
from functools import reduce


def xor(data: bytes) -> int:
    """The XOR of the bytes: the checksum of both line protocols."""
    return reduce(lambda acc, b: acc ^ b, data, 0)


def door_line(*fields: str) -> bytes:
    """One door-counter frame: `$` + the comma-joined fields + `*HH` + CR LF (docs/door-protocol.md)."""
    body = ",".join(fields).encode("ascii")
    return b"$" + body + b"*" + f"{xor(body):02X}".encode("ascii") + b"\r\n"


def door_counts(total_in: int, total_out: int) -> bytes:
    """`$CNT,<in>,<out>*HH`: the cumulative counters in decimal."""
    return door_line("CNT", str(total_in), str(total_out))


def door_hello(model: str, firmware: str) -> bytes:
    """`$HELLO,<model>,<firmware>*HH`: sent at boot."""
    return door_line("HELLO", model, firmware)


def shelf_line(body: str) -> bytes:
    """One shelf-controller line: the body + `*HH` + CR LF (docs/shelf-protocol.md)."""
    raw = body.encode("ascii")
    return raw + b"*" + f"{xor(raw):02X}".encode("ascii") + b"\r\n"


def shelf_weight(seq: int, lane: str, grams: float, *, stable: bool) -> bytes:
    """`W,<seq>,<lane>,<grams>,<S|U>`: sequence 0..65535 (wraps), gross grams (this controller sends one
    decimal; the protocol allows up to 4) or `NaN` when the ADC read failed, S stable / U moving."""
    g = "NaN" if math.isnan(grams) else f"{grams:.1f}"
    return shelf_line(f"W,{seq % 65536},{lane},{g},{'S' if stable else 'U'}")


def shelf_fault(lane: str, code: str) -> bytes:
    """`F,<lane>,<code>`: a fault on a lane (`*` = every lane)."""
    return shelf_line(f"F,{lane},{code}")


def shelf_hello(firmware: str, lanes: int, hz: int) -> bytes:
    """`H,<fw>,<lanes>,<hz>`: at boot and every 10 s."""
    return shelf_line(f"H,{firmware},{lanes},{hz}")


def weight_registers(grams: float, word_order: str, scale: float) -> list[int]:
    """A weight as the transmitter holds it: round(grams / scale) as a signed 32-bit two's-complement value,
    split into two 16-bit registers, high word first (`big`) or last (`little`)."""
    value = round(grams / scale)
    if not -(1 << 31) <= value < 1 << 31:
        raise ValueError(f"{grams} g at {scale} g per unit does not fit a signed 32-bit register pair")
    raw = value & 0xFFFF_FFFF
    high, low = raw >> 16, raw & 0xFFFF
    return [high, low] if word_order == "big" else [low, high]
