"""Impinj IoT device interface driver (`type: impinj_iot`, R700/R720): `GET {base_url}/api/v1/data/stream`.

The reader streams newline-delimited JSON events (Impinj IoT device interface, "Streaming data");
`tagInventory` events carry `tagInventoryEvent` with `epc` (base64) and/or `epcHex`, `antennaPort`,
`peakRssiCdbm` (centi-dBm) and `lastSeenTime` (RFC 3339). Blank lines are keep-alives; other event types
are counted and ignored. Any transport error, HTTP error or end of stream raises `DeviceError`, and the
supervisor reconnects with backoff. The inventory preset itself is started on the reader (its web UI or
`POST /api/v1/profiles/inventory/presets/.../start`); this driver only listens.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from drivers.base import DeviceOnline, DriverContext, Malformed, Reading
from drivers.rfid.config import ImpinjIotConfig
from drivers.rfid.reads import TagRead, parse_timestamp, to_us
from edge.errors import DeviceError, FrameError

STREAM_PATH = "/api/v1/data/stream"
MAX_LINE = 64 * 1024

TagFields = tuple[str, int, float | None, int | None]
"""(EPC hex upper, antenna port, peak RSSI dBm, reader time µs)."""


def parse_event(line: bytes | str) -> TagFields | None:
    """One NDJSON line -> tag fields, None for a non-tag event; FrameError when it cannot be read."""
    if len(line) > MAX_LINE:
        raise FrameError("line longer than 64 KiB")
    try:
        obj: Any = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise FrameError("not JSON") from None
    if not isinstance(obj, dict):
        raise FrameError("event is not a JSON object")
    if obj.get("eventType") != "tagInventory":
        return None
    ev = obj.get("tagInventoryEvent")
    if not isinstance(ev, dict):
        raise FrameError("tagInventory without tagInventoryEvent")
    epc = ev.get("epcHex")
    if isinstance(epc, str) and epc and len(epc) <= 128:
        try:
            epc = bytes.fromhex(epc).hex().upper()
        except ValueError:
            raise FrameError("epcHex is not hex") from None
    elif isinstance(ev.get("epc"), str) and ev["epc"]:
        try:
            epc = base64.b64decode(ev["epc"], validate=True).hex().upper()
        except (binascii.Error, ValueError):
            raise FrameError("epc is not base64") from None
    else:
        raise FrameError("tag event without epc/epcHex")
    if not epc:
        raise FrameError("empty EPC")
    port = ev.get("antennaPort", 0)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port < 65536:
        raise FrameError("antennaPort is not a port number")
    cdbm = ev.get("peakRssiCdbm")
    rssi: float | None = None
    if isinstance(cdbm, int | float) and not isinstance(cdbm, bool):
        if not -20000 <= cdbm <= 5000:
            raise FrameError("peakRssiCdbm out of range")
        rssi = cdbm / 100.0
    seen: int | None = None
    ts = ev.get("lastSeenTime") or obj.get("timestamp")
    if isinstance(ts, str):
        try:
            seen = to_us(parse_timestamp(ts))
        except (ValueError, OverflowError):
            raise FrameError("lastSeenTime is not RFC 3339") from None
    return epc, port, rssi, seen


class ImpinjIotDriver:
    """One Impinj reader's event stream."""

    def __init__(self, config: ImpinjIotConfig, ctx: DriverContext) -> None:
        self.config = config
        self.ctx = ctx
        self.device_id = config.id
        self.counters = {"tags": 0, "keepalives": 0, "ignored": 0, "malformed": 0}

    async def stream(self) -> AsyncIterator[Reading]:
        """Open the stream and yield tag reads until it breaks."""
        cfg = self.config
        url = cfg.base_url + STREAM_PATH
        auth = httpx.BasicAuth(cfg.username, cfg.password or "") if cfg.username else None
        timeout = httpx.Timeout(10.0, read=cfg.idle_timeout_s)
        clock = self.ctx.clock
        try:
            async with (
                httpx.AsyncClient(auth=auth, verify=cfg.verify_tls, timeout=timeout) as client,
                client.stream("GET", url, headers={"Accept": "application/x-ndjson"}) as resp,
            ):
                if resp.status_code in (401, 403):
                    raise DeviceError(self.device_id, f"{url}: HTTP {resp.status_code}: check username/password")
                if resp.status_code != 200:
                    raise DeviceError(self.device_id, f"{url}: HTTP {resp.status_code}; is the IoT interface on?")
                yield DeviceOnline(device_id=self.device_id, time=clock.now(), detail=url)
                async for line in resp.aiter_lines():
                    if not line.strip():
                        self.counters["keepalives"] += 1
                        continue
                    now = clock.now()
                    try:
                        fields = parse_event(line)
                    except FrameError as exc:
                        self.counters["malformed"] += 1
                        yield Malformed(device_id=self.device_id, time=now, reason=exc.reason,
                                        raw=line[:256].encode())  # fmt: skip
                        continue
                    if fields is None:
                        self.counters["ignored"] += 1
                        continue
                    epc, port, rssi, seen = fields
                    self.counters["tags"] += 1
                    yield TagRead(device_id=self.device_id, time=now, epc=epc, antenna=port,
                                  read_point=cfg.read_point(port), rssi_dbm=rssi, seen_us=seen)  # fmt: skip
        except httpx.HTTPError as exc:
            raise DeviceError(self.device_id, f"{url}: {type(exc).__name__}: {exc}") from exc
        raise DeviceError(self.device_id, f"{url}: the reader ended the event stream")
