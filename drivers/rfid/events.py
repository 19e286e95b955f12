"""Events of the RFID family: smoothed tag arrivals, moves and departures, and EPCIS 2.0 ObjectEvents."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from edge.events import Event, EventClass


@dataclass(frozen=True, slots=True, kw_only=True)
class TagArrived(Event):
    """A tag became present in a zone (after smoothing); `source` is the reader that saw it."""

    TYPE: ClassVar[str] = "retail.rfid.tag.arrived.v1"
    CLASS: ClassVar[EventClass] = EventClass.TELEMETRY
    TOPIC: ClassVar[str] = "events/rfid"

    epc: str  # hex
    epc_uri: str  # urn:epc:id:sgtin:... or raw:<HEX>
    gtin: str | None
    zone: str
    rssi_dbm: float


@dataclass(frozen=True, slots=True, kw_only=True)
class TagMoved(Event):
    """A present tag's zone changed (strongest smoothed RSSI moved past the margin for the hold time)."""

    TYPE: ClassVar[str] = "retail.rfid.tag.moved.v1"
    CLASS: ClassVar[EventClass] = EventClass.TELEMETRY
    TOPIC: ClassVar[str] = "events/rfid"

    epc: str
    epc_uri: str
    gtin: str | None
    from_zone: str
    zone: str
    rssi_dbm: float


@dataclass(frozen=True, slots=True, kw_only=True)
class TagDeparted(Event):
    """A present tag was not read for the lost-timeout; `last_seen` is the gateway time of its last read."""

    TYPE: ClassVar[str] = "retail.rfid.tag.departed.v1"
    CLASS: ClassVar[EventClass] = EventClass.TELEMETRY
    TOPIC: ClassVar[str] = "events/rfid"

    epc: str
    epc_uri: str
    gtin: str | None
    zone: str
    last_seen: datetime
    dwell_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class EpcisObjectEvent(Event):
    """The same fact as an EPCIS 2.0 JSON-LD ObjectEvent; `data()` is the ObjectEvent document itself."""

    TYPE: ClassVar[str] = "retail.rfid.epcis.v1"
    CLASS: ClassVar[EventClass] = EventClass.TELEMETRY
    TOPIC: ClassVar[str] = "events/epcis"
    # `data` is the EPCIS 2.0 ObjectEvent itself (GS1 EPCIS 2.0 JSON-LD), not this class's fields.
    DATA_SCHEMA: ClassVar[dict[str, Any]] = {
        "type": "object",
        "required": ["@context", "type", "eventID", "eventTime", "eventTimeZoneOffset", "action"],
        "properties": {
            "@context": {},
            "type": {"const": "ObjectEvent"},
            "eventID": {"type": "string", "pattern": "^ni:///sha-256;[0-9a-f]{64}"},
            "eventTime": {"type": "string", "format": "date-time"},
            "eventTimeZoneOffset": {"type": "string", "pattern": "^[+-][0-9]{2}:[0-9]{2}$"},
            "action": {"enum": ["ADD", "OBSERVE", "DELETE"]},
            "epcList": {"type": "array", "items": {"type": "string"}},
            "bizStep": {"type": "string"},
            "disposition": {"type": "string"},
            "readPoint": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}},
            "bizLocation": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}},
        },
    }

    event_id: str
    document: dict[str, Any]

    def data(self) -> dict[str, Any]:
        """The EPCIS ObjectEvent (with its @context), ready for an EPCIS repository."""
        return self.document


@dataclass(frozen=True, slots=True, kw_only=True)
class AntennaChanged(Event):
    """A reader's antenna port was disconnected or connected again (LLRP AntennaEvent, Impinj/Zebra antenna
    status, or a read through a port reported down). While a port is down, the tags of its read point do not
    depart and their stock is flagged stale. `source` and `subject` are the reader."""

    TYPE: ClassVar[str] = "retail.rfid.antenna.changed.v1"
    CLASS: ClassVar[EventClass] = EventClass.CONTROL
    TOPIC: ClassVar[str] = "events/device"

    antenna: int
    connected: bool
    read_point: str | None
