"""/healthz's `clock` check: an unsynchronised or unknown clock is reported, never a 503 (docs/install.md "Time");
the kernel's NTP state through adjtimex(2); timedated's answer through `timedatectl` (a stand-in script on PATH:
this machine has no system bus)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from edge.config import Manifest
from edge.gateway import Gateway
from edge.health import ClockSync, kernel_clock_sync, timedated_clock_sync


@pytest.mark.parametrize(("sync", "reason", "gauge"), [
    ((False, "adjtimex"), "clock NOT synchronised: event times and token expiry may be off; enable NTP "
                          "(timedatectl set-ntp true) (adjtimex)", "0"),
    ((True, "timedatectl"), "clock synchronised (timedatectl)", "1"),
    ((None, "adjtimex: Operation not permitted; timedatectl: no answer"),
     "clock synchronisation unknown (adjtimex: Operation not permitted; timedatectl: no answer)", "-1"),
])
async def test_clock_check_warns_and_never_fails(demo_manifest: Manifest, tmp_path: Path, sync: ClockSync,
                                                 reason: str, gauge: str) -> None:
    m = demo_manifest.model_copy(update={
        "api": demo_manifest.api.model_copy(update={"enabled": True, "listen": "127.0.0.1:0"}),
        "devices": [],
    })
    gw = Gateway(m, hub_url="mqtt://127.0.0.1:1", data_dir=tmp_path, install_rules=False)
    async with gw:

        async def read() -> ClockSync:
            return sync

        gw.health.read_clock = read
        gw.health._clock_at = None  # measure now, not a minute after the start's reading
        assert await gw.health.measure_clock() == sync
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.api.port}") as client:
            r = await client.get("/healthz")
            body = r.json()
            assert r.status_code == 200, body
            assert body["checks"]["clock"] == {"ok": True, "synchronized": sync[0], "reason": reason}
            metrics = (await client.get("/metrics")).text
            assert f"edge_clock_synchronized {gauge}" in metrics
            assert 'edge_health_ok{check="clock"} 1' in metrics


def test_kernel_clock_state_is_readable_here() -> None:
    synced, how = kernel_clock_sync()
    assert how == "adjtimex" and isinstance(synced, bool)


@pytest.mark.parametrize(("script", "expected"), [
    ('echo yes', (True, "timedatectl")),
    ('echo no', (False, "timedatectl")),
    ('echo "Failed to connect to bus: Host is down" >&2; exit 1', (None, "timedatectl: Failed to connect to bus: "
                                                                          "Host is down")),
    ('echo maybe', (None, "timedatectl: maybe")),
    ("exec sleep 30", (None, "timedatectl: no answer")),
])
async def test_timedated_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str,
                                 expected: ClockSync) -> None:
    tool = tmp_path / "timedatectl"
    tool.write_text(f'#!/bin/sh\n[ "$*" = "show -p NTPSynchronized --value" ] || exit 9\n{script}\n')
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert await timedated_clock_sync(wait_s=1.0) == expected


async def test_timedatectl_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    synced, how = await timedated_clock_sync()
    assert synced is None and how.startswith("timedatectl: ")
