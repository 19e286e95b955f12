"""Shopper offers, pure: a consenting shopper's sighting in a zone -> the offers to show now.

The shopper app (phone on store Wi-Fi, or relayed by the hub as `cmd/sighting`) reports which store
beacon it sees (iBeacon uuid/major/minor, Eddystone-UID namespace/instance) or a zone, with a
pseudonymous shopper token. Privacy (DOMAIN.md, BLE presence): without consent nothing is kept, not even
in memory (and withdrawing consent forgets the shopper); with consent, the token and its sightings are
forgotten `retention_s` after the last sighting; the published `offer.triggered` event carries no token.
An offer fires when the shopper dwelt long enough in its zone (consecutive sightings no more than
`max_gap_s` apart), it is on schedule, the audience matches, its SKU is in stock on a shelf of that zone,
and neither the per-shopper nor the global caps and cooldowns forbid it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import ClassVar
from zoneinfo import ZoneInfo

from edge.config import Manifest
from edge.errors import CommandError
from edge.events import Event, EventClass
from rules.config import DAYS, OfferRule, OffersConfig
from rules.restock import RulesError

MAX_TOKEN = 64
MAX_TAGS = 16


@dataclass(frozen=True, slots=True, kw_only=True)
class OfferTriggered(Event):
    """An offer was shown to a shopper (no shopper token: only the offer, zone, SKU and time)."""

    TYPE: ClassVar[str] = "retail.offer.triggered.v1"
    CLASS: ClassVar[EventClass] = EventClass.TELEMETRY
    TOPIC: ClassVar[str] = "events/offers"

    offer_id: str
    zone: str
    sku: str


class SightingError(CommandError):
    """A sighting was refused; `status` is the HTTP status the API answers with."""

    def __init__(self, code: str, message: str, status: int = 422) -> None:
        super().__init__(code, message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Sighting:
    """A validated sighting."""

    shopper: str
    consent: bool
    zone: str | None
    beacon: tuple[str, ...] | None  # ("ibeacon", uuid, major, minor) or ("eddystone", namespace, instance)
    rssi: int | None
    time: datetime | None
    tags: tuple[str, ...]


def _norm_uuid(u: str) -> str:
    return u.replace("-", "").lower()


def parse_sighting(raw: object) -> Sighting:
    """Check a sighting request's shape; raise `SightingError` (422) saying what is wrong."""
    if not isinstance(raw, Mapping):
        raise SightingError("bad_request", "a sighting is a JSON object with shopper, consent and beacon or zone")
    shopper = raw.get("shopper")
    if not isinstance(shopper, str) or not 1 <= len(shopper) <= MAX_TOKEN or not shopper.isprintable():
        raise SightingError("bad_shopper", f"shopper must be an opaque token of 1 to {MAX_TOKEN} printable characters")
    consent = raw.get("consent")
    if not isinstance(consent, bool):
        raise SightingError("bad_consent", "consent must be true or false")
    zone = raw.get("zone")
    if zone is not None and (not isinstance(zone, str) or not 0 < len(zone) <= 64):
        raise SightingError("bad_zone", "zone must be a zone id")
    beacon: tuple[str, ...] | None = None
    b = raw.get("beacon")
    if b is not None:
        beacon = _parse_beacon(b)
    if beacon is None and zone is None:
        raise SightingError("bad_request", "give a beacon ({uuid, major, minor} or {namespace, instance}) or a zone")
    rssi = raw.get("rssi")
    if rssi is not None and (not isinstance(rssi, int) or isinstance(rssi, bool) or not -127 <= rssi <= 20):
        raise SightingError("bad_rssi", "rssi must be an integer in dBm between -127 and 20")
    t = raw.get("time")
    when: datetime | None = None
    if t is not None:
        try:
            when = datetime.fromisoformat(str(t).replace("Z", "+00:00"))
        except ValueError:
            when = None
        if when is None or when.tzinfo is None:
            raise SightingError("bad_time", "time must be RFC 3339 with an offset, e.g. 2026-01-05T10:00:00Z")
    tags = raw.get("tags", [])
    if not isinstance(tags, list) or len(tags) > MAX_TAGS or not all(isinstance(x, str) and len(x) <= 32 for x in tags):
        raise SightingError("bad_tags", f"tags must be a list of at most {MAX_TAGS} short strings")
    return Sighting(shopper, consent, zone, beacon, rssi, when, tuple(tags))


def _parse_beacon(b: object) -> tuple[str, ...]:
    if not isinstance(b, Mapping):
        raise SightingError("bad_beacon", "beacon must be an object")
    if "uuid" in b:
        u, major, minor = b.get("uuid"), b.get("major"), b.get("minor")
        ok_ints = all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 65535 for x in (major, minor))
        if not isinstance(u, str) or len(_norm_uuid(u)) != 32 or not ok_ints:
            raise SightingError("bad_beacon", "an iBeacon is {uuid: 36-char UUID, major: 0..65535, minor: 0..65535}")
        try:
            int(_norm_uuid(u), 16)
        except ValueError:
            raise SightingError("bad_beacon", "the beacon uuid is not hexadecimal") from None
        return ("ibeacon", _norm_uuid(u), str(major), str(minor))
    ns, inst = b.get("namespace"), b.get("instance")
    if not (isinstance(ns, str) and isinstance(inst, str) and len(ns) == 20 and len(inst) == 12):
        raise SightingError(
            "bad_beacon", "an Eddystone-UID beacon is {namespace: 20 hex digits, instance: 12 hex digits}"
        )
    return ("eddystone", ns.lower(), inst.lower())


# ---- compiled offers ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OfferBook:
    """Offers checked against the store, with beacon lookups and the store's time zone."""

    config: OffersConfig
    tz: ZoneInfo
    zones: frozenset[str]
    beacons: Mapping[tuple[str, ...], str]  # beacon key -> zone

    def zone_of(self, s: Sighting) -> str:
        """The zone a sighting is in; unknown beacon or zone -> SightingError 404."""
        if s.beacon is not None:
            zone = self.beacons.get(s.beacon)
            if zone is None:
                raise SightingError("unknown_beacon", "this beacon is not one of the store's beacons", 404)
            return zone
        assert s.zone is not None
        if s.zone not in self.zones:
            raise SightingError("unknown_zone", f"zone {s.zone!r} is not a zone of this store", 404)
        return s.zone


def compile_offers(manifest: Manifest, cfg: OffersConfig) -> OfferBook:
    """Check offers and beacons against the manifest's zones and catalog."""
    zones = frozenset(z.id for z in manifest.zones)
    skus = {c.sku for c in manifest.catalog}
    problems = [
        f"offers.beacons.{b.id}: zone {b.zone!r} is not under zones:" for b in cfg.beacons if b.zone not in zones
    ]
    for o in cfg.offers:
        if o.zone not in zones:
            problems.append(f"offers.offers.{o.id}: zone {o.zone!r} is not under zones:; add it or fix the id")
        if o.sku not in skus:
            problems.append(f"offers.offers.{o.id}: sku {o.sku!r} is not in the catalog")
    beacons: dict[tuple[str, ...], str] = {}
    # the store's beacons (manifest `beacons:`, drivers/ble) that are not staff badges, then offers.beacons
    store_beacons = [b for b in getattr(manifest, "beacons", []) if not getattr(b, "staff_badge", False)]
    for b in [*store_beacons, *cfg.beacons]:
        if b.uuid is not None:
            beacons[("ibeacon", _norm_uuid(b.uuid), str(b.major), str(b.minor))] = b.zone
        else:
            beacons[("eddystone", str(b.namespace).lower(), str(b.instance).lower())] = b.zone
    if problems:
        raise RulesError(problems)
    try:
        tz = ZoneInfo(manifest.store.timezone)
    except (KeyError, ValueError):
        tz = ZoneInfo("UTC")
    return OfferBook(cfg, tz, zones, beacons)


# ---- state and decision -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShopperState:
    """A consenting shopper, kept at most `retention_s` after the last sighting."""

    zone: str
    zone_since: datetime
    last_seen: datetime
    shown: tuple[tuple[str, datetime], ...] = ()  # (offer id, when), within retention


@dataclass(frozen=True, slots=True)
class OfferState:
    """Shoppers (by token) and the global trigger history of each offer (last hour)."""

    shoppers: Mapping[str, ShopperState] = field(default_factory=dict)
    triggered: Mapping[str, tuple[datetime, ...]] = field(default_factory=dict)


def purge(state: OfferState, now: datetime, retention_s: float) -> OfferState:
    """Forget shoppers not seen for `retention_s` and global history older than an hour."""
    cutoff = now - timedelta(seconds=retention_s)
    hour = now - timedelta(hours=1)
    shoppers = {k: v for k, v in state.shoppers.items() if v.last_seen > cutoff}
    triggered = {k: kept for k, v in state.triggered.items() if (kept := tuple(t for t in v if t > hour))}
    return OfferState(shoppers, triggered)


def on_schedule(rule: OfferRule, local: datetime) -> bool:
    """True when `local` (store time) is on one of the rule's days, between start and end (inclusive)."""
    if DAYS[local.weekday()] not in rule.schedule.days:
        return False
    minute = local.hour * 60 + local.minute
    sh, sm = (int(x) for x in rule.schedule.start.split(":"))
    eh, em = (int(x) for x in rule.schedule.end.split(":"))
    return sh * 60 + sm <= minute <= eh * 60 + em


def check_time(s: Sighting, now: datetime, skew_s: float, retention_s: float | None = None) -> None:
    """A sighting whose time is more than `skew_s` from now is stale (or from a wrong clock), and one older
    than `retention_s` would already have been forgotten: refuse both."""
    if s.time is None:
        return
    age = (now - s.time).total_seconds()
    if retention_s is not None and retention_s < skew_s and age > retention_s:
        raise SightingError(
            "stale_sighting",
            f"the sighting is older than the retention ({retention_s:g} s): send current sightings only",
            422,
        )
    if abs(age) > skew_s:
        raise SightingError("stale_sighting", f"the sighting's time is more than {skew_s:g} s from now", 422)


def decide(  # noqa: PLR0917 - the decision's inputs, in the order they are used
    book: OfferBook,
    state: OfferState,
    sighting: Sighting,
    zone: str,
    in_stock: Callable[[str, str], bool],
    now: datetime,
) -> tuple[OfferState, list[OfferRule]]:
    """Record a sighting and pick the offers to show; without consent, forget the shopper and offer nothing."""
    cfg = book.config
    state = purge(state, now, cfg.retention_s)
    if not sighting.consent:
        if sighting.shopper in state.shoppers:
            shoppers = dict(state.shoppers)
            del shoppers[sighting.shopper]
            state = replace(state, shoppers=shoppers)
        return state, []
    prev = state.shoppers.get(sighting.shopper)
    if prev is not None and prev.zone == zone and (now - prev.last_seen).total_seconds() <= cfg.max_gap_s:
        me = replace(prev, last_seen=now)
    else:
        me = ShopperState(zone, now, now, prev.shown if prev else ())
    dwell = (now - me.zone_since).total_seconds()
    local = now.astimezone(book.tz)
    chosen: list[OfferRule] = []
    triggered = dict(state.triggered)
    for rule in cfg.offers:
        if rule.zone != zone or dwell < rule.min_dwell_s or not on_schedule(rule, local):
            continue
        if rule.audience and not set(rule.audience) & set(sighting.tags):
            continue
        mine = [t for oid, t in me.shown if oid == rule.id]
        if len(mine) >= rule.per_shopper_max:
            continue
        if mine and (now - max(mine)).total_seconds() < rule.per_shopper_cooldown_s:
            continue
        everyone = triggered.get(rule.id, ())
        if len(everyone) >= rule.global_max_per_hour:
            continue
        if everyone and (now - max(everyone)).total_seconds() < rule.global_cooldown_s:
            continue
        if not in_stock(zone, rule.sku):
            continue  # never offer what is not on a shelf of the zone
        chosen.append(rule)
        me = replace(me, shown=(*me.shown, (rule.id, now)))
        triggered[rule.id] = (*everyone, now)
    shoppers = dict(state.shoppers)
    shoppers[sighting.shopper] = me
    return OfferState(shoppers, triggered), chosen
