"""Pure parsers of BLE beacon advertisements: iBeacon, AltBeacon and Eddystone UID / URL / TLM.

Specs: Apple "Proximity Beacon Specification" (iBeacon, manufacturer data of company 0x004C starting
`02 15`), the AltBeacon spec (github.com/AltBeacon/spec: manufacturer data `BE AC` + 20-byte id + ref RSSI
+ reserved) and google/eddystone (service data of UUID 0xFEAA; frame types 0x00 UID, 0x10 URL, 0x20 TLM,
all big-endian). Inputs are what bleak gives: `manufacturer_data: {company_id: bytes after the id}` and
`service_data: {"0000feaa-0000-1000-8000-00805f9b34fb": bytes}`.

Each `parse_*` returns None when the payload is not that kind of frame at all (another Apple frame, another
service), and raises `AdvertParseError` when it claims to be that kind but is truncated or invalid. Nothing
here raises anything else, whatever the bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from edge.errors import FrameError

APPLE = 0x004C
EDDYSTONE_UUID = "0000feaa-0000-1000-8000-00805f9b34fb"

_URL_SCHEMES = ("http://www.", "https://www.", "http://", "https://")
_URL_CODES = (".com/", ".org/", ".edu/", ".net/", ".info/", ".biz/", ".gov/",
              ".com", ".org", ".edu", ".net", ".info", ".biz", ".gov")


class AdvertParseError(FrameError):
    """The payload claims a beacon format but is truncated or carries invalid values."""


@dataclass(frozen=True, slots=True, kw_only=True)
class IBeacon:
    """An iBeacon frame: proximity UUID (lowercase, dashed), major, minor, measured power at 1 m."""

    uuid: str
    major: int
    minor: int
    tx_power: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AltBeacon:
    """An AltBeacon frame: 20-byte beacon id (hex), reference RSSI at 1 m, manufacturer and reserved byte."""

    company: int
    beacon_id: str
    ref_rssi: int
    reserved: int


@dataclass(frozen=True, slots=True, kw_only=True)
class EddystoneUid:
    """Eddystone-UID: 10-byte namespace and 6-byte instance (hex), calibrated tx power at 0 m."""

    namespace: str
    instance: str
    tx_power: int


@dataclass(frozen=True, slots=True, kw_only=True)
class EddystoneUrl:
    """Eddystone-URL: the expanded URL and calibrated tx power at 0 m."""

    url: str
    tx_power: int


@dataclass(frozen=True, slots=True, kw_only=True)
class EddystoneTlm:
    """Eddystone-TLM (unencrypted, version 0): battery mV (None when not battery powered), temperature
    in °C (None when unsupported), advertising PDU count and uptime in seconds."""

    battery_mv: int | None
    temperature_c: float | None
    adv_count: int
    uptime_s: float


BeaconFrame = IBeacon | AltBeacon | EddystoneUid | EddystoneUrl | EddystoneTlm


def _uuid_str(b: bytes) -> str:
    h = b.hex()
    return f"{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _int8(b: int) -> int:
    return b - 256 if b > 127 else b


def parse_ibeacon(company: int, data: bytes) -> IBeacon | None:
    """iBeacon from one manufacturer-data entry; None for other companies or other Apple frames."""
    if company != APPLE or len(data) < 2 or data[0] != 0x02:
        return None
    if data[1] != 0x15:
        # 0x02 with another length: still the iBeacon type, but the length byte is wrong
        raise AdvertParseError(f"iBeacon length byte is 0x{data[1]:02x}, expected 0x15", bytes(data))
    if len(data) != 23:
        raise AdvertParseError(f"iBeacon frame has {len(data)} bytes, expected 23", bytes(data))
    return IBeacon(
        uuid=_uuid_str(data[2:18]),
        major=int.from_bytes(data[18:20], "big"),
        minor=int.from_bytes(data[20:22], "big"),
        tx_power=_int8(data[22]),
    )


def parse_altbeacon(company: int, data: bytes) -> AltBeacon | None:
    """AltBeacon from one manufacturer-data entry; None when the `BE AC` code is absent."""
    if len(data) < 2 or data[0] != 0xBE or data[1] != 0xAC:
        return None
    if len(data) != 24:
        raise AdvertParseError(f"AltBeacon frame has {len(data)} bytes, expected 24", bytes(data))
    return AltBeacon(company=company, beacon_id=data[2:22].hex(), ref_rssi=_int8(data[22]), reserved=data[23])


def _expand_url(scheme: int, body: bytes) -> str:
    if scheme >= len(_URL_SCHEMES):
        raise AdvertParseError(f"Eddystone-URL scheme 0x{scheme:02x} is reserved", bytes(body))
    out = [_URL_SCHEMES[scheme]]
    for b in body:
        if b < len(_URL_CODES):
            out.append(_URL_CODES[b])
        elif 0x21 <= b <= 0x7E:
            out.append(chr(b))
        else:
            raise AdvertParseError(f"Eddystone-URL byte 0x{b:02x} is reserved", bytes(body))
    return "".join(out)


def parse_eddystone(data: bytes) -> EddystoneUid | EddystoneUrl | EddystoneTlm | None:
    """Eddystone frame from the 0xFEAA service data; None for frame types we do not read (EID, eTLM)."""
    if not data:
        raise AdvertParseError("empty Eddystone service data")
    frame = data[0]
    if frame == 0x00:
        # UID: type, tx, namespace 10, instance 6, and 2 RFU bytes that some beacons omit
        if len(data) not in (18, 20):
            raise AdvertParseError(f"Eddystone-UID has {len(data)} bytes, expected 18 or 20", bytes(data))
        return EddystoneUid(namespace=data[2:12].hex(), instance=data[12:18].hex(), tx_power=_int8(data[1]))
    if frame == 0x10:
        if not 4 <= len(data) <= 20:
            raise AdvertParseError(f"Eddystone-URL has {len(data)} bytes, expected 4..20", bytes(data))
        return EddystoneUrl(url=_expand_url(data[2], data[3:]), tx_power=_int8(data[1]))
    if frame == 0x20:
        if len(data) < 2:
            raise AdvertParseError("Eddystone-TLM without a version byte", bytes(data))
        if data[1] != 0x00:
            return None  # version 1 is encrypted TLM (eTLM): needs the beacon's identity key
        if len(data) != 14:
            raise AdvertParseError(f"Eddystone-TLM has {len(data)} bytes, expected 14", bytes(data))
        vbatt = int.from_bytes(data[2:4], "big")
        raw_temp = int.from_bytes(data[4:6], "big")
        temp = None if raw_temp == 0x8000 else int.from_bytes(data[4:6], "big", signed=True) / 256.0
        return EddystoneTlm(
            battery_mv=vbatt or None,  # the spec: 0 when the beacon is not battery powered
            temperature_c=temp,
            adv_count=int.from_bytes(data[6:10], "big"),
            uptime_s=int.from_bytes(data[10:14], "big") / 10.0,
        )
    return None  # 0x30 EID and reserved types


def parse_frames(
    manufacturer_data: Mapping[int, bytes], service_data: Mapping[str, bytes]
) -> tuple[list[BeaconFrame], list[AdvertParseError]]:
    """Every beacon frame found in one advert, and the errors of frames that claimed a format but broke it."""
    frames: list[BeaconFrame] = []
    errors: list[AdvertParseError] = []
    for company, data in manufacturer_data.items():
        try:
            ib = parse_ibeacon(company, data)
            if ib is not None:
                frames.append(ib)
                continue
            ab = parse_altbeacon(company, data)
            if ab is not None:
                frames.append(ab)
        except AdvertParseError as exc:
            errors.append(exc)
    ed = service_data.get(EDDYSTONE_UUID)
    if ed is not None:
        try:
            ef = parse_eddystone(ed)
            if ef is not None:
                frames.append(ef)
        except AdvertParseError as exc:
            errors.append(exc)
    return frames, errors


# ---- encoders (the simulator's side; also handy to build test frames) -----------------------


def encode_ibeacon(uuid: str, major: int, minor: int, tx_power: int) -> bytes:
    """Manufacturer data (after the 0x004C company id) of an iBeacon frame."""
    return (b"\x02\x15" + bytes.fromhex(uuid.replace("-", "")) + major.to_bytes(2, "big")
            + minor.to_bytes(2, "big") + (tx_power & 0xFF).to_bytes(1, "big"))


def encode_eddystone_uid(namespace: str, instance: str, tx_power: int) -> bytes:
    """Service data of an Eddystone-UID frame (with the 2 RFU bytes)."""
    return bytes([0x00, tx_power & 0xFF]) + bytes.fromhex(namespace) + bytes.fromhex(instance) + b"\x00\x00"


def encode_eddystone_tlm(battery_mv: int, temperature_c: float | None, adv_count: int, uptime_s: float) -> bytes:
    """Service data of an unencrypted Eddystone-TLM frame."""
    temp = 0x8000 if temperature_c is None else round(temperature_c * 256) & 0xFFFF
    return (bytes([0x20, 0x00]) + battery_mv.to_bytes(2, "big") + temp.to_bytes(2, "big")
            + (adv_count & 0xFFFFFFFF).to_bytes(4, "big") + (int(uptime_s * 10) & 0xFFFFFFFF).to_bytes(4, "big"))
