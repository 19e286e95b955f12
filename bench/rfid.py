"""RFID benchmark, not a timed assertion: it returns the figures.

- `bench_rfid`: real LLRP RO_ACCESS_REPORT bytes -> framing + decode (with the per-connection memory of
  omitted fields, as the driver decodes) + smoothing, on one core; the memory of 100,000 tracked tags.
- `bench_llrp_delivery`: the real LLRP driver under the real supervisor against the strict reader emulator
  over TCP for 60 s (quick: 12 s), the emulator leaving out unchanged optional fields, writing every frame
  in two TCP segments and rebooting once (ConnectionCloseEvent, 1 s down): reads decoded / reads sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from drivers.rfid import llrp_codec as c
from drivers.rfid.config import LlrpConfig
from drivers.rfid.llrp import LlrpDriver
from drivers.rfid.reads import TagRead
from drivers.rfid.smoothing import Params, SmoothingEngine
from edge.clock import SystemClock
from edge.config import parse_manifest
from edge.driver import DriverContext, Reading
from edge.metrics import Metrics
from edge.supervisor import Supervisor
from firmware_sim.rfid.llrp_reader import LlrpReaderSim
from firmware_sim.rfid.population import Population
from firmware_sim.world import World, demo_manifest_text, sgtin96_hex


def _reports(n_tags: int, per_report: int, rng: random.Random, omit: bool = False) -> list[bytes]:
    """RO_ACCESS_REPORT frames, `per_report` tags each, cycling through `n_tags` SGTIN-96 EPCs; with `omit`,
    as a reader doing efficient reporting sends them (the antenna and timestamps, same for a whole report,
    only in its first TagReportData; LLRP 1.0.1 §13.2.3)."""
    epcs = [bytes.fromhex(sgtin96_hex("0614141", f"8{i % 1000:05d}", i)) for i in range(n_tags)]
    frames = []
    for start in range(0, n_tags, per_report):
        ant = 1 + (start // per_report) % 4
        body = b"".join(c.tag_report_data(e, antenna=None if omit and i else (ant if omit else 1 + (i % 4)),
                                          rssi=-50 - rng.randrange(20), first_us=None if omit and i else 1,
                                          last_us=None if omit and i else 2, count=1 + (i % 3))
                        for i, e in enumerate(epcs[start : start + per_report]))  # fmt: skip
        frames.append(c.encode_message(c.Msg.RO_ACCESS_REPORT, start, body))
    return frames


def _throughput(quick: bool, omit: bool) -> float:
    """Reads/s through framing + decode (with the connection's memory of omitted fields) + smoothing."""
    rng = random.Random(1)
    params = Params()
    n_tags = 5_000 if quick else 20_000
    stream = b"".join(_reports(n_tags, 200, rng, omit))
    rounds = 3 if quick else 20
    engine = SmoothingEngine()
    dec = c.FrameDecoder()
    carry = c.new_carry()
    reads = 0
    t0 = time.perf_counter()
    now = 0.0
    for _ in range(rounds):
        now += 1.0
        for i in range(0, len(stream), 65536):  # TCP-sized chunks: frames split across reads
            for msg in dec.feed(stream[i : i + 65536]):
                for epc, ant, rssi, _first, _last, _count in c.decode_ro_access_report(msg.body, carry):
                    engine.observe(epc, ZONES[ant], rssi, now, "bench", params)
                    reads += 1
        engine.expire(now)
    return reads / (time.perf_counter() - t0)


ZONES = {1: "aisle-1", 2: "aisle-1", 3: "aisle-2", 4: "apparel"}


def bench_rfid(quick: bool) -> dict[str, float]:
    """{"rfid_reads_per_s": decode+smoothing throughput, "rfid_reads_per_s_omitted": the same with omitted
    fields (the general decoding path), "rfid_mem_mb_100k_tags": engine memory}."""
    zones = ZONES
    params = Params()
    per_s = _throughput(quick, omit=False)
    per_s_omitted = _throughput(quick, omit=True)

    # memory: 100,000 distinct present tags, each seen by two read points (the worst common case)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    eng = SmoothingEngine()
    epcs = [sgtin96_hex("0614141", f"8{i % 1000:05d}", i) for i in range(100_000)]
    for t in (0.0, 1.0):
        for i, e in enumerate(epcs):
            eng.observe(e, zones[1 + i % 4], -55.0, t, "bench", params)
            if i % 10 == 0:
                eng.observe(e, zones[1 + (i + 2) % 4], -65.0, t, "bench", params)
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    epcs_mb = sum(len(e) + 49 for e in epcs) / 1e6  # the benchmark's own list of EPC strings, not engine state
    return {
        "rfid_reads_per_s": round(per_s),
        "rfid_reads_per_s_omitted": round(per_s_omitted),
        "rfid_mem_mb_100k_tags": round(used / 1e6 - epcs_mb, 1),
    }


async def _delivery(run_s: float) -> dict[str, float]:
    manifest = parse_manifest(demo_manifest_text(), "demo_manifest.yaml")
    ants = {1: "apparel", 2: "entrance"}
    sim = LlrpReaderSim(Population(World(manifest, SystemClock()), ants, seed=3), omit_unchanged=True,
                        split_frames=True)  # fmt: skip
    port = await sim.start()
    cfg = LlrpConfig(id="rfid-bench", host="127.0.0.1", port=port, antennas=ants, cycle_ms=250)
    drv = LlrpDriver(cfg, DriverContext(manifest=manifest, clock=SystemClock(), data_dir=Path(tempfile.gettempdir())))
    decoded = 0
    missing_fields = 0

    async def sink(r: Reading) -> None:
        nonlocal decoded, missing_fields
        if isinstance(r, TagRead):
            decoded += 1
            if r.antenna not in ants or r.rssi_dbm is None or r.seen_us is None:
                missing_fields += 1

    sup = Supervisor([(drv, "llrp")], sink=sink, on_status=lambda *_: None, clock=SystemClock(), metrics=Metrics())
    sup.start()
    t0 = time.monotonic()
    try:
        await asyncio.sleep(run_s / 2)
        await sim.restart(down_s=1.0)
        await asyncio.sleep(max(0.0, run_s - (time.monotonic() - t0)))
        sim.disable_rospecs()  # end of the run: no new reports, let the last ones arrive
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_until(lambda: decoded >= sim.stats.tags_sent), 10)
    finally:
        await sup.stop()
        await sim.stop()
    sent = sim.stats.tags_sent
    return {
        "llrp_reads_sent": sent,
        "llrp_reads_decoded_pct": round(100 * decoded / sent, 3) if sent else 0.0,
        "llrp_reads_missing_fields": missing_fields,
        "llrp_connections": sim.stats.connections,
        "llrp_omitted_split_restart_run_s": round(time.monotonic() - t0, 1),
    }


async def _until(cond: Callable[[], bool]) -> None:
    while not cond():  # noqa: ASYNC110  # polls counters two tasks update
        await asyncio.sleep(0.05)


def bench_llrp_delivery(quick: bool) -> dict[str, float]:
    """{"llrp_reads_decoded_pct": reads decoded / reads sent (goal 100), ...} over a 60 s (quick 12 s) run."""
    return asyncio.run(_delivery(12.0 if quick else 60.0))


if __name__ == "__main__":
    import sys

    quick = "--quick" in sys.argv
    print(bench_rfid(quick) | bench_llrp_delivery(quick))
