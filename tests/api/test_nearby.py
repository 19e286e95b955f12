"""Nearby stores end to end (issue 16 item 6): two real gateways and a real mosquitto as the hub.

The neighbour `north` is the real daemon (`python -m edge run`) in its own process with its own store id,
publishing its retained `state/atp/{sku}`, `state/info` and `status`; our gateway (store `demo`, the API on)
lists it under `nearby:` and answers who nearby has a SKU over REST and `cmd/nearby.get`: fresh figures while
the neighbour runs, junk on the neighbour's topics refused and counted, "unknown" while our hub connection is
down, fresh again once it is back, and "stale" with the last figure apart once the neighbour dies (its MQTT
will says offline). Never a guessed number. A clerk's zh-CN dashboard (headless system Chromium) looks the SKU
up in its nearby panel and sees the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from playwright.async_api import Page, async_playwright

from bench.spine import GatewayProc, manifest_dict
from edge.brokers import Mosquitto
from firmware_sim.hub import HubRecorder
from tests.api.conftest import TOKENS, manifest_for_tests, serve, wait_for
from tests.api.test_api import command
from tests.api.test_dashboard import ARGS, CHROMIUM

NORTH = "retail/v1/north"
NEARBY = {"stores": [{"id": "north", "name": "North Street", "distance_km": 1.5},
                     {"id": "ghost", "distance_km": 0.5}]}  # fmt: skip


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Mosquitto]:
    """A persistent mosquitto: the retained state survives a restart, as on a real hub."""
    broker = Mosquitto(workdir=tmp_path / "hub", persistent=True)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


async def _seed_north(hub: Mosquitto, tmp: Path) -> dict[str, Any]:
    """North's manifest with 9 cola and 3 water on its shelf in its database (a short in-process run)."""
    raw = manifest_dict(tmp / "north" / "var", hub.url, [], keepalive=5)
    raw["store"].update(id="north", name="北京路店")
    seed = manifest_for_tests(tmp / "north", store=raw["store"])
    async with serve(hub, tmp / "north", seed) as run:
        run.set_stock("shelf-a1", "cola-330", 9)
        run.set_stock("shelf-a1", "water-500", 3)
        await wait_for(lambda: run.gw.atp.get("cola-330", run.gw.clock.now())["atp"] == 9, 10, "north's seeded ATP")
        await run.gw.outbox.flush()
    return raw


def _publish(port: int, topic: str, payload: bytes) -> None:
    """One message as anyone with publish rights on the hub would send it (not retained)."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="junk")
    c.connect("127.0.0.1", port)
    c.loop_start()
    c.publish(topic, payload, qos=1).wait_for_publish(5)
    c.loop_stop()
    c.disconnect()


async def _look_up(page: Page, sku: str, state: str) -> str:
    """A clerk types the SKU in the dashboard's nearby panel: north's line in `state`, its text."""
    await page.fill("#nearby-sku", sku)
    await page.click("#nearby-go")
    line = await page.wait_for_selector(f"#nearby-result li[data-store='north'][data-state='{state}']")
    assert line is not None
    return await line.text_content() or ""


def _row(answer: dict[str, Any], store: str) -> dict[str, Any]:
    return next(r for r in answer["stores"] if r["store"] == store)


async def test_nearby_answers_with_the_neighbour_running_offline_and_without_hub(hub: Mosquitto,
                                                                                tmp_path: Path) -> None:
    raw = await _seed_north(hub, tmp_path)
    status = HubRecorder(hub.port, f"{NORTH}/status", persistent=False)
    north = GatewayProc(raw, tmp_path / "north", plain=True)
    try:
        status.wait_for(lambda h: any(m.payload and m.json()["state"] == "online" for m in h.snapshot()), 30)
        async with (serve(hub, tmp_path / "ours", manifest_for_tests(tmp_path / "ours", nearby=NEARBY)) as run,
                    async_playwright() as pw):
            h = run.headers("staff")

            async def cola() -> dict[str, Any]:
                r = await run.client.get("/api/v1/nearby/cola-330", headers=h)
                assert r.status_code == 200, r.text
                return dict(r.json())

            async def north_is(state: str) -> Any:
                got = await cola()
                return got if _row(got, "north")["state"] == state else None

            # the neighbour runs: its figure, fresh, with its own time and when we got it
            got = await wait_for(lambda: north_is("fresh"), 20, "north's fresh cola figure")
            n = _row(got, "north")
            assert (n["atp"], n["on_hand"], n["reserved"]) == (9, 9, 0)
            assert (n["name"], n["distance_km"], n["item_name"]) == ("North Street", 1.5, "Cola 330 ml")
            assert n["updated"] and n["received"] and n["age_s"] >= 0 and n["why"] is None
            assert got["stores"][0]["store"] == "north"  # who has it first, though ghost is nearer
            g = _row(got, "ghost")
            assert (g["state"], g["atp"], g["reason"]) == ("unknown", None, "no_status") and "no status" in g["why"]
            assert (got["have"], got["unknown"], got["hub"]["connected"]) == (1, 1, True)
            # the clerk's view: the dashboard in zh-CN (headless system Chromium)
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = await (await browser.new_context(locale="zh-CN")).new_page()
            await page.goto(run.base + "/")
            await page.fill("#token", TOKENS["staff"])
            await page.click("#save")
            await page.wait_for_selector("#nearby-panel h2:has-text('附近门店')")
            text = await _look_up(page, "cola-330", "fresh")
            assert "North Street" in text and "可售 9" in text and "1.5 公里" in text, text
            assert await page.is_visible("#nearby-result li[data-store='ghost'][data-state='unknown']")
            # the same by query, and over MQTT (read-only: no signature needed)
            r = await run.client.get("/api/v1/nearby", params={"sku": "cola-330"}, headers=h)
            assert _row(r.json(), "north")["atp"] == 9
            reply = await command(hub, "nearby.get", {"sku": "cola-330"})
            assert reply["ok"] and _row(reply["result"], "north")["atp"] == 9
            reply = await command(hub, "nearby.get", {})
            assert {s["store"]: s["state"] for s in reply["result"]["stores"]} == {"north": "fresh", "ghost": "unknown"}
            # a SKU north does not publish: unknown, not 0
            tea = (await run.client.get("/api/v1/nearby/tea-500", headers=h)).json()
            assert [_row(tea, "north")[k] for k in ("state", "atp", "reason")] == ["unknown", None, "no_figure"]
            # bad input: a clear error, the same over REST and MQTT
            r = await run.client.get("/api/v1/nearby/bad%20sku", headers=h)
            assert (r.status_code, r.json()["error"]["code"]) == (422, "bad_request")  # the OpenAPI id pattern
            reply = await command(hub, "nearby.get", {"sku": 7})
            assert (reply["ok"], reply["error"]["code"]) == (False, "bad_request")
            assert (await run.client.get("/api/v1/nearby/cola-330")).status_code == 401

            # junk on the neighbour's topics is refused and counted; the figures stay as they were
            m = run.gw.metrics
            junk = [
                (f"{NORTH}/state/atp/cola-330", b'{"sku": "cola-330", "atp": -5, "updated": "2026-01-01T00:00:00Z"}'),
                (f"{NORTH}/state/atp/cola-330", b'{"sku": "water-500", "atp": 99, "updated": "2026-01-01T00:00:00Z"}'),
                (f"{NORTH}/state/atp/cola-330", b'{"sku": "cola-330", "atp": 1e9, "updated": "2026-01-01T00:00:00Z"}'),
                (f"{NORTH}/state/atp/cola-330", b'{"sku": "cola-330", "atp": 5, "updated": 1700000000}'),
                (f"{NORTH}/state/atp/cola-330", b"[1, 2"),
                (f"{NORTH}/state/atp/cola-330", orjson.dumps({"sku": "cola-330", "atp": 1, "pad": "x" * 70_000,
                                                              "updated": "2026-01-01T00:00:00Z"})),
                (f"{NORTH}/status", b'{"state": "sleeping"}'),
            ]
            for topic, payload in junk:
                await asyncio.to_thread(_publish, hub.port, topic, payload)
            await wait_for(lambda: m.total("edge_nearby_rejected_total") >= len(junk), 10, "the junk refused")
            assert m.value("edge_nearby_rejected_total", reason="too_large") == 1
            assert m.value("edge_nearby_rejected_total", reason="sku_mismatch") == 1
            assert _row(await cola(), "north")["atp"] == 9

            # our hub connection down: nobody is known, nothing guessed
            hub.stop()
            got = await wait_for(lambda: north_is("unknown"), 20, "unknown while the hub is down")
            n = _row(got, "north")
            assert n["atp"] is None and "hub offline" in n["why"] and n["last_known"]["atp"] == 9
            assert (n["reason"], n["since"]) == ("hub_offline", got["hub"]["since"])
            assert got["hub"]["connected"] is False and got["have"] == 0
            # back: the broker sends the retained state again, the figure is fresh again
            hub.start()
            got = await wait_for(lambda: north_is("fresh"), 30, "fresh again after the hub is back")
            assert _row(got, "north")["atp"] == 9

            # the neighbour dies: its will says offline, its figure is stale and given apart
            north.kill()
            got = await wait_for(lambda: north_is("stale"), 20, "stale once north is offline")
            n = _row(got, "north")
            assert n["atp"] is None and "offline" in n["why"] and n["last_known"]["atp"] == 9
            assert n["reason"] == "store_offline" and n["since"]
            assert got["have"] == 0
            text = await _look_up(page, "cola-330", "stale")
            assert "可售" not in text and "上次报告 9" in text and "该店自" in text and "起离线" in text, text
            over = (await run.client.get("/api/v1/nearby", headers=h)).json()
            assert {s["store"]: (s["state"], s["status"]) for s in over["stores"]} == {
                "north": ("stale", "offline"), "ghost": ("unknown", None)}
    finally:
        north.kill()
        status.close()
