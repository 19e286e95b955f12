"""Every EPCIS eventID the gateway emits equals GS1's reference event hash.

The reference is `epcis-event-hash-generator` 1.9.3 (GS1 / RalphTro, the "exemplary implementation of the EPCIS
event hash generator algorithm" of CBV 2.0 §8.9), run offline: it loads the EPCIS 2.0.0 JSON-LD context from the
copy it ships. Events come from the real RFID processor fed with tag reads, so the test covers what reaches the
hub: arrivals, moves and departures, SGTIN-96 of every partition, raw EPCs, zones with and without an SGLN,
SGLN extensions `0` (no `/254/` part) and named ones.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from epcis_event_hash_generator import dl_normaliser, hash_generator, json_to_py

from drivers.rfid.config import LlrpConfig, SmoothingConfig
from drivers.rfid.epcis import CONTEXT, object_event, sgln_digital_link
from drivers.rfid.events import EpcisObjectEvent
from drivers.rfid.processor import RfidProcessor
from drivers.rfid.reads import TagRead
from edge.clock import ManualClock
from edge.config import Manifest, Zone
from firmware_sim.world import sgtin96_hex


def reference_event_id(event: dict[str, Any]) -> str:
    """GS1's reference hash of one event, wrapped in an EPCISDocument as the generator expects."""
    body = {k: v for k, v in event.items() if k not in ("@context", "eventID")}
    doc = {"@context": [CONTEXT], "type": "EPCISDocument", "schemaVersion": "2.0",
           "creationDate": "2026-12-04T10:00:00Z", "epcisBody": {"eventList": [body]}}  # fmt: skip
    events = json_to_py.event_list_from_epcis_document_json(doc)
    prehashes = hash_generator.derive_prehashes_from_events(events)
    (hashed,) = hash_generator.calculate_hashes_from_pre_hashes(prehashes)
    return str(hashed)


# zone -> SGLN: a named extension, extension "0" (the GLN alone), a 12-digit company prefix, and no SGLN at all
ZONES = {
    "apparel": "urn:epc:id:sgln:0614141.00001.apparel",
    "entrance": "urn:epc:id:sgln:0614141.00001.0",
    "backroom": "urn:epc:id:sgln:061414100001..B-2_x.y",
    "cafe": None,
}
ANTENNAS = {1: "apparel", 2: "entrance", 3: "backroom", 4: "cafe"}


def sgtins(rng: random.Random) -> list[str]:
    """SGTIN-96 EPCs of every partition (company prefix 6..12 digits), random item refs and serials."""
    out = []
    for digits in range(6, 13):
        prefix = "".join(rng.choice("0123456789") for _ in range(digits))
        item = "".join(rng.choice("0123456789") for _ in range(13 - digits))
        out.append(sgtin96_hex(prefix, item, rng.randrange(2**38)))
    return out


RAW = [
    "E28011606000020A1B2C3D4E",  # a factory-default (TID-like) EPC: kept raw
    "3114257BF7194E4000001A85",  # SSCC-96 header: not decoded, raw
    "AB",  # a short EPC
]


def test_every_emitted_event_id_equals_the_reference_hash(demo_manifest: Manifest) -> None:
    zones = [Zone(id=z, name=z, sgln=s) for z, s in ZONES.items()]
    reader = LlrpConfig(id="rfid-1", host="127.0.0.1", antennas=ANTENNAS, epcis=True,
                        smoothing=SmoothingConfig(present_after_reads=2, lost_timeout_s=5))  # fmt: skip
    manifest = demo_manifest.model_copy(update={"zones": zones, "devices": [reader]})
    t0 = datetime(2026, 12, 4, 9, 30, 0, 250_000, tzinfo=UTC)
    proc = RfidProcessor(manifest, ManualClock(t0))
    rng = random.Random(20261204)
    epcs = sgtins(rng) + RAW
    docs: list[dict[str, Any]] = []

    def feed(epc: str, antenna: int, now: datetime) -> None:
        read = TagRead(device_id="rfid-1", time=now, epc=epc, antenna=antenna, read_point=ANTENNAS[antenna],
                       rssi_dbm=-55.0)  # fmt: skip
        docs.extend(o.document for o in proc.feed(read, now) if isinstance(o, EpcisObjectEvent))

    for s in range(40):
        now = t0 + timedelta(seconds=s, milliseconds=rng.randrange(1000))
        for i, epc in enumerate(epcs):
            antenna = 1 + (i % 4)
            if s >= 12 and i % 3 == 0:
                antenna = 1 + ((i + 1) % 4)  # a third of the tags move to the next zone
            if s >= 25 and i % 2 == 0:
                continue  # half of them leave: departures after the lost-timeout
            feed(epc, antenna, now)
        docs.extend(o.document for o in proc.tick(now) if isinstance(o, EpcisObjectEvent))

    kinds = {(d["disposition"], "bizLocation" in d, "readPoint" in d) for d in docs}
    assert ("sellable_accessible", True, True) in kinds  # arrivals and moves with an SGLN
    assert ("unknown", False, True) in kinds  # departures: readPoint only
    assert ("sellable_accessible", False, False) in kinds  # a zone without SGLN
    assert len(docs) >= len(epcs) + len(epcs) // 2  # every arrival, moves, the departures
    mismatches = [(d["eventID"], reference_event_id(d)) for d in docs if d["eventID"] != reference_event_id(d)]
    assert mismatches == []


@pytest.mark.parametrize("urn", [
    "urn:epc:id:sgln:0614141.00001.0",
    "urn:epc:id:sgln:0614141.00001.apparel",
    "urn:epc:id:sgln:0614141000.01.x",
    "urn:epc:id:sgln:061414100001..0",
    "urn:epc:id:sgln:061414.123456.a!b(c)d*e+f,g:h",  # every character Digital Link percent-encodes
    "urn:epc:id:sgln:0614141.00001.%2Fslash",  # an extension the EPC URI already escaped stays escaped
])
def test_sgln_to_digital_link_as_the_reference_normaliser(urn: str) -> None:
    assert sgln_digital_link(urn) == dl_normaliser.normaliser(urn)


def test_an_sgln_that_does_not_add_up_is_not_converted() -> None:
    # 7 + 4 digits is not a 12-digit GLN body: neither side makes a Digital Link of it
    bad = "urn:epc:id:sgln:0614141.0001.x"
    assert sgln_digital_link(bad) == bad
    assert dl_normaliser.normaliser(bad) is None


def test_a_document_with_special_characters_in_the_location_hashes_as_the_reference() -> None:
    doc = object_event(["3074257BF7194E4000001A85"], datetime(2026, 12, 4, 10, 0, 0, 123_000, tzinfo=UTC),
                       read_point="urn:epc:id:sgln:061414.123456.a!b(c)d*e+f,g:h",
                       biz_location="urn:epc:id:sgln:0614141.00001.0")  # fmt: skip
    assert doc["eventID"] == reference_event_id(doc)
