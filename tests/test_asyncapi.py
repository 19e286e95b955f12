"""docs/asyncapi.yaml is current, and what the gateway really publishes in a demo run validates against it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import yaml
from jsonschema import Draft202012Validator

from edge.asyncapi import render
from edge.brokers import Mosquitto
from firmware_sim.hub import HubProcess

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "asyncapi.yaml"


def test_document_is_current() -> None:
    assert DOC.read_text(encoding="utf-8") == render(ROOT), "run: python -m edge.asyncapi > docs/asyncapi.yaml"


def _validator(doc: dict[str, Any], ref: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": ref, "components": doc["components"]})


def test_demo_messages_validate(tmp_path: Path, mosquitto: Mosquitto) -> None:
    doc = yaml.safe_load(DOC.read_text(encoding="utf-8"))
    by_type = {m["name"]: k for k, m in doc["components"]["messages"].items() if "x-event-class" in m}
    hub = HubProcess(mosquitto.port, "retail/v1/demo/#", tmp_path / "hub.log")
    env = {**os.environ, "EDGE_API_TOKEN": "t" * 24}
    try:
        res = subprocess.run(
            [sys.executable, "-m", "edge", "demo", "--mqtt", mosquitto.url, "--api", "127.0.0.1:0",
             "--duration", "15", "--data-dir", str(tmp_path / "var"), "--quiet"],
            capture_output=True, text=True, timeout=90, env=env, check=False,
        )
        assert res.returncode == 0, res.stderr[-3000:]
    finally:
        hub.close()
    msgs = hub.snapshot()
    seen_types: set[str] = set()
    problems: list[str] = []
    status = _validator(doc, "#/components/messages/status/payload")
    shelf = _validator(doc, "#/components/messages/shelf_stock/payload")
    reply = _validator(doc, "#/components/messages/reply/payload")
    for m in msgs:
        body = orjson.loads(m.payload)
        if m.topic.endswith("/status"):
            problems += [f"{m.topic}: {e.message}" for e in status.iter_errors(body)]
            continue
        if "/state/stock/" in m.topic:
            problems += [f"{m.topic}: {e.message}" for e in shelf.iter_errors(body)]
            continue
        if "/state/" in m.topic:  # retained store state (issue 16): state/atp/{sku}, state/info, state/catalog
            kind = "state_atp" if "/state/atp/" in m.topic else "state_" + m.topic.rsplit("/", 1)[1]
            if kind not in doc["components"]["messages"]:
                problems.append(f"{m.topic}: retained topic not in the AsyncAPI document")
                continue
            v = _validator(doc, f"#/components/messages/{kind}/payload")
            problems += [f"{m.topic}: {e.message}" for e in v.iter_errors(body)]
            seen_types.add(kind)
            continue
        if "/cmd/" in m.topic:
            continue
        if "/reply/" in m.topic:  # the gateway's answers to the demo hub's commands (its online orders)
            problems += [f"{m.topic}: {e.message}" for e in reply.iter_errors(body)]
            seen_types.add("reply")
            continue
        for ev in body if isinstance(body, list) else [body]:
            name = by_type.get(ev.get("type"))
            if name is None:
                problems.append(f"{m.topic}: type {ev.get('type')!r} is not in the AsyncAPI document")
                continue
            seen_types.add(ev["type"])
            channel = next(c for c in doc["channels"].values() if name in c["messages"])
            if m.topic != "retail/v1/demo/" + channel["address"].removeprefix("{root}/"):
                problems.append(f"{ev['type']} published on {m.topic}, documented on {channel['address']}")
            v = _validator(doc, f"#/components/schemas/{name}")
            problems += [f"{ev['type']}: {'/'.join(map(str, e.path))}: {e.message}" for e in v.iter_errors(ev)]
    assert not problems, "\n".join(sorted(set(problems))[:40])
    # the demo exercises every device family's path to the hub
    for t in ("retail.stock.changed.v1", "retail.device.status.v1", "retail.rfid.tag.arrived.v1", "state_atp",
              "state_info", "state_catalog", "reply"):
        assert t in seen_types, sorted(seen_types)
