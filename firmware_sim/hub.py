"""The cloud hub's side of the uplink wire, for tests and benchmarks: subscribers that record what arrives."""

from __future__ import annotations

import abc
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


@dataclass(frozen=True, slots=True)
class Received:
    """One message as the hub got it."""

    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        """The payload parsed."""
        return orjson.loads(self.payload)


class _Recorder(abc.ABC):
    """What every recorder offers: the messages so far, the events in them, waiting for a condition."""

    @abc.abstractmethod
    def snapshot(self) -> list[Received]:
        """A copy of everything received so far."""

    def events(self, prefix: str = "") -> list[dict[str, Any]]:
        """Every CloudEvent received on topics containing `prefix` (batches flattened)."""
        out: list[dict[str, Any]] = []
        for m in self.snapshot():
            if prefix not in m.topic or "/status" in m.topic or "/state/" in m.topic or "/cmd/" in m.topic:
                continue
            body = m.json()
            out.extend(body if isinstance(body, list) else [body])
        return out

    def wait_for(self, pred: Callable[[Any], bool], timeout: float = 20.0) -> None:
        """Poll until `pred(self)` holds, or fail with a timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred(self):
                return
            time.sleep(0.05)
        raise TimeoutError(f"hub condition not met after {timeout}s ({len(self.snapshot())} messages)")


class HubProcess(_Recorder):
    """`mosquitto_sub` in its own process with a persistent QoS 1 session: it keeps up with any rate, so a
    SIGKILLed broker has nothing queued for it that the gateway already saw acknowledged."""

    def __init__(self, port: int, topic: str, out: Path) -> None:
        self.out = out
        self._log = out.open("wb")
        self.proc = subprocess.Popen(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-q", "1", "-c",
             "-i", f"hub-{uuid.uuid4().hex[:8]}", "-v"],
            stdout=self._log, stderr=subprocess.STDOUT,
        )
        time.sleep(0.5)

    def snapshot(self) -> list[Received]:
        """Every complete line so far."""
        out = []
        for line in self.out.read_bytes().split(b"\n"):
            topic, sep, payload = line.partition(b" ")
            if sep and payload.startswith((b"{", b"[")):
                try:
                    orjson.loads(payload)
                except orjson.JSONDecodeError:
                    continue  # a line still being written
                out.append(Received(topic.decode(), payload, False))
        return out

    def close(self) -> None:
        """Stop the subscriber."""
        self.proc.terminate()
        self.proc.wait(5)
        self._log.close()


class HubRecorder(_Recorder):
    """Subscribes to `topic` at QoS 1 (persistent session, so a broker restart loses nothing for it)."""

    def __init__(self, port: int, topic: str = "#", *, persistent: bool = True) -> None:
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"hub-{uuid.uuid4().hex[:8]}",
                                  clean_session=not persistent)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.reconnect_delay_set(1, 1)
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError("hub recorder could not subscribe")

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain)))

    def snapshot(self) -> list[Received]:
        """A copy of everything received so far."""
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        """Disconnect."""
        self.client.loop_stop()
        self.client.disconnect()
