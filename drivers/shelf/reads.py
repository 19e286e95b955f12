"""The read model every shelf driver yields: one weight sample, or one failed sample, of one lane."""

from __future__ import annotations

from dataclasses import dataclass

from drivers.base import Reading


@dataclass(frozen=True, slots=True, kw_only=True)
class WeightSample(Reading):
    """Gross grams on one lane (manifest shelf + lane), with the device's own "stable" flag."""

    shelf: str
    lane: str
    grams: float  # may be NaN: the engine treats it as a fault, never as a weight
    stable: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class WeightFault(Reading):
    """A sample that failed (CRC error, timeout, ADC fault line) on one lane of a shelf."""

    shelf: str
    lane: str
    code: str  # "crc" | "timeout" | "adc" | device-specific code
    detail: str = ""
