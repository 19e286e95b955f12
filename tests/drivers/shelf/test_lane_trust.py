"""Lane faults, unknown objects and saved tares through the real transports: the simulated shelves' fault
injection (stuck and unplugged load cells, a bag left on a lane) on a serial pty, a Modbus-RTU line and a
mosquitto, into the real drivers and the shelf processor; the tracked tare across a real Gateway restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import pytest
import yaml

from drivers.registry import FAMILIES, load
from drivers.shelf.engine import LaneEngine
from drivers.shelf.events import ShelfFault, ShelfFaultCleared, ShelfUnknownObject, ShelfUnknownObjectCleared
from drivers.shelf.processor import ShelfProcessor
from edge.brokers import Mosquitto
from edge.clock import SystemClock
from edge.config import Manifest, parse_manifest
from edge.driver import DeviceOnline, DriverContext, Reading
from edge.gateway import Gateway
from edge.processing import StockFlag, StockUpdate
from firmware_sim.shelf import ModbusShelfSim, MqttShelfSim, SerialShelfSim, lane_sections, lanes_for
from firmware_sim.world import World, demo_manifest_text

pytestmark = pytest.mark.timeout(90)
WAIT = 30.0  # generous: the machine is shared
FAST = {"stuck_after_s": 1.0, "unknown_after_s": 1.0, "timeout_s": 2.0, "settle_s": 0.5}


def manifest_with(sections: list[dict[str, Any]], **extra: Any) -> Manifest:
    """The demo store with these device sections."""
    raw: dict[str, Any] = yaml.safe_load(demo_manifest_text())
    raw["devices"] = sections
    raw.update(extra)
    return parse_manifest(yaml.safe_dump(raw), "trust.yaml")


async def until(pred: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)


class Run:
    """A real driver's stream fed into a shelf processor in the background; outputs collected."""

    def __init__(self, manifest: Manifest, tmp: Path) -> None:
        self.proc = ShelfProcessor(manifest, SystemClock())
        ctx = DriverContext(manifest=manifest, clock=SystemClock(), data_dir=tmp, local_broker_url=None)
        dev = manifest.devices[0]
        self.driver = load(FAMILIES[dev.type].driver)(dev, ctx)
        self.out: list[object] = []
        self.readings: list[Reading] = []
        self.errors = 0  # processor exceptions (the pipeline would count and log them)
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        stream: AsyncGenerator[Reading, None] = self.driver.stream()
        last_tick = time.monotonic()
        try:
            async for r in stream:
                self.readings.append(r)
                try:
                    self.out += self.proc.feed(r, r.time)
                except Exception:
                    self.errors += 1
                if time.monotonic() - last_tick > 0.2:
                    last_tick = time.monotonic()
                    self.out += self.proc.tick(SystemClock().now())
        finally:
            await stream.aclose()

    async def ticker(self) -> None:
        """Silence detection needs ticks even when no reading arrives."""
        while True:
            await asyncio.sleep(0.2)
            self.out += self.proc.tick(SystemClock().now())

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run())
        self._ticks = loop.create_task(self.ticker())

    async def stop(self) -> None:
        # pymodbus' request timeout may swallow one cancel (Python 3.11 wait_for) and the driver polls on:
        # cancel again until the tasks are done, as the supervisor does
        tasks = [t for t in (self._task, self._ticks) if t is not None]
        pending = set(tasks)
        while pending:
            for t in pending:
                t.cancel()
            _done, pending = await asyncio.wait(pending, timeout=0.25)
        await asyncio.gather(*tasks, return_exceptions=True)

    def driver_online(self) -> bool:
        return any(isinstance(r, DeviceOnline) for r in self.readings)

    def of(self, kind: type) -> list[Any]:
        return [o for o in self.out if isinstance(o, kind)]

    def flags(self, sku: str) -> list[bool]:
        return [f.on for f in self.of(StockFlag) if f.sku == sku]

    def counts(self, sku: str) -> list[int]:
        return [u.count for u in self.of(StockUpdate) if u.sku == sku]


async def test_stuck_cell_on_the_serial_shelf_flags_the_cell_until_it_settles(
        demo_manifest: Manifest, tmp_path: Path) -> None:
    """A stuck cell hides an emptied lane: the cell is flagged stale (its count is not served as true) from the
    stuck fault until the healed cell settled at the truth."""
    world = World(demo_manifest, SystemClock())
    lanes = lanes_for(world, "shelf-a1")
    sim = SerialShelfSim(world, tmp_path / "a1.tty", lanes, hz=40)
    manifest = manifest_with([{"id": "a1", "type": "shelf_serial", "port": str(sim.port.link),
                               "lanes": lane_sections(lanes), "counting": FAST}])
    run = Run(manifest, tmp_path)
    sim.start()
    run.start()
    try:
        full = world.count("shelf-a1", "cola-330")
        await until(lambda: run.counts("cola-330") == [full], "first count")
        sim.stick_cell("shelf-a1", "l1")
        world.pick("shelf-a1", "l1", full)  # the lane is emptied behind the stuck cell
        await until(lambda: run.flags("cola-330") == [True], "stale flag")
        fault = run.of(ShelfFault)[0]
        assert (fault.code, fault.lane, fault.sku, fault.held_count) == ("stuck", "l1", "cola-330", full)
        assert fault.since is not None and fault.since <= fault.time
        assert run.counts("cola-330") == [full]  # held, and flagged stale meanwhile
        sim.heal_cell("shelf-a1", "l1")
        await until(lambda: run.flags("cola-330") == [True, False], "flag off after the healed cell settled")
        assert run.counts("cola-330") == [full, 0]
        assert [c.code for c in run.of(ShelfFaultCleared)] == ["stuck"]
        assert run.flags("water-500") == []  # the other lane was never in doubt
    finally:
        await run.stop()
        await sim.stop()


async def test_unplugged_transmitter_on_the_modbus_line(demo_manifest: Manifest, tmp_path: Path) -> None:
    """A lane's transmitter stops answering: timeouts -> a fault after fault_after, the cell stale; back: cleared."""
    world = World(demo_manifest, SystemClock())
    lanes = lanes_for(world, "shelf-b1")
    sim = ModbusShelfSim(world, tmp_path / "rs485.tty", lanes)
    manifest = manifest_with([{"id": "b1", "type": "shelf_modbus", "port": str(sim.port.link), "baudrate": 115200,
                               "scale": 0.1, "poll_interval_s": 0.02, "timeout_s": 0.2,
                               "lanes": lane_sections(lanes), "counting": FAST}])
    await sim.start()
    run = Run(manifest, tmp_path)
    run.start()
    try:
        n = world.count("shelf-b1", "choc-100")
        await until(lambda: run.counts("choc-100") == [n], "first count")
        sim.unplug_cell("shelf-b1", "l2")
        await until(lambda: run.flags("choc-100") == [True], "stale flag")
        fault = run.of(ShelfFault)[0]
        assert (fault.lane, fault.code, fault.reason) == ("l2", "timeout", "load cell not responding")
        sim.heal_cell("shelf-b1", "l2")
        await until(lambda: run.flags("choc-100") == [True, False], "flag off")
        assert run.flags("crisps-150") == []
    finally:
        await run.stop()
        await sim.stop()


async def test_mqtt_shelf_unplugged_cell_and_a_bag_left_on_a_lane(
        mosquitto: Mosquitto, demo_manifest: Manifest, tmp_path: Path) -> None:
    """An unplugged cell publishes "grams": null (a nan fault); a 2.5 kg bag on 32 T-shirts (capacity 40) is an
    unknown object, never 45 T-shirts; each sets the stale flag and its end clears it."""
    world = World(demo_manifest, SystemClock())
    lanes = lanes_for(world, "rack-c1")
    sim = MqttShelfSim(world, mosquitto.url, lanes, hz=20)
    manifest = manifest_with([{"id": "c1", "type": "shelf_mqtt", "broker_url": mosquitto.url,
                               "lanes": lane_sections(lanes, by="key"), "counting": FAST}])
    run = Run(manifest, tmp_path)
    run.start()
    sim.start()
    try:
        n = world.count("rack-c1", "tee-m")
        await until(lambda: run.counts("tee-m") == [n], "first count")
        sim.unplug_cell("rack-c1", "l1")
        await until(lambda: run.flags("tee-m") == [True], "stale flag (nan)")
        assert [f.code for f in run.of(ShelfFault)] == ["nan"]
        sim.heal_cell("rack-c1", "l1")
        await until(lambda: run.flags("tee-m") == [True, False], "flag off")
        world.place_object("rack-c1", "l1", 2500.0)
        await until(lambda: run.flags("tee-m") == [True, False, True], "stale flag (object)")
        await until(lambda: bool(run.of(ShelfUnknownObject)), "unknown object after unknown_after_s")
        assert run.flags("tee-m") == [True, False, True]  # one flag for the doubt and the unknown object
        obj = run.of(ShelfUnknownObject)[0]
        assert (obj.lane, obj.code, obj.held_count) == ("l1", "capacity", n)
        world.remove_object("rack-c1", "l1")
        await until(lambda: run.flags("tee-m") == [True, False, True, False], "flag off (object gone)")
        assert [c.count for c in run.of(ShelfUnknownObjectCleared)] == [n]
        assert run.counts("tee-m") == [n]  # never 45
    finally:
        await run.stop()
        await sim.stop()


async def test_tracked_tare_survives_a_gateway_restart(mosquitto: Mosquitto, demo_manifest: Manifest,
                                                       tmp_path: Path) -> None:
    """The manifest says the empty cola tray weighs 880 g; it weighs 850. Zero tracking on the empty lane moves
    the tare to ~850 and saves it (shelf_tares); after a restart, with cans on the lane (no tracking at a load),
    the lane starts from the saved tare, not from the manifest's 880."""
    world = World(demo_manifest, SystemClock())
    world.pick("shelf-a1", "l1", world.lanes[("shelf-a1", "l1")].count)
    lanes = lanes_for(world, "shelf-a1")  # l1's tray: 850 g
    sim = SerialShelfSim(world, tmp_path / "a1.tty", lanes, hz=40)
    sections = lane_sections(lanes)
    sections[0]["tare_g"] = 880.0
    manifest = manifest_with(
        [{"id": "a1", "type": "shelf_serial", "port": str(sim.port.link), "lanes": sections,
          "counting": {**FAST, "drift_tau_s": 1.0, "drift_max_g_per_h": 36_000.0}}],
        api={"enabled": False})
    sim.start()

    def engine(gw: Gateway) -> LaneEngine | None:
        proc = gw.processor(ShelfProcessor)
        return proc.lane_engine("a1", "shelf-a1", "l1") if proc else None

    try:
        async with Gateway(manifest, hub_url=mosquitto.url, data_dir=tmp_path / "var", install_rules=False) as gw:
            await until(lambda: (e := engine(gw)) is not None and abs(e.tare - 850.0) < 1.5, "tare tracked")
            rows: list[dict[str, Any]] = []

            async def saved() -> bool:
                await gw.outbox.flush()
                rows[:] = await gw.db.query("SELECT * FROM shelf_tares")
                return bool(rows) and abs(rows[0]["tare_g"] - 850.0) < 2.0

            deadline = time.monotonic() + WAIT
            while not await saved():
                assert time.monotonic() < deadline, rows
                await asyncio.sleep(0.1)
        world.put_back("shelf-a1", "l1", 4)
        async with Gateway(manifest, hub_url=mosquitto.url, data_dir=tmp_path / "var", install_rules=False) as gw:
            await until(lambda: (e := engine(gw)) is not None and e.count == 4, "count after the restart")
            eng = engine(gw)
            assert eng is not None
            last = (await gw.db.query("SELECT tare_g FROM shelf_tares"))[0]["tare_g"]
            assert eng.tare == last  # from the saved row (no tracking at a load), not the manifest's 880
            assert abs(eng.tare - 850.0) < 2.0
    finally:
        await sim.stop()



async def test_faults_reach_people(mosquitto: Mosquitto, demo_manifest: Manifest, tmp_path: Path) -> None:
    """Through the real Gateway and its rules: a stuck cell held longer than lane_fault_hold_s opens a staff
    alert naming the lane, healing it resolves the alert; a bag left on a lane does the same as an unknown
    object."""
    world = World(demo_manifest, SystemClock())
    lanes = lanes_for(world, "shelf-a1")
    sim = SerialShelfSim(world, tmp_path / "a1.tty", lanes, hz=40)
    raw_rules = yaml.safe_load(demo_manifest_text())["rules"]
    manifest = manifest_with(
        [{"id": "a1", "type": "shelf_serial", "port": str(sim.port.link), "lanes": lane_sections(lanes),
          "counting": FAST}],
        api={"enabled": False}, rules={**raw_rules, "lane_fault_hold_s": 1.0})
    sim.start()
    seen: list[dict[str, Any]] = []

    async def listen(gw: Gateway) -> None:
        async for ev in gw.subscribe():
            seen.append(ev)

    def alerts(kind: str, state: str) -> list[dict[str, Any]]:
        return [e["data"] for e in seen if e["type"] == f"retail.alert.{state}.v1" and e["data"].get("kind") == kind]

    try:
        async with Gateway(manifest, hub_url=mosquitto.url, data_dir=tmp_path / "var") as gw:
            listener = asyncio.create_task(listen(gw))
            try:
                proc = gw.processor(ShelfProcessor)
                assert proc is not None
                await until(lambda: (e := proc.lane_engine("a1", "shelf-a1", "l1")) is not None
                            and e.count is not None, "first count")
                sim.stick_cell("shelf-a1", "l1")

                def stale() -> bool:
                    cell = gw.stock.get("shelf-a1", "cola-330")
                    return cell is not None and cell.stale_since is not None

                await until(stale, "the cell is served as stale")
                await until(lambda: bool(alerts("lane_fault", "opened")), "lane fault alert")
                assert stale()
                opened = alerts("lane_fault", "opened")[0]
                assert (opened["shelf"], opened["sku"]) == ("shelf-a1", "cola-330")
                assert "l1" in opened["message"] and "stuck" in opened["message"], opened
                sim.heal_cell("shelf-a1", "l1")
                await until(lambda: bool(alerts("lane_fault", "resolved")), "lane fault alert resolved")
                await until(lambda: not stale(), "the cell is trusted again")
                world.place_object("shelf-a1", "l2", 2500.0)  # 14 bottles + 2.5 kg = 18.8: over capacity 18
                await until(lambda: bool(alerts("unknown_object", "opened")), "unknown object alert")
                world.remove_object("shelf-a1", "l2")
                await until(lambda: bool(alerts("unknown_object", "resolved")), "unknown object alert resolved")
            finally:
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)
    finally:
        await sim.stop()


async def test_absurd_mqtt_weights_are_a_fault(mosquitto: Mosquitto, demo_manifest: Manifest, tmp_path: Path) -> None:
    """A shelf publishing 0 then 1e308-ish grams (valid JSON numbers): a `range` fault and a stale flag; the old
    engine raised OverflowError on every such sample, so the lane was dead."""
    manifest = manifest_with([{"id": "c1", "type": "shelf_mqtt", "broker_url": mosquitto.url,
                               "lanes": [{"channel": "rack-c1:l1", "shelf": "rack-c1", "lane": "l1"}],
                               "counting": FAST}])
    run = Run(manifest, tmp_path)
    run.start()
    try:
        await until(lambda: bool(run.driver_online()), "subscribed")
        async with aiomqtt.Client("127.0.0.1", int(mosquitto.url.rsplit(":", 1)[1])) as c:
            for i in range(40):
                grams = 0.0 if i < 3 else 1e308 + (i % 2) * 1e293
                await c.publish("shelves/rack-c1/weight", orjson.dumps(
                    {"shelf": "rack-c1", "lane": "l1", "grams": grams}))
                await asyncio.sleep(0.02)
        await until(lambda: run.flags("tee-m") == [True], "stale flag")
        assert [f.code for f in run.of(ShelfFault)] == ["range"]
        assert run.errors == 0
    finally:
        await run.stop()


async def test_controller_unplugged_faults_its_lanes_at_once(mosquitto: Mosquitto, demo_manifest: Manifest,
                                                            tmp_path: Path) -> None:
    """The serial controller's port goes away: the supervisor's DeviceOffline faults both lanes ('offline') and
    both cells are served stale at once, not only after the lanes' timeout; replugged, they settle and clear."""
    from edge.supervisor import Backoff

    world = World(demo_manifest, SystemClock())
    lanes = lanes_for(world, "shelf-a1")
    sim = SerialShelfSim(world, tmp_path / "a1.tty", lanes, hz=40)
    manifest = manifest_with(
        [{"id": "a1", "type": "shelf_serial", "port": str(sim.port.link), "lanes": lane_sections(lanes),
          "counting": {**FAST, "timeout_s": 60.0}}],  # the timeout alone would take a minute
        api={"enabled": False})
    sim.start()
    seen: list[dict[str, Any]] = []

    async def listen(gw: Gateway) -> None:
        async for ev in gw.subscribe():
            seen.append(ev)

    def stale(gw: Gateway) -> set[str]:
        return {c.sku for c in gw.stock.cells(shelf="shelf-a1") if c.stale_since is not None}

    try:
        async with Gateway(manifest, hub_url=mosquitto.url, data_dir=tmp_path / "var", install_rules=False,
                           backoff=Backoff(initial=0.2, maximum=0.5)) as gw:
            listener = asyncio.create_task(listen(gw))
            try:
                proc = gw.processor(ShelfProcessor)
                assert proc is not None

                def counted(lane: str) -> bool:
                    eng = proc.lane_engine("a1", "shelf-a1", lane)
                    return eng is not None and eng.count is not None

                await until(lambda: counted("l1") and counted("l2"), "both lanes counted")
                sim.port.unplug()
                await until(lambda: stale(gw) == {"cola-330", "water-500"}, "both cells stale")
                faults = [e["data"] for e in seen if e["type"] == "retail.shelf.fault.v1"]
                assert sorted((f["lane"], f["code"]) for f in faults) == [("l1", "offline"), ("l2", "offline")]
                sim.port.replug()
                await until(lambda: stale(gw) == set(), "both cells trusted again")
                cleared = [e["data"] for e in seen if e["type"] == "retail.shelf.fault_cleared.v1"]
                assert sorted(f["lane"] for f in cleared) == ["l1", "l2"]
            finally:
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)
    finally:
        await sim.stop()
