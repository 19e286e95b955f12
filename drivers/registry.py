"""Explicit registry of device families, keyed by the manifest's `type:` (no import magic).

Each entry names, as explicit `module:attribute` paths, the family's config model, its driver class and the
shared processor that turns its readings into events. Several driver types can feed one processor (all RFID
reader types feed the `rfid` processor). Nothing of a family is imported here: its config model when a
manifest has a device of that type (`Family.config_model`, called by `edge.config.parse_manifest`), its
driver and processor modules — and their libraries (bleak, pymodbus, biip, httpx ...) — when a gateway runs
one. A shelf-only store builds no RFID, scanner or BLE device models, which keeps a gateway's memory to what
its store uses. Add a family with one `_register(...)` call below.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    """One device family: `type:` name, config model, driver class path, processor key."""

    name: str
    config: type[DeviceConfigBase] | str  # the model, or "module:Class" imported when a manifest uses the type
    driver: str  # "module:Class", constructed as Class(config, DriverContext)
    processor_key: str | None = None

    @property
    def config_model(self) -> type[DeviceConfigBase]:
        """The family's config model; a `module:Class` path is imported on first use."""
        model: type[DeviceConfigBase] = load(self.config) if isinstance(self.config, str) else self.config
        return model


FAMILIES: dict[str, Family] = {}
PROCESSORS: dict[str, str] = {}  # processor key -> "module:Class", constructed as Class(manifest, clock)


def _register(family: Family, processor: str | None = None) -> None:
    FAMILIES[family.name] = family
    if family.processor_key and processor is not None:
        PROCESSORS.setdefault(family.processor_key, processor)


# BLE scanners and door counters share one "traffic" processor (zones and visitors cross devices).
_TRAFFIC = "drivers.traffic.processor:TrafficProcessor"
_register(Family("ble", "drivers.ble.config:BleConfig", "drivers.ble.driver:BleDriver", "traffic"), _TRAFFIC)
_register(Family("door_counter", "drivers.door.config:DoorCounterConfig", "drivers.door.driver:DoorCounterDriver",
                 "traffic"), _TRAFFIC)

_SHELF = "drivers.shelf.processor:ShelfProcessor"
_register(Family("shelf_serial", "drivers.shelf.config:ShelfSerialConfig",
                 "drivers.shelf.serial_line:ShelfSerialDriver", "shelf"), _SHELF)
_register(Family("shelf_modbus", "drivers.shelf.config:ShelfModbusConfig", "drivers.shelf.modbus:ShelfModbusDriver",
                 "shelf"), _SHELF)
_register(Family("shelf_mqtt", "drivers.shelf.config:ShelfMqttConfig", "drivers.shelf.mqtt:ShelfMqttDriver", "shelf"),
          _SHELF)

_SCAN = "drivers.scanner.processor:ScannerProcessor"
_register(Family("scanner_serial", "drivers.scanner.config:ScannerSerialConfig",
                 "drivers.scanner.serial:ScannerSerialDriver", "scanner"), _SCAN)
_register(Family("scanner_hid", "drivers.scanner.config:ScannerHidConfig", "drivers.scanner.hid:ScannerHidDriver",
                 "scanner"), _SCAN)

_RFID = "drivers.rfid.processor:RfidProcessor"
_register(Family("llrp", "drivers.rfid.config:LlrpConfig", "drivers.rfid.llrp:LlrpDriver", "rfid"), _RFID)
_register(Family("impinj_iot", "drivers.rfid.config:ImpinjIotConfig", "drivers.rfid.impinj:ImpinjIotDriver", "rfid"),
          _RFID)
_register(Family("zebra_iotc", "drivers.rfid.config:ZebraIotcConfig", "drivers.rfid.zebra:ZebraIotcDriver", "rfid"),
          _RFID)
