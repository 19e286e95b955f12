"""Shared fixtures: private brokers on free loopback ports, a manual clock, the demo manifest."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from edge.brokers import Mosquitto, NatsMqtt
from edge.clock import ManualClock
from edge.config import Manifest, parse_manifest
from firmware_sim.world import demo_manifest_text


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """scripts/test runs the suite in two phases: EDGE_TEST_PHASE=parallel (on pytest-xdist workers) keeps the
    tests not marked `alone`, EDGE_TEST_PHASE=alone (serially, afterwards) only those. Unset: every test."""
    phase = os.environ.get("EDGE_TEST_PHASE")
    if phase not in ("parallel", "alone"):
        return
    alone = phase == "alone"
    keep = [i for i in items if (i.get_closest_marker("alone") is not None) == alone]
    if len(keep) < len(items):
        config.hook.pytest_deselected(items=[i for i in items if (i.get_closest_marker("alone") is not None) != alone])
        items[:] = keep


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
