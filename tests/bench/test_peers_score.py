"""The peers benchmark's scoring rule (bench/peers/score.py): outputs identified by lane and segment, not count."""

from __future__ import annotations

import math

import pytest

from bench.peers.loadgen import count_at
from bench.peers.score import Matcher, Out, Segment, expected, pct, segments_of, split_by_time, summarise


def seg(lane: int, n: int, count: int, first: float, span: float = 1.9) -> Segment:
    return Segment(lane, n, count, first, first + span, 10)


def test_counts_repeat_every_three_segments_and_every_change_is_plausible() -> None:
    # repeating counts: the reason a count alone cannot identify an output
    assert [count_at(0, s) for s in range(7)] == [2, 4, 6, 2, 4, 6, 2]
    for lane in range(200):
        counts = {count_at(lane, s) for s in range(3)}
        assert min(counts) >= 2 and max(counts) <= 10 and len(counts) == 3
        assert max(counts) - min(counts) <= 4  # any jump, even across a pause, is at most a rise of 4
        assert all(count_at(lane, s) != count_at(lane, s + 1) for s in range(6))


@pytest.mark.parametrize(
    ("segs", "prev", "min_span", "keep_span", "want"),
    [
        # every segment with readings changes the count: all expected (the peers: min_span 0)
        ([seg(0, 1, 5, 0.0), seg(0, 2, 8, 2.0)], {}, 0.0, 0.0, [1, 2]),
        # the lane already holds the first segment's count (from an earlier phase): nothing changed
        ([seg(0, 1, 5, 0.0), seg(0, 2, 8, 2.0)], {0: 5}, 0.0, 0.0, [2]),
        # ours: a 0.3 s stub at a phase's edge cannot settle, and does not change what the lane holds
        ([seg(0, 1, 5, 0.0, 0.3), seg(0, 2, 5, 2.0)], {0: 5}, 1.0, 0.6, []),
        ([seg(0, 1, 8, 0.0, 0.3), seg(0, 2, 5, 2.0)], {0: 5}, 1.0, 0.6, []),
        # ours: a 0.7 s stub may have settled (keep_span): the next one's count is a change again
        ([seg(0, 1, 8, 0.0, 0.7), seg(0, 2, 5, 2.0)], {0: 5}, 1.0, 0.6, [2]),
    ],
)
def test_expected(segs: list[Segment], prev: dict[int, int | None], min_span: float, keep_span: float,
                  want: list[int]) -> None:
    assert [s.seg for s in expected(segs, dict(prev), min_span, keep_span)] == want


def test_a_lost_output_is_not_hidden_by_a_later_one_with_the_same_count() -> None:
    segs = [seg(0, k, count_at(0, k), 2.0 * k) for k in range(1, 5)]  # counts 4 6 2 4
    m = Matcher()
    m.add_segments(segs)
    # segment 1's output is lost; segment 4 (same count 4) arrives
    m.feed([Out(0, 6, 4.0, 4.01), Out(0, 2, 6.0, 6.01), Out(0, 4, 8.0, 8.01)])
    assert [s.seg for s in m.lost(segs)] == [1]
    assert m.duplicates == 0


def test_an_output_counts_once_and_a_wrong_count_is_unidentified() -> None:
    segs = [seg(0, 1, 5, 0.0), seg(1, 1, 7, 0.0)]
    m = Matcher()
    m.add_segments(segs)
    m.feed([Out(0, 5, 0.5, 0.6), Out(0, 5, 0.9, 1.0), Out(1, 6, 0.5, 0.6)])
    m.settle()
    assert (m.duplicates, m.extra) == (1, 1)
    assert [s.lane for s in m.lost(segs)] == [1]


def test_time_tolerance_and_max_delay() -> None:
    s = seg(0, 1, 5, 10.0, 1.0)
    m = Matcher(tol_s=0.002, max_delay_s=4.0)
    m.add_segments([s])
    assert m.identify(Out(0, 5, 9.999, 10.0)) == s  # ms rounding of a ts
    assert m.identify(Out(0, 5, 9.99, 10.0)) is None  # before the segment began
    assert m.identify(Out(0, 5, 14.9, 15.0)) == s  # a stamp within max_delay after its last reading
    assert m.identify(Out(0, 5, 15.1, 15.2)) is None


def test_outputs_wait_for_their_segments() -> None:
    m = Matcher()
    m.feed([Out(0, 5, 0.5, 0.6)])
    assert m.pending
    m.add_segments([seg(0, 1, 5, 0.0)])
    m.feed([])
    assert not m.pending and not m.lost([seg(0, 1, 5, 0.0)])


def test_segments_of_and_split() -> None:
    assert segments_of({3: [[7, 4, 1.0, 2.0, 5]]}) == [Segment(3, 7, 4, 1.0, 2.0, 5)]
    assert split_by_time([0.5, 1.0, 1.5, 2.0, 3.0], (1.0, 2.0)) == (1, 2, 2)


def test_summarise_ranges_and_worst_run() -> None:
    runs: list[dict[str, object]] = [{"r": 2.5, "p99": 8.0, "txt": "a"}, {"r": 1.9, "p99": 12.0, "txt": "b"},
                                     {"r": 3.0, "p99": 9.0, "txt": "c"}]
    out = summarise(runs, {"r"}, {"p99"})
    assert out["r"] == "1.9-3" and out["r_worst"] == 1.9 and out["p99_worst"] == 12.0
    assert (out["p99_min"], out["p99_max"]) == (8.0, 12.0)
    assert out["txt"] == "a | b | c" and out["peers_runs"] == 3.0
    # a run without a value makes the worst unknown, never "met"
    out = summarise([{"r": 2.0}, {"r": math.nan}], {"r"}, set())
    assert math.isnan(float(str(out["r_worst"])))


def test_pct() -> None:
    assert pct([], 0.5) != pct([], 0.5)  # NaN
    assert pct([float(x) for x in range(100)], 0.99) == 99.0
