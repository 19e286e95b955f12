"""The publishing loop of the simulated networked devices (MQTT shelf, Zebra reader): connect, publish one
cycle after another, and when the broker goes away wait and connect again, as real devices do.

Stopping is a cancellation, and it must end the loop: aiomqtt can turn a cancellation that arrives while it
disconnects into `MqttError`, which the reconnect branch would otherwise swallow and connect again, leaving
whoever awaits the cancelled task waiting forever (a store-day run hung so at its end).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import aiomqtt


def broker_address(url: str) -> tuple[str, int]:
    """(host, port) of an `mqtt://host:port` URL."""
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 1883


async def publish_forever(
    host: str,
    port: int,
    cycle: Callable[[aiomqtt.Client], Awaitable[None]],
    *,
    stopping: Callable[[], bool] = lambda: False,
    retry_s: float = 0.5,
) -> None:
    """Run `cycle(client)` over and over on a connection to host:port until cancelled; reconnect on errors."""
    while True:
        try:
            async with aiomqtt.Client(host, port) as client:
                while True:
                    await cycle(client)
        except aiomqtt.MqttError:
            task = asyncio.current_task()
            if stopping() or (task is not None and task.cancelling()):
                raise asyncio.CancelledError from None
            await asyncio.sleep(retry_s)  # broker away: try again
