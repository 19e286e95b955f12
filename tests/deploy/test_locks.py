"""The two lock files agree: what a store runs (requirements-runtime.lock, deploy/Containerfile, the benchmarks'
runtime venv) is the runtime dependencies of pyproject.toml at the same pins the tests run with."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^ \\;\n]+)", re.M)


def _pins(name: str) -> dict[str, str]:
    return {k.lower().replace("_", "-"): v for k, v in PIN.findall((REPO / name).read_text())}


def _names(reqs: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in reqs}


def test_runtime_lock_pins_what_the_dev_lock_pins() -> None:
    runtime, dev = _pins("requirements-runtime.lock"), _pins("requirements.lock")
    differ = {k: (v, dev.get(k)) for k, v in runtime.items() if dev.get(k) != v}
    assert not differ, f"regenerate requirements-runtime.lock with -c requirements.lock (see README): {differ}"


def test_runtime_lock_holds_the_runtime_dependencies_and_no_test_tools() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = set(_pins("requirements-runtime.lock"))
    missing = _names(project["dependencies"]) - runtime
    assert not missing, f"runtime dependencies missing from requirements-runtime.lock: {missing}"
    dev_only = _names(project["optional-dependencies"]["dev"]) & runtime
    assert not dev_only, f"test tools in the runtime lock: {dev_only}"


def test_container_installs_the_runtime_lock() -> None:
    text = (REPO / "deploy" / "Containerfile").read_text()
    assert "requirements-runtime.lock" in text
    assert "requirements.lock" not in text.replace("requirements-runtime.lock", "")
