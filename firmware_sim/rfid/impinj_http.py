"""A simulated Impinj R700/R720 speaking the Impinj IoT device interface (Reader Configuration REST API 1.5-1.7),
written from Impinj's documentation (the OpenAPI file of the IoT device interface and its overview pages on
platform.impinj.com / support.impinj.com), not from our driver. Reads come from the World via a `Population`.

What it does, each with the documentation section it follows:
- `GET /api/v1/status` -> ReaderStatus {status: idle|running|armed, time, serialNumber, activePreset}.
- `GET/PUT /api/v1/profiles/inventory/presets/{id}` (InventoryRequest), `POST .../presets/{id}/start`,
  `POST /api/v1/profiles/stop` ("Profiles" / "Presets": a started preset runs until stopped).
- `GET /api/v1/data/stream` ("HTTP stream"): chunked NDJSON ReaderEvents; a CR-LF keep-alive only after
  `keepalive_s` (30 s) without data; tag events only while a preset runs.
- TagInventoryEvent fields by the preset's eventConfig ("eventConfig.tagInventory"): `epc` base64url always;
  `epcHex`, `lastSeenTime`, `peakRssiCdbm`, `antennaPort` and the top-level `hostname` only when enabled
  (defaults: epcHex, lastSeenTime and hostname disabled). tagReporting.reportingIntervalSeconds: a tag is
  reported at most once per interval per antenna (0: every read).
- inventoryStatusEvent on start/stop, inventoryTerminatedEvent, antennaConnected/DisconnectedEvent,
  overflowEvent, diagnosticEvent (ReaderEvent "one of" members).
- Authentication none / basic / digest (RFC 7616, MD5, qop=auth) and optional HTTPS (an `ssl.SSLContext`):
  "Reader authentication" (1.7: HTTPS on by default).
Faults for tests: `refuse_start`, `terminate()`, `disconnect_antenna()`, `overflow()`, `clock_offset_s`,
`drop_clients()`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import secrets
import ssl
from datetime import datetime, timedelta
from typing import Any

from edge.clock import Clock, SystemClock
from firmware_sim.rfid.population import Population

KEEPALIVE_S = 30.0  # HTTP stream: CR-LF keep-alive after 30 s without data
REALM = "impinj-r700"


def _chunk(data: bytes) -> bytes:
    return f"{len(data):X}\r\n".encode() + data + b"\r\n"


def _ts(t: datetime) -> str:
    return t.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _md5(s: str) -> str:
    return hashlib.md5(s.encode()).hexdigest()  # RFC 7616 digest, algorithm=MD5


def _enabled(cfg: dict[str, Any], key: str, default: bool) -> bool:
    v = cfg.get(key)
    return default if v is None else v == "enabled"


class ImpinjHttpSim:
    """One simulated Impinj R700: REST API, presets, event stream."""

    def __init__(
        self,
        population: Population,
        *,
        clock: Clock | None = None,
        cycle_s: float = 1.0,
        auth: str = "none",
        username: str | None = None,
        password: str | None = None,
        hostname: str = "impinj-sim",
        tls: ssl.SSLContext | None = None,
        keepalive_s: float = KEEPALIVE_S,
        running_preset: str | None = None,
    ) -> None:
        self.population = population
        self.clock = clock or SystemClock()
        self.cycle_s = cycle_s
        self.auth = "basic" if username and auth == "none" else auth
        self.username = username or ""
        self.password = password or ""
        self.hostname = hostname
        self.tls = tls
        self.keepalive_s = keepalive_s
        self.port = 0
        self.clients = 0
        self.requests: list[str] = []  # "METHOD path" of every authenticated request
        self.presets: dict[str, dict[str, Any]] = {}
        self.status = "idle"
        self.active: str | None = None
        if running_preset is not None:  # started from the reader's web UI before we came
            self.presets[running_preset] = {"antennaConfigs": [{"antennaPort": p} for p in population.antennas]}
            self.status, self.active = "running", running_preset
        self.refuse_start: str | None = None  # an error message: POST start answers 403 with it
        self.clock_offset_s = 0.0  # reader clock minus true time
        self.dead_antennas: set[int] = set()
        self._events: list[asyncio.Queue[bytes]] = []
        self._nonces: set[str] = set()
        self._radio: asyncio.Task[None] | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        """Listen on 127.0.0.1 (same port again after `stop`); return the port."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, ssl=self.tls)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    @property
    def base_url(self) -> str:
        """`http(s)://127.0.0.1:PORT`."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

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
        """Cut every open connection (the driver must raise and reconnect)."""
        for w in list(self._writers):
            w.transport.abort()

    # ---- reader-side happenings ----------------------------------------------------------------------------

    def now(self) -> datetime:
        """The reader's clock."""
        return self.clock.now() + timedelta(seconds=self.clock_offset_s)

    def _event(self, key: str, body: dict[str, Any], name: str) -> bytes:
        ev: dict[str, Any] = {"timestamp": _ts(self.now()), "eventType": name, key: body}
        if self._event_config("common").get("hostname") == "enabled":
            ev["hostname"] = self.hostname
        return json.dumps(ev).encode() + b"\n"

    def push_line(self, line: bytes) -> None:
        """Send raw bytes on every open stream (tests: malformed or unknown events)."""
        self._broadcast(line)

    def _broadcast(self, line: bytes) -> None:
        for q in self._events:
            q.put_nowait(line)

    def _set_status(self, status: str) -> None:
        self.status = status
        # ReaderEvent inventoryStatusEvent: sent when the inventory state changes
        self._broadcast(self._event("inventoryStatusEvent", {"inventoryStatus": status}, "inventoryStatus"))

    def terminate(self, reason: str = "stopTrigger") -> None:
        """The running preset ends on its own (ReaderEvent inventoryTerminatedEvent)."""
        self.status, self.active = "idle", None
        self._broadcast(self._event("inventoryTerminatedEvent", {"terminationReason": reason},
                                    "inventoryTerminated"))  # fmt: skip

    def stop_inventory(self) -> None:
        """Someone stops inventory on the reader (web UI): inventoryStatus idle."""
        self.active = None
        self._set_status("idle")

    def disconnect_antenna(self, port: int) -> None:
        """An antenna cable comes off (antennaDisconnectedEvent); its reads stop."""
        self.dead_antennas.add(port)
        self._broadcast(self._event("antennaDisconnectedEvent", {"antennaPort": port}, "antennaDisconnected"))

    def connect_antenna(self, port: int) -> None:
        """The antenna is back (antennaConnectedEvent)."""
        self.dead_antennas.discard(port)
        self._broadcast(self._event("antennaConnectedEvent", {"antennaPort": port}, "antennaConnected"))

    def overflow(self) -> None:
        """The reader's event buffer overflowed (overflowEvent)."""
        self._broadcast(self._event("overflowEvent", {}, "overflow"))

    def _event_config(self, part: str) -> dict[str, Any]:
        preset = self.presets.get(self.active or "", {})
        ec = preset.get("eventConfig")
        sub = ec.get(part) if isinstance(ec, dict) else None
        return sub if isinstance(sub, dict) else {}

    def tag_line(self, epc: str, antenna: int, rssi: int, seen: datetime) -> bytes:
        """One TagInventoryEvent as the preset's eventConfig asks for."""
        cfg = self._event_config("tagInventory")
        raw = bytes.fromhex(epc)
        # TagInventoryEvent.epc: base64url, always present
        ev: dict[str, Any] = {"epc": base64.urlsafe_b64encode(raw).decode().rstrip("=")}
        if _enabled(cfg, "epcHex", False):
            ev["epcHex"] = epc
        if _enabled(cfg, "antennaPort", True):
            ev["antennaPort"] = antenna
            ev["antennaName"] = f"Antenna {antenna}"
        if _enabled(cfg, "peakRssiCdbm", True):
            ev["peakRssiCdbm"] = rssi * 100
        if _enabled(cfg, "lastSeenTime", False):
            ev["lastSeenTime"] = _ts(seen)
        return self._event("tagInventoryEvent", ev, "tagInventory")

    def _ports(self) -> set[int]:
        # InventoryRequest.antennaConfigs: only the preset's antenna ports read (minus unplugged ones)
        preset = self.presets.get(self.active or "", {})
        ports = {a.get("antennaPort") for a in preset.get("antennaConfigs", []) if isinstance(a, dict)}
        return {p for p in ports if isinstance(p, int)} - self.dead_antennas

    async def _inventory(self) -> None:
        """The radio: one cycle of reads every cycle_s while a preset runs, to every open stream."""
        last: dict[tuple[str, int], float] = {}
        while True:
            await self.clock.sleep(self.cycle_s)
            if self.status != "running" or not self._events:
                continue
            rep = self._event_config("tagInventory").get("tagReporting")
            interval = rep.get("reportingIntervalSeconds", 0) if isinstance(rep, dict) else 0
            now_m = self.clock.monotonic()
            ports = self._ports()
            seen = self.now() - timedelta(milliseconds=5)
            lines = []
            for r in self.population.cycle():
                if r.antenna not in ports:
                    continue
                if interval and now_m - last.get((r.epc, r.antenna), -1e9) < interval - 1e-3:
                    continue  # tagReporting.reportingIntervalSeconds: once per interval
                last[(r.epc, r.antenna)] = now_m
                lines.append(self.tag_line(r.epc, r.antenna, r.rssi, seen))
            if lines:
                self._broadcast(b"".join(lines))

    # ---- HTTP ---------------------------------------------------------------------------------------------

    def _authorized(self, method: str, headers: dict[str, str]) -> bool:
        # "Reader authentication": none, basic, or digest (RFC 7616: MD5, qop=auth, nonce from our challenge)
        got = headers.get("authorization", "")
        if self.auth == "none":
            return True
        if self.auth == "basic":
            want = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            return got == f"Basic {want}"
        if not got.startswith("Digest "):
            return False
        fields: dict[str, str] = {}
        for part in got[7:].split(","):
            k, _, v = part.strip().partition("=")
            fields[k.strip()] = v.strip().strip('"')
        if fields.get("nonce") not in self._nonces or fields.get("username") != self.username:
            return False
        ha1 = _md5(f"{self.username}:{REALM}:{self.password}")
        ha2 = _md5(f"{method}:{fields.get('uri', '')}")
        want = _md5(f"{ha1}:{fields['nonce']}:{fields.get('nc', '')}:{fields.get('cnonce', '')}:"
                    f"{fields.get('qop', '')}:{ha2}")  # fmt: skip
        return secrets.compare_digest(want, fields.get("response", ""))

    def _challenge(self) -> bytes:
        if self.auth == "digest":
            nonce = secrets.token_hex(16)
            self._nonces.add(nonce)
            www = f'Digest realm="{REALM}", qop="auth", nonce="{nonce}", algorithm=MD5'
        else:
            www = f'Basic realm="{REALM}"'
        return (f"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: {www}\r\nContent-Length: 0\r\n"
                "Connection: close\r\n\r\n").encode()  # fmt: skip

    @staticmethod
    def _reply(code: int, body: Any = None) -> bytes:
        reason = {200: "OK", 204: "No Content", 400: "Bad Request", 403: "Forbidden", 404: "Not Found"}.get(code, "X")
        data = b"" if body is None else json.dumps(body).encode()
        head = f"HTTP/1.1 {code} {reason}\r\nContent-Length: {len(data)}\r\nConnection: close\r\n"
        if data:
            head += "Content-Type: application/json\r\n"
        return head.encode() + b"\r\n" + data

    def _rest(self, method: str, path: str, body: bytes) -> bytes:
        parts = path.strip("/").split("/")
        if method == "GET" and path == "/api/v1/status":  # "ReaderStatus": status, time, activePreset
            st: dict[str, Any] = {"status": self.status, "time": _ts(self.now()), "serialNumber": "37017090614"}
            if self.active is not None:
                st["activePreset"] = {"id": self.active, "profile": "inventory"}
            return self._reply(200, st)
        if method == "POST" and path == "/api/v1/profiles/stop":  # "Profiles": stop whatever runs
            self.active = None
            if self.status != "idle":
                self._set_status("idle")
            return self._reply(204)
        if parts[:5] == ["api", "v1", "profiles", "inventory", "presets"] and len(parts) >= 6:
            pid = parts[5]
            if len(parts) == 6 and method == "PUT":  # "Presets": store an InventoryRequest under an id
                try:
                    preset = json.loads(body)
                except ValueError:
                    return self._reply(400, {"message": "body is not JSON"})
                if not isinstance(preset, dict) or not isinstance(preset.get("antennaConfigs"), list):
                    return self._reply(400, {"message": "antennaConfigs required"})
                self.presets[pid] = preset
                return self._reply(204)
            if len(parts) == 6 and method == "GET":
                return self._reply(200, self.presets[pid]) if pid in self.presets else self._reply(404)
            if len(parts) == 7 and parts[6] == "start" and method == "POST":  # "Presets": start -> running
                if pid not in self.presets:
                    return self._reply(404, {"message": f"preset {pid} not found"})
                if self.refuse_start is not None:
                    return self._reply(403, {"message": self.refuse_start})
                self.active = pid
                self._set_status("running")
                return self._reply(204)
        return self._reply(404, {"message": "not found"})

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        queue: asyncio.Queue[bytes] | None = None
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = [*lines[0].split(" "), "", "", ""][:3]
            headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)}
            n = int(headers.get("content-length", "0") or 0)
            body = await asyncio.wait_for(reader.readexactly(min(n, 1 << 20)), 5) if n else b""
            if not self._authorized(method, headers):
                writer.write(self._challenge())
                await writer.drain()
                return
            self.requests.append(f"{method} {path}")
            if not (method == "GET" and path == "/api/v1/data/stream"):
                writer.write(self._rest(method, path, body))
                await writer.drain()
                return
            self.clients += 1
            queue = asyncio.Queue()
            self._events.append(queue)
            if len(self._events) == 1:
                self._radio = asyncio.create_task(self._inventory())
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
                         b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")  # fmt: skip
            await writer.drain()
            while True:
                try:
                    data = await asyncio.wait_for(queue.get(), self.keepalive_s)
                except TimeoutError:
                    data = b"\r\n"  # HTTP stream keep-alive: only after keepalive_s without data
                writer.write(_chunk(data))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, asyncio.LimitOverrunError, ValueError):
            return
        finally:
            if queue is not None:
                self._events.remove(queue)
                if not self._events and self._radio is not None:
                    self._radio.cancel()
                    self._radio = None
            self._writers.discard(writer)
            writer.transport.abort()
