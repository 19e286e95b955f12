"""`scanner_serial`: a barcode scanner in serial / USB CDC-ACM mode (pyserial-asyncio-fast).

One scan per line, ended by the configured terminator (CR, LF or CRLF); AIM symbology identifiers and GS
(0x1D) separators are kept in `Scan.value`. Undecodable bytes are `Malformed`; EOF or a read error raises.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import serial_asyncio_fast

from drivers.scanner.config import ScannerSerialConfig
from drivers.scanner.reads import Scan
from edge.driver import DeviceOnline, DriverContext, Malformed, Reading
from edge.errors import DeviceError

MAX_SCAN = 1024
_TERMINATORS = {"CR": b"\r", "LF": b"\n", "CRLF": b"\r\n"}


def split_scan(raw: bytes, terminator: str) -> str | None:
    """Bytes up to the terminator -> the scan text (None when it is not text); stray CR/LF are trimmed."""
    body = raw.removesuffix(_TERMINATORS[terminator]).strip(b"\r\n")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text


class ScannerSerialDriver:
    """Yields one `Scan` per terminated line."""

    def __init__(self, config: ScannerSerialConfig, ctx: DriverContext) -> None:
        self.config = config
        self.device_id = config.id
        self._ctx = ctx

    async def stream(self) -> AsyncGenerator[Reading, None]:
        """Open the port and yield scans; raise when the port goes away."""
        cfg = self.config
        clock = self._ctx.clock
        sep = _TERMINATORS[cfg.terminator][-1:]
        reader, writer = await serial_asyncio_fast.open_serial_connection(
            url=cfg.port, baudrate=cfg.baudrate, limit=MAX_SCAN
        )
        try:
            yield DeviceOnline(device_id=self.device_id, time=clock.now(), detail=cfg.port)
            while True:
                try:
                    raw = await reader.readuntil(sep)
                except asyncio.IncompleteReadError as exc:
                    raise DeviceError(self.device_id, f"serial port {cfg.port} closed (EOF)") from exc
                except asyncio.LimitOverrunError as exc:
                    junk = await reader.read(exc.consumed or MAX_SCAN)
                    yield Malformed(device_id=self.device_id, time=clock.now(), reason="scan too long", raw=junk[:64])
                    continue
                text = split_scan(raw, cfg.terminator)
                if text is None:
                    yield Malformed(device_id=self.device_id, time=clock.now(), reason="not UTF-8", raw=raw[:64])
                elif text:
                    yield Scan(device_id=self.device_id, time=clock.now(), value=text, via="serial")
        except OSError as exc:
            raise DeviceError(self.device_id, f"serial port {cfg.port}: {exc}") from exc
        finally:
            writer.close()
