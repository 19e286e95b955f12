"""Beacon advert parsers against spec-derived vectors (adverts_vectors.yaml), plus fuzzing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.ble import adverts
from drivers.ble.adverts import AdvertParseError, parse_eddystone, parse_frames

VECTORS: dict[str, list[dict[str, Any]]] = yaml.safe_load(
    (Path(__file__).parent / "adverts_vectors.yaml").read_text(encoding="utf-8")
)
FUZZ = settings(max_examples=10_000 if os.environ.get("EDGE_FUZZ") == "long" else 200, deadline=None)


def _check(result: object, case: dict[str, Any]) -> None:
    assert type(result).__name__ == case["kind"]
    for k, v in case["expect"].items():
        assert getattr(result, k) == v, k


def _parse_mfg(company: int, data: bytes) -> object:
    return adverts.parse_ibeacon(company, data) or adverts.parse_altbeacon(company, data)


@pytest.mark.parametrize("case", VECTORS["mfg"], ids=lambda c: c["name"])
def test_manufacturer_frames(case: dict[str, Any]) -> None:
    data = bytes.fromhex(case["hex"])
    if case.get("error"):
        with pytest.raises(AdvertParseError):
            _parse_mfg(case["company"], data)
    elif case.get("none"):
        assert _parse_mfg(case["company"], data) is None
    else:
        _check(_parse_mfg(case["company"], data), case)


@pytest.mark.parametrize("case", VECTORS["service"], ids=lambda c: c["name"])
def test_eddystone_frames(case: dict[str, Any]) -> None:
    data = bytes.fromhex(case["hex"])
    if case.get("error"):
        with pytest.raises(AdvertParseError):
            parse_eddystone(data)
    elif case.get("none"):
        assert parse_eddystone(data) is None
    else:
        _check(parse_eddystone(data), case)


def test_parse_frames_collects_frames_and_errors() -> None:
    frames, errors = parse_frames(
        {0x004C: bytes.fromhex("0215e2c56db5dffb48d2b060d0f5a71096e000010002c5"), 0x0118: b"\xbe\xac\x00"},
        {
            adverts.EDDYSTONE_UUID: bytes.fromhex("20000bb8178000000064000003e8"),
            "0000180f-0000-1000-8000-00805f9b34fb": b"\x50",
        },
    )
    assert [type(f).__name__ for f in frames] == ["IBeacon", "EddystoneTlm"]
    assert len(errors) == 1
    assert "AltBeacon" in errors[0].reason


@pytest.mark.parametrize(
    ("mv", "temp", "count", "uptime"),
    [(3000, 23.5, 100, 100.0), (2100, -10.25, 0, 0.0), (3300, None, 2**32 - 1, 86400.0)],
)
def test_tlm_roundtrip(mv: int, temp: float | None, count: int, uptime: float) -> None:
    tlm = parse_eddystone(adverts.encode_eddystone_tlm(mv, temp, count, uptime))
    assert tlm == adverts.EddystoneTlm(battery_mv=mv, temperature_c=temp, adv_count=count, uptime_s=uptime)


def test_ibeacon_and_uid_roundtrip() -> None:
    uuid = "e2c56db5-dffb-48d2-b060-d0f5a71096e0"
    assert adverts.parse_ibeacon(0x004C, adverts.encode_ibeacon(uuid, 7, 9, -59)) == adverts.IBeacon(
        uuid=uuid, major=7, minor=9, tx_power=-59
    )
    uid = parse_eddystone(adverts.encode_eddystone_uid("00112233445566778899", "0a0b0c0d0e0f", -20))
    assert uid == adverts.EddystoneUid(namespace="00112233445566778899", instance="0a0b0c0d0e0f", tx_power=-20)


@FUZZ
@given(
    st.dictionaries(st.integers(0, 0xFFFF), st.binary(max_size=40), max_size=3),
    st.dictionaries(
        st.sampled_from([adverts.EDDYSTONE_UUID, "0000180f-0000-1000-8000-00805f9b34fb"]), st.binary(max_size=40)
    ),
)
def test_fuzz_never_crashes(mfg: dict[int, bytes], svc: dict[str, bytes]) -> None:
    frames, errors = parse_frames(mfg, svc)
    assert len(frames) + len(errors) <= len(mfg) + 1


@FUZZ
@given(st.sampled_from([b"\x02\x15", b"\xbe\xac", b"\x00", b"\x10", b"\x20\x00"]), st.binary(max_size=30))
def test_fuzz_prefixed_frames(prefix: bytes, rest: bytes) -> None:
    data = prefix + rest
    frames, errors = parse_frames({0x004C: data}, {adverts.EDDYSTONE_UUID: data})
    assert all(isinstance(e, AdvertParseError) for e in errors)
    assert len(frames) + len(errors) >= 1  # a known prefix is always either parsed or rejected
