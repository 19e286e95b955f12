"""BLE stage of the traffic processor: adverts -> beacon health alerts and anonymous zone presence.

Pure: no I/O, no clock reads, no logging. The raw Bluetooth address of an advert is turned into a keyed,
rotating pseudonym (`privacy.AddressHasher`) on arrival and goes no further: presence, the beacon links
and the aggregates only ever see the pseudonym. Adverts carrying a beacon frame (or from an address that
sent one) are beacons: registered ones feed health, staff badges feed staff entries, unknown ones are
ignored. Everything else (phones, watches) feeds zone presence.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from datetime import datetime

from drivers.ble.adverts import EddystoneTlm, parse_frames
from drivers.ble.beacons import BeaconHealth, BeaconRegistry, HealthChange
from drivers.ble.config import BeaconConfig
from drivers.ble.events import BeaconBatteryLow, BeaconRecovered, BeaconSilent
from drivers.ble.presence import PresenceTracker, Transition, ZoneEntered
from drivers.ble.privacy import AddressHasher
from drivers.ble.reads import Advert
from drivers.door.config import TrafficConfig
from drivers.traffic.aggregate import TrafficAggregator
from edge.clock import utc
from edge.events import Event

SOURCE = "beacons"


class BleProcessor:
    """Adverts in; beacon alert events out; presence transitions pushed into the traffic aggregator."""

    def __init__(
        self,
        beacons: Sequence[BeaconConfig],
        scanners: dict[str, str],
        traffic: TrafficConfig,
        aggregator: TrafficAggregator,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.registry = BeaconRegistry(beacons)
        self.health = BeaconHealth(beacons)
        self.scanners = scanners  # ble device id -> zone
        self.traffic = traffic
        self.presence = PresenceTracker(traffic.presence)
        self.hasher = AddressHasher(traffic.presence.key_rotation_s, traffic.presence.hash_bytes, random)
        self.agg = aggregator
        self._links: dict[str, tuple[str, float]] = {}  # pseudonym -> (beacon id, last t)
        self._staff_last: dict[str, float] = {}
        self.adverts = 0
        self.malformed: dict[str, tuple[int, str]] = {}  # device -> (count since last report, last reason)
        self.dropped = 0

    def feed(self, a: Advert, now: datetime) -> list[Event]:
        """One advert."""
        self.adverts += 1
        t = now.timestamp()
        out: list[Event] = []
        if self.hasher.maybe_rotate(now):
            self._rotate(now)
        frames, errors = parse_frames(a.manufacturer_data, a.service_data)
        if errors:
            n, _ = self.malformed.get(a.device_id, (0, ""))
            self.malformed[a.device_id] = (n + len(errors), errors[-1].reason)
        key = self.hasher.pseudonym(a.address)
        if not frames and not errors:
            link = self._links.get(key)
            if link is None:
                if self.traffic.presence.enabled:
                    zone = self.scanners.get(a.device_id)
                    if zone is not None:
                        self._apply(self.presence.observe(key, a.device_id, zone, float(a.rssi), t), now)
                return out
        beacon_id: str | None = None
        tlm: EddystoneTlm | None = None
        for f in frames:
            if isinstance(f, EddystoneTlm):
                tlm = f
                continue
            b = self.registry.match(f)
            if b is not None:
                beacon_id = b.id
        if beacon_id is None:
            link = self._links.get(key)
            beacon_id = link[0] if link else None
        if beacon_id is None:
            if frames:  # a beacon, but not ours: remember the address is a beacon, keep it out of presence
                self._links[key] = ("", t)
            return out
        self._links[key] = (beacon_id, t)
        if not beacon_id:
            return out
        out += self._health(self.health.seen(beacon_id, t), now)
        if tlm is not None and tlm.battery_mv is not None:
            out += self._health(self.health.battery(beacon_id, tlm.battery_mv, t), now)
        self._staff(beacon_id, a.device_id, t, now)
        return out

    def tick(self, now: datetime) -> list[Event]:
        """Silence alerts, presence exits, expiry of raw sightings and beacon links."""
        t = now.timestamp()
        if self.hasher.maybe_rotate(now):
            self._rotate(now)
        self._apply(self.presence.tick(t), now)
        ttl = self.traffic.presence.sighting_ttl_s
        for k in [k for k, (_, lt) in self._links.items() if t - lt > ttl]:
            del self._links[k]
        return self._health(self.health.tick(t), now)

    # ---- internals ----
    def _rotate(self, now: datetime) -> None:
        self._apply(self.presence.flush(now.timestamp()), now)
        self._links.clear()

    def _apply(self, transitions: list[Transition], now: datetime) -> None:
        for tr in transitions:
            if isinstance(tr, ZoneEntered):
                self.agg.entered(tr.zone, tr.key, now)
            else:
                self.agg.exited(tr.zone, tr.key, tr.dwell_s, now)

    def _staff(self, beacon_id: str, scanner: str, t: float, now: datetime) -> None:
        cfg = self.registry.beacons[beacon_id]
        if not cfg.staff_badge:
            return
        last = self._staff_last.get(beacon_id)
        self._staff_last[beacon_id] = t
        if self.scanners.get(scanner) in self.traffic.entrance_zones and (
            last is None or t - last >= self.traffic.staff_absent_s
        ):
            self.agg.staff_entry(now)

    def _health(self, changes: list[HealthChange], now: datetime) -> list[Event]:
        out: list[Event] = []
        for c in changes:
            b = self.registry.beacons[c.beacon]
            if c.state == "recovered":
                out.append(BeaconRecovered(source=SOURCE, time=now, subject=b.id, beacon=b.id, zone=b.zone,
                                           condition=c.condition, battery_mv=c.battery_mv))
            elif c.condition == "battery_low":
                out.append(BeaconBatteryLow(source=SOURCE, time=now, subject=b.id, beacon=b.id, zone=b.zone,
                                            battery_mv=c.battery_mv or 0, threshold_mv=b.low_battery_mv))
            else:
                out.append(BeaconSilent(source=SOURCE, time=now, subject=b.id, beacon=b.id, zone=b.zone,
                                        last_seen=utc(c.last_seen_t) if c.last_seen_t is not None else None,
                                        silent_after_s=b.silent_after_s))
        return out
