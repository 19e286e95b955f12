"""EPCIS figures (issue 19; docs/epcis.md): hash equality with GS1's reference over a store day's events, schema
validity, capture throughput to a local EPCIS repository.

- The store day: the demo store's World (firmware_sim/world.py) lives `day_s` store seconds (shoppers pick, put back,
  check out, staff restock; fresh items get new EPCs); every store second a reader reports every tag of every lane
  at its zone's antenna, and carried items at the entrance, through the real RFID processor (ManualClock): its
  EPCIS ObjectEvents are arrivals, moves and departures in zones with an SGLN (named extensions) and without.
- `epcis_hash_equal_pct`: eventIDs equal to `epcis-event-hash-generator`'s (GS1's reference implementation).
- `epcis_schema_valid_pct`: events valid alone, and in EPCISDocuments of <= 1,000, against GS1's EPCIS 2.0 JSON schema
  with format checking (tests/drivers/rfid/data/epcis/EPCIS-JSON-Schema.json).
- `epcis_capture_events_per_s`: the real gateway (outbox, SQLite, the capture sink) delivering the events to the
  local repository (firmware_sim/epcis_repository.py, real HTTP on 127.0.0.1) in documents of <= 1,000 events:
  events / seconds from the first emit to the last capture job done, with the repository's schema validation off
  (`..._validated` with it on: the local repository's jsonschema check is the bottleneck there, not the gateway).
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from drivers.rfid.config import LlrpConfig, SmoothingConfig
from drivers.rfid.epcis import CONTEXT, epcis_document
from drivers.rfid.events import EpcisObjectEvent
from drivers.rfid.processor import RfidProcessor
from drivers.rfid.reads import TagRead
from edge.clock import ManualClock
from edge.config import Manifest, parse_manifest
from firmware_sim.epcis_repository import EpcisRepository, schema_validator
from firmware_sim.world import World, demo_manifest_text


def storeday_events(day_s: int, seed: int = 7) -> list[EpcisObjectEvent]:
    """The EPCIS events of `day_s` store seconds of the demo store, through the real RFID processor."""
    base = parse_manifest(demo_manifest_text(), "demo_manifest.yaml")
    zones = [z.id for z in base.zones]  # aisle-1, aisle-2, apparel (SGLNs with named extensions), entrance (none)
    antennas = {i + 1: z for i, z in enumerate(zones)}
    reader = LlrpConfig(id="rfid-1", host="127.0.0.1", antennas=antennas, epcis=True,
                        smoothing=SmoothingConfig(present_after_reads=2, lost_timeout_s=5))  # fmt: skip
    manifest = base.model_copy(update={"devices": [reader]})
    t0 = datetime(2026, 12, 4, 8, 0, 0, 125_000, tzinfo=UTC)
    clock = ManualClock(t0)
    world = World(manifest, clock, seed=seed)
    proc = RfidProcessor(manifest, clock)
    antenna_of = {z: a for a, z in antennas.items()}
    out: list[EpcisObjectEvent] = []
    for s in range(day_s):
        now = t0 + timedelta(seconds=s)
        if s:
            clock.advance(1.0)  # the World dates its changes by the clock
        world.step(pick_rate=0.8)
        reads = [(epc, antenna_of[t.zone]) for t in world.lanes.values() for epc in t.epcs]
        reads += [(epc, antenna_of["entrance"]) for epc, _ in world.carried]
        for i, (epc, antenna) in enumerate(reads):
            when = now + timedelta(microseconds=37 * i)
            read = TagRead(device_id="rfid-1", time=when, epc=epc, antenna=antenna, read_point=antennas[antenna],
                           rssi_dbm=-50.0)  # fmt: skip
            out += [o for o in proc.feed(read, when) if isinstance(o, EpcisObjectEvent)]
        out += [o for o in proc.tick(now) if isinstance(o, EpcisObjectEvent)]
    return out


def _reference_ids(docs: list[dict[str, Any]]) -> list[str]:
    """GS1's reference hashes (epcis-event-hash-generator) of the events, in one EPCISDocument."""
    from epcis_event_hash_generator import hash_generator, json_to_py

    body = [{k: v for k, v in d.items() if k not in ("@context", "eventID")} for d in docs]
    doc = {"@context": [CONTEXT], "type": "EPCISDocument", "schemaVersion": "2.0",
           "creationDate": "2026-12-04T20:00:00Z", "epcisBody": {"eventList": body}}  # fmt: skip
    events = json_to_py.event_list_from_epcis_document_json(doc)
    return [str(h) for h in hash_generator.calculate_hashes_from_pre_hashes(
        hash_generator.derive_prehashes_from_events(events))]  # fmt: skip


def _capture_manifest(url: str, data_dir: Path) -> Manifest:
    import yaml

    raw = yaml.safe_load(demo_manifest_text())
    raw["storage"] = {"data_dir": str(data_dir)}
    raw["api"] = {"enabled": False}
    raw["epcis_capture"] = {"url": url, "batch_max_events": 1000, "batch_wait_s": 0.05, "poll_interval_s": 0.01}
    return parse_manifest(yaml.safe_dump(raw), "bench-epcis.yaml")


async def _capture(events: list[EpcisObjectEvent], validate: bool) -> float:
    from edge.brokers import free_port
    from edge.gateway import Gateway

    repo = EpcisRepository(validate=validate).start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-epcis-") as tmp:
            m = _capture_manifest(repo.url, Path(tmp) / "var")
            async with Gateway(m, hub_url=f"mqtt://127.0.0.1:{free_port()}", data_dir=Path(tmp) / "var") as gw:
                t0 = time.perf_counter()
                for i in range(0, len(events), 1000):
                    gw.emit(events[i:i + 1000])
                    await asyncio.sleep(0)
                deadline = t0 + 300
                while len(repo.events) < len(events) and time.perf_counter() < deadline:  # noqa: ASYNC110 - the repository is a thread
                    await asyncio.sleep(0.005)
                elapsed = time.perf_counter() - t0
            if len(repo.events) != len(events) or max(repo.sizes) > 1000 or repo.invalid:
                raise RuntimeError(f"captured {len(repo.events)} of {len(events)}")
            return len(events) / elapsed
    finally:
        repo.stop()


def _distinct(events: list[EpcisObjectEvent], n: int) -> list[EpcisObjectEvent]:
    """`n` events with distinct eventIDs (the day's, repeated with shifted times when it has fewer)."""
    from dataclasses import replace

    from drivers.rfid.epcis import event_hash, pre_hash

    base = list({e.event_id: e for e in events}.values())
    out = list(base)
    k = 1
    while len(out) < n:
        for e in base[: n - len(out)]:
            doc = dict(e.document)
            t = datetime.fromisoformat(doc["eventTime"].replace("Z", "+00:00")) + timedelta(days=k)
            doc["eventTime"] = t.isoformat(timespec="milliseconds").replace("+00:00", "Z")
            doc["eventID"] = event_hash(pre_hash(doc, _links(e.document)))
            out.append(replace(e, event_id=doc["eventID"], document=doc))
        k += 1
    return out[:n]


def _links(doc: dict[str, Any]) -> list[str]:
    from drivers.rfid.epc import decode_epc
    from drivers.rfid.epcis import hash_epc_uri

    return [hash_epc_uri(decode_epc(u)) for u in doc["epcList"]]


def bench_epcis(quick: bool) -> dict[str, Any]:
    """Hash equality %, schema validity %, capture throughput (events/s) and what they were measured over."""
    day_s = 3600 if quick else 12 * 3600  # an hour, or a 12-hour store day
    t = time.perf_counter()
    events = storeday_events(day_s)
    docs = [e.document for e in events]
    gen_s = time.perf_counter() - t
    out: dict[str, Any] = {"epcis_storeday_events": len(events), "epcis_storeday_store_s": day_s,
                           "epcis_storeday_departures": sum(d["disposition"] == "unknown" for d in docs)}  # fmt: skip
    try:
        ref = _reference_ids(docs)
    except ModuleNotFoundError as exc:
        out["epcis_hash_unavailable"] = f"epcis-event-hash-generator not installed ({exc})"
    else:
        out["epcis_hash_equal_pct"] = round(100.0 * sum(d["eventID"] == r for d, r in zip(docs, ref, strict=True))
                                            / max(len(docs), 1), 3)  # fmt: skip
    validator = schema_validator()
    valid = sum(not any(True for _ in validator.iter_errors(d)) for d in docs)
    created = datetime(2026, 12, 4, 20, 0, tzinfo=UTC)
    documents = [epcis_document(docs[i:i + 1000], created) for i in range(0, len(docs), 1000)]
    out["epcis_schema_valid_pct"] = round(100.0 * valid / max(len(docs), 1), 3)
    out["epcis_schema_valid_documents_pct"] = round(
        100.0 * sum(not any(True for _ in validator.iter_errors(d)) for d in documents) / max(len(documents), 1), 3)
    n = 20_000 if quick else 100_000
    capture = _distinct(events, n)
    logging.getLogger("edge").setLevel(logging.ERROR)
    out["epcis_capture_events"] = n
    out["epcis_capture_events_per_s"] = round(asyncio.run(_capture(capture, validate=False)))
    out["epcis_capture_events_per_s_validated"] = round(asyncio.run(_capture(capture[: n // 4], validate=True)))
    out["epcis_storeday_gen_s"] = round(gen_s, 2)
    return out
