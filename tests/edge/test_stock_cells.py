"""Self-explaining stock cells end to end (issue 16 item 1): the real gateway, the real API and a real mosquitto.

Every cell says what it is (GTIN-14, name, unit), how full (min/par from the restock rules, out/low/ok), how sure
(unknown until reported, never 0), the same in REST, `cmd/stock.get` and the retained `state/stock/{shelf}`;
unknown shelves/SKUs/zones are `not_found` in both; retained `state/catalog` and `state/info` describe the store.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from edge.brokers import Mosquitto
from edge.config import parse_manifest
from edge.gateway import Gateway
from edge.processing import StockUpdate
from edge.storeinfo import manifest_hash
from firmware_sim.hub import HubRecorder
from tests.api.conftest import TOKENS, Running, manifest_for_tests, running, wait_for  # noqa: F401 (the fixture)
from tests.api.test_api import command

ROOT = "retail/v1/demo"


def retained(hub: HubRecorder, suffix: str) -> dict[str, Any] | None:
    """The last retained payload the hub got on ROOT/suffix."""
    got = [m for m in hub.snapshot() if m.topic == f"{ROOT}/{suffix}" and m.payload]
    return dict(got[-1].json()) if got else None


async def test_unknown_is_not_zero_and_cells_explain_themselves(running: Running, mosquitto: Mosquitto) -> None:  # noqa: F811
    h = running.headers("hq")
    body = (await running.client.get("/api/v1/stock", params={"shelf": "shelf-a1"}, headers=h)).json()
    cola = next(i for i in body["items"] if i["sku"] == "cola-330")
    assert (cola["count"], cola["state"], cola["version"], cola["low"]) == (None, "unknown", 0, False)
    assert (cola["gtin"], cola["name"], cola["unit"], cola["category"]) == (
        "05449000000996", "Cola 330 ml", "EA", "drinks")
    assert (cola["min"], cola["par"], cola["capacity"]) == (3, 24, 24)  # the rules' default min 3, par = capacity
    running.set_stock("shelf-a1", "cola-330", 0)
    running.set_stock("shelf-a1", "water-500", 2)
    running.set_stock("shelf-b1", "crisps-150", 12)

    async def cells() -> dict[str, dict[str, Any]]:
        r = await running.client.get("/api/v1/stock", headers=h)
        return {i["sku"]: i for i in r.json()["items"]}

    got = await wait_for(lambda: _if(cells(), lambda c: c["crisps-150"]["version"] == 1), 10, "counts")
    assert (got["cola-330"]["count"], got["cola-330"]["state"], got["cola-330"]["low"]) == (0, "out", True)
    assert (got["water-500"]["count"], got["water-500"]["state"], got["water-500"]["low"]) == (2, "low", True)
    assert (got["crisps-150"]["count"], got["crisps-150"]["state"]) == (12, "ok")
    assert (got["choc-100"]["count"], got["choc-100"]["state"]) == (None, "unknown")
    assert got["crisps-150"]["verified"] is not None and got["crisps-150"]["updated"] is not None
    # the same cells over MQTT and in the retained snapshot HQ reads
    reply = await command(mosquitto, "stock.get", {"shelf": "shelf-a1"})
    assert reply["ok"], reply
    assert {i["sku"]: (i["count"], i["state"], i["gtin"]) for i in reply["result"]["items"]} == {
        "cola-330": (0, "out", "05449000000996"), "water-500": (2, "low", "05449000214911")}
    hub = HubRecorder(mosquitto.port, f"{ROOT}/state/#", persistent=False)
    try:
        snap = await wait_for(lambda: _if_sync(retained(hub, "state/stock/shelf-b1"),
                                               lambda s: any(i["count"] == 12 for i in s["items"])), 10, "snapshot")
        by = {i["sku"]: i for i in snap["items"]}
        assert (by["choc-100"]["count"], by["choc-100"]["state"]) == (None, "unknown")
        assert (by["crisps-150"]["gtin"], by["crisps-150"]["name"], by["crisps-150"]["min"]) == (
            "08710398527608", "Salted crisps 150 g", 3)
    finally:
        hub.close()


async def test_a_repeated_count_is_a_verification_not_a_change(running: Running) -> None:  # noqa: F811
    h = running.headers("hq")
    running.set_stock("shelf-b1", "choc-100", 9)

    async def choc() -> dict[str, Any]:
        r = await running.client.get("/api/v1/stock", params={"sku": "choc-100"}, headers=h)
        return dict(r.json()["items"][0])

    first = await wait_for(lambda: _if(choc(), lambda c: c["version"] == 1), 10, "first count")
    await wait_for(lambda: running.gw.clock.now().isoformat() > first["verified"].replace("Z", "+00:00"), 5, "time")
    running.set_stock("shelf-b1", "choc-100", 9)
    again = await wait_for(lambda: _if(choc(), lambda c: c["verified"] != first["verified"]), 10, "verification")
    assert (again["version"], again["updated"], again["count"]) == (1, first["updated"], 9)


async def test_sse_follows_each_stock_change_with_the_cell(running: Running) -> None:  # noqa: F811
    lines: list[str] = []

    async def read() -> None:
        async with running.client.stream(
            "GET", "/api/v1/events", params={"access_token": TOKENS["staff"], "type_prefix": "retail.stock."}
        ) as r:
            async for line in r.aiter_lines():
                lines.append(line)
                if line.startswith("data:") and "event: stock.cell" in lines:
                    return

    task = asyncio.create_task(read())
    await wait_for(lambda: any(line.startswith(": connected") for line in lines), 5, "stream open")
    running.set_stock("shelf-b1", "choc-100", 2)
    await asyncio.wait_for(task, 10)
    at = lines.index("event: stock.cell")
    assert "event: retail.stock.changed.v1" in lines[:at]
    cell = orjson.loads(lines[-1][5:])
    assert (cell["sku"], cell["gtin"], cell["count"], cell["state"], cell["min"]) == (
        "choc-100", "07622210449283", 2, "low", 3)


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"shelf": "nope"}, "not_found"),
        ({"sku": "nope"}, "not_found"),
        ({"zone": "nope"}, "not_found"),
        ({"shelf": "shelf-a1", "sku": "nope"}, "not_found"),
        ({"shelf": 5}, "bad_request"),  # MQTT only: a query string is always a string
    ],
)
async def test_errors_are_the_same_in_rest_and_mqtt(running: Running, mosquitto: Mosquitto,  # noqa: F811
                                                    params: dict[str, Any],
                                                    code: str) -> None:  # fmt: skip
    reply = await command(mosquitto, "stock.get", params)
    assert not reply["ok"], reply
    assert reply["error"]["code"] == code
    if all(isinstance(v, str) for v in params.values()):
        r = await running.client.get("/api/v1/stock", params=params, headers=running.headers("hq"))
        assert (r.status_code, r.json()["error"]["code"]) == (404, code)
    r = await running.client.get("/api/v1/stock", params={"shelf": "x" * 65}, headers=running.headers("hq"))
    assert (r.status_code, r.json()["error"]["code"]) == (422, "bad_request")


async def test_retained_catalog_and_info(mosquitto: Mosquitto, tmp_path: Path) -> None:
    manifest = manifest_for_tests(tmp_path)
    hub = HubRecorder(mosquitto.port, f"{ROOT}/state/#", persistent=False)
    try:
        async with Gateway(manifest, hub_url=mosquitto.url, data_dir=tmp_path / "var", install_rules=False):
            info = await wait_for(lambda: retained(hub, "state/info"), 10, "state/info")
            catalog = await wait_for(lambda: retained(hub, "state/catalog"), 10, "state/catalog")
        assert (info["store"], info["name"], info["timezone"]) == ("demo", "Demo Market", "UTC")
        assert info["opening_hours"] == {"open": "00:00", "close": "00:00"}
        assert info["manifest"]["sha256"] == manifest_hash(manifest) and len(info["manifest"]["sha256"]) == 64
        assert info["gateway_version"]
        assert {i["sku"]: i["gtin"] for i in catalog["items"]} == {c.sku: c.gtin for c in manifest.catalog}
        assert {i["sku"]: i["category"] for i in catalog["items"]}["tee-m"] == "apparel"
        assert catalog["version"] == 1
        # a restart with the same manifest publishes nothing new; a changed catalog a new version
        n = len(hub.snapshot())
        async with Gateway(manifest, hub_url=mosquitto.url, data_dir=tmp_path / "var", install_rules=False) as gw:
            await wait_for(gw.uplink.connected.is_set, 10, "connected")
            await gw.outbox.flush()
        assert not [m for m in hub.snapshot()[n:] if m.topic.endswith(("state/catalog", "state/info"))]
        raw = yaml.safe_load(manifest.model_dump_json())
        raw["catalog"][0]["name"] = "Cola Zero 330 ml"
        changed = parse_manifest(yaml.safe_dump(raw), "m.yaml")
        async with Gateway(changed, hub_url=mosquitto.url, data_dir=tmp_path / "var", install_rules=False):
            cat2 = await wait_for(lambda: _if_sync(retained(hub, "state/catalog"), lambda c: c["version"] == 2),
                                  10, "catalog v2")  # fmt: skip
            info2 = await wait_for(lambda: _if_sync(retained(hub, "state/info"),
                                                    lambda i: i["manifest"]["sha256"] != info["manifest"]["sha256"]),
                                   10, "info with the new hash")  # fmt: skip
        assert {i["sku"]: i["name"] for i in cat2["items"]}["cola-330"] == "Cola Zero 330 ml"
        assert info2["version"] > info["version"]
    finally:
        hub.close()


async def test_info_lists_devices_and_follows_their_state(mosquitto: Mosquitto, tmp_path: Path) -> None:
    raw = yaml.safe_load(manifest_for_tests(tmp_path).model_dump_json())
    raw["devices"] = [{"id": "scale-x", "type": "shelf_serial", "port": str(tmp_path / "no-such-tty"),
                       "lanes": [{"channel": "1", "shelf": "shelf-a1", "lane": raw["shelves"][0]["lanes"][0]["id"]}]}]
    manifest = parse_manifest(yaml.safe_dump(raw), "m.yaml")
    hub = HubRecorder(mosquitto.port, f"{ROOT}/state/info", persistent=False)
    try:
        async with Gateway(manifest, hub_url=mosquitto.url, data_dir=tmp_path / "var", install_rules=False):
            info = await wait_for(lambda: _if_sync(retained(hub, "state/info"), lambda i: any(
                d["device"] == "scale-x" and d["state"] in ("offline", "fault") for d in i["devices"])), 20, "device")
        assert [d["type"] for d in info["devices"]] == ["shelf_serial"]
    finally:
        hub.close()


async def _if(coro: Any, pred: Any) -> Any:
    value = await coro
    return value if pred(value) else None


def _if_sync(value: Any, pred: Any) -> Any:
    return value if value is not None and pred(value) else None


def test_update_keeps_unknown_count_out_of_sums() -> None:
    """StockChanged.previous stays None for a first count (the ledger knew nothing before)."""
    m = manifest_for_tests(Path("/nonexistent"))
    from edge.state import StockState

    st = StockState(m)
    from datetime import UTC, datetime

    ev = st.apply(StockUpdate(shelf="shelf-a1", sku="cola-330", time=datetime.now(UTC), origin="weight",
                              source="t", count=4))  # fmt: skip
    assert ev is not None and ev.previous is None
