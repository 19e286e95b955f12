"""Staff alerts jump a backlog read back from disk after a hub outage (issue 15, item 3c), against a real
mosquitto as the hub: the order of arrival is asserted, not wall time (bench_alert_behind_backlog times it)."""

from __future__ import annotations

from pathlib import Path

from bench.rules import alert_behind_backlog


async def test_alerts_jump_a_backlog_read_back_from_disk(tmp_path: Path) -> None:
    got = await alert_behind_backlog(tmp_path, 20_000)
    # the alert committed during the outage (behind 20,000 ledger events) is the first event the hub gets
    assert got["backlog_before_outage_alert"] == 0, got
    # the alert raised once the hub is back and the backlog is flowing arrives before the backlog is through
    assert got["backlog_after_live_alert"] > 0, got
    # every topic keeps its commit order, each backlog event arrives once
    assert got["backlog_in_order"] == 1.0, got
    assert got["alerts_in_order"] == 1.0, got
