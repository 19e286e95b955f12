"""check-config and run agree (issue 15): every manifest goes through `edge-gateway check-config` and
`edge-gateway run` as processes. A manifest check-config refuses must make run refuse with exit 2 and the
same errors, or run fine; a manifest check-config accepts must run (no hub needed: the hub URL points at a
closed port and the uplink retries) until SIGTERM, then exit 0.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.edge.config_cases import CASES, DEV, Case, manifest, text_of

ROOT = Path(__file__).resolve().parents[2]
ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
STARTED = "gateway for store s1 started"
START_TIMEOUT_S = 90.0  # generous: 2 shared cores

# manifests check-config accepts and run must run
GOOD: dict[str, dict[str, str]] = {
    "base": {},
    "utc and a weighed shelf": {"timezone": "UTC", "devices": DEV % ("shelf-a1", "l1")},
    "numbers at their maxima": {"debounce_s": "604800", "telemetry_mb": "1048576",
                                "rules": "  mute_max_s: 604800\n  velocity_window_s: 31622400"},
    "sgln extension 0": {"sgln": "urn:epc:id:sgln:0614141.00001.0"},
}
# refused by check-config; run may run them (a rules file that does not fit: run keeps the inline rules)
RULES_FILE = Case("rules file names a missing shelf", {}, 3, "shelves.shelf-b9", "did you mean 'shelf-a1'?")
SMALL_LANE = Case("default min does not fit a 1-unit lane", {}, 22, "shelves[0].lanes[0]",
                  "min 2 is not below max/capacity 1", edit=("capacity: 24", "capacity: 1"))


def _check(path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge", "check-config", *flags, str(path)], capture_output=True,
                          text=True, env=ENV, cwd=ROOT, timeout=120, check=False)


def _run(path: Path, log: Path) -> tuple[int, str, bool]:
    """Run the daemon: (exit code, stderr, whether it had started and kept running until we stopped it)."""
    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(path)], stdout=err,
                                stderr=subprocess.STDOUT, env=ENV, cwd=ROOT)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while proc.poll() is None and STARTED not in log.read_text(errors="replace"):
            assert time.monotonic() < deadline, f"run neither started nor exited:\n{log.read_text()}"
            time.sleep(0.1)
        if proc.poll() is not None:
            return proc.returncode, log.read_text(errors="replace"), False
        # started: it must stay up (devices failing, hub away) until asked to stop
        time.sleep(2.0)
        alive = proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
        return rc, log.read_text(errors="replace"), alive
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _write(case: Case, tmp_path: Path) -> Path:
    path = tmp_path / "store.yaml"
    path.write_bytes(text_of(case, data_dir=str(tmp_path / "var")))
    return path


REFUSED = [*CASES, RULES_FILE, SMALL_LANE]


@pytest.mark.parametrize("case", REFUSED, ids=[c.name for c in REFUSED])
def test_refused_by_check_config_and_by_run_alike(case: Case, tmp_path: Path) -> None:
    path = _write(case, tmp_path)
    if case is RULES_FILE:
        rules = tmp_path / "rules.yaml"
        rules.write_text("defaults: {min: 1}\nshelves:\n  shelf-b9: {min: 3}\n")
        path.write_text(path.read_text().replace("rules:\n", f"rules:\n  file: {rules}\n"))
    check = _check(path)
    assert check.returncode == 2, check.stdout + check.stderr
    errors = [ln for ln in check.stderr.splitlines() if not ln.endswith("error(s)")]
    assert "Traceback" not in check.stderr
    where = rules if case is RULES_FILE else path
    assert errors == [line for line in errors if line.startswith(f"{where}:")]
    assert any(ln.startswith(f"{where}:{case.line}: {case.path or '<root>'}: ") and case.message in ln
               for ln in errors), check.stderr
    rc, log, alive = _run(path, tmp_path / "run.log")
    if rc == 2:  # refused: with the very same errors
        assert all(e in log.splitlines() for e in errors), log
        assert "Traceback" not in log
    else:  # or it ran, and kept running until SIGTERM
        assert (rc, alive) == (0, True), log


@pytest.mark.parametrize("over", list(GOOD.values()), ids=list(GOOD))
def test_accepted_by_check_config_runs(over: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "store.yaml"
    path.write_text(manifest(data_dir=str(tmp_path / "var"), **over))
    for flags in ((), ("--here",)):
        check = _check(path, *flags)
        assert check.returncode == 0, check.stderr
    rc, log, alive = _run(path, tmp_path / "run.log")
    assert (rc, alive) == (0, True), log
    assert "Traceback" not in log


# what this machine lacks: `check-config --here` and run refuse alike (run failed with a traceback, exit 1);
# the plain check-config, which may check a manifest for another machine, accepts them
MACHINE: dict[str, tuple[tuple[str, str], str, str]] = {
    "data_dir under a file": (("data_dir: {var}", "data_dir: {tmp}/afile/var"), "storage.data_dir",
                              "is not a directory"),
    "hub CA file missing": (("  reconnect_max: 1\n", "  reconnect_max: 1\n  tls: {{ca_file: {tmp}/nope.pem}}\n"),
                            "hub.tls.ca_file", "cannot read"),
    "hub CA file no PEM": (("  reconnect_max: 1\n", "  reconnect_max: 1\n  tls: {{ca_file: {tmp}/afile}}\n"),
                           "hub.tls.ca_file", "no usable CA certificate"),
    "API address not this machine's": (("listen: 127.0.0.1:0", "listen: 192.0.2.1:8080"), "api.listen",
                                       "cannot listen on 192.0.2.1"),
}


@pytest.mark.parametrize("name", list(MACHINE))
def test_this_machine_checked_by_check_config_here_and_run(name: str, tmp_path: Path) -> None:
    (old, new), field, message = MACHINE[name]
    (tmp_path / "afile").write_text("not a certificate\n")
    text = manifest(data_dir=str(tmp_path / "var"))
    old, new = old.format(var=tmp_path / "var"), new.format(tmp=tmp_path)
    assert old in text
    path = tmp_path / "store.yaml"
    path.write_text(text.replace(old, new))
    assert _check(path).returncode == 0  # nothing of this machine is looked at
    here = _check(path, "--here")
    assert here.returncode == 2, here.stderr
    errors = [ln for ln in here.stderr.splitlines() if not ln.endswith("error(s)")]
    assert len(errors) == 1 and f": {field}: " in errors[0] and message in errors[0], here.stderr
    rc, log, _ = _run(path, tmp_path / "run.log")
    assert rc == 2 and errors[0] in log.splitlines() and "Traceback" not in log, log
