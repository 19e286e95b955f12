"""An Impinj IoT-interface-style HTTP server: `GET /api/v1/data/stream` streams NDJSON tag events.

Plain asyncio streams, HTTP/1.1 with chunked transfer encoding; optional basic auth; blank keep-alive
lines between inventory cycles; now and then an event type the driver must ignore. Reads come from the
World through a `Population`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from datetime import datetime, timedelta

from edge.clock import Clock, SystemClock
from firmware_sim.rfid.population import Population


def _chunk(data: bytes) -> bytes:
    return f"{len(data):X}\r\n".encode() + data + b"\r\n"


def _ts(t: datetime) -> str:
    return t.isoformat(timespec="microseconds").replace("+00:00", "Z")


class ImpinjHttpSim:
    """One simulated Impinj R700 event stream."""

    def __init__(
        self,
        population: Population,
        *,
        clock: Clock | None = None,
        cycle_s: float = 1.0,
        username: str | None = None,
        password: str | None = None,
        hostname: str = "impinj-sim",
    ) -> None:
        self.population = population
        self.clock = clock or SystemClock()
        self.cycle_s = cycle_s
        self.auth = (
            "Basic " + base64.b64encode(f"{username}:{password or ''}".encode()).decode() if username else None
        )
        self.hostname = hostname
        self.port = 0
        self.clients = 0
        self.extra_lines: asyncio.Queue[bytes] = asyncio.Queue()  # tests push raw lines here
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        """Listen on 127.0.0.1; return the port."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:PORT`."""
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        """Close the listener and every stream."""
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    def drop_clients(self) -> None:
        """Cut every open stream (the driver must raise and reconnect)."""
        for w in list(self._writers):
            w.transport.abort()

    def event_line(self, epc: str, antenna: int, rssi: int, seen: datetime) -> bytes:
        """One tagInventory event as the R700 writes it."""
        raw = bytes.fromhex(epc)
        return json.dumps({
            "timestamp": _ts(seen),
            "hostname": self.hostname,
            "eventType": "tagInventory",
            "tagInventoryEvent": {
                "epc": base64.b64encode(raw).decode(),
                "epcHex": epc,
                "antennaPort": antenna,
                "antennaName": f"Antenna {antenna}",
                "peakRssiCdbm": rssi * 100,
                "frequency": 920250,
                "transmitPowerCdbm": 3000,
                "lastSeenTime": _ts(seen),
            },
        }).encode() + b"\n"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = [*lines[0].split(" "), "", "", ""][:3]
            headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)}
            if self.auth is not None and headers.get("authorization") != self.auth:
                writer.write(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                await writer.drain()
                return
            if method != "GET" or path != "/api/v1/data/stream":
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                await writer.drain()
                return
            self.clients += 1
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
                         b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")  # fmt: skip
            n = 0
            while True:
                await self.clock.sleep(self.cycle_s)
                n += 1
                now = self.clock.now()
                body = b"".join(self.event_line(r.epc, r.antenna, r.rssi, now - timedelta(milliseconds=5))
                                for r in self.population.cycle())  # fmt: skip
                if n % 3 == 0:
                    body += b'{"timestamp":"' + _ts(now).encode() + b'","eventType":"inventoryStatus",' \
                            b'"inventoryStatusEvent":{"inventoryStatus":"running"}}\n'
                body += b"\n"  # keep-alive
                while not self.extra_lines.empty():
                    body += self.extra_lines.get_nowait()
                writer.write(_chunk(body))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, asyncio.LimitOverrunError):
            return
        finally:
            self._writers.discard(writer)
            writer.transport.abort()
