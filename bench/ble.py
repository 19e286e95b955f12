"""BLE throughput benchmark: adverts through parse + pseudonymise + presence (the traffic processor), one core."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta

from drivers.ble.adverts import EDDYSTONE_UUID, encode_eddystone_tlm, encode_eddystone_uid, encode_ibeacon
from drivers.ble.reads import Advert
from drivers.traffic.processor import TrafficProcessor
from edge.clock import ManualClock
from edge.config import parse_manifest
from firmware_sim.world import demo_manifest_text

_DEVICES = """
devices:
  - {id: ble-0, type: ble, zone: entrance, adapter: hci0}
  - {id: ble-1, type: ble, zone: aisle-1, adapter: hci1}
  - {id: ble-2, type: ble, zone: aisle-2, adapter: hci2}
beacons:
  - {id: b0, zone: aisle-1, kind: ibeacon, uuid: e2c56db5-dffb-48d2-b060-d0f5a71096e0, major: 1, minor: 1}
  - {id: b1, zone: aisle-2, kind: eddystone, namespace: edd1ebeac04e5defa017, instance: "000000000001"}
"""


def bench_ble(quick: bool) -> dict[str, float]:
    """Adverts per second through TrafficProcessor.feed (80 % phones, 20 % beacon frames), plus tick cost."""
    n = 50_000 if quick else 400_000
    manifest = parse_manifest(demo_manifest_text().replace("devices: []\n", _DEVICES), "bench")
    t0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
    proc = TrafficProcessor(manifest, ManualClock(t0))
    rng = random.Random(5)
    phones = [":".join(f"{rng.randrange(256):02X}" for _ in range(6)) for _ in range(300)]
    ib = {0x004C: encode_ibeacon("e2c56db5-dffb-48d2-b060-d0f5a71096e0", 1, 1, -59)}
    uid = {EDDYSTONE_UUID: encode_eddystone_uid("edd1ebeac04e5defa017", "000000000001", -20)}
    tlm = {EDDYSTONE_UUID: encode_eddystone_tlm(2900, 21.0, 10, 100.0)}
    apple = {0x004C: b"\x10\x05\x03\x1c\x00\x8a\x3f"}
    adverts = []
    for i in range(n):
        now = t0 + timedelta(milliseconds=i)
        dev = f"ble-{i % 3}"
        r = i % 10
        if r == 0:
            a = Advert(device_id=dev, time=now, address="C0:00:00:00:00:01", rssi=-60, manufacturer_data=ib)
        elif r == 1:
            a = Advert(device_id=dev, time=now, address="C0:00:00:00:00:02", rssi=-70,
                       service_data=uid if i % 20 == 1 else tlm)
        else:
            a = Advert(device_id=dev, time=now, address=phones[i % len(phones)], rssi=rng.randint(-95, -55),
                       manufacturer_data=apple)
        adverts.append(a)
    start = time.perf_counter()
    for a in adverts:
        proc.feed(a, a.time)
    feed_s = time.perf_counter() - start
    start = time.perf_counter()
    ticks = 100
    for k in range(ticks):
        proc.tick(adverts[-1].time + timedelta(seconds=k))
    tick_s = time.perf_counter() - start
    return {"ble_adverts_per_s": n / feed_s, "ble_tick_ms": 1000 * tick_s / ticks}


if __name__ == "__main__":
    print(bench_ble(quick=True))
