"""systemd's service notification protocol (sd_notify(3)), spoken with the socket module: no libsystemd.

The service manager passes an AF_UNIX datagram socket in `NOTIFY_SOCKET` (a path, or `@name` for the
abstract namespace); every message is one datagram of newline-separated `KEY=value` assignments
(https://www.freedesktop.org/software/systemd/man/sd_notify.html). `WATCHDOG_USEC` (with `WATCHDOG_PID`
naming the process it is meant for) asks for `WATCHDOG=1` at least that often when the unit has
`WatchdogSec=`. Without `NOTIFY_SOCKET` (not under systemd, or `Type=` other than notify) every call
does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends notifications to the service manager named by the environment."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        addr = env.get("NOTIFY_SOCKET", "")
        self.address: str | bytes | None = None
        if addr.startswith("@"):
            self.address = b"\0" + addr[1:].encode()  # abstract namespace
        elif addr.startswith("/"):
            self.address = addr
        self.watchdog_s: float | None = None
        usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1e6
        self._sock: socket.socket | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        """A service manager listens."""
        return self.address is not None

    def notify(self, **fields: str | int) -> bool:
        """Send one datagram of `KEY=value` lines (READY=1, STATUS=..., WATCHDOG=1...); True when sent."""
        if self.address is None:
            return False
        msg = "\n".join(f"{k}={v}" for k, v in fields.items()).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(msg, self.address)
        except OSError as exc:
            if not self._warned:  # the manager went away (or never was): say so once
                log.warning("sd_notify to %r failed: %s", self.address, exc)
                self._warned = True
            return False
        return True

    def ready(self, status: str = "") -> bool:
        """READY=1: start-up is complete."""
        return self.notify(READY=1, STATUS=status) if status else self.notify(READY=1)

    def watchdog(self) -> bool:
        """WATCHDOG=1: the service is alive and making progress."""
        return self.notify(WATCHDOG=1)

    def stopping(self, status: str = "") -> bool:
        """STOPPING=1: shutdown has begun."""
        return self.notify(STOPPING=1, STATUS=status) if status else self.notify(STOPPING=1)

    def close(self) -> None:
        """Close the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
