"""Every parser and decoder against arbitrary input: it returns a value or raises its documented error, never
anything else (a stray IndexError/KeyError/TypeError is a crash of the device's stream).

Short profile (200 examples) by default; EDGE_FUZZ=long runs 10,000 examples per property.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import string
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.ble.adverts import parse_altbeacon, parse_eddystone, parse_frames, parse_ibeacon
from drivers.door.protocol import parse_json, parse_line
from drivers.rfid.epc import decode_epc
from drivers.rfid.impinj import parse_event
from drivers.rfid.llrp_codec import (
    FrameDecoder,
    LlrpStreamError,
    decode_capabilities,
    decode_reader_event,
    decode_ro_access_report,
    decode_status,
    new_carry,
)
from drivers.rfid.zebra import parse_tag
from drivers.scanner.gs1 import parse_code
from drivers.shelf.modbus import decode_weight
from drivers.shelf.mqtt import decode_payload
from drivers.shelf.serial_line import decode as decode_shelf_line
from edge.commands import CommandRouter
from edge.errors import CommandError, FrameError
from edge.metrics import Metrics

N = 10_000 if os.environ.get("EDGE_FUZZ") == "long" else 200
FUZZ = settings(max_examples=N, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(max_size=40)
json_values = st.recursive(json_scalars, lambda kids: st.lists(kids, max_size=5) |
                           st.dictionaries(st.text(max_size=10), kids, max_size=5), max_leaves=20)


@FUZZ
@given(st.binary(max_size=600))
def test_llrp_stream_and_bodies(data: bytes) -> None:
    dec = FrameDecoder()
    with contextlib.suppress(LlrpStreamError, FrameError):
        dec.feed(data)
    for fn in (decode_status, decode_reader_event, decode_capabilities, decode_ro_access_report):
        with contextlib.suppress(FrameError, ValueError):
            fn(data)
    with contextlib.suppress(FrameError):  # with the per-connection memory of omitted fields, as the driver
        decode_ro_access_report(data, new_carry())


@FUZZ
@given(st.binary(max_size=200))
def test_shelf_serial_line(line: bytes) -> None:
    with contextlib.suppress(FrameError):
        decode_shelf_line(line)


@FUZZ
@given(st.lists(st.integers(min_value=-(2**20), max_value=2**20), max_size=4),
       st.sampled_from(["big", "little"]), st.booleans(), st.floats(min_value=1e-6, max_value=1e6))
def test_modbus_registers(regs: list[int], order: str, signed: bool, scale: float) -> None:
    with contextlib.suppress(FrameError, ValueError):
        decode_weight(regs, order, signed, scale)


@FUZZ
@given(st.binary(max_size=300) | json_values.map(orjson.dumps) |
       st.fixed_dictionaries({"shelf": json_values, "lane": json_values, "grams": json_values}).map(orjson.dumps))
def test_shelf_mqtt_payload(payload: bytes) -> None:
    with contextlib.suppress(FrameError):
        decode_payload(payload)


@FUZZ
@given(st.integers(min_value=0, max_value=0xFFFF), st.binary(max_size=40),
       st.dictionaries(st.integers(0, 0xFFFF), st.binary(max_size=40), max_size=3),
       st.dictionaries(st.text(max_size=36), st.binary(max_size=40), max_size=3))
def test_ble_adverts(company: int, data: bytes, manufacturer: dict[int, bytes], service: dict[str, bytes]) -> None:
    for fn in (lambda: parse_ibeacon(company, data), lambda: parse_altbeacon(company, data),
               lambda: parse_eddystone(data)):
        with contextlib.suppress(FrameError):
            fn()
    frames, errors = parse_frames(manufacturer, service)  # collects errors, never raises
    assert isinstance(frames, list) and isinstance(errors, list)


@FUZZ
@given(st.text(max_size=120) | st.text(alphabet=string.digits + "()\x1d]Cd0", max_size=80))
def test_gs1_barcodes(value: str) -> None:
    decoded = parse_code(value)  # documented: never raises
    assert decoded is not None


@FUZZ
@given(st.text(max_size=40))
def test_epc(text: str) -> None:
    assert decode_epc(text).key


@FUZZ
@given(st.binary(max_size=300) | json_values.map(orjson.dumps))
def test_vendor_json(raw: bytes) -> None:
    with contextlib.suppress(FrameError):
        parse_event(raw)
    try:
        obj: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        obj = raw.decode(errors="replace")
    with contextlib.suppress(FrameError):
        parse_tag(obj)
    for fn in (parse_line, parse_json):
        with contextlib.suppress(FrameError):
            fn(raw)


async def _echo(req: Any) -> dict[str, Any]:
    return {"echo": req.get("x")}


async def _broken(req: Any) -> dict[str, Any]:
    raise CommandError("bad_request", "always")


@FUZZ
@given(st.sampled_from(["echo", "broken", "nope", ""]),
       st.binary(max_size=200) | json_values.map(orjson.dumps) |
       st.fixed_dictionaries({"id": json_values, "reply_to": json_values | st.just("retail/v1/store/reply/x")},
                             optional={"x": json_values})
       .map(orjson.dumps))
def test_mqtt_commands(name: str, payload: bytes) -> None:
    router = CommandRouter(Metrics())
    router.register("echo", _echo, read_only=True)  # state-changing commands need a signature (tests/edge)
    router.register("broken", _broken, read_only=True)
    reply_to, reply = asyncio.run(router.handle(name, payload))
    if reply_to is None:
        assert reply is None
        return
    assert reply is not None and reply_to == "retail/v1/store/reply/x"
    body = orjson.loads(reply)
    assert set(body) >= {"id", "ok"} and isinstance(body["ok"], bool)
    req = orjson.loads(payload)
    rid = req.get("id")
    valid_id = (isinstance(rid, int) and not isinstance(rid, bool)) or (isinstance(rid, str) and 0 < len(rid) <= 128)
    assert body["ok"] == (name == "echo" and valid_id)
    if not body["ok"]:
        assert isinstance(body["error"]["code"], str) and body["error"]["code"]
    assert ("result" in body) == body["ok"] and ("error" in body) != body["ok"]
