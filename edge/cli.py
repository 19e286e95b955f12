"""`edge-gateway` command line: run, check-config, demo, bench, backup, restore, hq, fleet-sim, --version
(../shared/CONTRACT.md)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import logging
import re
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge import __version__
from edge.errors import ConfigError, ConfigIssue

if TYPE_CHECKING:
    from edge.config import Manifest


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("uvicorn.access", "pymodbus", "bleak", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


async def run_gateway(config: Path) -> int:
    """Run the daemon for one manifest until SIGTERM/SIGINT (exit 0 after a clean shutdown) or until a core
    task fails for good (exit 1 after a clean shutdown, so systemd starts a fresh process).

    Under systemd (`Type=notify`) it says READY=1 once started, WATCHDOG=1 every half `WatchdogSec` while
    the pipeline, the committer and the uplink make progress (edge.health), and STOPPING=1 when it stops.
    """
    from edge.gateway import Gateway
    from edge.sdnotify import Notifier

    log = logging.getLogger("edge")
    from edge.config import machine_problems
    from edge.rollout import startup

    manifest = check_manifest(config)  # refuses (exit 2) what check-config --here refuses
    running = startup(config, manifest, [rules_fit, machine_problems])  # a committed rollout wins (docs/fleet.md)
    manifest = running.manifest
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    notifier = Notifier()
    gw = Gateway(manifest)
    gw.rollout.adopt(running)
    if notifier.watchdog_s is not None:
        gw.watchdog = notifier.watchdog
        gw.health_interval = min(1.0, notifier.watchdog_s / 3)
    try:
        async with gw:
            settle_heap()
            notifier.ready(f"store {manifest.store.id}: running")
            waits = [asyncio.create_task(stop.wait()), asyncio.create_task(gw.core.failed.wait())]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                w.cancel()
            if gw.core.fatal is not None:
                name, error = gw.core.fatal
                notifier.stopping(f"core task {name} failed: {error}")
                log.critical("stopping after the failure of core task %s; exit 1", name)
            else:
                notifier.stopping("signal received")
                log.info("signal received: shutting down, flushing what is in flight")
    finally:
        notifier.close()
    return 1 if gw.core.fatal is not None else 0


def settle_heap() -> None:
    """Once the daemon has started: keep its start-up heap out of the collector's sight, return freed memory.

    The daemon is one gateway per process: what is built by now (manifest, models, modules: ~75k objects)
    lives as long as the process, and a full collection that walks it holds the event loop for tens of ms
    on a small store PC. Frozen, full collections walk only what was made since. (Not in Gateway.start: a
    process running many gateways, like the test suite, would freeze its earlier gateways' garbage, open
    files and sockets included; an in-process benchmark calls this and `gc.unfreeze()` when it is done.)
    """
    gc.collect()
    gc.freeze()
    _release_free_heap()


def _release_free_heap() -> None:
    """Hand the heap that start-up freed (manifest validation, schema building) back to the OS.

    glibc keeps freed memory in its arenas; `malloc_trim(0)` returns the free pages (measured: ~3 MB of a
    ~63 MB idle gateway). Elsewhere (musl, macOS) there is no such call and nothing to do.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


# ---- check-config: everything `run` would refuse, fail on or misread ----------------------------------------

_CELL = re.compile(r"^rules for ([^/ ]+)/([^: ]+): ")
_PROBLEM_PATH = re.compile(r"^((?:rules|offers|store)(?:\.[A-Za-z0-9_-]+|\[\d+\])*):? ")


def _problem_loc(problem: str, default: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """The field path a rules problem starts with ('rules.cells[2]: ...'), or `default`."""
    m = _PROBLEM_PATH.match(problem)
    if m is None:
        return default
    return tuple(int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", m.group(1)))


def rules_fit(manifest: Manifest) -> list[tuple[tuple[str | int, ...], str]]:
    """Do the default rules, the manifest's inline rules and its offers compile for this store?

    The rules engine compiles them at start: defaults that do not fit (a lane smaller than the default min)
    stop the daemon, inline rules that do not fit are replaced by the defaults (a misread store).
    """
    from rules.config import RulesBody
    from rules.offers import compile_offers
    from rules.restock import RulesError, compile_rules
    from rules.service import inline_body

    lanes = {(s.id, ln.sku): ("shelves", i, "lanes", j) for i, s in enumerate(manifest.shelves)
             for j, ln in enumerate(s.lanes)}
    out: list[tuple[tuple[str | int, ...], str]] = []
    for body in (RulesBody(), inline_body(manifest.rules)):
        try:
            compile_rules(manifest, body)
        except RulesError as err:
            for p in err.problems:  # parse_manifest drops repeats
                cell = _CELL.match(p)
                out.append((lanes.get((cell[1], cell[2]), ("rules",)) if cell else _problem_loc(p, ("rules",)), p))
    try:
        compile_offers(manifest, manifest.offers)
    except RulesError as err:
        out += [(_problem_loc(p, ("offers",)), p) for p in err.problems]
    return out


def check_manifest(path: Path, here: bool = True) -> Manifest:
    """The manifest at `path`, validated as `run` needs it (schema, references, rules fit and, with `here`,
    this machine: state directory, TLS files, API address); `ConfigError` else."""
    from edge.config import load_manifest, machine_problems

    return load_manifest(path, checks=[rules_fit, machine_problems] if here else [rules_fit])


def check_config(path: Path, here: bool = False) -> int:
    """`edge-gateway check-config`: exit 0 when `run` would start with this manifest as written, else 2.

    Without `here` nothing of this machine is looked at (the manifest may be meant for another one).
    """
    from edge.config import load_rules_file, render_path

    issues: list[ConfigIssue] = []
    try:
        m = check_manifest(path, here)
        if m.rules.file is not None:  # `run` would log it and fall back to the inline rules: say so here
            from rules.restock import RulesError, compile_rules

            rules_path = str(m.rules.file)
            try:
                compile_rules(m, load_rules_file(m.rules.file, m))
            except RulesError as err:
                issues += [ConfigIssue(rules_path, render_path(_problem_loc(p, ())), p) for p in err.problems]
    except ConfigError as err:
        issues += err.issues
    if issues:
        for issue in issues:
            print(issue.render(), file=sys.stderr)
        print(f"{path}: {len(issues)} error(s)", file=sys.stderr)
        return 2
    print(f"{path}: ok (store {m.store.id}, {len(m.devices)} devices, {len(m.shelves)} shelves)")
    return 0


def backup_restore(command: str, args: argparse.Namespace) -> int:
    """`edge-gateway backup` / `restore` (edge.backup): exit 0 done, 1 refused or failed (the reason on stderr)."""
    from edge.backup import BackupError, backup, restore

    try:
        if command == "backup":
            facts = backup(args.data_dir, args.to)
            print(f"{facts.path}: ok ({facts.bytes} bytes, schema version {facts.schema_version}, "
                  f"{facts.outbox_rows} outbox rows, integrity ok)")
        else:
            facts, aside = restore(args.file, args.data_dir)
            print(f"{facts.path}: restored from {args.file} (schema version {facts.schema_version}, "
                  f"{facts.outbox_rows} outbox rows)" + (f"; the previous database is in {aside}" if aside else ""))
            for src, first, last in facts.carried:
                print(f"sequences {first}..{last} of {src} were used after the backup: skipped (announced as a gap "
                      "at the next start)")
            if facts.carry_problem:
                print(f"edge-gateway restore: warning: the previous database's sequences cannot be read "
                      f"({facts.carry_problem}); numbers used after the backup will be used again", file=sys.stderr)
    except (BackupError, OSError) as err:
        print(f"edge-gateway {command}: {err}", file=sys.stderr)
        return 1
    return 0


def add_fleet_parsers(sub: Any) -> None:
    """`hq stock|atp|stores` (HQ's chain-wide view, edge/hq.py) and `fleet-sim` (firmware_sim/fleet.py)."""
    p_hq = sub.add_parser("hq", help="HQ's chain-wide view from the stores' retained state (docs/fleet.md)")
    p_hq.add_argument("what", choices=["stock", "atp", "stores"])
    p_hq.add_argument("--hub", required=True, help="the hub's MQTT URL (mqtt[s]://[user:pass@]host[:port])")
    p_hq.add_argument("--prefix", default="retail/v1", help="topic prefix (default %(default)s)")
    p_hq.add_argument("--sku", help="only this SKU: which stores have it, and how many")
    p_hq.add_argument("--fresh", action="store_true", help="stock: ask every store now (cmd/stock.get fan-out)")
    p_hq.add_argument("--timeout", type=_bounded(0.1, 60), default=3.0, help="seconds each store has to answer")
    p_hq.add_argument("--wait", type=_bounded(0.1, 120), default=5.0, help="at most this long for the snapshot")
    p_hq.add_argument("--stale-after", type=_bounded(1, 30 * 86400), default=900.0,
                      help="stores: an online store with nothing newer than this many seconds is stale")
    p_hq.add_argument("--max-stores", type=int, choices=range(1, 20_001), default=20_000, metavar="1..20000")
    p_hq.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    p_fleet = sub.add_parser("fleet-sim", help="N simulated stores, each a real gateway, against a hub")
    p_fleet.add_argument("--stores", type=int, choices=range(1, 201), default=20, metavar="1..200")
    p_fleet.add_argument("--hub", default="nats", help="'nats' (a private 3-node NATS cluster, the default), "
                         "'mosquitto' (a private one), or loopback mqtt:// URLs separated by commas")
    p_fleet.add_argument("--duration", type=_bounded(1, 7 * 86400), help="exit 0 after this many seconds")
    p_fleet.add_argument("--data-dir", type=Path, default=Path("./var/fleet"), help="one directory per store here")
    p_fleet.add_argument("--batch-every", type=int, choices=range(201), default=0, metavar="0..200",
                         help="every K-th store batches its uplink (hub.batch); 0: none")
    p_fleet.add_argument("--changes", type=Path, help="append every shelf change (JSON lines, wall time) here")
    p_fleet.add_argument("--pick-rate", type=_bounded(0, 10), default=0.3, help="shopper picks a second a store")


def _bounded(lo: float, hi: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = float(text)
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{text}: give a number from {lo:g} to {hi:g}")
        return value
    return parse


def run_fleet_command(args: argparse.Namespace) -> int:
    """`edge-gateway hq ...` / `fleet-sim`."""
    if args.command == "hq":
        from edge.hq import run_hq

        return asyncio.run(run_hq(args.what, hub=args.hub, prefix=args.prefix, sku=args.sku, fresh=args.fresh,
                                  timeout=args.timeout, wait_s=args.wait, stale_after=args.stale_after,
                                  as_json=args.json, max_stores=args.max_stores))
    from firmware_sim.fleet import run_fleet

    try:
        return asyncio.run(run_fleet(stores=args.stores, hub=args.hub, duration=args.duration, data_dir=args.data_dir,
                                     batch_every=args.batch_every, changes=args.changes, pick_rate=args.pick_rate))
    except KeyboardInterrupt:
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script and `python -m edge`."""
    parser = argparse.ArgumentParser(prog="edge-gateway", description="Smart-store edge gateway")
    parser.add_argument("--version", action="version", version=f"edge-gateway {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p_run = sub.add_parser("run", help="run the daemon for one store manifest")
    p_run.add_argument("--config", required=True, type=Path, help="store manifest (YAML)")

    p_check = sub.add_parser("check-config", help="validate a manifest; exit 2 with every error")
    p_check.add_argument("file", type=Path)
    p_check.add_argument("--here", action="store_true", help="also check this machine as `run` does: the state "
                         "directory, the hub's TLS files, the API address")

    p_demo = sub.add_parser("demo", help="run the whole gateway against the simulated store")
    p_demo.add_argument("--mqtt", help="hub broker URL (default: a private mosquitto when possible)")
    p_demo.add_argument("--api", default="127.0.0.1:8080", help="HOST:PORT of the local API (default %(default)s)")
    p_demo.add_argument("--duration", type=float, help="exit 0 after this many seconds")
    p_demo.add_argument("--data-dir", type=Path, default=Path("./var"), help="state directory (default ./var)")
    p_demo.add_argument("--quiet", action="store_true", help="no live status line")

    p_bench = sub.add_parser("bench", help="run the benchmark suite; last stdout line is JSON")
    p_bench.add_argument("--quick", action="store_true", help="a short run")
    p_bench.add_argument("--only", action="append", default=[], help="run only these sections")

    p_backup = sub.add_parser("backup", help="copy the state database to a file (safe while the daemon runs)")
    p_backup.add_argument("--to", type=Path, help="target file or directory (default DATA_DIR/backups/)")
    p_backup.add_argument("--data-dir", type=Path, default=Path("/var/lib/edge-gateway"),
                          help="the manifest's storage.data_dir (default %(default)s)")
    p_restore = sub.add_parser("restore", help="put a backup in place of the state database (daemon stopped)")
    p_restore.add_argument("file", type=Path)
    p_restore.add_argument("--data-dir", type=Path, default=Path("/var/lib/edge-gateway"),
                           help="the manifest's storage.data_dir (default %(default)s)")

    add_fleet_parsers(sub)

    p_apply = sub.add_parser("apply", help="apply a manifest to the running daemon (health gate, rollback)")
    p_apply.add_argument("file", type=Path, help="the whole manifest (YAML), or with --patch a JSON merge patch")
    p_apply.add_argument("--patch", action="store_true", help="FILE is an RFC 7386 merge patch on the running one")
    p_apply.add_argument("--version", dest="manifest_version", type=int, help="default: the next version")
    p_apply.add_argument("--allow-stock-loss", action="store_true", help="drop cells that hold stock")
    p_apply.add_argument("--url", default="http://127.0.0.1:8080", help="the daemon's API (default %(default)s)")
    p_apply.add_argument("--token", help="an admin token (default: $EDGE_ADMIN_TOKEN)")

    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    if args.command in ("backup", "restore"):
        return backup_restore(args.command, args)

    if args.command == "apply":
        import os

        from edge.rollout import apply_file

        return apply_file(args.file, url=args.url, token=args.token or os.environ.get("EDGE_ADMIN_TOKEN"),
                          version=args.manifest_version, patch=args.patch, allow_stock_loss=args.allow_stock_loss)
    if args.command == "check-config":
        return check_config(args.file, args.here)
    if args.command in ("hq", "fleet-sim"):
        return run_fleet_command(args)
    try:
        if args.command == "run":
            return asyncio.run(run_gateway(args.config))
        if args.command == "demo":
            from edge.demo import run_demo

            return int(asyncio.run(
                run_demo(mqtt=args.mqtt, api=args.api, duration=args.duration, data_dir=args.data_dir,
                         live_status=not args.quiet and sys.stderr.isatty())
            ))
        if args.command == "bench":
            from bench.suite import run_bench

            return int(run_bench(quick=args.quick, only=args.only))
    except ConfigError as err:
        for issue in err.issues:
            print(issue.render(), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2
