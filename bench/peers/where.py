"""Where the latency of our gateway goes on the peers job at 1,000 readings/s.

`python -m bench.peers.where [PHASES]` runs the peers harness for ours only (brokers A and B, the load
generator, the subscriber on B), with the daemon started as `python -m bench.peers.trace run` (see
bench/peers/trace.py), offers 1,000 readings/s in PHASES phases of 6 s after a warm-up, and prints per phase
the steady-state p50/p99 from reading to B (as `peers_ours_p99_ms_at_1000` measures it), then percentiles
of the trace over all phases: reading -> submitted, -> committed, -> handed to paho, and the duration of
each database write. Development tooling: it is not part of `edge-gateway bench` (the wrapping costs time).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from bench.peers.job import SETTLE_S, START_SKIP_S, System
from bench.peers.ours import Ours
from bench.peers.score import pct as _pct
from bench.peers.trace import STALL_MS


def where(phases: int = 3, *, plain: bool = False) -> dict[str, float]:
    """Run it; return the figures (also printed). `plain`: the daemon as the job runs it (`python -m edge`
    from the runtime venv, no trace): only the per-phase latency to B, a quick probe of
    `peers_change_ours_p99_ms_at_1000` (`python -m bench.peers.where 3 --plain`)."""
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-where-") as tmp:
        trace = Path(tmp) / "trace.txt"
        trace.touch()
        peer = (Ours(SETTLE_S) if plain
                else Ours(SETTLE_S, module="bench.peers.trace", env={"EDGE_TRACE_FILE": str(trace)}))
        sysm = System(peer, Path(tmp), "change")
        try:
            sysm.start()
            sysm.phase(1000, 2.0, "warmup", 2.0)
            start = trace.stat().st_size
            for k in range(phases):
                res = sysm.phase(1000, 6.0, f"lat{k}", 2.0, log=True)
                lat = sysm.latencies(res, f"lat{k}", skip_s=START_SKIP_S)
                out[f"where_lat{k}_p50_ms"], out[f"where_lat{k}_p99_ms"] = _pct(lat, 0.5), _pct(lat, 0.99)
                print(f"phase {k}: reading -> B p50 {_pct(lat, 0.5):.1f} ms, p99 {_pct(lat, 0.99):.1f} ms "
                      f"({len(lat)} samples, lost {res['lost']})", flush=True)
            with trace.open() as f:
                f.seek(start)
                f.readline()  # the trace is written out in blocks: the offset may be inside a line
                kinds: dict[str, list[float]] = {}
                stalls: dict[str, list[float]] = {}
                for line in f:
                    kind, _, value = line.partition(" ")
                    if kind == "STALL":
                        ms, _, stack = value.strip().partition(" ")
                        stalls.setdefault(stack, []).append(float(ms))
                        kinds.setdefault(kind, []).append(float(ms))
                        continue
                    kinds.setdefault(kind, []).append(float(value))
        finally:
            sysm.stop()
    labels = {"SUBMIT": "reading -> submitted to the outbox", "COMMIT": "reading -> committed",
              "PUB": "reading -> handed to paho", "WRITE": "one database write (queue + transaction)",
              "WQUEUE": "  of it: queued (writes ahead, BEGIN)", "WTXN": "  of it: the transaction's body",
              "WCOMMIT": "  of it: COMMIT (fsync, GIL back)", "WBACK": "  of it: back on the event loop",
              "WAHEAD": "  writes already in flight at the call",
              "WSTEPS": "  statements run by the transaction's body",
              "WIDLE": "writer idle between writes (nothing in flight)"}
    for kind, label in labels.items():
        xs = kinds.get(kind, [])
        out[f"where_{kind.lower()}_p50_ms"], out[f"where_{kind.lower()}_p99_ms"] = _pct(xs, 0.5), _pct(xs, 0.99)
        print(f"{label:45s} p50 {_pct(xs, 0.5):6.2f} ms  p90 {_pct(xs, 0.9):6.2f} ms  p99 {_pct(xs, 0.99):6.2f} ms"
              f"  ({len(xs)})")
    total = sum(kinds.get("STALL", []))
    print(f"event loop held > {STALL_MS:.0f} ms: {len(kinds.get('STALL', []))} times, {total:.0f} ms in all; by the "
          "stack seen most often during the stall (longest total first):")
    for stack, lens in sorted(stalls.items(), key=lambda kv: -sum(kv[1]))[:12]:
        print(f"  {len(lens):4d} x, {sum(lens):7.1f} ms, max {max(lens):6.1f} ms  {stack}")
    out["where_stalls"] = float(len(kinds.get("STALL", [])))
    out["where_stall_ms"] = total
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    where(int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 3, plain="--plain" in sys.argv)
