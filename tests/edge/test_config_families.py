"""A manifest builds the config models of the device families it uses, and only those (the registry imports a
family's config module when a manifest names its `type:`); the errors of the other families are unchanged.

Run in a fresh interpreter: the test process has imported every family long before.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_PROBE = textwrap.dedent("""
    import json, sys
    import edge.gateway  # the daemon's imports, as `edge-gateway run` has them
    from edge.config import parse_manifest
    from edge.errors import ConfigError

    base = '''
    store: {id: s1}
    zones: [{id: aisle-1}]
    catalog: [{sku: cola, unit_weight_g: 330}]
    shelves: [{id: s-1, zone: aisle-1, lanes: [{id: l1, sku: cola, capacity: 20}]}]
    devices:
    '''
    shelf = base + "  - {id: sh, type: shelf_mqtt, broker_url: 'mqtt://127.0.0.1:1883', topic: 'shelves/+/weight'}\\n"
    m = parse_manifest(shelf, "shelf.yaml", env={})
    out = {"device": type(m.devices[0]).__name__,
           "after_shelf": sorted(n for n in sys.modules if n.startswith("drivers.") and n.endswith(".config"))}
    errors = {}
    for name, dev in (("unknown", "{id: x, type: shelf_mqt}"),
                      ("llrp", "{id: r, type: llrp, host: 192.0.2.1, antenas: {1: aisle-1}}"),
                      ("scanner", "{id: c, type: scanner_hid}")):
        try:
            parse_manifest(base + "  - " + dev + "\\n", "m.yaml", env={})
        except ConfigError as err:
            errors[name] = [i.render() for i in err.issues]
    out["errors"] = errors
    print(json.dumps(out))
""")


def _probe() -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_a_shelf_only_manifest_builds_no_other_family_models() -> None:
    out = _probe()
    assert out["device"] == "ShelfMqttConfig"
    loaded = out["after_shelf"]
    assert isinstance(loaded, list)
    assert "drivers.shelf.config" in loaded
    # RFID and scanner models are not built for a store without such devices (the BLE and door modules hold
    # the manifest's beacons: and traffic: sections, so every manifest has them)
    assert "drivers.rfid.config" not in loaded, loaded
    assert "drivers.scanner.config" not in loaded, loaded


def test_other_families_errors_are_unchanged_when_loaded_on_demand() -> None:
    errors = _probe()["errors"]
    assert isinstance(errors, dict)
    # an unknown type still lists every registered family, loaded or not
    assert errors["unknown"] == ["m.yaml:7: devices[0].type: unknown device type 'shelf_mqt'; did you mean "
                                 "'shelf_mqtt'? Types: ble, door_counter, impinj_iot, llrp, scanner_hid, "
                                 "scanner_serial, shelf_modbus, shelf_mqtt, shelf_serial, zebra_iotc"], \
        errors["unknown"]
    # a family first met in a later manifest names the field and the fix, as before
    assert errors["llrp"] == ["m.yaml:7: devices[0].antenas: Extra inputs are not permitted (unknown field: remove "
                              "it or check its spelling; did you mean 'antennas'?)"], errors["llrp"]
    assert errors["scanner"] == ["m.yaml:7: devices[0].device_path: Field required (this field is required: add it)"], \
        errors["scanner"]
