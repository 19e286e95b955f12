"""Readings of the `ble` driver: one `Advert` per advertisement report from BlueZ, and drop counts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from edge.driver import Reading


@dataclass(frozen=True, slots=True, kw_only=True)
class Advert(Reading):
    """One advertisement as bleak reported it. `address` is raw personal data: it never leaves the
    processor (it is kept out of repr so a stray log of the reading cannot leak it)."""

    address: str = field(repr=False)
    rssi: int
    tx_power: int | None = None
    manufacturer_data: Mapping[int, bytes] = field(default_factory=dict, repr=False)
    service_data: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    local_name: str | None = field(default=None, repr=False)  # phones put their owner's name here


@dataclass(frozen=True, slots=True, kw_only=True)
class AdvertsDropped(Reading):
    """The driver's bounded queue overflowed: `count` adverts were dropped since the last report."""

    count: int
