"""Available-to-promise (ATP) per SKU: what the store can promise an online order right now.

ATP = what is certainly on hand in the store - units reserved for orders - the category's safety stock
(manifest `atp: safety_stock:`), never below 0. "On hand" is store-wide: the shelves plus the back-room
locations of the manifest's `backroom:` (edge/backroom.py), split in the documents as `on_hand_split` and
`certain_split` ({shelves, backroom}). "Certainly on hand" is every shelf cell of the SKU counted at what is
sure: a cell no source ever reported counts 0, a stale cell (a source cannot see it) counts 0, a conflicting
fused cell counts the lower of its sources; each such cell adds a line to `reasons`. A back-room location
counts what edge/backroom.py says is sure (a stale or not yet vouched RFID count 0, RFID and receiving
ledger the lower), with a reason when that is less than its count.

`compute_atp` is pure. `AtpTracker` keeps the last published figure per SKU: it is registered as a stock
deriver (`StockState.add_deriver`), so every batch of changed cells yields the new retained
`state/atp/{sku}` snapshots (only when the figure or its explanation changed) and a
`retail.atp.changed.v1` event only when ATP crosses one of the manifest's `atp: thresholds:` (HQ's
e-commerce stock sync is not flooded with every unit sold). Reservations enter through the `reserved`
hook (0 until the order module sets it); after a reservation change call `StockState.nudge(skus)` and emit the
change's events: the new ATP snapshots and crossing events commit in the same batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from edge.config import Manifest
from edge.errors import CommandError
from edge.events import Event, EventClass
from edge.state import Snapshots, StockCell, StockState

if TYPE_CHECKING:
    from edge.backroom import BackroomFigure

TOPIC_PREFIX = "state/atp/"  # + sku (SKUs are manifest ids: no / + # in them)
SOURCE = "atp"  # the CloudEvents source of ATP events


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True, kw_only=True)
class AtpChanged(Event):
    """A SKU's available-to-promise crossed a configured threshold (`atp: thresholds:`), up or down."""

    TYPE: ClassVar[str] = "retail.atp.changed.v1"
    CLASS: ClassVar[EventClass] = EventClass.LEDGER
    TOPIC: ClassVar[str] = "events/atp"

    sku: str
    gtin: str | None
    atp: int
    previous: int
    threshold: int  # the level crossed (the outermost one when ATP jumped over several)
    direction: str  # "up" | "down"
    on_hand: int  # certainly on hand (what ATP is computed from), shelves and back room
    backroom: int = 0  # of on_hand, in the back room
    reserved: int
    safety_stock: int
    reasons: tuple[str, ...]
    version: int  # the version of the retained state/atp/{sku} snapshot with this figure


@dataclass(frozen=True, slots=True)
class Atp:
    """The ATP of one SKU and how it was reached."""

    sku: str
    atp: int
    on_hand: int  # sum of the reported counts
    certain: int  # on hand counted at what is sure (unknown and stale cells 0, conflicts the lower source)
    reserved: int
    safety_stock: int
    reasons: tuple[str, ...]
    locations: tuple[dict[str, Any], ...]
    backroom: tuple[dict[str, Any], ...] = ()  # the back-room locations holding the SKU (BackroomFigure.as_dict)
    backroom_on_hand: int = 0  # of on_hand, in the back room
    backroom_certain: int = 0  # of certain, in the back room


def cell_certain(cell: StockCell) -> tuple[int, str | None]:
    """What a cell certainly holds, and why that is less than its count (None when it is its count)."""
    where = f"{cell.shelf}"
    if not cell.known:
        return 0, f"{where}: never reported (unknown, counted 0)"
    if cell.stale_since is not None:
        why = f" ({cell.stale_reason})" if cell.stale_reason else ""
        return 0, f"{where}: stale since {_iso(cell.stale_since)}{why}, counted 0"
    if cell.conflict_since is not None:
        low = min([cell.count, *(n for _, n in cell.sources)])
        said = ", ".join(f"{o} {n}" for o, n in cell.sources) or cell.conflict_reason
        return low, f"{where}: sources disagree since {_iso(cell.conflict_since)} ({said}), counted {low}"
    return cell.count, None


def compute_atp(sku: str, cells: Iterable[StockCell], *, reserved: int | None, safety_stock: int,
                backroom: Iterable[BackroomFigure] = ()) -> Atp:
    """ATP of `sku` from its shelf cells and back-room figures (pure); `reserved` None: the reservations are not
    known (ATP 0)."""
    on_hand = certain = 0
    reasons: list[str] = []
    locations: list[dict[str, Any]] = []
    for cell in cells:
        sure, why = cell_certain(cell)
        on_hand += cell.count if cell.known else 0
        certain += sure
        if why:
            reasons.append(why)
        locations.append({"shelf": cell.shelf, "zone": cell.zone, "count": cell.count if cell.known else None,
                          "counted": sure, "version": cell.version + cell.trust_version})
    back = tuple(backroom)
    back_on_hand = sum(f.count or 0 for f in back)
    back_certain = sum(f.counted for f in back)
    reasons += [f.reason for f in back if f.reason]
    if not locations and not back:
        reasons.append("on no shelf of the planogram")
    on_hand += back_on_hand
    certain += back_certain
    rooms = tuple(f.as_dict() for f in back)
    if reserved is None:
        reasons.append("reservations unknown (the order book failed): nothing promised")
        return Atp(sku, 0, on_hand, certain, 0, safety_stock, tuple(reasons), tuple(locations), rooms, back_on_hand,
                   back_certain)  # fmt: skip
    reserved = max(0, reserved)
    atp = max(0, certain - reserved - safety_stock)
    return Atp(sku, atp, on_hand, certain, reserved, safety_stock, tuple(reasons), tuple(locations), rooms,
               back_on_hand, back_certain)  # fmt: skip


def band(atp: int, thresholds: Sequence[int]) -> int:
    """How many thresholds `atp` lies above (ATP crossed a threshold when its band changed)."""
    return sum(1 for t in thresholds if atp > t)


def crossed(previous: int, atp: int, thresholds: Sequence[int]) -> int | None:
    """The outermost threshold crossed moving from `previous` to `atp`, or None when none was."""
    lo, hi = sorted((previous, atp))
    between = [t for t in thresholds if lo <= t < hi]  # a level t separates x <= t from x > t
    if not between:
        return None
    return between[-1] if atp > previous else between[0]


class AtpTracker:
    """ATP of every catalog SKU, as last published; derives snapshots and crossing events from stock."""

    def __init__(self, manifest: Manifest, stock: StockState) -> None:
        self.stock = stock
        self.thresholds = tuple(manifest.atp.thresholds)
        self.safety = dict(manifest.atp.safety_stock)
        self.catalog = {c.sku: c for c in manifest.catalog}
        self.reserved: Callable[[str], int] = lambda _sku: 0  # the reservation hook (orders set it)
        self.reserved_at: Callable[[str, str], int] = lambda _shelf, _sku: 0  # per cell (shelf, sku): the same
        # the back-room hooks (edge/backroom.py sets them): figures per location, and the certain total for the
        # restock rule (None: not counted, the rules' static map stands)
        self.backroom: Callable[[str], Sequence[BackroomFigure]] = lambda _sku: ()
        self.backroom_counted: Callable[[str], int | None] = lambda _sku: None
        self._docs: dict[str, dict[str, Any]] = {}  # sku -> last published snapshot
        self._versions: dict[str, int] = {}

    def reconfigure(self, manifest: Manifest) -> None:
        """Take a new catalog and `atp:` section (a manifest rollout, edge/rollout.py); `refresh` publishes
        what changed."""
        self.thresholds = tuple(manifest.atp.thresholds)
        self.safety = dict(manifest.atp.safety_stock)
        self.catalog = {c.sku: c for c in manifest.catalog}

    # ---- reading ----
    def safety_stock(self, sku: str) -> int:
        """Units of `sku` held back: its category's safety stock (0 for none)."""
        item = self.catalog.get(sku)
        return self.safety.get(item.category, 0) if item is not None and item.category else 0

    def compute(self, sku: str) -> Atp:
        """The ATP of `sku` right now."""
        return compute_atp(sku, self.stock.cells(sku=sku), reserved=self._reserved(sku),
                           safety_stock=self.safety_stock(sku), backroom=self.backroom(sku))  # fmt: skip

    def document(self, sku: str, now: datetime) -> dict[str, Any]:
        """The JSON form (retained `state/atp/{sku}`, REST, `cmd/atp.get`) of the current ATP of `sku`."""
        a = self.compute(sku)
        item = self.catalog.get(sku)
        doc = {
            "sku": sku, "gtin": item.gtin if item else None, "name": (item.name or None) if item else None,
            "unit": item.unit if item else "EA", "category": (item.category or None) if item else None,
            "atp": a.atp, "on_hand": a.on_hand, "certain": a.certain, "reserved": a.reserved,
            "safety_stock": a.safety_stock, "certain_only": a.certain < a.on_hand or bool(a.reasons),
            "on_hand_split": {"shelves": a.on_hand - a.backroom_on_hand, "backroom": a.backroom_on_hand},
            "certain_split": {"shelves": a.certain - a.backroom_certain, "backroom": a.backroom_certain},
            "reasons": list(a.reasons), "locations": list(a.locations), "backroom": list(a.backroom),
            "thresholds": list(self.thresholds), "level": band(a.atp, self.thresholds),
        }  # fmt: skip
        last = self._docs.get(sku)
        same = last is not None and _content(last) == doc
        doc["version"] = self._versions.get(sku, 0) + (0 if same else 1)
        doc["updated"] = last["updated"] if same and last is not None else _iso(now)
        return doc

    def get(self, sku: str, now: datetime) -> dict[str, Any]:
        """One SKU's ATP; `not_found` for a SKU the catalog does not have."""
        if not isinstance(sku, str):
            raise CommandError("bad_request", "sku must be a string")
        if sku not in self.catalog:
            raise CommandError("not_found", f"no sku {sku[:64]!r} in this store's catalog")
        return self._published_or(sku, now)

    def items(self, now: datetime, *, category: str | None = None) -> list[dict[str, Any]]:
        """Every catalog SKU's ATP (of one category); `not_found` for a category no item has."""
        if category is not None:
            if not isinstance(category, str):
                raise CommandError("bad_request", "category must be a string")
            if category not in {c.category for c in self.catalog.values()}:
                raise CommandError("not_found", f"no catalog item has category {category[:64]!r}")
        return [self._published_or(sku, now) for sku in sorted(self.catalog)
                if category is None or self.catalog[sku].category == category]  # fmt: skip

    def _published_or(self, sku: str, now: datetime) -> dict[str, Any]:
        doc = self.document(sku, now)
        last = self._docs.get(sku)
        return last if last is not None and last["version"] == doc["version"] else doc

    # ---- publishing ----
    def load(self, rows: Iterable[dict[str, Any]], topic_root: str) -> None:
        """Restore the last published snapshots (rows of the `retained` table: topic, payload, version), so
        a restart neither repeats a crossing event nor reuses a version."""
        prefix = f"{topic_root}/{TOPIC_PREFIX}"
        for r in rows:
            topic = str(r.get("topic", ""))
            if not topic.startswith(prefix):
                continue
            sku = topic[len(prefix):]
            try:
                doc = orjson.loads(r["payload"])
                version = int(r["version"])
                int(doc["atp"])
            except (orjson.JSONDecodeError, TypeError, KeyError, ValueError):
                continue
            if sku in self.catalog and isinstance(doc, dict):
                self._docs[sku] = doc
                self._versions[sku] = version

    def derive(self, cells: list[StockCell], skus: set[str], now: datetime) -> tuple[list[Event], Snapshots]:
        """The stock deriver: new snapshots and crossing events for `skus` (those of the touched cells and the
        nudged ones)."""
        return self.refresh(now, sorted(skus))

    def refresh(self, now: datetime, skus: Iterable[str] | None = None) -> tuple[list[Event], Snapshots]:
        """Recompute `skus` (all when None: at start, after a reservation change); what changed is returned."""
        events: list[Event] = []
        snaps: Snapshots = {}
        for sku in sorted(self.catalog) if skus is None else skus:
            if sku not in self.catalog:
                continue
            doc = self.document(sku, now)
            last = self._docs.get(sku)
            if last is not None and doc["version"] == last["version"]:
                continue  # the same figure, explained the same way
            self._docs[sku] = doc
            self._versions[sku] = doc["version"]
            snaps[TOPIC_PREFIX + sku] = (doc, doc["version"])
            if last is None:
                continue  # the first figure ever: nothing was crossed
            prev = int(last["atp"])
            level = crossed(prev, doc["atp"], self.thresholds)
            if level is not None:
                events.append(AtpChanged(
                    source=SOURCE, time=now, subject=sku, sku=sku, gtin=doc["gtin"], atp=doc["atp"], previous=prev,
                    threshold=level, direction="up" if doc["atp"] > prev else "down", on_hand=doc["certain"],
                    backroom=doc["certain_split"]["backroom"],
                    reserved=doc["reserved"], safety_stock=doc["safety_stock"], reasons=tuple(doc["reasons"]),
                    version=doc["version"]))  # fmt: skip
        return events, snaps

    def _reserved(self, sku: str) -> int | None:
        try:
            return max(0, int(self.reserved(sku)))
        except Exception:  # a broken hook must not stop stock; what is reserved is unknown: promise nothing
            return None


def _content(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in ("version", "updated")}
