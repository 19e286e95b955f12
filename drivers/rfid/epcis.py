"""EPCIS 2.0 JSON-LD ObjectEvents and their CBV 2.0 canonical event hash (GS1 EPCIS/CBV 2.0, github gs1/EPCIS).

Choices:
- arrivals and moves: `action` OBSERVE, `bizStep` cycle_counting, `disposition` sellable_accessible,
  `readPoint` and `bizLocation` = the zone's `sgln` (omitted when the zone has none);
- departures: `action` OBSERVE with `disposition` unknown and only a `readPoint` (the zone where the tag was
  last seen): we observed that it is no longer there, not that it was decommissioned (DELETE) or sold;
- SGTINs are listed as their pure-identity URN; other EPCs as the TDS raw URI `urn:epc:raw:<bits>.x<HEX>`.

The `eventID` is the "EPCIS and CBV 2.0 event hash" (CBV 2.0 §8.9; GS1's reference implementation is
`epcis-event-hash-generator`, against which tests/drivers/rfid/test_epcis_hash.py checks every event we emit).
Its pre-hash string is the concatenation, without separators, of
  `eventType=ObjectEvent` `eventTime=<UTC, millisecond precision, Z>` `eventTimeZoneOffset=+00:00`
  `epcList` then `epc=<canonical GS1 Digital Link URI or raw URI>` for each EPC in lexical order
  `action=<action>` `bizStep=https://ref.gs1.org/cbv/BizStep-<step>`
  `disposition=https://ref.gs1.org/cbv/Disp-<disp>` `readPoint` `id=<DL of the SGLN>`
  `bizLocation` `id=<DL of the SGLN>`
(absent fields left out). Every `urn:epc:id:...` URI is converted to its canonical GS1 Digital Link URI
first: an SGTIN to `https://id.gs1.org/01/<GTIN-14>/21/<serial>`, an SGLN
`urn:epc:id:sgln:<prefix>.<location ref>.<ext>` to `https://id.gs1.org/414/<GLN-13>` plus `/254/<ext>` unless the
extension is `0`, with `! ( ) * + , :` percent-encoded (GS1 Digital Link table 7-1) in serials and extensions.
eventID = `ni:///sha-256;<lower-case hex SHA-256 of the UTF-8 string>?ver=CBV2.0`.
Not covered (we never emit them): quantities, sensor data, ILMD, extensions.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from drivers.rfid.epc import Epc, decode_epc

# the versioned context GS1 publishes for EPCIS 2.0.0 (the standard's own examples use it)
CONTEXT = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
CBV_BIZSTEP = "https://ref.gs1.org/cbv/BizStep-"
CBV_DISP = "https://ref.gs1.org/cbv/Disp-"


def epc_uri(epc: Epc) -> str:
    """The URI listed in epcList: pure-identity URN of an SGTIN, or the TDS raw URI."""
    if epc.scheme == "sgtin-96":
        return epc.key
    return f"urn:epc:raw:{len(epc.hex) * 4}.x{epc.hex}"


_DL_ESCAPES = str.maketrans({"!": "%21", "(": "%28", ")": "%29", "*": "%2A", "+": "%2B", ",": "%2C", ":": "%3A"})
_SGLN = re.compile(r"^urn:epc:id:sgln:(\d{6,12})\.(\d{0,6})\.(.{1,20})$")


def _check_digit(body: str) -> int:
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return (10 - total % 10) % 10


def sgln_digital_link(urn: str) -> str:
    """Canonical GS1 Digital Link URI of an SGLN EPC URI (the form the event hash uses); other URIs as given."""
    m = _SGLN.match(urn)
    if m is None or len(m[1]) + len(m[2]) != 12:
        return urn
    gln = m[1] + m[2]
    dl = f"https://id.gs1.org/414/{gln}{_check_digit(gln)}"
    return dl if m[3] == "0" else f"{dl}/254/{m[3].translate(_DL_ESCAPES)}"


def _hash_epc(epc: Epc) -> str:
    if epc.scheme == "sgtin-96" and epc.gtin is not None and epc.serial is not None:
        return f"https://id.gs1.org/01/{epc.gtin}/21/{str(epc.serial).translate(_DL_ESCAPES)}"
    return epc_uri(epc)


def event_time(t: datetime) -> str:
    """UTC, millisecond precision, `Z` (the canonical form)."""
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def hash_epc_uri(epc: Epc) -> str:
    """The form an EPC takes in the pre-hash string: canonical GS1 Digital Link URI of an SGTIN, else raw URI."""
    return _hash_epc(epc)


def canonical_string(doc: dict[str, Any], epcs: list[Epc]) -> str:
    """The (simplified) CBV 2.0 pre-hash string of an ObjectEvent built by `object_event`."""
    return pre_hash(doc, [_hash_epc(e) for e in epcs])


def pre_hash(doc: dict[str, Any], epc_links: list[str]) -> str:
    """The CBV 2.0 pre-hash string of an OBSERVE-style ObjectEvent (the fields `object_event` writes) whose EPCs
    are already in their hash form (`hash_epc_uri`); `eventTime` may carry any offset (it is hashed in UTC)."""
    t = datetime.fromisoformat(doc["eventTime"].replace("Z", "+00:00"))
    when = event_time(t + timedelta(microseconds=500))  # rounded half up to the millisecond, as the reference
    parts = [f"eventType={doc['type']}", f"eventTime={when}",
             f"eventTimeZoneOffset={doc['eventTimeZoneOffset']}", "epcList"]  # fmt: skip
    parts += [f"epc={u}" for u in sorted(epc_links)]
    parts.append(f"action={doc['action']}")
    if "bizStep" in doc:
        parts.append(f"bizStep={_cbv(CBV_BIZSTEP, doc['bizStep'])}")
    if "disposition" in doc:
        parts.append(f"disposition={_cbv(CBV_DISP, doc['disposition'])}")
    for key in ("readPoint", "bizLocation"):
        if key in doc:
            parts += [key, f"id={sgln_digital_link(doc[key]['id'])}"]
    return "".join(parts)


def _cbv(prefix: str, value: str) -> str:
    return value if ":" in value else prefix + value  # a bare CBV word, or already a URI


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


# ---- EPCISDocument (EPCIS 2.0 §9.3 / the JSON schema's `epcisDocument`) ----
SCHEMA_VERSION = "2.0"


def epcis_document(events: list[dict[str, Any]], created: datetime) -> dict[str, Any]:
    """An EPCISDocument carrying `events` (their own `@context` is dropped: the document's applies)."""
    body = [{k: v for k, v in e.items() if k != "@context"} for e in events]
    return {"@context": [CONTEXT], "type": "EPCISDocument", "schemaVersion": SCHEMA_VERSION,
            "creationDate": event_time(created), "epcisBody": {"eventList": body}}  # fmt: skip


def epcis_document_bytes(event_bodies: list[bytes], created: datetime) -> bytes:
    """The same document built from events already serialised without `@context` (the capture outbox's rows),
    by concatenation: a 1,000-event document is not parsed and re-serialised on its way out."""
    head = (b'{"@context":["' + CONTEXT.encode() + b'"],"type":"EPCISDocument","schemaVersion":"'
            + SCHEMA_VERSION.encode() + b'","creationDate":"' + event_time(created).encode()
            + b'","epcisBody":{"eventList":[')  # fmt: skip
    return head + b",".join(event_bodies) + b"]}}"
