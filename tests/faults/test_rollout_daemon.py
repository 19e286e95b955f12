"""Manifest rollout against the real daemon (`python -m edge run`), a real mosquitto as the hub and simulated
devices (firmware_sim: a serial shelf on a pty, an LLRP reader on TCP) in the test process.

One store's day of changes: min levels (rules hot, no device restarts), a unit weight (only the shelf that
weighs it restarts; the LLRP reader keeps its one TCP connection) while the hub is down (the apply completes
on its own; the applied event reaches the hub when it is back), a reader pointed at a dead port over the signed
MQTT command (the gate fails, the previous version is back and the reply says why), bad manifests refused
with nothing changed. Then a power cut (SIGKILL) at each step of an apply: the daemon comes back on the old or
the new version, never a mixture."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from edge.brokers import Mosquitto, free_port
from edge.clock import SystemClock
from edge.config import parse_manifest
from edge.rollout import STEPS, ManifestApplied, ManifestRolledBack
from firmware_sim.hub import HubCommander, HubProcess
from firmware_sim.rfid.llrp_reader import LlrpReaderSim
from firmware_sim.rfid.population import Population
from firmware_sim.shelf import SerialShelfSim, lane_sections, lanes_for
from firmware_sim.world import World, demo_manifest_text

pytestmark = pytest.mark.timeout(300)
REPO = Path(__file__).resolve().parents[2]
ROOT = "retail/v1/demo"
ADMIN = "admin-token-for-rollout-tests"
KEY = "k" * 40  # the hub's command key (given to the daemon through ${EDGE_TEST_CMD_KEY})


@dataclass
class Store:
    """The simulated devices, the manifest file and the daemon's API."""

    shelf: SerialShelfSim
    reader: LlrpReaderSim
    config: Path
    api: str
    log: Path
    proc: subprocess.Popen[bytes] | None = None


async def until(pred: Callable[[], Any], timeout: float, what: str, log: Path | None = None) -> Any:
    """Poll `pred` (sync) until it returns something true; the daemon's log tail in the failure."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
            raise AssertionError(f"timed out waiting for: {what}\n--- daemon log tail ---\n{tail}")
        await asyncio.sleep(0.1)


def api_get(store: Store, path: str) -> Any:
    try:
        r = httpx.get(store.api + path, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=5)
    except httpx.HTTPError:
        return None
    if r.status_code != 200:
        print(f"GET {path}: {r.status_code} {r.text[:300]}")
        return None
    return r.json()


async def post_manifest(store: Store, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with httpx.AsyncClient(timeout=120) as client:
        r = await client.post(store.api + "/api/v1/manifest", json=body, headers={"Authorization": f"Bearer {ADMIN}"})
    return r.status_code, r.json()


async def cli_apply(store: Store, *args: str) -> tuple[int, str]:
    """`edge-gateway apply ARGS` against the daemon: (exit code, stdout + stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge", "apply", *args, "--url", store.api, "--token", ADMIN,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    out, _ = await proc.communicate()
    return int(proc.returncode or 0), out.decode()


def start_daemon(store: Store, kill_at: str | None = None) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "EDGE_TEST_CMD_KEY": KEY}
    env.pop("EDGE_ROLLOUT_KILL_AT", None)
    if kill_at is not None:
        env["EDGE_ROLLOUT_KILL_AT"] = kill_at
    out = store.log.open("ab")
    store.proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(store.config)],
                                  stdout=out, stderr=subprocess.STDOUT, env=env, cwd=store.config.parent)
    out.close()


async def daemon_ready(store: Store) -> dict[str, Any]:
    """Wait until the API answers and both devices are online; the running manifest."""

    def online() -> bool:
        devs = api_get(store, "/api/v1/devices")
        items = devs.get("items", devs) if isinstance(devs, dict) else devs
        return bool(items) and all(d["state"] == "online" for d in items)

    await until(online, 60, "daemon up, devices online", store.log)
    got = api_get(store, "/api/v1/manifest")
    assert got is not None
    return dict(got)


async def stop_daemon(store: Store) -> None:
    proc = store.proc
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        await until(lambda: proc.poll() is not None, 30, "daemon stopped", store.log)
    store.proc = None


@contextlib.asynccontextmanager
async def simulated_store(tmp: Path, hub: Mosquitto, gate_s: float = 15) -> AsyncIterator[Store]:
    world = World(parse_manifest(demo_manifest_text(), "demo"), SystemClock())
    lanes = lanes_for(world, "shelf-a1")
    shelf = SerialShelfSim(world, tmp / "shelf.tty", lanes, hz=10)
    shelf.start()
    reader = LlrpReaderSim(Population(world, {1: "apparel"}, reliability=1.0))
    port = await reader.start()
    raw: dict[str, Any] = yaml.safe_load(demo_manifest_text())
    api_port = free_port()
    raw.update({
        "hub": {"url": hub.url, "reconnect_max": 0.5,
                "commands": {"keys": [{"id": "hq", "secret": "${EDGE_TEST_CMD_KEY}"}]}},
        "api": {"listen": f"127.0.0.1:{api_port}", "tokens": [{"token": ADMIN, "roles": ["admin"]}],
                "max_body_bytes": 4 * 1024 * 1024},  # rollout.max_bytes (1 MiB) is the limit that refuses
        "storage": {"data_dir": str(tmp / "var")},
        "rollout": {"gate_s": gate_s, "settle_s": 1},
        "devices": [
            {"id": "shelf-a1-ctrl", "type": "shelf_serial", "port": str(shelf.port.link),
             "lanes": lane_sections(lanes)},
            {"id": "rfid-llrp-1", "type": "llrp", "host": "127.0.0.1", "port": port, "antennas": {1: "apparel"},
             "cycle_ms": 300, "connect_timeout_s": 1.0, "reply_timeout_s": 1.0},
        ],
    })
    config = tmp / "store.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    store = Store(shelf, reader, config, f"http://127.0.0.1:{api_port}", tmp / "daemon.log")
    try:
        yield store
    finally:
        if store.proc is not None and store.proc.poll() is None:
            store.proc.kill()
            store.proc.wait(10)
        await shelf.stop()
        await reader.stop()


def raw_of(doc: dict[str, Any]) -> dict[str, Any]:
    return dict(doc["manifest"])


async def test_changes_hot_gate_rollback_and_refusals(tmp_path: Path) -> None:
    hub = Mosquitto(workdir=tmp_path / "hub", persistent=True)
    hub.start()
    recorder = HubProcess(hub.port, f"{ROOT}/#", tmp_path / "hub.log")
    try:
        async with simulated_store(tmp_path, hub) as store:
            start_daemon(store)
            base = await daemon_ready(store)
            assert (base["version"], base["origin"]) == (0, "bootstrap")
            assert base["manifest"]["hub"]["commands"]["keys"][0]["secret"] == "${EDGE_TEST_CMD_KEY}"  # not the key
            assert store.reader.stats.connections == 1

            # 1. min levels by store IT's `edge-gateway apply --patch` (the next version): the rules hot, no device
            # restarted
            patch = tmp_path / "min.yaml"
            patch.write_text("rules:\n  defaults: {min: 6}\n")
            code, out = await cli_apply(store, str(patch), "--patch")
            assert code == 0 and out.startswith("version 1 applied") and "restarted: none" in out, out
            cells = api_get(store, "/api/v1/stock?shelf=shelf-a1")
            assert cells is not None and {c["min"] for c in cells["items"]} == {6}

            # 2. a unit weight, while the hub is down: only the shelf that weighs it restarts, the reader keeps
            # its connection; the apply completes without the hub; the hub gets the event when it is back
            hub.stop()
            catalog = [dict(c) for c in raw_of(base)["catalog"]]
            catalog[0]["unit_weight_g"] = 360  # cola-330, on shelf-a1
            status, reply = await post_manifest(store, {"version": 2, "patch": {"catalog": catalog}})
            assert status == 200, reply
            assert (reply["changed"], reply["restarted"]) == (["catalog"], ["shelf-a1-ctrl"])
            assert store.reader.stats.connections == 1
            hub.start()
            await until(lambda: [e for e in recorder.events("/events/manifest") if e["data"]["version"] == 2],
                        60, "the applied event of version 2 at the hub", store.log)

            # 3. the reader pointed at a dead port, over the signed MQTT command: the gate fails, version 2 is back
            devices = [dict(d) for d in raw_of(base)["devices"]]
            devices[1]["port"] = free_port()
            hq = HubCommander(hub.port, ROOT, kid="hq", secret=KEY)
            try:
                req = hq.request("manifest.apply", {"version": 3, "patch": {"devices": devices}})
                hq.publish("manifest.apply", orjson.dumps(req))  # once: the reply comes after the gate
                answer = await asyncio.to_thread(hq.reply, req["id"], 90)
                assert answer is not None, "no reply to manifest.apply"
                unsigned = await asyncio.to_thread(hq.call, "manifest.apply", {"version": 4, "patch": {}},
                                                   sign=False)
            finally:
                hq.close()
            assert answer["ok"] is False and answer["error"]["code"] == "rolled_back", answer
            assert "rfid-llrp-1" in answer["error"]["message"] and "back to 2" in answer["error"]["message"]
            assert unsigned["ok"] is False and unsigned["error"]["code"] == "unauthorized"
            await until(lambda: store.reader.connected, 30, "the reader reconnected after the rollback", store.log)
            now = api_get(store, "/api/v1/manifest")
            assert now["version"] == 2
            assert now["manifest"]["catalog"][0]["unit_weight_g"] == 360
            assert [(h["version"], h["outcome"]) for h in now["history"]] == [(1, "applied"), (2, "applied"),
                                                                               (3, "rolled_back")]
            await until(lambda: [e for e in recorder.events("/events/manifest")
                                 if e["type"] == ManifestRolledBack.TYPE and e["data"]["version"] == 3],
                        30, "the rolled-back event at the hub", store.log)
            applied = [e["data"]["version"] for e in recorder.events("/events/manifest")
                       if e["type"] == ManifestApplied.TYPE]
            assert applied == [1, 2]

            # 4. bad manifests: refused with the reason, nothing changes (not even the history)
            for body, want, words in (
                ({"version": 2, "patch": {"rules": {"defaults": {"min": 5}}}}, "out_of_order", "not above 3"),
                ({"version": 9, "patch": {"shelves": [{"id": "s", "zone": "nowhere", "lanes": [
                    {"id": "l1", "sku": "cola-330", "capacity": 5}]}]}}, "invalid", "zone 'nowhere'"),
                ({"version": 9, "patch": {"hub": {"keepalive": 60}}}, "invalid", "hub cannot change"),
                ({"version": 9, "manifest": "store: {id: demo}\n" + "#" * 1_100_000}, "too_large", "max_bytes"),
            ):
                status, reply = await post_manifest(store, body)
                assert reply["error"]["code"] == want and words in reply["error"]["message"], reply
            bad = tmp_path / "bad.yaml"
            whole = yaml.safe_load(store.config.read_text())
            whole["shelves"][0]["lanes"][0]["sku"] = "cola-33"  # a typo: no such SKU
            bad.write_text(yaml.safe_dump(whole))
            code, out = await cli_apply(store, str(bad))
            assert code == 2 and "invalid" in out and "cola-33" in out, out
            after = api_get(store, "/api/v1/manifest")
            assert (after["version"], after["sha256"], after["history"]) == (2, now["sha256"], now["history"])
            info = [m.json() for m in recorder.snapshot() if m.topic == f"{ROOT}/state/info"]
            assert info and info[-1]["manifest"]["version"] == 2 and info[-1]["manifest"]["sha256"] == now["sha256"]
            await stop_daemon(store)
    finally:
        recorder.close()
        hub.stop()


async def test_power_cut_at_each_step_leaves_old_or_new(tmp_path: Path) -> None:
    hub = Mosquitto(workdir=tmp_path / "hub")
    hub.start()
    try:
        async with simulated_store(tmp_path, hub) as store:
            start_daemon(store)
            running = await daemon_ready(store)
            weight = 355.0
            for n, step in enumerate(STEPS, start=1):
                await stop_daemon(store)
                start_daemon(store, kill_at=step)
                await daemon_ready(store)
                catalog = [dict(c) for c in raw_of(running)["catalog"]]
                catalog[0]["unit_weight_g"] = weight + n
                with contextlib.suppress(httpx.HTTPError):  # the process dies before it answers
                    await post_manifest(store, {"version": n, "patch": {"catalog": catalog}})
                proc = store.proc
                assert proc is not None
                await until(lambda p=proc: p.poll() is not None, 60, f"killed at {step}", store.log)  # type: ignore[misc]
                assert proc.returncode == -signal.SIGKILL
                start_daemon(store)
                back = await daemon_ready(store)
                committed = step == "pointer-written"
                expect = running if not committed else None
                if committed:
                    assert back["version"] == n and back["manifest"]["catalog"][0]["unit_weight_g"] == weight + n
                else:
                    assert expect is not None
                    assert (back["version"], back["sha256"]) == (expect["version"], expect["sha256"]), step
                    assert back["manifest"]["catalog"][0]["unit_weight_g"] == \
                        expect["manifest"]["catalog"][0]["unit_weight_g"]
                    outcome = {h["version"]: h["outcome"] for h in back["history"]}
                    assert outcome[n] == "interrupted", back["history"]
                cells = api_get(store, "/api/v1/stock?shelf=shelf-a1")
                assert cells is not None
                running = back
            await stop_daemon(store)
    finally:
        hub.stop()
