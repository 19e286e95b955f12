"""The lane fault rule, pure: a weight-shelf lane fault or unknown object held too long raises a staff alert.

Fed by the weight shelves' events (drivers/shelf/events.py), matched on their CloudEvents type and fields
only (rules never import drivers): `retail.shelf.fault.v1` {device, shelf, lane, sku?, code, reason?,
since?} starts a fault and `retail.shelf.fault_cleared.v1` ends it; `retail.shelf.unknown_object.v1`
{shelf, lane, sku, net_g, reason?, since?} starts an unknown object and
`retail.shelf.unknown_object_cleared.v1` ends it. The hold time runs from `since` (when the trouble began)
when the event carries it, else from the event's time. A lane that settles on a whole
count again (`retail.shelf.count.v1` {shelf, lane}) ends both, so an end event that never comes (an older
driver, a lost restart) cannot hold an alert open.

Alerts are per shelf x SKU cell and condition (kinds `lane_fault`, `unknown_object`), opened once a lane
of the cell has held its condition for `hold_s`, with the message "check shelf-a1 lane 2: load cell not
responding (stuck)" / "... object on the shelf (+812 g)", and cleared when no lane of the cell holds it
any more. Acknowledgement, escalation and expiry are the alert book's, as for stock alerts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from rules.actions import LANE_FAULT, UNKNOWN_OBJECT, Action, AlertClear, AlertRaise

FAULT_STARTED = "retail.shelf.fault.v1"
FAULT_ENDED = "retail.shelf.fault_cleared.v1"
UNKNOWN_STARTED = "retail.shelf.unknown_object.v1"
UNKNOWN_ENDED = "retail.shelf.unknown_object_cleared.v1"
LANE_COUNTED = "retail.shelf.count.v1"
STARTS = {FAULT_STARTED: LANE_FAULT, UNKNOWN_STARTED: UNKNOWN_OBJECT}
ENDS = {FAULT_ENDED: (LANE_FAULT,), UNKNOWN_ENDED: (UNKNOWN_OBJECT,), LANE_COUNTED: (LANE_FAULT, UNKNOWN_OBJECT)}
EVENT_TYPES = frozenset({*STARTS, *ENDS})
LANE_FIELDS = ("shelf", "lane", "sku", "device", "code", "reason", "net_g", "since")
"""The event fields `lane_seen` reads (plus `source`)."""

LaneKey = tuple[str, str, str]  # (kind, shelf, lane)
CellKey = tuple[str, str, str]  # (kind, shelf, sku)


@dataclass(frozen=True, slots=True)
class LaneWatch:
    """One lane holding a condition: since when, of which cell, and what to tell staff."""

    sku: str
    since: datetime
    detail: str = ""
    device: str | None = None


@dataclass(frozen=True, slots=True)
class LaneState:
    """Lanes holding a condition, and the cells whose alert is raised."""

    lanes: Mapping[LaneKey, LaneWatch] = field(default_factory=dict)
    raised: frozenset[CellKey] = frozenset()


@dataclass(frozen=True, slots=True)
class LaneSeen:
    """Input: a lane's condition started (`on`) or ended; `sku` is the lane's SKU in the planogram."""

    kind: str
    shelf: str
    lane: str
    sku: str
    on: bool
    detail: str = ""
    device: str | None = None
    at: datetime | None = None  # when it started (the event's time)


def lane_seen(event_type: str, data: Mapping[str, object], sku_of: Mapping[tuple[str, str], str]) -> list[LaneSeen]:
    """Rule inputs from one shelf event (type + payload fields); [] when it is no lane condition we know.

    `sku_of` maps (shelf, lane) to the planogram SKU (used when the event names none). Fields read:
    shelf, lane, sku, device (else source), code, reason, net_g, since (when the trouble began).
    """
    shelf, lane = data.get("shelf"), data.get("lane")
    if not isinstance(shelf, str) or not isinstance(lane, str):
        return []
    named = data.get("sku")
    sku = named if isinstance(named, str) and named else sku_of.get((shelf, lane))
    if sku is None:
        return []
    device = data.get("device") if isinstance(data.get("device"), str) else data.get("source")
    dev = device if isinstance(device, str) else None
    since = data.get("since")
    at = since if isinstance(since, datetime) and since.tzinfo is not None else None
    code, reason = data.get("code"), data.get("reason")
    code = code if isinstance(code, str) else ""
    reason = reason if isinstance(reason, str) else ""
    kind = STARTS.get(event_type)
    if kind == LANE_FAULT:
        detail = reason or "load cell not responding"
        if code and code not in detail:
            detail += f" ({code})"
        return [LaneSeen(LANE_FAULT, shelf, lane, sku, True, detail, dev, at)]
    if kind == UNKNOWN_OBJECT:
        grams = data.get("net_g")
        detail = "object on the shelf"
        if reason:
            detail += f" ({reason})"
        elif isinstance(grams, int | float) and not isinstance(grams, bool) and abs(grams) < 1e9:
            detail += f" ({grams:+.0f} g on the lane)"
        return [LaneSeen(UNKNOWN_OBJECT, shelf, lane, sku, True, detail, dev, at)]
    return [LaneSeen(k, shelf, lane, sku, False, device=dev) for k in ENDS.get(event_type, ())]


def step_lanes(
    hold_s: float, escalate_after_s: float | None, state: LaneState, seen: LaneSeen | None, now: datetime
) -> tuple[LaneState, list[Action]]:
    """Apply a lane condition change (or just time, when `seen` is None); return state and actions."""
    lanes = dict(state.lanes)
    raised = set(state.raised)
    actions: list[Action] = []
    if seen is not None:
        key = (seen.kind, seen.shelf, seen.lane)
        old = lanes.get(key)
        if seen.on:
            since = old.since if old is not None else min(seen.at or now, now)
            lanes[key] = LaneWatch(seen.sku, since, seen.detail, seen.device)
        elif old is not None:
            del lanes[key]
            cell = (seen.kind, seen.shelf, old.sku)
            if cell in raised and not any(k[:2] == cell[:2] and w.sku == cell[2] for k, w in lanes.items()):
                raised.discard(cell)
                actions.append(AlertClear(kind=seen.kind, shelf=seen.shelf, sku=old.sku, reason="lane ok again"))
        elif (seen.kind, seen.shelf, seen.sku) in raised and not any(
            k[:2] == (seen.kind, seen.shelf) and w.sku == seen.sku for k, w in lanes.items()
        ):
            # an alert restored after a restart, no lane watched since: the lane is fine now
            raised.discard((seen.kind, seen.shelf, seen.sku))
            actions.append(AlertClear(kind=seen.kind, shelf=seen.shelf, sku=seen.sku, reason="lane ok again"))
    for (kind, shelf, lane), w in sorted(lanes.items(), key=lambda kv: kv[1].since):
        cell = (kind, shelf, w.sku)
        if cell in raised or (now - w.since).total_seconds() < hold_s:
            continue
        raised.add(cell)
        actions.append(
            AlertRaise(
                kind=kind,
                shelf=shelf,
                sku=w.sku,
                device=None,
                escalate_after_s=escalate_after_s,
                message=f"check {shelf} lane {lane}: {w.detail}",
            )
        )
    return LaneState(lanes, frozenset(raised)), actions


def restore_lane_alert(state: LaneState, kind: str, shelf: str, sku: str) -> LaneState:
    """An alert of this cell was live before a restart: do not raise it again while its lane still holds."""
    return replace(state, raised=state.raised | {(kind, shelf, sku)})


def lane_condition_holds(state: LaneState, kind: str, shelf: str, sku: str) -> bool:
    """True while some lane of the cell holds the condition (its alert stays open, never expires)."""
    return any(k[0] == kind and k[1] == shelf and w.sku == sku for k, w in state.lanes.items())
