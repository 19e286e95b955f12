"""The one place that turns an event into its CloudEvents 1.0 structured-mode JSON form.

`envelope()` builds the envelope as a dict (the readable definition); `encode()` writes the same bytes
directly (what the outbox stores, on the hot path): the attributes that depend only on the event's type
and source are serialised once and reused, so each event costs one `orjson.dumps` of its payload.
`tests/edge/test_envelope.py` checks that both give identical bytes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from edge.events import Event

_last: tuple[datetime | None, str] = (None, "")  # one tuple: read and replaced atomically across threads


def rfc3339(t: datetime) -> str:
    """Aware UTC datetime -> RFC 3339 with a `Z`, microseconds kept (events' times are validated UTC)."""
    global _last
    last = _last
    if t is last[0]:  # a batch of events shares the pipeline's `now`
        return last[1]
    text = t.isoformat(timespec="microseconds")[:26] + "Z"
    _last = (t, text)
    return text


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


_HEAD = b'{"specversion":"1.0","id":"'
_SEQUENCE = b'","datacontenttype":"application/json","sequence":'
_PARTS: dict[tuple[type[Event], str, str], tuple[bytes, bytes]] = {}


def encode(event: Event, *, event_id: str, sequence: int, store_id: str) -> bytes:
    """`dumps(envelope(...))`, byte for byte, without building the dict."""
    key = (type(event), event.source, store_id)
    parts = _PARTS.get(key)
    if parts is None:
        if len(_PARTS) > 10_000:  # sources are the manifest's devices and components; bound it anyway
            _PARTS.clear()
        parts = _PARTS[key] = (
            b'","source":' + dumps(f"/stores/{store_id}/{event.source}") + b',"type":' + dumps(event.TYPE)
            + b',"time":"',
            b',"dataschema":' + dumps(f"urn:retail:schema:{event.TYPE}") + b',"data":',
        )
    subject = event.subject
    return b"".join((
        _HEAD, event_id.encode(), parts[0], rfc3339(event.time).encode(), _SEQUENCE, b"%d" % sequence, parts[1],
        dumps(event.data()), b"}" if subject is None else b',"subject":' + dumps(subject) + b"}",
    ))


def dumps(obj: Any) -> bytes:
    """JSON bytes; datetimes become RFC 3339 UTC, dataclasses become objects."""
    return orjson.dumps(obj, option=orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC)
