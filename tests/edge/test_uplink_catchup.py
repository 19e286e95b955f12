"""The uplink's switch from reading the outbox on disk to following the committer live.

Rows committed while the last disk read runs are announced to the uplink before it follows the committer,
so they are not in its live queue; it must read them from disk. Found by a flaky ordering test against NATS:
with one read of 1,000 after the switch, a fast committer left a few hundred rows that were never sent (and
the watermark moved over them). Here the race is staged with an outbox whose first read lets 1,300 rows be
committed before it returns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from edge.clock import SystemClock
from edge.commands import CommandRouter
from edge.config import HubConfig
from edge.metrics import Metrics
from edge.outbox import OutRow
from edge.uplink import Uplink

TOPIC = "retail/v1/s1/events/test"


class StagedOutbox:
    """The parts of `Outbox` the pump reads; `commit(n)` adds rows and announces them like the committer."""

    def __init__(self) -> None:
        self.rows: list[OutRow] = []
        self.listeners: list[Callable[[list[OutRow]], None]] = []
        self.retained_listeners: list[Callable[[], None]] = []
        self.inflight_floor: Callable[[], int] = lambda: 0
        self.acked_through = 0
        self.reads = 0

    def commit(self, n: int) -> None:
        first = len(self.rows) + 1
        new = [OutRow(seq, TOPIC, b"{}", "ledger") for seq in range(first, first + n)]
        self.rows += new
        for listener in self.listeners:
            listener(new)

    async def fetch(self, after_seq: int, limit: int) -> list[OutRow]:
        snapshot = [r for r in self.rows if r.seq > max(after_seq, self.acked_through)][:limit]
        self.reads += 1
        if self.reads == 1:
            self.commit(1300)  # committed and announced while the first read is in flight
        await asyncio.sleep(0)
        return snapshot


async def test_rows_committed_during_the_last_disk_read_are_all_sent() -> None:
    ob = StagedOutbox()
    ob.commit(701)
    metrics = Metrics()
    up = Uplink(HubConfig(), ob, store_id="s1", topic_root="retail/v1/s1", clock=SystemClock(),  # type: ignore[arg-type]
                metrics=metrics, commands=CommandRouter(metrics))
    got: list[int] = []
    got += [r.seq for r in await up._next_rows()]
    up._cursor = got[-1]
    ob.commit(500)  # live from here on
    while len(got) < 2501:
        batch = [r.seq for r in await asyncio.wait_for(up._next_rows(), 1)]
        got += batch
        up._cursor = got[-1]
    assert got == list(range(1, 2502))
