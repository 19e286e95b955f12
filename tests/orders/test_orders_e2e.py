"""Online orders end to end (issue 16 items 3-5): the real gateway with its rules and API, a real mosquitto as
the hub (signed `cmd/order.*` from firmware_sim.hub.HubCommander), a serial scanner on a pty, and a restart of
the gateway on the same data directory in the middle of each flow.

Reserve -> pick by scan -> ready -> collected; reserve -> pick by the shelf's sensors (not a sale); more than
ATP -> short lines; the same order again -> the same answer, other content -> conflict; expiry at the due time
(manual clock); cancel; bad input changes nothing, with the same codes over REST and MQTT; the low-stock rule
sees reserved units; the pick task reaches the staff chat.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from edge.brokers import Mosquitto
from edge.clock import Clock, ManualClock
from edge.gateway import Gateway
from firmware_sim.hub import HubCommander, HubRecorder
from firmware_sim.scanner import gs1_128
from firmware_sim.shelf import PtyPort
from tests.api.conftest import CMD_KEY, TOKENS, Running, manifest_for_tests, wait_for

ROOT = "retail/v1/demo"
COLA, COLA_GTIN, WATER_GTIN = "cola-330", "05449000000996", "05449000214911"
HQ = {"Authorization": f"Bearer {TOKENS['hq']}"}
STAFF = {"Authorization": f"Bearer {TOKENS['staff']}"}


@dataclass
class Store:
    """One store's data directory, its pick scanner (a pty that outlives gateway restarts) and the hub."""

    mosquitto: Mosquitto
    tmp: Path
    hub: HubRecorder
    scanner: PtyPort
    overrides: dict[str, Any] = field(default_factory=dict)

    @asynccontextmanager
    async def run(self, clock: Clock | None = None) -> AsyncIterator[Run]:
        """The gateway (rules, API, the pick scanner) on the store's data directory, and an API client."""
        scanner = {"id": "scanner-pick", "type": "scanner_serial", "port": str(self.scanner.link), "role": "pick"}
        m = manifest_for_tests(self.tmp, devices=[scanner], **self.overrides)
        async with Gateway(m, clock=clock, hub_url=self.mosquitto.url, data_dir=self.tmp / "var",
                           tick_interval=0.1) as gw:  # fmt: skip
            assert gw.api is not None
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.api.port}", timeout=20) as client:
                # the clerk scans once the scanner works (its port reopened after a restart)
                await wait_for(lambda: any(d.device == "scanner-pick" and d.state == "online" for d in gw.devices()),
                               20, "the pick scanner online")
                yield Run(self, gw, client)
            await gw.rules.stop()

    def events(self, prefix: str = "retail.order.") -> list[dict[str, Any]]:
        """Order events the hub got, in order."""
        out = []
        for m in self.hub.snapshot():
            if m.topic.startswith(f"{ROOT}/events/") and m.payload:
                env = m.json()
                if isinstance(env, dict) and str(env.get("type", "")).startswith(prefix):
                    out.append(env)
        return out

    def types(self, order_id: str) -> list[str]:
        """The types of one order's events the hub got (each once: a resend after a restart is the same id)."""
        seen: dict[str, str] = {}
        for e in self.events():
            if e["data"].get("order_id") == order_id:
                seen.setdefault(e["id"], e["type"])
        return list(seen.values())

    def retained_atp(self, sku: str) -> dict[str, Any] | None:
        """The last retained state/atp/{sku}."""
        got = [m for m in self.hub.snapshot() if m.topic == f"{ROOT}/state/atp/{sku}" and m.payload]
        return dict(got[-1].json()) if got else None

    def scan(self, *codes: str) -> None:
        """Type codes on the pick scanner."""
        for c in codes:
            self.scanner.write(c.encode() + b"\r")


@dataclass
class Run:
    """A running gateway of the store."""

    store: Store
    gw: Gateway
    client: httpx.AsyncClient

    def set_stock(self, shelf: str, sku: str, count: int, origin: str = "weight") -> None:
        """A count claim through the pipeline, as the shelf's processor makes it."""
        Running(self.gw, "", self.client).set_stock(shelf, sku, count, origin)

    async def stocked_order(self, count: int, oid: str, qty: int, mode: str = "pickup") -> dict[str, Any]:
        """`count` cola on shelf-a1 (ATP = count), then POST an order of `qty` cola: the order."""
        self.set_stock("shelf-a1", COLA, count)
        await wait_for(lambda: _if(self.atp(), lambda d: d["atp"] == count), 10, f"ATP {count}")
        r = await self.client.post("/api/v1/orders", headers=HQ, json={
            "order_id": oid, "mode": mode, "due": due(self.gw), "lines": [{"sku": COLA, "qty": qty}]})
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def atp(self, sku: str = COLA) -> dict[str, Any]:
        """GET /api/v1/atp/{sku}."""
        return dict((await self.client.get(f"/api/v1/atp/{sku}", headers=HQ)).json())

    async def order(self, oid: str) -> dict[str, Any]:
        """GET /api/v1/orders/{id}."""
        r = await self.client.get(f"/api/v1/orders/{oid}", headers=STAFF)
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def state_is(self, oid: str, state: str) -> dict[str, Any]:
        """Wait until the order is in `state`."""
        async def check() -> dict[str, Any] | None:
            doc = await self.order(oid)
            return doc if doc["state"] == state else None

        return dict(await wait_for(check, 20, f"order {oid} {state}"))


async def command(store: Store, name: str, args: dict[str, Any]) -> dict[str, Any]:
    """A signed `cmd/{name}` as the hub sends it; the reply."""
    hub = HubCommander(store.mosquitto.port, ROOT, kid="hq", secret=CMD_KEY)
    try:
        return await asyncio.to_thread(hub.call, name, args, timeout=30)
    finally:
        hub.close()


def due(gw: Gateway, seconds: float = 3600) -> str:
    """A due time `seconds` after the gateway's now."""
    return (gw.clock.now() + timedelta(seconds=seconds)).isoformat()


@pytest.fixture
async def store(mosquitto: Mosquitto, tmp_path: Path) -> AsyncIterator[Store]:
    """A store with a pick scanner and the hub's recorder."""
    hub = HubRecorder(mosquitto.port, f"{ROOT}/#", persistent=False)
    scanner = PtyPort(tmp_path / "scanner-pick.tty")
    try:
        yield Store(mosquitto, tmp_path, hub, scanner)
    finally:
        scanner.unplug()
        hub.close()


async def test_reserve_pick_by_scan_ready_collect_across_restarts(store: Store) -> None:
    async with store.run() as run:
        run.set_stock("shelf-a1", COLA, 10)
        await wait_for(lambda: _if(run.atp(), lambda d: d["atp"] == 10), 10, "ATP 10")
        body = {"order_id": "8812", "mode": "pickup", "due": due(run.gw), "lines": [{"gtin": COLA_GTIN, "qty": 2}]}
        reply = await command(store, "order.reserve", body)
        assert reply["ok"], reply
        doc = reply["result"]
        assert (doc["state"], doc["reserved"], doc["short"]) == ("reserved", 2, 0)
        assert doc["lines"][0] | {"line": 0} == {"line": 0, "sku": COLA, "gtin": COLA_GTIN, "name": "Cola 330 ml",
                                                 "requested": 2, "reserved": 2, "short": 0}  # fmt: skip
        assert [(t["shelf"], t["lane"], t["qty"], t["state"]) for t in doc["tasks"]] == [("shelf-a1", "l1", 2, "open")]
        atp = await run.atp()
        assert (atp["atp"], atp["reserved"]) == (8, 2)
        await wait_for(lambda: (store.retained_atp(COLA) or {}).get("reserved") == 2, 10, "retained ATP reserved 2")
        picks = (await run.client.get("/api/v1/picks", headers=STAFF)).json()["items"]
        assert [(p["order_id"], p["shelf"], p["lane"], p["sku"], p["qty"]) for p in picks] == [
            ("8812", "shelf-a1", "l1", COLA, 2)]
    async with store.run() as run:  # restart while reserved: the reservation and the task are still there
        assert (await run.order("8812"))["state"] == "reserved"
        assert (await run.atp())["reserved"] == 2
        store.scan("MODE:PICK", "ORDER:8812", gs1_128(COLA_GTIN))
        await wait_for(lambda: _if(run.order("8812"), lambda d: d["tasks"][0]["scanned"] == 1), 20, "one scanned")
        assert (await run.order("8812"))["state"] == "reserved"
        store.scan(gs1_128(COLA_GTIN))
        ready = await run.state_is("8812", "ready")
        assert ready["tasks"][0] | {"picked_at": None} == ready["tasks"][0] | {
            "state": "picked", "by": "scan", "scanned": 2, "picked_at": None}
        assert (await run.client.get("/api/v1/picks", headers=STAFF)).json()["items"] == []
        run.set_stock("shelf-a1", COLA, 8)  # the scale sees the picked units leave: ATP stays 8, no reservation
        await wait_for(lambda: _if(run.atp(), lambda d: d["on_hand"] == 8), 10, "on hand 8")
        atp = await run.atp()
        assert (atp["atp"], atp["reserved"]) == (8, 0)
        cell = run.gw.rules.engine.restock.cells[("shelf-a1", COLA)]
        assert sum(n for _, n in cell.sales.buckets) == 0  # a pick is no sale
    async with store.run() as run:  # restart while ready: collection by scan
        assert (await run.order("8812"))["state"] == "ready"
        store.scan("COLLECT:8812")
        done = await run.state_is("8812", "collected")
        assert done["closed_reason"] == "collected (scan)"
        r = await run.client.post("/api/v1/orders/8812/collect", headers=STAFF)
        assert (r.status_code, r.json()["error"]["code"]) == (409, "conflict")
    await asyncio.to_thread(store.hub.wait_for, lambda h: "retail.order.collected.v1" in store.types("8812"), 20)
    assert store.types("8812") == ["retail.order.reserved.v1", "retail.order.picked.v1", "retail.order.ready.v1",
                                   "retail.order.collected.v1"]  # fmt: skip
    picked = next(e for e in store.events() if e["type"] == "retail.order.picked.v1")["data"]
    assert (picked["by"], picked["qty"], picked["shelf"], picked["lane"]) == ("scan", 2, "shelf-a1", "l1")


async def test_pick_by_shelf_sensor_is_no_sale_across_restart(store: Store) -> None:
    async with store.run() as run:
        await run.stocked_order(10, "A-1", 3, "ship")
        assert (await run.atp())["atp"] == 7
    async with store.run() as run:
        run.set_stock("shelf-a1", COLA, 9)  # one unit taken: sensed, still open, ATP unchanged (9 - 2)
        await wait_for(lambda: _if(run.order("A-1"), lambda d: d["tasks"][0]["sensed"] == 1), 10, "one sensed")
        assert (await run.atp())["atp"] == 7
        run.set_stock("shelf-a1", COLA, 7)
        ready = await run.state_is("A-1", "ready")
        assert (ready["tasks"][0]["by"], ready["tasks"][0]["sensed"]) == ("shelf", 3)
        atp = await run.atp()
        assert (atp["atp"], atp["reserved"], atp["on_hand"]) == (7, 0, 7)
        cell = run.gw.rules.engine.restock.cells[("shelf-a1", COLA)]
        assert sum(n for _, n in cell.sales.buckets) == 0  # the 3 picked units were no sales
        run.set_stock("shelf-a1", COLA, 6)  # a shopper takes one: that is a sale
        await wait_for(lambda: sum(n for _, n in run.gw.rules.engine.restock.cells[("shelf-a1", COLA)].sales.buckets)
                       == 1, 10, "one sale")  # fmt: skip
    await asyncio.to_thread(store.hub.wait_for, lambda h: "retail.order.ready.v1" in store.types("A-1"), 20)
    assert store.types("A-1") == ["retail.order.reserved.v1", "retail.order.picked.v1", "retail.order.ready.v1"]
    assert not [e for e in store.events("retail.atp.changed") if e["data"]["atp"] != 10]  # ATP never crossed 5


async def test_short_lines_and_same_order_again(store: Store) -> None:
    body: dict[str, Any] = {}
    async with store.run() as run:
        run.set_stock("shelf-a1", COLA, 3)
        await wait_for(lambda: _if(run.atp(), lambda d: d["atp"] == 3), 10, "ATP 3")
        body = {"order_id": "S-7", "mode": "pickup", "due": due(run.gw),
                "lines": [{"sku": COLA, "qty": 5}, {"gtin": WATER_GTIN, "qty": 1}]}  # water never reported: ATP 0
        first = await command(store, "order.reserve", body)
        assert first["ok"], first
        doc = first["result"]
        assert [(ln["sku"], ln["requested"], ln["reserved"], ln["short"]) for ln in doc["lines"]] == [
            (COLA, 5, 3, 2), ("water-500", 1, 0, 1)]
        assert (doc["state"], doc["reserved"], doc["short"]) == ("reserved", 3, 3)
        assert (await run.atp())["atp"] == 0
        again = await command(store, "order.reserve", body)  # the same order again: the same answer
        assert again["result"] == doc
        rest = await run.client.post("/api/v1/orders", headers=HQ, json=body)
        assert rest.json() == doc
        other = {**body, "lines": [{"sku": COLA, "qty": 1}]}
        refused = await command(store, "order.reserve", other)
        assert (refused["ok"], refused["error"]["code"]) == (False, "conflict")
        r = await run.client.post("/api/v1/orders", headers=HQ, json=other)
        assert (r.status_code, r.json()["error"]["code"]) == (409, "conflict")
        none = await command(store, "order.reserve", {**body, "order_id": "S-8", "lines": [{"sku": COLA, "qty": 1}]})
        assert (none["result"]["state"], none["result"]["short"], none["result"]["tasks"]) == ("short", 1, [])
    async with store.run() as run:  # after a restart: still the same answer, still reserved
        again = await command(store, "order.reserve", body)
        assert again["result"] == doc
        assert (await run.atp())["reserved"] == 3
    await asyncio.to_thread(store.hub.wait_for, lambda h: "retail.order.short.v1" in store.types("S-8"), 20)
    assert store.types("S-7") == ["retail.order.reserved.v1", "retail.order.short.v1"]
    short = next(e for e in store.events() if e["type"] == "retail.order.short.v1" and e["subject"] == "S-7")
    assert [(ln["sku"], ln["short"]) for ln in short["data"]["lines"]] == [(COLA, 2), ("water-500", 1)]


async def test_expiry_and_cancel_across_restart(store: Store) -> None:
    t0 = datetime.now(UTC).replace(microsecond=0)
    async with store.run(ManualClock(t0)) as run:
        run.set_stock("shelf-a1", COLA, 10)
        await wait_for(lambda: _if(run.atp(), lambda d: d["atp"] == 10), 10, "ATP 10")
        for oid, secs in (("E-1", 60), ("C-1", 3600)):
            r = await run.client.post("/api/v1/orders", headers=HQ, json={
                "order_id": oid, "mode": "pickup", "due": due(run.gw, secs), "lines": [{"sku": COLA, "qty": 2}]})
            assert r.status_code == 200, r.text
        assert (await run.atp())["atp"] == 6
    clock = ManualClock(t0)
    async with store.run(clock) as run:  # restarted: both still hold their units until the due time
        assert (await run.atp())["reserved"] == 4
        clock.advance(59)
        await asyncio.sleep(0.3)
        assert (await run.order("E-1"))["state"] == "reserved"
        clock.advance(2)
        expired = await run.state_is("E-1", "expired")
        assert [t["state"] for t in expired["tasks"]] == ["released"]
        await wait_for(lambda: _if(run.atp(), lambda d: d["reserved"] == 2), 10, "E-1 released")
        r = await run.client.post("/api/v1/orders/C-1/cancel", headers=HQ, json={"reason": "customer cancelled"})
        assert (r.status_code, r.json()["state"], r.json()["closed_reason"]) == (200, "cancelled", "customer cancelled")
        atp = await run.atp()
        assert (atp["atp"], atp["reserved"]) == (10, 0)
        r = await run.client.post("/api/v1/orders/C-1/cancel", headers=HQ, json={})
        assert (r.status_code, r.json()["error"]["code"]) == (409, "conflict")
        r = await run.client.post("/api/v1/orders/E-1/cancel", headers=HQ)
        assert (r.status_code, r.json()["error"]["code"]) == (409, "conflict")
        listed = (await run.client.get("/api/v1/orders", headers=HQ)).json()["items"]
        assert {(o["order_id"], o["state"]) for o in listed} == {("E-1", "expired"), ("C-1", "cancelled")}
    await asyncio.to_thread(store.hub.wait_for, lambda h: "retail.order.cancelled.v1" in store.types("C-1"), 20)
    assert store.types("E-1") == ["retail.order.reserved.v1", "retail.order.expired.v1"]
    assert store.types("C-1") == ["retail.order.reserved.v1", "retail.order.cancelled.v1"]


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("unknown sku", {"lines": [{"sku": "no-such", "qty": 1}]}, "not_found"),
    ("unknown gtin", {"lines": [{"gtin": "00000000000017", "qty": 1}]}, "not_found"),
    ("gtin not 14 digits", {"lines": [{"gtin": "5449000000996", "qty": 1}]}, "bad_request"),
    ("zero", {"lines": [{"sku": COLA, "qty": 0}]}, "bad_request"),
    ("negative", {"lines": [{"sku": COLA, "qty": -2}]}, "bad_request"),
    ("huge", {"lines": [{"sku": COLA, "qty": 10**12}]}, "bad_request"),
    ("fraction", {"lines": [{"sku": COLA, "qty": 1.5}]}, "bad_request"),
    ("boolean", {"lines": [{"sku": COLA, "qty": True}]}, "bad_request"),
    ("sku and gtin", {"lines": [{"sku": COLA, "gtin": COLA_GTIN, "qty": 1}]}, "bad_request"),
    ("no lines", {"lines": []}, "bad_request"),
    ("too many lines", {"lines": [{"sku": COLA, "qty": 1}] * 51}, "bad_request"),
    ("due in the past", {"due": "2020-01-01T00:00:00Z"}, "bad_request"),
    ("due too far", {"due": "2099-01-01T00:00:00Z"}, "bad_request"),
    ("due without zone", {"due": "2099-01-01T00:00:00"}, "bad_request"),
    ("due not a time", {"due": "tomorrow"}, "bad_request"),
    ("bad mode", {"mode": "drone"}, "bad_request"),
    ("malformed id", {"order_id": "../8812"}, "bad_request"),
    ("id too long", {"order_id": "x" * 65}, "bad_request"),
    ("id not a string", {"order_id": 8812}, "bad_request"),
    ("unknown field", {"price": 3}, "bad_request"),
]


async def test_bad_orders_change_nothing_same_codes_over_rest_and_mqtt(store: Store) -> None:
    async with store.run() as run:
        run.set_stock("shelf-a1", COLA, 10)
        await wait_for(lambda: _if(run.atp(), lambda d: d["atp"] == 10), 10, "ATP 10")
        good = {"order_id": "G-1", "mode": "pickup", "due": due(run.gw), "lines": [{"sku": COLA, "qty": 1}]}
        hub = HubCommander(store.mosquitto.port, ROOT, kid="hq", secret=CMD_KEY)
        try:
            for what, change, code in BAD:
                body = {**good, **change}
                assert len(orjson.dumps(body)) < 2048  # the test manifest's api.max_body_bytes
                r = await run.client.post("/api/v1/orders", headers=HQ, json=body)
                assert r.json()["error"]["code"] == code, (what, r.text)
                assert r.status_code == (404 if code == "not_found" else 400), what
                reply = await asyncio.to_thread(hub.call, "order.reserve", body, timeout=30)
                assert (reply["ok"], reply["error"]["code"]) == (False, code), (what, reply)
            unsigned = await asyncio.to_thread(hub.call, "order.reserve", good, sign=False, timeout=30)
            assert unsigned["error"]["code"] == "unauthorized"
            for name, args in (("order.get", {"order_id": "nope"}), ("order.cancel", {"order_id": "nope"})):
                reply = await asyncio.to_thread(hub.call, name, args, timeout=30)
                assert reply["error"]["code"] == "not_found", reply
        finally:
            hub.close()
        r = await run.client.post("/api/v1/orders", headers=STAFF, json=good)  # staff may not place orders
        assert r.status_code == 403
        r = await run.client.get("/api/v1/orders/nope", headers=STAFF)
        assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")
        r = await run.client.get("/api/v1/orders/..%2Fx", headers=STAFF)
        assert r.status_code in (400, 404)
        r = await run.client.get("/api/v1/picks", params={"shelf": "nope"}, headers=STAFF)
        assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")
        assert (await run.client.get("/api/v1/orders", headers=HQ)).json()["items"] == []
        assert await run.gw.query("SELECT key FROM kv WHERE key LIKE 'order/%'") == []
        atp = await run.atp()
        assert (atp["atp"], atp["reserved"]) == (10, 0)
    assert store.events() == []


async def test_low_stock_on_unreserved_units_and_the_pick_notice(store: Store) -> None:
    store.overrides = {"notifications": {"lang": "zh-CN", "channels": [
        {"id": "staff-chat", "kind": "wecom", "url": "http://127.0.0.1:9/robot/send?key=x"}]}}
    async with store.run() as run:  # rules: min 3 (tests.api.conftest), debounce 0.3 s
        await run.stocked_order(5, "8812", 4)

        async def low() -> list[dict[str, Any]]:
            items = (await run.client.get("/api/v1/alerts", params={"state": "open"}, headers=STAFF)).json()["items"]
            return [a for a in items if a["kind"] in ("low_stock", "out_of_stock") and a["sku"] == COLA]

        alerts = await wait_for(low, 10, "a low-stock alert on 1 unreserved unit")
        assert (alerts[0]["kind"], alerts[0]["count"]) == ("low_stock", 1)
        rows = await run.gw.query("SELECT body, transition, alert_id FROM webhook_deliveries WHERE alert_id = ?",
                                  ("order:8812",))  # fmt: skip
        assert [(r["transition"]) for r in rows] == ["pick"]
        text = orjson.loads(rows[0]["body"])["markdown"]["content"]
        assert "拣货: 4 × 可乐 330毫升（shelf-a1），订单 8812" in text  # noqa: RUF001 - the zh-CN name of the demo catalog
        assert "货架 shelf-a1 第 l1 道" in text


async def test_low_stock_on_the_whole_count_when_configured(store: Store) -> None:
    rules = manifest_for_tests(store.tmp).model_dump(mode="json", exclude_none=True)["rules"]
    store.overrides = {"rules": {**rules, "unreserved_stock": False}}
    async with store.run() as run:
        await run.stocked_order(5, "8813", 4)
        assert run.gw.rules.engine.restock.cells[("shelf-a1", COLA)].reserved == 4
        run.set_stock("shelf-a1", COLA, 4)  # a sale: 4 on the shelf, above min 3 on the whole count
        await wait_for(lambda: run.gw.rules.engine.restock.cells[("shelf-a1", COLA)].count == 4, 10, "count 4")
        await asyncio.sleep(1.0)  # past the 0.3 s debounce
        items = (await run.client.get("/api/v1/alerts", params={"state": "open"}, headers=STAFF)).json()["items"]
        assert [a for a in items if a["sku"] == COLA] == []


async def _if(coro: Any, pred: Any) -> Any:
    value = await coro
    return value if pred(value) else None
