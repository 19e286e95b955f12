"""Snoozing an alert through the real gateway (private mosquitto as the hub): POST /api/v1/alerts/{id}/snooze and
the signed MQTT command `alert.snooze` (same refusals), the snoozed event on the hub, the alert's row in the API
(snoozed_until, snoozed_by), and its return (retail.alert.unsnoozed.v1 on the hub, snoozed_until null) once the
rules engine's tick passes the snooze's end."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from edge.brokers import Mosquitto
from firmware_sim.hub import HubRecorder
from rules.engine import split
from tests.api.conftest import Running, wait_for
from tests.api.test_api import ROOT, command, open_low_alert


@pytest.mark.parametrize(
    ("role", "body", "status"),
    [
        (None, {"by": "Sam", "duration_s": 600}, 401),
        ("hq", {"by": "Sam", "duration_s": 600}, 403),  # a read-only role may not act
        ("staff", {"by": "Sam"}, 422),  # how long is required
        ("staff", {"by": "Sam", "duration_s": 299}, 422),  # 5 min .. 8 h
        ("staff", {"by": "Sam", "duration_s": 28801}, 422),
        ("staff", {"by": "Sam", "duration_s": "soon"}, 422),
        ("staff", {"by": "", "duration_s": 600}, 422),
        ("staff", {"by": "a\nb", "duration_s": 600}, 400),
    ],
)
async def test_snooze_refusals_change_nothing(
    running: Running, role: str | None, body: dict[str, Any], status: int
) -> None:
    alert = await open_low_alert(running)
    headers = running.headers(role) if role else {}
    r = await running.client.post(f"/api/v1/alerts/{alert['id']}/snooze", headers=headers, json=body)
    assert r.status_code == status, r.text
    assert running.gw.rules.engine.book.live[alert["id"]].snoozed_until is None


def _parse(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


async def test_snooze_over_api_and_mqtt_and_its_return(running: Running, mosquitto: Mosquitto) -> None:
    hub = HubRecorder(mosquitto.port, f"{ROOT}/alerts", persistent=False)
    try:
        h = running.headers("staff")
        alert = await open_low_alert(running)
        r = await running.client.post("/api/v1/alerts/nope/snooze", headers=h, json={"by": "Sam", "duration_s": 600})
        assert r.status_code == 404
        before = running.gw.clock.now()
        r = await running.client.post(f"/api/v1/alerts/{alert['id']}/snooze", headers=h,
                                      json={"by": "Sam", "duration_s": 900})
        assert r.status_code == 200, r.text
        row = r.json()
        assert (row["state"], row["snoozed_by"]) == ("open", "Sam")
        until = _parse(row["snoozed_until"])
        assert before + timedelta(seconds=900) <= until <= running.gw.clock.now() + timedelta(seconds=900)
        listed = (await running.client.get("/api/v1/alerts", params={"state": "open"}, headers=h)).json()["items"]
        assert [(a["id"], a["snoozed_until"]) for a in listed] == [(alert["id"], row["snoozed_until"])]

        def of(kind: str) -> list[dict[str, Any]]:
            return [e for e in hub.events() if e["type"] == f"retail.alert.{kind}.v1"]

        await wait_for(lambda: of("snoozed"), 10, "the snoozed event on MQTT")
        data = of("snoozed")[0]["data"]
        assert (data["alert_id"], data["by"], data["duration_s"]) == (alert["id"], "Sam", 900.0)
        assert _parse(data["until"]) == until

        # the MQTT command: same refusals, then a new snooze replaces the running one
        bad = await command(mosquitto, "alert.snooze", {"alert_id": alert["id"], "by": "Kim", "duration_s": 60})
        assert (bad["ok"], bad["error"]["code"]) == (False, "bad_request")
        missing = await command(mosquitto, "alert.snooze", {"alert_id": "nope", "by": "Kim", "duration_s": 600})
        assert (missing["ok"], missing["error"]["code"]) == (False, "not_found")
        ok = await command(mosquitto, "alert.snooze", {"alert_id": alert["id"], "by": "Kim", "duration_s": 300})
        assert ok["ok"], ok
        assert ok["result"]["snoozed_by"] == "Kim"
        await wait_for(lambda: len(of("snoozed")) == 2, 10, "the second snoozed event on MQTT")

        # the snooze's end: the engine's tick at that time brings the alert back, committed through the gateway
        engine = running.gw.rules.engine
        end = engine.book.live[alert["id"]].snoozed_until
        assert end is not None
        events, writes = split(engine.tick(end + timedelta(seconds=1)))
        assert [e.TYPE for e in events] == ["retail.alert.unsnoozed.v1"]
        await running.gw.emit_committed(events, writes)
        await wait_for(lambda: of("unsnoozed"), 10, "the unsnoozed event on MQTT")
        assert of("unsnoozed")[0]["data"]["alert_id"] == alert["id"]
        listed = (await running.client.get("/api/v1/alerts", params={"state": "open"}, headers=h)).json()["items"]
        assert [(a["id"], a["snoozed_until"]) for a in listed] == [(alert["id"], None)]
        # a closed alert cannot be snoozed
        running.set_stock("shelf-a1", "cola-330", 20, origin="manual")
        await wait_for(lambda: alert["id"] not in engine.book.live, 10, "the alert resolved")
        r = await running.client.post(f"/api/v1/alerts/{alert['id']}/snooze", headers=h,
                                      json={"by": "Sam", "duration_s": 600})
        assert r.status_code == 409, r.text
    finally:
        hub.close()
