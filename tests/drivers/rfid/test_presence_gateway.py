"""Reader-aware presence end to end: the real gateway (supervisor, LLRP driver, RFID processor, stock state)
against the strict LLRP reader emulator over TCP, with T-shirts taken off the rack while the reader's RF
section is dead (`go_silent`, longer than the lost-timeout), while the reader reboots (`restart`) and while
the rack's antenna is unplugged (AntennaEvent).

Nothing may depart while the reader cannot see: the rack's count stays what it was, flagged stale; once the
reader is back its first cycles reconcile the count with the truth and the flag goes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml

from edge.brokers import Mosquitto
from edge.clock import SystemClock
from edge.config import parse_manifest
from edge.gateway import Gateway
from edge.supervisor import Backoff
from firmware_sim.rfid.llrp_reader import LlrpReaderSim
from firmware_sim.rfid.population import Population
from firmware_sim.world import World, demo_manifest_text

CELL = ("rack-c1", "tee-m")
LOST_S = 2.0


async def until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def watch_while(fault: Awaitable[None], gw: Gateway) -> list[tuple[int, bool]]:
    """(count, stale) of the cell, sampled every 50 ms while `fault` runs."""
    task = asyncio.ensure_future(fault)
    seen: list[tuple[int, bool]] = []
    while not task.done():
        cell = gw.stock.get(*CELL)
        assert cell is not None
        seen.append((cell.count, cell.stale_since is not None))
        await asyncio.sleep(0.05)
    await task
    return seen


async def test_a_dead_rf_section_a_reboot_and_an_unplugged_antenna_take_nothing_off_the_rack(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    raw: dict[str, Any] = yaml.safe_load(demo_manifest_text())
    world = World(parse_manifest(yaml.safe_dump(raw), "demo.yaml"), SystemClock(), seed=3)
    sim = LlrpReaderSim(Population(world, {1: "apparel"}, reliability=1.0, carried_p=0.0), round_ms=50)
    await sim.start()
    raw["api"] = {"enabled": False}
    raw["devices"] = [{"id": "rfid-llrp-1", "type": "llrp", "host": "127.0.0.1", "port": sim.port,
                       "antennas": {1: "apparel"}, "cycle_ms": 100, "keepalive_s": 0.2, "inventory_timeout_s": 1.0,
                       "smoothing": {"lost_timeout_s": LOST_S, "zone_stale_s": 1.0,
                                     "present_after_reads": 2}}]  # fmt: skip
    manifest = parse_manifest(yaml.safe_dump(raw), "presence.yaml")
    try:
        async with Gateway(manifest, hub_url=mosquitto.url, data_dir=tmp_path / "var", install_rules=False,
                           tick_interval=0.1, backoff=Backoff(initial=0.2, maximum=0.5)) as gw:

            def settled() -> bool:
                cell = gw.stock.get(*CELL)
                return cell is not None and cell.count == world.count(*CELL) and cell.stale_since is None

            antenna_events: list[bool] = []

            async def listen() -> None:
                async for env in gw.subscribe():
                    if env.get("type") == "retail.rfid.antenna.changed.v1":
                        antenna_events.append(bool(env["data"]["connected"]))

            listener = asyncio.create_task(listen())
            await until(settled, 20, "the rack counted and trusted")
            async def unplug_antenna() -> None:
                sim.disconnect_antenna(1)
                await asyncio.sleep(3 * LOST_S)
                sim.connect_antenna(1)

            faults: list[Callable[[], Awaitable[None]]] = [lambda: sim.go_silent(3 * LOST_S),
                                                           lambda: sim.restart(2 * LOST_S), unplug_antenna]  # fmt: skip
            for fault in faults:
                before = world.count(*CELL)
                world.pick("rack-c1", "l1", 2)
                world.checkout()  # gone from the store: only a reader that cannot see would miss them
                seen = await watch_while(fault(), gw)
                assert {n for n, _ in seen} == {before}, seen  # nothing departed while the reader was blind
                assert any(stale for _, stale in seen), seen  # and the cell said it could not see
                await until(settled, 20, "reconciled after the reader came back")
                assert gw.stock.get(*CELL).count == before - 2  # type: ignore[union-attr]
            await until(lambda: antenna_events == [False, True], 5, "the antenna's device-health events")
            listener.cancel()
    finally:
        await sim.stop()
