"""A compressed store day against the real gateway, with a checker comparing what it believes to the truth.

Every family's simulator speaks its real wire protocol to the real driver, as in `edge-gateway demo`: serial
and Modbus-RTU weight shelves on ptys, an MQTT shelf and a Zebra reader on a store-local mosquitto, an LLRP
reader over TCP, a restock scanner on a pty, a door counter on a pty and (when dbus-daemon is installed)
beacons and phones on a private BlueZ. The `World` is the truth. Time is compressed: one `ScaledClock` drives
the World, the simulators and the Gateway, and runs `factor` times faster than real time (factor 5: a store
second lasts 0.2 s). Every duration below (debounce, settle, sampling) is in store seconds.

The day (`StoreDayConfig.sim_s` store seconds): the door opens and shoppers arrive; every store second,
shoppers pick items (lanes of a few SKUs drain faster, so cells really run low), carry some and put some back,
rest a hand on a shelf for a few seconds, check out; staff restock a cell (the scanner types the session)
some time after its low-stock alert or when it stays low; beacons and phones advertise; in the middle the
hub broker is down for `outage_s`.

Faults (`StoreDayConfig.faults`, issue 14), at fixed store seconds of the day: the LLRP reader's RF section
goes silent for longer than its lost-timeout (`go_silent`: connection and keepalives up, no report), the
reader restarts (ConnectionCloseEvent, connection refused for `reader_restart_down_s`), a load cell sticks
(repeats its last raw value; shoppers keep picking from that lane after the first seconds, so its count
really is unknown), a heavy object is left on a lane, someone leans on a lane for a few seconds. Shoppers
and hands keep off the object's lane and the leaned-on lane while that lasts.

Checker (`check`):
- count accuracy: every `sample_s` store seconds every planogram cell (shelf x SKU) is compared with the
  truth (`StockState`, what the API and `cmd/stock.get` serve). A cell is skipped (settling) while its truth
  changed less than the settle allowance ago: `weight_settle_s` for weight shelves, `rfid_settle_s` for RFID
  shelves (the reader's lost timeout plus cycles). Everything else, including a hand resting on the lane,
  counts. A sample is right when the count is exact, or when it is wrong and the cell is flagged stale (the
  gateway says it cannot see the cell: a stale cell counts as wrong unless flagged stale). accuracy = right
  samples / samples; `storeday_count_exact_pct` is exact samples / samples, `storeday_samples_stale_flagged`
  the wrong-but-flagged ones.
- alerts: an oracle replays the truth timeline through the restock definition (low: count <= min held for
  `debounce_s`, clears at min + clear_margin; out: count == 0, clears at 1; cooldown 0) and gives the expected
  raise times. An actual `retail.alert.opened.v1` (accepted by the gateway) of the same cell and kind within
  [expected - 1 s, expected + settle allowance + 1 s] matches it; on an RFID shelf the window opens earlier by
  how long before the pick that started the condition its tags were last read (the gateway dates a departure
  at the tag's last read, the best it can know; the simulated readers record those reads at the gateway's
  RSSI filter). Unmatched actual = false alert; unmatched
  expected = missed alert (expected raises later than the end minus the allowance are not yet due).
  Latency = actual raise time - start of the truth condition (goal <= debounce + 1 s). A stock-out that
  escalates the cell's live low-stock alert (`retail.alert.escalated.v1`, reason out_of_stock) is its raise.
  While a cell is flagged stale the gateway cannot see it: an expected raise whose condition overlaps a
  stale window of its cell may come as late as the window's end + debounce + the allowance (those raises are
  counted in `storeday_alerts_after_stale`, their latency is not); a low-stock raise is then also met by the
  cell's stock-out alert (the gateway saw the cell low and empty at once: one out_of_stock alert). The same
  holds for a hand that came to rest on a weight lane before the scale had settled on the count that started
  the condition.
- fault alerts: every injected lane fault (stuck cell) and unknown object (the heavy object) must open its
  staff alert (`lane_fault` / `unknown_object`, that shelf x SKU) while it lasts or within the allowance after
  `lane_fault_hold_s`, and the alert must be resolved after the fault ended; any other fault alert (the short
  lean) is false.
- visitors: the door's real entries (no staff use the counted door) vs the gateway's `visitors_today`.
- hub: every alert-opened event the gateway accepted reached the hub after the outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import yaml

from edge.brokers import Mosquitto
from edge.config import Manifest, parse_manifest
from edge.gateway import Gateway
from firmware_sim.door import DoorSim
from firmware_sim.world import World, WorldChange, demo_manifest_text

OPENED = "retail.alert.opened.v1"
ESCALATED = "retail.alert.escalated.v1"
RESOLVED = "retail.alert.resolved.v1"
STOCK_KINDS = ("low_stock", "out_of_stock")
FAULT_KINDS = ("lane_fault", "unknown_object")


class ScaledClock:
    """Store time running `factor` times faster than real time, from `start` (sleep follows it)."""

    def __init__(self, factor: float, start: datetime) -> None:
        self.factor = factor
        self.start = start
        self._t0 = time.monotonic()

    def now(self) -> datetime:
        """Store wall time."""
        return self.start + timedelta(seconds=(time.monotonic() - self._t0) * self.factor)

    def monotonic(self) -> float:
        """Store seconds since the start."""
        return (time.monotonic() - self._t0) * self.factor

    async def sleep(self, seconds: float) -> None:
        """Sleep `seconds` store seconds."""
        await asyncio.sleep(max(0.0, seconds) / self.factor)


@dataclass(slots=True)
class StoreDayConfig:
    """Shape of the day; all durations in store seconds."""

    factor: float = 5.0
    sim_s: float = 600.0
    seed: int = 7
    debounce_s: float = 20.0
    sample_s: float = 1.0
    weight_settle_s: float = 4.0  # shelf settle window (0.8 s) + stable samples + pipeline, generously
    weight_blip_s: float = 2.0  # a weight lane's count held shorter than this may never settle: the oracle drops it
    rfid_settle_s: float = 14.0  # lost_timeout_s (10 s) + present_after reads + cycles
    warmup_s: float = 30.0
    outage_at_s: float = 200.0
    outage_s: float = 40.0
    pick_p: float = 0.6  # chance per store second that a shopper picks
    hand_p: float = 0.04  # chance per store second that a hand comes to rest on a weight lane
    ble: bool = True
    tick_s: float = 0.25  # the gateway's processor/rules tick (its default is 1 s, which alone adds up to 1 s)
    faults: bool = True  # inject the reader and load cell faults below (times in store seconds of the day)
    lane_fault_hold_s: float = 10.0  # rules: a lane fault / unknown object held this long -> staff alert
    reader_silent_at_s: float = 20.0
    reader_silent_s: float = 40.0  # longer than the lost-timeout (10 s) + the debounce (20 s): a stock-out if believed
    reader_restart_at_s: float = 100.0
    reader_restart_down_s: float = 5.0
    stuck_at_s: float = 30.0
    stuck_s: float = 50.0
    stuck_lane: tuple[str, str] = ("shelf-b1", "l1")
    object_at_s: float = 70.0
    object_s: float = 30.0
    object_g: float = 2340.0  # 4.5 bottles of water: no whole count (a bag that weighs a whole number of units
    # within the shelf's tolerance is indistinguishable from stock, and counted as such)
    object_lane: tuple[str, str] = ("shelf-a1", "l2")
    lean_at_s: float = 115.0
    lean_s: float = 6.0
    lean_g: float = 12000.0
    lean_lane: tuple[str, str] = ("shelf-a1", "l1")


@dataclass(slots=True)
class Truth:
    """Everything the checker needs, recorded during the day."""

    changes: dict[tuple[str, str], list[tuple[float, int]]] = field(default_factory=dict)  # cell -> (t, count)
    # (shelf, sku, t) -> how long before the pick at t its tags were last read: an RFID-counted shelf can date a
    # departure no later than that read, so its rule's debounce may start (and its alert come) that much earlier
    backdate: dict[tuple[str, str, float], float] = field(default_factory=dict)
    samples: int = 0
    exact: int = 0
    stale_flagged: int = 0  # wrong samples of a cell flagged stale (not wrong: the gateway says it cannot see)
    stale: dict[tuple[str, str], list[list[float]]] = field(default_factory=dict)  # cell -> [[from, to], ...]
    hands: dict[tuple[str, str], list[list[float]]] = field(default_factory=dict)  # cell -> [[on, off], ...]
    faults: list[tuple[str, str, str, float, float]] = field(default_factory=list)  # (kind, shelf, sku, from, to)
    # alert id -> [opened t, kind, shelf, sku, resolved t or None] of the fault alerts (lane_fault, unknown_object)
    fault_alerts: dict[str, list[Any]] = field(default_factory=dict)
    opened: int = 0  # every retail.alert.opened.v1 the gateway accepted (stock, fault, device)
    by_source: dict[str, list[int]] = field(default_factory=lambda: {"weight": [0, 0], "rfid": [0, 0]})
    skipped: int = 0
    wrong: dict[str, int] = field(default_factory=dict)  # "shelf/sku" -> wrong samples
    wrong_examples: list[str] = field(default_factory=list)  # "t shelf/sku truth->seen" (first 30)
    alerts: list[tuple[float, str, str, str]] = field(default_factory=list)  # (t, shelf, sku, kind)
    entered: int = 0
    visitors_seen: int | None = None
    events_seen: int = 0


def _manifest_raw(cfg: StoreDayConfig, data_dir: Path) -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load(demo_manifest_text())
    raw["store"].update(opening_time="00:00", closing_time="00:00")  # open all day: alerts always allowed
    raw["rules"] = {"defaults": {"min": 4, "debounce_s": cfg.debounce_s, "clear_margin": 2, "cooldown_s": 0,
                                 "escalate_after_s": 3600}, "categories": {"apparel": {"min": 8}},
                    "lane_fault_hold_s": cfg.lane_fault_hold_s}
    raw["api"] = {"enabled": False}
    raw["storage"] = {"data_dir": str(data_dir)}
    return raw


def expected_raises(timeline: list[tuple[float, int]], threshold: int, clear_at: int, debounce: float,
                    end: float) -> list[tuple[float, float]]:
    """(condition start, expected raise time) of one condition of one cell, from its truth timeline."""
    out: list[tuple[float, float]] = []
    active = False
    since: float | None = None
    points = [*timeline, (end, timeline[-1][1] if timeline else 0)]
    for i, (t, count) in enumerate(points[:-1]):
        nxt = points[i + 1][0]
        if active:
            if count >= clear_at:
                active = False
            else:
                continue
        if count > threshold:
            since = None
            continue
        since = t if since is None else since
        if since + debounce <= nxt:
            out.append((since, max(t, since + debounce)))
            active, since = True, None
    return out


def visible(timeline: list[tuple[float, int]], min_s: float) -> list[tuple[float, int]]:
    """The timeline as a scale can see it: a count held for less than `min_s` (a unit put back and taken again
    within a second) never makes a stable window, so it is merged into what came before it."""
    out: list[tuple[float, int]] = []
    for i, (t, count) in enumerate(timeline):
        nxt = timeline[i + 1][0] if i + 1 < len(timeline) else float("inf")
        if out and nxt - t < min_s:
            continue
        if out and out[-1][1] == count:
            continue
        out.append((t, count))
    return out


def _pct(pair: list[int]) -> float:
    return 100.0 * pair[1] / pair[0] if pair[0] else float("nan")


def check(truth: Truth, manifest: Manifest, cfg: StoreDayConfig, end: float) -> dict[str, Any]:
    """Figures of the day (see the module docstring for exactly how each is computed)."""
    rules = {"apparel": 8}
    weight = {s.id: s.stock_source == "weight" for s in manifest.shelves}
    missed = false = after_stale = 0
    latencies: list[float] = []
    by_source: dict[str, list[float]] = {"weight": [], "rfid": []}
    details: list[str] = []
    actual = list(truth.alerts)
    for (shelf, sku), truth_timeline in sorted(truth.changes.items()):
        item = manifest.sku(sku)
        low = rules.get(item.category if item else "", 4)
        allowance = cfg.weight_settle_s if weight.get(shelf) else cfg.rfid_settle_s
        # whether a scale catches a blip depends on CPU load: expect the raise of the merged timeline; the raise
        # after a blip it did see falls within that raise's window (blip < allowance)
        timeline = visible(truth_timeline, cfg.weight_blip_s) if weight.get(shelf) else truth_timeline
        for kind, thr, clear in (("low_stock", low, low + 2), ("out_of_stock", 0, 1)):
            # the truth's own condition starts: a scale that saw the blip started its debounce after it
            raw_starts = [a for a, _ in expected_raises(truth_timeline, thr, clear, cfg.debounce_s, end + 60)]
            for start, due in expected_raises(timeline, thr, clear, cfg.debounce_s, end):
                if due > end - allowance - 1:
                    continue  # not yet due when the day ended
                lo = due - truth.backdate.get((shelf, sku, start), 0.0) - 1
                hi = due + allowance + 1
                # the cell was flagged stale while the condition ran: the gateway learns it at the window's end
                blind = [b for a, b in truth.stale.get((shelf, sku), []) if a <= due and b >= start - allowance]
                # a hand came to rest before the scale settled on the new count: it settles when the hand leaves
                blind += [b for a, b in truth.hands.get((shelf, sku), []) if start - 1 <= a <= start + allowance]
                late_ok = max(blind, default=-1.0) + cfg.debounce_s + allowance + 1
                hit = next((a for a in actual
                            if a[1:] == (shelf, sku, kind) and lo <= a[0] <= max(hi, late_ok)), None)
                if hit is None and blind and kind == "low_stock" and any(
                        a[1:] == (shelf, sku, "out_of_stock") and lo <= a[0] <= late_ok for a in truth.alerts):
                    after_stale += 1  # blind while it went low and then empty: it saw both at once, one stock-out
                    continue
                if hit is None:
                    if late_ok > end:
                        continue  # the cell was still blind (or just back) at the end: not yet due
                    missed += 1
                    details.append(f"missed {kind} {shelf}/{sku} due {due:.0f}")
                elif blind:
                    actual.remove(hit)
                    after_stale += 1  # the gateway could not see when the condition started: no latency
                else:
                    actual.remove(hit)
                    # latency from the start the gateway could see: after a blip it caught, the blip's end
                    seen = max((a for a in raw_starts if start <= a <= hit[0] - cfg.debounce_s + 1), default=start)
                    latencies.append(hit[0] - seen)
                    by_source["weight" if weight.get(shelf) else "rfid"].append(hit[0] - seen)
    for t, shelf, sku, kind in actual:
        if t > end - cfg.debounce_s:
            timeline = truth.changes.get((shelf, sku), [])
            # a raise in the last moments may belong to a condition the oracle saw start too late to be due
            if any(start <= t <= due + 30 for start, due in expected_raises(
                    timeline, 0 if kind == "out_of_stock" else 4, 1, cfg.debounce_s, end + 60)):
                continue
        false += 1
        details.append(f"false {kind} {shelf}/{sku} at {t:.0f}")
    fault_raised, fault_cleared, fault_false, fault_details = _check_faults(truth, cfg, end)
    details += fault_details
    right = truth.exact + truth.stale_flagged
    out: dict[str, Any] = {
        "storeday_compression": cfg.factor,
        "storeday_store_s": round(end, 1),
        "storeday_samples": truth.samples,
        "storeday_samples_settling": truth.skipped,
        "storeday_count_accuracy_pct": 100.0 * right / truth.samples if truth.samples else float("nan"),
        "storeday_count_exact_pct": 100.0 * truth.exact / truth.samples if truth.samples else float("nan"),
        "storeday_samples_stale_flagged": truth.stale_flagged,
        "storeday_stale_windows": sum(len(w) for w in truth.stale.values()),
        "storeday_faults_injected": len(truth.faults),
        "storeday_fault_alerts_raised": fault_raised,
        "storeday_fault_alerts_cleared": fault_cleared,
        "storeday_fault_alerts_false": fault_false,
        "storeday_alerts_after_stale": after_stale,
        "storeday_count_accuracy_weight_pct": _pct(truth.by_source["weight"]),
        "storeday_count_accuracy_rfid_pct": _pct(truth.by_source["rfid"]),
        "storeday_false_alerts": false,
        "storeday_missed_alerts": missed,
        "storeday_alerts_expected": missed + len(latencies) + after_stale,
        "storeday_alert_latency_p50_s": statistics.median(latencies) if latencies else float("nan"),
        "storeday_alert_latency_max_s": max(latencies) if latencies else float("nan"),
        "storeday_alert_latency_weight_max_s": max(by_source["weight"], default=float("nan")),
        "storeday_alert_latency_rfid_max_s": max(by_source["rfid"], default=float("nan")),
        "storeday_debounce_s": cfg.debounce_s,
        "storeday_visitors_true": truth.entered,
        "storeday_visitors_seen": truth.visitors_seen if truth.visitors_seen is not None else float("nan"),
        "storeday_visitors_error": (abs(truth.visitors_seen - truth.entered) if truth.visitors_seen is not None
                                    else float("nan")),
        "storeday_wrong_cells": ", ".join(f"{k}:{v}" for k, v in sorted(truth.wrong.items())),
        "storeday_wrong_examples": "; ".join(truth.wrong_examples[:12]),
        "storeday_alert_details": "; ".join(details[:20]),
    }
    return out


def _check_faults(truth: Truth, cfg: StoreDayConfig, end: float) -> tuple[int, int, int, list[str]]:
    """(raised, cleared, false, details) of the fault alerts against the injected lane faults and objects."""
    allowance = cfg.weight_settle_s + 1
    alerts = dict(truth.fault_alerts)
    raised = cleared = 0
    details: list[str] = []
    for kind, shelf, sku, t0, t1 in truth.faults:
        if t1 - t0 < cfg.lane_fault_hold_s:
            continue  # shorter than the hold: no alert is due (one is false)
        hit = next((aid for aid, (t, k, sh, sk, _r) in alerts.items()
                    if (k, sh, sk) == (kind, shelf, sku) and t0 <= t <= t1 + allowance), None)
        if hit is None:
            details.append(f"missed {kind} {shelf}/{sku} ({t0:.0f}-{t1:.0f})")
            continue
        raised += 1
        resolved = alerts.pop(hit)[4]
        if resolved is not None and resolved >= t1 - 1:
            cleared += 1
        elif t1 + allowance < end:
            details.append(f"not cleared {kind} {shelf}/{sku} (fault over at {t1:.0f})")
    for t, k, sh, sk, _r in alerts.values():
        details.append(f"false {k} {sh}/{sk} at {t:.0f}")
    return raised, cleared, len(alerts), details


class StoreDay:
    """Runs one compressed day; `await run()` returns the checker's figures."""

    def __init__(self, cfg: StoreDayConfig, workdir: Path) -> None:
        self.cfg = cfg
        self.workdir = workdir
        self.clock = ScaledClock(cfg.factor, datetime(2026, 3, 2, 7, 0, tzinfo=UTC))
        self.rng = random.Random(cfg.seed)
        self.truth = Truth()
        self.parts: list[Any] = []
        self.door: DoorSim | None = None
        self.hub_alerts = 0
        self.rfid: Any = None  # the RFID and shelf sim parts (fault injection)
        self.shelves: Any = None

    def _on_world(self, world: World, rfid_reads: dict[str, float] | None) -> Any:
        rfid_shelves = {s.id for s in world.manifest.shelves if s.stock_source != "weight"}

        def cb(change: WorldChange) -> None:
            t = self.clock.monotonic()
            lane = world.lanes[(change.shelf, change.lane)]
            key = (change.shelf, lane.sku)
            self.truth.changes.setdefault(key, []).append((t, world.count(*key)))
            if change.kind == "hand_on":
                self.truth.hands.setdefault(key, []).append([t, float("inf")])
            elif change.kind == "hand_off" and self.truth.hands.get(key):
                self.truth.hands[key][-1][1] = t
            if rfid_reads is not None and change.epcs and change.shelf in rfid_shelves:
                reads = [rfid_reads[e] for e in change.epcs if e in rfid_reads]
                if reads:
                    self.truth.backdate[(*key, t)] = max(0.0, t - min(reads))
        return cb

    async def run(self) -> dict[str, Any]:
        """Start everything, play the day, check, stop."""
        from firmware_sim.ble import BleSimPart
        from firmware_sim.hub import HubRecorder
        from firmware_sim.rfid.simpart import RfidSimPart
        from firmware_sim.scanner import ScannerSimPart
        from firmware_sim.shelf import ShelfSimPart

        cfg, wd = self.cfg, self.workdir
        for d in ("hub", "local", "sim", "var"):
            (wd / d).mkdir(parents=True, exist_ok=True)
        hub = Mosquitto(workdir=wd / "hub", persistent=True)
        local = Mosquitto(workdir=wd / "local")
        hub.start()
        local.start()
        recorder = HubRecorder(hub.port, "retail/v1/demo/alerts")
        raw = _manifest_raw(cfg, wd / "var")
        base = parse_manifest(yaml.safe_dump(raw), "storeday.yaml")
        world = World(base, self.clock, seed=cfg.seed, fill=0.8)
        t0 = self.clock.monotonic()
        for key in world.snapshot():
            self.truth.changes[key] = [(t0, world.count(*key))]
        rfid = RfidSimPart(record_reads=True)
        world.listeners.append(self._on_world(world, rfid.last_read))
        shelves = ShelfSimPart(hz=25.0)
        self.rfid, self.shelves = rfid, shelves
        parts: list[Any] = [shelves, ScannerSimPart(), rfid]
        if cfg.ble and shutil.which("dbus-daemon"):
            parts.append(BleSimPart(period_s=1.0, max_zones=2, shoppers=3))
        devices: list[dict[str, Any]] = []
        ble_note = "off"
        try:
            for part in parts:
                (wd / "sim" / part.name).mkdir(exist_ok=True)
                try:
                    devices += await part.start(world, wd / "sim" / part.name, local.url)
                    self.parts.append(part)
                    if part.name == "ble":
                        ble_note = "on"
                        beacons = part.beacons_manifest()
                        raw["beacons"] = beacons
                except Exception as exc:  # BLE needs dbus-daemon; the rest of the store runs without it
                    if part.name != "ble":
                        raise
                    ble_note = f"unavailable: {exc}"
            # the shelves' settle windows need >= 3 samples in settle_s (0.8 store s): the serial shelf streams
            # 25 lines/s of real time (5 per store second), Modbus polls every 0.1 store s (the sim part's default)
            self.door = DoorSim(bits=16, start_in=65_000, start_out=64_990, heartbeat_s=1.0)
            self.door.start()
            devices.append({"id": "door-front", "type": "door_counter", "transport": "serial", "port": self.door.path,
                            "counter_bits": 16, "zone": "entrance", "read_timeout_s": 60})
            raw["devices"] = devices
            raw["local_broker"] = {"url": local.url}
            manifest = parse_manifest(yaml.safe_dump(raw, sort_keys=False), "storeday.yaml")
            async with Gateway(manifest, clock=self.clock, hub_url=hub.url, data_dir=wd / "var",
                               local_broker_url=local.url, tick_interval=cfg.tick_s) as gw:
                listener = asyncio.create_task(self._listen(gw))
                await self._warmup(gw, world)
                start = self.clock.monotonic()
                sampler = asyncio.create_task(self._sample(gw, world, manifest, start))
                await self._day(world, hub, start)
                await self.clock.sleep(max(cfg.weight_settle_s, cfg.rfid_settle_s))
                end = self.clock.monotonic()
                sampler.cancel()
                await asyncio.gather(sampler, return_exceptions=True)
                self.truth.visitors_seen = _visitors(gw)
                # the alerts raised before and during the outage reach the hub once it is back
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and len(_opened(recorder)) < self.truth.opened:  # noqa: ASYNC110
                    await asyncio.sleep(0.2)  # polling another process's subscriber: there is no event to wait on
                self.hub_alerts = len(_opened(recorder))
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)
                if gw.rules is not None:
                    await gw.rules.stop()
        finally:
            for part in reversed(self.parts):
                with contextlib.suppress(Exception):
                    await part.stop()
            if self.door is not None:
                await self.door.stop()
            recorder.close()
            hub.stop()
            local.stop()
        self.truth.entered = self.door.entered if self.door else 0
        out = check(self.truth, manifest, cfg, end)
        out["storeday_hub_alerts_received"] = self.hub_alerts
        out["storeday_alerts_accepted"] = self.truth.opened
        out["storeday_ble"] = ble_note
        out["storeday_real_s"] = round(end / cfg.factor, 1)
        return out

    async def _listen(self, gw: Gateway) -> None:
        tr = self.truth
        async for env in gw.subscribe():
            tr.events_seen += 1
            kind = env.get("type")
            if kind not in (OPENED, ESCALATED, RESOLVED):
                continue
            d = env["data"]
            t = (datetime.fromisoformat(str(env["time"]).replace("Z", "+00:00")) - self.clock.start).total_seconds()
            cell = (str(d.get("shelf")), str(d.get("sku")))
            if kind == OPENED:
                tr.opened += 1
                if d["kind"] in STOCK_KINDS:
                    tr.alerts.append((t, *cell, str(d["kind"])))
                elif d["kind"] in FAULT_KINDS:
                    tr.fault_alerts[str(d["alert_id"])] = [t, str(d["kind"]), *cell, None]
            elif kind == ESCALATED and d.get("reason") == "out_of_stock":
                tr.alerts.append((t, *cell, "out_of_stock"))  # the stock-out superseded the live low-stock alert
            elif kind == RESOLVED and str(d.get("alert_id")) in tr.fault_alerts:
                tr.fault_alerts[str(d["alert_id"])][4] = t

    async def _warmup(self, gw: Gateway, world: World) -> None:
        """Until every cell shows the truth once (readers' first cycles, shelves' first stable windows)."""
        deadline = self.clock.monotonic() + self.cfg.warmup_s * 3
        while self.clock.monotonic() < deadline:
            if all((c := gw.stock.get(*k)) is not None and c.version > 0 and c.count == n
                   for k, n in world.snapshot().items()):
                break
            await self.clock.sleep(1.0)

    async def _sample(self, gw: Gateway, world: World, manifest: Manifest, start: float) -> None:
        weight = {s.id: s.stock_source == "weight" for s in manifest.shelves}
        tr = self.truth
        while True:
            await self.clock.sleep(self.cfg.sample_s)
            now = self.clock.monotonic()
            for key, n in world.snapshot().items():
                cell = gw.stock.get(*key)
                if cell is not None and cell.stale_since is not None:
                    windows = tr.stale.setdefault(key, [])
                    if windows and now - windows[-1][1] <= 2 * self.cfg.sample_s:
                        windows[-1][1] = now
                    else:
                        windows.append([now, now])
                allowance = self.cfg.weight_settle_s if weight.get(key[0]) else self.cfg.rfid_settle_s
                last_change = tr.changes[key][-1][0]
                if last_change > start - 1 and now - last_change < allowance:
                    tr.skipped += 1
                    continue
                tr.samples += 1
                src = tr.by_source["weight" if weight.get(key[0]) else "rfid"]
                src[0] += 1
                if cell is not None and cell.count == n:
                    tr.exact += 1
                    src[1] += 1
                elif cell is not None and cell.stale_since is not None:
                    tr.stale_flagged += 1  # wrong, but the gateway says it cannot see the cell
                    src[1] += 1
                else:
                    name = f"{key[0]}/{key[1]}"
                    tr.wrong[name] = tr.wrong.get(name, 0) + 1
                    if len(tr.wrong_examples) < 30:
                        seen = cell.count if cell is not None else None
                        tr.wrong_examples.append(
                            f"{now - start:.0f}s {name} {n}->{seen} (changed {now - last_change:.0f}s ago)")

    async def _day(self, world: World, hub: Mosquitto, start: float) -> None:
        cfg, rng, door = self.cfg, self.rng, self.door
        assert door is not None
        lanes = list(world.lanes.values())
        weights = [3.0 if i % 2 == 0 else 1.0 for i in range(len(lanes))]  # some SKUs sell faster
        inside = 0
        hands: dict[tuple[str, str], float] = {}
        low_since: dict[tuple[str, str], float] = {}
        outage = False
        faults = Faults(self, world, start) if cfg.faults else None
        while (t := self.clock.monotonic() - start) < cfg.sim_s:
            busy = faults.step(t) if faults is not None else {}  # lanes nobody touches while a fault lasts
            # door: shoppers arrive (busier after the first minutes), some leave
            if rng.random() < (0.3 if t < 60 else 0.6):
                door.walk_in(1)
                inside += 1
            if inside and rng.random() < 0.4:
                door.walk_out(1)
                inside -= 1
            # shoppers pick, put back, check out
            if rng.random() < cfg.pick_p:
                lane = rng.choices(lanes, weights)[0]
                if lane.count and (lane.shelf, lane.lane) not in hands and busy.get((lane.shelf, lane.lane), 0) < 2:
                    world.pick(lane.shelf, lane.lane, 1 if rng.random() < 0.85 else 2)
            if world.carried and rng.random() < 0.08:
                _epc, sku = rng.choice(world.carried)
                back = [ln for ln in lanes if ln.sku == sku and (ln.shelf, ln.lane) not in hands
                        and (ln.shelf, ln.lane) not in busy]
                if back:
                    world.put_back(back[0].shelf, back[0].lane, 1)
            if world.carried and rng.random() < 0.1:
                world.checkout()
            # hands resting on weight lanes for a few seconds
            for key, until in list(hands.items()):
                if t >= until:
                    world.hand(*key, 0.0)
                    del hands[key]
            if rng.random() < cfg.hand_p:
                lane = rng.choice([ln for ln in lanes if ln.shelf != "rack-c1"])
                key = (lane.shelf, lane.lane)
                if key not in hands and key not in busy:
                    hands[key] = t + rng.uniform(2.0, 8.0)
                    world.hand(*key, rng.uniform(150.0, 600.0))
            # staff restock a lane that stayed low (after its alert had time to fire)
            for ln in lanes:
                key = (ln.shelf, ln.lane)
                low = 8 if ln.shelf == "rack-c1" else 4
                if ln.count <= low:
                    low_since.setdefault(key, t)
                    if t - low_since[key] > cfg.debounce_s + 40 and key not in hands and key not in busy:
                        world.receive(ln.sku, ln.capacity)
                        world.restock(ln.shelf, ln.lane)
                        low_since.pop(key, None)
                else:
                    low_since.pop(key, None)
            # hub outage
            if not outage and cfg.outage_at_s <= t < cfg.outage_at_s + cfg.outage_s:
                hub.checkpoint()
                hub.kill()
                outage = True
            elif outage and t >= cfg.outage_at_s + cfg.outage_s:
                hub.start()
                outage = False
            await self.clock.sleep(1.0)
        for key in list(hands):
            world.hand(*key, 0.0)
        if faults is not None:
            await faults.end()
        if outage:
            hub.start()


class Faults:
    """The day's injected faults (see the module docstring), stepped once per store second of `_day`."""

    PICK_GRACE_S = 8.0  # shoppers keep off a stuck lane this long (its fault is being detected)

    def __init__(self, day: StoreDay, world: World, start: float) -> None:
        self.day, self.world, self.start = day, world, start
        self.cfg = day.cfg
        self.done: set[str] = set()
        self.tasks: list[asyncio.Task[None]] = []

    def _cell_sim(self, shelf: str, lane: str) -> Any:
        for sim in (self.day.shelves.serial, self.day.shelves.modbus, self.day.shelves.mqtt):
            if sim is not None and any(ln.shelf == shelf and ln.lane == lane for ln in sim.lanes):
                return sim
        raise KeyError(f"no simulated shelf has {shelf}/{lane}")

    def _once(self, name: str, t: float, at: float) -> bool:
        if name in self.done or t < at:
            return False
        self.done.add(name)
        return True

    def _record(self, kind: str, lane: tuple[str, str], t0: float, t1: float) -> None:
        sku = self.world.lanes[lane].sku
        self.day.truth.faults.append((kind, lane[0], sku, self.start + t0, self.start + t1))

    def step(self, t: float) -> dict[tuple[str, str], int]:
        """Start and end faults due at `t`; the lanes nobody may touch now (2: nor pick from; 1: no hands)."""
        cfg, world = self.cfg, self.world
        llrp = self.day.rfid.llrp if self.day.rfid is not None else None
        if llrp is not None and self._once("silent", t, cfg.reader_silent_at_s):
            self.tasks.append(asyncio.create_task(llrp.go_silent(cfg.reader_silent_s)))
        if llrp is not None and self._once("restart", t, cfg.reader_restart_at_s):
            self.tasks.append(asyncio.create_task(llrp.restart(cfg.reader_restart_down_s)))
        busy: dict[tuple[str, str], int] = {}
        stuck, obj, lean = cfg.stuck_lane, cfg.object_lane, cfg.lean_lane
        if self._once("stuck", t, cfg.stuck_at_s):
            self._cell_sim(*stuck).stick_cell(*stuck)
            self._record("lane_fault", stuck, cfg.stuck_at_s, cfg.stuck_at_s + cfg.stuck_s)
        if "stuck" in self.done and self._once("heal", t, cfg.stuck_at_s + cfg.stuck_s):
            self._cell_sim(*stuck).heal_cell(*stuck)
        if "stuck" in self.done and "heal" not in self.done:
            busy[stuck] = 2 if t < cfg.stuck_at_s + self.PICK_GRACE_S else 1
        if self._once("object", t, cfg.object_at_s):
            world.place_object(*obj, cfg.object_g)
            self._record("unknown_object", obj, cfg.object_at_s, cfg.object_at_s + cfg.object_s)
        if "object" in self.done and self._once("object_off", t, cfg.object_at_s + cfg.object_s):
            world.remove_object(*obj)
        if "object" in self.done and "object_off" not in self.done:
            busy[obj] = 2
        if self._once("lean", t, cfg.lean_at_s):
            world.lean(*lean, cfg.lean_g)
            self._record("unknown_object", lean, cfg.lean_at_s, cfg.lean_at_s + cfg.lean_s)
        if "lean" in self.done and self._once("lean_off", t, cfg.lean_at_s + cfg.lean_s):
            world.lean(*lean, 0.0)
        if "lean" in self.done and "lean_off" not in self.done:
            busy[lean] = 2
        return busy

    async def end(self) -> None:
        """Undo what is still on (the day ended first) and wait for the reader's fault tasks."""
        cfg, world = self.cfg, self.world
        if "stuck" in self.done and "heal" not in self.done:
            self._cell_sim(*cfg.stuck_lane).heal_cell(*cfg.stuck_lane)
        if "object" in self.done and "object_off" not in self.done:
            world.remove_object(*cfg.object_lane)
        if "lean" in self.done and "lean_off" not in self.done:
            world.lean(*cfg.lean_lane, 0.0)
        await asyncio.gather(*self.tasks, return_exceptions=True)


def _opened(recorder: Any) -> list[dict[str, Any]]:
    return [e for e in recorder.events() if e.get("type") == OPENED]


def _visitors(gw: Gateway) -> int | None:
    from drivers.traffic.processor import TrafficProcessor

    for proc in gw.pipeline.processors:
        if isinstance(proc, TrafficProcessor):
            return int(proc.view(gw.clock.now()).visitors_today)
    return None


async def run_storeday(cfg: StoreDayConfig, workdir: Path | None = None) -> dict[str, Any]:
    """Play one day in `workdir` (a temporary directory by default) and return the figures."""
    if workdir is not None:
        return await StoreDay(cfg, workdir).run()
    with tempfile.TemporaryDirectory(prefix="storeday-") as tmp:
        return await StoreDay(cfg, Path(tmp)).run()


if __name__ == "__main__":
    import sys

    quick = "--quick" in sys.argv
    c = StoreDayConfig(sim_s=250.0 if quick else 1500.0, outage_at_s=100.0 if quick else 600.0)
    print(orjson.dumps(asyncio.run(run_storeday(c))).decode())
