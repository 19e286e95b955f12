"""EPC decoding: GS1 TDS vectors, invalid partitions, other headers, fuzz."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.rfid.epc import decode_epc, digital_link
from firmware_sim.world import sgtin96_hex

FUZZ = 10_000 if os.environ.get("EDGE_FUZZ") == "long" else 200


@pytest.mark.parametrize(
    ("hex_epc", "key", "gtin", "filt"),
    [
        # GS1 EPC TDS example (partition 5, 7-digit prefix)
        ("3074257BF7194E4000001A85", "urn:epc:id:sgtin:0614141.812345.6789", "80614141123458", 3),
        ("3074257bf7194e4000001a85", "urn:epc:id:sgtin:0614141.812345.6789", "80614141123458", 3),
        (sgtin96_hex("061414112345", "0", 1), "urn:epc:id:sgtin:061414112345.0.1", "00614141123452", 1),
        (sgtin96_hex("614141", "0123456", 42), "urn:epc:id:sgtin:614141.0123456.42", "06141411234562", 1),
        (sgtin96_hex("5449000", "000099", 7), "urn:epc:id:sgtin:5449000.000099.7", "05449000000996", 1),
    ],
)
def test_sgtin96_vectors(hex_epc: str, key: str, gtin: str, filt: int) -> None:
    epc = decode_epc(hex_epc)
    assert (epc.scheme, epc.key, epc.gtin, epc.filter) == ("sgtin-96", key, gtin, filt)


def test_digital_link() -> None:
    assert digital_link(decode_epc("3074257BF7194E4000001A85")) == "https://id.gs1.org/01/80614141123458/21/6789"


@pytest.mark.parametrize(
    "hex_epc",
    [
        "307C257BF7194E4000001A85",  # partition 7: invalid
        "E2801160600002054C3A7F11",  # factory-default (TID-like) EPC
        "3114257BF7194E4000001A85",  # SSCC-96 header 0x31
        "3074257BF7194E4000001A",  # SGTIN header but only 88 bits
        "30",  # too short
        "",  # nothing
        "not hex at all!",
        "3000FFFFFFFFFFFFFFFFFFFF",  # partition 0 but company prefix above 12 digits
    ],
)
def test_everything_else_is_raw(hex_epc: str) -> None:
    epc = decode_epc(hex_epc)
    assert epc.scheme == "raw"
    assert epc.key.startswith("raw:")
    assert epc.gtin is None


@settings(max_examples=FUZZ, deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=20).map(lambda b: b.hex())))
def test_fuzz_decoder_never_raises(text: str) -> None:
    epc = decode_epc(text)
    assert epc.key
    if epc.gtin is not None:
        assert len(epc.gtin) == 14
        assert epc.gtin.isdigit()
