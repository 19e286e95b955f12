"""A simulated Zebra FX7500/FX9600/ATR7000 running the IoT Connector over MQTT (aiomqtt), reads from the World.

Written from Zebra's IoT Connector documentation (zebradevs.github.io/rfid-ziotc-docs), not from our driver;
each behaviour names its section:
- Data interface: one event object per message, or with batching a JSON array of events; `type` is the
  operating mode, `timestamp` with a `+0000` offset, `data.idHex` always, `antenna` / `peakRssi` / `reads`
  only as the mode's `tagMetaData` asks ("TagStorage Settings": ANTENNA, RSSI, SEEN_COUNT), except that
  INVENTORY always reports peak RSSI and reads per antenna ("Controlling Operating Mode": Inventory).
- Operating modes ("Controlling Operating Mode"): SIMPLE reports every unique tag once, unless a
  `reportFilter.duration` re-reports a tag seen again after that long (PER_ANTENNA or RADIO_WIDE, 0: every
  read); INVENTORY reports each unique tag per antenna once per `interval` (default 1 s); PORTAL, CONVEYOR
  and CUSTOM are run like SIMPLE here (no GPI trigger is simulated).
- Control interface (raw MQTT commands): `set_mode`, `get_mode`, `start`, `stop` with `command_id`, answered
  on the response topic with `"response":"success"|"failure"`. `refuse_start` makes start fail.
- Management events ("Configuration of Management Events"): a heartbeat every `heartbeat_s` with
  radio_control (antennas connected/disconnected, radioActivity active/inactive) and reader_gateway counts
  (data messages sent, retained, dropped).
- Retention: events made while the broker is away are kept (up to 150,000) and sent after the reconnect at
  500 events/s before newer ones, each with its own original timestamp.
Faults for tests: `disconnect_antenna()`, `stop_radio()`, `clock_offset_s`, `refuse_start`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from datetime import datetime, timedelta
from typing import Any

import aiomqtt

from edge.clock import Clock, SystemClock
from firmware_sim.mqtt_pub import broker_address, publish_forever
from firmware_sim.rfid.population import Population

RETENTION_MAX = 150_000  # retained events kept while the broker is away
REPLAY_RATE = 500.0  # retained events sent per second after the reconnect
MODES = ("SIMPLE", "INVENTORY", "PORTAL", "CONVEYOR", "CUSTOM")


def _ts(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"


class ZebraMqttSim:
    """One simulated Zebra FX reader with the IoT Connector's data, control and management event topics."""

    def __init__(self, population: Population, broker_url: str, topic: str, *, clock: Clock | None = None,
                 cycle_s: float = 1.0, batch: int = 5, mode: str = "INVENTORY", running: bool = True,
                 events_topic: str | None = None, control_topic: str | None = None,
                 response_topic: str | None = None, heartbeat_s: float = 60.0, retention: int = RETENTION_MAX,
                 replay_rate: float = REPLAY_RATE) -> None:  # fmt: skip
        self.population = population
        self.host, self.port = broker_address(broker_url)
        self.topic = topic
        self.events_topic = events_topic
        self.control_topic = control_topic
        self.response_topic = response_topic
        self.clock = clock or SystemClock()
        self.cycle_s = cycle_s  # radio round; also the INVENTORY interval until set_mode says otherwise
        self.batch = batch  # events per message: 1 = single objects, more = a JSON array (batching)
        self.mode: dict[str, Any] = {"type": mode, "interval": {"unit": "seconds", "value": cycle_s}}
        self.running = running  # started from the reader's web console (autostart) unless told otherwise
        self.heartbeat_s = heartbeat_s
        self.retention = retention
        self.replay_rate = replay_rate
        self.refuse_start: str | None = None
        self.clock_offset_s = 0.0
        self.dead_antennas: set[int] = set()
        self.published = 0  # data messages
        self.commands: list[str] = []
        self.retained_sent = 0
        self.dropped = 0
        self.online = False
        self._live: deque[dict[str, Any]] = deque()
        self._retained: deque[dict[str, Any]] = deque()
        self._event_num = 0
        self._reported: dict[tuple[str, int], float] = {}
        self._last_inventory = -1e9
        self._next_hb = 0.0
        self._client: aiomqtt.Client | None = None
        self._listener: asyncio.Task[None] | None = None
        self._radio: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    # ---- the radio ------------------------------------------------------------------------------------------

    def now(self) -> datetime:
        """The reader's clock."""
        return self.clock.now() + timedelta(seconds=self.clock_offset_s)

    def _meta(self) -> set[str]:
        md = self.mode.get("tagMetaData")
        return {str(m).upper() for m in md} if isinstance(md, list) else set()

    def _ports(self) -> set[int]:
        ants = self.mode.get("antennas")
        ports = set(ants) if isinstance(ants, list) and ants else set(self.population.antennas)
        return ports - self.dead_antennas

    def events(self) -> list[dict[str, Any]]:
        """One radio round's data events in the current mode (empty while stopped)."""
        if not self.running:
            return []
        kind = str(self.mode.get("type", "SIMPLE"))
        now_m = self.clock.monotonic()
        ts = _ts(self.now())
        meta = self._meta()
        ports = self._ports()
        out: list[dict[str, Any]] = []
        if kind == "INVENTORY":
            iv = self.mode.get("interval")
            interval = float(iv.get("value", 1)) if isinstance(iv, dict) else 1.0
            if now_m - self._last_inventory < interval - 1e-3:
                return []
            self._last_inventory = now_m
            for r in self.population.cycle():
                if r.antenna in ports:
                    # Inventory: unique tags per antenna per interval, with peak RSSI and number of reads
                    out.append(self._event(kind, ts, {"idHex": r.epc.lower(), "antenna": r.antenna,
                                                      "peakRssi": r.rssi, "reads": r.count}))  # fmt: skip
            return out
        rf = self.mode.get("reportFilter")
        duration = float(rf.get("duration", 0)) if isinstance(rf, dict) else None
        per_antenna = not isinstance(rf, dict) or rf.get("type", "PER_ANTENNA") == "PER_ANTENNA"
        for r in self.population.cycle():
            if r.antenna not in ports:
                continue
            key = (r.epc, r.antenna if per_antenna else 0)
            last = self._reported.get(key)
            if last is not None and (duration is None or now_m - last < duration - 1e-3):
                continue  # Simple: unique tags; reportFilter.duration: again only after that long
            self._reported[key] = now_m
            data: dict[str, Any] = {"idHex": r.epc.lower()}
            if "ANTENNA" in meta:
                data["antenna"] = r.antenna
            if "RSSI" in meta:
                data["peakRssi"] = r.rssi
            if "SEEN_COUNT" in meta:
                data["reads"] = r.count
            out.append(self._event(kind, ts, data))
        return out

    def _event(self, kind: str, ts: str, data: dict[str, Any]) -> dict[str, Any]:
        self._event_num += 1
        return {"type": kind, "timestamp": ts, "data": {**data, "eventNum": self._event_num, "format": "epc"}}

    def payloads(self, events: list[dict[str, Any]]) -> list[bytes]:
        """Events as MQTT payloads: single objects, or arrays of up to `batch` (batching)."""
        # Data interface: batching off -> one JSON object per message; on -> a JSON array of events
        if self.batch <= 1:
            return [json.dumps(e, separators=(",", ":")).encode() for e in events]
        return [json.dumps(events[i: i + self.batch], separators=(",", ":")).encode()
                for i in range(0, len(events), self.batch)]  # fmt: skip

    async def _radio_loop(self) -> None:
        while True:
            for ev in self.events():
                if self.online:
                    self._live.append(ev)
                else:
                    self._keep(ev)
            await self.clock.sleep(self.cycle_s)

    def _keep(self, ev: dict[str, Any]) -> None:
        """Retention: keep an event made while the broker is away (the oldest go when the store is full)."""
        if len(self._retained) >= self.retention:
            self._retained.popleft()
            self.dropped += 1
        self._retained.append(ev)

    def disconnect_antenna(self, port: int) -> None:
        """An antenna cable comes off: no reads there, the next heartbeat says disconnected."""
        self.dead_antennas.add(port)

    def stop_radio(self) -> None:
        """Inventory stops on the reader (web console): radioActivity inactive."""
        self.running = False

    def heartbeat(self) -> dict[str, Any]:
        """A heartbeat management event (radio_control and reader_gateway sections)."""
        # Configuration of Management Events: heartbeat radio_control ANTENNAS, RADIO_ACTIVITY,
        # RADIO_CONNECTION; reader_gateway data message counts (sent, retained, dropped)
        return {"type": "heartbeat", "timestamp": _ts(self.now()), "data": {
            "radio_control": {
                "antennas": {str(p): "disconnected" if p in self.dead_antennas else "connected"
                             for p in sorted(self.population.antennas)},
                "radioActivity": "active" if self.running else "inactive",
                "radioConnection": "connected",
            },
            "reader_gateway": {"numDataMessagesTxed": self.published, "numDataMessagesRetained": len(self._retained),
                               "numDataMessagesDropped": self.dropped},
        }}  # fmt: skip

    # ---- control ---------------------------------------------------------------------------------------------

    def command(self, msg: Any) -> dict[str, Any] | None:
        """Handle one control command; its response (None when it is not a command)."""
        # Control interface, raw MQTT payloads: {"command", "command_id", "payload"} ->
        # {"command", "command_id", "payload", "response": "success" | "failure"} on the response topic
        if not isinstance(msg, dict) or not isinstance(msg.get("command"), str):
            return None
        name, payload = msg["command"], msg.get("payload")
        self.commands.append(name)
        ok, body = True, {}
        if name == "set_mode":
            if not isinstance(payload, dict) or payload.get("type") not in MODES:
                ok, body = False, {"description": "unknown or missing mode type"}
            else:
                self.mode = dict(payload)
                self._reported.clear()
        elif name == "get_mode":
            body = dict(self.mode)
        elif name == "start":
            if self.refuse_start is not None:
                ok, body = False, {"description": self.refuse_start}
            else:
                self.running = True
                self._reported.clear()
                self._last_inventory = -1e9
        elif name == "stop":
            self.running = False
        else:
            ok, body = False, {"description": f"unknown command {name}"}
        return {"command": name, "command_id": msg.get("command_id"), "payload": body,
                "response": "success" if ok else "failure"}

    async def _listen(self, client: aiomqtt.Client) -> None:
        with contextlib.suppress(aiomqtt.MqttError):
            async for message in client.messages:
                try:
                    msg = json.loads(bytes(message.payload))
                except ValueError:
                    continue
                reply = self.command(msg)
                if reply is not None and self.response_topic:
                    await client.publish(self.response_topic, json.dumps(reply).encode())

    # ---- the connection ----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the radio and the connection in the background (again after `stop`)."""
        self._stopping = False
        self._radio = asyncio.create_task(self._radio_loop(), name=f"zebra-sim radio {self.topic}")
        self._task = asyncio.create_task(self._run(), name=f"zebra-sim {self.topic}")

    async def stop(self) -> None:
        """Stop the connection and the radio."""
        self._stopping = True
        for attr in ("_task", "_radio", "_listener"):
            task = getattr(self, attr)
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                setattr(self, attr, None)
        self.online = False
        self._client = None

    async def _run(self) -> None:
        async def cycle(client: aiomqtt.Client) -> None:
            if client is not self._client:  # a new connection
                self._client = client
                if self._listener is not None:
                    self._listener.cancel()
                if self.control_topic:
                    await client.subscribe(self.control_topic)
                    self._listener = asyncio.create_task(self._listen(client))
                self.online = True
                self._next_hb = 0.0
            try:
                await self._send(client)
            except aiomqtt.MqttError:
                self._went_away()
                raise
            await asyncio.sleep(0.02)  # the transport pump runs on real time (a scaled clock would spin it)

        try:
            await publish_forever(self.host, self.port, cycle, stopping=lambda: self._stopping,
                                  retry_s=0.2)  # fmt: skip
        finally:
            self._went_away()

    def _went_away(self) -> None:
        """The broker is gone: events not yet sent join the retained ones, in order."""
        self.online = False
        self._client = None
        while self._live:
            self._keep(self._live.popleft())

    async def _send(self, client: aiomqtt.Client) -> None:
        now_m = self.clock.monotonic()
        if self.events_topic and now_m >= self._next_hb:
            self._next_hb = now_m + self.heartbeat_s
            await client.publish(self.events_topic, json.dumps(self.heartbeat()).encode())
        if self._retained:
            # retention replay: stored events first, at replay_rate events/s
            n = max(1, int(self.replay_rate * 0.02))
            chunk = [self._retained.popleft() for _ in range(min(n, len(self._retained)))]
            for payload in self.payloads(chunk):
                await client.publish(self.topic, payload, qos=0)
                self.published += 1
            self.retained_sent += len(chunk)
            return
        events = list(self._live)
        self._live.clear()
        for payload in self.payloads(events):
            await client.publish(self.topic, payload, qos=0)
            self.published += 1
