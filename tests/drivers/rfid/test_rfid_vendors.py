"""What the vendor drivers share: the timestamp parser and the reader clock estimate.

The drivers themselves: test_impinj_iot.py (HTTP(S) simulator) and test_zebra_iotc.py (through mosquitto).
"""

from __future__ import annotations

import pytest

from drivers.rfid.readerclock import MAX_SKEW_US, WINDOW_US, ReaderClock
from drivers.rfid.reads import parse_timestamp

S = 1_000_000
T0 = 1_767_600_000 * S


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        ("2026-01-05T08:00:00.123+0000", "2026-01-05T08:00:00.123000+00:00"),
        ("2026-01-05T09:00:00.123456789+01:00", "2026-01-05T08:00:00.123456+00:00"),
        ("2026-01-05T08:00:00Z", "2026-01-05T08:00:00+00:00"),
        ("2026-01-05T03:00:00-0500", "2026-01-05T08:00:00+00:00"),
    ],
)
def test_timestamps(text: str, iso: str) -> None:
    assert parse_timestamp(text).isoformat() == iso


def test_replays_cannot_pull_the_offset() -> None:
    """Reader 10 s behind. Replayed events (minutes old) come first: not trusted before a live sample, and
    after one they cannot move the minimum."""
    c = ReaderClock()
    for age in (300, 200, 100):
        c.observe(T0 - 10 * S - age * S, T0, live=False)
    assert c.offset_us == 0  # no live sample yet: assume a synchronised reader
    c.observe(T0 - 10 * S - 20_000, T0, live=True)  # a heartbeat, 20 ms in flight
    assert c.offset_us == 10 * S + 20_000
    c.observe(T0 - 10 * S - 300 * S, T0 + S, live=False)  # a replay
    c.observe(T0 - 10 * S + S - 5_000, T0 + S, live=False)  # a live event, 5 ms in flight
    assert c.offset_us == 10 * S + 5_000
    assert c.date(T0 - 10 * S - 300 * S, T0 + S) == T0 - 300 * S + 5_000  # the replay dated 5 min back


def test_offset_follows_a_changed_reader_clock_within_two_windows() -> None:
    c = ReaderClock()
    c.observe(T0 + 30 * S, T0, live=True)  # the reader runs 30 s ahead
    assert c.offset_us == -30 * S
    t = T0
    for _ in range(3):  # then NTP reaches it: its clock is right from now on
        t += WINDOW_US
        c.observe(t, t, live=True)
    assert c.offset_us == 0


def test_absurd_clock_falls_back_to_receive_time_and_says_so_once() -> None:
    c = ReaderClock()
    c.observe(T0 - 3 * 86400 * S, T0, live=True)  # a reader whose clock was never set
    assert c.offset_us == 0 and c.absurd_samples == 1
    assert c.date(T0 - 3 * 86400 * S, T0) == T0 and c.fallbacks == 1
    assert c.absurd() is not None and c.absurd() is None
    assert c.date(None, T0) == T0
    assert abs(c.date(T0 - MAX_SKEW_US + S, T0) - (T0 - MAX_SKEW_US + S)) == 0
