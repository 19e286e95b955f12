"""The driver's ROSpec against the strict LLRP 1.0.1 reader emulator: inventory must go on, cycle after cycle.

Before the fix the driver installed a Null start / Null stop ROSpec with one Duration AISpec: by the spec
it is done after one AISpec, back to Inactive, and a real reader goes quiet (keepalives only)."""

from __future__ import annotations

import contextlib
from pathlib import Path

from drivers.rfid.config import LlrpConfig
from drivers.rfid.llrp import LlrpDriver
from edge.clock import SystemClock
from edge.config import Manifest
from edge.driver import DeviceOnline, DriverContext, Reading
from firmware_sim.rfid.llrp_reader import LlrpReaderSim
from firmware_sim.rfid.population import Population
from firmware_sim.world import World
from tests.drivers.rfid.frames import collect

ANTENNAS = {1: "apparel", 2: "entrance"}


async def test_inventory_continues_for_many_cycles_on_a_spec_following_reader(
    demo_manifest: Manifest, tmp_path: Path
) -> None:
    world = World(demo_manifest, SystemClock())
    sim = LlrpReaderSim(Population(world, ANTENNAS, reliability=1.0), round_ms=50)
    await sim.start()
    try:
        cfg = LlrpConfig(id="rfid-1", host="127.0.0.1", port=sim.port, antennas=ANTENNAS, cycle_ms=100,
                         keepalive_s=0.1, reply_timeout_s=2)  # fmt: skip
        drv = LlrpDriver(cfg, DriverContext(manifest=demo_manifest, clock=SystemClock(), data_dir=tmp_path))
        got: list[Reading] = []
        with contextlib.suppress(TimeoutError):
            got = await collect(drv.stream(), lambda rs: sim.stats.reports >= 8, timeout=10)
        assert sim.stats.connections == 1
        assert not got or isinstance(got[0], DeviceOnline)
        assert sim.stats.reports >= 8, (
            f"the reader went quiet: {sim.stats.reports} reports, {sim.stats.rospec_starts} ROSpec starts, "
            f"{sim.stats.keepalive_acks} keepalives acknowledged"
        )
    finally:
        await sim.stop()
