"""Injected clocks: the system clock in production, a manual clock in tests and compressed simulations.

Everything time-dependent (smoothing windows, debounce, cooldowns, retention) takes a `Clock` and never
reads the time itself, so tests move time instead of sleeping.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Source of wall time (UTC) and monotonic time, plus a sleep that follows the same clock."""

    def now(self) -> datetime:
        """Current wall time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin; never goes backwards."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Sleep `seconds` of this clock's time."""
        ...


class SystemClock:
    """The real clocks."""

    def now(self) -> datetime:
        """Current wall time, timezone-aware UTC."""
        return datetime.now(UTC)

    def monotonic(self) -> float:
        """`time.monotonic()`."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """`asyncio.sleep`."""
        await asyncio.sleep(seconds)


class ManualClock:
    """A clock that only moves when told to; `sleep` returns once `advance` has passed its deadline."""

    def __init__(self, start: datetime | None = None) -> None:
        self._wall = start or datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
        self._mono = 0.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def now(self) -> datetime:
        """Current simulated wall time."""
        return self._wall

    def monotonic(self) -> float:
        """Current simulated monotonic time."""
        return self._mono

    def advance(self, seconds: float) -> None:
        """Move both clocks forward and wake sleepers whose deadline has passed."""
        self._mono += seconds
        self._wall += timedelta(seconds=seconds)
        due = [f for t, f in self._sleepers if t <= self._mono]
        self._sleepers = [(t, f) for t, f in self._sleepers if t > self._mono]
        for fut in due:
            if not fut.done():
                fut.set_result(None)

    def jump_wall(self, seconds: float) -> None:
        """Move only the wall clock (NTP step, wrong RTC); monotonic time is untouched."""
        self._wall += timedelta(seconds=seconds)

    async def sleep(self, seconds: float) -> None:
        """Wait until `advance` moves past now + seconds."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self._mono + seconds, fut))
        await fut


def utc(ts: float) -> datetime:
    """UNIX seconds -> aware UTC datetime."""
    return datetime.fromtimestamp(ts, UTC)
