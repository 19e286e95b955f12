"""Staff notifications, the pure parts: texts in zh-CN / en with manifest names, each tool's format, routing by
zone / kind / severity, quiet hours in the store's time zone, and how each tool's answer is judged."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.config import Manifest, parse_manifest
from edge.errors import ConfigError
from firmware_sim.im_receivers import ImReceivers, Robot, summary
from firmware_sim.world import demo_manifest_text
from rules.alerts import (
    Alert,
    AlertAcknowledged,
    AlertEscalated,
    AlertEvent,
    AlertOpened,
    AlertResolved,
    Transition,
)
from rules.config import NotificationsConfig, NotifyChannel
from rules.notify import ChannelTarget, Notifier, channel_verdict, compose, render

T = datetime(2026, 12, 4, 6, 30, tzinfo=UTC)  # 14:30 in Shanghai


def manifest(notifications: dict[str, Any], tz: str = "Asia/Shanghai") -> Manifest:
    import yaml

    raw = yaml.safe_load(demo_manifest_text())
    raw["store"]["timezone"] = tz
    raw["store"]["name"] = "徐汇店"
    raw["notifications"] = notifications
    return parse_manifest(yaml.safe_dump(raw, allow_unicode=True), "notify-test.yaml")


def transition(kind: str = "out_of_stock", t: datetime = T, which: str = "opened", shelf: str | None = "shelf-a1",
               sku: str | None = "cola-330", device: str | None = None) -> Transition:
    a = Alert(id="a-1", kind=kind, state="open", opened_at=t, updated_at=t, shelf=shelf, sku=sku, device=device,
              count=0, threshold=3, restock_qty=24)
    common: dict[str, Any] = {"source": "rules", "time": t, "subject": a.id, "alert_id": a.id, "kind": kind,
                              "state": "open", "shelf": shelf, "sku": sku, "device": device}
    ev: AlertEvent
    if which == "opened":
        ev = AlertOpened(**common, count=0, threshold=3, restock_qty=24)
    elif which == "acknowledged":
        ev = AlertAcknowledged(**common, by="王芳")
    elif which == "escalated":
        ev = AlertEscalated(**common, level=2, unacknowledged_s=600.0, count=0)
    else:
        ev = AlertResolved(**common, reason="recovered", count=12)
    return Transition(a, ev)


def channel(**kw: Any) -> dict[str, Any]:
    return {"id": "c", "kind": "wecom", "url": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k", **kw}


@pytest.mark.parametrize(
    ("lang", "expect"),
    [
        ("zh-CN", ["【紧急】缺货:可乐 330毫升", "**商品**: 可乐 330毫升",
                   "**货架**: 饮料货架（上层）", "**区域**: 饮料区",  # noqa: RUF001 (the demo manifest's zh-CN names)
                   "**数量**: 0(最低 3)", "**补货**: 24 件", "**状态**: 新告警", "**时间**: 2026-12-04 14:30",
                   "**门店**: 徐汇店"]),
        ("en", ["Urgent · Out of stock: Cola 330 ml", "**Product**: Cola 330 ml", "**Shelf**: Drinks, top",
                "**Zone**: Drinks", "**Count**: 0 (minimum 3)", "**Restock**: 24 units", "**Status**: New alert",
                "**Time**: 2026-12-04 14:30"]),
    ],
)
def test_texts_from_the_catalog_with_manifest_names(lang: str, expect: list[str]) -> None:
    m = manifest({"dashboard_url": "https://store.example.com/"})
    msg = compose(transition(), m, lang, "https://store.example.com/")
    body = render("dingtalk", msg)
    text = body["markdown"]["text"]
    for piece in expect:
        assert piece in text, (piece, text)
    assert "shelf-a1" not in text and "aisle-1" not in text  # names, not raw ids
    assert text.endswith("(https://store.example.com/)")


@pytest.mark.parametrize(
    ("which", "zh", "en"),
    [
        ("acknowledged", "已由 王芳 接手", "Acknowledged by 王芳"),
        ("escalated", "已升级(第 2 级)", "Escalated (level 2)"),
        ("resolved", "已解决", "Resolved"),
    ],
)
def test_transition_status_lines(which: str, zh: str, en: str) -> None:
    m = manifest({})
    for lang, want in (("zh-CN", zh), ("en", en)):
        msg = compose(transition(which=which), m, lang, None)
        assert dict(msg.fields)["状态" if lang == "zh-CN" else "Status"] == want
        assert msg.link is None


@pytest.mark.parametrize(
    ("which", "zh", "en"),
    [
        ("opened", "【紧急】缺货:可乐 330毫升", "Urgent · Out of stock: Cola 330 ml"),
        ("escalated", "【紧急】缺货:可乐 330毫升", "Urgent · Out of stock: Cola 330 ml"),
        # a chat list shows the title only: a resolved or taken alert must not read as a new one
        ("resolved", "【已解决】缺货:可乐 330毫升", "Resolved · Out of stock: Cola 330 ml"),
        ("acknowledged", "【已由 王芳 接手】缺货:可乐 330毫升", "Acknowledged by 王芳 · Out of stock: Cola 330 ml"),
    ],
)
def test_title_says_a_closed_or_taken_alert_is_not_new(which: str, zh: str, en: str) -> None:
    m = manifest({})
    assert [compose(transition(which=which), m, lang, None).title for lang in ("zh-CN", "en")] == [zh, en]


@pytest.mark.parametrize(("which", "wecom", "feishu", "slack"), [
    ("opened", "warning", "red", ":red_circle:"),
    ("acknowledged", "warning", "red", ":red_circle:"),  # taken, still open: still urgent
    ("resolved", "info", "green", ":white_check_mark:"),  # closed: before, red like a new out-of-stock
])
def test_a_closed_alert_is_not_coloured_as_urgent(which: str, wecom: str, feishu: str, slack: str) -> None:
    msg = compose(transition(which=which), manifest({}), "zh-CN", None)
    assert render("wecom", msg)["markdown"]["content"].startswith(f'### <font color="{wecom}">')
    assert render("feishu", msg)["card"]["header"]["template"] == feishu
    assert render("slack", msg)["text"].startswith(slack + " ")
    assert dict(msg.fields)["紧急程度"] == "紧急"  # the alert's own urgency is still said


def test_each_tools_format_is_accepted_by_its_documented_receiver() -> None:
    """Every rendered body passes the fake endpoint's documented shape checks (signatures added per attempt)."""
    rx = ImReceivers(robots={"wecom": Robot("k"), "dingtalk": Robot("t", "SECx"), "feishu": Robot("f", "fs"),
                             "slack": Robot("T/B/X")})
    m = manifest({"dashboard_url": "https://store.example.com/"})
    msg = compose(transition(), m, "zh-CN", "https://store.example.com/")
    rx.port = 1
    for kind in ("wecom", "dingtalk", "feishu", "slack"):
        target = ChannelTarget(NotifyChannel.model_validate(
            {"id": kind, "kind": kind, "url": rx.url(kind), "secret": rx.robots[kind].secret}))
        req = target.request({"body": orjson.dumps(render(kind, msg)).decode()}, datetime.now(UTC).timestamp())
        answer = rx.handle(req.url.removeprefix("http://127.0.0.1:1"), req.body)
        assert answer.status == 200, (kind, answer.body)
        assert answer.body in (b"ok", b'{"errcode": 0, "errmsg": "ok"}', b'{"code": 0, "msg": "success", "data": {}}')
        assert rx.received[kind], kind
    wecom = rx.received["wecom"][0]["markdown"]["content"]
    assert wecom.startswith('### <font color="warning">【紧急】缺货:可乐 330毫升</font>')
    card = rx.received["feishu"][0]["card"]
    assert card["header"]["template"] == "red"
    assert card["elements"][1]["actions"][0]["url"] == "https://store.example.com/"
    for kind in ("wecom", "dingtalk", "feishu", "slack"):  # what the demo prints
        assert summary(kind, rx.received[kind][0]).endswith("【紧急】缺货:可乐 330毫升"), kind
    slack = rx.received["slack"][0]
    assert slack["blocks"][0]["text"]["text"] == "【紧急】缺货:可乐 330毫升"
    assert {"type": "mrkdwn", "text": "*货架*\n饮料货架（上层）"} in slack["blocks"][1]["fields"]  # noqa: RUF001


def test_a_wrong_secret_is_refused_by_the_receivers() -> None:
    rx = ImReceivers(robots={"wecom": Robot("k"), "dingtalk": Robot("t", "SECright"), "feishu": Robot("f", "right"),
                             "slack": Robot("T/B/X")})
    rx.port = 1
    msg = compose(transition(), manifest({}), "en", None)
    for kind, code in (("dingtalk", b'"errcode": 310000'), ("feishu", b'"code": 19021')):
        target = ChannelTarget(NotifyChannel.model_validate({"id": kind, "kind": kind, "url": rx.url(kind),
                                                             "secret": "wrong"}))
        req = target.request({"body": orjson.dumps(render(kind, msg)).decode()}, datetime.now(UTC).timestamp())
        answer = rx.handle(req.url.removeprefix("http://127.0.0.1:1"), req.body)
        assert code in answer.body
        assert not channel_verdict(kind, answer.status, answer.headers, answer.body.decode()).ok
        # an old timestamp (over one hour) is refused too, even with the right secret
        target = ChannelTarget(NotifyChannel.model_validate({"id": kind, "kind": kind, "url": rx.url(kind),
                                                             "secret": rx.robots[kind].secret}))
        req = target.request({"body": orjson.dumps(render(kind, msg)).decode()}, datetime.now(UTC).timestamp() - 4000)
        assert code in rx.handle(req.url.removeprefix("http://127.0.0.1:1"), req.body).body


def test_names_cannot_inject_mentions_or_lines() -> None:
    m = manifest({})
    t = transition(which="acknowledged")
    ev = AlertAcknowledged(source="rules", time=T, subject="a-1", alert_id="a-1", kind="out_of_stock", state="open",
                           shelf="shelf-a1", sku="cola-330", by='<at id=all></at>\n**x**')
    msg = compose(Transition(t.alert, ev), m, "en", None)
    status = dict(msg.fields)["Status"]
    assert "<" not in status and ">" not in status and "\n" not in status
    assert "<!channel>" not in render("slack", compose(Transition(t.alert, AlertAcknowledged(
        source="rules", time=T, subject="a-1", alert_id="a-1", kind="out_of_stock", state="open",
        by="<!channel>")), m, "en", None))["blocks"][1]["fields"][-2]["text"]


ROUTES: list[tuple[str, dict[str, Any], dict[str, Any], str | None]] = [
    # (case, channel fields, transition args, expected decision)
    ("everything by default", {}, {}, "pending"),
    ("transition not subscribed", {"events": ["opened"]}, {"which": "acknowledged"}, None),
    ("zone matches", {"zones": ["aisle-1"]}, {}, "pending"),
    ("other zone", {"zones": ["apparel"]}, {}, None),
    ("kind filter", {"kinds": ["low_stock"]}, {}, None),
    ("severity below minimum", {"min_severity": "urgent"}, {"kind": "low_stock"}, None),
    ("severity at minimum", {"min_severity": "warning"}, {"kind": "low_stock"}, "pending"),
    ("quiet hours (store-local 14:30)", {"quiet_hours": ["14:00-15:00"]}, {}, "suppressed"),
    ("quiet hours in UTC would not match", {"quiet_hours": ["06:00-07:00"]}, {}, "pending"),
    ("quiet hours wrapping midnight", {"quiet_hours": ["22:00-07:00"]},
     {"t": datetime(2026, 12, 4, 20, 0, tzinfo=UTC)}, "suppressed"),  # 04:00 in Shanghai
    ("urgent kind passes quiet hours", {"quiet_hours": ["14:00-15:00"], "quiet_pass_kinds": ["out_of_stock"]}, {},
     "pending"),
    ("other kind stays quiet", {"quiet_hours": ["14:00-15:00"], "quiet_pass_kinds": ["out_of_stock"]},
     {"kind": "low_stock"}, "suppressed"),
    ("device alert without zone, zone filter", {"zones": ["aisle-1"]},
     {"kind": "device_offline", "shelf": None, "sku": None, "device": "scale-9"}, None),
    ("device alert, no filter", {}, {"kind": "device_offline", "shelf": None, "sku": None, "device": "scale-9"},
     "pending"),
]


@pytest.mark.parametrize(("case", "fields", "targs", "want"), ROUTES, ids=[r[0] for r in ROUTES])
def test_routing(case: str, fields: dict[str, Any], targs: dict[str, Any], want: str | None) -> None:
    m = manifest({"channels": [channel(events=["opened", "acknowledged"], **fields) if "events" not in fields
                               else channel(**fields)]})
    n = Notifier(m)
    t = transition(**targs)
    assert n.decide(m.notifications.channels[0], t) == want
    rows = n.rows(t, lambda: "d-1")
    assert [r.row["state"] for r in rows] == ([want] if want else [])
    if rows:
        assert rows[0].row["webhook"] == "im:c" and rows[0].row["alert_id"] == "a-1"


def test_device_alert_routed_by_the_zones_of_its_shelves() -> None:
    import yaml

    raw = yaml.safe_load(demo_manifest_text())
    raw["devices"] = [{"id": "scale-1", "type": "shelf_mqtt", "broker_url": "mqtt://127.0.0.1:1883",
                       "lanes": [{"shelf": "shelf-a1", "lane": "l1", "channel": "c1"}]}]
    raw["notifications"] = {"channels": [channel(zones=["aisle-1"]), {**channel(zones=["apparel"]), "id": "d"}]}
    try:
        m = parse_manifest(yaml.safe_dump(raw), "x.yaml")
    except ConfigError as err:  # the shelf_mqtt schema is its family's: show what it wants
        pytest.fail(str(err))
    rows = Notifier(m).rows(transition(kind="device_offline", shelf=None, sku=None, device="scale-1"), lambda: "d")
    assert [r.row["webhook"] for r in rows] == ["im:c"]


VERDICTS: list[tuple[str, int, dict[str, str], str, tuple[bool, bool, float | None]]] = [
    # (kind, status, headers, body, (ok, permanent, retry_after_s))
    ("wecom", 200, {}, '{"errcode":0,"errmsg":"ok"}', (True, False, None)),
    ("wecom", 200, {}, '{"errcode":45009,"errmsg":"api freq out of limit"}', (False, False, None)),
    ("wecom", 200, {}, '{"errcode":93000,"errmsg":"invalid webhook url"}', (False, True, None)),
    ("wecom", 200, {}, "<html>proxy</html>", (False, False, None)),
    ("wecom", 502, {}, "", (False, False, None)),
    ("dingtalk", 200, {}, '{"errcode":0,"errmsg":"ok"}', (True, False, None)),
    ("dingtalk", 200, {}, '{"errcode":310000,"errmsg":"sign not match"}', (False, True, None)),
    ("dingtalk", 200, {}, '{"errcode":130101,"errmsg":"send too fast"}', (False, False, None)),
    ("feishu", 200, {}, '{"code":0,"msg":"success","data":{}}', (True, False, None)),
    ("feishu", 200, {}, '{"StatusCode":0,"StatusMessage":"success"}', (True, False, None)),
    ("feishu", 200, {}, '{"code":19021,"msg":"sign match fail"}', (False, True, None)),
    ("feishu", 200, {}, '{"code":11232,"msg":"frequency limited"}', (False, False, None)),
    ("feishu", 400, {}, '{"code":9499,"msg":"Bad Request"}', (False, True, None)),
    ("slack", 200, {}, "ok", (True, False, None)),
    ("slack", 200, {}, "something else", (False, False, None)),
    ("slack", 429, {"retry-after": "7"}, "rate_limited", (False, False, 7.0)),
    ("slack", 429, {"retry-after": "99999999"}, "rate_limited", (False, False, None)),  # unbounded: backoff
    ("slack", 404, {}, "no_service", (False, True, None)),
    ("slack", 400, {}, "invalid_payload", (False, True, None)),
    ("slack", 500, {}, "rollup_error", (False, False, None)),
]


@pytest.mark.parametrize(("kind", "status", "headers", "body", "want"), VERDICTS)
def test_answers(kind: str, status: int, headers: dict[str, str], body: str,
                 want: tuple[bool, bool, float | None]) -> None:
    v = channel_verdict(kind, status, headers, body)
    assert (v.ok, v.permanent, v.retry_after_s) == want
    if not v.ok:
        assert v.error


@pytest.mark.parametrize(
    ("notifications", "fragment"),
    [
        ({"channels": [channel(zones=["nowhere"])]}, "nowhere"),
        ({"channels": [channel(kind="slack", url="https://hooks.slack.com/services/x", secret="s")]},
         "no signing secret"),
        ({"channels": [channel(rate_per_minute=601)]}, "rate_per_minute"),
        ({"channels": [channel(quiet_hours=["7-8"])]}, "HH:MM-HH:MM"),
        ({"channels": [channel(kinds=["lowstock"])]}, "unknown alert kind"),
        ({"channels": [channel(), channel()]}, "duplicate channel id"),
        ({"channels": [channel(lang="fr")]}, "lang"),
        ({"channels": [channel(url="ftp://x")]}, "url"),
    ],
)
def test_config_errors_name_the_fix(notifications: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        manifest(notifications)
    assert fragment in str(err.value)


def test_config_defaults() -> None:
    cfg = NotificationsConfig.model_validate({"channels": [channel()]})
    c = cfg.channels[0]
    assert (cfg.lang, c.lang, c.rate_per_minute, c.events, c.min_severity) == (
        "zh-CN", None, 20, ["opened", "escalated", "resolved", "unsnoozed"], "info")


def test_names_per_language_from_the_manifest() -> None:
    import yaml

    raw = yaml.safe_load(demo_manifest_text())
    raw["zones"][0]["names"] = {"zh-CN": "饮料区", "en": "Drinks aisle"}
    raw["catalog"][0]["names"] = {"zh-CN": "可乐 330 毫升"}
    m = parse_manifest(yaml.safe_dump(raw, allow_unicode=True), "names.yaml")
    zh = dict(compose(transition(), m, "zh-CN", None).fields)
    en = dict(compose(transition(), m, "en", None).fields)
    assert (zh["区域"], zh["商品"]) == ("饮料区", "可乐 330 毫升")
    assert (en["Zone"], en["Product"]) == ("Drinks aisle", "Cola 330 ml")  # no en name: `name`


N = 10_000 if os.environ.get("EDGE_FUZZ") == "long" else 200


@settings(max_examples=N, deadline=None)
@given(kind=st.sampled_from(["wecom", "dingtalk", "feishu", "slack"]), status=st.integers(0, 999),
       retry_after=st.text(max_size=12), body=st.one_of(st.text(max_size=200), st.builds(
           json.dumps, st.dictionaries(st.sampled_from(["errcode", "code", "StatusCode",
                                                                                 "errmsg", "msg"]),
                                                               st.one_of(st.integers(), st.text(), st.none(),
                                                                         st.booleans(), st.floats()), max_size=4))))
def test_any_answer_is_judged_without_crashing(kind: str, status: int, retry_after: str, body: str) -> None:
    v = channel_verdict(kind, status, {"retry-after": retry_after}, body)
    if kind == "slack":
        assert v.ok == (200 <= status < 300 and body.strip() == "ok")
    elif v.ok:
        assert 200 <= status < 300 and '":0' in body.replace(" ", "")  # the documented code 0
    assert v.retry_after_s is None or 0 <= v.retry_after_s <= 3600
    if not v.ok:
        assert v.error and len(v.error) < 600


@settings(max_examples=N, deadline=None)
@given(path=st.sampled_from(["/cgi-bin/webhook/send?key=k", "/robot/send?access_token=t&timestamp=x&sign=%",
                             "/open-apis/bot/v2/hook/f", "/services/T/B/X", "/other"]),
       raw=st.one_of(st.binary(max_size=300), st.builds(lambda d: json.dumps(d).encode(), st.dictionaries(
           st.sampled_from(["msgtype", "msg_type", "markdown", "card", "text", "blocks", "timestamp", "sign"]),
           st.recursive(st.one_of(st.none(), st.integers(), st.text(max_size=20)),
                        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                        max_leaves=8), max_size=5))))
def test_receivers_answer_any_request(path: str, raw: bytes) -> None:
    rx = ImReceivers(robots={"wecom": Robot("k"), "dingtalk": Robot("t", "s"), "feishu": Robot("f", "s"),
                             "slack": Robot("T/B/X")})
    answer = rx.handle(path, raw)
    assert 200 <= answer.status < 500


def test_a_back_room_pick_names_the_place_without_a_lane() -> None:
    from edge.orders import OrderReserved  # the event the orders module emits (rules import no edge.orders)
    from rules.notify import compose_picks

    ev = OrderReserved(source="orders", time=T, subject="8812", order_id="8812", mode="pickup", due=T, lines=(),
                       tasks=({"shelf": "shelf-a1", "lane": "l1", "sku": "cola-330", "qty": 2},
                              {"shelf": "backroom", "lane": "", "sku": "tee-m", "qty": 1}))
    zh, en = (compose_picks(ev, manifest({}), lang, None) for lang in ("zh-CN", "en"))
    assert zh.title == "拣货: 2 × 可乐 330毫升（shelf-a1）; 1 × T恤 M码（仓库），订单 8812"  # noqa: RUF001
    assert [v for k, v in en.fields if k == "Pick"][1].endswith(" from Back room")
    assert "lane" not in [v for k, v in en.fields if k == "Pick"][1]
