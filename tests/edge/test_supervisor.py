"""The supervisor: malformed input counted and logged rate-limited, broken devices restarted with backoff
and logged once per transition, while the other devices keep delivering."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from edge.clock import SystemClock
from edge.driver import DeviceOffline, DeviceOnline, Reading
from edge.metrics import Metrics
from edge.runtime import DeviceStatus
from edge.supervisor import Backoff, Supervisor
from tests.edge.fakes import Count, CountingDriver


class FlakyDriver:
    """Connects, delivers `per_session` readings, then fails; `sessions` times, then stays up."""

    def __init__(self, device_id: str, sessions: int, per_session: int = 3) -> None:
        self.device_id = device_id
        self.sessions = sessions
        self.per_session = per_session
        self.opened = 0

    async def stream(self) -> AsyncIterator[Reading]:
        """Fail after a few readings, the first `sessions` times."""
        self.opened += 1
        clock = SystemClock()
        yield DeviceOnline(device_id=self.device_id, time=clock.now())
        for n in range(self.per_session):
            yield Count(device_id=self.device_id, time=clock.now(), n=n)
        if self.opened <= self.sessions:
            raise ConnectionResetError("serial port vanished")
        await asyncio.Event().wait()


async def _run(sup: Supervisor, until: float) -> None:
    sup.start()
    await asyncio.sleep(until)
    await sup.stop()


async def test_malformed_counted_and_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    got: list[Reading] = []

    async def sink(r: Reading) -> None:
        got.append(r)

    metrics = Metrics()
    drv = CountingDriver("shelf-x", 1000, malformed_every=10)
    sup = Supervisor([(drv, "counting")], sink=sink, on_status=lambda *_: None, clock=SystemClock(),
                     metrics=metrics)
    await _run(sup, 0.3)
    assert metrics.value("edge_malformed_total", device="shelf-x") == 100
    assert len(got) == 900  # every good reading still delivered
    lines = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert len(lines) == 1  # once per device per minute, not per frame
    assert sup.statuses()[0].malformed == 100


async def test_broken_device_restarts_with_backoff_and_logs_transitions(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    got: list[Reading] = []

    async def sink(r: Reading) -> None:
        got.append(r)

    changes: list[tuple[str, str]] = []

    def on_status(new: DeviceStatus, _old: DeviceStatus | None) -> None:
        changes.append((new.device, new.state))

    flaky = FlakyDriver("scanner-1", sessions=3)
    steady = CountingDriver("shelf-ok", None, per_tick=1, interval=0.01)
    sup = Supervisor([(flaky, "flaky"), (steady, "counting")], sink=sink, on_status=on_status,
                     clock=SystemClock(), metrics=Metrics(), backoff=Backoff(initial=0.02, maximum=0.1))
    await _run(sup, 1.0)
    assert flaky.opened == 4  # three failures, restarted each time, up on the fourth
    status = {s.device: s for s in sup.statuses()}
    assert status["scanner-1"].state == "online"
    assert status["scanner-1"].restarts == 3
    assert status["scanner-1"].readings == 12
    # the rest of the store kept running the whole time
    assert sum(1 for r in got if r.device_id == "shelf-ok") > 30
    assert [c for c in changes if c[0] == "scanner-1"] == [("scanner-1", "online"), ("scanner-1", "offline")] * 3 + [
        ("scanner-1", "online")]
    offline = [r for r in caplog.records if "offline" in r.getMessage()]
    back = [r for r in caplog.records if "back online" in r.getMessage()]
    assert len(offline) == 3 and len(back) == 3  # one line per transition, not per retry or reading


def test_backoff_is_jittered_and_capped() -> None:
    b = Backoff(initial=0.5, maximum=30.0)
    delays = [b.delay(n) for n in range(1, 12) for _ in range(20)]
    assert max(delays) <= 30.0
    assert min(delays) >= 0.25
    assert len({round(d, 6) for d in delays}) > 100  # jitter: restarts of many devices do not align


class SwallowingDriver:
    """Polls like pymodbus on Python 3.11: a cancel that lands inside a request is swallowed `swallow`
    times (the library's `wait_for` turns it into a timeout) and the driver polls on."""

    def __init__(self, device_id: str, swallow: int) -> None:
        self.device_id = device_id
        self.swallow = swallow
        self.closed = False

    async def stream(self) -> AsyncIterator[Reading]:
        """Yield a reading per poll; eat the first `swallow` cancellations."""
        clock = SystemClock()
        yield DeviceOnline(device_id=self.device_id, time=clock.now())
        try:
            n = 0
            while True:
                try:
                    await asyncio.sleep(0.01)
                except asyncio.CancelledError:
                    if self.swallow <= 0:
                        raise
                    self.swallow -= 1
                    task = asyncio.current_task()
                    assert task is not None
                    task.uncancel()
                n += 1
                yield Count(device_id=self.device_id, time=clock.now(), n=n)
        finally:
            self.closed = True


async def test_stop_recancels_a_driver_that_swallowed_the_cancel() -> None:
    async def sink(_r: Reading) -> None:
        return None

    drv = SwallowingDriver("shelf-modbus", swallow=3)
    ok = CountingDriver("shelf-ok", None, per_tick=1, interval=0.01)
    sup = Supervisor([(drv, "modbus"), (ok, "counting")], sink=sink, on_status=lambda *_: None,
                     clock=SystemClock(), metrics=Metrics())
    sup.start()
    await asyncio.sleep(0.05)
    await asyncio.wait_for(sup.stop(grace=5.0), 3.0)
    assert drv.closed and drv.swallow == 0


async def test_stop_leaves_a_task_that_never_stops_behind_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    async def sink(_r: Reading) -> None:
        return None

    drv = SwallowingDriver("shelf-stuck", swallow=10**9)
    sup = Supervisor([(drv, "modbus")], sink=sink, on_status=lambda *_: None, clock=SystemClock(),
                     metrics=Metrics())
    sup.start()
    await asyncio.sleep(0.05)
    t0 = asyncio.get_running_loop().time()
    await sup.stop(grace=0.5)
    assert asyncio.get_running_loop().time() - t0 < 1.5
    assert any("left behind: device-shelf-stuck" in r.getMessage() for r in caplog.records)
    drv.swallow = 0  # let it go so the test's loop closes cleanly
    (stuck,) = [t for t in asyncio.all_tasks() if t.get_name() == "device-shelf-stuck"]
    stuck.cancel()
    await asyncio.gather(stuck, return_exceptions=True)
    assert drv.closed


class RecordingBackoff(Backoff):
    """Backoff that records which attempt number each restart asked for (no real waiting)."""

    def delay(self, attempt: int) -> float:
        """Record the attempt; a tiny delay keeps the test fast."""
        ATTEMPTS.append(attempt)
        return 0.001


ATTEMPTS: list[int] = []


class SilentFailDriver:
    """Connects (DeviceOnline) and fails at once, delivering nothing: an unhealthy connection."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self.opened = 0

    async def stream(self) -> AsyncIterator[Reading]:
        """Online, then broken."""
        self.opened += 1
        yield DeviceOnline(device_id=self.device_id, time=SystemClock().now())
        raise ConnectionRefusedError("rospec failed")


@pytest.mark.parametrize(("make", "expected"), [
    # a connection that delivered readings was healthy: every retry is a first retry (reader closed, is back)
    (lambda: FlakyDriver("reader-ok", sessions=4), [1, 1, 1, 1]),
    # a connection that delivered nothing grows the backoff
    (lambda: SilentFailDriver("reader-bad"), [1, 2, 3, 4]),
])
async def test_backoff_resets_once_a_connection_delivered_a_reading(make: object, expected: list[int]) -> None:
    ATTEMPTS.clear()
    got: list[Reading] = []

    async def sink(r: Reading) -> None:
        got.append(r)

    drv = make()  # type: ignore[operator]
    sup = Supervisor([(drv, "flaky")], sink=sink, on_status=lambda *_: None, clock=SystemClock(),
                     metrics=Metrics(), backoff=RecordingBackoff(initial=0.5, maximum=30.0))
    sup.start()
    for _ in range(200):
        if len(ATTEMPTS) >= 4:
            break
        await asyncio.sleep(0.01)
    await sup.stop()
    assert ATTEMPTS[:4] == expected
    # every failure reached the processors as DeviceOffline, naming the cause
    offline = [r for r in got if isinstance(r, DeviceOffline)]
    assert len(offline) >= 4 and all(r.reason for r in offline)
