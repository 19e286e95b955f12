"""EPC decoding: SGTIN-96 to GTIN-14 + serial (GS1 EPC Tag Data Standard 2.0, §14.5.1 and table 14-2).

Every other header (factory-default EPCs, SSCC, GRAI, ...) is kept raw as `raw:<HEX>` and still tracked.
No input raises: anything that is not a well-formed SGTIN-96 is raw.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

# partition -> (company prefix bits, digits, item reference bits, digits)
PARTITIONS: dict[int, tuple[int, int, int, int]] = {
    0: (40, 12, 4, 1),
    1: (37, 11, 7, 2),
    2: (34, 10, 10, 3),
    3: (30, 9, 14, 4),
    4: (27, 8, 17, 5),
    5: (24, 7, 20, 6),
    6: (20, 6, 24, 7),
}
SGTIN96_HEADER = 0x30
_HEX = frozenset("0123456789ABCDEF")


@dataclass(frozen=True, slots=True)
class Epc:
    """A decoded EPC: `key` is what we track it by (the pure-identity URN, or `raw:<HEX>`)."""

    hex: str
    key: str
    scheme: str  # "sgtin-96" | "raw"
    gtin: str | None = None
    company_prefix: str | None = None
    item_ref: str | None = None
    serial: int | None = None
    filter: int | None = None


def gtin_check_digit(body13: str) -> int:
    """GS1 check digit for the first 13 digits of a GTIN-14 (weights 3,1,3,... from the right)."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body13)))
    return (10 - total % 10) % 10


def raw(hex_text: str) -> Epc:
    """An EPC we do not interpret."""
    return Epc(hex=hex_text, key=f"raw:{hex_text}", scheme="raw")


@lru_cache(maxsize=8192)
def decode_epc(epc_hex: str) -> Epc:
    """Decode an EPC given as hex (any case); never raises."""
    text = str(epc_hex).strip().upper()
    if not text or len(text) > 128 or not _HEX.issuperset(text):
        # not hex at all: keep a printable, bounded form so it can still be tracked
        safe = "".join(c for c in text if c.isalnum())[:128]
        return raw(safe)
    if len(text) != 24 or text[:2] != "30":
        return raw(text)
    value = int(text, 16)
    filt = (value >> 85) & 0x7
    partition = (value >> 82) & 0x7
    if partition not in PARTITIONS:
        return raw(text)
    pbits, pdigits, ibits, idigits = PARTITIONS[partition]
    serial = value & ((1 << 38) - 1)
    item = (value >> 38) & ((1 << ibits) - 1)
    prefix = (value >> (38 + ibits)) & ((1 << pbits) - 1)
    if prefix >= 10**pdigits or item >= 10**idigits:
        return raw(text)
    p = f"{prefix:0{pdigits}d}"
    i = f"{item:0{idigits}d}"
    body = i[0] + p + i[1:]
    gtin = body + str(gtin_check_digit(body))
    return Epc(
        hex=text,
        key=f"urn:epc:id:sgtin:{p}.{i}.{serial}",
        scheme="sgtin-96",
        gtin=gtin,
        company_prefix=p,
        item_ref=i,
        serial=serial,
        filter=filt,
    )


def digital_link(epc: Epc) -> str:
    """GS1 Digital Link URI of an SGTIN (used by the EPCIS canonical hash), or the raw key."""
    if epc.gtin is None or epc.serial is None:
        return epc.key
    return f"https://id.gs1.org/01/{epc.gtin}/21/{epc.serial}"
