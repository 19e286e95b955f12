"""The normalise → state → rules → outbox stage, between the supervisor and the outbox.

Readings arrive on a bounded queue (drivers wait when it is full: backpressure down to the device).
The pipeline drains it in batches, gives each reading to its family's processor, applies stock updates
to the live state, lets reactors (rules) respond to every event, and hands the lot to the outbox in one
submission per batch, so one group commit covers many readings.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Generic, TypeVar

from edge.clock import Clock
from edge.driver import Reading, ReadingBatch
from edge.envelope import dumps
from edge.events import Event
from edge.metrics import Metrics
from edge.outbox import Outbox
from edge.processing import BatchFailed, Processor, Reactor, StockFlag, StockUpdate
from edge.ratelimit import LogLimiter
from edge.runtime import Delete, StateWrite, Upsert
from edge.state import StockCell, StockState

log = logging.getLogger(__name__)

MAX_REACTION_DEPTH = 3
BATCH = 250

T = TypeVar("T")


def _one(_item: object) -> int:
    return 1


def reading_weight(reading: Reading) -> int:
    """How many readings an item of the pipeline's queue is (a `ReadingBatch` is its samples)."""
    return len(reading) if isinstance(reading, ReadingBatch) else 1


class BatchQueue(Generic[T]):
    """A bounded FIFO for one consumer that takes items in batches.

    `put` waits while the queue is full (backpressure to the device); `get_batch` waits for at least one
    item and takes items up to a weight of `n` in one call. Cheaper per item than `asyncio.Queue`, whose task
    accounting and per-item getter wake-ups the pipeline does not need. An item weighs `weigh(item)` (1 by
    default; the pipeline's readings weigh their samples), and the bound is on the weight: an item is taken
    while the weight queued is below `maxsize`, so the queue holds at most `maxsize` plus one item.
    """

    def __init__(self, maxsize: int, weigh: Callable[[T], int] = _one) -> None:
        self.maxsize = maxsize
        self.weigh = weigh
        self._items: deque[T] = deque()
        self._weight = 0
        self._not_empty = asyncio.Event()
        self._not_full = asyncio.Event()
        self._not_full.set()

    def qsize(self) -> int:
        """Weight waiting (items, or readings for the pipeline's queue)."""
        return self._weight

    def empty(self) -> bool:
        """Nothing waiting."""
        return not self._items

    def try_put(self, item: T) -> bool:
        """Append `item` if there is room (no waiting); False when the queue is full."""
        if self._weight >= self.maxsize:
            return False
        self._items.append(item)
        self._weight += self.weigh(item)
        if not self._not_empty.is_set():
            self._not_empty.set()
        return True

    async def put(self, item: T) -> None:
        """Append `item`, waiting while the queue is full."""
        while self._weight >= self.maxsize:
            self._not_full.clear()
            await self._not_full.wait()
        self._items.append(item)
        self._weight += self.weigh(item)
        if not self._not_empty.is_set():
            self._not_empty.set()

    async def get_batch(self, n: int) -> list[T]:
        """Wait for an item, then take items up to a weight of `n` (at least one), oldest first."""
        items = self._items
        while not items:
            self._not_empty.clear()
            await self._not_empty.wait()
        if self._weight <= n:
            batch = list(items)
            items.clear()
            self._weight = 0
        else:
            batch = []
            taken, weigh = 0, self.weigh
            while items and (not batch or taken + weigh(items[0]) <= n):
                item = items.popleft()
                taken += weigh(item)
                batch.append(item)
            self._weight -= taken
        if not self._not_full.is_set():
            self._not_full.set()
        return batch


class Pipeline:
    """Routes readings and outputs; owns no I/O except handing batches to the outbox."""

    def __init__(
        self,
        *,
        stock: StockState,
        outbox: Outbox,
        clock: Clock,
        metrics: Metrics,
        queue_size: int = 1_000,
        tick_interval: float = 1.0,
    ) -> None:
        self.stock = stock
        self.outbox = outbox
        self.clock = clock
        self.metrics = metrics
        self.queue: BatchQueue[Reading] = BatchQueue(queue_size, reading_weight)
        self.processors: list[Processor] = []
        self._by_type: dict[type[Reading], list[Processor]] = {}
        self.reactors: list[Reactor] = []
        self.tick_interval = tick_interval
        self._deadline_changed = asyncio.Event()
        self._limiter = LogLimiter(60.0)
        self.taken = 0  # readings taken off the queue (the health monitor's progress count)

    def add_processor(self, processor: Processor) -> None:
        """Route readings of the processor's types to it."""
        self.processors.append(processor)
        self._by_type.clear()

    def set_processors(self, processors: list[Processor]) -> None:
        """Route readings to `processors` from now on instead (a manifest rollout, edge/rollout.py)."""
        self.processors = list(processors)
        self._by_type.clear()

    def add_reactor(self, reactor: Reactor) -> None:
        """Feed every event to `reactor`."""
        self.reactors.append(reactor)

    def _processors_for(self, kind: type[Reading]) -> list[Processor]:
        procs = self._by_type.get(kind)
        if procs is None:
            procs = [p for p in self.processors if issubclass(kind, p.reading_types)]
            self._by_type[kind] = procs
        return procs

    async def run(self) -> None:
        """Drain readings in batches until cancelled."""
        while True:
            batch = await self.queue.get_batch(BATCH)
            self.taken += sum(map(reading_weight, batch))
            now = self.clock.now()
            outputs: list[object] = []
            for reading in batch:
                for proc in self._processors_for(type(reading)):
                    try:
                        outputs.extend(proc.feed(reading, now))
                    except Exception as exc:  # a processor bug must not stop the store: count, log, go on
                        failed = 1
                        if isinstance(exc, BatchFailed):  # some samples of a batch: the others' outputs go on
                            outputs.extend(exc.outputs)
                            failed = exc.failed
                        self.metrics.inc("edge_processor_errors_total", float(failed),
                                         processor=type(proc).__name__)
                        self._limiter.log(log, logging.ERROR, type(proc).__name__,
                                          "processor %s failed on a reading", type(proc).__name__, exc_info=True)
            if outputs:
                self.route(outputs, now)
            await self.outbox.wait_room()

    async def run_ticks(self) -> None:
        """Give processors and reactors their periodic `tick`."""
        while True:
            await self.clock.sleep(self.tick_interval)
            self.tick(self.clock.now())

    def next_deadline(self) -> datetime | None:
        """The earliest moment a reactor asked to be ticked (a restock debounce expiring), if any."""
        times: list[datetime] = []
        for r in self.reactors:
            try:
                t = getattr(r, "next_deadline", lambda: None)()
            except Exception:  # a reactor bug: no deadline from it; periodic ticks go on
                self._limiter.log(log, logging.ERROR, type(r).__name__, "%s next_deadline failed", type(r).__name__,
                                  exc_info=True)
                continue
            if t is not None:
                times.append(t)
        return min(times) if times else None

    async def run_deadlines(self) -> None:
        """Tick the reactors at the moment a deadline of theirs falls, not at the next periodic tick: a
        low-stock alert fires when its debounce ends, not up to a tick later."""
        handled: datetime | None = None
        while True:
            self._deadline_changed.clear()
            due = self.next_deadline()
            if due is not None and handled is not None and due <= handled:
                due = None  # still pending after its tick (muted, quiet hours, cooldown): periodic ticks go on
            if due is None:
                await self._deadline_changed.wait()
                continue
            delay = (due - self.clock.now()).total_seconds()
            if delay > 0:
                sleeper = asyncio.ensure_future(self.clock.sleep(delay))
                changed = asyncio.ensure_future(self._deadline_changed.wait())
                done, pending = await asyncio.wait({sleeper, changed}, return_when=asyncio.FIRST_COMPLETED)
                for f in pending:
                    f.cancel()
                if sleeper not in done:
                    continue  # an earlier deadline may have appeared
            now = self.clock.now()
            handled = due
            outputs: list[object] = []
            for reactor in self.reactors:
                try:
                    outputs.extend(reactor.tick(now))
                except Exception:  # one reactor's bug must not end the deadlines (nor the others' ticks)
                    self.metrics.inc("edge_processor_errors_total", processor=type(reactor).__name__)
                    self._limiter.log(log, logging.ERROR, type(reactor).__name__, "%s deadline tick failed",
                                      type(reactor).__name__, exc_info=True)
            if outputs:
                self.route(outputs, now)

    def tick(self, now: datetime) -> None:
        """One tick now (tests call it directly)."""
        outputs: list[object] = []
        owners: list[Processor | Reactor] = [*self.processors, *self.reactors]
        for owner in owners:
            try:
                outputs.extend(owner.tick(now))
            except Exception:
                self.metrics.inc("edge_processor_errors_total", processor=type(owner).__name__)
                self._limiter.log(log, logging.ERROR, type(owner).__name__, "%s tick failed",
                                  type(owner).__name__, exc_info=True)
        outputs.extend(self.stock.tick(now))  # fused cells that disagreed for their settle time
        if outputs or self.stock.touched:
            self.route(outputs, now)

    def route(self, outputs: Iterable[object], now: datetime, depth: int = 0) -> None:
        """Apply stock updates, run reactors, and submit events and state writes to the outbox."""
        events, writes, retained = self._collect(outputs, now, depth)
        if events and self.reactors:
            self._deadline_changed.set()
        if events or writes or retained:
            self.outbox.submit(events, writes, retained)

    def _collect(
        self, outputs: Iterable[object], now: datetime, depth: int, seen: list[StockCell] | None = None
    ) -> tuple[list[Event], list[StateWrite], dict[str, tuple[bytes, int]]]:
        top = seen is None  # the routed batch itself, not a reaction to it
        seen = [] if seen is None else seen  # cells touched at every depth (the derived views follow them)
        events: list[Event] = []
        writes: list[StateWrite] = []
        shelves: set[str] = set()
        for out in outputs:
            if isinstance(out, StockUpdate):
                change = self.stock.apply(out)
                if change is not None:
                    events.append(change)
            elif isinstance(out, Event):
                events.append(out)
            elif isinstance(out, Upsert | Delete):
                writes.append(out)
            elif isinstance(out, StockFlag):
                self.stock.flag(out)
            else:
                self.metrics.inc("edge_processor_errors_total", processor="unknown-output")
        # cells whose count or stale/conflict flags changed: their rows and their shelves' snapshots
        touched = self.stock.take_touched()
        for cell in touched:
            writes.append(Upsert("stock", self.stock.row(cell)))
            trust = self.stock.trust_row(cell)  # flags and a staff correction's hold (None: neither)
            if trust is not None:
                writes.append(Upsert("kv", trust))
            shelves.add(cell.shelf)
        retained = {
            self.outbox.topic(f"state/stock/{shelf}"): (
                dumps(snap := self.stock.shelf_snapshot(shelf)),
                int(snap["version"]),
            )
            for shelf in shelves
        }
        seen += touched
        if self.reactors and depth < MAX_REACTION_DEPTH:
            reactions: list[object] = []
            for ev in events:
                for reactor in self.reactors:
                    try:
                        reactions.extend(reactor.react(ev, now))
                    except Exception:
                        self.metrics.inc("edge_processor_errors_total", processor=type(reactor).__name__)
                        self._limiter.log(log, logging.ERROR, type(reactor).__name__, "%s failed on %s",
                                          type(reactor).__name__, ev.TYPE, exc_info=True)
            if reactions:
                e2, w2, r2 = self._collect(reactions, now, depth + 1, seen)
                events += e2
                writes += w2
                retained.update(r2)
        if top:  # views that follow the cells (ATP), same commit, once the reactions ran: a pick that a stock
            # change confirmed has released its reservation, so ATP moves once, not down and back up
            derived, snaps = self.stock.derive(seen, now)
            events += derived
            retained.update({self.outbox.topic(suffix): (dumps(doc), v) for suffix, (doc, v) in snaps.items()})
        return events, writes, retained

