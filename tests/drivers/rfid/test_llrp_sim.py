"""The strict LLRP reader emulator itself, driven by a bare LLRP client over real TCP (not by our driver):
ROSpec states and triggers as LLRP 1.0.1 §10 describes them, report triggers, events only when enabled,
requests a reader refuses, a restart. sllurp (an independent decoder) reads the emulator's frames."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sllurp.llrp import LLRPMessage

from drivers.rfid import llrp_codec as c
from edge.clock import SystemClock
from edge.config import Manifest
from firmware_sim.rfid.llrp_reader import DISABLE_ROSPEC, LlrpReaderSim, RoState
from firmware_sim.rfid.population import Population
from firmware_sim.world import World

RID = 7


class Client:
    """A minimal LLRP client: send requests, collect everything the reader sends."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.got: list[c.Message] = []
        self.raw: list[bytes] = []
        self._ids = 0
        self._task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        dec = c.FrameDecoder()
        while data := await self.reader.read(65536):
            for m in dec.feed(data):
                self.got.append(m)
                self.raw.append(c.encode_message(m.type, m.msg_id, m.body, m.version))

    async def request(self, msg_type: int, body: bytes = b"") -> c.Status:
        self._ids += 1
        mid = self._ids
        self.writer.write(c.encode_message(msg_type, mid, body))
        await until(lambda: any(m.msg_id == mid and m.type != c.Msg.RO_ACCESS_REPORT for m in self.got))
        [resp] = [m for m in self.got if m.msg_id == mid and m.type != c.Msg.RO_ACCESS_REPORT]
        return c.decode_status(resp.body)

    def of(self, msg_type: int) -> list[c.Message]:
        return [m for m in self.got if m.type == msg_type]

    def rospec_events(self) -> list[int]:
        return [k for m in self.of(c.Msg.READER_EVENT_NOTIFICATION) for k, _ in c.decode_reader_event(m.body).rospec]

    def tags(self) -> list[list[c.RawTag]]:
        return [c.decode_ro_access_report(m.body) for m in self.of(c.Msg.RO_ACCESS_REPORT)]

    async def close(self) -> None:
        self._task.cancel()
        self.writer.close()


async def until(cond: Any, timeout: float = 10) -> None:
    async def poll() -> None:
        while not cond():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


@asynccontextmanager
async def session(manifest: Manifest, events: bool = True, **opts: Any) -> AsyncIterator[tuple[LlrpReaderSim, Client]]:
    sim = LlrpReaderSim(Population(World(manifest, SystemClock()), {1: "apparel", 2: "entrance"}, reliability=1.0),
                        round_ms=opts.pop("round_ms", 20), **opts)  # fmt: skip
    await sim.start()
    cl = Client(*await asyncio.open_connection("127.0.0.1", sim.port))
    try:
        await until(lambda: bool(cl.of(c.Msg.READER_EVENT_NOTIFICATION)))
        if events:
            assert (await cl.request(c.Msg.SET_READER_CONFIG, c.set_reader_config(0))).ok
        yield sim, cl
    finally:
        await cl.close()
        await sim.stop()


def spec(start: int, stop: tuple[int, int], ai_stop: bytes, report: tuple[int, int] = (2, 0),
         start_extra: bytes = b"", state: int = 0) -> bytes:  # fmt: skip
    """An ADD_ROSPEC body built field by field from LLRP 1.0.1 §10.2.1 (antenna 0 = all)."""
    boundary = c.tlv(c.P.RO_BOUNDARY_SPEC, c.tlv(c.P.ROSPEC_START_TRIGGER, bytes((start,)) + start_extra)
                     + c.tlv(c.P.ROSPEC_STOP_TRIGGER, struct.pack("!BI", *stop)))  # fmt: skip
    aispec = c.tlv(c.P.AISPEC, struct.pack("!HH", 1, 0) + c.tlv(c.P.AISPEC_STOP_TRIGGER, ai_stop)
                   + c.tlv(c.P.INVENTORY_PARAMETER_SPEC, struct.pack("!HB", 1, 1)))  # fmt: skip
    rep = c.tlv(c.P.RO_REPORT_SPEC, struct.pack("!BH", *report)
                + c.tlv(c.P.TAG_REPORT_CONTENT_SELECTOR, struct.pack("!H", c.SELECTOR_WE_USE)))  # fmt: skip
    return c.tlv(c.P.ROSPEC, struct.pack("!IBB", RID, 0, state) + boundary + aispec + rep)


DURATION_AI = struct.pack("!BI", 1, 60)
NULL_AI = struct.pack("!BI", 0, 0)


async def test_null_start_with_duration_aispec_runs_once_per_start_rospec(demo_manifest: Manifest) -> None:
    async with session(demo_manifest) as (sim, cl):
        assert (await cl.request(c.Msg.ADD_ROSPEC, spec(0, (0, 0), DURATION_AI, (1, 0)))).ok
        assert sim.rospecs[RID].state == RoState.DISABLED
        assert (await cl.request(c.Msg.ENABLE_ROSPEC, c.u32(RID))).ok
        await asyncio.sleep(0.2)
        assert sim.rospecs[RID].state == RoState.INACTIVE and cl.rospec_events() == []  # Null: waits for START
        assert (await cl.request(c.Msg.START_ROSPEC, c.u32(RID))).ok
        await until(lambda: cl.rospec_events() == [c.ROSPEC_STARTED, c.ROSPEC_ENDED])
        await asyncio.sleep(0.3)  # done after its one AISpec: back to Inactive, quiet
        assert cl.rospec_events() == [c.ROSPEC_STARTED, c.ROSPEC_ENDED]
        assert sim.rospecs[RID].state == RoState.INACTIVE
        assert len(cl.of(c.Msg.RO_ACCESS_REPORT)) == 1
        assert (await cl.request(c.Msg.START_ROSPEC, c.u32(RID))).ok  # runs again only when asked
        await until(lambda: cl.rospec_events().count(c.ROSPEC_ENDED) == 2)


async def test_immediate_start_runs_once_when_enabled(demo_manifest: Manifest) -> None:
    async with session(demo_manifest) as (sim, cl):
        assert (await cl.request(c.Msg.ADD_ROSPEC, spec(1, (0, 0), DURATION_AI))).ok
        assert (await cl.request(c.Msg.ENABLE_ROSPEC, c.u32(RID))).ok
        await until(lambda: cl.rospec_events() == [c.ROSPEC_STARTED, c.ROSPEC_ENDED])
        await asyncio.sleep(0.3)
        assert cl.rospec_events() == [c.ROSPEC_STARTED, c.ROSPEC_ENDED]
        assert sim.stats.rospec_starts == 1


async def test_periodic_start_with_duration_stop_runs_every_period(demo_manifest: Manifest) -> None:
    async with session(demo_manifest) as (sim, cl):
        body = spec(2, (1, 50), NULL_AI, start_extra=c.tlv(c.P.PERIODIC_TRIGGER_VALUE, struct.pack("!II", 0, 100)))
        assert (await cl.request(c.Msg.ADD_ROSPEC, body)).ok
        assert (await cl.request(c.Msg.ENABLE_ROSPEC, c.u32(RID))).ok
        await until(lambda: cl.rospec_events().count(c.ROSPEC_ENDED) >= 5)
        ev = cl.rospec_events()
        assert ev[: 2 * 5] == [c.ROSPEC_STARTED, c.ROSPEC_ENDED] * 5
        assert len(cl.of(c.Msg.RO_ACCESS_REPORT)) >= 4  # one per run (end of ROSpec), N = 0
        assert (await cl.request(DISABLE_ROSPEC, c.u32(RID))).ok
        n = len(cl.rospec_events())
        await asyncio.sleep(0.3)
        assert sim.rospecs[RID].state == RoState.DISABLED and len(cl.rospec_events()) == n


async def test_periodic_one_shot_after_its_offset_from_the_add(demo_manifest: Manifest) -> None:
    async with session(demo_manifest) as (sim, cl):
        body = spec(2, (1, 50), NULL_AI, start_extra=c.tlv(c.P.PERIODIC_TRIGGER_VALUE, struct.pack("!II", 300, 0)))
        added = asyncio.get_running_loop().time()
        assert (await cl.request(c.Msg.ADD_ROSPEC, body)).ok
        assert (await cl.request(c.Msg.ENABLE_ROSPEC, c.u32(RID))).ok
        await until(lambda: bool(cl.rospec_events()))
        assert asyncio.get_running_loop().time() - added >= 0.3  # not before Offset (a lower bound: load delays)
        await until(lambda: cl.rospec_events() == [c.ROSPEC_STARTED, c.ROSPEC_ENDED])
        await asyncio.sleep(0.3)
        assert sim.stats.rospec_starts == 1  # Period 0: once


async def test_periodic_start_time_that_finds_it_disabled_is_skipped(demo_manifest: Manifest) -> None:
    async with session(demo_manifest) as (sim, cl):
        body = spec(2, (1, 50), NULL_AI, start_extra=c.tlv(c.P.PERIODIC_TRIGGER_VALUE, struct.pack("!II", 0, 0)))
        assert (await cl.request(c.Msg.ADD_ROSPEC, body)).ok  # its one start time is now, while Disabled
        await asyncio.sleep(0.1)
        assert (await cl.request(c.Msg.ENABLE_ROSPEC, c.u32(RID))).ok
        await asyncio.sleep(0.3)
        assert sim.stats.rospec_starts == 0 and sim.rospecs[RID].state == RoState.INACTIVE


async def test_null_stops_run_until_stop_rospec_reporting_every_n_tags(demo_manifest: Manifest) -> None:
    async with session(demo_manifest) as (sim, cl):
        assert (await cl.request(c.Msg.ADD_ROSPEC, spec(0, (0, 0), NULL_AI, (1, 3)))).ok
        assert (await cl.request(c.Msg.ENABLE_ROSPEC, c.u32(RID))).ok
        assert (await cl.request(c.Msg.START_ROSPEC, c.u32(RID))).ok
        await until(lambda: len(cl.of(c.Msg.RO_ACCESS_REPORT)) >= 5)
        assert sim.rospecs[RID].state == RoState.ACTIVE
        assert cl.rospec_events() == [c.ROSPEC_STARTED]
        assert all(len(t) == 3 for t in cl.tags())  # every N = 3 TagReportData
        assert (await cl.request(c.Msg.STOP_ROSPEC, c.u32(RID))).ok
        await until(lambda: cl.rospec_events() == [c.ROSPEC_STARTED, c.ROSPEC_ENDED])


async def test_tag_observation_stop_after_n_tags(demo_manifest: Manifest) -> None:
    async with session(demo_manifest) as (_sim, cl):
        obs = c.tlv(c.P.TAG_OBSERVATION_TRIGGER, struct.pack("!BBHHHI", 0, 0, 2, 0, 0, 5000))  # 2 tags or 5 s
        assert (await cl.request(c.Msg.ADD_ROSPEC, spec(0, (0, 0), struct.pack("!BI", 3, 0) + obs, (1, 0)))).ok
        assert (await cl.request(c.Msg.ENABLE_ROSPEC, c.u32(RID))).ok
        assert (await cl.request(c.Msg.START_ROSPEC, c.u32(RID))).ok
        await until(lambda: cl.rospec_events() == [c.ROSPEC_STARTED, c.ROSPEC_ENDED], timeout=3)
        [report] = cl.tags()
        assert len({t[0] for t in report}) >= 2


async def test_events_only_when_enabled(demo_manifest: Manifest) -> None:
    async with session(demo_manifest, events=False) as (sim, cl):
        assert (await cl.request(c.Msg.ADD_ROSPEC, spec(1, (0, 0), DURATION_AI))).ok
        assert (await cl.request(c.Msg.ENABLE_ROSPEC, c.u32(RID))).ok
        sim.disconnect_antenna(1)
        await until(lambda: sim.stats.rospec_ends == 1)
        await asyncio.sleep(0.05)
        assert cl.rospec_events() == []
        assert [c.decode_reader_event(m.body).connection_status for m in cl.of(c.Msg.READER_EVENT_NOTIFICATION)] == [0]
        assert all(t[1] == 2 for r in cl.tags() for t in r)  # antenna 1 unplugged reads nothing


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (spec(0, (0, 0), DURATION_AI, state=2), 100),  # a new ROSpec must be Disabled
        (spec(2, (0, 0), DURATION_AI), 100),  # Periodic without PeriodicTriggerValue
        (spec(0, (1, 0), DURATION_AI), 100),  # Duration stop of 0 ms
        (spec(0, (0, 0), struct.pack("!BI", 3, 0)), 100),  # tag observation without its parameter
        (b"\x00\xb1\x00\x05\x00", 100),  # truncated
    ],
)
async def test_rospecs_a_reader_refuses(demo_manifest: Manifest, body: bytes, code: int) -> None:
    async with session(demo_manifest) as (sim, cl):
        st = await cl.request(c.Msg.ADD_ROSPEC, body)
        assert st.code == code and not sim.rospecs


async def test_state_errors(demo_manifest: Manifest) -> None:
    async with session(demo_manifest) as (_sim, cl):
        assert (await cl.request(c.Msg.START_ROSPEC, c.u32(RID))).code == 300  # no such ROSpec
        assert (await cl.request(c.Msg.ADD_ROSPEC, spec(0, (0, 0), DURATION_AI))).ok
        assert (await cl.request(c.Msg.ADD_ROSPEC, spec(0, (0, 0), DURATION_AI))).code == 300  # exists
        assert (await cl.request(c.Msg.START_ROSPEC, c.u32(RID))).code == 300  # Disabled
        assert (await cl.request(c.Msg.STOP_ROSPEC, c.u32(RID))).code == 300  # not Active


async def test_restart_closes_refuses_then_comes_back_unconfigured(demo_manifest: Manifest) -> None:
    async with session(demo_manifest) as (sim, cl):
        assert (await cl.request(c.Msg.ADD_ROSPEC, spec(1, (0, 0), DURATION_AI))).ok
        restart = asyncio.ensure_future(sim.restart(down_s=0.5))
        await until(lambda: any(c.decode_reader_event(m.body).connection_closed
                                for m in cl.of(c.Msg.READER_EVENT_NOTIFICATION)))  # fmt: skip
        await until(lambda: not sim.connected)
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", sim.port)
        await restart
        cl2 = Client(*await asyncio.open_connection("127.0.0.1", sim.port))
        try:
            await until(lambda: bool(cl2.of(c.Msg.READER_EVENT_NOTIFICATION)))
            assert (await cl2.request(c.Msg.ENABLE_ROSPEC, c.u32(RID))).code == 300  # its ROSpecs are gone
            assert sim.events == {}
        finally:
            await cl2.close()


async def test_sllurp_reads_the_emulators_frames(demo_manifest: Manifest) -> None:
    async with session(demo_manifest, omit_unchanged=True) as (sim, cl):
        assert (await cl.request(c.Msg.ADD_ROSPEC, spec(1, (0, 0), DURATION_AI))).ok
        assert (await cl.request(c.Msg.ENABLE_ROSPEC, c.u32(RID))).ok
        await until(lambda: sim.stats.rospec_ends == 1 and bool(cl.of(c.Msg.RO_ACCESS_REPORT)))
        await asyncio.sleep(0.05)
        ours = [t for r in cl.tags() for t in r]
        theirs: list[dict[str, Any]] = []
        names = []
        for raw in cl.raw:
            msg = LLRPMessage(msgbytes=raw)
            assert msg.msgdict is not None
            name, body = next(iter(msg.msgdict.items()))
            names.append(name)
            if name == "RO_ACCESS_REPORT":
                theirs += body["TagReportData"]
        assert [t[0] for t in ours] == [t["EPC-96"].decode().upper() for t in theirs]
        assert len(ours) == sim.stats.tags_sent
        assert "AntennaID" in theirs[0] and any("AntennaID" not in t for t in theirs)  # omitted when unchanged
        assert names.count("READER_EVENT_NOTIFICATION") == 3  # connection attempt, ROSpec start, ROSpec end
