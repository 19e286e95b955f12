"""Shared fixtures: private brokers on free loopback ports, a manual clock, the demo manifest."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from edge.brokers import Mosquitto, NatsMqtt
from edge.clock import ManualClock
from edge.config import Manifest, parse_manifest
from firmware_sim.world import demo_manifest_text


@pytest.fixture
def mosquitto() -> Iterator[Mosquitto]:
    """A private mosquitto for one test; `.kill()` / `.start()` simulate a hub outage."""
    broker = Mosquitto()
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def nats_mqtt() -> Iterator[NatsMqtt]:
    """nats-server with JetStream and its MQTT listener, for one test."""
    broker = NatsMqtt()
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def clock() -> ManualClock:
    """A clock that moves only when the test says so."""
    return ManualClock()


@pytest.fixture
def demo_manifest() -> Manifest:
    """The built-in demo store without devices."""
    return parse_manifest(demo_manifest_text(), "demo_manifest.yaml")
