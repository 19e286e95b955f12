"""Zebra IoT Connector driver against its emulator through a real mosquitto; the vendor timestamp parser.
(The Impinj IoT interface driver: test_impinj_iot.py.)"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import aiomqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.base import DeviceOnline, DriverContext, Malformed, Reading
from drivers.rfid.config import ZebraIotcConfig
from drivers.rfid.reads import TagRead, parse_timestamp
from drivers.rfid.zebra import ZebraIotcDriver, parse_tag, split_objects
from edge.brokers import Mosquitto
from edge.clock import SystemClock
from edge.config import Manifest
from edge.errors import DeviceError, FrameError
from firmware_sim.rfid.population import Population
from firmware_sim.rfid.zebra_mqtt import ZebraMqttSim
from firmware_sim.world import World
from tests.drivers.rfid.frames import collect

FUZZ = 10_000 if os.environ.get("EDGE_FUZZ") == "long" else 200
EPC = "3074257BF7194E4000001A85"




def ntags(rs: list[Reading]) -> int:
    return sum(isinstance(r, TagRead) for r in rs)


# ---- parsing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        ("2026-01-05T08:00:00.123+0000", "2026-01-05T08:00:00.123000+00:00"),
        ("2026-01-05T09:00:00.123456789+01:00", "2026-01-05T08:00:00.123456+00:00"),
        ("2026-01-05T08:00:00Z", "2026-01-05T08:00:00+00:00"),
        ("2026-01-05T03:00:00-0500", "2026-01-05T08:00:00+00:00"),
    ],
)
def test_timestamps(text: str, iso: str) -> None:
    assert parse_timestamp(text).isoformat() == iso


def test_zebra_back_to_back_objects() -> None:
    one = {"type": "SIMPLE", "timestamp": "2026-01-05T08:00:00.000+0000",
           "data": {"idHex": EPC.lower(), "antenna": 3, "peakRssi": -61, "reads": 4, "eventNum": 1}}  # fmt: skip
    text = json.dumps(one) + json.dumps({"type": "HEARTBEAT", "data": {}}) + " \n" + json.dumps(one)
    objs, err = split_objects(text)
    assert err is None
    assert [parse_tag(o) for o in objs] == [(EPC, 3, -61.0, 1767600000000000, 4), None,
                                           (EPC, 3, -61.0, 1767600000000000, 4)]  # fmt: skip
    objs, err = split_objects(json.dumps(one) + '{"type": "SIM')
    assert len(objs) == 1
    assert err is not None


@settings(max_examples=FUZZ, deadline=None)
@given(st.text(max_size=300))
def test_fuzz_vendor_parsers(text: str) -> None:
    objs, _ = split_objects(text)
    for o in objs:
        with contextlib.suppress(FrameError):
            parse_tag(o)


scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(scalars,
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner,
                                                                                        max_size=3), max_leaves=10)


@settings(max_examples=FUZZ, deadline=None)
@given(json_values, json_values, json_values)
def test_fuzz_vendor_json_shapes(data: object, ts: object, port: object) -> None:
    for obj in ({"type": "SIMPLE", "timestamp": ts, "data": data},
                {"type": "SIMPLE", "timestamp": ts, "data": {"idHex": EPC, "antenna": port, "peakRssi": data}}):
        with contextlib.suppress(FrameError):
            parse_tag(obj)


# ---- Zebra through a real mosquitto ------------------------------------------------------------------


async def test_zebra_through_mosquitto(demo_manifest: Manifest, mosquitto: Mosquitto, tmp_path: Path) -> None:
    world = World(demo_manifest, SystemClock())
    topic = f"zebra/fx9600-{os.getpid()}/data"
    sim = ZebraMqttSim(Population(world, {1: "aisle-1", 2: "aisle-2"}), mosquitto.url, topic, cycle_s=0.05)
    cfg = ZebraIotcConfig(id="fx9600", topic=topic, antennas={1: "aisle-1", 2: "aisle-2"})
    drv = ZebraIotcDriver(cfg, DriverContext(manifest=demo_manifest, clock=SystemClock(), data_dir=tmp_path,
                                             local_broker_url=mosquitto.url))  # fmt: skip
    stream = drv.stream()
    assert isinstance(await anext(stream), DeviceOnline)
    await sim.start()
    try:
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as pub:
            await pub.publish(topic, b'{"type":"SIMPLE","data":{"idHex":"zz"}}{"type":"SIMPLE"', qos=1)
        got = await collect(stream, lambda rs: ntags(rs) > 100 and any(isinstance(r, Malformed) for r in rs))
        reads = [r for r in got if isinstance(r, TagRead)]
        lanes = {e: t.zone for t in world.lanes.values() for e in t.epcs}
        assert all(r.epc in lanes and r.read_point in {"aisle-1", "aisle-2"} for r in reads)
        home = [r for r in reads if r.read_point == lanes[r.epc]]
        assert len(home) > len(reads) // 2  # bleed into the other aisle is the exception
        assert all(r.count >= 1 and r.seen_us for r in reads)
        reasons = sorted(r.reason for r in got if isinstance(r, Malformed))
        assert reasons == ["bad JSON at offset 39", "idHex is not hex"]
        assert drv.counters["messages"] < drv.counters["tags"]  # several objects per message
    finally:
        await sim.stop()

    mosquitto.stop()
    with pytest.raises(DeviceError, match="local broker"):
        await collect(drv.stream(), lambda rs: False)
