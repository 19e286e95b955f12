"""A lean MQTT 3.1.1 subscriber on asyncio streams, for high-rate device topics on the store-local broker.

Why not aiomqtt here: aiomqtt drives paho from the event loop, and paho reads one packet per readable
event and parses it in Python, while aiomqtt hands each message over through a new task; measured on the
peers job's shelf load that is ~130 us of loop time per reading (~6k readings/s in all). This client reads
whatever the socket holds and parses every complete PUBLISH in that chunk in one loop, so a burst of
readings costs one wake-up (~10x less per reading). It does only what a device subscription needs (OASIS
MQTT 3.1.1: CONNECT/CONNACK, SUBSCRIBE/SUBACK, PUBLISH at QoS 0 and 1 with PUBACK, PINGREQ/PINGRESP,
DISCONNECT); the uplink, which publishes, stays on paho.

A lost or silent connection raises `MqttSubError`; the caller (a driver under the supervisor) reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from edge.tcp import quick_ack

MAX_PACKET = 256 * 1024  # a device message larger than this is a broken device or an attack
_PUBACK = struct.Struct("!BBH")  # type, remaining length 2, packet identifier


class MqttSubError(ConnectionError):
    """The connection was refused, failed or went silent."""


@dataclass(frozen=True, slots=True)
class SubOptions:
    """Where and how to subscribe."""

    host: str
    port: int
    client_id: str
    topic: str
    qos: int = 0
    keepalive: int = 30
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None
    connect_timeout: float = 10.0
    max_packet: int = MAX_PACKET  # a PUBLISH longer than this is dropped as it arrives and reported
    extra_topics: tuple[str, ...] = ()  # more filters in the same SUBSCRIBE (a device's event/response topics)

    @classmethod
    def from_url(cls, url: str, *, client_id: str, topic: str, qos: int = 0,
                 max_packet: int = MAX_PACKET) -> SubOptions:
        """Options for `mqtt://[user[:password]@]host[:port]`, or `mqtts://` (TLS, the system's CAs)."""
        parts = urlsplit(url)
        tls = ssl.create_default_context() if parts.scheme in {"mqtts", "ssl"} else None
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or (8883 if tls else 1883),
            client_id=client_id,
            topic=topic,
            qos=qos,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
            max_packet=max_packet,
        )


def _str(s: str) -> bytes:
    b = s.encode()
    if len(b) > 0xFFFF:
        raise ValueError("MQTT string longer than 65535 bytes")
    return struct.pack("!H", len(b)) + b


def _packet(first: int, body: bytes) -> bytes:
    n = len(body)
    out = bytearray([first])
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            break
    return bytes(out) + body


def connect_packet(o: SubOptions) -> bytes:
    """CONNECT with a clean session (a device subscription needs no broker-side state)."""
    flags = 0x02
    payload = _str(o.client_id)
    if o.username is not None:
        flags |= 0x80
        payload += _str(o.username)
        if o.password is not None:
            flags |= 0x40
            payload += _str(o.password)
    return _packet(0x10, _str("MQTT") + bytes([4, flags]) + struct.pack("!H", o.keepalive) + payload)


def subscribe_packet(topic: str, qos: int, packet_id: int = 1, extra: tuple[str, ...] = ()) -> bytes:
    """SUBSCRIBE to one filter (and the `extra` ones, same QoS)."""
    return _packet(0x82, struct.pack("!H", packet_id) + b"".join(_str(t) + bytes([qos]) for t in (topic, *extra)))


PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"


Packet = tuple[int, int, bytes, bytes | None, int]


def parse(buf: bytearray, limit: int = MAX_PACKET) -> tuple[list[Packet], int, int]:
    """Every complete packet at the start of `buf`, the bytes they took, and the bytes still to skip.

    A PUBLISH is (3, flags, topic, payload, packet id or 0); any other packet (type, flags, body, b"", 0).
    A PUBLISH longer than `limit` is not buffered: once its topic and packet id are in, it comes out with
    payload None and what `buf` holds of it counts as taken; if more of it is still to come, parsing stops
    there and the third value says how many bytes (to be dropped as they arrive).
    Raises `MqttSubError` on a malformed packet or an oversized one of another type (the connection cannot
    be trusted after it).
    """
    out: list[Packet] = []
    pos, end = 0, len(buf)
    while end - pos >= 2:
        first = buf[pos]
        # remaining length: 1..4 bytes, 7 bits each
        mult, length, i = 1, 0, pos + 1
        while True:
            if i >= end:
                return out, pos, 0
            byte = buf[i]
            length += (byte & 0x7F) * mult
            i += 1
            if not byte & 0x80:
                break
            mult *= 128
            if mult > 128**3:
                raise MqttSubError("malformed remaining length")
        kind, flags = first >> 4, first & 0x0F
        oversized = length > limit
        if oversized and kind != 3:
            raise MqttSubError(f"packet of {length} bytes exceeds {limit}")
        if kind != 3:
            if end - i < length:
                return out, pos, 0
            out.append((kind, flags, bytes(buf[i:i + length]), b"", 0))
            pos = i + length
            continue
        if length < 2:
            raise MqttSubError("malformed PUBLISH")
        if end - i < (length if not oversized else 2):
            return out, pos, 0
        tlen = (buf[i] << 8) | buf[i + 1]
        t0 = i + 2
        p0 = t0 + tlen
        qos = (flags >> 1) & 3
        if p0 + (2 if qos else 0) > i + length:
            raise MqttSubError("malformed PUBLISH")
        if oversized and end < p0 + (2 if qos else 0):
            return out, pos, 0  # its topic (and packet id) first
        pid = 0
        if qos:  # QoS 1 or 2: a packet identifier follows the topic
            pid = (buf[p0] << 8) | buf[p0 + 1]
            p0 += 2
        topic = bytes(buf[t0:t0 + tlen])
        if oversized:
            out.append((3, flags, topic, None, pid))
            if end < i + length:
                return out, end, i + length - end  # the rest of it is still on the way
            pos = i + length
            continue
        out.append((3, flags, topic, bytes(buf[p0:i + length]), pid))
        pos = i + length
    return out, pos, 0


class Subscriber:
    """One connection: `async with Subscriber(opts) as s: async for batch in s.batches(): ...`."""

    def __init__(self, opts: SubOptions) -> None:
        self.opts = opts
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._buf = bytearray()
        self._ping: asyncio.Task[None] | None = None
        self._early: list[Packet] = []  # PUBLISHes read during the handshake (see `_expect`)

    async def __aenter__(self) -> Subscriber:
        o = self.opts
        try:
            await asyncio.wait_for(self._handshake(), o.connect_timeout)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            await self.close()
            raise MqttSubError(f"cannot subscribe at {o.host}:{o.port}: {exc or type(exc).__name__}") from exc
        except BaseException:
            await self.close()
            raise
        self._ping = asyncio.create_task(self._keepalive())
        return self

    async def _handshake(self) -> None:
        o = self.opts
        self._reader, writer = await asyncio.open_connection(o.host, o.port, ssl=o.tls, limit=MAX_PACKET * 2)
        self._writer = writer
        writer.write(connect_packet(o))
        body = await self._expect({2})
        if len(body) != 2 or body[1] != 0:
            code = body[1] if len(body) == 2 else "?"
            raise MqttSubError(f"connection refused by {o.host}:{o.port} (CONNACK return code {code})")
        writer.write(subscribe_packet(o.topic, o.qos, extra=o.extra_topics))
        body = await self._expect({9})
        if len(body) < 3 + len(o.extra_topics) or 0x80 in body[2:]:
            raise MqttSubError(f"subscription to {', '.join(repr(t) for t in (o.topic, *o.extra_topics))} refused")

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Say DISCONNECT when possible and close the socket."""
        if self._ping is not None:
            self._ping.cancel()
            with contextlib.suppress(BaseException):
                await self._ping
            self._ping = None
        w, self._writer = self._writer, None
        if w is not None:
            with contextlib.suppress(Exception):
                if not w.is_closing():
                    w.write(DISCONNECT)
                w.close()
                await asyncio.wait_for(w.wait_closed(), 1.0)

    def publish(self, topic: str, payload: bytes) -> None:
        """Send one PUBLISH at QoS 0 on this connection (a device command; no delivery guarantee)."""
        if self._writer is None or self._writer.is_closing():
            raise MqttSubError("not connected")
        self._writer.write(_packet(0x30, _str(topic) + payload))

    async def _expect(self, kinds: set[int]) -> bytes:
        """Read until a packet of one of `kinds` arrives (before the subscription: nothing else matters)."""
        while True:
            packets, used, skip = parse(self._buf, self.opts.max_packet)
            if skip:
                raise MqttSubError("oversized PUBLISH before the subscription was acknowledged")
            del self._buf[:used]
            found = None
            for packet in packets:
                if packet[0] in kinds and found is None:
                    found = packet[2]
                elif packet[0] == 3:
                    # a PUBLISH before the SUBACK (nats-server sends a new subscription's retained messages
                    # ahead of it) or after it in the same read: kept for `batches`, not dropped
                    self._early.append(packet)
            if found is not None:
                return found
            assert self._reader is not None
            chunk = await self._reader.read(65536)
            if not chunk:
                raise MqttSubError("connection closed by the broker")
            self._buf += chunk

    async def _keepalive(self) -> None:
        interval = max(1.0, self.opts.keepalive / 2)
        while True:
            await asyncio.sleep(interval)
            if self._writer is not None and not self._writer.is_closing():
                self._writer.write(PINGREQ)

    async def batches(self) -> AsyncGenerator[list[tuple[str, bytes | None]], None]:
        """Every PUBLISH as (topic, payload), in arrival order, a socket read's worth at a time; the payload
        is None for a message longer than `max_packet`, dropped as it arrived (the caller reports it)."""
        assert self._reader is not None
        assert self._writer is not None
        reader, writer = self._reader, self._writer
        silent = self.opts.keepalive * 1.5
        limit = self.opts.max_packet
        buf = self._buf
        skip = 0  # bytes of an oversized PUBLISH still to drop
        sock = writer.get_extra_info("socket")
        while True:
            if not skip:
                packets, used, skip = parse(buf, limit)
                if used:
                    del buf[:used]
                if self._early:
                    packets, self._early = self._early + packets, []
                if packets:
                    msgs: list[tuple[str, bytes | None]] = []
                    acks = bytearray()
                    for kind, _flags, topic, payload, pid in packets:
                        if kind != 3:
                            continue  # PINGRESP, a late SUBACK: nothing to do
                        if pid:
                            acks += _PUBACK.pack(0x40, 2, pid)  # PUBACK (we subscribe at QoS <= 1)
                        msgs.append((topic.decode("utf-8", "replace"), payload))
                    if acks:
                        # one write (one send) for the read's PUBACKs: a write per message was 16 % of the
                        # daemon's samples at 30k QoS 1 readings/s (py-spy, the peers bench)
                        writer.write(acks)
                    if msgs:
                        yield msgs
            try:
                chunk = await asyncio.wait_for(reader.read(65536), silent)
            except TimeoutError:
                raise MqttSubError(f"no data from the broker for {silent:.0f} s (keepalive)") from None
            except OSError as exc:
                raise MqttSubError(f"connection lost: {exc}") from exc
            if not chunk:
                raise MqttSubError("connection closed by the broker")
            quick_ack(sock)  # the broker's next PUBLISH leaves without waiting for our delayed ACK (edge/tcp.py)
            if skip:
                dropped = min(skip, len(chunk))
                skip -= dropped
                chunk = chunk[dropped:]
            buf += chunk
