"""RFID benchmark: real LLRP RO_ACCESS_REPORT bytes -> framing + decode + smoothing, on one core; and the
memory of 100,000 tracked tags (tracemalloc). Not a timed assertion: it returns the figures."""

from __future__ import annotations

import gc
import random
import time
import tracemalloc

from drivers.rfid import llrp_codec as c
from drivers.rfid.smoothing import Params, SmoothingEngine
from firmware_sim.world import sgtin96_hex


def _reports(n_tags: int, per_report: int, rng: random.Random) -> list[bytes]:
    """RO_ACCESS_REPORT frames, `per_report` tags each, cycling through `n_tags` SGTIN-96 EPCs."""
    epcs = [bytes.fromhex(sgtin96_hex("0614141", f"8{i % 1000:05d}", i)) for i in range(n_tags)]
    frames = []
    for start in range(0, n_tags, per_report):
        body = b"".join(c.tag_report_data(e, antenna=1 + (i % 4), rssi=-50 - rng.randrange(20), first_us=1,
                                          last_us=2, count=1 + (i % 3))
                        for i, e in enumerate(epcs[start : start + per_report]))
        frames.append(c.encode_message(c.Msg.RO_ACCESS_REPORT, start, body))
    return frames


def bench_rfid(quick: bool) -> dict[str, float]:
    """{"rfid_reads_per_s": decode+smoothing throughput, "rfid_mem_mb_100k_tags": engine memory}."""
    rng = random.Random(1)
    zones = {1: "aisle-1", 2: "aisle-1", 3: "aisle-2", 4: "apparel"}
    params = Params()
    n_tags = 5_000 if quick else 20_000
    frames = _reports(n_tags, 200, rng)
    stream = b"".join(frames)
    rounds = 3 if quick else 20
    engine = SmoothingEngine()
    dec = c.FrameDecoder()
    reads = 0
    t0 = time.perf_counter()
    now = 0.0
    for _ in range(rounds):
        now += 1.0
        for i in range(0, len(stream), 65536):  # TCP-sized chunks: frames split across reads
            for msg in dec.feed(stream[i : i + 65536]):
                for epc, ant, rssi, _first, _last, _count in c.decode_ro_access_report(msg.body):
                    engine.observe(epc, zones[ant], rssi, now, "bench", params)
                    reads += 1
        engine.expire(now)
    elapsed = time.perf_counter() - t0

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
        "rfid_reads_per_s": round(reads / elapsed),
        "rfid_mem_mb_100k_tags": round(used / 1e6 - epcs_mb, 1),
    }


if __name__ == "__main__":
    import sys

    print(bench_rfid("--quick" in sys.argv))
