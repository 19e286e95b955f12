"""Available-to-promise end to end (issue 16 item 2): the real gateway, its API, a real mosquitto as the hub.

ATP per SKU = certain on hand - reserved - safety stock per category, the same in REST, `cmd/atp.get` and the
retained `state/atp/{sku}`; `retail.atp.changed.v1` only when ATP crosses a configured threshold (also not
again after a restart); stale stock lowers ATP and says why; bad input gets a clear error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge.api.app import StockCellDoc, StockList
from edge.brokers import Mosquitto
from edge.gateway import Gateway
from edge.processing import StockFlag
from firmware_sim.hub import HubRecorder
from tests.api.conftest import TOKENS, Running, manifest_for_tests, wait_for
from tests.api.test_api import command

ROOT = "retail/v1/demo"
ATP = {"safety_stock": {"drinks": 2}, "thresholds": [0, 5]}
HQ = {"Authorization": f"Bearer {TOKENS['hq']}"}


@dataclass
class Store:
    """How to start (and restart) the gateway on one data directory, and the hub's recorder."""

    mosquitto: Mosquitto
    tmp: Path
    hub: HubRecorder

    def gateway(self) -> Gateway:
        """A new gateway on the same data directory (rules off: ATP does not depend on them)."""
        m = manifest_for_tests(self.tmp, atp=ATP)
        return Gateway(m, hub_url=self.mosquitto.url, data_dir=self.tmp / "var", tick_interval=0.1,
                       install_rules=False)  # fmt: skip

    def atp_events(self) -> list[tuple[str, int, int, str, int]]:
        """(sku, atp, previous, direction, threshold) of every retail.atp.changed.v1 the hub got."""
        return [(e["data"]["sku"], e["data"]["atp"], e["data"]["previous"], e["data"]["direction"],
                 e["data"]["threshold"]) for e in self.hub.events("/events/atp")
                if e["type"] == "retail.atp.changed.v1"]  # fmt: skip

    def retained(self, sku: str) -> dict[str, Any] | None:
        """The last retained state/atp/{sku} the hub got."""
        got = [m for m in self.hub.snapshot() if m.topic == f"{ROOT}/state/atp/{sku}" and m.payload]
        return dict(got[-1].json()) if got else None


@pytest.fixture
async def store(mosquitto: Mosquitto, tmp_path: Path) -> AsyncIterator[Store]:
    """The hub recorder on the store's events and retained state."""
    hub = HubRecorder(mosquitto.port, f"{ROOT}/#", persistent=False)
    try:
        yield Store(mosquitto, tmp_path, hub)
    finally:
        hub.close()


def _running(gw: Gateway, client: httpx.AsyncClient) -> Running:
    return Running(gw, str(client.base_url), client)


async def test_atp_same_in_rest_mqtt_and_retained(store: Store) -> None:
    async with store.gateway() as gw, httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.api.port}",
                                                        timeout=10) as client:  # fmt: skip
        run = _running(gw, client)
        run.set_stock("shelf-a1", "cola-330", 10)

        async def rest() -> dict[str, Any]:
            return dict((await client.get("/api/v1/atp/cola-330", headers=HQ)).json())

        doc = await wait_for(lambda: _if(rest(), lambda d: d["atp"] == 8), 10, "ATP 8")
        assert (doc["on_hand"], doc["certain"], doc["reserved"], doc["safety_stock"]) == (10, 10, 0, 2)
        assert (doc["gtin"], doc["unit"], doc["category"], doc["reasons"]) == ("05449000000996", "EA", "drinks", [])
        reply = await command(store.mosquitto, "atp.get", {"sku": "cola-330"})
        assert reply["ok"], reply
        assert reply["result"] == doc
        snap = await wait_for(lambda: _if_sync(store.retained("cola-330"), lambda d: d["atp"] == 8), 10, "retained")
        assert snap == doc
        listing = (await client.get("/api/v1/atp", headers=HQ)).json()
        assert {i["sku"] for i in listing["items"]} == {c.sku for c in gw.manifest.catalog}
        unknown = next(i for i in listing["items"] if i["sku"] == "choc-100")
        assert (unknown["atp"], unknown["on_hand"]) == (0, 0)
        assert unknown["reasons"] == ["shelf-b1: never reported (unknown, counted 0)"]
        drinks = (await client.get("/api/v1/atp", params={"category": "drinks"}, headers=HQ)).json()
        assert [i["sku"] for i in drinks["items"]] == ["cola-330", "water-500"]
        by_mqtt = await command(store.mosquitto, "atp.get", {"category": "drinks"})
        assert [i["sku"] for i in by_mqtt["result"]["items"]] == ["cola-330", "water-500"]
        # the OpenAPI document describes both answers, and the cells validate against it
        spec = (await client.get("/openapi.json")).json()
        schemas = spec["components"]["schemas"]
        assert {"AtpDoc", "AtpList", "StockCellDoc", "StockList", "ShelfStock"} <= set(schemas)
        ok = spec["paths"]["/api/v1/stock"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok == {"$ref": "#/components/schemas/StockList"}
        cells = (await client.get("/api/v1/stock", headers=HQ)).json()
        assert StockList.model_validate(cells).items[0].state in ("unknown", "ok", "low", "out")
        assert set(StockCellDoc.model_fields) >= set(cells["items"][0])


@pytest.mark.parametrize(
    ("path", "params", "cmd", "status", "code"),
    [
        ("/api/v1/atp/nope", {}, {"sku": "nope"}, 404, "not_found"),
        ("/api/v1/atp", {"category": "nope"}, {"category": "nope"}, 404, "not_found"),
        ("/api/v1/atp/" + "x" * 65, {}, {"sku": 5}, 422, "bad_request"),
        ("/api/v1/atp", {"category": "x" * 65}, {"category": ["drinks"]}, 422, "bad_request"),
    ],
)
async def test_bad_atp_queries_get_clear_errors(store: Store, path: str, params: dict[str, str], cmd: dict[str, Any],
                                               status: int, code: str) -> None:  # fmt: skip
    async with store.gateway() as gw, httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.api.port}",
                                                        timeout=10) as client:  # fmt: skip
        r = await client.get(path, params=params, headers=HQ)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code)
        reply = await command(store.mosquitto, "atp.get", cmd)
        assert not reply["ok"]
        assert reply["error"]["code"] == code
        assert "sku" in reply["error"]["message"] or "category" in reply["error"]["message"]


async def test_events_only_on_crossings_and_not_again_after_a_restart(store: Store) -> None:
    async with store.gateway() as gw, httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.api.port}",
                                                        timeout=10) as client:  # fmt: skip
        run = _running(gw, client)
        for n in (10, 9, 8, 7, 6, 2, 3):  # ATP = n - 2 (safety stock of drinks)
            run.set_stock("shelf-a1", "cola-330", n)
            await wait_for(_retained_with(store, "cola-330", on_hand=n), 10, f"on hand {n}")
        expected = [("cola-330", 8, 0, "up", 5), ("cola-330", 5, 6, "down", 5), ("cola-330", 0, 4, "down", 0),
                    ("cola-330", 1, 0, "up", 0)]  # fmt: skip
        await wait_for(lambda: len(store.atp_events()) >= len(expected), 10, "crossing events")
        version = store.retained("cola-330")["version"]  # type: ignore[index]
    assert store.atp_events() == expected
    # a restart: the same figure, no event again, the version goes on
    async with store.gateway() as gw:
        await wait_for(gw.uplink.connected.is_set, 10, "connected")
        await gw.outbox.flush()
        assert gw.atp.get("cola-330", gw.clock.now())["version"] == version
        run = _running(gw, httpx.AsyncClient())
        run.set_stock("shelf-a1", "cola-330", 20)
        snap = await wait_for(lambda: _if_sync(store.retained("cola-330"), lambda d: d["atp"] == 18), 10, "18")
        await wait_for(lambda: len(store.atp_events()) > len(expected), 10, "the next crossing")
    assert snap["version"] == version + 1
    assert store.atp_events() == [*expected, ("cola-330", 18, 1, "up", 5)]


async def test_stale_stock_lowers_atp_and_says_why(store: Store) -> None:
    async with store.gateway() as gw, httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.api.port}",
                                                        timeout=10) as client:  # fmt: skip
        run = _running(gw, client)
        run.set_stock("rack-c1", "tee-m", 12, origin="rfid")
        await wait_for(lambda: _if_sync(store.retained("tee-m"), lambda d: d["atp"] == 12), 10, "ATP 12")

        def flag(on: bool) -> None:
            now = gw.clock.now()
            gw.pipeline.route([StockFlag(shelf="rack-c1", sku="tee-m", time=now, origin="rfid", source="rfid-1",
                                         flag="stale", on=on, reason="reader not inventorying")], now)  # fmt: skip

        flag(True)
        snap = await wait_for(lambda: _if_sync(store.retained("tee-m"), lambda d: d["atp"] == 0), 10, "ATP 0")
        assert (snap["on_hand"], snap["certain"], snap["certain_only"]) == (12, 0, True)
        assert "stale since" in snap["reasons"][0] and "reader not inventorying" in snap["reasons"][0]
        rest = (await client.get("/api/v1/atp/tee-m", headers=HQ)).json()
        assert rest == snap
        flag(False)
        await wait_for(lambda: _if_sync(store.retained("tee-m"), lambda d: d["atp"] == 12), 10, "ATP back to 12")
        await wait_for(lambda: len(store.atp_events()) >= 3, 10, "events")
    assert store.atp_events() == [("tee-m", 12, 0, "up", 5), ("tee-m", 0, 12, "down", 0), ("tee-m", 12, 0, "up", 5)]


async def test_reservation_hook_through_the_gateway(store: Store) -> None:
    async with store.gateway() as gw:
        _running(gw, httpx.AsyncClient()).set_stock("shelf-a1", "water-500", 12)
        await wait_for(_retained_with(store, "water-500", atp=10), 10, "ATP 10")  # 12 - safety stock 2
        gw.atp.reserved = lambda sku: 7 if sku == "water-500" else 0
        gw.stock.nudge(["water-500"])
        gw.emit([])  # an order module emits its events here; the new ATP commits with them
        snap = await wait_for(_retained_with(store, "water-500", atp=3), 10, "ATP 3")
        await wait_for(lambda: len(store.atp_events()) >= 2, 10, "the crossing")
    assert (snap["reserved"], snap["certain"], snap["safety_stock"]) == (7, 12, 2)
    assert store.atp_events() == [("water-500", 10, 0, "up", 5), ("water-500", 3, 10, "down", 5)]


async def _if(coro: Any, pred: Any) -> Any:
    value = await coro
    return value if pred(value) else None


def _if_sync(value: Any, pred: Any) -> Any:
    return value if value is not None and pred(value) else None


def _retained_with(store: Store, sku: str, **want: int) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        doc = store.retained(sku)
        return doc if doc is not None and all(doc[k] == v for k, v in want.items()) else None

    return check
