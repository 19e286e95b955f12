"""A broken cell never stops the other cells' alerts, and numbers from outside stay bounded (issue 15, item 4):
huge or infinite durations in rules, a restock mute longer than `mute_max_s`."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge.brokers import Mosquitto
from edge.config import Manifest
from edge.errors import CommandError
from edge.events import StockChanged
from edge.gateway import Gateway
from edge.state import StockState
from rules.alerts import AlertOpened
from rules.config import RulesBody, RulesConfig
from rules.engine import RulesEngine, split
from rules.restock import Mute, RestockState, StockSeen, Tick, compile_rules, step
from rules.service import mute_duration

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
RULES = RulesConfig.model_validate({"defaults": {"min": 3, "debounce_s": 10}, "mute_max_s": 600})
GOOD, BAD = ("shelf-a1", "cola-330"), ("shelf-a1", "water-500")


def engine(manifest: Manifest) -> RulesEngine:
    ids = itertools.count(1)
    e = RulesEngine(manifest, rules=RULES, new_id=lambda: f"id-{next(ids)}")
    ok, problems, _ = e.load_body(RULES.model_dump(exclude={"file", "watch_interval_s"}), "start", T0)
    assert ok, problems
    e.restore([], StockState(manifest), T0)
    return e


def low(cell: tuple[str, str], count: int, t: datetime) -> StockChanged:
    return StockChanged(source="shelf-1", time=t, shelf=cell[0], sku=cell[1], count=count, previous=10,
                        delta=count - 10, version=2, origin="weight")


def break_cell(e: RulesEngine, cell: tuple[str, str], **bad: object) -> None:
    """Give one cell a rule no validation would let through (a bug, a future field): its arithmetic fails."""
    cells = dict(e.ruleset.cells)
    cells[cell] = dataclasses.replace(cells[cell], **bad)  # type: ignore[arg-type]
    e.ruleset = dataclasses.replace(e.ruleset, cells=cells)


def test_a_cell_whose_debounce_overflows_the_calendar_does_not_stop_the_others(demo_manifest: Manifest) -> None:
    # `debounce_s: 1e12` (or .inf, before the bounds) made every tick raise OverflowError: no alert anywhere
    e = engine(demo_manifest)
    break_cell(e, BAD, debounce_s=1e12)
    e.react(low(BAD, 1, T0), T0)
    e.react(low(GOOD, 2, T0), T0)
    assert e.next_deadline() == T0 + timedelta(seconds=10)  # the good cell's; the bad one has none
    opened = [x for x in split(e.tick(T0 + timedelta(seconds=10)))[0] if isinstance(x, AlertOpened)]
    assert [(o.shelf, o.sku) for o in opened] == [GOOD]
    ok, problems, _ = e.load_body(RULES.model_dump(exclude={"file", "watch_interval_s"}), "command", T0)
    assert ok, problems
    opened = [x for x in split(e.tick(T0 + timedelta(seconds=11)))[0] if isinstance(x, AlertOpened)]
    assert [(o.shelf, o.sku) for o in opened] == [BAD]  # restored rules: the held-back cell alerts too


def test_a_cell_that_raises_does_not_stop_the_others(demo_manifest: Manifest,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    e = engine(demo_manifest)
    break_cell(e, BAD, clear_margin=None)  # its evaluation raises TypeError
    with caplog.at_level(logging.ERROR, logger="rules.engine"):
        e.react(low(BAD, 1, T0), T0)
        e.react(low(GOOD, 2, T0), T0)
        opened = [x for x in split(e.tick(T0 + timedelta(seconds=10)))[0] if isinstance(x, AlertOpened)]
        assert [(o.shelf, o.sku) for o in opened] == [GOOD]
        for s in range(11, 20):  # every tick fails on the broken cell: counted each time, logged once
            e.tick(T0 + timedelta(seconds=s))
    assert e.counters[("edge_rules_errors_total", (("rule", "restock"),))] >= 10
    logged = [r for r in caplog.records if f"{BAD[0]}/{BAD[1]}" in r.getMessage()]
    assert len(logged) == 1
    assert "TypeError" in logged[0].getMessage()
    # the cell's rule is repaired by a reload: its alert opens too
    ok, problems, _ = e.load_body(RULES.model_dump(exclude={"file", "watch_interval_s"}), "command", T0)
    assert ok, problems
    e.tick(T0 + timedelta(seconds=30))
    opened = [x for x in split(e.tick(T0 + timedelta(seconds=40)))[0] if isinstance(x, AlertOpened)]
    assert [(o.shelf, o.sku) for o in opened] == [BAD]


def test_one_rule_failing_in_a_tick_does_not_stop_the_others(demo_manifest: Manifest) -> None:
    e = engine(demo_manifest)
    e.faults = {"rfid-1": None}  # type: ignore[dict-item]  # a corrupted fault state: the fault rule raises
    e.react(low(GOOD, 2, T0), T0)
    opened = [x for x in split(e.tick(T0 + timedelta(seconds=10)))[0] if isinstance(x, AlertOpened)]
    assert [(o.shelf, o.sku) for o in opened] == [GOOD]
    assert e.counters[("edge_rules_errors_total", (("rule", "faults"),))] == 1


@pytest.mark.parametrize(("text", "field"), [
    ("defaults: {debounce_s: 1e12}", "debounce_s"),
    ("defaults: {cooldown_s: .inf}", "cooldown_s"),
    ("mute_max_s: .nan", "mute_max_s"),
    ("cells: [{shelf: shelf-a1, sku: cola-330, debounce_s: 1e999}]", "debounce_s"),
    ("expire_after_s: 1e300", "expire_after_s"),
    ("lane_fault_hold_s: .inf", "lane_fault_hold_s"),
])
def test_huge_or_infinite_durations_are_rejected_with_the_field_named(demo_manifest: Manifest, text: str,
                                                                      field: str) -> None:
    e = engine(demo_manifest)
    before = e.ruleset
    ok, problems, _ = e.load_text(text, "command", T0)
    assert not ok
    assert any(field in p for p in problems), problems
    assert e.ruleset is before


def test_restock_mute_is_bounded_by_mute_max_s(demo_manifest: Manifest) -> None:
    rules = compile_rules(demo_manifest, RulesBody.model_validate({"defaults": {"min": 3, "debounce_s": 0},
                                                                   "mute_max_s": 600}))
    for duration in (1e9, 1e12, math.inf, math.nan, None):
        state, _ = step(rules, RestockState(), Mute("shelf-a1", on=True, duration_s=duration), T0)
        assert state.muted["shelf-a1"] == T0 + timedelta(seconds=600), duration
        state, _ = step(rules, state, StockSeen(*GOOD, 1), T0 + timedelta(seconds=1))
        _, actions = step(rules, state, Tick(), T0 + timedelta(seconds=601))
        assert [a.kind for a in actions] == ["low_stock"], duration


@pytest.mark.parametrize("value", [1e9, 601, math.inf, -math.inf, math.nan, 0, -5, True, "60", [60]])
def test_mute_duration_out_of_bounds_is_a_bad_request(value: object) -> None:
    with pytest.raises(CommandError) as err:
        mute_duration(value, 600.0)
    assert err.value.code == "bad_request"
    assert "duration_s" in err.value.message and "600" in err.value.message


def test_mute_duration_in_bounds() -> None:
    assert mute_duration(None, 600.0) is None
    assert mute_duration(60, 600.0) == 60.0
    assert mute_duration(600.0, 600.0) == 600.0


async def test_gateway_refuses_a_31_year_mute_and_an_infinite_rule(demo_manifest: Manifest, mosquitto: Mosquitto,
                                                                    tmp_path: Path) -> None:
    m = demo_manifest.model_copy(update={"api": demo_manifest.api.model_copy(update={"enabled": False}),
                                         "rules": RULES})
    gw = Gateway(m, hub_url=mosquitto.url, data_dir=tmp_path / "d")
    async with gw:
        svc = gw.rules
        with pytest.raises(CommandError) as err:
            await svc.mute("shelf-a1", True, 1e9)
        assert err.value.code == "bad_request"
        assert await svc.mute("shelf-a1", True, 60) == {"shelf": "shelf-a1", "muted": True}
        assert svc.engine.restock.muted["shelf-a1"] <= gw.clock.now() + timedelta(seconds=60)
        # the same path as POST /api/v1/rules/reload (a JSON 1e999 parses as inf) and cmd/rules.reload
        with pytest.raises(CommandError) as err:
            await svc.reload({"defaults": {"debounce_s": math.inf}})
        assert err.value.code == "rules_rejected" and "debounce_s" in err.value.message
