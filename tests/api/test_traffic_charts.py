"""Foot traffic for the dashboard's charts, against the real gateway on a ManualClock (private mosquitto as the
hub): GET /api/v1/traffic carries today's closed hours, the hour so far, occupancy, per-zone dwell and the same
weekday last week (hours the traffic processor keeps as `kv` rows; `?day=` reads one kept day), and the page
draws the three SVG charts (charts.js) with one bar / point per figure, in headless Chromium."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from drivers.ble.reads import Advert
from drivers.door.reads import DoorCounts
from drivers.traffic.processor import TrafficProcessor
from edge.brokers import Mosquitto
from edge.clock import ManualClock
from edge.config import Manifest
from edge.gateway import Gateway
from edge.runtime import Delete, Upsert
from tests.api.conftest import TOKENS, manifest_for_tests, wait_for
from tests.api.test_dashboard_staff import chromium

T0 = datetime(2026, 1, 9, 7, 30, tzinfo=UTC)  # a Friday, 07:30 in the store's time zone (UTC)
WEEK = timedelta(days=7)
PHONE = {0x004C: bytes.fromhex("1005031c008a3f")}  # Apple "nearby info" manufacturer data: a phone, not a beacon


def manifest(tmp: Path) -> Manifest:
    """The demo store with a door counter and a BLE scanner in aisle-1 (neither can open: readings come from
    the test through the pipeline, as their drivers would deliver them)."""
    return manifest_for_tests(tmp, devices=[
        {"id": "door-1", "type": "door_counter", "zone": "entrance", "transport": "serial",
         "port": "/dev/edge-test-no-such-door-counter"},
        {"id": "ble-aisle-1", "type": "ble", "zone": "aisle-1", "adapter": "hci9"},
    ])


def last_week_rows(m: Manifest) -> list[Upsert | Delete]:
    """What the traffic processor committed a week ago: 07:00 with 5 visitors, 08:00 with 9."""
    clock = ManualClock(T0 - WEEK)
    proc = TrafficProcessor(m, clock)
    out: list[object] = []
    for hours, total_in in ((0.0, 0), (0.1, 5), (1.0, 14), (2.0, 14)):
        now = T0 - WEEK + timedelta(hours=hours)
        out += proc.feed(DoorCounts(device_id="door-1", time=now, total_in=total_in, total_out=0), now)
        out += proc.tick(now)
    return [o for o in out if isinstance(o, Upsert | Delete)]


@dataclass
class Store:
    gw: Gateway
    clock: ManualClock
    client: httpx.AsyncClient
    base: str

    async def traffic(self, **params: str) -> dict[str, Any]:
        r = await self.client.get("/api/v1/traffic", params=params,
                                  headers={"Authorization": f"Bearer {TOKENS['staff']}"})
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    async def door(self, total_in: int, total_out: int) -> None:
        await self.gw.pipeline.queue.put(DoorCounts(device_id="door-1", time=self.clock.now(), total_in=total_in,
                                                    total_out=total_out))

    async def advance(self, seconds: float) -> None:
        """Move the gateway's clock in 5 s steps, letting its tick loop run after each."""
        for _ in range(int(seconds // 5)):
            self.clock.advance(5)
            await wait_for(self.gw.pipeline.queue.empty, what="readings processed")
            await asyncio.sleep(0)


@asynccontextmanager
async def store_day(mosquitto: Mosquitto, tmp: Path) -> AsyncIterator[Store]:
    """Last week's kept hours, then today: door counts in three hours (07:00: 4 in 1 out, 08:00: 6 in 2 out,
    09:00 so far: 2 in 5 out) and two phones dwelling in aisle-1 (about 20 s and 60 s)."""
    m = manifest(tmp)
    clock = ManualClock(T0)
    async with Gateway(m, clock=clock, hub_url=mosquitto.url, data_dir=tmp / "var", tick_interval=1.0) as gw:
        assert gw.api is not None
        base = f"http://127.0.0.1:{gw.api.port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            s = Store(gw, clock, client, base)
            gw.pipeline.route(last_week_rows(m), clock.now())
            await s.door(0, 0)
            await s.door(4, 1)
            for phone, stay_s in (("AA:00:00:00:00:01", 20), ("AA:00:00:00:00:02", 60)):
                for _ in range(stay_s // 5 + 1):
                    await gw.pipeline.queue.put(Advert(device_id="ble-aisle-1", time=clock.now(), address=phone,
                                                       rssi=-50, manufacturer_data=PHONE))
                    await s.advance(5)
                await s.advance(40)  # not heard for exit_after_s (30 s): left the zone
            await s.advance(3600 - 170)  # 08:30
            await s.door(10, 3)
            await s.advance(3600)  # 09:30
            await s.door(12, 8)

            async def settled() -> bool:
                now = (await s.traffic()).get("hour_now") or {}
                return bool(now.get("visitors") == 2)

            await wait_for(settled, timeout=20, what="the 09:00 door counts")
            yield s


async def test_traffic_api_today_last_week_and_day(mosquitto: Mosquitto, tmp_path: Path) -> None:
    m = manifest(tmp_path)
    rows = last_week_rows(m)
    keys = [(type(r).__name__, (r.row if isinstance(r, Upsert) else r.key)["key"]) for r in rows]
    assert keys == [("Upsert", "traffic.hour/2026-01-02T07"), ("Delete", "traffic.hour/2025-12-18T07"),
                    ("Upsert", "traffic.hour/2026-01-02T08"), ("Delete", "traffic.hour/2025-12-18T08")]
    async with store_day(mosquitto, tmp_path) as s:
        tr = await s.traffic()
        assert tr["day"] == "2026-01-09"
        assert [(h["start"], h["visitors"], h["occupancy"]) for h in tr["hours_today"]] == [
            ("2026-01-09T07:00:00Z", 4, 3), ("2026-01-09T08:00:00Z", 6, 7)]
        assert (tr["hour_now"]["start"], tr["hour_now"]["visitors"], tr["occupancy"]) == ("2026-01-09T09:00:00Z", 2, 4)
        assert tr["last_week"]["day"] == "2026-01-02"
        assert [(h["start"], h["visitors"]) for h in tr["last_week"]["hours"]] == [
            ("2026-01-02T07:00:00Z", 5), ("2026-01-02T08:00:00Z", 9)]
        zone = tr["zones"]["aisle-1"]
        assert zone["unique_today"] == 2
        assert zone["dwell_median_s"] is not None and 15 <= zone["dwell_median_s"] <= 70, zone
        # one kept day, and a day with nothing kept
        assert (await s.traffic(day="2026-01-02"))["hours"] == tr["last_week"]["hours"]
        assert (await s.traffic(day="2025-06-01")) == {"day": "2025-06-01", "hours": []}
        for bad in ("09/01/2026", "1.5e9", "0"):  # pydantic alone would take a number as a UNIX time's day
            r = await s.client.get("/api/v1/traffic", params={"day": bad},
                                   headers={"Authorization": f"Bearer {TOKENS['staff']}"})
            assert r.status_code == 422, (bad, r.text)


async def test_dashboard_draws_the_traffic_charts(mosquitto: Mosquitto, tmp_path: Path) -> None:
    console: list[str] = []
    async with store_day(mosquitto, tmp_path) as s, chromium() as browser:
        page = await (await browser.new_context(locale="zh-CN", viewport={"width": 1024, "height": 900})).new_page()
        page.on("pageerror", lambda err: console.append(f"pageerror: {err}"))
        await page.goto(s.base + "/")
        await page.fill("#token", TOKENS["staff"])
        await page.click("#save")
        # visitors per hour: today 07, 08 and 09 (so far), last week 07 and 08
        await page.wait_for_selector("#chart-hours svg rect.bar.today >> nth=2", timeout=20_000)
        today = await page.eval_on_selector_all("#chart-hours rect.bar.today", "rs => rs.map(r => +r.dataset.value)")
        last = await page.eval_on_selector_all("#chart-hours rect.bar.lastweek", "rs => rs.map(r => +r.dataset.value)")
        assert (today, last) == ([4, 6, 2], [5, 9])
        heights = await page.eval_on_selector_all("#chart-hours rect.bar.today",
                                                  "rs => rs.map(r => +r.getAttribute('height'))")
        assert heights[1] > heights[0] > heights[2] > 0  # drawn to scale
        # occupancy: the end of 07:00 and 08:00, and now
        points = await page.eval_on_selector_all("#chart-occupancy circle.point", "cs => cs.map(c => +c.dataset.value)")
        assert points == [3, 7, 4]
        assert await page.get_attribute("#chart-occupancy polyline.line", "points")
        # dwell per zone: one bar for aisle-1, named in zh-CN (the manifest has no zh name: its default name)
        zones = await page.eval_on_selector_all("#chart-dwell rect.bar", "rs => rs.map(r => r.dataset.zone)")
        assert zones == ["aisle-1"]
        assert await page.text_content("#traffic-panel figcaption >> nth=0") == "每小时客流"
        assert "上周同日" in (await page.text_content("#chart-hours svg") or "")
        assert console == []  # no script error (charts.js, app.js)
