"""The one scoring rule of the peers benchmark: every expected output identified exactly, for every system.

Two profiles of the same job (readings in over QoS 1, count = round(grams / unit)):
- `change`, forward on change: one output per lane *segment* (the load generator holds a count for HOLD_S
  seconds, then changes it). An output names its lane, its count and the time of the reading that caused it
  (Node-RED: the `m` field of that reading; ThingsBoard Gateway: the telemetry entry's `ts`; ours: the event
  time the gateway stamped). It is identified as the lane's latest segment with that count that began at or
  before that time; a segment is matched by one output at most (a second one is a duplicate), so a lost
  output is never hidden by a later one with the same count (counts repeat every 3 segments).
  A segment is *expected* when its readings span at least `min_span_s` (0 for systems that forward the first
  reading of a new count; settle + 0.2 s for ours, whose engine waits for a settled window) and its count
  differs from the lane's previous one (a segment whose readings span at least `keep_span_s` sets it).
- `every`, forward every reading: each reading id (`m`) offered must arrive.
Pure functions; bench/peers/job.py feeds them. tests/bench/test_peers_score.py checks them.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Segment:
    """A lane's readings with one count (one entry of a load worker's summary)."""

    lane: int
    seg: int  # the schedule's segment number (unique per lane within a run)
    count: int
    first: float  # send time of its first and last reading in this phase
    last: float
    n: int


@dataclass(frozen=True, slots=True)
class Out:
    """One output that reached the hub (broker B)."""

    lane: int
    count: int
    t: float  # time of the reading that caused it (see the module docstring)
    recv: float  # receive time at B
    sent: float | None = None  # send time of the causing reading, when the output carries it (`m`)


def segments_of(summary_segments: dict[int, list[list[float]]]) -> list[Segment]:
    """Segments from the merged worker summaries (`{lane: [[seg, count, first, last, n], ...]}`)."""
    return [Segment(li, int(s[0]), int(s[1]), float(s[2]), float(s[3]), int(s[4]))
            for li, segs in summary_segments.items() for s in segs]


def expected(segs: list[Segment], prev: dict[int, int | None], min_span_s: float,
             keep_span_s: float) -> list[Segment]:
    """The segments that must produce an output; updates `prev` (lane -> count the system holds now)."""
    out = []
    for s in sorted(segs, key=lambda s: (s.lane, s.first)):
        last = prev.get(s.lane)
        if s.last - s.first >= min_span_s and s.count != last:
            out.append(s)
        if s.last - s.first >= keep_span_s:
            prev[s.lane] = s.count
    return out


@dataclass
class Matcher:
    """Identifies outputs with segments, incrementally (outputs arrive before their phase is scored)."""

    tol_s: float = 0.002  # an output's time may precede its segment's first send by this much (ms rounding)
    max_delay_s: float = 4.0  # and follow the segment's last reading by at most this much (the gateway's stamp)
    known: dict[int, list[Segment]] = field(default_factory=dict)  # lane -> segments sorted by first
    matched: dict[tuple[int, int], Out] = field(default_factory=dict)  # (lane, seg) -> first output
    duplicates: int = 0
    extra: int = 0  # outputs that identify no offered segment (probe readings, a wrong count)
    pending: list[Out] = field(default_factory=list)

    def add_segments(self, segs: list[Segment]) -> None:
        """Register a phase's segments (before scoring it)."""
        for s in segs:
            lst = self.known.setdefault(s.lane, [])
            lst.insert(bisect.bisect(lst, s.first, key=lambda x: x.first), s)

    def identify(self, o: Out) -> Segment | None:
        """The segment an output stands for, or None."""
        cands = self.known.get(o.lane, [])
        i = bisect.bisect_right(cands, o.t + self.tol_s, key=lambda x: x.first)
        for s in reversed(cands[:i]):
            if s.count == o.count:
                return s if o.t <= s.last + self.max_delay_s else None
        return None

    def feed(self, outs: list[Out]) -> None:
        """Match new outputs; those whose segment is not known yet wait (see `settle`)."""
        self.pending.extend(outs)
        keep = []
        for o in self.pending:
            s = self.identify(o)
            if s is None:
                keep.append(o)
                continue
            key = (s.lane, s.seg)
            if key in self.matched:
                self.duplicates += 1
            else:
                self.matched[key] = o
        self.pending = keep

    def settle(self) -> None:
        """Outputs still unidentified once every phase that could have caused them is known are extra."""
        self.extra += len(self.pending)
        self.pending = []

    def lost(self, exp: list[Segment]) -> list[Segment]:
        """The expected segments no output identified."""
        return [s for s in exp if (s.lane, s.seg) not in self.matched]


def split_by_time(items: list[float], marks: tuple[float, float]) -> tuple[int, int, int]:
    """How many of `items` (times) are before marks[0], in [marks[0], marks[1]), and at or after marks[1]."""
    a, b = marks
    before = sum(1 for t in items if t < a)
    during = sum(1 for t in items if a <= t < b)
    return before, during, len(items) - before - during


def pct(xs: list[float], q: float) -> float:
    """The q-quantile (nearest rank below), NaN for no data."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def summarise(runs: list[dict[str, object]], worse_is_lower: set[str], worse_is_higher: set[str]) -> dict[str, object]:
    """One figure per key over the runs: numbers as `<key>_min`, `<key>_max` and a `<key>` range text
    ("a-b", or "a" when equal); the keys named in `worse_is_*` also as `<key>_worst` (the worst run's value,
    the one a goal is judged on). Text figures of the runs are joined with " | "."""
    out: dict[str, object] = {"peers_runs": float(len(runs))}
    keys: list[str] = []
    for r in runs:
        keys += [k for k in r if k not in keys]
    for k in keys:
        vals = [r[k] for r in runs if k in r]
        nums = [float(v) for v in vals if isinstance(v, int | float) and not isinstance(v, bool)]
        if nums and len(nums) == len(vals):
            finite = [v for v in nums if v == v]
            lo, hi = (min(finite), max(finite)) if finite else (float("nan"), float("nan"))
            out[f"{k}_min"], out[f"{k}_max"] = lo, hi
            out[k] = _num(lo) if lo == hi else f"{_num(lo)}-{_num(hi)}"
            if len(finite) < len(nums):
                out[k] = f"{out[k]} ({len(nums) - len(finite)} run(s) without a value)"
            if k in worse_is_lower:
                out[f"{k}_worst"] = min(nums) if len(finite) == len(nums) else float("nan")
            elif k in worse_is_higher:
                out[f"{k}_worst"] = max(nums) if len(finite) == len(nums) else float("nan")
        else:
            out[k] = " | ".join(str(v) for v in vals)
    return out


def _num(v: float) -> str:
    if v != v:
        return "nan"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}"
