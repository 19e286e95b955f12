"""Staff notifications where staff are: alert transitions posted to WeCom, DingTalk, Feishu/Lark and Slack chats.

Each channel of the manifest's `notifications:` gets one `webhook_deliveries` row per alert transition it
wants (routing by zone, kind and severity; quiet hours in the store's time zone), written in the same commit
as the alert event, so a restart never loses one; rules/webhooks.py's `WebhookWorker` sends them with its
backoff, and a `ChannelTarget` here signs each attempt and reads the tool's answer. The texts come from one
gettext catalog (rules/locale/<lang>/LC_MESSAGES/alerts.po, compiled to .mo) in zh-CN and en; product,
shelf and zone names from the manifest.

Vendor documentation each format follows (cited again where used):
- WeCom group robot: https://developer.work.weixin.qq.com/document/path/91770 (群机器人配置说明): POST JSON
  {"msgtype": "markdown", "markdown": {"content"}} (content at most 4096 bytes, UTF-8), answer
  {"errcode": 0, "errmsg": "ok"}; at most 20 messages per minute per robot (errcode 45009 when exceeded).
- DingTalk custom robot: https://open.dingtalk.com/document/robots/custom-robot-access and
  https://open.dingtalk.com/document/orgapp/custom-bot-send-message-type : {"msgtype": "markdown",
  "markdown": {"title", "text"}}; with the "加签" security setting the URL carries `timestamp` (ms) and
  `sign` = urlencode(base64(HmacSHA256(key=secret, msg=timestamp + "\n" + secret))); the timestamp must be
  within one hour of DingTalk's clock. Answer {"errcode": 0, "errmsg": "ok"}; 20 messages per minute.
- Feishu/Lark custom bot: https://open.feishu.cn/document/client-docs/bot-v3/add-custom-bot : {"msg_type":
  "interactive", "card": {...}} and, with signature verification on, "timestamp" (s) and "sign" =
  base64(HmacSHA256(key=timestamp + "\n" + secret, msg="")) in the body (within one hour). Answer
  {"code": 0, "msg": "success"}; failures carry another `code` (e.g. 19021 sign match fail, 11232 rate).
- Slack incoming webhook: https://api.slack.com/messaging/webhooks : {"text", "blocks"} (Block Kit); answer
  HTTP 200 "ok", errors as 4xx with a text (400 invalid_payload, 403 action_prohibited, 404
  channel_not_found, 410 channel_is_archived), 429 with Retry-After when rate limited
  (https://api.slack.com/docs/rate-limits: about one message per second).
"""

from __future__ import annotations

import base64
import gettext
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import orjson

from edge.envelope import dumps
from edge.runtime import Upsert
from rules.actions import (
    BEACON_BATTERY_LOW,
    BEACON_SILENT,
    DEVICE_FAULT,
    DEVICE_OFFLINE,
    LANE_FAULT,
    LOW_STOCK,
    OUT_OF_STOCK,
    PICK_TASK,
    UNKNOWN_OBJECT,
)
from rules.alerts import AlertAcknowledged, AlertEscalated, AlertSnoozed, Transition
from rules.config import NotificationsConfig, NotifyChannel, Severity, parse_window
from rules.restock import _in_window as in_window  # the restock rules' quiet-hours test (wraps midnight)
from rules.webhooks import TABLE, Request, Verdict, http_verdict

if TYPE_CHECKING:
    from edge.config import Manifest
    from edge.orders import OrderReserved

PREFIX = "im:"
"""A channel's deliveries are rows whose `webhook` is `im:<channel id>` (a webhook id never has a ':')."""
LOCALE_DIR = Path(__file__).with_name("locale")
DOMAIN = "alerts"
GETTEXT_LANG = {"zh-CN": "zh_CN", "en": "en"}

SEVERITY: dict[str, Severity] = {
    OUT_OF_STOCK: "urgent",
    LOW_STOCK: "warning",
    DEVICE_OFFLINE: "warning",
    DEVICE_FAULT: "warning",
    LANE_FAULT: "warning",
    UNKNOWN_OBJECT: "info",
    BEACON_BATTERY_LOW: "info",
    BEACON_SILENT: "warning",
    PICK_TASK: "warning",
}
"""Severity of each alert kind (a kind not listed is `info`)."""
RANK: dict[str, int] = {"info": 0, "warning": 1, "urgent": 2}

# gettext.NullTranslations.gettext marks the msgids for extraction (xgettext -k_ rules/notify.py)
_KIND_TEXT = {
    LOW_STOCK: "Low stock",
    OUT_OF_STOCK: "Out of stock",
    DEVICE_OFFLINE: "Device offline",
    DEVICE_FAULT: "Device fault",
    LANE_FAULT: "Lane fault",
    UNKNOWN_OBJECT: "Unknown object on shelf",
    BEACON_BATTERY_LOW: "Beacon battery low",
    BEACON_SILENT: "Beacon silent",
}
_SEVERITY_TEXT = {"urgent": "Urgent", "warning": "Warning", "info": "Info"}
_TRANSITION_TEXT = {"opened": "New alert", "updated": "Updated", "resolved": "Resolved", "expired": "Expired",
                    "unsnoozed": "Back after a snooze"}
NAME_MAX = 64
"""Names from the manifest are cut to this many characters in a message."""
WECOM_CONTENT_MAX_BYTES = 4096


@cache
def catalog(lang: str) -> gettext.GNUTranslations:
    """The compiled message catalog of `lang` (zh-CN | en); a missing .mo is an error, not English."""
    return gettext.translation(DOMAIN, LOCALE_DIR, languages=[GETTEXT_LANG[lang]])


# ---- what a message says ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    """A notification before it is put into a tool's format: title, labelled fields, urgency and a link."""

    title: str
    severity: Severity
    fields: tuple[tuple[str, str], ...]
    link: str | None
    link_text: str
    closed: bool = False  # resolved or expired: drawn in the tools' "done" colour, not the alert's urgency


def _clean(s: str) -> str:
    """A manifest name or staff name as one safe line: no control characters or line breaks, no `<`/`>`
    (which would open WeCom <font>, Feishu <at id=all> or Slack <!channel> tags), at most NAME_MAX chars."""
    s = re.sub(r"[\x00-\x1f\x7f\u2028\u2029]+", " ", s).replace("<", "\u2039").replace(">", "\u203a").strip()
    return s[:NAME_MAX] + ("…" if len(s) > NAME_MAX else "")


def _named(obj: object, lang: str, fallback: str) -> str:
    """An object's display name in `lang`: `names[lang]` when the manifest gives one, else `name`, else the id."""
    names = getattr(obj, "names", None)
    if isinstance(names, Mapping) and isinstance(names.get(lang), str) and names[lang]:
        return _clean(names[lang])
    name = getattr(obj, "name", "")
    return _clean(name if isinstance(name, str) and name else fallback)


def compose(t: Transition, m: Manifest, lang: str, dashboard_url: str | None) -> Message:
    """The message for one alert transition in `lang`, with names from the manifest."""
    _ = catalog(lang).gettext
    a, ev = t.alert, t.event
    severity = SEVERITY.get(a.kind, "info")
    kind = _(_KIND_TEXT[a.kind]) if a.kind in _KIND_TEXT else _clean(a.kind)
    if isinstance(ev, AlertAcknowledged):
        status = _("Acknowledged by {by}").format(by=_clean(ev.by))
    elif isinstance(ev, AlertEscalated):
        status = _("Escalated (level {level})").format(level=ev.level)
    elif isinstance(ev, AlertSnoozed):
        status = _("Snoozed by {by} until {time}").format(by=_clean(ev.by),
                                                         time=local_time(ev.until, m.store.timezone))
    else:
        status = _(_TRANSITION_TEXT.get(ev.TRANSITION, "Updated"))
    fields: list[tuple[str, str]] = [(_("Store"), _named(m.store, lang, m.store.id))]
    subject = ""
    if a.sku is not None:
        subject = _named(m.sku(a.sku), lang, a.sku)
        fields.append((_("Product"), subject))
    shelf = m.shelf(a.shelf) if a.shelf is not None else None
    if a.shelf is not None:
        fields.append((_("Shelf"), _named(shelf, lang, a.shelf)))
        subject = subject or _named(shelf, lang, a.shelf)
    if shelf is not None:
        zone = next((z for z in m.zones if z.id == shelf.zone), None)
        fields.append((_("Zone"), _named(zone, lang, shelf.zone)))
    if a.device is not None:
        fields.append((_("Device"), _clean(a.device)))
        subject = subject or _clean(a.device)
    count = getattr(ev, "count", a.count)
    if count is not None:
        threshold = a.threshold
        fields.append((_("Count"), _("{count} (minimum {threshold})").format(count=count, threshold=threshold)
                       if threshold is not None else str(count)))
    if a.restock_qty and ev.TRANSITION in ("opened", "escalated", "updated"):
        fields.append((_("Restock"), _("{qty} units").format(qty=a.restock_qty)))
    fields.append((_("Urgency"), _(_SEVERITY_TEXT[severity])))
    fields.append((_("Status"), status))
    fields.append((_("Time"), local_time(ev.time, m.store.timezone)))
    # a chat's list shows the title only: a live alert leads with its urgency, a taken or closed one with its
    # status ("【已解决】缺货:…"), so a resolution never reads as a new alert
    live = ev.TRANSITION in ("opened", "escalated", "updated", "unsnoozed")
    title = _("{urgency} · {kind}: {subject}").format(urgency=_(_SEVERITY_TEXT[severity]) if live else status,
                                                      kind=kind, subject=subject or "-")
    return Message(title, severity, tuple(fields), dashboard_url, _("Open dashboard"),
                   closed=ev.TRANSITION in ("resolved", "expired"))


def compose_picks(ev: OrderReserved, m: Manifest, lang: str, dashboard_url: str | None) -> Message:
    """The pick notice of a reserved order in `lang` (the title "Pick: 2 \u00d7 Cola 330 ml from shelf-a1 for order
    8812", in zh-CN "拣货: ..."), one field per task with its lane."""
    _ = catalog(lang).gettext
    fields: list[tuple[str, str]] = [(_("Store"), _named(m.store, lang, m.store.id)), (_("Order"), _clean(ev.order_id))]
    items: list[str] = []
    for t in ev.tasks:
        product = _named(m.sku(str(t["sku"])), lang, str(t["sku"]))
        # a back-room task (no lane) by the place's name; a shelf by its id: what its SHELF: label shows
        place = None if t["lane"] else m.backroom.location(str(t["shelf"]))
        shelf = _named(place, lang, place.id) if place is not None else _clean(str(t["shelf"]))
        item = _("{qty} × {product} from {shelf}").format(qty=t["qty"], product=product, shelf=shelf)  # noqa: RUF001
        items.append(item)
        if place is None:
            item = _("{qty} × {product} from {shelf} (lane {lane})").format(  # noqa: RUF001
                qty=t["qty"], product=product, shelf=shelf, lane=_clean(str(t["lane"])))
        fields.append((_("Pick"), item))
    fields.append((_("Mode"), _("Pickup in store") if ev.mode == "pickup" else _("Ship from store")))
    fields.append((_("Due"), local_time(ev.due, m.store.timezone)))
    title = _("Pick: {items} for order {order}").format(items="; ".join(items), order=_clean(ev.order_id))
    return Message(title, SEVERITY[PICK_TASK], tuple(fields), dashboard_url, _("Open dashboard"))


# ---- the tools' formats ---------------------------------------------------------------------------------

_WECOM_COLOR = {"urgent": "warning", "warning": "warning", "info": "info"}  # the three colours WeCom has
_FEISHU_TEMPLATE = {"urgent": "red", "warning": "orange", "info": "blue"}
_SLACK_EMOJI = {"urgent": ":red_circle:", "warning": ":large_orange_circle:", "info": ":large_blue_circle:"}
# a closed alert: WeCom's green (info), Feishu's green header, Slack's check mark; the Urgency field still
# gives the alert's own severity
_CLOSED = {"wecom": "info", "feishu": "green", "slack": ":white_check_mark:"}


def _markdown_lines(msg: Message) -> list[str]:
    return [f"**{label}**: {value}" for label, value in msg.fields]


def _clip_utf8(s: str, max_bytes: int) -> str:
    b = s.encode()
    return s if len(b) <= max_bytes else b[: max_bytes - 3].decode(errors="ignore") + "…"


def _slack_escape(s: str) -> str:
    # https://api.slack.com/reference/surfaces/formatting#escaping: & < > are control characters
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render(kind: str, msg: Message) -> dict[str, Any]:
    """The JSON body a tool documents for a markdown / card message (signatures are added per attempt)."""
    if kind == "wecom":  # 群机器人配置说明, markdown类型: content <= 4096 bytes; <font color="info|comment|warning">
        head = f'### <font color="{_CLOSED[kind] if msg.closed else _WECOM_COLOR[msg.severity]}">{msg.title}</font>'
        link = [f"[{msg.link_text}]({msg.link})"] if msg.link else []
        content = "\n".join([head, *(f"> {line}" for line in _markdown_lines(msg)), *link])
        return {"msgtype": "markdown", "markdown": {"content": _clip_utf8(content, WECOM_CONTENT_MAX_BYTES)}}
    if kind == "dingtalk":  # 自定义机器人发送消息的消息类型, markdown类型: title (conversation list) + text
        link = ["", f"[{msg.link_text}]({msg.link})"] if msg.link else []
        text = "\n\n".join([f"#### {msg.title}", *_markdown_lines(msg), *link])
        return {"msgtype": "markdown", "markdown": {"title": msg.title, "text": text}}
    if kind == "feishu":  # 自定义机器人使用指南, 发送消息卡片: msg_type interactive + card (header, elements)
        elements: list[dict[str, Any]] = [
            {"tag": "div", "text": {"tag": "lark_md", "content": "\n".join(_markdown_lines(msg))}}
        ]
        if msg.link:
            elements.append({"tag": "action", "actions": [{
                "tag": "button", "type": "primary", "url": msg.link,
                "text": {"tag": "plain_text", "content": msg.link_text},
            }]})
        return {"msg_type": "interactive", "card": {
            "config": {"wide_screen_mode": True},
            "header": {"template": _CLOSED[kind] if msg.closed else _FEISHU_TEMPLATE[msg.severity],
                       "title": {"tag": "plain_text", "content": msg.title}},
            "elements": elements,
        }}
    if kind == "slack":  # Block Kit: header plain_text <= 150 chars, section fields <= 10 of <= 2000 chars each
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": {"type": "plain_text", "text": msg.title[:150], "emoji": True}},
            {"type": "section", "fields": [
                {"type": "mrkdwn", "text": f"*{_slack_escape(label)}*\n{_slack_escape(value)}"[:2000]}
                for label, value in msg.fields[:10]
            ]},
        ]
        if msg.link:
            blocks.append({"type": "actions", "elements": [{
                "type": "button", "url": msg.link, "text": {"type": "plain_text", "text": msg.link_text[:75]},
            }]})
        emoji = _CLOSED[kind] if msg.closed else _SLACK_EMOJI[msg.severity]
        return {"text": f"{emoji} {_slack_escape(msg.title)}", "blocks": blocks}
    raise ValueError(f"unknown channel kind {kind!r}")


def dingtalk_sign(secret: str, timestamp_ms: str) -> str:
    """DingTalk's `sign` before URL encoding: base64(HmacSHA256(key=secret, msg=timestamp + "\\n" + secret))."""
    mac = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def feishu_sign(secret: str, timestamp_s: str) -> str:
    """Feishu's `sign`: base64(HmacSHA256(key=timestamp + "\\n" + secret, msg=b""))."""
    mac = hmac.new(f"{timestamp_s}\n{secret}".encode(), b"", hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


# ---- routing (pure: the engine calls it for every transition) --------------------------------------------


class Notifier:
    """Turns alert transitions into pending (or quiet-hours `suppressed`) delivery rows, one per channel."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.config: NotificationsConfig = getattr(manifest, "notifications", None) or NotificationsConfig()
        self.tz = ZoneInfo(manifest.store.timezone)
        self._quiet = {c.id: tuple(parse_window(w) for w in c.quiet_hours) for c in self.config.channels}
        self._zone_of_shelf = {s.id: s.zone for s in manifest.shelves}
        self._zones_of_device: dict[str, frozenset[str]] = {}
        for d in manifest.devices:
            shelves = {r.id if r.kind == "shelf" else r.shelf for r in d.references() if r.kind in
                       ("shelf", "lane", "cell")}
            self._zones_of_device[d.id] = frozenset(self._zone_of_shelf[s] for s in shelves
                                                    if s is not None and s in self._zone_of_shelf)

    def zones(self, t: Transition) -> frozenset[str]:
        """The zones an alert is in: its shelf's, else those of the shelves its device measures."""
        a = t.alert
        if a.shelf is not None and a.shelf in self._zone_of_shelf:
            return frozenset({self._zone_of_shelf[a.shelf]})
        return self._zones_of_device.get(a.device or "", frozenset())

    def decide(self, c: NotifyChannel, t: Transition) -> str | None:
        """None (the channel does not want it), "pending" (send) or "suppressed" (quiet hours)."""
        a, ev = t.alert, t.event
        if ev.TRANSITION not in c.events or (c.kinds and a.kind not in c.kinds):
            return None
        if RANK[SEVERITY.get(a.kind, "info")] < RANK[c.min_severity]:
            return None
        if c.zones and not (self.zones(t) & set(c.zones)):
            return None
        local = ev.time.astimezone(self.tz)
        minute = local.hour * 60 + local.minute
        if a.kind not in c.quiet_pass_kinds and any(in_window(minute, s, e) for s, e in self._quiet[c.id]):
            return "suppressed"
        return "pending"

    def pick_rows(self, ev: OrderReserved, new_id: Callable[[], str]) -> list[Upsert]:
        """One delivery row per channel that wants the pick tasks of a reserved order (kind `pick_task`,
        severity warning; routed by the zones of the tasks' shelves and quiet hours like an alert)."""
        out: list[Upsert] = []
        zones = {self._zone_of_shelf.get(str(t["shelf"])) for t in ev.tasks}
        local = ev.time.astimezone(self.tz)
        minute = local.hour * 60 + local.minute
        for c in self.config.channels:
            if (c.kinds and PICK_TASK not in c.kinds) or RANK[SEVERITY[PICK_TASK]] < RANK[c.min_severity] \
                    or (c.zones and not zones & set(c.zones)):  # fmt: skip
                continue
            quiet = PICK_TASK not in c.quiet_pass_kinds and any(in_window(minute, a, b) for a, b in self._quiet[c.id])
            msg = compose_picks(ev, self.manifest, c.lang or self.config.lang, self.config.dashboard_url)
            out.append(Upsert(TABLE, {
                "id": new_id(), "webhook": PREFIX + c.id, "alert_id": f"order:{ev.order_id}", "transition": "pick",
                "body": dumps(render(c.kind, msg)).decode(), "state": "suppressed" if quiet else "pending",
                "attempts": 0, "next_at": ev.time.timestamp(), "created": ev.time.isoformat(), "last_status": None,
                "last_error": "quiet hours" if quiet else None,
            }))  # fmt: skip
        return out

    def rows(self, t: Transition, new_id: Callable[[], str]) -> list[Upsert]:
        """One delivery row per channel that wants this transition (same commit as the alert event)."""
        out: list[Upsert] = []
        for c in self.config.channels:
            state = self.decide(c, t)
            if state is None:
                continue
            msg = compose(t, self.manifest, c.lang or self.config.lang, self.config.dashboard_url)
            ev = t.event
            out.append(Upsert(TABLE, {
                "id": new_id(),
                "webhook": PREFIX + c.id,
                "alert_id": t.alert.id,
                "transition": ev.TRANSITION,
                "body": dumps(render(c.kind, msg)).decode(),
                "state": state,
                "attempts": 0,
                "next_at": ev.time.timestamp(),
                "created": ev.time.isoformat(),
                "last_status": None,
                "last_error": "quiet hours" if state == "suppressed" else None,
            }))
        return out


# ---- sending (a rules.webhooks.Target per channel) -------------------------------------------------------

# errcodes that mean "try again later" (everything else non-zero is a configuration or content error):
# WeCom -1 system busy, 45009 api freq out of limit (全局错误码, developer.work.weixin.qq.com/document/path/90313);
# DingTalk -1 system busy, 130101 send too fast (custom robot FAQ / 错误码); Feishu 11232 frequency limited.
_RETRY_CODES = {"wecom": {-1, 45009}, "dingtalk": {-1, 130101}, "feishu": {11232}}


def _answer_code(kind: str, text: str) -> tuple[int | None, str]:
    """(code, message) of a WeCom/DingTalk (`errcode`/`errmsg`) or Feishu (`code`/`msg`) JSON answer."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None, text[:100]
    if not isinstance(data, dict):
        return None, text[:100]
    key, msg_key = ("code", "msg") if kind == "feishu" else ("errcode", "errmsg")
    code = data.get(key, data.get("StatusCode") if kind == "feishu" else None)  # older Feishu bots: StatusCode
    msg = data.get(msg_key, data.get("StatusMessage", ""))
    return (code if isinstance(code, int) and not isinstance(code, bool) else None), str(msg)[:200]


def channel_verdict(kind: str, status: int, headers: Mapping[str, str], text: str) -> Verdict:
    """What a tool's answer means: the HTTP status first, then (WeCom, DingTalk, Feishu) the JSON code in a
    200 answer, then (Slack) the documented "ok" body."""
    base = http_verdict(status, headers)
    if kind == "slack":
        if base.ok and text.strip() != "ok":
            return Verdict(False, f"HTTP {status} {text[:100]!r} (Slack answers 'ok')")
        return base if base.ok else Verdict(False, f"{base.error} {text[:100]}".strip(), base.permanent,
                                            base.retry_after_s)
    code, msg = _answer_code(kind, text)
    if not base.ok:
        detail = f" code {code}: {msg}" if code is not None else ""
        return Verdict(False, f"{base.error}{detail}", base.permanent, base.retry_after_s)
    if code == 0:
        return Verdict(True)
    if code is None:  # a 200 that is not the tool's JSON (a proxy's page?): try again
        return Verdict(False, f"HTTP {status}: not the documented JSON answer: {msg!r}")
    name = "code" if kind == "feishu" else "errcode"
    return Verdict(False, f"{name} {code}: {msg}", permanent=code not in _RETRY_CODES[kind])


class ChannelTarget:
    """Sends one channel's stored messages: signs DingTalk (URL) and Feishu (body) per attempt."""

    def __init__(self, channel: NotifyChannel) -> None:
        self.channel = channel

    @property
    def policy(self) -> NotifyChannel:
        """The channel's retry policy."""
        return self.channel

    @property
    def rate_per_minute(self) -> int:
        """The channel's rate limit."""
        return self.channel.rate_per_minute

    def request(self, row: Mapping[str, Any], now: float) -> Request:
        """The stored body, signed for this moment where the tool wants a signature."""
        c = self.channel
        body = str(row["body"]).encode()
        url = c.url
        if c.secret is not None and c.kind == "dingtalk":
            ts = str(int(now * 1000))  # milliseconds
            url += ("&" if "?" in url else "?") + urlencode({"timestamp": ts, "sign": dingtalk_sign(c.secret, ts)})
        elif c.secret is not None and c.kind == "feishu":
            ts = str(int(now))  # seconds
            body = dumps({"timestamp": ts, "sign": feishu_sign(c.secret, ts), **orjson.loads(body)})
        return Request(url, body, {"Content-Type": "application/json; charset=utf-8",
                                   "User-Agent": "smart-store-edge-notify/1"})

    def verdict(self, status: int, headers: Mapping[str, str], text: str) -> Verdict:
        """By the tool's documented answer."""
        return channel_verdict(self.channel.kind, status, headers, text)


def targets(config: NotificationsConfig) -> dict[str, ChannelTarget]:
    """The worker's targets of every channel, keyed as their rows' `webhook` column."""
    return {PREFIX + c.id: ChannelTarget(c) for c in config.channels}


def local_time(t: datetime, tz: str) -> str:
    """`t` in the store's zone as the messages show it."""
    return t.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M")
