"""Manifest models of door counters (`type: door_counter`) and of the `traffic:` section.

Imports only `edge.configbase` (edge.config imports this module to add the `traffic:` section).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from drivers.ble.config import PresenceConfig
from edge.configbase import DeviceConfigBase, MqttUrl, Seconds, StrictModel


class DoorCounterConfig(DeviceConfigBase):
    """A people counter over a door (`type: door_counter`) reporting cumulative in/out counters."""

    type: Literal["door_counter"]
    transport: Literal["serial", "mqtt"] = "serial"
    port: str | None = Field(default=None, description="serial device or pyserial URL (transport: serial)")
    baudrate: int = Field(default=9600, ge=300, le=4_000_000)
    topic: str | None = Field(default=None, description="MQTT topic on the local broker (transport: mqtt)")
    broker_url: MqttUrl | None = Field(default=None, description="mqtt(s)://[user:password@]host:port (transport: "
                                   "mqtt); default: the manifest's local_broker url")
    counter_bits: Literal[16, 32] = Field(default=16, description="width of the device's counters (wrap)")
    swap_directions: bool = Field(default=False, description="the counter is mounted the other way round")
    read_timeout_s: Seconds = Field(default=30.0, gt=0, description="silence longer than this: device broken")

    @model_validator(mode="after")
    def _transport(self) -> DoorCounterConfig:
        if self.transport == "serial" and not self.port:
            raise ValueError("transport: serial needs port:, e.g. /dev/ttyUSB0")
        if self.transport == "mqtt":
            if not self.topic:
                raise ValueError("transport: mqtt needs topic:, e.g. store/door/front/counts")
            if any(c in self.topic for c in "+#"):
                raise ValueError("topic: must be one concrete topic, without + or # wildcards")
        return self


class TrafficConfig(StrictModel):
    """Foot-traffic aggregation (`traffic:`): interval, staff, closing reset, zone presence tuning."""

    interval_s: int = Field(default=60, ge=5, le=3600, description="aggregation interval; divides an hour best")
    reset_at_closing: bool = Field(default=True, description="occupancy goes to 0 at store.closing_time")
    staff_absent_s: Seconds = Field(
        default=600.0, description="a staff badge heard at an entrance after this long unheard = one staff entry"
    )
    entrance_zones: list[str] = Field(default=["entrance"], description="zones where staff badges count")
    presence: PresenceConfig = PresenceConfig()

    @model_validator(mode="after")
    def _interval(self) -> TrafficConfig:
        if 3600 % self.interval_s:
            raise ValueError("interval_s must divide 3600 (e.g. 30, 60, 300) so intervals roll up into hours")
        return self
