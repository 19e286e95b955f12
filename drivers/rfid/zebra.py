"""Zebra IoT Connector driver (`type: zebra_iotc`, FX7500/FX9600/ATR7000) over the store-local MQTT broker.

Reference: Zebra IoT Connector documentation, zebradevs.github.io/rfid-ziotc-docs ("What is IoT Connector?"
-> Interfaces: Management, Management Events, Control, Data; "Controlling Operating Mode"; "Configuration
of Management Events"; "TagStorage Settings" (tagMetaData); "RAW MQTT Payload Schemas").

One MQTT connection (edge.mqtt_sub) subscribes to the data topic, and when configured the management
events topic and the control response topic:
- Data ("Data Interface"): each message is one event object, or with batching a JSON array of them:
  `{"type":"INVENTORY","timestamp":"2026-01-05T08:00:00.123+0000","data":{"idHex":"30..","antenna":1,
  "peakRssi":-70,"reads":3,"eventNum":12}}`. `type` is the operating mode (SIMPLE, INVENTORY, PORTAL,
  CONVEYOR, CUSTOM): all carry tags. `antenna`, `peakRssi` and `reads` come only when the mode's
  `tagMetaData` asks for them: without `antenna` the read goes to the reader's single read point (all
  antennas mapped to one zone) or its `zone`, else it is counted (`no_antenna`) and has no read point.
  A read is dated by its `timestamp` corrected by the reader's clock offset (readerclock.py): after a
  broker outage the reader replays its retained events (up to 150,000, at 500/s), which must not look
  fresh; reads older than the lost-timeout are counted as `replayed`.
- Control ("Control Interface", raw MQTT commands): `{"command":"set_mode","command_id":"..","payload":
  {...}}` and `start`/`stop`/`get_mode` on `control_topic`, each answered on `response_topic` with the
  same command_id and `"response":"success"|"failure"`. With `manage_mode` the driver sends stop, set_mode
  (the manifest's mode, antennas, tagMetaData ANTENNA/RSSI/SEEN_COUNT, INVENTORY interval or SIMPLE
  reportFilter: SIMPLE reports each unique tag once unless a reportFilter duration makes it report a
  present tag again) and start; without, get_mode must show the manifest's mode (and for SIMPLE a
  reportFilter shorter than the lost-timeout). A refusal, a missing answer or another mode: DeviceError.
  When the gateway closes the stream, a mode it started is stopped (`stop`, not awaited).
- Management events ("Configuration of Management Events"): heartbeats carry the radio activity
  (active/inactive -> `ReaderStatus`, a liveness beat), per-antenna connection status (-> `AntennaStatus`
  on change) and the reader gateway's message counts (dropped / retained data messages).
Objects of other types are counted and ignored; a broker failure raises `DeviceError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import orjson

from drivers.rfid.config import ZebraIotcConfig
from drivers.rfid.readerclock import ReaderClock
from drivers.rfid.reads import AntennaStatus, ReaderStatus, TagRead, parse_timestamp, to_us
from edge.driver import DeviceOnline, DriverContext, Malformed, Reading
from edge.errors import DeviceError, FrameError
from edge.mqtt_sub import MqttSubError, SubOptions, Subscriber

MAX_PAYLOAD = 1024 * 1024
MAX_PACKET = MAX_PAYLOAD + 2 + 65535  # the PUBLISH around the largest payload: topic length, topic
MAX_BATCH = 10_000  # events in one array
TAG_TYPES = frozenset({"SIMPLE", "INVENTORY", "PORTAL", "CONVEYOR", "CUSTOM"})  # data `type` = operating mode
METADATA = ["ANTENNA", "RSSI", "SEEN_COUNT"]  # TagStorage: tagMetaData the driver asks for

ZebraTag = tuple[str, int | None, float | None, int | None, int]
"""(EPC hex upper, antenna or None when not reported, peak RSSI dBm, reader time µs, reads)."""

_ids = itertools.count(1)
Pending = tuple[str, str, bool, float] | None
"""The control command awaiting its response: (command_id, command, must succeed, loop-time deadline)."""


def parse_payload(raw: bytes) -> list[Any]:
    """One MQTT message -> its events: an object, or (batching) an array of objects; FrameError if not JSON."""
    try:
        value: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise FrameError("not JSON") from None
    if isinstance(value, list):
        if len(value) > MAX_BATCH:
            raise FrameError(f"batch of more than {MAX_BATCH} events")
        return value
    return [value]


def _norm(d: dict[str, Any]) -> dict[str, Any]:
    """Keys lower-cased without '_' (the documentation spells metadata as RSSI/SEEN_COUNT, the JSON peakRssi)."""
    return {k.replace("_", "").lower(): v for k, v in d.items() if isinstance(k, str)}


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def parse_tag(obj: Any) -> ZebraTag | None:
    """One data event -> tag fields; None for an event that is no tag read; FrameError when unreadable."""
    if not isinstance(obj, dict):
        raise FrameError("event is not a JSON object")
    if obj.get("type") not in TAG_TYPES:
        return None
    data = obj.get("data")
    if not isinstance(data, dict):
        raise FrameError(f"{obj['type']} event without data")
    d = _norm(data)
    id_hex = d.get("idhex")
    if not isinstance(id_hex, str) or not id_hex or len(id_hex) > 128:
        raise FrameError("tag event without idHex")
    try:
        epc = bytes.fromhex(id_hex).hex().upper()
    except ValueError:
        raise FrameError("idHex is not hex") from None
    ant: int | None = None
    if "antenna" in d:
        ant = _int(d["antenna"])
        if ant is None or not 0 <= ant < 65536:
            raise FrameError("antenna is not a port number")
    rssi_raw = d.get("peakrssi", d.get("rssi"))
    rssi: float | None = None
    if isinstance(rssi_raw, int | float) and not isinstance(rssi_raw, bool):
        if not -200 <= rssi_raw <= 50:
            raise FrameError("peakRssi out of range")
        rssi = float(rssi_raw)
    reads = _int(d.get("reads", d.get("seencount", 1)))
    seen: int | None = None
    ts = obj.get("timestamp")
    if isinstance(ts, str):
        try:
            seen = to_us(parse_timestamp(ts))
        except (ValueError, OverflowError):
            raise FrameError("timestamp is not ISO 8601") from None
    return epc, ant, rssi, seen, max(1, min(reads if reads is not None else 1, 65535))


def _find(d: Any, key: str, depth: int = 4) -> Any:
    """The value of normalised `key` anywhere in nested dicts (heartbeat sections), else None."""
    if depth < 0 or not isinstance(d, dict):
        return None
    n = _norm(d)
    if key in n:
        return n[key]
    for v in n.values():
        found = _find(v, key, depth - 1)
        if found is not None:
            return found
    return None


def parse_heartbeat(data: Any) -> tuple[bool | None, dict[int, bool], int | None, int | None]:
    """(radio active, {antenna: connected}, dropped data messages, retained data messages) of a heartbeat."""
    act = _find(data, "radioactivity")
    active = {"active": True, "inactive": False}.get(act.lower()) if isinstance(act, str) else None
    ants: dict[int, bool] = {}
    raw = _find(data, "antennas")
    if isinstance(raw, dict):
        for k, v in raw.items():
            with contextlib.suppress(ValueError):
                port = int(str(k))
                if 0 < port < 65536 and isinstance(v, str):
                    ants[port] = v.lower() == "connected"
    dropped = _find(data, "numdatamessagesdropped")
    retained = _find(data, "numdatamessagesretained")
    return active, ants, _int(dropped), _int(retained)


def mode_payload(cfg: ZebraIotcConfig) -> dict[str, Any]:
    """The set_mode payload for the manifest's mode ("Controlling Operating Mode")."""
    p: dict[str, Any] = {"type": cfg.mode, "antennas": sorted(cfg.antennas) or [1], "tagMetaData": METADATA}
    if cfg.mode == "INVENTORY":
        p["interval"] = {"unit": "seconds", "value": cfg.report_interval_s}
    else:  # SIMPLE & co. report unique tags once unless reportFilter.duration re-reports present ones
        p["reportFilter"] = {"duration": cfg.report_interval_s, "type": "PER_ANTENNA"}
    return p


class ZebraIotcDriver:
    """One Zebra reader: data, management events and control topics on the local broker."""

    def __init__(self, config: ZebraIotcConfig, ctx: DriverContext) -> None:
        self.config = config
        self.ctx = ctx
        self.device_id = config.id
        self.clock = ReaderClock()
        self.counters = {"messages": 0, "tags": 0, "ignored": 0, "malformed": 0, "replayed": 0, "no_antenna": 0,
                         "heartbeats": 0, "mgmt_events": 0, "responses": 0, "dropped_by_reader": 0,
                         "retained_by_reader": 0}  # fmt: skip
        self.antennas: dict[int, bool] = {}  # last known connection state per port (heartbeats)
        self._fault: DeviceError | None = None  # raised once the readings before it are delivered
        zones = set(config.antennas.values())
        self._no_antenna_point = next(iter(zones)) if len(zones) == 1 else config.zone

    def _topics(self) -> tuple[str, ...]:
        cfg = self.config
        return tuple(t for t in (cfg.events_topic, cfg.response_topic) if t is not None)

    def _steps(self) -> list[tuple[str, dict[str, Any], bool]]:
        """Control commands at connect: (command, payload, must succeed)."""
        cfg = self.config
        if cfg.control_topic is None:
            return []
        if cfg.manage_mode:
            return [("stop", {}, False), ("set_mode", mode_payload(cfg), True), ("start", {}, True)]
        return [("get_mode", {}, True)]

    def _check_mode(self, payload: Any) -> None:
        cfg = self.config
        mode = payload.get("type") if isinstance(payload, dict) else None
        if mode != cfg.mode:
            raise DeviceError(self.device_id, f"the reader runs operating mode {mode!r}, the manifest expects "
                              f"{cfg.mode!r}: set it on the reader or set manage_mode: true")
        if mode != "INVENTORY":
            rf = payload.get("reportFilter")
            dur = rf.get("duration") if isinstance(rf, dict) else None
            if not isinstance(dur, int | float) or not 0 <= dur < cfg.smoothing.lost_timeout_s:
                raise DeviceError(self.device_id, f"{mode} mode without a reportFilter duration under "
                                  f"{cfg.smoothing.lost_timeout_s:g} s reports a present tag only once, so it "
                                  "would expire: set reportFilter.duration on the reader")

    async def stream(self) -> AsyncIterator[Reading]:
        """Subscribe, start or verify the operating mode, and yield reads and reader state until a failure."""
        clock = self.ctx.clock
        cfg = self.config
        opts = SubOptions.from_url(self.ctx.broker_url(self.device_id, cfg.broker_url),
                                   client_id=f"edge-{self.device_id}", topic=cfg.topic, max_packet=MAX_PACKET)
        opts = dataclasses.replace(opts, extra_topics=self._topics())
        loop = asyncio.get_running_loop()
        try:
            async with Subscriber(opts) as sub:
                queue: asyncio.Queue[list[tuple[str, bytes | None]] | BaseException] = asyncio.Queue(maxsize=64)

                async def pump() -> None:
                    try:
                        async for batch in sub.batches():
                            await queue.put(batch)
                    except Exception as exc:  # handed to the consumer, which raises it
                        await queue.put(exc)

                task = asyncio.create_task(pump())
                try:
                    yield DeviceOnline(device_id=self.device_id, time=clock.now(),
                                       detail=f"{opts.host}:{opts.port} {cfg.topic}")
                    steps = self._steps()
                    pending: Pending = None
                    last_hb = loop.time()

                    def send_next() -> Pending:
                        if not steps:
                            return None
                        command, payload, required = steps.pop(0)
                        cid = f"edge-{self.device_id}-{next(_ids)}"
                        assert cfg.control_topic is not None
                        sub.publish(cfg.control_topic, orjson.dumps(
                            {"command": command, "command_id": cid, "payload": payload}))
                        return cid, command, required, loop.time() + cfg.reply_timeout_s

                    pending = send_next()
                    while True:
                        waits = [cfg.heartbeat_timeout_s - (loop.time() - last_hb)] if cfg.heartbeat_timeout_s else []
                        if pending is not None:
                            waits.append(pending[3] - loop.time())
                        try:
                            item = await asyncio.wait_for(queue.get(), max(0.0, min(waits)) if waits else None)
                        except TimeoutError:
                            if pending is not None and loop.time() >= pending[3]:
                                raise DeviceError(self.device_id, f"no answer to {pending[1]} on "
                                                  f"{cfg.response_topic} within {cfg.reply_timeout_s:g} s: is the "
                                                  "reader's control interface on this broker?") from None
                            if cfg.heartbeat_timeout_s and loop.time() - last_hb >= cfg.heartbeat_timeout_s:
                                raise DeviceError(self.device_id, f"no heartbeat on {cfg.events_topic} for "
                                                  f"{cfg.heartbeat_timeout_s:g} s") from None
                            continue
                        if isinstance(item, BaseException):
                            raise item
                        now = clock.now()
                        out: list[Reading] = []
                        for topic, raw in item:
                            self.counters["messages"] += 1
                            if raw is None:
                                out.append(self._malformed("payload larger than 1 MiB", b"", now))
                            elif topic == cfg.response_topic and topic != cfg.topic:
                                pending = self._on_response(raw, pending, now, out, send_next)
                            elif topic == cfg.events_topic and topic != cfg.topic:
                                if self._on_mgmt(raw, now, out, starting=pending is not None):
                                    last_hb = loop.time()
                            else:
                                self._decode(raw, now, out)
                        for reading in out:
                            yield reading
                        if self._fault is not None:
                            fault, self._fault = self._fault, None
                            raise fault
                except (GeneratorExit, asyncio.CancelledError):
                    if cfg.manage_mode and cfg.control_topic is not None:  # the gateway leaves: stop its mode
                        with contextlib.suppress(MqttSubError, OSError):
                            sub.publish(cfg.control_topic, orjson.dumps(
                                {"command": "stop", "command_id": f"edge-{self.device_id}-{next(_ids)}",
                                 "payload": {}}))
                    raise
                finally:
                    # Python 3.11's asyncio.wait_for (inside batches()) can drop a cancel that meets a completed
                    # read; the pump would then block on the full queue forever: cancel until it is done
                    while not task.done():
                        task.cancel()
                        await asyncio.wait({task}, timeout=0.1)
        except MqttSubError as exc:
            raise DeviceError(self.device_id, f"local broker {opts.host}:{opts.port}: {exc}") from exc

    def _on_response(self, raw: bytes, pending: Pending, now: datetime,
                     out: list[Reading], send_next: Callable[[], Pending]) -> Pending:  # fmt: skip
        self.counters["responses"] += 1
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            out.append(self._malformed("control response is not JSON", raw, now))
            return pending
        if pending is None or not isinstance(obj, dict) or obj.get("command_id") != pending[0]:
            return pending  # someone else's command on a shared response topic
        _cid, command, required, _ = pending
        ok = str(obj.get("response", "")).lower() == "success"
        payload = obj.get("payload")
        if not ok and required:
            desc = payload.get("description") if isinstance(payload, dict) else None
            out.append(ReaderStatus(device_id=self.device_id, time=now, inventorying=False,
                                    reason=f"{command} refused"))
            self._fault = DeviceError(self.device_id, f"the reader refused {command}"
                                      + (f": {str(desc)[:200]}" if desc else ""))
            return None
        if command == "get_mode":
            try:
                self._check_mode(payload)
            except DeviceError as exc:
                self._fault = exc
                return None
            out.append(ReaderStatus(device_id=self.device_id, time=now, inventorying=True,
                                    reason=f"mode {self.config.mode} set on the reader"))
        if command == "start":
            out.append(ReaderStatus(device_id=self.device_id, time=now, inventorying=True,
                                    reason=f"started mode {self.config.mode}"))
        return send_next()

    def _on_mgmt(self, raw: bytes, now: datetime, out: list[Reading], *, starting: bool) -> bool:
        """A management event; True for a heartbeat."""
        self.counters["mgmt_events"] += 1
        try:
            events = parse_payload(raw)
        except FrameError as exc:
            out.append(self._malformed(f"management event: {exc.reason}", raw, now))
            return False
        beat = False
        for obj in events:
            if not isinstance(obj, dict) or str(obj.get("type", "")).lower() != "heartbeat":
                continue
            beat = True
            self.counters["heartbeats"] += 1
            ts = obj.get("timestamp")
            beat_us: int | None = None  # the heartbeat's time on the tags' scale (reader clock + offset)
            if isinstance(ts, str):
                with contextlib.suppress(ValueError, OverflowError):
                    reader_us = to_us(parse_timestamp(ts))
                    self.clock.observe(reader_us, to_us(now), live=True)  # heartbeats are live
                    beat_us = self.clock.date(reader_us, to_us(now))
            active, ants, dropped, retained = parse_heartbeat(obj.get("data"))
            for port, up in sorted(ants.items()):
                if self.antennas.get(port) != up:
                    self.antennas[port] = up
                    out.append(AntennaStatus(device_id=self.device_id, time=now, antenna=port, connected=up,
                                             read_point=self.config.read_point(port), seen_us=beat_us))
            if dropped is not None:
                if dropped > self.counters["dropped_by_reader"]:
                    out.append(self._malformed(f"reader dropped {dropped - self.counters['dropped_by_reader']} "
                                               "data messages", b"", now))
                self.counters["dropped_by_reader"] = dropped
            if retained is not None:
                self.counters["retained_by_reader"] = retained
            if active is not None:
                out.append(ReaderStatus(device_id=self.device_id, time=now, inventorying=active,
                                        reason=f"heartbeat: radio {'active' if active else 'inactive'}"))
                if not active and not starting and self.config.control_topic is not None and self._fault is None:
                    self._fault = DeviceError(self.device_id, "the reader's radio is inactive (heartbeat): "
                                              + ("restarting the mode" if self.config.manage_mode
                                                 else f"start mode {self.config.mode} on the reader"))
        return beat

    def _decode(self, raw: bytes, now: datetime, out: list[Reading]) -> None:
        if len(raw) > MAX_PAYLOAD:
            out.append(self._malformed("payload larger than 1 MiB", raw, now))
            return
        try:
            objs = parse_payload(raw)
        except FrameError as exc:
            out.append(self._malformed(exc.reason, raw, now))
            return
        recv = to_us(now)
        lost_us = self.config.smoothing.lost_timeout_s * 1e6
        for obj in objs:
            try:
                tag = parse_tag(obj)
            except FrameError as exc:
                out.append(self._malformed(exc.reason, raw, now))
                continue
            if tag is None:
                self.counters["ignored"] += 1
                continue
            epc, ant, rssi, reader_us, reads = tag
            if reader_us is not None:
                self.clock.observe(reader_us, recv, live=False)  # may be a retained replay
            seen = self.clock.date(reader_us, recv)
            if recv - seen > lost_us:
                self.counters["replayed"] += 1
            if ant is None:
                self.counters["no_antenna"] += 1
                point = self._no_antenna_point
            else:
                point = self.config.read_point(ant)
            self.counters["tags"] += 1
            out.append(TagRead(device_id=self.device_id, time=now, epc=epc, antenna=ant or 0, read_point=point,
                               rssi_dbm=rssi, seen_us=seen, count=reads))
        warn = self.clock.absurd()
        if warn is not None:
            out.append(self._malformed(warn, raw, now))

    def _malformed(self, reason: str, raw: bytes, now: datetime) -> Malformed:
        self.counters["malformed"] += 1
        return Malformed(device_id=self.device_id, time=now, reason=reason, raw=raw[:256])
