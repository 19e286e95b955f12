"""Manifest sections of the RFID families: `llrp`, `impinj_iot`, `zebra_iotc`.

Each section maps the reader's antennas to read points (manifest zone ids) and carries the smoothing
parameters of that reader (see `drivers/rfid/smoothing.py` for what each one does).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from edge.configbase import DeviceConfigBase, Host, Ident, MqttUrl, Ref, StrictModel


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
        default={}, description="antenna port -> read point (a zone id, or a back-room location id: "
        "backroom.locations); unmapped ports use `zone`"
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

    def references(self) -> list[Ref]:
        """The reader's zone and the read point of every mapped antenna (a zone or a back-room location)."""
        return [*super().references(), *(Ref(("antennas", p), "read_point", z) for p, z in self.antennas.items())]


class LlrpConfig(RfidConfigBase):
    """An LLRP reader (Impinj Speedway/R700 in LLRP mode, Zebra FX in LLRP mode, ...) over TCP."""

    type: Literal["llrp"] = "llrp"
    host: Host = Field(description="reader address without the port (that is `port:`), e.g. 192.0.2.10")
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
    """An Impinj reader through its IoT device interface (R700/R720, Reader Configuration REST API 1.5-1.7).

    With `manage_preset` the driver writes the preset `preset_id` (antennas from `antennas`), stops any
    other inventory and starts it; without, the store runs its own preset and the driver only checks that
    the reader is running `preset_id` (any preset when unset) and reports a device fault when it is not.
    """

    type: Literal["impinj_iot"] = "impinj_iot"
    base_url: str = Field(description="e.g. https://192.0.2.11 (the stream is {base_url}/api/v1/data/stream)")
    auth: Literal["none", "basic", "digest"] | None = Field(
        default=None, description="HTTP authentication of the reader's REST API; unset: basic when a username "
        "is given, else none (firmware 1.7 default: basic; digest can be chosen on the reader)")
    username: str | None = Field(default=None, description="REST API user, e.g. root (write ${ENV} for secrets)")
    password: str | None = Field(default=None, description="REST API password")
    verify_tls: bool = Field(default=True, description="verify the reader's certificate (https only)")
    ca_file: str | None = Field(default=None, description="PEM file with the CA (or the reader's own self-signed "
                                "certificate) to verify https against, instead of the system's CAs")
    pinned_sha256: str | None = Field(
        default=None, description="sha256 fingerprint (hex, ':' allowed) of the reader's certificate: accept "
        "exactly that certificate and nothing else (self-signed reader certificates)")
    manage_preset: bool = Field(default=True, description="the gateway writes and starts the inventory preset; "
                                "false: the store starts its own preset, the gateway only verifies it runs")
    preset_id: str | None = Field(default="edge-gateway", pattern=r"^[A-Za-z0-9_.-]{1,64}$",
                                  description="inventory preset the gateway installs and starts (or, with "
                                  "manage_preset: false, the one it expects to run; unset: any)")
    transmit_power_cdbm: int = Field(default=3000, ge=1000, le=3300, description="per-antenna transmit power")
    report_interval_s: int = Field(default=1, ge=0, le=60, description="tagReporting.reportingIntervalSeconds: "
                                   "each tag reported at most once per interval (0: every read)")
    idle_timeout_s: float = Field(
        default=90.0, gt=0, le=3600, description="no byte for this long -> reconnect; the reader sends a "
        "keep-alive only after 30 s without data and Impinj advises reconnecting after 90 s: keep it above 30")

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("use http://host[:port] or https://host[:port]")
        return v.rstrip("/")

    @field_validator("pinned_sha256")
    @classmethod
    def _pin(cls, v: str | None) -> str | None:
        if v is None:
            return v
        hexed = v.replace(":", "").lower()
        if len(hexed) != 64 or any(c not in "0123456789abcdef" for c in hexed):
            raise ValueError("a sha256 fingerprint: 64 hex digits, e.g. from "
                             "`openssl x509 -noout -fingerprint -sha256 -in reader.pem`")
        return hexed

    @model_validator(mode="after")
    def _auth(self) -> ImpinjIotConfig:
        if self.auth in ("basic", "digest") and not self.username:
            raise ValueError(f"auth: {self.auth} needs username (and password)")
        if (self.ca_file or self.pinned_sha256) and not self.base_url.startswith("https://"):
            raise ValueError("ca_file / pinned_sha256 need an https:// base_url")
        return self

    @property
    def auth_kind(self) -> str:
        """none, basic or digest, after the default."""
        return self.auth or ("basic" if self.username else "none")


ZebraMode = Literal["SIMPLE", "INVENTORY", "PORTAL", "CONVEYOR", "CUSTOM"]


class ZebraIotcConfig(RfidConfigBase):
    """A Zebra FX7500/FX9600/ATR7000 reader through the IoT Connector and the store-local MQTT broker.

    Topics are the ones set on the reader (Communication > Zebra IoT Connector > endpoint). With
    `control_topic`/`response_topic` and `manage_mode` the driver sends `set_mode` and `start`; without
    `manage_mode` it asks `get_mode` and reports a device fault when the reader runs another mode.
    """

    type: Literal["zebra_iotc"] = "zebra_iotc"
    broker_url: MqttUrl | None = Field(default=None, description="mqtt(s)://[user:password@]host:port; default: the "
                                   "local_broker url")
    topic: str = Field(description="the reader's tag data topic, e.g. zebra/fx9600-1/data")
    events_topic: str | None = Field(default=None, description="management events topic (heartbeats, "
                                     "antenna status, errors), e.g. zebra/fx9600-1/mevents")
    control_topic: str | None = Field(default=None, description="control command topic, e.g. zebra/fx9600-1/ctrl")
    response_topic: str | None = Field(default=None, description="control response topic, e.g. "
                                       "zebra/fx9600-1/ctrl-res")
    manage_mode: bool = Field(default=True, description="with control topics: the gateway sets the operating mode "
                              "and starts it; false: it only verifies the reader runs `mode`")
    mode: ZebraMode = Field(default="INVENTORY", description="operating mode: INVENTORY (periodic per-antenna "
                            "reports with peak RSSI and read count: what shelf stock needs) or SIMPLE")
    report_interval_s: int = Field(default=1, ge=1, le=60, description="INVENTORY interval / SIMPLE reportFilter "
                                   "duration: how often a present tag is reported again")
    reply_timeout_s: float = Field(default=10.0, gt=0, le=120, description="wait this long for a control response")
    heartbeat_timeout_s: float | None = Field(
        default=None, gt=0, description="no heartbeat for this long -> reconnect (set it to 3x the reader's "
        "heartbeat period when events_topic is set; unset: not watched)")

    @field_validator("topic", "events_topic", "control_topic", "response_topic")
    @classmethod
    def _topic(cls, v: str | None) -> str | None:
        if v is not None and (not v or v.startswith("/") or any(c in v for c in "+#")):
            raise ValueError("a topic like zebra/fx9600-1/data (no leading '/', no wildcards)")
        return v

    @model_validator(mode="after")
    def _control(self) -> ZebraIotcConfig:
        if (self.control_topic is None) != (self.response_topic is None):
            raise ValueError("set both control_topic and response_topic (commands and their responses)")
        if self.report_interval_s >= self.smoothing.lost_timeout_s:
            raise ValueError("report_interval_s must be shorter than smoothing.lost_timeout_s, or present "
                             "tags expire between reports")
        return self


RfidConfig = LlrpConfig | ImpinjIotConfig | ZebraIotcConfig
