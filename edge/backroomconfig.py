"""The manifest's `backroom:` section: back-room locations whose stock counts toward ATP (edge/backroom.py).

A location is counted by RFID, by receiving scans, or both (`counted_by`):
- rfid: the tags present at the antennas that a reader's `antennas:` map to the location's id (a back-room
  location is a read point like a zone: `antennas: {3: backroom}`); the reader's own map stays the one place
  that says which port reads where, so the readers inventory the port as they do every mapped port.
- receiving: a ledger of units scanned in by receive scanners (`retail.scan.received.v1`) minus units scanned
  onto a shelf by a restock session of the same scanners (moved out); `scanners` names them (empty: every
  scanner of the store).

Only pydantic and edge.configbase here: edge/config.py imports this module for the manifest schema. The cross
checks (`problems`) take the manifest's zones and typed device sections as plain values, so this module knows
no device family.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Literal

from pydantic import Field, field_validator

from edge.configbase import DeviceConfigBase, Ident, Ref, StrictModel

MAX_LOCATIONS = 64
Loc = tuple[str | int, ...]
Counting = Literal["rfid", "receiving"]


class BackroomLocation(StrictModel):
    """One back-room location (a stock room, a cage, a cold store) whose units the store can promise."""

    id: Ident = Field(description="the location's id; RFID antennas map to it as their read point "
                                  "(devices[].antennas: {3: <id>}), so it must differ from every zone id")
    name: str = Field(default="", max_length=128, description="what staff call it; the id when empty")
    names: dict[Literal["zh-CN", "en"], Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        default_factory=dict, description="the name per language, e.g. {zh-CN: 仓库, en: Back room}")
    counted_by: list[Counting] = Field(
        max_length=2,
        description="rfid (the tags at the antennas mapped to this location) and/or receiving (receive scans in, "
                    "restock scans out); both: ATP counts the lower of the two")
    scanners: list[Ident] = Field(
        default_factory=list, max_length=64,
        description="with receiving: the scanners whose receive scans book units into this location and whose "
                    "restock scans take them out; empty: every scanner")
    skus: list[Ident] = Field(
        default_factory=list, max_length=10_000,
        description="the SKUs kept here; empty: any catalog SKU (others seen here are ignored)")

    @field_validator("counted_by")
    @classmethod
    def _once(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("counted_by is empty: write [rfid], [receiving] or [rfid, receiving]")
        if len(set(v)) != len(v):
            raise ValueError(f"counted_by lists a way twice ({v}): write [rfid], [receiving] or [rfid, receiving]")
        return v

    def label(self) -> str:
        """The default display name."""
        return self.name or self.id

    def keeps(self, sku: str) -> bool:
        """Whether `sku` counts at this location."""
        return not self.skus or sku in self.skus


class BackroomConfig(StrictModel):
    """Back-room stock counted toward available-to-promise (docs/orders.md, "Back room")."""

    locations: list[BackroomLocation] = Field(
        default_factory=list, max_length=MAX_LOCATIONS,
        description=f"at most {MAX_LOCATIONS}; e.g. [{{id: backroom, names: {{zh-CN: 仓库, en: Back room}}, "
                    "counted_by: [rfid]}]")

    def location(self, loc_id: str) -> BackroomLocation | None:
        """The location with `loc_id`."""
        return next((x for x in self.locations if x.id == loc_id), None)

    def receiving_for(self, scanner: str) -> BackroomLocation | None:
        """The receiving-counted location that `scanner`'s receive and restock scans book into, if any."""
        counted = [x for x in self.locations if "receiving" in x.counted_by]
        return next((x for x in counted if scanner in x.scanners), None) or next(
            (x for x in counted if not x.scanners), None)

    def references(self) -> list[Ref]:
        """The SKUs named under each location's skus (each must be in the catalog)."""
        return [Ref(("locations", i, "skus", j), "sku", s)
                for i, x in enumerate(self.locations) for j, s in enumerate(x.skus)]

    def problems(self, zones: Sequence[str], typed: Sequence[tuple[int, DeviceConfigBase]]) -> list[tuple[Loc, str]]:
        """(path, what to fix) for what the schema alone cannot see, given the zone ids and the typed device
        sections (index under devices:, section): an RFID reader is a section with an `antennas:` map, a
        scanner one whose type starts with `scanner`."""
        devices = [(i, d.id, _antennas(d), d.type.startswith("scanner")) for i, d in typed]
        out: list[tuple[Loc, str]] = []
        here: Loc = ("backroom", "locations")
        first: dict[str, int] = {}
        for i, x in enumerate(self.locations):
            if x.id in first:
                out.append(((*here, i, "id"), f"duplicate back-room location id {x.id!r} (also at "
                                              f"backroom.locations[{first[x.id]}]): give every location its own id"))
            first.setdefault(x.id, i)
            if x.id in zones:
                out.append(((*here, i, "id"), f"{x.id!r} is also a zone id: antennas map to zones and back-room "
                                              "locations by id, so rename the location (e.g. backroom-1)"))
        ids = {x.id: x for x in reversed(self.locations) if x.id not in zones}  # the first of a duplicate id
        scanners = {dev_id: i for i, dev_id, _, is_scanner in devices if is_scanner}
        any_device = {dev_id for _, dev_id, _, _ in devices}
        for i, dev_id, antennas, _ in devices:
            for port, point in (antennas or {}).items():
                loc = ids.get(point)
                if loc is not None and "rfid" not in loc.counted_by:
                    j = self.locations.index(loc)
                    out.append((("devices", i, "antennas", port),
                                f"antenna {port} of {dev_id} reads back-room location {point!r}, which is not counted "
                                f"by rfid: add rfid to backroom.locations[{j}].counted_by, or map the port to a zone"))
        booked: dict[str, int] = {}
        everyone: list[int] = []
        for i, x in enumerate(self.locations):
            if x.scanners and "receiving" not in x.counted_by:
                out.append(((*here, i, "scanners"), "scanners book receiving scans: add receiving to counted_by, or "
                                                    "remove scanners"))
            if "receiving" in x.counted_by and not x.scanners:
                everyone.append(i)
            for j, s in enumerate(x.scanners):
                if s not in scanners:
                    what = "is not a scanner:" if s in any_device else "is not defined under devices:"
                    out.append(((*here, i, "scanners", j), f"device {s!r} {what} name a scanner's id (type "
                                                           f"scanner_serial or scanner_hid){_listed(scanners)}"))
                elif booked.setdefault(s, i) != i:
                    out.append(((*here, i, "scanners", j), f"scanner {s!r} already books into backroom.locations"
                                                           f"[{booked[s]}]: a scan goes to one location; list it "
                                                           "once"))
        if len(everyone) > 1:
            out.append(((*here, everyone[1], "scanners"), "two receiving locations take every scanner: list the "
                                                          "scanners of each under scanners:"))
        return out


def _antennas(dev: DeviceConfigBase) -> Mapping[int, str] | None:
    antennas = getattr(dev, "antennas", None)
    return antennas if isinstance(antennas, dict) else None


def _listed(scanners: Mapping[str, int]) -> str:
    return f"; scanners: {sorted(scanners)[:10]}" if scanners else "; the manifest has no scanner"
