"""The interpreter the benchmarks run our daemon with: a venv holding exactly `requirements-runtime.lock`.

What a store runs (deploy/Containerfile) is the gateway's runtime dependencies only. The development venv
also holds the test tools (pytest, hypothesis, schemathesis, playwright, ...), and some runtime libraries
import more when those are present (httpx loads rich, pygments and click for its CLI; paho loads dnspython;
FastAPI loads pydantic-extra-types). So the figures that are about the daemon's footprint and speed as
deployed (`rss`, `backlog`, `peers`) run it from
`bench/.cache/runtime-venv`, built here from the runtime lock (the same pins as requirements.lock, checked
by tests/deploy/test_locks.py) when missing or when the lock changed, with the source tree on PYTHONPATH.
The peers are measured the same way: each from its own installation (bench/.cache/tb-venv, node-red).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LOCK = REPO / "requirements-runtime.lock"
VENV = REPO / "bench" / ".cache" / "runtime-venv"
PY = VENV / "bin" / "python"


def _stamp() -> Path:
    return VENV / f".lock-{hashlib.sha256(LOCK.read_bytes()).hexdigest()[:16]}"


def build_venv(venv: Path, install: Sequence[str], log: Path, timeout: float) -> int:
    """Create `venv` when missing, then run `install` (argv), both logging to `log`; the install's exit code.

    Raises OSError or subprocess.SubprocessError when a step cannot run or times out.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as f:
        if not (venv / "bin" / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], stdout=f, stderr=f, timeout=300, check=True)
        return subprocess.run(list(install), stdout=f, stderr=f, timeout=timeout, check=False).returncode


def runtime_python(timeout: float = 600) -> tuple[str, str]:
    """(interpreter, note): the runtime venv's python, built when needed; the running one if it cannot be."""
    if not LOCK.exists():
        return sys.executable, f"development venv ({LOCK.name} missing)"
    if PY.exists() and _stamp().exists():
        return str(PY), f"runtime venv ({LOCK.name})"
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    log = REPO / "bench" / ".cache" / "runtime-venv.log"
    install = ([uv, "pip", "sync", "--python", str(PY), str(LOCK)] if uv
               else [str(PY), "-m", "pip", "install", "--require-hashes", "-r", str(LOCK)])
    try:
        rc = build_venv(VENV, install, log, timeout)
    except (OSError, subprocess.SubprocessError) as exc:
        rc, why = -1, str(exc)
    else:
        why = f"exit {rc}"
    if rc != 0:
        return sys.executable, f"development venv (building the runtime venv failed: {why}; see {log})"
    for old in VENV.glob(".lock-*"):
        old.unlink()
    _stamp().touch()
    return str(PY), f"runtime venv ({LOCK.name})"
