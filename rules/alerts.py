"""Staff alerts and their lifecycle: open -> acknowledged -> resolved | expired, with escalation.

Every transition is an event (class ALERT, topic `alerts`, never dropped) and an `alerts` table row
committed with it, so the alert list survives restarts (`AlertBook.load`). The book only keeps the alerts
that are still live (open or acknowledged); closed ones live in the table for the API.

One alert per condition family and subject (`rules.actions.condition_key`): out of stock on a cell whose
low-stock alert is live supersedes it (same alert, kind `out_of_stock`, an `escalated` event with reason
`out_of_stock`: one notification stream), and a partial refill downgrades it back to `low_stock` (an
`updated` event). An alert never expires while its condition holds: it stays open (escalating up to
`MAX_ESCALATION` times) until the condition clears; `expire_after_s` only closes alerts whose condition
the rules no longer watch (e.g. restored after a restart for a lane nobody reports any more).

Snooze (issue 17 item 3): staff may snooze a live alert for `SNOOZE_MIN_S`..`SNOOZE_MAX_S` (5 min .. 8 h).
While snoozed it does not escalate for being unacknowledged and its staff chat messages pause
(`rules.engine`); when the time passes (`tick`) it comes back (`retail.alert.unsnoozed.v1`, posted to
staff again) and its escalation clock restarts from then. A condition that gets worse (a stock-out
superseding a snoozed low-stock alert) ends the snooze at once; clearing the condition resolves a snoozed
alert as any other.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, ClassVar

from edge.errors import CommandError
from edge.events import Event, EventClass
from rules.actions import SEVERITY, Action, AlertClear, AlertRaise, Key, condition_key

SNOOZE_MIN_S = 300.0
SNOOZE_MAX_S = 8 * 3600.0
OPEN = "open"
ACKNOWLEDGED = "acknowledged"
RESOLVED = "resolved"
EXPIRED = "expired"
STATES = (OPEN, ACKNOWLEDGED, RESOLVED, EXPIRED)
LIVE = frozenset({OPEN, ACKNOWLEDGED})
MAX_ESCALATION = 3
SOURCE = "rules"


# ---- events -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertEvent(Event):
    """Common fields of the alert lifecycle events (subject = alert id)."""

    CLASS: ClassVar[EventClass] = EventClass.ALERT
    TOPIC: ClassVar[str] = "alerts"
    TRANSITION: ClassVar[str] = ""

    alert_id: str
    kind: str
    state: str
    shelf: str | None = None
    sku: str | None = None
    device: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertOpened(AlertEvent):
    """A condition held long enough: staff should act."""

    TYPE: ClassVar[str] = "retail.alert.opened.v1"
    TRANSITION: ClassVar[str] = "opened"

    message: str = ""
    count: int | None = None
    threshold: int | None = None
    restock_qty: int | None = None
    days_of_cover: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertAcknowledged(AlertEvent):
    """A staff member took the alert."""

    TYPE: ClassVar[str] = "retail.alert.acknowledged.v1"
    TRANSITION: ClassVar[str] = "acknowledged"

    by: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertEscalated(AlertEvent):
    """Nobody acknowledged the alert in time (`reason` unacknowledged), or its condition got worse (`reason`
    out_of_stock: a stock-out superseded the cell's low-stock alert); `level` counts the escalations."""

    TYPE: ClassVar[str] = "retail.alert.escalated.v1"
    TRANSITION: ClassVar[str] = "escalated"

    level: int
    unacknowledged_s: float
    reason: str = "unacknowledged"
    message: str = ""
    count: int | None = None
    restock_qty: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertUpdated(AlertEvent):
    """The condition eased but still holds (out of stock -> low stock after a partial refill): same alert,
    new kind and figures."""

    TYPE: ClassVar[str] = "retail.alert.updated.v1"
    TRANSITION: ClassVar[str] = "updated"

    message: str = ""
    count: int | None = None
    threshold: int | None = None
    restock_qty: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertSnoozed(AlertEvent):
    """A staff member snoozed the live alert until `until` (`duration_s` after `time`): no escalation and no
    staff chat messages meanwhile."""

    TYPE: ClassVar[str] = "retail.alert.snoozed.v1"
    TRANSITION: ClassVar[str] = "snoozed"

    by: str
    until: datetime
    duration_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertUnsnoozed(AlertEvent):
    """The alert's snooze time passed (`reason` elapsed) and it is live again: staff are told again, and its
    escalation clock restarts from now. (A condition getting worse ends a snooze with its `escalated` event.)"""

    TYPE: ClassVar[str] = "retail.alert.unsnoozed.v1"
    TRANSITION: ClassVar[str] = "unsnoozed"

    reason: str = "elapsed"
    message: str = ""
    count: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertResolved(AlertEvent):
    """The condition is over (stock recovered, device back)."""

    TYPE: ClassVar[str] = "retail.alert.resolved.v1"
    TRANSITION: ClassVar[str] = "resolved"

    reason: str
    count: int | None = None
    by: str | None = None  # the staff member who resolved it by hand (None: the rules resolved it)


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertExpired(AlertEvent):
    """The alert stayed unresolved for longer than the rules' expire_after_s while the rules no longer watched
    its condition, and was closed (an alert whose condition still holds never expires)."""

    TYPE: ClassVar[str] = "retail.alert.expired.v1"
    TRANSITION: ClassVar[str] = "expired"

    open_s: float


ALERT_EVENT_TYPES = (AlertOpened, AlertAcknowledged, AlertEscalated, AlertUpdated, AlertResolved, AlertExpired,
                     AlertSnoozed, AlertUnsnoozed)


# ---- the alert record ---------------------------------------------------------------------------


def _iso(t: datetime | None) -> str | None:
    return t.isoformat().replace("+00:00", "Z") if t is not None else None


def _parse(s: Any) -> datetime | None:
    return datetime.fromisoformat(str(s).replace("Z", "+00:00")) if s else None


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert:
    """One alert, as stored in the `alerts` table and served by the API."""

    id: str
    kind: str
    state: str
    opened_at: datetime
    updated_at: datetime
    shelf: str | None = None
    sku: str | None = None
    device: str | None = None
    message: str = ""
    count: int | None = None
    threshold: int | None = None
    restock_qty: int | None = None
    days_of_cover: float | None = None
    escalate_after_s: float | None = None
    escalation_level: int = 0
    escalated_at: datetime | None = None
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    closed_at: datetime | None = None
    close_reason: str | None = None
    snoozed_until: datetime | None = None  # set while snoozed
    snoozed_by: str | None = None
    unsnoozed_at: datetime | None = None  # when the last snooze ended (escalation counts from then)

    def snoozed(self, now: datetime) -> bool:
        """Is the alert snoozed at `now`?"""
        return self.snoozed_until is not None and now < self.snoozed_until

    @property
    def key(self) -> Key:
        """The condition's family key (see `rules.actions.condition_key`)."""
        return condition_key(self.kind, self.shelf, self.sku, self.device)

    def row(self) -> dict[str, Any]:
        """The `alerts` table row (also the API's JSON form)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "shelf": self.shelf,
            "sku": self.sku,
            "device": self.device,
            "message": self.message,
            "count": self.count,
            "threshold": self.threshold,
            "restock_qty": self.restock_qty,
            "days_of_cover": self.days_of_cover,
            "escalate_after_s": self.escalate_after_s,
            "escalation_level": self.escalation_level,
            "opened_at": _iso(self.opened_at),
            "updated_at": _iso(self.updated_at),
            "escalated_at": _iso(self.escalated_at),
            "acknowledged_at": _iso(self.acknowledged_at),
            "acknowledged_by": self.acknowledged_by,
            "closed_at": _iso(self.closed_at),
            "close_reason": self.close_reason,
            "snoozed_until": _iso(self.snoozed_until),
            "snoozed_by": self.snoozed_by,
            "unsnoozed_at": _iso(self.unsnoozed_at),
        }

    @classmethod
    def from_row(cls, r: Mapping[str, Any]) -> Alert:
        """Rebuild from a table row."""
        opened = _parse(r["opened_at"])
        assert opened is not None
        return cls(
            id=str(r["id"]),
            kind=str(r["kind"]),
            state=str(r["state"]),
            opened_at=opened,
            updated_at=_parse(r.get("updated_at")) or opened,
            shelf=r.get("shelf"),
            sku=r.get("sku"),
            device=r.get("device"),
            message=str(r.get("message") or ""),
            count=r.get("count"),
            threshold=r.get("threshold"),
            restock_qty=r.get("restock_qty"),
            days_of_cover=r.get("days_of_cover"),
            escalate_after_s=r.get("escalate_after_s"),
            escalation_level=int(r.get("escalation_level") or 0),
            escalated_at=_parse(r.get("escalated_at")),
            acknowledged_at=_parse(r.get("acknowledged_at")),
            acknowledged_by=r.get("acknowledged_by"),
            closed_at=_parse(r.get("closed_at")),
            close_reason=r.get("close_reason"),
            snoozed_until=_parse(r.get("snoozed_until")),
            snoozed_by=r.get("snoozed_by"),
            unsnoozed_at=_parse(r.get("unsnoozed_at")),
        )


@dataclass(frozen=True, slots=True)
class Transition:
    """An alert after a transition, and the event announcing it."""

    alert: Alert
    event: AlertEvent


def _common(a: Alert) -> dict[str, Any]:
    return {
        "source": SOURCE,
        "subject": a.id,
        "alert_id": a.id,
        "kind": a.kind,
        "state": a.state,
        "shelf": a.shelf,
        "sku": a.sku,
        "device": a.device,
    }


def validate_staff_name(by: object) -> str:
    """A staff member's name for an acknowledgement: 1..64 printable characters."""
    if not isinstance(by, str) or not by.strip() or len(by) > 64 or not by.isprintable():
        raise CommandError("bad_request", "'by' must be the staff member's name, 1 to 64 printable characters")
    return by.strip()


MANUAL_PREFIX = "manual: "
MAX_REASON = 200


def validate_snooze(duration_s: object) -> float:
    """A snooze's length: a finite number of seconds in [SNOOZE_MIN_S, SNOOZE_MAX_S] (5 min .. 8 h)."""
    if (isinstance(duration_s, bool) or not isinstance(duration_s, int | float) or not math.isfinite(duration_s)
            or not SNOOZE_MIN_S <= duration_s <= SNOOZE_MAX_S):
        raise CommandError("bad_request", f"duration_s must be a number of seconds from {SNOOZE_MIN_S:g} (5 min) "
                                          f"to {SNOOZE_MAX_S:g} (8 h)")
    return float(duration_s)


def validate_reason(reason: object) -> str:
    """Why staff resolve an alert by hand: 1..200 printable characters."""
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON or not reason.isprintable():
        raise CommandError("bad_request", f"'reason' must say why, 1 to {MAX_REASON} printable characters")
    return reason.strip()


class AlertBook:
    """The live alerts and the rules of their lifecycle (no I/O; ids come from `new_id`)."""

    def __init__(self, new_id: Callable[[], str]) -> None:
        self._new_id = new_id
        self.live: dict[str, Alert] = {}
        self._by_key: dict[Key, str] = {}

    def load(self, rows: Iterable[Mapping[str, Any]]) -> list[Alert]:
        """Restore live alerts from table rows; returns them."""
        out = []
        for r in rows:
            a = Alert.from_row(r)
            if a.state in LIVE:
                self.live[a.id] = a
                other = self.live.get(self._by_key.get(a.key, ""))
                if other is None or (SEVERITY.get(a.kind, 0), a.opened_at) > (SEVERITY.get(other.kind, 0),
                                                                               other.opened_at):
                    self._by_key[a.key] = a.id
                out.append(a)
        return out

    def merge_duplicates(self, now: datetime) -> list[Transition]:
        """Resolve live alerts that share a family key with a more severe (or newer) one, as rows written by an
        older gateway may (a low-stock and an out-of-stock alert of one cell): one alert per condition."""
        keep = set(self._by_key.values())
        out = []
        for alert_id in [i for i in self.live if i not in keep]:
            a = self.live.pop(alert_id)
            closed = replace(a, state=RESOLVED, closed_at=now, close_reason="superseded", updated_at=now)
            out.append(Transition(closed, AlertResolved(time=now, reason="superseded", count=a.count,
                                                        **_common(closed))))
        return out

    def apply(self, action: Action, now: datetime) -> list[Transition]:
        """Open an alert for a raise (supersede or downgrade the live one of its family), resolve one for a clear."""
        existing = self._by_key.get(action.key)
        if isinstance(action, AlertRaise):
            if existing is not None:
                return self._change_kind(self.live[existing], action, now)
            a = Alert(
                id=self._new_id(),
                kind=action.kind,
                state=OPEN,
                opened_at=now,
                updated_at=now,
                shelf=action.shelf,
                sku=action.sku,
                device=action.device,
                message=action.message,
                count=action.count,
                threshold=action.threshold,
                restock_qty=action.restock_qty,
                days_of_cover=action.days_of_cover,
                escalate_after_s=action.escalate_after_s,
            )
            self.live[a.id] = a
            self._by_key[a.key] = a.id
            ev = AlertOpened(
                time=now,
                message=a.message,
                count=a.count,
                threshold=a.threshold,
                restock_qty=a.restock_qty,
                days_of_cover=a.days_of_cover,
                **_common(a),
            )
            return [Transition(a, ev)]
        assert isinstance(action, AlertClear)
        if existing is None:
            return []
        a = self._close(existing, RESOLVED, action.reason, now, count=action.count)
        return [Transition(a, AlertResolved(time=now, reason=action.reason, count=action.count, **_common(a)))]

    def _change_kind(self, a: Alert, action: AlertRaise, now: datetime) -> list[Transition]:
        """A raise for a family whose alert is live: worse -> escalate it, milder -> update it, same -> nothing."""
        if action.kind == a.kind:
            return []
        moved = replace(
            a,
            kind=action.kind,
            message=action.message,
            count=action.count,
            threshold=action.threshold,
            restock_qty=action.restock_qty,
            days_of_cover=action.days_of_cover,
            updated_at=now,
        )
        if SEVERITY.get(action.kind, 0) > SEVERITY.get(a.kind, 0):
            up = replace(moved, escalation_level=a.escalation_level + 1, escalated_at=now)
            if a.snoozed(now):  # worse: the snooze ends, staff must hear of it now
                up = replace(up, snoozed_until=None, unsnoozed_at=now)
            self.live[up.id] = up
            age = (now - up.opened_at).total_seconds()
            ev: AlertEvent = AlertEscalated(
                time=now, level=up.escalation_level, unacknowledged_s=age if up.state == OPEN else 0.0,
                reason=action.kind, message=up.message, count=up.count, restock_qty=up.restock_qty, **_common(up)
            )
        else:
            up = moved
            self.live[up.id] = up
            ev = AlertUpdated(
                time=now, message=up.message, count=up.count, threshold=up.threshold, restock_qty=up.restock_qty,
                **_common(up)
            )
        return [Transition(up, ev)]

    def ack(self, alert_id: str, by: str, now: datetime) -> Transition | None:
        """Acknowledge a live alert; None when it already was (idempotent). Unknown -> CommandError."""
        a = self.live.get(alert_id)
        if a is None:
            raise CommandError("not_found", f"no open alert {alert_id!r} (unknown, or already closed)")
        if a.state == ACKNOWLEDGED:
            return None
        a = replace(a, state=ACKNOWLEDGED, acknowledged_at=now, acknowledged_by=by, updated_at=now)
        self.live[a.id] = a
        return Transition(a, AlertAcknowledged(time=now, by=by, **_common(a)))

    def snooze(self, alert_id: str, by: str, duration_s: float, now: datetime) -> Transition:
        """Snooze a live alert for `duration_s` (validated by the caller; a new snooze replaces the running one);
        unknown or closed -> CommandError."""
        a = self.live.get(alert_id)
        if a is None:
            raise CommandError("not_found", f"no open alert {alert_id!r} (unknown, or already closed)")
        until = now + timedelta(seconds=duration_s)
        a = replace(a, snoozed_until=until, snoozed_by=by, updated_at=now)
        self.live[a.id] = a
        return Transition(a, AlertSnoozed(time=now, by=by, until=until, duration_s=duration_s, **_common(a)))

    def resolve(self, alert_id: str, by: str, reason: str, now: datetime) -> Transition:
        """Resolve a live alert by hand (close_reason `manual: <reason>`); unknown or closed -> CommandError."""
        if alert_id not in self.live:
            raise CommandError("not_found", f"no open alert {alert_id!r} (unknown, or already closed)")
        a = self._close(alert_id, RESOLVED, MANUAL_PREFIX + reason, now)
        return Transition(a, AlertResolved(time=now, reason=MANUAL_PREFIX + reason, count=a.count, by=by,
                                           **_common(a)))

    def tick(
        self, now: datetime, expire_after_s: float, holds: Callable[[Alert], bool] = lambda _a: False
    ) -> list[Transition]:
        """Escalate unacknowledged alerts past their deadline; expire alerts open for too long whose condition
        no longer `holds` (the rules' verdict; an alert whose condition holds stays open)."""
        out: list[Transition] = []
        for a in list(self.live.values()):
            age = (now - a.opened_at).total_seconds()
            if expire_after_s > 0 and age >= expire_after_s and not holds(a):
                closed = self._close(a.id, EXPIRED, "expired", now)
                out.append(Transition(closed, AlertExpired(time=now, open_s=age, **_common(closed))))
                continue
            if a.snoozed(now):
                continue  # snoozed: no escalation until it comes back
            if a.snoozed_until is not None:  # the snooze's time passed: the alert comes back
                back = replace(a, snoozed_until=None, unsnoozed_at=now, updated_at=now)
                self.live[a.id] = a = back  # noqa: PLW2901 - the rest of the loop sees the alert as it is now
                out.append(Transition(a, AlertUnsnoozed(time=now, message=a.message, count=a.count, **_common(a))))
            if a.state != OPEN or not a.escalate_after_s or a.escalation_level >= MAX_ESCALATION:
                continue
            since = max(a.escalated_at or a.opened_at, a.unsnoozed_at or a.opened_at)
            if (now - since).total_seconds() >= a.escalate_after_s:
                up = replace(a, escalation_level=a.escalation_level + 1, escalated_at=now, updated_at=now)
                self.live[up.id] = up
                out.append(
                    Transition(
                        up, AlertEscalated(time=now, level=up.escalation_level, unacknowledged_s=age, **_common(up))
                    )
                )
        return out

    def _close(self, alert_id: str, state: str, reason: str, now: datetime, count: int | None = None) -> Alert:
        a = self.live.pop(alert_id)
        self._by_key.pop(a.key, None)
        return replace(
            a,
            state=state,
            closed_at=now,
            close_reason=reason,
            updated_at=now,
            count=count if count is not None else a.count,
        )
