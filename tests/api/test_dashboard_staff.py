"""The staff dashboard as a Chinese store's staff use it, in headless Chromium (Debian's /usr/bin/chromium
through Playwright) against the real gateway (private mosquitto as the hub, API on a loopback port):

- zh-CN from the browser's language, the manifest's per-language names, the switch to English remembered
  across a reload; the UI strings from the catalogs /static/i18n/{zh-CN,en}.json (same keys in both);
- urgency first: out of stock, then low, then faults (a door counter on a serial port that does not exist:
  its device alert with the supervisor's reason; a beacon never heard: silent), within a class oldest first;
  lane bars coloured by the rule's `min` (at/below amber, zero red) and stale/conflict flags;
- the chime (WebAudio) and browser notification: opt-in button, played for a new urgent alert, no error;
- live or not: the gateway stops -> a banner with the data's age, greyed data, actions disabled; the gateway
  back on the same port -> banner gone, actions enabled.
Screenshots of the zh-CN dashboard go to docs/screenshots/ when EDGE_DASHBOARD_SCREENSHOTS=1.
"""

# ruff: noqa: RUF001  (full-width CJK punctuation in the names and strings is what Chinese text uses)
from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from playwright.async_api import Browser, Page, async_playwright

from edge.brokers import Mosquitto
from edge.config import parse_manifest
from edge.errors import ConfigError
from edge.processing import StockFlag
from firmware_sim.world import demo_manifest_text
from tests.api.conftest import TOKENS, Running, manifest_for_tests, serve, wait_for
from tests.api.test_dashboard import ARGS, CHROMIUM

STATIC = Path(__file__).parents[2] / "edge" / "api" / "static"
SHOTS = Path(__file__).parents[2] / "docs" / "screenshots"
WRITE_SHOTS = os.environ.get("EDGE_DASHBOARD_SCREENSHOTS") == "1"

ZH = {  # per-language names as a Chinese store writes its manifest
    ("zones", "aisle-1"): "饮料区",
    ("zones", "aisle-2"): "零食区",
    ("zones", "apparel"): "服装区",
    ("shelves", "shelf-a1"): "饮料货架（上层）",
    ("shelves", "shelf-b1"): "零食货架（中层）",
    ("shelves", "rack-c1"): "服装挂架",
    ("catalog", "cola-330"): "可乐 330毫升",
    ("catalog", "water-500"): "矿泉水 500毫升",
    ("catalog", "crisps-150"): "原味薯片 150克",
    ("catalog", "choc-100"): "黑巧克力 100克",
    ("catalog", "tee-m"): "T恤 M码",
    ("catalog", "tee-l"): "T恤 L码",
}
START = [("shelf-a1", "cola-330", 20), ("shelf-a1", "water-500", 15), ("shelf-b1", "crisps-150", 12),
         ("shelf-b1", "choc-100", 25), ("rack-c1", "tee-m", 30), ("rack-c1", "tee-l", 22)]


def put(run: Running, shelf: str, sku: str, n: int) -> None:
    """A count from the shelf's own source (the RFID rack only takes RFID counts)."""
    run.set_stock(shelf, sku, n, origin="rfid" if shelf.startswith("rack") else "weight")


def staff_overrides(api_port: int = 0) -> dict[str, Any]:
    """The demo store with zh-CN names, a door counter that cannot open, a beacon never heard."""
    raw = yaml.safe_load(demo_manifest_text())
    for section, key in (("zones", "id"), ("shelves", "id"), ("catalog", "sku")):
        for item in raw[section]:
            zh = ZH.get((section, item[key]))
            if zh:
                item["names"] = {"zh-CN": zh}
    return {
        "store": {**raw["store"], "name": "示范超市", "opening_time": "00:00", "closing_time": "00:00"},
        "zones": raw["zones"], "shelves": raw["shelves"], "catalog": raw["catalog"],
        "api": {"listen": f"127.0.0.1:{api_port}", "max_body_bytes": 2048,
                "tokens": [{"token": t, "roles": [r], "name": r} for r, t in TOKENS.items()]},
        "rules": {"defaults": {"min": 3, "debounce_s": 0.3, "clear_margin": 2, "cooldown_s": 0,
                               "escalate_after_s": 600}, "device_fault_grace_s": 1},
        "devices": [{"id": "door-1", "type": "door_counter", "zone": "entrance", "transport": "serial",
                     "port": "/dev/edge-test-no-such-door-counter"}],
        "beacons": [{"id": "bcn-drinks", "zone": "aisle-1", "kind": "ibeacon",
                     "uuid": "f7826da6-4fa2-4e98-8024-bc5b71e0893e", "major": 7, "minor": 1, "silent_after_s": 1}],
    }


def gateway(mosquitto: Mosquitto, tmp: Path, api_port: int = 0) -> AbstractAsyncContextManager[Running]:
    """A real gateway over the staff manifest (same data dir on every start)."""
    return serve(mosquitto, tmp, manifest_for_tests(tmp, **staff_overrides(api_port)))


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless."""
    assert Path(CHROMIUM).exists(), "Debian's chromium package provides the browser for this test"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def open_dashboard(browser: Browser, base: str, locale: str, console: list[str]) -> Page:
    """A tablet-sized page in `locale`, signed in as staff, live."""
    context = await browser.new_context(locale=locale, viewport={"width": 1024, "height": 900})
    await context.grant_permissions(["notifications"], origin=base)
    await context.add_init_script(STALE_WATCH)
    page = await context.new_page()
    page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
    page.on("pageerror", lambda err: console.append(f"pageerror: {err}"))
    await page.goto(base + "/")
    await page.fill("#token", TOKENS["staff"])
    await page.click("#save")
    await page.wait_for_selector("#live.on")
    await page.wait_for_selector(".cell[data-sku='tee-l']")
    return page


async def texts(page: Page, selector: str) -> list[str]:
    """The text of every element matching `selector`, in document order."""
    return [t.strip() for t in await page.eval_on_selector_all(selector, "els => els.map(e => e.textContent)")]


# records whether the not-live banner was ever shown (a page that is still connecting must not flash it)
STALE_WATCH = """new MutationObserver(() => {
  const b = document.getElementById("stale");
  if (b && !b.hidden) window.staleShown = true;
}).observe(document, {subtree: true, childList: true, attributes: true, attributeFilter: ["hidden"]});"""


def no_errors(console: list[str]) -> None:
    """No script error, no CSP violation."""
    bad = [c for c in console if c.startswith(("error", "pageerror")) or "Content Security Policy" in c]
    assert not bad, bad


def test_catalogs_have_the_same_keys() -> None:
    def keys(d: dict[str, Any], prefix: str = "") -> set[str]:
        out: set[str] = set()
        for k, v in d.items():
            out |= keys(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k}
        return out

    zh, en = (json.loads((STATIC / "i18n" / f"{lang}.json").read_text("utf-8")) for lang in ("zh-CN", "en"))
    assert keys(zh) == keys(en)
    used = {k for k in keys(en) if not k.startswith("kind.") and not k.startswith("state_")}
    pages = ("app.js", "index.html", "charts.js", "pairing.js", "nearby.js", "picks.js")
    source = "".join((STATIC / f).read_text("utf-8") for f in pages)
    assert {k for k in used if f'"{k}"' not in source} == set()  # every string is used


@pytest.mark.parametrize(
    ("names", "error"),
    [
        ({"fr": "Boissons"}, "Input should be 'zh-CN' or 'en'"),
        ({"zh-CN": ""}, "at least 1 character"),
        ({"zh-CN": "饮" * 129}, "at most 128 characters"),
        ("饮料区", "valid dictionary"),
    ],
)
def test_manifest_names_are_checked(names: Any, error: str) -> None:
    raw = yaml.safe_load(demo_manifest_text())
    raw["zones"][0]["names"] = names
    with pytest.raises(ConfigError) as err:
        parse_manifest(yaml.safe_dump(raw, allow_unicode=True), "store.yaml")
    assert "zones[0].names" in str(err.value) and error in str(err.value), str(err.value)


@pytest.mark.timeout(90)
async def test_zh_cn_names_language_switch_and_urgency(mosquitto: Mosquitto, tmp_path: Path) -> None:
    console: list[str] = []
    async with gateway(mosquitto, tmp_path) as run, chromium() as browser:
        for shelf, sku, n in START:
            put(run, shelf, sku, n)
        now = run.gw.clock.now()
        run.gw.pipeline.route([StockFlag(shelf="rack-c1", sku="tee-m", time=now, origin="rfid", source="test",
                                         flag="stale", on=True, reason="reader rfid-1 offline")], now)
        # what the page reads: names (default and per language) and the beacons' health, for reader roles only
        r = await run.client.get("/api/v1/names", headers=run.headers("hq"))
        names = r.json()
        assert names["store"] == {"id": "demo", "name": "示范超市"}
        assert names["zones"]["aisle-1"] == {"name": "Drinks", "names": {"zh-CN": "饮料区"}}
        rack = {"name": "Apparel rack", "names": {"zh-CN": "服装挂架"}, "zone": "apparel"}
        assert names["shelves"]["rack-c1"] == rack
        assert names["catalog"]["tee-l"] == {"name": "T-shirt L", "names": {"zh-CN": "T恤 L码"}}
        assert names["zones"]["entrance"] == {"name": "Entrance", "names": {"zh-CN": "入口"}}  # the demo manifest's
        for path in ("/api/v1/names", "/api/v1/beacons"):
            assert (await run.client.get(path, headers=run.headers("shopper-app"))).status_code == 403
            assert (await run.client.get(path)).status_code == 401

        async def silent() -> bool:
            r = await run.client.get("/api/v1/beacons", headers=run.headers("staff"))
            return bool(r.json()["items"][0]["silent"])

        await wait_for(silent, timeout=20, what="the beacon never heard reported silent")
        r = await run.client.get("/api/v1/beacons", headers=run.headers("staff"))
        assert r.json()["items"] == [{"beacon": "bcn-drinks", "zone": "aisle-1", "battery_mv": None,
                                      "battery_low": False, "silent": True, "last_seen": None}]
        page = await open_dashboard(browser, run.base, "zh-CN", console)

        # zh-CN from the browser's language: UI strings and the manifest's names
        assert not await page.evaluate("() => !!window.staleShown")
        assert await page.get_attribute("html", "lang") == "zh-CN"
        assert await page.text_content("#store") == "门店：示范超市"
        assert await page.text_content("#shelves-panel h2") == "货架"
        assert await page.text_content(".shelf[data-shelf='shelf-a1'] .shelf-name") == "饮料货架（上层）"
        assert await page.text_content(".shelf[data-shelf='shelf-a1'] .zone") == "饮料区"
        assert await page.text_content(".cell[data-sku='cola-330'] .sku-name") == "可乐 330毫升"
        assert await page.text_content(".cell[data-sku='cola-330'] .count") == "20/24"

        # the urgency order: low (cola, then water: oldest first), out of stock last in time but first in list
        run.set_stock("shelf-a1", "cola-330", 2)
        await page.wait_for_selector("li.alert.kind-low_stock[data-id]:has-text('可乐 330毫升')")
        run.set_stock("shelf-a1", "water-500", 3)
        await page.wait_for_selector("li.alert.kind-low_stock:has-text('矿泉水 500毫升')")
        put(run, "rack-c1", "tee-l", 0)
        await page.wait_for_selector("li.alert.kind-out_of_stock:has-text('T恤 L码')")
        # faults: the door counter's device alert (after the 1 s grace) and the silent beacon
        await page.wait_for_selector("li.alert.kind-device_offline, li.alert.kind-device_fault", timeout=20_000)
        await page.wait_for_selector("li.alert.kind-beacon_silent:has-text('饮料区')", timeout=20_000)
        kinds = await page.eval_on_selector_all("li.alert", "els => els.map(e => e.className.match(/kind-(\\S+)/)[1])")
        assert kinds[:3] == ["out_of_stock", "low_stock", "low_stock"], kinds
        assert set(kinds[3:]) <= {"device_offline", "device_fault", "beacon_silent"}, kinds
        lows = await texts(page, "li.alert.kind-low_stock")
        assert "可乐" in lows[0] and "矿泉水" in lows[1], lows  # within a class: oldest first
        faults = await page.eval_on_selector_all("li.alert.urgency-2", "els => els.map(e => e.dataset.opened)")
        assert faults == sorted(faults), faults
        device_alert = await page.text_content("li.alert.kind-device_offline, li.alert.kind-device_fault") or ""
        assert "edge-test-no-such-door-counter" in device_alert, device_alert  # the supervisor's reason
        assert "从未收到信号" in (await page.text_content("li.alert.kind-beacon_silent") or "")

        # lane bars by the rule's levels (min 3) and the cell's flags
        async def classes(sku: str) -> set[str]:
            return set((await page.get_attribute(f".cell[data-sku='{sku}']", "class") or "").split())

        await wait_for(lambda: classes("water-500"), what="cells")
        assert {"low"} <= await classes("water-500")  # at min: amber (3 <= 3)
        assert {"low"} <= await classes("cola-330")
        assert {"out"} <= await classes("tee-l")
        assert {"ok"} <= await classes("choc-100")
        assert {"ok", "stale"} <= await classes("tee-m")
        assert "reader rfid-1 offline" in (await page.text_content(".cell[data-sku='tee-m']") or "")
        colours = await page.evaluate("""() => Object.fromEntries(['cola-330', 'tee-l', 'choc-100'].map(s =>
            [s, getComputedStyle(document.querySelector(`.cell[data-sku='${s}'] .bar span`)).backgroundColor]))""")
        assert colours == {"cola-330": "rgb(224, 161, 0)", "tee-l": "rgb(209, 43, 43)", "choc-100": "rgb(31, 143, 78)"}

        # numbers and dates per locale
        opened = await page.text_content("li.alert.kind-out_of_stock .meta") or ""
        assert "发生" in opened, opened
        if WRITE_SHOTS:
            SHOTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(SHOTS / "dashboard-zh-CN.png"), full_page=True)
            await page.set_viewport_size({"width": 390, "height": 844})
            await page.screenshot(path=str(SHOTS / "dashboard-zh-CN-phone.png"), full_page=True)
            await page.set_viewport_size({"width": 1024, "height": 900})

        # the switch: English names (the manifest's default `name`), remembered across a reload
        await page.select_option("#lang", "en")
        await page.wait_for_selector("html[lang='en']")
        assert await page.text_content("#shelves-panel h2") == "Shelves"
        assert await page.text_content(".shelf[data-shelf='shelf-a1'] .shelf-name") == "Drinks, top"
        assert await page.text_content(".cell[data-sku='cola-330'] .sku-name") == "Cola 330 ml"
        assert "Out of stock" in (await page.text_content("li.alert.kind-out_of_stock") or "")
        assert "T-shirt L on Apparel rack" in (await page.text_content("li.alert.kind-out_of_stock") or "")
        await page.reload()
        await page.wait_for_selector("#live.on")
        await page.wait_for_selector(".cell[data-sku='cola-330']")
        assert await page.get_attribute("html", "lang") == "en"
        assert await page.text_content(".cell[data-sku='cola-330'] .sku-name") == "Cola 330 ml"
        no_errors(console)


@pytest.mark.timeout(90)
async def test_chime_notification_and_stale_banner(mosquitto: Mosquitto, tmp_path: Path) -> None:
    console: list[str] = []
    async with chromium() as browser:
        async with gateway(mosquitto, tmp_path) as run:
            port = int(run.base.rsplit(":", 1)[1])
            for shelf, sku, n in START:
                put(run, shelf, sku, n)
            page = await open_dashboard(browser, run.base, "zh-CN", console)
            assert await page.get_attribute("html", "lang") == "zh-CN"

            # opt-in: the button unlocks audio (a click) and asks for notifications; a new urgent alert chimes
            # (the door counter's and the beacon's fault items first: they came before the opt-in, no chime)
            await page.wait_for_selector("li.alert.kind-device_offline, li.alert.kind-device_fault", timeout=20_000)
            await page.wait_for_selector("li.alert.kind-beacon_silent", timeout=20_000)
            assert await page.get_attribute("#chime", "data-played") is None
            assert await page.text_content("#chime") == "开启声音和通知"
            await page.click("#chime")
            await page.wait_for_selector("#chime[aria-pressed='true'][data-played='1']")
            assert await page.evaluate("() => Notification.permission") == "granted"
            run.set_stock("shelf-a1", "cola-330", 0)
            await page.wait_for_selector("li.alert.kind-out_of_stock")
            await page.wait_for_selector("#chime[data-played='2'][data-notified='1']")
            assert await page.get_attribute("#chime", "data-error") is None
            assert await page.evaluate("() => localStorage.getItem('edge-chime')") == "on"

            await page.fill("#staff-name", "王芳")
            assert not await page.is_disabled("li.alert button.ack")
            assert not await page.is_visible("#stale")
            assert not await page.evaluate("() => !!window.staleShown")  # not even while it connected
        # the gateway stopped: a banner with the data's age, data greyed, acknowledging disabled
        await page.wait_for_selector("#stale:visible", timeout=20_000)
        assert await page.evaluate("() => !!window.staleShown")
        banner = await page.text_content("#stale") or ""
        assert banner.startswith("非实时") and ("前" in banner or "现在" in banner), banner  # "3分钟前"
        assert re.search(r"数据来自 \d\d:\d\d", banner), banner  # when the data last came
        assert await page.get_attribute("body", "class") == "stale"
        assert await page.is_disabled("li.alert button.ack")
        assert await page.text_content("#live") == "正在重连"
        filt = await page.evaluate("() => getComputedStyle(document.querySelector('main')).filter")
        assert filt == "grayscale(1)"
        await page.click("li.alert button.ack", force=True)  # a click on the disabled button does nothing
        # the language switch needs the catalog from the gateway: without it the page stays in its language
        await page.select_option("#lang", "en")
        await page.wait_for_function("() => document.querySelector('#lang').value === 'zh-CN'")
        assert await page.get_attribute("html", "lang") == "zh-CN"
        assert (await page.text_content("#stale") or "").startswith("非实时")
        if WRITE_SHOTS:
            await page.screenshot(path=str(SHOTS / "dashboard-zh-CN-not-live.png"))
        # back on the same port: live again, actions enabled, the alert still there to acknowledge
        async with gateway(mosquitto, tmp_path, api_port=port) as run:
            await page.wait_for_selector("#live.on", timeout=30_000)
            assert not await page.is_visible("#stale")
            await page.wait_for_selector("li.alert.kind-out_of_stock button.ack:enabled")
            await page.click("li.alert.kind-out_of_stock button.ack")
            await page.wait_for_selector("li.alert.kind-out_of_stock.state-acknowledged:has-text('王芳')")
            r = await run.client.get("/api/v1/alerts", params={"state": "acknowledged"}, headers=run.headers("hq"))
            assert [a["acknowledged_by"] for a in r.json()["items"]] == ["王芳"]
        no_errors([c for c in console if "ERR_CONNECTION_REFUSED" not in c and "Failed to load" not in c])
