"""Pick tasks on the staff dashboard (issue 16 item 4), in headless Chromium against the real gateway: an
online order reserved over the API becomes a pick task with the shelf and lane to pick from; the shelf's own
sensor seeing the units leave confirms it, the order shows as ready for collection, and the Collected button
completes it (checked in the API)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from playwright.async_api import async_playwright

from tests.api.conftest import TOKENS, Running, wait_for
from tests.api.test_dashboard import ARGS, CHROMIUM


async def test_pick_task_appears_is_picked_by_the_shelf_and_collected(running: Running) -> None:
    running.set_stock("shelf-a1", "cola-330", 10)
    await wait_for(lambda: running.gw.atp.get("cola-330", running.gw.clock.now())["atp"] == 10, 10, "cola ATP")
    due = (running.gw.clock.now() + timedelta(hours=1)).isoformat()
    r = await running.client.post("/api/v1/orders", headers=running.headers("hq"), json={
        "order_id": "8812", "mode": "pickup", "due": due, "lines": [{"sku": "cola-330", "qty": 2}]})
    assert r.status_code == 200, r.text
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = await (await browser.new_context(locale="en-US")).new_page()
        await page.goto(running.base + "/")
        await page.fill("#token", TOKENS["staff"])
        await page.click("#save")
        task = await page.wait_for_selector("#picks li.pick[data-order='8812']")
        assert task is not None
        text = await task.text_content() or ""
        assert "Pick 2 × Cola 330 ml from Drinks, top (lane l1) for order 8812" in text, text  # noqa: RUF001
        assert await page.text_content("#pick-count") == "1"
        # the shelf sees the two units leave: picked, the order ready for collection
        running.set_stock("shelf-a1", "cola-330", 8)
        await page.wait_for_selector("#ready-orders li.ready-order[data-order='8812']", timeout=15_000)
        await page.wait_for_selector("#no-picks", state="visible")
        await page.click("#ready-orders button.collect[data-order='8812']")
        await page.wait_for_selector("#ready-orders li.ready-order[data-order='8812']", state="detached")

        async def state() -> Any:
            got = await running.client.get("/api/v1/orders/8812", headers=running.headers("staff"))
            return got.json()["state"] == "collected"

        await wait_for(state, 10, "the order collected")
