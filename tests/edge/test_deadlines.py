"""Reactors are ticked when their deadline falls (a restock debounce ending), not at the next periodic tick."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta

from edge.clock import ManualClock
from edge.config import parse_manifest
from edge.events import Event
from edge.metrics import Metrics
from edge.pipeline import Pipeline
from edge.state import StockState
from firmware_sim.world import demo_manifest_text


class Alarm:
    """A reactor that wants a tick at `at` and records when it got ticks; with `fail`, that tick raises (a rules
    bug: tests/faults/test_core_tasks.py)."""

    def __init__(self, at: datetime, *, fail: bool = False) -> None:
        self.at: datetime | None = at
        self.fail = fail
        self.ticks: list[datetime] = []

    def react(self, event: Event, now: datetime) -> Sequence[object]:
        return []

    def tick(self, now: datetime) -> Sequence[object]:
        self.ticks.append(now)
        if self.at is not None and now >= self.at:
            self.at = None  # done: no deadline any more
            if self.fail:
                raise OverflowError("date value out of range")
        return []

    def next_deadline(self) -> datetime | None:
        return self.at


class NullOutbox:
    def submit(self, *_a: object, **_k: object) -> None:
        return None


async def test_reactor_ticked_at_its_deadline_between_periodic_ticks() -> None:
    clock = ManualClock()
    m = parse_manifest(demo_manifest_text())
    p = Pipeline(stock=StockState(m), outbox=NullOutbox(), clock=clock, metrics=Metrics(), tick_interval=10.0)  # type: ignore[arg-type]
    alarm = Alarm(clock.now() + timedelta(seconds=2.5))
    p.add_reactor(alarm)
    task = asyncio.create_task(p.run_deadlines())
    try:
        for _ in range(30):
            clock.advance(0.1)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        assert [round((t - alarm.ticks[0]).total_seconds(), 6) for t in alarm.ticks] == [0.0]
        assert alarm.ticks[0] - (clock.now() - timedelta(seconds=3.0)) >= timedelta(seconds=2.5)
        assert alarm.ticks[0] - (clock.now() - timedelta(seconds=3.0)) < timedelta(seconds=2.61)
    finally:
        task.cancel()
