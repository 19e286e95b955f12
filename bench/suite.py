"""`edge-gateway bench`: every section measured in one run on this machine; a table, then ONE JSON line.

Sections (names for `--only`): spine, rss, backlog, peers, rfid, shelf, ble, rules, storeday, epcis, orders,
atp, and fleet (only when named: `--only fleet`). The figure
names and goals are documented in docs/benchmarks.md. A section that cannot run here reports
`<section>_unavailable` with the reason instead of a number. The last line of stdout is the JSON object.
"""

from __future__ import annotations

import math
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

# figure -> (goal text, predicate) ; a figure absent here is reported without a goal
GOALS: dict[str, tuple[str, Callable[[float, dict[str, Any]], bool]]] = {
    "spine_ratio_batched_vs_baseline": (">= 0.6", lambda v, _: v >= 0.6),
    "spine_ratio_single_vs_raw_paho": (">= 0.7", lambda v, _: v >= 0.7),
    "rss_idle_mb": ("<= 64", lambda v, _: v <= 64),
    "rss_backlog_ratio": ("<= 1.2", lambda v, _: v <= 1.2),
    "drain_ratio_vs_ingest": (">= 3", lambda v, _: v >= 3),
    "sqlite_commits_per_1000_events": ("<= 20", lambda v, _: v <= 20),
    # peers (bench/peers/job.py): judged on the worst of the runs (`_worst`); NaN (a run without it) is missed
    "peers_ours_vs_nodered_rate_worst": (">= 2", lambda v, _: v >= 2),
    "peers_ours_vs_thingsboard_rate_worst": (">= 10", lambda v, _: v >= 10),
    "peers_change_ours_p99_ms_at_1000_worst": ("<= 10", lambda v, _: v <= 10),
    "peers_change_ours_outage_lost_worst": ("== 0", lambda v, _: v == 0),
    "peers_ours_rss_max_vs_smallest_peer_max_worst": ("< 1", lambda v, _: v < 1),
    "shelf_pick_to_alert_p99_over_debounce_ms": ("<= 50", lambda v, _: v <= 50),
    "shelf_pick_to_alert_p99_over_p50": ("<= 3", lambda v, _: v <= 3),
    "sightings_p99_ms": ("<= 20", lambda v, _: v <= 20),
    "storeday_count_accuracy_pct": (">= 99.5", lambda v, _: v >= 99.5),
    "storeday_false_alerts": ("== 0", lambda v, _: v == 0),
    "storeday_missed_alerts": ("== 0", lambda v, _: v == 0),
    "storeday_alert_latency_max_s": ("<= debounce + 1", lambda v, f: v <= f.get("storeday_debounce_s", 0) + 1),
    "storeday_visitors_error": ("== 0", lambda v, _: v == 0),
    "storeday_fault_alerts_false": ("== 0", lambda v, _: v == 0),
    "storeday_fault_alerts_cleared": ("== raised", lambda v, f: v == f.get("storeday_fault_alerts_raised", -1)),
    "rfid_reads_per_s": (">= 200000", lambda v, _: v >= 200_000),
    "llrp_reads_decoded_pct": ("== 100", lambda v, _: v == 100),
    "alert_behind_backlog_ms": ("<= 1000", lambda v, _: v <= 1000),
    "epcis_hash_equal_pct": ("== 100", lambda v, _: v == 100),
    "epcis_schema_valid_pct": ("== 100", lambda v, _: v == 100),
    "epcis_schema_valid_documents_pct": ("== 100", lambda v, _: v == 100),
    "epcis_capture_events_per_s": (">= 5000", lambda v, _: v >= 5000),
    "orders_reserve_reply_ms_p99": ("<= 20", lambda v, _: v <= 20),
    "orders_replies_missing": ("== 0", lambda v, _: v == 0),
    "atp_publish_ms_p99": ("<= 1000", lambda v, _: v <= 1000),
    "atp_event_ms_max": ("<= 1000", lambda v, _: v <= 1000),
    "atp_missed": ("== 0", lambda v, _: v == 0),
}


def _spine(quick: bool) -> dict[str, Any]:
    from bench.spine import bench_throughput

    return bench_throughput(quick)


def _rss(quick: bool) -> dict[str, Any]:
    from bench.spine import bench_rss_idle

    return bench_rss_idle(quick)


def _backlog(quick: bool) -> dict[str, Any]:
    from bench.spine import bench_backlog

    return bench_backlog(quick)


def _optional(module: str, func: str, quick: bool) -> dict[str, Any]:
    """A section whose module may not exist in this build: reported unavailable with the reason."""
    import importlib

    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        return {f"{func.removeprefix('bench_')}_unavailable": f"not implemented in this build ({exc})"}
    result: dict[str, Any] = getattr(mod, func)(quick)
    return result


def _peers(quick: bool) -> dict[str, Any]:
    return _optional("bench.peers.job", "bench_peers", quick)


def _rfid(quick: bool) -> dict[str, Any]:
    from bench.rfid import bench_llrp_delivery, bench_rfid

    return {**bench_rfid(quick), **bench_llrp_delivery(quick)}


def _shelf(quick: bool) -> dict[str, Any]:
    from bench.shelf import bench_shelf

    return bench_shelf(quick)


def _ble(quick: bool) -> dict[str, Any]:
    from bench.ble import bench_ble

    return bench_ble(quick)


def _rules(quick: bool) -> dict[str, Any]:
    from bench.rules import bench_alert_behind_backlog, bench_pick_to_alert, bench_sightings

    out: dict[str, Any] = {**bench_sightings(quick), **bench_pick_to_alert(quick),
                           **bench_alert_behind_backlog(quick)}
    return out


def _storeday(quick: bool) -> dict[str, Any]:
    return _optional("bench.storeday", "bench_storeday", quick)


def _epcis(quick: bool) -> dict[str, Any]:
    return _optional("bench.epcis", "bench_epcis", quick)


def _orders(quick: bool) -> dict[str, Any]:
    from bench.orders import bench_orders

    return bench_orders(quick)


def _atp(quick: bool) -> dict[str, Any]:
    from bench.atp import bench_atp

    return dict(bench_atp(quick))


def _fleet(quick: bool) -> dict[str, Any]:
    from bench.fleet import bench_fleet

    return bench_fleet(quick)


SECTIONS: dict[str, Callable[[bool], dict[str, Any]]] = {
    "spine": _spine,
    "rss": _rss,
    "backlog": _backlog,
    "rfid": _rfid,
    "shelf": _shelf,
    "ble": _ble,
    "rules": _rules,
    "storeday": _storeday,
    "epcis": _epcis,
    "orders": _orders,
    "atp": _atp,
    "peers": _peers,
    "fleet": _fleet,
}
OPTIONAL = {"fleet"}
"""Sections run only when named with `--only` (long: `fleet` runs 20 stores for ~5 minutes, docs/fleet.md)."""


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"
    return str(v)


def _isolated(name: str, quick: bool) -> dict[str, Any]:
    """Run one section in a fresh interpreter: sections start brokers, gateways, threads and pseudo-terminals,
    and one section's leftovers (or its memory high-water mark) must not skew the next one's figures."""
    import subprocess

    import orjson

    code = ("import orjson; from bench.suite import SECTIONS; "
            f"print(orjson.dumps(SECTIONS[{name!r}]({quick!r})).decode())")
    # and on a quiet disk: what the previous section wrote (the backlog section alone commits a million
    # events) is written out now, not during this section's fsyncs (see bench/peers/job.py `measure`)
    os.sync()
    res = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, check=False, timeout=1800)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode != 0 or not lines:
        raise RuntimeError(f"section {name} exited {res.returncode}")
    got: dict[str, Any] = orjson.loads(lines[-1])
    return got


def run_bench(quick: bool, only: list[str]) -> int:
    """Run the sections (all, or `only`), print the table and the JSON line; 0 when every section ran."""
    import orjson

    unknown = [s for s in only if s not in SECTIONS]
    if unknown:
        print(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    names = only or [s for s in SECTIONS if s not in OPTIONAL]
    figures: dict[str, Any] = {"quick": quick, "python": platform.python_version(), "machine": platform.machine()}
    failed = 0
    for name in names:
        t0 = time.monotonic()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        try:
            got = _isolated(name, quick) if len(names) > 1 else SECTIONS[name](quick)
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            got = {f"{name}_unavailable": f"{type(exc).__name__}: {exc}"}
            failed += 1
        got[f"{name}_section_s"] = round(time.monotonic() - t0, 1)
        figures.update(got)
    if "rss_idle_mb" in figures and "rss_backlog_mb" in figures:
        figures["rss_backlog_ratio"] = figures["rss_backlog_mb"] / figures["rss_idle_mb"]
    width = max(len(k) for k in figures)
    print(f"{'figure':<{width}}  {'value':>14}  goal")
    for k, v in figures.items():
        goal = GOALS.get(k)
        mark = ""
        if goal and isinstance(v, int | float) and not isinstance(v, bool):
            mark = f"{goal[0]}  {'met' if goal[1](float(v), figures) else 'MISSED'}"
        print(f"{k:<{width}}  {_fmt(v):>14}  {mark}")
    clean = {k: (round(v, 4) if isinstance(v, float) and math.isfinite(v) else
                 (None if isinstance(v, float) else v)) for k, v in figures.items()}
    print(orjson.dumps(clean).decode())
    return 0 if not failed else 1
