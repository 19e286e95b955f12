"""The restock rule, pure: `step(rules, state, input, now) -> (state, actions)`.

Per shelf x SKU cell it watches two conditions, each with its own small state machine
(ok -> pending -> active -> ok):

- low stock: count <= min (min raised to cover `min_days_of_cover` days of observed sales); clears at
  min + clear_margin (hysteresis);
- out of stock: count == 0; clears at 1.

A condition becomes an alert only after it held for `debounce_s` (a shopper holding an item is not a
stock-out), inside opening hours and outside quiet hours (a pending condition is re-evaluated every tick,
so it fires at opening), while its shelf is not muted for restocking, and not within `cooldown_s` of the
previous alert of that cell. Clearing is never suppressed. Settings inherit defaults -> category -> shelf
-> sku -> shelf x sku; `max` (par) is capped at the planogram capacity. See docs/api.md and DOMAIN.md.

The two conditions of a cell are one alert family (`rules.actions`): the actions speak for the cell's one
stock alert. A stock-out raises `out_of_stock` (which supersedes a live low-stock alert, or opens the alert
when both conditions fire together); when it clears while the cell is still low, `low_stock` is raised
again (a downgrade of the same alert); the cell's alert is cleared once. A condition stays active (and
its alert open: `condition_holds`) for as long as it holds, whatever the alert's age.

One cell's failure never stops the others: a cell whose evaluation raises keeps its previous state and is
reported in `RestockState.errors` (the engine counts and logs it); a mute lasts at most `mute_max_s`.

Online orders (edge/orders.py): with `unreserved_stock` (default) both conditions are judged on the units
not reserved for orders (5 on the shelf, 4 reserved: 1 for walk-in shoppers), so staff restock before the
picks empty the shelf. Units picked for an order are not sales: a `Picked` input takes back what the shelf
already saw leave and lets the rest leave within the pick's hold without counting toward the velocity.

Restocking one cell (issue 17 item 3): `Mute(shelf, on, sku=...)` mutes only that shelf x SKU cell until its
count rises above the lowest count seen since the start (`CellMute.baseline`: restocked) or `mute_max_s` (or
the asked duration) passes, whichever first; `RestockState.muted_cells` holds them (the engine announces start and end).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from edge.config import Manifest
from edge.errors import EdgeError
from rules.actions import LOW_STOCK, OUT_OF_STOCK, Action, AlertClear, AlertRaise
from rules.config import RestockRule, RulesBody, parse_window

SALES_ORIGINS = frozenset({"weight", "rfid"})
_FIELDS = (
    "min",
    "max",
    "min_days_of_cover",
    "debounce_s",
    "clear_margin",
    "cooldown_s",
    "escalate_after_s",
    "enabled",
)


class RulesError(EdgeError):
    """The rules do not fit the store; `problems` says what and how to fix each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


# ---- compiled rules -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CellRule:
    """Resolved restock settings of one shelf x SKU cell."""

    shelf: str
    sku: str
    enabled: bool
    min: int
    max: int
    capacity: int
    min_days_of_cover: float | None
    debounce_s: float
    clear_margin: int
    cooldown_s: float
    escalate_after_s: float
    case_pack: int
    backroom: int | None


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Every cell's rule plus the store-wide settings (hours, grace, retention)."""

    cells: Mapping[tuple[str, str], CellRule]
    tz: ZoneInfo
    opening_min: int
    closing_min: int
    quiet: tuple[tuple[int, int], ...]
    device_fault_grace_s: float
    mute_max_s: float
    expire_after_s: float
    velocity_window_s: float
    lane_fault_hold_s: float = 60.0
    escalate_after_s: float | None = None  # the defaults' (for alerts that belong to no rule cell)
    unreserved: bool = True  # low/out of stock judged on the units not reserved for online orders

    def allows_alerts(self, now: datetime) -> bool:
        """True inside opening hours and outside every quiet window (store-local time)."""
        local = now.astimezone(self.tz)
        minute = local.hour * 60 + local.minute
        if not _in_window(minute, self.opening_min, self.closing_min):
            return False
        return not any(_in_window(minute, a, b) for a, b in self.quiet)


def _in_window(minute: int, start: int, end: int) -> bool:
    if start == end:
        return True
    if start < end:
        return start <= minute < end
    return minute >= start or minute < end  # wraps past midnight


def _hhmm(s: str) -> int:
    h, m = s.split(":")
    return int(h) * 60 + int(m)


def _merge(levels: list[RestockRule | None]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for level in levels:
        if level is None:
            continue
        for name in _FIELDS:
            value = getattr(level, name)
            if value is not None:
                out[name] = value
    return out


MAX_SECONDS = 366 * 86400.0
"""No duration of the rules may exceed a year (datetime arithmetic with larger ones overflows)."""
_DURATIONS = ("debounce_s", "cooldown_s", "escalate_after_s", "min_days_of_cover")
_STORE_DURATIONS = ("device_fault_grace_s", "mute_max_s", "expire_after_s", "velocity_window_s", "lane_fault_hold_s")


def _bounds(body: RulesBody) -> list[str]:
    """Every duration finite and at most `MAX_SECONDS` (defence in depth behind the schema's own bounds)."""
    levels: list[tuple[str, RestockRule]] = [("rules.defaults", body.defaults)]
    levels += [(f"rules.categories.{k}", v) for k, v in body.categories.items()]
    levels += [(f"rules.shelves.{k}", v) for k, v in body.shelves.items()]
    levels += [(f"rules.skus.{k}", v) for k, v in body.skus.items()]
    levels += [(f"rules.cells[{i}]", c) for i, c in enumerate(body.cells)]
    values = [(f"{where}.{name}", getattr(level, name)) for where, level in levels for name in _DURATIONS]
    values += [(f"rules.{name}", getattr(body, name, None)) for name in _STORE_DURATIONS]
    problems = []
    for where, v in values:
        limit, unit = (MAX_SECONDS / 86400, "days") if where.endswith("_days_of_cover") else (MAX_SECONDS, "s")
        if v is not None and not (math.isfinite(v) and v <= limit):
            problems.append(f"{where}: {v!r} is not a finite number of at most {limit:.0f} {unit}; use a smaller value")
    return problems


def compile_rules(manifest: Manifest, body: RulesBody) -> RuleSet:
    """Resolve inheritance for every planogram cell and check the rules against the store."""
    problems: list[str] = _bounds(body)
    if problems:
        raise RulesError(problems)
    try:
        tz = ZoneInfo(manifest.store.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(f"store.timezone {manifest.store.timezone!r} is not a known IANA zone: use e.g. Europe/Paris")
        tz = ZoneInfo("UTC")
    categories = {c.category for c in manifest.catalog if c.category}
    skus = {c.sku for c in manifest.catalog}
    problems += [
        f"rules.categories.{c}: no catalog item has category {c!r}; use one of {sorted(categories)}"
        for c in body.categories
        if c not in categories
    ]
    problems += [
        f"rules.skus.{s}: sku {s!r} is not in the catalog; add it or remove the rule"
        for s in body.skus
        if s not in skus
    ]
    problems += [f"rules.backroom.{s}: sku {s!r} is not in the catalog" for s in body.backroom if s not in skus]
    shelf_ids = {s.id for s in manifest.shelves}
    problems += [f"rules.shelves.{s}: no shelf {s!r} in the planogram" for s in body.shelves if s not in shelf_ids]

    capacity: dict[tuple[str, str], int] = {}
    for shelf in manifest.shelves:
        for lane in shelf.lanes:
            capacity[(shelf.id, lane.sku)] = capacity.get((shelf.id, lane.sku), 0) + lane.capacity
    by_cell: dict[tuple[str, str], RestockRule] = {}
    for i, c in enumerate(body.cells):
        if (c.shelf, c.sku) not in capacity:
            problems.append(f"rules.cells[{i}]: shelf {c.shelf!r} holds no lane of sku {c.sku!r} in the planogram")
        elif (c.shelf, c.sku) in by_cell:
            problems.append(f"rules.cells[{i}]: a second rule for {c.shelf}/{c.sku}; merge them")
        else:
            by_cell[(c.shelf, c.sku)] = c

    cells: dict[tuple[str, str], CellRule] = {}
    for (shelf_id, sku), cap in sorted(capacity.items()):
        item = manifest.sku(sku)
        category = item.category if item else ""
        explicit = _merge([body.shelves.get(shelf_id), body.skus.get(sku), by_cell.get((shelf_id, sku))])
        merged = _merge(
            [
                body.defaults,
                body.categories.get(category),
                body.shelves.get(shelf_id),
                body.skus.get(sku),
                by_cell.get((shelf_id, sku)),
            ]
        )
        if "max" in explicit and int(explicit["max"]) > cap:
            problems.append(
                f"rules for {shelf_id}/{sku}: max {explicit['max']} is above the planogram capacity {cap}; "
                f"lower it to {cap} or less"
            )
        par = min(int(merged.get("max", cap)), cap)
        low = int(merged["min"])
        if low >= par:
            problems.append(
                f"rules for {shelf_id}/{sku}: min {low} is not below max/capacity {par}; lower min below {par}"
            )
        doc = merged.get("min_days_of_cover")
        cells[(shelf_id, sku)] = CellRule(
            shelf=shelf_id,
            sku=sku,
            enabled=bool(merged["enabled"]),
            min=low,
            max=par,
            capacity=cap,
            min_days_of_cover=float(doc) if doc is not None else None,
            debounce_s=float(merged["debounce_s"]),
            clear_margin=int(merged["clear_margin"]),
            cooldown_s=float(merged["cooldown_s"]),
            escalate_after_s=float(merged["escalate_after_s"]),
            case_pack=item.case_pack if item else 1,
            backroom=body.backroom.get(sku),
        )
    if problems:
        raise RulesError(problems)
    return RuleSet(
        cells=cells,
        tz=tz,
        opening_min=_hhmm(manifest.store.opening_time),
        closing_min=_hhmm(manifest.store.closing_time),
        quiet=tuple(parse_window(w) for w in body.quiet_hours),
        device_fault_grace_s=body.device_fault_grace_s,
        mute_max_s=body.mute_max_s,
        expire_after_s=body.expire_after_s,
        velocity_window_s=body.velocity_window_s,
        lane_fault_hold_s=body.lane_fault_hold_s,
        escalate_after_s=body.defaults.escalate_after_s,
        unreserved=body.unreserved_stock,
    )


# ---- pure arithmetic ----------------------------------------------------------------------------


def restock_quantity(rule: CellRule, count: int, counted: int | None = None) -> int:
    """min(par - on shelf, backroom if known), rounded down to whole cases when at least one case fits. The back
    room is `counted` (the units the back room is counted to hold, edge/backroom.py) where it is counted, else the
    static `rules.backroom` figure."""
    qty = max(0, rule.max - count)
    backroom = counted if counted is not None else rule.backroom
    if backroom is not None:
        qty = min(qty, backroom)
    if qty >= rule.case_pack:
        qty -= qty % rule.case_pack
    return qty


@dataclass(frozen=True, slots=True)
class Sales:
    """Rolling sales of one cell: units per hour bucket within the look-back window."""

    buckets: tuple[tuple[int, int], ...] = ()  # (hour number since the epoch, units sold)
    first: datetime | None = None  # first observation, to avoid dividing by the whole window on day one


def record_sale(sales: Sales, units: int, now: datetime, window_s: float) -> Sales:
    """Add `units` sold at `now` and drop buckets older than the window."""
    hour = int(now.timestamp() // 3600)
    oldest = int((now.timestamp() - window_s) // 3600)
    kept = [(h, n) for h, n in sales.buckets if h > oldest]
    if kept and kept[-1][0] == hour:
        kept[-1] = (hour, kept[-1][1] + units)
    else:
        kept.append((hour, units))
    return Sales(tuple(kept), sales.first or now)


def unrecord_sale(sales: Sales, units: int) -> Sales:
    """Take back `units` recorded as sold (they were picked for an online order), newest hours first."""
    kept = list(sales.buckets)
    for i in range(len(kept) - 1, -1, -1):
        if units <= 0:
            break
        take = min(units, kept[i][1])
        kept[i] = (kept[i][0], kept[i][1] - take)
        units -= take
    return Sales(tuple((h, n) for h, n in kept if n > 0), sales.first)


def velocity_per_day(sales: Sales, now: datetime, window_s: float) -> float:
    """Average units sold per day over the observed part of the window (at least one hour of it)."""
    if sales.first is None:
        return 0.0
    oldest = int((now.timestamp() - window_s) // 3600)
    units = sum(n for h, n in sales.buckets if h > oldest)
    span = min(max((now - sales.first).total_seconds(), 3600.0), window_s)
    return units * 86400.0 / span


def days_of_cover(count: int, per_day: float) -> float | None:
    """Stock / daily sales, or None while nothing has sold."""
    return round(count / per_day, 2) if per_day > 0 else None


def effective_min(rule: CellRule, per_day: float) -> int:
    """min, raised so that min_days_of_cover days of sales stay on the shelf (kept below par)."""
    low = rule.min
    if rule.min_days_of_cover is not None and per_day > 0:
        low = max(low, min(math.ceil(per_day * rule.min_days_of_cover), rule.max - 1))
    return low


# ---- state --------------------------------------------------------------------------------------

Phase = Literal["ok", "pending", "active"]


@dataclass(frozen=True, slots=True)
class Watch:
    """One condition of one cell: ok, pending (held since `since`, debouncing) or active (alert open)."""

    phase: Phase = "ok"
    since: datetime | None = None
    last_raised: datetime | None = None


@dataclass(frozen=True, slots=True)
class CellState:
    """What the rule remembers about one cell."""

    count: int | None = None
    low: Watch = Watch()
    out: Watch = Watch()
    sales: Sales = Sales()
    reserved: int = 0  # units of the cell reserved for online orders (edge/orders.py)
    backroom: int | None = None  # units of the SKU the back room is counted to hold (None: not counted)
    credit: int = 0  # units picked for orders that the shelf may still see leave (not sales) ...
    credit_until: datetime | None = None  # ... until then


@dataclass(frozen=True, slots=True)
class CellMute:
    """One cell being restocked: muted until `until` or until its count rises above `baseline`, the lowest count
    since the start (None: the cell's count was unknown; its first count becomes the baseline)."""

    until: datetime
    baseline: int | None


@dataclass(frozen=True, slots=True)
class RestockState:
    """The rule's whole state: cells, restock mutes (shelf -> muted until; cell -> CellMute), and the cells whose
    evaluation failed in the last step (cell -> error, for the engine to count and log)."""

    cells: Mapping[tuple[str, str], CellState] = field(default_factory=dict)
    muted: Mapping[str, datetime] = field(default_factory=dict)
    errors: Mapping[tuple[str, str], str] = field(default_factory=dict)
    muted_cells: Mapping[tuple[str, str], CellMute] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StockSeen:
    """Input: the count of a cell changed (from a StockChanged event)."""

    shelf: str
    sku: str
    count: int
    delta: int = 0
    origin: str = "count"
    at: datetime | None = None  # when the count became true (the event's time); debounce counts from it
    reserved: int | None = None  # units of the cell reserved for orders now (None: unchanged)
    backroom: int | None = None  # units of the SKU the back room is counted to hold now (None: not counted,
    #                              the static `rules.backroom` map caps the restock quantity)


@dataclass(frozen=True, slots=True)
class Reserved:
    """Input: the units of a cell reserved for online orders changed."""

    shelf: str
    sku: str
    units: int


@dataclass(frozen=True, slots=True)
class Picked:
    """Input: units of a cell were picked for an online order: `sensed` of them the shelf already saw leave
    (recorded as sales: taken back), `more` may still be seen leaving until `until` (not sales either)."""

    shelf: str
    sku: str
    sensed: int
    more: int
    until: datetime


@dataclass(frozen=True, slots=True)
class Mute:
    """Input: staff started (`on`) or finished restocking `shelf` (or only its cell of `sku`)."""

    shelf: str
    on: bool
    duration_s: float | None = None  # None: the rules' mute_max_s
    sku: str | None = None  # restocking one cell: ends by itself when its count rises


@dataclass(frozen=True, slots=True)
class Tick:
    """Input: time passed."""


@dataclass(frozen=True, slots=True)
class Restore:
    """Input: an alert of `kind` for this cell was open before a restart."""

    shelf: str
    sku: str
    kind: str
    raised: datetime


Input = StockSeen | Mute | Tick | Restore | Reserved | Picked


def step(rules: RuleSet, state: RestockState, inp: Input, now: datetime) -> tuple[RestockState, list[Action]]:
    """Apply one input; return the new state and the alerts to raise or clear."""
    cells = dict(state.cells)
    muted = {s: t for s, t in state.muted.items() if t > now}
    muted_cells = {k: m for k, m in state.muted_cells.items() if m.until > now}
    actions: list[Action] = []
    touched: list[tuple[str, str]] = []
    since_hint: datetime | None = None
    if isinstance(inp, StockSeen):
        since_hint = inp.at if inp.at is not None and inp.at < now else None
        key = (inp.shelf, inp.sku)
        rule = rules.cells.get(key)
        if rule is None:
            return state, []
        cell = cells.get(key, CellState())
        sales, credit = cell.sales, cell.credit if cell.credit_until is not None and cell.credit_until > now else 0
        if inp.delta < 0 and inp.origin in SALES_ORIGINS:
            sold = -inp.delta - min(-inp.delta, credit)  # units picked for an order are no sale
            credit -= -inp.delta - sold
            if sold:
                sales = record_sale(sales, sold, now, rules.velocity_window_s)
        reserved = cell.reserved if inp.reserved is None else max(0, inp.reserved)
        cells[key] = replace(cell, count=inp.count, sales=sales, reserved=reserved, credit=credit,
                             backroom=inp.backroom)
        touched = [key]
        cm = muted_cells.get(key)
        if cm is not None and cm.baseline is not None and inp.count > cm.baseline:
            del muted_cells[key]  # the cell's count rose: restocked
        elif cm is not None and (cm.baseline is None or inp.count < cm.baseline):
            muted_cells[key] = replace(cm, baseline=inp.count)  # lower while staff work: rises count from here
    elif isinstance(inp, Reserved | Picked):
        key = (inp.shelf, inp.sku)
        if key not in rules.cells:
            return state, []
        cell = cells.get(key, CellState())
        if isinstance(inp, Reserved):
            cells[key] = replace(cell, reserved=max(0, inp.units))
        else:
            cells[key] = replace(cell, sales=unrecord_sale(cell.sales, inp.sensed), credit=max(0, inp.more),
                                 credit_until=inp.until)  # fmt: skip
        touched = [key]
    elif isinstance(inp, Mute) and inp.sku is not None:
        key = (inp.shelf, inp.sku)
        if inp.on:
            until = now + timedelta(seconds=mute_seconds(rules, inp.duration_s))
            muted_cells[key] = CellMute(until, cells[key].count if key in cells else None)
        else:
            muted_cells.pop(key, None)
        touched = [key] if key in cells else []
    elif isinstance(inp, Mute):
        if inp.on:
            muted[inp.shelf] = now + timedelta(seconds=mute_seconds(rules, inp.duration_s))
        else:
            muted.pop(inp.shelf, None)
        touched = [k for k in cells if k[0] == inp.shelf]
    elif isinstance(inp, Restore):
        key = (inp.shelf, inp.sku)
        cell = cells.get(key, CellState())
        w = Watch("active", inp.raised, inp.raised)
        # a stock-out is also low: both conditions of the cell's one alert are active
        cells[key] = replace(cell, low=w) if inp.kind == LOW_STOCK else replace(cell, out=w, low=w)
        return RestockState(cells, muted, muted_cells=muted_cells), []
    else:
        touched = list(cells)
    errors: dict[tuple[str, str], str] = {}
    for key in touched:
        rule = rules.cells.get(key)
        cell = cells[key]
        if rule is None or cell.count is None:
            continue
        try:
            new, acts = _evaluate(rules, rule, cell, key[0] in muted or key in muted_cells, now,
                                  since_hint=since_hint)
        except Exception as exc:  # one broken cell must not stop the others' alerts
            errors[key] = f"{type(exc).__name__}: {exc}"
            continue
        cells[key] = new
        actions += acts
    return RestockState(cells, muted, errors, muted_cells), actions


def mute_seconds(rules: RuleSet, duration_s: float | None) -> float:
    """How long a restock mute lasts: the asked duration, at most (and by default) `mute_max_s`."""
    if duration_s is None or not math.isfinite(duration_s) or duration_s <= 0:
        return rules.mute_max_s
    return min(duration_s, rules.mute_max_s)


def condition_holds(state: RestockState, shelf: str, sku: str) -> bool:
    """True while a stock condition of the cell is active (its alert must stay open, never expire)."""
    cell = state.cells.get((shelf, sku))
    return cell is not None and "active" in (cell.low.phase, cell.out.phase)


def _evaluate(
    rules: RuleSet, rule: CellRule, cell: CellState, muted: bool, now: datetime, *, since_hint: datetime | None = None
) -> tuple[CellState, list[Action]]:
    assert cell.count is not None
    count = max(0, cell.count - cell.reserved) if rules.unreserved else cell.count  # what walk-ins can buy
    per_day = velocity_per_day(cell.sales, now, rules.velocity_window_s)
    low_at = effective_min(rule, per_day)
    may_raise = rule.enabled and not muted and rules.allows_alerts(now)
    actions: list[Action] = []
    out, ev_out = _watch(cell.out, count, 0, 1, rule, may_raise, now, since_hint)
    low, ev_low = _watch(cell.low, count, low_at, low_at + rule.clear_margin, rule, may_raise, now, since_hint)
    # One alert per cell: turn the two conditions' transitions into actions on that alert.
    raise_kind: str | None = None
    if ev_out == "raise":
        raise_kind = OUT_OF_STOCK  # opens the alert, or supersedes a live low-stock one
    elif ev_low == "raise" and out.phase != "active":
        raise_kind = LOW_STOCK
    elif ev_out == "clear" and low.phase == "active":
        raise_kind = LOW_STOCK  # partial refill: the alert is downgraded, not closed
    if raise_kind is not None:
        threshold = 0 if raise_kind == OUT_OF_STOCK else low_at
        qty = restock_quantity(rule, count, cell.backroom)
        actions.append(
            AlertRaise(
                kind=raise_kind,
                shelf=rule.shelf,
                sku=rule.sku,
                count=count,
                threshold=threshold,
                restock_qty=qty,
                days_of_cover=days_of_cover(count, per_day),
                escalate_after_s=rule.escalate_after_s,
                message=(
                    f"{rule.sku} on {rule.shelf}: "
                    + ("out of stock" if raise_kind == OUT_OF_STOCK else f"{count} left (min {threshold})")
                    + (f" besides {cell.reserved} reserved for orders" if rules.unreserved and cell.reserved else "")
                    + f"; restock {qty}"
                ),
            )
        )
    elif "clear" in (ev_out, ev_low) and "active" not in (out.phase, low.phase):
        actions.append(AlertClear(kind=OUT_OF_STOCK if ev_out == "clear" else LOW_STOCK, shelf=rule.shelf,
                                  sku=rule.sku, count=count))
    return replace(cell, low=low, out=out), actions


def _watch(  # noqa: PLR0917 - one condition's inputs, all positional on purpose
    w: Watch, count: int, threshold: int, clear_at: int, rule: CellRule, may_raise: bool, now: datetime,
    since_hint: datetime | None = None,
) -> tuple[Watch, str | None]:
    if w.phase == "active":
        if count >= clear_at:
            return Watch("ok", None, w.last_raised), "clear"
        return w, None
    if count > threshold:
        return Watch("ok", None, w.last_raised), None
    since = w.since if w.phase == "pending" and w.since is not None else (since_hint or now)
    held = (now - since).total_seconds() >= rule.debounce_s
    cooled = w.last_raised is None or (now - w.last_raised).total_seconds() >= rule.cooldown_s
    if held and cooled and may_raise:
        return Watch("active", since, now), "raise"
    return Watch("pending", since, w.last_raised), None


def debounce_deadlines(
    rules: RuleSet, state: RestockState, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], datetime]:
    """When each of these cells' pending (debouncing) condition will have held long enough to alert."""
    out: dict[tuple[str, str], datetime] = {}
    for key in keys:
        cell, rule = state.cells.get(key), rules.cells.get(key)
        if cell is None or rule is None:
            continue
        times = [w.since for w in (cell.low, cell.out) if w.phase == "pending" and w.since is not None]
        if times:
            try:
                out[key] = min(times) + timedelta(seconds=rule.debounce_s)
            except (OverflowError, ValueError):
                continue  # a debounce beyond the calendar: no deadline (periodic ticks still evaluate the cell)
    return out
