"""The simulated networked devices' publishing loop (firmware_sim/mqtt_pub.py) against a real mosquitto:
it reconnects when the broker goes away, and a cancellation ends it even when aiomqtt reports it as an
`MqttError` (which once made a store-day run hang at its end: the loop reconnected instead of stopping)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import aiomqtt

from edge.brokers import Mosquitto
from edge.clock import SystemClock
from edge.config import Manifest
from firmware_sim.mqtt_pub import publish_forever
from firmware_sim.rfid.population import Population
from firmware_sim.rfid.zebra_mqtt import ZebraMqttSim
from firmware_sim.shelf import MqttShelfSim, lanes_for
from firmware_sim.world import World


async def cancel_after_three_cycles(port: int, pause: Callable[[], Awaitable[None]]) -> None:
    """Run the loop with cycles that publish and then await `pause()`; cancel it after 3 cycles: it must end."""
    cycles = 0

    async def cycle(client: aiomqtt.Client) -> None:
        nonlocal cycles
        await client.publish("sim/x", b"1")
        cycles += 1
        await pause()

    task = asyncio.create_task(publish_forever("127.0.0.1", port, cycle))
    while cycles < 3:
        await asyncio.sleep(0.02)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=3)
    assert done, "the publishing loop did not stop when cancelled"
    assert task.cancelled()


async def test_cancel_reported_as_mqtt_error_still_stops(mosquitto: Mosquitto) -> None:
    async def pause() -> None:
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            raise aiomqtt.MqttError("Disconnected during message iteration") from None  # what aiomqtt may do

    await cancel_after_three_cycles(mosquitto.port, pause)


async def test_cancel_swallowed_by_a_library_still_stops(mosquitto: Mosquitto) -> None:
    """Python 3.11's `asyncio.wait_for` (inside aiomqtt's publish) drops a cancel that arrives together with
    the result; the loop must still end, at the end of that cycle."""

    async def pause() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # what the race does: the cancel is gone
            await asyncio.sleep(0.05)

    await cancel_after_three_cycles(mosquitto.port, pause)


async def test_reconnects_when_the_broker_comes_back(mosquitto: Mosquitto) -> None:
    sent = 0

    async def cycle(client: aiomqtt.Client) -> None:
        nonlocal sent
        await client.publish("sim/x", b"1")
        sent += 1
        await asyncio.sleep(0.02)

    task = asyncio.create_task(publish_forever("127.0.0.1", mosquitto.port, cycle, retry_s=0.1))
    try:
        while sent < 3:
            await asyncio.sleep(0.02)
        mosquitto.kill()
        await asyncio.sleep(0.5)
        mosquitto.start()
        before = sent
        for _ in range(200):
            if sent > before + 3:
                break
            await asyncio.sleep(0.05)
        assert sent > before + 3, "no publishing after the broker came back"
    finally:
        task.cancel()
        await asyncio.wait({task}, timeout=3)


async def test_simulated_devices_publish_again_after_stop(demo_manifest: Manifest, mosquitto: Mosquitto) -> None:
    """A test unplugs a networked device (stop) and plugs it back (start): it must publish again."""
    world = World(demo_manifest, SystemClock())
    shelf = next(iter(world.lanes.values())).shelf
    zebra = ZebraMqttSim(Population(world, {1: "aisle-1"}), mosquitto.url, "sim/zebra", cycle_s=0.05)
    mqtt_shelf = MqttShelfSim(world, mosquitto.url, lanes_for(world, shelf), hz=20)
    for _ in range(2):
        zebra_before, shelf_before = zebra.published, mqtt_shelf.sent
        await zebra.start()
        mqtt_shelf.start()
        deadline = time.monotonic() + 5
        while (zebra.published == zebra_before or mqtt_shelf.sent == shelf_before) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await zebra.stop()
        await mqtt_shelf.stop()
        assert zebra.published > zebra_before and mqtt_shelf.sent > shelf_before
