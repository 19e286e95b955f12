"""The CloudEvents encoder writes exactly what `dumps(envelope(...))` defines; UUIDv7 ids are well formed."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import orjson
import pytest

from edge.envelope import dumps, encode, envelope
from edge.events import DeviceStatusChanged, Gap, MalformedInput, StockChanged
from edge.ids import uuid7, uuid7_many

T = datetime(2026, 11, 22, 10, 0, 0, 123456, tzinfo=UTC)

CASES = [
    StockChanged(source="shelf-1", time=T, subject="A1", shelf="A1", sku="cola-330", count=3, previous=4,
                 delta=-1, version=7, origin="weight"),
    StockChanged(source="shelf-1", time=datetime(2026, 1, 1, tzinfo=UTC), shelf="A1", sku="é\"/\\\n", count=0,
                 previous=None, delta=0, version=1, origin="manual", reason="ünïcode ✓"),
    DeviceStatusChanged(source="rules/restock", time=T, device="d", device_type="shelf_serial", state="offline",
                        error="OSError: [Errno 5]", last_seen=T),
    Gap(source="gateway", time=T, gap_source="rfid-1", first=1, last=99, dropped=99),
    MalformedInput(source="scanner-1", time=T, device="scanner-1", count=2, last_reason="bad \x00 byte"),
]


@pytest.mark.parametrize("event", CASES, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("store", ["demo", "store-0042"])
def test_encode_is_dumps_of_envelope(event: object, store: str) -> None:
    assert isinstance(event, StockChanged | DeviceStatusChanged | Gap | MalformedInput)
    eid = uuid7()
    for seq in (1, 2**40):
        want = dumps(envelope(event, event_id=eid, sequence=seq, store_id=store))
        got = encode(event, event_id=eid, sequence=seq, store_id=store)
        assert got == want
        assert orjson.loads(got)["sequence"] == seq


def test_uuid7_ids_are_ordered_unique_and_version_7() -> None:
    ids = uuid7_many(5000) + [uuid7() for _ in range(5000)] + uuid7_many(1) + uuid7_many(9000)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    now_ms = time.time() * 1000
    for s in ids[::97]:
        u = uuid.UUID(s)
        assert str(u) == s
        assert u.version == 7 and u.variant == uuid.RFC_4122
        assert abs(int(s.replace("-", "")[:12], 16) - now_ms) < 60_000


def test_uuid7_counter_overflow_moves_to_the_next_millisecond() -> None:
    ids = uuid7_many(3 * 4096)  # more than one millisecond's counter space
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert int(ids[-1].replace("-", "")[:12], 16) > int(ids[0].replace("-", "")[:12], 16)
