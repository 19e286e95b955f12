"""The demo's shelf sim part: its device sections validate against the registry's models and stream."""

from __future__ import annotations

import asyncio
from pathlib import Path

import yaml

from drivers.base import DriverContext, Reading
from drivers.registry import FAMILIES, load
from drivers.shelf.reads import WeightSample
from edge.brokers import Mosquitto
from edge.clock import SystemClock
from edge.config import Manifest, parse_manifest
from firmware_sim.shelf import ShelfSimPart
from firmware_sim.world import World, demo_manifest_text


async def test_sections_validate_and_stream(mosquitto: Mosquitto, demo_manifest: Manifest, tmp_path: Path) -> None:
    world = World(demo_manifest, SystemClock())
    part = ShelfSimPart(hz=20)
    sections = await part.start(world, tmp_path, mosquitto.url)
    try:
        raw = yaml.safe_load(demo_manifest_text())
        raw["devices"] = sections
        manifest = parse_manifest(yaml.safe_dump(raw))
        assert [d.type for d in manifest.devices] == ["shelf_serial", "shelf_modbus", "shelf_mqtt"]
        ctx = DriverContext(manifest=manifest, clock=SystemClock(), data_dir=tmp_path)
        for dev in manifest.devices:
            drv = load(FAMILIES[dev.type].driver)(dev, ctx)
            stream = drv.stream()
            got: list[Reading] = []
            try:
                async with asyncio.timeout(10):
                    async for r in stream:
                        got.append(r)
                        if isinstance(r, WeightSample):
                            break
            finally:
                await stream.aclose()
            assert isinstance(got[-1], WeightSample)
    finally:
        await part.stop()
