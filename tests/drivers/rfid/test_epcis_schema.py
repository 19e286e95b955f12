"""Every EPCIS event the RFID processor emits, and every EPCISDocument built of them, is valid against GS1's EPCIS
2.0 JSON schema (tests/drivers/rfid/data/epcis/EPCIS-JSON-Schema.json; origin in its README.md) with format
checking on (date-time: rfc3339-validator, uri: rfc3986-validator through jsonschema's FormatChecker)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from drivers.rfid.config import LlrpConfig, SmoothingConfig
from drivers.rfid.epcis import epcis_document, epcis_document_bytes
from drivers.rfid.events import EpcisObjectEvent
from drivers.rfid.processor import RfidProcessor
from drivers.rfid.reads import TagRead
from edge.clock import ManualClock
from edge.config import Manifest, Zone
from firmware_sim.epcis_repository import schema_validator
from tests.drivers.rfid.test_epcis_hash import ANTENNAS, RAW, ZONES, sgtins

VALIDATOR = schema_validator()


def processor_events(demo_manifest: Manifest) -> list[dict[str, Any]]:
    """Arrivals, moves and departures of SGTINs of every partition and raw EPCs, zones with and without SGLN."""
    smoothing = SmoothingConfig(present_after_reads=1, lost_timeout_s=6)
    t0 = datetime(2026, 12, 4, 23, 59, 50, 999_000, tzinfo=UTC)  # the day changes during the run
    proc = RfidProcessor(demo_manifest.model_copy(update={
        "zones": [Zone(id=z, name=z, sgln=s) for z, s in ZONES.items()],
        "devices": [LlrpConfig(id="rfid-1", host="127.0.0.1", antennas=ANTENNAS, epcis=True, smoothing=smoothing)],
    }), ManualClock(t0))  # fmt: skip
    epcs = sgtins(random.Random(7)) + RAW
    docs: list[dict[str, Any]] = []
    for s in range(30):
        now = t0 + timedelta(seconds=s)
        for i, epc in enumerate(epcs):
            if s >= 20 and i % 2 == 0:
                continue  # departures
            antenna = 1 + ((i + (s >= 10)) % 4)  # everyone moves once
            read = TagRead(device_id="rfid-1", time=now, epc=epc, antenna=antenna, read_point=ANTENNAS[antenna],
                           rssi_dbm=-50.0)  # fmt: skip
            docs += [o.document for o in proc.feed(read, now) if isinstance(o, EpcisObjectEvent)]
        docs += [o.document for o in proc.tick(now) if isinstance(o, EpcisObjectEvent)]
    return docs


def errors(doc: dict[str, Any]) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATOR.iter_errors(doc)]


def test_every_emitted_event_is_valid_alone_and_in_a_document(demo_manifest: Manifest) -> None:
    events = processor_events(demo_manifest)
    assert len(events) > 20
    assert {"unknown", "sellable_accessible"} <= {e["disposition"] for e in events}
    assert [e for e in events if errors(e)] == []  # each ObjectEvent on its own (with its @context)
    created = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
    doc = epcis_document(events, created)
    assert errors(doc) == []
    # the capture sink's concatenated form is the same document
    bodies = [orjson.dumps({k: v for k, v in e.items() if k != "@context"}) for e in events]
    assert orjson.loads(epcis_document_bytes(bodies, created)) == doc


@pytest.mark.parametrize(("field", "value"), [
    ("eventTime", "2026-12-04 10:00:00"),  # not RFC 3339: the format checker must catch it
    ("eventTimeZoneOffset", "UTC"),
    ("action", "SEEN"),
    ("readPoint", {"id": "not a uri"}),
])
def test_the_schema_check_is_not_blind(demo_manifest: Manifest, field: str, value: object) -> None:
    event = processor_events(demo_manifest)[0]
    assert errors(event) == []
    assert errors({**event, field: value}) != []
    assert errors(epcis_document([{**event, field: value}], datetime(2026, 12, 4, tzinfo=UTC))) != []
