"""A core task that fails is never silent: it is restarted with backoff, or the process exits 1.

Process tests run the real daemon (`python -m tests.faults.faulty run`: `edge-gateway run` plus a
fault-injecting device family) against a real mosquitto, with a real AF_UNIX datagram socket standing in
for systemd's notification socket. The deadline guard is tested in-process with a manual clock (a
periodic tick would mask a dead deadlines task for up to a second).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.spine import manifest_dict
from edge.brokers import Mosquitto, free_port
from edge.clock import ManualClock
from edge.config import parse_manifest
from edge.metrics import Metrics
from edge.pipeline import Pipeline
from edge.state import StockState
from firmware_sim.hub import HubProcess
from firmware_sim.world import demo_manifest_text
from tests.edge.test_deadlines import Alarm, NullOutbox
from tests.faults.daemon import NotifySocket, committed_sequences, holes_without_gap, hub_broker, short, until

pytestmark = pytest.mark.timeout(180)
ROOT = "retail/v1/demo"
REPO = Path(__file__).resolve().parents[2]


class Daemon:
    """`python -m tests.faults.faulty run --config FILE` with the notification socket in its environment."""

    def __init__(self, manifest: dict[str, Any], workdir: Path, env: dict[str, str]) -> None:
        path = workdir / "manifest.yaml"
        path.write_text(yaml.safe_dump(manifest))
        self.log = workdir / "gateway.log"
        out = self.log.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.faults.faulty", "run", "--config", str(path)],
                                     stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                     env={**os.environ, "PYTHONPATH": str(REPO), **env})
        out.close()

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[tuple[Mosquitto, HubProcess]]:
    with hub_broker(tmp_path) as pair:
        yield pair


def devices(trigger: Path) -> list[dict[str, Any]]:
    trigger.mkdir(exist_ok=True)
    return [{"id": "led", "type": "load", "cls": "ledger", "per_tick": 2, "interval_s": 0.1},
            {"id": "inject", "type": "fault", "trigger_dir": str(trigger)}]


def count(rec: HubProcess, source: str) -> int:
    return len({e["id"] for e in rec.events() if short(str(e["source"])) == source})


def test_pipeline_failure_is_logged_and_restarted(tmp_path: Path, hub: tuple[Mosquitto, HubProcess]) -> None:
    broker, rec = hub
    trigger = tmp_path / "trigger"
    data = tmp_path / "var"
    api = free_port()
    sd = NotifySocket(tmp_path / "notify.sock")
    gw = Daemon(manifest_dict(data, broker.url, devices(trigger), api_port=api), tmp_path,
                {"NOTIFY_SOCKET": sd.env, "WATCHDOG_USEC": "900000"})
    try:
        until(lambda: sd.seen("READY") == 1, 60, "READY=1", gw.log)
        until(lambda: count(rec, "led") > 10, 60, "ledger events at the hub", gw.log)
        (trigger / "encode").touch()  # a processor emits an event that cannot be serialised
        until(lambda: "core task pipeline failed" in gw.text(), 60, "the failure logged", gw.log)
        text = gw.text()
        assert "Traceback" in text and "TypeError" in text, text[-3000:]
        before = count(rec, "led")
        until(lambda: count(rec, "led") > before + 20, 60, "readings processed again after the restart", gw.log)
        assert gw.proc.poll() is None
        sd.drain()
        n = sd.seen("WATCHDOG")
        until(lambda: sd.seen("WATCHDOG") > n + 2, 30, "the watchdog fed again", gw.log)
    finally:
        rc = gw.stop()
        sd.close()
    assert rc == 0, gw.text()[-3000:]
    assert any("STOPPING" in m for m in sd.messages)
    committed = committed_sequences(data / "edge.db")
    until(lambda: not holes_without_gap(rec.events(), committed), 30, "no sequence hole at the hub", gw.log)


def test_committer_failure_ends_the_process_nonzero(tmp_path: Path, hub: tuple[Mosquitto, HubProcess]) -> None:
    broker, rec = hub
    trigger = tmp_path / "trigger"
    data = tmp_path / "var"
    sd = NotifySocket(abstract=f"edge-test-{os.getpid()}-{free_port()}")  # systemd's '@' form
    gw = Daemon(manifest_dict(data, broker.url, devices(trigger)), tmp_path,
                {"NOTIFY_SOCKET": sd.env, "WATCHDOG_USEC": "900000"})
    try:
        until(lambda: sd.seen("READY") == 1, 60, "READY=1", gw.log)
        until(lambda: count(rec, "led") > 10, 60, "ledger events at the hub", gw.log)
        until(lambda: sd.seen("WATCHDOG") > 1, 30, "the watchdog fed", gw.log)
        (trigger / "badwrite").touch()  # a state write no retry can commit
        until(lambda: gw.proc.poll() is not None, 60, "the process ends", gw.log)
    finally:
        rc = gw.stop()
        sd.close()
    text = gw.text()
    assert rc == 1, text[-3000:]
    assert "core task outbox-committer failed" in text and "no such table: no_such_table" in text, text[-3000:]
    stopping = [m for m in sd.messages if "STOPPING" in m]
    assert stopping and "outbox-committer" in stopping[0].get("STATUS", ""), sd.messages[-3:]
    # what was committed before the failure reaches the hub when the next process starts (systemd's restart)
    committed = committed_sequences(data / "edge.db")
    again = Daemon(manifest_dict(data, broker.url, []), tmp_path, {})
    try:
        until(lambda: again.text().count("gateway for store demo started") == 2, 60, "restarted", again.log)
        until(lambda: not holes_without_gap(rec.events(), committed), 60, "the committed backlog delivered",
              again.log)
    finally:
        assert again.stop() == 0


async def test_deadlines_survive_a_reactor_that_raises() -> None:
    clock = ManualClock()
    m = parse_manifest(demo_manifest_text())
    p = Pipeline(stock=StockState(m), outbox=NullOutbox(), clock=clock, metrics=Metrics(),  # type: ignore[arg-type]
                 tick_interval=3600.0)
    bad = Alarm(clock.now() + timedelta(seconds=1), fail=True)
    p.add_reactor(bad)
    task = asyncio.create_task(p.run_deadlines())
    try:
        for _ in range(15):
            clock.advance(0.1)
            for _ in range(3):
                await asyncio.sleep(0)
        assert bad.ticks, "the failing reactor was never ticked"
        good = Alarm(clock.now() + timedelta(seconds=1))
        p.add_reactor(good)
        p.route([], clock.now())  # nothing new: the deadline task must still pick up the new deadline
        p._deadline_changed.set()
        for _ in range(15):
            clock.advance(0.1)
            for _ in range(3):
                await asyncio.sleep(0)
        assert not task.done(), task.exception() if task.done() else None
        assert good.ticks, "a deadline after the failure never fired"
        assert p.metrics.value("edge_processor_errors_total", processor="Alarm") == 1
    finally:
        task.cancel()
