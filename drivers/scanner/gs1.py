"""Barcode content -> what it means: GS1 (GTIN, GS1-128 / DataMatrix AIs) parsed with biip, or a control code.

Control codes (Code 128 text, documented in docs/shelf-protocol.md): `MODE:RECEIVE|RESTOCK|COUNT|LOOKUP|PICK`,
`SHELF:<shelf id>`, `COUNT:END`, `RESTOCK:END`, `ORDER:<order id>` and `COLLECT:<order id>` (docs/orders.md).
AIM symbology identifiers (`]E0`, `]C1`, `]d2`, `]Q3`, ...) are
recognised by biip. Keyboard-wedge scanners may lose GS (0x1D): biip then reads a variable-length field to the
end; such a message is flagged `ambiguous` when its tail would also parse as further element strings.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import biip
from biip.gs1_messages import GS1Message

_CONTROL = re.compile(r"^(MODE|SHELF|COUNT|RESTOCK|ORDER|COLLECT):([A-Za-z0-9][A-Za-z0-9_.-]{0,63})$")
_AIM = re.compile(r"^\][A-Za-z][0-9A-Za-z]")


@dataclass(frozen=True, slots=True)
class Decoded:
    """A scan's meaning: an item (GTIN + attributes), a control code, or unreadable (with the reason)."""

    kind: str  # "item" | "control" | "unreadable"
    gtin: str | None = None  # GTIN-14
    batch: str | None = None
    expiry: dt.date | None = None
    serial: str | None = None
    quantity: int = 1
    symbology: str | None = None
    ambiguous: bool = False
    control: tuple[str, str] | None = None  # ("MODE", "RESTOCK"), ("SHELF", "shelf-a1"), ("COUNT", "END")
    reason: str = ""


def _control(value: str) -> tuple[str, str] | None:
    body = value[3:] if _AIM.match(value) else value
    m = _CONTROL.match(body.strip())
    return (m.group(1), m.group(2)) if m else None


def _tail_parses(tail: str, config: biip.ParseConfig) -> bool:
    for i in range(1, len(tail) - 1):
        try:
            msg = GS1Message.parse(tail[i:], config=config)
        except (biip.ParseError, ValueError, IndexError):
            continue
        if msg.element_strings:
            return True
    return False


def parse_code(value: str, extra_separators: str = "") -> Decoded:
    """Parse one scan; never raises (bad input is `unreadable` with a reason)."""
    if not value or len(value) > 512 or any(not c.isprintable() and c != "\x1d" for c in value):
        return Decoded("unreadable", reason="empty or non-printable")
    control = _control(value)
    if control is not None:
        return Decoded("control", control=control)
    seps = tuple(dict.fromkeys(("\x1d", *extra_separators)))
    config = biip.ParseConfig(separator_chars=seps)
    text = value.strip()
    try:
        if text.startswith("("):
            msg: GS1Message | None = GS1Message.parse_hri(text, config=config)
            result = None
        else:
            result = biip.parse(text, config=config)
            msg = result.gs1_message
    except (biip.ParseError, ValueError, IndexError) as exc:  # biip raises IndexError on a lone "]"
        return Decoded("unreadable", reason=str(exc)[:200] or type(exc).__name__)
    symbology = result.symbology_identifier.value if result and result.symbology_identifier else None
    if msg is not None and msg.element_strings:
        gtin = batch = serial = None
        expiry: dt.date | None = None
        qty = 1
        ambiguous = False
        strings = list(msg.element_strings)
        for es in strings:
            ai = es.ai.ai
            if ai in ("01", "02") and es.gtin is not None:
                gtin = es.gtin.as_gtin_14()
            elif ai == "10":
                batch = es.value
            elif ai == "17":
                expiry = es.date
            elif ai == "21":
                serial = es.value
            elif ai in ("30", "37") and es.value.isdigit():
                qty = max(1, min(int(es.value), 100_000))
        last = strings[-1]
        if last.ai.separator_required and not any(s in text for s in seps) and len(strings) >= 1:
            ambiguous = _tail_parses(last.value, config)
        if gtin is None:
            if result is not None and result.gtin is not None:  # e.g. EAN-13 4006381333931 also reads as AI 400
                return Decoded("item", gtin=result.gtin.as_gtin_14(), symbology=symbology)
            return Decoded("unreadable", symbology=symbology, reason="GS1 message without a GTIN")
        return Decoded(
            "item",
            gtin=gtin,
            batch=batch,
            expiry=expiry,
            serial=serial,
            quantity=qty,
            symbology=symbology,
            ambiguous=ambiguous,
        )
    if result is not None and result.gtin is not None:
        return Decoded("item", gtin=result.gtin.as_gtin_14(), symbology=symbology)
    reason = (result.gtin_error or result.gs1_message_error or "not a GS1 code") if result else "not a GS1 code"
    return Decoded("unreadable", symbology=symbology, reason=reason[:200])
