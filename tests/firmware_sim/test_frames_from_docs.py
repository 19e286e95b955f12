"""The simulators' serial and BLE encoders (firmware_sim/serial_frames.py, firmware_sim/ble_frames.py) against
the published examples: each simulator encoder reproduces the example bytes exactly, and our driver decodes
those bytes to the values the documentation gives. Sources, per case:

- door: docs/door-protocol.md, "Example: `$CNT,12,7*6D` (in 12, out 7)";
- shelf serial: docs/shelf-protocol.md, the four example lines under "Serial shelf controller";
- shelf Modbus: docs/shelf-protocol.md, "Modbus-RTU weight transmitters" (signed 32-bit, word order, scale):
  worked by hand below, since the document gives no register dump;
- iBeacon: Apple Proximity Beacon Specification R1 layout with Apple's AirLocate sample UUID
  E2C56DB5-DFFB-48D2-B060-D0F5A71096E0, major 1, minor 2, -59 dBm (0xC5);
- Eddystone: github.com/google/eddystone eddystone-uid/README.md and eddystone-tlm/tlm-plain.md layouts
  (TLM: 3000 mV = 0x0BB8, 23.5 °C = 0x1780 in 8.8 fixed point, 0x8000 = temperature not supported).
"""

from __future__ import annotations

import math

import pytest

from drivers.ble.adverts import EddystoneTlm, EddystoneUid, IBeacon, parse_eddystone, parse_ibeacon
from drivers.door.protocol import Counts, Hello, parse_line
from drivers.shelf.modbus import decode_weight
from drivers.shelf.serial_line import FaultLine, HelloLine, WeightLine, decode
from firmware_sim import ble_frames, serial_frames


def test_door_example_from_the_protocol_document() -> None:
    frame = serial_frames.door_counts(12, 7)
    assert frame == b"$CNT,12,7*6D\r\n"
    assert parse_line(frame, bits=16) == Counts(12, 7)
    assert parse_line(serial_frames.door_hello("SIM-PC", "1.0")) == Hello("SIM-PC", "1.0")


@pytest.mark.parametrize(
    ("frame", "example", "decoded"),
    [
        (serial_frames.shelf_weight(17, "1", 4421.5, stable=True), b"W,17,1,4421.5,S*2B",
         WeightLine(17, "1", 4421.5, True)),
        (serial_frames.shelf_weight(65536, "2", -3.0, stable=False), b"W,0,2,-3.0,U*00",
         WeightLine(0, "2", -3.0, False)),  # the sequence wraps at 65536
        (serial_frames.shelf_fault("1", "adc"), b"F,1,adc*11", FaultLine("1", "adc")),
        (serial_frames.shelf_hello("fw-1.0", 4, 80), b"H,fw-1.0,4,80*4B", HelloLine("fw-1.0", 4, 80)),
    ],
    ids=["weight", "weight-wrapped-seq", "fault", "hello"],
)  # fmt: skip
def test_shelf_examples_from_the_protocol_document(frame: bytes, example: bytes, decoded: object) -> None:
    assert frame == example + b"\r\n"
    assert decode(frame) == decoded


def test_shelf_nan_sample() -> None:
    line = decode(serial_frames.shelf_weight(3, "a-1", math.nan, stable=False))
    assert isinstance(line, WeightLine) and math.isnan(line.grams) and line.lane == "a-1"


@pytest.mark.parametrize(
    ("grams", "order", "scale", "regs"),
    [
        # 4421.5 g at 0.1 g per unit = 44215 = 0x0000_ACB7: high word 0x0000, low word 0xACB7
        (4421.5, "big", 0.1, [0x0000, 0xACB7]),
        (4421.5, "little", 0.1, [0xACB7, 0x0000]),
        # -3.0 g at 0.1 g = -30 = 0xFFFF_FFE2 in two's complement
        (-3.0, "big", 0.1, [0xFFFF, 0xFFE2]),
        # 100 kg in grams = 100000 = 0x0001_86A0
        (100000.0, "little", 1.0, [0x86A0, 0x0001]),
    ],
)
def test_modbus_registers_as_the_document_describes(grams: float, order: str, scale: float, regs: list[int]) -> None:
    assert serial_frames.weight_registers(grams, order, scale) == regs
    assert decode_weight(regs, order, True, scale) == pytest.approx(grams)


def test_modbus_weight_beyond_32_bits_is_refused() -> None:
    with pytest.raises(ValueError):
        serial_frames.weight_registers(3e9, "big", 1.0)


def test_ibeacon_airlocate_example() -> None:
    data = ble_frames.ibeacon("E2C56DB5-DFFB-48D2-B060-D0F5A71096E0", 1, 2, -59)
    assert data.hex() == "0215e2c56db5dffb48d2b060d0f5a71096e000010002c5"
    assert parse_ibeacon(ble_frames.APPLE_COMPANY_ID, data) == IBeacon(
        uuid="e2c56db5-dffb-48d2-b060-d0f5a71096e0", major=1, minor=2, tx_power=-59)


def test_eddystone_uid_example() -> None:
    data = ble_frames.eddystone_uid("00010203040506070809", "aabbccddeeff", -24)
    assert data.hex() == "00e8" + "00010203040506070809" + "aabbccddeeff" + "0000"  # RFU bytes 0x00
    assert parse_eddystone(data) == EddystoneUid(namespace="00010203040506070809", instance="aabbccddeeff",
                                                 tx_power=-24)  # fmt: skip


@pytest.mark.parametrize(
    ("args", "hexa", "decoded"),
    [
        ((3000, 23.5, 100, 100.0), "20000bb8178000000064000003e8",
         EddystoneTlm(battery_mv=3000, temperature_c=23.5, adv_count=100, uptime_s=100.0)),
        ((None, -2.5, 1, 25.5), "20000000fd8000000001000000ff",
         EddystoneTlm(battery_mv=None, temperature_c=-2.5, adv_count=1, uptime_s=25.5)),
        ((2700, None, 2**32 - 1, 429496729.5), "20000a8c8000ffffffffffffffff",
         EddystoneTlm(battery_mv=2700, temperature_c=None, adv_count=2**32 - 1, uptime_s=429496729.5)),
    ],
    ids=["spec-values", "no-battery-negative-temp", "no-temperature-max-counters"],
)  # fmt: skip
def test_eddystone_tlm_examples(args: tuple[int | None, float | None, int, float], hexa: str,
                                decoded: EddystoneTlm) -> None:  # fmt: skip
    data = ble_frames.eddystone_tlm(*args)
    assert data.hex() == hexa
    assert parse_eddystone(data) == decoded
