"""Alert lifecycle of the pure rules, table-driven: the restock rule's actions through the alert book.

One alert per cell and condition family (a stock-out supersedes the low-stock alert and escalates it),
and no alert expires while its condition holds (it stays open: see rules/alerts.py).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from edge.config import Manifest
from rules.actions import LOW_STOCK, OUT_OF_STOCK
from rules.alerts import Alert, AlertBook, AlertEscalated
from rules.config import RulesBody
from rules.restock import Input, RestockState, Restore, StockSeen, Tick, compile_rules, condition_holds, step

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)  # a Monday, 10:00: the demo store is open 07:00-22:00
H = 3600.0
BODY = RulesBody.model_validate(
    {
        "defaults": {"min": 3, "debounce_s": 30, "clear_margin": 2, "cooldown_s": 0, "escalate_after_s": 900},
        "expire_after_s": 8 * H,
    }
)
S = ("shelf-a1", "cola-330")


def seen(count: int) -> StockSeen:
    return StockSeen(S[0], S[1], count, 0, "manual")


# (seconds after T0, input, the transitions it causes as "transition:kind", in order)
Step = tuple[float, Input, list[str]]
CASES: dict[str, list[Step]] = {
    "8 h with the shelf still empty: the alert stays open (escalated), resolved on refill": [
        (0, seen(0), []),
        (30, Tick(), [f"opened:{OUT_OF_STOCK}"]),
        (930, Tick(), [f"escalated:{OUT_OF_STOCK}"]),
        (1830, Tick(), [f"escalated:{OUT_OF_STOCK}"]),
        (2730, Tick(), [f"escalated:{OUT_OF_STOCK}"]),
        (8 * H + 30, Tick(), []),  # expire_after_s passed: no expiry while the shelf is empty
        (11 * H, Tick(), []),
        (11 * H + 1, seen(24), [f"resolved:{OUT_OF_STOCK}"]),
    ],
    "stock-out while low is open: the same alert, escalated, not a second one": [
        (0, seen(2), []),
        (30, Tick(), [f"opened:{LOW_STOCK}"]),
        (60, seen(0), []),
        (90, Tick(), [f"escalated:{OUT_OF_STOCK}"]),
        (120, Tick(), []),
        (990, Tick(), [f"escalated:{OUT_OF_STOCK}"]),  # escalate_after_s from the last escalation
    ],
    "recovery: partial refill downgrades, full refill resolves, a new dip opens a new alert": [
        (0, seen(0), []),
        (30, Tick(), [f"opened:{OUT_OF_STOCK}"]),
        (40, seen(1), [f"updated:{LOW_STOCK}"]),
        (50, seen(4), []),  # hysteresis: still low below 3 + 2
        (60, seen(5), [f"resolved:{LOW_STOCK}"]),
        (70, seen(2), []),
        (100, Tick(), [f"opened:{LOW_STOCK}"]),
    ],
    "a stock-out and a low count that come together open one alert": [
        (0, seen(24), []),
        (1, seen(0), []),
        (31, Tick(), [f"opened:{OUT_OF_STOCK}"]),
        (40, seen(24), [f"resolved:{OUT_OF_STOCK}"]),
    ],
    "restored after a restart with the shelf still empty: stays open past expiry": [
        (0, Restore(S[0], S[1], OUT_OF_STOCK, T0 - timedelta(hours=7)), []),
        (1, seen(0), []),
        (2 * H, Tick(), []),
        (2 * H + 1, seen(24), [f"resolved:{OUT_OF_STOCK}"]),
    ],
}


def holds_in(state: RestockState) -> Callable[[Alert], bool]:
    """The engine's verdict for stock alerts: does the alert's condition still hold in this rule state?"""
    return lambda a: condition_holds(state, a.shelf or "", a.sku or "")


@pytest.mark.parametrize("name", list(CASES))
def test_alert_lifecycle(demo_manifest: Manifest, name: str) -> None:
    rules = compile_rules(demo_manifest, BODY)
    ids = itertools.count(1)
    book = AlertBook(lambda: f"a{next(ids)}")
    state = RestockState()
    opened_ids: list[str] = []
    for offset, inp, expected in CASES[name]:
        now = T0 + timedelta(seconds=offset)
        if isinstance(inp, Restore):
            book.load([Alert(id="r1", kind=inp.kind, state="open", opened_at=inp.raised, updated_at=inp.raised,
                             shelf=inp.shelf, sku=inp.sku, escalate_after_s=None).row()])
        state, actions = step(rules, state, inp, now)
        transitions = [t for a in actions for t in book.apply(a, now)]
        if isinstance(inp, Tick):
            transitions += book.tick(now, rules.expire_after_s, holds_in(state))
        got = [f"{t.event.TRANSITION}:{t.alert.kind}" for t in transitions]
        assert got == expected, f"{name} at +{offset:g}s: {got} != {expected}"
        opened_ids += [t.alert.id for t in transitions if t.event.TRANSITION == "opened"]
        # one alert per cell at any time, living exactly while its condition holds
        assert len(book.live) <= 1
        assert bool(book.live) == condition_holds(state, *S), f"{name} at +{offset:g}s"
        for t in transitions:
            if isinstance(t.event, AlertEscalated) and t.event.reason == OUT_OF_STOCK:
                assert t.alert.id == opened_ids[-1]  # the superseded alert itself


def test_supersede_keeps_the_acknowledgement_and_says_why(demo_manifest: Manifest) -> None:
    rules = compile_rules(demo_manifest, BODY)
    book = AlertBook(lambda: "a1")
    state, _ = step(rules, RestockState(), seen(2), T0)
    state, actions = step(rules, state, Tick(), T0 + timedelta(seconds=30))
    (opened,) = [t for a in actions for t in book.apply(a, T0)]
    ack = book.ack(opened.alert.id, "Sam", T0 + timedelta(seconds=40))
    assert ack is not None
    state, _ = step(rules, state, seen(0), T0 + timedelta(seconds=50))
    state, actions = step(rules, state, Tick(), T0 + timedelta(seconds=80))
    (esc,) = [t for a in actions for t in book.apply(a, T0 + timedelta(seconds=80))]
    assert isinstance(esc.event, AlertEscalated)
    assert (esc.event.reason, esc.event.level, esc.event.count, esc.alert.state) == (
        OUT_OF_STOCK, 1, 0, "acknowledged")
    assert "out of stock" in esc.event.message
    assert esc.alert.row()["kind"] == OUT_OF_STOCK and esc.alert.acknowledged_by == "Sam"
