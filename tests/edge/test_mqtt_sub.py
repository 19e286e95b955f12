"""edge.mqtt_sub: the lean MQTT 3.1.1 subscriber, against real mosquitto processes and fuzzed byte streams."""

from __future__ import annotations

import asyncio
import os
import struct
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.brokers import Mosquitto, NatsMqtt
from edge.mqtt_sub import MqttSubError, SubOptions, Subscriber, parse

EXAMPLES = 10_000 if os.environ.get("EDGE_FUZZ") == "long" else 200


def publish(topic: bytes, payload: bytes, qos: int = 0, pid: int = 0) -> bytes:
    """A PUBLISH packet as a broker sends it (MQTT 3.1.1 section 3.3)."""
    body = struct.pack("!H", len(topic)) + topic + (struct.pack("!H", pid) if qos else b"") + payload
    n, length = len(body), bytearray()
    while True:
        byte, n = n % 128, n // 128
        length.append(byte | (0x80 if n else 0))
        if not n:
            break
    return bytes([0x30 | qos << 1]) + bytes(length) + body


MESSAGES = [(b"shelves/a/weight", b'{"grams": 1}', 0, 0), (b"t", b"", 1, 7), (b"x/y", b"z" * 300, 1, 65535),
            (b"big", b"p" * 20_000, 0, 0), ("ünï/cødé".encode(), b"\x00\xff", 0, 0)]


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 4096, 1 << 20])
def test_parse_any_chunking(chunk: int) -> None:
    stream = b"".join(publish(*m) for m in MESSAGES) + b"\xd0\x00"  # ... and a PINGRESP
    buf, got = bytearray(), []
    for i in range(0, len(stream), chunk):
        buf += stream[i:i + chunk]
        packets, used, skip = parse(buf)
        assert skip == 0
        del buf[:used]
        got += packets
    assert not buf
    assert [(t, p, pid) for k, _f, t, p, pid in got if k == 3] == [(t, p, pid) for t, p, _q, pid in MESSAGES]
    assert got[-1][0] == 13


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.binary(max_size=300))
def test_parse_never_fails_otherwise(data: bytes) -> None:
    """Any byte stream: complete packets, a clean 'need more', or MqttSubError; nothing else."""
    buf = bytearray(data)
    try:
        packets, used, skip = parse(buf, limit=100)
    except MqttSubError:
        return
    assert 0 <= used <= len(buf) and skip >= 0
    for kind, _flags, topic, payload, pid in packets:
        assert 0 <= kind <= 15 and isinstance(topic, bytes) and 0 <= pid <= 0xFFFF
        assert isinstance(payload, bytes) or (kind == 3 and payload is None)


def test_oversized_other_packet_is_refused() -> None:
    with pytest.raises(MqttSubError, match="exceeds"):
        parse(bytearray(b"\x90\xff\xff\xff\x7f"))  # a SUBACK of 256 MiB


@pytest.mark.parametrize("chunk", [1, 3, 100, 4096, 1 << 20])
@pytest.mark.parametrize("qos", [0, 1])
def test_oversized_publish_is_skipped_not_buffered(chunk: int, qos: int) -> None:
    """A PUBLISH over the limit comes out with payload None (and its packet id, to acknowledge); its bytes
    are dropped as they arrive, never held; the messages around it come through intact."""
    big = publish(b"big/one", b"x" * 5000, qos, 9 if qos else 0)
    stream = publish(b"a", b"1") + big + publish(b"b", b"2", 1, 3)
    buf, got, skip, held = bytearray(), [], 0, 0
    for i in range(0, len(stream), chunk):
        data = stream[i:i + chunk]
        if skip:
            n = min(skip, len(data))
            skip, data = skip - n, data[n:]
        buf += data
        held = max(held, len(buf))
        if not skip:
            packets, used, skip = parse(buf, limit=1000)
            del buf[:used]
            got += packets
    assert not buf and not skip
    assert [(t, p, pid) for _k, _f, t, p, pid in got] == [(b"a", b"1", 0), (b"big/one", None, 9 if qos else 0),
                                                        (b"b", b"2", 3)]
    assert held <= max(chunk, 1000) + 20


def _pub(port: int, topic: str, lines: list[str], qos: int = 0) -> None:
    subprocess.run(["mosquitto_pub", "-p", str(port), "-t", topic, "-q", str(qos), "-l"],
                   input="".join(f"{x}\n" for x in lines).encode(), check=True, timeout=20)


async def _collect(sub: Subscriber, n: int) -> list[tuple[str, bytes | None]]:
    got: list[tuple[str, bytes | None]] = []
    async for batch in sub.batches():
        got += batch
        if len(got) >= n:
            return got
    return got


@pytest.mark.parametrize("qos", [0, 1])
async def test_receives_in_order_from_mosquitto(mosquitto: Mosquitto, qos: int) -> None:
    opts = SubOptions("127.0.0.1", mosquitto.port, f"t-{qos}", "shelves/+/weight", qos=qos)
    async with Subscriber(opts) as sub:
        lines = [f'{{"n": {i}}}' for i in range(5000)]
        pub = asyncio.create_task(asyncio.to_thread(_pub, mosquitto.port, "shelves/s1/weight", lines, qos))
        got = await asyncio.wait_for(_collect(sub, len(lines)), 30)
        await pub
    assert [p for _t, p in got] == [x.encode() for x in lines]
    assert {t for t, _p in got} == {"shelves/s1/weight"}


async def test_qos1_messages_are_acknowledged(tmp_path: object) -> None:
    """With one message in flight per client, the broker sends the next only after our PUBACK."""
    broker = Mosquitto(extra="max_inflight_messages 1\n")
    broker.start()
    try:
        async with Subscriber(SubOptions("127.0.0.1", broker.port, "t-ack", "a/#", qos=1)) as sub:
            pub = asyncio.create_task(asyncio.to_thread(_pub, broker.port, "a/b", [str(i) for i in range(50)], 1))
            got = await asyncio.wait_for(_collect(sub, 50), 20)
            await pub
        assert [p for _t, p in got] == [str(i).encode() for i in range(50)]
    finally:
        broker.stop()


async def test_oversized_message_is_reported_and_the_connection_stays(mosquitto: Mosquitto) -> None:
    opts = SubOptions("127.0.0.1", mosquitto.port, "t-big", "big/#", qos=1, max_packet=10_000)
    async with Subscriber(opts) as sub:
        for payload in (b"before", b"y" * 300_000, b"after"):
            await asyncio.to_thread(subprocess.run, ["mosquitto_pub", "-p", str(mosquitto.port), "-t", "big/x",
                                                     "-q", "1", "-s"], input=payload, check=True, timeout=20)
        got = await asyncio.wait_for(_collect(sub, 3), 20)
    assert got == [("big/x", b"before"), ("big/x", None), ("big/x", b"after")]


def test_options_from_url() -> None:
    o = SubOptions.from_url("mqtts://door%40store:p%3Ass@broker.local", client_id="c", topic="t", qos=1)
    assert (o.host, o.port, o.username, o.password, o.qos, o.tls is not None) == ("broker.local", 8883,
                                                                                  "door@store", "p:ss", 1, True)
    o = SubOptions.from_url("mqtt://127.0.0.1:1999", client_id="c", topic="t")
    assert (o.port, o.username, o.password, o.tls) == (1999, None, None, None)


async def test_broker_gone_raises(mosquitto: Mosquitto) -> None:
    async with Subscriber(SubOptions("127.0.0.1", mosquitto.port, "t-gone", "#", keepalive=2)) as sub:
        async def consume() -> None:
            async for _ in sub.batches():
                pass

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.2)
        mosquitto.kill()
        with pytest.raises(MqttSubError):
            await asyncio.wait_for(task, 10)


async def test_refused_and_unreachable(tmp_path: object) -> None:
    closed = Mosquitto()  # never started: nothing listens on its port
    with pytest.raises(MqttSubError, match="cannot subscribe"):
        async with Subscriber(SubOptions("127.0.0.1", closed.port, "t", "#", connect_timeout=2)):
            pass
    locked = Mosquitto(anonymous=False)
    locked.start()
    try:
        with pytest.raises(MqttSubError, match="refused"):
            async with Subscriber(SubOptions("127.0.0.1", locked.port, "t", "#", connect_timeout=5)):
                pass
    finally:
        locked.stop()


@pytest.mark.parametrize("qos", [0, 1])
async def test_retained_messages_of_a_new_subscription_arrive(nats_mqtt: NatsMqtt, qos: int) -> None:
    """nats-server sends a new subscription's retained messages ahead of its SUBACK: none may be lost (they
    were, read and dropped while the handshake waited for the SUBACK: HQ's view saw no store on NATS)."""
    for i in range(3):
        subprocess.run(["mosquitto_pub", "-p", str(nats_mqtt.port), "-t", f"r/s{i}/status", "-q", "1", "-r", "-m",
                        f"retained {i}"], check=True, timeout=20)
    async with Subscriber(SubOptions("127.0.0.1", nats_mqtt.port, f"t-r{qos}", "r/+/status", qos=qos)) as sub:
        got = await asyncio.wait_for(_collect(sub, 3), 20)
    assert sorted(got) == [(f"r/s{i}/status", f"retained {i}".encode()) for i in range(3)]
