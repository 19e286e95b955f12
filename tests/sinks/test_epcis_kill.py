"""kill -9 of the real daemon (`edge-gateway run`) while a capture document is in flight: after the restart the
EPCIS repository holds exactly the EPCIS events the hub received (nothing lost, nothing invented) and got no
duplicate beyond the in-flight batch. The events come from an LLRP reader simulator (real TCP) reading the World's
apparel rack through the real driver and RFID processor in the daemon."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from edge.brokers import Mosquitto
from edge.clock import SystemClock
from edge.config import parse_manifest
from firmware_sim.epcis_repository import EpcisRepository
from firmware_sim.world import World, demo_manifest_text
from tests.api.conftest import wait_for

REPO = Path(__file__).resolve().parents[2]
BATCH = 20


class HubEpcis:
    """Collects the eventIDs of every events/epcis message the hub broker gets."""

    def __init__(self, port: int) -> None:
        self.ids: set[str] = set()
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="epcis-watch", clean_session=False)
        self.client.on_message = self._message
        self.client.on_connect = lambda c, *_: c.subscribe("retail/v1/demo/events/epcis", qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        env = orjson.loads(msg.payload)
        with self.lock:
            self.ids.add(str(env["data"]["eventID"]))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def start_daemon(path: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([str(Path(sys.executable).parent / "edge-gateway"), "run", "--config", str(path)],
                                stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip


async def test_kill_9_mid_delivery_loses_nothing(mosquitto: Mosquitto, tmp_path: Path) -> None:
    from firmware_sim.rfid.llrp_reader import LlrpReaderSim
    from firmware_sim.rfid.population import Population

    world = World(parse_manifest(demo_manifest_text(), "demo"), SystemClock())
    sim = LlrpReaderSim(Population(world, {1: "apparel"}, reliability=1.0))
    port = await sim.start()
    repo = EpcisRepository(running_polls=10**9).start()  # the first capture job never finishes by itself
    hub = HubEpcis(mosquitto.port)
    raw = yaml.safe_load(demo_manifest_text())
    raw["hub"] = {**raw.get("hub", {}), "url": mosquitto.url}
    raw["storage"] = {"data_dir": str(tmp_path / "var")}
    raw["api"] = {"enabled": False}
    raw["devices"] = [{"id": "rfid-llrp-1", "type": "llrp", "host": "127.0.0.1", "port": port,
                       "antennas": {1: "apparel"}, "cycle_ms": 300, "epcis": True}]  # fmt: skip
    raw["epcis_capture"] = {"url": repo.url, "batch_max_events": BATCH, "batch_wait_s": 0.5, "poll_interval_s": 0.05}
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump(raw))
    log = tmp_path / "gateway.log"
    tags = sum(len(t.epcs) for t in world.lanes.values() if t.zone == "apparel")
    proc = start_daemon(path, log)
    try:
        await wait_for(lambda: repo.documents >= 1 and len(hub.ids) >= tags, 60, "a document in flight")
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        for job in list(repo.jobs.values()):  # the repository finishes the job the gateway will never see done
            job.polls_left = 0
            repo.poll(job.id)
        repo.running_polls = 0
        in_flight = len(repo.events)
        assert in_flight == BATCH
        for lane in [t for t in world.lanes.values() if t.zone == "apparel"]:
            world.pick(lane.shelf, lane.lane, 3)  # picks while the gateway is down: departures after the restart
        proc = start_daemon(path, log)

        def settled() -> bool:
            with hub.lock:
                ids = set(hub.ids)
            return len(ids) >= tags + 6 and set(repo.events) == ids

        try:
            await wait_for(settled, 90, "the repository holds what the hub got")
        except TimeoutError:
            rows = [r for r in log.read_text(errors="replace").splitlines() if "epcis" in r.lower()][-10:]
            raise AssertionError(f"hub {len(hub.ids)}, repository {len(repo.events)}, hub-only "
                                 f"{len(hub.ids - set(repo.events))}, repository-only {len(set(repo.events) - hub.ids)}"
                                 f", posts {repo.statuses[-5:]}, log: {rows}") from None
        await asyncio.sleep(1.0)  # nothing more arrives later
        assert set(repo.events) == hub.ids
        assert repo.duplicates == BATCH  # the in-flight batch was sent again (and deduplicated), nothing else
        assert repo.invalid == 0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        hub.close()
        repo.stop()
        await sim.stop()
        if "Traceback" in log.read_text(errors="replace"):
            print(log.read_text(errors="replace")[-3000:])
