"""Manifest sections of the rules engine: restock rules, shopper offers, alert webhooks, staff notifications.

Imports only `edge.configbase`, so `edge.config` can import these models without a cycle. Checks that
need the rest of the manifest (does this SKU exist, is max above the planogram capacity) happen when the
rules are compiled (`rules.restock.compile_rules`, `rules.offers.compile_offers`), which name the fix.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from edge.configbase import (
    Count,
    Ident,
    LongSeconds,
    PositiveCount,
    PositiveSeconds,
    Ref,
    Seconds,
    StrictModel,
    check_http_url,
)

_HHMM = r"^([01]\d|2[0-3]):[0-5]\d$"
_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")


def check_windows(v: list[str]) -> list[str]:
    """Quiet-hours windows: each 'HH:MM-HH:MM' (store-local; may wrap past midnight)."""
    for w in v:
        if not _WINDOW.match(w):
            raise ValueError(f"quiet hours window {w!r}: write 'HH:MM-HH:MM', e.g. '12:00-13:00'")
    return v


class RestockRule(StrictModel):
    """One level of restock settings; a field left unset is inherited from the level above."""

    min: Count | None = Field(default=None, description="low when the count stays at or below this")
    max: PositiveCount | None = Field(default=None, description="par level restocked to; never above capacity")
    min_days_of_cover: float | None = Field(
        default=None, ge=0, le=366, description="also low when stock / daily sales falls below this many days"
    )
    debounce_s: Seconds | None = Field(default=None, description="stay low this long before alerting")
    clear_margin: PositiveCount | None = Field(default=None, description="clear only at min + this margin")
    cooldown_s: Seconds | None = Field(default=None, description="no new alert for a cell sooner than this")
    escalate_after_s: Seconds | None = Field(default=None, description="escalate when not acknowledged")
    enabled: bool | None = Field(default=None, description="false turns restock alerts off at this level")

    @model_validator(mode="after")
    def _min_below_max(self) -> RestockRule:
        if self.min is not None and self.max is not None and self.min >= self.max:
            raise ValueError(f"min ({self.min}) must be below max ({self.max}): lower min or raise max")
        return self


class RestockDefaults(RestockRule):
    """Store-wide defaults: the top of the chain defaults -> category -> shelf -> sku -> shelf x sku."""

    min: Count | None = 2
    debounce_s: Seconds | None = 30.0
    clear_margin: PositiveCount | None = 1
    cooldown_s: Seconds | None = 600.0
    escalate_after_s: Seconds | None = 900.0
    enabled: bool | None = True


class ShelfSkuRule(RestockRule):
    """Settings for one SKU on one shelf (the most specific level)."""

    shelf: Ident
    sku: Ident


class RulesBody(StrictModel):
    """The rules themselves, inline in the manifest or in the separate file named by `rules.file`."""

    defaults: RestockDefaults = RestockDefaults()
    categories: dict[str, RestockRule] = Field(default_factory=dict, description="by catalog category")
    shelves: dict[str, RestockRule] = Field(default_factory=dict, description="by shelf (every SKU on it)")
    skus: dict[str, RestockRule] = Field(default_factory=dict, description="by SKU")
    cells: list[ShelfSkuRule] = Field(default_factory=list, description="by shelf x SKU")
    backroom: dict[str, Count] = Field(
        default_factory=dict, description="known backroom quantity per SKU (caps the restock quantity)"
    )
    quiet_hours: list[str] = Field(
        default_factory=list, max_length=48, description="'HH:MM-HH:MM' store-local windows with no new alerts"
    )
    device_fault_grace_s: Seconds = Field(default=60.0, description="offline/fault this long -> alert")
    lane_fault_hold_s: Seconds = Field(
        default=60.0, description="a weight-shelf lane fault or unknown object held this long -> staff alert"
    )
    mute_max_s: PositiveSeconds = Field(
        default=1800.0, description="a restock mute ends after this at the latest (a mute asking for longer is "
        "refused); at most one week"
    )
    expire_after_s: Seconds = Field(default=8 * 3600.0, description="an unresolved alert expires after this")
    velocity_window_s: LongSeconds = Field(default=7 * 86400.0, description="sales velocity look-back, <= 1 year")
    unreserved_stock: bool = Field(
        default=True, description="judge low and out of stock on the units not reserved for online orders (5 on "
        "the shelf with 4 reserved is 1 for walk-in shoppers); false: on the whole count")

    @field_validator("quiet_hours")
    @classmethod
    def _windows(cls, v: list[str]) -> list[str]:
        return check_windows(v)

    def references(self) -> list[Ref]:
        """Ids these rules name (categories, shelves, SKUs, shelf x SKU cells), checked against the manifest."""
        refs = [Ref(("categories", c), "category", c) for c in self.categories]
        refs += [Ref(("shelves", s), "shelf", s) for s in self.shelves]
        refs += [Ref(("skus", s), "sku", s) for s in self.skus]
        refs += [Ref(("backroom", s), "sku", s) for s in self.backroom]
        for i, c in enumerate(self.cells):
            refs += [Ref(("cells", i, "shelf"), "shelf", c.shelf), Ref(("cells", i, "sku"), "sku", c.sku),
                     Ref(("cells", i, "sku"), "cell", c.sku, shelf=c.shelf)]
        return refs


class RulesConfig(RulesBody):
    """`rules:` in the manifest: inline rules, or `file:` naming a YAML file with the same fields."""

    file: Path | None = Field(default=None, description="YAML file with the rules; reloaded when it changes")
    watch_interval_s: float = Field(default=2.0, gt=0, le=3600, description="how often the rules file is checked")


def parse_window(window: str) -> tuple[int, int]:
    """'HH:MM-HH:MM' -> (start minute, end minute) of the day."""
    m = _WINDOW.match(window)
    if not m:
        raise ValueError(f"bad window {window!r}")
    h1, m1, h2, m2 = (int(x) for x in m.groups())
    return h1 * 60 + m1, h2 * 60 + m2


class BeaconConfig(StrictModel):
    """A store beacon the shopper app may report: iBeacon (uuid/major/minor) or Eddystone (namespace/instance)."""

    id: Ident
    zone: Ident
    uuid: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$")
    major: int | None = Field(default=None, ge=0, le=65535)
    minor: int | None = Field(default=None, ge=0, le=65535)
    namespace: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{20}$")
    instance: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{12}$")

    @model_validator(mode="after")
    def _one_kind(self) -> BeaconConfig:
        ibeacon = self.uuid is not None and self.major is not None and self.minor is not None
        eddy = self.namespace is not None and self.instance is not None
        if ibeacon == eddy:
            raise ValueError("give either uuid + major + minor (iBeacon) or namespace + instance (Eddystone)")
        return self


AlertTransition = Literal["opened", "acknowledged", "escalated", "updated", "resolved", "expired", "snoozed",
                          "unsnoozed"]
"""Alert transitions a webhook can subscribe to (rules/alerts.py `TRANSITION`)."""
_DEFAULT_TRANSITIONS: tuple[AlertTransition, ...] = ("opened", "acknowledged", "escalated", "resolved", "expired")

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class Schedule(StrictModel):
    """When an offer runs: store-local days and hours."""

    days: list[Day] = Field(default_factory=lambda: list(DAYS))
    start: str = Field(default="00:00", pattern=_HHMM)
    end: str = Field(default="23:59", pattern=_HHMM, description="inclusive minute")


class OfferRule(StrictModel):
    """One offer: shown to a consenting shopper who dwells in `zone` while `sku` is on a shelf there."""

    id: Ident
    zone: Ident
    sku: Ident
    title: str = Field(min_length=1, max_length=120)
    text: str = Field(default="", max_length=500)
    min_dwell_s: Seconds = Field(default=20.0, description="dwell in the zone before the offer fires")
    schedule: Schedule = Schedule()
    audience: list[str] = Field(default_factory=list, description="tags required (any of); empty = everyone")
    per_shopper_max: PositiveCount = Field(default=1, description="times one shopper sees it (within retention)")
    per_shopper_cooldown_s: Seconds = 600.0
    global_max_per_hour: PositiveCount = 100
    global_cooldown_s: Seconds = 0.0

    def as_json(self) -> dict[str, Any]:
        """The offer as the shopper app and GET /api/v1/offers see it (not its limits)."""
        return {
            "id": self.id,
            "zone": self.zone,
            "sku": self.sku,
            "title": self.title,
            "text": self.text,
            "min_dwell_s": self.min_dwell_s,
            "schedule": self.schedule.model_dump(),
            "audience": list(self.audience),
        }


class OffersConfig(StrictModel):
    """`offers:` in the manifest: beacons, offer rules and the privacy retention."""

    retention_s: PositiveSeconds = Field(default=900.0, description="shopper tokens and sightings are forgotten after")
    max_gap_s: Seconds = Field(default=60.0, description="sightings further apart restart the dwell")
    max_clock_skew_s: Seconds = Field(default=120.0, description="a sighting's time may be this far off now")
    beacons: list[BeaconConfig] = Field(default_factory=list)
    offers: list[OfferRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> OffersConfig:
        for kind, ids in (("beacon", [b.id for b in self.beacons]), ("offer", [o.id for o in self.offers])):
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            if dupes:
                raise ValueError(f"duplicate {kind} id(s) {dupes}: every {kind} id must be unique")
        return self

    def references(self) -> list[Ref]:
        """Zones and SKUs the beacons and offers name, checked against the manifest."""
        refs = [Ref(("beacons", i, "zone"), "zone", b.zone) for i, b in enumerate(self.beacons)]
        for i, o in enumerate(self.offers):
            refs += [Ref(("offers", i, "zone"), "zone", o.zone), Ref(("offers", i, "sku"), "sku", o.sku)]
        return refs


class DeliveryPolicy(StrictModel):
    """How a durable delivery (webhook or staff-messaging channel) is retried (rules/webhooks.py worker)."""

    max_attempts: int = Field(default=8, ge=1, le=100, description="attempts before giving up, at most 100")
    backoff_s: PositiveSeconds = Field(default=2.0, description="first retry delay; doubles per attempt")
    backoff_max_s: PositiveSeconds = Field(default=600.0, description="longest retry delay, at most one week")
    timeout_s: float = Field(default=5.0, gt=0, le=300, description="at most 300 s")


class WebhookConfig(DeliveryPolicy):
    """An HTTP endpoint that receives alert transitions as signed JSON POSTs."""

    id: Ident
    url: str = Field(pattern=r"^https?://", description="http(s) URL of the receiver")
    secret: str = Field(min_length=16, description="HMAC-SHA256 key; write ${ENV_VAR} to keep it out of the file")
    events: list[AlertTransition] = Field(
        default_factory=lambda: list(_DEFAULT_TRANSITIONS),
        description="alert transitions to send (rules/alerts.py TRANSITION)",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return check_http_url(v, "https://alerts.example.com/hook")


# ---- staff notifications (rules/notify.py, docs/notifications.md) ------------------------------------

ChannelKind = Literal["wecom", "dingtalk", "feishu", "slack"]
"""Staff messaging tools a channel posts to: WeCom group robot, DingTalk custom robot, Feishu/Lark custom bot,
Slack incoming webhook."""
Lang = Literal["zh-CN", "en"]
"""Languages of the message catalog (rules/locale)."""
Severity = Literal["info", "warning", "urgent"]
"""Alert severities, lowest first (rules/notify.py SEVERITY maps each alert kind to one)."""
_NOTIFY_DEFAULT_EVENTS: tuple[AlertTransition, ...] = ("opened", "escalated", "resolved", "unsnoozed")
RATE_PER_MINUTE_MAX = 600
"""Most messages a channel may send per minute (the tools allow far fewer: WeCom and DingTalk 20)."""


class NotifyChannel(DeliveryPolicy):
    """One staff group chat: alerts routed by zone and kind, outside quiet hours, at most rate_per_minute."""

    id: Ident
    kind: ChannelKind = Field(description="wecom | dingtalk | feishu | slack")
    url: str = Field(pattern=r"^https?://", description="the robot's webhook URL as the tool shows it")
    secret: str | None = Field(
        default=None, min_length=1, max_length=256,
        description="dingtalk/feishu signing secret (the robot's 'sign' security setting); write ${ENV_VAR}",
    )
    lang: Lang | None = Field(default=None, description="zh-CN or en; default notifications.lang")
    zones: list[Ident] = Field(default_factory=list, max_length=1000,
                               description="only alerts of shelves in these zones; empty = every alert")
    kinds: list[Ident] = Field(default_factory=list, max_length=100,
                               description="only these alert kinds (e.g. out_of_stock); empty = every kind")
    min_severity: Severity = Field(default="info", description="only alerts at least this severe")
    events: list[AlertTransition] = Field(
        default_factory=lambda: list(_NOTIFY_DEFAULT_EVENTS), description="alert transitions to post"
    )
    quiet_hours: list[str] = Field(
        default_factory=list, max_length=48, description="'HH:MM-HH:MM' store-local windows with no messages"
    )
    quiet_pass_kinds: list[Ident] = Field(
        default_factory=list, max_length=100, description="alert kinds posted even in quiet hours (e.g. out_of_stock)"
    )
    rate_per_minute: int = Field(
        default=20, ge=1, le=RATE_PER_MINUTE_MAX,
        description="most messages per minute (WeCom and DingTalk robots take 20); more wait their turn",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return check_http_url(v, "https://oapi.dingtalk.com/robot/send?access_token=...")

    @field_validator("quiet_hours")
    @classmethod
    def _windows(cls, v: list[str]) -> list[str]:
        return check_windows(v)

    @field_validator("kinds", "quiet_pass_kinds")
    @classmethod
    def _kinds(cls, v: list[str]) -> list[str]:
        from rules.actions import KINDS, PICK_TASK  # only dataclasses: no cycle

        for k in v:
            if k not in (*KINDS, PICK_TASK):
                raise ValueError(f"unknown alert kind {k!r}: use one of {', '.join((*KINDS, PICK_TASK))}")
        return v

    @model_validator(mode="after")
    def _secret(self) -> NotifyChannel:
        if self.secret is not None and self.kind in ("wecom", "slack"):
            raise ValueError(f"a {self.kind} webhook has no signing secret (its URL is the credential): remove "
                             "secret, and keep the URL in ${ENV_VAR}")
        return self


class NotificationsConfig(StrictModel):
    """`notifications:` in the manifest: staff chat channels and the store-wide language and dashboard link."""

    lang: Lang = Field(default="zh-CN", description="language of channels that set none")
    dashboard_url: str | None = Field(default=None, description="the staff dashboard's URL, linked in messages")
    channels: list[NotifyChannel] = Field(default_factory=list, max_length=100)

    @field_validator("dashboard_url")
    @classmethod
    def _dash(cls, v: str | None) -> str | None:
        return None if v is None else check_http_url(v, "https://store-12.example.com/")

    @model_validator(mode="after")
    def _unique(self) -> NotificationsConfig:
        ids = [c.id for c in self.channels]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate channel id(s) {dupes}: every channel id must be unique")
        return self

    def references(self) -> list[Ref]:
        """Zones the channels route by, checked against the manifest."""
        return [Ref(("channels", i, "zones", j), "zone", z)
                for i, c in enumerate(self.channels) for j, z in enumerate(c.zones)]
