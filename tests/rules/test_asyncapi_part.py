"""docs/asyncapi-parts/rules.yaml matches the event classes, and real event payloads validate against it."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import yaml

from edge.config import Manifest
from edge.envelope import dumps
from edge.events import Event, StockChanged
from edge.processing import StockUpdate
from edge.state import StockState
from rules.alerts import ALERT_EVENT_TYPES
from rules.config import OffersConfig, RulesConfig
from rules.engine import RulesEngine, RulesRejected, RulesReloaded
from rules.offers import OfferTriggered

PART = Path(__file__).parents[2] / "docs" / "asyncapi-parts" / "rules.yaml"
T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


def part() -> dict[str, Any]:
    return dict(yaml.safe_load(PART.read_text()))


def test_every_event_class_has_a_schema_with_its_fields() -> None:
    doc = part()
    classes: list[type[Event]] = [*ALERT_EVENT_TYPES, RulesReloaded, RulesRejected, OfferTriggered]
    for cls in classes:
        schema = doc["components"]["schemas"][cls.__name__]
        fields = {f.name for f in dataclasses.fields(cls)} - {"source", "time", "subject"}
        assert set(schema["properties"]) == fields, cls.__name__
        assert doc["components"]["messages"][cls.__name__]["name"] == cls.TYPE


def test_real_payloads_validate(demo_manifest: Manifest) -> None:
    doc = part()
    ids = itertools.count()
    offers = OffersConfig.model_validate(
        {"offers": [{"id": "o", "zone": "aisle-1", "sku": "cola-330", "title": "t", "min_dwell_s": 0}]}
    )
    rules = RulesConfig.model_validate({"defaults": {"debounce_s": 0, "escalate_after_s": 1}, "expire_after_s": 10})
    e = RulesEngine(demo_manifest, rules=rules, offers=offers, new_id=lambda: f"a{next(ids)}")
    out: list[Any] = []
    out += e.load_body(rules.model_dump(exclude={"file", "watch_interval_s"}), "start", T0)[2]
    out += e.load_text("defaults: {min: [", "file", T0)[2]
    e.restore([], StockState(demo_manifest), T0)
    sc = StockChanged(
        source="s", time=T0, shelf="shelf-a1", sku="cola-330", count=0, previous=5, delta=-5, version=2, origin="weight"
    )
    low = dataclasses.replace(sc, count=1, previous=5, delta=-4)
    out += e.react(low, T0)
    opened = next(o for o in out if type(o).__name__ == "AlertOpened")
    out += e.tick(T0 + timedelta(seconds=2))
    out += e.ack(opened.alert_id, "Sam", T0 + timedelta(seconds=3))
    out += e.react(dataclasses.replace(sc, previous=1, delta=-1, version=3), T0 + timedelta(seconds=4))  # superseded
    out += e.react(dataclasses.replace(sc, count=1, previous=0, delta=1, version=4), T0 + timedelta(seconds=5))
    # an alert restored after a restart for a lane nobody reports any more expires
    e2 = RulesEngine(demo_manifest, rules=rules, new_id=lambda: "x")
    e2.load_body(rules.model_dump(exclude={"file", "watch_interval_s"}), "start", T0)
    row = {"id": "a1", "kind": "lane_fault", "state": "open", "shelf": "shelf-a1", "sku": "cola-330",
           "opened_at": T0.isoformat(), "updated_at": T0.isoformat()}
    e2.restore([row], StockState(demo_manifest), T0)
    out += e2.tick(T0 + timedelta(seconds=11))
    st = StockState(demo_manifest)

    st.apply(StockUpdate(shelf="shelf-a1", sku="cola-330", time=T0, origin="manual", source="x", count=3))
    out += e.sighting({"shopper": "t", "consent": True, "zone": "aisle-1"}, T0, st)[1]
    seen = set()
    for ev in out:
        name = type(ev).__name__
        if name not in doc["components"]["schemas"]:
            continue
        data = orjson.loads(dumps(ev.data()))
        jsonschema.validate(data, doc["components"]["schemas"][name])
        seen.add(name)
    assert seen == {
        "RulesReloaded",
        "RulesRejected",
        "AlertOpened",
        "AlertEscalated",
        "AlertUpdated",
        "AlertAcknowledged",
        "AlertExpired",
        "OfferTriggered",
    }
