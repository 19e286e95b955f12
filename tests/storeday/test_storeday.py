"""Short store day (150 store seconds at compression 5, ~45 s) through every real driver and simulator, checked
against the World's truth (firmware_sim/storeday.py says exactly how samples and alerts are compared).

Asserted here, the issue's goals: no false and no missed low/out-of-stock alert, shelf x SKU counts right in
>= 99.5% of the samples (weight shelves and the RFID rack alike; a wrong count is right only when the cell is
flagged stale), alert latency <= debounce + 1 s, visitors exact, every accepted alert reached the hub after
its outage. The day is the harder one of issue 14: the LLRP reader goes silent for 40 s (> its 10 s
lost-timeout) and restarts, a load cell sticks while shoppers keep picking from its lane, a 2.34 kg bag is
left on a lane, someone leans 12 kg on a lane for 6 s; each lane fault / unknown object opens its staff alert
and the alert is resolved once the fault is over, the lean opens none.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_sim.storeday import StoreDayConfig, run_storeday

pytestmark = pytest.mark.timeout(120)


@pytest.mark.alone  # store time runs 5x real time: accuracy and latency need the cores to itself
async def test_short_store_day_meets_the_goals(tmp_path: Path) -> None:
    cfg = StoreDayConfig(sim_s=150.0, outage_at_s=60.0, outage_s=30.0, seed=11)
    got = await run_storeday(cfg, tmp_path)
    summary = {k: v for k, v in got.items() if k != "storeday_alert_details"}
    assert got["storeday_samples"] > 300, summary
    assert got["storeday_alerts_expected"] >= 1, f"the day never ran a cell low: {summary}"
    assert got["storeday_false_alerts"] == 0, got["storeday_alert_details"]
    assert got["storeday_missed_alerts"] == 0, got["storeday_alert_details"]
    assert got["storeday_count_accuracy_pct"] >= 99.5, summary
    assert got["storeday_count_accuracy_rfid_pct"] >= 99.5, summary
    # a weight count is stamped when the weight settled and an RFID departure when the tag was last read,
    # and the debounce runs from that time: latency is debounce + at most a tick
    assert got["storeday_alert_latency_max_s"] <= cfg.debounce_s + 1, summary
    assert got["storeday_visitors_error"] == 0, summary
    assert got["storeday_hub_alerts_received"] == got["storeday_alerts_accepted"], summary
    # the faults happened, the gateway said so, and staff heard of each (and of nothing else)
    assert got["storeday_faults_injected"] == 3, summary
    assert got["storeday_samples_stale_flagged"] > 0, summary  # the silent reader / stuck cell hid picks, flagged
    assert got["storeday_stale_windows"] >= 4, summary  # silent reader, restart (rack: 2 cells each), stuck, bag
    assert (got["storeday_fault_alerts_raised"], got["storeday_fault_alerts_cleared"]) == (2, 2), got[
        "storeday_alert_details"]
    assert got["storeday_fault_alerts_false"] == 0, got["storeday_alert_details"]


def _manifest() -> object:
    import yaml

    from edge.config import parse_manifest
    from firmware_sim.world import demo_manifest_text

    return parse_manifest(yaml.safe_dump(yaml.safe_load(demo_manifest_text())), "demo.yaml")


@pytest.mark.parametrize(
    ("shelf", "sku", "raised_after_due", "backdate", "false", "missed"),
    [
        ("rack-c1", "tee-m", 0.4, 0.0, 0, 0),  # on time
        ("rack-c1", "tee-m", -1.5, 0.0, 1, 1),  # early with no read to explain it: a false and a missed alert
        ("rack-c1", "tee-m", -1.5, 2.0, 0, 0),  # the tag was last read 2 s before the pick: the gateway may date it
        ("rack-c1", "tee-m", -3.5, 2.0, 1, 1),  # earlier than even the last read allows
        ("rack-c1", "tee-m", 15.5, 0.0, 1, 1),  # later than the RFID settle allowance + 1 s
    ],
)
def test_checker_window_follows_the_last_read(shelf: str, sku: str, raised_after_due: float, backdate: float,
                                              false: int, missed: int) -> None:
    from firmware_sim.storeday import Truth, check

    cfg = StoreDayConfig(debounce_s=20.0)
    truth = Truth()
    truth.changes[(shelf, sku)] = [(0.0, 3), (100.0, 0), (300.0, 40)]  # out of stock at 100, due 120
    truth.backdate[(shelf, sku, 100.0)] = backdate
    truth.alerts.append((120.0 + raised_after_due, shelf, sku, "out_of_stock"))
    truth.alerts.append((20.0, shelf, sku, "low_stock"))  # low from the start (3 <= 8): due 20
    got = check(truth, _manifest(), cfg, end=400.0)  # type: ignore[arg-type]
    assert (got["storeday_false_alerts"], got["storeday_missed_alerts"]) == (false, missed), got


def _faulty_truth(stale: list[list[float]] | None, alert_at: float) -> object:
    from firmware_sim.storeday import Truth

    truth = Truth()
    truth.changes[("rack-c1", "tee-m")] = [(0.0, 30), (100.0, 0), (300.0, 40)]  # out of stock at 100, due 120
    truth.alerts.append((alert_at, "rack-c1", "tee-m", "out_of_stock"))
    truth.alerts.append((alert_at, "rack-c1", "tee-m", "low_stock"))
    if stale is not None:
        truth.stale[("rack-c1", "tee-m")] = stale
    return truth


@pytest.mark.parametrize(
    ("stale", "alert_at", "false", "missed", "after_stale"),
    [
        (None, 121.0, 0, 0, 0),  # on time
        (None, 160.0, 2, 2, 0),  # 40 s late with the cell trusted all along
        ([[90.0, 140.0]], 160.0, 0, 0, 2),  # the reader was silent 90-140: it learnt of the stock-out at 140
        ([[90.0, 140.0]], 200.0, 2, 2, 0),  # later than the window's end + debounce + allowance
        ([[10.0, 20.0]], 160.0, 2, 2, 0),  # a stale window long before the condition excuses nothing
        ([[90.0, 105.0]], 124.0, 0, 0, 2),  # back before the due time: on time, but no latency (start unseen)
    ],
)
def test_checker_stale_windows_excuse_late_alerts(stale: list[list[float]] | None, alert_at: float, false: int,
                                                  missed: int, after_stale: int) -> None:
    from firmware_sim.storeday import check

    got = check(_faulty_truth(stale, alert_at), _manifest(), StoreDayConfig(debounce_s=20.0), end=400.0)  # type: ignore[arg-type]
    assert (got["storeday_false_alerts"], got["storeday_missed_alerts"], got["storeday_alerts_after_stale"]) == (
        false, missed, after_stale), got["storeday_alert_details"]


@pytest.mark.parametrize(
    ("alerts", "raised", "cleared", "false"),
    [
        ({"a": [62.0, "lane_fault", "shelf-b1", "crisps-150", 101.0]}, 1, 1, 0),
        ({"a": [62.0, "lane_fault", "shelf-b1", "crisps-150", None]}, 1, 0, 0),  # never resolved
        ({"a": [62.0, "lane_fault", "shelf-b1", "crisps-150", 80.0]}, 1, 0, 0),  # resolved while still stuck
        ({}, 0, 0, 0),  # missed
        ({"a": [62.0, "lane_fault", "shelf-b1", "crisps-150", 101.0],
          "b": [205.0, "unknown_object", "shelf-a1", "cola-330", 210.0]}, 1, 1, 1),  # the short lean alerted
        ({"a": [62.0, "unknown_object", "shelf-b1", "crisps-150", 101.0]}, 0, 0, 1),  # the wrong kind
    ],
)
def test_checker_fault_alerts(alerts: dict[str, list[object]], raised: int, cleared: int, false: int) -> None:
    from firmware_sim.storeday import Truth, check

    truth = Truth()
    truth.faults = [("lane_fault", "shelf-b1", "crisps-150", 50.0, 100.0),
                    ("unknown_object", "shelf-a1", "cola-330", 200.0, 206.0)]  # fmt: skip
    truth.fault_alerts = {k: list(v) for k, v in alerts.items()}
    got = check(truth, _manifest(), StoreDayConfig(lane_fault_hold_s=10.0), end=400.0)  # type: ignore[arg-type]
    assert (got["storeday_fault_alerts_raised"], got["storeday_fault_alerts_cleared"],
            got["storeday_fault_alerts_false"]) == (raised, cleared, false), got["storeday_alert_details"]


def test_checker_a_wrong_count_flagged_stale_is_not_wrong() -> None:
    from firmware_sim.storeday import Truth, check

    truth = Truth()
    truth.samples, truth.exact, truth.stale_flagged = 1000, 990, 8
    got = check(truth, _manifest(), StoreDayConfig(), end=400.0)  # type: ignore[arg-type]
    assert (got["storeday_count_accuracy_pct"], got["storeday_count_exact_pct"]) == (99.8, 99.0)


def test_checker_blind_low_then_empty_is_one_stock_out() -> None:
    # a stuck cell hid the lane going low (at 100) and empty (at 110); healed at 115, the gateway saw 0 at once
    # and opened one out_of_stock alert at 135: both expected raises are met
    from firmware_sim.storeday import Truth, check

    truth = Truth()
    truth.changes[("shelf-b1", "crisps-150")] = [(0.0, 16), (100.0, 3), (110.0, 0), (300.0, 20)]
    truth.stale[("shelf-b1", "crisps-150")] = [[60.0, 115.0]]
    truth.alerts.append((135.0, "shelf-b1", "crisps-150", "out_of_stock"))
    got = check(truth, _manifest(), StoreDayConfig(debounce_s=20.0), end=400.0)  # type: ignore[arg-type]
    assert (got["storeday_false_alerts"], got["storeday_missed_alerts"], got["storeday_alerts_after_stale"]) == (
        0, 0, 2), got["storeday_alert_details"]
    truth.stale.clear()  # trusted all along, the same alert misses the low-stock one
    got = check(truth, _manifest(), StoreDayConfig(debounce_s=20.0), end=400.0)  # type: ignore[arg-type]
    assert got["storeday_missed_alerts"] == 1, got["storeday_alert_details"]


@pytest.mark.parametrize(
    ("alert_at", "false", "missed"),
    [
        (161.0, 0, 0),  # the scale never saw the 0.8 s blip of one unit: empty since 141, raised at 141 + 20
        (163.8, 0, 0),  # it saw the blip: empty again since 143.8, raised 20 s later (within the allowance)
        (150.0, 1, 1),  # early either way
    ],
)
def test_checker_a_blip_the_scale_may_miss(alert_at: float, false: int, missed: int) -> None:
    from firmware_sim.storeday import Truth, check

    truth = Truth()
    # the last crisps taken at 141, one put back at 143 and taken again at 143.8 (the flake seen in CI-like runs:
    # "false out_of_stock at 161 / missed due 164")
    truth.changes[("shelf-b1", "crisps-150")] = [(0.0, 12), (141.0, 0), (143.0, 1), (143.8, 0), (300.0, 12)]
    truth.alerts.append((alert_at, "shelf-b1", "crisps-150", "out_of_stock"))
    truth.alerts.append((161.0, "shelf-b1", "crisps-150", "low_stock"))  # low (<= 4) since 141, blip or not
    got = check(truth, _manifest(), StoreDayConfig(debounce_s=20.0), end=400.0)  # type: ignore[arg-type]
    details = got["storeday_alert_details"]
    assert (got["storeday_false_alerts"], got["storeday_missed_alerts"]) == (false, missed), details
    if not false:  # latency from the start the scale could see: 141 without the blip, 143.8 after it
        assert got["storeday_alert_latency_max_s"] == pytest.approx(20.0), got
