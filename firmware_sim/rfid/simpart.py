"""The RFID sim part of the demo: one LLRP reader over the apparel zone (and the entrance, and the back room
when the manifest has an RFID-counted one), one Zebra
IoT Connector publisher over the two aisles when a local broker is given. Returns their device sections."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from firmware_sim.rfid.llrp_reader import LlrpReaderSim
from firmware_sim.rfid.population import Population
from firmware_sim.rfid.zebra_mqtt import ZebraMqttSim
from firmware_sim.world import World

MIN_RSSI_DBM = -72  # the readers' smoothing filter in the device sections below


class RfidSimPart:
    """Simulated RFID readers for `edge-gateway demo`."""

    name = "rfid"

    def __init__(self, record_reads: bool = False) -> None:
        self.llrp: LlrpReaderSim | None = None
        self.zebra: ZebraMqttSim | None = None
        # EPC -> clock.monotonic() of its last read the gateway keeps (for the store-day checker; grows with
        # every EPC ever read, so only when asked)
        self.last_read: dict[str, float] | None = {} if record_reads else None

    async def start(self, world: World, workdir: Path, local_broker_url: str | None) -> list[dict[str, Any]]:
        """Start the readers; return the manifest device sections pointing at them."""
        zones = {z.id for z in world.manifest.zones}
        sections: list[dict[str, Any]] = []
        llrp_ants = {a: z for a, z in {1: "apparel", 2: "entrance"}.items() if z in zones}
        if llrp_ants and world.backroom_point is not None:  # the back room behind the apparel zone
            llrp_ants[3] = world.backroom_point
        if llrp_ants:
            self.llrp = LlrpReaderSim(Population(world, llrp_ants, seed=21, last_read=self.last_read,
                                                 record_min_rssi=MIN_RSSI_DBM), clock=world.clock)
            port = await self.llrp.start()
            sections.append({"id": "rfid-llrp-1", "type": "llrp", "name": "Apparel LLRP reader",
                             "host": "127.0.0.1", "port": port, "antennas": llrp_ants, "epcis": True,
                             "smoothing": {"min_rssi_dbm": MIN_RSSI_DBM}})  # fmt: skip
        zebra_ants = {a: z for a, z in {1: "aisle-1", 2: "aisle-2"}.items() if z in zones}
        if local_broker_url and zebra_ants:
            base = "zebra/fx9600-demo"
            topics = {"topic": f"{base}/data", "events_topic": f"{base}/mevents", "control_topic": f"{base}/ctrl",
                      "response_topic": f"{base}/ctrl-res"}
            # a reader out of the box: radio stopped until the gateway sets its mode and starts it
            self.zebra = ZebraMqttSim(Population(world, zebra_ants, seed=22, last_read=self.last_read,
                                                 record_min_rssi=MIN_RSSI_DBM), local_broker_url, topics["topic"],
                                      clock=world.clock, running=False, heartbeat_s=10.0,
                                      events_topic=topics["events_topic"], control_topic=topics["control_topic"],
                                      response_topic=topics["response_topic"])  # fmt: skip
            await self.zebra.start()
            sections.append({"id": "rfid-zebra-1", "type": "zebra_iotc", "name": "Aisles Zebra FX9600",
                             "broker_url": local_broker_url, **topics, "antennas": zebra_ants,
                             "mode": "INVENTORY", "smoothing": {"min_rssi_dbm": MIN_RSSI_DBM}})  # fmt: skip
        return sections

    async def stop(self) -> None:
        """Stop every simulated reader."""
        if self.zebra is not None:
            await self.zebra.stop()
        if self.llrp is not None:
            await self.llrp.stop()
