"""The broker fixtures themselves: a real mosquitto and nats-server start, take MQTT and can be killed."""

from __future__ import annotations

import socket

from edge.brokers import BrokerProcess, Mosquitto, NatsMqtt


def _connack(port: int) -> bytes:
    # MQTT 3.1.1 CONNECT, clean session, keepalive 10, client id "t".
    connect = bytes([0x10, 13, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 10, 0, 1]) + b"t"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(connect)
        return s.recv(4)


def _check(broker: BrokerProcess) -> None:
    assert _connack(broker.port) == b"\x20\x02\x00\x00"
    broker.kill()
    try:
        _connack(broker.port)
        raise AssertionError("broker still answering after kill")
    except OSError:
        pass
    broker.start()
    assert _connack(broker.port) == b"\x20\x02\x00\x00"


def test_mosquitto_kill_restart(mosquitto: Mosquitto) -> None:
    _check(mosquitto)


def test_nats_mqtt_kill_restart(nats_mqtt: NatsMqtt) -> None:
    _check(nats_mqtt)
