"""The scanner read model: one decoded scan as the scanner delivered it (terminator removed)."""

from __future__ import annotations

from dataclasses import dataclass

from edge.driver import Reading


@dataclass(frozen=True, slots=True, kw_only=True)
class Scan(Reading):
    """One barcode; `value` keeps the AIM symbology identifier (e.g. `]C1`) and GS (0x1D) separators."""

    value: str
    via: str = "serial"  # "serial" | "hid"
