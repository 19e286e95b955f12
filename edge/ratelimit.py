"""Log-once helpers: state changes are logged, streams are counted."""

from __future__ import annotations

import logging
import time


class LogLimiter:
    """Allows one log line per key per `interval` seconds and counts what it suppressed."""

    def __init__(self, interval: float = 60.0) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def log(self, logger: logging.Logger, level: int, key: str, msg: str, *args: object,
            exc_info: bool = False) -> None:
        """Log `msg` unless `key` was logged less than `interval` ago."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        n = self._suppressed.pop(key, 0)
        self._last[key] = now
        if n:
            logger.log(level, "%s (%d similar suppressed)", msg % args, n, exc_info=exc_info)
        else:
            logger.log(level, msg, *args, exc_info=exc_info)
