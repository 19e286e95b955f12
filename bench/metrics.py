"""Why edge/metrics.py is ours and not prometheus_client (the figures its docstring quotes).

`python -m bench.metrics [runs]` prints, over `runs` fresh interpreters each (default 3), as min-max:
- `prom_import_rss_mb`: RSS that `import prometheus_client` adds to a process that already imported what the
  daemon imports (`edge.gateway` and the local API stack), read from /proc/self/statm around the import;
- `ours_inc_ns` / `prom_labels_inc_ns` / `prom_child_inc_ns`: one labelled counter increment, as the
  gateway's hot paths do it (`Metrics.inc(name, **labels)`), against `Counter.labels(**labels).inc()` and
  against an increment of a child looked up once; the best of 5 loops of 100,000 each.
prometheus_client is a development dependency (requirements.lock), not a runtime one.
"""

from __future__ import annotations

import subprocess
import sys

_CHILD = r"""
import os, sys, timeit
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * page / 2**20
import edge.gateway, edge.api.server, fastapi, uvicorn
before = rss()
import prometheus_client
after = rss()
from edge.metrics import Metrics
reg = prometheus_client.CollectorRegistry()
c = prometheus_client.Counter("edge_readings", "x", ["device", "kind"], registry=reg)
child = c.labels(device="shelf-a", kind="weight")
m = Metrics()
N = 100_000
def best(stmt):
    return min(timeit.repeat(stmt, number=N, repeat=5)) / N * 1e9
print(after - before,
      best(lambda: m.inc("edge_readings_total", device="shelf-a", kind="weight")),
      best(lambda: c.labels(device="shelf-a", kind="weight").inc()),
      best(lambda: child.inc()))
"""

NAMES = ("prom_import_rss_mb", "ours_inc_ns", "prom_labels_inc_ns", "prom_child_inc_ns")


def main(runs: int) -> None:
    rows = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, check=True, timeout=120)
        rows.append([float(x) for x in out.stdout.split()])
    for i, name in enumerate(NAMES):
        vals = [r[i] for r in rows]
        print(f"{name:22s} {min(vals):8.1f} - {max(vals):8.1f}  ({runs} runs)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
