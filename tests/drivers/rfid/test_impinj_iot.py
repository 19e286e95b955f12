"""Impinj IoT device interface driver against the simulated R700 (a real HTTP(S) server on 127.0.0.1).

One test per numbered item of issue 21 (Impinj part): base64url EPCs, preset start/watch/stop and reader
events, the vendor keep-alive timing, digest auth and HTTPS with a CA file or a pinned certificate; plus the
reader clock (event timestamps corrected by the offset, skew guard).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import random
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.rfid.config import ImpinjIotConfig
from drivers.rfid.impinj import ImpinjIotDriver, decode_epc, parse_event, preset_body
from drivers.rfid.reads import AntennaStatus, ReaderStatus, TagRead, to_us
from edge.clock import SystemClock
from edge.config import Manifest
from edge.driver import DeviceOnline, DriverContext, Malformed, Reading
from edge.errors import DeviceError, FrameError
from firmware_sim.rfid import impinj_http
from firmware_sim.rfid.impinj_http import ImpinjHttpSim
from firmware_sim.rfid.population import Population
from firmware_sim.world import World
from tests.drivers.rfid.frames import collect
from tests.drivers.rfid.vendor_helpers import collect_some, ntags

FUZZ = 10_000 if os.environ.get("EDGE_FUZZ") == "long" else 200
EPC = "3074257BF7194E4000001A85"
ANTS = {1: "apparel", 2: "entrance"}


def driver(manifest: Manifest, sim: ImpinjHttpSim, tmp_path: Path, **kw: object) -> ImpinjIotDriver:
    cfg = ImpinjIotConfig.model_validate({"id": "r700", "base_url": sim.base_url, "antennas": ANTS, **kw})
    return ImpinjIotDriver(cfg, DriverContext(manifest=manifest, clock=SystemClock(), data_dir=tmp_path))


@contextlib.asynccontextmanager
async def reader(manifest: Manifest, **kw: object) -> AsyncIterator[tuple[World, ImpinjHttpSim]]:
    world = World(manifest, SystemClock())
    sim = ImpinjHttpSim(Population(world, ANTS), cycle_s=0.05, **kw)  # type: ignore[arg-type]
    await sim.start()
    try:
        yield world, sim
    finally:
        await sim.stop()


async def wait_for(cond: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


# ---- 1. base64url EPCs (epcHex off by default) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("epc_field", "hex_"),
    [
        ("MHQle_cZTkAAABqF", EPC),  # our demo EPC in base64url: '_' where standard base64 has '/'
        ("4oARYGAAAgUo-QT6", "E28011606000020528F904FA"),  # '-' where standard base64 has '+'
        ("MHQle/cZTkAAABqF", EPC),  # standard alphabet still read
        ("MA", "30"),  # padding omitted (RFC 4648 section 5 allows it)
        ("MA==", "30"),
    ],
)
def test_epc_is_base64url(epc_field: str, hex_: str) -> None:
    ev = parse_event(json.dumps({"timestamp": "2026-01-05T08:00:00Z",
                                 "tagInventoryEvent": {"epc": epc_field, "antennaPort": 1}}))  # fmt: skip
    assert (ev.kind, ev.epc, ev.antenna, ev.seen_us) == ("tag", hex_, 1, 1767600000000000)


def test_random_epcs_round_trip_base64url() -> None:
    rng = random.Random(21)
    for _ in range(500):
        raw = rng.randbytes(12)
        text = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        assert decode_epc(text) == raw.hex().upper()


@pytest.mark.parametrize("bad", ["{", "[]", '{"tagInventoryEvent":{"epc":"***"}}', '{"tagInventoryEvent":5}',
                                 '{"tagInventoryEvent":{"epcHex":"30","antennaPort":"x"}}',
                                 '{"tagInventoryEvent":{"epc":"MA","peakRssiCdbm":90000}}',
                                 '{"inventoryStatusEvent":{}}', '{"timestamp":"yesterday","overflowEvent":{}}'])
def test_bad_lines(bad: str) -> None:
    with pytest.raises(FrameError):
        parse_event(bad)


def test_events_by_key_without_event_type() -> None:
    """ReaderEvent carries `timestamp` and one member; `eventType` is not needed to tell them apart."""
    assert parse_event('{"timestamp":"2026-01-05T08:00:00Z","inventoryStatusEvent":{"inventoryStatus":"ARMED"}}'
                       ).status == "armed"  # fmt: skip
    assert parse_event('{"antennaDisconnectedEvent":{"antennaPort":3}}').antenna == 3
    assert parse_event('{"inventoryTerminatedEvent":{"terminationReason":"x"}}').kind == "terminated"
    assert parse_event('{"eventType":"somethingNew","somethingNewEvent":{}}').kind == "other"


@settings(max_examples=FUZZ, deadline=None)
@given(st.text(max_size=300))
def test_fuzz_lines(text: str) -> None:
    with contextlib.suppress(FrameError):
        parse_event(text)


scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
values = st.recursive(scalars, lambda i: st.lists(i, max_size=3) | st.dictionaries(st.text(max_size=10), i,
                                                                                    max_size=3), max_leaves=10)


@settings(max_examples=FUZZ, deadline=None)
@given(values, values, st.sampled_from(["tagInventoryEvent", "inventoryStatusEvent", "antennaConnectedEvent",
                                        "inventoryTerminatedEvent", "overflowEvent"]))
def test_fuzz_shapes(body: object, ts: object, key: str) -> None:
    for ev in ({"timestamp": ts, key: body}, {key: {"epc": "MA", "antennaPort": body, "lastSeenTime": ts,
                                                    "inventoryStatus": body}}):
        with contextlib.suppress(FrameError):
            parse_event(json.dumps(ev))


async def test_default_event_config_reads_through(demo_manifest: Manifest, tmp_path: Path) -> None:
    """The store's own preset with the reader's default eventConfig: epc only (base64url), no epcHex."""
    async with reader(demo_manifest, running_preset="store") as (world, sim):
        drv = driver(demo_manifest, sim, tmp_path, manage_preset=False, preset_id="store")
        got = await collect(drv.stream(), lambda rs: ntags(rs) >= 150)
        reads = [r for r in got if isinstance(r, TagRead)]
        epcs = world.sku_of_epc()
        assert len(reads) >= 150 and all(r.epc in epcs and r.read_point in {"apparel", "entrance"} for r in reads)
        assert drv.counters["malformed"] == 0


# ---- 2. presets: configure, start, watch, stop ----------------------------------------------------------


async def test_driver_installs_starts_and_stops_its_preset(demo_manifest: Manifest, tmp_path: Path) -> None:
    async with reader(demo_manifest) as (_world, sim):
        assert sim.status == "idle"  # a reader out of the box runs nothing
        drv = driver(demo_manifest, sim, tmp_path)
        got = await collect(drv.stream(), lambda rs: ntags(rs) >= 50)
        assert isinstance(got[0], DeviceOnline)
        assert isinstance(got[1], ReaderStatus) and got[1].inventorying
        assert "PUT /api/v1/profiles/inventory/presets/edge-gateway" in sim.requests
        assert "POST /api/v1/profiles/inventory/presets/edge-gateway/start" in sim.requests
        preset = sim.presets["edge-gateway"]
        assert preset == json.loads(json.dumps(preset_body(drv.config)))
        assert sorted(a["antennaPort"] for a in preset["antennaConfigs"]) == [1, 2]
        reads = [r for r in got if isinstance(r, TagRead)]
        assert all(r.rssi_dbm is not None and r.seen_us for r in reads)
        await wait_for(lambda: sim.status == "idle")  # closed by the gateway -> POST /api/v1/profiles/stop
        assert sim.requests[-1] == "POST /api/v1/profiles/stop"


async def test_refused_start_is_a_device_fault(demo_manifest: Manifest, tmp_path: Path) -> None:
    async with reader(demo_manifest) as (_world, sim):
        sim.refuse_start = "region not set"
        with pytest.raises(DeviceError, match=r"refused to start preset 'edge-gateway'.*region not set"):
            await collect(driver(demo_manifest, sim, tmp_path).stream(), lambda rs: False)


@pytest.mark.parametrize(("running", "expect", "error"), [
    (None, "store", "inventory is not running on the reader"),
    ("other", "store", "runs preset 'other', the manifest expects 'store'"),
])
async def test_store_managed_preset_verified(demo_manifest: Manifest, tmp_path: Path, running: str | None,
                                             expect: str, error: str) -> None:  # fmt: skip
    async with reader(demo_manifest, running_preset=running) as (_world, sim):
        with pytest.raises(DeviceError, match=error):
            await collect(driver(demo_manifest, sim, tmp_path, manage_preset=False, preset_id=expect).stream(),
                          lambda rs: False)  # fmt: skip
        assert not any(r.startswith(("PUT", "POST")) for r in sim.requests)  # hands off the store's presets


async def test_reader_events_status_antennas_overflow(demo_manifest: Manifest, tmp_path: Path) -> None:
    async with reader(demo_manifest) as (_world, sim):
        drv = driver(demo_manifest, sim, tmp_path)
        stream = drv.stream()
        got = await collect_some(stream, lambda rs: ntags(rs) > 5)
        sim.disconnect_antenna(2)
        sim.overflow()
        sim.push_line(b'{"tagInventoryEvent":{"epc":"%%%"}}\n{"eventType":"gpiTransition","x":{}}\n')
        got += await collect_some(stream, lambda rs: any(isinstance(r, Malformed) and "overflow" in r.reason
                                                         for r in rs) and drv.counters["ignored"] >= 1)
        ant = [r for r in got if isinstance(r, AntennaStatus)]
        assert [(a.antenna, a.connected, a.read_point) for a in ant] == [(2, False, "entrance")]
        # dated by the event's own timestamp on the tags' scale (reader clock + offset), so a tag event from
        # before the unplug that arrives after it does not show the port connected again
        tags = [r for r in got[:got.index(ant[0])] if isinstance(r, TagRead)]
        assert ant[0].seen_us is not None and tags[-1].seen_us is not None
        assert abs(ant[0].seen_us - tags[-1].seen_us) < 5_000_000
        later = got[got.index(ant[0]) + 1:]
        assert not any(isinstance(r, TagRead) and r.antenna == 2 for r in later[5:])
        assert any(isinstance(r, Malformed) and r.reason == "epc is not base64url" for r in got)
        sim.stop_inventory()  # someone presses stop in the reader's web UI
        tail: list[Reading] = []
        with pytest.raises(DeviceError, match="inventory stopped on the reader"):
            await collect_some(stream, lambda rs: False, into=tail)
        assert isinstance(tail[-1], ReaderStatus) and not tail[-1].inventorying
        # the supervisor reconnects: the managed preset runs again
        got = await collect(drv.stream(), lambda rs: ntags(rs) > 0)
        assert ntags(got) > 0 and drv.counters["presets_started"] == 2
        await wait_for(lambda: sim.status == "idle")


async def test_inventory_terminated(demo_manifest: Manifest, tmp_path: Path) -> None:
    async with reader(demo_manifest, running_preset="store") as (_world, sim):
        drv = driver(demo_manifest, sim, tmp_path, manage_preset=False, preset_id="store")
        stream = drv.stream()
        await collect_some(stream, lambda rs: ntags(rs) > 0)
        sim.terminate("stopTrigger")
        tail: list[Reading] = []
        with pytest.raises(DeviceError, match="inventory terminated"):
            await collect_some(stream, lambda rs: False, into=tail)
        assert isinstance(tail[-1], ReaderStatus) and not tail[-1].inventorying
        assert "stopTrigger" in tail[-1].reason
        with pytest.raises(DeviceError, match="not running"):  # store-managed: stays a fault until restarted
            await collect(drv.stream(), lambda rs: False)


# ---- 3. keep-alive timing ----------------------------------------------------------------------------------


def test_keepalive_timing_defaults() -> None:
    """HTTP stream: keep-alive after 30 s without data; Impinj: reconnect only after 90 s idle."""
    assert impinj_http.KEEPALIVE_S == 30
    cfg = ImpinjIotConfig(id="r", base_url="https://192.0.2.11", zone="apparel")
    assert cfg.idle_timeout_s == 90


async def test_quiet_stream_stays_up_on_keepalives(demo_manifest: Manifest, tmp_path: Path) -> None:
    """No tags at all (entrance has no lanes): only keep-alives; the driver must not reconnect (time scaled
    by 1/100: keep-alive after 0.3 s of silence, idle timeout 0.9 s)."""
    world = World(demo_manifest, SystemClock())
    sim = ImpinjHttpSim(Population(world, {1: "entrance"}, carried_p=0), cycle_s=0.05, keepalive_s=0.3)
    await sim.start()
    try:
        drv = driver(demo_manifest, sim, tmp_path, antennas={1: "entrance"}, idle_timeout_s=0.9)
        got = await collect(drv.stream(), lambda rs: drv.counters["keepalives"] >= 6, timeout=20)
        assert drv.counters["keepalives"] >= 6 and sim.clients == 1
        beats = [r for r in got if isinstance(r, ReaderStatus) and r.reason == "keep-alive"]
        assert beats and all(b.inventorying for b in beats)  # a liveness beat of a running inventory
    finally:
        await sim.stop()


# ---- 4. auth none/basic/digest, HTTPS with CA file or pinned certificate ------------------------------------


@pytest.mark.parametrize("auth", ["basic", "digest"])
async def test_auth(demo_manifest: Manifest, tmp_path: Path, auth: str) -> None:
    async with reader(demo_manifest, auth=auth, username="root", password="impinj") as (_world, sim):
        with pytest.raises(DeviceError, match="HTTP 401"):
            await collect(driver(demo_manifest, sim, tmp_path, auth=auth, username="root", password="wrong"
                                 ).stream(), lambda rs: False)  # fmt: skip
        drv = driver(demo_manifest, sim, tmp_path, auth=auth, username="root", password="impinj")
        assert ntags(await collect(drv.stream(), lambda rs: ntags(rs) > 0)) > 0


@pytest.fixture(scope="module")
def reader_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """A self-signed reader certificate for 127.0.0.1 (openssl), its key, its sha256 fingerprint."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "reader.pem", d / "reader.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=impinj-sim", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)  # fmt: skip
    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    return cert, key, hashlib.sha256(der).hexdigest()


@pytest.mark.parametrize(("how", "ok"), [("ca_file", True), ("pin", True), ("wrong_pin", False),
                                         ("system_cas", False), ("no_verify", True)])
async def test_https(demo_manifest: Manifest, tmp_path: Path, reader_cert: tuple[Path, Path, str], how: str,
                     ok: bool) -> None:  # fmt: skip
    cert, key, fp = reader_cert
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    options: dict[str, dict[str, object]] = {
        "ca_file": {"ca_file": str(cert)}, "pin": {"pinned_sha256": ":".join(fp[i:i + 2] for i in range(0, 64, 2))},
        "wrong_pin": {"pinned_sha256": "00" * 32}, "system_cas": {}, "no_verify": {"verify_tls": False},
    }
    kw = options[how]
    async with reader(demo_manifest, tls=ctx, auth="digest", username="root", password="impinj") as (_w, sim):
        assert sim.base_url.startswith("https://")
        drv = driver(demo_manifest, sim, tmp_path, auth="digest", username="root", password="impinj", **kw)
        if ok:
            assert ntags(await collect(drv.stream(), lambda rs: ntags(rs) > 0)) > 0
        else:
            with pytest.raises(DeviceError, match="pinned" if how == "wrong_pin" else "CERTIFICATE_VERIFY_FAILED"):
                await collect(drv.stream(), lambda rs: False)
            if how == "wrong_pin":
                assert sim.requests == []  # nothing, not even a digest response, went to the impostor


# ---- reader clock ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("offset_s", [-3600.0, 0.0, 7200.0])
async def test_reads_dated_by_reader_clock_corrected(demo_manifest: Manifest, tmp_path: Path,
                                                     offset_s: float) -> None:  # fmt: skip
    async with reader(demo_manifest) as (_world, sim):
        sim.clock_offset_s = offset_s  # the reader's clock is an hour behind / two ahead
        drv = driver(demo_manifest, sim, tmp_path)
        got = await collect(drv.stream(), lambda rs: ntags(rs) >= 20)
        reads = [r for r in got if isinstance(r, TagRead)]
        assert all(abs(to_us(r.time) - r.seen_us) < 2_000_000 for r in reads if r.seen_us)
        assert all(r.seen_us for r in reads) and drv.counters["replayed"] == 0


async def test_absurd_reader_clock_falls_back_to_receive_time(demo_manifest: Manifest, tmp_path: Path) -> None:
    async with reader(demo_manifest) as (_world, sim):
        sim.clock_offset_s = -3 * 86400.0  # reader clock never set: three days behind
        drv = driver(demo_manifest, sim, tmp_path)
        got = await collect(drv.stream(), lambda rs: ntags(rs) >= 20)
        reads = [r for r in got if isinstance(r, TagRead)]
        assert all(r.seen_us is not None and abs(to_us(r.time) - r.seen_us) < 1_000_000 for r in reads)
        warnings = [r for r in got if isinstance(r, Malformed) and "reader clock" in r.reason]
        assert len(warnings) == 1  # said once
