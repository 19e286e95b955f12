"""Manifest sections of the shelf families: `shelf_serial`, `shelf_modbus`, `shelf_mqtt`.

Every section lists its lanes: which device channel (serial lane number, Modbus unit id, MQTT lane key)
weighs which planogram lane (manifest shelf + lane), and that lane's empty-tray tare. The counting
parameters are shared by the three types (see `drivers/shelf/engine.py` for what each one does).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from edge.configbase import DeviceConfigBase, Ident, MqttUrl, Ref, StrictModel


class CountingConfig(StrictModel):
    """How grams become counts: stability gate, tolerance, drift tracking and fault detection."""

    settle_s: float = Field(default=0.8, gt=0, le=30, description="window that must be quiet before a count")
    stable_std_g: float = Field(default=4.0, gt=0, description="max standard deviation (g) of a stable window")
    tolerance_units: float = Field(
        default=0.3, gt=0, lt=0.5, description="max residual, in units, for a whole-number count"
    )
    unknown_after_s: float = Field(
        default=3.0, ge=0, description="residual out of tolerance for this long -> shelf.unknown_object"
    )
    max_rise_units: int = Field(
        default=4,
        ge=0,
        description="a settled rise of more units than this at once is an unknown object unless it fills the "
        "lane (shoppers put back a few items; staff restocking fill the lane)",
    )
    restock_free_units: int = Field(
        default=3, ge=0, description="a big rise counts as a restock when it leaves at most this many places free"
    )
    drift_tau_s: float = Field(
        default=120.0, gt=0, description="time constant of tare tracking (zero tracking, empty lane only)"
    )
    drift_max_units: float = Field(
        default=0.15, ge=0, lt=0.5, description="only residuals below this (in units) are treated as drift"
    )
    drift_max_g_per_h: float = Field(
        default=15.0, ge=0, description="fastest tare change zero tracking follows (temperature drift is slower)"
    )
    tare_report_g: float = Field(
        default=1.0, gt=0, description="a tracked tare that moved this far is saved (it survives a restart)"
    )
    stuck_after_s: float = Field(
        default=5.0, gt=0, description="identical raw samples for this long -> stuck fault (0 noise is not real)"
    )
    expect_noise: bool = Field(default=True, description="false for devices that filter to a constant value")
    timeout_s: float = Field(default=5.0, gt=0, description="no sample for this long -> timeout fault")
    fault_after: int = Field(default=3, ge=1, description="consecutive failed samples (CRC, timeout) -> fault")


class LaneMap(StrictModel):
    """One weighed lane: the device's channel and the planogram lane it carries."""

    channel: str = Field(description="serial lane number, Modbus unit id, or the MQTT payload's lane")
    shelf: Ident
    lane: Ident
    tare_g: float = Field(default=0.0, description="grams the device reports with the lane empty")
    unit_weight_g: float | None = Field(default=None, gt=0, description="overrides the planogram/catalog weight")

    @field_validator("channel", mode="before")
    @classmethod
    def _channel_text(cls, v: object) -> object:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


class ShelfConfigBase(DeviceConfigBase):
    """Fields common to all shelf types."""

    lanes: list[LaneMap] = Field(default=[], description="channels -> planogram lanes")
    counting: CountingConfig = CountingConfig()

    @model_validator(mode="after")
    def _unique(self) -> ShelfConfigBase:
        chans = [m.channel for m in self.lanes]
        if len(chans) != len(set(chans)):
            raise ValueError("two lanes use the same channel: give every lane its own channel")
        return self

    def lane_by_channel(self) -> dict[str, LaneMap]:
        """channel -> lane mapping."""
        return {m.channel: m for m in self.lanes}

    def references(self) -> list[Ref]:
        """The device's zone and, per channel, the planogram shelf and lane it weighs."""
        refs = super().references()
        for i, m in enumerate(self.lanes):
            refs += [Ref(("lanes", i, "shelf"), "shelf", m.shelf), Ref(("lanes", i, "lane"), "lane", m.lane, m.shelf)]
        return refs


class ShelfSerialConfig(ShelfConfigBase):
    """A shelf controller (MCU in front of HX711 ADCs) on a serial port; protocol in docs/shelf-protocol.md."""

    type: Literal["shelf_serial"] = "shelf_serial"
    port: str = Field(description="serial device, e.g. /dev/ttyUSB0 or /dev/serial/by-id/...")
    baudrate: int = Field(default=115200, gt=0)


class ShelfModbusConfig(ShelfConfigBase):
    """Modbus-RTU weight transmitters on one RS-485 line; a lane's `channel` is the transmitter's unit id."""

    type: Literal["shelf_modbus"] = "shelf_modbus"
    port: str = Field(description="serial device of the RS-485 adapter")
    baudrate: int = Field(default=9600, gt=0)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    register_kind: Literal["holding", "input"] = Field(default="holding", description="function 3 or 4")
    weight_register: int = Field(default=0, ge=0, le=65534, description="first of two registers holding the weight")
    use_net: bool = Field(default=False, description="read net instead of gross (net_register)")
    net_register: int = Field(default=2, ge=0, le=65534)
    word_order: Literal["big", "little"] = Field(default="big", description="which register holds the high word")
    signed: bool = True
    scale: float = Field(default=1.0, gt=0, description="grams per count of the raw 32-bit value")
    status_register: int | None = Field(default=4, ge=0, description="register with the stable bit (None: none)")
    stable_bit: int = Field(default=0, ge=0, le=15)
    tare_on_start: bool = Field(default=False, description="send the tare command when the line opens")
    tare_kind: Literal["coil", "register"] = "coil"
    tare_address: int = Field(default=0, ge=0)
    tare_value: int = Field(default=1, ge=0, le=65535, description="value written for a register tare command")
    poll_interval_s: float = Field(default=0.1, gt=0, description="time between polls of one transmitter")
    timeout_s: float = Field(default=0.5, gt=0, description="response timeout per request")

    @model_validator(mode="after")
    def _unit_ids(self) -> ShelfModbusConfig:
        for m in self.lanes:
            if not m.channel.isdigit() or not 1 <= int(m.channel) <= 247:
                raise ValueError(f"lane channel {m.channel!r} must be a Modbus unit id 1..247")
        return self


class ShelfMqttConfig(ShelfConfigBase):
    """Networked shelves publishing JSON weight readings to the store-local broker."""

    type: Literal["shelf_mqtt"] = "shelf_mqtt"
    broker_url: MqttUrl | None = Field(default=None, description="defaults to the manifest's local_broker url")
    topic: str = Field(default="shelves/+/weight", description="subscription filter; wildcards allowed")
    client_id: str | None = None
    qos: Literal[0, 1] = Field(
        default=0,
        description="subscription QoS: 1 when the shelves publish at QoS 1 and the broker must not downgrade "
        "their readings to fire-and-forget on the way to the gateway",
    )
