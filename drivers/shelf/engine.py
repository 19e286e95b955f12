"""Weight -> exact item count for one lane: a pure, clock-free state machine driven by sample times.

count = round((grams - tare) / unit_weight), taken only from a stable window (standard deviation below
`stable_std_g` over `settle_s`) and only when the load is *plausible*: the residual is within
`tolerance_units` of a whole number, the count is not negative, not above the lane's capacity (planogram),
and not a rise of more than `max_rise_units` at once unless that rise fills the lane (a restock). Anything
else is an unknown object (a bag, a lean, a tool): the count holds, the lane is in doubt at once (`DOUBT`: its
count cannot be verified) and, after `unknown_after_s`, an unknown object is reported once; the lane is
untrusted until it settles at a plausible load again (`SETTLED`, or a
`COUNT` with `resolved=True`). The rise rule needs a watched lane: the first settle after a fault is
checked against tolerance and capacity only (staff may have restocked while the cell was unplugged). A hand
resting on the lane or several picks in a row never produce
intermediate counts: only the settled weight counts.

Tare tracking (zero tracking, as a weighing indicator's zero-tracking device in OIML R76 does it) runs only
while the lane is empty (settled, plausible count 0), stable, and only slowly: the tare moves towards the
empty reading with time constant `drift_tau_s`, by at most `drift_max_g_per_h`, so temperature drift is
followed and a light object put on an empty lane is not swallowed. A moved tare is reported (`TARE`) every
`tare_report_g` so the processor can persist it.

NaN, stuck values, failed samples (CRC, timeouts), silence and an offline device hold the count and report
a fault; the first good sample afterwards clears the fault, and the next plausible settle trusts the lane
again.

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
SETTLED = "settled"  # a plausible settle at the held count that ends an untrusted period (fault, unknown)
DOUBT = "doubt"  # the lane settled at an implausible load: the held count is unverified (unknown object pending)
TARE = "tare"  # zero tracking moved the tare by `tare_report_g` since it was last reported

MAX_ABS_GRAMS = 1e9  # a reading beyond a thousand tonnes is no weight: a "range" fault

# why a settled load is not stock
NEGATIVE = "negative"
RESIDUAL = "residual"
CAPACITY = "capacity"
RISE = "rise"


@dataclass(frozen=True, slots=True)
class Decision:
    """Something the lane has to say: a new count, an unknown object, a fault or its end, a moved tare."""

    kind: str
    count: int | None = None
    grams: float = 0.0  # settled net grams (count, unknown), last good gross grams (fault), tare (TARE)
    residual_units: float = 0.0
    code: str = ""  # fault code ("nan" | "stuck" | "timeout" | "crc" | "offline" | device codes); unknown: why
    since: float | None = None  # count: when the weight reached it; fault/unknown: when it began
    resolved: bool = False  # COUNT/SETTLED: this settle ends an untrusted period (after a fault or unknown)


class LaneEngine:
    """State of one weighed lane. `feed` per sample, `fail` per failed sample, `tick` for silence."""

    __slots__ = (
        "_doubt",
        "_fail_run",
        "_fail_since",
        "_gap",
        "_last_raw",
        "_last_t",
        "_n",
        "_ref",
        "_reported_tare",
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
        "capacity",
        "count",
        "fault",
        "fault_since",
        "p",
        "suspect",
        "tare",
        "unit",
    )

    def __init__(
        self,
        unit_weight_g: float,
        tare_g: float = 0.0,
        params: CountingConfig | None = None,
        capacity: int | None = None,
    ) -> None:
        if not unit_weight_g > 0:
            raise ValueError("unit weight must be positive")
        if capacity is not None and capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.p = params or CountingConfig()
        self.unit = unit_weight_g
        self.tare = tare_g
        self.capacity = capacity  # planogram capacity: more is never stock (None: not checked)
        self.count: int | None = None  # last good count (None until the first stable window)
        self.fault: str | None = None  # active fault code
        self.fault_since: float | None = None
        self.suspect = False  # a fault or an unknown object since the last plausible settle: count not trusted
        self._gap = False  # a fault since the last plausible settle: the lane was not watched meanwhile
        self._doubt = False  # settled at an implausible load since the last plausible settle
        self._reported_tare = tare_g
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
        self._fail_since = 0.0
        self._unknown_since: float | None = None
        self._unknown_reported = False

    @property
    def unknown(self) -> bool:
        """An unknown object has been reported and the lane has not settled at a plausible load since."""
        return self._unknown_reported

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
        if not -MAX_ABS_GRAMS <= grams <= MAX_ABS_GRAMS:  # NaN/inf/absurd: a broken ADC reading or garbage
            self._last_t = t
            return self._set_fault("nan" if math.isnan(grams) else "range", t)
        cleared: Decision | None = None
        # stuck: a live load cell always has some noise, so a long run of identical values is a fault
        if grams == self._last_raw and p.expect_noise:
            if t - self._stuck_since >= p.stuck_after_s:
                self._last_t = t
                return self._set_fault("stuck", self._stuck_since)
        else:
            self._last_raw = grams
            self._stuck_since = t
        prev_t = self._last_t
        self._last_t = t
        self._fail_run = 0
        if self.fault is not None:
            cleared = Decision(FAULT_CLEARED, self.count, grams, code=self.fault, since=self.fault_since)
            self.fault = None
            self.fault_since = None
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
        if not var <= p.stable_std_g * p.stable_std_g or (p.expect_noise and var < 1e-9):
            # no noise at all is as suspicious as too much: a frozen ADC must not set a count
            return cleared
        dt = t - prev_t if prev_t is not None else 0.0
        decision = self._settled(t, dt, mean + self._ref)
        return decision if cleared is None else (decision or cleared)

    def fail(self, t: float, code: str) -> Decision | None:
        """A failed sample (CRC error, request timeout, ADC fault line); fault after `fault_after` in a row."""
        if self._fail_run == 0:
            self._fail_since = t
        self._fail_run += 1
        self._last_t = t
        if self._fail_run >= self.p.fault_after:
            return self._set_fault(code, self._fail_since)
        return None

    def offline(self, t: float) -> Decision | None:
        """The device carrying this lane is offline (its stream failed): a fault until samples come back."""
        self._last_t = t
        return self._set_fault("offline", t)

    def tick(self, t: float) -> Decision | None:
        """Silence detection: no sample for `timeout_s` -> timeout fault."""
        if self._last_t is None:
            self._last_t = t  # the lane has never spoken: start its timer now
            return None
        if t - self._last_t >= self.p.timeout_s:
            return self._set_fault("timeout", self._last_t)
        return None

    # ---- decisions ------------------------------------------------------------------------------

    def _set_fault(self, code: str, since: float) -> Decision | None:
        self._reset_window()
        self._unknown_since = None  # an unknown object reported before stays reported: it may still be there
        if self.fault is not None:
            return None
        self.fault = code
        self.fault_since = since
        self.suspect = True
        self._gap = True
        gross = self._last_raw if math.isfinite(self._last_raw) else 0.0
        return Decision(FAULT, self.count, gross, code=code, since=since)

    def implausible(self, n: int, residual: float) -> str | None:
        """Why a settled load of `n` units (+ `residual`) is not stock, or None when it is."""
        p = self.p
        if n < 0:
            return NEGATIVE
        if abs(residual) > p.tolerance_units:
            return RESIDUAL
        cap = self.capacity
        if cap is not None:
            if n > cap:
                return CAPACITY
            # shoppers put back a few items at once; a bigger rise is a restock only when it fills the lane.
            # Not after a fault: the lane was not watched, the held count is no reference for what changed.
            if (self.count is not None and not self._gap and n - self.count > p.max_rise_units
                    and n < cap - p.restock_free_units):
                return RISE
        # hysteresis: once in doubt, only a clearly whole load ends it (a load at the edge does not flap)
        if self._doubt and abs(residual) > p.tolerance_units / 2:
            return RESIDUAL
        return None

    def _settled(self, t: float, dt: float, gross: float) -> Decision | None:
        p = self.p
        net = gross - self.tare
        units = net / self.unit
        n = round(units)
        residual = units - n
        why = self.implausible(n, residual)
        if why is not None:
            since = self._unknown_since
            first = since is None
            if since is None:
                since = self._unknown_since = self._t[0]
            self._doubt = True
            if not self._unknown_reported and t - since >= p.unknown_after_s:
                self._unknown_reported = True
                self.suspect = True
                return Decision(UNKNOWN, self.count, net, residual, code=why, since=since)
            if first and not self.suspect:  # the held count cannot be verified from now on
                self.suspect = True
                return Decision(DOUBT, self.count, net, residual, code=why, since=since)
            return None
        self._unknown_since = None
        self._unknown_reported = self._doubt = False
        resolved = self.suspect
        self.suspect = self._gap = False
        if n != self.count:
            self.count = n
            return Decision(COUNT, n, net, residual, since=self._t[0], resolved=resolved)
        if resolved:
            return Decision(SETTLED, n, net, residual, resolved=True)
        # empty, stable, plausible: zero tracking, slowly (a light object on an empty lane is not swallowed)
        if n == 0 and abs(residual) <= p.drift_max_units and dt > 0:
            step = residual * self.unit * min(1.0, dt / p.drift_tau_s)
            cap_g = p.drift_max_g_per_h * dt / 3600.0
            self.tare += max(-cap_g, min(cap_g, step))
            if abs(self.tare - self._reported_tare) >= p.tare_report_g:
                self._reported_tare = self.tare
                return Decision(TARE, n, self.tare)
        return None
