"""The daemon as a process under a stand-in for systemd: READY, WATCHDOG only while making progress, STOPPING;
/healthz fails on uplink lag while the hub is reachable, and does not fail while the hub is unreachable.

The hub is a real mosquitto; "reachable but not acknowledging" is the broker frozen with SIGSTOP (its TCP
connections stay open, no PUBACK comes back); "unreachable" is the broker killed. systemd's notification
socket is a real AF_UNIX datagram socket whose path goes to the daemon in NOTIFY_SOCKET.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from bench.spine import manifest_dict
from edge.brokers import Mosquitto, free_port
from firmware_sim.hub import HubProcess
from tests.faults.daemon import NotifySocket, healthz, short, until

pytestmark = pytest.mark.timeout(180)
REPO = Path(__file__).resolve().parents[2]


def test_watchdog_and_healthz_follow_the_uplink(tmp_path: Path) -> None:
    broker = Mosquitto(workdir=tmp_path / "mq")
    broker.start()
    rec = HubProcess(broker.port, "retail/v1/demo/#", tmp_path / "hub.log")
    api = free_port()
    manifest = manifest_dict(tmp_path / "var", broker.url,
                             [{"id": "led", "type": "load", "cls": "ledger", "per_tick": 2, "interval_s": 0.1}],
                             api_port=api, keepalive=60)
    manifest["health"] = {"uplink_lag_max_s": 2, "stall_s": 2}
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump(manifest))
    sd = NotifySocket(tmp_path / "notify.sock")
    log = tmp_path / "gateway.log"
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bench.load", "run", "--config", str(path)], stdout=out,
                                stderr=subprocess.STDOUT, cwd=REPO,
                                env={**os.environ, "PYTHONPATH": str(REPO), "NOTIFY_SOCKET": sd.env,
                                     "WATCHDOG_USEC": "1500000"})
    assert broker.proc is not None
    frozen = False
    try:
        until(lambda: sd.seen("READY") == 1, 60, "READY=1", log)
        until(lambda: sd.seen("WATCHDOG") >= 2, 30, "WATCHDOG=1 while healthy", log)
        until(lambda: healthz(api)[0] == 200, 30, "/healthz 200", log)
        until(lambda: sum(short(e["source"]) == "led" for e in rec.events()) > 10, 30, "events at the hub", log)

        broker.proc.send_signal(signal.SIGSTOP)  # reachable (TCP open), acknowledges nothing
        frozen = True

        def stalled() -> bool:
            status, body = healthz(api)
            checks = body.get("checks", {})
            return (status == 503 and checks["uplink"]["ok"] is False and checks["uplink"]["connected"] is True
                    and "uplink: no progress" in checks["progress"]["reason"])

        until(stalled, 60, "/healthz 503: uplink lag and no uplink progress while the hub is reachable", log)
        sd.drain()
        fed = sd.seen("WATCHDOG")
        time.sleep(2.0)  # a window of 4 health samples (every 0.5 s at WatchdogSec 1.5 s)
        assert stalled()
        assert sd.seen("WATCHDOG") == fed, "the watchdog was fed while the uplink made no progress"

        broker.proc.send_signal(signal.SIGCONT)
        frozen = False
        until(lambda: sd.seen("WATCHDOG") > fed + 1, 60, "the watchdog fed again once the hub acknowledges", log)
        until(lambda: healthz(api)[0] == 200, 60, "/healthz 200 again", log)

        broker.kill()  # the store's internet is down: the daemon is still healthy
        until(lambda: healthz(api)[1].get("checks", {}).get("uplink", {}).get("connected") is False, 60,
              "hub seen unreachable", log)
        status, body = healthz(api)
        assert status == 200, body
        assert "hub unreachable" in body["checks"]["uplink"]["reason"]
        fed = sd.seen("WATCHDOG")
        until(lambda: sd.seen("WATCHDOG") > fed + 2, 30, "the watchdog fed while offline", log)
    finally:
        if frozen and broker.proc is not None:
            broker.proc.send_signal(signal.SIGCONT)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
        sd.close()
        rec.close()
        broker.stop()
    assert rc == 0, log.read_text()[-3000:]
    assert "STOPPING" in sd.messages[-1], sd.messages[-3:]
