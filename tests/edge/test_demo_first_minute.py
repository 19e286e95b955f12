"""The demo shows every part of the store in its first minute (issue 17 item 8).

`edge-gateway demo --duration 60` runs as a process against a private mosquitto (the hub, and the store's
local broker) while a hub subscriber records what arrives. Within that minute the hub must get a low-stock
alert, an offer, a restock scan, a beacon event and foot traffic with visitors; the demo must print the
staff chat messages its fake WeCom and Slack robots received, and its status line must count them all.
Nothing is timed beyond the demo's own duration: the script runs on the demo's clock, the test only waits
for the process to end.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge.brokers import Mosquitto
from firmware_sim.hub import HubRecorder

REPO = Path(__file__).resolve().parents[2]


def _types(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        out.setdefault(str(e.get("type")), []).append(e)
    return out


@pytest.mark.timeout(240)
def test_first_minute_shows_every_part(tmp_path: Path, mosquitto: Mosquitto) -> None:
    hub = HubRecorder(mosquitto.port, "#")  # subscribed before the demo starts: nothing is missed
    log = tmp_path / "demo.log"
    try:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "edge", "demo", "--duration", "60", "--api", "127.0.0.1:0",
                 "--mqtt", mosquitto.url, "--data-dir", str(tmp_path / "var"), "--quiet"],
                stdout=out, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True,
                env={**os.environ, "EDGE_API_TOKEN": "t" * 24},
            )
            try:
                rc = proc.wait(200)  # 60 s of store life plus start and shutdown, under any load
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
        hub.wait_for(lambda h: any(e.get("type") == "retail.traffic.interval.v1" for e in h.events()), 10)
    except TimeoutError:
        pass  # the assertions below say what is missing
    finally:
        hub.close()
    text = log.read_text(errors="replace")
    assert rc == 0, text[-4000:]
    by_type = _types(hub.events())
    seen = {t: len(v) for t, v in sorted(by_type.items())}

    # a low-stock alert of the scripted lane (water on shelf-a1), to the hub and to the staff chats
    opened = by_type.get("retail.alert.opened.v1", [])
    assert any("shelf-a1" in str(e) and "water-500" in str(e) for e in opened), (seen, text[-3000:])
    assert re.search(r"staff chat \[wecom\] .*矿泉水 500毫升", text), text[-3000:]
    assert re.search(r"staff chat \[slack\] .*矿泉水 500毫升", text), text[-3000:]
    # an offer, restock scans (the top-up and the restock after the alert), a beacon event, foot traffic
    assert by_type.get("retail.offer.triggered.v1"), (seen, text[-3000:])
    assert len(by_type.get("retail.restock.finished.v1", [])) >= 1, (seen, text[-3000:])
    assert by_type.get("retail.beacon.battery_low.v1"), (seen, text[-3000:])
    traffic = by_type.get("retail.traffic.interval.v1", [])
    assert any((e.get("data") or {}).get("entries", 0) > 0 for e in traffic), (seen, traffic)
    assert "shopper's app shows the offer" in text, text[-3000:]

    # the status line at shutdown counts them
    final = re.search(r"demo: shutting down \((.*)\)", text)
    assert final is not None, text[-3000:]
    counts = {k: int(v) for k, v in re.findall(r"(alerts|staff chat|offers|scans|beacon events|visitors) (\d+)",
                                                final[1])}
    assert counts["alerts"] >= 1 and counts["staff chat"] >= 2 and counts["offers"] >= 1, final[1]
    assert counts["scans"] >= 1 and counts["beacon events"] >= 1 and counts["visitors"] >= 1, final[1]
    # the second simulated store's retained stock is on the hub, and the gateway sees it as a fresh neighbour
    assert any(m.topic.startswith("retail/v1/demo-north/state/atp/") and m.payload for m in hub.snapshot())
    assert "nearby 1/1" in final[1], final[1]
    # the hub's online order: reserved, picked off the shelf by the simulated staff, ready, counted
    assert by_type.get("retail.order.reserved.v1") and by_type.get("retail.order.ready.v1"), (seen, text[-3000:])
    assert re.search(r"orders [1-9]\d* \(ready [1-9]\d*, collected [1-9]", final[1]), final[1]
    assert "Traceback" not in text, text[-4000:]
