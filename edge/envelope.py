"""The one place that turns an event into its CloudEvents 1.0 structured-mode JSON form."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from edge.events import Event


def rfc3339(t: datetime) -> str:
    """Aware UTC datetime -> RFC 3339 with a `Z`, microseconds kept (events' times are validated UTC)."""
    return t.isoformat(timespec="microseconds")[:26] + "Z"


def envelope(event: Event, *, event_id: str, sequence: int, store_id: str) -> dict[str, Any]:
    """CloudEvents attributes plus our `sequence` extension; `data` is the event's payload."""
    ce: dict[str, Any] = {
        "specversion": "1.0",
        "id": event_id,
        "source": f"/stores/{store_id}/{event.source}",
        "type": event.TYPE,
        "time": rfc3339(event.time),
        "datacontenttype": "application/json",
        "sequence": sequence,
        "dataschema": f"urn:retail:schema:{event.TYPE}",
        "data": event.data(),
    }
    if event.subject is not None:
        ce["subject"] = event.subject
    return ce


def dumps(obj: Any) -> bytes:
    """JSON bytes; datetimes become RFC 3339 UTC, dataclasses become objects."""
    return orjson.dumps(obj, option=orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC)
