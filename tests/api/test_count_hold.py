"""A count correction through the real gateway (private mosquitto as the hub) is held until the sensors settle:
POST /api/v1/stock/{shelf}/{sku}/count, then the scale's next claim does not replace it (REST: the count, origin
manual, the correction as a source with its time; MQTT: the audited correction, no stock change back to the
sensor's count), and once the scale's count stayed the same for the settle time the sensor is served again
(a stock change with reason "sensors settled" on the hub)."""

from __future__ import annotations

import json
from typing import Any

from edge.brokers import Mosquitto
from firmware_sim.hub import HubRecorder
from tests.api.conftest import Running, wait_for
from tests.api.test_api import ROOT


async def test_correction_held_until_the_sensors_settle(running: Running, mosquitto: Mosquitto) -> None:
    hub = HubRecorder(mosquitto.port, f"{ROOT}/events/stock", persistent=False)
    try:
        staff = running.headers("staff")
        running.gw.stock.correction_settle_s = 2.0  # the gateway's setting, short for the test (default 60 s)
        running.set_stock("shelf-a1", "cola-330", 9)
        r = await running.client.post("/api/v1/stock/shelf-a1/cola-330/count", headers=staff,
                                      json={"by": "Sam", "count": 12, "reason": "counted the lane"})
        assert r.status_code == 200, r.text
        running.set_stock("shelf-a1", "cola-330", 9)  # the scale says 9 again at once

        async def cell() -> dict[str, Any]:
            items = (await running.client.get("/api/v1/stock", params={"shelf": "shelf-a1", "sku": "cola-330"},
                                              headers=staff)).json()["items"]
            return dict(items[0])

        c = await cell()
        assert (c["count"], c["origin"], c["sources"]) == (12, "manual", {"manual": 12})
        assert c["correction"]["holding"] is True and c["correction"]["sensor"] == 9
        assert c["correction"]["count"] == 12 and c["correction"]["at"]

        def changes() -> list[dict[str, Any]]:
            return [e["data"] for e in hub.events() if e["type"] == "retail.stock.changed.v1"
                    and e["data"]["sku"] == "cola-330"]

        await wait_for(lambda: [e for e in hub.events() if e["type"] == "retail.stock.corrected.v1"], 10,
                       "the correction on MQTT")
        assert [d["count"] for d in changes()][-1:] == [12]
        # the scale's 9 stayed the same for the settle time: served again, announced on the hub
        await wait_for(lambda: changes() and changes()[-1]["count"] == 9, 15, "the settled sensor count on MQTT")
        assert "sensors settled" in changes()[-1]["reason"] and changes()[-1]["origin"] == "weight"
        c = await cell()
        assert (c["count"], c["origin"], c["correction"]["holding"]) == (9, "weight", False)
    finally:
        hub.close()


async def test_the_hold_is_committed_with_the_cell(running: Running) -> None:
    """The correction and its hold are in the database (kv, with the cell's trust row) once committed, so a
    restart keeps serving the counted number until the sensors settle (edge/state.py load_trust)."""
    staff = running.headers("staff")
    running.set_stock("shelf-a1", "cola-330", 9)
    r = await running.client.post("/api/v1/stock/shelf-a1/cola-330/count", headers=staff,
                                  json={"by": "Sam", "count": 12, "reason": "counted the lane"})
    assert r.status_code == 200, r.text
    running.set_stock("shelf-a1", "cola-330", 9)

    async def row() -> list[Any] | None:
        got = await running.gw.db.query("SELECT value FROM kv WHERE key = ?", ("stock.trust.shelf-a1.cola-330",))
        if not got:
            return None
        corr = json.loads(str(got[0]["value"])).get("correction")
        return corr if isinstance(corr, list) and corr[4] == 9 else None

    corr = await wait_for(row, 10, "the held correction in kv")
    assert corr[0] == 12 and corr[3] is True  # count, holding
