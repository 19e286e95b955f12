"""Loads the spec-derived LLRP byte fixtures of `data/llrp_frames.txt` (origin documented in that file), and
collects readings from a driver stream in tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from functools import cache
from pathlib import Path

from edge.driver import Reading

DATA = Path(__file__).parent / "data"


@cache
def frames() -> dict[str, bytes]:
    """Fixture name -> frame bytes."""
    out: dict[str, str] = {}
    current = ""
    for line in (DATA / "llrp_frames.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith(" "):
            out[current] += line
        else:
            current, _, rest = line.partition(":")
            out[current] = rest
    return {k: bytes.fromhex(v.replace(" ", "")) for k, v in out.items()}


async def collect(stream: AsyncIterator[Reading], until: Callable[[list[Reading]], bool],
                  timeout: float = 10) -> list[Reading]:  # fmt: skip
    """Readings from `stream` until `until(got)` holds (or the timeout), then close the stream."""
    got: list[Reading] = []

    async def run() -> None:
        async for r in stream:
            got.append(r)
            if until(got):
                return

    try:
        await asyncio.wait_for(run(), timeout)
    finally:
        await stream.aclose()  # type: ignore[attr-defined]  # driver streams are async generators
    return got
