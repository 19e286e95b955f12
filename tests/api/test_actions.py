"""Staff actions on alerts through the real gateway (private mosquitto as the hub): resolve by hand with a
reason over the REST API and the MQTT command `alert.resolve`, the resolved event on the hub, bad input and
roles refused without a change."""

from __future__ import annotations

import asyncio
import csv
import io
from typing import Any

import pytest

from edge.brokers import Mosquitto
from firmware_sim.hub import HubRecorder
from tests.api.conftest import Running, wait_for
from tests.api.test_api import ROOT, command, open_low_alert


@pytest.mark.parametrize(
    ("role", "body", "status"),
    [
        (None, {"by": "Sam", "reason": "counted"}, 401),
        ("hq", {"by": "Sam", "reason": "counted"}, 403),  # a read-only role may not act
        ("staff", {"by": "Sam"}, 422),  # a reason is required
        ("staff", {"by": "Sam", "reason": ""}, 422),
        ("staff", {"by": "Sam", "reason": "x" * 201}, 422),
        ("staff", {"by": "", "reason": "counted"}, 422),
        ("staff", {"by": "Sam", "reason": "line\nbreak"}, 400),
    ],
)
async def test_resolve_refusals_change_nothing(
    running: Running, role: str | None, body: dict[str, Any], status: int
) -> None:
    alert = await open_low_alert(running)
    headers = running.headers(role) if role else {}
    r = await running.client.post(f"/api/v1/alerts/{alert['id']}/resolve", headers=headers, json=body)
    assert r.status_code == status, r.text
    assert alert["id"] in running.gw.rules.engine.book.live


async def test_resolve_over_api_and_mqtt(running: Running, mosquitto: Mosquitto) -> None:
    hub = HubRecorder(mosquitto.port, f"{ROOT}/alerts", persistent=False)
    try:
        h = running.headers("staff")
        alert = await open_low_alert(running)
        assert (await running.client.post("/api/v1/alerts/nope/resolve", headers=h,
                                          json={"by": "Sam", "reason": "x"})).status_code == 404
        r = await running.client.post(f"/api/v1/alerts/{alert['id']}/resolve", headers=h,
                                      json={"by": "Sam", "reason": "  counted 12, sensor drift "})
        assert r.status_code == 200, r.text
        assert (r.json()["state"], r.json()["close_reason"]) == ("resolved", "manual: counted 12, sensor drift")
        assert alert["id"] not in running.gw.rules.engine.book.live
        rows = (await running.client.get("/api/v1/alerts", params={"state": "resolved"}, headers=h)).json()
        assert [(a["id"], a["close_reason"]) for a in rows["items"]] == [
            (alert["id"], "manual: counted 12, sensor drift")
        ]
        # resolving it again is a conflict, over REST and MQTT alike
        again = await running.client.post(f"/api/v1/alerts/{alert['id']}/resolve", headers=h,
                                          json={"by": "Sam", "reason": "again"})
        assert again.status_code == 409
        reply = await command(mosquitto, "alert.resolve", {"alert_id": alert["id"], "by": "Sam", "reason": "x"})
        assert (reply["ok"], reply["error"]["code"]) == (False, "conflict")

        def resolved() -> list[dict[str, Any]]:
            return [e for e in hub.events() if e["type"] == "retail.alert.resolved.v1"]

        await wait_for(resolved, 10, "resolved event on MQTT")
        ev = resolved()[0]
        assert ev["data"]["alert_id"] == alert["id"]
        assert (ev["data"]["by"], ev["data"]["reason"]) == ("Sam", "manual: counted 12, sensor drift")

        # the MQTT command does the same to another alert; a malformed one changes nothing
        running.set_stock("shelf-a1", "cola-330", 20, origin="manual")
        second = await open_low_alert(running)
        assert second["id"] != alert["id"]
        bad = await command(mosquitto, "alert.resolve", {"alert_id": second["id"], "by": "Kim"})
        assert (bad["ok"], bad["error"]["code"]) == (False, "bad_request")
        assert second["id"] in running.gw.rules.engine.book.live
        ok = await command(mosquitto, "alert.resolve", {"alert_id": second["id"], "by": "Kim", "reason": "checked"})
        assert ok["ok"], ok
        assert (ok["result"]["state"], ok["result"]["close_reason"]) == ("resolved", "manual: checked")
        await wait_for(lambda: len(resolved()) == 2, 10, "second resolved event on MQTT")
        assert (resolved()[1]["data"]["alert_id"], resolved()[1]["data"]["by"]) == (second["id"], "Kim")
    finally:
        hub.close()


async def test_alert_history_filters_and_pages(running: Running) -> None:
    h = running.headers("hq")  # a read-only role may read the history
    first = await open_low_alert(running)
    t_between = running.gw.clock.now()
    running.set_stock("shelf-a1", "cola-330", 20, origin="manual")

    async def first_resolved() -> bool:
        r = await running.client.get("/api/v1/alerts", params={"state": "resolved"}, headers=h)
        return [a["id"] for a in r.json()["items"]] == [first["id"]]

    await wait_for(first_resolved, 10, "first alert resolved in the table")
    second = await open_low_alert(running)
    assert second["id"] != first["id"]
    running.set_stock("shelf-b1", "crisps-150", 10)
    running.set_stock("shelf-b1", "crisps-150", 0)

    async def n_alerts() -> bool:
        r = await running.client.get("/api/v1/alerts", headers=h)
        return len(r.json()["items"]) == 3

    await wait_for(n_alerts, 15, "three alerts")

    async def ids(**params: Any) -> list[str]:
        r = await running.client.get("/api/v1/alerts", params=params, headers=h)
        assert r.status_code == 200, r.text
        return [a["id"] for a in r.json()["items"]]

    everything = await ids()
    assert everything[-1] == first["id"]  # newest first
    assert await ids(state="resolved") == [first["id"]]
    assert await ids(shelf="shelf-a1") == [second["id"], first["id"]]
    assert await ids(kind="out_of_stock") == [everything[0]]
    assert await ids(until=t_between.isoformat()) == [first["id"]]
    assert first["id"] not in await ids(since=t_between.isoformat())
    # pages of one, following `next`, give the whole history once, then null
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 1}
    while True:
        page = (await running.client.get("/api/v1/alerts", params=params, headers=h)).json()
        seen += [a["id"] for a in page["items"]]
        if page["next"] is None:
            break
        params = {"limit": 1, "after": page["next"]}
        assert len(seen) <= 3
    assert seen == everything


@pytest.mark.parametrize(
    "params",
    [{"kind": "nope"}, {"limit": 0}, {"limit": 1001}, {"since": "yesterday"}, {"since": "2026-01-05T10:00:00"},
     {"since": "0.0"}, {"until": "1767600000"},  # numbers are not ISO 8601 (pydantic would read a UNIX time)
     {"after": "no-cursor"}, {"after": "x" * 129}, {"shelf": "s" * 65}, {"state": "closed"}],
)
async def test_alert_history_bad_queries(running: Running, params: dict[str, Any]) -> None:
    r = await running.client.get("/api/v1/alerts", params=params, headers=running.headers("staff"))
    assert r.status_code in (400, 422), r.text
    assert r.json()["error"]["code"]


def _csv_rows(text: str) -> list[dict[str, str]]:
    assert text.startswith("\ufeff")
    return list(csv.DictReader(io.StringIO(text[1:])))


async def test_csv_export_of_stock_and_alerts(running: Running) -> None:
    h = running.headers("hq")
    running.set_stock("shelf-a1", "water-500", 7)
    alert = await open_low_alert(running)
    staff = running.headers("staff")
    r = await running.client.post(f"/api/v1/alerts/{alert['id']}/ack", headers=staff, json={"by": "=HYPERLINK(1)"})
    assert r.status_code == 200, r.text
    r = await running.client.post(f"/api/v1/alerts/{alert['id']}/resolve", headers=staff,
                                  json={"by": "Sam", "reason": "counted, 2 left"})
    assert r.status_code == 200, r.text
    stock = await running.client.get("/api/v1/export/stock.csv", params={"shelf": "shelf-a1"}, headers=h)
    assert stock.status_code == 200, stock.text
    assert stock.headers["content-type"].startswith("text/csv")
    assert "attachment" in stock.headers["content-disposition"]
    rows = {(r["sku"], r["count"], r["state"]) for r in _csv_rows(stock.text)}
    assert rows == {("cola-330", "2", "low"), ("water-500", "7", "ok")}
    alerts = await running.client.get("/api/v1/export/alerts.csv", params={"state": "resolved"}, headers=h)
    assert alerts.status_code == 200, alerts.text
    got = _csv_rows(alerts.text)
    assert [(a["id"], a["kind"], a["state"]) for a in got] == [(alert["id"], "low_stock", "resolved")]
    # a value that looks like a formula is neutralised
    assert (got[0]["close_reason"], got[0]["acknowledged_by"]) == ("manual: counted, 2 left", "'=HYPERLINK(1)")
    # refusals: no token, a shelf the store lacks, a bad filter
    assert (await running.client.get("/api/v1/export/stock.csv")).status_code == 401
    missing = await running.client.get("/api/v1/export/stock.csv", params={"shelf": "nope"}, headers=h)
    assert missing.status_code == 404
    bad = await running.client.get("/api/v1/export/alerts.csv", params={"kind": "nope"}, headers=h)
    assert bad.status_code == 400


async def test_restocking_mutes_the_shelf_over_api_and_mqtt(running: Running, mosquitto: Mosquitto) -> None:
    staff = running.headers("staff")
    url = "/api/v1/shelves/shelf-a1/restocking"
    # refusals change nothing: read-only role, unknown shelf, a duration out of bounds or not a number
    assert (await running.client.post(url, headers=running.headers("hq"), json={})).status_code == 403
    assert (await running.client.post("/api/v1/shelves/nope/restocking", headers=staff, json={})).status_code == 404
    for bad in (0, -1, 1e9, "soon"):
        r = await running.client.post(url, headers=staff, json={"duration_s": bad})
        assert r.status_code in (400, 422), (bad, r.text)
    assert "shelf-a1" not in running.gw.rules.engine.restock.muted
    r = await running.client.post(url, headers=staff, json={"duration_s": 600})
    assert (r.status_code, r.json()) == (200, {"shelf": "shelf-a1", "muted": True})
    assert "shelf-a1" in running.gw.rules.engine.restock.muted
    running.set_stock("shelf-a1", "cola-330", 10)
    running.set_stock("shelf-a1", "cola-330", 2)
    await asyncio.sleep(1.5)  # well past the test rules' 0.3 s debounce: a muted shelf raises nothing
    assert not running.gw.rules.engine.book.live
    # finishing restocking over MQTT (restock.mute on=false): the still-low cell raises its alert now
    reply = await command(mosquitto, "restock.mute", {"shelf": "shelf-a1", "on": False})
    assert reply["ok"], reply
    assert "shelf-a1" not in running.gw.rules.engine.restock.muted
    await wait_for(lambda: running.gw.rules.engine.book.live, 10, "the low-stock alert after the mute")


async def test_count_correction_is_audited_and_used(running: Running, mosquitto: Mosquitto) -> None:
    hub = HubRecorder(mosquitto.port, f"{ROOT}/events/stock", persistent=False)
    try:
        staff = running.headers("staff")
        running.set_stock("shelf-a1", "cola-330", 9)
        url = "/api/v1/stock/shelf-a1/cola-330/count"
        # refusals change nothing: read-only role, unknown cell, counts and texts out of bounds
        good = {"by": "Sam", "count": 12, "reason": "counted the lane"}
        assert (await running.client.post(url, headers=running.headers("hq"), json=good)).status_code == 403
        r = await running.client.post("/api/v1/stock/shelf-a1/crisps-150/count", headers=staff, json=good)
        assert r.status_code == 404, r.text
        for bad in ({"count": -1}, {"count": 100_001}, {"count": 1.5}, {"reason": ""}, {"by": "x" * 65},
                    {"reason": "tab\there"}):
            r = await running.client.post(url, headers=staff, json={**good, **bad})
            assert r.status_code in (400, 422), (bad, r.text)
        assert running.gw.stock.describe(running.gw.stock.select(shelf="shelf-a1", sku="cola-330")[0])["count"] == 9
        r = await running.client.post(url, headers=staff, json=good)
        assert r.status_code == 200, r.text
        assert (r.json()["count"], r.json()["origin"]) == (12, "manual")
        shelf = (await running.client.get("/api/v1/stock/shelf-a1", headers=staff)).json()
        assert [i["count"] for i in shelf["items"] if i["sku"] == "cola-330"] == [12]

        def corrected() -> list[dict[str, Any]]:
            return [e for e in hub.events() if e["type"] == "retail.stock.corrected.v1"]

        await wait_for(corrected, 10, "the correction on MQTT")
        data = corrected()[0]["data"]
        assert {k: data[k] for k in ("shelf", "sku", "by", "old", "new", "reason")} == {
            "shelf": "shelf-a1", "sku": "cola-330", "by": "Sam", "old": 9, "new": 12, "reason": "counted the lane"}
        await wait_for(lambda: [e for e in hub.events() if e["type"] == "retail.stock.changed.v1"
                                and e["data"]["origin"] == "manual" and e["data"]["count"] == 12],
                       10, "the manual stock change on MQTT")
        assert len(corrected()) == 1
    finally:
        hub.close()
