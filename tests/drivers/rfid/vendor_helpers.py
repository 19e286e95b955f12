"""Helpers of the vendor driver tests (Impinj, Zebra): read part of a driver stream and keep it open."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from drivers.rfid.reads import TagRead
from edge.driver import Reading


def ntags(rs: list[Reading]) -> int:
    """How many tag reads."""
    return sum(isinstance(r, TagRead) for r in rs)


async def collect_some(stream: AsyncIterator[Reading], until: Callable[[list[Reading]], bool],
                       into: list[Reading] | None = None, timeout: float = 10) -> list[Reading]:  # fmt: skip
    """Readings (appended to `into` when given) until `until(got)` holds, leaving the stream open; a stream
    that raises leaves what came before it in `into`."""
    got = into if into is not None else []

    async def run() -> None:
        async for r in stream:
            got.append(r)
            if until(got):
                return

    await asyncio.wait_for(run(), timeout)
    return got
