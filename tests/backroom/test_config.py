"""The manifest's `backroom:` section (edge/backroomconfig.py): bad input is refused with the field, its line and
the fix, by `parse_manifest` and by `edge-gateway check-config` (exit 2)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge.config import parse_manifest
from edge.errors import ConfigError
from firmware_sim.world import demo_manifest_text

ROOT = Path(__file__).resolve().parents[2]
RFID = {"id": "rfid-1", "type": "llrp", "host": "127.0.0.1", "antennas": {1: "apparel", 3: "backroom"}}
SCAN = {"id": "scan-1", "type": "scanner_serial", "port": "/dev/null", "role": "receive"}


def text(locations: list[dict[str, Any]], devices: list[dict[str, Any]]) -> str:
    raw = yaml.safe_load(demo_manifest_text())
    raw["backroom"] = {"locations": locations}
    raw["devices"] = devices
    return yaml.safe_dump(raw, allow_unicode=True, sort_keys=False)


def errors(locations: list[dict[str, Any]], devices: list[dict[str, Any]]) -> dict[str, str]:
    with pytest.raises(ConfigError) as err:
        parse_manifest(text(locations, devices), "m.yaml")
    assert all(i.line for i in err.value.issues), err.value.issues
    return {i.path: i.message for i in err.value.issues}


ROOM = {"id": "backroom", "names": {"zh-CN": "仓库", "en": "Back room"}, "counted_by": ["rfid"]}


def test_a_valid_section() -> None:
    m = parse_manifest(text([ROOM, {"id": "cage", "counted_by": ["receiving"], "scanners": ["scan-1"]}],
                            [RFID, SCAN]), "m.yaml")  # fmt: skip
    assert [x.id for x in m.backroom.locations] == ["backroom", "cage"]
    assert m.backroom.receiving_for("scan-1") is m.backroom.locations[1]


@pytest.mark.parametrize(
    ("locations", "devices", "path", "says"),
    [
        ([ROOM], [{**RFID, "antennas": {3: "backrom"}}], "devices[0].antennas[3]",
         "zone 'backrom' is not defined under zones: did you mean 'backroom'?"),
        ([{**ROOM, "counted_by": ["receiving"]}], [RFID], "devices[0].antennas[3]",
         "reads back-room location 'backroom', which is not counted by rfid: add rfid to "
         "backroom.locations[0].counted_by"),
        ([{**ROOM, "id": "apparel"}], [{**RFID, "antennas": {1: "apparel"}}], "backroom.locations[0].id",
         "'apparel' is also a zone id"),
        ([ROOM, ROOM], [RFID], "backroom.locations[1].id", "duplicate back-room location id 'backroom'"),
        ([{**ROOM, "counted_by": ["receiving"], "scanners": ["scan-9"]}], [SCAN], "backroom.locations[0].scanners[0]",
         "device 'scan-9' is not defined under devices: name a scanner's id"),
        ([{**ROOM, "counted_by": ["receiving"], "scanners": ["rfid-1"]}], [{**RFID, "antennas": {1: "apparel"}}, SCAN],
         "backroom.locations[0].scanners[0]", "device 'rfid-1' is not a scanner"),
        ([{**ROOM, "scanners": ["scan-1"]}], [RFID, SCAN], "backroom.locations[0].scanners",
         "add receiving to counted_by"),
        ([{**ROOM, "skus": ["tee-xl"]}], [RFID], "backroom.locations[0].skus[0]",
         "sku 'tee-xl' is not defined under catalog:"),
        ([{**ROOM, "counted_by": []}], [RFID], "backroom.locations[0].counted_by", "counted_by is empty"),
        ([{**ROOM, "counted_by": ["rfid", "scale"]}], [RFID], "backroom.locations[0].counted_by[1]", "'rfid' or "),
        ([{"id": "a", "counted_by": ["receiving"]}, {"id": "b", "counted_by": ["receiving"]}], [SCAN],
         "backroom.locations[1].scanners", "two receiving locations take every scanner"),
    ],
)
def test_bad_input_names_the_field_and_the_fix(locations: list[dict[str, Any]], devices: list[dict[str, Any]],
                                               path: str, says: str) -> None:  # fmt: skip
    found = errors(locations, devices)
    assert path in found, found
    assert says in found[path], found[path]


def test_check_config_refuses_it(tmp_path: Path) -> None:
    f = tmp_path / "store.yaml"
    f.write_text(text([{**ROOM, "counted_by": ["receiving"], "scanners": ["scan-9"]}], [SCAN]), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "edge", "check-config", str(f)], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 2, done
    assert "backroom.locations[0].scanners[0]" in done.stderr + done.stdout
    assert "is not defined under devices: name a scanner's id" in done.stderr + done.stdout
