"""Benchmark of the shelf count engine: weight samples per second on one core (100 lanes x 80 Hz traffic)."""

from __future__ import annotations

import random
import time

from drivers.shelf.engine import LaneEngine


def bench_shelf(quick: bool) -> dict[str, float]:
    """Feed noisy samples of 100 lanes (with picks) through `LaneEngine.feed`; return samples/s."""
    lanes = 100
    seconds = 2.0 if quick else 20.0  # simulated seconds of 80 Hz traffic
    rng = random.Random(1)
    engines = [LaneEngine(355.0, 1000.0) for _ in range(lanes)]
    noise = [rng.gauss(0, 1.5) for _ in range(4096)]
    counts = [20] * lanes
    n = int(seconds * 80)
    total = 0
    start = time.perf_counter()
    for i in range(n):
        t = i / 80.0
        if i % 80 == 0:
            counts[i // 80 % lanes] -= 1  # one pick per second somewhere
        for j in range(lanes):
            engines[j].feed(t, 1000.0 + counts[j] * 355.0 + noise[(i * lanes + j) & 4095])
        total += lanes
    elapsed = time.perf_counter() - start
    return {"weight_samples_per_s": total / elapsed}
