"""Impinj IoT device interface driver (`type: impinj_iot`, R700/R720, Reader Configuration REST API 1.5-1.7).

Reference: Impinj IoT device interface OpenAPI (platform.impinj.com "Impinj IoT Device Interface",
support.impinj.com "Impinj IoT Device Interface API - Overview"); section names below are the API's.

Session, per connection:
1. Optional certificate pin check (own TLS handshake before any credential leaves), then
   `GET /api/v1/status` ("ReaderStatus": `status` idle/running/armed, `time`, `activePreset.id`); its `time`
   is the first live sample of the reader's clock (drivers/rfid/readerclock.py).
2. `manage_preset: true`: `POST /api/v1/profiles/stop` when something runs, `PUT
   /api/v1/profiles/inventory/presets/{id}` ("InventoryRequest": antennaConfigs + eventConfig) and `POST
   .../presets/{id}/start`, then status must say running or armed; any refusal is a `DeviceError`.
   `manage_preset: false`: status must be running (or armed) with the expected `activePreset.id`, else
   `DeviceError` naming what runs.
3. `GET /api/v1/data/stream` ("HTTP stream"): newline-delimited JSON "ReaderEvent"s, each with `timestamp`
   and ONE of `tagInventoryEvent`, `inventoryStatusEvent`, `inventoryTerminatedEvent`,
   `antennaConnectedEvent`, `antennaDisconnectedEvent`, `overflowEvent`, `diagnosticEvent` (dispatched by
   that key; `eventType` is not needed). The reader writes a CR-LF keep-alive after 30 s without data;
   Impinj advises reconnecting only after 90 s without anything (`idle_timeout_s`, default 90).
4. On the way out (stream closed by the gateway) with `manage_preset`: `POST /api/v1/profiles/stop`.

Tag events ("TagInventoryEvent"): `epc` is base64url (RFC 4648 section 5, padding optional) and always
there; `epcHex`, `lastSeenTime` and the top-level `hostname` are off by default ("eventConfig"), so the
driver does not rely on them. `peakRssiCdbm` is centi-dBm. A read is dated by `lastSeenTime` (else the
event `timestamp`) corrected by the reader clock offset.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from drivers.rfid.config import ImpinjIotConfig
from drivers.rfid.readerclock import ReaderClock
from drivers.rfid.reads import AntennaStatus, ReaderStatus, TagRead, parse_timestamp, to_us
from edge.driver import DeviceOnline, DriverContext, Malformed, Reading
from edge.errors import DeviceError, FrameError

STATUS_PATH = "/api/v1/status"
STREAM_PATH = "/api/v1/data/stream"
PRESET_PATH = "/api/v1/profiles/inventory/presets/{id}"
START_PATH = "/api/v1/profiles/inventory/presets/{id}/start"
STOP_PATH = "/api/v1/profiles/stop"
MAX_LINE = 64 * 1024
START_WAIT_S = 5.0

_KINDS = {
    "tagInventoryEvent": "tag",
    "inventoryStatusEvent": "status",
    "inventoryTerminatedEvent": "terminated",
    "antennaConnectedEvent": "antenna_up",
    "antennaDisconnectedEvent": "antenna_down",
    "overflowEvent": "overflow",
    "diagnosticEvent": "diagnostic",
}


@dataclass(frozen=True, slots=True)
class ImpinjEvent:
    """One decoded ReaderEvent."""

    kind: str  # tag, status, terminated, antenna_up, antenna_down, overflow, diagnostic, other
    reader_us: int | None = None  # the event's `timestamp`
    epc: str = ""
    antenna: int = 0
    rssi: float | None = None
    seen_us: int | None = None  # lastSeenTime when enabled, else the event timestamp
    status: str = ""
    detail: str = ""


def decode_epc(text: str) -> str:
    """base64url (or standard base64), padding optional -> upper-case hex; FrameError when not base64."""
    if not text or len(text) > 128:
        raise FrameError("epc empty or too long")
    t = text.replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(t + "=" * (-len(t) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise FrameError("epc is not base64url") from None
    if not raw:
        raise FrameError("empty EPC")
    return raw.hex().upper()


def _ts(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise FrameError(f"{what} is not a timestamp")
    try:
        return to_us(parse_timestamp(value))
    except (ValueError, OverflowError):
        raise FrameError(f"{what} is not RFC 3339") from None


def _port(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 65536:
        raise FrameError("antennaPort is not a port number")
    return value


def _detail(value: Any) -> str:
    return orjson.dumps(value).decode()[:160] if value not in (None, {}) else ""


def parse_event(line: bytes | str) -> ImpinjEvent:
    """One NDJSON line -> ImpinjEvent; FrameError when it cannot be read."""
    if len(line) > MAX_LINE:
        raise FrameError("line longer than 64 KiB")
    try:
        obj: Any = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise FrameError("not JSON") from None
    if not isinstance(obj, dict):
        raise FrameError("event is not a JSON object")
    key = next((k for k in _KINDS if k in obj), None)
    if key is None:
        return ImpinjEvent("other")
    kind = _KINDS[key]
    ev = obj[key]
    if not isinstance(ev, dict):
        raise FrameError(f"{key} is not an object")
    reader_us = _ts(obj.get("timestamp"), "timestamp")
    if kind == "tag":
        hex_ = ev.get("epcHex")
        if isinstance(hex_, str) and hex_:
            if len(hex_) > 128:
                raise FrameError("epcHex too long")
            try:
                epc = bytes.fromhex(hex_).hex().upper()
            except ValueError:
                raise FrameError("epcHex is not hex") from None
        elif isinstance(ev.get("epc"), str):
            epc = decode_epc(ev["epc"])
        else:
            raise FrameError("tag event without epc/epcHex")
        if not epc:
            raise FrameError("empty EPC")
        port = _port(ev.get("antennaPort", 0))
        cdbm = ev.get("peakRssiCdbm")
        rssi: float | None = None
        if isinstance(cdbm, int | float) and not isinstance(cdbm, bool):
            if not -20000 <= cdbm <= 5000:
                raise FrameError("peakRssiCdbm out of range")
            rssi = cdbm / 100.0
        seen = _ts(ev.get("lastSeenTime"), "lastSeenTime")
        return ImpinjEvent("tag", reader_us, epc, port, rssi, seen if seen is not None else reader_us)
    if kind == "status":
        st = ev.get("inventoryStatus", ev.get("status"))
        if not isinstance(st, str) or not st or len(st) > 40:
            raise FrameError("inventoryStatusEvent without inventoryStatus")
        return ImpinjEvent("status", reader_us, status=st.lower())
    if kind in ("antenna_up", "antenna_down"):
        return ImpinjEvent(kind, reader_us, antenna=_port(ev.get("antennaPort")))
    return ImpinjEvent(kind, reader_us, detail=_detail(ev))


def preset_body(cfg: ImpinjIotConfig) -> dict[str, Any]:
    """The InventoryRequest the gateway installs: every mapped antenna (port 1 when none is mapped),
    dual-target session 1 (a shelf's tags answer every round), and the event fields the driver needs."""
    ports = sorted(cfg.antennas) or [1]
    return {
        "antennaConfigs": [{
            "antennaPort": p,
            "transmitPowerCdbm": cfg.transmit_power_cdbm,
            "inventorySession": 1,
            "inventorySearchMode": "dual-target",
            "estimatedTagPopulation": 256,
        } for p in ports],
        "eventConfig": {
            "common": {"hostname": "disabled"},
            "tagInventory": {
                "tagReporting": {"reportingIntervalSeconds": cfg.report_interval_s, "tagCacheSize": 2048,
                                 "antennaIdentifier": "antennaPort", "tagIdentifier": "epc"},
                "epc": "enabled", "epcHex": "disabled", "antennaPort": "enabled", "peakRssiCdbm": "enabled",
                "lastSeenTime": "enabled",
            },
        },
    }


def _message(resp: httpx.Response) -> str:
    with contextlib.suppress(Exception):
        body = resp.json()
        msg = body.get("message") if isinstance(body, dict) else None
        if isinstance(msg, str):
            return ": " + msg[:200]
    return ""


class ImpinjIotDriver:
    """One Impinj reader: preset, status and event stream."""

    def __init__(self, config: ImpinjIotConfig, ctx: DriverContext) -> None:
        self.config = config
        self.ctx = ctx
        self.device_id = config.id
        self.clock = ReaderClock()
        self.counters = {"tags": 0, "keepalives": 0, "ignored": 0, "malformed": 0, "replayed": 0,
                         "overflows": 0, "diagnostics": 0, "antenna_events": 0, "status_events": 0,
                         "presets_started": 0}  # fmt: skip
        self.last_diagnostic = ""

    # ---- TLS and auth -------------------------------------------------------------------------------------

    def _ssl(self) -> ssl.SSLContext | bool:
        cfg = self.config
        if cfg.pinned_sha256:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE  # the pin is the whole trust decision
            return ctx
        if cfg.ca_file:
            return ssl.create_default_context(cafile=cfg.ca_file)
        return cfg.verify_tls

    def _auth(self) -> httpx.Auth | None:
        cfg = self.config
        kind = cfg.auth_kind
        if kind == "basic":
            return httpx.BasicAuth(cfg.username or "", cfg.password or "")
        if kind == "digest":
            return httpx.DigestAuth(cfg.username or "", cfg.password or "")
        return None

    def _check_fingerprint(self, der: bytes | None) -> None:
        got = hashlib.sha256(der or b"").hexdigest()
        if der is None or got != self.config.pinned_sha256:
            raise DeviceError(self.device_id, f"reader certificate sha256 {got} is not the pinned one: replaced "
                              "reader or man in the middle; update pinned_sha256 only if the reader was replaced")

    async def _pin_precheck(self, ssl_ctx: ssl.SSLContext) -> None:
        """Handshake and compare the certificate before any request (so no credential goes to an impostor)."""
        parts = urlsplit(self.config.base_url)
        try:
            _r, w = await asyncio.wait_for(
                asyncio.open_connection(parts.hostname, parts.port or 443, ssl=ssl_ctx), 10)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise DeviceError(self.device_id, f"{self.config.base_url}: TLS: {exc or type(exc).__name__}") from exc
        try:
            obj = w.get_extra_info("ssl_object")
            self._check_fingerprint(obj.getpeercert(binary_form=True) if obj is not None else None)
        finally:
            w.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(w.wait_closed(), 1)

    def _pin_response(self, resp: httpx.Response) -> None:
        stream = resp.extensions.get("network_stream")
        obj = stream.get_extra_info("ssl_object") if stream is not None else None
        self._check_fingerprint(obj.getpeercert(binary_form=True) if obj is not None else None)

    # ---- REST --------------------------------------------------------------------------------------------

    def _http_fault(self, resp: httpx.Response, what: str) -> DeviceError:
        if resp.status_code in (401, 403):
            return DeviceError(self.device_id, f"{what}: HTTP {resp.status_code}: check username/password and "
                               f"auth ({self.config.auth_kind}){_message(resp)}")
        return DeviceError(self.device_id, f"{what}: HTTP {resp.status_code}{_message(resp)}; is the reader's "
                           "RFID interface set to the Impinj IoT device interface?")

    async def _status(self, client: httpx.AsyncClient) -> tuple[str, str | None]:
        """(status, active preset id) from GET /api/v1/status; its `time` is a live clock sample."""
        resp = await client.get(STATUS_PATH)
        if self.config.pinned_sha256:
            self._pin_response(resp)
        if resp.status_code != 200:
            raise self._http_fault(resp, f"GET {STATUS_PATH}")
        try:
            body = resp.json()
        except ValueError:
            raise DeviceError(self.device_id, f"GET {STATUS_PATH}: not JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("status"), str):
            raise DeviceError(self.device_id, f"GET {STATUS_PATH}: no status field")
        with contextlib.suppress(FrameError):
            t = _ts(body.get("time"), "time")
            if t is not None:
                self.clock.observe(t, to_us(self.ctx.clock.now()), live=True)
        active = body.get("activePreset")
        preset = active.get("id") if isinstance(active, dict) and isinstance(active.get("id"), str) else None
        return body["status"].lower(), preset

    async def _start_preset(self, client: httpx.AsyncClient, status: str) -> tuple[str, str | None]:
        pid = self.config.preset_id or "edge-gateway"
        if status != "idle":
            resp = await client.post(STOP_PATH)
            if resp.status_code >= 300:
                raise self._http_fault(resp, f"POST {STOP_PATH}")
        path = PRESET_PATH.format(id=pid)
        resp = await client.put(path, json=preset_body(self.config))
        if resp.status_code >= 300:
            raise DeviceError(self.device_id, f"the reader refused preset {pid!r} (PUT {path}): HTTP "
                              f"{resp.status_code}{_message(resp)}")
        path = START_PATH.format(id=pid)
        resp = await client.post(path)
        if resp.status_code >= 300:
            raise DeviceError(self.device_id, f"the reader refused to start preset {pid!r} (POST {path}): HTTP "
                              f"{resp.status_code}{_message(resp)}")
        self.counters["presets_started"] += 1
        deadline = asyncio.get_running_loop().time() + START_WAIT_S
        while True:
            status, active = await self._status(client)
            if status in ("running", "armed"):
                return status, active
            if asyncio.get_running_loop().time() > deadline:
                raise DeviceError(self.device_id, f"preset {pid!r} started but the reader says {status!r}")
            await asyncio.sleep(0.2)

    def _verify(self, status: str, active: str | None) -> None:
        want = self.config.preset_id
        if status not in ("running", "armed"):
            raise DeviceError(self.device_id, f"inventory is not running on the reader (status {status!r}): start "
                              f"preset {want or '(any)'!r} on the reader, or set manage_preset: true")
        if want is not None and active != want:
            raise DeviceError(self.device_id, f"the reader runs preset {active!r}, the manifest expects {want!r}")

    # ---- the stream --------------------------------------------------------------------------------------

    async def stream(self) -> AsyncIterator[Reading]:
        """Start (or verify) inventory, then yield reads and reader state until the stream breaks."""
        cfg = self.config
        base = cfg.base_url
        ssl_ctx = self._ssl()
        timeout = httpx.Timeout(10.0, read=cfg.idle_timeout_s)
        clock = self.ctx.clock
        started = False
        try:
            if cfg.pinned_sha256 and isinstance(ssl_ctx, ssl.SSLContext):
                await self._pin_precheck(ssl_ctx)
            async with httpx.AsyncClient(base_url=base, auth=self._auth(), verify=ssl_ctx, timeout=timeout) as client:
                status, active = await self._status(client)
                if cfg.manage_preset:
                    status, active = await self._start_preset(client, status)
                    started = True
                else:
                    self._verify(status, active)
                try:
                    async with client.stream("GET", STREAM_PATH, headers={"Accept": "application/x-ndjson"}) as resp:
                        if cfg.pinned_sha256:
                            self._pin_response(resp)
                        if resp.status_code != 200:
                            raise self._http_fault(resp, f"GET {STREAM_PATH}")
                        now = clock.now()
                        yield DeviceOnline(device_id=self.device_id, time=now, detail=base + STREAM_PATH)
                        inventorying = status == "running"
                        yield ReaderStatus(device_id=self.device_id, time=now, inventorying=inventorying,
                                           reason=f"reader status {status}")  # fmt: skip
                        async for line in _lines(resp):
                            now = clock.now()
                            if line is None:
                                yield self._malformed("line longer than 64 KiB", b"", now)
                                continue
                            if not line.strip():
                                # keep-alive (HTTP stream: CR-LF after 30 s without data): alive, state unchanged
                                self.counters["keepalives"] += 1
                                yield ReaderStatus(device_id=self.device_id, time=now, inventorying=inventorying,
                                                   reason="keep-alive")  # fmt: skip
                                continue
                            readings, fault = self._on_line(line, now)
                            for reading in readings:
                                if isinstance(reading, ReaderStatus):
                                    inventorying = reading.inventorying
                                yield reading
                            if fault is not None:
                                raise fault
                except (GeneratorExit, asyncio.CancelledError):
                    if started:
                        with contextlib.suppress(Exception):
                            await asyncio.wait_for(client.post(STOP_PATH), 1.0)
                    raise
        except httpx.HTTPError as exc:
            raise DeviceError(self.device_id, f"{base}: {type(exc).__name__}: {exc}") from exc
        raise DeviceError(self.device_id, f"{base}{STREAM_PATH}: the reader ended the event stream")

    def _malformed(self, reason: str, raw: bytes, now: datetime) -> Malformed:
        self.counters["malformed"] += 1
        return Malformed(device_id=self.device_id, time=now, reason=reason, raw=raw[:256])

    def _on_line(self, line: bytes, now: datetime) -> tuple[list[Reading], DeviceError | None]:
        """Readings of one event line, and a fault to raise after them (inventory no longer running)."""
        try:
            ev = parse_event(line)
        except FrameError as exc:
            return [self._malformed(exc.reason, line, now)], None
        dev = self.device_id
        recv_us = to_us(now)
        if ev.reader_us is not None:
            self.clock.observe(ev.reader_us, recv_us, live=True)  # the HTTP stream carries no stored events
        out: list[Reading] = []
        fault: DeviceError | None = None
        warn = self.clock.absurd()
        if warn is not None:
            out.append(self._malformed(warn, line, now))
        if ev.kind == "tag":
            self.counters["tags"] += 1
            seen = self.clock.date(ev.seen_us, recv_us)
            if recv_us - seen > self.config.smoothing.lost_timeout_s * 1e6:
                self.counters["replayed"] += 1
            out.append(TagRead(device_id=dev, time=now, epc=ev.epc, antenna=ev.antenna,
                               read_point=self.config.read_point(ev.antenna), rssi_dbm=ev.rssi, seen_us=seen))
        elif ev.kind == "status":
            # InventoryStatusEvent: running = reading tags; idle = stopped; armed = waiting for a start trigger
            self.counters["status_events"] += 1
            out.append(ReaderStatus(device_id=dev, time=now, inventorying=ev.status == "running",
                                    reason=f"inventoryStatus {ev.status}"))
            if ev.status not in ("running", "armed"):
                fault = DeviceError(dev, f"inventory stopped on the reader (inventoryStatus {ev.status!r})"
                                    + ("; restarting it" if self.config.manage_preset else ""))
        elif ev.kind == "terminated":
            # InventoryTerminatedEvent: the preset ended (stop trigger, error): no reads until started again
            self.counters["status_events"] += 1
            out.append(ReaderStatus(device_id=dev, time=now, inventorying=False,
                                    reason=f"inventory terminated {ev.detail}".strip()))
            fault = DeviceError(dev, f"inventory terminated on the reader {ev.detail}".strip())
        elif ev.kind in ("antenna_up", "antenna_down"):
            self.counters["antenna_events"] += 1
            out.append(AntennaStatus(device_id=dev, time=now, antenna=ev.antenna, connected=ev.kind == "antenna_up",
                                     read_point=self.config.read_point(ev.antenna),
                                     seen_us=None if ev.reader_us is None else self.clock.date(ev.reader_us, recv_us)))
        elif ev.kind == "overflow":
            # OverflowEvent: the reader dropped events (its buffer was full): reads were lost
            self.counters["overflows"] += 1
            out.append(self._malformed(f"reader overflow: events dropped {ev.detail}".strip(), line, now))
        elif ev.kind == "diagnostic":
            self.counters["diagnostics"] += 1
            self.last_diagnostic = ev.detail
        else:
            self.counters["ignored"] += 1
        return out, fault


async def _lines(resp: httpx.Response) -> AsyncIterator[bytes | None]:
    """The response body split at LF (a CR before it dropped); None for a line over MAX_LINE (skipped)."""
    buf = bytearray()
    skipping = False
    async for chunk in resp.aiter_bytes():
        buf += chunk
        while True:
            i = buf.find(b"\n")
            if i < 0:
                if len(buf) > MAX_LINE:
                    if not skipping:
                        yield None
                    skipping = True
                    buf.clear()
                break
            line = bytes(buf[:i]).rstrip(b"\r")
            del buf[: i + 1]
            if skipping:
                skipping = False
                continue
            if len(line) > MAX_LINE:
                yield None
                continue
            yield line
