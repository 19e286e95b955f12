"""HQ's chain-wide view (edge/hq.py) against a real mosquitto and three real stores: two gateways in this
process and one `edge-gateway run` daemon in its own process (so it can stop answering, then vanish and
leave its will)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge.brokers import Mosquitto
from edge.config import parse_manifest
from edge.gateway import Gateway
from edge.hq import SUBSCRIPTIONS, ChainView, HqClient, run_hq
from edge.processing import StockUpdate
from firmware_sim.world import demo_manifest_text

ROOT = "retail/v1"


def store_raw(store: str, hub: str, data: Path) -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load(demo_manifest_text())
    raw["store"]["id"] = store
    raw["hub"]["url"] = hub
    raw["storage"] = {"data_dir": str(data)}
    raw["api"] = {"enabled": False}
    return raw


async def view_of(url: str, topics: str = "stores") -> ChainView:
    view = ChainView(ROOT)
    async with HqClient(url, view, SUBSCRIPTIONS[topics]) as hq:
        assert await hq.snapshot(10.0), "the snapshot marker never came back"
    return view


async def eventually(get: Callable[[], Awaitable[ChainView]], pred: Callable[[ChainView], bool], what: str,
                     within: float = 45.0, daemon: tuple[subprocess.Popen[bytes], Path] | None = None) -> None:
    """Read the view again until `pred` holds, for at most `within` seconds (a read waits up to 10 s for its
    snapshot); a store daemon that died meanwhile fails at once with its log."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    view = ChainView(ROOT)
    while loop.time() < end:
        if daemon is not None and daemon[0].poll() is not None:
            raise AssertionError(f"the store daemon exited {daemon[0].returncode} while waiting for {what}: "
                                 + daemon[1].read_text(errors="replace")[-3000:])
        view = await get()
        if pred(view):
            return
        await asyncio.sleep(0.2)
    log = daemon[1].read_text(errors="replace")[-3000:] if daemon is not None else ""
    raise AssertionError(f"never within {within:g} s: {what}; last view {view.stores}\n{log}")


async def hq_json(capsys: pytest.CaptureFixture[str], what: str, **kw: Any) -> dict[str, Any]:
    capsys.readouterr()
    assert await run_hq(what, as_json=True, wait_s=10.0, **kw) == 0
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    return out


async def test_hq_view_lookup_fan_out_and_offline_store(mosquitto: Mosquitto, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    url = mosquitto.url
    conf = tmp_path / "store-c.yaml"
    conf.write_text(yaml.safe_dump(store_raw("store-c", url, tmp_path / "c")))
    daemon = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(conf)],
                              stdout=subprocess.DEVNULL, stderr=(tmp_path / "c.log").open("wb"))
    try:
        gws = [Gateway(parse_manifest(yaml.safe_dump(store_raw(s, url, tmp_path / s)), s), tick_interval=0.1)
               for s in ("store-a", "store-b")]
        async with gws[0] as a, gws[1] as b:
            for gw, n in ((a, 7), (b, 0)):
                now = gw.clock.now()
                gw.pipeline.route([StockUpdate(shelf="shelf-a1", sku="cola-330", time=now, origin="manual",
                                               source="t", count=n)], now)

            def ready(view: ChainView) -> bool:
                v = view.stores
                return (len(v) == 3 and all(s.status == "online" for s in v.values())
                        and all("shelf-a1" in v[s].shelves for s in ("store-a", "store-b"))
                        and v["store-b"].shelves["shelf-a1"]["cola-330"].count == 0)

            await eventually(lambda: view_of(url), ready, "the three stores online with their counts",
                             daemon=(daemon, tmp_path / "c.log"))

            # which stores have cola-330 and how many (retained state/stock)
            stock = await hq_json(capsys, "stock", hub=url, sku="cola-330")
            counts = {r["store"]: r["count"] for r in stock["rows"]}
            assert counts == {"store-a": 7, "store-b": 0}, counts  # store-c never counted: no retained shelf
            assert (stock["total_count"], stock["stores_with_units"], stock["complete"]) == (7, 1, True)
            atp = await hq_json(capsys, "atp", hub=url, sku="cola-330")
            assert {r["store"]: r["atp"] for r in atp["rows"]} == {"store-a": 7, "store-b": 0, "store-c": 0}
            stores = await hq_json(capsys, "stores", hub=url)
            assert {r["store"]: r["status"] for r in stores["rows"]} == dict.fromkeys(
                ("store-a", "store-b", "store-c"), "online")

            # fresh stock by fan-out; store-c stops answering (SIGSTOP): its timeout is reported, no hang
            fresh = await hq_json(capsys, "stock", hub=url, sku="cola-330", fresh=True, timeout=5.0)
            assert {r["store"]: r["count"] for r in fresh["rows"]} == {"store-a": 7, "store-b": 0, "store-c": None}
            assert not fresh["notes"], fresh["notes"]
            os.kill(daemon.pid, signal.SIGSTOP)
            view = ChainView(ROOT)
            async with HqClient(url, view, SUBSCRIPTIONS["stock"]) as hq:
                assert await hq.snapshot(10.0)
                answers = await asyncio.wait_for(hq.fan_out(sorted(view.stores), "stock.get",
                                                            {"sku": "cola-330"}, 1.5), 30)
            by = {x.store: x for x in answers}
            assert (by["store-a"].ok, by["store-b"].ok) == (True, True)
            assert (by["store-c"].ok, by["store-c"].error) == (False, "timeout")
            assert by["store-a"].result["items"][0]["count"] == 7
            fresh = await hq_json(capsys, "stock", hub=url, sku="cola-330", fresh=True, timeout=1.0)
            assert next(r for r in fresh["rows"] if r["store"] == "store-c")["state"] == "timeout"
            assert any("did not answer" in n and "store-c" in n for n in fresh["notes"]), fresh["notes"]

            # store-c vanishes: the broker publishes its will; HQ shows it offline and asks it no more
            os.kill(daemon.pid, signal.SIGKILL)
            daemon.wait(10)
            await eventually(lambda: view_of(url), lambda v: v.stores["store-c"].status == "offline", "store-c offline")
            stores = await hq_json(capsys, "stores", hub=url)
            verdicts = {r["store"]: r["verdict"] for r in stores["rows"]}
            assert verdicts["store-c"] == "offline", stores
            assert stores["rows"][0]["store"] == "store-c"  # problems first
            fresh = await hq_json(capsys, "stock", hub=url, fresh=True, timeout=1.0)
            assert "store-c" not in {r["store"] for r in fresh["rows"]}
            assert any("offline store(s) not asked: store-c" in n for n in fresh["notes"]), fresh["notes"]
    finally:
        if daemon.poll() is None:
            os.kill(daemon.pid, signal.SIGKILL)
            daemon.wait(10)


async def test_hq_unreachable_hub_and_bad_sku(capsys: pytest.CaptureFixture[str]) -> None:
    from edge.brokers import free_port

    assert await run_hq("stores", hub=f"mqtt://127.0.0.1:{free_port()}", wait_s=1.0) == 1
    assert "hub mqtt://127.0.0.1" in capsys.readouterr().err
    assert await run_hq("stock", hub="mqtt://127.0.0.1:1", sku="a/b") == 2


def test_view_bounds_untrusted_input() -> None:
    v = ChainView(ROOT, max_stores=2, max_shelves=1, max_message=1000)
    ok = b'{"state": "online", "time": "2026-01-01T00:00:00Z"}'
    assert v.apply(f"{ROOT}/s1/status", ok)
    assert v.apply(f"{ROOT}/s2/status", ok)
    assert not v.apply(f"{ROOT}/s3/status", ok)  # a third store: over max_stores
    assert v.dropped_stores == 1 and set(v.stores) == {"s1", "s2"}
    assert not v.apply(f"{ROOT}/s1/events/stock", ok)  # not a state topic: ignored, not counted
    rejected = v.rejected
    bad = [(f"{ROOT}/s1/status", b"[1]"), (f"{ROOT}/s1/status", b"{nope"), (f"{ROOT}/s1/status", b"x" * 1001),
           (f"{ROOT}/-bad/status", ok), (f"{ROOT}/s1/state/stock/a b", b'{"items": []}'),
           (f"{ROOT}/s1/state/stock/sh", b'{"items": 3}')]
    for topic, payload in bad:
        assert not v.apply(topic, payload), topic
    assert v.rejected == rejected + len(bad)
    assert v.apply(f"{ROOT}/s1/state/stock/sh", b'{"items": [{"sku": "x", "count": 3}, {"sku": "../y", "count": 1},'
                                                b' {"sku": "z", "count": 1e99}]}')
    assert not v.apply(f"{ROOT}/s1/state/stock/sh2", b'{"items": []}')  # over max_shelves
    assert [(r["sku"], r["count"]) for r in v.stock_rows()] == [("x", 3), ("z", None)]
    assert v.apply(f"{ROOT}/s1/state/stock/sh", b"")  # cleared retained message: the shelf is gone
    assert v.stock_rows() == []


async def test_fleet_sim_stores_reach_hq(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """`fleet-sim` with two stores: each a gateway with its simulated devices, a distinct store id, its shelves
    in HQ's view and an answer to the fan-out; then a clean stop (status offline)."""
    from firmware_sim.fleet import hub_urls_of, run_fleet

    with pytest.raises(ValueError, match="loopback"):
        hub_urls_of("mqtt://hub.chain.example:1883")
    changes = tmp_path / "changes.jsonl"
    fleet = asyncio.create_task(run_fleet(stores=2, hub=mosquitto.url, duration=600, data_dir=tmp_path / "fleet",
                                          batch_every=2, changes=changes, pick_rate=2.0))
    try:
        await eventually(lambda: view_of(mosquitto.url), lambda v: sorted(v.stores) == ["store-001", "store-002"]
                         and all(len(s.shelves) == 3 and s.devices == 5 and s.status == "online"
                                 for s in v.stores.values()), "two fleet stores with their shelves and devices")
        view = ChainView(ROOT)
        async with HqClient(mosquitto.url, view, SUBSCRIPTIONS["stock"]) as hq:
            assert await hq.snapshot(10.0)
            answers = await hq.fan_out(sorted(view.stores), "stock.get", {}, 10.0)
        assert [(a.store, a.ok, a.result["store"]) for a in answers] == [
            ("store-001", True, "store-001"), ("store-002", True, "store-002")]
        assert changes.read_text().count('"kind":"pick"') > 0
    finally:
        if not fleet.done():
            os.kill(os.getpid(), signal.SIGINT)  # fleet-sim stops on SIGINT/SIGTERM as the command does
        assert await asyncio.wait_for(fleet, 60) == 0
    stopped = await view_of(mosquitto.url)
    assert {s.status for s in stopped.stores.values()} == {"offline"}
