"""Back-room stock per location and SKU (manifest `backroom:`, edge/backroomconfig.py), counted toward ATP.

Two ways of counting, chosen per location by `counted_by`:
- rfid: the RFID processor reports the tags of each SKU present at the antennas mapped to the location
  (`BackroomCounted(origin="rfid", count=n)`: the same presence logic as shelves, EPC SGTIN -> GTIN -> catalog
  SKU), and whether its readers can see the location (`BackroomStale`): a reader offline, not inventorying,
  silent or with the antenna down, and then one lost-timeout of reconciling, makes the count stale.
- receiving: a ledger. A receive scan books units in (`BackroomCounted(origin="receiving", delta=+n)`); a
  restock scan session of the same scanners moves units out onto the scanned shelf (`delta=-n`, with `shelf`).
  Units that leave any other way (thrown away, returned to the supplier) are not seen: a cycle count of the back
  room is not built yet. The ledger never goes below 0; units moved out beyond it are kept as `short` (they were
  in the back room before receiving was counted).

What ATP counts of a location (`BackroomFigure.counted`): the ledger for receiving only; the RFID count while
its readers vouch for it (0 when stale or not vouched for since the gateway started, with a reason); with both,
the lower of the two (a tag not received, or a received unit not tagged, is not promised).

`BackroomBook` is pure (no I/O, no clock reads): `apply` takes an event and the time. `BackroomService` wires it
into the gateway: a reactor (the processors' events arrive through the pipeline), its rows in the `kv` table
(`backroom/<location>/<sku>`), committed with the events that moved them, and `StockState.nudge` so the SKU's
ATP is published in the same batch. The RFID counts and ledgers survive a restart; whether a reader vouches for
a count does not (a reader must vouch again, as for shelves).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from edge.backroomconfig import BackroomConfig, BackroomLocation
from edge.events import Event, EventClass
from edge.runtime import Upsert

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from edge.config import Manifest
    from edge.runtime import GatewayView

TOPIC = "events/backroom"
KV_PREFIX = "backroom/"  # kv key of a location x SKU row: backroom/<location>/<sku>
NOT_VOUCHED = "not vouched for by its RFID reader since the gateway started"


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True, kw_only=True)
class BackroomCounted(Event):
    """Back-room stock of one SKU at one location moved (an RFID count or a receiving-ledger movement).

    `count`: the tags present now (origin rfid); `delta`: + units scanned in, - units scanned onto `shelf` by a
    restock session (origin receiving).
    """

    TYPE: ClassVar[str] = "retail.backroom.counted.v1"
    CLASS: ClassVar[EventClass] = EventClass.LEDGER
    TOPIC: ClassVar[str] = TOPIC

    location: str
    sku: str
    gtin: str | None
    origin: str  # "rfid" | "receiving"
    count: int | None = None
    delta: int | None = None
    shelf: str | None = None  # receiving, delta < 0: the shelf the units went to
    reason: str = ""

    def __post_init__(self) -> None:
        Event.__post_init__(self)
        if (self.count is None) == (self.delta is None):
            raise ValueError("a back-room count carries exactly one of count and delta")
        if self.count is not None and self.count < 0:
            raise ValueError("a back-room count cannot be negative")


@dataclass(frozen=True, slots=True, kw_only=True)
class BackroomStale(Event):
    """Whether a back-room location's RFID count can be trusted right now.

    `on` while a reader covering it cannot see it (and while it reconciles after its return), `on=False` when the
    readers vouch for the count again.
    """

    TYPE: ClassVar[str] = "retail.backroom.stale.v1"
    CLASS: ClassVar[EventClass] = EventClass.CONTROL
    TOPIC: ClassVar[str] = TOPIC

    location: str
    on: bool
    since: datetime | None = None  # on: since when the count is not vouched for
    reason: str = ""


@dataclass(frozen=True, slots=True)
class BackroomFigure:
    """One location's units of one SKU, as ATP counts them."""

    location: str
    name: str
    names: dict[str, str]
    count: int | None  # what the sources say (the RFID count when counted by RFID, else the ledger); None: never
    counted: int  # what ATP counts (see the module docstring)
    counted_by: tuple[str, ...]
    reason: str | None  # why `counted` is below `count`, or None

    def as_dict(self) -> dict[str, Any]:
        """The JSON form in the ATP documents."""
        return {"location": self.location, "name": self.name, "names": dict(self.names), "count": self.count,
                "counted": self.counted, "counted_by": list(self.counted_by)}  # fmt: skip


@dataclass(slots=True)
class _Cell:
    rfid: int | None = None  # tags present at the last RFID count; None: never counted
    ledger: int = 0  # received - moved out, never below 0
    short: int = 0  # units moved out beyond the ledger (in the back room before receiving was counted)
    updated: str | None = None

    def doc(self) -> dict[str, Any]:
        return {"rfid": self.rfid, "ledger": self.ledger, "short": self.short, "updated": self.updated}


@dataclass(slots=True)
class _Place:
    vouched: bool = False  # a reader vouched for the RFID count since the gateway started
    stale: tuple[datetime, str] | None = None


@dataclass
class BackroomBook:
    """Every location's counts and ledgers (pure)."""

    config: BackroomConfig
    gtins: dict[str, str | None] = field(default_factory=dict)  # sku -> GTIN, for the catalog's SKUs
    cells: dict[tuple[str, str], _Cell] = field(default_factory=dict)
    places: dict[str, _Place] = field(default_factory=dict)
    ignored: int = 0  # events for a location or SKU the manifest does not have there

    @classmethod
    def of(cls, manifest: Manifest) -> BackroomBook:
        """The book of `manifest`'s back-room locations and catalog."""
        return cls(manifest.backroom, {c.sku: c.gtin for c in manifest.catalog})

    def __post_init__(self) -> None:
        self.places = {x.id: _Place() for x in self.config.locations}

    def counts(self, sku: str) -> bool:
        """Whether some location counts `sku` (otherwise the rules keep their static `backroom:` map)."""
        return sku in self.gtins and any(x.keeps(sku) for x in self.config.locations)

    def apply(self, event: Event, now: datetime) -> list[str]:
        """Take a back-room event; the SKUs whose figures may have changed (empty: not ours, or no change)."""
        if isinstance(event, BackroomStale):
            return self._stale(event)
        if not isinstance(event, BackroomCounted):
            return []
        loc = self.config.location(event.location)
        if loc is None or event.sku not in self.gtins or not loc.keeps(event.sku) or event.origin not in loc.counted_by:
            self.ignored += 1
            return []
        cell = self.cells.setdefault((loc.id, event.sku), _Cell())
        before = cell.doc()
        if event.count is not None:
            cell.rfid = event.count  # vouched for by the readers' BackroomStale(on=False), not by the count itself
        elif event.delta is not None:
            cell.ledger += event.delta
            if cell.ledger < 0:
                cell.short += -cell.ledger
                cell.ledger = 0
        if cell.doc() == before:
            return []
        cell.updated = _iso(now)
        return [event.sku]

    def _stale(self, event: BackroomStale) -> list[str]:
        place = self.places.get(event.location)
        if place is None:
            self.ignored += 1
            return []
        before = (place.vouched, place.stale)
        if event.on:
            place.stale = (event.since or event.time, event.reason)
        else:
            place.stale = None
            place.vouched = True
        if (place.vouched, place.stale) == before:
            return []
        loc = self.config.location(event.location)
        return sorted(s for s in self.gtins if loc is not None and loc.keeps(s))

    def figures(self, sku: str) -> tuple[BackroomFigure, ...]:
        """What every location holds of `sku` and what ATP counts of it (locations that never had it left out)."""
        out: list[BackroomFigure] = []
        for loc in self.config.locations:
            if not loc.keeps(sku):
                continue
            cell = self.cells.get((loc.id, sku))
            if cell is None:
                continue
            fig = self._figure(loc, cell)
            if fig.count or fig.counted or fig.reason:
                out.append(fig)
        return tuple(out)

    def _figure(self, loc: BackroomLocation, cell: _Cell) -> BackroomFigure:
        by = tuple(loc.counted_by)
        place = self.places[loc.id]
        reason: str | None = None
        if "rfid" in by:
            count = cell.rfid if cell.rfid is not None else (cell.ledger if "receiving" in by else None)
            if place.stale is not None:
                since, why = place.stale
                sure = None
                doubt = f"{loc.id}: RFID count stale since {_iso(since)} ({why}), counted 0"
            elif not place.vouched:
                sure = None
                doubt = f"{loc.id}: RFID count {NOT_VOUCHED}, counted 0"
            else:
                sure = cell.rfid or 0
                doubt = ""
            if sure is None:
                counted = 0
                reason = doubt if count else None
            elif "receiving" in by:
                counted = min(sure, cell.ledger)
                if sure != cell.ledger:
                    reason = f"{loc.id}: RFID {sure}, receiving ledger {cell.ledger}: counted {counted}"
            else:
                counted = sure
        else:
            count = counted = cell.ledger
        names = {str(k): v for k, v in loc.names.items()}
        return BackroomFigure(loc.id, loc.label(), names, count, counted, by, reason)

    def counted(self, sku: str) -> int | None:
        """Units of `sku` certainly in the back room (for the restock quantity), or None when no location counts
        it or a count is in doubt (then the rules' static `backroom:` map stands)."""
        if not self.counts(sku):
            return None
        figs = self.figures(sku)
        if any(f.reason for f in figs):
            return None
        return sum(f.counted for f in figs)

    # ---- durability ----
    def row(self, loc: str, sku: str) -> Upsert:
        """The `kv` row of one location x SKU."""
        doc = self.cells[(loc, sku)].doc()
        return Upsert("kv", {"key": f"{KV_PREFIX}{loc}/{sku}", "value": orjson.dumps(doc).decode()})

    def load(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Counts and ledgers back from their `kv` rows (at start); rows of locations or SKUs the manifest no longer
        has are left out. Readers vouch again: until then an RFID count is not certain."""
        n = 0
        for r in rows:
            loc, _, sku = str(r.get("key", "")).removeprefix(KV_PREFIX).partition("/")
            x = self.config.location(loc)
            if x is None or sku not in self.gtins or not x.keeps(sku):
                continue
            try:
                d = orjson.loads(r["value"])
                rfid = d.get("rfid")
                cell = _Cell(None if rfid is None else max(0, int(rfid)), max(0, int(d.get("ledger", 0))),
                             max(0, int(d.get("short", 0))), d.get("updated"))  # fmt: skip
            except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError, KeyError):
                continue
            self.cells[(loc, sku)] = cell
            n += 1
        return n


class BackroomService:
    """The book inside a running gateway: a reactor for the back-room events, durable rows, the ATP hooks.

    Built by the composition root; `load` at start, before the first ATP is published.
    """

    def __init__(self, gw: GatewayView) -> None:
        self.gw = gw
        self.book = BackroomBook.of(gw.manifest)
        gw.atp.backroom = self.book.figures
        gw.atp.backroom_counted = self.book.counted
        gw.add_reactor(self)

    async def load(self) -> int:
        """Counts and ledgers back from their rows (at start)."""
        rows = await self.gw.query("SELECT key, value FROM kv WHERE key >= ? AND key < ?",
                                   (KV_PREFIX, KV_PREFIX[:-1] + "0"))  # fmt: skip
        return self.book.load(rows)

    def react(self, event: Event, now: datetime) -> Sequence[object]:
        """A back-room event: the rows it moved (committed with it) and the SKUs' ATP recomputed in the batch."""
        if not isinstance(event, BackroomCounted | BackroomStale):
            return []
        skus = self.book.apply(event, now)
        if not skus:
            return []
        self.gw.stock.nudge(skus)
        if isinstance(event, BackroomCounted):
            return [self.book.row(event.location, event.sku)]
        return []

    def tick(self, now: datetime) -> Sequence[object]:
        """Nothing happens with time alone (the processors say when a count goes stale)."""
        return []
