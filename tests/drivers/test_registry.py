"""Every registered family resolves: its driver class and processor import and have the right shape."""

from __future__ import annotations

import inspect

from drivers.registry import FAMILIES, PROCESSORS, load


def test_every_family_resolves() -> None:
    assert set(FAMILIES) >= {"llrp", "impinj_iot", "zebra_iotc", "shelf_serial", "shelf_modbus", "shelf_mqtt",
                             "scanner_serial", "scanner_hid", "ble", "door_counter"}
    for name, fam in FAMILIES.items():
        cls = load(fam.driver)
        assert inspect.isclass(cls), name
        assert hasattr(cls, "stream"), f"{name}: driver has no stream()"
        assert fam.config_model.model_fields["type"].annotation is not None
        assert fam.processor_key in PROCESSORS, name


def test_every_processor_resolves() -> None:
    for key, path in PROCESSORS.items():
        cls = load(path)
        assert hasattr(cls, "feed") and hasattr(cls, "tick"), key
