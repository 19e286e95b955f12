"""Live stock picture: one cell per shelf x SKU, with a version that increases by one per change.

`StockState.apply(update)` is pure bookkeeping (no I/O): it turns a source's claim into a
`StockChanged` event when the count really changes, and says which retained shelf snapshot is now due.
The pipeline commits the event, the cell row and the snapshot in one transaction, so the database, the
journal and what HQ sees never disagree, also after kill -9.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from edge.config import Manifest
from edge.events import StockChanged
from edge.processing import StockUpdate


@dataclass(frozen=True, slots=True)
class StockCell:
    """Current stock of one SKU on one shelf."""

    shelf: str
    sku: str
    zone: str
    count: int
    version: int
    origin: str
    updated: datetime | None
    capacity: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, shared by the API, `cmd/stock.get` and the retained topics."""
        return {
            "shelf": self.shelf,
            "sku": self.sku,
            "zone": self.zone,
            "count": self.count,
            "version": self.version,
            "origin": self.origin,
            "updated": self.updated.isoformat().replace("+00:00", "Z") if self.updated else None,
            "capacity": self.capacity,
        }


# Origins a shelf accepts, by its manifest `stock_source`; "manual" (staff correction via API) always counts.
ACCEPTED_ORIGINS: dict[str, frozenset[str] | None] = {
    "any": None,
    "weight": frozenset({"weight", "manual"}),
    "rfid": frozenset({"rfid", "manual"}),
    "scan": frozenset({"scan", "count", "manual"}),
}


class StockState:
    """All planogram cells of the store, in memory, loaded from and persisted to the `stock` table."""

    def __init__(self, manifest: Manifest) -> None:
        self._cells: dict[tuple[str, str], StockCell] = {}
        self._accepts = {s.id: ACCEPTED_ORIGINS[s.stock_source] for s in manifest.shelves}
        self.ignored = 0  # claims from a source that is not this shelf's truth
        for shelf in manifest.shelves:
            for lane in shelf.lanes:
                key = (shelf.id, lane.sku)
                old = self._cells.get(key)
                cap = lane.capacity + (old.capacity if old else 0)
                self._cells[key] = StockCell(shelf.id, lane.sku, shelf.zone, 0, 0, "none", None, cap)

    def load(self, rows: Iterable[dict[str, Any]]) -> None:
        """Restore cells from database rows (unknown cells, e.g. removed from the planogram, are ignored)."""
        for r in rows:
            key = (str(r["shelf"]), str(r["sku"]))
            cell = self._cells.get(key)
            if cell is None:
                continue
            updated = datetime.fromisoformat(str(r["updated"])) if r.get("updated") else None
            self._cells[key] = replace(
                cell, count=int(r["count"]), version=int(r["version"]), origin=str(r["origin"]), updated=updated
            )

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
        if new == cell.count and cell.version > 0:
            return None
        changed = replace(cell, count=new, version=cell.version + 1, origin=update.origin, updated=update.time)
        self._cells[key] = changed
        return StockChanged(
            source=update.source,
            time=update.time,
            subject=update.shelf,
            shelf=update.shelf,
            sku=update.sku,
            count=new,
            previous=cell.count if cell.version > 0 else None,
            delta=new - cell.count,
            version=changed.version,
            origin=update.origin,
            reason=update.reason,
        )

    def get(self, shelf: str, sku: str) -> StockCell | None:
        """One cell."""
        return self._cells.get((shelf, sku))

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
            "version": sum(c.version for c in cells),
            "items": [c.as_dict() for c in cells],
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
