"""`scanner_hid`: a keyboard-wedge barcode scanner read through Linux evdev (optional `hid` extra).

evdev is imported lazily: without it, opening raises a DeviceError saying to install the hid extra. Key
codes map to characters (US layout, Shift aware); Enter ends a scan. Wedge scanners usually lose GS (0x1D)
or send it as a configurable character (`extra_separators`), so GS1 messages are parsed with biip's
separator characters plus those, and unseparated variable-length fields are flagged ambiguous.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncGenerator
from typing import Any

from drivers.scanner.config import ScannerHidConfig
from drivers.scanner.reads import Scan
from edge.driver import DeviceOnline, DriverContext, Reading
from edge.errors import DeviceError

_PLAIN = dict(
    zip(
        [f"KEY_{c}" for c in "1234567890"]
        + [f"KEY_{c}" for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"]
        + [
            "KEY_MINUS",
            "KEY_EQUAL",
            "KEY_DOT",
            "KEY_SLASH",
            "KEY_SPACE",
            "KEY_COMMA",
            "KEY_SEMICOLON",
            "KEY_APOSTROPHE",
            "KEY_LEFTBRACE",
            "KEY_RIGHTBRACE",
            "KEY_BACKSLASH",
            "KEY_GRAVE",
        ],
        list("1234567890") + list("abcdefghijklmnopqrstuvwxyz") + list("-=./ ,;'[]\\`"),
        strict=True,
    )
)
_SHIFT = dict(
    zip(
        list("1234567890-=./,;'[]\\`"),
        list('!@#$%^&*()_+>?<:"{}|~'),
        strict=True,
    )
)


class KeyDecoder:
    """Key events -> scans: characters on key-down, Shift state tracked, Enter ends a scan."""

    def __init__(self) -> None:
        self.shift = False
        self._buf: list[str] = []

    def key(self, name: str, down: bool) -> str | None:
        """Handle one key event; return a finished scan on Enter."""
        if name in ("KEY_LEFTSHIFT", "KEY_RIGHTSHIFT"):
            self.shift = down
            return None
        if not down:
            return None
        if name in ("KEY_ENTER", "KEY_KPENTER"):
            scan, self._buf = "".join(self._buf), []
            return scan or None
        ch = _PLAIN.get(name)
        if ch is not None:
            self._buf.append((_SHIFT.get(ch, ch.upper())) if self.shift else ch)
        return None


def _evdev() -> Any:
    try:
        return importlib.import_module("evdev")
    except ImportError:
        return None


class ScannerHidDriver:
    """Reads key events of one input device and yields `Scan`s."""

    def __init__(self, config: ScannerHidConfig, ctx: DriverContext) -> None:
        self.config = config
        self.device_id = config.id
        self._ctx = ctx

    async def stream(self) -> AsyncGenerator[Reading, None]:
        """Open the input device (grabbed) and yield scans; raise when it disappears."""
        evdev = _evdev()
        if evdev is None:
            raise DeviceError(self.device_id, "python-evdev is missing: install the hid extra (pip install '.[hid]')")
        clock = self._ctx.clock
        try:
            dev = evdev.InputDevice(self.config.device_path)
        except OSError as exc:
            raise DeviceError(self.device_id, f"cannot open {self.config.device_path}: {exc}") from exc
        try:
            if self.config.grab:
                dev.grab()
            yield DeviceOnline(device_id=self.device_id, time=clock.now(), detail=self.config.device_path)
            decoder = KeyDecoder()
            async for ev in dev.async_read_loop():
                if ev.type != evdev.ecodes.EV_KEY or ev.value == 2:  # ignore autorepeat
                    continue
                name = evdev.ecodes.KEY.get(ev.code)
                if isinstance(name, list):
                    name = name[0]
                scan = decoder.key(str(name), ev.value == 1)
                if scan:
                    yield Scan(device_id=self.device_id, time=clock.now(), value=scan, via="hid")
        except OSError as exc:
            raise DeviceError(self.device_id, f"input device {self.config.device_path} gone: {exc}") from exc
        finally:
            dev.close()
