"""Builds docs/asyncapi.yaml (AsyncAPI 3.0) from the event classes themselves, so it cannot drift.

Every `Event` subclass of every family becomes a message whose payload is the CloudEvents envelope with
that type's `data` schema (derived from the dataclass fields and their type hints); each TOPIC becomes a
channel. Commands come from the table below plus the families' command parts in docs/asyncapi-parts/.
`python -m edge.asyncapi > docs/asyncapi.yaml` regenerates it; a test checks it is current and validates
messages published in an end-to-end run against it.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import sys
import types
import typing
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from edge import __version__
from edge.events import Event

# packages whose modules may define events (imported so their subclasses register)
_PACKAGES = ("edge", "drivers", "rules")
_SKIP_MODULES = ("edge.api", "edge.cli", "edge.demo", "edge.__main__", "edge.asyncapi")


def _import_all() -> None:
    for pkg_name in _PACKAGES:
        pkg = importlib.import_module(pkg_name)
        for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{pkg_name}."):
            if info.name.startswith(_SKIP_MODULES):
                continue
            importlib.import_module(info.name)


def event_classes() -> list[type[Event]]:
    """Every concrete event class, sorted by type name."""
    _import_all()
    seen: dict[str, type[Event]] = {}
    stack: list[type[Event]] = list(Event.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls.TYPE and cls.__module__.split(".")[0] in _PACKAGES:  # not test or benchmark load events
            seen.setdefault(cls.TYPE, cls)
    return [seen[k] for k in sorted(seen)]


def _schema(tp: Any) -> dict[str, Any]:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is type(None):
        return {"type": "null"}
    if origin in (typing.Union, types.UnionType):
        subs = [_schema(a) for a in args]
        return {"anyOf": subs}
    if origin is typing.Literal:
        return {"enum": list(args)}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is float:
        return {"type": "number"}
    if tp is str:
        return {"type": "string"}
    if tp is datetime:
        return {"type": "string", "format": "date-time"}
    if origin in (list, tuple, set, frozenset) or tp in (list, tuple):
        item = args[0] if args and args[-1] is not Ellipsis else (args[0] if args else Any)
        return {"type": "array", "items": _schema(item)} if item is not Any else {"type": "array"}
    if origin is dict or tp is dict:
        return {"type": "object"}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _object_schema(tp, ())
    return {}


def _object_schema(cls: type, skip: tuple[str, ...]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    props: dict[str, Any] = {}
    required: list[str] = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        props[f.name] = _schema(hints[f.name])
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.append(f.name)
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = required
    return out


def data_schema(cls: type[Event]) -> dict[str, Any]:
    """JSON Schema of an event's `data` (a class may override with DATA_SCHEMA)."""
    custom = getattr(cls, "DATA_SCHEMA", None)
    if isinstance(custom, dict):
        return custom
    return _object_schema(cls, ("source", "time", "subject"))


ENVELOPE: dict[str, Any] = {
    "type": "object",
    "required": ["specversion", "id", "source", "type", "time", "datacontenttype", "sequence", "data"],
    "properties": {
        "specversion": {"const": "1.0"},
        "id": {"type": "string", "description": "UUIDv7, unique, stable across retries"},
        "source": {"type": "string", "description": "/stores/{store_id}/{device or component}"},
        "type": {"type": "string"},
        "time": {"type": "string", "format": "date-time"},
        "datacontenttype": {"const": "application/json"},
        "dataschema": {"type": "string"},
        "subject": {"type": "string"},
        "sequence": {"type": "integer", "minimum": 1,
                     "description": "+1 per event of this source, never reused; a gap event announces drops"},
        "data": {},
    },
}

COMMANDS: dict[str, tuple[str, dict[str, Any]]] = {
    "manifest.apply": (
        "Apply a manifest version (signed; edge/rollout.py, docs/fleet.md): a whole `manifest` (object or YAML "
        "text) or a JSON merge `patch` (RFC 7386) on the running one. Validated as check-config --here and against "
        "the running store, staged, switched in place (only the drivers whose section changed restart), then the "
        "health gate commits it or puts the previous version back. The reply (after the gate): {result: applied, "
        "version, sha256, previous_version, changed, restarted}. Errors, each changing nothing: bad_request, "
        "invalid (every problem with its field), out_of_order (version not above every staged one), too_large, "
        "conflict (cells holding stock dropped without allow_stock_loss), busy (an apply is running); "
        "rolled_back (the gate failed: why, and the version running again).",
        {"version": {"type": "integer", "minimum": 1, "maximum": 2**53 - 1},
         "manifest": {"type": ["object", "string"], "description": "the whole manifest"},
         "patch": {"type": "object", "description": "RFC 7386 merge patch on the running manifest"},
         "allow_stock_loss": {"type": "boolean", "default": False}},
    ),
    "manifest.get": (
        "The running manifest (secrets written in clear redacted; ${VAR} references as written), its version (0: "
        "the --config bootstrap), sha256 (as in state/info), origin (bootstrap | rollout), the version being "
        "applied, and the history of versions (staged, applied, rolled_back with the reason, interrupted).",
        {},
    ),
    "stock.get": (
        "Current stock, optionally filtered by shelf, sku and zone; the same cells and versions as the retained "
        "state/stock topics and GET /api/v1/stock.",
        {"shelf": {"type": "string"}, "sku": {"type": "string"}, "zone": {"type": "string"}},
    ),
    "atp.get": (
        "Available-to-promise: one SKU's document (with `sku`) or every catalog SKU's (optionally one `category`); "
        "the same documents as the retained state/atp topics and GET /api/v1/atp. An unknown sku or category is "
        "not_found.",
        {"sku": {"type": "string"}, "category": {"type": "string"}},
    ),
    "nearby.get": (
        "Neighbouring stores (manifest nearby:) as seen through the hub: with `sku`, per neighbour its state (fresh: "
        "`atp` now, with its own time `updated`; stale: offline by its will or older than nearby.max_age_s; unknown: "
        "this gateway's hub offline, no status or figure received in this hub session), `why`, and the last figure "
        "apart in `last_known` (never as `atp`); without `sku`, the neighbours and their status. The same answers "
        "as GET /api/v1/nearby/{sku} and /api/v1/nearby. A malformed sku is bad_request. docs/omnichannel.md.",
        {"sku": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"}},
    ),
    "order.reserve": (
        "Reserve an online order (signed). The reply is the order: per line what was reserved and what is short, "
        "and the pick tasks; committed with its events before the reply. The same order_id and body again answer "
        "the same order; the same id with another body is `conflict`. Errors: bad_request (a field named, with "
        "the fix), not_found (unknown sku or GTIN), conflict, busy. docs/orders.md.",
        {"order_id": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"},
         "mode": {"enum": ["pickup", "ship"]},
         "due": {"type": "string", "format": "date-time", "description": "RFC 3339 with a zone, in the future"},
         "lines": {"type": "array", "minItems": 1, "description": "at most orders.max_lines (50)", "items": {
             "type": "object", "required": ["qty"],
             "properties": {"sku": {"type": "string"}, "gtin": {"type": "string", "pattern": "^[0-9]{14}$"},
                            "qty": {"type": "integer", "minimum": 1,
                                    "description": "at most orders.max_quantity (1000)"}}}}},
    ),
    "order.get": (
        "One order (with `order_id`; not_found for an unknown one) or the orders the store remembers (optionally "
        "one `state`, at most `limit`); the same documents as GET /api/v1/orders.",
        {"order_id": {"type": "string"}, "state": {"type": "string"}, "limit": {"type": "integer"}},
    ),
    "order.cancel": (
        "Cancel an order that is not closed (signed): its reservations are released. Errors: not_found, conflict "
        "(already collected, cancelled or expired).",
        {"order_id": {"type": "string"}, "reason": {"type": "string", "maxLength": 200}},
    ),
    "order.collect": (
        "Hand a ready order over (signed); a COLLECT:<order id> scan does the same. Errors: not_found, conflict "
        "(not ready).",
        {"order_id": {"type": "string"}},
    ),
}

REQUEST_BASE = {
    "id": {"type": ["string", "integer"], "description": "echoed in the reply; the nonce of a signed request (a "
                                                         "string of 1-128 characters or an integer)"},
    "reply_to": {"type": "string", "maxLength": 256,
                 "description": "topic for the reply: a valid MQTT topic name under {root}/reply/ (or a prefix the "
                                "manifest allows); otherwise no reply at all (docs/commands.md)"},
    "auth": {"type": "object", "required": ["alg", "kid", "ts", "sig"],
             "description": "the hub's signature, required by commands that change state (docs/commands.md)",
             "properties": {"alg": {"const": "HMAC-SHA256"}, "kid": {"type": "string"},
                            "ts": {"type": "integer", "description": "seconds since 1970-01-01T00:00:00Z"},
                            "sig": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}},
}
REPLY = {
    "type": "object",
    "required": ["id", "ok"],
    "properties": {
        "id": {"type": ["string", "integer", "null"]},
        "ok": {"type": "boolean"},
        "result": {},
        "error": {"type": "object", "required": ["code", "message"],
                  "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                                 "reason": {"type": "string", "description": "why an `unauthorized` refusal: "
                                            "missing, no_keys, malformed, unknown_key, bad_signature, stale, "
                                            "before_start, replay"}}},
    },
}


def _part_commands(root: Path) -> dict[str, tuple[str, dict[str, Any]]]:
    """Command request schemas from docs/asyncapi-parts/*.yaml (families that own commands)."""
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for part in sorted((root / "docs" / "asyncapi-parts").glob("*.yaml")):
        doc = yaml.safe_load(part.read_text(encoding="utf-8")) or {}
        messages = (doc.get("components") or {}).get("messages") or {}
        for address, ch in (doc.get("channels") or {}).items():
            if "/cmd/" not in address:
                continue
            name = address.rsplit("/cmd/", 1)[1]
            op = ch.get("publish") or ch.get("subscribe") or {}
            ref = str((op.get("message") or {}).get("$ref", "")).rsplit("/", 1)[-1]
            payload = (messages.get(ref) or {}).get("payload") or {}
            props = {k: v for k, v in (payload.get("properties") or {}).items() if k not in ("id", "reply_to")}
            out[name] = (str(ch.get("description", "")), props)
    return out


def _msg_name(cls: type[Event]) -> str:
    return cls.TYPE.replace("retail.", "").replace(".", "_")


def build(root: Path | None = None) -> dict[str, Any]:
    """The whole AsyncAPI 3.0 document as a dict."""
    root = root or Path(__file__).resolve().parents[1]
    classes = event_classes()
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    schemas: dict[str, Any] = {"CloudEvent": ENVELOPE, "CommandReply": REPLY}
    by_topic: dict[str, list[type[Event]]] = {}
    for cls in classes:
        by_topic.setdefault(cls.TOPIC, []).append(cls)
        name = _msg_name(cls)
        schemas[name] = {
            "allOf": [
                {"$ref": "#/components/schemas/CloudEvent"},
                {"type": "object", "properties": {"type": {"const": cls.TYPE}, "data": data_schema(cls)}},
            ]
        }
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        messages[name] = {
            "name": cls.TYPE,
            "title": cls.__name__,
            "summary": doc,
            "contentType": "application/json",
            "x-event-class": cls.CLASS.value,
            "payload": {"$ref": f"#/components/schemas/{name}"},
        }
    for topic, members in sorted(by_topic.items()):
        cid = topic.replace("/", "_")
        classes_here = sorted({c.CLASS.value for c in members})
        ahead = (" Sent ahead of a backlog of the other topics' events (order is kept per topic, not across"
                 " topics)." if topic == "alerts" else "")
        channels[cid] = {
            "address": "{root}/" + topic,
            "description": f"CloudEvents (structured JSON; a JSON array of them when batching is on). "
                           f"Classes: {', '.join(classes_here)}. QoS 1, ordered per topic.{ahead}",
            "parameters": {"root": {"description": "topic prefix and store id, e.g. retail/v1/demo"}},
            "messages": {_msg_name(c): {"$ref": f"#/components/messages/{_msg_name(c)}"} for c in members},
        }
        operations[f"publish_{cid}"] = {"action": "send", "channel": {"$ref": f"#/channels/{cid}"}}
    channels["status"] = {
        "address": "{root}/status",
        "description": "Retained. {state: online} at connect; {state: offline} is the MQTT will.",
        "parameters": {"root": {"description": "topic prefix and store id"}},
        "messages": {"status": {"$ref": "#/components/messages/status"}},
    }
    messages["status"] = {"name": "status", "contentType": "application/json", "payload": {
        "type": "object", "required": ["state", "store"],
        "properties": {"state": {"enum": ["online", "offline"]}, "store": {"type": "string"},
                       "version": {"type": "string"}, "since": {"type": "string"}, "time": {"type": "string"}}}}
    operations["publish_status"] = {"action": "send", "channel": {"$ref": "#/channels/status"}}
    channels["state_stock"] = {
        "address": "{root}/state/stock/{shelf}",
        "description": "Retained, compacted (latest wins): every SKU on the shelf with its version.",
        "parameters": {"root": {"description": "topic prefix and store id"}, "shelf": {"description": "shelf id"}},
        "messages": {"shelf_stock": {"$ref": "#/components/messages/shelf_stock"}},
    }
    cell = {"type": "object", "required": ["shelf", "sku", "count", "version", "state"], "properties": {
        "shelf": {"type": "string"}, "sku": {"type": "string"}, "zone": {"type": "string"},
        "count": {"type": ["integer", "null"], "minimum": 0,
                  "description": "null while no source ever reported the cell (state unknown): unknown is not 0"},
        "version": {"type": "integer", "minimum": 0},
        # self-explaining (issue 16): what it is, how full, when last seen
        "gtin": {"type": ["string", "null"], "description": "GTIN-14"}, "name": {"type": ["string", "null"]},
        "unit": {"type": "string", "description": "UN/ECE Rec 20 code, EA = each"},
        "category": {"type": ["string", "null"]},
        "state": {"enum": ["unknown", "out", "low", "ok"]},
        "low": {"type": "boolean", "description": "at or below min (or out)"},
        "min": {"type": ["integer", "null"], "description": "restock rule's min (null: no enabled rule)"},
        "par": {"type": ["integer", "null"], "description": "restock rule's par (restocked up to)"},
        "verified": {"type": ["string", "null"], "description": "last claim of a count, also an unchanged one"},
        "origin": {"type": "string"}, "updated": {"type": ["string", "null"]}, "capacity": {"type": "integer"},
        # trust (issue 14): a source cannot see the cell (stale) or fused sources disagree (conflict), since when
        "stale": {"type": "boolean"}, "stale_since": {"type": ["string", "null"]},
        "stale_reason": {"type": ["string", "null"]}, "conflict": {"type": "boolean"},
        "conflict_since": {"type": ["string", "null"], "description": "while set, the lower count is served"},
        "conflict_reason": {"type": ["string", "null"]},
        "sources": {"type": "object", "additionalProperties": {"type": "integer"},
                    "description": "a fused cell's (stock_source any) last count per origin"}}}
    schemas["StockCell"] = cell
    messages["shelf_stock"] = {"name": "shelf_stock", "contentType": "application/json", "payload": {
        "type": "object", "required": ["shelf", "version", "items"],
        "properties": {"shelf": {"type": "string"}, "zone": {"type": ["string", "null"]},
                       "version": {"type": "integer"},
                       "items": {"type": "array", "items": {"$ref": "#/components/schemas/StockCell"}}}}}
    operations["publish_state_stock"] = {"action": "send", "channel": {"$ref": "#/channels/state_stock"}}
    _store_state(channels, operations, messages)
    commands = {**COMMANDS, **_part_commands(root)}
    for name, (desc, props) in sorted(commands.items()):
        cid = "cmd_" + name.replace(".", "_")
        req = f"{cid}_request"
        messages[req] = {"name": f"cmd/{name}", "contentType": "application/json", "payload": {
            "type": "object", "required": ["id", "reply_to"], "properties": {**REQUEST_BASE, **props}}}
        channels[cid] = {"address": "{root}/cmd/" + name, "description": desc,
                         "parameters": {"root": {"description": "topic prefix and store id"}},
                         "messages": {req: {"$ref": f"#/components/messages/{req}"}}}
        operations[f"receive_{cid}"] = {
            "action": "receive", "channel": {"$ref": f"#/channels/{cid}"},
            "reply": {"address": {"location": "$message.payload#/reply_to"},
                      "channel": {"$ref": "#/channels/cmd_reply"},
                      "messages": [{"$ref": "#/channels/cmd_reply/messages/reply"}]},
        }
    channels["cmd_reply"] = {"address": None, "description": "The request's reply_to topic (MQTT 3.1.1 friendly).",
                             "messages": {"reply": {"$ref": "#/components/messages/reply"}}}
    messages["reply"] = {"name": "reply", "contentType": "application/json",
                         "payload": {"$ref": "#/components/schemas/CommandReply"}}
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Smart-store edge gateway",
            "version": __version__,
            "description": "Northbound MQTT interface of one store's gateway (see ../shared/CONTRACT.md). "
                           "Generated by `python -m edge.asyncapi` from the event classes; do not edit by hand.",
        },
        "defaultContentType": "application/json",
        "servers": {"hub": {"host": "hub.example.com:8883", "protocol": "mqtt", "protocolVersion": "3.1.1"}},
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    }


def _store_state(channels: dict[str, Any], operations: dict[str, Any], messages: dict[str, Any]) -> None:
    """Retained state/atp/{sku}, state/info and state/catalog (issue 16; edge/atp.py, edge/storeinfo.py)."""
    nullable = {"type": ["string", "null"]}
    docs: dict[str, tuple[str, str, dict[str, Any], dict[str, Any]]] = {
        "state_atp": ("{root}/state/atp/{sku}", "Retained, latest wins: available-to-promise of one SKU = certain on "
                      "hand - reserved - safety stock (>= 0); a new version when the figure or its reasons change.",
                      {"sku": {"description": "catalog sku"}},
                      {"type": "object", "required": ["sku", "atp", "version"], "properties": {
                          "sku": {"type": "string"}, "gtin": nullable, "name": nullable, "unit": {"type": "string"},
                          "category": nullable, "atp": {"type": "integer", "minimum": 0},
                          "on_hand": {"type": "integer"}, "certain": {"type": "integer"},
                          "reserved": {"type": "integer"}, "safety_stock": {"type": "integer"},
                          "certain_only": {"type": "boolean"},
                          "reasons": {"type": "array", "items": {"type": "string"}},
                          "locations": {"type": "array", "items": {"type": "object"}},
                          "thresholds": {"type": "array", "items": {"type": "integer"}},
                          "level": {"type": "integer"}, "version": {"type": "integer"},
                          "updated": {"type": "string"}}}),
        "state_info": ("{root}/state/info", "Retained: the store, its time zone and opening hours, gateway and "
                       "manifest versions (manifest: schema_version, sha256, version (the applied rollout "
                       "version, 0: the --config bootstrap), origin), every device with its state.", {},
                       {"type": "object", "required": ["store", "version"], "properties": {
                           "store": {"type": "string"}, "name": nullable, "timezone": {"type": "string"},
                           "gln": nullable, "opening_hours": {"type": "object"},
                           "gateway_version": {"type": "string"}, "manifest": {"type": "object"},
                           "devices": {"type": "array", "items": {"type": "object"}},
                           "version": {"type": "integer"}, "updated": {"type": "string"}}}),
        "state_catalog": ("{root}/state/catalog", "Retained: the catalog, SKU <-> GTIN-14, names, unit, category.",
                          {}, {"type": "object", "required": ["items", "version"], "properties": {
                              "store": {"type": "string"}, "items": {"type": "array", "items": {"type": "object"}},
                              "version": {"type": "integer"}, "updated": {"type": "string"}}}),
    }
    for cid, (address, desc, params, payload) in docs.items():
        channels[cid] = {"address": address, "description": desc,
                         "parameters": {"root": {"description": "topic prefix and store id"}, **params},
                         "messages": {cid: {"$ref": f"#/components/messages/{cid}"}}}
        messages[cid] = {"name": cid, "contentType": "application/json", "payload": payload}
        operations[f"publish_{cid}"] = {"action": "send", "channel": {"$ref": f"#/channels/{cid}"}}


def render(root: Path | None = None) -> str:
    """The YAML text of docs/asyncapi.yaml."""
    return yaml.safe_dump(build(root), sort_keys=False, width=110, allow_unicode=True)


if __name__ == "__main__":
    sys.stdout.write(render())
