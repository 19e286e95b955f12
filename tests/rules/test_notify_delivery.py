"""Staff notifications through a running gateway to the fake WeCom / DingTalk / Feishu / Slack endpoints
(firmware_sim/im_receivers.py, real HTTP on 127.0.0.1): signed, in each tool's format, retried on HTTP 5xx,
on a vendor errcode and on Slack's 429, given up on a permanent error, rate limited per channel, and kept
across a restart."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from edge.brokers import Mosquitto, free_port
from edge.gateway import Gateway
from firmware_sim.im_receivers import KINDS, ImReceivers
from tests.api.conftest import Running, manifest_for_tests, wait_for

FAST = {"backoff_s": 0.2, "backoff_max_s": 0.5}


@pytest.fixture
def rx() -> Iterator[ImReceivers]:
    r = ImReceivers()
    r.start_sync()
    yield r
    r.stop_sync()


def notifications(rx: ImReceivers, **extra: Any) -> dict[str, Any]:
    return {"lang": "zh-CN", "dashboard_url": "http://127.0.0.1:8080/", "channels": rx.channels(**{**FAST, **extra})}


async def rows(gw: Gateway, channel: str | None = None) -> list[dict[str, Any]]:
    q = "SELECT * FROM webhook_deliveries" + (" WHERE webhook = ?" if channel else "") + " ORDER BY created"
    return await gw.query(q, (f"im:{channel}",) if channel else ())


async def test_every_tool_gets_its_signed_message_and_failures_are_retried(
    mosquitto: Mosquitto, tmp_path: Path, rx: ImReceivers
) -> None:
    rx.script("wecom", ["code:45009"])  # api freq out of limit: try again
    rx.script("dingtalk", ["http:503"])
    rx.script("feishu", ["code:11232"])  # frequency limited
    rx.script("slack", ["http:429"])  # with Retry-After: 1
    m = manifest_for_tests(tmp_path, notifications=notifications(rx))
    async with Gateway(m, hub_url=mosquitto.url, data_dir=tmp_path / "var", tick_interval=0.1) as gw:
        Running(gw, "", None).set_stock("shelf-a1", "cola-330", 1)  # type: ignore[arg-type]
        await wait_for(lambda: all(rx.received[k] for k in KINDS), 20, "a message at every tool")
        for k in KINDS:
            assert rx.refused[k] == [], k  # signature, shape and rate accepted
            assert len(rx.requests[k]) == 2, k  # the scripted failure, then the retry

        async def delivered() -> bool:
            return all(r["state"] == "delivered" for r in await rows(gw)) and len(await rows(gw)) == 4

        await wait_for(delivered, 10, "four delivered rows")
        assert sorted((r["webhook"], r["attempts"], r["last_status"]) for r in await rows(gw)) == [
            (f"im:{k}-staff", 2, 200) for k in sorted(KINDS)]
        wecom = rx.received["wecom"][0]["markdown"]["content"]
        assert "库存不足:可乐 330毫升" in wecom and "饮料货架（上层）" in wecom  # noqa: RUF001
        assert "[打开看板](http://127.0.0.1:8080/)" in wecom
        ding = rx.received["dingtalk"][0]
        assert ding["msgtype"] == "markdown" and "库存不足" in ding["markdown"]["title"]
        assert "timestamp=" in rx.requests["dingtalk"][1][0] and "sign=" in rx.requests["dingtalk"][1][0]
        feishu = rx.received["feishu"][0]
        assert feishu["msg_type"] == "interactive" and {"timestamp", "sign"} <= set(feishu)
        assert feishu["card"]["header"]["template"] == "orange"  # low stock: warning
        assert rx.received["slack"][0]["text"].endswith("库存不足:可乐 330毫升")
        metrics = gw.rules.metrics_text()
        assert "edge_rules_webhook_delivered_total 4" in metrics
        assert 'edge_rules_notify_delivered_total{channel="feishu-staff"} 1' in metrics
        assert 'edge_rules_notify_failed_total{channel="feishu-staff"} 0' in metrics
        await gw.rules.stop()


async def test_permanent_error_gives_up_and_other_channels_still_deliver(
    mosquitto: Mosquitto, tmp_path: Path, rx: ImReceivers
) -> None:
    chans = rx.channels(kinds=("dingtalk", "slack"), **FAST)
    chans[0]["secret"] = "SECnot-the-robots-secret"  # DingTalk answers errcode 310000: no retry helps
    m = manifest_for_tests(tmp_path, notifications={"lang": "en", "channels": chans})
    async with Gateway(m, hub_url=mosquitto.url, data_dir=tmp_path / "var", tick_interval=0.1) as gw:
        Running(gw, "", None).set_stock("shelf-a1", "cola-330", 1)  # type: ignore[arg-type]

        async def settled() -> bool:
            return {r["state"] for r in await rows(gw)} == {"failed", "delivered"}

        await wait_for(settled, 15, "one failed, one delivered")
        (ding,) = await rows(gw, "dingtalk-staff")
        assert (ding["attempts"], ding["last_status"]) == (1, 200)
        assert ding["last_error"].startswith("errcode 310000")
        assert rx.refused["dingtalk"] == ["sign"]
        assert 'edge_rules_notify_failed_total{channel="dingtalk-staff"} 1' in gw.rules.metrics_text()
        assert rx.received["slack"][0]["text"].endswith("Low stock: Cola 330 ml")
        await gw.rules.stop()


async def test_rate_limit_per_channel_holds_messages_back_without_losing_them(
    mosquitto: Mosquitto, tmp_path: Path, rx: ImReceivers
) -> None:
    chans = rx.channels(kinds=("wecom",), rate_per_minute=2, events=["opened", "acknowledged"], **FAST)
    m = manifest_for_tests(tmp_path, notifications={"channels": chans})
    async with Gateway(m, hub_url=mosquitto.url, data_dir=tmp_path / "var", tick_interval=0.1) as gw:
        run = Running(gw, "", None)  # type: ignore[arg-type]
        run.set_stock("shelf-a1", "cola-330", 1)
        run.set_stock("shelf-a1", "water-500", 1)
        run.set_stock("shelf-b1", "crisps-150", 1)
        await wait_for(lambda: len(rx.received["wecom"]) >= 2, 15, "two messages")

        async def held() -> list[dict[str, Any]]:  # once the two sent ones are recorded as delivered
            r = await rows(gw)
            states = sorted(x["state"] for x in r)
            return [x for x in r if x["state"] == "pending"] if states == ["delivered", "delivered", "pending"] else []

        (waiting,) = await wait_for(held, 10, "two delivered, the third message held back")
        assert waiting["attempts"] == 0  # waiting for its turn uses no attempt
        now = gw.clock.now().timestamp()
        first = min(datetime.fromisoformat(r["created"]).timestamp() for r in await rows(gw))
        assert first + 60 <= waiting["next_at"] <= now + 60  # when the first of the two leaves the 60 s window
        assert len(rx.requests["wecom"]) == 2  # the limit held on our side: the robot's 20/min never hit
        await gw.rules.stop()


async def test_quiet_hours_suppress_and_urgent_kinds_pass(mosquitto: Mosquitto, tmp_path: Path,
                                                          rx: ImReceivers) -> None:
    chans = rx.channels(kinds=("slack",), quiet_hours=["00:00-00:00"], quiet_pass_kinds=["out_of_stock"], **FAST)
    m = manifest_for_tests(tmp_path, notifications={"channels": chans})
    async with Gateway(m, hub_url=mosquitto.url, data_dir=tmp_path / "var", tick_interval=0.1) as gw:
        run = Running(gw, "", None)  # type: ignore[arg-type]
        run.set_stock("shelf-a1", "cola-330", 1)  # low stock: quiet
        run.set_stock("shelf-a1", "water-500", 0)  # out of stock: passes
        await wait_for(lambda: rx.received["slack"], 15, "the stock-out message")

        async def both() -> list[dict[str, Any]]:
            r = await rows(gw)
            return r if len(r) == 2 and {x["state"] for x in r} == {"suppressed", "delivered"} else []

        await wait_for(both, 10, "a suppressed and a delivered row")
        assert len(rx.received["slack"]) == 1
        assert "Out of stock" in rx.received["slack"][0]["text"] or "缺货" in rx.received["slack"][0]["text"]
        await gw.rules.stop()


async def test_restart_mid_delivery_loses_nothing(mosquitto: Mosquitto, tmp_path: Path) -> None:
    port = free_port()  # nothing listens yet: every attempt fails
    rx = ImReceivers()
    rx.port = port
    chans = rx.channels(kinds=("feishu", "wecom"), max_attempts=100, **FAST)  # still pending at the restart
    m = manifest_for_tests(tmp_path, notifications={"channels": chans})
    async with Gateway(m, hub_url=mosquitto.url, data_dir=tmp_path / "var", tick_interval=0.1) as gw:
        Running(gw, "", None).set_stock("shelf-a1", "cola-330", 1)  # type: ignore[arg-type]

        async def failing() -> bool:
            r = await rows(gw)
            return len(r) == 2 and all(x["state"] == "pending" and x["attempts"] >= 1 for x in r)

        await wait_for(failing, 15, "failed attempts on both channels")
        await gw.rules.stop()
    rx.start_sync(port)
    try:
        async with Gateway(m, hub_url=mosquitto.url, data_dir=tmp_path / "var", tick_interval=0.1) as gw:
            await wait_for(lambda: rx.received["feishu"] and rx.received["wecom"], 15, "delivery after restart")
            assert rx.refused["feishu"] == []  # signed afresh for the new attempt's time
            await gw.rules.stop()
    finally:
        rx.stop_sync()
