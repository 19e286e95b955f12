"""The staff dashboard in headless Chromium (Debian's /usr/bin/chromium through Playwright) against the real
gateway: a low-stock alert appears live, staff acknowledge it, the API and the hub see the acknowledgement."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from playwright.async_api import async_playwright

from edge.brokers import Mosquitto
from firmware_sim.hub import HubRecorder
from tests.api.conftest import TOKENS, Running

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOT = Path(os.environ.get("EDGE_DASHBOARD_SCREENSHOT", "/tmp/edge-dashboard.png"))


@pytest.mark.timeout(90)
async def test_dashboard_live_alert_and_acknowledge(running: Running, mosquitto: Mosquitto) -> None:
    assert Path(CHROMIUM).exists(), "Debian's chromium package provides the browser for this test"
    hub = HubRecorder(mosquitto.port, "retail/v1/demo/alerts", persistent=False)
    for shelf, sku, n in [
        ("shelf-a1", "cola-330", 20),
        ("shelf-a1", "water-500", 15),
        ("shelf-b1", "crisps-150", 12),
        ("shelf-b1", "choc-100", 25),
        ("rack-c1", "tee-m", 30),
        ("rack-c1", "tee-l", 0),
    ]:
        running.set_stock(shelf, sku, n)
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1024, "height": 900})  # a tablet
                console: list[str] = []  # the page under its Content-Security-Policy: no violation reported
                page.on("console", lambda msg: console.append(msg.text))
                await page.goto(running.base + "/")
                # a wrong token is refused and the page says so
                await page.fill("#token", "wrong-token-123456")
                await page.click("#save")
                await page.wait_for_selector("#login-error:has-text('not accepted')")
                await page.fill("#token", TOKENS["staff"])
                await page.click("#save")
                await page.wait_for_selector(".shelf[data-shelf='shelf-a1'] .cell[data-sku='cola-330']")
                await page.wait_for_selector("#live.on")
                assert not await page.is_visible("#login")
                await page.fill("#staff-name", "Sam")
                assert await page.text_content(".cell[data-sku='cola-330'] .count") == "20/24"
                width = await page.eval_on_selector(".cell[data-sku='cola-330'] .bar span", "e => e.style.width")
                assert width == "83%"  # 20/24, set through the CSSOM (the CSP refuses inline style attributes)

                # stock drops below min through the gateway: live update, then the alert after the debounce
                running.set_stock("shelf-a1", "cola-330", 2)
                await page.wait_for_selector(".cell[data-sku='cola-330'] .count:has-text('2/24')")
                item = await page.wait_for_selector(
                    "li.alert.kind-low_stock.state-open:has-text('Cola 330 ml on Drinks, top')", timeout=10_000
                )
                assert item is not None
                assert "Cola 330 ml" in (await item.text_content() or "")
                await page.wait_for_selector(".cell.low[data-sku='cola-330']")
                alert_id = await item.get_attribute("data-id")
                await page.screenshot(path=str(SCREENSHOT), full_page=True)

                await page.click(f"li.alert[data-id='{alert_id}'] button.ack")
                await page.wait_for_selector(f"li.alert.state-acknowledged[data-id='{alert_id}']")
                assert "acknowledged by Sam" in (await page.text_content(f"li.alert[data-id='{alert_id}']") or "")
                assert not [t for t in console if "Content Security Policy" in t], console
            finally:
                await browser.close()

        r = await running.client.get("/api/v1/alerts", params={"state": "acknowledged"}, headers=running.headers("hq"))
        assert [(a["id"], a["acknowledged_by"]) for a in r.json()["items"]] == [(alert_id, "Sam")]

        def acked() -> bool:
            return any(
                e["type"] == "retail.alert.acknowledged.v1" and e["data"]["alert_id"] == alert_id for e in hub.events()
            )

        await asyncio.to_thread(hub.wait_for, lambda _: acked(), 10)
        assert SCREENSHOT.exists()
    finally:
        hub.close()
