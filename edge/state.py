"""Live stock picture: one cell per shelf x SKU, with a version that increases by one per change.

`StockState.apply(update)` is pure bookkeeping (no I/O): it turns a source's claim into a
`StockChanged` event when the count really changes, and says which retained shelf snapshot is now due.
The pipeline commits the event, the cell row and the snapshot in one transaction, so the database, the
journal and what HQ sees never disagree, also after kill -9.

Trust (issue 14). `StockState.flag(StockFlag)` records a source's word that a cell's count cannot be seen
right now (`stale`: reader blind, load cell stuck, object on the lane) or that sources disagree
(`conflict`); flags of an origin the shelf does not count from are ignored, like its claims. A cell is stale
while any accepted origin flags it (since the earliest, reasons joined). Fused cells (`stock_source: any`)
keep each origin's last count (weight, rfid); when they differ by more than `conflict_tolerance` units for
`conflict_settle_s` (long enough for RFID's lost-timeout to catch up with a pick the scale saw at once), the
cell is flagged `conflict` and serves the LOWER of the two counts until they agree again (then the count of
the claim that settled it): what is certain is on the shelf, and a possible shortage reaches staff instead of
flip-flopping with every report. Every trust change bumps the cell's `trust_version`, so the retained shelf
snapshot (version = sum of count and trust versions) is published again; the flags persist in the `kv`
table (`stock.trust.<shelf>.<sku>`), next to the `stock` row, in the same transaction.

Count corrections held until the sensors settle (issue 17 item 3). A staff correction (a `manual` claim with
`hold`, from `CountCorrections`) is served
until the cell's sensors settle: while a correction holds, weight/RFID claims of the cell are recorded (per-source
counts, `verified`) but not served; the sensors have settled when some sensor claimed a count after the
correction and the sensors' count has not changed for `correction_settle_s` (default 60 s); then the sensors'
count is served again (the lower one if fused sources disagree) with reason "sensors settled". Another human
count (scan, count session, a manual claim) or a new correction replaces the held one at once. `describe` shows
the correction as a source (`sources.manual`) with `correction` {count, at, reason, holding, sensor}. The hold is
in memory: a restart ends it (the cell keeps the corrected count until the next sensor claim).

Self-explaining cells (issue 16). `StockState.describe(cell)` is the one JSON form of a cell (API,
`cmd/stock.get`, retained `state/stock/{shelf}`): product identity from the catalog (GTIN-14, name, unit,
category), the count (`null` with `"state": "unknown"` while no source ever reported the cell: unknown is
not empty), `min`/`par` and `"state": "out" | "low" | "ok"` from the levels provider that the restock rules
register (`set_levels`: edge/ does not import rules/), capacity, origin and per-source counts, trust flags,
`updated` (last change) and `verified` (last claim of any count, also an unchanged one). Derived views that
follow the cells (available-to-promise, edge/atp.py) register with `add_deriver`: the pipeline hands them
the touched cells and commits their events and retained snapshots in the same batch.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, ClassVar

from edge.config import Manifest
from edge.errors import CommandError
from edge.events import Event, EventClass, StockChanged
from edge.processing import StockFlag, StockUpdate

TRUST_KEY = "stock.trust."  # kv key prefix of a cell's persisted flags: stock.trust.<shelf>.<sku>
FUSED_ORIGINS = ("weight", "rfid")  # the sources whose counts a fused cell compares


def _iso(t: datetime | None) -> str | None:
    return t.isoformat().replace("+00:00", "Z") if t else None


# (shelf, sku) -> (min, par) of the cell's enabled restock rule, or None (no rule: no low flag)
LevelsProvider = Callable[[str, str], "tuple[int, int] | None"]
Snapshots = dict[str, tuple[dict[str, Any], int]]  # retained topic suffix -> (payload, version)
# the cells touched in one batch, the SKUs to recompute (theirs and the nudged ones), now
#   -> (events, {topic suffix: (retained payload, version)})
Deriver = Callable[[list["StockCell"], set[str], datetime], "tuple[list[Event], Snapshots]"]


@dataclass(frozen=True, slots=True)
class StockCell:
    """Current stock of one SKU on one shelf, with how far it can be trusted."""

    shelf: str
    sku: str
    zone: str
    count: int
    version: int
    origin: str
    updated: datetime | None
    capacity: int
    stale_since: datetime | None = None  # a source that owns the count cannot see the cell since then
    stale_reason: str = ""
    conflict_since: datetime | None = None  # fused sources disagree since then (the lower count is served)
    conflict_reason: str = ""
    trust_version: int = 0  # +1 per change of the flags (the retained snapshot's version counts it)
    sources: tuple[tuple[str, int], ...] = ()  # a fused cell's last count per origin
    verified: datetime | None = None  # the last claim of a count (also one that changed nothing)
    gtin: str | None = None  # GTIN-14 from the catalog
    name: str = ""
    unit: str = "EA"
    category: str = ""

    @property
    def known(self) -> bool:
        """Some source reported this cell (a never-reported cell's count is unknown, not 0)."""
        return self.version > 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, shared by the API, `cmd/stock.get` and the retained topics."""
        d: dict[str, Any] = {
            "shelf": self.shelf,
            "sku": self.sku,
            "gtin": self.gtin,
            "name": self.name or None,
            "unit": self.unit,
            "category": self.category or None,
            "zone": self.zone,
            "count": self.count if self.known else None,
            "version": self.version,
            "origin": self.origin,
            "updated": _iso(self.updated),
            "capacity": self.capacity,
            "stale": self.stale_since is not None,
            "stale_since": _iso(self.stale_since),
            "stale_reason": self.stale_reason or None,
            "conflict": self.conflict_since is not None,
            "conflict_since": _iso(self.conflict_since),
            "conflict_reason": self.conflict_reason or None,
            "verified": _iso(self.verified),
        }
        if self.sources:
            d["sources"] = dict(self.sources)
        return d


MAX_CORRECTED_COUNT = 100_000  # a count staff enter is at most this many units
CORRECTION_SETTLE_S = 60.0  # a correction holds until the sensors' count stayed the same this long after it


@dataclass(frozen=True, slots=True)
class Correction:
    """A staff correction of a cell and what the sensors said since (None: nothing yet)."""

    count: int
    at: datetime
    reason: str
    holding: bool = True
    sensor: int | None = None  # the sensors' count claimed since the correction (served when they settle)
    sensor_origin: str = ""
    sensor_changed: datetime | None = None  # when `sensor` last changed


def _correction(raw: object) -> Correction | None:
    """A persisted correction ([count, at, reason, holding, sensor, sensor_origin, sensor_changed]); ValueError
    or TypeError when unreadable."""
    if raw is None:
        return None
    if not isinstance(raw, list) or len(raw) != 7:
        raise TypeError("not a persisted correction")
    count, at, reason, holding, sensor, origin, changed = raw
    if isinstance(count, bool) or not isinstance(count, int) or not isinstance(holding, bool):
        raise TypeError("not a persisted correction")
    return Correction(count, datetime.fromisoformat(str(at)), str(reason), holding,
                      None if sensor is None else int(sensor), str(origin),
                      None if changed is None else datetime.fromisoformat(str(changed)))


@dataclass(frozen=True, slots=True, kw_only=True)
class StockCorrected(Event):
    """Staff counted a cell and entered the number (audited): who, when (`time`), the count before (`old`,
    None when unknown), the counted one (`new`) and why. The fused state takes `new` as a manual count."""

    TYPE: ClassVar[str] = "retail.stock.corrected.v1"
    CLASS: ClassVar[EventClass] = EventClass.LEDGER
    TOPIC: ClassVar[str] = "events/stock"

    shelf: str
    sku: str
    by: str
    old: int | None
    new: int
    reason: str

    def __post_init__(self) -> None:
        Event.__post_init__(self)
        if not 0 <= self.new <= MAX_CORRECTED_COUNT:
            raise ValueError(f"a counted number is 0..{MAX_CORRECTED_COUNT}")


class CountCorrections:
    """Reactor: each StockCorrected becomes the cell's manual count (origin `manual`, which every shelf
    accepts, held until the sensors settle), routed in the same batch as the correction event."""

    def react(self, event: Event, now: datetime) -> list[object]:
        """A manual StockUpdate for a correction; nothing for other events."""
        if not isinstance(event, StockCorrected):
            return []
        return [StockUpdate(shelf=event.shelf, sku=event.sku, time=event.time, origin="manual",
                            source=event.source, count=event.new, reason=f"counted by {event.by}", hold=True)]

    def tick(self, now: datetime) -> list[object]:
        """Nothing happens with time."""
        return []


# Origins a shelf accepts, by its manifest `stock_source`; "manual" (staff correction via API) always counts.
ACCEPTED_ORIGINS: dict[str, frozenset[str] | None] = {
    "any": None,
    "weight": frozenset({"weight", "manual"}),
    "rfid": frozenset({"rfid", "manual"}),
    "scan": frozenset({"scan", "count", "manual"}),
}


class StockState:
    """All planogram cells of the store, in memory, loaded from and persisted to the `stock` table."""

    def __init__(self, manifest: Manifest, *, conflict_tolerance: int = 0, conflict_settle_s: float = 30.0,
                 correction_settle_s: float = CORRECTION_SETTLE_S) -> None:  # fmt: skip
        self._cells: dict[tuple[str, str], StockCell] = {}
        self.correction_settle_s = correction_settle_s
        self._corrections: dict[tuple[str, str], Correction] = {}  # the last staff correction of each cell
        self._accepts = {s.id: ACCEPTED_ORIGINS[s.stock_source] for s in manifest.shelves}
        self._fused = {s.id for s in manifest.shelves if s.stock_source == "any"}
        self.ignored = 0  # claims from a source that is not this shelf's truth
        self.conflict_tolerance = conflict_tolerance
        self.conflict_settle_s = conflict_settle_s
        # cell -> (flag, origin) -> (since, reason): every source's word on the cell
        self._flags: dict[tuple[str, str], dict[tuple[str, str], tuple[datetime, str]]] = {}
        self._claims: dict[tuple[str, str], dict[str, int]] = {}  # fused cells: origin -> its last count
        self._disagree: dict[tuple[str, str], datetime] = {}  # fused cells disagreeing since
        self._touched: set[tuple[str, str]] = set()  # cells whose row / snapshot is due (count or trust changed)
        self._levels: LevelsProvider | None = None
        self._derivers: list[Deriver] = []
        self._nudged: set[str] = set()  # SKUs the derived views must recompute in the next batch
        self.zones = frozenset(z.id for z in manifest.zones) | {s.zone for s in manifest.shelves}
        self.catalog = {c.sku: c for c in manifest.catalog}
        for shelf in manifest.shelves:
            for lane in shelf.lanes:
                key = (shelf.id, lane.sku)
                old = self._cells.get(key)
                cap = lane.capacity + (old.capacity if old else 0)
                item = self.catalog.get(lane.sku)
                self._cells[key] = StockCell(
                    shelf.id, lane.sku, shelf.zone, 0, 0, "none", None, cap, gtin=item.gtin if item else None,
                    name=item.name if item else "", unit=item.unit if item else "EA",
                    category=item.category if item else "")  # fmt: skip
        self.shelves = frozenset(s for s, _ in self._cells) | {s.id for s in manifest.shelves}

    def reconfigure(self, manifest: Manifest) -> list[tuple[str, str]]:
        """Take a new planogram and catalog (a manifest rollout, edge/rollout.py): cells that stay keep their
        count, version and flags with the new zone, capacity and catalog data; new cells start unknown; cells
        no longer in the planogram are dropped (their rows stay in the database). Returns the dropped cells."""
        fresh = StockState(manifest, conflict_tolerance=self.conflict_tolerance,
                           conflict_settle_s=self.conflict_settle_s)
        dropped = [key for key in self._cells if key not in fresh._cells]
        for key, cell in fresh._cells.items():
            old = self._cells.get(key)
            if old is not None:
                fresh._cells[key] = replace(old, zone=cell.zone, capacity=cell.capacity, gtin=cell.gtin,
                                            name=cell.name, unit=cell.unit, category=cell.category)
        self._cells, self._accepts, self._fused = fresh._cells, fresh._accepts, fresh._fused
        self.zones, self.catalog, self.shelves = fresh.zones, fresh.catalog, fresh.shelves
        for key in dropped:
            self._flags.pop(key, None)
            self._claims.pop(key, None)
            self._disagree.pop(key, None)
            self._touched.discard(key)
        return dropped

    def load(self, rows: Iterable[dict[str, Any]]) -> None:
        """Restore cells from database rows (unknown cells, e.g. removed from the planogram, are ignored)."""
        for r in rows:
            key = (str(r["shelf"]), str(r["sku"]))
            cell = self._cells.get(key)
            if cell is None:
                continue
            updated = datetime.fromisoformat(str(r["updated"])) if r.get("updated") else None
            self._cells[key] = replace(
                cell, count=int(r["count"]), version=int(r["version"]), origin=str(r["origin"]), updated=updated,
                verified=updated,
            )

    def load_trust(self, rows: Iterable[dict[str, Any]]) -> None:
        """Restore the flags persisted in `kv` (rows with `key` = TRUST_KEY + shelf.sku, `value` JSON); an
        unreadable one is dropped (the sources say it again)."""
        by_name = {f"{TRUST_KEY}{shelf}.{sku}": (shelf, sku) for shelf, sku in self._cells}
        for r in rows:
            key = by_name.get(str(r.get("key")))
            if key is None:
                continue
            try:
                doc = json.loads(str(r["value"]))
                flags = {(str(f), str(o)): (datetime.fromisoformat(str(t)), str(why))
                         for f, o, t, why in doc.get("flags", [])}  # fmt: skip
                version = int(doc.get("v", 0))
                corr = _correction(doc.get("correction"))
            except (ValueError, TypeError, KeyError, AttributeError):
                continue
            if corr is not None:
                self._corrections[key] = corr
            self._flags[key] = flags
            self._cells[key] = self._with_flags(replace(self._cells[key], trust_version=version), flags)

    def apply(self, update: StockUpdate) -> StockChanged | None:
        """Apply a claim; return the change event, or None when nothing changed or the cell is unknown."""
        key = (update.shelf, update.sku)
        cell = self._cells.get(key)
        if cell is None:
            return None
        accepts = self._accepts.get(update.shelf)
        if accepts is not None and update.origin not in accepts:
            self.ignored += 1
            return None
        new = update.count if update.count is not None else max(0, cell.count + (update.delta or 0))
        if self._held(key, update, new):
            return None  # a staff correction holds: the sensors' claim is recorded, not served
        if update.shelf in self._fused:
            new = self._fuse(key, update.origin, new, update.time)
            cell = self._cells[key]
        if update.count is not None and (cell.verified is None or update.time > cell.verified):
            self._cells[key] = cell = replace(cell, verified=update.time)  # seen, even when unchanged
        return self._set_count(key, cell, new, origin=update.origin, time=update.time, source=update.source,
                               reason=update.reason)  # fmt: skip

    def _held(self, key: tuple[str, str], update: StockUpdate, new: int) -> bool:
        """Track staff corrections: True when `update` is a sensor claim arriving while a correction holds (it is
        recorded as the sensors' count, not served)."""
        held = self._corrections.get(key)
        if update.hold and update.count is not None:
            self._corrections[key] = Correction(update.count, update.time, update.reason)
            self._touched.add(key)
            return False
        if held is None or not held.holding:
            return False
        if update.origin not in FUSED_ORIGINS:  # another human count (scan, count session) replaces the correction
            self._corrections[key] = replace(held, holding=False)
            self._touched.add(key)
            return False
        if update.count is None and held.sensor is not None:
            new = max(0, held.sensor + (update.delta or 0))  # a sensor's delta counts from the sensors' count
        if update.shelf in self._fused:
            self._fuse(key, update.origin, new, update.time)  # per-source counts and disagreement, not served
            claims = self._claims.get(key, {})
            new = min(claims.values()) if self._cells[key].conflict_since is not None and claims else new
        seen = self._cells[key].verified
        if update.count is not None and (seen is None or update.time > seen):
            self._cells[key] = replace(self._cells[key], verified=update.time)
        if new != held.sensor:
            self._corrections[key] = replace(held, sensor=new, sensor_origin=update.origin,
                                             sensor_changed=update.time)  # fmt: skip
            self._touched.add(key)
        return True

    def _settle(self, now: datetime) -> list[StockChanged]:
        """Corrections whose sensors have settled (their count unchanged for correction_settle_s): the sensors'
        count is served again."""
        out: list[StockChanged] = []
        for key, c in list(self._corrections.items()):
            if not c.holding or c.sensor is None or c.sensor_changed is None:
                continue
            if (now - c.sensor_changed).total_seconds() < self.correction_settle_s:
                continue
            self._corrections[key] = replace(c, holding=False)
            self._touched.add(key)
            ev = self._set_count(key, self._cells[key], c.sensor, origin=c.sensor_origin, time=now, source="stock",
                                 reason=f"sensors settled at {c.sensor} after the correction to {c.count}")
            if ev is not None:
                out.append(ev)
        return out

    def _set_count(self, key: tuple[str, str], cell: StockCell, new: int, *, origin: str, time: datetime,
                   source: str, reason: str) -> StockChanged | None:  # fmt: skip
        if new == cell.count and cell.version > 0:
            return None
        changed = replace(cell, count=new, version=cell.version + 1, origin=origin, updated=time)
        self._cells[key] = changed
        self._touched.add(key)
        return StockChanged(
            source=source,
            time=time,
            subject=cell.shelf,
            shelf=cell.shelf,
            sku=cell.sku,
            count=new,
            previous=cell.count if cell.version > 0 else None,
            delta=new - cell.count,
            version=changed.version,
            origin=origin,
            reason=reason,
        )

    def _fuse(self, key: tuple[str, str], origin: str, count: int, time: datetime) -> int:
        """Record a fused cell's claim; return the count to serve (the lower one while in conflict)."""
        if origin not in FUSED_ORIGINS:
            return count  # a scan or a staff correction is served as it is
        claims = self._claims.setdefault(key, {})
        claims[origin] = count
        cell = self._cells[key]
        sources = tuple(sorted(claims.items()))
        if sources != cell.sources:
            self._cells[key] = cell = replace(cell, sources=sources)
            self._touched.add(key)
        tol = self.conflict_tolerance
        apart = len(claims) == len(FUSED_ORIGINS) and max(claims.values()) - min(claims.values()) > tol
        if not apart:
            self._disagree.pop(key, None)
            self._set_flag(key, "conflict", "state", None)
            return count
        self._disagree.setdefault(key, time)
        return min(claims.values()) if cell.conflict_since is not None else count

    def tick(self, now: datetime) -> list[StockChanged]:
        """Fused cells that disagreed for the settle time get the conflict flag and serve the lower count."""
        out: list[StockChanged] = self._settle(now)
        for key, since in list(self._disagree.items()):
            cell = self._cells[key]
            if cell.conflict_since is not None or (now - since).total_seconds() < self.conflict_settle_s:
                continue
            corrected = self._corrections.get(key)
            if corrected is not None and corrected.holding:
                continue  # a held correction is served; the disagreement is judged once the sensors settled
            claims = self._claims[key]
            said = ", ".join(f"{o} says {n}" for o, n in sorted(claims.items()))
            self._set_flag(key, "conflict", "state", (since, f"{said}: serving the lower count"))
            low = min(claims.values())
            ev = self._set_count(key, self._cells[key], low, origin=min(claims, key=lambda o: claims[o]), time=now,
                                 source="stock", reason=f"sources disagree ({said})")  # fmt: skip
            if ev is not None:
                out.append(ev)
        return out

    def flag(self, f: StockFlag) -> bool:
        """Apply a source's stale/conflict flag; True when the cell's flags changed (its snapshot is due)."""
        key = (f.shelf, f.sku)
        if key not in self._cells:
            return False
        accepts = self._accepts.get(f.shelf)
        if accepts is not None and f.origin not in accepts:
            self.ignored += 1
            return False
        return self._set_flag(key, f.flag, f.origin, (f.time, f.reason) if f.on else None)

    def _set_flag(self, key: tuple[str, str], flag: str, origin: str, value: tuple[datetime, str] | None) -> bool:
        flags = self._flags.setdefault(key, {})
        old = flags.get((flag, origin))
        if value is None:
            if old is None:
                return False
            del flags[(flag, origin)]
        else:
            if old is not None:
                value = (min(old[0], value[0]), value[1])  # still flagged: since the first time
            if old == value:
                return False
            flags[(flag, origin)] = value
        cell = self._with_flags(self._cells[key], flags)
        if (cell.stale_since, cell.stale_reason, cell.conflict_since, cell.conflict_reason) == (
                self._cells[key].stale_since, self._cells[key].stale_reason, self._cells[key].conflict_since,
                self._cells[key].conflict_reason):  # fmt: skip
            return False
        self._cells[key] = replace(cell, trust_version=cell.trust_version + 1)
        self._touched.add(key)
        return True

    @staticmethod
    def _with_flags(cell: StockCell, flags: dict[tuple[str, str], tuple[datetime, str]]) -> StockCell:
        def merged(kind: str) -> tuple[datetime | None, str]:
            items = sorted((o, t, why) for (f, o), (t, why) in flags.items() if f == kind)
            if not items:
                return None, ""
            return min(t for _, t, _ in items), "; ".join(why or o for o, _, why in items)

        (stale, stale_why), (conflict, conflict_why) = merged("stale"), merged("conflict")
        return replace(cell, stale_since=stale, stale_reason=stale_why, conflict_since=conflict,
                       conflict_reason=conflict_why)  # fmt: skip

    @property
    def touched(self) -> bool:
        """Some cell's row / snapshot is due (or a derived view must be recomputed)."""
        return bool(self._touched or self._nudged)

    def take_touched(self) -> list[StockCell]:
        """Cells whose count or flags changed since the last call (their rows and snapshots are due)."""
        touched, self._touched = self._touched, set()
        return [self._cells[k] for k in sorted(touched)]

    def get(self, shelf: str, sku: str) -> StockCell | None:
        """One cell."""
        return self._cells.get((shelf, sku))

    # ---- self-explaining cells and derived views (issue 16) ----
    def set_levels(self, provider: LevelsProvider | None) -> None:
        """Where each cell's min/par come from (the restock rules register theirs); None: no levels."""
        self._levels = provider

    def levels(self, shelf: str, sku: str) -> tuple[int, int] | None:
        """(min, par) of a cell from the registered provider; None without one (or when it fails)."""
        if self._levels is None:
            return None
        try:
            return self._levels(shelf, sku)
        except Exception:  # a provider bug must not break stock answers: no levels then
            return None

    def describe(self, cell: StockCell) -> dict[str, Any]:
        """The JSON form of a cell everywhere: `as_dict` plus min/par and the state (unknown/out/low/ok)."""
        d = cell.as_dict()
        lv = self.levels(cell.shelf, cell.sku)
        d["min"], d["par"] = lv if lv is not None else (None, None)
        if not cell.known:
            state = "unknown"
        elif cell.count == 0:
            state = "out"
        elif lv is not None and cell.count <= lv[0]:
            state = "low"
        else:
            state = "ok"
        d["state"] = state
        d["low"] = state in ("low", "out")
        c = self._corrections.get((cell.shelf, cell.sku))
        if c is not None:
            d["correction"] = {"count": c.count, "at": _iso(c.at), "reason": c.reason or None, "holding": c.holding,
                               "sensor": c.sensor}  # fmt: skip
            if c.holding:
                d["sources"] = {**(d.get("sources") or {}), "manual": c.count}
        return d

    def select(self, *, shelf: str | None = None, sku: str | None = None, zone: str | None = None) -> list[StockCell]:
        """`cells` for a query from outside: a shelf, SKU or zone the store does not have is `not_found`
        (REST and MQTT answer the same); `bad_request` for a filter that is not a string."""
        for what, value, pool in (("shelf", shelf, self.shelves), ("sku", sku, self.catalog.keys()),
                                  ("zone", zone, self.zones)):  # fmt: skip
            if value is None:
                continue
            if not isinstance(value, str):
                raise CommandError("bad_request", f"{what} must be a string")
            if value not in pool:
                raise CommandError("not_found", f"no {what} {value[:64]!r} in this store's manifest")
        return self.cells(shelf=shelf, sku=sku, zone=zone)

    def add_deriver(self, deriver: Deriver) -> None:
        """Run `deriver` on every batch of touched cells (the pipeline commits what it returns)."""
        self._derivers.append(deriver)

    def nudge(self, skus: Iterable[str]) -> None:
        """Have the derived views recompute these SKUs in the next routed batch although no cell changed (a
        reservation did): call it, then `emit` the change's events, and the new ATP commits with them."""
        self._nudged.update(skus)

    def derive(self, cells: list[StockCell], now: datetime) -> tuple[list[Event], Snapshots]:
        """Events and retained snapshots (by topic suffix) of the derived views for these touched cells."""
        events: list[Event] = []
        retained: Snapshots = {}
        nudged, self._nudged = self._nudged, set()
        if nudged:
            cells = cells + [c for c in self._cells.values() if c.sku in nudged]
        skus = {c.sku for c in cells} | nudged  # a nudged SKU may be on no shelf (back room, reserved only)
        if skus:
            for deriver in self._derivers:
                evs, snaps = deriver(cells, skus, now)
                events += evs
                retained.update(snaps)
        return events, retained

    def cells(self, *, shelf: str | None = None, sku: str | None = None, zone: str | None = None) -> list[StockCell]:
        """Cells matching every given filter, ordered by shelf then SKU."""
        return sorted(
            (
                c
                for c in self._cells.values()
                if (shelf is None or c.shelf == shelf)
                and (sku is None or c.sku == sku)
                and (zone is None or c.zone == zone)
            ),
            key=lambda c: (c.shelf, c.sku),
        )

    def shelf_snapshot(self, shelf: str) -> dict[str, Any]:
        """The retained `state/stock/{shelf}` payload: every SKU on the shelf with its version."""
        cells = self.cells(shelf=shelf)
        return {
            "shelf": shelf,
            "zone": cells[0].zone if cells else None,
            "version": sum(c.version + c.trust_version for c in cells),
            "items": [self.describe(c) for c in cells],
        }

    def row(self, cell: StockCell) -> dict[str, Any]:
        """The `stock` table row of a cell."""
        return {
            "shelf": cell.shelf,
            "sku": cell.sku,
            "count": cell.count,
            "version": cell.version,
            "origin": cell.origin,
            "updated": cell.updated.isoformat() if cell.updated else None,
        }

    def trust_row(self, cell: StockCell) -> dict[str, Any] | None:
        """The `kv` row persisting a cell's flags, trust version and staff correction (with its hold), or None
        when the cell has none of them."""
        key = (cell.shelf, cell.sku)
        corr = self._corrections.get(key)
        if not cell.trust_version and corr is None:
            return None
        flags = self._flags.get(key, {})
        doc: dict[str, Any] = {
            "v": cell.trust_version,
            "flags": [[f, o, t.isoformat(), why] for (f, o), (t, why) in sorted(flags.items())]}  # fmt: skip
        if corr is not None:
            doc["correction"] = [corr.count, corr.at.isoformat(), corr.reason, corr.holding, corr.sensor,
                                 corr.sensor_origin, corr.sensor_changed.isoformat() if corr.sensor_changed else None]
        return {"key": f"{TRUST_KEY}{cell.shelf}.{cell.sku}", "value": json.dumps(doc, separators=(",", ":"))}
