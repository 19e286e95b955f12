"""Back-room counting, pure, on an injected clock: the RFID processor's counts and stale flags for a back-room
read point, the scanners' receiving ledger, the book (edge/backroom.py), ATP's split, the restock quantity."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from drivers.rfid.processor import RfidProcessor
from drivers.rfid.reads import ReaderStatus, TagRead
from drivers.scanner.processor import ScannerProcessor
from drivers.scanner.reads import Scan
from edge.atp import AtpTracker, compute_atp
from edge.backroom import NOT_VOUCHED, BackroomBook, BackroomCounted, BackroomStale
from edge.clock import ManualClock
from edge.config import Manifest, parse_manifest
from edge.driver import DeviceOffline
from edge.processing import StockUpdate
from edge.state import StockState
from firmware_sim.world import demo_manifest_text, sgtin96_hex
from rules.config import RulesBody
from rules.restock import compile_rules, restock_quantity

T0 = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
TEE_M = "80614141123458"
COLA = "05449000000996"
ANTENNAS = {1: "apparel", 3: "backroom"}


def store(locations: list[dict[str, Any]] | None = None) -> Manifest:
    """The demo store with an LLRP reader whose antenna 3 reads the back room, and a receive scanner."""
    raw = yaml.safe_load(demo_manifest_text())
    if locations is not None:
        raw["backroom"] = {"locations": locations}
    rooms = [x for x in raw["backroom"]["locations"] if "rfid" in x["counted_by"]]
    raw["devices"] = [
        {"id": "rfid-1", "type": "llrp", "host": "127.0.0.1", "antennas": ANTENNAS if rooms else {1: "apparel"},
         "smoothing": {"present_after_reads": 2, "lost_timeout_s": 10}},
        {"id": "scan-1", "type": "scanner_serial", "port": "/dev/null", "role": "receive"},
    ]  # fmt: skip
    return parse_manifest(yaml.safe_dump(raw, allow_unicode=True), "test.yaml")


def tee(serial: int) -> str:
    return sgtin96_hex("0614141", "812345", serial)


def read(epc: str, ant: int, now: datetime) -> TagRead:
    return TagRead(device_id="rfid-1", time=now, epc=epc, antenna=ant, read_point=ANTENNAS[ant], rssi_dbm=-55)


def of(outputs: Any, kind: type) -> list[Any]:
    return [o for o in outputs if isinstance(o, kind)]


# ---- RFID ----------------------------------------------------------------------------------------------------


def test_rfid_counts_back_room_tags_and_goes_stale_with_its_reader() -> None:
    proc = RfidProcessor(store(), ManualClock(T0))
    out: list[Any] = []
    for s in range(11):  # 4 tees in the back room, 1 on the rack
        now = T0 + timedelta(seconds=s)
        for n in range(4):
            out += proc.feed(read(tee(n), 3, now), now)
        out += proc.feed(read(tee(99), 1, now), now)
        out += proc.tick(now)
    stale = of(out, BackroomStale)  # vouched for after a lost-timeout of reads since the start
    assert [(s.location, s.on, s.time - T0) for s in stale] == [
        ("backroom", True, timedelta(0)), ("backroom", False, timedelta(seconds=10))]
    assert "since the gateway started" in stale[0].reason
    counts = of(out, BackroomCounted)
    assert [(c.location, c.sku, c.count, c.origin) for c in counts if c.sku == "tee-m"][-1] == (
        "backroom", "tee-m", 4, "rfid")
    assert [(c.sku, c.count) for c in counts if c.sku == "tee-l"] == [("tee-l", 0)]  # said once vouched for
    assert [u.count for u in of(out, StockUpdate) if u.shelf == "rack-c1"] == [1]  # the rack counts only its own

    now = T0 + timedelta(seconds=11)
    out = list(proc.feed(DeviceOffline(device_id="rfid-1", time=now, reason="connection refused"), now))
    stale = of(out, BackroomStale)
    assert [(s.on, s.source) for s in stale] == [(True, "rfid-1")] and "offline" in stale[0].reason

    # back: stale while it reconciles (one lost-timeout), then vouched and the count said again
    out = []
    for s in range(12, 30):
        now = T0 + timedelta(seconds=s)
        for n in range(3):  # one tee left the back room while the reader was away
            out += proc.feed(read(tee(n), 3, now), now)
        out += proc.tick(now)
    stale = of(out, BackroomStale)
    assert [s.on for s in stale] == [True, False] and "reconciling" in stale[0].reason
    assert [c.count for c in of(out, BackroomCounted) if c.sku == "tee-m"][-1] == 3


def test_rfid_a_reader_never_heard_leaves_the_back_room_stale() -> None:
    proc = RfidProcessor(store(), ManualClock(T0))
    out = list(proc.tick(T0))
    assert [(s.on, s.reason) for s in of(out, BackroomStale)] == [
        (True, "reader rfid-1 not heard from since the gateway started")]
    out = list(proc.feed(ReaderStatus(device_id="rfid-1", time=T0, inventorying=True), T0))
    later = T0 + timedelta(seconds=6)
    out += proc.feed(ReaderStatus(device_id="rfid-1", time=later, inventorying=True), later)
    out += proc.tick(T0 + timedelta(seconds=10.5))  # reconciled: vouched, every kept SKU's count said (0 here)
    assert [s.on for s in of(out, BackroomStale)][-1] is False
    assert sorted((c.sku, c.count) for c in of(out, BackroomCounted)) == [("tee-l", 0), ("tee-m", 0)]


# ---- receiving ------------------------------------------------------------------------------------------------


def test_receive_scans_book_in_and_restock_scans_move_out() -> None:
    m = store([{"id": "backroom", "counted_by": ["rfid"], "skus": ["tee-m", "tee-l"]},
               {"id": "cage", "names": {"zh-CN": "后仓"}, "counted_by": ["receiving"], "scanners": ["scan-1"]}])
    proc = ScannerProcessor(m, ManualClock(T0))
    out: list[Any] = []
    for code in (f"]C101{COLA}", f"]C101{COLA}", "MODE:RESTOCK", "SHELF:shelf-a1", f"]C101{COLA}", "RESTOCK:END"):
        out += proc.feed(Scan(device_id="scan-1", time=T0, value=code), T0)
    moves = [(b.location, b.sku, b.delta, b.shelf) for b in of(out, BackroomCounted)]
    assert moves == [("cage", "cola-330", 1, None), ("cage", "cola-330", 1, None),
                     ("cage", "cola-330", -1, "shelf-a1")]  # fmt: skip
    other = ScannerProcessor(store(), ManualClock(T0))  # no receiving location: no ledger
    assert of(other.feed(Scan(device_id="scan-1", time=T0, value=f"]C101{COLA}"), T0), BackroomCounted) == []


# ---- the book -------------------------------------------------------------------------------------------------


def counted(loc: str, sku: str, *, count: int | None = None, delta: int | None = None,
            origin: str = "rfid") -> BackroomCounted:  # fmt: skip
    return BackroomCounted(source="t", time=T0, location=loc, sku=sku, gtin=None, origin=origin, count=count,
                           delta=delta)  # fmt: skip


def stale(loc: str, on: bool) -> BackroomStale:
    return BackroomStale(source="t", time=T0, location=loc, on=on, since=T0 if on else None, reason="reader away")


BOTH = [{"id": "backroom", "counted_by": ["rfid", "receiving"]}]


@pytest.mark.parametrize(
    ("locations", "events", "count", "certain", "why"),
    [
        # RFID only: counted while vouched for; stale or not yet vouched: 0 with a reason
        ([{"id": "backroom", "counted_by": ["rfid"]}],
         [stale("backroom", False), counted("backroom", "tee-m", count=7)], 7, 7, None),
        ([{"id": "backroom", "counted_by": ["rfid"]}], [counted("backroom", "tee-m", count=7)], 7, 0, NOT_VOUCHED),
        ([{"id": "backroom", "counted_by": ["rfid"]}],
         [stale("backroom", False), counted("backroom", "tee-m", count=7), stale("backroom", True)], 7, 0, "stale"),
        # receiving only: the ledger, never below 0
        ([{"id": "backroom", "counted_by": ["receiving"]}],
         [counted("backroom", "tee-m", delta=5, origin="receiving"),
          counted("backroom", "tee-m", delta=-2, origin="receiving")], 3, 3, None),
        ([{"id": "backroom", "counted_by": ["receiving"]}],
         [counted("backroom", "tee-m", delta=2, origin="receiving"),
          counted("backroom", "tee-m", delta=-5, origin="receiving")], None, 0, None),
        # both: the lower, and why
        (BOTH, [stale("backroom", False), counted("backroom", "tee-m", count=7),
                counted("backroom", "tee-m", delta=5, origin="receiving")], 7, 5, "receiving ledger 5"),
        # an origin the location is not counted by is ignored
        ([{"id": "backroom", "counted_by": ["receiving"]}], [counted("backroom", "tee-m", count=7)], None, 0, None),
    ],
)
def test_book_figures(locations: list[dict[str, Any]], events: list[Any], count: int | None, certain: int,
                      why: str | None) -> None:  # fmt: skip
    book = BackroomBook.of(store(locations))
    for ev in events:
        book.apply(ev, T0)
    figs = book.figures("tee-m")
    assert ((figs[0].count, figs[0].counted) if figs else (None, 0)) == (count, certain)
    assert (figs[0].reason if figs else None) is None if why is None else why in (figs[0].reason or "")


def test_book_survives_a_restart_but_its_readers_vouch_again() -> None:
    m = store([{"id": "backroom", "counted_by": ["rfid"]}, {"id": "cage", "counted_by": ["receiving"]}])
    book = BackroomBook.of(m)
    book.apply(stale("backroom", False), T0)
    rows = [book.row(e.location, e.sku).row for e in (counted("backroom", "tee-m", count=6),
                                                      counted("cage", "cola-330", delta=4, origin="receiving"))
            if book.apply(e, T0)]  # fmt: skip
    again = BackroomBook.of(m)
    junk = [{"key": "backroom/gone/tee-m", "value": "{}"}, {"key": "backroom/cage/x", "value": "!"}]
    assert again.load([*rows, *junk]) == 2
    assert again.figures("cola-330")[0].counted == 4  # the ledger needs no reader
    tee_m = again.figures("tee-m")[0]
    assert (tee_m.count, tee_m.counted) == (6, 0) and NOT_VOUCHED in (tee_m.reason or "")
    assert again.counted("tee-m") is None and again.counted("cola-330") == 4  # in doubt: the rules' static map


# ---- ATP ------------------------------------------------------------------------------------------------------


def test_atp_is_store_wide_with_its_split() -> None:
    m = store([{"id": "backroom", "names": {"zh-CN": "仓库"}, "counted_by": ["rfid"]}])
    m = m.model_copy(update={"atp": m.atp.model_copy(update={"safety_stock": {"apparel": 2}})})
    stock = StockState(m)
    stock.apply(StockUpdate(shelf="rack-c1", sku="tee-m", time=T0, origin="rfid", source="rfid-1", count=5))
    book = BackroomBook.of(m)
    atp = AtpTracker(m, stock)
    atp.backroom = book.figures
    atp.reserved = lambda sku: 1
    for ev in (stale("backroom", False), counted("backroom", "tee-m", count=10)):
        book.apply(ev, T0)
    doc = atp.document("tee-m", T0)
    assert (doc["atp"], doc["on_hand"], doc["certain"]) == (12, 15, 15)  # 5 + 10 - 1 reserved - 2 safety
    assert doc["on_hand_split"] == {"shelves": 5, "backroom": 10} == doc["certain_split"]
    assert doc["backroom"] == [{"location": "backroom", "name": "backroom", "names": {"zh-CN": "仓库"}, "count": 10,
                                "counted": 10, "counted_by": ["rfid"]}]  # fmt: skip
    book.apply(stale("backroom", True), T0 + timedelta(seconds=1))
    doc = atp.document("tee-m", T0)
    assert (doc["atp"], doc["on_hand"], doc["certain"], doc["certain_split"]) == (
        2, 15, 5, {"shelves": 5, "backroom": 0})
    assert any("backroom: RFID count stale since" in r for r in doc["reasons"]), doc["reasons"]


def test_compute_atp_without_a_back_room_is_unchanged() -> None:
    a = compute_atp("cola-330", [], reserved=0, safety_stock=0)
    assert (a.atp, a.backroom, a.reasons) == (0, (), ("on no shelf of the planogram",))


# ---- the restock rule -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("static", "counted_now", "expected"), [
    (None, None, 24),  # neither: par - on shelf
    (5, None, 5),  # the static map caps it
    (5, 20, 20),  # the counted back room replaces the static figure
    (None, 3, 3),
])  # fmt: skip
def test_restock_quantity_takes_the_counted_back_room(static: int | None, counted_now: int | None,
                                                      expected: int) -> None:  # fmt: skip
    m = store()
    rule = replace(compile_rules(m, RulesBody()).cells[("shelf-a1", "cola-330")], max=24, backroom=static,
                   case_pack=1)  # fmt: skip
    assert restock_quantity(rule, 0, counted_now) == expected
