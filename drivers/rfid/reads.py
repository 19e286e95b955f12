"""The one read model of every RFID reader type, and the vendor timestamp parser they share."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from edge.driver import Reading


@dataclass(frozen=True, slots=True, kw_only=True)
class TagRead(Reading):
    """One tag seen by one antenna (possibly several times: `count`) in one report.

    `time` is when the gateway received it (all smoothing uses it); `seen_us` is the reader's own UTC
    timestamp in µs, kept as information only (reader clocks can be wrong).
    """

    epc: str  # hex, upper case
    antenna: int
    read_point: str | None  # zone id mapped from the antenna, None when unmapped
    rssi_dbm: float | None
    seen_us: int | None = None
    count: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class ReaderStatus(Reading):
    """Whether the reader is inventorying, as its own protocol says (LLRP ROSpecEvent / ROSpec state,
    Impinj `inventoryStatus`, Zebra heartbeat radio activity).

    A driver yields one whenever the state changes and may repeat it as a liveness beat (LLRP: a keepalive
    or an end-of-AISpec report while the ROSpec runs). `inventorying=False` means the reader is connected
    but not reading: the absence of its tags then says nothing about the shelf (reader-aware presence).
    """

    inventorying: bool
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class AntennaStatus(Reading):
    """An antenna port connected or disconnected (LLRP AntennaEvent, Impinj antennaConnected/Disconnected,
    Zebra per-antenna status); `read_point` is the zone the manifest maps it to, if any. `seen_us`: when the
    reader says it happened (µs, on the same scale as the same reader's `TagRead.seen_us`: LLRP's
    UTCTimestamp; Impinj's event `timestamp` corrected by the reader clock offset), None when it does not say."""

    antenna: int
    connected: bool
    read_point: str | None = None
    seen_us: int | None = None


_RFC3339 = re.compile(
    r"^(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|z|[+-]\d\d:?\d\d)$"
)


def parse_timestamp(text: str) -> datetime:
    """Parse RFC 3339 / ISO 8601 with `Z`, `+00:00` or `+0000` offsets and up to 9 fraction digits."""
    m = _RFC3339.match(text.strip())
    if m is None:
        raise ValueError(f"not an RFC 3339 timestamp: {text[:40]!r}")
    y, mo, d, h, mi, s, frac, off = m.groups()
    micro = int((frac or "0")[:6].ljust(6, "0"))
    if off in ("Z", "z"):
        tz: timezone = UTC
    else:
        sign = -1 if off[0] == "-" else 1
        digits = off[1:].replace(":", "")
        tz = timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
    return datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), micro, tzinfo=tz).astimezone(UTC)


def to_us(t: datetime) -> int:
    """Aware datetime -> UNIX µs."""
    return (t - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
