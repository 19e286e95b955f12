"""Snoozing an alert (issue 17 item 3), the pure part with an injected clock: bounds, no escalation and no staff
chat messages while snoozed, the alert comes back (unsnoozed event, posted again) when the time passes, its
escalation clock restarts then, a worse condition ends the snooze, the snooze survives a restart (table row)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from edge.config import Manifest, parse_manifest
from edge.errors import CommandError
from edge.events import StockChanged
from edge.runtime import Upsert
from edge.state import StockState
from firmware_sim.world import demo_manifest_text
from rules.alerts import AlertEscalated, AlertOpened, AlertSnoozed, AlertUnsnoozed
from rules.config import RulesConfig
from rules.engine import RulesEngine, split

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
RULES = RulesConfig.model_validate({"defaults": {"min": 3, "debounce_s": 10, "escalate_after_s": 600},
                                    "expire_after_s": 86400})
CHAT = {"id": "floor", "kind": "wecom", "url": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k"}


def store() -> Manifest:
    raw = yaml.safe_load(demo_manifest_text())
    raw["store"].update(opening_time="00:00", closing_time="00:00")
    raw["notifications"] = {"channels": [CHAT]}  # default transitions: opened, escalated, resolved, unsnoozed
    return parse_manifest(yaml.safe_dump(raw), "snooze-test.yaml")


def engine(m: Manifest) -> RulesEngine:
    ids = itertools.count(1)
    e = RulesEngine(m, rules=RULES, new_id=lambda: f"id-{next(ids)}")
    ok, problems, _ = e.load_body(RULES.model_dump(exclude={"file", "watch_interval_s"}), "start", T0)
    assert ok, problems
    e.restore([], StockState(m), T0)
    return e


def change(count: int, prev: int, t: datetime) -> StockChanged:
    return StockChanged(source="shelf-1", time=t, shelf="shelf-a1", sku="cola-330", count=count, previous=prev,
                        delta=count - prev, version=1, origin="weight")


def chat_rows(out: Any) -> list[Any]:
    return [w.row for w in split(out)[1] if isinstance(w, Upsert) and w.table == "webhook_deliveries"]


def low_alert(e: RulesEngine) -> str:
    e.react(change(2, 10, T0), T0)
    out = e.tick(T0 + timedelta(seconds=11))
    (opened,) = split(out)[0]
    assert isinstance(opened, AlertOpened)
    assert len(chat_rows(out)) == 1  # the new alert is posted
    return opened.alert_id


@pytest.mark.parametrize("duration", [299, 28801, 0, -5, float("nan"), float("inf"), "600", None, True])
def test_snooze_bounds_change_nothing(duration: Any) -> None:
    e = engine(store())
    alert_id = low_alert(e)
    with pytest.raises(CommandError) as err:
        e.snooze(alert_id, "Sam", duration, T0 + timedelta(seconds=20))
    assert err.value.code == "bad_request"
    assert e.book.live[alert_id].snoozed_until is None


def test_snooze_refusals() -> None:
    e = engine(store())
    alert_id = low_alert(e)
    t = T0 + timedelta(seconds=20)
    with pytest.raises(CommandError) as err:
        e.snooze("nope", "Sam", 600, t)
    assert err.value.code == "not_found"
    for by in ("", " ", "x" * 65, "a\nb", None):
        with pytest.raises(CommandError):
            e.snooze(alert_id, by, 600, t)
    assert e.book.live[alert_id].snoozed_until is None


def test_snoozed_alert_does_not_escalate_and_comes_back() -> None:
    e = engine(store())
    alert_id = low_alert(e)
    t_snooze = T0 + timedelta(seconds=60)
    out = e.snooze(alert_id, " Sam ", 1800, t_snooze)
    (ev,) = split(out)[0]
    assert isinstance(ev, AlertSnoozed)
    assert (ev.by, ev.until, ev.duration_s) == ("Sam", t_snooze + timedelta(seconds=1800), 1800.0)
    row = next(w.row for w in split(out)[1] if isinstance(w, Upsert) and w.table == "alerts")
    assert (row["snoozed_until"], row["snoozed_by"]) == ("2026-01-05T10:31:00Z", "Sam")
    assert chat_rows(out) == []  # a channel that does not ask for `snoozed` gets nothing
    # the escalation deadline (opened + 600 s) passes while snoozed: nothing happens
    for s in (700, 1200, 1859):
        assert split(e.tick(T0 + timedelta(seconds=s)))[0] == []
    # the snooze ends: the alert comes back and is posted to staff again
    back = T0 + timedelta(seconds=1860)
    ticked = e.tick(back)
    (ev2,) = split(ticked)[0]
    assert isinstance(ev2, AlertUnsnoozed)
    assert (ev2.alert_id, ev2.reason, ev2.count) == (alert_id, "elapsed", 2)
    assert [r["transition"] for r in chat_rows(ticked)] == ["unsnoozed"]
    assert e.book.live[alert_id].snoozed_until is None
    # escalation counts from the return, not from the opening
    assert split(e.tick(back + timedelta(seconds=599)))[0] == []
    (esc,) = split(e.tick(back + timedelta(seconds=600)))[0]
    assert isinstance(esc, AlertEscalated) and esc.level == 1


def test_worse_condition_ends_the_snooze_and_chats_pause_meanwhile() -> None:
    e = engine(store())
    alert_id = low_alert(e)
    t = T0 + timedelta(seconds=30)
    e.snooze(alert_id, "Sam", 3600, t)
    # a partial refill while snoozed: the update is recorded but not posted
    assert split(e.react(change(0, 2, t + timedelta(seconds=5)), t + timedelta(seconds=5)))[0] == []  # debouncing
    out = e.tick(t + timedelta(seconds=20))
    (esc,) = split(out)[0]
    assert isinstance(esc, AlertEscalated) and esc.reason == "out_of_stock"
    assert [r["transition"] for r in chat_rows(out)] == ["escalated"]  # worse: staff hear of it at once
    assert e.book.live[alert_id].snoozed_until is None


def test_updates_of_a_snoozed_alert_are_not_posted() -> None:
    e = engine(store())
    e.react(change(0, 10, T0), T0)
    out = e.tick(T0 + timedelta(seconds=11))
    (opened,) = split(out)[0]
    assert isinstance(opened, AlertOpened)
    e.snooze(opened.alert_id, "Sam", 600, T0 + timedelta(seconds=12))
    t = T0 + timedelta(seconds=13)
    out = e.react(change(2, 0, t), t)  # partial refill: out of stock -> low (an update)
    assert [ev.TRANSITION for ev in split(out)[0]] == ["updated"]  # type: ignore[attr-defined]
    assert chat_rows(out) == []


def test_snooze_survives_a_restart() -> None:
    m = store()
    e = engine(m)
    alert_id = low_alert(e)
    out = e.snooze(alert_id, "Sam", 900, T0 + timedelta(seconds=20))
    row = next(w.row for w in split(out)[1] if isinstance(w, Upsert) and w.table == "alerts")
    again = RulesEngine(m, rules=RULES)
    again.load_body(RULES.model_dump(exclude={"file", "watch_interval_s"}), "start", T0)
    again.restore([row], StockState(m), T0 + timedelta(seconds=30))
    assert again.book.live[alert_id].snoozed(T0 + timedelta(seconds=30))
    assert split(again.tick(T0 + timedelta(seconds=700)))[0] == []  # still snoozed: no escalation
    (back,) = split(again.tick(T0 + timedelta(seconds=920)))[0]
    assert isinstance(back, AlertUnsnoozed)


def test_snooze_events_match_the_asyncapi_part() -> None:
    import jsonschema
    import orjson

    from edge.envelope import dumps
    from tests.rules.test_asyncapi_part import part

    schemas = part()["components"]["schemas"]
    e = engine(store())
    alert_id = low_alert(e)
    (snoozed,) = split(e.snooze(alert_id, "Sam", 300, T0 + timedelta(seconds=20)))[0]
    (back,) = split(e.tick(T0 + timedelta(seconds=320)))[0]
    for ev in (snoozed, back):
        jsonschema.validate(orjson.loads(dumps(ev.data())), schemas[type(ev).__name__])
