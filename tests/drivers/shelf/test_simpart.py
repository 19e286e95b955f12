"""The demo's shelf sim part: its device sections validate against the registry's models and stream."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from drivers.registry import FAMILIES, load
from drivers.shelf.reads import WeightSample, WeightSamples
from edge.brokers import Mosquitto
from edge.clock import SystemClock
from edge.config import Manifest, parse_manifest
from edge.driver import DriverContext, Reading
from firmware_sim.shelf import ShelfSimPart
from firmware_sim.world import World, demo_manifest_text


def _with_devices(sections: list[dict[str, Any]]) -> Manifest:
    raw = yaml.safe_load(demo_manifest_text())
    raw["devices"] = sections
    return parse_manifest(yaml.safe_dump(raw))


async def test_sections_validate_and_stream(mosquitto: Mosquitto, demo_manifest: Manifest, tmp_path: Path) -> None:
    world = World(demo_manifest, SystemClock())
    part = ShelfSimPart(hz=20)
    sections = await part.start(world, tmp_path, mosquitto.url)
    try:
        manifest = _with_devices(sections)
        assert [d.type for d in manifest.devices] == ["shelf_serial", "shelf_modbus", "shelf_mqtt"]
        ctx = DriverContext(manifest=manifest, clock=SystemClock(), data_dir=tmp_path)
        for dev in manifest.devices:
            drv = load(FAMILIES[dev.type].driver)(dev, ctx)
            stream = drv.stream()
            got: list[Reading] = []
            try:
                async with asyncio.timeout(10):
                    async for r in stream:
                        got += r.expand() if isinstance(r, WeightSamples) else [r]
                        if isinstance(got[-1], WeightSample):
                            break
            finally:
                await stream.aclose()
            assert isinstance(got[-1], WeightSample)
    finally:
        await part.stop()


async def test_fault_injection_reaches_the_drivers(mosquitto: Mosquitto, demo_manifest: Manifest,
                                                   tmp_path: Path) -> None:
    """The sim part's per-cell faults act on whichever simulated shelf weighs the lane, as its protocol says:
    serial NaN, Modbus a frozen value, MQTT null grams; a lean and a foreign object are weighed."""
    world = World(demo_manifest, SystemClock())
    part = ShelfSimPart(hz=20)
    sections = await part.start(world, tmp_path, mosquitto.url)
    try:
        manifest = _with_devices(sections)
        ctx = DriverContext(manifest=manifest, clock=SystemClock(), data_dir=tmp_path)
        part.unplug_cell("shelf-a1", "l1")
        part.stick_cell("shelf-b1", "l2")
        part.unplug_cell("rack-c1", "l2")
        world.lean("shelf-b1", "l1", 5000.0)
        world.place_object("rack-c1", "l1", 2500.0)
        with pytest.raises(KeyError):
            part.stick_cell("nowhere", "l1")
        got: dict[tuple[str, str], list[float]] = {}
        for dev in manifest.devices:
            stream = load(FAMILIES[dev.type].driver)(dev, ctx).stream()
            try:
                async with asyncio.timeout(10):
                    async for r in stream:
                        for w in r.expand() if isinstance(r, WeightSamples) else [r]:
                            if isinstance(w, WeightSample):
                                got.setdefault((w.shelf, w.lane), []).append(w.grams)
                        if all(len(got.get((dev_shelf, ln), [])) >= 4 for dev_shelf, ln in _lanes_of(dev)):
                            break
            finally:
                await stream.aclose()
        assert all(math.isnan(g) for g in got[("shelf-a1", "l1")])
        assert not any(math.isnan(g) for g in got[("shelf-a1", "l2")])
        assert len(set(got[("shelf-b1", "l2")][1:])) == 1  # stuck: the same raw value again and again
        crisps = world.lanes[("shelf-b1", "l1")]
        assert all(g > 5000.0 + crisps.count * crisps.unit_weight_g for g in got[("shelf-b1", "l1")])
        assert all(math.isnan(g) for g in got[("rack-c1", "l2")])
        tees = world.lanes[("rack-c1", "l1")]
        assert all(g > 2400.0 + tees.count * tees.unit_weight_g for g in got[("rack-c1", "l1")])
        part.heal_cell("shelf-a1", "l1")
        assert part.sim_of("shelf-a1").lanes[0].fault is None
    finally:
        await part.stop()


def _lanes_of(dev: object) -> list[tuple[str, str]]:
    return [(m.shelf, m.lane) for m in getattr(dev, "lanes", [])]
