"""The device fault rule, pure: a device offline or faulty for longer than a grace period raises an alert.

Fed from `DeviceStatusChanged` events (`edge.events`); cleared when the device reports online again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from rules.actions import DEVICE_FAULT, DEVICE_OFFLINE, Action, AlertClear, AlertRaise

BAD_STATES = frozenset({"offline", "fault"})


@dataclass(frozen=True, slots=True)
class DeviceWatch:
    """A device currently not online: since when, and which alert kind is open for it (if any)."""

    state: str
    since: datetime
    error: str | None = None
    active: str | None = None


FaultState = Mapping[str, DeviceWatch]


@dataclass(frozen=True, slots=True)
class DeviceSeen:
    """Input: a device changed state."""

    device: str
    state: str
    error: str | None = None


def step_faults(
    grace_s: float, state: FaultState, seen: DeviceSeen | None, now: datetime
) -> tuple[FaultState, list[Action]]:
    """Apply a device status change (or just time, when `seen` is None); return state and actions."""
    out = dict(state)
    actions: list[Action] = []
    if seen is not None:
        old = out.get(seen.device)
        if seen.state in BAD_STATES:
            since = old.since if old is not None else now
            out[seen.device] = DeviceWatch(seen.state, since, seen.error, old.active if old else None)
        elif old is not None:
            del out[seen.device]
            if old.active is not None:
                actions.append(AlertClear(kind=old.active, device=seen.device, reason="device back online"))
    for device, w in list(out.items()):
        if w.active is None and (now - w.since).total_seconds() >= grace_s:
            kind = DEVICE_FAULT if w.state == "fault" else DEVICE_OFFLINE
            out[device] = DeviceWatch(w.state, w.since, w.error, kind)
            actions.append(
                AlertRaise(
                    kind=kind,
                    device=device,
                    message=f"device {device} is {w.state}" + (f": {w.error}" if w.error else ""),
                )
            )
    return out, actions
