"""The rules engine: a Reactor that wires the pure rules (restock, device faults, offers) to the gateway.

It turns emitted events into rule inputs (StockChanged -> restock, DeviceStatusChanged -> faults,
`retail.restock.started/finished.v1` -> mute, weight-shelf lane faults / unknown objects -> rules.lanes,
`retail.beacon.*` battery low / silent / recovered -> rules.beacons)
and rule actions into alert transitions: events plus the `alerts` rows and webhook deliveries committed
with them. No I/O and no clock reads here: the gateway calls `react`/`tick` with `now`, and
`rules.service` does the file watching, commands and webhooks. Reloads are atomic: new rules are parsed,
validated and compiled first; on any problem the old rules stay and a `retail.rules.rejected.v1` event
says why.

Failures are contained: a restock cell whose evaluation raises is skipped (the others still alert), and
each rule of a tick (restock, device faults, lanes, the alert book, offers) runs on its own; every failure
is counted (`edge_rules_errors_total{rule}`) and logged once per cell or rule per minute.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, ClassVar

import yaml
from pydantic import ValidationError

from edge.config import Manifest
from edge.errors import CommandError
from edge.events import DeviceStatusChanged, Event, EventClass, StockChanged
from edge.ids import uuid7
from edge.orders import OrderEvent, OrderPicked, OrderReserved
from edge.ratelimit import LogLimiter
from edge.runtime import Delete, StateWrite, Upsert
from edge.state import StockState
from rules.actions import (
    BEACON_BATTERY_LOW,
    BEACON_SILENT,
    DEVICE_FAULT,
    DEVICE_OFFLINE,
    LANE_FAULT,
    LOW_STOCK,
    OUT_OF_STOCK,
    UNKNOWN_OBJECT,
    Action,
)
from rules.alerts import (
    ALERT_EVENT_TYPES,
    Alert,
    AlertBook,
    Transition,
    validate_reason,
    validate_snooze,
    validate_staff_name,
)
from rules.beacons import BEACON_FIELDS, BeaconState, beacon_condition_holds, beacon_seen, step_beacons
from rules.beacons import EVENT_TYPES as BEACON_EVENT_TYPES
from rules.config import OffersConfig, RulesBody, RulesConfig, WebhookConfig
from rules.faults import DeviceSeen, DeviceWatch, FaultState, step_faults
from rules.lanes import EVENT_TYPES as LANE_EVENT_TYPES
from rules.lanes import (
    LANE_FIELDS,
    LaneSeen,
    LaneState,
    lane_condition_holds,
    lane_seen,
    restore_lane_alert,
    step_lanes,
)
from rules.notify import Notifier
from rules.offers import (
    OfferBook,
    OfferState,
    OfferTriggered,
    SightingError,
    check_time,
    compile_offers,
    decide,
    parse_sighting,
    purge,
)
from rules.restock import (
    CellMute,
    Mute,
    Picked,
    Reserved,
    RestockState,
    Restore,
    RulesError,
    RuleSet,
    StockSeen,
    Tick,
    compile_rules,
    condition_holds,
    debounce_deadlines,
    step,
)
from rules.webhooks import delivery_rows

log = logging.getLogger(__name__)

RESTOCK_STARTED = "retail.restock.started.v1"
RESTOCK_FINISHED = "retail.restock.finished.v1"
SOURCE = "rules"


@dataclass(frozen=True, slots=True, kw_only=True)
class RulesReloaded(Event):
    """New restock rules are in force (`digest` identifies their text)."""

    TYPE: ClassVar[str] = "retail.rules.reloaded.v1"
    CLASS: ClassVar[EventClass] = EventClass.CONTROL
    TOPIC: ClassVar[str] = "events/rules"

    origin: str  # "start" | "file" | "command"
    digest: str
    cells: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RulesRejected(Event):
    """A rules change was refused; the previous rules stay in force. `problems` says what to fix."""

    TYPE: ClassVar[str] = "retail.rules.rejected.v1"
    CLASS: ClassVar[EventClass] = EventClass.CONTROL
    TOPIC: ClassVar[str] = "events/rules"

    origin: str
    problems: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class RestockingStarted(Event):
    """Staff are restocking one shelf x SKU cell: its restock alerts are muted until its count rises above
    `baseline` (its count now; null while unknown) or until `until`, whichever first."""

    TYPE: ClassVar[str] = "retail.restocking.started.v1"
    CLASS: ClassVar[EventClass] = EventClass.CONTROL
    TOPIC: ClassVar[str] = "events/rules"

    shelf: str
    sku: str
    until: datetime
    baseline: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class RestockingEnded(Event):
    """Restocking of a cell ended: `reason` restocked (its count rose), elapsed (its time passed) or finished
    (staff said so); `count` is the cell's count then."""

    TYPE: ClassVar[str] = "retail.restocking.ended.v1"
    CLASS: ClassVar[EventClass] = EventClass.CONTROL
    TOPIC: ClassVar[str] = "events/rules"

    shelf: str
    sku: str
    reason: str
    count: int | None


SNOOZE_POSTS = frozenset({"snoozed", "resolved", "expired"})
"""The transitions of a snoozed alert still posted to staff chats (that wants them); the others wait."""
OWN_TYPES = frozenset(t.TYPE for t in (*ALERT_EVENT_TYPES, RulesReloaded, RulesRejected, OfferTriggered,
                                        RestockingStarted, RestockingEnded))


def split(outputs: Iterable[object]) -> tuple[list[Event], list[StateWrite]]:
    """Separate events from state writes (for `emit` / `emit_committed`)."""
    items = list(outputs)
    return [o for o in items if isinstance(o, Event)], [o for o in items if isinstance(o, Upsert | Delete)]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _validation_problems(err: ValidationError, where: str) -> list[str]:
    out = []
    for e in err.errors(include_url=False):
        loc = ".".join(str(p) for p in e["loc"])
        out.append(f"{where}{'.' + loc if loc else ''}: {str(e['msg']).removeprefix('Value error, ')}")
    return out


class RulesEngine:
    """Reactor: events in, alert transitions out; also serves acks, mutes, sightings and reloads."""

    def __init__(
        self,
        manifest: Manifest,
        *,
        rules: RulesConfig | None = None,
        offers: OffersConfig | None = None,
        webhooks: Sequence[WebhookConfig] = (),
        new_id: Callable[[], str] = uuid7,
    ) -> None:
        self.manifest = manifest
        self.config = rules or RulesConfig()
        self.webhooks = list(webhooks)
        self.notifier = Notifier(manifest)  # staff chat channels (rules/notify.py)
        self.new_id = new_id
        self.book = AlertBook(new_id)
        self.restock = RestockState()
        self.faults: FaultState = {}
        self.lanes = LaneState()
        self.beacons: BeaconState = frozenset()
        self._sku_of: dict[tuple[str, str], str] = {
            (shelf.id, lane.id): lane.sku for shelf in manifest.shelves for lane in shelf.lanes
        }
        self._limiter = LogLimiter(60.0)
        self.offer_state = OfferState()
        self.offers: OfferBook = compile_offers(manifest, offers or OffersConfig())
        self.ruleset: RuleSet = compile_rules(manifest, RulesBody())
        self.digest = ""
        self.ready = False
        self._queued: list[tuple[Event, datetime]] = []
        self._deadlines: dict[tuple[str, str], datetime] = {}  # cell -> when its debounce expires
        self.counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self.reserved: Callable[[str, str], int] = lambda _shelf, _sku: 0  # units of a cell held for orders
        self.backroom: Callable[[str], int | None] = lambda _sku: None  # units counted in the back room (None: not)

    def retarget(self, manifest: Manifest, offers: OffersConfig) -> None:
        """Take a new planogram, catalog and offers (a manifest rollout); `load_body` then compiles the rules
        against it. Live alerts, restock state and mutes stay."""
        self.manifest = manifest
        self._sku_of = {(shelf.id, lane.id): lane.sku for shelf in manifest.shelves for lane in shelf.lanes}
        self.offers = compile_offers(manifest, offers)

    # ---- counters ----
    def count(self, name: str, value: float = 1.0, **labels: str) -> None:
        """Add to one of the engine's counters (exported by `metrics_text`)."""
        key = (name, tuple(sorted(labels.items())))
        self.counters[key] = self.counters.get(key, 0.0) + value

    def metrics_text(self) -> str:
        """Prometheus text of the engine's counters and the live alerts by state."""
        lines = ["# TYPE edge_rules_alerts gauge"]
        by_state: dict[str, int] = {"open": 0, "acknowledged": 0}
        for a in self.book.live.values():
            by_state[a.state] = by_state.get(a.state, 0) + 1
        lines += [f'edge_rules_alerts{{state="{s}"}} {n}' for s, n in sorted(by_state.items())]
        typed: set[str] = set()
        for (name, labels), v in sorted(self.counters.items()):
            if name not in typed:
                typed.add(name)
                lines.append(f"# TYPE {name} counter")
            lab = ",".join(f'{k}="{val}"' for k, val in labels)
            lines.append(f"{name}{{{lab}}} {v:g}" if lab else f"{name} {v:g}")
        return "\n".join(lines) + "\n"

    # ---- rules loading ----
    def load_text(self, text: str, origin: str, now: datetime) -> tuple[bool, list[str], list[object]]:
        """Parse, validate and compile rules from YAML text; swap them in only when all is well."""
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            return self.reject(origin, [f"rules file is not valid YAML: {exc}"], now)
        if not isinstance(raw, Mapping):
            return self.reject(origin, ["the rules file must be a YAML mapping (defaults:, skus:, cells: ...)"], now)
        return self.load_body(dict(raw), origin, now, digest=_digest(text))

    def load_body(
        self, raw: Mapping[str, Any] | RulesBody, origin: str, now: datetime, digest: str | None = None
    ) -> tuple[bool, list[str], list[object]]:
        """Validate and compile a rules body (mapping or model); swap atomically or keep the old rules."""
        try:
            body = raw if isinstance(raw, RulesBody) else RulesBody.model_validate(raw)
        except ValidationError as err:
            return self.reject(origin, _validation_problems(err, "rules"), now)
        try:
            ruleset = compile_rules(self.manifest, body)
        except RulesError as err:
            return self.reject(origin, err.problems, now)
        self.ruleset = ruleset
        self.digest = digest or _digest(body.model_dump_json())
        self.count("edge_rules_reloads_total", result="ok")
        ev = RulesReloaded(source=SOURCE, time=now, origin=origin, digest=self.digest, cells=len(ruleset.cells))
        return True, [], [ev]

    def reject(self, origin: str, problems: list[str], now: datetime) -> tuple[bool, list[str], list[object]]:
        """Refuse a rules change: count it and announce why; the rules in force stay."""
        self.count("edge_rules_reloads_total", result="rejected")
        return False, problems, [RulesRejected(source=SOURCE, time=now, origin=origin, problems=tuple(problems))]

    # ---- restart ----
    def restore(self, alert_rows: Iterable[Mapping[str, Any]], stock: StockState, now: datetime) -> list[object]:
        """Load live alerts and the current stock after a (re)start, then handle events that queued meanwhile."""
        for a in self.book.load(alert_rows):
            if a.kind in (LOW_STOCK, OUT_OF_STOCK) and a.shelf and a.sku:
                self.restock, _ = step(self.ruleset, self.restock, Restore(a.shelf, a.sku, a.kind, a.opened_at), now)
            elif a.kind in (DEVICE_OFFLINE, DEVICE_FAULT) and a.device:
                faults = dict(self.faults)
                state = "fault" if a.kind == DEVICE_FAULT else "offline"
                faults[a.device] = DeviceWatch(state, a.opened_at, None, a.kind)
                self.faults = faults
            elif a.kind in (LANE_FAULT, UNKNOWN_OBJECT) and a.shelf and a.sku:
                self.lanes = restore_lane_alert(self.lanes, a.kind, a.shelf, a.sku)
        out: list[object] = self._transitions(self.book.merge_duplicates(now))
        for cell in stock.cells():
            if cell.version > 0:
                out += self._restock(StockSeen(cell.shelf, cell.sku, cell.count, 0, cell.origin,
                                               reserved=self.reserved(cell.shelf, cell.sku),
                                               backroom=self.backroom(cell.sku)), now)
        self.ready = True
        queued, self._queued = self._queued, []
        for ev, t in queued:
            out += self.react(ev, t)
        return out

    # ---- Reactor ----
    def react(self, event: Event, now: datetime) -> Sequence[object]:
        """Handle one emitted event."""
        if event.TYPE in OWN_TYPES:
            return []
        if not self.ready:
            if len(self._queued) < 10_000:
                self._queued.append((event, now))
            return []
        if isinstance(event, StockChanged):
            seen = StockSeen(event.shelf, event.sku, event.count, event.delta, event.origin, at=event.time,
                             reserved=self.reserved(event.shelf, event.sku),
                             backroom=self.backroom(event.sku))  # fmt: skip
            return self._restock(seen, now)
        if isinstance(event, OrderEvent):
            return self._orders(event, now)
        if isinstance(event, DeviceStatusChanged):
            return self._faults(DeviceSeen(event.device, event.state, event.error), now)
        if event.TYPE in LANE_EVENT_TYPES:
            fields = {k: getattr(event, k, None) for k in LANE_FIELDS}
            fields["source"] = event.source
            out: list[object] = []
            for change in lane_seen(event.TYPE, fields, self._sku_of):
                out += self._lanes(change if change.at is not None else replace(change, at=event.time), now)
            return out
        if event.TYPE in BEACON_EVENT_TYPES:
            beacon = beacon_seen(event.TYPE, {k: getattr(event, k, None) for k in BEACON_FIELDS})
            if beacon is None:
                return []
            self.count("edge_rules_evaluations_total", rule="beacons")
            self.beacons, actions = step_beacons(self.beacons, beacon)
            return self._alerts(actions, now)
        if event.TYPE in (RESTOCK_STARTED, RESTOCK_FINISHED):
            shelf = getattr(event, "shelf", None)
            if isinstance(shelf, str) and shelf:
                return self.mute(shelf, on=event.TYPE == RESTOCK_STARTED, now=now)
        return []

    def tick(self, now: datetime) -> Sequence[object]:
        """Debounce expiry, opening hours, mute expiry, lane holds, escalation, expiry, offer retention.

        Each part runs on its own: one that fails is counted and logged, the others still run."""
        if not self.ready:
            return []
        out: list[object] = []
        out += self._guard("restock", lambda: self._restock(Tick(), now))
        out += self._guard("faults", lambda: self._faults(None, now))
        out += self._guard("lanes", lambda: self._lanes(None, now))
        out += self._guard(
            "alerts", lambda: self._transitions(self.book.tick(now, self.ruleset.expire_after_s, self._holds))
        )
        self._guard("offers", lambda: self._purge_offers(now))
        return out

    def _purge_offers(self, now: datetime) -> list[object]:
        self.offer_state = purge(self.offer_state, now, self.offers.config.retention_s)
        return []

    def _guard(self, rule: str, run: Callable[[], list[object]]) -> list[object]:
        """Run one rule's part of a tick; a failure is counted and logged (once a minute) instead of raised."""
        try:
            return run()
        except Exception:
            self._failed(rule, rule, "failed")
            return []

    def _failed(self, rule: str, key: str, what: str, *, detail: str = "") -> None:
        self.count("edge_rules_errors_total", rule=rule)
        self._limiter.log(log, logging.ERROR, key, "rules: %s %s%s", key, what, f": {detail}" if detail else "",
                          exc_info=not detail)

    def _holds(self, a: Alert) -> bool:
        """Does the condition of a live alert still hold (then it stays open past expire_after_s)?"""
        if a.kind in (LOW_STOCK, OUT_OF_STOCK) and a.shelf and a.sku:
            return condition_holds(self.restock, a.shelf, a.sku)
        if a.kind in (DEVICE_OFFLINE, DEVICE_FAULT) and a.device:
            w = self.faults.get(a.device)
            return w is not None and w.active is not None
        if a.kind in (LANE_FAULT, UNKNOWN_OBJECT) and a.shelf and a.sku:
            return lane_condition_holds(self.lanes, a.kind, a.shelf, a.sku)
        if a.kind in (BEACON_BATTERY_LOW, BEACON_SILENT) and a.device:
            return beacon_condition_holds(self.beacons, a.kind, a.device)
        return False

    # ---- commands (called by rules.service and the API) ----
    def ack(self, alert_id: object, by: object, now: datetime) -> list[object]:
        """Acknowledge a live alert by a staff member; CommandError `not_found`/`bad_request` otherwise."""
        if not isinstance(alert_id, str) or not alert_id or len(alert_id) > 64:
            raise CommandError("bad_request", "alert_id must be the id of an alert")
        name = validate_staff_name(by)
        t = self.book.ack(alert_id, name, now)
        return self._transitions([t] if t else [])

    def resolve(self, alert_id: object, by: object, reason: object, now: datetime) -> list[object]:
        """Resolve a live alert by hand with a reason; CommandError `not_found`/`bad_request` otherwise."""
        if not isinstance(alert_id, str) or not alert_id or len(alert_id) > 64:
            raise CommandError("bad_request", "alert_id must be the id of an alert")
        name = validate_staff_name(by)
        why = validate_reason(reason)
        return self._transitions([self.book.resolve(alert_id, name, why, now)])

    def snooze(self, alert_id: object, by: object, duration_s: object, now: datetime) -> list[object]:
        """Snooze a live alert for 5 min .. 8 h; CommandError `not_found`/`bad_request` otherwise."""
        if not isinstance(alert_id, str) or not alert_id or len(alert_id) > 64:
            raise CommandError("bad_request", "alert_id must be the id of an alert")
        name = validate_staff_name(by)
        seconds = validate_snooze(duration_s)
        return self._transitions([self.book.snooze(alert_id, name, seconds, now)])

    def mute(self, shelf: str, *, on: bool, now: datetime, duration_s: float | None = None,
             sku: str | None = None) -> list[object]:
        """Mute (or unmute) restock alerts of a shelf while staff restock it; with `sku` only that cell, until its
        count rises or the time passes."""
        if self.manifest.shelf(shelf) is None:
            raise CommandError("not_found", f"no shelf {shelf!r} in the planogram")
        if sku is not None and (shelf, sku) not in self.ruleset.cells:
            raise CommandError("not_found", f"shelf {shelf!r} holds no lane of sku {sku!r} in the planogram")
        return self._restock(Mute(shelf, on, duration_s, sku), now)

    def restocking(self) -> list[dict[str, Any]]:
        """The cells being restocked now: shelf, sku, until, baseline."""
        return [{"shelf": shelf, "sku": sku, "until": m.until.isoformat().replace("+00:00", "Z"),
                 "baseline": m.baseline} for (shelf, sku), m in sorted(self.restock.muted_cells.items())]

    def sighting(self, raw: object, now: datetime, stock: StockState) -> tuple[dict[str, Any], list[object]]:
        """Validate a sighting, decide offers; returns the reply and the events (no shopper token in them)."""
        try:
            s = parse_sighting(raw)
            zone = self.offers.zone_of(s)
            check_time(s, now, self.offers.config.max_clock_skew_s, self.offers.config.retention_s)
        except SightingError as err:
            self.count("edge_rules_sightings_total", result="rejected", reason=err.code)
            raise
        self.count("edge_rules_sightings_total", result="accepted", reason="ok" if s.consent else "no_consent")

        def in_stock(z: str, sku: str) -> bool:
            return any(c.count > 0 for c in stock.cells(zone=z, sku=sku))

        self.offer_state, chosen = decide(self.offers, self.offer_state, s, zone, in_stock, now)
        events: list[object] = []
        for o in chosen:
            self.count("edge_rules_offers_triggered_total", offer=o.id)
            events.append(OfferTriggered(source="offers", time=now, subject=o.id, offer_id=o.id, zone=zone, sku=o.sku))
        reply = {"zone": zone, "consent": s.consent, "offers": [o.as_json() for o in chosen]}
        return reply, events

    # ---- internals ----
    def _faults(self, seen: DeviceSeen | None, now: datetime) -> list[object]:
        self.count("edge_rules_evaluations_total", rule="faults")
        self.faults, actions = step_faults(self.ruleset.device_fault_grace_s, self.faults, seen, now)
        return self._alerts(actions, now)

    def _lanes(self, seen: LaneSeen | None, now: datetime) -> list[object]:
        self.count("edge_rules_evaluations_total", rule="lanes")
        rs = self.ruleset
        self.lanes, actions = step_lanes(rs.lane_fault_hold_s, rs.escalate_after_s, self.lanes, seen, now)
        return self._alerts(actions, now)

    def _orders(self, event: OrderEvent, now: datetime) -> list[object]:
        """An order changed: its pick tasks to staff chats, its picks taken back from the sales, and the cells
        whose reserved units moved judged again."""
        out: list[object] = []
        if isinstance(event, OrderReserved):
            out += self.notifier.pick_rows(event, self.new_id)
        if isinstance(event, OrderPicked):
            out += self._restock(Picked(event.shelf, event.sku, event.sensed, event.qty - event.sensed,
                                        event.hold_until), now)  # fmt: skip
        for cell in event.cells:
            shelf, _, sku = cell.partition("/")
            out += self._restock(Reserved(shelf, sku, self.reserved(shelf, sku)), now)
        return out

    def _restock(self, inp: StockSeen | Mute | Tick | Reserved | Picked, now: datetime) -> list[object]:
        self.count("edge_rules_evaluations_total", rule="restock")
        before = self.restock.muted_cells
        self.restock, actions = step(self.ruleset, self.restock, inp, now)
        announced = self._restocking_changes(before, inp, now)
        for (shelf, sku), err in self.restock.errors.items():
            self._failed("restock", f"{shelf}/{sku}", "evaluation failed (skipped; other cells go on)", detail=err)
        if isinstance(inp, StockSeen | Reserved | Picked):
            key = (inp.shelf, inp.sku)
            self._deadlines.pop(key, None)
            self._deadlines.update(debounce_deadlines(self.ruleset, self.restock, [key]))
        else:
            self._deadlines = debounce_deadlines(self.ruleset, self.restock, self.restock.cells)
        return announced + self._alerts(actions, now)

    def _restocking_changes(self, before: Mapping[tuple[str, str], CellMute], inp: object,
                            now: datetime) -> list[object]:  # fmt: skip
        """Events for cells whose restocking started or ended in this step."""
        after = self.restock.muted_cells
        out: list[object] = []
        for key, m in before.items():
            if key in after and after[key].until == m.until:
                continue
            cell = self.restock.cells.get(key)
            count = cell.count if cell is not None else None
            if key in after:
                reason = "renewed"
            elif isinstance(inp, Mute):
                reason = "finished"
            elif m.until <= now:
                reason = "elapsed"
            else:
                reason = "restocked"
            if reason != "renewed":
                out.append(RestockingEnded(source=SOURCE, time=now, subject=key[0], shelf=key[0], sku=key[1],
                                           reason=reason, count=count))
        for key, m in after.items():
            if key not in before or before[key].until != m.until:
                out.append(RestockingStarted(source=SOURCE, time=now, subject=key[0], shelf=key[0], sku=key[1],
                                             until=m.until, baseline=m.baseline))
        return out

    def next_deadline(self) -> datetime | None:
        """The earliest moment a debouncing cell will be due to alert (the pipeline ticks the rules then)."""
        return min(self._deadlines.values()) if self._deadlines else None


    def _alerts(self, actions: Sequence[Action], now: datetime) -> list[object]:
        out: list[object] = []
        for a in actions:
            out += self._transitions(self.book.apply(a, now))
        return out

    def _transitions(self, ts: Sequence[Transition]) -> list[object]:
        out: list[object] = []
        for t in ts:
            self.count("edge_rules_alert_transitions_total", transition=t.event.TRANSITION, kind=t.alert.kind)
            out.append(t.event)
            out.append(Upsert("alerts", t.alert.row()))
            out += delivery_rows(t, self.webhooks, self.manifest.store.id, self.new_id)
            if not (t.alert.snoozed(t.event.time) and t.event.TRANSITION not in SNOOZE_POSTS):
                out += self.notifier.rows(t, self.new_id)  # staff chats pause while the alert is snoozed
        return out
