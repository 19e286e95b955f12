"""The shelf processor: weight samples of every shelf device -> StockUpdate(count=..., origin="weight").

One `LaneEngine` per (device, shelf, lane), created on the lane's first sample from the planogram (SKU,
unit weight of the lane or the catalog) and the device section (tare, counting parameters). Lanes holding
the same SKU on one shelf are summed into one shelf x SKU count, reported once all of them have a count.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from drivers.base import Reading
from drivers.shelf.config import CountingConfig, LaneMap, ShelfConfigBase
from drivers.shelf.engine import COUNT, FAULT, FAULT_CLEARED, UNKNOWN, Decision, LaneEngine
from drivers.shelf.events import ShelfCountChanged, ShelfFault, ShelfFaultCleared, ShelfUnknownObject
from drivers.shelf.reads import WeightFault, WeightSample
from edge.clock import Clock
from edge.config import Manifest
from edge.processing import Output, StockUpdate

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class _Lane:
    __slots__ = ("device", "engine", "lane", "shelf", "sku")

    def __init__(self, device: str, shelf: str, lane: str, sku: str, engine: LaneEngine) -> None:
        self.device = device
        self.shelf = shelf
        self.lane = lane
        self.sku = sku
        self.engine = engine


class ShelfProcessor:
    """Turns `WeightSample`/`WeightFault` readings into stock counts and shelf events."""

    reading_types: tuple[type[Reading], ...] = (WeightSample, WeightFault)

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
        self.unmapped = 0  # samples for lanes that are not in the planogram

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
        engine = LaneEngine(unit, lane_map.tare_g if lane_map else 0.0, params)
        lane = _Lane(device, shelf_id, lane_id, plan.sku, engine)
        self._lanes[key] = lane
        self._weighed.setdefault((shelf_id, plan.sku), set()).add(lane_id)
        return lane

    def feed(self, reading: Reading, now: datetime) -> Sequence[Output]:
        """Handle one sample or failed sample."""
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
        return ()

    def tick(self, now: datetime) -> Sequence[Output]:
        """Report lanes that went silent."""
        t = (now - _EPOCH).total_seconds()
        out: list[Output] = []
        for lane in self._lanes.values():
            d = lane.engine.tick(t)
            if d is not None:
                out.extend(self._outputs(lane, d, now))
        return out

    def lane_engine(self, device: str, shelf: str, lane: str) -> LaneEngine | None:
        """The engine of one lane, if it has had a sample (for the API and tests)."""
        entry = self._lanes.get((device, shelf, lane))
        return entry.engine if entry else None

    def _outputs(self, lane: _Lane, d: Decision, when: datetime) -> list[Output]:
        if d.kind == COUNT and d.count is not None:
            # The count became true when the weight settled on it, not when the window had proved it stable:
            # the stock change is stamped with that time (so rules' debounce does not add the settle window
            # again); the lane's telemetry keeps the time of the reading that decided it, and both.
            settled = min(when, _EPOCH + timedelta(seconds=d.since)) if d.since is not None else when
            out: list[Output] = [
                ShelfCountChanged(
                    source=lane.device,
                    time=when,
                    settled_at=settled,
                    subject=lane.shelf,
                    shelf=lane.shelf,
                    lane=lane.lane,
                    sku=lane.sku,
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
            return out
        if d.kind == UNKNOWN:
            return [
                ShelfUnknownObject(
                    source=lane.device,
                    time=when,
                    subject=lane.shelf,
                    shelf=lane.shelf,
                    lane=lane.lane,
                    sku=lane.sku,
                    net_g=round(d.grams, 1),
                    residual_units=round(d.residual_units, 3),
                    held_count=d.count,
                )
            ]
        if d.kind == FAULT:
            return [
                ShelfFault(
                    source=lane.device,
                    time=when,
                    subject=lane.shelf,
                    device=lane.device,
                    shelf=lane.shelf,
                    lane=lane.lane,
                    code=d.code,
                    held_count=d.count,
                )
            ]
        if d.kind == FAULT_CLEARED:
            return [
                ShelfFaultCleared(
                    source=lane.device,
                    time=when,
                    subject=lane.shelf,
                    device=lane.device,
                    shelf=lane.shelf,
                    lane=lane.lane,
                    code=d.code,
                )
            ]
        return []
