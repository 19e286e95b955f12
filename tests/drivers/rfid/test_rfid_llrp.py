"""LLRP driver against the LLRP reader emulator over real TCP, then through the processor."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from drivers.rfid import llrp_codec as c
from drivers.rfid.config import LlrpConfig, SmoothingConfig
from drivers.rfid.llrp import LlrpDriver
from drivers.rfid.processor import RfidProcessor
from drivers.rfid.reads import TagRead
from edge.clock import SystemClock
from edge.config import Manifest
from edge.driver import DeviceOnline, DriverContext, Malformed, Reading
from edge.errors import DeviceError
from edge.processing import Output, StockUpdate
from firmware_sim.rfid.llrp_reader import LlrpReaderSim
from firmware_sim.rfid.population import Population
from firmware_sim.world import World
from tests.drivers.rfid.frames import collect

from .frames import frames

ANTENNAS = {1: "apparel", 2: "entrance"}


async def sim_for(manifest: Manifest) -> tuple[World, LlrpReaderSim]:
    world = World(manifest, SystemClock())
    sim = LlrpReaderSim(Population(world, ANTENNAS))
    await sim.start()
    return world, sim


def driver(manifest: Manifest, port: int, tmp_path: Path, dev: str = "rfid-1") -> LlrpDriver:
    cfg = LlrpConfig(id=dev, host="127.0.0.1", port=port, antennas=ANTENNAS, cycle_ms=50, keepalive_s=0.1,
                     reply_timeout_s=2, smoothing=SmoothingConfig(present_after_reads=2))  # fmt: skip
    return LlrpDriver(cfg, DriverContext(manifest=manifest, clock=SystemClock(), data_dir=tmp_path))




def tags(rs: list[Reading]) -> list[TagRead]:
    return [r for r in rs if isinstance(r, TagRead)]


async def test_end_to_end_reads_keepalives_polite_close_and_stock(demo_manifest: Manifest, tmp_path: Path) -> None:
    world, sim = await sim_for(demo_manifest)
    try:
        drv = driver(demo_manifest, sim.port, tmp_path)
        got = await collect(drv.stream(), lambda rs: sim.stats.reports >= 25 and sim.stats.keepalive_acks >= 2)
        assert isinstance(got[0], DeviceOnline)
        assert "fw 7.5.0-sim" in got[0].detail
        reads = tags(got)
        assert {r.read_point for r in reads} <= {"apparel", "entrance"}
        assert all(r.epc.isupper() and r.rssi_dbm is not None and r.seen_us and r.count >= 1 for r in reads)
        assert sim.stats.requests[:6] == ["GET_READER_CAPABILITIES", "SET_READER_CONFIG", "DELETE_ROSPEC",
                                          "ADD_ROSPEC", "ENABLE_ROSPEC", "START_ROSPEC"]
        for _ in range(50):  # the polite goodbye was sent from the generator's finally
            if not sim.connected:
                break
            await asyncio.sleep(0.02)
        assert sim.stats.requests[-3:] == ["STOP_ROSPEC", "DELETE_ROSPEC", "CLOSE_CONNECTION"]
        assert not sim.connected

        # the readings through the processor: the apparel rack's counts match the truth
        proc = RfidProcessor(demo_manifest.model_copy(update={"devices": [drv.config]}), SystemClock())
        outs: list[Output] = []
        for r in reads:
            outs += proc.feed(r, r.time)
        outs += proc.tick(reads[-1].time)
        stock = {(s.shelf, s.sku): s.count for s in outs if isinstance(s, StockUpdate)}
        assert stock == {("rack-c1", "tee-m"): world.count("rack-c1", "tee-m"),
                         ("rack-c1", "tee-l"): world.count("rack-c1", "tee-l")}
    finally:
        await sim.stop()


async def test_second_client_is_refused_with_a_clear_reason(demo_manifest: Manifest, tmp_path: Path) -> None:
    _, sim = await sim_for(demo_manifest)
    try:
        first = driver(demo_manifest, sim.port, tmp_path).stream()
        assert isinstance(await anext(first), DeviceOnline)
        with pytest.raises(DeviceError, match="another client holds"):
            await collect(driver(demo_manifest, sim.port, tmp_path, "rfid-2").stream(), lambda rs: False)
        assert sim.stats.refused == 1
        await first.aclose()  # type: ignore[attr-defined]
    finally:
        await sim.stop()


async def test_malformed_report_is_counted_and_skipped(demo_manifest: Manifest, tmp_path: Path) -> None:
    _, sim = await sim_for(demo_manifest)
    try:
        drv = driver(demo_manifest, sim.port, tmp_path)
        stream = drv.stream()
        assert isinstance(await anext(stream), DeviceOnline)
        bad = c.encode_message(c.Msg.RO_ACCESS_REPORT, 9, bytes.fromhex("00F0002A8D3074"))  # TLV overruns
        ka = frames()["keepalive"]
        good = frames()["ro_access_report_epc96"]
        sim.inject(ka[:4])  # a keepalive split around the bad frame, then a good report in one write
        sim.inject(ka[4:] + bad + good)
        got = await collect(stream, lambda rs: any(isinstance(r, TagRead) and r.epc == good[15:27].hex().upper()
                                                   for r in rs))  # fmt: skip
        [mal] = [r for r in got if isinstance(r, Malformed)]
        assert "bad length" in mal.reason
        assert drv.counters["malformed"] == 1
        assert drv.counters["keepalives"] >= 1
    finally:
        await sim.stop()


async def test_bad_header_and_reset_mid_frame_raise_then_reconnect(demo_manifest: Manifest, tmp_path: Path) -> None:
    _, sim = await sim_for(demo_manifest)
    try:
        drv = driver(demo_manifest, sim.port, tmp_path)
        stream = drv.stream()
        assert isinstance(await anext(stream), DeviceOnline)
        sim.inject(b"\x1c\x3d\x00\x00\x00\x01\x00\x00\x00\x01")  # version 7, length 1: sync is lost
        with pytest.raises(DeviceError, match="lost sync"):
            await collect(stream, lambda rs: False)

        stream = drv.stream()  # a fresh stream() reconnects
        assert isinstance(await anext(stream), DeviceOnline)
        await asyncio.sleep(0.1)
        sim.drop_client(partial=frames()["ro_access_report_epc96"][:20])
        with pytest.raises(DeviceError, match="closed the connection"):
            await collect(stream, lambda rs: False)

        got = await collect(drv.stream(), lambda rs: len(tags(rs)) > 0)
        assert isinstance(got[0], DeviceOnline)
        assert sim.stats.connections == 3
    finally:
        await sim.stop()


async def test_nothing_listening_raises(demo_manifest: Manifest, tmp_path: Path) -> None:
    _, sim = await sim_for(demo_manifest)
    port = sim.port
    await sim.stop()
    with pytest.raises(OSError):
        await collect(driver(demo_manifest, port, tmp_path).stream(), lambda rs: False)


async def test_reader_clock_offset_is_kept_as_information_only(demo_manifest: Manifest, tmp_path: Path) -> None:
    _, sim = await sim_for(demo_manifest)
    sim.clock_offset_us = -10 * 365 * 86400 * 1_000_000  # reader RTC ten years behind
    try:
        got = tags(await collect(driver(demo_manifest, sim.port, tmp_path).stream(), lambda rs: len(tags(rs)) > 5))
        for r in got:
            assert r.seen_us is not None
            assert abs(r.time.timestamp() * 1e6 - r.seen_us) > 9 * 365 * 86400 * 1e6
    finally:
        await sim.stop()
