"""Restocking one cell (issue 17 item 3), with an injected clock: only that shelf x SKU cell is muted (its
neighbour on the shelf still alerts), the mute ends when the cell's count rises (restocked) or when its time
passes (elapsed), whichever first, or when staff finish; each start and end is an event."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from edge.config import Manifest
from edge.errors import CommandError
from edge.events import StockChanged
from rules.alerts import AlertOpened
from rules.engine import RestockingEnded, RestockingStarted, RulesEngine, split
from tests.rules.test_snooze import T0, engine  # the rules engine on an injected clock (mute_max_s 1800 s)


def change(sku: str, count: int, prev: int, s: float) -> StockChanged:
    return StockChanged(source="shelf-1", time=T0 + timedelta(seconds=s), shelf="shelf-a1", sku=sku, count=count,
                        previous=prev, delta=count - prev, version=1, origin="weight")


def feed(e: RulesEngine, ev: StockChanged) -> list[Any]:
    return split(e.react(ev, ev.time))[0]


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def test_only_the_cell_is_muted_until_its_count_rises(demo_manifest: Manifest) -> None:
    e = engine(demo_manifest)
    feed(e, change("cola-330", 5, 10, 0))
    feed(e, change("water-500", 5, 10, 0))
    (started,) = split(e.mute("shelf-a1", on=True, now=at(1), sku="cola-330"))[0]
    assert isinstance(started, RestockingStarted)
    assert (started.sku, started.baseline, started.until) == ("cola-330", 5, at(1801))
    assert [c["sku"] for c in e.restocking()] == ["cola-330"]
    feed(e, change("cola-330", 2, 5, 2))  # the cell drops while staff fetch stock: no alert
    feed(e, change("water-500", 2, 5, 2))
    opened = [ev for ev in split(e.tick(at(20)))[0] if isinstance(ev, AlertOpened)]
    assert [ev.sku for ev in opened] == ["water-500"]  # before: the whole shelf was muted, per shelf only
    # the cell's count rises above its lowest since the start: restocked, the mute ends; still low (3 <= min)
    # for longer than the debounce, the cell alerts at once
    ended, opened_now = feed(e, change("cola-330", 3, 2, 30))
    assert isinstance(ended, RestockingEnded)
    assert (ended.reason, ended.count) == ("restocked", 3)
    assert isinstance(opened_now, AlertOpened) and opened_now.sku == "cola-330"
    assert e.restocking() == []


def test_the_mute_ends_when_its_time_passes(demo_manifest: Manifest) -> None:
    e = engine(demo_manifest)
    feed(e, change("cola-330", 5, 10, 0))
    e.mute("shelf-a1", on=True, now=at(1), duration_s=300, sku="cola-330")
    feed(e, change("cola-330", 2, 5, 2))
    assert split(e.tick(at(100)))[0] == []
    evs = split(e.tick(at(301)))[0]
    assert [(type(ev).__name__, getattr(ev, "reason", None)) for ev in evs] == [("RestockingEnded", "elapsed"),
                                                                            ("AlertOpened", None)]


def test_staff_finish_and_refusals(demo_manifest: Manifest) -> None:
    e = engine(demo_manifest)
    feed(e, change("cola-330", 5, 10, 0))
    e.mute("shelf-a1", on=True, now=at(1), sku="cola-330")
    (ended,) = split(e.mute("shelf-a1", on=False, now=at(5), sku="cola-330"))[0]
    assert isinstance(ended, RestockingEnded) and ended.reason == "finished"
    with pytest.raises(CommandError) as err:
        e.mute("shelf-a1", on=True, now=at(6), sku="tee-m")  # not on this shelf
    assert err.value.code == "not_found"
    assert e.restocking() == []
