"""Runs every device's driver, restarts a failing one with jittered backoff, tracks device status.

One log line when a device goes offline and one when it is back; malformed frames are counted per
device and logged at most once per device per minute; the rest of the store keeps running whatever
one device does.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from edge.clock import Clock
from edge.driver import DeviceOffline, DeviceOnline, Driver, Malformed, Reading, ReadingBatch
from edge.metrics import Metrics
from edge.ratelimit import LogLimiter
from edge.runtime import DeviceStatus

log = logging.getLogger(__name__)

_CONTROL = (Malformed, DeviceOnline)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter between `initial` and `maximum` seconds."""

    initial: float = 0.5
    maximum: float = 30.0
    stable_after: float = 60.0  # a run this long resets the delay

    def delay(self, attempt: int) -> float:
        """Delay before restart number `attempt` (1-based)."""
        cap = min(self.maximum, self.initial * 2 ** max(0, attempt - 1))
        return random.uniform(cap / 2, cap)


class Supervisor:
    """Owns one task per enabled device."""

    def __init__(
        self,
        drivers: list[tuple[Driver, str]],
        *,
        sink: Callable[[Reading], Awaitable[None]],
        on_status: Callable[[DeviceStatus, DeviceStatus | None], None],
        clock: Clock,
        metrics: Metrics,
        backoff: Backoff | None = None,
        try_put: Callable[[Reading], bool] | None = None,
    ) -> None:
        self.drivers = drivers
        self.sink = sink
        self.try_put = try_put  # the sink's no-wait path (False when full), so a reading costs no coroutine
        self.on_status = on_status
        self.clock = clock
        self.metrics = metrics
        self.backoff = backoff or Backoff()
        # state transitions are immutable snapshots; the per-reading counters are plain ints beside them
        self._status: dict[str, DeviceStatus] = {
            d.device_id: DeviceStatus(d.device_id, kind, "starting", None, None, 0, 0, 0) for d, kind in drivers
        }
        self._readings: dict[str, int] = dict.fromkeys(self._status, 0)
        self._seen: dict[str, datetime | None] = dict.fromkeys(self._status)
        self._limiter = LogLimiter(60.0)
        self._tasks: list[asyncio.Task[None]] = []
        self._task_of: dict[str, asyncio.Task[None]] = {}

    def start(self) -> None:
        """Start every driver."""
        for driver, _kind in self.drivers:
            self._spawn(driver)

    def _spawn(self, driver: Driver) -> None:
        task = asyncio.create_task(self._run(driver), name=f"device-{driver.device_id}")
        self._tasks.append(task)
        self._task_of[driver.device_id] = task

    async def replace(self, remove: Iterable[str], add: list[tuple[Driver, str]], grace: float = 5.0) -> None:
        """Stop the drivers of the devices in `remove` (waiting for their `finally` blocks up to `grace` s),
        forget them, and start the drivers in `add` (a manifest rollout: only the devices whose section
        changed restart, the others keep running and keep their connections)."""
        gone = set(remove) | {d.device_id for d, _ in add}
        tasks = [t for dev, t in self._task_of.items() if dev in gone and not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            _done, left = await asyncio.wait(tasks, timeout=grace)
            if left:
                log.warning("devices did not stop within %.1f s, left behind: %s", grace,
                            ", ".join(sorted(t.get_name() for t in left)))
        self._tasks = [t for t in self._tasks if t not in tasks and not t.done()]
        self.drivers = [(d, k) for d, k in self.drivers if d.device_id not in gone] + list(add)
        for dev in gone:
            self._task_of.pop(dev, None)
            self._status.pop(dev, None)
            self._readings.pop(dev, None)
            self._seen.pop(dev, None)
        for driver, kind in add:
            dev = driver.device_id
            self._status[dev] = DeviceStatus(dev, kind, "starting", None, None, 0, 0, 0)
            self._readings[dev] = 0
            self._seen[dev] = None
            self._spawn(driver)

    async def stop(self, grace: float = 5.0) -> None:
        """Cancel every driver task and wait for their `finally` blocks (polite device shutdown).

        A driver library may swallow one cancellation (pymodbus's request timeout does on Python 3.11:
        its `wait_for` turns our cancel into a timeout and the driver polls on), so a task still running
        after a short wait is cancelled again, until `grace` seconds are spent; a task that outlives even
        that is named in the log and left behind, so the gateway still stops and flushes its outbox.
        """
        pending = {t for t in self._tasks if not t.done()}
        deadline = time.monotonic() + grace
        while pending:
            for t in pending:
                t.cancel()
            left = deadline - time.monotonic()
            if left <= 0:
                log.warning("devices did not stop within %.1f s, left behind: %s", grace,
                            ", ".join(sorted(t.get_name() for t in pending)))
                break
            _done, pending = await asyncio.wait(pending, timeout=min(0.25, left))
        await asyncio.gather(*(t for t in self._tasks if t.done()), return_exceptions=True)
        self._tasks.clear()
        self._task_of.clear()

    def statuses(self) -> list[DeviceStatus]:
        """Every device's status with its current counters, by device id."""
        return [
            replace(s, readings=self._readings[d], last_seen=self._seen[d]) for d, s in sorted(self._status.items())
        ]


    def _set(self, device: str, **changes: object) -> None:
        old = replace(self._status[device], readings=self._readings[device], last_seen=self._seen[device])
        new = replace(old, **changes)  # type: ignore[arg-type]
        self._status[device] = new
        if new.state != old.state:
            self.on_status(new, old)

    async def _run(self, driver: Driver) -> None:
        dev = driver.device_id
        attempt = 0
        status, readings, seen = self._status, self._readings, self._seen
        try_put = self.try_put or (lambda _r: False)
        while True:
            started = time.monotonic()
            delivered_before = readings[dev]
            try:
                async for reading in driver.stream():
                    # the common case inline: an online device's ordinary reading into a queue with room
                    if status[dev].state == "online" and not isinstance(reading, _CONTROL):
                        seen[dev] = reading.time
                        readings[dev] += len(reading) if isinstance(reading, ReadingBatch) else 1
                        if not try_put(reading):
                            await self.sink(reading)
                    else:
                        await self._handle(dev, reading)
                failure: Exception = ConnectionError("device stream ended")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the supervisor boundary: any driver failure restarts that driver only
                failure = exc
            reason = f"{type(failure).__name__}: {failure}" if str(failure) else type(failure).__name__
            if self._status[dev].state != "offline":
                log.warning("device %s offline: %s", dev, reason)
                if not isinstance(failure, OSError | ConnectionError | TimeoutError):
                    log.debug("device %s failure detail", dev, exc_info=failure)
            self._set(dev, state="offline", error=reason)
            self.metrics.inc("edge_device_restarts_total", device=dev)
            await self.sink(DeviceOffline(device_id=dev, time=self.clock.now(), reason=reason))
            # a connection that delivered a reading was healthy: the device is back soon (a reader's
            # ConnectionCloseEvent, a reboot), so the first retry comes within `initial`, not after a long wait
            if readings[dev] > delivered_before or time.monotonic() - started > self.backoff.stable_after:
                attempt = 0
            attempt += 1
            self._set(dev, restarts=self._status[dev].restarts + 1)
            await asyncio.sleep(self.backoff.delay(attempt))

    async def _handle(self, dev: str, reading: Reading) -> None:
        st = self._status[dev]
        if isinstance(reading, Malformed):
            self.metrics.inc("edge_malformed_total", device=dev)
            self._status[dev] = replace(st, malformed=st.malformed + 1)
            self._limiter.log(log, logging.WARNING, dev, "device %s: malformed input skipped: %s", dev,
                              reading.reason)
            return
        now = self.clock.now()
        self._seen[dev] = now
        if st.state != "online":
            if st.state == "offline":
                log.info("device %s back online", dev)
            self._set(dev, state="online", error=None)
        if isinstance(reading, DeviceOnline):
            return
        self._readings[dev] += len(reading) if isinstance(reading, ReadingBatch) else 1
        await self.sink(reading)
