"""The advert payloads the simulated beacons send, written from the published frame formats (never from our
driver's parser, drivers/ble/adverts.py, so the two are evidence about each other):

- Apple iBeacon (Proximity Beacon Specification): manufacturer-specific data of company 0x004C (Apple), the
  payload after the company id = beacon type 0x02, length 0x15 (21), proximity UUID (16 bytes), major (u16
  big-endian), minor (u16 big-endian), measured power (signed 8-bit dBm at 1 m);
- Google Eddystone (github.com/google/eddystone), service data of the 16-bit service UUID 0xFEAA:
  - UID (eddystone-uid/README.md): frame type 0x00, ranging data (signed 8-bit dBm at 0 m), namespace
    (10 bytes), instance (6 bytes), 2 RFU bytes that must be 0x00;
  - unencrypted TLM (eddystone-tlm/tlm-plain.md): frame type 0x20, version 0x00, VBATT (u16, 1 mV per bit,
    0 when not battery powered), TEMP (signed 8.8 fixed point degrees Celsius, 0x8000 when not supported),
    ADV_CNT (u32, advertising PDUs since power-up), SEC_CNT (u32, 0.1 s since power-up); all big-endian,
    14 bytes.
"""

from __future__ import annotations

import uuid as _uuid

APPLE_COMPANY_ID = 0x004C
EDDYSTONE_SERVICE_UUID = "0000feaa-0000-1000-8000-00805f9b34fb"  # 0xFEAA on the Bluetooth base UUID


def _s8(value: int) -> bytes:
    if not -128 <= value <= 127:
        raise ValueError(f"{value} is not a signed 8-bit value")
    return (value & 0xFF).to_bytes(1, "big")


def ibeacon(proximity_uuid: str, major: int, minor: int, measured_power: int) -> bytes:
    """iBeacon manufacturer data after the 0x004C company id (23 bytes)."""
    return (bytes((0x02, 0x15)) + _uuid.UUID(proximity_uuid).bytes + major.to_bytes(2, "big")
            + minor.to_bytes(2, "big") + _s8(measured_power))  # fmt: skip


def eddystone_uid(namespace_hex: str, instance_hex: str, tx_power_0m: int) -> bytes:
    """Eddystone-UID service data (20 bytes)."""
    namespace, instance = bytes.fromhex(namespace_hex), bytes.fromhex(instance_hex)
    if len(namespace) != 10 or len(instance) != 6:
        raise ValueError("an Eddystone-UID namespace is 10 bytes and its instance 6")
    return bytes((0x00,)) + _s8(tx_power_0m) + namespace + instance + bytes(2)


def eddystone_tlm(battery_mv: int | None, temperature_c: float | None, adv_count: int, uptime_s: float) -> bytes:
    """Unencrypted Eddystone-TLM service data (14 bytes); None = not supported (VBATT 0, TEMP 0x8000); the
    counters wrap at 2^32 as the beacon's own would."""
    vbatt = battery_mv or 0
    temp = 0x8000 if temperature_c is None else round(temperature_c * 256) & 0xFFFF
    sec_cnt = int(uptime_s * 10) % (1 << 32)
    return (bytes((0x20, 0x00)) + vbatt.to_bytes(2, "big") + temp.to_bytes(2, "big")
            + (adv_count % (1 << 32)).to_bytes(4, "big") + sec_cnt.to_bytes(4, "big"))  # fmt: skip
