"""Manifest sections of the scanner family: `scanner_serial` and `scanner_hid`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edge.configbase import DeviceConfigBase

Role = Literal["receive", "restock", "count", "lookup", "pick"]


class ScannerConfigBase(DeviceConfigBase):
    """Fields common to every scanner."""

    role: Role = Field(default="lookup", description="what a scan means; a MODE:<ROLE> barcode switches it")
    session_timeout_s: float = Field(
        default=120.0, gt=0, description="restock/count session ends after this long without a scan"
    )
    extra_separators: str = Field(
        default="", description="characters the scanner sends in place of GS (wedge scanners), e.g. '^'"
    )


class ScannerSerialConfig(ScannerConfigBase):
    """A scanner in serial / USB CDC-ACM mode (keeps GS separators)."""

    type: Literal["scanner_serial"] = "scanner_serial"
    port: str = Field(description="serial device, e.g. /dev/ttyACM0")
    baudrate: int = Field(default=9600, gt=0)
    terminator: Literal["CR", "LF", "CRLF"] = Field(default="CR", description="suffix the scanner appends")


class ScannerHidConfig(ScannerConfigBase):
    """A keyboard-wedge scanner read through evdev (Linux; install the `hid` extra)."""

    type: Literal["scanner_hid"] = "scanner_hid"
    device_path: str = Field(description="/dev/input/by-id/...-event-kbd of the scanner")
    grab: bool = Field(default=True, description="take the device exclusively so scans do not type elsewhere")
