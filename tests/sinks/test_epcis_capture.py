"""EPCIS capture through the real gateway (pipeline, outbox, SQLite) and the sink, against the local EPCIS
repository (firmware_sim/epcis_repository.py: real HTTP on 127.0.0.1, every document checked against GS1's EPCIS 2.0
JSON schema with format checking). Events come from the real RFID processor (tag arrivals)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from drivers.rfid.config import LlrpConfig, SmoothingConfig
from drivers.rfid.events import EpcisObjectEvent
from drivers.rfid.processor import RfidProcessor
from drivers.rfid.reads import TagRead
from edge.brokers import Mosquitto
from edge.clock import ManualClock
from edge.config import Manifest
from edge.gateway import Gateway
from firmware_sim.epcis_repository import EpcisRepository
from firmware_sim.world import sgtin96_hex
from sinks.config import EpcisCaptureConfig
from tests.api.conftest import manifest_for_tests, wait_for

TOKEN = "capture-token-0123456789"


def rfid_events(manifest: Manifest, n: int, first_serial: int = 1) -> list[EpcisObjectEvent]:
    """`n` EPCIS ObjectEvents from the RFID processor: n tags arriving in the apparel zone (SGLN with extension)."""
    reader = LlrpConfig(id="rfid-1", host="127.0.0.1", antennas={1: "apparel"}, epcis=True,
                        smoothing=SmoothingConfig(present_after_reads=1, lost_timeout_s=3600))  # fmt: skip
    t0 = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
    proc = RfidProcessor(manifest.model_copy(update={"devices": [reader]}), ManualClock(t0))
    out: list[EpcisObjectEvent] = []
    for i in range(n):
        now = t0 + timedelta(milliseconds=i)
        read = TagRead(device_id="rfid-1", time=now, epc=sgtin96_hex("0614141", "812345", first_serial + i),
                       antenna=1, read_point="apparel", rssi_dbm=-50.0)  # fmt: skip
        out += [o for o in proc.feed(read, now) if isinstance(o, EpcisObjectEvent)]
    assert len(out) == n
    return out


@pytest.fixture
def repo() -> Iterator[EpcisRepository]:
    r = EpcisRepository(token=TOKEN).start()
    try:
        yield r
    finally:
        r.stop()


def manifest(tmp_path: Path, url: str, **capture: Any) -> Manifest:
    section = {"url": url, "bearer_token": TOKEN, "batch_max_events": 100, "batch_wait_s": 0.2,
               "poll_interval_s": 0.05, "backoff_s": 0.1, "backoff_max_s": 0.3, **capture}  # fmt: skip
    return manifest_for_tests(tmp_path, epcis_capture=section)


async def rows(gw: Gateway, state: str | None = None) -> int:
    where = "" if state is None else f" WHERE state = '{state}'"
    return int((await gw.query(f"SELECT count(*) AS n FROM epcis_capture{where}"))[0]["n"])


def sink_status(gw: Gateway) -> Any:
    return next(d for d in gw.devices() if d.device == "epcis-capture")


async def test_batched_by_size_and_time_polled_and_schema_valid(
    mosquitto: Mosquitto, tmp_path: Path, repo: EpcisRepository
) -> None:
    repo.running_polls = 2  # each job answers `running` twice before it finishes: the sink polls
    m = manifest(tmp_path, repo.url)
    events = rfid_events(m, 250)
    async with Gateway(m, hub_url=mosquitto.url, data_dir=tmp_path / "var", tick_interval=0.1) as gw:
        await gw.emit_committed(events)
        await wait_for(lambda: len(repo.events) == 250, 30, "250 events captured")
        assert sorted(repo.sizes) == [50, 100, 100]  # two full documents by size, the rest after batch_wait_s
        assert repo.invalid == 0 and set(repo.statuses) == {202}  # every document valid against GS1's schema
        assert repo.order == [e.event_id for e in events]  # oldest first
        assert repo.events[events[0].event_id] == {k: v for k, v in events[0].document.items() if k != "@context"}
        await wait_for(lambda: _empty(gw), 10, "captured rows deleted")
        assert sink_status(gw).state == "online"
        assert "edge_epcis_captured_total 250" in gw.metrics_text()


async def _empty(gw: Gateway) -> bool:
    return await rows(gw) == 0


async def _no_pending(gw: Gateway) -> bool:
    return await rows(gw, "pending") == 0


async def test_rows_are_written_with_their_events(mosquitto: Mosquitto, tmp_path: Path) -> None:
    # nothing listens: the rows stay, one per event, committed with it (same transaction as the outbox row)
    m = manifest(tmp_path, "http://127.0.0.1:9/epcis")
    events = rfid_events(m, 5)
    async with Gateway(m, hub_url=mosquitto.url, data_dir=tmp_path / "var", tick_interval=0.1) as gw:
        await gw.emit_committed(events)
        got = await gw.query("SELECT event_id, body, state FROM epcis_capture ORDER BY seq")
        assert [r["event_id"] for r in got] == [e.event_id for e in events]
        assert {r["state"] for r in got} == {"pending"}
        out = await gw.query("SELECT count(*) AS n FROM outbox WHERE type = 'retail.rfid.epcis.v1'")
        assert out[0]["n"] == 5
        await wait_for(lambda: sink_status(gw).state == "fault", 10, "connection failures surfaced")


async def test_a_restart_mid_delivery_loses_nothing_and_the_repository_dedups(
    mosquitto: Mosquitto, tmp_path: Path, repo: EpcisRepository
) -> None:
    repo.running_polls = 10**9  # the job never finishes: the gateway stops with the batch in flight
    m = manifest(tmp_path, repo.url)
    events = rfid_events(m, 150)
    async with Gateway(m, hub_url=mosquitto.url, data_dir=tmp_path / "var", tick_interval=0.1) as gw:
        await gw.emit_committed(events)
        await wait_for(lambda: repo.documents >= 1, 10, "a document in flight")
        await gw.sinks.stop()  # the gateway goes down while the capture job runs
        repo.running_polls = 0
        for job in list(repo.jobs.values()):
            job.polls_left = 0
            repo.poll(job.id)  # the repository finishes the in-flight job on its own (the gateway never learns)
    assert len(repo.events) == 100  # the first batch was captured, the gateway did not see it finish
    async with Gateway(m, hub_url=mosquitto.url, data_dir=tmp_path / "var", tick_interval=0.1) as gw:
        await wait_for(lambda: len(repo.events) == 150, 30, "everything captured after the restart")
        await wait_for(lambda: _empty(gw), 10, "rows deleted")
    assert repo.duplicates <= 100  # no duplicate beyond the in-flight batch, and the repository dropped them
    assert sorted(repo.order) == sorted(e.event_id for e in events)


async def test_413_makes_documents_smaller(mosquitto: Mosquitto, tmp_path: Path) -> None:
    repo = EpcisRepository(token=TOKEN, capture_limit=30).start()
    try:
        m = manifest(tmp_path, repo.url)
        events = rfid_events(m, 100)
        async with Gateway(m, hub_url=mosquitto.url, data_dir=tmp_path / "var", tick_interval=0.1) as gw:
            await gw.emit_committed(events)
            await wait_for(lambda: len(repo.events) == 100, 30, "all captured in smaller documents")
            assert repo.statuses[0] == 413
            assert max(repo.sizes) <= 30
            assert await rows(gw, "failed") == 0
    finally:
        repo.stop()


async def test_a_rejected_event_is_isolated_kept_and_surfaced(
    mosquitto: Mosquitto, tmp_path: Path, repo: EpcisRepository
) -> None:
    m = manifest(tmp_path, repo.url)
    events = rfid_events(m, 40)
    bad = events[17].event_id
    repo.reject_ids = {bad}  # the capture job fails (rollback): nothing of the document is stored
    repo.script.extend([422])  # and the first POST is refused as unprocessable
    async with Gateway(m, hub_url=mosquitto.url, data_dir=tmp_path / "var", tick_interval=0.1) as gw:
        await gw.emit_committed(events)
        await wait_for(lambda: len(repo.events) == 39, 30, "every other event captured")
        await wait_for(lambda: rows(gw, "failed"), 10, "the rejected event kept as failed")
        await wait_for(lambda: _no_pending(gw), 10, "captured rows deleted")
        failed = await gw.query("SELECT event_id, last_error FROM epcis_capture WHERE state = 'failed'")
        assert [r["event_id"] for r in failed] == [bad]
        assert "rejected" in failed[0]["last_error"]
        assert bad not in repo.events
        status = sink_status(gw)
        assert status.state == "fault" and "rejected 1 event" in (status.error or "")
        assert "edge_epcis_capture_failed_total 1" in gw.metrics_text()
        # the transition reached the outbox as a device status event (the hub and the dashboard see it)
        dev = await gw.query("SELECT payload FROM outbox WHERE type = 'retail.device.status.v1'")
        assert any(orjson.loads(r["payload"])["data"]["device"] == "epcis-capture" for r in dev)
        status_cmd = await gw.sinks.parts[0]._cmd_status({})  # what `cmd/epcis.capture.status` answers
        assert status_cmd["rows"] == {"failed": 1} and status_cmd["failed"] == 1 and status_cmd["captured"] == 39
        await wait_for(lambda: _fault_alert(gw), 20, "a device-fault alert for the sink (dashboard)")
    # a restart keeps the fault: the failed row is still there
    async with Gateway(m, hub_url=mosquitto.url, data_dir=tmp_path / "var", tick_interval=0.1) as gw:
        assert sink_status(gw).state == "fault"
        repo.reject_ids.clear()  # the repository's operator fixed its rule: the staff asks for a retry
        assert await gw.sinks.parts[0]._cmd_retry_failed({}) == {"requeued": 1}
        await wait_for(lambda: bad in repo.events, 30, "the once rejected event captured")
        await wait_for(lambda: _empty(gw), 10, "no row left")
        assert sink_status(gw).state == "online"


async def _fault_alert(gw: Gateway) -> bool:
    rows = await gw.query("SELECT state FROM alerts WHERE device = 'epcis-capture'")
    return any(r["state"] == "open" for r in rows)


async def test_409_is_already_captured_and_503_is_retried(
    mosquitto: Mosquitto, tmp_path: Path, repo: EpcisRepository
) -> None:
    m = manifest(tmp_path, repo.url, batch_max_events=10)
    events = rfid_events(m, 20)
    repo.script.extend([409, 503, 500])  # first document: already there; second: unavailable twice, then taken
    async with Gateway(m, hub_url=mosquitto.url, data_dir=tmp_path / "var", tick_interval=0.1) as gw:
        await gw.emit_committed(events)
        await wait_for(lambda: _empty(gw), 30, "both documents done")
        assert repo.statuses == [409, 503, 500, 202]
        assert repo.order == [e.event_id for e in events[10:]]  # the 409 document was not sent again
        assert await rows(gw, "failed") == 0


@pytest.mark.parametrize(("auth", "server"), [
    ({"bearer_token": "wrong-token-0123456789"}, {"token": TOKEN}),
    ({"bearer_token": None, "username": "store-1", "password": "wrong"}, {"basic": ("store-1", "s3cret")}),
])
async def test_refused_credentials_fault_the_sink_and_keep_the_events(
    mosquitto: Mosquitto, tmp_path: Path, auth: dict[str, Any], server: dict[str, Any]
) -> None:
    repo = EpcisRepository(**server).start()
    try:
        m = manifest(tmp_path, repo.url, **auth)
        events = rfid_events(m, 10)
        async with Gateway(m, hub_url=mosquitto.url, data_dir=tmp_path / "var", tick_interval=0.1) as gw:
            await gw.emit_committed(events)
            await wait_for(lambda: sink_status(gw).state == "fault", 10, "401 surfaced")
            assert "401" in (sink_status(gw).error or "")
            assert await rows(gw, "pending") == 10 and not repo.events
            # the repository's operator fixes the account: the kept events go
            if "token" in server:
                repo.token = auth["bearer_token"]
            else:
                repo.basic = (auth["username"], auth["password"])
            await wait_for(lambda: len(repo.events) == 10, 30, "delivered once accepted")
            await wait_for(lambda: sink_status(gw).state == "online", 10, "sink back online")
    finally:
        repo.stop()


@pytest.mark.parametrize(("location", "follows"), [
    ("http://127.0.0.2:{port}/epcis", False),  # another host: our token must not go there
    ("https://127.0.0.1:{port}/epcis", False),  # another scheme
    ("http://127.0.0.1:{port}/epcis", True),  # absolute, same origin
    ("//127.0.0.1:{port}/epcis", True),  # scheme-relative, same origin
])
async def test_the_job_is_followed_only_on_the_repository(
    mosquitto: Mosquitto, tmp_path: Path, repo: EpcisRepository, location: str, follows: bool
) -> None:
    repo.location_base = location.format(port=repo.url.split(":")[2].split("/")[0])
    m = manifest(tmp_path, repo.url)
    async with Gateway(m, hub_url=mosquitto.url, data_dir=tmp_path / "var", tick_interval=0.1) as gw:
        await gw.emit_committed(rfid_events(m, 5))
        if follows:
            await wait_for(lambda: _empty(gw), 20, "captured through an absolute Location")
        else:
            await wait_for(lambda: sink_status(gw).state == "fault", 20, "foreign Location refused")
            assert "is not on" in (sink_status(gw).error or "")
            assert await rows(gw, "pending") == 5  # kept: a later attempt (or the operator) settles it


def test_basic_auth_header_is_rfc7617(tmp_path: Path) -> None:
    cfg = EpcisCaptureConfig(url="http://127.0.0.1:1/epcis", username="store-1", password="pä:ss")
    from sinks.epcis_capture import CaptureReactor, CaptureWorker

    w = CaptureWorker(None, cfg, CaptureReactor(1))  # type: ignore[arg-type]
    assert w._headers["Authorization"] == "Basic " + base64.b64encode("store-1:pä:ss".encode()).decode()
    assert w._headers["GS1-EPCIS-Version"] == "2.0.0"
    assert w._headers["Content-Type"] == "application/ld+json"


async def test_over_budget_events_are_dropped_with_a_gap_event(
    mosquitto: Mosquitto, tmp_path: Path, repo: EpcisRepository
) -> None:
    repo.script.extend([503] * 10**6)  # the repository is down
    m = manifest(tmp_path, repo.url, budget_mb=0.01)  # ~10 KB: about 25 events
    events = rfid_events(m, 100)
    async with Gateway(m, hub_url=mosquitto.url, data_dir=tmp_path / "var", tick_interval=0.1) as gw:
        await gw.emit_committed(events)
        kept = await rows(gw)
        assert 10 < kept < 50
        size = (await gw.query("SELECT sum(size) AS b FROM epcis_capture"))[0]["b"]
        assert size <= 0.01 * 1024 * 1024
        repo.script.clear()  # back up: the kept events go, room returns
        await wait_for(lambda: len(repo.events) == kept, 30, "kept events captured")
        await wait_for(lambda: _empty(gw), 10, "rows deleted")
        await gw.emit_committed(rfid_events(m, 1, first_serial=1000))
        gaps = await gw.query("SELECT payload FROM outbox WHERE type = 'retail.gap.v1'")
        data = [orjson.loads(g["payload"])["data"] for g in gaps]
        (gap,) = [d for d in data if d["gap_source"] == "epcis-capture"]
        assert gap["dropped"] == 100 - kept
        assert gap["last"] - gap["first"] + 1 == 100 - kept
        await wait_for(lambda: len(repo.events) == kept + 1, 30, "the next event captured")
