"""The read model every shelf driver yields: one weight sample, or one failed sample, of one lane; a
high-rate source (shelf_mqtt) yields a socket read's samples at once as `WeightSamples`."""

from __future__ import annotations

from dataclasses import dataclass

from edge.driver import Reading, ReadingBatch


@dataclass(frozen=True, slots=True, kw_only=True)
class WeightSample(Reading):
    """Gross grams on one lane (manifest shelf + lane), with the device's own "stable" flag."""

    shelf: str
    lane: str
    grams: float  # may be NaN: the engine treats it as a fault, never as a weight
    stable: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class WeightFault(Reading):
    """A sample that failed (CRC error, timeout, ADC fault line) on one lane of a shelf."""

    shelf: str
    lane: str
    code: str  # "crc" | "timeout" | "adc" | device-specific code
    detail: str = ""


Sample = tuple[str, str, float, bool]  # shelf, lane, gross grams (may be NaN), stable


@dataclass(frozen=True, slots=True, kw_only=True)
class WeightSamples(ReadingBatch):
    """Weight samples received at one moment (one socket read), in arrival order: `WeightSample`s without an
    object each (what a shelf network at tens of thousands of samples per second costs otherwise)."""

    samples: tuple[Sample, ...]

    def __len__(self) -> int:
        return len(self.samples)

    def expand(self) -> list[WeightSample]:
        """The same samples as `WeightSample`s (tests, tools)."""
        return [WeightSample(device_id=self.device_id, time=self.time, shelf=shelf, lane=lane, grams=grams,
                             stable=stable) for shelf, lane, grams, stable in self.samples]
