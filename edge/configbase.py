"""Shared pieces of the manifest schema; family config modules import only this, never `edge.config`.

Every number from outside is bounded: the shared types below carry a documented maximum, and no manifest
model accepts NaN or infinity (`StrictModel` sets `allow_inf_nan=False`, so `.inf`, `1e999` and `.nan` are
refused with the field named, whatever a field's own bounds are).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

IDENT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
"""Ids (store, shelf, SKU, device, order): 1-64 of A-Z a-z 0-9 _ . -, starting with a letter or digit."""
Ident = Annotated[str, Field(pattern=IDENT_PATTERN, description="letters, digits, '_', '.', '-'")]
"""An id that is safe inside an MQTT topic level and a URL path segment (no `/`, `+`, `#`)."""

# ---- bounded numbers ------------------------------------------------------------------------

SECONDS_MAX = 7 * 86400.0
"""Longest duration a `Seconds` field takes: one week (604,800 s)."""
LONG_SECONDS_MAX = 366 * 86400.0
"""Longest duration a `LongSeconds` field takes (look-back windows): one year (31,622,400 s)."""
COUNT_MAX = 1_000_000
"""Largest `Count` (units on a shelf, quantities, limits): one million."""
MEGABYTES_MAX = 1024.0 * 1024.0
"""Largest `Megabytes` budget: 1 TiB."""

NUMBER_MAX = 2**32
"""No number anywhere in the manifest is larger in magnitude (the safety net under every field's own bounds)."""

Seconds = Annotated[float, Field(ge=0, le=SECONDS_MAX, allow_inf_nan=False)]
"""A duration in seconds: 0 up to one week, finite."""
PositiveSeconds = Annotated[float, Field(gt=0, le=SECONDS_MAX, allow_inf_nan=False)]
"""A duration in seconds above 0, up to one week, finite."""
LongSeconds = Annotated[float, Field(gt=0, le=LONG_SECONDS_MAX, allow_inf_nan=False)]
"""A look-back window in seconds above 0, up to one year, finite."""
Count = Annotated[int, Field(ge=0, le=COUNT_MAX)]
"""A count 0 .. one million."""
PositiveCount = Annotated[int, Field(ge=1, le=COUNT_MAX)]
"""A count 1 .. one million."""
Megabytes = Annotated[float, Field(gt=0, le=MEGABYTES_MAX, allow_inf_nan=False)]
"""A disk budget in MiB above 0, up to 1 TiB."""


# ---- network addresses ----------------------------------------------------------------------

_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*\.?$")


def check_host(v: str) -> str:
    """A host name or IP address alone: no scheme, no port, no path (the port has a field of its own)."""
    if "://" in v:
        raise ValueError(f"{v!r} is a URL: write the host alone, e.g. 192.0.2.10")
    host, sep, port = v.rpartition(":")
    if sep and port.isdigit() and host and ":" not in host:  # IPv4 or a name with :port
        raise ValueError(f"{v!r} has a port: write host: {host} and put the port in port: {port}")
    if v.startswith("[") and "]" in v:
        raise ValueError(f"{v!r}: write an IPv6 address without brackets (and the port in port:)")
    try:
        ipaddress.ip_address(v)
    except ValueError:
        if not _HOSTNAME.match(v):
            raise ValueError(f"{v!r} is neither an IP address nor a host name: write e.g. 192.0.2.10 or "
                             "reader-1.store.lan") from None
    return v


Host = Annotated[str, AfterValidator(check_host)]
"""A host name or IP address without port or scheme."""

MQTT_SCHEMES = frozenset({"mqtt", "mqtts", "tcp", "ssl"})


def check_mqtt_url(v: str) -> str:
    """`mqtt(s)://[user:password@]host[:port]` with a port in 1..65535 when given."""
    parts = urlsplit(v)
    if parts.scheme not in MQTT_SCHEMES or not parts.hostname:
        raise ValueError("use mqtt://host[:port] or mqtts://host[:port]")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"the port of {v!r} is not a number in 1..65535: fix it, e.g. mqtt://host:1883") from None
    if port == 0:
        raise ValueError(f"the port of {v!r} must be 1..65535, e.g. mqtt://host:1883")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{v!r}: an MQTT broker URL has no path or query; write mqtt://host[:port]")
    return v


MqttUrl = Annotated[str, AfterValidator(check_mqtt_url)]


def check_http_url(v: str, example: str = "https://host.example.com/path") -> str:
    """An http(s) URL with a host and, when given, a port in 1..65535; `example` goes into the error."""
    try:
        parts = urlsplit(v)
        port = parts.port
    except ValueError:
        raise ValueError(f"{v!r}: the port must be a number in 1..65535") from None
    if parts.scheme not in ("http", "https") or port == 0:
        raise ValueError(f"{v!r}: write an http(s) URL, e.g. {example}")
    if not parts.hostname:
        raise ValueError(f"{v!r} has no host: write e.g. {example}")
    return v
"""An MQTT broker URL: mqtt(s)://[user:password@]host[:port]."""


# ---- GS1 location numbers -------------------------------------------------------------------


def gs1_check_digit(body: str) -> int:
    """GS1 mod-10 check digit of a digit string (GTIN, GLN, SSCC without their check digit)."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return (10 - total % 10) % 10


def check_gln(v: str) -> str:
    """A 13-digit Global Location Number whose last digit is its GS1 check digit."""
    if len(v) != 13 or not v.isdigit():
        raise ValueError(f"a GLN is 13 digits (company prefix + location reference + check digit), not {v!r}")
    expected = gs1_check_digit(v[:12])
    if int(v[12]) != expected:
        raise ValueError(f"GLN {v} has a wrong check digit: the last digit should be {expected}")
    return v


Gln = Annotated[str, AfterValidator(check_gln)]
"""A GLN: 13 digits, check digit verified."""

# GS1 General Specifications 7.11, figure 7.11-1: AI encodable character set 82
CSET82 = frozenset("!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz")
# GS1 EPC Tag Data Standard (TDS 2.1, section 6.4 "GS3A3" component): in an EPC URI these characters are
# written %-escaped, every other CSET 82 character as itself.
_URI_ESCAPES = {"%22": '"', "%25": "%", "%26": "&", "%2F": "/", "%3C": "<", "%3E": ">", "%3F": "?"}
_URI_PLAIN = CSET82 - frozenset(_URI_ESCAPES.values())
_SGLN = re.compile(r"^urn:epc:id:sgln:([0-9]*)\.([0-9]*)\.(.*)$")
SGLN_EXAMPLE = "urn:epc:id:sgln:0614141.00001.aisle-1"


def check_sgln(v: str) -> str:
    """An SGLN EPC URI per the GS1 Tag Data Standard: company prefix + location reference = 12 digits,
    extension of 1..20 characters of CSET 82 (URI-escaped as the TDS says); extension "0" means none."""
    m = _SGLN.match(v)
    if m is None:
        raise ValueError(f"write an SGLN EPC URI urn:epc:id:sgln:CompanyPrefix.LocationRef.Extension, "
                         f"e.g. {SGLN_EXAMPLE}")
    prefix, ref, ext = m.groups()
    if not 6 <= len(prefix) <= 12:
        raise ValueError(f"the company prefix {prefix!r} must have 6 to 12 digits (e.g. {SGLN_EXAMPLE})")
    if len(prefix) + len(ref) != 12:
        raise ValueError(f"company prefix ({len(prefix)} digits) + location reference ({len(ref)} digits) must "
                         f"make 12 digits, the GLN without its check digit: pad the location reference to "
                         f"{12 - len(prefix)} digits")
    chars: list[str] = []
    i = 0
    while i < len(ext):
        if ext[i] == "%":
            esc = ext[i:i + 3]
            if esc not in _URI_ESCAPES:
                raise ValueError(f"extension {ext!r}: {ext[i:i + 3]!r} is not one of the escapes an EPC URI "
                                 f"allows ({', '.join(_URI_ESCAPES)})")
            chars.append(_URI_ESCAPES[esc])
            i += 3
            continue
        if ext[i] not in _URI_PLAIN:
            raise ValueError(f"extension {ext!r}: character {ext[i]!r} is not allowed (GS1 character set 82; "
                             'write " % & / < > ? as %22 %25 %26 %2F %3C %3E %3F)')
        chars.append(ext[i])
        i += 1
    if not chars:
        raise ValueError('the extension is missing: write ".0" for none, e.g. urn:epc:id:sgln:0614141.00001.0')
    if len(chars) > 20:
        raise ValueError(f"extension {ext!r} has {len(chars)} characters: GS1 allows at most 20")
    return v


Sgln = Annotated[str, AfterValidator(check_sgln)]
"""An SGLN EPC URI (urn:epc:id:sgln:CompanyPrefix.LocationRef.Extension), strictly checked."""


# ---- YAML -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Duplicate:
    """One key written twice in the same mapping (1-based lines)."""

    key: str
    first_line: int
    line: int


class DuplicateKeyError(yaml.YAMLError):
    """Mappings with the same key twice (YAML says keys are unique; PyYAML keeps the last silently)."""

    def __init__(self, duplicates: list[Duplicate], data: Any = None) -> None:
        self.duplicates = duplicates
        self.data = data  # what PyYAML would have made of it (the last of each duplicate kept)
        super().__init__("; ".join(f"line {d.line}: duplicate key {d.key!r} (first at line {d.first_line})"
                                   for d in duplicates))


class StrictSafeLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that notes duplicate keys (`load_yaml` refuses them); merge keys (`<<`) still work."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[Duplicate] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """Construct a mapping, noting every key written a second time."""
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = self.construct_object(key_node)
            if key in seen:
                self.duplicates.append(Duplicate(str(key), seen[key], key_node.start_mark.line + 1))
            else:
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


YAML_NODES_MAX = 100_000
"""Most nodes a manifest or rules file may expand to, aliases counted each time they are used."""


class TooLarge(yaml.YAMLError):
    """The document expands (through anchors and aliases) to more than YAML_NODES_MAX nodes."""


def check_expansion(node: yaml.Node | None, limit: int = YAML_NODES_MAX) -> None:
    """Raise `TooLarge` when `node` expands to more than `limit` nodes (a 'billion laughs' alias bomb)."""
    sizes: dict[int, int] = {}

    def size(n: yaml.Node) -> int:
        if id(n) not in sizes:
            sizes[id(n)] = 0  # a recursive alias counts as nothing more
            children: list[yaml.Node] = []
            if isinstance(n, yaml.MappingNode):
                children = [c for pair in n.value for c in pair]
            elif isinstance(n, yaml.SequenceNode):
                children = list(n.value)
            sizes[id(n)] = min(1 + sum(size(c) for c in children), limit + 1)
        return sizes[id(n)]

    if node is not None and size(node) > limit:
        raise TooLarge(f"the document expands to more than {limit:,} values (anchors and aliases counted where "
                       "they are used): write it out plainly")


def load_yaml(text: str) -> Any:
    """Parse YAML text safely; raises `yaml.YAMLError`, `TooLarge` for an alias bomb, and `DuplicateKeyError`
    naming every duplicate key."""
    loader = StrictSafeLoader(text)
    try:
        node = loader.get_single_node()
        check_expansion(node)
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    if loader.duplicates:
        raise DuplicateKeyError(loader.duplicates, data)
    return data


# ---- models ---------------------------------------------------------------------------------


class StrictModel(BaseModel):
    """Base of every manifest section: unknown fields are errors (usually typos); no NaN or infinity, and
    no number beyond +-NUMBER_MAX even where a field names no maximum of its own."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _bounded(cls, v: Any) -> Any:
        if isinstance(v, int | float) and not isinstance(v, bool) and abs(v) > NUMBER_MAX:
            raise ValueError(f"{v:g} is out of range: no number in the manifest is beyond +-{NUMBER_MAX:,} "
                             "(durations are seconds, sizes bytes or MiB); use a smaller value")
        return v


@dataclass(frozen=True, slots=True)
class Ref:
    """A reference from one manifest section to an id defined elsewhere (checked by `edge.config`)."""

    loc: tuple[str | int, ...]  # path of the referring field, relative to the section
    kind: str  # zone | shelf | sku | lane | category
    id: str
    shelf: str | None = None  # for kind "lane": the shelf the lane must be on


class DeviceConfigBase(StrictModel):
    """Fields every device section has; each family subclasses it with `type: Literal[...]`."""

    id: Ident
    type: str
    name: str = ""
    enabled: bool = True
    zone: Ident | None = Field(default=None, description="where the device is, if it is in one zone")

    def references(self) -> list[Ref]:
        """Ids this device names (zones, shelves, lanes); a family adds its own to the base's."""
        return [Ref(loc=("zone",), kind="zone", id=self.zone)] if self.zone is not None else []


class AnyDeviceConfig(DeviceConfigBase):
    """First-pass view of a device section: only the common fields are checked, the rest by its family."""

    model_config = ConfigDict(extra="allow", frozen=True)
