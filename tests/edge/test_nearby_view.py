"""NearbyView on a manual clock (edge/nearby.py): what is believed and what is not, and the manifest's
`nearby:` section's errors. The end-to-end answers with two gateways are in tests/api/test_nearby.py."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
import pytest
import yaml

from edge.clock import ManualClock
from edge.config import parse_manifest
from edge.errors import CommandError, ConfigError
from edge.metrics import Metrics
from edge.nearby import NearbyView
from edge.nearbyconfig import NearbyConfig
from firmware_sim.world import demo_manifest_text


def _view(clock: ManualClock, **cfg: Any) -> tuple[NearbyView, Metrics]:
    m = Metrics()
    conf = NearbyConfig.model_validate({"stores": [{"id": "n1"}, {"id": "n2", "distance_km": 3}], **cfg})
    return NearbyView(conf, prefix="retail/v1", clock=clock, metrics=m), m


def _atp(view: NearbyView, store: str, sku: str, atp: int, updated: str) -> None:
    doc = {"sku": sku, "atp": atp, "on_hand": atp, "reserved": 0, "updated": updated, "name": sku.upper()}
    view.message(f"retail/v1/{store}/state/atp/{sku}", orjson.dumps(doc))


def _online(view: NearbyView, store: str, state: str = "online") -> None:
    view.message(f"retail/v1/{store}/status", orjson.dumps({"state": state, "store": store}))


def _row(view: NearbyView, store: str, sku: str = "cola") -> dict[str, Any]:
    return next(r for r in view.answer(sku)["stores"] if r["store"] == store)


def _iso(clock: ManualClock, delta_s: float = 0) -> str:
    return (clock.now() + timedelta(seconds=delta_s)).isoformat()


def test_fresh_stale_unknown(clock: ManualClock) -> None:
    view, _ = _view(clock, max_age_s=600)
    assert view.topics() == ["retail/v1/n1/status", "retail/v1/n1/state/info", "retail/v1/n1/state/atp/+",
                             "retail/v1/n2/status", "retail/v1/n2/state/info", "retail/v1/n2/state/atp/+"]
    assert _row(view, "n1")["state"] == "unknown" and "hub offline" in _row(view, "n1")["why"]
    view.session(True)
    _online(view, "n1")
    _online(view, "n2")
    _atp(view, "n1", "cola", 4, _iso(clock, -60))
    _atp(view, "n2", "cola", 7, _iso(clock, -10))
    got = view.answer("cola")
    # who has it first, by distance (n1 gives none: after n2)
    assert [(r["store"], r["state"], r["atp"]) for r in got["stores"]] == [("n2", "fresh", 7), ("n1", "fresh", 4)]
    assert got["have"] == 2 and _row(view, "n1")["item_name"] == "COLA"
    # older than max_age_s by its own time: stale, the figure apart
    clock.advance(580)
    r = _row(view, "n1")
    assert (r["state"], r["atp"], r["last_known"]["atp"]) == ("stale", None, 4) and "older than 600" in r["why"]
    assert r["reason"] == "too_old" and r["since"] == r["last_known"]["updated"]
    assert _row(view, "n2")["state"] == "fresh"
    # a time ahead of ours is not believed
    _atp(view, "n2", "cola", 9, _iso(clock, 3600))
    assert (_row(view, "n2")["state"], _row(view, "n2")["atp"], _row(view, "n2")["reason"]) == ("unknown", None,
                                                                                             "clock_ahead")
    # offline by its will: stale
    _atp(view, "n2", "cola", 9, _iso(clock))
    _online(view, "n2", "offline")
    r = _row(view, "n2")
    assert (r["state"], r["atp"], r["last_known"]["atp"]) == ("stale", None, 9) and "offline" in r["why"]
    # a cleared retained figure: gone
    _online(view, "n2")
    view.message("retail/v1/n2/state/atp/cola", b"")
    assert (_row(view, "n2")["state"], _row(view, "n2")["last_known"]) == ("unknown", None)


def test_a_reconnect_believes_only_what_the_broker_sends_again(clock: ManualClock) -> None:
    view, _ = _view(clock)
    view.session(True)
    _online(view, "n1")
    _atp(view, "n1", "cola", 4, _iso(clock))
    assert _row(view, "n1")["state"] == "fresh"
    view.session(False)
    r = _row(view, "n1")
    assert (r["state"], r["atp"], r["last_known"]["atp"]) == ("unknown", None, 4)
    view.session(True)  # subscribed again: nothing resent yet
    assert _row(view, "n1")["state"] == "unknown" and "no status" in _row(view, "n1")["why"]
    _online(view, "n1")
    assert _row(view, "n1")["state"] == "unknown"  # the status, but not the figure yet
    _atp(view, "n1", "cola", 5, _iso(clock))
    assert (_row(view, "n1")["state"], _row(view, "n1")["atp"]) == ("fresh", 5)


def test_untrusted_input_is_bounded_and_counted(clock: ManualClock) -> None:
    view, m = _view(clock, max_skus=2, max_message_bytes=1024)
    view.session(True)
    _online(view, "n1")
    for sku in ("a", "b", "c"):
        _atp(view, "n1", sku, 1, _iso(clock))
    assert m.value("edge_nearby_rejected_total", reason="too_many_skus") == 1
    assert _row(view, "n1", "c")["state"] == "unknown"
    view.message("retail/v1/stranger/state/atp/a", b"{}")  # not a listed neighbour
    view.message("retail/v1/n1/state/atp/a+b", b"{}")
    view.message("retail/v1/n1/state/other", b"{}")
    view.message("retail/v1/n1/state/atp/a", b"x" * 2000)
    view.message("retail/v1/n1/state/atp/a", b'{"sku": "a", "atp": true, "updated": "2026-01-01T00:00:00Z"}')
    view.message("retail/v1/n1/state/atp/a", b'{"sku": "a", "atp": 2, "updated": "2026-01-01T00:00:00"}')  # no zone
    view.message("retail/v1/n1/state/info", b'{"name": 5}')
    assert m.value("edge_nearby_rejected_total", reason="topic") == 3
    assert m.value("edge_nearby_rejected_total", reason="too_large") == 1
    assert m.value("edge_nearby_rejected_total", reason="invalid") == 3
    assert _row(view, "n1", "a")["atp"] == 1
    for bad in ("../etc", "a\n"):  # a trailing newline is no SKU either
        with pytest.raises(CommandError) as info:
            view.answer(bad)
        assert info.value.code == "bad_request"


def _manifest(nearby: Any) -> str:
    raw = yaml.safe_load(demo_manifest_text())
    raw["nearby"] = nearby
    return yaml.safe_dump(raw, allow_unicode=True)


@pytest.mark.parametrize(("nearby", "path", "message"), [
    ({"stores": [{"id": "demo"}]}, "nearby.stores[0].id", "this store's own id"),
    ({"stores": [{"id": "n1"}, {"id": "n1"}]}, "nearby.stores", "listed twice"),
    ({"stores": [{"id": "n/1"}]}, "nearby.stores[0].id", ""),
    ({"stores": [{"id": "n1", "distance_km": -1}]}, "nearby.stores[0].distance_km", ""),
    ({"stores": [{"id": "n1", "km": 1}]}, "nearby.stores[0].km", "unknown field"),
    ({"max_age_s": 0}, "nearby.max_age_s", ""),
])
def test_manifest_errors_name_the_field(nearby: Any, path: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_manifest(_manifest(nearby), "m.yaml", env={})
    (issue,) = info.value.issues
    assert issue.path == path and message in issue.message and issue.line is not None, issue.render()


def test_manifest_takes_neighbours() -> None:
    m = parse_manifest(_manifest({"stores": [{"id": "s0422", "name": "南京西路店", "distance_km": 1.2}]}), "m.yaml",
                       env={})  # fmt: skip
    assert [(s.id, s.name, s.distance_km) for s in m.nearby.stores] == [("s0422", "南京西路店", 1.2)]
