"""The local HTTP API against the real gateway (private mosquitto as the hub): auth, stock, alerts, offers,
rules reload, SSE, metrics, bad input; and the same operations as MQTT commands."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge.brokers import Mosquitto
from edge.gateway import Gateway
from edge.processing import StockUpdate
from firmware_sim.hub import HubCommander, HubRecorder
from tests.api.conftest import CMD_KEY, TOKENS, UUID, Running, manifest_for_tests, wait_for

ROOT = "retail/v1/demo"


@pytest.mark.parametrize(
    ("method", "path", "role", "status"),
    [
        ("GET", "/api/v1/stock", None, 401),
        ("GET", "/api/v1/stock", "bogus", 401),
        ("GET", "/api/v1/stock", "staff", 200),
        ("GET", "/api/v1/stock", "hq", 200),
        ("GET", "/api/v1/stock", "shopper-app", 403),
        ("GET", "/api/v1/alerts", "hq", 200),
        ("GET", "/api/v1/devices", "staff", 200),
        ("GET", "/api/v1/traffic", "staff", 200),
        ("GET", "/api/v1/offers", "shopper-app", 200),
        ("POST", "/api/v1/sightings", "staff", 403),
        ("POST", "/api/v1/rules/reload", "staff", 403),
        ("POST", "/api/v1/rules/reload", "admin", 200),
        ("POST", "/api/v1/alerts/x/ack", "hq", 403),
        ("GET", "/healthz", None, 200),
        ("GET", "/metrics", None, 200),
        ("GET", "/openapi.json", None, 200),
        ("GET", "/", None, 200),
        ("GET", "/static/app.js", None, 200),
    ],
)
async def test_roles(running: Running, method: str, path: str, role: str | None, status: int) -> None:
    headers = {}
    if role == "bogus":
        headers = {"Authorization": "Bearer not-a-token-at-all"}
    elif role is not None:
        headers = running.headers(role)
    body = {"by": "x"} if path.endswith("/ack") else ({} if method == "POST" else None)
    r = await running.client.request(method, path, headers=headers, json=body)
    assert r.status_code == status, r.text
    if status == 401:
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["error"]["code"] == "unauthorized"


async def test_stock_rest_matches_gateway_state_and_stock_get(running: Running, mosquitto: Mosquitto) -> None:
    running.set_stock("shelf-a1", "cola-330", 12)
    running.set_stock("shelf-a1", "water-500", 7)
    staff = running.headers("hq")
    body = (await running.client.get("/api/v1/stock", params={"shelf": "shelf-a1"}, headers=staff)).json()
    assert {(i["sku"], i["count"], i["version"]) for i in body["items"]} == {("cola-330", 12, 1), ("water-500", 7, 1)}
    zone = (await running.client.get("/api/v1/stock", params={"zone": "aisle-2"}, headers=staff)).json()
    assert {i["shelf"] for i in zone["items"]} == {"shelf-b1"}
    shelf = (await running.client.get("/api/v1/stock/shelf-a1", headers=staff)).json()
    assert shelf == running.gw.stock.shelf_snapshot("shelf-a1")
    sku = (await running.client.get("/api/v1/stock/sku/cola-330", headers=staff)).json()
    assert sku["total"] == 12
    assert (await running.client.get("/api/v1/stock/nope", headers=staff)).status_code == 404
    assert (await running.client.get("/api/v1/stock/sku/nope", headers=staff)).status_code == 404
    # the same versions as the MQTT command stock.get
    reply = await command(mosquitto, "stock.get", {"shelf": "shelf-a1"})
    assert reply["ok"]
    mqtt_items = {(i["sku"], i["count"], i["version"]) for i in reply["result"]["items"]}
    assert mqtt_items == {(i["sku"], i["count"], i["version"]) for i in body["items"]}


async def command(broker: Mosquitto, name: str, args: dict[str, Any], timeout: float = 20.0) -> dict[str, Any]:
    """Send `cmd/{name}` as the hub would (signed with the test manifest's key), and wait for the reply."""
    hub = HubCommander(broker.port, ROOT, kid="hq", secret=CMD_KEY)
    try:
        return await asyncio.to_thread(hub.call, name, args, timeout=timeout)
    finally:
        hub.close()


async def open_low_alert(running: Running) -> dict[str, Any]:
    running.set_stock("shelf-a1", "cola-330", 10)
    running.set_stock("shelf-a1", "cola-330", 2)

    async def found() -> Any:
        r = await running.client.get("/api/v1/alerts", params={"state": "open"}, headers=running.headers("staff"))
        return r.json()["items"]

    items = await wait_for(found, 10, "a low-stock alert")
    return dict(items[0])


async def test_alert_ack_over_api_and_mqtt_lifecycle(running: Running, mosquitto: Mosquitto) -> None:
    hub = HubRecorder(mosquitto.port, f"{ROOT}/alerts", persistent=False)
    try:
        alert = await open_low_alert(running)
        assert (alert["kind"], alert["count"], alert["restock_qty"]) == ("low_stock", 2, 22)
        h = running.headers("staff")
        # bad input changes nothing
        assert (await running.client.post(f"/api/v1/alerts/{alert['id']}/ack", headers=h, json={})).status_code == 422
        r = await running.client.post(f"/api/v1/alerts/{alert['id']}/ack", headers=h, json={"by": "x" * 65})
        assert r.status_code == 422
        assert (await running.client.post("/api/v1/alerts/nope/ack", headers=h, json={"by": "Sam"})).status_code == 404
        # malformed command: error reply, nothing changes
        bad = await command(mosquitto, "alert.ack", {"alert_id": alert["id"]})
        assert not bad["ok"]
        assert bad["error"]["code"] == "bad_request"
        ok = await command(mosquitto, "alert.ack", {"alert_id": alert["id"], "by": "Sam"})
        assert ok["ok"], ok
        assert ok["result"]["state"] == "acknowledged"
        rows = (await running.client.get("/api/v1/alerts", params={"state": "acknowledged"}, headers=h)).json()
        assert [a["acknowledged_by"] for a in rows["items"]] == ["Sam"]
        # recovery resolves it; acking a resolved alert is a conflict
        running.set_stock("shelf-a1", "cola-330", 20, origin="manual")
        await wait_for(lambda: not running.gw.rules.engine.book.live, 5, "resolution")
        r = await running.client.post(f"/api/v1/alerts/{alert['id']}/ack", headers=h, json={"by": "Sam"})
        assert r.status_code == 409

        def types() -> list[str]:
            return [str(e["type"]) for e in hub.events()]

        await wait_for(lambda: "retail.alert.resolved.v1" in types(), 10, "resolved on MQTT")
        assert types()[:3] == ["retail.alert.opened.v1", "retail.alert.acknowledged.v1", "retail.alert.resolved.v1"]
        assert all(e["data"]["alert_id"] == alert["id"] for e in hub.events())
    finally:
        hub.close()


async def test_alerts_survive_a_restart(mosquitto: Mosquitto, tmp_path: Path) -> None:
    m = manifest_for_tests(tmp_path)
    async with Gateway(m, hub_url=mosquitto.url, data_dir=tmp_path / "var", tick_interval=0.1) as gw:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.api.port}") as c:
            run = Running(gw, "", c)
            alert = await open_low_alert(run)
        await gw.rules.stop()
    async with Gateway(m, hub_url=mosquitto.url, data_dir=tmp_path / "var", tick_interval=0.1) as gw:
        await wait_for(lambda: gw.rules.engine.ready, 5, "restore")
        assert list(gw.rules.engine.book.live) == [alert["id"]]
        gw.pipeline.route([], gw.clock.now())
        now = gw.clock.now()
        gw.pipeline.route(
            [StockUpdate(shelf="shelf-a1", sku="cola-330", time=now, origin="manual", source="t", count=24)], now
        )
        await wait_for(lambda: not gw.rules.engine.book.live, 5, "resolved after restart")
        await gw.rules.stop()


SIGHT = {"shopper": "tok-abc", "consent": True, "beacon": {"uuid": UUID, "major": 1, "minor": 2}}


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({**SIGHT, "beacon": {"uuid": UUID, "major": 9, "minor": 9}}, 404, "unknown_beacon"),
        ({**SIGHT, "shopper": "x" * 65}, 422, "bad_shopper"),
        ({**SIGHT, "consent": "yes"}, 422, "bad_consent"),
        ({**SIGHT, "time": "2001-01-01T00:00:00Z"}, 422, "stale_sighting"),
        ({"shopper": "t", "consent": True}, 422, "bad_request"),
        ({**SIGHT, "pad": "x" * 4000}, 413, "too_large"),
    ],
)
async def test_bad_sightings(running: Running, body: dict[str, Any], status: int, code: str) -> None:
    r = await running.client.post("/api/v1/sightings", headers=running.headers("shopper-app"), json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    assert running.gw.rules.engine.offer_state.shoppers == {}
    metrics = (await running.client.get("/metrics")).text
    if status != 413:
        assert f'edge_rules_sightings_total{{reason="{code}",result="rejected"}} 1' in metrics
    else:
        assert 'route="<body-limit>",status="413"' in metrics


async def test_sighting_offer_only_when_in_stock_and_event_without_token(
    running: Running, mosquitto: Mosquitto
) -> None:
    hub = HubRecorder(mosquitto.port, f"{ROOT}/events/offers", persistent=False)
    try:
        h = running.headers("shopper-app")
        r = await running.client.post("/api/v1/sightings", headers=h, json=SIGHT)
        assert r.json() == {"zone": "aisle-1", "consent": True, "offers": []}  # cola not on the shelf yet
        running.set_stock("shelf-a1", "cola-330", 5)
        r = await running.client.post("/api/v1/sightings", headers=h, json=SIGHT)
        assert [o["id"] for o in r.json()["offers"]] == ["cola-deal"]
        no = await running.client.post(
            "/api/v1/sightings", headers=h, json={**SIGHT, "shopper": "t2", "consent": False}
        )
        assert no.json()["offers"] == []
        assert "t2" not in running.gw.rules.engine.offer_state.shoppers
        via_mqtt = await command(mosquitto, "sighting", SIGHT)
        assert via_mqtt["ok"]
        assert [o["id"] for o in via_mqtt["result"]["offers"]] == ["cola-deal"]
        bad = await command(mosquitto, "sighting", {**SIGHT, "beacon": {"namespace": "00" * 10, "instance": "11" * 6}})
        assert (bad["ok"], bad["error"]["code"]) == (False, "unknown_beacon")
        await asyncio.to_thread(hub.wait_for, lambda x: len(x.events()) >= 2, 10)
        ev = hub.events()[0]
        assert ev["type"] == "retail.offer.triggered.v1"
        assert ev["data"] == {"offer_id": "cola-deal", "zone": "aisle-1", "sku": "cola-330"}
        assert b"tok-abc" not in b"".join(m.payload for m in hub.snapshot())
        offers = (await running.client.get("/api/v1/offers", headers=h)).json()
        assert offers["items"][0]["title"] == "Cola 2 for 1"
    finally:
        hub.close()


async def test_rules_reload_atomic_over_api_and_mqtt(running: Running, mosquitto: Mosquitto) -> None:
    h = running.headers("admin")
    engine = running.gw.rules.engine
    r = await running.client.post(
        "/api/v1/rules/reload", headers=h, json={"rules": {"skus": {"cola-330": {"max": 99}}}}
    )
    assert r.status_code == 422
    assert "above the planogram capacity" in r.json()["error"]["message"]
    assert engine.ruleset.cells[("shelf-a1", "cola-330")].min == 3
    r = await running.client.post("/api/v1/rules/reload", headers=h, json={"rules": {"defaults": {"min": 5}}})
    assert r.status_code == 200, r.text
    assert engine.ruleset.cells[("shelf-a1", "cola-330")].min == 5
    bad = await command(mosquitto, "rules.reload", {"rules": {"defaults": {"min": -1}}})
    assert (bad["ok"], bad["error"]["code"]) == (False, "rules_rejected")
    assert engine.ruleset.cells[("shelf-a1", "cola-330")].min == 5


async def test_rules_file_watch(mosquitto: Mosquitto, tmp_path: Path) -> None:
    f = tmp_path / "rules.yaml"
    f.write_text("defaults: {min: 4}\n")
    m = manifest_for_tests(tmp_path, rules={"file": str(f), "watch_interval_s": 0.1})
    async with Gateway(m, hub_url=mosquitto.url, data_dir=tmp_path / "var", tick_interval=0.1) as gw:
        cell = ("shelf-a1", "cola-330")
        assert gw.rules.engine.ruleset.cells[cell].min == 4
        f.write_text("defaults: {min: 6}\n")
        await wait_for(lambda: gw.rules.engine.ruleset.cells[cell].min == 6, 5, "file reload")
        f.write_text("defaults: {min: 6\n")  # broken YAML: old rules stay, the reason is reported
        await wait_for(lambda: gw.rules.last_problems, 5, "rejection")
        assert "YAML" in gw.rules.last_problems[0]
        assert gw.rules.engine.ruleset.cells[cell].min == 6
        await gw.rules.stop()


async def test_sse_streams_accepted_events(running: Running) -> None:
    lines: list[str] = []

    async def read() -> None:
        async with running.client.stream(
            "GET", "/api/v1/events", params={"access_token": TOKENS["staff"], "type_prefix": "retail.stock."}
        ) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            async for line in r.aiter_lines():
                lines.append(line)
                if line.startswith("data:"):
                    return

    task = asyncio.create_task(read())
    await wait_for(lambda: any(line.startswith(": connected") for line in lines), 5, "stream open")
    running.set_stock("shelf-b1", "choc-100", 9)
    await asyncio.wait_for(task, 10)
    assert "event: retail.stock.changed.v1" in lines
    data = orjson.loads(next(line for line in lines if line.startswith("data:"))[5:])
    assert data["data"]["count"] == 9
    assert data["specversion"] == "1.0"
    r = await running.client.get("/api/v1/events", params={"access_token": "wrong"})
    assert r.status_code == 401


async def test_metrics_and_openapi(running: Running) -> None:
    await running.client.get("/api/v1/stock", headers=running.headers("staff"))
    running.set_stock("shelf-a1", "cola-330", 10)
    text = (await running.client.get("/metrics")).text
    assert 'edge_api_requests_total{method="GET",route="/api/v1/stock",status="200"} 1' in text
    # the whole page as Prometheus reads it (its reference parser raises on anything malformed)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["edge_api_requests"].type == "counter"
    assert {"edge_outbox_depth", "edge_device_up", "edge_core_task_up"} <= families.keys()
    assert "edge_rules_evaluations_total" in text, text
    assert 'edge_rules_alerts{state="open"}' in text
    spec = (await running.client.get("/openapi.json")).json()
    for p in ["/api/v1/stock", "/api/v1/alerts/{alert_id}/ack", "/api/v1/sightings", "/api/v1/events"]:
        assert p in spec["paths"]
    assert (await running.client.get("/docs")).status_code == 404  # Swagger UI needs a CDN: off


async def test_traffic_from_the_traffic_processor(mosquitto: Mosquitto, tmp_path: Path) -> None:
    door = {"id": "door-1", "type": "door_counter", "zone": "entrance", "transport": "mqtt", "topic": "door/1"}
    m = manifest_for_tests(tmp_path, devices=[door], local_broker={"url": mosquitto.url})
    async with Gateway(m, hub_url=mosquitto.url, data_dir=tmp_path / "var", tick_interval=0.1) as gw:
        # bounded phases, so that a hang (seen once in a full-suite run, never alone) says where it was
        async with asyncio.timeout(20), httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.api.port}") as c:
            h = {"Authorization": f"Bearer {TOKENS['staff']}"}
            body = (await c.get("/api/v1/traffic", headers=h)).json()
            assert body["available"] is True
            assert {"visitors_today", "entries_today", "occupancy", "zones"} <= set(body)
            devices = (await c.get("/api/v1/devices", headers=h)).json()["items"]
            assert [d["device"] for d in devices] == ["door-1"]
        async with asyncio.timeout(10):
            await gw.rules.stop()


async def test_restock_mute_command(running: Running, mosquitto: Mosquitto) -> None:
    bad = await command(mosquitto, "restock.mute", {"shelf": "nope"})
    assert (bad["ok"], bad["error"]["code"]) == (False, "not_found")
    ok = await command(mosquitto, "restock.mute", {"shelf": "shelf-a1", "on": True})
    assert {k: ok["result"][k] for k in ("shelf", "muted")} == {"shelf": "shelf-a1", "muted": True}
    running.set_stock("shelf-a1", "cola-330", 1)
    await asyncio.sleep(0.8)  # well past the 0.3 s debounce
    assert not running.gw.rules.engine.book.live
    await command(mosquitto, "restock.mute", {"shelf": "shelf-a1", "on": False})
    await wait_for(lambda: running.gw.rules.engine.book.live, 5, "alert after unmute")


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 3 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.randint(-(2**40), 2**40)
    if kind == 3:
        return rng.random() * 1e6
    if kind == 4:
        return "".join(rng.choice('aZ09-_:/{}"\\ é\x00') for _ in range(rng.randrange(70)))
    if kind == 5:
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = [
        "shopper",
        "consent",
        "beacon",
        "zone",
        "rssi",
        "time",
        "tags",
        "uuid",
        "major",
        "minor",
        "by",
        "rules",
        "namespace",
        "instance",
        "defaults",
        "min",
    ]
    return {rng.choice(keys): _random_json(rng, depth + 1) for _ in range(rng.randrange(6))}


async def test_fuzz_bodies_never_500_and_change_nothing(running: Running) -> None:
    rng = random.Random(6)
    before = running.gw.rules.engine.ruleset
    routes = [
        ("/api/v1/sightings", "shopper-app"),
        ("/api/v1/alerts/x/ack", "staff"),
        ("/api/v1/rules/reload", "admin"),
    ]
    for i in range(300):
        path, role = routes[i % 3]
        body = _random_json(rng)
        if path.endswith("reload") and isinstance(body, dict) and "rules" in body and isinstance(body["rules"], dict):
            body["rules"]["defaults"] = {"min": -1}  # a reload that succeeds would change something
        raw = orjson.dumps(body) if i % 10 else b"{not json"
        r = await running.client.post(
            path, headers={**running.headers(role), "Content-Type": "application/json"}, content=raw
        )
        assert r.status_code < 500, (path, body, r.text)
        if r.status_code >= 400:
            assert "error" in r.json()
    assert running.gw.rules.engine.book.live == {}
    assert running.gw.rules.engine.ruleset.cells == before.cells
