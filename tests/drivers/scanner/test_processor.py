"""Scan semantics by role, table-driven: receive, restock sessions, cycle counts, lookup, bad codes."""

from __future__ import annotations

from datetime import timedelta

import pytest

from drivers.scanner.config import ScannerSerialConfig
from drivers.scanner.processor import ScannerProcessor
from drivers.scanner.reads import Scan
from edge.clock import ManualClock
from edge.config import Manifest
from edge.events import Event
from edge.processing import Output, StockUpdate

COLA = "]C101054490000009961727123110L1"  # cola-330 in the demo catalog
WATER = "05449000214911"  # water-500
CHOC = "07622210449283"  # choc-100 (shelf-b1)
UNKNOWN = "4006381333931"  # valid EAN-13, not in the catalog


def describe(o: Output) -> str:
    if isinstance(o, StockUpdate):
        kind, n = ("count", o.count) if o.count is not None else ("delta", o.delta)
        return f"stock {o.shelf} {o.sku} {kind}={n} {o.origin}"
    assert isinstance(o, Event)
    return o.TYPE.removeprefix("retail.")


CASES = [
    ("receive", [COLA, COLA], ["scan.received.v1", "scan.received.v1"]),
    ("lookup", [WATER], ["scan.lookup.v1"]),
    (
        "restock",
        ["SHELF:shelf-a1", COLA, COLA, WATER, "RESTOCK:END"],
        [
            "restock.started.v1",
            "stock shelf-a1 cola-330 delta=1 scan",
            "stock shelf-a1 cola-330 delta=1 scan",
            "stock shelf-a1 water-500 delta=1 scan",
            "restock.finished.v1",
        ],
    ),
    ("restock", [COLA], ["scan.rejected.v1"]),
    ("restock", ["SHELF:shelf-a1", CHOC], ["restock.started.v1", "scan.rejected.v1"]),
    (
        "restock",
        ["SHELF:shelf-a1", "SHELF:shelf-b1", CHOC],
        ["restock.started.v1", "restock.finished.v1", "restock.started.v1", "stock shelf-b1 choc-100 delta=1 scan"],
    ),
    (
        "count",
        ["SHELF:shelf-a1", COLA, COLA, COLA, "COUNT:END"],
        ["stock shelf-a1 cola-330 count=3 count", "stock shelf-a1 water-500 count=0 count", "scan.count.finished.v1"],
    ),
    (
        "lookup",
        ["MODE:RESTOCK", "SHELF:shelf-b1", "MODE:LOOKUP"],
        ["scan.mode.v1", "restock.started.v1", "restock.finished.v1", "scan.mode.v1"],
    ),
    (
        "lookup",
        [UNKNOWN, "05449000000997", "MODE:DANCE", "SHELF:nope"],
        ["scan.unknown_gtin.v1", "scan.unreadable.v1", "scan.unreadable.v1", "scan.rejected.v1"],
    ),
    ("receive", ["0105449000000996172512311012345621XYZ"], ["scan.ambiguous.v1", "scan.received.v1"]),
]


@pytest.mark.parametrize(("role", "scans", "want"), CASES)
def test_roles(demo_manifest: Manifest, clock: ManualClock, role: str, scans: list[str], want: list[str]) -> None:
    dev = ScannerSerialConfig(id="scan-1", port="/dev/null", role=role)
    proc = ScannerProcessor(demo_manifest.model_copy(update={"devices": [dev]}), clock)
    out: list[Output] = []
    for v in scans:
        clock.advance(1)
        out += proc.feed(Scan(device_id="scan-1", time=clock.now(), value=v), clock.now())
    assert [describe(o) for o in out] == want


def test_count_session_times_out(demo_manifest: Manifest, clock: ManualClock) -> None:
    dev = ScannerSerialConfig(id="scan-1", port="/dev/null", role="count", session_timeout_s=30)
    proc = ScannerProcessor(demo_manifest.model_copy(update={"devices": [dev]}), clock)
    for v in ("SHELF:shelf-a1", WATER, WATER):
        proc.feed(Scan(device_id="scan-1", time=clock.now(), value=v), clock.now())
    assert proc.tick(clock.now() + timedelta(seconds=10)) == []
    out = proc.tick(clock.now() + timedelta(seconds=31))
    assert [describe(o) for o in out] == [
        "stock shelf-a1 cola-330 count=0 count",
        "stock shelf-a1 water-500 count=2 count",
        "scan.count.finished.v1",
    ]
    assert proc.tick(clock.now() + timedelta(seconds=100)) == []


@pytest.mark.parametrize("raw", ["01054490000009961725123110A/B#1", "(01)05449000000996(10)A/B+1#", "+/#", "SHELF:#"])
def test_scanned_values_never_reach_a_topic(demo_manifest: Manifest, clock: ManualClock, raw: str) -> None:
    proc = ScannerProcessor(demo_manifest, clock)
    for role in ("MODE:RECEIVE", "MODE:RESTOCK"):
        proc.feed(Scan(device_id="scan-1", time=clock.now(), value=role), clock.now())
        out = proc.feed(Scan(device_id="scan-1", time=clock.now(), value=raw), clock.now())
        assert out
        for o in out:
            assert isinstance(o, Event)
            assert not any(c in o.TOPIC for c in "+#")
            assert o.subject is None or not any(c in o.subject for c in "/+#")
