"""Door-counter frames and counter deltas: resets (reboot) and wraps (u16/u32), plus fuzzing."""

from __future__ import annotations

import contextlib
import os

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.door.protocol import CounterDelta, Counts, Hello, encode_line, parse_json, parse_line
from edge.errors import FrameError

FUZZ = settings(max_examples=10_000 if os.environ.get("EDGE_FUZZ") == "long" else 200, deadline=None)


@pytest.mark.parametrize(
    ("line", "expect"),
    [
        (b"$CNT,12,7*" + b"%02X" % (0x43 ^ 0x4E ^ 0x54 ^ 0x2C ^ 0x31 ^ 0x32 ^ 0x2C ^ 0x37) + b"\r\n", Counts(12, 7)),
        (encode_line("CNT", "65535", "0"), Counts(65535, 0)),
        (encode_line("HELLO", "PC-2", "1.4.0"), Hello("PC-2", "1.4.0")),
    ],
)
def test_valid_lines(line: bytes, expect: object) -> None:
    assert parse_line(line, 16) == expect


@pytest.mark.parametrize(
    "line",
    [b"", b"CNT,1,2", b"$CNT,1,2*00\r\n", b"$CNT,1,2*ZZ", encode_line("CNT", "1"), encode_line("CNT", "-1", "2"),
     encode_line("CNT", "65536", "0"), encode_line("NOPE", "1", "2"), b"$\xff\xfe*01"],
)
def test_bad_lines_rejected(line: bytes) -> None:
    with pytest.raises(FrameError):
        parse_line(line, 16)


@pytest.mark.parametrize(
    ("payload", "ok"),
    [(b'{"in": 5, "out": 3, "ts": "x"}', True), (b'{"in": 5}', False), (b"[1,2]", False), (b"nope", False),
     (b'{"in": true, "out": 1}', False), (b'{"in": 1.5, "out": 1}', False), (b'{"in": -1, "out": 1}', False)],
)
def test_json(payload: bytes, ok: bool) -> None:
    if ok:
        assert parse_json(payload) == Counts(5, 3)
    else:
        with pytest.raises(FrameError):
            parse_json(payload)


@pytest.mark.parametrize(
    ("bits", "values", "deltas", "resets", "wraps"),
    [
        (16, [100, 103, 103, 110], [0, 3, 0, 7], 0, 0),
        (16, [65530, 65535, 2, 9], [0, 5, 3, 7], 0, 1),  # u16 wrap
        (32, [2**32 - 3, 4], [0, 7], 0, 1),  # u32 wrap
        (16, [40000, 40010, 3, 8], [0, 10, 3, 5], 1, 0),  # reboot: counts since the reboot
        (32, [500, 12], [0, 12], 1, 0),
    ],
)
def test_counter_delta(bits: int, values: list[int], deltas: list[int], resets: int, wraps: int) -> None:
    c = CounterDelta(bits)
    assert [c.update(v) for v in values] == deltas
    assert (c.resets, c.wraps) == (resets, wraps)


def test_announced_reboot_counts_from_zero() -> None:
    c = CounterDelta(16)
    c.update(30000)
    c.reboot()
    assert c.update(40000) == 40000  # the device booted and counted 40000 before we heard it


@FUZZ
@given(st.binary(max_size=64))
def test_fuzz_lines(raw: bytes) -> None:
    with contextlib.suppress(FrameError):
        parse_line(raw)


@FUZZ
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(["in", "out", "x"]), c),
                    max_leaves=8))
def test_fuzz_json(obj: object) -> None:
    try:
        counts = parse_json(orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS), 16)
    except (FrameError, orjson.JSONEncodeError):
        return
    assert 0 <= counts.total_in < 65536
    assert 0 <= counts.total_out < 65536


@FUZZ
@given(st.lists(st.integers(0, 2**16 - 1), max_size=50))
def test_fuzz_deltas_never_negative(values: list[int]) -> None:
    c = CounterDelta(16)
    assert all(0 <= c.update(v) < 2**16 for v in values)
