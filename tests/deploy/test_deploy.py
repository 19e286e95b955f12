"""deploy/ stays usable: the example manifest validates, the CLI says so, the units parse."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

from edge.config import load_manifest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = str(ROOT / "deploy/store-manifest.example.yaml")
ENV = {"HUB_PASSWORD": "x", "EDGE_TOKEN_STAFF": "s" * 20, "EDGE_TOKEN_HQ": "h" * 20, "EDGE_TOKEN_APP": "a" * 20,
       "EDGE_TOKEN_ADMIN": "d" * 20, "EDGE_CMD_KEY_HQ": "k" * 40}


def test_example_manifest_is_valid() -> None:
    m = load_manifest(ROOT / "deploy/store-manifest.example.yaml", env=ENV)
    assert m.store.id == "s0421"
    assert {d.type for d in m.devices} == {"shelf_serial", "llrp", "scanner_serial", "ble", "door_counter"}
    assert m.hub.tls is not None and m.hub.tls.verify


def test_check_config_cli_ok_and_errors(tmp_path: Path) -> None:
    ok = subprocess.run([sys.executable, "-m", "edge", "check-config", EXAMPLE],
                        capture_output=True, text=True, env={**ENV, "PATH": "/usr/bin:/bin"}, check=False)
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("store:\n  id: s1\nhub:\n  url: http://nope\ndevices:\n  - {id: x, type: llrp}\n")
    res = subprocess.run([sys.executable, "-m", "edge", "check-config", str(bad)], capture_output=True, text=True,
                         check=False)
    assert res.returncode == 2
    assert f"{bad}:4: hub.url: use mqtt://host[:port]" in res.stderr
    assert "devices[0].host" in res.stderr and "required" in res.stderr


def test_missing_secret_names_the_variable(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "edge", "check-config", EXAMPLE],
                         capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, check=False)
    assert res.returncode == 2
    assert "hub.password: environment variable HUB_PASSWORD is not set" in res.stderr


def test_systemd_unit_is_hardened() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(ROOT / "deploy/edge-gateway.service")
    svc = unit["Service"]
    assert svc["DynamicUser"] == "yes"
    assert svc["StateDirectory"] == "edge-gateway"
    assert svc["ProtectSystem"] == "strict"
    assert svc["Restart"] == "always"
    assert "run --config" in svc["ExecStart"]


def test_check_config_names_line_and_fix_in_the_example(tmp_path: Path) -> None:
    # the example with an operator's typical slips: each reported at its line, with the fix, exit 2
    text = Path(EXAMPLE).read_text(encoding="utf-8")
    for old, new in (("timezone: Europe/Amsterdam", "timezone: Europe/Amsterdm"),
                     ("host: 10.20.0.31\n", "host: 10.20.0.31:5084\n"),
                     ("lanes: [{channel: \"1\", shelf: shelf-a1,", "lanes: [{channel: \"1\", shelf: shelf-a2,")):
        assert old in text
        text = text.replace(old, new)
    bad = tmp_path / "store.yaml"
    bad.write_text(text, encoding="utf-8")
    lines = text.splitlines()

    def line_of(fragment: str) -> int:
        return next(i for i, ln in enumerate(lines, 1) if fragment in ln)

    res = subprocess.run([sys.executable, "-m", "edge", "check-config", str(bad)], capture_output=True, text=True,
                         env={**ENV, "PATH": "/usr/bin:/bin"}, check=False)
    assert res.returncode == 2
    assert res.stderr.splitlines()[:-1] == [
        f"{bad}:{line_of('Amsterdm')}: store.timezone: 'Europe/Amsterdm' is not a known IANA time zone: did you "
        "mean 'Europe/Amsterdam'? (see `timedatectl list-timezones`)",
        f"{bad}:{line_of('10.20.0.31:5084')}: devices[1].host: '10.20.0.31:5084' has a port: write host: "
        "10.20.0.31 and put the port in port: 5084",
        f"{bad}:{line_of('shelf-a2')}: devices[0].lanes[0].shelf: shelf 'shelf-a2' is not defined under shelves: "
        "did you mean 'shelf-a1'? (or add it there)",
    ], res.stderr
