"""Available-to-promise, pure (edge/atp.py): what is certain, threshold crossings, and the manifest section."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from edge.atp import AtpTracker, band, compute_atp, crossed
from edge.config import parse_manifest
from edge.errors import ConfigError
from edge.processing import StockFlag, StockUpdate
from edge.state import StockCell, StockState
from firmware_sim.world import demo_manifest_text

T0 = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)


def cell(count: int, version: int = 1, **kw: Any) -> StockCell:
    """A cell of cola on some shelf."""
    return StockCell(kw.pop("shelf", "s1"), "cola-330", "z", count, version, "weight", T0, 24, **kw)


@pytest.mark.parametrize(
    ("cells", "reserved", "safety", "atp", "certain", "on_hand", "n_reasons"),
    [
        ([cell(10)], 0, 0, 10, 10, 10, 0),
        ([cell(10)], 3, 2, 5, 10, 10, 0),
        ([cell(10)], 9, 2, 0, 10, 10, 0),  # never below 0
        ([cell(0, version=0)], 0, 0, 0, 0, 0, 1),  # never reported: unknown, not counted
        ([cell(10), cell(7, shelf="s2", stale_since=T0, stale_reason="reader blind")], 0, 0, 10, 10, 17, 1),
        ([cell(4, conflict_since=T0, sources=(("rfid", 9), ("weight", 4)))], 0, 0, 4, 4, 4, 1),
        # a conflicting cell whose served count has not yet dropped still counts the lower source
        ([cell(9, conflict_since=T0, sources=(("rfid", 9), ("weight", 4)))], 0, 0, 4, 4, 9, 1),
        ([], 0, 0, 0, 0, 0, 1),  # on no shelf
        ([cell(5)], -3, 0, 5, 5, 5, 0),  # a negative reservation from a broken hook counts 0
        ([cell(5)], None, 0, 0, 5, 5, 1),  # reservations unknown: nothing is promised
    ],
)
def test_compute_atp(cells: list[StockCell], reserved: int | None, safety: int, atp: int, certain: int, on_hand: int,
                     n_reasons: int) -> None:  # fmt: skip
    a = compute_atp("cola-330", cells, reserved=reserved, safety_stock=safety)
    assert (a.atp, a.certain, a.on_hand, len(a.reasons)) == (atp, certain, on_hand, n_reasons), a.reasons


@pytest.mark.parametrize(
    ("previous", "atp", "thresholds", "expected"),
    [
        (0, 8, [0, 5], 5),  # up over both: the outermost
        (8, 7, [0, 5], None),
        (6, 5, [0, 5], 5),  # 5 is at or below the level: crossed down
        (5, 6, [0, 5], 5),
        (1, 0, [0, 5], 0),
        (0, 1, [0, 5], 0),
        (9, 0, [0, 5], 0),
        (3, 3, [0], None),
        (30, 21, [0, 5, 20], None),
    ],
)
def test_crossed(previous: int, atp: int, thresholds: list[int], expected: int | None) -> None:
    assert crossed(previous, atp, thresholds) == expected
    assert (band(previous, thresholds) != band(atp, thresholds)) == (expected is not None)


def manifest(**atp: Any) -> Any:
    """The demo manifest with an `atp:` section."""
    raw = yaml.safe_load(demo_manifest_text())
    if atp:
        raw["atp"] = atp
    return parse_manifest(yaml.safe_dump(raw), "m.yaml")


def test_tracker_events_only_on_crossings_and_stale_lowers() -> None:
    m = manifest(safety_stock={"drinks": 2}, thresholds=[0, 5])
    st = StockState(m)
    tr = AtpTracker(m, st)
    st.add_deriver(tr.derive)
    _, snaps = tr.refresh(T0)
    assert snaps["state/atp/cola-330"][0]["atp"] == 0
    assert snaps["state/atp/cola-330"][0]["reasons"] == ["shelf-a1: never reported (unknown, counted 0)"]
    seen: list[tuple[int, str, int]] = []
    for n in (10, 9, 8, 7, 6, 2, 3):
        st.apply(StockUpdate(shelf="shelf-a1", sku="cola-330", time=T0, origin="weight", source="t", count=n))
        evs, snaps = st.derive(st.take_touched(), T0)
        assert snaps["state/atp/cola-330"][0]["atp"] == max(0, n - 2)
        seen += [(e.atp, e.direction, e.threshold) for e in evs]  # type: ignore[attr-defined]
    assert seen == [(8, "up", 5), (5, "down", 5), (0, "down", 0), (1, "up", 0)]
    # a stale cell counts 0, and the snapshot says why
    st.apply(StockUpdate(shelf="rack-c1", sku="tee-m", time=T0, origin="rfid", source="t", count=12))
    st.derive(st.take_touched(), T0)
    st.flag(StockFlag(shelf="rack-c1", sku="tee-m", time=T0, origin="rfid", source="t", flag="stale", on=True,
                      reason="reader blind"))  # fmt: skip
    evs, snaps = st.derive(st.take_touched(), T0)
    doc = snaps["state/atp/tee-m"][0]
    assert (doc["atp"], doc["on_hand"], doc["certain"]) == (0, 12, 0)
    assert "stale since" in doc["reasons"][0] and "reader blind" in doc["reasons"][0]
    assert [(e.atp, e.direction) for e in evs] == [(0, "down")]  # type: ignore[attr-defined]
    # an unchanged figure publishes nothing
    assert tr.refresh(T0) == ([], {})


def test_a_nudge_recomputes_in_the_next_batch() -> None:
    m = manifest(thresholds=[0, 5])
    st = StockState(m)
    tr = AtpTracker(m, st)
    st.add_deriver(tr.derive)
    st.apply(StockUpdate(shelf="shelf-a1", sku="cola-330", time=T0, origin="weight", source="t", count=10))
    st.derive(st.take_touched(), T0)
    tr.reserved = lambda sku: 6 if sku == "cola-330" else 0
    assert st.derive([], T0) == ([], {})  # nothing changed as far as the stock knows
    st.nudge(["cola-330"])
    assert st.touched
    evs, snaps = st.derive(st.take_touched(), T0)
    assert list(snaps) == ["state/atp/cola-330"] and snaps["state/atp/cola-330"][0]["atp"] == 4
    assert [(e.atp, e.direction, e.threshold) for e in evs] == [(4, "down", 5)]  # type: ignore[attr-defined]
    assert not st.touched


def test_reservation_hook_lowers_atp() -> None:
    m = manifest()
    st = StockState(m)
    tr = AtpTracker(m, st)
    st.apply(StockUpdate(shelf="shelf-a1", sku="cola-330", time=T0, origin="weight", source="t", count=10))
    tr.refresh(T0)
    tr.reserved = lambda sku: 4 if sku == "cola-330" else 0
    _, snaps = tr.refresh(T0)
    assert list(snaps) == ["state/atp/cola-330"]
    assert (snaps["state/atp/cola-330"][0]["atp"], snaps["state/atp/cola-330"][0]["reserved"]) == (6, 4)

    def broken(sku: str) -> int:
        raise RuntimeError("order book down")

    tr.reserved = broken
    _, snaps = tr.refresh(T0)
    doc = snaps["state/atp/cola-330"][0]
    assert (doc["atp"], doc["reasons"][-1]) == (0, "reservations unknown (the order book failed): nothing promised")


@pytest.mark.parametrize(
    ("atp", "path", "says"),
    [
        ({"thresholds": [5, 0]}, "atp.thresholds", "strictly ascending"),
        ({"thresholds": []}, "atp.thresholds", ""),
        ({"thresholds": [-1]}, "atp.thresholds[0]", "greater than or equal to 0"),
        ({"safety_stock": {"drinks": -2}}, "atp.safety_stock.drinks", ""),
        ({"safety_stock": {"drinks": 10**9}}, "atp.safety_stock.drinks", ""),
        ({"safety_stock": {"drinkz": 2}}, "atp.safety_stock.drinkz", "did you mean 'drinks'"),
        ({"safty_stock": {"drinks": 2}}, "atp.safty_stock", ""),
    ],
)
def test_atp_config_errors_name_the_field(atp: dict[str, Any], path: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        manifest(**atp)
    paths = [i.path for i in err.value.issues]
    assert path in paths, err.value
    assert says in str(err.value)


def test_a_nudge_recomputes_a_sku_on_no_shelf() -> None:
    """A SKU kept only in the back room (or only reserved) has no shelf cell: a nudge still recomputes it in the
    next batch (before, only the SKUs of shelf cells were, so its ATP waited for the next full refresh)."""
    raw = yaml.safe_load(demo_manifest_text())
    raw["catalog"].append({"sku": "gum-10", "name": "Gum", "gtin": "04009900000000", "category": "snacks"})
    m = parse_manifest(yaml.safe_dump(raw), "m.yaml")
    st = StockState(m)
    tr = AtpTracker(m, st)
    st.add_deriver(tr.derive)
    tr.refresh(T0)
    tr.reserved = lambda sku: 2 if sku == "gum-10" else 0
    st.nudge(["gum-10"])
    _, snaps = st.derive(st.take_touched(), T0)
    assert list(snaps) == ["state/atp/gum-10"] and snaps["state/atp/gum-10"][0]["reserved"] == 2
