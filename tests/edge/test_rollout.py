"""Manifest rollout (edge/rollout.py), in one process: RFC 7386 merge patch, the change plan, version order,
validation against the running store, the version store on disk, the gateway switching in place.

The real daemon with simulated devices, the health gate's rollback and the power cut at each step are in
tests/faults/test_rollout_daemon.py."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from edge.brokers import Mosquitto
from edge.clock import SystemClock
from edge.config import Manifest, parse_manifest
from edge.errors import CommandError
from edge.gateway import Gateway
from edge.processing import StockUpdate
from edge.rollout import ManifestApplied, RolloutError, VersionStore, merge_patch, plan_change, redact, startup
from edge.storeinfo import manifest_hash
from firmware_sim.world import demo_manifest_text

pytestmark = pytest.mark.timeout(60)

SHELF = {"id": "shelf-a1-ctrl", "type": "shelf_serial", "port": "/dev/ttyUSB0",
         "lanes": [{"channel": "1", "shelf": "shelf-a1", "lane": "l1"}, {"channel": "2", "shelf": "shelf-a1",
                                                                          "lane": "l2"}]}
READER = {"id": "rfid-llrp-1", "type": "llrp", "host": "127.0.0.1", "port": 5084, "antennas": {1: "apparel"}}


def raw_manifest(**changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load(demo_manifest_text())
    raw["devices"] = [SHELF, READER]
    raw["rollout"] = {"gate_s": 5, "settle_s": 0}
    raw.update(changes)
    return raw


def manifest(raw: dict[str, Any]) -> Manifest:
    return parse_manifest(yaml.safe_dump(raw), "test.yaml")


# ---- RFC 7386 ----

@pytest.mark.parametrize(("target", "patch", "result"), [  # RFC 7386 appendix A, every example
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
])
def test_merge_patch_rfc7386_examples(target: Any, patch: Any, result: Any) -> None:
    before = orjson.dumps(target)
    assert merge_patch(target, patch) == result
    assert orjson.dumps(target) == before  # the target is not changed


# ---- the plan ----

def test_plan_min_level_change_restarts_no_device() -> None:
    old = raw_manifest()
    new = merge_patch(old, {"rules": {"defaults": {"min": 6}}})
    plan = plan_change(manifest(old), manifest(new))
    assert plan.changed == ("rules",)
    assert plan.stop == frozenset() and plan.start == ()
    assert not plan.processors


def test_plan_unit_weight_restarts_the_shelf_that_weighs_it_only() -> None:
    old = raw_manifest()
    new = yaml.safe_load(yaml.safe_dump(old))
    new["catalog"][0]["unit_weight_g"] = 360  # cola-330, on shelf-a1
    plan = plan_change(manifest(old), manifest(new))
    assert plan.changed == ("catalog",)
    assert plan.stop == {"shelf-a1-ctrl"} and plan.start == ("shelf-a1-ctrl",)
    assert plan.processors


def test_plan_device_section_added_removed_changed() -> None:
    old = raw_manifest()
    new = raw_manifest(devices=[{**READER, "port": 5085}, {**SHELF, "id": "shelf-a1-new"}])
    plan = plan_change(manifest(old), manifest(new))
    assert plan.stop == {"shelf-a1-ctrl", "rfid-llrp-1"}
    assert set(plan.start) == {"shelf-a1-new", "rfid-llrp-1"}


def test_plan_and_hash_see_a_device_field_of_its_family() -> None:
    old = raw_manifest()
    new = raw_manifest(devices=[SHELF, {**READER, "port": 5085}])  # a field only the LLRP model has
    plan = plan_change(manifest(old), manifest(new))
    assert plan.changed == ("devices",) and plan.processors
    assert plan.stop == {"rfid-llrp-1"} and plan.start == ("rfid-llrp-1",)
    assert manifest_hash(manifest(old)) != manifest_hash(manifest(new))


@pytest.mark.parametrize("change", [
    {"hub": {"url": "mqtt://10.0.0.1:1883"}}, {"storage": {"data_dir": "/elsewhere"}},
    {"api": {"listen": "127.0.0.1:9999"}}, {"store": {"id": "other-store"}},
])
def test_plan_refuses_sections_read_at_start(change: dict[str, Any]) -> None:
    old = raw_manifest()
    with pytest.raises(RolloutError) as err:
        plan_change(manifest(old), manifest(merge_patch(old, change)))
    assert err.value.code == "invalid"
    assert "cannot change without a restart" in err.value.message
    assert next(iter(change)) in err.value.message


def test_redact_keeps_references_hides_clear_secrets() -> None:
    doc = {"hub": {"password": "hunter2", "commands": {"keys": [{"id": "k", "secret": "${KEY}"}]}},
           "api": {"tokens": [{"token": "clear-token-123456", "roles": ["admin"]}]}}
    out = redact(doc)
    assert out["hub"]["password"] == "<redacted>"
    assert out["hub"]["commands"]["keys"][0]["secret"] == "${KEY}"
    assert out["api"]["tokens"][0]["token"] == "<redacted>"


# ---- the version store ----

def test_version_store_history_is_bounded_and_keeps_the_committed_version(tmp_path: Path) -> None:
    store = VersionStore(tmp_path / "manifest", keep=3)
    now = SystemClock().now()
    store.stage(1, "text-1", "sha-1", "command", now)
    store.commit(1, "sha-1", "boot", now)
    store.record({"version": 1, "outcome": "applied"})
    for v in range(2, 7):
        store.stage(v, f"text-{v}", f"sha-{v}", "command", now)
        store.record({"version": v, "outcome": "rolled_back", "reason": "test"})
    assert [h["version"] for h in store.history()] == [4, 5, 6]
    assert store.history()[-1]["outcome"] == "rolled_back" and store.history()[-1]["sha256"] == "sha-6"
    kept = sorted(int(p.stem) for p in (tmp_path / "manifest" / "versions").glob("*.json"))
    assert kept == [1, 4, 5, 6]  # 1 is committed
    assert store.current() == {"version": 1, "sha256": "sha-1", "bootstrap_sha256": "boot",
                               "committed": store.current()["committed"]}  # type: ignore[index]
    assert store.version(1)["text"] == "text-1"  # type: ignore[index]
    assert store.highest() == 6
    assert not list((tmp_path / "manifest").glob(".*"))  # no temp file left


def test_startup_runs_the_committed_version_only_on_top_of_the_same_config(tmp_path: Path) -> None:
    raw = raw_manifest(storage={"data_dir": str(tmp_path / "var")})
    config = tmp_path / "store.yaml"
    config.write_text(yaml.safe_dump(raw))
    boot = manifest(raw)
    assert startup(config, boot).version == 0  # nothing committed
    applied = merge_patch(raw, {"rules": {"defaults": {"min": 7}}})
    store = VersionStore(tmp_path / "var" / "manifest")
    now = SystemClock().now()
    store.stage(3, yaml.safe_dump(applied), "x", "command", now)
    bsha = startup(config, boot).bootstrap_sha256
    store.commit(3, "x", bsha, now)
    got = startup(config, boot)
    assert (got.version, got.origin, got.manifest.rules.defaults.min) == (3, "rollout", 7)
    config.write_text(yaml.safe_dump(raw) + "# edited by store IT\n")  # a local edit wins
    got = startup(config, boot)
    assert (got.version, got.origin) == (0, "bootstrap")


# ---- the running gateway ----

async def _gateway(tmp: Path, hub: Mosquitto, raw: dict[str, Any]) -> Gateway:
    raw = {**raw, "api": {"enabled": False}, "devices": [], "storage": {"data_dir": str(tmp / "var")}}
    return Gateway(manifest(raw), hub_url=hub.url, data_dir=tmp / "var")


async def test_apply_versions_order_validation_and_hot_switch(tmp_path: Path, mosquitto: Mosquitto) -> None:
    raw = raw_manifest()
    gw = await _gateway(tmp_path, mosquitto, raw)
    async with gw:
        base = gw.rollout.get()
        assert base["version"] == 0 and base["origin"] == "bootstrap"
        # min levels: rules hot, the version committed, history and info
        reply = await gw.rollout.apply({"version": 5, "patch": {"rules": {"defaults": {"min": 9}}}})
        assert reply["result"] == "applied" and reply["changed"] == ["rules"] and reply["restarted"] == []
        assert gw.stock.levels("shelf-a1", "cola-330") == (9, gw.stock.levels("shelf-a1", "cola-330")[1])  # type: ignore[index]
        assert gw.manifest.rules.defaults.min == 9
        got = gw.rollout.get()
        assert (got["version"], got["sha256"]) == (5, reply["sha256"])
        assert [(h["version"], h["outcome"]) for h in got["history"]] == [(5, "applied")]
        info = gw.store_docs.get("state/info")
        assert info is not None and info["manifest"]["version"] == 5 and info["manifest"]["sha256"] == reply["sha256"]
        # out of order: older and equal versions change nothing
        for v in (4, 5):
            with pytest.raises(CommandError) as err:
                await gw.rollout.apply({"version": v, "patch": {"rules": {"defaults": {"min": 3}}}})
            assert err.value.code == "out_of_order"
        # invalid: an unknown SKU on a lane, a field typo; nothing changes, nothing is staged
        bad_lane = {"shelves": [{**raw["shelves"][0], "lanes": [{"id": "l1", "sku": "cola-331", "capacity": 24}]}]}
        for patch, words in ((bad_lane, "sku 'cola-331' is not defined"),
                             ({"rules": {"defualts": {"min": 2}}}, "unknown field")):
            with pytest.raises(CommandError) as err:
                await gw.rollout.apply({"version": 6, "patch": patch})
            assert err.value.code == "invalid" and words in err.value.message, err.value.message
        with pytest.raises(CommandError) as err:
            await gw.rollout.apply({"version": 6, "manifest": "x" * 2_000_000})
        assert err.value.code == "too_large"
        for req in ({"version": 6}, {"version": 6, "patch": [1]}, {"version": "6", "patch": {}},
                    {"version": 6, "patch": {}, "manifest": {}}):
            with pytest.raises(CommandError) as err:
                await gw.rollout.apply(req)
            assert err.value.code == "bad_request"
        assert gw.rollout.get()["version"] == 5 and gw.manifest.rules.defaults.min == 9
        assert [h["version"] for h in gw.rollout.store.history()] == [5]
        # a new shelf and SKU, hot: the stock cells exist at once
        item = {"sku": "juice-1l", "name": "Juice 1 l", "unit_weight_g": 1050, "category": "drinks"}
        shelf = {"id": "shelf-d1", "zone": "aisle-1", "lanes": [{"id": "l1", "sku": "juice-1l", "capacity": 12}]}
        reply = await gw.rollout.apply({"version": 6, "manifest": {**raw, "catalog": [*raw["catalog"], item],
                                                                   "shelves": [*raw["shelves"], shelf],
                                                                   "rules": gw.manifest.rules.model_dump(mode="json"),
                                                                   "api": {"enabled": False}, "devices": [],
                                                                   "storage": {"data_dir": str(tmp_path / "var")}}})
        assert set(reply["changed"]) == {"catalog", "shelves"}
        assert gw.stock.get("shelf-d1", "juice-1l") is not None
        assert gw.atp.catalog["juice-1l"].name == "Juice 1 l"


async def test_dropping_a_cell_with_stock_needs_the_flag(tmp_path: Path, mosquitto: Mosquitto) -> None:
    raw = raw_manifest()
    gw = await _gateway(tmp_path, mosquitto, raw)
    async with gw:
        now = gw.clock.now()
        change = gw.stock.apply(StockUpdate(shelf="shelf-b1", sku="choc-100", time=now, origin="weight",
                                            source="test", count=7))
        assert change is not None
        lanes = [ln for ln in raw["shelves"][1]["lanes"] if ln["sku"] != "choc-100"]
        patch = {"shelves": [raw["shelves"][0], {**raw["shelves"][1], "lanes": lanes}, raw["shelves"][2]]}
        with pytest.raises(CommandError) as err:
            await gw.rollout.apply({"version": 1, "patch": patch})
        assert err.value.code == "conflict" and "shelf-b1/choc-100 (7)" in err.value.message
        assert gw.stock.get("shelf-b1", "choc-100") is not None and gw.rollout.get()["version"] == 0
        reply = await gw.rollout.apply({"version": 2, "patch": patch, "allow_stock_loss": True})
        assert reply["result"] == "applied" and gw.stock.get("shelf-b1", "choc-100") is None


async def test_one_apply_at_a_time_and_the_applied_event(tmp_path: Path, mosquitto: Mosquitto) -> None:
    raw = raw_manifest(rollout={"gate_s": 5, "settle_s": 1})
    gw = await _gateway(tmp_path, mosquitto, raw)
    async with gw:
        seen: list[dict[str, Any]] = []

        async def listen() -> None:
            async for env in gw.subscribe():
                seen.append(env)

        listener = asyncio.create_task(listen())
        await asyncio.sleep(0)
        first = asyncio.create_task(gw.rollout.apply({"version": 1, "patch": {"rules": {"defaults": {"min": 5}}}}))
        await asyncio.sleep(0.3)  # in its settle time
        with pytest.raises(CommandError) as err:
            await gw.rollout.apply({"version": 2, "patch": {"rules": {"defaults": {"min": 6}}}})
        assert err.value.code == "busy"
        assert (await first)["version"] == 1
        await asyncio.sleep(0.2)
        listener.cancel()
        applied = [e for e in seen if e["type"] == ManifestApplied.TYPE]
        assert len(applied) == 1 and applied[0]["data"]["version"] == 1 and applied[0]["data"]["changed"] == ["rules"]
