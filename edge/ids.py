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


def _random(n: int) -> bytes:
    """n bytes from the OS CSPRNG, read 4 KiB at a time (one syscall per ~400 ids, not two per id)."""
    global _pool, _pos
    if _pos + n > len(_pool):
        _pool, _pos = os.urandom(4096), 0
    out = _pool[_pos:_pos + n]
    _pos += n
    return out


def uuid7() -> str:
    """A new UUIDv7 as a string; monotonic within this process even inside one millisecond."""
    global _last_ms, _counter
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            ms = _last_ms
            _counter += 1
            if _counter > 0xFFF:
                ms += 1
                _counter = 0
        else:
            _counter = int.from_bytes(_random(2), "big") & 0x3FF
        _last_ms = ms
        rand_b = int.from_bytes(_random(8), "big") & ((1 << 62) - 1)
        value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | _counter << 64 | 0b10 << 62 | rand_b
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
