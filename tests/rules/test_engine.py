"""The rules engine as a Reactor: events in, alert lifecycle events + table rows + webhook rows out."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from drivers.scanner.events import RestockFinished, RestockStarted
from edge.config import Manifest
from edge.errors import CommandError
from edge.events import DeviceStatusChanged, Event, StockChanged
from edge.processing import StockUpdate
from edge.runtime import Upsert
from edge.state import StockState
from rules.alerts import (
    AlertAcknowledged,
    AlertEscalated,
    AlertExpired,
    AlertOpened,
    AlertResolved,
)
from rules.config import OffersConfig, RulesConfig, WebhookConfig
from rules.engine import RulesEngine, RulesRejected, RulesReloaded, split

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
RULES = RulesConfig.model_validate(
    {
        "defaults": {"min": 3, "debounce_s": 10, "escalate_after_s": 60},
        "expire_after_s": 3600,
        "device_fault_grace_s": 30,
    }
)
HOOK = WebhookConfig(id="ops", url="http://127.0.0.1:9/hook", secret="s" * 16, events=["opened", "resolved"])


def engine(manifest: Manifest) -> RulesEngine:
    ids = itertools.count(1)
    e = RulesEngine(manifest, rules=RULES, webhooks=[HOOK], new_id=lambda: f"id-{next(ids)}")
    ok, problems, _ = e.load_body(RULES.model_dump(exclude={"file", "watch_interval_s"}), "start", T0)
    assert ok, problems
    e.restore([], StockState(manifest), T0)
    return e


def stock(count: int, prev: int, version: int, t: datetime) -> StockChanged:
    return StockChanged(
        source="shelf-1",
        time=t,
        shelf="shelf-a1",
        sku="cola-330",
        count=count,
        previous=prev,
        delta=count - prev,
        version=version,
        origin="weight",
    )


def events(out: object) -> list[Event]:
    return split(out)[0]  # type: ignore[arg-type]


def test_low_stock_lifecycle_open_ack_resolve(demo_manifest: Manifest) -> None:
    e = engine(demo_manifest)
    assert events(e.react(stock(2, 10, 2, T0), T0)) == []
    out = list(e.tick(T0 + timedelta(seconds=11)))
    (opened,) = events(out)
    assert isinstance(opened, AlertOpened)
    assert (opened.kind, opened.shelf, opened.count, opened.restock_qty) == ("low_stock", "shelf-a1", 2, 22)
    rows = [w for w in split(out)[1] if isinstance(w, Upsert)]
    assert {w.table for w in rows} == {"alerts", "webhook_deliveries"}
    assert next(w for w in rows if w.table == "alerts").row["state"] == "open"
    # own events are ignored when fed back
    assert e.react(opened, T0) == []
    acked = events(e.ack(opened.alert_id, "Sam", T0 + timedelta(seconds=20)))
    assert isinstance(acked[0], AlertAcknowledged)
    assert acked[0].by == "Sam"
    assert e.ack(opened.alert_id, "Sam", T0 + timedelta(seconds=21)) == []  # idempotent
    # acknowledged: no escalation
    assert events(e.tick(T0 + timedelta(seconds=200))) == []
    out = list(e.react(stock(24, 2, 3, T0), T0 + timedelta(seconds=300)))
    (resolved,) = events(out)
    assert isinstance(resolved, AlertResolved)
    assert resolved.alert_id == opened.alert_id
    assert len([w for w in split(out)[1] if isinstance(w, Upsert) and w.table == "webhook_deliveries"]) == 1
    with pytest.raises(CommandError) as err:
        e.ack(opened.alert_id, "Sam", T0)
    assert err.value.code == "not_found"


def test_stock_out_is_one_alert_that_escalates_and_never_expires_while_empty(demo_manifest: Manifest) -> None:
    e = engine(demo_manifest)
    e.react(stock(0, 10, 2, T0), T0)
    (opened,) = events(e.tick(T0 + timedelta(seconds=10)))
    assert isinstance(opened, AlertOpened)
    assert opened.kind == "out_of_stock"  # one alert for the cell, not low stock + out of stock
    assert len(e.book.live) == 1
    (esc,) = events(e.tick(T0 + timedelta(seconds=71)))
    assert isinstance(esc, AlertEscalated) and esc.level == 1 and esc.reason == "unacknowledged"
    (esc2,) = events(e.tick(T0 + timedelta(seconds=132)))
    assert isinstance(esc2, AlertEscalated) and esc2.level == 2
    # expire_after_s (3600) passes with the shelf still empty: the alert stays open
    assert [type(x) for x in events(e.tick(T0 + timedelta(seconds=3611)))] == [AlertEscalated]  # level 3
    assert events(e.tick(T0 + timedelta(hours=9))) == []
    assert [a.id for a in e.book.live.values()] == [opened.alert_id]
    (resolved,) = events(e.react(stock(24, 0, 3, T0), T0 + timedelta(hours=9, seconds=1)))
    assert isinstance(resolved, AlertResolved) and resolved.alert_id == opened.alert_id
    assert e.book.live == {}


def test_alert_whose_condition_is_no_longer_watched_expires(demo_manifest: Manifest) -> None:
    # a lane alert restored after a restart that no lane reports any more: expire_after_s closes it
    e = RulesEngine(demo_manifest, rules=RULES, new_id=lambda: "n")
    e.load_body(RULES.model_dump(exclude={"file", "watch_interval_s"}), "start", T0)
    row = {"id": "a1", "kind": "lane_fault", "state": "open", "shelf": "shelf-a1", "sku": "cola-330",
           "opened_at": T0.isoformat(), "updated_at": T0.isoformat()}
    e.restore([row], StockState(demo_manifest), T0)
    assert events(e.tick(T0 + timedelta(seconds=3599))) == []
    (expired,) = events(e.tick(T0 + timedelta(seconds=3601)))
    assert isinstance(expired, AlertExpired) and expired.alert_id == "a1"


def test_device_fault_after_grace(demo_manifest: Manifest) -> None:
    e = engine(demo_manifest)
    off = DeviceStatusChanged(source="rfid-1", time=T0, device="rfid-1", device_type="llrp", state="offline")
    assert events(e.react(off, T0)) == []
    (opened,) = events(e.tick(T0 + timedelta(seconds=31)))
    assert isinstance(opened, AlertOpened)
    assert (opened.kind, opened.device) == ("device_offline", "rfid-1")
    on = DeviceStatusChanged(source="rfid-1", time=T0, device="rfid-1", device_type="llrp", state="online")
    (resolved,) = events(e.react(on, T0 + timedelta(seconds=40)))
    assert isinstance(resolved, AlertResolved)
    # a short blip raises nothing
    e.react(off, T0 + timedelta(seconds=50))
    assert events(e.react(on, T0 + timedelta(seconds=55))) == []


def test_restock_events_mute_the_shelf(demo_manifest: Manifest) -> None:
    e = engine(demo_manifest)
    e.react(RestockStarted(source="scanner-1", time=T0, shelf="shelf-a1", scanner="scanner-1"), T0)
    e.react(stock(1, 10, 2, T0), T0)
    assert events(e.tick(T0 + timedelta(seconds=60))) == []
    done = RestockFinished(source="scanner-1", time=T0, shelf="shelf-a1", scanner="scanner-1", items=0, reason="end")
    opened = events(e.react(done, T0 + timedelta(seconds=61)))
    assert [type(x).__name__ for x in opened] == ["AlertOpened"]


def test_reload_is_atomic_and_reports_why(demo_manifest: Manifest) -> None:
    e = engine(demo_manifest)
    before = e.ruleset
    ok, problems, out = e.load_text("skus: {cola-330: {max: 99}}\n", "file", T0)
    assert not ok
    assert "above the planogram capacity" in problems[0]
    assert isinstance(out[0], RulesRejected)
    assert e.ruleset is before
    ok, problems, out = e.load_text("defaults: {min: [}", "file", T0)
    assert not ok
    assert "YAML" in problems[0]
    ok, problems, out = e.load_text("defaults: {mni: 3}", "file", T0)
    assert not ok
    assert "defaults.mni" in problems[0]
    ok, _, out = e.load_text("defaults: {min: 7}\n", "command", T0)
    assert ok
    assert isinstance(out[0], RulesReloaded)
    assert e.ruleset.cells[("shelf-a1", "cola-330")].min == 7


def test_restore_after_restart_keeps_alerts_and_resolves_them(demo_manifest: Manifest) -> None:
    e = engine(demo_manifest)
    e.react(stock(2, 10, 2, T0), T0)
    out = list(e.tick(T0 + timedelta(seconds=11)))
    row = next(w.row for w in split(out)[1] if isinstance(w, Upsert) and w.table == "alerts")
    # a new engine, as after a restart: stock state shows the shelf refilled meanwhile
    st = StockState(demo_manifest)
    st.apply(StockUpdate(shelf="shelf-a1", sku="cola-330", time=T0, origin="manual", source="x", count=20))
    e2 = RulesEngine(demo_manifest, rules=RULES, new_id=lambda: "n")
    e2.react(stock(20, 2, 3, T0), T0)  # queued until restored
    out2 = e2.restore([row], st, T0 + timedelta(seconds=60))
    resolved = [x for x in events(out2) if isinstance(x, AlertResolved)]
    assert [r.alert_id for r in resolved] == [row["id"]]


def test_sighting_counts_and_event_has_no_token(demo_manifest: Manifest) -> None:
    offers = OffersConfig.model_validate(
        {"offers": [{"id": "o1", "zone": "aisle-1", "sku": "cola-330", "title": "t", "min_dwell_s": 0}]}
    )
    e = RulesEngine(demo_manifest, offers=offers)
    st = StockState(demo_manifest)
    st.apply(StockUpdate(shelf="shelf-a1", sku="cola-330", time=T0, origin="manual", source="x", count=5))
    reply, out = e.sighting({"shopper": "secret-token", "consent": True, "zone": "aisle-1"}, T0, st)
    assert [o["id"] for o in reply["offers"]] == ["o1"]
    assert "secret-token" not in repr([x.data() for x in events(out)])
    assert "edge_rules_offers_triggered_total" in e.metrics_text()


def test_restore_merges_two_live_alerts_of_one_cell_into_one(demo_manifest: Manifest) -> None:
    # rows an older gateway wrote: a low-stock and an out-of-stock alert open for the same cell
    def row(alert_id: str, kind: str, minutes: int) -> dict[str, object]:
        t = (T0 + timedelta(minutes=minutes)).isoformat()
        return {"id": alert_id, "kind": kind, "state": "open", "shelf": "shelf-a1", "sku": "cola-330",
                "opened_at": t, "updated_at": t, "escalate_after_s": 60}

    st = StockState(demo_manifest)
    st.apply(StockUpdate(shelf="shelf-a1", sku="cola-330", time=T0, origin="manual", source="x", count=0))
    e = RulesEngine(demo_manifest, rules=RULES, new_id=lambda: "n")
    e.load_body(RULES.model_dump(exclude={"file", "watch_interval_s"}), "start", T0)
    out = events(e.restore([row("low", "low_stock", 0), row("out", "out_of_stock", 1)], st, T0 + timedelta(hours=1)))
    (merged,) = [x for x in out if isinstance(x, AlertResolved)]
    assert (merged.alert_id, merged.reason) == ("low", "superseded")
    assert list(e.book.live) == ["out"]
    (resolved,) = events(e.react(stock(24, 0, 3, T0), T0 + timedelta(hours=1, seconds=1)))
    assert isinstance(resolved, AlertResolved) and resolved.alert_id == "out"
