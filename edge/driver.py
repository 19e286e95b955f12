"""The driver protocol every device family implements, and the readings common to all of them.

It lives in the spine (`edge/`), which knows no device family: the families (`drivers/`) implement it and
the supervisor, pipeline and processors consume it; tests/test_layers.py keeps the imports one-way.

A driver is an async source of readings. Constructing one does no I/O; iterating `stream()` opens the
device, yields readings, and closes the device in a `finally` when the iteration ends or is cancelled.
A driver signals a broken device by raising (`DeviceError` or any OSError); the supervisor logs it once,
marks the device offline and restarts the stream with jittered backoff. A single bad frame is not a
broken device: yield `Malformed` and go on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from edge.clock import Clock
from edge.errors import DeviceError

if TYPE_CHECKING:
    from edge.config import Manifest


@dataclass(frozen=True, slots=True, kw_only=True)
class Reading:
    """Base of all readings: which device, and when the gateway received it (aware UTC)."""

    device_id: str
    time: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadingBatch(Reading):
    """Several readings of one device received at one moment (one socket read), carried as one item: a
    reading object per sample is what a high-rate source cannot afford (drivers/shelf/mqtt.py). It counts as
    `len(batch)` readings (the supervisor's counters, the pipeline's queue bound); the processors of its type
    take it whole, in order. A subclass holds the samples and says how many there are."""

    def __len__(self) -> int:
        raise NotImplementedError


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceOnline(Reading):
    """The device is connected and configured (yield it once per successful open)."""

    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceOffline(Reading):
    """Sent by the supervisor (never by a driver) when a device's stream failed: processors that list it
    in `reading_types` learn that the device cannot see anything now (e.g. freeze its tags' presence)."""

    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Malformed(Reading):
    """A frame or payload that could not be decoded; counted per device, logged rate-limited, skipped."""

    reason: str
    raw: bytes = b""


class Driver(Protocol):
    """An async source of readings for one device."""

    device_id: str

    def stream(self) -> AsyncIterator[Reading]:
        """Open the device and yield readings until cancelled; raise when the device is broken."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class DriverContext:
    """What a driver may need besides its own config section; no live connections in here."""

    manifest: Manifest
    clock: Clock
    data_dir: Path
    local_broker_url: str | None = None

    def broker_url(self, device_id: str, own: str | None = None) -> str:
        """The MQTT broker a device's messages arrive at: its own `broker_url`, else the store-local broker."""
        url = own or self.local_broker_url or (self.manifest.local_broker.url if self.manifest.local_broker else None)
        if not url:
            raise DeviceError(device_id, "no broker: set broker_url or the manifest's local_broker: url")
        return url

