"""Reservations for online orders and the pick tasks they make (issue 16 items 3 and 4).

An order (from HQ: `cmd/order.reserve` or `POST /api/v1/orders`) names an id, lines (sku or GTIN-14 and a
quantity), a mode (`pickup` | `ship`) and a due time. `OrderBook` decides (pure: no I/O, no clock reads):
each line gets what the SKU's available-to-promise allows (edge/atp.py, which already subtracts the units
other orders hold), the rest is `short`; the reserved units are allocated to shelf cells (the cell with the
most free units first) and every allocation is a pick task (shelf, lane, quantity, the window from now to
the due time). `OrderService` wires the book into the gateway: the order's `kv` row (`order/<id>`, its JSON)
commits in the same transaction as its events, and the ATP snapshots the reservation moved (`StockState.nudge`
through the pipeline's routed batch); after a restart the book is loaded back from those rows.

Reserved units: an open task holds `qty - sensed` units of its cell; a task confirmed by a scan keeps holding
the units its shelf has not yet seen leave for `sensor_grace_s` (they are in the picker's hand, the scale
will see them go). `AtpTracker.reserved` (per SKU) and `AtpTracker.reserved_at` (per cell, for the restock
rules' unreserved stock) read the book.

Confirmation. By scan: a scanner in role `pick` (MODE:PICK, optionally ORDER:<id> first) reports every item
as `retail.scan.picked.v1`; its units go to the named order's (else the oldest due) open task of that SKU.
By the shelf: a stock change of the task's cell by its sensors (origin weight or rfid) with units leaving
inside the task window is attributed to the oldest open task there; for a back-room pick task (the location
as its shelf, no lane) a drop of the location's RFID count (`retail.backroom.counted.v1`, origin rfid) does
the same (the drop between two counts the service saw: one right after a restart has no count before it and
confirms nothing). A task is picked when its scans or its
sensed units reach its quantity (`retail.order.picked.v1`, which carries what the shelf saw, so the restock
rules do not count a pick as a sale); all tasks picked: `retail.order.ready.v1`. Collection by a COLLECT:<id>
scan, `cmd/order.collect` or `POST /api/v1/orders/{id}/collect` (`retail.order.collected.v1`). An order
still being picked at its due time expires (`retail.order.expired.v1`), a cancel (`retail.order.cancelled.v1`)
releases what it held. Idempotent on the id: the same id and body again answer the same order; the same id
with another body is a `conflict`. Errors are `CommandError`s, the same over MQTT and REST.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal

import orjson

from edge.backroom import BackroomCounted
from edge.commands import canonical_json
from edge.config import Manifest, OrdersConfig
from edge.configbase import IDENT_PATTERN
from edge.errors import CommandError
from edge.events import Event, EventClass, StockChanged
from edge.runtime import Delete, GatewayView, Upsert

log = logging.getLogger(__name__)

SOURCE = "orders"  # the CloudEvents source of order events
KV_PREFIX = "order/"  # kv key of an order's row: order/<id>
ORDER_ID = re.compile(IDENT_PATTERN)  # scannable as ORDER:<id> / COLLECT:<id>
GTIN14 = re.compile(r"[0-9]{14}")  # ASCII digits only (\d takes any Unicode digit)
MODES = ("pickup", "ship")
SENSED_ORIGINS = frozenset({"weight", "rfid"})  # the shelf's own sensors (a scan or a count is not a pick)
SCAN_PICKED = "retail.scan.picked.v1"  # drivers/scanner/events.py (edge/ does not import drivers/)
SCAN_COLLECTED = "retail.scan.collected.v1"
OPEN_STATES = frozenset({"reserved", "ready"})
State = Literal["reserved", "short", "ready", "collected", "cancelled", "expired"]


def iso(t: datetime) -> str:
    """RFC 3339 in UTC with Z."""
    return t.isoformat().replace("+00:00", "Z")


# ---- events -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderEvent(Event):
    """Fields every order event carries. `cells` are the shelf cells ("shelf/sku") whose reserved units this
    change moved (the restock rules look at them again)."""

    TYPE: ClassVar[str] = ""
    CLASS: ClassVar[EventClass] = EventClass.LEDGER
    TOPIC: ClassVar[str] = "events/orders"

    order_id: str
    mode: str
    due: datetime
    cells: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderReserved(OrderEvent):
    """Units were reserved for an order; `lines` says per line what was reserved and what is short, `tasks`
    are the pick tasks (shelf, lane, sku, qty) made from them."""

    TYPE: ClassVar[str] = "retail.order.reserved.v1"

    lines: tuple[dict[str, Any], ...]
    tasks: tuple[dict[str, Any], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderShort(OrderEvent):
    """Some lines of an order could not be (fully) reserved: `lines` are those lines (requested, reserved,
    short); `state` "short" when nothing at all was reserved."""

    TYPE: ClassVar[str] = "retail.order.short.v1"

    lines: tuple[dict[str, Any], ...]
    state: str


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderPicked(OrderEvent):
    """One pick task is done: `qty` units of `sku` taken from `shelf`/`lane` for the order, confirmed `by`
    "scan", "shelf" (its sensors saw the units leave) or "staff" (the API or command). `sensed` units of it the
    shelf saw leave so far; the rest may still be seen leaving until `hold_until` (not a shopper sale)."""

    TYPE: ClassVar[str] = "retail.order.picked.v1"

    task_id: str
    shelf: str
    lane: str
    sku: str
    qty: int
    by: str
    sensed: int
    hold_until: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderReady(OrderEvent):
    """Every pick task of the order is done: ready for collection (pickup) or dispatch (ship)."""

    TYPE: ClassVar[str] = "retail.order.ready.v1"

    units: int


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderCollected(OrderEvent):
    """The ready order was handed over (collected by the customer or the courier); `by` scan or staff."""

    TYPE: ClassVar[str] = "retail.order.collected.v1"

    by: str
    units: int


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderCancelled(OrderEvent):
    """The order was cancelled; `released` units were reserved on the shelves and are free again; `picked`
    units were already picked (staff put them back: the shelf's sensors count them in)."""

    TYPE: ClassVar[str] = "retail.order.cancelled.v1"

    reason: str
    released: int
    picked: int


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderExpired(OrderEvent):
    """The order was not picked by its due time: its reservations are released (`released` units), `picked`
    units were picked already."""

    TYPE: ClassVar[str] = "retail.order.expired.v1"

    released: int
    picked: int


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderScanRefused(Event):
    """A pick or collect scan that fits no order: no open pick task of that SKU (for the named order), an
    unknown order, or an order not ready to collect. Nothing changed."""

    TYPE: ClassVar[str] = "retail.order.scan_refused.v1"
    CLASS: ClassVar[EventClass] = EventClass.CONTROL
    TOPIC: ClassVar[str] = "events/orders"

    scanner: str
    reason: str
    order_id: str | None = None
    sku: str | None = None


# ---- the book (pure) ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Line:
    """One order line as reserved."""

    sku: str
    gtin: str | None
    name: str | None
    requested: int
    reserved: int

    @property
    def short(self) -> int:
        """Units not reserved."""
        return self.requested - self.reserved

    def doc(self, index: int) -> dict[str, Any]:
        """JSON form."""
        return {"line": index, "sku": self.sku, "gtin": self.gtin, "name": self.name, "requested": self.requested,
                "reserved": self.reserved, "short": self.short}  # fmt: skip


@dataclass(frozen=True, slots=True)
class PickTask:
    """Take `qty` of `sku` from `shelf`/`lane` for `order_id` between `opens` and `closes` (the due time)."""

    id: str  # "<order id>/<n>"
    order_id: str
    shelf: str
    lane: str
    sku: str
    qty: int
    opens: datetime
    closes: datetime
    scanned: int = 0
    sensed: int = 0
    state: Literal["open", "picked", "released"] = "open"
    by: str | None = None
    picked_at: datetime | None = None

    def held(self, now: datetime, grace_s: float) -> int:
        """Units of its cell this task holds now (see the module docstring)."""
        if self.state == "open":
            return max(0, self.qty - self.sensed)
        if self.state == "picked" and self.picked_at is not None and self.by != "shelf" \
                and (now - self.picked_at).total_seconds() < grace_s:  # fmt: skip
            return max(0, self.qty - self.sensed)
        return 0

    def doc(self, names: Mapping[str, tuple[str | None, str | None]] | None = None) -> dict[str, Any]:
        """JSON form (the REST pick list, the order document)."""
        gtin, name = (names or {}).get(self.sku, (None, None))
        return {"id": self.id, "order_id": self.order_id, "shelf": self.shelf, "lane": self.lane, "sku": self.sku,
                "gtin": gtin, "name": name, "qty": self.qty, "opens": iso(self.opens), "closes": iso(self.closes),
                "scanned": self.scanned, "sensed": self.sensed, "state": self.state, "by": self.by,
                "picked_at": iso(self.picked_at) if self.picked_at else None}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Order:
    """One order and its pick tasks."""

    id: str
    mode: str
    due: datetime
    created: datetime
    digest: str  # SHA-256 of the canonical request body (idempotency)
    lines: tuple[Line, ...]
    tasks: tuple[PickTask, ...]
    state: State
    updated: datetime
    closed_reason: str | None = None

    @property
    def cells(self) -> tuple[str, ...]:
        """"shelf/sku" of every cell a task of this order picks from."""
        return tuple(sorted({f"{t.shelf}/{t.sku}" for t in self.tasks}))

    def units(self, state: str) -> int:
        """Units of the tasks in `state`."""
        return sum(t.qty for t in self.tasks if t.state == state)


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """A validated order request (`parse_request`)."""

    id: str
    mode: str
    due: datetime
    lines: tuple[tuple[str, int], ...]  # (sku, quantity)
    digest: str


def _bad(message: str) -> CommandError:
    return CommandError("bad_request", message)


def check_order_id(value: object) -> str:
    """An order id: 1-64 characters of A-Z a-z 0-9 _ . - starting with a letter or digit."""
    if not isinstance(value, str) or not ORDER_ID.fullmatch(value):
        raise _bad("order_id must be 1-64 characters of letters, digits, '_', '.', '-' (starting with a letter or "
                   "digit), e.g. '8812'")
    return value


def _time(value: object, what: str) -> datetime:
    if not isinstance(value, str) or len(value) > 64:
        raise _bad(f"{what} must be an RFC 3339 time with a zone, e.g. 2026-12-04T18:00:00+08:00")
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise _bad(f"{what} {value[:40]!r} is not an RFC 3339 time (e.g. 2026-12-04T18:00:00+08:00)") from None
    if t.tzinfo is None:
        raise _bad(f"{what} must carry a zone (Z or +08:00)")
    return t.astimezone(UTC)


def parse_request(raw: Mapping[str, Any], manifest: Manifest, cfg: OrdersConfig, now: datetime) -> OrderRequest:
    """Validate an order request {order_id, lines: [{sku | gtin, qty}], mode, due}; every problem is a
    CommandError (`bad_request`, `not_found` for an unknown SKU or GTIN)."""
    if not isinstance(raw, Mapping):
        raise _bad("the order must be a JSON object {order_id, lines, mode, due}")
    extra = sorted(set(raw) - {"order_id", "lines", "mode", "due"})
    if extra:
        raise _bad(f"unknown field(s) {', '.join(repr(k[:32]) for k in extra[:5])}: an order has order_id, lines, "
                   "mode, due")
    oid = check_order_id(raw.get("order_id"))
    mode = raw.get("mode")
    if mode not in MODES:
        raise _bad("mode must be 'pickup' or 'ship'")
    due = _time(raw.get("due"), "due")
    if due <= now:
        raise _bad(f"due {iso(due)} is not in the future (the gateway's time is {iso(now)})")
    if (due - now).total_seconds() > cfg.max_ahead_s:
        raise _bad(f"due {iso(due)} is more than {cfg.max_ahead_s:g} s ahead (orders.max_ahead_s)")
    lines = raw.get("lines")
    if not isinstance(lines, list) or not lines:
        raise _bad("lines must be a non-empty list of {sku or gtin, qty}")
    if len(lines) > cfg.max_lines:
        raise _bad(f"{len(lines)} lines: at most {cfg.max_lines} per order (orders.max_lines)")
    by_gtin = {c.gtin: c.sku for c in manifest.catalog if c.gtin}
    skus = {c.sku for c in manifest.catalog}
    out: list[tuple[str, int]] = []
    for i, line in enumerate(lines):
        where = f"lines[{i}]"
        if not isinstance(line, Mapping) or set(line) - {"sku", "gtin", "qty"}:
            raise _bad(f"{where} must be an object {{sku or gtin, qty}}")
        qty = line.get("qty")
        if isinstance(qty, bool) or not isinstance(qty, int) or not 1 <= qty <= cfg.max_quantity:
            raise _bad(f"{where}.qty must be a whole number from 1 to {cfg.max_quantity} (orders.max_quantity)")
        sku, gtin = line.get("sku"), line.get("gtin")
        if (sku is None) == (gtin is None):
            raise _bad(f"{where} must name exactly one of sku and gtin")
        if gtin is not None:
            if not isinstance(gtin, str) or not GTIN14.fullmatch(gtin):
                raise _bad(f"{where}.gtin must be a GTIN-14: 14 digits")
            if gtin not in by_gtin:
                raise CommandError("not_found", f"{where}: GTIN {gtin} is not in this store's catalog")
            sku = by_gtin[gtin]
        if not isinstance(sku, str) or not 0 < len(sku) <= 64:
            raise _bad(f"{where}.sku must be a catalog SKU id")
        if sku not in skus:
            raise CommandError("not_found", f"{where}: sku {sku!r} is not in this store's catalog")
        out.append((sku, qty))
    body = {"order_id": oid, "mode": mode, "due": iso(due), "lines": [list(x) for x in out]}
    digest = hashlib.sha256(canonical_json(body).encode()).hexdigest()
    return OrderRequest(oid, str(mode), due, tuple(out), digest)


def allocate(qty: int, free: Sequence[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    """Split `qty` over cells (shelf, lane, free units): the cell with the most free units first (fewest walks),
    ties by shelf id. Returns (shelf, lane, units) with units > 0; less than `qty` in total when they lack it."""
    out: list[tuple[str, str, int]] = []
    for shelf, lane, n in sorted(free, key=lambda c: (-c[2], c[0])):
        if qty <= 0:
            break
        take = min(qty, n)
        if take > 0:
            out.append((shelf, lane, take))
            qty -= take
    return out


@dataclass
class OrderBook:
    """Every order the store still remembers (open ones and closed ones for `keep_closed_s`)."""

    manifest: Manifest
    cfg: OrdersConfig
    orders: dict[str, Order] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lane = {(s.id, ln.sku): ln.id for s in self.manifest.shelves for ln in reversed(s.lanes)}
        self.names = {c.sku: (c.gtin, c.name or None) for c in self.manifest.catalog}

    # ---- reading ----
    def held(self, now: datetime) -> dict[tuple[str, str], int]:
        """Units held per cell (shelf, sku) right now."""
        out: dict[tuple[str, str], int] = {}
        for o in self.orders.values():
            if o.state not in OPEN_STATES:
                continue
            for t in o.tasks:
                n = t.held(now, self.cfg.sensor_grace_s)
                if n:
                    out[(t.shelf, t.sku)] = out.get((t.shelf, t.sku), 0) + n
        return out

    def open_tasks(self, *, shelf: str | None = None, sku: str | None = None) -> list[PickTask]:
        """Open pick tasks of open orders, the earliest due first."""
        return sorted((t for o in self.orders.values() if o.state == "reserved" for t in o.tasks
                       if t.state == "open" and (shelf is None or t.shelf == shelf)
                       and (sku is None or t.sku == sku)), key=lambda t: (t.closes, t.id))  # fmt: skip

    def get(self, oid: object) -> Order:
        """An order by id; `bad_request` for a malformed id, `not_found` for an unknown one."""
        order = self.orders.get(check_order_id(oid))
        if order is None:
            raise CommandError("not_found", f"no order {oid!r} in this store")
        return order

    def doc(self, order: Order) -> dict[str, Any]:
        """The JSON form of an order (replies, REST, the kv row)."""
        return {
            "order_id": order.id, "state": order.state, "mode": order.mode, "due": iso(order.due),
            "created": iso(order.created), "updated": iso(order.updated), "closed_reason": order.closed_reason,
            "requested": sum(ln.requested for ln in order.lines), "reserved": sum(ln.reserved for ln in order.lines),
            "short": sum(ln.short for ln in order.lines),
            "lines": [ln.doc(i) for i, ln in enumerate(order.lines)],
            "tasks": [t.doc(self.names) for t in order.tasks], "digest": order.digest,
        }  # fmt: skip

    # ---- deciding ----
    def reserve(self, req: OrderRequest, now: datetime, atp: Mapping[str, int],
                free: Mapping[str, Sequence[tuple[str, str, int]]]) -> tuple[Order, list[Event], bool]:
        """Reserve an order (`atp` per SKU and `free` cells per SKU as they are now); returns the order, its
        events and whether it is new (False: the same request again: the same order, no events)."""
        old = self.orders.get(req.id)
        if old is not None:
            if old.digest != req.digest:
                raise CommandError("conflict", f"order {req.id} exists with other lines, mode or due time: an "
                                               "order id is used once (cancel it, or use a new id)")
            return old, [], False
        open_now = sum(1 for o in self.orders.values() if o.state in OPEN_STATES)
        if open_now >= self.cfg.max_open:
            raise CommandError("busy", f"{open_now} orders are open (orders.max_open): retry later")
        left = dict(atp)
        taken: dict[str, dict[tuple[str, str], int]] = {}
        lines: list[Line] = []
        tasks: list[PickTask] = []
        for sku, qty in req.lines:
            cells = [(s, ln, n - taken.get(sku, {}).get((s, ln), 0)) for s, ln, n in free.get(sku, ())]
            can = min(qty, max(0, left.get(sku, 0)), sum(max(0, n) for _, _, n in cells))
            parts = allocate(can, cells)
            got = sum(n for _, _, n in parts)
            left[sku] = left.get(sku, 0) - got
            for shelf, lane, n in parts:
                taken.setdefault(sku, {})[(shelf, lane)] = taken.get(sku, {}).get((shelf, lane), 0) + n
                tasks.append(PickTask(f"{req.id}/{len(tasks) + 1}", req.id, shelf, lane, sku, n, now, req.due))
            gtin, name = self.names.get(sku, (None, None))
            lines.append(Line(sku, gtin, name, qty, got))
        state: State = "reserved" if tasks else "short"
        order = Order(req.id, req.mode, req.due, now, req.digest, tuple(lines), tuple(tasks), state, now)
        self.orders[req.id] = order
        events: list[Event] = []
        common = self._common(order, now)
        if tasks:
            events.append(OrderReserved(**common, lines=tuple(ln.doc(i) for i, ln in enumerate(lines)),
                                        tasks=tuple(t.doc(self.names) for t in tasks)))  # fmt: skip
        if any(ln.short for ln in lines):
            events.append(OrderShort(**common, lines=tuple(ln.doc(i) for i, ln in enumerate(lines) if ln.short),
                                     state=state))  # fmt: skip
        return order, events, True

    def _common(self, o: Order, now: datetime) -> dict[str, Any]:
        return {"source": SOURCE, "time": now, "subject": o.id, "order_id": o.id, "mode": o.mode, "due": o.due,
                "cells": o.cells}  # fmt: skip

    def cancel(self, oid: object, reason: object, now: datetime) -> tuple[Order, list[Event]]:
        """Cancel an order that is not closed yet (`conflict` for a closed one)."""
        o = self.get(oid)
        why = reason if reason is not None else "cancelled"
        if not isinstance(why, str) or not 0 < len(why) <= 200 or not why.isprintable():
            raise _bad("reason must be printable text of 1-200 characters")
        if o.state not in (*OPEN_STATES, "short"):
            raise CommandError("conflict", f"order {o.id} is already {o.state}")
        released, picked = o.units("open"), o.units("picked")
        new = self._close(o, "cancelled", now, why)
        return new, [OrderCancelled(**self._common(o, now), reason=why, released=released, picked=picked)]

    def collect(self, oid: object, by: str, now: datetime) -> tuple[Order, list[Event]]:
        """Hand a ready order over (`conflict` unless it is ready)."""
        o = self.get(oid)
        if o.state != "ready":
            raise CommandError("conflict", f"order {o.id} is {o.state}, not ready: only a ready order is collected")
        new = self._close(o, "collected", now, f"collected ({by})")
        return new, [OrderCollected(**self._common(o, now), by=by, units=o.units("picked"))]

    def _close(self, o: Order, state: State, now: datetime, reason: str) -> Order:
        tasks = tuple(replace(t, state="released") if t.state == "open" else t for t in o.tasks)
        new = replace(o, state=state, tasks=tasks, updated=now, closed_reason=reason)
        self.orders[o.id] = new
        return new

    def confirm(self, task_id: str, by: str, now: datetime, *, scanned: int = 0,
                sensed: int = 0) -> tuple[Order, list[Event]]:
        """Add scanned or sensed units to an open task; picked when either reaches its quantity; the order is
        ready when every task is picked."""
        oid = task_id.rsplit("/", 1)[0]
        o = self.orders[oid]
        events: list[Event] = []
        tasks = list(o.tasks)
        for i, old in enumerate(tasks):
            if old.id != task_id:
                continue
            t = replace(old, scanned=min(old.qty, old.scanned + scanned), sensed=min(old.qty, old.sensed + sensed))
            if t.state == "open" and (t.scanned >= t.qty or t.sensed >= t.qty or by == "staff"):
                t = replace(t, state="picked", by=by, picked_at=now)
                hold = now + timedelta(seconds=self.cfg.sensor_grace_s if by != "shelf" else 0)
                events.append(OrderPicked(**self._common(o, now), task_id=t.id, shelf=t.shelf, lane=t.lane,
                                          sku=t.sku, qty=t.qty, by=by, sensed=t.sensed, hold_until=hold))  # fmt: skip
            tasks[i] = t
        new = replace(o, tasks=tuple(tasks), updated=now)
        if new.state == "reserved" and all(t.state == "picked" for t in new.tasks):
            new = replace(new, state="ready")
            events.append(OrderReady(**self._common(o, now), units=new.units("picked")))
        self.orders[oid] = new
        return new, events

    def sensed(self, ev: StockChanged) -> list[tuple[Order, list[Event]]]:
        """Units leaving a cell by its sensors: the pick of the oldest open tasks there within their window,
        or units of a task confirmed by scan that the shelf now sees leave (no event for those)."""
        if ev.delta >= 0 or ev.origin not in SENSED_ORIGINS:
            return []
        return self.sensed_at(ev.shelf, ev.sku, -ev.delta, ev.time)

    def sensed_at(self, place: str, sku: str, units: int, time: datetime) -> list[tuple[Order, list[Event]]]:
        """`units` of `sku` seen leaving `place` (a shelf by its weight or RFID, a back-room location by its RFID
        count) at `time`: as `sensed`."""
        out: list[tuple[Order, list[Event]]] = []
        grace = self.cfg.sensor_grace_s
        late = sorted((t for o in self.orders.values() if o.state in OPEN_STATES for t in o.tasks
                       if t.state == "picked" and t.by != "shelf" and t.shelf == place and t.sku == sku
                       and t.sensed < t.qty and t.held(time, grace)), key=lambda t: t.picked_at or t.opens)
        for t in [*late, *self.open_tasks(shelf=place, sku=sku)]:
            if units <= 0:
                break
            if t.state == "open" and not t.opens <= time <= t.closes:
                continue
            n = min(units, t.qty - t.sensed)
            units -= n
            out.append(self.confirm(t.id, "shelf", time, sensed=n))
        return out

    def scanned(self, sku: str, qty: int, order_id: str | None, now: datetime) -> list[tuple[Order, list[Event]]]:
        """A pick scan of `qty` units of `sku` (for `order_id`, else the open task due first); [] when no open
        task of that SKU takes it."""
        out: list[tuple[Order, list[Event]]] = []
        for t in self.open_tasks(sku=sku):
            if qty <= 0:
                break
            if order_id is not None and t.order_id != order_id:
                continue
            n = min(qty, t.qty - t.scanned)
            qty -= n
            out.append(self.confirm(t.id, "scan", now, scanned=n))
        return out

    def expire(self, now: datetime) -> list[tuple[Order, list[Event]]]:
        """Orders still being picked (or short) at their due time expire; closed orders are forgotten
        `keep_closed_s` after they closed (their rows deleted)."""
        out: list[tuple[Order, list[Event]]] = []
        for o in list(self.orders.values()):
            if o.state in ("reserved", "short") and o.due <= now:
                released, picked = o.units("open"), o.units("picked")
                new = self._close(o, "expired", now, "not picked by the due time")
                out.append((new, [OrderExpired(**self._common(o, now), released=released, picked=picked)]))
        return out

    def forget(self, now: datetime) -> list[str]:
        """Ids of closed orders older than `keep_closed_s` (dropped from the book)."""
        gone = [o.id for o in self.orders.values() if o.state in ("collected", "cancelled", "expired")
                and (now - o.updated).total_seconds() > self.cfg.keep_closed_s]
        for oid in gone:
            del self.orders[oid]
        return gone

    def next_deadline(self, now: datetime) -> datetime | None:
        """The next due time of an open order or end of a scan hold (the gateway ticks the book then)."""
        times = [o.due for o in self.orders.values() if o.state in ("reserved", "short")]
        grace = timedelta(seconds=self.cfg.sensor_grace_s)
        times += [t.picked_at + grace for o in self.orders.values() if o.state in OPEN_STATES for t in o.tasks
                  if t.picked_at is not None and t.by != "shelf" and t.picked_at + grace > now]
        return min(times) if times else None

    # ---- storage form ----
    def row(self, order: Order) -> Upsert:
        """The order's kv row (committed with its events)."""
        return Upsert("kv", {"key": KV_PREFIX + order.id, "value": orjson.dumps(self.doc(order)).decode()})

    def load(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Restore orders from their kv rows; an unreadable row is logged and skipped. Returns how many."""
        n = 0
        for r in rows:
            try:
                order = _from_doc(orjson.loads(str(r["value"])))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                log.error("order row %s is unreadable (%s): skipped", str(r.get("key"))[:80], exc)  # noqa: TRY400
                continue
            self.orders[order.id] = order
            n += 1
        return n


def _dt(v: Any) -> datetime:
    return datetime.fromisoformat(str(v).replace("Z", "+00:00"))


def _from_doc(d: Mapping[str, Any]) -> Order:
    lines = tuple(Line(str(x["sku"]), x.get("gtin"), x.get("name"), int(x["requested"]), int(x["reserved"]))
                  for x in d["lines"])  # fmt: skip
    tasks = tuple(PickTask(str(t["id"]), str(t["order_id"]), str(t["shelf"]), str(t["lane"]), str(t["sku"]),
                           int(t["qty"]), _dt(t["opens"]), _dt(t["closes"]), int(t["scanned"]), int(t["sensed"]),
                           t["state"], t.get("by"), _dt(t["picked_at"]) if t.get("picked_at") else None)
                  for t in d["tasks"])  # fmt: skip
    if d["state"] not in ("reserved", "short", "ready", "collected", "cancelled", "expired"):
        raise ValueError(f"state {d['state']!r}")
    return Order(str(d["order_id"]), str(d["mode"]), _dt(d["due"]), _dt(d["created"]), str(d["digest"]), lines,
                 tasks, d["state"], _dt(d["updated"]), d.get("closed_reason"))  # fmt: skip


# ---- in the gateway: storage, commands, the reactor ---------------------------------------------------------


class OrderService:
    """The order book inside a running gateway: commands, the reactor that confirms picks, durable rows.

    Built by the composition root before the rules (its reactor sees a stock change first, so a pick's
    reservation is released before the restock rules look at the cell); `load` at start, before the first
    ATP is published.
    """

    def __init__(self, gw: GatewayView) -> None:
        self.gw = gw
        self.book = OrderBook(gw.manifest, gw.manifest.orders)
        self._committing: dict[str, asyncio.Future[None]] = {}
        self._held: dict[tuple[str, str], int] = {}
        self._rfid_seen: dict[tuple[str, str], int] = {}  # (back-room location, sku) -> its last RFID count
        gw.atp.reserved = self.reserved
        gw.atp.reserved_at = self.reserved_at
        gw.add_reactor(self)
        gw.register_command("order.reserve", self._cmd_reserve)
        gw.register_command("order.cancel", self._cmd_cancel)
        gw.register_command("order.collect", self._cmd_collect)
        gw.register_command("order.get", self._cmd_get, read_only=True)

    async def load(self) -> int:
        """Orders back from their rows (at start)."""
        rows = await self.gw.query("SELECT key, value FROM kv WHERE key >= ? AND key < ?",
                                   (KV_PREFIX, KV_PREFIX[:-1] + "0"))  # fmt: skip
        n = self.book.load(rows)
        self._held = self.book.held(self.gw.clock.now())
        return n

    # ---- the reservation hooks of edge/atp.py ----
    def reserved(self, sku: str) -> int:
        """Units of `sku` held by orders (all cells)."""
        return sum(n for (_, s), n in self._held.items() if s == sku)

    def reserved_at(self, shelf: str, sku: str) -> int:
        """Units of one cell held by orders."""
        return self._held.get((shelf, sku), 0)

    # ---- operations (MQTT commands and REST share them) ----
    async def reserve(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Reserve an order; the same request again answers the same order; committed before the reply."""
        now = self.gw.clock.now()
        req = parse_request(raw, self.gw.manifest, self.book.cfg, now)
        pending = self._committing.get(req.id)
        if pending is not None:  # the same id is being committed: answer once it is (or fail like it)
            await asyncio.shield(pending)
        skus = sorted({sku for sku, _ in req.lines})
        atp = {sku: self.gw.atp.compute(sku).atp for sku in skus}
        order, events, new = self.book.reserve(req, now, atp, {sku: self._free(sku) for sku in skus})
        if new:
            await self._commit(order, events)
        return self.book.doc(order)

    async def cancel(self, oid: object, reason: object = None) -> dict[str, Any]:
        """Cancel an order that is not closed yet."""
        order, events = self.book.cancel(oid, reason, self.gw.clock.now())
        await self._commit(order, events)
        return self.book.doc(order)

    async def collect(self, oid: object, by: str = "staff") -> dict[str, Any]:
        """Hand a ready order over."""
        order, events = self.book.collect(oid, by, self.gw.clock.now())
        await self._commit(order, events)
        return self.book.doc(order)

    def get(self, oid: object) -> dict[str, Any]:
        """One order."""
        return self.book.doc(self.book.get(oid))

    def list_orders(self, state: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """Orders, the latest due first, of one state or all; at most `limit` (1..1000)."""
        if state is not None and state not in ("reserved", "short", "ready", "collected", "cancelled", "expired"):
            raise _bad("state must be one of reserved, short, ready, collected, cancelled, expired")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise _bad("limit must be 1..1000")
        chosen = sorted((o for o in self.book.orders.values() if state is None or o.state == state),
                        key=lambda o: (o.due, o.id), reverse=True)  # fmt: skip
        return [self.book.doc(o) for o in chosen[:limit]]

    def picks(self, *, shelf: str | None = None) -> list[dict[str, Any]]:
        """Open pick tasks (the staff's to-do list), the earliest due first; `not_found` for an unknown shelf."""
        places = self.gw.stock.shelves | {loc.id for loc in self.gw.manifest.backroom.locations}
        if shelf is not None and shelf not in places:
            raise CommandError("not_found", f"no shelf or back-room location {str(shelf)[:64]!r} in this store's "
                                            "manifest")
        return [t.doc(self.book.names) for t in self.book.open_tasks(shelf=shelf)]

    # ---- internals ----
    def _free(self, sku: str) -> list[tuple[str, str, int]]:
        """(shelf, lane, units not held) of every cell of `sku`, counted at what is certain, and (location, "",
        units not held) of every back-room location that ATP counts it at (edge/backroom.py): an order takes what
        ATP promises, picked from the back room when the shelves lack it (confirmed by scan, or by the location's
        RFID count dropping)."""
        from edge.atp import cell_certain  # edge.atp imports nothing of this module; late to keep import order

        out = []
        for cell in self.gw.stock.cells(sku=sku):
            sure, _ = cell_certain(cell)
            lane = self.book._lane.get((cell.shelf, sku), "")
            out.append((cell.shelf, lane, sure - self._held.get((cell.shelf, sku), 0)))
        figures = getattr(self.gw.atp, "backroom", None)  # BackroomBook.figures when the manifest has a back room
        for fig in figures(sku) if callable(figures) else ():
            out.append((fig.location, "", fig.counted - self._held.get((fig.location, sku), 0)))
        return out

    def _outputs(self, changes: Iterable[tuple[Order, list[Event]]], now: datetime) -> list[object]:
        """Events and rows of changed orders; the ATP of their SKUs is recomputed in the same batch."""
        out: list[object] = []
        skus: set[str] = set()
        for order, events in changes:
            out += events
            out.append(self.book.row(order))
            skus |= {t.sku for t in order.tasks}
        self._refresh(now, skus)
        return out

    def _refresh(self, now: datetime, skus: Iterable[str] = ()) -> None:
        held = self.book.held(now)
        moved = {sku for key in set(held) | set(self._held) if held.get(key) != self._held.get(key)
                 for sku in [key[1]]}  # fmt: skip
        self._held = held
        if moved or skus:
            self.gw.stock.nudge(moved | set(skus))

    async def _commit(self, order: Order, events: list[Event]) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._committing[order.id] = done
        try:
            now = self.gw.clock.now()
            outputs = self._outputs([(order, events)], now)
            await self.gw.emit_committed([o for o in outputs if isinstance(o, Event)],
                                         [o for o in outputs if isinstance(o, Upsert | Delete)])  # fmt: skip
            done.set_result(None)
        except BaseException as exc:
            done.set_exception(exc)
            done.exception()  # retrieved: a waiting duplicate re-raises it, nobody else must
            raise
        finally:
            if self._committing.get(order.id) is done:
                del self._committing[order.id]

    # ---- Reactor ----
    def react(self, event: Event, now: datetime) -> Sequence[object]:
        """Stock leaving a reserved cell or back-room location, pick scans and collect scans."""
        if isinstance(event, StockChanged):
            if event.delta >= 0 or event.origin not in SENSED_ORIGINS:
                return []
            return self._outputs(self.book.sensed(event), now)
        if isinstance(event, BackroomCounted):
            if event.origin != "rfid" or event.count is None:
                return []  # a receiving scan is a move onto a shelf or into the back room, not a pick
            key = (event.location, event.sku)
            before, self._rfid_seen[key] = self._rfid_seen.get(key), event.count
            if before is None or event.count >= before:
                return []
            return self._outputs(self.book.sensed_at(event.location, event.sku, before - event.count, event.time),
                                 now)
        if event.TYPE == SCAN_PICKED:
            sku, qty, oid = getattr(event, "sku", None), getattr(event, "qty", 1), getattr(event, "order_id", None)
            if not isinstance(sku, str) or not isinstance(qty, int):
                return []
            if oid is not None and oid not in self.book.orders:
                return [self._refused(event, now, "no such order", oid, sku)]
            changes = self.book.scanned(sku, qty, oid, now)
            if not changes:
                why = f"no open pick task of {sku}" + (f" in order {oid}" if oid else "")
                return [self._refused(event, now, why, oid, sku)]
            return self._outputs(changes, now)
        if event.TYPE == SCAN_COLLECTED:
            oid = getattr(event, "order_id", None)
            try:
                order, events = self.book.collect(oid, "scan", now)
            except CommandError as err:
                return [self._refused(event, now, err.message, oid if isinstance(oid, str) else None, None)]
            return self._outputs([(order, events)], now)
        return []

    def tick(self, now: datetime) -> Sequence[object]:
        """Expiry at the due time, scan holds ending, closed orders forgotten."""
        out = self._outputs(self.book.expire(now), now)
        out += [Delete("kv", {"key": KV_PREFIX + oid}) for oid in self.book.forget(now)]
        self._refresh(now)
        return out

    def next_deadline(self) -> datetime | None:
        """When the book must be ticked next (a due time, the end of a scan hold)."""
        return self.book.next_deadline(self.gw.clock.now())

    @staticmethod
    def _refused(event: Event, now: datetime, reason: str, oid: str | None, sku: str | None) -> OrderScanRefused:
        return OrderScanRefused(source=SOURCE, time=now, subject=oid, scanner=event.source, reason=reason,
                                order_id=oid, sku=sku)  # fmt: skip

    # ---- command handlers ----
    async def _cmd_reserve(self, req: Mapping[str, Any]) -> Any:
        return await self.reserve({k: v for k, v in req.items() if k not in ("id", "reply_to", "auth")})

    async def _cmd_cancel(self, req: Mapping[str, Any]) -> Any:
        return await self.cancel(req.get("order_id"), req.get("reason"))

    async def _cmd_collect(self, req: Mapping[str, Any]) -> Any:
        return await self.collect(req.get("order_id"))

    async def _cmd_get(self, req: Mapping[str, Any]) -> Any:
        if req.get("order_id") is None:
            return {"store": self.gw.manifest.store.id, "time": iso(self.gw.clock.now()),
                    "items": self.list_orders(req.get("state"), req.get("limit", 200))}  # fmt: skip
        return self.get(req.get("order_id"))

