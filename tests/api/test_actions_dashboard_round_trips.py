"""Staff actions through the dashboard page in headless Chromium (Debian's /usr/bin/chromium via Playwright)
against the real gateway, each checked in the API and on the hub's side of MQTT (private mosquitto): snooze an
alert for a chosen time, restock one cell (ends when its count rises), correct a count (held while the sensors
have not settled, shown on the cell as a source with its time)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from playwright.async_api import Page

from edge.brokers import Mosquitto
from firmware_sim.hub import HubRecorder
from tests.api.conftest import Running, wait_for
from tests.api.test_api import ROOT
from tests.api.test_dashboard_staff import START, chromium, no_errors, open_dashboard, put
from tests.api.test_snooze import _parse


@asynccontextmanager
async def staff_page(running: Running, mosquitto: Mosquitto, topic: str, locale: str) -> AsyncIterator[
        tuple[Page, HubRecorder]]:  # fmt: skip
    """The store's start counts, the dashboard signed in as staff in `locale`, and the hub's recorder of `topic`;
    no script error or CSP violation by the end."""
    hub = HubRecorder(mosquitto.port, f"{ROOT}/{topic}", persistent=False)
    try:
        for shelf, sku, n in START:
            put(running, shelf, sku, n)
        console: list[str] = []
        async with chromium() as browser:
            yield await open_dashboard(browser, running.base, locale, console), hub
        no_errors(console)
    finally:
        hub.close()


async def test_snooze_through_the_page(running: Running, mosquitto: Mosquitto) -> None:
    async with staff_page(running, mosquitto, "alerts", "zh-CN") as (page, hub):
        await page.fill("#staff-name", "王芳")
        put(running, "shelf-a1", "cola-330", 2)
        item = "li.alert.kind-low_stock"
        await page.wait_for_selector(f"{item} button.snooze:not([disabled])", timeout=20_000)
        alert_id = await page.get_attribute(item, "data-id")
        assert alert_id
        assert await page.text_content(f"{item} button.snooze") == "暂缓"
        options = await page.eval_on_selector_all(f"{item} select.snooze-for option",
                                                  "os => os.map(o => [o.value, o.textContent])")
        assert options[0] == ["300", "5 分钟"] and options[-1] == ["28800", "8 小时"]
        await page.select_option(f"{item} select.snooze-for", "3600")
        before = running.gw.clock.now()
        await page.click(f"{item} button.snooze")

        def snoozed() -> list[dict[str, Any]]:
            return [e for e in hub.events() if e["type"] == "retail.alert.snoozed.v1"]

        await wait_for(snoozed, 15, "the snoozed event on MQTT")
        data = snoozed()[0]["data"]
        assert (data["alert_id"], data["by"], data["duration_s"]) == (alert_id, "王芳", 3600.0)
        until = _parse(data["until"])
        assert before + timedelta(seconds=3600) <= until <= running.gw.clock.now() + timedelta(seconds=3600)
        r = await running.client.get("/api/v1/alerts", params={"state": "open"}, headers=running.headers("hq"))
        assert [(a["id"], a["snoozed_by"]) for a in r.json()["items"]] == [(alert_id, "王芳")]
        # the page shows it snoozed (greyed, with the time it comes back)
        await page.wait_for_selector(f"li.alert.snoozed[data-id='{alert_id}']", timeout=10_000)
        assert "暂缓至" in (await page.text_content(f"li.alert[data-id='{alert_id}'] .meta") or "")


async def test_the_demo_manifest_names_things_in_zh_cn(running: Running) -> None:
    """The built-in demo manifest (not a test override) gives zones, shelves and products zh-CN names: a zh-CN
    dashboard shows them, an English one the default names."""
    for shelf, sku, n in START:
        put(running, shelf, sku, n)
    names = (await running.client.get("/api/v1/names", headers=running.headers("staff"))).json()
    assert names["shelves"]["shelf-a1"]["names"] == {"zh-CN": "饮料货架（上层）"}  # noqa: RUF001
    assert names["backroom"]["backroom"]["names"]["zh-CN"] == "仓库"  # a back-room pick task names the place
    console: list[str] = []
    async with chromium() as browser:
        for locale, shelf_name, product in (("zh-CN", "饮料货架（上层）", "可乐 330毫升"),  # noqa: RUF001
                                            ("en-US", "Drinks, top", "Cola 330 ml")):
            page = await open_dashboard(browser, running.base, locale, console)
            shelf = ".shelf[data-shelf='shelf-a1']"
            assert await page.text_content(f"{shelf} .shelf-name") == shelf_name
            assert await page.text_content(f"{shelf} .cell[data-sku='cola-330'] .sku-name") == product
            await page.context.close()
    no_errors(console)


async def test_count_correction_through_the_page_is_held(running: Running, mosquitto: Mosquitto) -> None:
    from playwright.async_api import Dialog

    async with staff_page(running, mosquitto, "events/stock", "en-US") as (page, hub):
        await page.fill("#staff-name", "Sam")
        answers = ["17", "counted after the delivery"]

        async def answer(d: Dialog) -> None:
            await d.accept(answers.pop(0))

        page.on("dialog", answer)
        cell_sel = ".shelf[data-shelf='shelf-a1'] .cell[data-sku='water-500']"
        await page.click(f"{cell_sel} button.correct")
        await page.wait_for_selector(f"{cell_sel} .count[data-count='17']", timeout=15_000)
        put(running, "shelf-a1", "water-500", 15)  # the scale's next claim: the correction holds
        await wait_for(lambda: [e for e in hub.events() if e["type"] == "retail.stock.corrected.v1"], 10,
                       "the correction on MQTT")
        data = next(e["data"] for e in hub.events() if e["type"] == "retail.stock.corrected.v1")
        assert (data["by"], data["old"], data["new"]) == ("Sam", 15, 17)
        r = await running.client.get("/api/v1/stock", params={"shelf": "shelf-a1", "sku": "water-500"},
                                     headers=running.headers("hq"))
        c = r.json()["items"][0]
        assert (c["count"], c["sources"]["manual"], c["correction"]["holding"]) == (17, 17, True)
        assert c["correction"]["sensor"] == 15
        await page.reload()
        await page.wait_for_selector(f"{cell_sel}.corrected .count[data-count='17']", timeout=15_000)
        assert "held until the sensors settle" in (await page.text_content(f"{cell_sel} .flag") or "")


async def test_restocking_a_cell_through_the_page(running: Running, mosquitto: Mosquitto) -> None:
    async with staff_page(running, mosquitto, "events/rules", "zh-CN") as (page, hub):
        put(running, "shelf-a1", "cola-330", 2)
        item = "li.alert.kind-low_stock"
        await page.wait_for_selector(f"{item} button.restocking:not([disabled])", timeout=20_000)
        await page.click(f"{item} button.restocking")

        def of(kind: str) -> list[dict[str, Any]]:
            return [e["data"] for e in hub.events() if e["type"] == f"retail.restocking.{kind}.v1"]

        await wait_for(lambda: of("started"), 15, "restocking started on MQTT")
        assert (of("started")[0]["shelf"], of("started")[0]["sku"]) == ("shelf-a1", "cola-330")
        r = await running.client.get("/api/v1/restocking", headers=running.headers("hq"))
        assert [(c["shelf"], c["sku"]) for c in r.json()["items"]] == [("shelf-a1", "cola-330")]
        assert "shelf-a1" not in running.gw.rules.engine.restock.muted  # the cell, not the shelf
        cell = ".shelf[data-shelf='shelf-a1'] .cell[data-sku='cola-330']"
        await page.wait_for_selector(f"{cell}.restocking", timeout=10_000)
        assert "补货中" in (await page.text_content(f"{cell} .flag") or "")
        put(running, "shelf-a1", "cola-330", 24)  # restocked: the count rises
        await wait_for(lambda: of("ended"), 15, "restocking ended on MQTT")
        assert of("ended")[0]["reason"] == "restocked"
        await page.wait_for_selector(f"{cell}:not(.restocking) .count[data-count='24']", timeout=10_000)
