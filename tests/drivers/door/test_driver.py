"""Door counter over a real pseudo-terminal: frames, malformed lines, reboot and wrap into traffic counts."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import pytest

from drivers.door.config import DoorCounterConfig
from drivers.door.driver import DoorCounterDriver
from drivers.door.reads import DoorCounts, DoorRebooted
from drivers.traffic.processor import TrafficProcessor
from edge.brokers import Mosquitto
from edge.clock import ManualClock, SystemClock
from edge.config import Manifest, parse_manifest
from edge.driver import DeviceOnline, DriverContext, Malformed, Reading
from edge.errors import DeviceError
from firmware_sim.door import DoorSim
from firmware_sim.world import demo_manifest_text


async def collect(driver: DoorCounterDriver, n: int, timeout: float = 5.0) -> list[Reading]:
    out: list[Reading] = []

    async def run() -> None:
        async for r in driver.stream():
            out.append(r)
            if len(out) >= n:
                return

    await asyncio.wait_for(run(), timeout)
    return out


def manifest(path: str) -> Manifest:
    dev = f"devices:\n  - {{id: door-1, type: door_counter, port: {path}, counter_bits: 16, read_timeout_s: 1}}\n"
    return parse_manifest(demo_manifest_text().replace("devices: []\n", dev), "test")


async def test_serial_counts_reboot_wrap_into_occupancy(tmp_path: Path) -> None:
    sim = DoorSim(bits=16, start_in=65_530, start_out=65_000, heartbeat_s=0.2)
    m = manifest(sim.path)
    cfg = m.typed_devices()[0]
    assert isinstance(cfg, DoorCounterConfig)
    driver = DoorCounterDriver(cfg, DriverContext(manifest=m, clock=SystemClock(), data_dir=tmp_path))
    task = asyncio.create_task(collect(driver, 9))
    await asyncio.sleep(0.1)
    sim.report()  # baseline
    sim.walk_in(4)
    sim.walk_in(4)  # wraps past 65535
    os.write(sim.master, b"$CNT,1,2*00\r\n")  # bad checksum
    sim.walk_out(3)
    sim.reboot()
    sim.walk_in(2)
    sim.walk_out(9)  # more out than in: occupancy must stay >= 0
    readings = await task
    await sim.stop()
    assert isinstance(readings[0], DeviceOnline)
    assert sum(isinstance(r, Malformed) for r in readings) == 1
    assert any(isinstance(r, DoorRebooted) for r in readings)
    t0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
    proc = TrafficProcessor(m, ManualClock(t0))
    occ = []
    for i, r in enumerate(readings):
        proc.feed(r, t0 + timedelta(seconds=i))
        occ.append(proc.view().occupancy)
    v = proc.view()
    assert (v.entries_today, v.exits_today) == (10, 12)
    assert occ[-3:] == [5, 7, 0]  # 8 in - 3 out, then reboot, +2, then 9 out clamps at 0
    assert min(occ) >= 0


async def test_silence_raises(tmp_path: Path) -> None:
    sim = DoorSim(heartbeat_s=100)
    m = manifest(sim.path)
    cfg = m.typed_devices()[0]
    assert isinstance(cfg, DoorCounterConfig)
    driver = DoorCounterDriver(cfg, DriverContext(manifest=m, clock=SystemClock(), data_dir=tmp_path))
    with pytest.raises(DeviceError, match="silent"):
        await collect(driver, 99)
    await sim.stop()


async def test_missing_port_raises(demo_manifest: Manifest, tmp_path: Path) -> None:
    cfg = DoorCounterConfig(id="d", type="door_counter", port=str(tmp_path / "nope"))
    driver = DoorCounterDriver(cfg, DriverContext(manifest=demo_manifest, clock=SystemClock(), data_dir=tmp_path))
    with pytest.raises(DeviceError, match="cannot open"):
        await collect(driver, 1)


async def test_mqtt_json_counts(mosquitto: Mosquitto, demo_manifest: Manifest, tmp_path: Path) -> None:
    cfg = DoorCounterConfig(id="door-m", type="door_counter", transport="mqtt", topic="store/door/front/counts")
    ctx = DriverContext(manifest=demo_manifest, clock=SystemClock(), data_dir=tmp_path, local_broker_url=mosquitto.url)
    task = asyncio.create_task(collect(DoorCounterDriver(cfg, ctx), 4))
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as pub:
        await asyncio.sleep(0.3)  # let the driver subscribe
        for payload in (b'{"in": 10, "out": 4}', b"garbage", b'{"in": 12, "out": 5, "fw": "2.1"}'):
            await pub.publish(cfg.topic or "", payload, qos=1)
        readings = await task
    assert isinstance(readings[0], DeviceOnline)
    assert isinstance(readings[2], Malformed)
    assert [(r.total_in, r.total_out) for r in readings if isinstance(r, DoorCounts)] == [(10, 4), (12, 5)]


@pytest.fixture
def locked_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A local broker that wants a username and password (mosquitto_passwd), as a store's often does."""
    (tmp_path / "mq").mkdir()
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(tmp_path / "mq" / "passwd"), "door@front", "s3:cret"],
                   check=True)
    broker = Mosquitto(workdir=tmp_path / "mq", anonymous=False, extra=f"password_file {tmp_path / 'mq' / 'passwd'}\n")
    broker.start()
    yield broker
    broker.stop()


async def test_mqtt_credentials_and_oversized_payload(locked_broker: Mosquitto, demo_manifest: Manifest,
                                                     tmp_path: Path) -> None:
    url = f"mqtt://door%40front:s3%3Acret@127.0.0.1:{locked_broker.port}"
    cfg = DoorCounterConfig(id="door-m", type="door_counter", transport="mqtt", topic="door/front", broker_url=url)
    ctx = DriverContext(manifest=demo_manifest, clock=SystemClock(), data_dir=tmp_path)
    task = asyncio.create_task(collect(DoorCounterDriver(cfg, ctx), 4))
    await asyncio.sleep(0.3)  # let the driver subscribe
    for payload in (b'{"in": 3, "out": 1}', b"x" * 300_000, b'{"in": 4, "out": 1}'):
        await asyncio.to_thread(subprocess.run, ["mosquitto_pub", "-p", str(locked_broker.port), "-t", "door/front",
                                                 "-u", "door@front", "-P", "s3:cret", "-q", "1", "-s"],
                                input=payload, check=True, timeout=20)
    readings = await task
    assert isinstance(readings[0], DeviceOnline)
    assert isinstance(readings[2], Malformed) and "larger than" in readings[2].reason
    assert [(r.total_in, r.total_out) for r in readings if isinstance(r, DoorCounts)] == [(3, 1), (4, 1)]
    wrong = cfg.model_copy(update={"broker_url": url.replace("s3%3Acret", "nope")})
    with pytest.raises(DeviceError, match="refused"):
        await collect(DoorCounterDriver(wrong, ctx), 1)
