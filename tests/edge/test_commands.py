"""The authorized command channel (edge/commands.py, docs/commands.md).

- RFC 8785 canonical JSON: the published test data (cyberphone/json-canonicalization testdata, RFC 8785
  Appendix B number samples) through the gateway's verifier and the simulated hub's signer;
- the worked example of docs/commands.md, read from the page, reproduced by both;
- the router: every refusal reason, replay, restart, reply_to rules, oversized requests (ManualClock);
- the real gateway over a real mosquitto: an unsigned state-changing command is refused and changes nothing,
  a signed one works once, bad `reply_to` topics get no reply anywhere and do not cost the uplink its
  connection, an oversized request with a readable reply_to gets an error reply.
"""

from __future__ import annotations

import asyncio
import re
import struct
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from edge.brokers import Mosquitto
from edge.clock import ManualClock
from edge.commands import MAX_REQUEST_BYTES, CommandRouter, canonical_json, reply_topic_problem, string_to_sign
from edge.config import CommandsConfig
from edge.gateway import Gateway
from edge.metrics import Metrics
from edge.processing import StockUpdate
from edge.uplink import MAX_RUNNING_COMMANDS
from firmware_sim.hub import HubCommander, HubRecorder, jcs, signed
from tests.api.conftest import CMD_KEY, manifest_for_tests, wait_for

DOCS = Path(__file__).resolve().parents[2] / "docs/commands.md"
ROOT = "retail/v1/demo"
KEY = "k1"
SECRET = "s" * 40

# cyberphone/json-canonicalization testdata/input and testdata/output (values.json, weird.json, arrays.json)
JCS_CASES = [
    ('{"numbers": [1E30, 4.50, 333333333.33333329, 2e-3, 0.000000000000000000000000001],'
     ' "escaping": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/", "literals": [null, true, false]}',
     '{"escaping":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/","literals":[null,true,false],'
     '"numbers":[1e+30,4.5,333333333.3333333,0.002,1e-27]}'),
    ('{"\\u20ac": "Euro Sign", "1": "One", "\\u0080": "Control\\u007f", "\\ud83d\\ude02": "Smiley",'
     ' "\\u00f6": "Latin Small Letter O With Diaeresis", "\\ufb33": "Hebrew Letter Dalet With Dagesh",'
     ' "</script>": "Browser Challenge"}',
     '{"1":"One","</script>":"Browser Challenge","\u0080":"Control\u007f","\u00f6":"Latin Small Letter O With '
     'Diaeresis","\u20ac":"Euro Sign","\U0001f602":"Smiley","\ufb33":"Hebrew Letter Dalet With Dagesh"}'),
    ('[56, {"d": true, "10": null, "1": [ ]}]', '[56,{"1":[],"10":null,"d":true}]'),
]
# RFC 8785 Appendix B: IEEE 754 bit patterns and their ECMAScript text
APPENDIX_B = [
    ("0000000000000000", "0"), ("8000000000000000", "0"), ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"), ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"), ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"), ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"), ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"), ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"), ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"), ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"), ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"), ("41b3de4355555556", "333333333.3333334"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
]


@pytest.mark.parametrize(("text", "want"), JCS_CASES)
def test_jcs_testdata(text: str, want: str) -> None:
    value = orjson.loads(text)
    assert canonical_json(value) == want
    assert jcs(value) == want


@pytest.mark.parametrize(("bits", "want"), APPENDIX_B)
def test_jcs_appendix_b_numbers(bits: str, want: str) -> None:
    x = struct.unpack(">d", bytes.fromhex(bits))[0]
    assert canonical_json(x) == want
    assert jcs(x) == want


def test_jcs_refuses_what_a_double_cannot_carry() -> None:
    deep: list[Any] = []
    for _ in range(70):
        deep = [deep]
    for bad in (2**53, -(2**53), float("nan"), float("inf"), deep, {"a": {1, 2}}):
        with pytest.raises(ValueError):
            canonical_json(bad)
    assert canonical_json(2**53 - 1) == "9007199254740991"


def _doc_block(marker: str) -> str:
    text = DOCS.read_text(encoding="utf-8")
    m = re.search(rf"<!-- example:{marker} -->\n```[a-z]*\n(.*?)\n```", text, re.S)
    assert m is not None, marker
    return m[1]


def test_docs_worked_example() -> None:
    request = orjson.loads(_doc_block("request"))
    topic, kid, ts = "retail/v1/s0421/cmd/restock.mute", "hq-2026-12", 1796400000
    secret = "hq-2026-12:8Jq3vR9xK2mW7pL4tY6zN1bC5dF0gH8s"
    assert string_to_sign(topic, kid, ts, request).decode() == _doc_block("string-to-sign")
    sig = _doc_block("sig")
    assert signed(request, topic=topic, kid=kid, secret=secret, ts=ts)["auth"]["sig"] == sig
    # and the gateway's router accepts exactly that request at that time
    clock = ManualClock(start=ManualClock().now().replace(year=2026, month=12, day=4, hour=16, minute=0))
    cfg = CommandsConfig.model_validate({"keys": [{"id": kid, "secret": secret}]})
    router = CommandRouter(Metrics(), topic_root="retail/v1/s0421", config=cfg, clock=clock)
    router.register("restock.mute", _echo)
    req = {**request, "auth": {"alg": "HMAC-SHA256", "kid": kid, "ts": ts, "sig": sig}}
    _, reply = asyncio.run(router.handle("restock.mute", orjson.dumps(req)))
    assert reply is not None and orjson.loads(reply)["ok"] is True


async def _echo(req: Any) -> dict[str, Any]:
    return {"shelf": req.get("shelf")}


def _router(clock: ManualClock, **cfg: Any) -> CommandRouter:
    config = CommandsConfig.model_validate({"keys": [{"id": KEY, "secret": SECRET}], **cfg})
    router = CommandRouter(Metrics(), topic_root=ROOT, config=config, clock=clock)
    router.register("restock.mute", _echo)
    router.register("stock.get", _echo, read_only=True)
    return router


def _req(name: str = "restock.mute", *, rid: str = "r1", ts: int | None = None, key: str = KEY,
         secret: str = SECRET, sign: bool = True, **extra: Any) -> dict[str, Any]:
    req: dict[str, Any] = {"id": rid, "reply_to": f"{ROOT}/reply/hq/{rid}", "shelf": "shelf-a1", **extra}
    return signed(req, topic=f"{ROOT}/cmd/{name}", kid=key, secret=secret, ts=ts) if sign else req


def _run(router: CommandRouter, name: str, payload: Any) -> dict[str, Any] | None:
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    topic, reply = asyncio.run(router.handle(name, raw))
    if reply is None:
        assert topic is None
        return None
    body: dict[str, Any] = orjson.loads(reply)
    return body


def _tampered(ts: int) -> dict[str, Any]:
    req = _req(ts=ts)
    return {**req, "shelf": "shelf-b1"}


def _redirected(ts: int) -> dict[str, Any]:
    req = _req(ts=ts)
    return {**req, "reply_to": f"{ROOT}/reply/mallory"}


@pytest.mark.parametrize(
    ("name", "make", "reason"),
    [
        ("restock.mute", lambda ts: _req(sign=False), "missing"),
        ("restock.mute", lambda ts: _req(ts=ts, key="k2"), "unknown_key"),
        ("restock.mute", lambda ts: _req(ts=ts, secret="t" * 40), "bad_signature"),
        ("restock.mute", _tampered, "bad_signature"),
        ("restock.mute", _redirected, "bad_signature"),
        ("restock.mute", lambda ts: {**_req(ts=ts), "auth": "x"}, "malformed"),
        ("restock.mute", lambda ts: {**_req(ts=ts), "auth": {**_req(ts=ts)["auth"], "alg": "none"}}, "malformed"),
        ("restock.mute", lambda ts: {**_req(ts=ts), "auth": {**_req(ts=ts)["auth"], "ts": str(ts)}}, "malformed"),
        ("restock.mute", lambda ts: {**_req(ts=ts), "auth": {**_req(ts=ts)["auth"], "sig": "AB" * 32}}, "malformed"),
        ("restock.mute", lambda ts: _req(ts=ts - 121), "stale"),
        ("restock.mute", lambda ts: _req(ts=ts + 121), "stale"),
        ("restock.mute", lambda ts: _req(ts=ts - 15), "before_start"),
        # signed for another command (or another store): the topic is signed
        ("stock.get", lambda ts: _req(ts=ts, name="restock.mute"), "bad_signature"),
        # a present signature is checked on a read-only command too
        ("stock.get", lambda ts: _req("stock.get", ts=ts, secret="t" * 40), "bad_signature"),
    ],
)
def test_refusals(clock: ManualClock, name: str, make: Any, reason: str) -> None:
    router = _router(clock)
    ts = int(clock.now().timestamp())
    clock.advance(10)  # the router started at ts; "now" is ts + 10
    body = _run(router, name, make(ts + 10))
    assert body is not None and body["ok"] is False
    assert (body["error"]["code"], body["error"]["reason"]) == ("unauthorized", reason), body
    assert router.metrics.value("edge_commands_refused_total", reason=reason) == 1


def test_signed_runs_once_and_read_only_is_open(clock: ManualClock) -> None:
    router = _router(clock)
    ts = int(clock.now().timestamp())
    req = _req(ts=ts)
    assert _run(router, "restock.mute", req) == {"id": "r1", "ok": True, "result": {"shelf": "shelf-a1"}}
    # the same id, signed anew (other content), is a replay within the window
    clock.advance(30)
    again = _run(router, "restock.mute", _req(ts=ts + 30))
    assert again is not None and again["error"]["reason"] == "replay"
    assert _run(router, "stock.get", _req("stock.get", sign=False))["ok"] is True  # type: ignore[index]
    strict = _router(clock, sign_reads=True)
    body = _run(strict, "stock.get", _req("stock.get", sign=False))
    assert body is not None and body["error"]["reason"] == "missing"
    body = _run(strict, "stock.get", _req("stock.get", rid="r9", ts=int(clock.now().timestamp())))
    assert body is not None and body["ok"] is True


def test_no_keys_refuses_every_state_change(clock: ManualClock) -> None:
    router = CommandRouter(Metrics(), topic_root=ROOT, clock=clock)
    router.register("restock.mute", _echo)
    body = _run(router, "restock.mute", _req(sign=False))
    assert body is not None and body["error"]["reason"] == "no_keys"


def test_key_rotation_and_nonce_expiry(clock: ManualClock) -> None:
    router = _router(clock, keys=[{"id": "old", "secret": "o" * 32}, {"id": "new", "secret": "n" * 32}],
                     window_s=60, nonce_cache=100)
    ts = int(clock.now().timestamp())
    assert _run(router, "restock.mute", _req(rid="a", ts=ts, key="old", secret="o" * 32))["ok"]  # type: ignore[index]
    assert _run(router, "restock.mute", _req(rid="b", ts=ts, key="new", secret="n" * 32))["ok"]  # type: ignore[index]
    # ids are forgotten once their window passed (and a request that old is stale anyway)
    for i in range(100):
        clock.advance(1)
        now = int(clock.now().timestamp())
        assert _run(router, "restock.mute", _req(rid=f"n{i}", ts=now, key="new", secret="n" * 32))["ok"]  # type: ignore[index]
    assert len(router._nonces) <= 62


def test_nonce_cache_full_is_busy(clock: ManualClock) -> None:
    router = _router(clock, nonce_cache=100)
    ts = int(clock.now().timestamp())
    for i in range(100):
        assert _run(router, "restock.mute", _req(rid=f"r{i}", ts=ts))["ok"]  # type: ignore[index]
    body = _run(router, "restock.mute", _req(rid="one-more", ts=ts))
    assert body is not None and body["error"]["code"] == "busy"


@pytest.mark.parametrize(
    ("reply_to", "ok"),
    [
        (f"{ROOT}/reply/hq/1", True),
        (f"{ROOT}/reply/x", True),
        ("hq/replies/7", True),  # an allowed extra prefix
        ("hq/repliesX/7", False),
        (f"{ROOT}/reply", False),
        (f"{ROOT}/reply/", False),
        (f"{ROOT}/alerts", False),
        (f"{ROOT}/status", False),
        (f"{ROOT}/state/stock/shelf-a1", False),
        ("retail/v1/other-store/alerts", False),
        ("retail/v1/other-store/reply/x", False),
        (f"{ROOT}/reply/a\x00b", False),
        (f"{ROOT}/reply/a\x1fb", False),
        (f"{ROOT}/reply/a\x85b", False),
        (f"{ROOT}/reply/a\uffffb", False),
        (f"{ROOT}/reply/a\ufdd0b", False),
        (f"{ROOT}/reply/a+", False),
        (f"{ROOT}/reply/#", False),
        (f"{ROOT}/reply//x", False),
        (f"{ROOT}/reply/" + "/".join("l" * 1 for _ in range(201)), False),
        (f"{ROOT}/reply/" + "x" * 300, False),
        ("$SYS/x", False),
        ("", False),
        (17, False),
        (None, False),
    ],
)
def test_reply_to_rules(clock: ManualClock, reply_to: object, ok: bool) -> None:
    assert (reply_topic_problem(reply_to, ROOT, ["hq/replies"]) is None) == ok
    router = _router(clock, reply_prefixes=["hq/replies"])
    # an error reply (unsigned state change) obeys the same rule as a result
    for name in ("restock.mute", "stock.get", "nope"):
        body = _run(router, name, {"id": 1, "reply_to": reply_to})
        assert (body is not None) == ok, (name, reply_to)


def test_oversized_request_with_readable_reply_to_gets_an_error_reply(clock: ManualClock) -> None:
    router = _router(clock)
    big = {"id": "big", "reply_to": f"{ROOT}/reply/hq/big", "pad": "x" * (MAX_REQUEST_BYTES + 10)}
    body = _run(router, "stock.get", big)
    assert body == {"id": "big", "ok": False, "error": {"code": "too_large",
                                                        "message": f"request is over {MAX_REQUEST_BYTES} bytes"}}
    assert _run(router, "stock.get", {**big, "reply_to": f"{ROOT}/alerts"}) is None
    assert _run(router, "stock.get", orjson.dumps(big)[:-1]) is None  # not JSON: nowhere to reply


# ---- the real gateway over a real mosquitto ----


async def test_gateway_refuses_unsigned_state_changes(mosquitto: Mosquitto, tmp_path: Path) -> None:
    m = manifest_for_tests(tmp_path)
    async with Gateway(m, hub_url=mosquitto.url, data_dir=tmp_path / "var", tick_interval=0.1) as gw:
        mallory = HubCommander(mosquitto.port, ROOT)  # no key
        hub = HubCommander(mosquitto.port, ROOT, kid="hq", secret=CMD_KEY)
        try:
            engine = gw.rules.engine
            refused = await asyncio.to_thread(mallory.call, "restock.mute", {"shelf": "shelf-a1", "on": True})
            assert (refused["ok"], refused["error"]["code"], refused["error"]["reason"]) == (
                False, "unauthorized", "missing")
            attempts: list[tuple[str, dict[str, Any]]] = [("rules.reload", {"rules": {"defaults": {"min": 9}}}),
                                                          ("alert.ack", {"alert_id": "x", "by": "mallory"})]
            for name, args in attempts:
                r = await asyncio.to_thread(mallory.call, name, args)
                assert r["error"]["code"] == "unauthorized", r
            assert engine.ruleset.cells[("shelf-a1", "cola-330")].min == 3
            # not muted: a low count still opens an alert
            now = gw.clock.now()
            gw.pipeline.route([StockUpdate(shelf="shelf-a1", sku="cola-330", time=now, origin="manual",
                                           source="t", count=1)], now)
            await wait_for(lambda: engine.book.live, 10, "a low-stock alert on the shelf mallory muted")
            # read-only stays open
            stock = await asyncio.to_thread(mallory.call, "stock.get", {"shelf": "shelf-a1"})
            assert stock["ok"] is True
            # signed: works, once
            req = hub.request("rules.reload", {"rules": {"defaults": {"min": 5}}})
            hub.publish("rules.reload", orjson.dumps(req))
            first = await asyncio.to_thread(hub.reply, req["id"], 20)
            assert first is not None and first["ok"] is True, first
            assert engine.ruleset.cells[("shelf-a1", "cola-330")].min == 5
            hub.replies.messages.clear()
            hub.publish("rules.reload", orjson.dumps(req))  # the captured request again: answered, not re-run
            second = await asyncio.to_thread(hub.reply, req["id"], 20)
            assert second == first
            reloads = gw.metrics.value("edge_commands_total", command="rules.reload", outcome="ok")
            assert reloads == 1 and gw.metrics.value("edge_commands_total", command="rules.reload",
                                                      outcome="redelivered") == 1
        finally:
            mallory.close()
            hub.close()
        await gw.rules.stop()


async def test_gateway_bad_reply_to_never_answered_and_uplink_stays(mosquitto: Mosquitto, tmp_path: Path) -> None:
    spy = HubRecorder(mosquitto.port, "#", persistent=False)
    m = manifest_for_tests(tmp_path)
    async with Gateway(m, hub_url=mosquitto.url, data_dir=tmp_path / "var", tick_interval=0.1) as gw:
        hub = HubCommander(mosquitto.port, ROOT, kid="hq", secret=CMD_KEY)
        try:
            assert (await asyncio.to_thread(hub.call, "stock.get"))["ok"]
            bad = [f"{ROOT}/alerts", f"{ROOT}/status", "retail/v1/other/alerts", f"{ROOT}/reply/a\x00b",
                   f"{ROOT}/reply/a\x01b", f"{ROOT}/reply/" + "/".join("x" * 201), f"{ROOT}/reply/\uffff"]
            for i, reply_to in enumerate(bad):
                for name in ("stock.get", "restock.mute", "nope"):  # a result and two error replies
                    hub.publish(name, orjson.dumps({"id": f"bad{i}", "reply_to": reply_to, "shelf": "shelf-a1"}))
            big = {"id": "big", "reply_to": hub.reply_to("big"), "pad": "x" * (MAX_REQUEST_BYTES + 1)}
            hub.publish("stock.get", orjson.dumps(big))
            too_large = await asyncio.to_thread(hub.reply, "big", 20)
            assert too_large is not None and too_large["error"]["code"] == "too_large"
            assert (await asyncio.to_thread(hub.call, "stock.get"))["ok"]
            await wait_for(lambda: gw.metrics.value("edge_commands_total", command="stock.get",
                                                    outcome="bad_reply_to") >= len(bad), 10, "all bad counted")
        finally:
            hub.close()
        await gw.rules.stop()
    snapshot = spy.snapshot()
    spy.close()
    onlines = [x for x in snapshot if x.topic == f"{ROOT}/status" and x.json().get("state") == "online"]
    assert len(onlines) == 1, "the uplink reconnected"
    answered = [x.topic for x in snapshot if b'"bad' in x.payload and "/cmd/" not in x.topic]
    assert answered == []
    assert not [x for x in snapshot if x.topic in (f"{ROOT}/alerts", "retail/v1/other/alerts")]


def test_restart_refuses_requests_signed_before_it(clock: ManualClock) -> None:
    before = _router(clock)
    ts = int(clock.now().timestamp())
    req = _req(ts=ts)
    assert _run(before, "restock.mute", req)["ok"]  # type: ignore[index]
    clock.advance(5)
    after = _router(clock)  # the gateway restarted: the nonce cache is empty
    body = _run(after, "restock.mute", req)
    assert body is not None and body["error"]["reason"] == "before_start"
    clock.advance(1)
    assert _run(after, "restock.mute", _req(rid="r2", ts=int(clock.now().timestamp())))["ok"]  # type: ignore[index]


def test_clock_skew_within_window(clock: ManualClock) -> None:
    router = _router(clock, window_s=30)
    start = clock.now()
    clock.advance(40)
    now = clock.now()
    ok = _req(rid="ok", ts=int((now - timedelta(seconds=30)).timestamp()))
    assert _run(router, "restock.mute", ok)["ok"]  # type: ignore[index]
    late = _req(rid="late", ts=int((now - timedelta(seconds=31)).timestamp()))
    assert _run(router, "restock.mute", late)["error"]["reason"] == "stale"  # type: ignore[index]
    assert start < now


def test_redelivery_gets_the_first_reply_and_does_not_run_again(clock: ManualClock) -> None:
    """A QoS 1 redelivery (the exact signed bytes again) is answered with the first reply, not `replay`,
    and the handler runs once; also when the redelivery arrives while the first delivery still runs."""
    calls: list[str] = []
    release = asyncio.Event()

    async def slow(req: Any) -> dict[str, Any]:
        calls.append(req["id"])
        await release.wait()
        return {"n": len(calls)}

    router = _router(clock)
    router.register("slow.set", slow)
    ts = int(clock.now().timestamp())
    req = signed({"id": "r7", "reply_to": f"{ROOT}/reply/hq/r7"}, topic=f"{ROOT}/cmd/slow.set", kid=KEY,
                 secret=SECRET, ts=ts)
    raw = orjson.dumps(req)

    async def both() -> list[tuple[str | None, bytes | None]]:
        first = asyncio.create_task(router.handle("slow.set", raw))
        await asyncio.sleep(0)
        second = asyncio.create_task(router.handle("slow.set", raw))
        await asyncio.sleep(0)
        release.set()
        return [await first, await second, await router.handle("slow.set", raw)]

    replies = asyncio.run(both())
    assert calls == ["r7"]
    assert [t for t, _ in replies] == [f"{ROOT}/reply/hq/r7"] * 3
    assert {r for _, r in replies} == {orjson.dumps({"id": "r7", "ok": True, "result": {"n": 1}})}
    assert router.metrics.value("edge_commands_total", command="slow.set", outcome="redelivered") == 2


async def test_gateway_caps_commands_running_at_once(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """A flood of cmd/ requests does not pile up handler tasks: past MAX_RUNNING_COMMANDS the gateway answers
    `busy` at once; the running ones finish normally and later requests run again."""
    release = asyncio.Event()
    started: list[str] = []

    async def slow(req: Any) -> dict[str, Any]:
        started.append(req["id"])
        await release.wait()
        return {"ok": True}

    m = manifest_for_tests(tmp_path)
    async with Gateway(m, hub_url=mosquitto.url, data_dir=tmp_path / "var", tick_interval=0.1) as gw:
        gw.commands.register("slow.get", slow, read_only=True)
        hub = HubCommander(mosquitto.port, ROOT)
        try:
            assert (await asyncio.to_thread(hub.call, "stock.get"))["ok"]  # connected both ways
            flood = MAX_RUNNING_COMMANDS + 8
            for i in range(flood):
                hub.publish("slow.get", orjson.dumps({"id": f"f{i}", "reply_to": hub.reply_to(f"f{i}")}))
            await wait_for(lambda: gw.metrics.value("edge_commands_total", command="slow.get",
                                                    outcome="busy") == 8, 20, "8 busy replies")
            assert len(started) == MAX_RUNNING_COMMANDS
            release.set()
            replies = [await asyncio.to_thread(hub.reply, f"f{i}", 20) for i in range(flood)]
            codes = [r["error"]["code"] if r and not r["ok"] else ("ok" if r else None) for r in replies]
            assert codes.count("ok") == MAX_RUNNING_COMMANDS and codes.count("busy") == 8, codes
            assert (await asyncio.to_thread(hub.call, "slow.get"))["ok"]  # the cap frees up again
        finally:
            hub.close()
        await gw.rules.stop()
