"""The store manifest: one YAML file, one pydantic schema, errors that name the field and the fix.

`load_manifest(path)` reads the file, substitutes `${VAR}` / `${VAR:-default}` from the environment
(secrets never live in the file), validates the common schema, then validates each device section with
its family's model chosen by `type:` (see `drivers/registry.py`). Every problem is collected, with its
file, field path and line, into one `ConfigError`.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import socket
import ssl
import types
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from drivers.ble.config import BeaconConfig
from drivers.door.config import TrafficConfig
from edge.backroomconfig import BackroomConfig
from edge.configbase import (
    COUNT_MAX,
    AnyDeviceConfig,
    Count,
    DeviceConfigBase,
    DuplicateKeyError,
    Gln,
    Ident,
    Megabytes,
    MqttUrl,
    PositiveCount,
    Ref,
    Seconds,
    Sgln,
    StrictModel,
    TooLarge,
    check_expansion,
    gs1_check_digit,
    load_yaml,
)
from edge.errors import ConfigError, ConfigIssue
from edge.nearbyconfig import NearbyConfig
from edge.rolloutconfig import RolloutConfig
from rules.config import NotificationsConfig, OffersConfig, RulesBody, RulesConfig, WebhookConfig
from sinks.config import EpcisCaptureConfig

# ---- sections -------------------------------------------------------------------------------

_HHMM = r"^([01]\d|2[0-3]):[0-5]\d$"
# cities people write that are no IANA zone names (the zone is named after another city of the same zone)
_TZ_ALIASES = {"Asia/Beijing": "Asia/Shanghai", "Asia/Peking": "Asia/Shanghai", "Asia/Mumbai": "Asia/Kolkata",
               "Asia/New_Delhi": "Asia/Kolkata", "Asia/Delhi": "Asia/Kolkata", "Europe/Frankfurt": "Europe/Berlin",
               "Europe/Munich": "Europe/Berlin", "Europe/Barcelona": "Europe/Madrid", "Europe/Milan": "Europe/Rome",
               "America/San_Francisco": "America/Los_Angeles", "America/Washington": "America/New_York",
               "Australia/Canberra": "Australia/Sydney", "Europe/Geneva": "Europe/Zurich"}
WEIGHT_MAX_G = 1_000_000.0  # one tonne: the largest unit weight a lane or catalog item may have
# display names per UI language (the dashboard's languages); `name` stays the default for any other
Locale = Literal["zh-CN", "en"]
DisplayName = Annotated[str, Field(min_length=1, max_length=128)]
Names = Annotated[dict[Locale, DisplayName], Field(
    description="the name per language, e.g. {zh-CN: 饮料区, en: Drinks}; `name` is the default")]


class StoreInfo(StrictModel):
    """Who this gateway is."""

    id: Ident
    name: str = ""
    timezone: str = Field(default="UTC", description="IANA time zone of the store, e.g. Europe/Amsterdam")
    opening_time: str = Field(default="08:00", pattern=_HHMM, description="store-local HH:MM")
    closing_time: str = Field(default="21:00", pattern=_HHMM, description="store-local HH:MM")
    gln: Gln | None = Field(default=None, description="the store's GLN, 13 digits with its check digit")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            close = [_TZ_ALIASES[v]] if v in _TZ_ALIASES else difflib.get_close_matches(
                v, sorted(available_timezones()), n=2, cutoff=0.8)
            hint = f"did you mean {' or '.join(map(repr, close))}?" if close else "write one like Europe/Amsterdam"
            raise ValueError(f"{v!r} is not a known IANA time zone: {hint} (see `timedatectl "
                             "list-timezones`)") from None
        return v


class TlsConfig(StrictModel):
    """TLS towards the hub; verification is on unless explicitly turned off."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    verify: bool = True

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together: set both for a client certificate, or neither")
        return self


class BatchConfig(StrictModel):
    """Several events per MQTT message (CloudEvents JSON batch); off by default."""

    enabled: bool = False
    max_events: int = Field(default=100, ge=1, le=10_000)
    max_bytes: int = Field(default=256 * 1024, ge=1024, le=64 * 1024 * 1024, description="at most 64 MiB")


class CommandKey(StrictModel):
    """A key the hub signs `cmd/` requests with (HMAC-SHA256, docs/commands.md); list two to rotate."""

    id: Ident
    secret: str = Field(min_length=32, max_length=512,
                        description="write `secret: ${ENV_VAR}`; the key is the UTF-8 bytes of this text")


class CommandsConfig(StrictModel):
    """Who may command this store over `cmd/` and where replies may go (docs/commands.md)."""

    keys: list[CommandKey] = Field(default=[], max_length=16,
                                   description="without keys every state-changing command is refused")
    sign_reads: bool = Field(default=False, description="read-only commands (stock.get) need a signature too")
    window_s: float = Field(default=120, gt=0, le=3600, allow_inf_nan=False,
                            description="a request's `ts` may differ from the gateway's clock by this much")
    nonce_cache: int = Field(default=10_000, ge=100, le=1_000_000,
                             description="request ids remembered against replay (refused with busy when full)")
    reply_prefixes: list[str] = Field(default=[], max_length=16,
                                      description="topic prefixes besides {root}/reply/ where replies may go")

    @field_validator("keys")
    @classmethod
    def _unique(cls, v: list[CommandKey]) -> list[CommandKey]:
        ids = [k.id for k in v]
        if len(set(ids)) != len(ids):
            raise ValueError("key ids must be unique: give each key its own id")
        return v

    @field_validator("reply_prefixes")
    @classmethod
    def _prefixes(cls, v: list[str]) -> list[str]:
        for p in v:
            bad = not p or len(p.encode()) > 128 or p.startswith(("/", "$")) or p.endswith("/") or any(
                c in "+#" or ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in p)
            if bad:
                raise ValueError(f"reply prefix {p!r}: a topic like 'hq/replies' (no wildcards, no leading $ or "
                                 "'/', no trailing '/', at most 128 bytes)")
        return v


HUB_URLS_MAX = 16
"""At most this many hub nodes in `hub.urls`."""


class HubConfig(StrictModel):
    """The cloud inventory hub's MQTT broker."""

    url: MqttUrl = "mqtt://127.0.0.1:1883"
    urls: list[MqttUrl] | None = Field(
        default=None, min_length=1, max_length=HUB_URLS_MAX,
        description="the nodes of a hub cluster, instead of `url`: the uplink uses one and moves to the next when it "
                    "fails (docs/fleet.md)",
    )
    client_id: str | None = None
    username: str | None = None
    password: str | None = None
    topic_prefix: str = "retail/v1"
    keepalive: int = Field(default=30, ge=5, le=3600)
    inflight: int = Field(default=20, ge=1, le=1000)
    tls: TlsConfig | None = None
    batch: BatchConfig = BatchConfig()
    reconnect_min: Seconds = 0.5
    reconnect_max: Seconds = 30.0
    commands: CommandsConfig = CommandsConfig()

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not v or any(c in v for c in "+#") or v.startswith(("/", "$")) or v.endswith("/") or "//" in v:
            raise ValueError("a topic prefix like 'retail/v1': no wildcards, no leading $ or '/', no empty level, "
                             "no trailing '/'")
        if len(v.encode()) > 128 or any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c == "\uffff" for c in v):
            raise ValueError("a topic prefix like 'retail/v1': at most 128 bytes, no control characters (the broker "
                             "would drop every message)")
        return v

    @model_validator(mode="after")
    def _one_of_url_urls(self) -> HubConfig:
        if self.urls is not None:
            if "url" in self.model_fields_set:
                raise ValueError("give either url (one broker) or urls (the nodes of a cluster), not both")
            seen = [u for i, u in enumerate(self.urls) if u in self.urls[:i]]
            if seen:
                raise ValueError(f"urls lists {seen[0]!r} twice: name each node once")
        return self

    @property
    def endpoints(self) -> list[str]:
        """The brokers to use: `urls`, or the one `url`."""
        return list(self.urls) if self.urls is not None else [self.url]


class BudgetConfig(StrictModel):
    """Disk budget of the droppable telemetry class; ledger, alert and control events are never dropped."""

    telemetry_mb: Megabytes = Field(default=256, description="MiB, at most 1 TiB")


class StorageConfig(StrictModel):
    """Where state lives and how long the journal is kept."""

    data_dir: Path = Path("./var")
    budgets: BudgetConfig = BudgetConfig()
    journal_retention_days: float = Field(default=7, ge=0, le=3660, description="at most 10 years")
    commit_interval_ms: float = Field(
        default=5, ge=0, le=1000,
        description="group commit: while a commit is running, a small batch waits for it to finish, at most "
                    "this long (latency vs fsyncs per event); with the writer idle a batch is committed at once",
    )
    reserve_mb: float = Field(
        default=16, ge=0, le=4096, allow_inf_nan=False,
        description="MiB preallocated next to the database (at most 4 GiB; 0 = none): released when the disk "
                    "is full so alerts, ledger and control events still commit while telemetry is shed",
    )


class HealthConfig(StrictModel):
    """When `/healthz` says 503 (and the systemd watchdog is no longer fed); see docs/api.md."""

    commit_lag_max_s: float = Field(
        default=30, gt=0, le=3600, allow_inf_nan=False,
        description="seconds an event may wait to be committed (at most 1 h)",
    )
    uplink_lag_max_s: float = Field(
        default=300, gt=0, le=86400, allow_inf_nan=False,
        description="seconds a committed event may wait for the hub's acknowledgement while the hub is reachable "
                    "(at most 1 day); time the hub was unreachable does not count",
    )
    stall_s: float = Field(
        default=30, gt=0, le=3600, allow_inf_nan=False,
        description="seconds the pipeline, the committer or the uplink may have work and make no progress "
                    "(at most 1 h)",
    )


class TokenConfig(StrictModel):
    """A bearer token and its roles; write `token: ${ENV_VAR}` to keep it out of the file."""

    token: str = Field(min_length=16)
    roles: list[Literal["staff", "hq", "shopper-app", "admin"]] = Field(min_length=1)
    name: str = ""
    expires: datetime | None = Field(
        default=None, description="when the token stops working (ISO 8601 with Z or an offset); none = never"
    )

    @field_validator("expires", mode="before")
    @classmethod
    def _aware(cls, v: object) -> object:
        example = "2027-01-31T18:00:00Z"
        if isinstance(v, str):
            try:
                v = datetime.fromisoformat(v)
            except ValueError:
                raise ValueError(f"expires is not an ISO 8601 date and time: write it like {example}") from None
        naive = v.utcoffset() is None if isinstance(v, datetime) else isinstance(v, date)  # a date alone has none
        if naive:
            raise ValueError(f"expires has no time zone: add Z or an offset, e.g. {example}")
        return v


class ApiConfig(StrictModel):
    """The local HTTP API and dashboard."""

    enabled: bool = True
    listen: str = "127.0.0.1:8080"
    tokens: list[TokenConfig] = []
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=64 * 1024 * 1024, description="at most 64 MiB")
    header_timeout_s: float = Field(default=10, gt=0, le=300, allow_inf_nan=False,
                                    description="a connection must finish a request's headers this soon after it "
                                                "opened or its previous response ended, else it is closed")
    body_timeout_s: float = Field(default=30, gt=0, le=600, allow_inf_nan=False,
                                  description="a request body must arrive whole this soon after its headers (408)")
    max_connections_per_client: int = Field(
        default=64, ge=1, le=1024,
        description="per client address; a new connection beyond it closes that client's oldest idle one "
                    "(or gets 503 when all are busy)",
    )

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError("use HOST:PORT, e.g. 127.0.0.1:8080 (port 0 picks a free one)")
        return v


class LocalBrokerConfig(StrictModel):
    """The store-local MQTT broker that networked devices publish to (Zebra readers, shelves, counters)."""

    url: MqttUrl = "mqtt://127.0.0.1:1883"


class Zone(StrictModel):
    """An area of the store (aisle, end cap, entrance); `sgln` is its EPCIS read point / location."""

    id: Ident
    name: str = ""
    names: Names = Field(default_factory=dict)
    sgln: Sgln | None = Field(
        default=None, description="urn:epc:id:sgln:CompanyPrefix.LocationRef.Extension (prefix + location "
        "reference = 12 digits; extension up to 20 GS1 characters, 0 = none)",
    )


class CatalogItem(StrictModel):
    """A SKU the store sells."""

    sku: Ident
    name: str = ""
    names: Names = Field(default_factory=dict)
    gtin: str | None = Field(default=None, pattern=r"^[0-9]{8}$|^[0-9]{12,14}$")
    unit_weight_g: float | None = Field(default=None, gt=0, le=WEIGHT_MAX_G)
    case_pack: PositiveCount = 1
    category: str = ""
    unit: str = Field(default="EA", pattern=r"^[A-Z0-9]{1,3}$",
                      description="unit of the counts, a UN/ECE Recommendation 20 code: EA (each), KGM, LTR")

    @field_validator("gtin")
    @classmethod
    def _check_digit(cls, v: str | None) -> str | None:
        if v is None:
            return v
        expected = gs1_check_digit(v[:-1])
        if int(v[-1]) != expected:
            raise ValueError(f"GTIN check digit is wrong (expected {expected})")
        return v.zfill(14)


class Lane(StrictModel):
    """One facing of a SKU on a shelf, as in the planogram."""

    id: Ident
    sku: Ident
    capacity: PositiveCount = Field(description=f"units the lane holds, at most {COUNT_MAX:,}")
    unit_weight_g: float | None = Field(default=None, gt=0, le=WEIGHT_MAX_G, description="defaults to the catalog's")


class Shelf(StrictModel):
    """A shelf in a zone, with its planogram lanes."""

    id: Ident
    zone: Ident
    name: str = ""
    names: Names = Field(default_factory=dict)
    lanes: list[Lane] = Field(min_length=1)
    stock_source: Literal["any", "weight", "rfid", "scan"] = Field(
        default="any",
        description="which source is the truth for this shelf's counts; claims of other sources are ignored",
    )


class AtpConfig(StrictModel):
    """Available-to-promise (edge/atp.py): safety stock held back per category, and the ATP levels whose
    crossing is announced as a `retail.atp.changed.v1` event (the retained `state/atp/{sku}` is always
    current)."""

    safety_stock: dict[str, Count] = Field(
        default_factory=dict, description="units held back per catalog category, e.g. {drinks: 2}; 0 when absent")
    thresholds: list[Count] = Field(
        default=[0], min_length=1, max_length=16,
        description="ATP levels, ascending; an event when ATP moves from one side of a level to the other "
                    "(0 = in stock / sold out)")

    @field_validator("thresholds")
    @classmethod
    def _ascending(cls, v: list[int]) -> list[int]:
        if any(v[i + 1] <= v[i] for i in range(len(v) - 1)):
            raise ValueError(f"thresholds must be strictly ascending without repeats, e.g. [0, 5, 20]; got {v}")
        return v

    def references(self) -> list[Ref]:
        """The categories named under safety_stock (each must be some catalog item's category)."""
        return [Ref(("safety_stock", c), "category", c) for c in self.safety_stock]


class OrdersConfig(StrictModel):
    """Reservations for online orders and their pick tasks (edge/orders.py): the bounds of an order request
    and how long the book remembers."""

    max_lines: int = Field(default=50, ge=1, le=500, description="most lines in one order")
    max_quantity: int = Field(default=1000, ge=1, le=100_000, description="most units in one order line")
    max_ahead_s: float = Field(default=7 * 86400.0, gt=0, le=366 * 86400.0,
                               description="the latest due time accepted, seconds after now")
    max_open: int = Field(default=10_000, ge=1, le=1_000_000, description="most open orders at a time")
    sensor_grace_s: float = Field(
        default=120.0, ge=0, le=3600,
        description="units of a task confirmed by scan stay reserved (and their leaving the shelf is not a sale) "
                    "until the shelf's sensors saw them leave, at most this long")
    keep_closed_s: float = Field(default=7 * 86400.0, ge=0, le=366 * 86400.0,
                                 description="a collected, cancelled or expired order is remembered (same id "
                                             "answered the same) this long")


# ---- the manifest ---------------------------------------------------------------------------


class Manifest(StrictModel):
    """A whole store."""

    version: Literal[1] = 1
    store: StoreInfo
    hub: HubConfig = HubConfig()
    local_broker: LocalBrokerConfig | None = None
    storage: StorageConfig = StorageConfig()
    api: ApiConfig = ApiConfig()
    health: HealthConfig = HealthConfig()  # /healthz thresholds and the watchdog's (edge/health.py)
    zones: list[Zone] = []
    catalog: list[CatalogItem] = []
    shelves: list[Shelf] = []
    devices: list[AnyDeviceConfig] = []
    beacons: list[BeaconConfig] = []  # store BLE beacons (drivers/ble/config.py)
    traffic: TrafficConfig = TrafficConfig()  # foot-traffic aggregation (drivers/door/config.py)
    rules: RulesConfig = RulesConfig()  # restock and alert rules (rules/config.py)
    offers: OffersConfig = OffersConfig()  # shopper offers (rules/config.py)
    webhooks: list[WebhookConfig] = []  # alert webhooks (rules/config.py)
    notifications: NotificationsConfig = NotificationsConfig()  # staff chat channels (rules/config.py)
    epcis_capture: EpcisCaptureConfig | None = None  # RFID EPCIS events to an EPCIS repository (sinks/config.py)
    atp: AtpConfig = AtpConfig()  # available-to-promise: safety stock per category, event thresholds (edge/atp.py)
    orders: OrdersConfig = OrdersConfig()  # reservations for online orders, pick tasks (edge/orders.py)
    nearby: NearbyConfig = NearbyConfig()  # neighbouring stores a clerk can look up (edge/nearby.py)
    backroom: BackroomConfig = BackroomConfig()  # back-room locations counted toward ATP (edge/backroom.py)
    rollout: RolloutConfig = RolloutConfig()  # remote manifest rollout: health gate, versions kept (edge/rollout.py)

    # references between sections (zone, sku, shelf, lane ids) are checked by `parse_manifest`, which
    # reports each at the line of the field that names the missing id

    # convenient lookups (cheap: manifests are small)
    def sku(self, sku: str) -> CatalogItem | None:
        """The catalog entry of `sku`."""
        return next((c for c in self.catalog if c.sku == sku), None)

    def shelf(self, shelf_id: str) -> Shelf | None:
        """The shelf with `shelf_id`."""
        return next((s for s in self.shelves if s.id == shelf_id), None)

    def typed_devices(self) -> list[DeviceConfigBase]:
        """Device sections validated by their family's model (set by `load_manifest`)."""
        return list(self.devices)


# ---- loading --------------------------------------------------------------------------------

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
MAX_FILE_BYTES = 4 * 1024 * 1024  # a manifest or rules file larger than this is refused (a store's is ~10 KB)

_HINTS = {
    "missing": "this field is required: add it",
    "extra_forbidden": "unknown field: remove it or check its spelling",
    "string_pattern_mismatch": "the value does not have the required form",
    "finite_number": "write a finite number: .inf, .nan and 1e999 are not allowed",
}

Loc = tuple[str | int, ...]


def _line_map(text: str) -> dict[Loc, int]:
    """Field path -> 1-based line number, from the YAML node tree."""
    lines: dict[Loc, int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        check_expansion(root)
    except (yaml.YAMLError, RecursionError):
        return lines

    def walk(node: yaml.Node, path: Loc) -> None:
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                kpath = (*path, str(key.value))
                walk(value, kpath)
                lines[kpath] = key.start_mark.line + 1
                if key.tag == "tag:yaml.org,2002:int" and str(key.value).isdigit():  # antenna ports ...
                    lines[(*path, int(key.value))] = lines[kpath]
        elif isinstance(node, yaml.SequenceNode):
            for i, value in enumerate(node.value):
                walk(value, (*path, i))

    if root is not None:
        with contextlib.suppress(RecursionError):
            walk(root, ())
    return lines


def _line_for(lines: Mapping[Loc, int], loc: Loc) -> int | None:
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


def render_path(loc: Loc) -> str:
    """A field path as written in error messages: `devices[2].lanes[0].shelf`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _did_you_mean(word: object, choices: list[str], sep: str = ": ") -> str:
    """`sep` + "did you mean 'x'?" for the closest of `choices`, or ''."""
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    return f"{sep}did you mean {close[0]!r}?" if close else ""


def _unwrap(tp: Any) -> Any:
    """The model (or container) type behind Annotated / Optional / a union holding a model."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            if len(args) == 1:
                tp = args[0]
            elif models:
                return models[0]
            else:
                return tp
        else:
            return tp


def _fields_at(model: type[BaseModel], loc: Loc) -> list[str]:
    """Field names of the model found at `loc` below `model` (for "did you mean"), or []."""
    tp: Any = model
    for part in loc:
        tp = _unwrap(tp)
        origin = get_origin(tp)
        if origin is dict:
            tp = get_args(tp)[1]
        elif origin is list and isinstance(part, int):
            tp = get_args(tp)[0]
        elif isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(part, str) and part in tp.model_fields:
            tp = tp.model_fields[part].annotation
        else:
            return []
    tp = _unwrap(tp)
    return list(tp.model_fields) if isinstance(tp, type) and issubclass(tp, BaseModel) else []


def _substitute_env(value: Any, path: Loc, env: Mapping[str, str], missing: list[tuple[Loc, str]]) -> Any:
    if isinstance(value, str):

        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            missing.append((path, name))
            return ""

        return _ENV.sub(repl, value)
    if isinstance(value, dict):
        return {k: _substitute_env(v, (*path, str(k)), env, missing) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute_env(v, (*path, i), env, missing) for i, v in enumerate(value)]
    return value


def _issues_from(err: ValidationError, file: str, lines: Mapping[Loc, int], model: type[BaseModel],
                 prefix: Loc = ()) -> list[ConfigIssue]:
    """ConfigIssues of a validation error of `model` (found at `prefix` in the file)."""
    out = []
    for e in err.errors(include_url=False):
        rel: Loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        loc: Loc = (*prefix, *rel)
        msg = str(e["msg"]).removeprefix("Value error, ")
        hint = _HINTS.get(str(e["type"]))
        ctx = e.get("ctx") or {}
        if e["type"] == "string_pattern_mismatch":
            hint = f"the value must match {ctx.get('pattern')!s}"
        if e["type"] == "extra_forbidden" and rel:
            hint = f"{hint}{_did_you_mean(rel[-1], _fields_at(model, rel[:-1]), '; ')}"
        if e["type"] == "literal_error":
            hint = _did_you_mean(e.get("input"), re.findall(r"'([^']*)'", str(ctx.get("expected", ""))), "")
        if e["type"] in ("less_than_equal", "less_than") and rel and isinstance(rel[-1], str):
            hint = "lower it: every number in the manifest has a documented maximum"
        if hint and hint not in msg:
            msg = f"{msg} ({hint})"
        out.append(ConfigIssue(file=file, path=render_path(loc), message=msg, line=_line_for(lines, loc)))
    return out


def decode_text(data: bytes, file: str) -> str:
    """The UTF-8 text of a manifest or rules file (a BOM is skipped); `ConfigError` at the first bad byte."""
    data = data.removeprefix(b"\xef\xbb\xbf")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError([ConfigIssue(
            file, "", f"not UTF-8 text (byte 0x{data[exc.start]:02x} on this line): save the file as UTF-8, "
            "e.g. `iconv -f latin1 -t utf-8`", line)]) from None


def read_config_file(path: str | Path) -> str:
    """Read a manifest or rules file as UTF-8 text; `ConfigError` for a missing, huge or non-UTF-8 file."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError([ConfigIssue(str(p), "", f"cannot read the file: {exc.strerror}; check the path")]) from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError([ConfigIssue(str(p), "", f"the file is larger than {MAX_FILE_BYTES // 1024 // 1024} MiB: "
                                                   "is it the right file?")])
    return decode_text(data, str(p))


def parse_yaml(text: str, file: str, lines: Mapping[Loc, int] | None = None) -> tuple[Any, list[ConfigIssue]]:
    """YAML text -> (data, duplicate-key issues); `ConfigError` when it is no YAML at all.

    A key written twice is an error (YAML keeps the last one silently); the data is still returned (with
    the last one) so that the rest of the file can be checked in the same run.
    """
    try:
        return load_yaml(text), []
    except DuplicateKeyError as exc:
        lines = _line_map(text) if lines is None else lines
        issues = []
        for d in exc.duplicates:
            where = next((loc for loc, n in lines.items() if n == d.line and loc and loc[-1] == d.key), (d.key,))
            issues.append(ConfigIssue(file, render_path(where), f"duplicate key {d.key!r}, first at line "
                                      f"{d.first_line}: YAML keeps only the last one; remove one of them", d.line))
        return exc.data, issues
    except RecursionError:
        raise ConfigError([ConfigIssue(file, "", "the YAML is nested too deeply: is it the right file?", 1)]) from None
    except TooLarge as exc:
        raise ConfigError([ConfigIssue(file, "", str(exc), 1)]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(
            [ConfigIssue(file, "", f"not valid YAML: {getattr(exc, 'problem', exc)}; fix the syntax", line)]
        ) from None


_WHERE = {"zone": "zones:", "read_point": "zones:", "sku": "catalog:", "shelf": "shelves:",
          "category": "any catalog item's category:"}


def _reference_problems(m: Manifest, devices: list[tuple[int, DeviceConfigBase]]) -> list[tuple[Loc, str]]:
    """Duplicate ids and references to ids that do not exist, each at the path of the offending field."""
    out: list[tuple[Loc, str]] = []
    sections: list[tuple[str, str, str, list[str]]] = [
        ("zones", "id", "zone", [z.id for z in m.zones]),
        ("catalog", "sku", "sku", [c.sku for c in m.catalog]),
        ("shelves", "id", "shelf", [s.id for s in m.shelves]),
        ("beacons", "id", "beacon", [b.id for b in m.beacons]),
        ("webhooks", "id", "webhook", [w.id for w in m.webhooks]),
    ]
    for section, key, kind, ids in sections:
        out += _duplicates((section,), key, kind, ids)
    out += _duplicates(("devices",), "id", "device", [d.id for _, d in devices], [i for i, _ in devices])
    for i, shelf in enumerate(m.shelves):
        out += _duplicates(("shelves", i, "lanes"), "id", f"lane of shelf {shelf.id!r}", [ln.id for ln in shelf.lanes])

    refs: list[tuple[Loc, Ref]] = []
    for i, shelf in enumerate(m.shelves):
        refs.append((("shelves", i), Ref(("zone",), "zone", shelf.zone)))
        refs += [(("shelves", i), Ref(("lanes", j, "sku"), "sku", ln.sku)) for j, ln in enumerate(shelf.lanes)]
    tokens: dict[str, int] = {}
    for i, tok in enumerate(m.api.tokens):
        first_tok = tokens.setdefault(tok.token, i)
        if first_tok != i:  # which roles would it get? (the value itself is a secret: not printed)
            out.append((("api", "tokens", i, "token"), f"the same token as api.tokens[{first_tok}]: give every "
                                                       "client its own token (or one entry with several roles)"))
    weighed: dict[tuple[str, str], Loc] = {}
    for i, dev in devices:
        refs += [(("devices", i), r) for r in dev.references()]
        for r in dev.references():
            if r.kind != "lane" or r.shelf is None:
                continue
            loc = ("devices", i, *r.loc)
            first = weighed.setdefault((r.shelf, r.id), loc)
            if first != loc:  # two counts for one lane: the stock would flip between them
                out.append((loc, f"lane {r.id!r} of shelf {r.shelf!r} is already measured at {render_path(first)}: "
                                 "map every planogram lane to one device channel"))
        mqtt = "broker_url" in type(dev).model_fields and getattr(dev, "transport", "mqtt") == "mqtt"
        if mqtt and getattr(dev, "broker_url", None) is None and m.local_broker is None:
            out.append((("devices", i, "type"), f"a {dev.type} device reads an MQTT broker: set its broker_url: or "
                                                "the manifest's local_broker: url (it would stay offline)"))
    refs += [(("beacons", i), Ref(("zone",), "zone", b.zone)) for i, b in enumerate(m.beacons)]
    if "entrance_zones" in m.traffic.model_fields_set:
        refs += [(("traffic",), Ref(("entrance_zones", j), "zone", z)) for j, z in enumerate(m.traffic.entrance_zones)]
    refs += [(("rules",), r) for r in m.rules.references()]
    refs += [(("offers",), r) for r in m.offers.references()]
    refs += [(("notifications",), r) for r in m.notifications.references()]
    refs += [(("atp",), r) for r in m.atp.references()]
    out += m.nearby.problems(m.store.id)
    refs += [(("backroom",), r) for r in m.backroom.references()]
    out += m.backroom.problems([z.id for z in m.zones], devices)
    return out + resolve_references(m, refs)


def resolve_references(m: Manifest, refs: list[tuple[Loc, Ref]]) -> list[tuple[Loc, str]]:
    """(path, what to fix) for every reference (found at prefix + ref.loc) to an id `m` does not define."""
    known: dict[str, list[str]] = {
        "zone": [z.id for z in m.zones],
        "sku": [c.sku for c in m.catalog],
        "shelf": [s.id for s in m.shelves],
        "category": sorted({c.category for c in m.catalog if c.category}),
        "read_point": list(dict.fromkeys([*(z.id for z in m.zones), *(x.id for x in m.backroom.locations)])),
    }
    lanes = {s.id: [ln.id for ln in s.lanes] for s in m.shelves}
    cells = {s.id: sorted({ln.sku for ln in s.lanes}) for s in m.shelves}
    out: list[tuple[Loc, str]] = []
    for prefix, ref in refs:
        problem = _unresolved(ref, known, lanes, cells)
        if problem:
            out.append(((*prefix, *ref.loc), problem))
    return out


def _duplicates(
    section: Loc, key: str, kind: str, ids: list[str], index: list[int] | None = None
) -> list[tuple[Loc, str]]:
    out: list[tuple[Loc, str]] = []
    first: dict[str, int] = {}
    for n, ident in enumerate(ids):
        i = index[n] if index is not None else n
        if ident in first:
            also = render_path((*section, first[ident]))
            out.append(((*section, i, key), f"duplicate {kind} id {ident!r} (also at {also}): give every "
                                             f"{kind.split(maxsplit=1)[0]} its own id"))
        else:
            first[ident] = i
    return out


def _unresolved(
    ref: Ref, known: dict[str, list[str]], lanes: dict[str, list[str]], cells: dict[str, list[str]]
) -> str | None:
    """What is wrong with `ref`, or None when it names something that exists."""
    if ref.kind in ("lane", "cell"):
        shelf = ref.shelf or ""
        if shelf not in lanes:
            return None  # the shelf itself is a reference of its own, reported there
        pool = lanes[shelf] if ref.kind == "lane" else cells[shelf]
        if ref.id in pool:
            return None
        if ref.kind == "cell" and ref.id not in known["sku"]:
            return None  # an unknown sku is reported as such
        what = f"shelf {shelf!r} has no lane {ref.id!r}" if ref.kind == "lane" else \
            f"shelf {shelf!r} holds no lane of sku {ref.id!r}"
        return f"{what}{_did_you_mean(ref.id, pool)}; use one of {pool} or add it to the shelf's lanes:"
    pool = known.get(ref.kind, [])
    if ref.id in pool:
        return None
    where = _WHERE.get(ref.kind, f"{ref.kind}s:")
    kind = "zone" if ref.kind == "read_point" else ref.kind  # an antenna's: a zone or a back-room location id
    also = " (an antenna may also read a backroom: location)" if ref.kind == "read_point" else ""
    close = difflib.get_close_matches(ref.id, pool, n=1, cutoff=0.6)
    if close:
        return f"{kind} {ref.id!r} is not defined under {where} did you mean {close[0]!r}? (or add it there){also}"
    listed = f"; defined: {pool[:10]}" if pool else ""
    return f"{kind} {ref.id!r} is not defined under {where} add it there or fix the id{listed}{also}"


def _partial(raw: dict[str, Any], found: list[ConfigIssue]) -> Manifest | None:
    """The manifest without its failed sections, to check references in the same run; None when a section
    that defines ids (zones, catalog, shelves) failed (every reference to it would be reported wrongly)."""
    failed = {i.path.split(".")[0].split("[")[0] for i in found}
    if failed & {"zones", "catalog", "shelves", "backroom", ""}:
        return None
    part = {k: v for k, v in raw.items() if k not in failed and k != "devices"}
    part["store"] = part.get("store", {"id": "partial"})
    try:
        return Manifest.model_validate(part)
    except ValidationError:
        return None


Check = Callable[["Manifest"], list[tuple[Loc, str]]]
"""A further check of a valid manifest: (field path, what to fix) per problem (see `parse_manifest`)."""


def parse_manifest(
    text: str, file: str = "<manifest>", env: Mapping[str, str] | None = None, checks: Sequence[Check] = ()
) -> Manifest:
    """Validate manifest text; raise `ConfigError` listing every problem (one per cause, with its line).

    `checks` run on a manifest that passed everything else (the composition root passes the rules engine's:
    `edge` itself does not import the rules); their problems are reported like the others.
    """
    from drivers.registry import FAMILIES  # a family's config model is imported when a manifest names its type

    env = os.environ if env is None else env
    lines = _line_map(text)
    raw, duplicates = parse_yaml(text, file, lines)
    if not isinstance(raw, dict):
        raise ConfigError([ConfigIssue(file, "", "the manifest must be a YAML mapping with a store: section", 1)])

    missing: list[tuple[Loc, str]] = []
    raw = _substitute_env(raw, (), env, missing)
    issues = duplicates + [
        ConfigIssue(
            file,
            render_path(loc),
            f"environment variable {name} is not set: export it, or write ${{{name}:-default}}",
            _line_for(lines, loc),
        )
        for loc, name in missing
    ]
    unset = {render_path(loc) for loc, _ in missing}
    found: list[ConfigIssue] = []
    manifest: Manifest | None = None
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as err:
        found += _issues_from(err, file, lines, Manifest)

    typed: list[tuple[int, DeviceConfigBase]] = []
    raw_devices = raw.get("devices") or []
    if isinstance(raw_devices, list):
        for i, dev in enumerate(raw_devices):
            if not isinstance(dev, dict):
                continue
            family = FAMILIES.get(str(dev.get("type")))
            if family is None:
                loc: Loc = ("devices", i, "type")
                known = sorted(FAMILIES)
                found.append(ConfigIssue(
                    file, render_path(loc),
                    f"unknown device type {dev.get('type')!r}{_did_you_mean(dev.get('type'), known, '; ')} Types: "
                    f"{', '.join(known) or 'none registered'}",
                    _line_for(lines, loc),
                ))
                continue
            try:
                typed.append((i, family.config_model.model_validate(dev)))
            except ValidationError as err:
                found += _issues_from(err, file, lines, family.config_model, ("devices", i))
    checked = manifest if manifest is not None else _partial(raw, found)
    if checked is not None:
        found += [ConfigIssue(file, render_path(loc), msg, _line_for(lines, loc))
                  for loc, msg in _reference_problems(checked, typed)]
    seen: set[tuple[str, str]] = set()
    for issue in found:
        # one error per cause: a field whose ${VAR} is unset is reported once, as unset; the common device
        # fields are checked by the first pass and again by the family's model
        key = (issue.path, issue.message)
        if key in seen or any(issue.path == u or issue.path.startswith((u + ".", u + "[")) for u in unset):
            continue
        seen.add(key)
        issues.append(issue)
    if issues or manifest is None:
        raise ConfigError(issues)
    manifest = manifest.model_copy(update={"devices": [d for _, d in typed]})
    for check in checks:
        for loc, msg in check(manifest):
            issue = ConfigIssue(file, render_path(loc), msg, _line_for(lines, loc))
            if (issue.path, issue.message) not in seen:
                seen.add((issue.path, issue.message))
                issues.append(issue)
    if issues:
        raise ConfigError(issues)
    return manifest


def load_manifest(path: str | Path, env: Mapping[str, str] | None = None, checks: Sequence[Check] = ()) -> Manifest:
    """Read and validate a manifest file (UTF-8); `checks` as in `parse_manifest`."""
    p = Path(path)
    return parse_manifest(read_config_file(p), str(p), env, checks)


def load_rules_file(path: str | Path, manifest: Manifest) -> RulesBody:
    """Read and validate a rules file (`rules.file`) against `manifest`; `ConfigError` at the rules file's lines."""
    p = Path(path)
    text = read_config_file(p)
    lines = _line_map(text)
    raw, issues = parse_yaml(text, str(p), lines)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([ConfigIssue(str(p), "", "a rules file is a YAML mapping (defaults:, skus:, cells: ...)", 1)])
    body: RulesBody | None = None
    try:
        body = RulesBody.model_validate(raw)
    except ValidationError as err:
        issues += _issues_from(err, str(p), lines, RulesBody)
    if body is not None:
        issues += [ConfigIssue(str(p), render_path(loc), msg, _line_for(lines, loc))
                   for loc, msg in resolve_references(manifest, [((), r) for r in body.references()])]
    if issues or body is None:
        raise ConfigError(issues)
    return body


def machine_problems(m: Manifest) -> list[tuple[Loc, str]]:
    """What this machine lacks for `m` (a `Check`): the state directory, the hub TLS files, the API address.

    `run` refuses to start on these (exit 2) instead of failing later with a traceback; `check-config --here`
    checks them on the machine that will run the manifest (the plain check-config works anywhere).
    """
    out: list[tuple[Loc, str]] = []
    data = Path(m.storage.data_dir)
    existing = next((p for p in (data, *data.parents) if p.exists()), Path("/"))
    if not existing.is_dir():
        out.append((("storage", "data_dir"), f"{existing} is not a directory: point data_dir at a directory"))
    elif not os.access(existing, os.W_OK | os.X_OK):
        what = "is not writable" if existing == data else f"cannot be created ({existing} is not writable)"
        out.append((("storage", "data_dir"), f"{data} {what}: fix the permissions or choose another data_dir "
                                             "(systemd: StateDirectory)"))
    tls = m.hub.tls
    if tls is not None:
        out += _tls_problems(tls)
    host, _, _ = m.api.listen.rpartition(":")
    if m.api.enabled:
        try:
            infos = socket.getaddrinfo(host.strip("[]") or None, 0, type=socket.SOCK_STREAM)
            with socket.socket(infos[0][0], socket.SOCK_STREAM) as sock:
                sock.bind(infos[0][4])  # port 0: only whether the address is this machine's
        except OSError as exc:
            out.append((("api", "listen"), f"cannot listen on {host}: {exc.strerror or exc}; use an address of this "
                                           "machine, 127.0.0.1 (local only) or 0.0.0.0 (every interface)"))
    return out


def _tls_problems(tls: TlsConfig) -> list[tuple[Loc, str]]:
    out: list[tuple[Loc, str]] = []
    unreadable = set()
    for name in ("ca_file", "cert_file", "key_file"):
        path = getattr(tls, name)
        if path is None:
            continue
        try:
            with Path(path).open("rb"):
                pass
        except OSError as exc:
            unreadable.add(name)
            out.append((("hub", "tls", name), f"cannot read {path}: {exc.strerror}; check the path and permissions"))
    ctx = ssl.create_default_context()
    if tls.ca_file is not None and "ca_file" not in unreadable:
        try:
            ctx.load_verify_locations(cafile=str(tls.ca_file))
        except (ssl.SSLError, ValueError) as exc:
            out.append((("hub", "tls", "ca_file"), f"{tls.ca_file} holds no usable CA certificate ({exc}): give the "
                                                   "hub's CA as PEM"))
    if tls.cert_file is not None and tls.key_file is not None and not unreadable & {"cert_file", "key_file"}:
        try:
            ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file), password=lambda: b"")  # never prompt
        except (ssl.SSLError, ValueError) as exc:
            out.append((("hub", "tls", "cert_file"), f"{tls.cert_file} and {tls.key_file} are no matching PEM "
                                                     f"certificate and key ({exc}): check both files"))
    return out
