"""`shelf_mqtt`: networked shelves publishing JSON weight readings to the store-local MQTT broker (aiomqtt).

Payload (docs/shelf-protocol.md): {"shelf": "shelf-a1", "lane": "l1", "grams": 1234.5, "stable": true,
"ts": "..."}; `grams` null or "NaN" is a failed ADC read. Anything else is `Malformed`. A lost broker
connection raises (the supervisor reconnects).
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiomqtt
import orjson

from drivers.base import DeviceOnline, DriverContext, Malformed, Reading
from drivers.shelf.config import LaneMap, ShelfMqttConfig
from drivers.shelf.reads import WeightSample
from edge.errors import DeviceError, FrameError

MAX_PAYLOAD = 4096


@dataclass(frozen=True, slots=True)
class ShelfMessage:
    """One decoded shelf payload."""

    shelf: str
    lane: str
    grams: float
    stable: bool


def _ident(v: object) -> str | None:
    if isinstance(v, str) and 0 < len(v) <= 64 and all(c.isalnum() or c in "_.-" for c in v):
        return v
    return None


def decode_payload(payload: bytes) -> ShelfMessage:
    """Decode one JSON weight reading; raise `FrameError` when it is not one."""
    if len(payload) > MAX_PAYLOAD:
        raise FrameError("payload too large", payload[:64])
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise FrameError("not JSON", payload[:64]) from None
    if not isinstance(obj, dict):
        raise FrameError("not a JSON object", payload[:64])
    shelf, lane = _ident(obj.get("shelf")), _ident(obj.get("lane"))
    if shelf is None or lane is None:
        raise FrameError("shelf and lane must be ids ([A-Za-z0-9_.-])", payload[:64])
    g = obj.get("grams")
    if g is None or g == "NaN":
        grams = math.nan
    elif isinstance(g, int | float) and not isinstance(g, bool):
        grams = float(g)
    else:
        raise FrameError("grams must be a number", payload[:64])
    stable = obj.get("stable", True)
    if not isinstance(stable, bool):
        raise FrameError("stable must be true or false", payload[:64])
    return ShelfMessage(shelf, lane, grams, stable)


class ShelfMqttDriver:
    """Subscribes to the shelves' topic and yields `WeightSample`s of known lanes."""

    def __init__(self, config: ShelfMqttConfig, ctx: DriverContext) -> None:
        self.config = config
        self.device_id = config.id
        self._ctx = ctx
        self._lanes: dict[str, LaneMap] = config.lane_by_channel()

    def _broker(self) -> tuple[str, int]:
        url = self.config.broker_url or self._ctx.local_broker_url
        if url is None and self._ctx.manifest.local_broker is not None:
            url = self._ctx.manifest.local_broker.url
        if not url:
            raise DeviceError(self.device_id, "no broker: set broker_url or the manifest's local_broker.url")
        parts = urlsplit(url)
        return parts.hostname or "127.0.0.1", parts.port or 1883

    def _lane(self, msg: ShelfMessage) -> tuple[str, str] | None:
        if not self._lanes:
            shelf = self._ctx.manifest.shelf(msg.shelf)
            return (msg.shelf, msg.lane) if shelf and any(ln.id == msg.lane for ln in shelf.lanes) else None
        m = self._lanes.get(f"{msg.shelf}:{msg.lane}")
        return (m.shelf, m.lane) if m else None

    async def stream(self) -> AsyncGenerator[Reading, None]:
        """Connect, subscribe, yield readings; raise when the broker connection is lost."""
        host, port = self._broker()
        clock = self._ctx.clock
        try:
            async with aiomqtt.Client(host, port, identifier=self.config.client_id) as client:
                await client.subscribe(self.config.topic, qos=0)
                yield DeviceOnline(device_id=self.device_id, time=clock.now(), detail=f"{host}:{port}")
                async for message in client.messages:
                    now = clock.now()
                    raw = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
                    try:
                        msg = decode_payload(raw)
                    except FrameError as err:
                        yield Malformed(device_id=self.device_id, time=now, reason=err.reason, raw=raw[:64])
                        continue
                    where = self._lane(msg)
                    if where is None:
                        yield Malformed(device_id=self.device_id, time=now, reason="unknown shelf lane", raw=raw[:64])
                        continue
                    yield WeightSample(
                        device_id=self.device_id,
                        time=now,
                        shelf=where[0],
                        lane=where[1],
                        grams=msg.grams,
                        stable=msg.stable,
                    )
        except aiomqtt.MqttError as exc:
            raise DeviceError(self.device_id, f"local broker {host}:{port}: {exc}") from exc
