"""Core-task supervision, /healthz's core-task check, the sd_notify protocol and the systemd unit.

The gateway runs in-process here (real database, real API over TCP); the daemon-as-a-process tests of
the watchdog, the uplink and the disk are in tests/edge/test_health_daemon.py and tests/faults/.
"""

from __future__ import annotations

import asyncio
import configparser
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edge.config import Manifest
from edge.gateway import Gateway
from edge.health import CoreTasks
from edge.metrics import Metrics
from edge.sdnotify import Notifier
from edge.supervisor import Backoff

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def dgram(tmp_path: Path) -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(tmp_path / "notify"))
    s.settimeout(5)
    yield s
    s.close()


@pytest.mark.parametrize(
    ("env", "watchdog_s"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "junk"}, None),
        ({}, None),
    ],
)
def test_notifier_reads_watchdog_usec(tmp_path: Path, dgram: socket.socket, env: dict[str, str],
                                      watchdog_s: float | None) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify"), **env})
    assert n.watchdog_s == watchdog_s
    assert n.ready("up")
    assert dgram.recv(4096) == b"READY=1\nSTATUS=up"
    assert n.watchdog()
    assert dgram.recv(4096) == b"WATCHDOG=1"
    assert n.stopping()
    assert dgram.recv(4096) == b"STOPPING=1"
    n.close()


def test_notifier_abstract_namespace_and_absent_socket() -> None:
    name = f"edge-health-{os.getpid()}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(b"\0" + name.encode())
    s.settimeout(5)
    try:
        n = Notifier({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "5000000", "WATCHDOG_PID": str(os.getpid())})
        assert n.watchdog_s == 5.0
        assert n.watchdog()
        assert s.recv(4096) == b"WATCHDOG=1"
        n.close()
    finally:
        s.close()
    assert not Notifier({}).enabled and not Notifier({}).ready()  # not under systemd: nothing to do
    gone = Notifier({"NOTIFY_SOCKET": "@" + name})  # the manager went away: False, no exception
    assert not gone.watchdog()


async def test_restart_policy_escalates_after_too_many_failures() -> None:
    core = CoreTasks(Metrics(), backoff=Backoff(initial=0.01, maximum=0.02), max_restarts=3, window_s=60)
    runs = 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        raise RuntimeError(f"boom {runs}")

    core.spawn("flaky", flaky, policy="restart")
    await asyncio.wait_for(core.failed.wait(), 10)
    assert runs == 4  # the first run and three restarts
    assert core.states() == {"flaky": "failed"}
    assert core.fatal == ("flaky", "RuntimeError: boom 4")
    assert core.metrics.value("edge_core_task_failures_total", task="flaky") == 4


async def test_a_task_that_ends_counts_as_failed_and_a_stop_does_not() -> None:
    core = CoreTasks(Metrics())

    async def quits() -> None:
        return None

    core.spawn("quits", quits, policy="exit")
    await asyncio.wait_for(core.failed.wait(), 10)
    assert core.fatal == ("quits", "ended unexpectedly")
    calm = CoreTasks(Metrics())
    calm.stopping = True
    calm.spawn("quits", quits, policy="exit")
    await asyncio.sleep(0.05)
    assert not calm.failed.is_set() and calm.states() == {"quits": "done"}


async def test_healthz_503_names_a_failed_core_task(demo_manifest: Manifest, tmp_path: Path) -> None:
    m = demo_manifest.model_copy(update={
        "api": demo_manifest.api.model_copy(update={"enabled": True, "listen": "127.0.0.1:0"}),
        "devices": [],
    })
    gw = Gateway(m, hub_url="mqtt://127.0.0.1:1", data_dir=tmp_path, install_rules=False)
    async with gw:
        port = gw.api.port
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            r = await client.get("/healthz")
            body = r.json()
            # the hub is unreachable (nothing listens on port 1): reported, not a failure
            assert r.status_code == 200, body
            assert body["checks"]["uplink"]["connected"] is False
            assert "hub unreachable" in body["checks"]["uplink"]["reason"]
            assert body["checks"]["core_tasks"]["ok"] is True

            async def broken() -> None:
                raise ValueError("a bug")

            gw.core.spawn("rules-watch", broken, policy="exit")
            await asyncio.wait_for(gw.core.failed.wait(), 10)
            r = await client.get("/healthz")
            body = r.json()
            assert r.status_code == 503, body
            assert body["checks"]["core_tasks"]["ok"] is False
            assert "rules-watch failed: ValueError: a bug" in body["checks"]["core_tasks"]["reason"]
            metrics = (await client.get("/metrics")).text
            assert 'edge_core_task_up{task="rules-watch"} 0' in metrics
            assert 'edge_health_ok{check="core_tasks"} 0' in metrics
            assert 'edge_core_task_up{task="outbox-committer"} 1' in metrics


def test_systemd_unit_uses_notify_and_watchdog() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(ROOT / "deploy/edge-gateway.service")
    svc = unit["Service"]
    assert svc["Type"] == "notify"
    assert svc["NotifyAccess"] == "main"
    assert int(svc["WatchdogSec"]) > 0
    assert "StartLimitIntervalSec" not in svc  # systemd ignores it there
    assert unit["Unit"]["StartLimitIntervalSec"] == "0"
