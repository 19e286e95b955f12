"""Beacon health alerts through the real gateway: a store beacon never heard becomes a `beacon_silent` alert
in GET /api/v1/alerts (device = the beacon, with the reason), and the alert resolves once the beacon is heard."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from drivers.ble.reads import Advert
from edge.brokers import Mosquitto
from tests.api.conftest import manifest_for_tests, serve, wait_for

BEACON_UUID = "f7826da6-4fa2-4e98-8024-bc5b71e0893e"


def ibeacon(uuid_text: str, major: int, minor: int, power: int) -> dict[int, bytes]:
    """Manufacturer data of an iBeacon advert, from Apple's Proximity Beacon Specification (R1): company id
    0x004C, then type 0x02, length 0x15, the 16-byte proximity UUID, major and minor (big-endian) and the
    measured power at 1 m (signed dBm)."""
    return {0x004C: bytes([0x02, 0x15]) + uuid.UUID(uuid_text).bytes + major.to_bytes(2, "big")
            + minor.to_bytes(2, "big") + power.to_bytes(1, "big", signed=True)}


async def test_silent_beacon_alert_opens_and_resolves_when_heard(mosquitto: Mosquitto, tmp_path: Path) -> None:
    manifest = manifest_for_tests(
        tmp_path,
        # a door counter (on a port that does not exist) brings up the traffic processor the beacons belong to
        devices=[{"id": "door-1", "type": "door_counter", "zone": "entrance", "transport": "serial",
                  "port": "/dev/edge-test-no-such-door-counter"}],
        beacons=[{"id": "bcn-drinks", "zone": "aisle-1", "kind": "ibeacon", "uuid": BEACON_UUID, "major": 7,
                  "minor": 1, "silent_after_s": 1}],
    )
    async with serve(mosquitto, tmp_path, manifest) as run:
        h = run.headers("staff")

        async def beacon_alerts(state: str) -> list[dict[str, Any]]:
            r = await run.client.get("/api/v1/alerts", params={"state": state}, headers=h)
            assert r.status_code == 200
            return [a for a in r.json()["items"] if a["kind"].startswith("beacon_")]

        [alert] = await wait_for(lambda: beacon_alerts("open"), timeout=20, what="the silent beacon's alert")
        assert (alert["kind"], alert["device"]) == ("beacon_silent", "bcn-drinks")
        assert alert["message"] == "beacon bcn-drinks: never heard (silent for 1 s)"
        # heard again: the alert resolves
        now = run.gw.clock.now()
        await run.gw.pipeline.queue.put(Advert(device_id="ble-test", time=now, address="AA:BB:CC:DD:EE:01",
                                               rssi=-60, manufacturer_data=ibeacon(BEACON_UUID, 7, 1, -59)))
        [done] = await wait_for(lambda: beacon_alerts("resolved"), timeout=20, what="the beacon alert resolved")
        assert (done["id"], done["close_reason"]) == (alert["id"], "heard again")
        assert await beacon_alerts("open") == []
