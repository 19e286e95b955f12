"""Tablet sign-in in headless Chromium (Debian's /usr/bin/chromium through Playwright) against the real gateway: the
admin pairs a tablet from the dashboard's "Tablets and tokens" panel, the tablet opens the pairing URL and is
signed in, a new tab of the tablet opens signed in (the token kept in localStorage), a second tablet types its
code on the zh-CN sign-in page; the admin revokes the first tablet and its next load shows the sign-in form."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.async_api import Page, async_playwright

from tests.api.conftest import TOKENS, Running, wait_for
from tests.api.test_dashboard import ARGS, CHROMIUM

KEY = "edge-device-token"


async def kept_token(page: Page) -> str | None:
    """The token the page's origin keeps in localStorage."""
    value = await page.evaluate(f"localStorage.getItem('{KEY}')")
    return value if isinstance(value, str) else None


async def signed_in(page: Page) -> None:
    """The dashboard loaded its data and its live stream."""
    await page.wait_for_selector(".shelf[data-shelf='shelf-a1']", timeout=15_000)
    await page.wait_for_selector("#live.on", timeout=15_000)
    assert not await page.is_visible("#login")


@pytest.mark.timeout(120)
async def test_pair_a_tablet_from_the_admin_view_then_revoke_it(running: Running) -> None:
    assert Path(CHROMIUM).exists(), "Debian's chromium package provides the browser for this test"
    running.set_stock("shelf-a1", "cola-330", 20)
    console: list[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            admin_ctx = await browser.new_context(locale="en-US", viewport={"width": 1280, "height": 900})
            admin = await admin_ctx.new_page()
            admin.on("console", lambda m: console.append(m.text))
            await admin.goto(running.base + "/")
            await admin.fill("#token", TOKENS["admin"])
            await admin.click("#save")
            await admin.wait_for_selector("#tablets-panel:not([hidden])")
            assert await admin.text_content("#tablets-panel h2") == "Tablets and tokens"
            # the manifest's tokens are listed, not revocable
            await admin.wait_for_selector("#tokens tr:has-text('staff (manifest)')")
            assert await admin.locator("#tokens button.revoke").count() == 0

            await admin.fill("#pairing-name", "tablet-front")
            await admin.click("#pair-tablet")
            await admin.wait_for_selector("#pairing:not([hidden])")
            code = (await admin.text_content("#pairing-code") or "").replace(" ", "")
            url = await admin.text_content("#pairing-url") or ""
            assert re.fullmatch(r"[A-Z2-9]{8}", code), code
            assert url == f"{running.base}/#pair={code}"

            # the tablet opens the URL: signed in, the token kept for the next tab
            tablet_ctx = await browser.new_context(locale="en-US", viewport={"width": 1024, "height": 768})
            tablet = await tablet_ctx.new_page()
            tablet.on("console", lambda m: console.append(m.text))
            tablet.on("pageerror", lambda e: console.append(f"page error: {e}"))
            await tablet.goto(url)
            await signed_in(tablet)
            assert tablet.url == running.base + "/"  # the code is gone from the address bar
            token = await kept_token(tablet)
            assert token and token not in TOKENS.values()
            assert not await tablet.is_visible("#tablets-panel")  # a staff token sees no admin panel
            second_tab = await tablet_ctx.new_page()  # a new tab: empty sessionStorage, nothing pasted
            await second_tab.goto(running.base + "/")
            await signed_in(second_tab)
            await second_tab.close()

            # the admin's screen sees the tablet arrive
            await admin.wait_for_selector("#pairing-done:has-text('tablet-front')", timeout=10_000)
            assert await admin.is_hidden("#pairing")
            row = "#tokens tr[data-state='active']:has-text('tablet-front')"
            await admin.wait_for_selector(row)

            # a second tablet in Chinese types its code on the sign-in page
            code2 = await pair_from_admin(admin, "tablet-back")
            zh_ctx = await browser.new_context(locale="zh-CN", viewport={"width": 1024, "height": 768})
            zh = await zh_ctx.new_page()
            zh.on("console", lambda m: console.append(m.text))
            await zh.goto(running.base + "/")
            await zh.wait_for_selector("#pair-form h2:has-text('登录这台平板')")
            await zh.fill("#pair-code", "WRONG234")
            await zh.click("#pair-redeem")
            await zh.wait_for_selector("#pair-error:has-text('配对码无效')")
            await zh.fill("#pair-code", code2[:4].lower() + " " + code2[4:].lower())
            await zh.click("#pair-redeem")
            await signed_in(zh)
            assert await kept_token(zh)

            # revoke the first tablet: refused at once, its next load asks to sign in and forgets the token
            await admin.click(f"{row} button.revoke")
            await admin.wait_for_selector("#tokens tr[data-state='revoked']:has-text('tablet-front')")
            r = await running.client.get("/api/v1/stock", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 401
            await tablet.reload()
            await tablet.wait_for_selector("#login:not([hidden])")
            await wait_for(lambda: _none(tablet), what="the kept token forgotten")
            assert not await tablet.is_visible("#main")
            # the other tablet is untouched
            await zh.reload()
            await signed_in(zh)
            assert not [t for t in console if "Content Security Policy" in t or "page error" in t], console
        finally:
            await browser.close()


async def _none(page: Page) -> bool:
    return await kept_token(page) is None


async def pair_from_admin(admin: Page, name: str) -> str:
    """Open a pairing from the admin's panel and read its code."""
    await admin.fill("#pairing-name", name)
    await admin.click("#pair-tablet")
    await admin.wait_for_selector("#pairing:not([hidden])")
    await admin.wait_for_function(
        "n => document.getElementById('pairing-url').textContent.includes('#pair=') && "
        "!document.getElementById('pairing-done').textContent", arg=name)
    return (await admin.text_content("#pairing-code") or "").replace(" ", "")
