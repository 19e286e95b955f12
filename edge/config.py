"""The store manifest: one YAML file, one pydantic schema, errors that name the field and the fix.

`load_manifest(path)` reads the file, substitutes `${VAR}` / `${VAR:-default}` from the environment
(secrets never live in the file), validates the common schema, then validates each device section with
its family's model chosen by `type:` (see `drivers/registry.py`). Every problem is collected, with its
file, field path and line, into one `ConfigError`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from drivers.ble.config import BeaconConfig
from drivers.door.config import TrafficConfig
from edge.configbase import AnyDeviceConfig, DeviceConfigBase, Ident, Seconds, StrictModel
from edge.errors import ConfigError, ConfigIssue
from rules.config import OffersConfig, RulesConfig, WebhookConfig

# ---- sections -------------------------------------------------------------------------------


class StoreInfo(StrictModel):
    """Who this gateway is."""

    id: Ident
    name: str = ""
    timezone: str = "UTC"
    opening_time: str = Field(default="08:00", pattern=r"^\d\d:\d\d$")
    closing_time: str = Field(default="21:00", pattern=r"^\d\d:\d\d$")


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
    max_bytes: int = Field(default=256 * 1024, ge=1024)


class HubConfig(StrictModel):
    """The cloud inventory hub's MQTT broker."""

    url: str = "mqtt://127.0.0.1:1883"
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

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in {"mqtt", "mqtts", "tcp", "ssl"} or not parts.hostname:
            raise ValueError("use mqtt://host[:port] or mqtts://host[:port]")
        return v

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not v or any(c in v for c in "+#") or v.startswith("/") or v.endswith("/"):
            raise ValueError("a topic prefix like 'retail/v1': no wildcards, no leading or trailing '/'")
        return v


class BudgetConfig(StrictModel):
    """Disk budget of the droppable telemetry class; ledger, alert and control events are never dropped."""

    telemetry_mb: float = Field(default=256, gt=0)


class StorageConfig(StrictModel):
    """Where state lives and how long the journal is kept."""

    data_dir: Path = Path("./var")
    budgets: BudgetConfig = BudgetConfig()
    journal_retention_days: float = Field(default=7, ge=0)
    commit_interval_ms: float = Field(
        default=5, ge=0, le=1000,
        description="group commit: while a commit is running, a small batch waits for it to finish, at most "
                    "this long (latency vs fsyncs per event); with the writer idle a batch is committed at once",
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
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError("use HOST:PORT, e.g. 127.0.0.1:8080 (port 0 picks a free one)")
        return v


class LocalBrokerConfig(StrictModel):
    """The store-local MQTT broker that networked devices publish to (Zebra readers, shelves, counters)."""

    url: str = "mqtt://127.0.0.1:1883"


class Zone(StrictModel):
    """An area of the store (aisle, end cap, entrance); `sgln` is its EPCIS read point / location."""

    id: Ident
    name: str = ""
    sgln: str | None = Field(default=None, pattern=r"^urn:epc:id:sgln:[0-9]+\.[0-9]*\.[A-Za-z0-9_.-]+$")


class CatalogItem(StrictModel):
    """A SKU the store sells."""

    sku: Ident
    name: str = ""
    gtin: str | None = Field(default=None, pattern=r"^[0-9]{8}$|^[0-9]{12,14}$")
    unit_weight_g: float | None = Field(default=None, gt=0)
    case_pack: int = Field(default=1, ge=1)
    category: str = ""

    @field_validator("gtin")
    @classmethod
    def _check_digit(cls, v: str | None) -> str | None:
        if v is None:
            return v
        digits = [int(c) for c in v]
        body, check = digits[:-1], digits[-1]
        total = sum(d * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
        if (10 - total % 10) % 10 != check:
            raise ValueError(f"GTIN check digit is wrong (expected {(10 - total % 10) % 10})")
        return v.zfill(14)


class Lane(StrictModel):
    """One facing of a SKU on a shelf, as in the planogram."""

    id: Ident
    sku: Ident
    capacity: int = Field(ge=1)
    unit_weight_g: float | None = Field(default=None, gt=0, description="defaults to the catalog's")


class Shelf(StrictModel):
    """A shelf in a zone, with its planogram lanes."""

    id: Ident
    zone: Ident
    name: str = ""
    lanes: list[Lane] = Field(min_length=1)
    stock_source: Literal["any", "weight", "rfid", "scan"] = Field(
        default="any",
        description="which source is the truth for this shelf's counts; claims of other sources are ignored",
    )


# ---- the manifest ---------------------------------------------------------------------------


class Manifest(StrictModel):
    """A whole store."""

    version: Literal[1] = 1
    store: StoreInfo
    hub: HubConfig = HubConfig()
    local_broker: LocalBrokerConfig | None = None
    storage: StorageConfig = StorageConfig()
    api: ApiConfig = ApiConfig()
    zones: list[Zone] = []
    catalog: list[CatalogItem] = []
    shelves: list[Shelf] = []
    devices: list[AnyDeviceConfig] = []
    beacons: list[BeaconConfig] = []  # store BLE beacons (drivers/ble/config.py)
    traffic: TrafficConfig = TrafficConfig()  # foot-traffic aggregation (drivers/door/config.py)
    rules: RulesConfig = RulesConfig()  # restock and alert rules (rules/config.py)
    offers: OffersConfig = OffersConfig()  # shopper offers (rules/config.py)
    webhooks: list[WebhookConfig] = []  # alert webhooks (rules/config.py)

    @model_validator(mode="after")
    def _references(self) -> Manifest:
        problems: list[str] = []
        for kind, ids in (
            ("zone", [z.id for z in self.zones]),
            ("sku", [c.sku for c in self.catalog]),
            ("shelf", [s.id for s in self.shelves]),
            ("device", [d.id for d in self.devices]),
        ):
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            if dupes:
                problems.append(f"duplicate {kind} id(s) {dupes}: every {kind} id must be unique")
        zones = {z.id for z in self.zones}
        skus = {c.sku for c in self.catalog}
        for shelf in self.shelves:
            if shelf.zone not in zones:
                problems.append(f"shelf {shelf.id!r} is in zone {shelf.zone!r}, which is not under zones:; add it")
            for lane in shelf.lanes:
                if lane.sku not in skus:
                    problems.append(
                        f"shelf {shelf.id!r} lane {lane.id!r} holds sku {lane.sku!r}, "
                        "which is not in catalog:; add it there"
                    )
        for dev in self.devices:
            if dev.zone is not None and dev.zone not in zones:
                problems.append(f"device {dev.id!r} is in zone {dev.zone!r}, which is not under zones:; add it")
        if problems:
            raise ValueError("; ".join(problems))
        return self

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

_HINTS = {
    "missing": "this field is required: add it",
    "extra_forbidden": "unknown field: remove it or check its spelling",
    "string_pattern_mismatch": "the value does not have the required form",
}

Loc = tuple[str | int, ...]


def _line_map(text: str) -> dict[Loc, int]:
    """Field path -> 1-based line number, from the YAML node tree."""
    lines: dict[Loc, int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines

    def walk(node: yaml.Node, path: Loc) -> None:
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                kpath = (*path, str(key.value))
                walk(value, kpath)
                lines[kpath] = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, value in enumerate(node.value):
                walk(value, (*path, i))

    if root is not None:
        walk(root, ())
    return lines


def _line_for(lines: Mapping[Loc, int], loc: Loc) -> int | None:
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


def _render_path(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


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


def _issues_from(err: ValidationError, file: str, lines: Mapping[Loc, int], prefix: Loc = ()) -> list[ConfigIssue]:
    out = []
    for e in err.errors(include_url=False):
        loc: Loc = (*prefix, *(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-"))))
        msg = str(e["msg"]).removeprefix("Value error, ")
        hint = _HINTS.get(str(e["type"]))
        if e["type"] == "string_pattern_mismatch":
            ctx = e.get("ctx") or {}
            hint = f"the value must match {ctx.get('pattern')!s}"
        if hint and hint not in msg:
            msg = f"{msg} ({hint})"
        out.append(ConfigIssue(file=file, path=_render_path(loc), message=msg, line=_line_for(lines, loc)))
    return out


def parse_manifest(text: str, file: str = "<manifest>", env: Mapping[str, str] | None = None) -> Manifest:
    """Validate manifest text; raise `ConfigError` listing every problem."""
    from drivers.registry import FAMILIES  # the registry imports family modules; keep it out of import time

    env = os.environ if env is None else env
    lines = _line_map(text)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(
            [ConfigIssue(file, "", f"not valid YAML: {getattr(exc, 'problem', exc)}; fix the syntax", line)]
        ) from None
    if not isinstance(raw, dict):
        raise ConfigError([ConfigIssue(file, "", "the manifest must be a YAML mapping with a store: section", 1)])

    missing: list[tuple[Loc, str]] = []
    raw = _substitute_env(raw, (), env, missing)
    issues = [
        ConfigIssue(
            file,
            _render_path(loc),
            f"environment variable {name} is not set: export it, or write ${{{name}:-default}}",
            _line_for(lines, loc),
        )
        for loc, name in missing
    ]
    manifest: Manifest | None = None
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as err:
        issues += _issues_from(err, file, lines)

    typed: list[DeviceConfigBase] = []
    raw_devices = raw.get("devices") or []
    if isinstance(raw_devices, list):
        for i, dev in enumerate(raw_devices):
            if not isinstance(dev, dict):
                continue
            family = FAMILIES.get(str(dev.get("type")))
            if family is None:
                known = ", ".join(sorted(FAMILIES)) or "none registered"
                issues.append(
                    ConfigIssue(
                        file,
                        _render_path(("devices", i, "type")),
                        f"unknown device type {dev.get('type')!r}: use one of {known}",
                        _line_for(lines, ("devices", i, "type")),
                    )
                )
                continue
            try:
                typed.append(family.config_model.model_validate(dev))
            except ValidationError as err:
                issues += _issues_from(err, file, lines, ("devices", i))
    if issues or manifest is None:
        raise ConfigError(issues)
    return manifest.model_copy(update={"devices": typed})


def load_manifest(path: str | Path, env: Mapping[str, str] | None = None) -> Manifest:
    """Read and validate a manifest file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigIssue(str(p), "", f"cannot read the file: {exc.strerror}; check the path")]) from None
    return parse_manifest(text, str(p), env)
