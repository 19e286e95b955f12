"""Staff actions through the dashboard page in headless Chromium (Debian's /usr/bin/chromium via Playwright)
against the real gateway: start restocking from a low-stock alert (the shelf's restock alerts are muted),
resolve the alert with a reason typed into the page (close_reason `manual: <reason>`), and correct a cell's
count (number and reason typed into the page: the cell shows it, origin manual)."""

from __future__ import annotations

from typing import Any

from playwright.async_api import Dialog

from tests.api.conftest import Running, wait_for
from tests.api.test_dashboard_staff import START, chromium, no_errors, open_dashboard, put


async def test_restocking_and_resolve_with_a_reason_through_the_page(running: Running) -> None:
    for shelf, sku, n in START:
        put(running, shelf, sku, n)
    console: list[str] = []
    async with chromium() as browser:
        page = await open_dashboard(browser, running.base, "en-US", console)
        await page.fill("#staff-name", "Sam")
        put(running, "shelf-a1", "cola-330", 2)
        item = "li.alert.kind-low_stock"
        await page.wait_for_selector(f"{item} button.resolve:not([disabled])", timeout=20_000)
        alert_id = await page.get_attribute(item, "data-id")
        assert alert_id

        # restocking: the alert's cell is muted in the rules engine (until its count rises), not the shelf
        await page.click(f"{item} button.restocking")
        await wait_for(lambda: ("shelf-a1", "cola-330") in running.gw.rules.engine.restock.muted_cells, 10,
                       "shelf-a1/cola-330 muted")
        assert "shelf-a1" not in running.gw.rules.engine.restock.muted

        # resolve: the page asks for the reason
        asked: list[str] = []

        async def answer(d: Dialog) -> None:
            asked.append(d.message)
            await d.accept("counted 2, refill on the way")

        page.on("dialog", answer)
        await page.click(f"{item} button.resolve")

        async def resolved() -> Any:
            r = await running.client.get("/api/v1/alerts", params={"state": "resolved"},
                                         headers=running.headers("staff"))
            return [a for a in r.json()["items"] if a["id"] == alert_id]

        rows = await wait_for(resolved, 15, "the alert resolved through the page")
        assert rows[0]["close_reason"] == "manual: counted 2, refill on the way"
        assert asked and "resolved" in asked[0]
        await page.wait_for_selector(f"li.alert[data-id='{alert_id}']", state="detached", timeout=10_000)

        # correct a count: the page asks for the number, then why
        answers = ["17", "counted after the delivery"]
        asked.clear()
        page.remove_listener("dialog", answer)

        async def count_answer(d: Dialog) -> None:
            asked.append(d.message)
            await d.accept(answers.pop(0))

        page.on("dialog", count_answer)
        await page.click(".shelf[data-shelf='shelf-b1'] .cell[data-sku='choc-100'] button.correct")

        def cell() -> dict[str, Any]:
            return running.gw.stock.describe(running.gw.stock.select(shelf="shelf-b1", sku="choc-100")[0])

        await wait_for(lambda: cell()["count"] == 17, 15, "the corrected count")
        assert cell()["origin"] == "manual"
        assert len(asked) == 2 and "count" in asked[0]
        await page.wait_for_selector(".cell[data-sku='choc-100'] .count[data-count='17']", timeout=10_000)
        no_errors(console)
