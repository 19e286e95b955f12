"""What the rest of the gateway (rules, API, commands, dashboard) may see of a running gateway.

`edge.gateway.Gateway` implements `GatewayView`; the API and the rules engine depend only on this
protocol, so their tests can run against the real gateway with a memory-free fake broker or none.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar, runtime_checkable

from edge.atp import AtpTracker
from edge.clock import Clock
from edge.config import Manifest
from edge.events import Event
from edge.nearby import NearbyView
from edge.processing import Reactor
from edge.state import StockState


@dataclass(frozen=True, slots=True)
class Upsert:
    """Insert or replace one row of a state table, committed atomically with the events beside it."""

    table: str
    row: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete rows of a state table where every `key` column equals its value."""

    table: str
    key: Mapping[str, Any]


StateWrite = Upsert | Delete


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """The supervisor's view of one device."""

    device: str
    device_type: str
    state: str  # "starting" | "online" | "offline" | "fault" | "disabled"
    last_seen: datetime | None
    error: str | None
    restarts: int
    malformed: int
    readings: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form for the API and dashboard."""
        return {
            "device": self.device,
            "type": self.device_type,
            "state": self.state,
            "last_seen": self.last_seen.isoformat().replace("+00:00", "Z") if self.last_seen else None,
            "error": self.error,
            "restarts": self.restarts,
            "malformed": self.malformed,
            "readings": self.readings,
        }


TRAFFIC_HOUR_KEY = "traffic.hour/"
"""kv rows `traffic.hour/<store-local day>T<HH>`: the closed hours a traffic source keeps (GET /traffic?day)."""


class SupportsAsDict(Protocol):
    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        ...


@runtime_checkable
class TrafficSource(Protocol):
    """A processor that keeps the store's foot traffic and beacon health (drivers/traffic implements it);
    the API finds it among the running processors by this shape, without knowing the family."""

    def view(self, now: datetime | None = None) -> SupportsAsDict:
        """Today's totals, occupancy and zone presence."""
        ...

    def beacon_status(self) -> dict[str, dict[str, object]]:
        """Beacon id -> last_seen_t, battery_mv, silent, battery_low."""
        ...


CommandHandler = Callable[[Mapping[str, Any]], Awaitable[Any]]
P = TypeVar("P")


class GatewayView(Protocol):
    """The running gateway as seen by rules, API, commands and dashboard."""

    manifest: Manifest
    clock: Clock
    stock: StockState
    atp: AtpTracker  # available-to-promise per SKU (edge/atp.py)
    nearby: NearbyView  # neighbouring stores' ATP as seen through the hub (edge/nearby.py)

    def emit(self, events: Sequence[Event], writes: Sequence[StateWrite] = ()) -> None:
        """Hand events (and state rows to commit with them) to the outbox; returns at once."""
        ...

    async def emit_committed(self, events: Sequence[Event], writes: Sequence[StateWrite] = ()) -> None:
        """Like `emit`, but returns only once the events are committed (accepted)."""
        ...

    def devices(self) -> list[DeviceStatus]:
        """Status of every configured device."""
        ...

    def add_reactor(self, reactor: Reactor) -> None:
        """Feed every emitted event to `reactor` (a rules engine) and route its outputs like a processor's."""
        ...

    def processor(self, kind: type[P]) -> P | None:
        """The running processor of class `kind`, if any."""
        ...

    def traffic(self) -> TrafficSource | None:
        """The running processor that keeps foot traffic, if the manifest has a door counter or BLE presence."""
        ...

    def register_command(self, name: str, handler: CommandHandler, *, read_only: bool = False) -> None:
        """Serve `cmd/{name}` over MQTT with `handler`; a command changes state (and needs the hub's signature,
        docs/commands.md) unless registered `read_only`."""
        ...

    def subscribe(self) -> AsyncIterator[dict[str, Any]]:
        """Every accepted event as its CloudEvents dict, live, from now on (for SSE and the dashboard)."""
        ...

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Read-only SQL against the state database, off the event loop."""
        ...

    def metrics_text(self) -> str:
        """Prometheus text exposition of every counter and gauge."""
        ...
