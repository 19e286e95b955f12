"""Beacon registry and health: one alert per condition, one recovery, no flapping."""

from __future__ import annotations

from drivers.ble.adverts import EddystoneUid, IBeacon
from drivers.ble.beacons import BeaconHealth, BeaconRegistry
from drivers.ble.config import BeaconConfig

B1 = BeaconConfig(id="b1", zone="aisle-1", kind="ibeacon", uuid="E2C56DB5-DFFB-48D2-B060-D0F5A71096E0",
                  major=1, minor=2, silent_after_s=60, low_battery_mv=2500)
B2 = BeaconConfig(id="b2", zone="aisle-2", kind="eddystone", namespace="00112233445566778899",
                  instance="AABBCCDDEEFF", silent_after_s=30)


def test_registry_matches_frames() -> None:
    reg = BeaconRegistry([B1, B2])
    assert reg.match(IBeacon(uuid="e2c56db5-dffb-48d2-b060-d0f5a71096e0", major=1, minor=2, tx_power=-59)) is B1
    assert reg.match(IBeacon(uuid="e2c56db5-dffb-48d2-b060-d0f5a71096e0", major=1, minor=3, tx_power=-59)) is None
    assert reg.match(EddystoneUid(namespace="00112233445566778899", instance="aabbccddeeff", tx_power=0)) is B2


def test_battery_one_alert_one_recovery() -> None:
    h = BeaconHealth([B1])
    changes = []
    for t, mv in enumerate([2700, 2600, 2499, 2450, 2520, 2480, 2400, 2590, 3000, 3000, 2000]):
        changes += h.battery("b1", mv, float(t))
    assert [(c.condition, c.state, c.battery_mv) for c in changes] == [
        ("battery_low", "alert", 2499),
        ("battery_low", "recovered", 3000),  # 2520/2590 are inside the 100 mV recovery margin
        ("battery_low", "alert", 2000),
    ]


def test_silence_one_alert_one_recovery() -> None:
    h = BeaconHealth([B1, B2])
    changes = h.tick(0.0)
    changes += h.seen("b1", 1.0)
    for t in range(2, 200):
        changes += h.tick(float(t))
    assert [(c.beacon, c.state, c.t) for c in changes] == [("b2", "alert", 30.0), ("b1", "alert", 61.0)]
    changes = h.seen("b1", 200.0) + h.seen("b1", 201.0) + h.tick(202.0)
    assert [(c.beacon, c.condition, c.state) for c in changes] == [("b1", "silent", "recovered")]
    assert h.status()["b2"]["silent"] is True
