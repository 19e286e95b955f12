"""Zebra IoT Connector driver against the simulated FX9600 through a real mosquitto.

One test per numbered item of issue 21 (Zebra part): every operating mode's events, JSON-array batching,
missing tagMetaData and SIMPLE's unique-tag reporting, control (set_mode/start/get_mode with command_id and
the response topic), management events, and retention replay after a broker outage dated by the events' own
timestamps (with the reader clock offset taken from heartbeats).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.rfid.config import ZebraIotcConfig
from drivers.rfid.reads import AntennaStatus, ReaderStatus, TagRead, to_us
from drivers.rfid.zebra import TAG_TYPES, ZebraIotcDriver, parse_heartbeat, parse_payload, parse_tag
from edge.brokers import Mosquitto
from edge.clock import SystemClock
from edge.config import Manifest
from edge.driver import DeviceOnline, DriverContext, Malformed, Reading
from edge.errors import DeviceError, FrameError
from firmware_sim.rfid import zebra_mqtt
from firmware_sim.rfid.population import Population
from firmware_sim.rfid.zebra_mqtt import ZebraMqttSim
from firmware_sim.world import World
from tests.drivers.rfid.frames import collect
from tests.drivers.rfid.vendor_helpers import collect_some, ntags

FUZZ = 10_000 if os.environ.get("EDGE_FUZZ") == "long" else 200
EPC = "3074257BF7194E4000001A85"
ANTS = {1: "aisle-1", 2: "aisle-2"}


def event(kind: str = "INVENTORY", **data: object) -> dict[str, object]:
    return {"type": kind, "timestamp": "2026-01-05T08:00:00.000+0000", "data": {"idHex": EPC.lower(), **data}}


# ---- parsing: modes, batching, metadata -----------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(TAG_TYPES))
def test_every_operating_mode_carries_tags(kind: str) -> None:
    assert parse_tag(event(kind, antenna=2, peakRssi=-61, reads=4)) == (EPC, 2, -61.0, 1767600000000000, 4)


def test_other_event_types_ignored_and_bad_ones_rejected() -> None:
    assert parse_tag({"type": "heartbeat", "data": {}}) is None
    for bad in ({"type": "SIMPLE"}, event(antenna="x"), event(peakRssi=99), {"type": "SIMPLE", "data": {}},
                {"type": "SIMPLE", "data": {"idHex": "zz"}}, [1]):  # fmt: skip
        with pytest.raises(FrameError):
            parse_tag(bad)


def test_batching_is_a_json_array_single_objects_stay() -> None:
    one = event(antenna=1)
    assert parse_payload(json.dumps(one).encode()) == [one]
    assert parse_payload(json.dumps([one, one, {"type": "heartbeat"}]).encode()) == [one, one, {"type": "heartbeat"}]
    for bad in (b'{"type": "SIM', json.dumps(one).encode() * 2, b""):  # objects back to back are not JSON
        with pytest.raises(FrameError):
            parse_payload(bad)


def test_missing_tag_metadata() -> None:
    """tagMetaData without ANTENNA/RSSI/SEEN_COUNT: antenna None (not port 0), no RSSI, one read."""
    assert parse_tag(event("SIMPLE")) == (EPC, None, None, 1767600000000000, 1)
    assert parse_tag(event("CUSTOM", RSSI=-50, SEEN_COUNT=3, antenna=1)) == (EPC, 1, -50.0, 1767600000000000, 3)


def test_heartbeat_fields(demo_manifest: Manifest) -> None:
    world = World(demo_manifest, SystemClock())
    sim = ZebraMqttSim(Population(world, {1: "aisle-1", 2: "aisle-2"}), "mqtt://127.0.0.1:1", "t")
    sim.disconnect_antenna(2)
    sim.dropped = 7
    sim.stop_radio()
    assert parse_heartbeat(sim.heartbeat()["data"]) == (False, {1: True, 2: False}, 7, 0)


@settings(max_examples=FUZZ, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_payloads(raw: bytes) -> None:
    with contextlib.suppress(FrameError):
        for obj in parse_payload(raw):
            with contextlib.suppress(FrameError):
                parse_tag(obj)
    parse_heartbeat(raw)


scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
values = st.recursive(scalars, lambda i: st.lists(i, max_size=3) | st.dictionaries(st.text(max_size=10), i,
                                                                                    max_size=3), max_leaves=10)


@settings(max_examples=FUZZ, deadline=None)
@given(values, values, values)
def test_fuzz_shapes(data: object, ts: object, port: object) -> None:
    for obj in ({"type": "SIMPLE", "timestamp": ts, "data": data},
                {"type": "INVENTORY", "timestamp": ts, "data": {"idHex": EPC, "antenna": port, "peakRssi": data}}):
        with contextlib.suppress(FrameError):
            parse_tag(obj)
    parse_heartbeat({"radio_control": {"antennas": data, "radioActivity": port}, "x": ts})


# ---- through mosquitto ----------------------------------------------------------------------------------------


def topics(base: str) -> dict[str, str]:
    return {"events_topic": f"{base}/mevents", "control_topic": f"{base}/ctrl", "response_topic": f"{base}/ctrl-res"}


def make(manifest: Manifest, mosquitto: Mosquitto, tmp_path: Path, *, antennas: dict[int, str] | None = None,
         control: bool = True, sim_kw: dict[str, object] | None = None, **cfg_kw: Any
         ) -> tuple[World, ZebraMqttSim, ZebraIotcDriver]:  # fmt: skip
    world = World(manifest, SystemClock())
    base = f"zebra/fx9600-{os.getpid()}-{time.monotonic_ns()}"
    t = topics(base)
    ants = antennas if antennas is not None else ANTS
    sim = ZebraMqttSim(Population(world, ants), mosquitto.url, f"{base}/data", cycle_s=0.05,
                       **({**t} if control else {}), **(sim_kw or {}))  # type: ignore[arg-type]
    section = {"id": "fx9600", "topic": f"{base}/data", "antennas": ants, "reply_timeout_s": 3,
               **(t if control else {}), **cfg_kw}  # fmt: skip
    cfg = ZebraIotcConfig.model_validate(section)
    drv = ZebraIotcDriver(cfg, DriverContext(manifest=manifest, clock=SystemClock(), data_dir=tmp_path,
                                             local_broker_url=mosquitto.url))  # fmt: skip
    return world, sim, drv


@contextlib.asynccontextmanager
async def running(sim: ZebraMqttSim) -> AsyncIterator[None]:
    """The simulated reader, connected (and subscribed to its control topic) before the gateway comes."""
    await sim.start()
    try:
        deadline = time.monotonic() + 10
        while not sim.online:
            assert time.monotonic() < deadline, "simulated reader not connected"
            await asyncio.sleep(0.02)
        yield
    finally:
        await sim.stop()


async def test_inventory_mode_batched_arrays(demo_manifest: Manifest, mosquitto: Mosquitto, tmp_path: Path) -> None:
    """The reader's INVENTORY mode (autostarted, no control topics), batching on: every read arrives."""
    world, sim, drv = make(demo_manifest, mosquitto, tmp_path, control=False, sim_kw={"batch": 5})
    stream = drv.stream()
    assert isinstance(await anext(stream), DeviceOnline)
    async with running(sim):
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as pub:
            await pub.publish(sim.topic, b'[{"type":"INVENTORY","data":{"idHex":"zz"}}]', qos=1)
        got = await collect(stream, lambda rs: ntags(rs) > 100 and any(isinstance(r, Malformed) for r in rs))
    reads = [r for r in got if isinstance(r, TagRead)]
    lanes = {e: t.zone for t in world.lanes.values() for e in t.epcs}
    assert all(r.epc in lanes and r.read_point in {"aisle-1", "aisle-2"} and r.rssi_dbm for r in reads)
    assert len([r for r in reads if r.read_point == lanes[r.epc]]) > len(reads) // 2
    assert [r.reason for r in got if isinstance(r, Malformed)] == ["idHex is not hex"]
    assert drv.counters["messages"] < drv.counters["tags"]  # several events per message


async def test_gateway_sets_mode_and_starts(demo_manifest: Manifest, mosquitto: Mosquitto, tmp_path: Path) -> None:
    _world, sim, drv = make(demo_manifest, mosquitto, tmp_path, sim_kw={"running": False, "mode": "SIMPLE"})
    async with running(sim):
        got = await collect(drv.stream(), lambda rs: ntags(rs) > 50)
        deadline = time.monotonic() + 10
        while sim.running:  # the gateway left: it stops the mode it started
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
    assert sim.commands == ["stop", "set_mode", "start", "stop"]
    assert sim.mode["type"] == "INVENTORY" and sim.mode["interval"] == {"unit": "seconds", "value": 1}
    assert set(sim.mode["tagMetaData"]) >= {"ANTENNA", "RSSI", "SEEN_COUNT"}
    assert sorted(sim.mode["antennas"]) == [1, 2]
    started = [r for r in got if isinstance(r, ReaderStatus) and r.reason.startswith("started")]
    assert started[0].inventorying and started[0].reason == "started mode INVENTORY"
    assert got.index(started[0]) < next(i for i, r in enumerate(got) if isinstance(r, TagRead))


@pytest.mark.parametrize(("sim_kw", "cfg_kw", "error"), [
    ({"running": False}, {}, "refused start: antenna check failed"),
    ({"running": True}, {"manage_mode": False, "mode": "INVENTORY"}, None),
    ({"mode": "SIMPLE"}, {"manage_mode": False, "mode": "INVENTORY"}, "runs operating mode 'SIMPLE'"),
    ({"mode": "SIMPLE"}, {"manage_mode": False, "mode": "SIMPLE"}, "reports a present tag only once"),
])
async def test_control_refusals_and_store_managed_mode(demo_manifest: Manifest, mosquitto: Mosquitto, tmp_path: Path,
                                                       sim_kw: dict[str, object], cfg_kw: dict[str, Any],
                                                       error: str | None) -> None:  # fmt: skip
    _world, sim, drv = make(demo_manifest, mosquitto, tmp_path, sim_kw=sim_kw, **cfg_kw)
    sim.refuse_start = "antenna check failed"
    async with running(sim):
        if error is None:
            assert ntags(await collect(drv.stream(), lambda rs: ntags(rs) > 0)) > 0
        else:
            with pytest.raises(DeviceError, match=error):
                await collect(drv.stream(), lambda rs: False)
    if cfg_kw.get("manage_mode") is False:
        assert sim.commands == ["get_mode"]  # verifies, does not touch the store's mode


async def test_no_answer_on_the_response_topic(demo_manifest: Manifest, mosquitto: Mosquitto, tmp_path: Path) -> None:
    _world, sim, drv = make(demo_manifest, mosquitto, tmp_path, reply_timeout_s=0.5)
    sim.control_topic = None  # the reader's control interface points elsewhere
    async with running(sim):
        with pytest.raises(DeviceError, match="no answer to stop"):
            await collect(drv.stream(), lambda rs: False)


async def test_simple_mode_present_tags_keep_coming(demo_manifest: Manifest, mosquitto: Mosquitto,
                                                    tmp_path: Path) -> None:  # fmt: skip
    """SIMPLE reports unique tags once; the gateway's reportFilter makes a present tag come again, so it does
    not expire (lost_timeout 3 s, report_interval 1 s)."""
    _world, sim, drv = make(demo_manifest, mosquitto, tmp_path, mode="SIMPLE", report_interval_s=1,
                            smoothing={"lost_timeout_s": 3, "zone_stale_s": 2})
    async with running(sim):
        got = await collect(drv.stream(), lambda rs: ntags(rs) > 0 and (rs[-1].time - next(
            r for r in rs if isinstance(r, TagRead)).time).total_seconds() > 3.5)
    reads = [r for r in got if isinstance(r, TagRead)]
    assert sim.mode["reportFilter"] == {"duration": 1, "type": "PER_ANTENNA"}
    by_tag: dict[tuple[str, int], list[float]] = {}
    for r in reads:
        by_tag.setdefault((r.epc, r.antenna), []).append(r.time.timestamp())
    repeated = [ts for ts in by_tag.values() if len(ts) >= 3]
    assert len(repeated) > len(by_tag) // 2  # most present tags reported again and again
    assert all(b - a < 3 for ts in repeated for a, b in itertools.pairwise(ts))


@pytest.mark.parametrize(("antennas", "zone", "point"), [({1: "aisle-1", 2: "aisle-1"}, None, "aisle-1"),
                                                         ({1: "aisle-1", 2: "aisle-2"}, None, None),
                                                         ({1: "aisle-1", 2: "aisle-2"}, "aisle-2", "aisle-2")])
async def test_no_antenna_metadata(demo_manifest: Manifest, mosquitto: Mosquitto, tmp_path: Path,
                                   antennas: dict[int, str], zone: str | None, point: str | None) -> None:  # fmt: skip
    """A store-run SIMPLE mode whose tagMetaData has no ANTENNA: the reader's one read point, else its zone,
    else no read point (counted)."""
    _world, sim, drv = make(demo_manifest, mosquitto, tmp_path, antennas=antennas, control=False,
                            sim_kw={"mode": "SIMPLE"}, zone=zone)  # fmt: skip
    sim.mode["reportFilter"] = {"duration": 0}
    async with running(sim):
        got = await collect(drv.stream(), lambda rs: ntags(rs) > 20)
    reads = [r for r in got if isinstance(r, TagRead)]
    assert all(r.antenna == 0 and r.read_point == point and r.rssi_dbm is None for r in reads)
    assert drv.counters["no_antenna"] == drv.counters["tags"] >= len(reads)


async def test_management_events(demo_manifest: Manifest, mosquitto: Mosquitto, tmp_path: Path) -> None:
    _world, sim, drv = make(demo_manifest, mosquitto, tmp_path, sim_kw={"heartbeat_s": 0.2})
    async with running(sim):
        stream = drv.stream()
        got = await collect_some(stream, lambda rs: ntags(rs) > 5 and any(
            isinstance(r, ReaderStatus) and r.inventorying and r.reason.startswith("heartbeat") for r in rs))
        first = [(a.antenna, a.connected) for a in got if isinstance(a, AntennaStatus)]
        assert first == [(1, True), (2, True)]
        sim.disconnect_antenna(2)
        sim.dropped = 3
        got = await collect_some(stream, lambda rs: any(isinstance(r, AntennaStatus) for r in rs) and any(
            isinstance(r, Malformed) for r in rs))
        ant = next(r for r in got if isinstance(r, AntennaStatus))
        assert (ant.antenna, ant.connected, ant.read_point) == (2, False, "aisle-2")
        # dated by the heartbeat's timestamp on the tags' scale: data and management are separate topics, so
        # a tag read from before the unplug may arrive after it and must not show the port connected again
        assert ant.seen_us is not None and abs(ant.seen_us - to_us(ant.time)) < 5_000_000, ant
        assert any(isinstance(r, Malformed) and r.reason == "reader dropped 3 data messages" for r in got)
        sim.stop_radio()  # someone stops inventory on the reader
        tail: list[Reading] = []
        with pytest.raises(DeviceError, match="radio is inactive"):
            await collect_some(stream, lambda rs: False, into=tail)
        assert isinstance(tail[-1], ReaderStatus) and not tail[-1].inventorying
        # the supervisor reconnects and the gateway starts its mode again
        assert ntags(await collect(drv.stream(), lambda rs: ntags(rs) > 0)) > 0
        assert sim.commands.count("start") == 2


async def test_heartbeat_timeout(demo_manifest: Manifest, mosquitto: Mosquitto, tmp_path: Path) -> None:
    _world, sim, drv = make(demo_manifest, mosquitto, tmp_path, heartbeat_timeout_s=0.6,
                            sim_kw={"heartbeat_s": 3600})  # fmt: skip
    async with running(sim):
        with pytest.raises(DeviceError, match="no heartbeat"):
            await collect(drv.stream(), lambda rs: False)


# ---- retention replay and the reader clock ------------------------------------------------------------------


def test_retention_defaults() -> None:
    """Retention: up to 150,000 stored events, replayed at 500/s."""
    assert (zebra_mqtt.RETENTION_MAX, zebra_mqtt.REPLAY_RATE) == (150_000, 500.0)


async def test_retention_replay_dated_by_event_time(demo_manifest: Manifest, mosquitto: Mosquitto,
                                                    tmp_path: Path) -> None:  # fmt: skip
    """The broker is away ~2 s: the reader keeps its events and replays them after; they arrive seconds late
    and must carry their own time (older than the lost-timeout: counted as replayed)."""
    _world, sim, drv = make(demo_manifest, mosquitto, tmp_path, control=False,
                            smoothing={"lost_timeout_s": 1.5, "zone_stale_s": 1.0})  # fmt: skip
    async with running(sim):
        got = await collect(drv.stream(), lambda rs: ntags(rs) > 20)
        assert drv.counters["replayed"] == 0
        assert all(abs(to_us(r.time) - r.seen_us) < 1_000_000 for r in got if isinstance(r, TagRead) and r.seen_us)
        mosquitto.kill()
        deadline = time.monotonic() + 10
        while sim.online or len(sim._retained) < 300:
            assert time.monotonic() < deadline, "the simulated reader did not retain"
            await asyncio.sleep(0.05)
        await asyncio.sleep(2.0)  # an outage longer than the lost-timeout
        await sim.stop()  # hold the reader's reconnect (its stored events stay) until the gateway is back
        mosquitto.start()
        stream = drv.stream()
        deadline = time.monotonic() + 10
        while True:  # the supervisor's reconnect
            try:
                assert isinstance(await anext(stream), DeviceOnline)
                break
            except DeviceError:
                assert time.monotonic() < deadline, "broker not back"
                await asyncio.sleep(0.1)
                stream = drv.stream()
        await sim.start()
        got = await collect(stream, lambda rs: sim.retained_sent > 0 and not sim._retained and any(
            isinstance(r, TagRead) and r.seen_us and to_us(r.time) - r.seen_us < 500_000 for r in rs[-5:]), timeout=40)
    replayed = [r for r in got if isinstance(r, TagRead) and r.seen_us and to_us(r.time) - r.seen_us > 1_500_000]
    assert len(replayed) >= 100  # the outage's reads, dated when they were read, not when they arrived
    # counted as they are decoded (the last message may hold reads `collect` did not take)
    assert len(replayed) <= drv.counters["replayed"] <= len(replayed) + 50


def first_beat(rs: list[Reading]) -> int:
    """Index of the first heartbeat's ReaderStatus (len(rs) when none yet)."""
    return next((i for i, r in enumerate(rs) if isinstance(r, ReaderStatus) and r.reason.startswith("heartbeat")),
                len(rs))


async def test_reader_clock_offset_from_heartbeats(demo_manifest: Manifest, mosquitto: Mosquitto,
                                                   tmp_path: Path) -> None:  # fmt: skip
    """The reader's clock is 10 minutes behind: heartbeats (live) give the offset, reads are dated right."""
    _world, sim, drv = make(demo_manifest, mosquitto, tmp_path, sim_kw={"heartbeat_s": 0.2})
    sim.clock_offset_s = -600.0
    async with running(sim):
        got = await collect(drv.stream(), lambda rs: ntags(rs[first_beat(rs):]) > 20)
    beat = first_beat(got)
    after = [r for r in got[beat:] if isinstance(r, TagRead)]
    assert after and all(r.seen_us and abs(to_us(r.time) - r.seen_us) < 1_000_000 for r in after)
    before = [r for r in got[:beat] if isinstance(r, TagRead)]  # before any live sample: not trusted as fresh
    assert len(before) <= drv.counters["replayed"]
    assert abs(drv.clock.offset_us - 600_000_000) < 1_000_000


async def test_demo_sim_part_reader_is_started_by_the_gateway(demo_manifest: Manifest, mosquitto: Mosquitto,
                                                              tmp_path: Path) -> None:  # fmt: skip
    """The demo's Zebra reader comes up stopped; the driver built from the demo's section starts it."""
    from firmware_sim.rfid.simpart import RfidSimPart

    part = RfidSimPart()
    sections = await part.start(World(demo_manifest, SystemClock()), tmp_path, mosquitto.url)
    try:
        section = next(s for s in sections if s["type"] == "zebra_iotc")
        assert part.zebra is not None and not part.zebra.running
        deadline = time.monotonic() + 10
        while not part.zebra.online:  # connected to the store's broker before the gateway (else: supervisor retry)
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        cfg = ZebraIotcConfig.model_validate(section)
        drv = ZebraIotcDriver(cfg, DriverContext(manifest=demo_manifest, clock=SystemClock(), data_dir=tmp_path))
        got = await collect(drv.stream(), lambda rs: ntags(rs) > 10, timeout=20)
        assert part.zebra.commands[:3] == ["stop", "set_mode", "start"] and part.zebra.mode["type"] == "INVENTORY"
        assert any(isinstance(r, ReaderStatus) and r.inventorying for r in got)
    finally:
        await part.stop()
