"""Anonymous zone presence from BLE sightings: smoothed RSSI per (device, scanner), zones with hysteresis.

Pure and clock-free: every call gets `t` (seconds, any monotonic origin). Devices are known only by an
opaque key (the processor passes a rotating keyed pseudonym, never an address). Raw sightings are kept at
most `sighting_ttl_s`. A device is *in* a zone once the zone's scanner hears it at `enter_rssi` or better
for `hold_s`; it *moves* to another zone only when that zone beats the current one by `switch_margin_db`
for `hold_s` (so a single RSSI spike never moves it), and it *leaves* when its zone has not heard it at
`exit_rssi` or better for `exit_after_s`. Dwell = last good sighting - entry.
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.ble.config import PresenceConfig

_NEG_INF = float("-inf")


@dataclass(frozen=True, slots=True)
class ZoneEntered:
    """`key` entered `zone` at `t`."""

    key: str
    zone: str
    t: float


@dataclass(frozen=True, slots=True)
class ZoneExited:
    """`key` left `zone`; `t` is its last good sighting there, `dwell_s` the time spent."""

    key: str
    zone: str
    t: float
    dwell_s: float


Transition = ZoneEntered | ZoneExited


class _Sighting:
    __slots__ = ("last_t", "rssi", "zone")

    def __init__(self, zone: str, rssi: float, t: float) -> None:
        self.zone = zone
        self.rssi = rssi
        self.last_t = t


class _Device:
    __slots__ = ("cand", "cand_since", "entered_t", "last_good_t", "sightings", "zone")

    def __init__(self) -> None:
        self.sightings: dict[str, _Sighting] = {}
        self.zone: str | None = None
        self.entered_t = 0.0
        self.last_good_t = 0.0
        self.cand: str | None = None
        self.cand_since = 0.0


class PresenceTracker:
    """Zone presence of anonymous devices; `observe` per sighting, `tick` for exits and expiry."""

    def __init__(self, cfg: PresenceConfig) -> None:
        self.cfg = cfg
        self._alpha = cfg.smoothing
        self._floor = cfg.exit_rssi - 10.0
        self._candidate_fresh_s = max(2 * cfg.hold_s, 5.0)
        self._devices: dict[str, _Device] = {}
        self._present: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self._devices)

    def present(self) -> dict[str, int]:
        """Zone -> number of devices in it now."""
        return {z: len(keys) for z, keys in self._present.items() if keys}

    def zone_of(self, key: str) -> str | None:
        """The zone `key` is in now, if any."""
        dev = self._devices.get(key)
        return dev.zone if dev else None

    def observe(self, key: str, scanner: str, zone: str, rssi: float, t: float) -> list[Transition]:
        """One sighting of `key` by `scanner` (which covers `zone`) at `rssi` dBm."""
        dev = self._devices.get(key)
        if dev is None:
            dev = self._devices[key] = _Device()
        s = dev.sightings.get(scanner)
        if s is None or t - s.last_t > self.cfg.exit_after_s:
            # a new (or long-silent) sighting starts from the floor and has to climb: one loud sample
            # (a phone held against the scanner, a reflection) cannot put a device in a zone by itself
            s = dev.sightings[scanner] = _Sighting(zone, self._floor, t)
        s.rssi += self._alpha * (rssi - s.rssi)
        s.last_t = t
        return self._evaluate(key, dev, t)

    def _evaluate(self, key: str, dev: _Device, t: float) -> list[Transition]:
        cfg = self.cfg
        fresh_after = t - cfg.exit_after_s
        candidate_after = t - self._candidate_fresh_s  # only recently heard scanners can win a device
        best_zone: str | None = None
        best = _NEG_INF
        cur = _NEG_INF
        for s in dev.sightings.values():
            if s.last_t < fresh_after:
                continue
            if s.rssi > best and s.last_t >= candidate_after:
                best, best_zone = s.rssi, s.zone
            if s.zone == dev.zone and s.rssi > cur:
                cur = s.rssi
        if dev.zone is not None and cur >= cfg.exit_rssi:
            dev.last_good_t = t
        if best_zone is None or best < cfg.enter_rssi or best_zone == dev.zone:
            dev.cand = None
            return []
        if dev.zone is not None and best < cur + cfg.switch_margin_db:
            dev.cand = None
            return []
        if dev.cand != best_zone:
            dev.cand, dev.cand_since = best_zone, t
            if cfg.hold_s > 0:
                return []
        if t - dev.cand_since < cfg.hold_s:
            return []
        out: list[Transition] = []
        if dev.zone is not None:
            out.append(self._leave(key, dev, t))
        dev.zone, dev.entered_t, dev.last_good_t, dev.cand = best_zone, t, t, None
        self._present.setdefault(best_zone, set()).add(key)
        out.append(ZoneEntered(key, best_zone, t))
        return out

    def _leave(self, key: str, dev: _Device, t: float) -> ZoneExited:
        zone = dev.zone
        assert zone is not None
        self._present[zone].discard(key)
        dev.zone = None
        return ZoneExited(key, zone, t, max(0.0, t - dev.entered_t))

    def tick(self, t: float) -> list[Transition]:
        """Exits of devices not heard well enough for `exit_after_s`; forget stale raw sightings."""
        cfg = self.cfg
        out: list[Transition] = []
        ttl_before = t - cfg.sighting_ttl_s
        for key in list(self._devices):
            dev = self._devices[key]
            if dev.zone is not None and t - dev.last_good_t >= cfg.exit_after_s:
                out.append(self._leave(key, dev, dev.last_good_t))
            stale = [sc for sc, s in dev.sightings.items() if s.last_t < ttl_before]
            for sc in stale:
                del dev.sightings[sc]
            if not dev.sightings and dev.zone is None:
                del self._devices[key]
        return out

    def flush(self, t: float) -> list[Transition]:
        """Everyone leaves now and every sighting is forgotten (key rotation, shutdown)."""
        out: list[Transition] = [self._leave(k, d, min(t, d.last_good_t)) for k, d in self._devices.items()
                                 if d.zone is not None]
        self._devices.clear()
        self._present.clear()
        return out
