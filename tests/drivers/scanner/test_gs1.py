"""GS1 parsing vectors (GS1 General Specifications examples and the demo catalog's GTINs) and a fuzz."""

from __future__ import annotations

import datetime as dt
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.scanner.gs1 import parse_code

FUZZ = 10_000 if os.environ.get("EDGE_FUZZ") == "long" else 200

# (scan as delivered, kind, gtin, batch, expiry, serial, ambiguous, symbology)
VECTORS = [
    ("5449000000996", "item", "05449000000996", None, None, None, False, None),  # EAN-13, valid check digit
    ("]E05449000000996", "item", "05449000000996", None, None, None, False, "]E0"),  # AIM EAN-13
    ("05449000000997", "unreadable", None, None, None, None, False, None),  # bad check digit
    # GS1-128 with AIM ]C1, expiry day 00 = last day of the month, GS before (21)
    (
        "]C101095011010209171719050010ABCD1234\x1d2110",
        "item",
        "09501101020917",
        "ABCD1234",
        dt.date(2019, 5, 31),
        "10",
        False,
        "]C1",
    ),
    (
        "]d2010544900000099610LOT1\x1d17250200",
        "item",
        "05449000000996",
        "LOT1",
        dt.date(2025, 2, 28),
        None,
        False,
        "]d2",
    ),  # GS1 DataMatrix, Feb 2025 has 28 days
    ("]Q3010544900000099621S123", "item", "05449000000996", None, None, "S123", False, "]Q3"),  # GS1 QR
    # wedge scanner lost the GS: (10) swallowed "21XYZ" -> flagged ambiguous
    (
        "0105449000000996172512311012345621XYZ",
        "item",
        "05449000000996",
        "12345621XYZ",
        dt.date(2025, 12, 31),
        None,
        True,
        None,
    ),
    ("(01)05449000000996(10)A/B1", "item", "05449000000996", "A/B1", None, None, False, None),  # HRI form
    ("hello", "unreadable", None, None, None, None, False, None),
    ("", "unreadable", None, None, None, None, False, None),
]


@pytest.mark.parametrize(("raw", "kind", "gtin", "batch", "expiry", "serial", "amb", "sym"), VECTORS)
def test_vectors(
    raw: str,
    kind: str,
    gtin: str | None,
    batch: str | None,
    expiry: dt.date | None,
    serial: str | None,
    amb: bool,
    sym: str | None,
) -> None:
    d = parse_code(raw)
    assert (d.kind, d.gtin, d.batch, d.expiry, d.serial, d.ambiguous, d.symbology) == (
        kind,
        gtin,
        batch,
        expiry,
        serial,
        amb,
        sym,
    )
    if kind == "unreadable":
        assert d.reason


def test_extra_separator_for_wedge_scanners() -> None:
    d = parse_code("0105449000000996^10X^21Y", "^")
    assert (d.batch, d.serial, d.ambiguous) == ("X", "Y", False)


@pytest.mark.parametrize(
    ("raw", "control"),
    [
        ("MODE:RESTOCK", ("MODE", "RESTOCK")),
        ("]C0SHELF:shelf-a1", ("SHELF", "shelf-a1")),
        ("COUNT:END", ("COUNT", "END")),
        ("SHELF:a/b", None),
    ],
)
def test_control_codes(raw: str, control: tuple[str, str] | None) -> None:
    assert parse_code(raw).control == control


@settings(max_examples=FUZZ)
@given(
    st.one_of(
        st.text(max_size=60), st.from_regex(r"(\]C1|\]d2)?01[0-9]{14}(17[0-9]{6})?(10[!-~]{0,20})?", fullmatch=True)
    )
)
def test_fuzz_never_raises(raw: str) -> None:
    d = parse_code(raw)
    assert d.kind in ("item", "control", "unreadable")
    if d.kind == "item":
        assert d.gtin is not None
        assert len(d.gtin) == 14
