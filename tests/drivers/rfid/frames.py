"""Loads the spec-derived LLRP byte fixtures of `data/llrp_frames.txt` (origin documented in that file)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

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
