"""Counters and gauges with labels, exported in Prometheus text format (no client library needed)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

Labels = tuple[tuple[str, str], ...]


def _fmt_labels(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34)).replace(chr(10), " ")}"'
        for k, v in labels
    )
    return "{" + inner + "}"


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
            out.append(f"# HELP {name} {self._help.get(name, name)}")
            out.append(f"# TYPE {name} counter")
            out += [f"{name}{_fmt_labels(k)} {v:g}" for k, v in sorted(series.items())]
        gauges = {n: dict(s) for n, s in self._gauges.items()}
        for name, fn in self._callbacks.items():
            gauges.setdefault(name, {}).update(fn())
        for name, series in sorted(gauges.items()):
            out.append(f"# HELP {name} {self._help.get(name, name)}")
            out.append(f"# TYPE {name} gauge")
            out += [f"{name}{_fmt_labels(k)} {v:g}" for k, v in sorted(series.items())]
        return "\n".join(out) + "\n"
