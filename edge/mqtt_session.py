"""A small asyncio bridge over one paho-mqtt connection running on paho's own network thread.

paho's thread does the socket work (reads, writes, keepalive, detecting a dead broker); its callbacks
are handed to the event loop with `call_soon_threadsafe`. One `MqttSession` is one connection: when it
drops, `disconnected` completes and every pending publish fails; the uplink then opens a new session.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.tcp import no_delay, quick_ack


class MqttSessionError(ConnectionError):
    """The connection failed or dropped; `rc` is paho's reason."""

    def __init__(self, message: str, rc: object = None) -> None:
        self.rc = rc
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Incoming:
    """A message received on a subscription."""

    topic: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class SessionOptions:
    """How to connect."""

    host: str
    port: int
    client_id: str
    keepalive: int = 30
    username: str | None = None
    password: str | None = None
    will_topic: str | None = None
    will_payload: bytes = b""
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify: bool = True
    max_inflight: int = 30
    connect_timeout: float = 10.0


class MqttSession:
    """One MQTT 3.1.1 connection: `await open()`, `await publish(...)`, `messages`, `await close()`."""

    def __init__(self, opts: SessionOptions) -> None:
        self.opts = opts
        self.loop = asyncio.get_running_loop()
        self.messages: asyncio.Queue[Incoming] = asyncio.Queue(10_000)
        self.disconnected: asyncio.Future[None] = self.loop.create_future()
        self._connected: asyncio.Future[None] = self.loop.create_future()
        self._connected.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved by open()
        self._acks: dict[int, Callable[[bool], None]] = {}  # mid -> called with True at PUBACK, False at a drop
        # PUBACKs arrive on paho's thread; they are queued and drained in one loop callback per burst,
        # so a window of acks costs one wake-up of the event loop, not one each.
        self._acked_mids: collections.deque[int] = collections.deque()
        self._drain_scheduled = False
        self._drain_lock = threading.Lock()
        self._sock: Any = None
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=opts.client_id, clean_session=True,
                        protocol=mqtt.MQTTv311)
        c.max_inflight_messages_set(opts.max_inflight)
        c.max_queued_messages_set(0)
        if opts.username:
            c.username_pw_set(opts.username, opts.password)
        if opts.will_topic:
            c.will_set(opts.will_topic, opts.will_payload, qos=1, retain=True)
        if opts.tls:
            c.tls_set(ca_certs=opts.ca_file, certfile=opts.cert_file, keyfile=opts.key_file,
                      cert_reqs=ssl.CERT_REQUIRED if opts.verify else ssl.CERT_NONE)
            c.tls_insecure_set(not opts.verify)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_message = self._on_message
        self.client = c

    # paho thread -> loop
    def _on_connect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        self.loop.call_soon_threadsafe(self._set_connected, rc)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        self.loop.call_soon_threadsafe(self._set_disconnected, rc)

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, _rc: Any = None, _p: Any = None) -> None:
        quick_ack(self._sock)  # so the broker's next PUBACK is not held back by Nagle (edge/tcp.py)
        self._acked_mids.append(mid)
        with self._drain_lock:
            if self._drain_scheduled:
                return
            self._drain_scheduled = True
        self.loop.call_soon_threadsafe(self._drain_acks)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self.loop.call_soon_threadsafe(self._received, Incoming(msg.topic, bytes(msg.payload)))

    # on the loop
    def _set_connected(self, rc: Any) -> None:
        if self._connected.done():
            return
        if getattr(rc, "is_failure", False) or (isinstance(rc, int) and rc != 0):
            self._connected.set_exception(MqttSessionError(f"connection refused: {rc}", rc))
        else:
            self._connected.set_result(None)

    def _set_disconnected(self, rc: Any) -> None:
        err = MqttSessionError(f"disconnected: {rc}", rc)
        if not self._connected.done():
            self._connected.set_exception(err)
        if not self.disconnected.done():
            self.disconnected.set_result(None)
        acks, self._acks = self._acks, {}
        for done in acks.values():
            done(False)

    def _drain_acks(self) -> None:
        with self._drain_lock:
            self._drain_scheduled = False
        acks, mids = self._acks, self._acked_mids
        while mids:
            done = acks.pop(mids.popleft(), None)
            if done is not None:
                done(True)

    def _received(self, msg: Incoming) -> None:
        if self.messages.full():
            self.messages.get_nowait()  # a flood of commands must not grow memory without bound
        self.messages.put_nowait(msg)

    # public
    @property
    def connected(self) -> bool:
        """CONNACK received and no disconnect since."""
        return self._connected.done() and not self._connected.exception() and not self.disconnected.done()

    async def open(self) -> None:
        """Connect (blocking socket work off the loop), start paho's thread, wait for CONNACK."""
        try:
            await self.loop.run_in_executor(
                None, lambda: self.client.connect(self.opts.host, self.opts.port, self.opts.keepalive)
            )
        except (OSError, ssl.SSLError) as exc:
            raise MqttSessionError(f"cannot connect to {self.opts.host}:{self.opts.port}: {exc}") from exc
        self._sock = self.client.socket()
        no_delay(self._sock)  # paho leaves Nagle on (edge/tcp.py)
        self.client.loop_start()
        try:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for drops a cancel that comes in the same turn
            # as CONNACK (tests/edge/test_mqtt_session_cancel.py)
            async with asyncio.timeout(self.opts.connect_timeout):
                await asyncio.shield(self._connected)
        except (TimeoutError, MqttSessionError):
            await self.close()
            raise
        except BaseException:
            await self.close()
            raise

    def _send(self, topic: str, payload: bytes, qos: int, retain: bool) -> int:
        """Hand one message to paho now; its message id. Raises `MqttSessionError` when not connected or
        when paho refuses it."""
        if self.disconnected.done():
            raise MqttSessionError("not connected")
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise MqttSessionError(f"publish failed: {mqtt.error_string(info.rc)}", info.rc)
        return int(info.mid)

    def publish_cb(self, topic: str, payload: bytes, done: Callable[[bool], None]) -> None:
        """Send now at QoS 1; `done(True)` runs on the loop at PUBACK, `done(False)` if the connection drops
        first. A publish paho refuses raises `MqttSessionError` (the caller ends the session and sends again
        from its last acknowledged row). The uplink's path: no future and no extra loop callback per
        message; the acknowledgements of a burst are handed out in one loop callback."""
        self._acks[self._send(topic, payload, 1, False)] = done  # acks run on this loop later: no race

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Send and wait for PUBACK (QoS 1); fails when the connection drops first."""
        mid = self._send(topic, payload, qos, retain)
        if qos == 0:
            return
        fut: asyncio.Future[None] = self.loop.create_future()

        def done(ok: bool) -> None:
            if not fut.done():
                if ok:
                    fut.set_result(None)
                else:
                    fut.set_exception(MqttSessionError("disconnected before PUBACK"))

        self._acks[mid] = done
        await fut

    async def subscribe(self, topic: str, qos: int = 1) -> None:
        """Subscribe (fire and forget; SUBACK is not awaited, a failed subscribe drops the connection)."""
        rc, _mid = self.client.subscribe(topic, qos)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise MqttSessionError(f"subscribe failed: {mqtt.error_string(rc)}", rc)

    async def close(self) -> None:
        """Disconnect politely (the will is not sent) and stop paho's thread."""
        self.client.disconnect()
        await self.loop.run_in_executor(None, self.client.loop_stop)
        self._set_disconnected("closed")

