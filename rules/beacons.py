"""The beacon health rule, pure: a store beacon's low battery or silence becomes a staff alert.

Fed by the BLE traffic processor's events (drivers/ble/events.py), matched on their CloudEvents type and
fields only (rules never import drivers): `retail.beacon.battery_low.v1` {beacon, zone, battery_mv,
threshold_mv} opens a `beacon_battery_low` alert, `retail.beacon.silent.v1` {beacon, zone, last_seen,
silent_after_s} a `beacon_silent` alert (device = the beacon id, the message says why: "battery 2400 mV,
below 2500 mV" / "not heard since 2026-01-05T10:00:00Z"), and `retail.beacon.recovered.v1` {beacon,
condition: battery_low | silent, battery_mv} resolves the alert of that condition. The processor already
debounces (silent_after_s, a battery margin), so the alert opens at once.

While a condition holds the alert never expires (`beacon_condition_holds`). After a restart the beacon
processor starts afresh: an alert restored from the table is held again once the processor announces the
condition again; a restored alert it never announces again expires after the rules' `expire_after_s`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from rules.actions import BEACON_BATTERY_LOW, BEACON_SILENT, Action, AlertClear, AlertRaise

BATTERY_LOW = "retail.beacon.battery_low.v1"
SILENT = "retail.beacon.silent.v1"
RECOVERED = "retail.beacon.recovered.v1"
EVENT_TYPES = frozenset({BATTERY_LOW, SILENT, RECOVERED})
BEACON_FIELDS = ("beacon", "battery_mv", "threshold_mv", "last_seen", "silent_after_s", "condition")
"""The event fields `beacon_seen` reads."""
CONDITION_KIND = {"battery_low": BEACON_BATTERY_LOW, "silent": BEACON_SILENT}
MV_MAX = 100_000
"""Battery figures outside 0..MV_MAX mV are not believed (left out of the message)."""

BeaconKey = tuple[str, str]  # (kind, beacon)
BeaconState = frozenset[BeaconKey]
"""The beacon conditions that currently hold."""


@dataclass(frozen=True, slots=True)
class BeaconSeen:
    """Input: a beacon condition started (`on`, with what to tell staff) or ended."""

    kind: str
    beacon: str
    on: bool
    detail: str = ""


def _mv(v: object) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MV_MAX else None


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="seconds").replace("+00:00", "Z")


def beacon_seen(event_type: str, data: Mapping[str, object]) -> BeaconSeen | None:
    """The rule input of one beacon event (type + payload fields); None when it is none we know."""
    beacon = data.get("beacon")
    if not isinstance(beacon, str) or not beacon:
        return None
    if event_type == BATTERY_LOW:
        mv, threshold = _mv(data.get("battery_mv")), _mv(data.get("threshold_mv"))
        detail = "battery low"
        if mv is not None:
            detail = f"battery {mv} mV" + (f", below {threshold} mV" if threshold is not None else "")
        return BeaconSeen(BEACON_BATTERY_LOW, beacon, True, detail)
    if event_type == SILENT:
        last = data.get("last_seen")
        if isinstance(last, datetime) and last.tzinfo is not None:
            detail = f"not heard since {_iso(last)}"
        else:
            after = data.get("silent_after_s")
            detail = "never heard"
            if isinstance(after, int | float) and not isinstance(after, bool) and 0 <= after < 1e9:
                detail += f" (silent for {after:.0f} s)"
        return BeaconSeen(BEACON_SILENT, beacon, True, detail)
    if event_type == RECOVERED:
        kind = CONDITION_KIND.get(str(data.get("condition")))
        if kind is None:
            return None
        mv = _mv(data.get("battery_mv"))
        detail = "heard again" if kind == BEACON_SILENT else "battery replaced" + (f" ({mv} mV)" if mv else "")
        return BeaconSeen(kind, beacon, False, detail)
    return None


def step_beacons(state: BeaconState, seen: BeaconSeen) -> tuple[BeaconState, list[Action]]:
    """Apply a beacon condition change; return the new state and the alert actions."""
    key = (seen.kind, seen.beacon)
    if seen.on:
        if key in state:
            return state, []
        return state | {key}, [AlertRaise(kind=seen.kind, device=seen.beacon, message=f"beacon {seen.beacon}: "
                                          f"{seen.detail}")]
    return state - {key}, [AlertClear(kind=seen.kind, device=seen.beacon, reason=seen.detail)]


def beacon_condition_holds(state: BeaconState, kind: str, beacon: str) -> bool:
    """True while the beacon's condition holds (its alert stays open, never expires)."""
    return (kind, beacon) in state
