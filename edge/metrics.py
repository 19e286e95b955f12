"""Counters and gauges with labels, exported in Prometheus text format 0.0.4.

Ours, not prometheus_client, because of two figures (`python -m bench.metrics`, 2026-12-05, development
venv, 3 runs): importing prometheus_client into a process that already holds the daemon's imports adds
0.8 MB of RSS (issue 20 measures ours' RSS against ThingsBoard Gateway's, and misses it by a few MB), and
its `Counter.labels(**labels).inc()` costs 1.32-1.34 µs against 0.53-0.54 µs for `Metrics.inc` here, the
form the gateway's paths use (its increment of a child looked up once: 0.29-0.30 µs). A small margin on
each, so the choice is kept under review. What the library would give us, a correct exposition, is
checked instead: tests/edge/test_metrics_format.py and tests/api/test_api.py parse our output with
prometheus_client's own parser (label and HELP escaping, every digit of a value, NaN and infinities).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable

Labels = tuple[tuple[str, str], ...]


def _escape(text: str, *, quote: bool) -> str:
    """Escape per the text format: backslash and line feed always, the double quote in label values."""
    text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if quote else text


def _fmt_labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v, quote=True)}"' for k, v in labels) + "}"


def _fmt_value(v: float) -> str:
    """Every digit: whole numbers as integers (up to 2**53), others as Python's shortest round-trip repr."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v.is_integer() and abs(v) <= 2**53:
        return str(int(v))
    return repr(v)


class Metrics:
    """A registry of named counters and gauges; gauges may be callbacks read at export time."""

    def __init__(self) -> None:
        self._counters: dict[str, dict[Labels, float]] = defaultdict(lambda: defaultdict(float))
        self._gauges: dict[str, dict[Labels, float]] = defaultdict(dict)
        self._callbacks: dict[str, Callable[[], dict[Labels, float]]] = {}
        self._help: dict[str, str] = {}

    def describe(self, name: str, text: str) -> None:
        """Set the HELP line of a metric."""
        self._help[name] = text

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        """Add to a counter."""
        self._counters[name][tuple(sorted(labels.items()))] += value

    def set(self, name: str, value: float, **labels: str) -> None:
        """Set a gauge."""
        self._gauges[name][tuple(sorted(labels.items()))] = value

    def gauge_fn(self, name: str, fn: Callable[[], dict[Labels, float]]) -> None:
        """A gauge computed at export time: `fn` returns {labels: value}."""
        self._callbacks[name] = fn

    def value(self, name: str, **labels: str) -> float:
        """Current value of a counter or gauge (0 when never touched)."""
        key = tuple(sorted(labels.items()))
        if name in self._counters and key in self._counters[name]:
            return self._counters[name][key]
        if name in self._gauges and key in self._gauges[name]:
            return self._gauges[name][key]
        if name in self._callbacks:
            return self._callbacks[name]().get(key, 0.0)
        return 0.0

    def total(self, name: str) -> float:
        """Sum of a counter over all label sets."""
        return sum(self._counters.get(name, {}).values())

    def render(self) -> str:
        """Prometheus text exposition format 0.0.4."""
        out: list[str] = []
        for name, series in sorted(self._counters.items()):
            out.append(f"# HELP {name} {_escape(self._help.get(name, name), quote=False)}")
            out.append(f"# TYPE {name} counter")
            out += [f"{name}{_fmt_labels(k)} {_fmt_value(v)}" for k, v in sorted(series.items())]
        gauges = {n: dict(s) for n, s in self._gauges.items()}
        for name, fn in self._callbacks.items():
            gauges.setdefault(name, {}).update(fn())
        for name, series in sorted(gauges.items()):
            out.append(f"# HELP {name} {_escape(self._help.get(name, name), quote=False)}")
            out.append(f"# TYPE {name} gauge")
            out += [f"{name}{_fmt_labels(k)} {_fmt_value(v)}" for k, v in sorted(series.items())]
        return "\n".join(out) + "\n"
