"""A staff count correction holds until the sensors settle (issue 17 item 3), with injected times: a sensor claim
right after the correction does not replace it; the sensors' count is served once it stayed the same for
correction_settle_s; a changing sensor keeps the hold; another human count replaces it at once; fused cells keep
their per-source counts meanwhile; the cell shows the correction as a source with its time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import yaml

from edge.config import Manifest, parse_manifest
from edge.processing import StockUpdate
from edge.state import StockState
from firmware_sim.world import demo_manifest_text

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def claim(st: StockState, origin: str, count: int, s: float, shelf: str = "shelf-a1", sku: str = "cola-330") -> None:
    st.apply(StockUpdate(shelf=shelf, sku=sku, time=at(s), origin=origin, source="x", count=count,
                         reason="counted by Sam" if origin == "manual" else "", hold=origin == "manual"))


def served(st: StockState, shelf: str = "shelf-a1", sku: str = "cola-330") -> int:
    cell = st.get(shelf, sku)
    assert cell is not None
    return cell.count


def test_a_sensor_claim_does_not_replace_the_correction_until_the_sensors_settle(demo_manifest: Manifest) -> None:
    st = StockState(demo_manifest, correction_settle_s=60)
    claim(st, "weight", 9, 0)
    claim(st, "manual", 12, 10)
    claim(st, "weight", 9, 11)  # the scale still says 9 (e.g. a can leaning on the lane edge)
    assert served(st) == 12  # before: the next sensor reading replaced the correction (9)
    d = st.describe(st.get("shelf-a1", "cola-330"))  # type: ignore[arg-type]
    assert d["origin"] == "manual" and d["sources"]["manual"] == 12
    assert d["correction"] == {"count": 12, "at": "2026-01-05T10:00:10Z", "reason": "counted by Sam",
                               "holding": True, "sensor": 9}
    assert d["verified"] == "2026-01-05T10:00:11Z"  # the sensor's claim was seen
    assert st.tick(at(70)) == []  # 59 s of a steady sensor: not settled yet
    (ev,) = st.tick(at(71))
    assert (ev.count, ev.origin, ev.previous) == (9, "weight", 12)
    assert "sensors settled" in ev.reason
    d = st.describe(st.get("shelf-a1", "cola-330"))  # type: ignore[arg-type]
    assert d["correction"]["holding"] is False and "manual" not in (d.get("sources") or {})
    claim(st, "weight", 8, 80)
    assert served(st) == 8  # settled: sensors are served again at once


def test_a_changing_sensor_keeps_the_hold(demo_manifest: Manifest) -> None:
    st = StockState(demo_manifest, correction_settle_s=60)
    claim(st, "weight", 3, 0)
    claim(st, "manual", 20, 1)  # staff counted after a delivery; the shelf is still being filled
    for s, n in ((5, 8), (30, 14), (55, 19), (80, 20)):
        claim(st, "weight", n, s)
        assert served(st) == 20
    assert st.tick(at(139)) == []  # the sensor changed at 80 s
    assert st.tick(at(140)) == []  # settled at the counted number: nothing changes but the hold ends
    assert st.describe(st.get("shelf-a1", "cola-330"))["correction"]["holding"] is False  # type: ignore[arg-type]
    claim(st, "weight", 19, 150)
    assert served(st) == 19


def test_no_sensor_claim_keeps_the_correction(demo_manifest: Manifest) -> None:
    st = StockState(demo_manifest, correction_settle_s=60)
    claim(st, "manual", 7, 0)
    assert st.tick(at(3600)) == [] and served(st) == 7


def test_another_human_count_replaces_the_correction(demo_manifest: Manifest) -> None:
    raw = yaml.safe_load(demo_manifest_text())
    raw["shelves"][0]["stock_source"] = "scan"
    st = StockState(parse_manifest(yaml.safe_dump(raw), "m.yaml"), correction_settle_s=60)
    claim(st, "manual", 7, 0)
    claim(st, "count", 5, 10)
    assert served(st) == 5
    assert st.describe(st.get("shelf-a1", "cola-330"))["correction"]["holding"] is False  # type: ignore[arg-type]


def test_fused_cells_record_each_source_while_the_correction_holds() -> None:
    raw = yaml.safe_load(demo_manifest_text())
    raw["shelves"][0]["stock_source"] = "any"
    st = StockState(parse_manifest(yaml.safe_dump(raw), "m.yaml"), conflict_settle_s=30, correction_settle_s=60)
    claim(st, "weight", 9, 0)
    claim(st, "rfid", 9, 0)
    claim(st, "manual", 12, 10)
    claim(st, "weight", 11, 12)
    claim(st, "rfid", 10, 13)
    assert served(st) == 12
    d = st.describe(st.get("shelf-a1", "cola-330"))  # type: ignore[arg-type]
    assert d["sources"] == {"weight": 11, "rfid": 10, "manual": 12}
    assert st.tick(at(50)) == [] and served(st) == 12  # no conflict flag while the correction holds
    (ev,) = st.tick(at(73))
    assert ev.count == 10  # settled: the latest sensor claim (sources disagree: the conflict rule judges next)


def test_a_holding_correction_survives_a_restart(demo_manifest: Manifest) -> None:
    """The hold is persisted with the cell's trust row (kv): after a restart the sensors' claim still does not
    replace the correction until they settle (before, the hold lived in memory only)."""
    st = StockState(demo_manifest, correction_settle_s=60)
    claim(st, "weight", 9, 0)
    claim(st, "manual", 12, 10)
    claim(st, "weight", 9, 11)
    rows = [st.row(c) for c in st.take_touched()]
    kv = [r for c in [st.get("shelf-a1", "cola-330")] if c is not None and (r := st.trust_row(c)) is not None]
    assert kv, "a corrected cell's trust row is due even without stale/conflict flags"
    again = StockState(demo_manifest, correction_settle_s=60)  # the next process
    again.load(rows)
    again.load_trust(kv)
    claim(again, "weight", 9, 20)
    assert served(again) == 12
    assert again.describe(again.get("shelf-a1", "cola-330"))["correction"] == {  # type: ignore[arg-type]
        "count": 12, "at": "2026-01-05T10:00:10Z", "reason": "counted by Sam", "holding": True, "sensor": 9}
    assert again.tick(at(70)) == []  # the sensor's count has been 9 since 11 s: settled at 71 s, as before
    (ev,) = again.tick(at(71))
    assert (ev.count, ev.origin) == (9, "weight")
    # a cell with neither flags nor a correction has no trust row
    plain = again.get("shelf-b1", "choc-100")
    assert plain is not None and again.trust_row(plain) is None
