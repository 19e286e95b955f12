"""UUIDv7 event ids (RFC 9562): time-ordered, unique, assigned once when an event is accepted."""

from __future__ import annotations

import os
import threading
import time

_lock = threading.Lock()
_last_ms = 0
_counter = 0
_pool = b""
_pos = 0
_MS = (1 << 48) - 1
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}  # top bits 0b10, two random


def _random(n: int) -> bytes:
    """n bytes from the OS CSPRNG, read in blocks of at least 4 KiB (one syscall per ~400 ids, not two per id)."""
    global _pool, _pos
    if _pos + n > len(_pool):
        _pool, _pos = os.urandom(max(4096, n)), 0
    out = _pool[_pos:_pos + n]
    _pos += n
    return out


def uuid7_many(n: int) -> list[str]:
    """`n` new UUIDv7 strings in increasing order, in one step (the outbox names a whole batch at once).

    Layout: 48-bit Unix milliseconds, version 7, a 12-bit counter (method 1 of RFC 9562 section 6.2:
    random start each new millisecond, +1 within it, the millisecond advances when it overflows), variant
    0b10 and 62 random bits. Monotonic within this process even inside one millisecond.
    """
    global _last_ms, _counter
    out: list[str] = []
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            ms = _last_ms
            counter = _counter + 1
        else:
            counter = int.from_bytes(_random(2), "big") & 0x3FF
        hx = _random(8 * n).hex()  # 16 random hex digits per id
        pre = _prefix(ms)
        for j in range(0, 16 * n, 16):
            if counter > 0xFFF:
                ms += 1
                counter = 0
                pre = _prefix(ms)
            out.append(f"{pre}{counter:03x}-{_VARIANT[hx[j]]}{hx[j + 1:j + 4]}-{hx[j + 4:j + 16]}")
            counter += 1
        _last_ms, _counter = ms, counter - 1
    return out


def _prefix(ms: int) -> str:
    ms &= _MS
    return f"{ms >> 16:08x}-{ms & 0xFFFF:04x}-7"


def uuid7() -> str:
    """A new UUIDv7 as a string."""
    return uuid7_many(1)[0]
