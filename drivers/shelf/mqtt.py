"""`shelf_mqtt`: networked shelves publishing JSON weight readings to the store-local MQTT broker.

The subscription runs on `edge.mqtt_sub` (a lean MQTT 3.1.1 subscriber that parses a whole socket read of
PUBLISH packets at once): a store's shelves together send thousands of readings per second. A socket read's
samples go on as one `WeightSamples` (no object, async-generator step, queue item or processor call per
sample): measured on the peers job at 8,000 readings/s, 54.7 -> 37.7 us of the daemon's CPU per reading
(/tmp tooling around bench.peers.job.System, the machine at a load of ~9). A lane's ids are checked once
and remembered, not per reading.

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
from datetime import datetime

import orjson

from drivers.shelf.config import LaneMap, ShelfMqttConfig
from drivers.shelf.reads import Sample, WeightSamples
from edge.driver import DeviceOnline, DriverContext, Malformed, Reading
from edge.errors import DeviceError, FrameError
from edge.mqtt_sub import MAX_PACKET, MqttSubError, SubOptions, Subscriber

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


def _object(payload: bytes) -> dict[str, object]:
    """The payload's JSON object; `FrameError` when it is none."""
    if len(payload) > MAX_PAYLOAD:
        raise FrameError("payload too large", payload[:64])
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise FrameError("not JSON", payload[:64]) from None
    if not isinstance(obj, dict):
        raise FrameError("not a JSON object", payload[:64])
    return obj


def _ids(obj: dict[str, object], payload: bytes) -> tuple[str, str]:
    shelf, lane = _ident(obj.get("shelf")), _ident(obj.get("lane"))
    if shelf is None or lane is None:
        raise FrameError("shelf and lane must be ids ([A-Za-z0-9_.-])", payload[:64])
    return shelf, lane


def _values(obj: dict[str, object], payload: bytes) -> tuple[float, bool]:
    """grams (NaN for a failed ADC read) and stable."""
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
    return grams, stable


def decode_payload(payload: bytes) -> ShelfMessage:
    """Decode one JSON weight reading; raise `FrameError` when it is not one."""
    obj = _object(payload)
    shelf, lane = _ids(obj, payload)
    return ShelfMessage(shelf, lane, *_values(obj, payload))


class ShelfMqttDriver:
    """Subscribes to the shelves' topic and yields the samples of known lanes, a socket read's at once
    (`WeightSamples`)."""

    def __init__(self, config: ShelfMqttConfig, ctx: DriverContext) -> None:
        self.config = config
        self.device_id = config.id
        self._ctx = ctx
        self._lanes: dict[str, LaneMap] = config.lane_by_channel()
        self._where: dict[tuple[str, str], tuple[str, str] | None] = {}
        self._max_packet = MAX_PACKET

    def _options(self) -> SubOptions:
        client_id = self.config.client_id or f"edge-{self.device_id}-{secrets.token_hex(4)}"
        url = self._ctx.broker_url(self.device_id, self.config.broker_url)
        return SubOptions.from_url(url, client_id=client_id, topic=self.config.topic, qos=self.config.qos)

    def _lane(self, obj: dict[str, object], payload: bytes) -> tuple[str, str] | None:
        """The manifest (shelf, lane) a payload names, None for an unknown lane; `FrameError` for bad ids.
        Known id pairs are remembered, so a lane's ids are checked once, not per reading."""
        try:
            return self._where[(obj.get("shelf"), obj.get("lane"))]  # type: ignore[index]
        except (KeyError, TypeError):  # TypeError: an unhashable id (a list, an object), refused below
            pass
        shelf, lane = _ids(obj, payload)
        if len(self._where) > 10_000:  # unknown ids from a misbehaving publisher must not grow it forever
            self._where.clear()
        where = self._where[(shelf, lane)] = self._lookup(shelf, lane)
        return where

    def _lookup(self, shelf_id: str, lane_id: str) -> tuple[str, str] | None:
        if not self._lanes:
            shelf = self._ctx.manifest.shelf(shelf_id)
            return (shelf_id, lane_id) if shelf and any(ln.id == lane_id for ln in shelf.lanes) else None
        m = self._lanes.get(f"{shelf_id}:{lane_id}")
        return (m.shelf, m.lane) if m else None

    def _sample(self, raw: bytes | None) -> Sample:
        """One message as a sample of a known lane; `FrameError` when it is not one."""
        if raw is None:
            raise FrameError(f"message larger than {self._max_packet} bytes, dropped")
        obj = _object(raw)
        where = self._lane(obj, raw)
        grams, stable = _values(obj, raw)
        if where is None:
            raise FrameError("unknown shelf lane", raw[:64])
        return where[0], where[1], grams, stable

    def decode(self, batch: list[tuple[str, bytes | None]], now: datetime) -> list[Reading]:
        """One socket read's messages -> readings in arrival order: the good samples together as
        `WeightSamples` (one object per run of samples, not per sample), each bad message as `Malformed`
        (counted by the supervisor) where it arrived."""
        dev = self.device_id
        out: list[Reading] = []
        samples: list[Sample] = []
        sample = self._sample
        for _topic, raw in batch:
            try:
                samples.append(sample(raw))
            except FrameError as err:
                if samples:
                    out.append(WeightSamples(device_id=dev, time=now, samples=tuple(samples)))
                    samples = []
                out.append(Malformed(device_id=dev, time=now, reason=err.reason, raw=err.raw))
        if samples:
            out.append(WeightSamples(device_id=dev, time=now, samples=tuple(samples)))
        return out

    async def stream(self) -> AsyncGenerator[Reading, None]:
        """Connect, subscribe, yield readings; raise when the broker connection is lost."""
        opts = self._options()
        self._max_packet = opts.max_packet
        clock = self._ctx.clock
        dev = self.device_id
        try:
            async with Subscriber(opts) as sub:
                yield DeviceOnline(device_id=dev, time=clock.now(), detail=f"{opts.host}:{opts.port}")
                async for batch in sub.batches():
                    # one socket read: received at the same moment
                    for reading in self.decode(batch, clock.now()):
                        yield reading
        except MqttSubError as exc:
            raise DeviceError(dev, f"local broker {opts.host}:{opts.port}: {exc}") from exc
