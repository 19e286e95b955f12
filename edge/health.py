"""Core-task supervision and the daemon's health: what `/healthz`, the metrics and the systemd watchdog say.

`CoreTasks` owns every long-running task of the gateway (committer, checkpoints, uplink, pipeline, ticks,
deadlines, health, the API server and the rules' tasks). A task that fails is logged with its traceback,
then, by its policy (decided per task in `Gateway.start`, listed in docs/operations.md):
- `restart`: its state lives outside the task (queues, the outbox, the database), so it is started again
  after a jittered backoff; more than `max_restarts` failures within `window_s` escalate to `exit`;
- `exit`: its state cannot be trusted or rebuilt from here, so `failed` is set and `edge-gateway run`
  stops the gateway cleanly and exits 1: systemd (`Restart=always`) starts a fresh process.
A core loop that returns while the gateway is not stopping counts as a failure too.

`Health` samples progress once a second: the pipeline (readings waiting and none taken), the committer
(events waiting and no commit) and the uplink (hub connected, events unacknowledged and the watermark
not moving) each count as stalled after `stall_s` without progress. The watchdog is fed only while no
core task has failed for good and none of the three is stalled. `checks()` is the `/healthz` verdict.

The `clock` check reports whether the system clock is synchronised (event times and token expiry depend on
it), read from the kernel's NTP state (adjtimex(2) with modes 0 returns TIME_ERROR while STA_UNSYNC is set)
or, where the service's seccomp filter forbids adjtimex (systemd's ProtectClock=yes), from timedated
(`timedatectl show -p NTPSynchronized`). It is a warning, never a 503: a store without NTP keeps working.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from edge.db import SpaceReserve
from edge.metrics import Labels, Metrics
from edge.outbox import Outbox
from edge.supervisor import Backoff

log = logging.getLogger(__name__)

Policy = Literal["restart", "exit"]
TIME_ERROR = 5  # adjtimex(2)'s return value while the clock is not synchronised (STA_UNSYNC)
CLOCK_RECHECK_S = 60.0
ClockSync = tuple[bool | None, str]  # (synchronised, or None when it cannot be told; how it was read)


def kernel_clock_sync() -> ClockSync:
    """The kernel's view: adjtimex(2) with modes 0 (read only); (None, why) where it cannot be called."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        buf = ctypes.create_string_buffer(512)  # struct timex (208 bytes on 64-bit); modes = 0: only read
        state = int(libc.adjtimex(buf))
    except (OSError, AttributeError) as exc:
        return None, f"adjtimex unavailable: {exc}"
    if state < 0:
        return None, f"adjtimex: {os.strerror(ctypes.get_errno())}"
    return state != TIME_ERROR, "adjtimex"


async def timedated_clock_sync(wait_s: float = 5.0) -> ClockSync:
    """timedated's view (`timedatectl show -p NTPSynchronized --value`); (None, why) when it does not answer."""
    try:
        proc = await asyncio.create_subprocess_exec(
            "timedatectl", "show", "-p", "NTPSynchronized", "--value",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    except OSError as exc:
        return None, f"timedatectl: {exc.strerror or exc}"
    try:
        out, err = await asyncio.wait_for(proc.communicate(), wait_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return None, "timedatectl: no answer"
    value = out.decode(errors="replace").strip()
    if proc.returncode != 0 or value not in {"yes", "no"}:
        return None, f"timedatectl: {err.decode(errors='replace').strip()[:200] or value[:50] or 'no answer'}"
    return value == "yes", "timedatectl"


async def clock_sync() -> ClockSync:
    """Is the system clock synchronised? The kernel first, timedated where adjtimex is forbidden."""
    sync = kernel_clock_sync()
    if sync[0] is not None:
        return sync
    fallback = await timedated_clock_sync()
    return fallback if fallback[0] is not None else (None, f"{sync[1]}; {fallback[1]}")


@dataclass(slots=True)
class _Core:
    name: str
    policy: Policy
    task: asyncio.Task[None] | None = None
    state: str = "running"  # running | restarting | failed | done
    restarts: int = 0
    failures: deque[float] = field(default_factory=deque)
    error: str | None = None


class CoreTasks:
    """One owner for the gateway's long-running tasks: restart with backoff, or end the process."""

    def __init__(self, metrics: Metrics, *, backoff: Backoff | None = None, max_restarts: int = 5,
                 window_s: float = 60.0) -> None:
        self.metrics = metrics
        self.backoff = backoff or Backoff(initial=0.1, maximum=5.0)
        self.max_restarts = max_restarts
        self.window_s = window_s
        self.failed = asyncio.Event()  # a task failed for good: the process must end (non-zero)
        self.fatal: tuple[str, str] | None = None  # (task, error) of the first such failure
        self.stopping = False
        self._tasks: dict[str, _Core] = {}

    def spawn(self, name: str, factory: Callable[[], Awaitable[None]], *, policy: Policy) -> None:
        """Run `factory()` as core task `name`, supervised by `policy`."""
        core = self._tasks[name] = _Core(name, policy)
        core.task = asyncio.create_task(self._run(core, factory), name=name)

    def watch(self, name: str, task: asyncio.Task[Any], *, may_end: bool = False) -> None:
        """Supervise a task started elsewhere (API server, rules): its failure ends the process (`exit`);
        so does its end unless `may_end` (a one-shot task) or the gateway is stopping."""
        core = self._tasks[name] = _Core(name, "exit")

        def done(t: asyncio.Task[Any]) -> None:
            if t.cancelled() or self.stopping:
                core.state = "done"
                return
            exc = t.exception()
            if exc is None:
                core.state = "done"
                if not may_end:
                    self._escalate(core, "ended unexpectedly")
                return
            log.error("core task %s failed", name, exc_info=exc)
            self._escalate(core, f"{type(exc).__name__}: {exc}")

        task.add_done_callback(done)

    async def _run(self, core: _Core, factory: Callable[[], Awaitable[None]]) -> None:
        while True:
            core.state = "running"
            try:
                await factory()
            except asyncio.CancelledError:
                core.state = "done"
                raise
            except Exception as exc:  # the supervision boundary: every failure is logged here, once
                log.exception("core task %s failed", core.name)
                error = f"{type(exc).__name__}: {exc}"
            else:
                if self.stopping:
                    core.state = "done"
                    return
                log.error("core task %s ended unexpectedly", core.name)
                error = "ended unexpectedly"
            core.error = error
            self.metrics.inc("edge_core_task_failures_total", task=core.name)
            now = time.monotonic()
            core.failures.append(now)
            while core.failures and now - core.failures[0] > self.window_s:
                core.failures.popleft()
            if core.policy == "exit" or len(core.failures) > self.max_restarts:
                self._escalate(core, error)
                return
            core.state = "restarting"
            core.restarts += 1
            delay = self.backoff.delay(len(core.failures))
            log.warning("restarting core task %s in %.1f s (failure %d within %.0f s)", core.name, delay,
                        len(core.failures), self.window_s)
            await asyncio.sleep(delay)

    def _escalate(self, core: _Core, error: str) -> None:
        core.state = "failed"
        core.error = error
        if self.fatal is None:
            self.fatal = (core.name, error)
            log.critical("core task %s failed and cannot be restarted (%s): the gateway stops and the process "
                         "exits 1 so that systemd starts it afresh", core.name, error)
        self.failed.set()

    def task(self, name: str) -> asyncio.Task[None] | None:
        """The asyncio task of a spawned core task."""
        core = self._tasks.get(name)
        return core.task if core else None

    async def cancel(self, *names: str) -> None:
        """Cancel these spawned tasks and wait for them."""
        tasks = [t for n in names if (t := self.task(n)) is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def states(self) -> dict[str, str]:
        """name -> running | restarting | failed | done."""
        return {n: c.state for n, c in self._tasks.items()}

    def restarts(self) -> dict[str, int]:
        """name -> restarts so far."""
        return {n: c.restarts for n, c in self._tasks.items()}

    def errors(self) -> dict[str, str]:
        """name -> last error, for tasks that are not running."""
        return {n: c.error or "" for n, c in self._tasks.items() if c.state != "running"}


class _Counts(Protocol):
    """What the health monitor reads of the pipeline and the uplink."""

    def pipeline_waiting(self) -> int:
        """Readings queued for the pipeline."""
        ...

    def pipeline_taken(self) -> int:
        """Readings the pipeline has taken so far."""
        ...

    def hub_connected(self) -> bool:
        """The uplink has a hub session."""
        ...


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Health limits (manifest `health:`)."""

    commit_lag_max_s: float = 30.0
    uplink_lag_max_s: float = 300.0
    stall_s: float = 30.0


class Health:
    """Progress of pipeline, committer and uplink; the `/healthz` checks; the watchdog's verdict."""

    def __init__(self, core: CoreTasks, outbox: Outbox, counts: _Counts, *, reserve: SpaceReserve | None,
                 thresholds: Thresholds) -> None:
        self.core = core
        self.outbox = outbox
        self.counts = counts
        self.reserve = reserve
        self.limits = thresholds
        now = time.monotonic()
        self._progress = {"pipeline": now, "commit": now, "uplink": now}
        self._last: dict[str, object] = {}
        self._connected_since: float | None = None  # wall clock of the current hub session's start
        self.uplink_lag = 0.0
        self.clock: ClockSync = (None, "not checked yet")
        self.read_clock: Callable[[], Awaitable[ClockSync]] = clock_sync
        self._clock_at: float | None = None

    def sample(self) -> None:
        """Note progress since the last sample (called once a second, and before each verdict)."""
        now = time.monotonic()
        taken = self.counts.pipeline_taken()
        if self.counts.pipeline_waiting() == 0 or taken != self._last.get("pipeline"):
            self._progress["pipeline"] = now
        self._last["pipeline"] = taken
        ob = self.outbox
        if ob.uncommitted == 0 or ob.commits != self._last.get("commit"):
            self._progress["commit"] = now
        self._last["commit"] = ob.commits
        connected = self.counts.hub_connected()
        if connected and self._connected_since is None:
            self._connected_since = time.time()
        elif not connected:
            self._connected_since = None
        if not connected or ob.depth <= 0 or ob.acked_through != self._last.get("uplink"):
            self._progress["uplink"] = now
        self._last["uplink"] = ob.acked_through

    def stalled(self) -> dict[str, float]:
        """Stage -> seconds without progress, for the stages over `stall_s`."""
        now = time.monotonic()
        return {k: now - t for k, t in self._progress.items() if now - t > self.limits.stall_s}

    def progressing(self) -> bool:
        """The watchdog may be fed: no core task failed for good, no stage stalled."""
        self.sample()
        return not self.core.failed.is_set() and not self.stalled()

    async def run(self, notify_watchdog: Callable[[], object] | None = None, interval: float = 1.0) -> None:
        """Sample every `interval` (and measure the uplink lag); feed the watchdog while progressing."""
        while True:
            if self.progressing() and notify_watchdog is not None:
                notify_watchdog()
            await self.measure_uplink_lag()
            await self.measure_clock()
            await asyncio.sleep(interval)

    async def measure_clock(self) -> ClockSync:
        """Read the clock's synchronisation (at most once per CLOCK_RECHECK_S) for the `clock` check."""
        now = time.monotonic()
        if self._clock_at is None or now - self._clock_at >= CLOCK_RECHECK_S:
            self._clock_at = now
            self.clock = await self.read_clock()
        return self.clock

    async def measure_uplink_lag(self) -> float:
        """Age of the oldest committed, unacknowledged event, counted from when the hub became reachable."""
        since = self._connected_since
        if since is None:
            self.uplink_lag = 0.0
            return 0.0
        created = await self.outbox.oldest_unacked_created() if self.outbox.depth > 0 else None
        self.uplink_lag = 0.0 if created is None else max(0.0, time.time() - max(created, since))
        return self.uplink_lag

    def checks(self) -> dict[str, dict[str, Any]]:
        """Every check with `ok` and a `reason` (the `/healthz` body)."""
        self.sample()
        lim = self.limits
        states = self.core.states()
        bad = {n: s for n, s in states.items() if s not in {"running", "done"}}
        errors = self.core.errors()
        out: dict[str, dict[str, Any]] = {}
        out["core_tasks"] = {
            "ok": not bad and not self.core.failed.is_set(),
            "reason": "; ".join(f"{n} {s}: {errors.get(n, '')}" for n, s in sorted(bad.items())) or "all running",
            "restarts": sum(self.core.restarts().values()),
        }
        stalled = self.stalled()
        out["progress"] = {
            "ok": not stalled,
            "reason": "; ".join(f"{k}: no progress for {v:.0f} s" for k, v in sorted(stalled.items()))
            or "pipeline, commit and uplink make progress",
        }
        lag = self.outbox.commit_lag()
        err = self.outbox.last_error
        out["commit"] = {
            "ok": lag <= lim.commit_lag_max_s,
            "lag_s": round(lag, 3),
            "reason": (f"oldest uncommitted event waits {lag:.1f} s (limit {lim.commit_lag_max_s:g} s)"
                       if lag > lim.commit_lag_max_s else "committing")
            + (f"; commits fail: {err}" if err else ""),
        }
        connected = self.counts.hub_connected()
        ulag = self.uplink_lag
        out["uplink"] = {
            # an unreachable hub is reported, not failed: the store works offline and buffers (CONTRACT.md)
            "ok": ulag <= lim.uplink_lag_max_s,
            "connected": connected,
            "lag_s": round(ulag, 3),
            "pending": self.outbox.depth,
            "reason": (f"hub unreachable: buffering {self.outbox.depth} events (the store works offline)"
                       if not connected else
                       f"oldest unacknowledged event waits {ulag:.1f} s while the hub is reachable "
                       f"(limit {lim.uplink_lag_max_s:g} s)" if ulag > lim.uplink_lag_max_s else "hub connected"),
        }
        holds = self.reserve.holds if self.reserve is not None else True
        shedding = self.outbox.shedding
        out["disk"] = {
            "ok": holds and not shedding,
            "reserve_holds": holds,
            "shedding_telemetry": shedding,
            "reason": ("disk full: space reserve in use, telemetry shed with gap events" if shedding
                       else "space reserve missing: not enough free space to allocate it" if not holds
                       else "space reserve holds"),
        }
        synced, how = self.clock
        out["clock"] = {
            # a warning, not a failure: a store without NTP must still run (docs/install.md "Time")
            "ok": True,
            "synchronized": synced,
            "reason": ("clock synchronised" if synced else "clock NOT synchronised: event times and token expiry "
                       "may be off; enable NTP (timedatectl set-ntp true)" if synced is False
                       else "clock synchronisation unknown") + f" ({how})",
        }
        return out

    def register_metrics(self, m: Metrics) -> None:
        """The same facts as gauges."""
        m.describe("edge_health_ok", "1 when the /healthz check passes, by check")
        m.describe("edge_core_task_up", "1 when the core task runs, by task")
        m.describe("edge_commit_lag_seconds", "age of the oldest event not yet committed")
        m.describe("edge_uplink_lag_seconds", "age of the oldest unacknowledged event while the hub is reachable")
        m.describe("edge_disk_reserve_ok", "1 while the disk space reserve holds and no telemetry is shed")
        m.describe("edge_core_task_failures_total", "failures of a core task (each logged with its traceback)")
        m.describe("edge_outbox_commit_failures_total", "commits that failed for a storage reason and were retried")
        m.describe("edge_outbox_shed_total", "telemetry events dropped for lack of disk space (gap events say which)")
        m.describe("edge_clock_synchronized", "1 when the system clock is NTP-synchronised, 0 when not, -1 unknown")
        m.gauge_fn("edge_clock_synchronized",
                   lambda: {(): -1.0 if self.clock[0] is None else float(self.clock[0])})
        m.gauge_fn("edge_health_ok", lambda: {(("check", k),): float(v["ok"]) for k, v in self.checks().items()})

        def up() -> dict[Labels, float]:
            return {(("task", n),): float(s in {"running", "done"}) for n, s in self.core.states().items()}

        m.gauge_fn("edge_core_task_up", up)
        m.gauge_fn("edge_core_task_restarts",
                   lambda: {(("task", n),): float(r) for n, r in self.core.restarts().items()})
        m.gauge_fn("edge_commit_lag_seconds", lambda: {(): self.outbox.commit_lag()})
        m.gauge_fn("edge_uplink_lag_seconds", lambda: {(): self.uplink_lag})
        m.gauge_fn("edge_disk_reserve_ok", lambda: {(): float((self.reserve.holds if self.reserve else True)
                                                              and not self.outbox.shedding)})
        m.gauge_fn("edge_stage_stalled_seconds", lambda: {(("stage", k),): v for k, v in self.stalled().items()})
