"""Store beacon registry (manifest `beacons:`) and beacon health: low battery and silence, with recovery.

Pure and clock-free (`t` in seconds). Every condition raises exactly one alert when it starts and exactly
one recovery when it ends; a battery counts as recovered only `battery_margin_mv` above the threshold, so a
voltage hovering at the threshold does not flap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from drivers.ble.adverts import BeaconFrame, EddystoneUid, IBeacon
from drivers.ble.config import BeaconConfig


class BeaconRegistry:
    """Matches parsed frames to the store's beacons."""

    def __init__(self, beacons: Sequence[BeaconConfig]) -> None:
        self.beacons = {b.id: b for b in beacons}
        self._by_key = {b.key(): b for b in beacons}

    def match(self, frame: BeaconFrame) -> BeaconConfig | None:
        """The registered beacon that sent `frame` (iBeacon or Eddystone-UID frames identify a beacon)."""
        if isinstance(frame, IBeacon):
            return self._by_key.get(("ibeacon", frame.uuid, str(frame.major), str(frame.minor)))
        if isinstance(frame, EddystoneUid):
            return self._by_key.get(("eddystone", frame.namespace, frame.instance))
        return None


@dataclass(frozen=True, slots=True)
class HealthChange:
    """A beacon condition started (`alert`) or ended (`recovered`)."""

    beacon: str
    condition: str  # "battery_low" | "silent"
    state: str  # "alert" | "recovered"
    t: float
    battery_mv: int | None = None
    last_seen_t: float | None = None


class _State:
    __slots__ = ("battery_mv", "last_seen", "low", "silent")

    def __init__(self) -> None:
        self.last_seen: float | None = None
        self.battery_mv: int | None = None
        self.silent = False
        self.low = False


class BeaconHealth:
    """Tracks every registered beacon; `seen`/`battery` on adverts, `tick` for silence."""

    def __init__(self, beacons: Sequence[BeaconConfig], battery_margin_mv: int = 100) -> None:
        self._cfg = {b.id: b for b in beacons}
        self._state = {b.id: _State() for b in beacons}
        self._margin = battery_margin_mv
        self._start: float | None = None

    def status(self) -> dict[str, dict[str, object]]:
        """Beacon id -> last_seen_t, battery_mv, silent, battery_low (for the API)."""
        return {b: {"last_seen_t": s.last_seen, "battery_mv": s.battery_mv, "silent": s.silent,
                    "battery_low": s.low} for b, s in self._state.items()}

    def seen(self, beacon: str, t: float) -> list[HealthChange]:
        """The beacon was heard."""
        if self._start is None:
            self._start = t
        st = self._state.get(beacon)
        if st is None:
            return []
        st.last_seen = t
        if st.silent:
            st.silent = False
            return [HealthChange(beacon, "silent", "recovered", t, st.battery_mv, t)]
        return []

    def battery(self, beacon: str, mv: int, t: float) -> list[HealthChange]:
        """A TLM frame of the beacon reported `mv`."""
        st = self._state.get(beacon)
        if st is None:
            return []
        st.battery_mv = mv
        threshold = self._cfg[beacon].low_battery_mv
        if not st.low and mv < threshold:
            st.low = True
            return [HealthChange(beacon, "battery_low", "alert", t, mv, st.last_seen)]
        if st.low and mv >= threshold + self._margin:
            st.low = False
            return [HealthChange(beacon, "battery_low", "recovered", t, mv, st.last_seen)]
        return []

    def tick(self, t: float) -> list[HealthChange]:
        """Silence alerts for beacons unheard past their `silent_after_s` (counted from start if never heard)."""
        if self._start is None:
            self._start = t
        out: list[HealthChange] = []
        for bid, st in self._state.items():
            since = st.last_seen if st.last_seen is not None else self._start
            if not st.silent and t - since >= self._cfg[bid].silent_after_s:
                st.silent = True
                out.append(HealthChange(bid, "silent", "alert", t, st.battery_mv, st.last_seen))
        return out
