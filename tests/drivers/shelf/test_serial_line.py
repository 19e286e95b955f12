"""Shelf line protocol codec (table + fuzz) and the serial driver on real pseudo-terminals."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.shelf.config import ShelfSerialConfig
from drivers.shelf.processor import ShelfProcessor
from drivers.shelf.reads import WeightFault, WeightSample
from drivers.shelf.serial_line import (
    FaultLine,
    HelloLine,
    ShelfSerialDriver,
    WeightLine,
    decode,
    encode,
    encode_weight,
)
from edge.clock import SystemClock
from edge.config import Manifest
from edge.driver import DeviceOnline, DriverContext, Malformed, Reading
from edge.errors import DeviceError, FrameError
from edge.processing import StockUpdate
from firmware_sim.shelf import SerialShelfSim, lane_sections, lanes_for
from firmware_sim.world import World

FUZZ = 10_000 if os.environ.get("EDGE_FUZZ") == "long" else 200

# Lines as docs/shelf-protocol.md defines them; checksums = XOR of the body bytes, computed independently
# with functools.reduce.
GOOD = [
    (b"W,17,1,4421.5,S*2B\r\n", WeightLine(17, "1", 4421.5, True)),
    (b"W,0,2,-3.0,U*00\r\n", WeightLine(0, "2", -3.0, False)),
    (b"F,1,adc*11\r\n", FaultLine("1", "adc")),
    (b"F,*,overload*64", FaultLine("*", "overload")),
    (b"H,fw-1.0,4,80*4B\r\n", HelloLine("fw-1.0", 4, 80)),
]
BAD = [
    (b"W,17,1,4421.5,S*2A\r\n", "bad checksum"),
    (b"W,17,1,4421.5,S\r\n", "no checksum"),
    (b"W,17,1,4421.5,S*ZZ\r\n", "checksum is not hex"),
    (b"", "no checksum"),
    (b"\xff\xfe*00", "bad checksum"),
]


@pytest.mark.parametrize(("raw", "want"), GOOD)
def test_decode_spec_lines(raw: bytes, want: object) -> None:
    assert decode(raw) == want


@pytest.mark.parametrize(("raw", "reason"), BAD)
def test_decode_rejects(raw: bytes, reason: str) -> None:
    with pytest.raises(FrameError) as err:
        decode(raw)
    assert err.value.reason == reason


def test_checksum_of_spec_example() -> None:
    assert encode("W,17,1,4421.5,S") == b"W,17,1,4421.5,S*2B\r\n"
    assert encode_weight(17, "1", 4421.5, True) == b"W,17,1,4421.5,S*2B\r\n"
    nan = decode(encode_weight(3, "1", math.nan, True))
    assert isinstance(nan, WeightLine)
    assert math.isnan(nan.grams)


@settings(max_examples=FUZZ)
@given(st.binary(max_size=80))
def test_fuzz_decode_never_crashes(raw: bytes) -> None:
    with contextlib.suppress(FrameError):
        decode(raw)


@settings(max_examples=FUZZ)
@given(
    st.integers(0, 10**6),
    st.from_regex(r"[A-Za-z0-9]{1,8}", fullmatch=True),
    st.floats(-1e6, 1e6, allow_nan=False),
    st.booleans(),
)
def test_fuzz_weight_roundtrip(seq: int, lane: str, grams: float, stable: bool) -> None:
    line = decode(encode_weight(seq, lane, grams, stable))
    assert line == WeightLine(seq % 65536, lane, round(grams, 1) + 0.0, stable) or (
        isinstance(line, WeightLine) and abs(line.grams - grams) <= 0.05
    )


# ---- the driver on a pty ----------------------------------------------------------------------


def _driver(manifest: Manifest, sim: SerialShelfSim, tmp_path: Path) -> ShelfSerialDriver:
    cfg = ShelfSerialConfig(id="shelf-ser", port=str(sim.port.link), lanes=lane_sections(sim.lanes))
    return ShelfSerialDriver(cfg, DriverContext(manifest=manifest, clock=SystemClock(), data_dir=tmp_path))


async def _collect(it: AsyncIterator[Reading], n: int, timeout: float = 5.0) -> list[Reading]:
    out: list[Reading] = []

    async def run() -> None:
        async for r in it:
            out.append(r)
            if len(out) >= n:
                return

    await asyncio.wait_for(run(), timeout)
    return out


async def test_stream_counts_and_picks(demo_manifest: Manifest, tmp_path: Path) -> None:
    world = World(demo_manifest, SystemClock())
    sim = SerialShelfSim(world, tmp_path / "shelf-a1.tty", lanes_for(world, "shelf-a1"), hz=40)
    sim.start()
    drv = _driver(demo_manifest, sim, tmp_path)
    proc = ShelfProcessor(demo_manifest.model_copy(update={"devices": [drv.config]}), SystemClock())
    counts: dict[str, int] = {}
    picked = False
    stream = drv.stream()
    try:
        async with asyncio.timeout(10):
            async for r in stream:
                for o in proc.feed(r, r.time):
                    if isinstance(o, StockUpdate) and o.count is not None:
                        counts[o.sku] = o.count
                if not picked and len(counts) == 2:
                    assert counts == {
                        "cola-330": world.count("shelf-a1", "cola-330"),
                        "water-500": world.count("shelf-a1", "water-500"),
                    }
                    world.pick("shelf-a1", "l1", 2)
                    picked = True
                if picked and counts["cola-330"] == world.count("shelf-a1", "cola-330"):
                    break
    finally:
        await stream.aclose()
        await sim.stop()
    assert counts["cola-330"] == world.count("shelf-a1", "cola-330")


async def test_garbage_and_bad_checksums(demo_manifest: Manifest, tmp_path: Path) -> None:
    world = World(demo_manifest, SystemClock())
    sim = SerialShelfSim(world, tmp_path / "s.tty", lanes_for(world, "shelf-a1"), hz=50)
    drv = _driver(demo_manifest, sim, tmp_path)
    stream = drv.stream()
    try:
        first = await _collect(stream, 1)
        assert isinstance(first[0], DeviceOnline)
        sim.port.write(b"\x00\x13garbage\xff\r\n" + b"x" * 2000 + b"\n")
        sim.set_fault("crc", "1")
        sim.port.write(sim.frame())
        sim.set_fault(None)
        sim.port.write(sim.frame())
        got: list[Reading] = []
        while sum(isinstance(r, WeightSample) for r in got) < 3:  # lane 2 of frame 1, both lanes of frame 2
            got += await _collect(stream, 1)
    finally:
        await stream.aclose()
        await sim.stop()
    kinds = [(type(r).__name__, getattr(r, "reason", getattr(r, "code", ""))) for r in got]
    assert kinds[0] == ("Malformed", "no checksum")  # the garbage line
    assert ("Malformed", "line too long") in kinds
    assert kinds.count(("Malformed", "bad checksum")) == 1
    assert kinds.count(("WeightFault", "crc")) == 2  # a bad checksum cannot say which lane: every lane
    assert [r.lane for r in got if isinstance(r, WeightSample)] == ["l2", "l1", "l2"]
    assert drv.firmware == "sim-1.2"  # from the hello line of the first frame


async def test_unplug_raises_and_replug_works(demo_manifest: Manifest, tmp_path: Path) -> None:
    world = World(demo_manifest, SystemClock())
    sim = SerialShelfSim(world, tmp_path / "s.tty", lanes_for(world, "shelf-a1"), hz=50)
    sim.start()
    drv = _driver(demo_manifest, sim, tmp_path)
    stream = drv.stream()
    got = await _collect(stream, 3)
    assert isinstance(got[0], DeviceOnline)
    sim.port.unplug()
    with pytest.raises((DeviceError, OSError)):
        await _collect(stream, 1000)
    # while the port is gone, opening fails (the supervisor retries with backoff)
    with pytest.raises(OSError):
        await _collect(drv.stream(), 1)
    sim.port.replug()
    stream = drv.stream()
    try:
        got = await _collect(stream, 4)
    finally:
        await stream.aclose()
        await sim.stop()
    assert isinstance(got[0], DeviceOnline)
    assert any(isinstance(r, WeightSample) for r in got)


async def test_fault_lines_and_nan(demo_manifest: Manifest, tmp_path: Path) -> None:
    world = World(demo_manifest, SystemClock())
    sim = SerialShelfSim(world, tmp_path / "s.tty", lanes_for(world, "shelf-a1"), hz=50)
    drv = _driver(demo_manifest, sim, tmp_path)
    stream = drv.stream()
    try:
        await _collect(stream, 1)
        sim.set_fault("adc", "2")
        sim.set_fault("nan", "1")
        sim.port.write(sim.frame())
        got = await _collect(stream, 2)
    finally:
        await stream.aclose()
        await sim.stop()
    by_lane = {getattr(r, "lane", ""): r for r in got}
    assert isinstance(by_lane["l2"], WeightFault)
    assert by_lane["l2"].code == "adc"
    assert isinstance(by_lane["l1"], WeightSample)
    assert math.isnan(by_lane["l1"].grams)
    assert not any(isinstance(r, Malformed) for r in got)
