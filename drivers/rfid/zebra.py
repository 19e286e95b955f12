"""Zebra IoT Connector driver (`type: zebra_iotc`, FX7500/FX9600): tag data events over MQTT (edge.mqtt_sub).

The reader's IoT Connector publishes JSON tag events to the store-local broker (zebradevs.github.io/
rfid-ziotc-docs, "data interface"): `{"type":"SIMPLE","timestamp":"2026-01-05T08:00:00.123+0000",
"data":{"idHex":"30..","antenna":1,"peakRssi":-70,"reads":3,"eventNum":12}}`. One MQTT message may hold
several JSON objects back to back with no delimiter (batching), and timestamps use `+0000` offsets.
Objects of other types are counted and ignored; a broker failure raises `DeviceError`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from drivers.base import DeviceOnline, DriverContext, Malformed, Reading
from drivers.rfid.config import ZebraIotcConfig
from drivers.rfid.reads import TagRead, parse_timestamp, to_us
from edge.errors import DeviceError, FrameError
from edge.mqtt_sub import MqttSubError, SubOptions, Subscriber

_DECODER = json.JSONDecoder()
MAX_PAYLOAD = 1024 * 1024
MAX_PACKET = MAX_PAYLOAD + 2 + 65535  # the PUBLISH around the largest payload: topic length, topic

ZebraTag = tuple[str, int, float | None, int | None, int]
"""(EPC hex upper, antenna, peak RSSI dBm, reader time µs, reads)."""


def split_objects(text: str) -> tuple[list[Any], str | None]:
    """All JSON values concatenated in `text` (whitespace between them allowed), and an error if any."""
    out: list[Any] = []
    pos, n = 0, len(text)
    while True:
        while pos < n and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= n:
            return out, None
        try:
            obj, pos = _DECODER.raw_decode(text, pos)
        except (json.JSONDecodeError, RecursionError):
            return out, f"bad JSON at offset {pos}"
        out.append(obj)


def parse_tag(obj: Any) -> ZebraTag | None:
    """One IoT Connector event -> tag fields; None for non-tag events; FrameError when unreadable."""
    if not isinstance(obj, dict):
        raise FrameError("event is not a JSON object")
    if obj.get("type") != "SIMPLE":
        return None
    data = obj.get("data")
    if not isinstance(data, dict):
        raise FrameError("SIMPLE event without data")
    id_hex = data.get("idHex")
    if not isinstance(id_hex, str) or not id_hex or len(id_hex) > 128:
        raise FrameError("tag event without idHex")
    try:
        epc = bytes.fromhex(id_hex).hex().upper()
    except ValueError:
        raise FrameError("idHex is not hex") from None
    ant = data.get("antenna", 0)
    if not isinstance(ant, int) or isinstance(ant, bool) or not 0 <= ant < 65536:
        raise FrameError("antenna is not a port number")
    rssi_raw = data.get("peakRssi")
    rssi: float | None = None
    if isinstance(rssi_raw, int | float) and not isinstance(rssi_raw, bool):
        if not -200 <= rssi_raw <= 50:
            raise FrameError("peakRssi out of range")
        rssi = float(rssi_raw)
    reads = data.get("reads", 1)
    if not isinstance(reads, int) or isinstance(reads, bool) or reads < 0:
        reads = 1
    seen: int | None = None
    ts = obj.get("timestamp")
    if isinstance(ts, str):
        try:
            seen = to_us(parse_timestamp(ts))
        except (ValueError, OverflowError):
            raise FrameError("timestamp is not ISO 8601") from None
    return epc, ant, rssi, seen, max(1, min(reads, 65535))


class ZebraIotcDriver:
    """One Zebra reader's tag data topic on the local broker."""

    def __init__(self, config: ZebraIotcConfig, ctx: DriverContext) -> None:
        self.config = config
        self.ctx = ctx
        self.device_id = config.id
        self.counters = {"messages": 0, "tags": 0, "ignored": 0, "malformed": 0}

    async def stream(self) -> AsyncIterator[Reading]:
        """Subscribe and yield tag reads; raise when the broker connection is lost."""
        clock = self.ctx.clock
        cfg = self.config
        # a payload over MAX_PAYLOAD is dropped as it arrives (never buffered) and reported as malformed
        opts = SubOptions.from_url(self.ctx.broker_url(self.device_id, cfg.broker_url),
                                   client_id=f"edge-{self.device_id}", topic=cfg.topic, max_packet=MAX_PACKET)
        try:
            async with Subscriber(opts) as sub:
                yield DeviceOnline(device_id=self.device_id, time=clock.now(),
                                   detail=f"{opts.host}:{opts.port} {cfg.topic}")
                async for batch in sub.batches():
                    now = clock.now()  # one socket read: received at the same moment
                    for _topic, raw in batch:
                        self.counters["messages"] += 1
                        if raw is None:
                            yield self._malformed("payload larger than 1 MiB", b"", now)
                            continue
                        for reading in self._decode(raw, now):
                            yield reading
        except MqttSubError as exc:
            raise DeviceError(self.device_id, f"local broker {opts.host}:{opts.port}: {exc}") from exc

    def _decode(self, raw: bytes, now: datetime) -> list[Reading]:
        if len(raw) > MAX_PAYLOAD:
            return [self._malformed("payload larger than 1 MiB", raw, now)]
        objs, error = split_objects(raw.decode("utf-8", "replace"))
        out: list[Reading] = []
        for obj in objs:
            try:
                tag = parse_tag(obj)
            except FrameError as exc:
                out.append(self._malformed(exc.reason, raw, now))
                continue
            if tag is None:
                self.counters["ignored"] += 1
                continue
            epc, ant, rssi, seen, reads = tag
            self.counters["tags"] += 1
            out.append(TagRead(device_id=self.device_id, time=now, epc=epc, antenna=ant,
                               read_point=self.config.read_point(ant), rssi_dbm=rssi, seen_us=seen, count=reads))
        if error is not None:
            out.append(self._malformed(error, raw, now))
        return out

    def _malformed(self, reason: str, raw: bytes, now: datetime) -> Malformed:
        self.counters["malformed"] += 1
        return Malformed(device_id=self.device_id, time=now, reason=reason, raw=raw[:256])
