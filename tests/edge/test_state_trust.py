"""Stock trust (issue 14): stale and conflict flags on stock cells, in the state, the API, `stock.get`, the
retained shelf snapshot and the database (across a restart); fused weight + RFID cells that disagree."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from edge.brokers import Mosquitto
from edge.config import Manifest, parse_manifest
from edge.events import StockChanged
from edge.gateway import Gateway
from edge.processing import StockFlag, StockUpdate
from edge.state import StockState
from firmware_sim.world import demo_manifest_text
from tests.api.conftest import TOKENS, manifest_for_tests, wait_for

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def manifest(stock_source: str = "rfid") -> Manifest:
    raw = yaml.safe_load(demo_manifest_text())
    for shelf in raw["shelves"]:
        if shelf["id"] == "rack-c1":
            shelf["stock_source"] = stock_source
    return parse_manifest(yaml.safe_dump(raw), "demo.yaml")


def stale(on: bool, s: float, origin: str = "rfid", reason: str = "reader rfid-1 offline", sku: str = "tee-m",
          flag: str = "stale") -> StockFlag:  # fmt: skip
    return StockFlag(shelf="rack-c1", sku=sku, time=at(s), origin=origin, source="rfid-1", flag=flag,  # type: ignore[arg-type]
                     on=on, reason=reason)  # fmt: skip


def claim(n: int, s: float, origin: str = "rfid") -> StockUpdate:
    return StockUpdate(shelf="rack-c1", sku="tee-m", time=at(s), origin=origin, source=f"{origin}-1", count=n)


def view(st: StockState) -> dict[str, Any]:
    d = st.get("rack-c1", "tee-m").as_dict()  # type: ignore[union-attr]
    return {k: d[k] for k in ("count", "stale", "stale_since", "stale_reason", "conflict", "conflict_since")}


@pytest.mark.parametrize(
    ("flags", "changed", "expected"),
    [
        ([stale(True, 5)], [True],
         {"stale": True, "stale_since": "2026-03-02T09:00:05Z", "stale_reason": "reader rfid-1 offline"}),
        # said again later, with a new reason: still stale since the first time
        ([stale(True, 5), stale(True, 9, reason="reader rfid-1 silent")], [True, True],
         {"stale": True, "stale_since": "2026-03-02T09:00:05Z", "stale_reason": "reader rfid-1 silent"}),
        ([stale(True, 5), stale(True, 9)], [True, False],
         {"stale": True, "stale_since": "2026-03-02T09:00:05Z", "stale_reason": "reader rfid-1 offline"}),
        ([stale(True, 5), stale(False, 20)], [True, True], {"stale": False, "stale_since": None, "stale_reason": None}),
        ([stale(False, 20)], [False], {"stale": False, "stale_since": None, "stale_reason": None}),
        # a weight flag on an RFID-counted shelf is not this cell's truth: ignored, like its claims
        ([stale(True, 5, origin="weight")], [False], {"stale": False, "stale_since": None, "stale_reason": None}),
        # two origins on a fused cell: stale while either says so, since the earliest
        ([stale(True, 5), stale(True, 3, origin="weight", reason="lane 1: load cell stuck")], [True, True],
         {"stale": True, "stale_since": "2026-03-02T09:00:03Z",
          "stale_reason": "reader rfid-1 offline; lane 1: load cell stuck"}),
    ],
)
def test_stale_flags(flags: list[StockFlag], changed: list[bool], expected: dict[str, Any]) -> None:
    st = StockState(manifest("any" if any(f.origin == "weight" for f in flags) and len(flags) > 1 else "rfid"))
    st.apply(claim(7, 0))
    st.take_touched()
    before = st.shelf_snapshot("rack-c1")["version"]
    assert [st.flag(f) for f in flags] == changed
    got = view(st)
    assert {k: got[k] for k in expected} == expected
    assert got["count"] == 7  # a flag never changes the count
    touched = st.take_touched()
    assert [(c.shelf, c.sku) for c in touched] == ([("rack-c1", "tee-m")] if any(changed) else [])
    assert st.shelf_snapshot("rack-c1")["version"] == before + sum(changed)  # republished once per change


def test_fused_cell_disagreeing_gets_the_conflict_flag_and_serves_the_lower_count() -> None:
    st = StockState(manifest("any"), conflict_settle_s=30)
    st.apply(claim(10, 0, "weight"))
    st.apply(claim(10, 0, "rfid"))
    assert st.apply(claim(9, 1, "weight")) is not None  # a pick: the scale sees it at once
    assert st.tick(at(5)) == []
    assert st.apply(claim(9, 11, "rfid")) is None  # RFID's lost-timeout later: they agree, nothing to flag
    assert st.tick(at(60)) == []
    assert view(st)["conflict"] is False
    # now they disagree for good: the weight serves 12 (an object on the lane?), RFID 8
    st.apply(claim(8, 100, "rfid"))
    st.apply(claim(12, 101, "weight"))
    assert st.get("rack-c1", "tee-m").count == 12  # type: ignore[union-attr]  # within the settle time: the claim
    (ev,) = st.tick(at(131))
    assert isinstance(ev, StockChanged)
    assert (ev.count, ev.previous, ev.origin) == (8, 12, "rfid")
    got = st.get("rack-c1", "tee-m").as_dict()  # type: ignore[union-attr]
    assert (got["conflict"], got["conflict_since"], got["count"]) == (True, "2026-03-02T09:01:40Z", 8)
    assert got["conflict_reason"] == "rfid says 8, weight says 12: serving the lower count"
    assert got["sources"] == {"rfid": 8, "weight": 12}
    # each source repeating itself does not flip the served count
    assert st.apply(claim(12, 140, "weight")) is None
    assert st.apply(claim(8, 141, "rfid")) is None
    assert st.tick(at(200)) == []
    # they agree again: the flag clears, the agreeing count is served
    ev2 = st.apply(claim(8, 150, "weight"))
    assert ev2 is None  # already served 8
    assert view(st)["conflict"] is False
    ev3 = st.apply(claim(7, 160, "weight"))
    assert ev3 is not None and ev3.count == 7


def test_a_single_source_shelf_never_conflicts() -> None:
    st = StockState(manifest("rfid"), conflict_settle_s=0)
    st.apply(claim(8, 0, "rfid"))
    st.apply(claim(12, 1, "weight"))  # not this shelf's truth: ignored
    assert st.tick(at(100)) == []
    assert view(st)["conflict"] is False


def test_unreadable_persisted_flags_are_dropped() -> None:
    st = StockState(manifest())
    st.load_trust([{"key": "stock.trust.rack-c1.tee-m", "value": "{not json"},
                   {"key": "stock.trust.rack-c1.tee-l", "value": '{"v": 3, "flags": [["stale", "rfid", "x", "y"]]}'},
                   {"key": "stock.trust.nowhere.tee-m", "value": "{}"}])  # fmt: skip
    assert view(st)["stale"] is False
    assert st.get("rack-c1", "tee-l").stale_since is None  # type: ignore[union-attr]


async def test_flags_reach_api_stock_get_snapshot_and_survive_a_restart(mosquitto: Mosquitto, tmp_path: Path) -> None:
    m = manifest_for_tests(tmp_path)
    topic = "retail/v1/demo/state/stock/rack-c1"
    headers = {"Authorization": f"Bearer {TOKENS['hq']}"}

    async def retained(gw: Gateway) -> dict[str, Any]:
        rows = await gw.db.query("SELECT payload, version FROM retained WHERE topic = ?", (topic,))
        return {"version": rows[0]["version"], **orjson.loads(rows[0]["payload"])} if rows else {}

    async with Gateway(m, hub_url=mosquitto.url, data_dir=tmp_path / "var", tick_interval=0.1) as gw:
        now = gw.clock.now()
        gw.pipeline.route([StockUpdate(shelf="rack-c1", sku="tee-m", time=now, origin="rfid", source="r", count=9)],
                          now)
        await gw.outbox.flush()
        v0 = (await wait_for(lambda: retained(gw), 5, "first snapshot"))["version"]
        since = now.replace(microsecond=0)
        gw.pipeline.route([StockFlag(shelf="rack-c1", sku="tee-m", time=since, origin="rfid", source="rfid-1",
                                     flag="stale", on=True, reason="reader rfid-1 offline")], now)  # fmt: skip
        await gw.outbox.flush()
        snap = await wait_for(lambda: _if(retained(gw), lambda s: s.get("version", 0) > v0), 5, "republished snapshot")
        item = next(i for i in snap["items"] if i["sku"] == "tee-m")
        iso = since.isoformat().replace("+00:00", "Z")
        assert (item["count"], item["stale"], item["stale_since"], item["stale_reason"]) == (
            9, True, iso, "reader rfid-1 offline")
        reply = await gw._cmd_stock_get({"shelf": "rack-c1", "sku": "tee-m"})
        assert reply["items"][0]["stale"] is True
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.api.port}") as c:
            r = await c.get("/api/v1/stock", params={"shelf": "rack-c1", "sku": "tee-m"}, headers=headers)
            assert r.status_code == 200, r.text
            assert r.json()["items"][0]["stale_since"] == iso
        if gw.rules is not None:
            await gw.rules.stop()
    async with Gateway(m, hub_url=mosquitto.url, data_dir=tmp_path / "var", tick_interval=0.1) as gw:
        cell = gw.stock.get("rack-c1", "tee-m")
        assert cell is not None and (cell.count, cell.stale_since, cell.stale_reason) == (9, since,
                                                                                         "reader rfid-1 offline")
        version = gw.stock.shelf_snapshot("rack-c1")["version"]
        assert version >= snap["version"]  # a restart never publishes an older snapshot version
        now = gw.clock.now()
        gw.pipeline.route([StockFlag(shelf="rack-c1", sku="tee-m", time=now, origin="rfid", source="rfid-1",
                                     flag="stale", on=False)], now)  # fmt: skip
        await gw.outbox.flush()
        snap2 = await wait_for(lambda: _if(retained(gw), lambda s: s.get("version", 0) > version), 5, "cleared")
        assert next(i for i in snap2["items"] if i["sku"] == "tee-m")["stale"] is False
        if gw.rules is not None:
            await gw.rules.stop()


async def _if(value: Any, pred: Any) -> Any:
    got = await value
    return got if pred(got) else None


async def test_a_conflicting_fused_cell_is_flagged_by_the_pipelines_tick(mosquitto: Mosquitto, tmp_path: Path) -> None:
    raw = yaml.safe_load(demo_manifest_text())
    shelves = [dict(s, stock_source="any") if s["id"] == "rack-c1" else s for s in raw["shelves"]]
    m = manifest_for_tests(tmp_path, shelves=shelves)
    async with Gateway(m, hub_url=mosquitto.url, data_dir=tmp_path / "var", tick_interval=60) as gw:
        now = gw.clock.now()
        gw.pipeline.route([StockUpdate(shelf="rack-c1", sku="tee-m", time=now, origin=o, source=o, count=n)
                           for o, n in (("rfid", 8), ("weight", 12))], now)  # fmt: skip
        assert gw.stock.get("rack-c1", "tee-m").count == 12  # type: ignore[union-attr]
        gw.pipeline.tick(now + timedelta(seconds=31))
        await gw.outbox.flush()
        topic = "retail/v1/demo/state/stock/rack-c1"
        rows = await gw.db.query("SELECT payload FROM retained WHERE topic = ?", (topic,))
        item = next(i for i in orjson.loads(rows[0]["payload"])["items"] if i["sku"] == "tee-m")
        assert (item["count"], item["conflict"], item["sources"]) == (8, True, {"rfid": 8, "weight": 12})
        reply = await gw._cmd_stock_get({"shelf": "rack-c1", "sku": "tee-m"})
        assert reply["items"][0]["conflict_reason"] == "rfid says 8, weight says 12: serving the lower count"
        if gw.rules is not None:
            await gw.rules.stop()
