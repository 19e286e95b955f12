"""Readings of door counters: cumulative in/out counters as the device reports them."""

from __future__ import annotations

from dataclasses import dataclass

from edge.driver import Reading


@dataclass(frozen=True, slots=True, kw_only=True)
class DoorCounts(Reading):
    """The device's cumulative counters (they wrap at 2^counter_bits and restart at 0 on reboot)."""

    total_in: int
    total_out: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DoorRebooted(Reading):
    """The counter announced a (re)boot: its counters restart at 0."""

    model: str = ""
    firmware: str = ""
