"""Ground truth of the simulated store: what is on every lane, item by item, and what people do.

Simulators never invent readings on their own: they read the world (a weight shelf reports the grams of
the items really on its lane plus noise, an RFID reader reports the EPCs really near its antennas) so a
checker can compare the gateway's view with the truth. Time comes from an injected clock.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from edge.clock import Clock
from edge.config import Manifest

# GS1 example company prefix 0614141 (7 digits -> SGTIN-96 partition 5), as in the TDS examples.
COMPANY_PREFIX = "0614141"


def sgtin96_hex(company_prefix: str, item_ref: str, serial: int, filter_value: int = 1) -> str:
    """Encode an SGTIN-96 EPC as 24 hex digits (GS1 TDS partition table; 7-digit prefix -> partition 5)."""
    table = {12: (0, 40, 4), 11: (1, 37, 7), 10: (2, 34, 10), 9: (3, 30, 14), 8: (4, 27, 17), 7: (5, 24, 20),
             6: (6, 20, 24)}
    partition, pbits, ibits = table[len(company_prefix)]
    value = 0x30
    value = (value << 3) | filter_value
    value = (value << 3) | partition
    value = (value << pbits) | int(company_prefix)
    value = (value << ibits) | int(item_ref)
    value = (value << 38) | serial
    return f"{value:024X}"


@dataclass(slots=True)
class LaneTruth:
    """One lane's real content."""

    shelf: str
    lane: str
    sku: str
    zone: str
    capacity: int
    unit_weight_g: float
    epcs: list[str] = field(default_factory=list)
    hand_g: float = 0.0  # a hand resting on the lane (moving: the shelf does not see it as stable)
    object_g: float = 0.0  # a foreign object left on the lane (a bag, a tool): a steady load
    lean_g: float = 0.0  # someone leaning on the lane: a steady load for a few seconds

    @property
    def count(self) -> int:
        """Items really on the lane."""
        return len(self.epcs)


@dataclass(frozen=True, slots=True)
class WorldChange:
    """Something happened to the truth (for simulators that push rather than poll)."""

    time: datetime
    kind: str  # "pick" | "return" | "restock" | "hand_on" | "hand_off" | "move" | "object_on" | "object_off"
    #            | "lean_on" | "lean_off"
    shelf: str
    lane: str
    n: int = 0
    epcs: tuple[str, ...] = ()  # the items taken, for a pick


class World:
    """The simulated store's truth, driven by explicit actions or by `step` (random shoppers and staff)."""

    def __init__(self, manifest: Manifest, clock: Clock, seed: int = 7, fill: float = 0.8) -> None:
        self.manifest = manifest
        self.clock = clock
        self.rng = random.Random(seed)
        self.lanes: dict[tuple[str, str], LaneTruth] = {}
        self.carried: list[tuple[str, str]] = []  # (epc, sku) in shoppers' hands
        self.backroom: dict[str, int] = {c.sku: 5 * c.case_pack for c in manifest.catalog}
        self.listeners: list[Callable[[WorldChange], None]] = []
        self.history: list[WorldChange] = []
        self.scripted: set[tuple[str, str]] = set()  # (shelf, lane)s a script drives: `step` leaves them alone
        self._serial = 1000
        for shelf in manifest.shelves:
            for lane in shelf.lanes:
                item = manifest.sku(lane.sku)
                weight = lane.unit_weight_g or (item.unit_weight_g if item else None) or 100.0
                truth = LaneTruth(shelf.id, lane.id, lane.sku, shelf.zone, lane.capacity, weight)
                for _ in range(int(lane.capacity * fill)):
                    truth.epcs.append(self._new_epc(lane.sku))
                self.lanes[(shelf.id, lane.id)] = truth
        # the back room's tagged items (SKUs an RFID-counted back-room location keeps), read by the antennas
        # mapped to `backroom_point`; restocking moves them onto the lane, EPC and all
        rooms = [x for x in manifest.backroom.locations if "rfid" in x.counted_by]
        self.backroom_point: str | None = rooms[0].id if rooms else None
        self.backroom_epcs: dict[str, list[str]] = {}
        if rooms:
            for c in manifest.catalog:
                if c.gtin and rooms[0].keeps(c.sku) and (rooms[0].skus or self._rfid_shelved(c.sku)):
                    self.backroom_epcs[c.sku] = [self._new_epc(c.sku) for _ in range(self.backroom.get(c.sku, 0))]

    # ---- truth queries ----
    def count(self, shelf: str, sku: str) -> int:
        """Ground-truth units of `sku` on `shelf`."""
        return sum(t.count for t in self.lanes.values() if t.shelf == shelf and t.sku == sku)

    def snapshot(self) -> dict[tuple[str, str], int]:
        """(shelf, sku) -> units, for every planogram cell."""
        out: dict[tuple[str, str], int] = {}
        for t in self.lanes.values():
            out[(t.shelf, t.sku)] = out.get((t.shelf, t.sku), 0) + t.count
        return out

    def sku_of_epc(self) -> dict[str, str]:
        """EPC -> SKU for every item that exists in the store."""
        out = {e: t.sku for t in self.lanes.values() for e in t.epcs}
        out.update(dict(self.carried))
        out.update({e: sku for sku, epcs in self.backroom_epcs.items() for e in epcs})
        return out

    # ---- actions ----
    def pick(self, shelf: str, lane: str, n: int = 1) -> list[str]:
        """A shopper takes `n` items (fewer if the lane has fewer)."""
        t = self.lanes[(shelf, lane)]
        taken = [t.epcs.pop() for _ in range(min(n, t.count))]
        self.carried.extend((e, t.sku) for e in taken)
        self._changed("pick", shelf, lane, len(taken), tuple(taken))
        return taken

    def put_back(self, shelf: str, lane: str, n: int = 1) -> int:
        """A shopper returns up to `n` carried items of the lane's SKU to the lane."""
        t = self.lanes[(shelf, lane)]
        back = [c for c in self.carried if c[1] == t.sku][:n]
        for c in back:
            self.carried.remove(c)
            t.epcs.append(c[0])
        self._changed("return", shelf, lane, len(back))
        return len(back)

    def checkout(self) -> int:
        """Carried items leave the store."""
        n = len(self.carried)
        self.carried.clear()
        return n

    def restock(self, shelf: str, lane: str, n: int | None = None) -> int:
        """Staff fill the lane from the backroom (to capacity by default); new EPCs for new items."""
        t = self.lanes[(shelf, lane)]
        want = t.capacity - t.count if n is None else min(n, t.capacity - t.count)
        moved = max(0, min(want, self.backroom.get(t.sku, 0)))
        self.backroom[t.sku] = self.backroom.get(t.sku, 0) - moved
        tagged = self.backroom_epcs.get(t.sku, [])
        from_room = [tagged.pop() for _ in range(min(moved, len(tagged)))]  # the back room's items, tags and all
        t.epcs.extend(from_room)
        t.epcs.extend(self._new_epc(t.sku) for _ in range(moved - len(from_room)))
        self._changed("restock", shelf, lane, moved)
        return moved

    def receive(self, sku: str, n: int) -> None:
        """Goods arrive in the backroom."""
        self.backroom[sku] = self.backroom.get(sku, 0) + n
        if sku in self.backroom_epcs:
            self.backroom_epcs[sku] += [self._new_epc(sku) for _ in range(n)]

    def hand(self, shelf: str, lane: str, grams: float) -> None:
        """A hand (or bag) rests on the lane with `grams`; 0 lifts it."""
        self.lanes[(shelf, lane)].hand_g = grams
        self._changed("hand_on" if grams else "hand_off", shelf, lane)

    def place_object(self, shelf: str, lane: str, grams: float) -> None:
        """A foreign object (a shopper's bag, a tool) of `grams` is left on the lane: a steady load, no stock."""
        self.lanes[(shelf, lane)].object_g = grams
        self._changed("object_on", shelf, lane)

    def remove_object(self, shelf: str, lane: str) -> None:
        """The foreign object is taken off the lane."""
        self.lanes[(shelf, lane)].object_g = 0.0
        self._changed("object_off", shelf, lane)

    def set_count(self, shelf: str, lane: str, n: int) -> None:
        """Before the store opens: the lane holds exactly `n` items (bounded by its capacity); no change event."""
        t = self.lanes[(shelf, lane)]
        n = max(0, min(n, t.capacity))
        del t.epcs[n:]
        t.epcs.extend(self._new_epc(t.sku) for _ in range(n - t.count))

    def lean(self, shelf: str, lane: str, grams: float) -> None:
        """Someone leans on the lane with `grams` (steady, unlike a resting hand); 0 ends the lean."""
        self.lanes[(shelf, lane)].lean_g = grams
        self._changed("lean_on" if grams else "lean_off", shelf, lane)

    def step(self, pick_rate: float = 0.3) -> None:
        """One random second of store life: picks, occasional returns and checkouts, restocks when low."""
        rng = self.rng
        lanes = [t for t in self.lanes.values() if (t.shelf, t.lane) not in self.scripted]
        if not lanes:
            return
        if rng.random() < pick_rate:
            t = rng.choice(lanes)
            self.pick(t.shelf, t.lane, 1 if rng.random() < 0.8 else 2)
        if self.carried and rng.random() < 0.05:
            _epc, sku = rng.choice(self.carried)
            back = [t for t in lanes if t.sku == sku]
            if back:
                self.put_back(back[0].shelf, back[0].lane, 1)
        if self.carried and rng.random() < 0.1:
            self.checkout()
        for t in lanes:
            if t.count <= t.capacity // 5 and rng.random() < 0.02:
                self.restock(t.shelf, t.lane)

    # ---- internals ----
    def _rfid_shelved(self, sku: str) -> bool:
        """Whether `sku` lies on a shelf whose stock RFID counts (the store tags it)."""
        return any(s.stock_source == "rfid" and any(ln.sku == sku for ln in s.lanes) for s in self.manifest.shelves)

    def _new_epc(self, sku: str) -> str:
        item = self.manifest.sku(sku)
        gtin = (item.gtin if item and item.gtin else None) or "00000000000000"
        self._serial += 1
        if gtin[1:8] == COMPANY_PREFIX:
            # GTIN-14 = indicator + company prefix + item ref + check; SGTIN item ref = indicator + ref.
            item_ref = gtin[0] + gtin[8:13]
            return sgtin96_hex(COMPANY_PREFIX, item_ref, self._serial)
        # Other prefixes: still SGTIN-96 with the GTIN's own 7-digit prefix, so decoding works.
        return sgtin96_hex(gtin[1:8], gtin[0] + gtin[8:13], self._serial)

    def _changed(self, kind: str, shelf: str, lane: str, n: int = 0, epcs: tuple[str, ...] = ()) -> None:
        change = WorldChange(self.clock.now(), kind, shelf, lane, n, epcs)
        self.history.append(change)
        for cb in self.listeners:
            cb(change)


def demo_manifest_text() -> str:
    """The built-in demo manifest (YAML) without device sections."""
    from importlib.resources import files

    return files("firmware_sim").joinpath("demo_manifest.yaml").read_text(encoding="utf-8")
