"""Smoothing engine and processor: presence, lost-timeout, zone hysteresis, clock jumps, stock counts."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from drivers.rfid.config import LlrpConfig, SmoothingConfig
from drivers.rfid.events import EpcisObjectEvent, TagArrived, TagDeparted, TagMoved
from drivers.rfid.processor import RfidProcessor
from drivers.rfid.reads import ReaderStatus, TagRead
from drivers.rfid.smoothing import Change, Params, SmoothingEngine
from edge.clock import ManualClock
from edge.config import Manifest
from edge.processing import Output, StockUpdate
from firmware_sim.world import sgtin96_hex

EPC = "3074257BF7194E4000001A85"  # tee-m in the demo catalog (GTIN 80614141123458)
P = Params(present_after_reads=2, present_after_s=3.0, lost_timeout_s=10.0, rssi_alpha=0.2, move_margin_db=4.0,
           move_hold_s=3.0, zone_stale_s=5.0)  # fmt: skip


def kinds(changes: list[Change]) -> list[str]:
    return [c.kind for c in changes]


def run(pattern: list[list[tuple[str, float]]], p: Params = P, epc: str = EPC) -> list[tuple[float, Change]]:
    """pattern[t] = reads (zone, rssi) in second t; ticks every second; returns timed changes."""
    eng = SmoothingEngine()
    out: list[tuple[float, Change]] = []
    for t, reads in enumerate(pattern):
        for zone, rssi in reads:
            out += [(float(t), c) for c in eng.observe(epc, zone, rssi, float(t), "r1", p)]
        out += [(float(t), c) for c in eng.expire(float(t) + 0.5)]
    return out


def test_present_after_reads_and_after_time() -> None:
    assert kinds([c for _, c in run([[("a", -60)], [("a", -60)]])]) == ["arrived"]
    assert run([[("a", -60)]]) == []  # one read is noise
    slow = Params(present_after_reads=5, present_after_s=3.0)
    timed = run([[("a", -60)], [], [], [("a", -60)]], slow)
    assert [(t, c.kind) for t, c in timed] == [(3.0, "arrived")]


@pytest.mark.parametrize(
    "name",
    ["every_fourth_cycle", "random_65_percent"],
)
def test_intermittent_reads_do_not_flap(name: str) -> None:
    rng = random.Random(11)
    if name == "every_fourth_cycle":
        pattern = [[("a", -60.0)] if t % 4 == 0 else [] for t in range(600)]
    else:
        pattern = [[("a", -60 + rng.gauss(0, 3))] if rng.random() < 0.65 else [] for t in range(600)]
    changes = run(pattern + [[]] * 12)
    assert kinds([c for _, c in changes]) == ["arrived", "departed"]
    assert changes[-1][0] >= 599


def test_short_absence_no_departure_then_lost_timeout_exactly() -> None:
    eng = SmoothingEngine()
    for t in range(20):
        eng.observe(EPC, "a", -60, float(t), "r1", P)
        assert eng.expire(float(t)) == []
    for t in range(20, 28):  # 8 s gap < 10 s lost timeout
        assert eng.expire(float(t)) == []
    eng.observe(EPC, "a", -60, 28.0, "r1", P)
    assert eng.expire(37.9) == []
    [gone] = eng.expire(38.0)
    assert gone.kind == "departed"
    assert len(eng) == 0
    assert eng.count("a", "80614141123458") == 0


def test_two_antennas_near_equal_rssi_do_not_ping_pong() -> None:
    rng = random.Random(3)
    pattern = [[("a", -62 + rng.gauss(0, 3)), ("b", -62 + rng.gauss(0, 3))] for _ in range(600)]
    changes = run(pattern)
    assert kinds([c for _, c in changes]) == ["arrived"]
    for seed in range(20):  # whatever the noise draws, never back and forth
        rng = random.Random(seed)
        pattern = [[("a", -62 + rng.gauss(0, 3)), ("b", -62 + rng.gauss(0, 3))] for _ in range(600)]
        assert kinds([c for _, c in run(pattern)]).count("moved") <= 1, seed


def test_clear_move_with_both_antennas_reading() -> None:
    pattern = [[("a", -50.0)]] * 10 + [[("a", -68.0), ("b", -50.0)]] * 20
    changes = run(pattern)
    assert kinds([c for _, c in changes]) == ["arrived", "moved"]
    t, move = changes[1]
    assert (move.from_zone, move.zone) == ("a", "b")
    assert 10 + 3 <= t <= 10 + 8  # EWMA needs a few cycles to cross the margin, then the hold


def test_move_when_old_read_point_goes_silent() -> None:
    pattern = [[("a", -50.0)]] * 10 + [[("b", -65.0)]] * 15
    changes = run(pattern)
    assert kinds([c for _, c in changes]) == ["arrived", "moved"]
    t, _ = changes[1]
    assert 10 + 5 <= t <= 10 + 5 + 3 + 1  # a goes stale after 5 s, then b must hold 3 s


def test_brief_stronger_blip_elsewhere_is_not_a_move() -> None:
    pattern = [[("a", -55.0)]] * 10 + [[("a", -55.0), ("b", -30.0)]] * 2 + [[("a", -55.0)]] * 20
    assert kinds([c for _, c in run(pattern)]) == ["arrived"]


def test_first_zone_is_the_strongest_before_presence() -> None:
    [(_, arrived)] = run([[("a", -70.0), ("b", -50.0)], [("a", -70.0), ("b", -50.0)]])
    assert arrived.zone == "b"


def test_counts_follow_arrivals_moves_departures() -> None:
    eng = SmoothingEngine()
    epcs = [sgtin96_hex("0614141", "812345", s) for s in range(5)]
    for t in (0.0, 1.0):
        for e in epcs:
            eng.observe(e, "a", -60, t, "r1", P)
    eng.observe("E2801160600002054C3A7F11", "a", -60, 0.0, "r1", P)  # raw EPC: tracked, not counted
    eng.observe("E2801160600002054C3A7F11", "a", -60, 1.0, "r1", P)
    assert eng.counts == {("a", "80614141123458"): 5}
    assert eng.tags["E2801160600002054C3A7F11"].present
    assert eng.take_dirty() == {("a", "80614141123458")}
    assert eng.expire(11.0) != []
    assert eng.counts == {}


# ---- processor -------------------------------------------------------------------------------


def manifest_with(demo_manifest: Manifest, **kw: object) -> Manifest:
    reader = LlrpConfig(id="rfid-1", host="127.0.0.1", antennas={1: "apparel", 2: "entrance"},
                        smoothing=SmoothingConfig(present_after_reads=2, lost_timeout_s=10), **kw)
    return demo_manifest.model_copy(update={"devices": [reader]})


def read(epc: str, ant: int, rssi: float, now: datetime, seen_us: int | None = None) -> TagRead:
    return TagRead(device_id="rfid-1", time=now, epc=epc, antenna=ant,
                   read_point={1: "apparel", 2: "entrance"}.get(ant), rssi_dbm=rssi, seen_us=seen_us)  # fmt: skip


def beat(proc: RfidProcessor, now: datetime) -> list[Output]:
    """The reader's liveness beat (its ROSpec still runs): its tags' absences count again."""
    return list(proc.feed(ReaderStatus(device_id="rfid-1", time=now, inventorying=True), now))


def drive(proc: RfidProcessor, t0: datetime, seconds: int, epcs: list[str], reader_clock: list[int]) -> list[Output]:
    out: list[Output] = []
    for s in range(seconds):
        now = t0 + timedelta(seconds=s)
        for e in epcs:
            out += proc.feed(read(e, 1, -58, now, reader_clock[s % len(reader_clock)]), now)
        out += proc.tick(now)
    return out


def test_processor_events_stock_updates_and_clock_jumps(demo_manifest: Manifest) -> None:
    t0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
    epcs = [sgtin96_hex("0614141", "812345", s) for s in range(3)]
    results = []
    # the same reads with a sane reader clock, and with one that jumps years back and forth
    for reader_clock in ([1767600000000000 + s * 1_000_000 for s in range(40)], [0, 2**62, 5, 946684800000000]):
        proc = RfidProcessor(manifest_with(demo_manifest), ManualClock(t0))
        out = drive(proc, t0, 20, epcs, reader_clock)
        out += beat(proc, t0 + timedelta(seconds=40))
        out += proc.tick(t0 + timedelta(seconds=40))
        results.append([(type(o).__name__, getattr(o, "epc", None), getattr(o, "count", None)) for o in out])
        arrived = [o for o in out if isinstance(o, TagArrived)]
        assert {a.epc for a in arrived} == set(epcs)
        assert all(a.zone == "apparel" and a.source == "rfid-1" for a in arrived)
        stock = [o for o in out if isinstance(o, StockUpdate)]
        assert [(s.shelf, s.sku, s.count, s.origin, s.source) for s in stock] == [
            ("rack-c1", "tee-m", 3, "rfid", "rfid-1"),
            ("rack-c1", "tee-m", 0, "rfid", "rfid-1"),
        ]
        departed = [o for o in out if isinstance(o, TagDeparted)]
        assert len(departed) == 3
        assert departed[0].last_seen == t0 + timedelta(seconds=19)
        assert departed[0].dwell_s == 18.0
    assert results[0] == results[1]


def test_processor_unmapped_antenna_and_moves(demo_manifest: Manifest) -> None:
    t0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
    proc = RfidProcessor(manifest_with(demo_manifest), ManualClock(t0))
    out: list[Output] = []
    for s in range(30):
        now = t0 + timedelta(seconds=s)
        out += proc.feed(read(EPC, 1 if s < 10 else 2, -55, now), now)
        out += proc.feed(read(EPC, 9, -40, now), now)  # antenna 9 maps nowhere
        out += proc.tick(now)
    assert proc.unmapped == 30
    moved = [o for o in out if isinstance(o, TagMoved)]
    assert [(m.from_zone, m.zone) for m in moved] == [("apparel", "entrance")]
    assert [(s.shelf, s.count) for s in out if isinstance(s, StockUpdate)] == [("rack-c1", 1), ("rack-c1", 0)]


def test_processor_epcis_events(demo_manifest: Manifest) -> None:
    t0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
    proc = RfidProcessor(manifest_with(demo_manifest, epcis=True), ManualClock(t0))
    out = drive(proc, t0, 3, [EPC], [0])
    out += beat(proc, t0 + timedelta(seconds=30))
    out += proc.tick(t0 + timedelta(seconds=30))
    docs = [o for o in out if isinstance(o, EpcisObjectEvent)]
    assert [d.document["disposition"] for d in docs] == ["sellable_accessible", "unknown"]
    first = docs[0].data()
    assert first["epcList"] == ["urn:epc:id:sgtin:0614141.812345.6789"]
    assert first["readPoint"] == first["bizLocation"] == {"id": "urn:epc:id:sgln:0614141.00001.apparel"}
    assert first["eventID"].startswith("ni:///sha-256;")
    assert first["eventID"].endswith("?ver=CBV2.0")
    assert "bizLocation" not in docs[1].document
    assert docs[0].event_id != docs[1].event_id
    assert docs[0].TOPIC == "events/epcis"


def test_weak_reads_below_min_rssi_do_not_keep_a_tag_present() -> None:
    # An item taken off the rack is still read now and then, faintly, in the shopper's hand (-78 dBm):
    # with the reader's min_rssi_dbm those reads do not refresh its lost-timeout.
    strong, faint = [("apparel", -55.0)], [("apparel", -78.0)]
    pattern = [strong] * 5 + [faint if t % 3 == 0 else [] for t in range(30)]
    kept = [c.kind for _, c in run(pattern)]
    assert kept == ["arrived"]  # without a floor the faint reads hold it present all along
    filtered = run(pattern, p=replace(P, min_rssi_dbm=-72.0))
    assert [(t, c.kind) for t, c in filtered] == [(1.0, "arrived"), (14.0, "departed")]


def test_departure_stock_update_is_stamped_with_the_last_read(demo_manifest: Manifest) -> None:
    t0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
    epcs = [sgtin96_hex("0614141", "812345", s) for s in range(3)]
    proc = RfidProcessor(manifest_with(demo_manifest), ManualClock(t0))
    drive(proc, t0, 20, epcs, [0])
    beat(proc, t0 + timedelta(seconds=40))
    out = proc.tick(t0 + timedelta(seconds=40))  # declared gone at 40 s, last read at 19 s
    (stock,) = [o for o in out if isinstance(o, StockUpdate)]
    assert stock.count == 0
    assert stock.time == t0 + timedelta(seconds=19)  # the rules' debounce runs from when they left
