"""A Zebra IoT Connector-style publisher: tag events as JSON over MQTT (aiomqtt), read from the World.

Every cycle publishes the cycle's reads in messages of up to `batch` JSON objects written back to back
with no delimiter, timestamps with `+0000` offsets, as the IoT Connector does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import aiomqtt

from edge.clock import Clock, SystemClock
from firmware_sim.mqtt_pub import broker_address, publish_forever
from firmware_sim.rfid.population import Population


class ZebraMqttSim:
    """One simulated Zebra FX reader publishing to a broker."""

    def __init__(self, population: Population, broker_url: str, topic: str, *, clock: Clock | None = None,
                 cycle_s: float = 1.0, batch: int = 5) -> None:  # fmt: skip
        self.population = population
        self.host, self.port = broker_address(broker_url)
        self.topic = topic
        self.clock = clock or SystemClock()
        self.cycle_s = cycle_s
        self.batch = batch
        self.published = 0
        self._event_num = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def payloads(self) -> list[bytes]:
        """One cycle's reads as MQTT payloads (several objects per payload, no delimiter)."""
        ts = self.clock.now().strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"
        objs = []
        for r in self.population.cycle():
            self._event_num += 1
            objs.append(json.dumps({"type": "SIMPLE", "timestamp": ts, "data": {
                "idHex": r.epc.lower(), "antenna": r.antenna, "peakRssi": r.rssi, "reads": r.count,
                "eventNum": self._event_num, "format": "epc"}}, separators=(",", ":")))  # fmt: skip
        return ["".join(objs[i : i + self.batch]).encode() for i in range(0, len(objs), self.batch)]

    async def start(self) -> None:
        """Start publishing in the background (again after `stop`)."""
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=f"zebra-sim {self.topic}")

    async def stop(self) -> None:
        """Stop publishing."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _run(self) -> None:
        async def cycle(client: aiomqtt.Client) -> None:
            for payload in self.payloads():
                await client.publish(self.topic, payload, qos=0)
                self.published += 1
            await self.clock.sleep(self.cycle_s)

        await publish_forever(self.host, self.port, cycle, stopping=lambda: self._stopping)
