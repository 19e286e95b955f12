"""The reader's clock as the gateway sees it: an offset estimate that dates a vendor event by its own timestamp.

Impinj IoT interface events and Zebra IoT Connector events carry the reader's own timestamp. A read must
be dated by it (a Zebra reader replays retained events after a broker outage, minutes or hours old), but
the reader's clock may be off. `ReaderClock` estimates offset = receive time - reader time from *live*
samples (Impinj `GET /api/v1/status` time, Zebra heartbeats; then any event): network and queueing delay
only ever make a sample larger than the true offset, and a replayed event's sample is larger still, so the
estimate is the smallest sample of the last two windows (replays cannot pull it, a changed clock is
followed within two windows). Until a live sample came, data samples are not trusted (they may all be
replays) and the offset is 0 (readers should run NTP; docs/rfid.md).

Skew guard: a sample or a corrected time more than `MAX_SKEW_US` (one day) from the receive time is
absurd; the read is dated by its receive time instead, counted, and `absurd()` says so once.
"""

from __future__ import annotations

MAX_SKEW_US = 86_400 * 1_000_000
WINDOW_US = 60 * 1_000_000


class ReaderClock:
    """Offset estimate (µs) between the gateway's clock and one reader's clock."""

    __slots__ = ("_cur", "_cur_start", "_prev", "_warned", "absurd_samples", "fallbacks", "live")

    def __init__(self) -> None:
        self._cur: int | None = None
        self._prev: int | None = None
        self._cur_start = 0
        self.live = False
        self.absurd_samples = 0
        self.fallbacks = 0
        self._warned = False

    @property
    def offset_us(self) -> int:
        """Receive time minus reader time, smallest recent live-anchored sample; 0 before any live sample."""
        if not self.live:
            return 0
        vals = [v for v in (self._cur, self._prev) if v is not None]
        return min(vals) if vals else 0

    def observe(self, reader_us: int, recv_us: int, *, live: bool) -> None:
        """One (reader time, receive time) pair; `live` for a sample that cannot be a replay."""
        sample = recv_us - reader_us
        if abs(sample) > MAX_SKEW_US:
            self.absurd_samples += 1
            return
        if not live and not self.live:
            return
        if live:
            self.live = True
        if recv_us - self._cur_start >= WINDOW_US:
            self._prev, self._cur, self._cur_start = self._cur, None, recv_us
        if self._cur is None or sample < self._cur:
            self._cur = sample

    def date(self, reader_us: int | None, recv_us: int) -> int:
        """The read's time on the gateway's clock: reader time + offset, or the receive time when unknown or
        absurd (more than a day away from the receive time)."""
        if reader_us is None:
            return recv_us
        t = reader_us + self.offset_us
        if abs(recv_us - t) > MAX_SKEW_US:
            self.fallbacks += 1
            return recv_us
        return t

    def absurd(self) -> str | None:
        """A message, the first time only, when the reader's clock was found more than a day off."""
        if self._warned or (self.absurd_samples == 0 and self.fallbacks == 0):
            return None
        self._warned = True
        return ("reader clock more than a day away from the gateway's: its reads are dated by receive time; "
                "set NTP on the reader")
