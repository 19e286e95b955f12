"""shelf_mqtt against a private mosquitto, fed by the simulated networked shelf; payload codec fuzzed."""

from __future__ import annotations

import asyncio
import math
import os
from pathlib import Path

import aiomqtt
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.shelf.config import ShelfMqttConfig
from drivers.shelf.mqtt import ShelfMessage, ShelfMqttDriver, decode_payload
from drivers.shelf.reads import WeightSample, WeightSamples
from edge.brokers import Mosquitto
from edge.clock import SystemClock
from edge.config import Manifest
from edge.driver import DeviceOnline, DriverContext, Malformed, Reading
from edge.errors import DeviceError, FrameError
from firmware_sim.shelf import MqttShelfSim, lanes_for
from firmware_sim.world import World

FUZZ = 10_000 if os.environ.get("EDGE_FUZZ") == "long" else 200

PAYLOADS = [
    (
        b'{"shelf":"shelf-a1","lane":"l1","grams":1234.5,"stable":true,"ts":"2026-01-05T08:00:00Z"}',
        ShelfMessage("shelf-a1", "l1", 1234.5, True),
    ),
    (b'{"shelf":"shelf-a1","lane":"l2","grams":12}', ShelfMessage("shelf-a1", "l2", 12.0, True)),
    (b'{"shelf":"s","lane":"l","grams":-1.5,"stable":false}', ShelfMessage("s", "l", -1.5, False)),
]
BAD = [
    b"",
    b"nope",
    b"[]",
    b'{"shelf":"a/b","lane":"l","grams":1}',
    b'{"shelf":"a","lane":"l","grams":"x"}',
    b'{"shelf":"a","lane":"l","grams":true}',
    b'{"shelf":"a","lane":"l","grams":1,"stable":"yes"}',
    b'{"shelf":"a#","lane":"+","grams":1}',
]


@pytest.mark.parametrize(("raw", "want"), PAYLOADS)
def test_payloads(raw: bytes, want: ShelfMessage) -> None:
    assert decode_payload(raw) == want


@pytest.mark.parametrize("raw", BAD)
def test_bad_payloads(raw: bytes) -> None:
    with pytest.raises(FrameError):
        decode_payload(raw)


def test_nan_grams() -> None:
    assert math.isnan(decode_payload(b'{"shelf":"a","lane":"l","grams":null}').grams)


@settings(max_examples=FUZZ)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.floats() | st.text(max_size=10),
            lambda c: (
                st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(["shelf", "lane", "grams", "stable", "x"]), c)
            ),
            max_leaves=8,
        ).map(lambda v: orjson.dumps(v, option=orjson.OPT_SERIALIZE_NUMPY) if v is not None else b"null"),
    )
)
def test_fuzz_payload(raw: bytes) -> None:
    try:
        msg = decode_payload(raw)
    except FrameError:
        return
    assert isinstance(msg.grams, float)


async def test_stream_from_simulated_shelf(mosquitto: Mosquitto, demo_manifest: Manifest, tmp_path: Path) -> None:
    world = World(demo_manifest, SystemClock())
    lanes = lanes_for(world, "rack-c1", tare_g=0.0)
    tare = {ln.lane: ln.tare_g for ln in lanes}
    sim = MqttShelfSim(world, mosquitto.url, lanes, hz=20)
    cfg = ShelfMqttConfig(id="mq-1", broker_url=mosquitto.url)
    drv = ShelfMqttDriver(cfg, DriverContext(manifest=demo_manifest, clock=SystemClock(), data_dir=tmp_path))
    got: list[Reading] = []
    stream = drv.stream()
    try:
        async with asyncio.timeout(10):
            async for r in stream:
                got += r.expand() if isinstance(r, WeightSamples) else [r]
                if isinstance(r, DeviceOnline):
                    sim.start()
                    async with aiomqtt.Client("127.0.0.1", int(mosquitto.url.rsplit(":", 1)[1])) as c:
                        await c.publish("shelves/rack-c1/weight", b"{broken")
                        await c.publish("shelves/rack-c1/weight", b'{"shelf":"rack-c1","lane":"zz","grams":1}')
                if (
                    sum(isinstance(x, WeightSample) for x in got) >= 4
                    and sum(isinstance(x, Malformed) for x in got) >= 2
                ):
                    break
    finally:
        await stream.aclose()
        await sim.stop()
    samples = [r for r in got if isinstance(r, WeightSample)]
    for s in samples:
        truth = world.lanes[("rack-c1", s.lane)]
        assert s.grams == pytest.approx(truth.count * truth.unit_weight_g + tare[s.lane], abs=10)
    assert {m.reason for m in got if isinstance(m, Malformed)} == {"not JSON", "unknown shelf lane"}


async def test_broker_gone_raises(mosquitto: Mosquitto, demo_manifest: Manifest, tmp_path: Path) -> None:
    cfg = ShelfMqttConfig(id="mq-2")
    ctx = DriverContext(manifest=demo_manifest, clock=SystemClock(), data_dir=tmp_path, local_broker_url=mosquitto.url)
    stream = ShelfMqttDriver(cfg, ctx).stream()
    first = await anext(stream)
    assert isinstance(first, DeviceOnline)
    mosquitto.kill()
    with pytest.raises(DeviceError):
        async with asyncio.timeout(10):
            await anext(stream)


@pytest.mark.parametrize("qos", [0, 1])
async def test_subscription_qos(qos: int, demo_manifest: Manifest, tmp_path: Path) -> None:
    """`qos: 1` subscribes at QoS 1: mosquitto (its own log) delivers QoS 1 readings at QoS 1 and gets PUBACKs."""
    log = tmp_path / "mosquitto.log"
    broker = Mosquitto(workdir=tmp_path / "mq", extra=f"log_dest file {log}\nlog_type all\n")
    broker.start()
    cfg = ShelfMqttConfig(id="mq-q", broker_url=broker.url, client_id="edge-qos-test", qos=qos)
    ctx = DriverContext(manifest=demo_manifest, clock=SystemClock(), data_dir=tmp_path)
    stream = ShelfMqttDriver(cfg, ctx).stream()
    try:
        assert isinstance(await anext(stream), DeviceOnline)
        async with aiomqtt.Client("127.0.0.1", broker.port) as c:
            for g in (100.0, 200.0, 300.0):
                await c.publish("shelves/rack-c1/weight", orjson.dumps({"shelf": "rack-c1", "lane": "l1", "grams": g}),
                                qos=1)
        got: list[Reading] = []
        async with asyncio.timeout(10):
            while len(got) < 3:
                r = await anext(stream)
                got += r.expand() if isinstance(r, WeightSamples) else [r]
        assert [r.grams for r in got if isinstance(r, WeightSample)] == [100.0, 200.0, 300.0]
    finally:
        await stream.aclose()
        broker.stop()
    text = log.read_text(errors="replace")
    sent = [ln for ln in text.splitlines() if "Sending PUBLISH to edge-qos-test" in ln]
    assert len(sent) == 3, text[-2000:]
    assert all(f"q{qos}," in ln for ln in sent), sent
    assert ("Received PUBACK from edge-qos-test" in text) == (qos == 1)
