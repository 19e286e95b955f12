"""Nearby stores: who nearby has this SKU, how many, how fresh (issue 16 item 6; docs/omnichannel.md).

The manifest's `nearby: stores:` names neighbouring stores of the chain. Through the gateway's own hub
session (the uplink's: read-only subscriptions beside `cmd/+`) the gateway follows each neighbour's retained
`{prefix}/{store}/state/atp/+` (its available-to-promise per SKU, edge/atp.py), `state/info` (its name) and
`status` (online at connect, offline as its MQTT will or at a clean stop).

Everything that arrives is untrusted: only the subscribed topics of listed neighbours are read, a message is
at most `max_message_bytes`, a document must have the expected shape (ids are manifest ids, counts bounded
integers, times RFC 3339 with a zone), at most `max_skus` SKUs are kept per neighbour; what breaks a bound is
refused and counted (`edge_nearby_rejected_total{reason}`), never an error. The view keeps a few fields per
SKU, not the documents.

An answer never guesses. A neighbour's figure is `fresh` only when this gateway's hub session is up, the
figure and the neighbour's `online` status were received in this session (a reconnect waits for the broker
to send the retained state again), and the figure's own time is within `max_age_s`. Otherwise the answer is
`stale` (the neighbour is offline, or its figure is older than the bound) or `unknown` (our hub is offline,
no status or no figure yet), with `why`; the last figure known is given apart (`last_known`), never as
`atp`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from edge.clock import Clock
from edge.configbase import IDENT_PATTERN
from edge.errors import CommandError
from edge.metrics import Metrics
from edge.nearbyconfig import NearbyConfig

_SKU = re.compile(IDENT_PATTERN)
COUNT_LIMIT = 10**9  # no store promises more of one SKU
CLOCK_AHEAD = timedelta(minutes=5)  # a neighbour's time further ahead of ours than this is not believed


def _text_only(v: object) -> object:
    if not isinstance(v, str):
        raise ValueError("must be RFC 3339 text")  # noqa: TRY004 (pydantic turns ValueError into its error)
    return v


Time = Annotated[AwareDatetime, BeforeValidator(_text_only)]
Amount = Annotated[int, Field(ge=0, le=COUNT_LIMIT, strict=True)]
Short = Annotated[str, Field(max_length=128)]


class _AtpIn(BaseModel):
    """What is read of a neighbour's `state/atp/{sku}` (edge/atp.py AtpTracker.document)."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    sku: Annotated[str, Field(pattern=_SKU.pattern)]
    atp: Amount
    on_hand: Amount | None = None
    reserved: Amount | None = None
    certain_only: Annotated[bool, Field(strict=True)] = False
    name: Short | None = None
    unit: Annotated[str, Field(max_length=16)] | None = None
    updated: Time


class _StatusIn(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    state: Literal["online", "offline"]
    time: Time | None = None


class _InfoIn(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    name: Short | None = None
    timezone: Annotated[str, Field(max_length=64)] | None = None


@dataclass(slots=True)
class _Figure:
    """One SKU's ATP at one neighbour, as last received."""

    atp: int
    on_hand: int | None
    reserved: int | None
    certain_only: bool
    name: str | None
    unit: str | None
    updated: datetime  # the neighbour's own time of the figure
    received: datetime  # when this gateway received it
    session: int  # the hub session it was received in


@dataclass(slots=True)
class _Neighbour:
    id: str
    name: str
    distance_km: float | None
    status: str | None = None  # "online" | "offline", as last received
    status_time: datetime | None = None  # the status document's own time (the will has none)
    status_received: datetime | None = None
    status_session: int = -1
    info_name: str | None = None
    timezone: str | None = None
    skus: dict[str, _Figure] = field(default_factory=dict)


Verdict = tuple[str, str | None, str | None, str | None]
"""(state fresh|stale|unknown, reason code, since when (RFC 3339), why in words)."""


def _iso(t: datetime | None) -> str | None:
    return t.isoformat().replace("+00:00", "Z") if t is not None else None


class NearbyView:
    """The in-memory view of the neighbours' retained state; the uplink feeds it (`topics`, `session`,
    `message`), the API and `cmd/nearby.get` read it (`answer`, `overview`)."""

    def __init__(self, cfg: NearbyConfig, *, prefix: str, clock: Clock, metrics: Metrics) -> None:
        self.clock = clock
        self.metrics = metrics
        self.prefix = prefix
        self.hub_up = False
        self.hub_since = clock.now()  # when the hub session went up or down (or this view started)
        self._session = 0
        self.configure(cfg)
        metrics.describe("edge_nearby_messages_total", "neighbour-store messages taken, by kind")
        metrics.describe("edge_nearby_rejected_total", "neighbour-store messages refused, by reason")

    def configure(self, cfg: NearbyConfig) -> None:
        """Take the manifest's `nearby:` section (at start or a rollout); neighbours kept keep their state.
        A changed list takes effect for subscriptions at the next hub session."""
        self.cfg = cfg
        old = getattr(self, "neighbours", {})
        self.neighbours: dict[str, _Neighbour] = {}
        for s in cfg.stores:
            n = old.get(s.id) or _Neighbour(s.id, s.name, s.distance_km)
            n.name, n.distance_km = s.name, s.distance_km
            self.neighbours[s.id] = n

    # ---- fed by the uplink ----
    def topics(self) -> list[str]:
        """The read-only filters to subscribe at each hub session."""
        leaves = ("status", "state/info", "state/atp/+")
        return [f"{self.prefix}/{n}/{leaf}" for n in self.neighbours for leaf in leaves]

    def session(self, up: bool) -> None:
        """The hub session went up (subscriptions made: the broker now sends the retained state) or down."""
        if up == self.hub_up:
            return
        self.hub_up = up
        self.hub_since = self.clock.now()
        if up:
            self._session += 1

    def message(self, topic: str, payload: bytes) -> None:
        """One message from the hub on a neighbour topic: validated, bounded, kept (or refused and counted)."""
        rest = topic[len(self.prefix) + 1:] if topic.startswith(self.prefix + "/") else ""
        store, _, leaf = rest.partition("/")
        n = self.neighbours.get(store)
        if n is None:
            self._reject("topic")
            return
        if len(payload) > self.cfg.max_message_bytes:
            self._reject("too_large")
            return
        now = self.clock.now()
        try:
            if leaf.startswith("state/atp/"):
                self._atp(n, leaf[len("state/atp/"):], payload, now)
            elif leaf == "status":
                self._status(n, payload, now)
            elif leaf == "state/info":
                if payload:
                    info = _InfoIn.model_validate_json(payload)
                    n.info_name, n.timezone = info.name, info.timezone
                self.metrics.inc("edge_nearby_messages_total", kind="info")
            else:
                self._reject("topic")
        except ValidationError:
            self._reject("invalid")

    def _atp(self, n: _Neighbour, sku: str, payload: bytes, now: datetime) -> None:
        if not _SKU.fullmatch(sku):
            self._reject("topic")
            return
        if not payload:  # the retained figure was cleared: the SKU is gone from that store's catalog
            n.skus.pop(sku, None)
            self.metrics.inc("edge_nearby_messages_total", kind="atp")
            return
        doc = _AtpIn.model_validate_json(payload)
        if doc.sku != sku:
            self._reject("sku_mismatch")
            return
        if sku not in n.skus and len(n.skus) >= self.cfg.max_skus:
            self._reject("too_many_skus")
            return
        n.skus[sku] = _Figure(doc.atp, doc.on_hand, doc.reserved, doc.certain_only, doc.name, doc.unit,
                              doc.updated, now, self._session)  # fmt: skip
        self.metrics.inc("edge_nearby_messages_total", kind="atp")

    def _status(self, n: _Neighbour, payload: bytes, now: datetime) -> None:
        if not payload:
            n.status, n.status_time, n.status_received, n.status_session = None, None, now, self._session
        else:
            st = _StatusIn.model_validate_json(payload)
            if st.state != n.status or n.status_session != self._session:
                n.status_received = now
            n.status, n.status_time, n.status_session = st.state, st.time, self._session
        self.metrics.inc("edge_nearby_messages_total", kind="status")

    def _reject(self, reason: str) -> None:
        self.metrics.inc("edge_nearby_rejected_total", reason=reason)

    # ---- answers ----
    def answer(self, sku: object) -> dict[str, Any]:
        """Who nearby has `sku`, how many, how fresh: one row per neighbour, those with a fresh figure above
        0 first (nearest first), then the rest."""
        if not isinstance(sku, str) or not _SKU.fullmatch(sku):
            raise CommandError("bad_request", "sku must be a SKU id: 1-64 letters, digits, '_', '.', '-'")
        now = self.clock.now()
        rows = [self._row(n, sku, now) for n in self.neighbours.values()]
        rows.sort(key=lambda r: (not (r["state"] == "fresh" and r["atp"] > 0), r["distance_km"] is None,
                                 r["distance_km"] or 0.0, r["store"]))  # fmt: skip
        return {"sku": sku, "time": _iso(now), "hub": self._hub(), "stores": rows,
                "have": sum(1 for r in rows if r["state"] == "fresh" and r["atp"] > 0),
                "unknown": sum(1 for r in rows if r["state"] != "fresh")}  # fmt: skip

    def overview(self) -> dict[str, Any]:
        """The neighbours and what is known of them (no SKU)."""
        now = self.clock.now()
        stores = []
        for n in self.neighbours.values():
            state, reason, since, why = self._store_state(n)
            stores.append({**self._who(n), "status": n.status if n.status_session == self._session else None,
                           "status_since": _iso(n.status_received), "state": state, "reason": reason,
                           "since": since, "why": why, "skus": len(n.skus)})  # fmt: skip
        return {"time": _iso(now), "hub": self._hub(), "stores": stores}

    async def cmd_get(self, req: Any) -> dict[str, Any]:
        """`cmd/nearby.get` (read-only): `{sku}` answers for one SKU, without it the overview."""
        sku = req.get("sku") if hasattr(req, "get") else None
        return self.overview() if sku is None else self.answer(sku)

    def _hub(self) -> dict[str, Any]:
        return {"connected": self.hub_up, "since": _iso(self.hub_since)}

    @staticmethod
    def _who(n: _Neighbour) -> dict[str, Any]:
        return {"store": n.id, "name": n.name or n.info_name or None, "distance_km": n.distance_km}

    def _store_state(self, n: _Neighbour) -> Verdict:
        """('fresh', None, None, None) when the neighbour can be believed right now, else (stale|unknown,
        reason code, since when, why in words)."""
        hub = _iso(self.hub_since)
        if not self.hub_up:
            return "unknown", "hub_offline", hub, f"hub offline since {hub}: the neighbours cannot be seen"
        if n.status_session != self._session or n.status is None:
            return "unknown", "no_status", hub, f"no status from the store since the hub connection at {hub}"
        if n.status == "offline":
            since = _iso(n.status_time or n.status_received)
            return "stale", "store_offline", since, (f"the store's gateway is offline (since {since}); its figures "
                                                     "are as of then")
        return "fresh", None, None, None

    def _row(self, n: _Neighbour, sku: str, now: datetime) -> dict[str, Any]:
        row: dict[str, Any] = {**self._who(n), "state": "fresh", "reason": None, "since": None, "why": None,
                               "atp": None, "on_hand": None,
                               "reserved": None, "certain_only": None, "updated": None, "received": None,
                               "age_s": None, "last_known": None, "item_name": None}  # fmt: skip
        fig = n.skus.get(sku)
        verdict = self._store_state(n)
        if verdict[0] == "fresh":
            if fig is None or fig.session != self._session:
                verdict = ("unknown", "no_figure", None, "the store publishes no ATP for this SKU (not in its "
                                                         "catalog, or not received yet)")
            elif fig.updated > now + CLOCK_AHEAD:
                at = _iso(fig.updated)
                verdict = ("unknown", "clock_ahead", at, f"its figure is dated {at}, ahead of this gateway's clock")
            elif (now - fig.updated).total_seconds() > self.cfg.max_age_s:
                at = _iso(fig.updated)
                verdict = ("stale", "too_old", at, f"its figure dates from {at}, older than "
                                                   f"{self.cfg.max_age_s:g} s (nearby: max_age_s)")
        state = verdict[0]
        row["state"], row["reason"], row["since"], row["why"] = verdict
        if fig is None:
            return row
        if state == "fresh":
            row.update(atp=fig.atp, on_hand=fig.on_hand, reserved=fig.reserved, certain_only=fig.certain_only,
                       updated=_iso(fig.updated), received=_iso(fig.received),
                       age_s=round(max(0.0, (now - fig.updated).total_seconds()), 1))  # fmt: skip
        else:
            row["last_known"] = {"atp": fig.atp, "updated": _iso(fig.updated), "received": _iso(fig.received)}
        row["item_name"] = fig.name
        return row

