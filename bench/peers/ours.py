"""Our gateway as a peer: `python -m edge run --config <manifest>` with one `shelf_mqtt` device on broker A.

The manifest is the demo store plus the benchmark's shelves (four lanes each, one SKU per lane, unit
weights from bench/peers/loadgen.py), the hub on broker B with the product's defaults (durable outbox,
batching off: one CloudEvent per MQTT message; reconnect 0.5 s doubling to 30 s), restock rules with
`min = threshold - 1` (so "count < threshold" is low stock), no debounce or cooldown, open around the clock.
The local API is on (loopback) because the harness reads the `edge_device_readings` counter from /metrics
to check that every reading was processed. The daemon runs from the runtime venv (bench/runtime.py: the
runtime lock only, as deploy/Containerfile installs it).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from bench.peers.loadgen import Lane
from bench.peers.proc import PeerProcess
from bench.runtime import runtime_python

REPO = Path(__file__).resolve().parents[2]
_READINGS = re.compile(r'^edge_device_readings\{device="shelves"\} (\S+)$', re.M)
_UPLINK = re.compile(r"^edge_uplink_connected (\S+)$", re.M)


def sku_of(lane: Lane) -> str:
    """The benchmark SKU held by a lane."""
    return f"sku-{lane.shelf}-{lane.lane}"


def manifest(a_url: str, b_url: str, lanes: list[Lane], threshold: int, data_dir: Path, api_port: int,
             settle_s: float) -> dict[str, Any]:
    """The manifest (as a dict) of the benchmark store; every setting that is not the product's default says
    why it is set (docs/benchmarks.md, "Same settings for everyone")."""
    from bench.spine import manifest_dict

    raw = manifest_dict(data_dir, b_url, [], api_port=api_port)
    # the hub on B with the product's defaults: durable outbox (synchronous=FULL), batching off, reconnect
    # backoff 0.5 s doubling to 30 s (manifest_dict's faster 0.1-0.5 s is for the spine bench, not here)
    raw["hub"] = {"url": b_url, "topic_prefix": "retail/v1"}
    # open around the clock: the restock rule only alerts during opening hours
    raw["store"]["opening_time"] = "00:00"
    raw["store"]["closing_time"] = "23:59"
    # the job's planogram: one SKU per lane, the unit weights the load generator uses (bench/peers/loadgen.py)
    raw["catalog"] += [{"sku": sku_of(ln), "name": f"bench {ln.key}", "unit_weight_g": ln.unit_g,
                        "category": "bench"} for ln in lanes]
    shelves: dict[str, list[dict[str, Any]]] = {}
    for ln in lanes:
        shelves.setdefault(ln.shelf, []).append({"id": ln.lane, "sku": sku_of(ln), "capacity": 20})
    raw["shelves"] += [{"id": s, "zone": "aisle-2", "name": f"bench {s}", "stock_source": "weight", "lanes": ls}
                       for s, ls in shelves.items()]
    # the job's alert: count < threshold, raised on the transition at once (the peers have no debounce either)
    raw["rules"]["categories"]["bench"] = {"min": threshold - 1, "debounce_s": 0, "cooldown_s": 0,
                                           "clear_margin": 1}
    raw["devices"] = [{"id": "shelves", "type": "shelf_mqtt", "broker_url": a_url, "topic": "shelves/+/weight",
                       "client_id": "edge-bench-shelves",
                       "qos": 1,  # the job: readings in over QoS 1 for every system
                       # settle_s is the default (0.8); timeout_s: the harness pauses the load between phases
                       # (up to ~10 s), which a store's shelves never do: no lane timeout faults from that
                       "counting": {"settle_s": settle_s, "timeout_s": 600}}]
    return raw


class Ours(PeerProcess):
    """The real daemon as a subprocess (its own RSS)."""

    log_name = "gateway.log"
    stop_timeout_s = 30.0

    name = "ours"
    time_kind = "stamp"  # an event's time is the gateway's receive stamp of the reading that decided it

    def __init__(self, settle_s: float = 0.8, *, module: str = "edge", env: dict[str, str] | None = None) -> None:
        super().__init__()
        self.settle_s = settle_s
        self.api_port = 0
        self.module = module  # `python -m <module> run --config ...` (bench.peers.where runs a traced one)
        self.env = env or {}
        # as deployed: the runtime venv (bench/runtime.py); a traced run needs the development one
        self.python, self.python_note = (sys.executable, "development venv") if module != "edge" else runtime_python()

    def start(self, a_port: int, b_port: int, lanes: list[Lane], threshold: int, workdir: Path,
              profile: str = "change") -> None:
        """Write the manifest and start `python -m edge run` (one profile: forward on change, as it is)."""
        from edge.brokers import free_port

        workdir.mkdir(parents=True, exist_ok=True)
        self.api_port = free_port()
        m = manifest(f"mqtt://127.0.0.1:{a_port}", f"mqtt://127.0.0.1:{b_port}", lanes, threshold,
                     workdir / "var", self.api_port, self.settle_s)
        path = workdir / "manifest.yaml"
        path.write_text(yaml.safe_dump(m))
        self.workdir = workdir
        out = (workdir / "gateway.log").open("ab")
        self.proc = subprocess.Popen([self.python, "-m", self.module, "run", "--config", str(path)], cwd=REPO,
                                     stdout=out, stderr=subprocess.STDOUT,
                                     env={**os.environ, **self.env, "PYTHONPATH": str(REPO)})

    def _metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.api_port}/metrics", timeout=5) as r:
            return str(r.read().decode())

    def readings(self) -> int:
        """Readings the shelf device has delivered so far (-1 when /metrics is not reachable)."""
        with contextlib.suppress(OSError):
            m = _READINGS.search(self._metrics())
            return int(float(m.group(1))) if m else 0
        return -1

    def processed(self) -> int:
        """Readings processed so far (the device's reading counter)."""
        return self.readings()

    def ready(self) -> bool:
        """The hub connection is up."""
        return self.uplink_connected()

    def uplink_connected(self) -> bool:
        """Is the hub connection up?"""
        with contextlib.suppress(OSError):
            m = _UPLINK.search(self._metrics())
            return bool(m and float(m.group(1)) == 1.0)
        return False
