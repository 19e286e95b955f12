"""Manifest models of the BLE family: the `ble` scanner device, the `beacons:` list and presence tuning.

Imports only `edge.configbase` (edge.config imports this module to add the `beacons:` section).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from edge.configbase import DeviceConfigBase, Ident, Seconds, StrictModel

_HEX = re.compile(r"^[0-9a-f]*$")


class OrPattern(StrictModel):
    """One BlueZ advertisement-monitor pattern (passive scanning): AD type and bytes at an offset."""

    start: int = Field(default=0, ge=0, le=30, description="offset inside the AD structure's data")
    ad_type: int = Field(default=0xFF, ge=0, le=0xFF, description="AD type, 0xFF = manufacturer data")
    hex: str = Field(default="4c000215", description="bytes to match, hex; default: Apple iBeacon prefix")

    @field_validator("hex")
    @classmethod
    def _hex(cls, v: str) -> str:
        v = v.lower().replace(" ", "")
        if not v or len(v) % 2 or not _HEX.match(v):
            raise ValueError("write the pattern bytes as an even number of hex digits, e.g. 4c000215")
        return v


class BleConfig(DeviceConfigBase):
    """A BLE scanner (`type: ble`): one BlueZ adapter covering one zone, read through bleak."""

    type: Literal["ble"]
    adapter: str = Field(default="hci0", pattern=r"^hci[0-9]{1,2}$", description="BlueZ adapter name")
    scanning_mode: Literal["active", "passive"] = Field(
        default="active", description="passive needs or_patterns (BlueZ advertisement monitor, BlueZ >= 5.56)"
    )
    or_patterns: list[OrPattern] = Field(default=[], description="patterns for passive scanning")
    queue_size: int = Field(default=4096, ge=16, le=1_000_000, description="adverts buffered; overflow dropped")

    @model_validator(mode="after")
    def _check(self) -> BleConfig:
        if self.zone is None:
            raise ValueError("a ble scanner needs zone: (the area it covers), e.g. zone: entrance")
        if self.scanning_mode == "passive" and not self.or_patterns:
            raise ValueError(
                "scanning_mode: passive needs or_patterns: (BlueZ only reports matching adverts); "
                "add one, e.g. [{ad_type: 255, hex: 4c000215}], or use scanning_mode: active"
            )
        return self


class BeaconConfig(StrictModel):
    """A store beacon (in `beacons:`): where it is, how it identifies itself, when to worry about it."""

    id: Ident
    zone: Ident
    kind: Literal["ibeacon", "eddystone"]
    uuid: str | None = Field(default=None, description="iBeacon proximity UUID")
    major: int | None = Field(default=None, ge=0, le=0xFFFF)
    minor: int | None = Field(default=None, ge=0, le=0xFFFF)
    namespace: str | None = Field(default=None, description="Eddystone-UID namespace, 20 hex digits")
    instance: str | None = Field(default=None, description="Eddystone-UID instance, 12 hex digits")
    silent_after_s: Seconds = Field(default=300.0, gt=0, description="alert when not heard for this long")
    low_battery_mv: int = Field(default=2500, ge=0, le=10_000, description="alert below this TLM voltage")
    staff_badge: bool = Field(default=False, description="worn by staff: its door passages are not visitors")

    @model_validator(mode="after")
    def _identity(self) -> BeaconConfig:
        if self.kind == "ibeacon":
            if self.uuid is None or self.major is None or self.minor is None:
                raise ValueError("an ibeacon needs uuid:, major: and minor:")
            h = self.uuid.lower().replace("-", "")
            if len(h) != 32 or not _HEX.match(h):
                raise ValueError("uuid: must be 32 hex digits, e.g. e2c56db5-dffb-48d2-b060-d0f5a71096e0")
        else:
            ns, inst = (self.namespace or "").lower(), (self.instance or "").lower()
            if len(ns) != 20 or not _HEX.match(ns) or len(inst) != 12 or not _HEX.match(inst):
                raise ValueError("an eddystone beacon needs namespace: (20 hex digits) and instance: (12 hex digits)")
        return self

    def key(self) -> tuple[str, ...]:
        """Identity key matching the parsed frame (see `drivers.ble.beacons`)."""
        if self.kind == "ibeacon":
            h = (self.uuid or "").lower().replace("-", "")
            u = f"{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"
            return ("ibeacon", u, str(self.major), str(self.minor))
        return ("eddystone", (self.namespace or "").lower(), (self.instance or "").lower())


class PresenceConfig(StrictModel):
    """Anonymous zone presence from phones seen by the `ble` scanners; RSSI in dBm, times in seconds."""

    enabled: bool = True
    smoothing: float = Field(default=0.3, gt=0, le=1, description="EMA weight of a new RSSI sample")
    enter_rssi: float = Field(default=-80.0, description="smoothed RSSI needed to be in a scanner's zone")
    exit_rssi: float = Field(default=-88.0, description="below this the zone is left (hysteresis)")
    switch_margin_db: float = Field(default=6.0, ge=0, description="a zone must beat the current by this")
    hold_s: Seconds = Field(default=4.0, description="a candidate zone must hold this long before a move")
    exit_after_s: Seconds = Field(default=30.0, gt=0, description="no good sighting this long: left the zone")
    sighting_ttl_s: Seconds = Field(default=120.0, gt=0, description="raw sightings are forgotten after this")
    key_rotation_s: Seconds = Field(default=86_400.0, ge=60, description="rotation of the in-memory hash key")
    hash_bytes: int = Field(default=8, ge=4, le=32, description="HMAC-SHA256 truncated to this many bytes")

    @model_validator(mode="after")
    def _order(self) -> PresenceConfig:
        if self.exit_rssi > self.enter_rssi:
            raise ValueError("exit_rssi must not be above enter_rssi (that is the hysteresis band)")
        return self
