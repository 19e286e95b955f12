"""Manifest sections of the RFID families: `llrp`, `impinj_iot`, `zebra_iotc`.

Each section maps the reader's antennas to read points (manifest zone ids) and carries the smoothing
parameters of that reader (see `drivers/rfid/smoothing.py` for what each one does).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from edge.configbase import DeviceConfigBase, Ident, StrictModel


class SmoothingConfig(StrictModel):
    """How raw reads become presence and zones (EPCglobal ALE-style smoothing)."""

    present_after_reads: int = Field(default=2, ge=1, description="reads before a tag counts as present")
    present_after_s: float = Field(
        default=3.0, ge=0, description="or: a tag read again this long after its first read is present"
    )
    lost_timeout_s: float = Field(default=10.0, gt=0, description="no read for this long -> the tag departed")
    rssi_alpha: float = Field(default=0.2, gt=0, le=1, description="EWMA weight of a new RSSI sample (1 = none)")
    move_margin_db: float = Field(default=4.0, ge=0, description="another zone must be this much stronger")
    move_hold_s: float = Field(default=3.0, ge=0, description="... continuously for this long before a move")
    zone_stale_s: float = Field(
        default=5.0, gt=0, description="a read point that has not read the tag for this long no longer competes"
    )
    min_rssi_dbm: float | None = Field(
        default=None, le=0, ge=-127,
        description="reads weaker than this are ignored (items carried past, the next aisle's shelf); "
        "set it from a site survey, e.g. -72; unset: every read counts",
    )

    @model_validator(mode="after")
    def _order(self) -> SmoothingConfig:
        if self.zone_stale_s > self.lost_timeout_s:
            raise ValueError("zone_stale_s must not exceed lost_timeout_s: lower zone_stale_s")
        return self


class RfidConfigBase(DeviceConfigBase):
    """Fields common to every RFID reader type."""

    antennas: dict[int, Ident] = Field(
        default={}, description="antenna port -> read point (a zone id); unmapped ports use `zone`"
    )
    smoothing: SmoothingConfig = SmoothingConfig()
    epcis: bool = Field(default=False, description="also publish EPCIS 2.0 ObjectEvents on events/epcis")

    @field_validator("antennas")
    @classmethod
    def _ports(cls, v: dict[int, str]) -> dict[int, str]:
        bad = [p for p in v if not 0 < p < 65536]
        if bad:
            raise ValueError(f"antenna ports {bad} are out of range: use 1..65535")
        return v

    @model_validator(mode="after")
    def _somewhere(self) -> RfidConfigBase:
        if not self.antennas and self.zone is None:
            raise ValueError("map antennas to zones (antennas: {1: aisle-1}) or set the reader's zone:")
        return self

    def read_point(self, antenna: int) -> str | None:
        """The zone an antenna port reads, or None when unmapped and the reader has no zone."""
        return self.antennas.get(antenna, self.zone)


class LlrpConfig(RfidConfigBase):
    """An LLRP reader (Impinj Speedway/R700 in LLRP mode, Zebra FX in LLRP mode, ...) over TCP."""

    type: Literal["llrp"] = "llrp"
    host: str = Field(description="reader address, e.g. 192.0.2.10")
    port: int = Field(default=5084, ge=1, le=65535, description="LLRP port (5084; 5085 for TLS is not supported)")
    rospec_id: int = Field(default=1234, ge=1, le=2**32 - 1, description="id of the ROSpec we install")
    cycle_ms: int = Field(default=1000, ge=50, le=60_000, description="inventory cycle (the ROSpec's period); "
                          "one report per cycle")
    keepalive_s: float = Field(default=5.0, gt=0, le=300, description="reader keepalive period")
    connect_timeout_s: float = Field(default=5.0, gt=0, description="TCP connect + hello timeout")
    reply_timeout_s: float = Field(default=5.0, gt=0, description="timeout of every request/response")
    reset_to_factory: bool = Field(default=False, description="reset the reader's config before ours")
    inventory_timeout_s: float = Field(
        default=5.0, gt=0, le=600,
        description="no ROSpec start and no report for this long (at least 3 cycles) -> the reader is not "
        "inventorying: say so and reinstall the ROSpec",
    )
    rospec_restarts: int = Field(
        default=3, ge=0, le=100,
        description="reinstalls of a ROSpec that stopped running before the connection is dropped as faulty",
    )
    frame_timeout_s: float = Field(
        default=5.0, gt=0, le=60,
        description="a frame whose header arrived but whose body did not within this long is a protocol "
        "error: reconnect",
    )


class ImpinjIotConfig(RfidConfigBase):
    """An Impinj reader through its IoT device interface (R700/R720 REST + NDJSON stream)."""

    type: Literal["impinj_iot"] = "impinj_iot"
    base_url: str = Field(description="e.g. https://192.0.2.11 (the stream is {base_url}/api/v1/data/stream)")
    username: str | None = Field(default=None, description="basic auth user (write ${ENV} for secrets)")
    password: str | None = Field(default=None, description="basic auth password")
    verify_tls: bool = Field(default=True, description="verify the reader's certificate")
    idle_timeout_s: float = Field(default=30.0, gt=0, description="no byte (not even a keep-alive) -> reconnect")

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("use http://host[:port] or https://host[:port]")
        return v.rstrip("/")


class ZebraIotcConfig(RfidConfigBase):
    """A Zebra FX reader through the IoT Connector, publishing tag data to the store-local MQTT broker."""

    type: Literal["zebra_iotc"] = "zebra_iotc"
    broker_url: str | None = Field(default=None, description="mqtt(s)://[user:password@]host:port; default: the "
                                   "local_broker url")
    topic: str = Field(description="the reader's tag data topic, e.g. zebra/fx9600-1/data")

    @field_validator("topic")
    @classmethod
    def _topic(cls, v: str) -> str:
        if not v or v.startswith("/"):
            raise ValueError("a topic like zebra/fx9600-1/data (no leading '/')")
        return v


RfidConfig = LlrpConfig | ImpinjIotConfig | ZebraIotcConfig
