"""Explicit registry of device families, keyed by the manifest's `type:` (no import magic).

Each entry names the family's config model (imported here: config modules are light, and every manifest
is validated against them) and, as explicit `module:attribute` paths, its driver class and the shared
processor that turns its readings into events. Several driver types can feed one processor (all RFID
reader types feed the `rfid` processor). A family's driver and processor modules — and their libraries
(bleak, pymodbus, biip, httpx ...) — are imported only when a store's manifest has a device of that type,
which keeps a gateway's memory to what its store uses. Add a family with one `_register(...)` call below.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from drivers.ble import config as ble_cfg
from drivers.door import config as door_cfg
from drivers.rfid import config as rfid_cfg
from drivers.scanner import config as scan_cfg
from drivers.shelf import config as shelf_cfg
from edge.configbase import DeviceConfigBase


def load(path: str) -> Any:
    """Import `package.module:Attribute[.attribute]` and return it."""
    module, _, attrs = path.partition(":")
    obj: Any = importlib.import_module(module)
    for attr in attrs.split("."):
        obj = getattr(obj, attr)
    return obj


@dataclass(frozen=True, slots=True)
class Family:
    """One device family: `type:` name, config schema, driver class path, processor key."""

    name: str
    config_model: type[DeviceConfigBase]
    driver: str  # "module:Class", constructed as Class(config, DriverContext)
    processor_key: str | None = None


FAMILIES: dict[str, Family] = {}
PROCESSORS: dict[str, str] = {}  # processor key -> "module:Class", constructed as Class(manifest, clock)


def _register(family: Family, processor: str | None = None) -> None:
    FAMILIES[family.name] = family
    if family.processor_key and processor is not None:
        PROCESSORS.setdefault(family.processor_key, processor)


# BLE scanners and door counters share one "traffic" processor (zones and visitors cross devices).
_TRAFFIC = "drivers.traffic.processor:TrafficProcessor"
_register(Family("ble", ble_cfg.BleConfig, "drivers.ble.driver:BleDriver", "traffic"), _TRAFFIC)
_register(Family("door_counter", door_cfg.DoorCounterConfig, "drivers.door.driver:DoorCounterDriver", "traffic"),
          _TRAFFIC)

_SHELF = "drivers.shelf.processor:ShelfProcessor"
_register(Family("shelf_serial", shelf_cfg.ShelfSerialConfig, "drivers.shelf.serial_line:ShelfSerialDriver", "shelf"),
          _SHELF)
_register(Family("shelf_modbus", shelf_cfg.ShelfModbusConfig, "drivers.shelf.modbus:ShelfModbusDriver", "shelf"),
          _SHELF)
_register(Family("shelf_mqtt", shelf_cfg.ShelfMqttConfig, "drivers.shelf.mqtt:ShelfMqttDriver", "shelf"), _SHELF)

_SCAN = "drivers.scanner.processor:ScannerProcessor"
_register(Family("scanner_serial", scan_cfg.ScannerSerialConfig, "drivers.scanner.serial:ScannerSerialDriver",
                 "scanner"), _SCAN)
_register(Family("scanner_hid", scan_cfg.ScannerHidConfig, "drivers.scanner.hid:ScannerHidDriver", "scanner"), _SCAN)

_RFID = "drivers.rfid.processor:RfidProcessor"
_register(Family("llrp", rfid_cfg.LlrpConfig, "drivers.rfid.llrp:LlrpDriver", "rfid"), _RFID)
_register(Family("impinj_iot", rfid_cfg.ImpinjIotConfig, "drivers.rfid.impinj:ImpinjIotDriver", "rfid"), _RFID)
_register(Family("zebra_iotc", rfid_cfg.ZebraIotcConfig, "drivers.rfid.zebra:ZebraIotcDriver", "rfid"), _RFID)
