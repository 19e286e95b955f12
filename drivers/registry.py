"""Explicit registry of device families, keyed by the manifest's `type:` (no import magic).

Each entry names the family's config model, its driver factory and, optionally, the key of the shared
processor that turns its readings into events (several driver types can feed one processor: all RFID
reader types feed the `rfid` processor). Add a family by adding one `_register(...)` call below.
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.base import DriverFactory
from edge.configbase import DeviceConfigBase
from edge.processing import ProcessorFactory


@dataclass(frozen=True, slots=True)
class Family:
    """One device family: `type:` name, config schema, driver factory, processor key."""

    name: str
    config_model: type[DeviceConfigBase]
    driver: DriverFactory
    processor_key: str | None = None


FAMILIES: dict[str, Family] = {}
PROCESSORS: dict[str, ProcessorFactory] = {}


def _register(family: Family, processor: ProcessorFactory | None = None) -> None:
    FAMILIES[family.name] = family
    if family.processor_key and processor is not None:
        PROCESSORS.setdefault(family.processor_key, processor)


def _load() -> None:
    # One block per family. Imports live here so that importing the registry is the explicit act.
    from drivers.ble import config as ble_cfg
    from drivers.ble import driver as ble_driver
    from drivers.door import config as door_cfg
    from drivers.door import driver as door_driver
    from drivers.traffic import processor as traffic

    # BLE scanners and door counters share one "traffic" processor (zones and visitors cross devices)
    _register(Family("ble", ble_cfg.BleConfig, ble_driver.BleDriver, "traffic"), traffic.TrafficProcessor)
    _register(Family("door_counter", door_cfg.DoorCounterConfig, door_driver.DoorCounterDriver, "traffic"),
              traffic.TrafficProcessor)
    from drivers.shelf import config as shelf_cfg
    from drivers.shelf import modbus as shelf_modbus
    from drivers.shelf import mqtt as shelf_mqtt
    from drivers.shelf import processor as shelf
    from drivers.shelf import serial_line as shelf_serial

    _register(Family("shelf_serial", shelf_cfg.ShelfSerialConfig, shelf_serial.ShelfSerialDriver, "shelf"),
              shelf.ShelfProcessor)
    _register(Family("shelf_modbus", shelf_cfg.ShelfModbusConfig, shelf_modbus.ShelfModbusDriver, "shelf"),
              shelf.ShelfProcessor)
    _register(Family("shelf_mqtt", shelf_cfg.ShelfMqttConfig, shelf_mqtt.ShelfMqttDriver, "shelf"),
              shelf.ShelfProcessor)
    from drivers.scanner import config as scan_cfg
    from drivers.scanner import hid as scan_hid
    from drivers.scanner import processor as scan
    from drivers.scanner import serial as scan_serial

    _register(Family("scanner_serial", scan_cfg.ScannerSerialConfig, scan_serial.ScannerSerialDriver, "scanner"),
              scan.ScannerProcessor)
    _register(Family("scanner_hid", scan_cfg.ScannerHidConfig, scan_hid.ScannerHidDriver, "scanner"),
              scan.ScannerProcessor)
    from drivers.rfid import config as rfid_cfg
    from drivers.rfid import impinj as rfid_impinj
    from drivers.rfid import llrp as rfid_llrp
    from drivers.rfid import processor as rfid
    from drivers.rfid import zebra as rfid_zebra

    _register(Family("llrp", rfid_cfg.LlrpConfig, rfid_llrp.LlrpDriver, "rfid"), rfid.RfidProcessor)
    _register(Family("impinj_iot", rfid_cfg.ImpinjIotConfig, rfid_impinj.ImpinjIotDriver, "rfid"), rfid.RfidProcessor)
    _register(Family("zebra_iotc", rfid_cfg.ZebraIotcConfig, rfid_zebra.ZebraIotcDriver, "rfid"), rfid.RfidProcessor)


_load()
