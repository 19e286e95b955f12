"""A stop (task cancel) that arrives in the same loop turn as the broker's CONNACK is honoured by
`MqttSession.open` (Python 3.11's `asyncio.wait_for` returned the result and dropped such a cancel: the caller
then served on and a gateway stop waited for it). Real mosquitto, real paho connection."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from edge.brokers import Mosquitto
from edge.mqtt_session import MqttSession, SessionOptions


async def test_cancel_together_with_connack_is_not_lost(mosquitto: Mosquitto) -> None:
    session = MqttSession(SessionOptions("127.0.0.1", mosquitto.port, "cancel-race", connect_timeout=20))
    opening: asyncio.Task[None] | None = None
    set_connected = session._set_connected

    def connack_then_stop(rc: Any) -> None:  # runs on the loop, in the turn CONNACK is delivered
        set_connected(rc)
        assert opening is not None
        opening.cancel()

    session._set_connected = connack_then_stop  # type: ignore[method-assign]
    opening = asyncio.create_task(session.open())
    try:
        with pytest.raises(asyncio.CancelledError):
            await opening
    finally:
        await session.close()
