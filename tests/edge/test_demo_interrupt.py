"""Ctrl-C in a terminal stops the demo cleanly.

A terminal sends SIGINT to its whole foreground process group, the demo's helper processes included (the
private mosquitto that is the hub, the private dbus-daemon and BlueZ mock). They must not die under a
gateway that is still flushing: the demo stops the gateway first, then the simulators, then the broker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(120)
def test_ctrl_c_stops_demo_in_order(tmp_path: Path) -> None:
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge", "demo", "--api", "127.0.0.1:0", "--duration", "100",
             "--data-dir", str(tmp_path / "var"), "--quiet"],
            stdout=out, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True,  # its own foreground group
            env={**os.environ, "EDGE_API_TOKEN": "t" * 24},
        )
        try:
            deadline = time.monotonic() + 60
            while "demo: dashboard" not in log.read_text(errors="replace"):
                assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
                assert time.monotonic() < deadline, "the demo did not start in 60 s"
                time.sleep(0.2)
            time.sleep(3)  # devices online, events flowing to the hub
            helpers = psutil.Process(proc.pid).children(recursive=True)
            assert any(p.name().startswith("mosquitto") for p in helpers)
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does
            rc = proc.wait(60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
    text = log.read_text(errors="replace")
    assert rc == 0, text[-3000:]
    assert "gateway stopped" in text
    for bad in ("Traceback", "Future exception was never retrieved", "unreachable", "was lost"):
        assert bad not in text, f"{bad!r} at shutdown:\n{text[-3000:]}"
    still = [p for p in helpers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not still, f"left running: {[p.name() for p in still]}"
