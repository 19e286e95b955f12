"""The cloud hub's side of the uplink wire, for tests, benchmarks and the demo: subscribers that record what
arrives, and `HubCommander`, which sends `cmd/` requests signed as docs/commands.md says (HMAC-SHA256 over the
RFC 8785 canonical JSON; written from that document and RFC 8785, not from the gateway's code)."""

from __future__ import annotations

import abc
import hashlib
import hmac
import json
import re
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

    def __init__(self, port: int, topic: str = "#", *, persistent: bool = True, host: str = "127.0.0.1",
                 username: str | None = None, password: str | None = None) -> None:
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"hub-{uuid.uuid4().hex[:8]}",
                                  clean_session=not persistent)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.reconnect_delay_set(1, 1)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.connect(host, port, keepalive=10)
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


# ---- commands, signed as an HQ integrator would from docs/commands.md ----


def _number(x: float) -> str:
    """ECMAScript Number.prototype.toString of a finite double (RFC 8785 section 3.2.2.3)."""
    if x == 0:
        return "0"
    m = re.fullmatch(r"(-?)(\d+)(?:\.(\d+))?(?:e([+-]\d+))?", repr(x))
    assert m is not None
    sign, whole, frac, exp = m[1], m[2], m[3] or "", int(m[4] or 0)
    digits = (whole + frac).lstrip("0")
    point = len(whole) + exp - (len(whole + frac) - len((whole + frac).lstrip("0")))  # n: digits before the point
    digits = digits.rstrip("0")
    if len(digits) <= point <= 21:
        body = digits + "0" * (point - len(digits))
    elif 0 < point <= 21:
        body = f"{digits[:point]}.{digits[point:]}"
    elif -6 < point <= 0:
        body = "0." + "0" * -point + digits
    else:
        mant = digits[0] + (f".{digits[1:]}" if len(digits) > 1 else "")
        body = f"{mant}e{point - 1:+d}"
    return sign + body


def jcs(value: Any) -> str:
    """RFC 8785 canonical JSON of a parsed JSON value."""
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: k.encode("utf-16-be"))
        return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + jcs(value[k]) for k in keys) + "}"
    if isinstance(value, list):
        return "[" + ",".join(jcs(v) for v in value) + "]"
    if isinstance(value, float):
        return _number(value)
    return json.dumps(value, ensure_ascii=False)  # str, int, bool, None: the same as ECMAScript's JSON.stringify


def signed(request: dict[str, Any], *, topic: str, kid: str, secret: str, ts: int | None = None) -> dict[str, Any]:
    """`request` with `auth` {alg, kid, ts, sig}: HMAC-SHA256 over
    "EDGE-CMD-HMAC-SHA256\\n{topic}\\n{kid}\\n{ts}\\n{JCS(request without auth)}" with the key's UTF-8 bytes."""
    ts = int(time.time()) if ts is None else ts
    body = {k: v for k, v in request.items() if k != "auth"}
    text = "\n".join(["EDGE-CMD-HMAC-SHA256", topic, kid, str(ts), jcs(body)])
    sig = hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()
    return {**body, "auth": {"alg": "HMAC-SHA256", "kid": kid, "ts": ts, "sig": sig}}


class HubCommander:
    """The hub sending `{root}/cmd/{name}` requests and collecting replies on `{root}/reply/{me}/...`."""

    def __init__(self, port: int, root: str, *, kid: str | None = None, secret: str | None = None,
                 host: str = "127.0.0.1", username: str | None = None, password: str | None = None) -> None:
        self.root = root
        self.kid = kid
        self.secret = secret
        self.me = f"hub-{uuid.uuid4().hex[:8]}"
        self.replies = HubRecorder(port, f"{root}/reply/{self.me}/#", persistent=False, host=host,
                                   username=username, password=password)

    def reply_to(self, rid: str) -> str:
        """The reply topic of request `rid`."""
        return f"{self.root}/reply/{self.me}/{rid}"

    def request(self, name: str, args: dict[str, Any] | None = None, *, sign: bool = True) -> dict[str, Any]:
        """The request payload for `cmd/{name}` (signed when this commander has a key and `sign`)."""
        rid = uuid.uuid4().hex
        req: dict[str, Any] = {"id": rid, "reply_to": self.reply_to(rid), **(args or {})}
        if sign and self.kid is not None and self.secret is not None:
            req = signed(req, topic=f"{self.root}/cmd/{name}", kid=self.kid, secret=self.secret)
        return req

    def publish(self, name: str, payload: bytes) -> None:
        """Publish raw bytes to `cmd/{name}` at QoS 1."""
        self.replies.client.publish(f"{self.root}/cmd/{name}", payload, qos=1)

    def reply(self, rid: object, timeout: float = 10.0) -> dict[str, Any] | None:
        """The first reply carrying `rid`, waiting up to `timeout` s (None: none came)."""
        deadline = time.monotonic() + timeout
        while True:
            for m in self.replies.snapshot():
                body = m.json()
                if isinstance(body, dict) and body.get("id") == rid:
                    return body
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)

    def call(self, name: str, args: dict[str, Any] | None = None, *, sign: bool = True,
             timeout: float = 20.0) -> dict[str, Any]:
        """Send a request and wait for its reply, re-signing and resending each second until one comes (right
        after start the gateway may not have subscribed to `cmd/+` yet)."""
        deadline = time.monotonic() + timeout
        while True:
            req = self.request(name, args, sign=sign)
            self.publish(name, orjson.dumps(req))
            body = self.reply(req["id"], 1.0)
            if body is not None:
                return body
            if time.monotonic() > deadline:
                raise TimeoutError(f"no reply to cmd/{name}")

    def close(self) -> None:
        """Disconnect."""
        self.replies.close()
