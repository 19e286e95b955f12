"""EPCIS 2.0 JSON-LD ObjectEvents and their CBV 2.0 canonical event hash (GS1 EPCIS/CBV 2.0, github gs1/EPCIS).

Choices:
- arrivals and moves: `action` OBSERVE, `bizStep` cycle_counting, `disposition` sellable_accessible,
  `readPoint` and `bizLocation` = the zone's `sgln` (omitted when the zone has none);
- departures: `action` OBSERVE with `disposition` unknown and only a `readPoint` (the zone where the tag was
  last seen): we observed that it is no longer there, not that it was decommissioned (DELETE) or sold;
- SGTINs are listed as their pure-identity URN; other EPCs as the TDS raw URI `urn:epc:raw:<bits>.x<HEX>`.

The `eventID` follows the CBV 2.0 event hash (§8.9) in a simplified form, documented here so any consumer
can recompute it: the pre-hash string is the concatenation, without separators, of
  `eventType=ObjectEvent` `eventTime=<UTC, millisecond precision, Z>` `eventTimeZoneOffset=+00:00`
  `epcList` then `epc=<GS1 Digital Link URI or raw URI>` for each EPC in lexical order
  `action=<action>` `bizStep=https://ref.gs1.org/cbv/BizStep-<step>`
  `disposition=https://ref.gs1.org/cbv/Disp-<disp>` `readPoint` `id=<sgln>` `bizLocation` `id=<sgln>`
(absent fields are left out); eventID = `ni:///sha-256;<lower-case hex SHA-256 of the UTF-8 string>?ver=CBV2.0`.
Not covered (we never emit them): quantities, sensor data, ILMD, extensions, sgln -> Digital Link conversion.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from drivers.rfid.epc import Epc, decode_epc, digital_link

CONTEXT = "https://ref.gs1.org/standards/epcis/epcis-context.jsonld"
CBV_BIZSTEP = "https://ref.gs1.org/cbv/BizStep-"
CBV_DISP = "https://ref.gs1.org/cbv/Disp-"


def epc_uri(epc: Epc) -> str:
    """The URI listed in epcList: pure-identity URN of an SGTIN, or the TDS raw URI."""
    if epc.scheme == "sgtin-96":
        return epc.key
    return f"urn:epc:raw:{len(epc.hex) * 4}.x{epc.hex}"


def _hash_epc(epc: Epc) -> str:
    return digital_link(epc) if epc.scheme == "sgtin-96" else epc_uri(epc)


def event_time(t: datetime) -> str:
    """UTC, millisecond precision, `Z` (the canonical form)."""
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def canonical_string(doc: dict[str, Any], epcs: list[Epc]) -> str:
    """The (simplified) CBV 2.0 pre-hash string of an ObjectEvent built by `object_event`."""
    parts = [f"eventType={doc['type']}", f"eventTime={doc['eventTime']}",
             f"eventTimeZoneOffset={doc['eventTimeZoneOffset']}", "epcList"]  # fmt: skip
    parts += [f"epc={u}" for u in sorted(_hash_epc(e) for e in epcs)]
    parts.append(f"action={doc['action']}")
    if "bizStep" in doc:
        parts.append(f"bizStep={CBV_BIZSTEP}{doc['bizStep']}")
    if "disposition" in doc:
        parts.append(f"disposition={CBV_DISP}{doc['disposition']}")
    for key in ("readPoint", "bizLocation"):
        if key in doc:
            parts += [key, f"id={doc[key]['id']}"]
    return "".join(parts)


def event_hash(pre_hash: str) -> str:
    """`ni:///sha-256;<hex>?ver=CBV2.0` of a pre-hash string."""
    return f"ni:///sha-256;{hashlib.sha256(pre_hash.encode()).hexdigest()}?ver=CBV2.0"


def object_event(
    epcs_hex: list[str],
    when: datetime,
    *,
    disposition: str = "sellable_accessible",
    biz_step: str = "cycle_counting",
    read_point: str | None = None,
    biz_location: str | None = None,
) -> dict[str, Any]:
    """An OBSERVE ObjectEvent document with its canonical eventID."""
    epcs = [decode_epc(h) for h in epcs_hex]
    doc: dict[str, Any] = {
        "@context": [CONTEXT],
        "type": "ObjectEvent",
        "eventTime": event_time(when),
        "eventTimeZoneOffset": "+00:00",
        "epcList": [epc_uri(e) for e in epcs],
        "action": "OBSERVE",
        "bizStep": biz_step,
        "disposition": disposition,
    }
    if read_point is not None:
        doc["readPoint"] = {"id": read_point}
    if biz_location is not None:
        doc["bizLocation"] = {"id": biz_location}
    doc["eventID"] = event_hash(canonical_string(doc, epcs))
    return doc
