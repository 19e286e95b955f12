"""Weight -> exact item count for one lane: a pure, clock-free state machine driven by sample times.

count = round((grams - tare) / unit_weight), taken only from a stable window (standard deviation below
`stable_std_g` over `settle_s`) and only when the residual is within `tolerance_units` of a whole number;
otherwise the count holds and, after `unknown_after_s`, an unknown object is reported once. A hand resting
on the lane or several picks in a row never produce intermediate counts: only the settled weight counts.
Slow drift (temperature) is tracked by moving the tare towards the residual, only while stable and only for
small residuals. NaN, stuck values, failed samples (CRC, timeouts) and silence hold the count and report a
fault; the first good sample afterwards clears it.

Built for 100 lanes x 80 Hz on one core: a sample costs O(1) (ring window with running sums, shifted by a
reference value so the float sums stay exact enough; re-summed every few thousand samples).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from drivers.shelf.config import CountingConfig

# decision kinds
COUNT = "count"
UNKNOWN = "unknown_object"
FAULT = "fault"
FAULT_CLEARED = "fault_cleared"


@dataclass(frozen=True, slots=True)
class Decision:
    """Something the lane has to say: a new count, an unknown object, a fault or its end."""

    kind: str
    count: int | None = None
    grams: float = 0.0  # settled net grams (count, unknown) or last good gross grams (fault)
    residual_units: float = 0.0
    code: str = ""  # fault code: "nan" | "stuck" | "timeout" | "crc" | device codes
    since: float | None = None  # a new count: when the weight reached it (start of the stable window)


class LaneEngine:
    """State of one weighed lane. `feed` per sample, `fail` per failed sample, `tick` for silence."""

    __slots__ = (
        "_fail_run",
        "_last_raw",
        "_last_t",
        "_n",
        "_ref",
        "_s1",
        "_s2",
        "_since_pops",
        "_stream_start",
        "_stuck_since",
        "_t",
        "_unknown_reported",
        "_unknown_since",
        "_unstable_t",
        "_w",
        "count",
        "fault",
        "p",
        "tare",
        "unit",
    )

    def __init__(self, unit_weight_g: float, tare_g: float = 0.0, params: CountingConfig | None = None) -> None:
        if not unit_weight_g > 0:
            raise ValueError("unit weight must be positive")
        self.p = params or CountingConfig()
        self.unit = unit_weight_g
        self.tare = tare_g
        self.count: int | None = None  # last good count (None until the first stable window)
        self.fault: str | None = None  # active fault code
        self._t: deque[float] = deque()
        self._w: deque[float] = deque()  # grams - _ref
        self._n = 0
        self._s1 = 0.0
        self._s2 = 0.0
        self._ref = 0.0
        self._since_pops = 0
        self._unstable_t = -math.inf  # time of the last sample the device flagged as not stable
        self._stream_start: float | None = None
        self._last_t: float | None = None
        self._last_raw = math.nan
        self._stuck_since = 0.0
        self._fail_run = 0
        self._unknown_since: float | None = None
        self._unknown_reported = False

    # ---- window ------------------------------------------------------------------------------

    def _reset_window(self) -> None:
        self._t.clear()
        self._w.clear()
        self._n = 0
        self._s1 = self._s2 = 0.0
        self._stream_start = None

    def _resum(self) -> None:
        # re-centre on the current mean and re-add: keeps the running sums from accumulating error
        ws = self._w
        mean = self._s1 / self._n if self._n else 0.0
        self._ref += mean
        for i in range(len(ws)):
            ws[i] -= mean
        self._s1 = math.fsum(ws)
        self._s2 = math.fsum(x * x for x in ws)
        self._since_pops = 0

    # ---- inputs -------------------------------------------------------------------------------

    def feed(self, t: float, grams: float, stable: bool = True) -> Decision | None:
        """One sample at time `t` (seconds); returns a decision when there is one."""
        p = self.p
        if not math.isfinite(grams):  # NaN/inf: a broken ADC reading
            self._last_t = t
            return self._set_fault("nan")
        cleared: Decision | None = None
        # stuck: a live load cell always has some noise, so a long run of identical values is a fault
        if grams == self._last_raw and p.expect_noise:
            if t - self._stuck_since >= p.stuck_after_s:
                self._last_t = t
                return self._set_fault("stuck")
        else:
            self._last_raw = grams
            self._stuck_since = t
        prev_t = self._last_t
        self._last_t = t
        self._fail_run = 0
        if self.fault is not None:
            cleared = Decision(FAULT_CLEARED, self.count, grams, code=self.fault)
            self.fault = None
            self._reset_window()

        if self._stream_start is None:
            self._stream_start = t
            self._ref = grams
        x = grams - self._ref
        tq, wq = self._t, self._w
        tq.append(t)
        wq.append(x)
        self._n += 1
        self._s1 += x
        self._s2 += x * x
        if not stable:
            self._unstable_t = t
        horizon = t - p.settle_s
        while tq[0] < horizon:
            tq.popleft()
            old = wq.popleft()
            self._n -= 1
            self._s1 -= old
            self._s2 -= old * old
            self._since_pops += 1
        if self._since_pops > 4096:
            self._resum()

        n = self._n
        if n < 3 or t - self._stream_start < p.settle_s or self._unstable_t >= horizon:
            return cleared
        mean = self._s1 / n
        var = self._s2 / n - mean * mean
        if var > p.stable_std_g * p.stable_std_g or (p.expect_noise and var < 1e-9):
            # no noise at all is as suspicious as too much: a frozen ADC must not set a count
            return cleared
        dt = t - prev_t if prev_t is not None else 0.0
        decision = self._settled(t, dt, mean + self._ref)
        return decision if cleared is None else (decision or cleared)

    def fail(self, t: float, code: str) -> Decision | None:
        """A failed sample (CRC error, request timeout, ADC fault line); fault after `fault_after` in a row."""
        self._fail_run += 1
        self._last_t = t
        if self._fail_run >= self.p.fault_after:
            return self._set_fault(code)
        return None

    def tick(self, t: float) -> Decision | None:
        """Silence detection: no sample for `timeout_s` -> timeout fault."""
        if self._last_t is None:
            self._last_t = t  # the lane has never spoken: start its timer now
            return None
        if t - self._last_t >= self.p.timeout_s:
            return self._set_fault("timeout")
        return None

    # ---- decisions ------------------------------------------------------------------------------

    def _set_fault(self, code: str) -> Decision | None:
        self._reset_window()
        self._unknown_since = None
        if self.fault is not None:
            return None
        self.fault = code
        return Decision(FAULT, self.count, self._last_raw if math.isfinite(self._last_raw) else 0.0, code=code)

    def _settled(self, t: float, dt: float, gross: float) -> Decision | None:
        p = self.p
        net = gross - self.tare
        units = net / self.unit
        n = round(units)
        residual = units - n
        if n < 0 or abs(residual) > p.tolerance_units:
            if self._unknown_since is None:
                self._unknown_since = t
            if not self._unknown_reported and t - self._unknown_since >= p.unknown_after_s:
                self._unknown_reported = True
                return Decision(UNKNOWN, self.count, net, residual)
            return None
        self._unknown_since = None
        self._unknown_reported = False
        if n != self.count:
            self.count = n
            return Decision(COUNT, n, net, residual, since=self._t[0])
        # same count, quiet shelf: a small residual is drift, fold it slowly into the tare
        if abs(residual) <= p.drift_max_units and dt > 0:
            self.tare += residual * self.unit * min(1.0, dt / p.drift_tau_s)
        return None
