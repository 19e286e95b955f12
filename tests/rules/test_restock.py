"""Table-driven cases of the pure restock rule: inheritance, debounce, hysteresis, cooldown, mute, hours."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.config import Manifest, parse_manifest
from firmware_sim.world import demo_manifest_text
from rules.actions import LOW_STOCK, OUT_OF_STOCK, AlertClear, AlertRaise
from rules.config import RulesBody
from rules.restock import (
    Input,
    Mute,
    RestockState,
    Restore,
    RulesError,
    Sales,
    StockSeen,
    Tick,
    compile_rules,
    condition_holds,
    days_of_cover,
    effective_min,
    record_sale,
    restock_quantity,
    step,
    velocity_per_day,
)

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)  # a Monday, inside the demo store's 07:00-22:00

BODY = RulesBody.model_validate(
    {
        "defaults": {"min": 3, "debounce_s": 30, "clear_margin": 2, "cooldown_s": 300, "escalate_after_s": 600},
        "categories": {"snacks": {"min": 5}},
        "shelves": {"rack-c1": {"min": 4, "debounce_s": 60}},
        "skus": {"choc-100": {"min": 6, "max": 25}},
        "cells": [{"shelf": "shelf-b1", "sku": "choc-100", "min": 8}],
        "backroom": {"water-500": 5},
        "quiet_hours": ["12:00-13:00"],
    }
)


def test_inheritance_defaults_category_sku_cell(demo_manifest: Manifest) -> None:
    rs = compile_rules(demo_manifest, BODY)
    assert rs.cells[("shelf-a1", "cola-330")].min == 3  # defaults
    assert rs.cells[("shelf-b1", "crisps-150")].min == 5  # category snacks
    choc = rs.cells[("shelf-b1", "choc-100")]
    assert (choc.min, choc.max, choc.capacity) == (8, 25, 30)  # cell over sku over category
    assert rs.cells[("shelf-a1", "cola-330")].max == 24  # par defaults to capacity
    assert rs.cells[("shelf-a1", "water-500")].backroom == 5
    tee = rs.cells[("rack-c1", "tee-m")]
    assert (tee.min, tee.debounce_s, tee.clear_margin) == (4, 60, 2)  # shelf level over defaults


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"skus": {"cola-330": {"max": 30}}}, "above the planogram capacity 24"),
        ({"skus": {"nope": {"min": 1}}}, "sku 'nope' is not in the catalog"),
        ({"categories": {"toys": {"min": 1}}}, "no catalog item has category 'toys'"),
        ({"shelves": {"shelf-zz": {"min": 1}}}, "no shelf 'shelf-zz'"),
        ({"cells": [{"shelf": "shelf-a1", "sku": "tee-m", "min": 1}]}, "holds no lane of sku 'tee-m'"),
        ({"defaults": {"min": 30}}, "min 30 is not below max/capacity"),
    ],
)
def test_rules_that_do_not_fit_the_store_say_why(demo_manifest: Manifest, body: dict[str, object], needle: str) -> None:
    with pytest.raises(RulesError) as err:
        compile_rules(demo_manifest, RulesBody.model_validate(body))
    assert any(needle in p for p in err.value.problems), err.value.problems


def test_model_rejects_min_not_below_max_and_bad_window() -> None:
    with pytest.raises(ValueError, match="must be below max"):
        RulesBody.model_validate({"skus": {"x": {"min": 5, "max": 5}}})
    with pytest.raises(ValueError, match="HH:MM-HH:MM"):
        RulesBody.model_validate({"quiet_hours": ["noon"]})


S = ("shelf-a1", "cola-330")


def seen(count: int, delta: int = 0, origin: str = "weight") -> StockSeen:
    return StockSeen(S[0], S[1], count, delta, origin)


Step = tuple[float, Input, list[str]]  # seconds after T0, input, expected actions as "raise:kind"/"clear:kind"

CASES: dict[str, list[Step]] = {
    "debounced low then clear at min+margin": [
        (0, seen(10), []),
        (1, seen(3, -7), []),
        (20, Tick(), []),
        (31, Tick(), [f"raise:{LOW_STOCK}"]),
        (40, seen(4, 1, "manual"), []),  # hysteresis: 4 < 3 + 2
        (41, seen(5, 1, "manual"), [f"clear:{LOW_STOCK}"]),
    ],
    "shopper holding an item is not low": [
        (0, seen(4), []),
        (1, seen(3, -1), []),
        (10, seen(4, 1), []),  # put back before the debounce
        (60, Tick(), []),
    ],
    "a stock-out from full opens one alert (out of stock), cleared once": [
        (0, seen(5), []),
        (1, seen(0, -5), []),
        (31, Tick(), [f"raise:{OUT_OF_STOCK}"]),
        (40, seen(24, 24, "manual"), [f"clear:{OUT_OF_STOCK}"]),
    ],
    "stock-out while low is open supersedes it; a partial refill downgrades it; recovery clears it": [
        (0, seen(5), []),
        (1, seen(3, -2), []),
        (31, Tick(), [f"raise:{LOW_STOCK}"]),
        (40, seen(0, -3), []),
        (69, Tick(), []),
        (70, Tick(), [f"raise:{OUT_OF_STOCK}"]),  # the same alert, escalated (see tests/rules/test_lifecycle.py)
        (80, seen(1, 1, "manual"), [f"raise:{LOW_STOCK}"]),  # out of stock over, still low: downgraded
        (90, seen(4, 3, "manual"), []),  # hysteresis: 4 < 3 + 2
        (91, seen(24, 20, "manual"), [f"clear:{LOW_STOCK}"]),
    ],
    "restored out-of-stock alert: a partial refill downgrades it, recovery clears it": [
        (0, Restore(S[0], S[1], OUT_OF_STOCK, T0 - timedelta(hours=1)), []),
        (1, seen(0), []),
        (60, Tick(), []),
        (61, seen(2, 2, "manual"), [f"raise:{LOW_STOCK}"]),
        (62, seen(9, 7, "manual"), [f"clear:{LOW_STOCK}"]),
    ],
    "cooldown holds a new alert back until it ends": [
        (0, seen(2), []),
        (30, Tick(), [f"raise:{LOW_STOCK}"]),
        (40, seen(10, 8), [f"clear:{LOW_STOCK}"]),
        (50, seen(2, -8), []),
        (100, Tick(), []),  # held 50 s, but the last alert was 70 s ago (< 300)
        (330, Tick(), [f"raise:{LOW_STOCK}"]),
    ],
    "mute while restocking, re-evaluated when finished": [
        (0, Mute("shelf-a1", on=True), []),
        (1, seen(2), []),
        (100, Tick(), []),
        (101, Mute("shelf-a1", on=False), [f"raise:{LOW_STOCK}"]),
    ],
    "mute ends by itself after its duration": [
        (0, Mute("shelf-a1", on=True, duration_s=60), []),
        (1, seen(2), []),
        (59, Tick(), []),
        (61, Tick(), [f"raise:{LOW_STOCK}"]),
    ],
    "mute of another shelf does not matter": [
        (0, Mute("shelf-b1", on=True), []),
        (1, seen(2), []),
        (31, Tick(), [f"raise:{LOW_STOCK}"]),
    ],
    "clearing is never muted": [
        (0, seen(2), []),
        (30, Tick(), [f"raise:{LOW_STOCK}"]),
        (31, Mute("shelf-a1", on=True), []),
        (40, seen(24, 22, "manual"), [f"clear:{LOW_STOCK}"]),
    ],
    "quiet hours hold the alert, it fires when they end": [
        (7200 - 10, seen(2), []),  # 11:59:50
        (7200 + 60, Tick(), []),  # 12:01, quiet
        (3 * 3600 + 1, Tick(), [f"raise:{LOW_STOCK}"]),  # 13:00:01
    ],
    "closed at night, re-evaluated at opening": [
        (12 * 3600 + 60, seen(2), []),  # 22:01 closed
        (20 * 3600, Tick(), []),  # 06:00 closed
        (21 * 3600 + 1, Tick(), [f"raise:{LOW_STOCK}"]),  # 07:00:01 open
    ],
    "restored alert clears on recovery without a new raise": [
        (0, Restore(S[0], S[1], LOW_STOCK, T0 - timedelta(hours=1)), []),
        (1, seen(3), []),
        (60, Tick(), []),
        (61, seen(9, 6), [f"clear:{LOW_STOCK}"]),
    ],
    "unknown cell is ignored": [
        (0, StockSeen("shelf-zz", "cola-330", 0), []),
        (60, Tick(), []),
    ],
}


@pytest.mark.parametrize("name", list(CASES))
def test_restock_cases(demo_manifest: Manifest, name: str) -> None:
    rs = compile_rules(demo_manifest, BODY)
    state = RestockState()
    for offset, inp, expected in CASES[name]:
        now = T0 + timedelta(seconds=offset)
        state, actions = step(rs, state, inp, now)
        got = [f"{'raise' if isinstance(a, AlertRaise) else 'clear'}:{a.kind}" for a in actions]
        assert sorted(got) == sorted(expected), f"{name} at +{offset}s: {got} != {expected}"


def test_raise_carries_quantity_cover_and_escalation(demo_manifest: Manifest) -> None:
    rs = compile_rules(demo_manifest, BODY)
    state = RestockState()
    state, _ = step(rs, state, StockSeen("shelf-a1", "water-500", 2), T0)
    state, actions = step(rs, state, Tick(), T0 + timedelta(seconds=30))
    (a,) = actions
    assert isinstance(a, AlertRaise)
    assert (a.count, a.threshold, a.restock_qty, a.escalate_after_s) == (2, 3, 5, 600)  # backroom caps 16 -> 5
    assert "water-500" in a.message
    assert not isinstance(a, AlertClear)


@pytest.mark.parametrize(
    ("par", "count", "backroom", "case_pack", "expected"),
    [
        (24, 2, None, 24, 22),  # less than one case fits: the partial quantity
        (24, 0, None, 24, 24),
        (24, 0, None, 10, 20),  # rounded down to whole cases
        (24, 0, 5, 10, 5),  # backroom caps it
        (24, 30, None, 1, 0),
    ],
)
def test_restock_quantity(
    demo_manifest: Manifest, par: int, count: int, backroom: int | None, case_pack: int, expected: int
) -> None:

    rule = replace(compile_rules(demo_manifest, RulesBody()).cells[S], max=par, backroom=backroom, case_pack=case_pack)
    assert restock_quantity(rule, count) == expected


def test_velocity_and_days_of_cover_raise_min(demo_manifest: Manifest) -> None:
    window = 7 * 86400.0
    sales = Sales()
    for h in range(48):  # 2 units an hour for two days
        sales = record_sale(sales, 2, T0 + timedelta(hours=h), window)
    now = T0 + timedelta(hours=48)
    per_day = velocity_per_day(sales, now, window)
    assert per_day == pytest.approx(48.0)
    assert days_of_cover(24, per_day) == 0.5
    assert days_of_cover(5, 0.0) is None
    body = RulesBody.model_validate({"defaults": {"min": 2, "min_days_of_cover": 0.25}})
    rule = compile_rules(demo_manifest, body).cells[S]
    assert effective_min(rule, per_day) == 12
    assert effective_min(rule, 1000.0) == rule.max - 1  # never at or above par
    assert effective_min(rule, 0.0) == 2
    old = velocity_per_day(sales, now + timedelta(days=30), window)
    assert old == 0.0  # the window forgets


def test_sales_only_from_weight_and_rfid(demo_manifest: Manifest) -> None:
    rs = compile_rules(demo_manifest, BODY)
    state = RestockState()
    state, _ = step(rs, state, seen(10), T0)
    state, _ = step(rs, state, seen(9, -1, "scan"), T0)
    assert state.cells[S].sales.first is None
    state, _ = step(rs, state, seen(8, -1, "rfid"), T0)
    assert state.cells[S].sales.buckets[-1][1] == 1


OPS = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=120),
        st.one_of(
            st.builds(
                StockSeen,
                st.just("shelf-a1"),
                st.sampled_from(["cola-330", "water-500"]),
                st.integers(0, 24),
                st.integers(-5, 5),
                st.sampled_from(["weight", "rfid", "manual"]),
            ),
            st.builds(Mute, st.just("shelf-a1"), st.booleans(), st.none() | st.floats(1, 100)),
            st.just(Tick()),
        ),
    ),
    max_size=60,
)


FUZZ_RULES = compile_rules(parse_manifest(demo_manifest_text()), BODY)


@pytest.mark.timeout(1800 if os.environ.get("EDGE_FUZZ") == "long" else 120)
@settings(
    max_examples=int(os.environ.get("EDGE_FUZZ_EXAMPLES", "10000" if os.environ.get("EDGE_FUZZ") == "long" else "200")),
    deadline=None,
)
@given(OPS)
def test_fuzz_alerts_alternate_and_respect_thresholds(ops: list[tuple[float, Input]]) -> None:
    rs = FUZZ_RULES
    state = RestockState()
    now = T0
    live: dict[tuple[str, str], str] = {}  # cell -> kind of its one live stock alert
    for dt, inp in ops:
        now += timedelta(seconds=dt)
        state, actions = step(rs, state, inp, now)
        assert len(actions) <= 2
        for a in actions:
            assert a.shelf is not None
            assert a.sku is not None
            key = (a.shelf, a.sku)
            cell = state.cells[key]
            assert cell.count is not None
            if isinstance(a, AlertRaise):
                assert live.get(key) != a.kind, "raised twice without a change"
                assert a.threshold is not None
                if a.kind == OUT_OF_STOCK:
                    assert cell.count == 0
                elif key in live:  # a downgrade from out of stock: still low (within the hysteresis)
                    assert 0 < cell.count < a.threshold + rs.cells[key].clear_margin
                else:
                    assert cell.count <= a.threshold
                    assert a.shelf not in state.muted
                live[key] = a.kind
            else:
                assert key in live, "cleared without a raise"
                del live[key]
        for key in rs.cells:
            assert condition_holds(state, *key) == (key in live), "the alert lives exactly while its condition holds"


def test_debounce_counts_from_when_the_stock_went_low(demo_manifest: Manifest) -> None:
    # A weight shelf reports a count once its settle window has proved it, stamped with the time the
    # weight reached it: the debounce runs from that time, not from when the rule heard of it.
    rs = compile_rules(demo_manifest, BODY)
    state, _ = step(rs, RestockState(), seen(10), T0)
    went_low = T0 + timedelta(seconds=100)
    heard = went_low + timedelta(seconds=0.8)
    state, actions = step(rs, state, StockSeen(S[0], S[1], 3, -7, "weight", at=went_low), heard)
    assert actions == []
    state, actions = step(rs, state, Tick(), went_low + timedelta(seconds=29.9))
    assert actions == []
    _, actions = step(rs, state, Tick(), went_low + timedelta(seconds=30))
    assert [type(a).__name__ for a in actions] == ["AlertRaise"]
    # a time from the future (a wrong clock) is not believed: the debounce then runs from now
    state, _ = step(rs, RestockState(), seen(10), T0)
    state, _ = step(rs, state, StockSeen(S[0], S[1], 3, -7, "weight", at=T0 + timedelta(hours=1)), T0)
    _, actions = step(rs, state, Tick(), T0 + timedelta(seconds=29))
    assert actions == []
