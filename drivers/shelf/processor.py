"""The shelf processor: weight samples of every shelf device -> StockUpdate(count=..., origin="weight").

One `LaneEngine` per (device, shelf, lane), created on the lane's first sample from the planogram (SKU,
capacity, unit weight of the lane or the catalog) and the device section (tare, counting parameters). Lanes
holding the same SKU on one shelf are summed into one shelf x SKU count, reported once all of them have a
count.

Trust: while any lane of a shelf x SKU cell has a fault or an unknown object, the cell is flagged stale
(`StockFlag(flag="stale", on=True)`) and its last count is held, never updated from that lane; the flag
comes off when every such lane settled at a plausible load again. Lane faults and unknown objects are
reported as event pairs (`drivers/shelf/events.py`) for the rules engine's staff alerts.

State: the tare that zero tracking moved is saved as a row of the `shelf_tares` table (an
`edge.runtime.Upsert`, committed with the events beside it) and given back at start (`restore_state`), so
a restart does not fall back to the manifest's tare. A saved tare is used only while the manifest's tare of
that lane is the one it was tracked from (re-configuring a lane starts over).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

from drivers.shelf.config import CountingConfig, LaneMap, ShelfConfigBase
from drivers.shelf.engine import (
    CAPACITY,
    COUNT,
    DOUBT,
    FAULT,
    FAULT_CLEARED,
    MAX_ABS_GRAMS,
    NEGATIVE,
    RESIDUAL,
    RISE,
    SETTLED,
    TARE,
    UNKNOWN,
    Decision,
    LaneEngine,
)
from drivers.shelf.events import (
    ShelfCountChanged,
    ShelfFault,
    ShelfFaultCleared,
    ShelfUnknownObject,
    ShelfUnknownObjectCleared,
)
from drivers.shelf.reads import WeightFault, WeightSample, WeightSamples
from edge.clock import Clock
from edge.config import Manifest
from edge.driver import DeviceOffline, Reading
from edge.events import Event
from edge.processing import BatchFailed, Output, StockFlag, StockUpdate
from edge.runtime import Upsert

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TARE_TABLE = "shelf_tares"

FAULT_TEXT = {
    "nan": "load cell gives no reading",
    "range": "load cell reading out of range",
    "stuck": "load cell stuck (repeats the same value)",
    "timeout": "load cell not responding",
    "offline": "shelf controller offline",
    "crc": "garbled data from the shelf (checksum errors)",
    "adc": "load cell ADC fault",
    "exception": "weight transmitter refuses requests",
    "short": "weight transmitter sends incomplete answers",
}


def _unknown_text(code: str, capacity: int | None) -> str:
    return {
        RESIDUAL: "object on the shelf (the weight is no whole number of items)",
        CAPACITY: f"object on the shelf (more weight than the lane holds: {capacity} items)",
        RISE: "object on the shelf (a sudden load that is no restock)",
        NEGATIVE: "less weight than the empty lane (tray moved or tare wrong)",
    }.get(code, "object on the shelf")


def _time(seconds: float | None) -> datetime | None:
    return None if seconds is None else _EPOCH + timedelta(seconds=seconds)


class _Lane:
    __slots__ = ("config_tare", "device", "engine", "lane", "saved_tare", "shelf", "sku", "unknown_since")

    def __init__(self, device: str, shelf: str, lane: str, sku: str, engine: LaneEngine, *, config_tare: float) -> None:
        self.device = device
        self.shelf = shelf
        self.lane = lane
        self.sku = sku
        self.engine = engine
        self.config_tare = config_tare
        self.saved_tare = engine.tare
        self.unknown_since: datetime | None = None  # an unknown object was reported and has not cleared


class _LaneIds(TypedDict):
    source: str
    time: datetime
    subject: str
    shelf: str
    lane: str
    sku: str


def _ids(lane: _Lane, when: datetime) -> _LaneIds:
    """The envelope and ids every lane event carries."""
    return _LaneIds(source=lane.device, time=when, subject=lane.shelf, shelf=lane.shelf, lane=lane.lane,
                    sku=lane.sku)


class ShelfProcessor:
    """Turns `WeightSample`/`WeightFault` readings into stock counts, stale flags and shelf events."""

    reading_types: tuple[type[Reading], ...] = (WeightSample, WeightSamples, WeightFault, DeviceOffline)
    state_table = TARE_TABLE  # the gateway gives this table's rows to `restore_state` at start

    def __init__(self, manifest: Manifest, clock: Clock) -> None:
        self._manifest = manifest
        self._lanes: dict[tuple[str, str, str], _Lane] = {}
        self._devices: dict[str, ShelfConfigBase] = {
            d.id: d for d in manifest.typed_devices() if isinstance(d, ShelfConfigBase)
        }
        # (shelf, sku) -> planogram lanes weighed by some device; the sum is reported when all have a count
        self._weighed: dict[tuple[str, str], set[str]] = {}
        for dev in self._devices.values():
            for m in dev.lanes:
                sku = self._sku_of(m.shelf, m.lane)
                if sku is not None:
                    self._weighed.setdefault((m.shelf, sku), set()).add(m.lane)
        self._lane_counts: dict[tuple[str, str], dict[str, int]] = {}
        # (shelf, sku) -> lanes whose count cannot be trusted now (fault or unknown object)
        self._stale: dict[tuple[str, str], set[str]] = {}
        self._restored: dict[tuple[str, str, str], tuple[float, float]] = {}  # key -> (tare, config tare)
        self.unmapped = 0  # samples for lanes that are not in the planogram

    def restore_state(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Saved tares (rows of `shelf_tares`) to start from instead of the manifest's; bad rows are skipped."""
        for row in rows:
            try:
                key = (str(row["device"]), str(row["shelf"]), str(row["lane"]))
                tare, config_tare = float(row["tare_g"]), float(row["config_tare_g"])
            except (KeyError, TypeError, ValueError):
                continue
            if abs(tare) <= MAX_ABS_GRAMS and abs(config_tare) <= MAX_ABS_GRAMS:  # NaN fails too
                self._restored[key] = (tare, config_tare)

    def _sku_of(self, shelf_id: str, lane_id: str) -> str | None:
        shelf = self._manifest.shelf(shelf_id)
        lane = next((ln for ln in shelf.lanes if ln.id == lane_id), None) if shelf else None
        return lane.sku if lane else None

    def _lane(self, device: str, shelf_id: str, lane_id: str) -> _Lane | None:
        key = (device, shelf_id, lane_id)
        lane = self._lanes.get(key)
        if lane is not None:
            return lane
        shelf = self._manifest.shelf(shelf_id)
        plan = next((ln for ln in shelf.lanes if ln.id == lane_id), None) if shelf else None
        if plan is None:
            return None
        dev = self._devices.get(device)
        lane_map: LaneMap | None = None
        if dev is not None:
            lane_map = next((m for m in dev.lanes if m.shelf == shelf_id and m.lane == lane_id), None)
        item = self._manifest.sku(plan.sku)
        unit = (
            (lane_map.unit_weight_g if lane_map else None)
            or plan.unit_weight_g
            or (item.unit_weight_g if item else None)
        )
        if unit is None:
            return None
        params = dev.counting if dev is not None else CountingConfig()
        config_tare = lane_map.tare_g if lane_map else 0.0
        saved = self._restored.get(key)
        tare = saved[0] if saved is not None and saved[1] == config_tare else config_tare
        engine = LaneEngine(unit, tare, params, plan.capacity)
        lane = _Lane(device, shelf_id, lane_id, plan.sku, engine, config_tare=config_tare)
        self._lanes[key] = lane
        self._weighed.setdefault((shelf_id, plan.sku), set()).add(lane_id)
        return lane

    def feed(self, reading: Reading, now: datetime) -> Sequence[Output | Upsert]:
        """Handle one sample, a batch of samples, a failed sample, or the news that a shelf device went offline."""
        if isinstance(reading, WeightSamples):
            return self._samples(reading)
        if isinstance(reading, WeightSample):
            lane = self._lane(reading.device_id, reading.shelf, reading.lane)
            if lane is None:
                self.unmapped += 1
                return ()
            d = lane.engine.feed((reading.time - _EPOCH).total_seconds(), reading.grams, reading.stable)
            return () if d is None else self._outputs(lane, d, reading.time)
        if isinstance(reading, WeightFault):
            lane = self._lane(reading.device_id, reading.shelf, reading.lane)
            if lane is None:
                self.unmapped += 1
                return ()
            d = lane.engine.fail((reading.time - _EPOCH).total_seconds(), reading.code)
            return () if d is None else self._outputs(lane, d, reading.time)
        if isinstance(reading, DeviceOffline):
            out: list[Output | Upsert] = []
            t = (reading.time - _EPOCH).total_seconds()
            for lane in self._lanes.values():
                if lane.device == reading.device_id:
                    d = lane.engine.offline(t)
                    if d is not None:
                        out.extend(self._outputs(lane, d, reading.time))
            return out
        return ()

    def _samples(self, batch: WeightSamples) -> list[Output | Upsert]:
        """A batch, sample by sample in order, as `feed` takes a `WeightSample` (one time for all of them)."""
        when = batch.time
        t = (when - _EPOCH).total_seconds()
        dev = batch.device_id
        lanes = self._lanes
        out: list[Output | Upsert] = []
        failed = 0
        first: Exception | None = None
        for shelf, lane_id, grams, stable in batch.samples:
            try:
                lane = lanes.get((dev, shelf, lane_id)) or self._lane(dev, shelf, lane_id)
                if lane is None:
                    self.unmapped += 1
                    continue
                d = lane.engine.feed(t, grams, stable)
                if d is not None:
                    out += self._outputs(lane, d, when)
            except Exception as exc:  # one sample's failure must not lose the others' outputs (the pipeline counts it)
                failed += 1
                first = first or exc
        if first is not None:
            raise BatchFailed(out, failed) from first
        return out

    def tick(self, now: datetime) -> Sequence[Output | Upsert]:
        """Report lanes that went silent."""
        t = (now - _EPOCH).total_seconds()
        out: list[Output | Upsert] = []
        for lane in self._lanes.values():
            d = lane.engine.tick(t)
            if d is not None:
                out.extend(self._outputs(lane, d, now))
        return out

    def lane_engine(self, device: str, shelf: str, lane: str) -> LaneEngine | None:
        """The engine of one lane, if it has had a sample (for the API and tests)."""
        entry = self._lanes.get((device, shelf, lane))
        return entry.engine if entry else None

    def stale_cells(self) -> dict[tuple[str, str], set[str]]:
        """(shelf, sku) -> lanes that make the cell's count stale now (for the API and tests)."""
        return {cell: set(lanes) for cell, lanes in self._stale.items() if lanes}

    # ---- outputs ------------------------------------------------------------------------------

    def _flag(self, lane: _Lane, on: bool, when: datetime, reason: str) -> list[Output | Upsert]:
        """Mark the lane (un)trusted; a StockFlag when its cell's state changes."""
        cell = (lane.shelf, lane.sku)
        bad = self._stale.setdefault(cell, set())
        was = bool(bad)
        if on:
            bad.add(lane.lane)
        else:
            bad.discard(lane.lane)
        if was == bool(bad):
            return []
        return [StockFlag(shelf=lane.shelf, sku=lane.sku, time=when, origin="weight", source=lane.device,
                          flag="stale", on=on, reason=reason)]

    def _outputs(self, lane: _Lane, d: Decision, when: datetime) -> list[Output | Upsert]:
        if d.kind == COUNT and d.count is not None:
            return self._count(lane, d, when)
        if d.kind == SETTLED:
            return self._resolved(lane, d, when)
        if d.kind == DOUBT:  # no event yet (that waits for unknown_after_s), but the count is not served as true
            return self._flag(lane, True, _time(d.since) or when,
                              f"lane {lane.lane}: {_unknown_text(d.code, lane.engine.capacity)}")
        if d.kind == TARE:
            lane.saved_tare = d.grams
            return [Upsert(TARE_TABLE, {
                "device": lane.device, "shelf": lane.shelf, "lane": lane.lane, "tare_g": round(d.grams, 3),
                "config_tare_g": lane.config_tare, "updated": when.isoformat(),
            })]
        if d.kind == UNKNOWN:
            text = _unknown_text(d.code, lane.engine.capacity)
            since = _time(d.since)
            lane.unknown_since = since or when
            event: Event = ShelfUnknownObject(
                **_ids(lane, when),
                net_g=round(d.grams, 1),
                residual_units=round(d.residual_units, 3),
                held_count=d.count,
                code=d.code,
                reason=text,
                since=since,
            )
            return self._trouble(lane, since or when, text, event)
        if d.kind == FAULT:
            text = FAULT_TEXT.get(d.code, f"load cell fault {d.code}")
            since = _time(d.since)
            fault = ShelfFault(
                **_ids(lane, when),
                device=lane.device,
                code=d.code,
                held_count=d.count,
                reason=text,
                since=since,
            )
            return self._trouble(lane, since or when, text, fault)
        if d.kind == FAULT_CLEARED:
            # good samples again; the count is trusted again once the lane settled (SETTLED or COUNT)
            return [
                ShelfFaultCleared(**_ids(lane, when), device=lane.device, code=d.code, since=_time(d.since))
            ]
        return []

    def _trouble(self, lane: _Lane, since: datetime, text: str, event: Event) -> list[Output | Upsert]:
        """A fault or unknown object event, and the cell's stale flag if it was not flagged yet."""
        return [event, *self._flag(lane, True, since, f"lane {lane.lane}: {text}")]

    def _resolved(self, lane: _Lane, d: Decision, when: datetime) -> list[Output | Upsert]:
        out: list[Output | Upsert] = []
        if lane.unknown_since is not None and d.count is not None:
            out.append(ShelfUnknownObjectCleared(**_ids(lane, when), count=d.count, since=lane.unknown_since))
            lane.unknown_since = None
        if lane.lane in self._stale.get((lane.shelf, lane.sku), ()):
            out += self._flag(lane, False, when, f"lane {lane.lane} settled at {d.count}")
        return out

    def _count(self, lane: _Lane, d: Decision, when: datetime) -> list[Output | Upsert]:
        assert d.count is not None
        # The count became true when the weight settled on it, not when the window had proved it stable:
        # the stock change is stamped with that time (so rules' debounce does not add the settle window
        # again); the lane's telemetry keeps the time of the reading that decided it, and both.
        settled = min(when, _EPOCH + timedelta(seconds=d.since)) if d.since is not None else when
        out: list[Output | Upsert] = [
            ShelfCountChanged(
                **_ids(lane, when),
                settled_at=settled,
                count=d.count,
                net_g=round(d.grams, 1),
                residual_units=round(d.residual_units, 3),
            )
        ]
        cell = (lane.shelf, lane.sku)
        counts = self._lane_counts.setdefault(cell, {})
        counts[lane.lane] = d.count
        if set(counts) >= self._weighed.get(cell, set()):
            out.append(
                StockUpdate(
                    shelf=lane.shelf,
                    sku=lane.sku,
                    time=settled,
                    origin="weight",
                    source=lane.device,
                    count=sum(counts.values()),
                    reason=f"lane {lane.lane} settled",
                )
            )
        return out + (self._resolved(lane, d, when) if d.resolved else [])
