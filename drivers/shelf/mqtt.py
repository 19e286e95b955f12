"""`shelf_mqtt`: networked shelves publishing JSON weight readings to the store-local MQTT broker.

The subscription runs on `edge.mqtt_sub` (a lean MQTT 3.1.1 subscriber that parses a whole socket read of
PUBLISH packets at once): a store's shelves together send thousands of readings per second.

Payload (docs/shelf-protocol.md): {"shelf": "shelf-a1", "lane": "l1", "grams": 1234.5, "stable": true,
"ts": "..."}; `grams` null or "NaN" is a failed ADC read. Anything else is `Malformed`. A lost broker
connection raises (the supervisor reconnects).
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import AsyncGenerator
from dataclasses import dataclass

import orjson

from drivers.base import DeviceOnline, DriverContext, Malformed, Reading
from drivers.shelf.config import LaneMap, ShelfMqttConfig
from drivers.shelf.reads import WeightSample
from edge.errors import DeviceError, FrameError
from edge.mqtt_sub import MqttSubError, SubOptions, Subscriber

MAX_PAYLOAD = 4096


@dataclass(frozen=True, slots=True)
class ShelfMessage:
    """One decoded shelf payload."""

    shelf: str
    lane: str
    grams: float
    stable: bool


_IDENT = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _ident(v: object) -> str | None:
    if isinstance(v, str) and _IDENT.fullmatch(v):
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
        self._where: dict[tuple[str, str], tuple[str, str] | None] = {}

    def _options(self) -> SubOptions:
        client_id = self.config.client_id or f"edge-{self.device_id}-{secrets.token_hex(4)}"
        url = self._ctx.broker_url(self.device_id, self.config.broker_url)
        return SubOptions.from_url(url, client_id=client_id, topic=self.config.topic, qos=self.config.qos)

    def _lane(self, msg: ShelfMessage) -> tuple[str, str] | None:
        key = (msg.shelf, msg.lane)
        try:
            return self._where[key]
        except KeyError:
            pass
        if len(self._where) > 10_000:  # unknown ids from a misbehaving publisher must not grow it forever
            self._where.clear()
        where = self._where[key] = self._lookup(msg)
        return where

    def _lookup(self, msg: ShelfMessage) -> tuple[str, str] | None:
        if not self._lanes:
            shelf = self._ctx.manifest.shelf(msg.shelf)
            return (msg.shelf, msg.lane) if shelf and any(ln.id == msg.lane for ln in shelf.lanes) else None
        m = self._lanes.get(f"{msg.shelf}:{msg.lane}")
        return (m.shelf, m.lane) if m else None

    async def stream(self) -> AsyncGenerator[Reading, None]:
        """Connect, subscribe, yield readings; raise when the broker connection is lost."""
        opts = self._options()
        clock = self._ctx.clock
        dev = self.device_id
        try:
            async with Subscriber(opts) as sub:
                yield DeviceOnline(device_id=dev, time=clock.now(), detail=f"{opts.host}:{opts.port}")
                async for batch in sub.batches():
                    now = clock.now()  # one socket read: received at the same moment
                    for _topic, raw in batch:
                        if raw is None:
                            yield Malformed(device_id=dev, time=now, reason="message larger than "
                                            f"{opts.max_packet} bytes, dropped")
                            continue
                        try:
                            msg = decode_payload(raw)
                        except FrameError as err:
                            yield Malformed(device_id=dev, time=now, reason=err.reason, raw=raw[:64])
                            continue
                        where = self._lane(msg)
                        if where is None:
                            yield Malformed(device_id=dev, time=now, reason="unknown shelf lane", raw=raw[:64])
                            continue
                        yield WeightSample(device_id=dev, time=now, shelf=where[0], lane=where[1], grams=msg.grams,
                                           stable=msg.stable)
        except MqttSubError as exc:
            raise DeviceError(dev, f"local broker {opts.host}:{opts.port}: {exc}") from exc
