"""shelf_modbus through a real pymodbus RTU server on bridged pseudo-terminals (firmware_sim.shelf)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.shelf.config import ShelfModbusConfig
from drivers.shelf.modbus import ShelfModbusDriver, decode_weight, encode_weight
from drivers.shelf.processor import ShelfProcessor
from drivers.shelf.reads import WeightFault, WeightSample
from edge.clock import SystemClock
from edge.config import Manifest
from edge.driver import DeviceOnline, DriverContext, Reading
from edge.errors import DeviceError, FrameError
from edge.processing import StockUpdate
from firmware_sim.shelf import ModbusShelfSim, lane_sections, lanes_for
from firmware_sim.world import World

FUZZ = 10_000 if os.environ.get("EDGE_FUZZ") == "long" else 200

# (registers, word order, signed, scale, grams): vendor examples of a 32-bit weight in two registers
VECTORS = [
    ([0x0000, 0x3039], "big", True, 1.0, 12345.0),
    ([0x3039, 0x0000], "little", True, 1.0, 12345.0),
    ([0xFFFF, 0xFFFE], "big", True, 0.1, -0.2),
    ([0xFFFF, 0xFFFE], "big", False, 1.0, 4294967294.0),
    ([0x0001, 0x86A0], "big", True, 0.01, 1000.0),
]


@pytest.mark.parametrize(("regs", "order", "signed", "scale", "grams"), VECTORS)
def test_decode_vectors(regs: list[int], order: str, signed: bool, scale: float, grams: float) -> None:
    assert decode_weight(regs, order, signed, scale) == pytest.approx(grams)


@settings(max_examples=FUZZ)
@given(st.lists(st.integers(-(2**20), 2**20), min_size=0, max_size=3), st.sampled_from(["big", "little"]))
def test_fuzz_decode_registers(regs: list[int], order: str) -> None:
    try:
        g = decode_weight(regs, order)
    except FrameError:
        assert len(regs) != 2 or any(not 0 <= r <= 0xFFFF for r in regs)
    else:
        assert encode_weight(g, order) == regs


@settings(max_examples=FUZZ)
@given(st.integers(-(2**31), 2**31 - 1), st.sampled_from(["big", "little"]))
def test_fuzz_roundtrip(raw: int, order: str) -> None:
    assert decode_weight(encode_weight(raw * 0.1, order, 0.1), order, True, 0.1) == pytest.approx(raw * 0.1)


def _setup(demo_manifest: Manifest, tmp_path: Path, **kw: object) -> tuple[World, ModbusShelfSim, ShelfModbusDriver]:
    world = World(demo_manifest, SystemClock())
    lanes = lanes_for(world, "shelf-b1")
    sim = ModbusShelfSim(world, tmp_path / "rs485.tty", lanes, word_order=str(kw.get("word_order", "big")))
    cfg = ShelfModbusConfig.model_validate(
        {
            "id": "mb-1",
            "type": "shelf_modbus",
            "port": str(sim.port.link),
            "baudrate": 115200,
            "scale": 0.1,
            "lanes": lane_sections(lanes),
            "poll_interval_s": 0.02,
            "timeout_s": 0.2,
            **kw,
        }
    )
    drv = ShelfModbusDriver(cfg, DriverContext(manifest=demo_manifest, clock=SystemClock(), data_dir=tmp_path))
    return world, sim, drv


async def _take(stream: AsyncGenerator[Reading, None], n: int) -> list[Reading]:
    out: list[Reading] = []
    async with asyncio.timeout(10):
        async for r in stream:
            out.append(r)
            if len(out) >= n:
                break
    return out


@pytest.mark.parametrize(
    ("kw", "tares"),
    [({}, 0), ({"word_order": "little", "tare_on_start": True, "tare_kind": "register", "tare_address": 10}, 2)],
)
async def test_reads_gross_weight(demo_manifest: Manifest, tmp_path: Path, kw: dict[str, object], tares: int) -> None:
    world, sim, drv = _setup(demo_manifest, tmp_path, **kw)
    await sim.start()
    stream = drv.stream()
    try:
        got = await _take(stream, 5)
    finally:
        await stream.aclose()
        await sim.stop()
    assert isinstance(got[0], DeviceOnline)
    samples = [r for r in got if isinstance(r, WeightSample)]
    assert len(samples) == 4
    for s in samples:
        lane = next(ln for ln in sim.lanes if ln.lane == s.lane)
        truth = world.lanes[("shelf-b1", s.lane)]
        assert s.grams == pytest.approx(truth.count * truth.unit_weight_g + lane.tare_g, abs=8)
        assert s.stable
    assert sim.tare_commands == tares


async def test_net_after_coil_tare(demo_manifest: Manifest, tmp_path: Path) -> None:
    _, sim, drv = _setup(demo_manifest, tmp_path, tare_on_start=True, use_net=True)
    await sim.start()
    stream = drv.stream()
    try:
        got = await _take(stream, 5)
    finally:
        await stream.aclose()
        await sim.stop()
    assert sim.tare_commands == 2
    assert all(abs(r.grams) < 10 for r in got if isinstance(r, WeightSample))


async def test_crc_errors_hold_count_then_fault(demo_manifest: Manifest, tmp_path: Path) -> None:
    world, sim, drv = _setup(demo_manifest, tmp_path)
    proc = ShelfProcessor(demo_manifest.model_copy(update={"devices": [drv.config]}), SystemClock())
    await sim.start()
    stream = drv.stream()
    events: list[object] = []
    try:
        async with asyncio.timeout(20):
            async for r in stream:
                out = proc.feed(r, r.time)
                events += out
                counts = [o for o in events if isinstance(o, StockUpdate)]
                if len(counts) == 2 and sim.fault is None and not any(isinstance(e, WeightFault) for e in events):
                    sim.fault = "crc"
                    world.pick("shelf-b1", "l1", 3)  # happens while the line is broken
                if isinstance(r, WeightFault):
                    events.append(r)
                if sum(type(e).__name__ == "ShelfFault" for e in events) == 2:
                    break
    finally:
        await stream.aclose()
        await sim.stop()
    faults = [e for e in events if type(e).__name__ == "ShelfFault"]
    assert {(getattr(f, "lane", ""), getattr(f, "code", "")) for f in faults} <= {
        ("l1", "timeout"),
        ("l2", "timeout"),
        ("l1", "crc"),
        ("l2", "crc"),
    }
    held = {getattr(f, "lane", ""): getattr(f, "held_count", None) for f in faults}
    assert held["l1"] == world.count("shelf-b1", "crisps-150") + 3  # the count before the pick is held
    assert drv.failures >= 6


async def test_missing_port_raises(demo_manifest: Manifest, tmp_path: Path) -> None:
    cfg = ShelfModbusConfig.model_validate(
        {
            "id": "mb-2",
            "type": "shelf_modbus",
            "port": str(tmp_path / "nope"),
            "lanes": [{"channel": 1, "shelf": "shelf-b1", "lane": "l1"}],
        }
    )
    drv = ShelfModbusDriver(cfg, DriverContext(manifest=demo_manifest, clock=SystemClock(), data_dir=tmp_path))
    with pytest.raises((DeviceError, OSError)):
        await _take(drv.stream(), 1)


def test_unit_ids_validated() -> None:
    with pytest.raises(ValueError, match="unit id"):
        ShelfModbusConfig.model_validate(
            {
                "id": "x",
                "type": "shelf_modbus",
                "port": "/dev/x",
                "lanes": [{"channel": "a", "shelf": "s", "lane": "l"}],
            }
        )
