"""The publishing loop of the simulated networked devices (MQTT shelf, Zebra reader): connect, publish one
cycle after another, and when the broker goes away wait and connect again, as real devices do.

Stopping is a cancellation, and it must end the loop: aiomqtt can turn a cancellation that arrives while it
disconnects into `MqttError`, which the reconnect branch would otherwise swallow and connect again, leaving
whoever awaits the cancelled task waiting forever (a store-day run hung so at its end). And Python 3.11's
`asyncio.wait_for`, which aiomqtt's publish uses to wait for the broker's confirmation, drops a cancellation
that arrives in the same loop step as the confirmation: the task is then "cancelling" but runs on into the
next cycle. So the loop also checks, after every cycle, whether it was asked to stop.
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
    task = asyncio.current_task()

    def asked_to_stop() -> bool:
        return stopping() or (task is not None and task.cancelling() > 0)

    while True:
        try:
            async with aiomqtt.Client(host, port) as client:
                while not asked_to_stop():
                    await cycle(client)
            raise asyncio.CancelledError  # a cancel some library swallowed: stop all the same
        except aiomqtt.MqttError:
            if asked_to_stop():
                raise asyncio.CancelledError from None
            await asyncio.sleep(retry_s)  # broker away: try again
