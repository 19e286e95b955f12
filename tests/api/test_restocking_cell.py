"""Restocking one cell through the real gateway (private mosquitto as the hub): POST /api/v1/shelves/{shelf}/
restocking with `sku` and the MQTT command restock.mute with `sku` mute only that cell (GET /api/v1/restocking
lists it, retail.restocking.started.v1 on the hub), and the mute ends when the cell's count rises
(retail.restocking.ended.v1, reason restocked); refusals change nothing."""

from __future__ import annotations

import asyncio
from typing import Any

from edge.brokers import Mosquitto
from firmware_sim.hub import HubRecorder
from tests.api.conftest import Running, wait_for
from tests.api.test_api import ROOT, command


async def test_restocking_a_cell_ends_when_its_count_rises(running: Running, mosquitto: Mosquitto) -> None:
    hub = HubRecorder(mosquitto.port, f"{ROOT}/events/rules", persistent=False)
    try:
        staff = running.headers("staff")
        engine = running.gw.rules.engine
        url = "/api/v1/shelves/shelf-a1/restocking"
        running.set_stock("shelf-a1", "cola-330", 10)
        running.set_stock("shelf-a1", "water-500", 10)
        for body, status in (({"sku": "tee-m"}, 404), ({"sku": ""}, 422), ({"sku": "x" * 65}, 422),
                             ({"sku": "cola-330", "duration_s": 0}, 400)):
            r = await running.client.post(url, headers=staff, json=body)
            assert r.status_code == status, (body, r.text)
        assert (await running.client.post(url, headers=running.headers("hq"), json={"sku": "cola-330"})
                ).status_code == 403
        assert not engine.restock.muted_cells
        r = await running.client.post(url, headers=staff, json={"sku": "cola-330", "duration_s": 600})
        assert r.status_code == 200, r.text
        assert (r.json()["sku"], r.json()["muted"]) == ("cola-330", True) and r.json()["until"]
        listed = (await running.client.get("/api/v1/restocking", headers=running.headers("hq"))).json()["items"]
        assert [(c["shelf"], c["sku"], c["baseline"]) for c in listed] == [("shelf-a1", "cola-330", 10)]

        def of(kind: str) -> list[dict[str, Any]]:
            return [e["data"] for e in hub.events() if e["type"] == f"retail.restocking.{kind}.v1"]

        await wait_for(lambda: of("started"), 10, "restocking started on MQTT")
        assert (of("started")[0]["sku"], of("started")[0]["baseline"]) == ("cola-330", 10)
        # only the cell is muted: water on the same shelf still alerts, cola does not
        running.set_stock("shelf-a1", "cola-330", 2)
        running.set_stock("shelf-a1", "water-500", 2)
        await wait_for(lambda: any(a.sku == "water-500" for a in engine.book.live.values()), 10, "water alert")
        await asyncio.sleep(1.0)  # past the test rules' 0.3 s debounce
        assert not any(a.sku == "cola-330" for a in engine.book.live.values())
        # the count rises: restocked, the mute ends
        running.set_stock("shelf-a1", "cola-330", 20)
        await wait_for(lambda: of("ended"), 10, "restocking ended on MQTT")
        assert (of("ended")[0]["reason"], of("ended")[0]["count"]) == ("restocked", 20)
        assert (await running.client.get("/api/v1/restocking", headers=staff)).json()["items"] == []
        # over MQTT: restock.mute with a sku; a bad sku is refused
        bad = await command(mosquitto, "restock.mute", {"shelf": "shelf-a1", "sku": 5})
        assert (bad["ok"], bad["error"]["code"]) == (False, "bad_request")
        ok = await command(mosquitto, "restock.mute", {"shelf": "shelf-a1", "sku": "cola-330", "duration_s": 300})
        assert ok["ok"] and ok["result"]["muted"] is True, ok
        assert ("shelf-a1", "cola-330") in engine.restock.muted_cells
        await wait_for(lambda: len(of("started")) == 2, 10, "second start on MQTT")
    finally:
        hub.close()
