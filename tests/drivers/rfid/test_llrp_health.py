"""LLRP driver vs the strict reader emulator over real TCP: reader health (ROSpec beats, a silent RF
section, antenna events, reader exceptions), efficient reporting with split frames, frames that never
complete, and a reader restart under the real supervisor."""

from __future__ import annotations

import asyncio
import random
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from drivers.rfid import llrp_codec as c
from drivers.rfid.config import LlrpConfig
from drivers.rfid.llrp import LlrpDriver
from drivers.rfid.reads import AntennaStatus, ReaderStatus, TagRead
from edge.clock import SystemClock
from edge.config import Manifest
from edge.driver import DeviceOffline, DeviceOnline, DriverContext, Reading
from edge.errors import DeviceError
from edge.metrics import Metrics
from edge.supervisor import Backoff, Supervisor
from firmware_sim.rfid.llrp_reader import LlrpReaderSim, RoState
from firmware_sim.rfid.population import Population
from firmware_sim.world import World
from tests.drivers.rfid.frames import collect

ANTENNAS = {1: "apparel", 2: "entrance"}


@asynccontextmanager
async def reader(manifest: Manifest, **opts: Any) -> AsyncIterator[LlrpReaderSim]:
    sim = LlrpReaderSim(Population(World(manifest, SystemClock()), ANTENNAS, reliability=1.0), round_ms=50, **opts)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


def driver(manifest: Manifest, port: int, tmp_path: Path, **opts: Any) -> LlrpDriver:
    fields: dict[str, Any] = {"cycle_ms": 100, "keepalive_s": 0.2, "reply_timeout_s": 3, "inventory_timeout_s": 1.0}
    fields.update(opts)
    cfg = LlrpConfig(id="rfid-1", host="127.0.0.1", port=port, antennas=ANTENNAS, **fields)
    return LlrpDriver(cfg, DriverContext(manifest=manifest, clock=SystemClock(), data_dir=tmp_path))


def statuses(rs: list[Reading]) -> list[tuple[bool, str]]:
    return [(r.inventorying, r.reason) for r in rs if isinstance(r, ReaderStatus)]


async def test_every_rospec_start_is_a_liveness_beat(demo_manifest: Manifest, tmp_path: Path) -> None:
    async with reader(demo_manifest) as sim:
        got = await collect(driver(demo_manifest, sim.port, tmp_path).stream(),
                            lambda rs: statuses(rs).count((True, "ROSpec started")) >= 5)  # fmt: skip
        assert isinstance(got[0], DeviceOnline)
        assert all(ok for ok, _ in statuses(got))
        assert sim.stats.rospec_starts >= 5
        assert sim.stats.requests.count("START_ROSPEC") == 1  # the first run; then the periodic trigger


async def test_omitted_fields_and_split_frames_every_read_decoded(demo_manifest: Manifest, tmp_path: Path) -> None:
    async with reader(demo_manifest, omit_unchanged=True, split_frames=True) as sim:
        drv = driver(demo_manifest, sim.port, tmp_path)
        got = await collect(drv.stream(), lambda rs: sim.stats.reports >= 6 and sum(
            1 for r in rs if isinstance(r, TagRead)) == sim.stats.tags_sent)  # fmt: skip
        reads = [r for r in got if isinstance(r, TagRead)]
        assert len(reads) == sim.stats.tags_sent
        # a field left out because it did not change is the previous one, never "absent"
        assert all(r.antenna in ANTENNAS and r.read_point == ANTENNAS[r.antenna] for r in reads)
        assert all(r.rssi_dbm is not None and r.seen_us is not None for r in reads)
        assert drv.counters["malformed"] == 0


@pytest.mark.parametrize(
    ("announced", "why"),
    [(1_000_000, "announcing 1000000 bytes had only"), (4_000_000, "length 4000000")],
)
async def test_frame_that_never_completes_is_a_protocol_error(
    demo_manifest: Manifest, tmp_path: Path, announced: int, why: str
) -> None:
    async with reader(demo_manifest) as sim:
        drv = driver(demo_manifest, sim.port, tmp_path, frame_timeout_s=1.0)
        stream = drv.stream()
        assert isinstance(await anext(stream), DeviceOnline)
        # a well-formed header announcing a long RO_ACCESS_REPORT; the reader's ordinary traffic (keepalives,
        # reports, events) keeps flowing after it, and must not keep the incomplete frame alive
        sim.inject(struct.pack("!HII", (1 << 10) | c.Msg.RO_ACCESS_REPORT, announced, 77))
        with pytest.raises(DeviceError, match=why):
            await collect(stream, lambda rs: False, timeout=20)
        assert drv.counters["protocol_errors"] == 1
        got = await collect(drv.stream(), lambda rs: any(isinstance(r, TagRead) for r in rs))  # reconnects
        assert isinstance(got[0], DeviceOnline)


async def test_silent_rf_section_says_not_inventorying_then_recovers(
    demo_manifest: Manifest, tmp_path: Path
) -> None:
    async with reader(demo_manifest) as sim:
        drv = driver(demo_manifest, sim.port, tmp_path, rospec_restarts=50)
        stream = drv.stream()
        got = [await anext(stream)]
        silence: asyncio.Task[None] | None = None

        def until(rs: list[Reading]) -> bool:
            nonlocal silence
            st = statuses(rs)
            if silence is None and (True, "ROSpec started") in st:
                silence = asyncio.ensure_future(sim.go_silent(2.5))
            return bool(st) and st[-1][0] is True and (False, "no inventory cycle for 1s") in st

        got += await collect(stream, until, timeout=20)
        st = statuses(got)
        down = st.index((False, "no inventory cycle for 1s"))
        assert st[down + 1 :] and st[down + 1][0] is True  # back once the RF section is
        assert drv.counters["rospec_restarts"] >= 1
        assert sim.stats.keepalive_acks >= 1
        if silence is not None:
            await silence


async def test_rospec_disabled_behind_our_back_is_reinstalled(demo_manifest: Manifest, tmp_path: Path) -> None:
    async with reader(demo_manifest) as sim:
        drv = driver(demo_manifest, sim.port, tmp_path)
        disabled = False

        def until(rs: list[Reading]) -> bool:
            nonlocal disabled
            if not disabled and statuses(rs):
                sim.disable_rospecs()  # another client / the reader's web UI disabled it
                disabled = True
            return statuses(rs)[-1:] == [(True, "ROSpec started")] and any(not ok for ok, _ in statuses(rs))

        await collect(drv.stream(), until, timeout=20)
        assert drv.counters["rospec_restarts"] >= 1
        assert sim.stats.requests.count("ADD_ROSPEC") >= 2


async def test_preempted_rospec_is_not_inventorying_until_it_runs_again(
    demo_manifest: Manifest, tmp_path: Path
) -> None:
    async with reader(demo_manifest) as sim:
        drv = driver(demo_manifest, sim.port, tmp_path)
        preempted = False

        def until(rs: list[Reading]) -> bool:
            nonlocal preempted
            st = statuses(rs)
            if not preempted and st and sim.rospecs[drv.config.rospec_id].state == RoState.ACTIVE:
                sim.preempt()
                preempted = True
            return (False, "ROSpec preempted by another ROSpec") in st and st[-1] == (True, "ROSpec started")

        await asyncio.wait_for(collect(drv.stream(), until), 20)
        assert drv.counters["rospec_restarts"] == 0  # the periodic trigger ran it again by itself


async def test_antenna_events_and_reader_exceptions(demo_manifest: Manifest, tmp_path: Path) -> None:
    async with reader(demo_manifest) as sim:
        drv = driver(demo_manifest, sim.port, tmp_path)
        stream = drv.stream()
        assert isinstance(await anext(stream), DeviceOnline)
        sim.disconnect_antenna(2)
        sim.reader_exception("RF module overheated")
        got = await collect(stream, lambda rs: any(isinstance(r, AntennaStatus) for r in rs)
                            and drv.counters["reader_exceptions"] > 0)  # fmt: skip
        [ant] = [r for r in got if isinstance(r, AntennaStatus)]
        assert (ant.antenna, ant.connected, ant.read_point) == (2, False, "entrance")
        assert drv.counters["reader_exceptions"] == 1
        stream = drv.stream()
        assert isinstance(await anext(stream), DeviceOnline)
        sim.connect_antenna(2)
        got = await collect(stream, lambda rs: any(isinstance(r, AntennaStatus) for r in rs))
        [ant] = [r for r in got if isinstance(r, AntennaStatus)]
        assert (ant.antenna, ant.connected) == (2, True)


@dataclass(frozen=True, slots=True)
class RecordingBackoff(Backoff):
    """The supervisor's own backoff, recording which attempt each restart was."""

    attempts: list[int] | None = None

    def delay(self, attempt: int) -> float:
        assert self.attempts is not None
        self.attempts.append(attempt)
        return Backoff.delay(self, attempt)


async def test_reader_restarts_gateway_back_with_the_first_retry(demo_manifest: Manifest, tmp_path: Path) -> None:
    async with reader(demo_manifest) as sim:
        drv = driver(demo_manifest, sim.port, tmp_path)
        got: list[Reading] = []

        async def sink(r: Reading) -> None:
            got.append(r)

        attempts: list[int] = []
        sup = Supervisor([(drv, "llrp")], sink=sink, on_status=lambda *_: None, clock=SystemClock(),
                         metrics=Metrics(), backoff=RecordingBackoff(attempts=attempts))  # fmt: skip
        sup.start()
        try:
            mark = 0
            for n in range(1, 5):  # three reader reboots in a row, well within a minute
                await wait_for(lambda n=n, mark=mark: sim.stats.connections == n
                               and any(isinstance(r, TagRead) for r in got[mark:]))  # fmt: skip
                if n < 4:
                    mark = len(got)
                    await sim.restart(down_s=0.0)
        finally:
            await sup.stop()
        offline = [r for r in got if isinstance(r, DeviceOffline)]
        assert len(offline) == 3
        assert all("ConnectionCloseEvent" in r.reason for r in offline)
        # each reboot closed a connection that had delivered reads: every retry is the first one, whose delay
        # is at most Backoff.initial (0.5 s <= 1 s), never a grown backoff
        assert attempts == [1, 1, 1]
        assert Backoff().initial <= 1.0
        assert statuses([r for r in got if isinstance(r, ReaderStatus)]).count(
            (False, "the reader is closing the connection")) == 3


async def wait_for(cond: Any, timeout: float = 20) -> None:
    async def poll() -> None:
        while not cond():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


async def test_garbage_inside_well_framed_messages_never_stops_the_driver(
    demo_manifest: Manifest, tmp_path: Path
) -> None:
    rng = random.Random(14)
    async with reader(demo_manifest) as sim:
        drv = driver(demo_manifest, sim.port, tmp_path)
        stream = drv.stream()
        assert isinstance(await anext(stream), DeviceOnline)
        kinds = [c.Msg.RO_ACCESS_REPORT, c.Msg.READER_EVENT_NOTIFICATION, c.Msg.ERROR_MESSAGE, 999]
        junk = []
        for i in range(400):
            body = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 60)))
            if i % 3 == 0:  # plausible structure with random contents
                inner = c.tlv(rng.choice([240, 246, 249, 252, 255, 256, 287, 1023]), body)
                body = c.tlv(rng.choice([240, 246]), inner)
            junk.append(c.encode_message(rng.choice(kinds), 50_000 + i, body))
        blob = b"".join(junk)
        for i in range(0, len(blob), 997):  # arbitrary TCP segmentation
            sim.inject(blob[i : i + 997])
        mark = sim.stats.tags_sent
        got = await collect(stream, lambda rs: sim.stats.tags_sent > mark and any(
            isinstance(r, TagRead) and r.epc in sim_epcs(sim) for r in rs[-50:]))  # fmt: skip
        assert drv.counters["malformed"] > 0
        assert drv.counters["protocol_errors"] == 0
        assert any(isinstance(r, TagRead) for r in got)


def sim_epcs(sim: LlrpReaderSim) -> set[str]:
    return {e for lane in sim.population.world.lanes.values() for e in lane.epcs}
