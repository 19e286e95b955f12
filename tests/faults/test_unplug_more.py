"""More device families unplugged and plugged back in, through the real Gateway, driver and simulator.

Serial barcode scanner: the pty closes and a new one appears behind the same link (`PtyPort.replug`) while
the scanner types GS1 codes. Door counter: its line is a pty behind a link (closed and back) or a TCP
serial-device server (connections reset with RST, port closed, then listening again) while people walk
through. MQTT weight shelf: the store-local mosquitto is killed and restarted while shoppers pick, and the
shelf's publisher disconnects and comes back (the driver stays online: a `timeout` shelf fault instead).

After each: one `retail.device.status.v1` offline then one online (each logged once), readings after the
re-plug processed (checked against the simulator's truth: scans by batch, door totals, stock counts), every
accepted event (by CloudEvents id, from the outbox committer and from the SQLite outbox/journal) at the hub
mosquitto subscriber, per-source sequences contiguous, duplicates only within the in-flight window of the
uplink's reconnects (the hub stays up here, so none), `PRAGMA integrity_check` ok.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import sqlite3
import struct
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from drivers.traffic.processor import TrafficProcessor
from edge.brokers import Mosquitto
from edge.db import integrity_check
from edge.gateway import Gateway
from edge.runtime import DeviceStatus
from edge.supervisor import Backoff
from firmware_sim.door import DoorSim
from firmware_sim.hub import HubProcess
from firmware_sim.shelf import PtyPort
from tests.faults.test_faults import assert_contiguous, dupes, outbox_ids
from tests.faults.test_unplug import ROOT, Action, status_events, unplug_manifest, until, world

pytestmark = pytest.mark.timeout(60)
WAIT = 15.0  # every wait is bounded; a healthy run needs a fraction of this


@dataclass
class Run:
    """One gateway run against the hub subscriber: what the outbox accepted, what the hub received."""

    gw: Gateway
    hub: HubProcess
    db: Path
    accepted: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> envelope, as committed
    events: list[dict[str, Any]] = field(default_factory=list)  # at the hub, filled by `running`
    drained: int = 0  # how many events were accepted when the hub had every one of them

    async def follow(self) -> None:
        """Record every event the gateway accepts (its `subscribe()` feed: each committed envelope)."""
        async for env in self.gw.subscribe():
            self.accepted[str(env["id"])] = env

    def status(self, device: str) -> DeviceStatus:
        """The supervisor's view of `device`."""
        return next(d for d in self.gw.devices() if d.device == device)

    def of_type(self, etype: str) -> list[dict[str, Any]]:
        """Accepted events of one type, in commit order."""
        return [e for e in self.accepted.values() if e["type"] == etype]

    def hub_missing(self) -> set[str]:
        """Accepted ids the hub has not received yet."""
        return set(self.accepted) - {str(e["id"]) for e in self.hub.events()}


@contextlib.asynccontextmanager
async def running(tmp: Path, hub: Mosquitto, sections: list[dict[str, Any]], local_url: str | None = None,
                  extra: dict[str, Any] | None = None) -> AsyncIterator[Run]:
    """Run a gateway with `sections`; on exit wait until the hub has every accepted id, stop, collect."""
    manifest = unplug_manifest(sections, local_url, extra)
    recorder = HubProcess(hub.port, f"{ROOT}/events/#", tmp / "hub.log")
    try:
        gw = Gateway(manifest, hub_url=hub.url, data_dir=tmp / "var", install_rules=False,
                     backoff=Backoff(initial=0.2, maximum=0.5))
        run = Run(gw, recorder, tmp / "var" / "edge.db")
        follower = asyncio.create_task(run.follow())
        await asyncio.sleep(0)  # subscribed before the gateway starts: nothing accepted goes unseen
        try:
            async with gw:
                yield run
                await until(lambda: gw.outbox.depth == 0, WAIT, "outbox drained")
                await until(lambda: not run.hub_missing(), WAIT, "hub has every accepted event")
                run.drained = len(run.accepted)
                assert gw.uplink.connected.is_set(), "the uplink went down"
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
        assert not gw.metrics.total("edge_subscriber_dropped_total"), "the follower fell behind"
        run.events = recorder.events()
    finally:
        recorder.close()


async def unplug_and_back(run: Run, device: str, unplug: Action, replug: Action) -> None:
    """Unplug, wait offline, replug, wait online and fresh readings."""
    await unplug()
    await until(lambda: run.status(device).state == "offline", WAIT, f"{device} offline after unplug")
    await replug()
    await until(lambda: run.status(device).state == "online", WAIT, f"{device} online after replug")
    n = run.status(device).readings
    await until(lambda: run.status(device).readings > n + 2, WAIT, f"{device} readings after replug")


def stored_ids(db: Path) -> set[str]:
    """Ids of every event in the SQLite outbox/journal, acknowledged or not (acknowledged telemetry is gone)."""
    c = sqlite3.connect(db)
    try:
        return {str(r[0]) for r in c.execute("SELECT id FROM outbox")}
    finally:
        c.close()


def supervisor_lines(caplog: pytest.LogCaptureFixture, device: str) -> list[str]:
    """The supervisor's state-change log lines about `device`."""
    return [r.getMessage() for r in caplog.records
            if r.name == "edge.supervisor" and r.getMessage().startswith(f"device {device} ")
            and "malformed" not in r.getMessage()]


def verify(run: Run, device: str, states: list[str], caplog: pytest.LogCaptureFixture) -> None:
    """Device states published and logged once each, nothing accepted lost, no stray duplicates, db ok."""
    assert status_events(run.events, device) == states
    lines = supervisor_lines(caplog, device)
    offline = [x for x in lines if x.startswith(f"device {device} offline")]
    back = [x for x in lines if x == f"device {device} back online"]
    assert (len(offline), len(back)) == (states.count("offline"), states.count("offline")), lines
    hub_ids = {str(e["id"]) for e in run.events}
    queued = outbox_ids(run.db)  # accepted after the drain point, still waiting for the next session
    early = set(list(run.accepted)[: run.drained])
    assert early <= hub_ids, f"{len(early - hub_ids)} events accepted before the drain point never arrived"
    lost = set(run.accepted) - hub_ids - queued
    assert not lost, f"{len(lost)} accepted events neither at the hub nor queued, e.g. {sorted(lost)[:3]}"
    stored = stored_ids(run.db)
    assert stored, "nothing in the outbox/journal: the run produced no lasting event"
    assert stored <= hub_ids | queued, f"{len(stored - hub_ids - queued)} stored events neither sent nor queued"
    assert hub_ids <= set(run.accepted), "the hub received events the outbox never accepted"
    for source in {str(e["source"]) for e in run.events}:
        assert_contiguous(run.events, source)
    # duplicates come only from re-sending what was in flight when the uplink reconnected
    hub = run.gw.manifest.hub
    window = hub.inflight * (hub.batch.max_events if hub.batch.enabled else 1)
    reconnects = int(run.gw.metrics.total("edge_uplink_connects_total")) - 1
    assert dupes(run.events) <= reconnects * window, (dupes(run.events), reconnects)
    assert integrity_check(run.db) == "ok"


# ---- serial barcode scanner ------------------------------------------------------------------------


async def test_serial_scanner_pty_closed_and_back(mosquitto: Mosquitto, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    from firmware_sim.scanner import ScannerSim, gs1_128

    caplog.set_level(logging.INFO, logger="edge.supervisor")
    w = world()
    sim = ScannerSim(w, tmp_path / "scanner.tty")
    gtin = w.manifest.catalog[0].gtin
    assert gtin is not None
    device = "scanner-backroom"
    section = {"id": device, "type": "scanner_serial", "port": str(sim.port.link), "role": "receive",
               "terminator": "CR"}
    sent: list[str] = []  # batches typed while the scanner was plugged in

    async def scan_forever() -> None:
        for i in range(10_000):  # ~25 scans/s; bounded
            if sim.port.master is not None:
                batch = f"B{i:05d}"
                sim.type(gs1_128(gtin, batch=batch))
                sent.append(batch)
            await asyncio.sleep(0.04)

    async def unplug() -> None:
        sim.port.unplug()

    async def replug() -> None:
        sim.port.replug()

    typing = asyncio.create_task(scan_forever())
    try:
        async with running(tmp_path, mosquitto, [section]) as run:
            await until(lambda: run.status(device).state == "online" and run.status(device).readings > 5,
                        WAIT, "scanner online")
            await unplug_and_back(run, device, unplug, replug)
            after = len(sent)  # from here on the driver is reading: every scan must arrive
            await until(lambda: len(sent) > after + 10, WAIT, "scans after replug")
            typing.cancel()
            await until(lambda: len(run.of_type("retail.scan.received.v1")) == run.status(device).readings,
                        WAIT, "every scan read became an event")
    finally:
        typing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await typing
        sim.port.unplug()
    verify(run, device, ["online", "offline", "online"], caplog)
    got = [e["data"]["batch"] for e in run.events if e["type"] == "retail.scan.received.v1"]
    assert len(got) == len(set(got)) == run.status(device).readings  # one event per scan read, none twice
    order = {b: i for i, b in enumerate(sent)}
    assert all(b in order for b in got), "a scan nobody typed"
    assert [order[b] for b in got] == sorted(order[b] for b in got), "scans reordered"
    assert set(sent[after:]) <= set(got), "a scan typed after the replug was lost"
    assert len(got) < len(sent), "no scan fell into the unplugged window: the test did not unplug mid-stream"


# ---- door counter: pty or TCP serial-device server ---------------------------------------------------


class LinkedDoor(DoorSim):
    """The simulated door counter with its line going to `send` (a replaceable pty, a TCP device server)."""

    def __init__(self, send: Callable[[bytes], None], **kw: Any) -> None:
        super().__init__(**kw)
        self._line = send

    def _send(self, line: bytes) -> None:
        self._line(line)


class DeviceServer:
    """A serial-device server (ser2net / NPort style) on 127.0.0.1: the counter's bytes go to every client."""

    def __init__(self) -> None:
        self.port = 0
        self.muted = False
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        """Listen (on the same port as before, after a reset or a cut) and forward again."""
        self.muted = False
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        try:
            with contextlib.suppress(OSError):
                await reader.read()  # until the gateway hangs up
        finally:
            self._clients.discard(writer)
            writer.close()

    def send(self, data: bytes) -> None:
        """Forward the counter's bytes."""
        if self.muted:
            return
        for w in list(self._clients):
            if not w.is_closing():
                w.write(data)

    async def cut(self) -> None:
        """Cable pulled: nothing arrives any more and nothing says so (no FIN, no RST); no new connections."""
        self.muted = True
        await self._close_listener()

    async def reset(self) -> None:
        """Power cut: stop listening and reset every open connection (RST, not FIN)."""
        await self._close_listener()
        for w in list(self._clients):
            w.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            w.transport.abort()
        self._clients.clear()

    async def _close_listener(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None


@pytest.mark.parametrize("line", ["pty", "tcp-reset", "tcp-silent"])
async def test_door_counter_line_cut_and_back(line: str, mosquitto: Mosquitto, tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge.supervisor")
    device = "door-front"
    pty = PtyPort(tmp_path / "door.tty") if line == "pty" else None
    server = DeviceServer() if line.startswith("tcp") else None
    unplug: Action
    replug: Action
    if pty is not None:
        door = LinkedDoor(pty.write, bits=16, start_in=65_530, start_out=65_528, heartbeat_s=0.3)
        url = str(pty.link)

        async def unplug() -> None:
            pty.unplug()

        async def replug() -> None:
            pty.replug()
    else:
        assert server is not None
        door = LinkedDoor(server.send, bits=16, start_in=65_530, start_out=65_528, heartbeat_s=0.3)
        url = f"socket://127.0.0.1:{await server.start()}"
        unplug = server.reset if line == "tcp-reset" else server.cut

        async def replug() -> None:
            await server.start()
    door.start()
    section = {"id": device, "type": "door_counter", "transport": "serial", "port": url, "counter_bits": 16,
               "zone": "entrance", "read_timeout_s": 1 if line == "tcp-silent" else 3}

    async def walk() -> None:
        for i in range(10_000):  # ~12 people/s; the 16-bit counters wrap during the run; bounded
            door.walk_in(1)
            if i % 3 == 0:
                door.walk_out(1)
            await asyncio.sleep(0.08)

    walking: asyncio.Task[None] | None = None
    try:
        async with running(tmp_path, mosquitto, [section], extra={"traffic": {"interval_s": 5}}) as run:
            await until(lambda: run.status(device).state == "online" and run.status(device).readings > 0,
                        WAIT, "door online")
            walking = asyncio.create_task(walk())  # counted from the baseline the gateway already has
            await until(lambda: door.entered > 5, WAIT, "people walking")
            await unplug_and_back(run, device, unplug, replug)
            n = door.entered
            await until(lambda: door.entered > n + 5, WAIT, "people after replug")
            walking.cancel()
            traffic = run.gw.processor(TrafficProcessor)
            assert traffic is not None

            def counted() -> tuple[int, int]:
                v = traffic.view()
                return v.entries_today, v.exits_today

            await until(lambda: counted() == (door.entered, door.exited), WAIT, "gateway counted every person")

            def reported() -> tuple[int, int]:
                ivs = run.of_type("retail.traffic.interval.v1")
                return sum(e["data"]["entries"] for e in ivs), sum(e["data"]["exits"] for e in ivs)

            await until(lambda: reported() == (door.entered, door.exited), 2 * WAIT, "intervals report everyone")
    finally:
        if walking is not None:
            walking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await walking
        await door.stop()
        if pty is not None:
            pty.unplug()
        if server is not None:
            await server.reset()
    verify(run, device, ["online", "offline", "online"], caplog)
    assert door.entered > door.modulo - 65_530, "the counters did not wrap: a weaker test than intended"
    hub = [e for e in run.events if e["type"] == "retail.traffic.interval.v1"]
    assert sum(e["data"]["entries"] for e in hub) == door.entered  # people who came in during the cut too
    assert sum(e["data"]["exits"] for e in hub) == door.exited


# ---- MQTT weight shelf: local broker killed, publisher gone -----------------------------------------


SHELF, LANE, SKU = "shelf-a1", "l1", "cola-330"


def accepted_count(run: Run) -> int | None:
    """The count of the last accepted `retail.stock.changed.v1` of SHELF x SKU (the ledger, not memory)."""
    changes = [e["data"] for e in run.of_type("retail.stock.changed.v1")
               if (e["data"]["shelf"], e["data"]["sku"]) == (SHELF, SKU)]
    return int(changes[-1]["count"]) if changes else None


async def test_mqtt_shelf_local_broker_killed_and_back(mosquitto: Mosquitto, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    from firmware_sim.shelf import MqttShelfSim, lane_sections, lanes_for

    caplog.set_level(logging.INFO, logger="edge.supervisor")
    local = Mosquitto(workdir=tmp_path / "local")
    await asyncio.to_thread(local.start)
    w = world()
    lanes = lanes_for(w, SHELF)
    sim = MqttShelfSim(w, local.url, lanes, hz=10)
    sim.start()
    device = "shelf-a1-net"
    section = {"id": device, "type": "shelf_mqtt", "broker_url": local.url,
               "lanes": lane_sections(lanes, by="key")}

    async def unplug() -> None:
        local.kill()
        w.pick(SHELF, LANE, 2)  # shoppers do not wait for the broker

    async def replug() -> None:
        await asyncio.to_thread(local.start)

    try:
        async with running(tmp_path, mosquitto, [section], local.url) as run:
            counted = functools.partial(accepted_count, run)
            await until(lambda: counted() == w.count(SHELF, SKU), WAIT, "first count")
            w.pick(SHELF, LANE, 1)
            await until(lambda: counted() == w.count(SHELF, SKU), WAIT, "pick before the outage")
            await unplug_and_back(run, device, unplug, replug)
            await until(lambda: counted() == w.count(SHELF, SKU), WAIT, "pick during the outage counted")
            w.pick(SHELF, LANE, 1)
            await until(lambda: counted() == w.count(SHELF, SKU), WAIT, "pick after the replug")
    finally:
        await sim.stop()
        local.stop()
    verify(run, device, ["online", "offline", "online"], caplog)
    changes = [e["data"] for e in run.events if e["type"] == "retail.stock.changed.v1" and e["data"]["sku"] == SKU]
    assert [c["delta"] for c in changes[1:]] == [-1, -2, -1], changes
    assert changes[-1]["count"] == w.count(SHELF, SKU)
    assert [c["version"] for c in changes] == list(range(1, len(changes) + 1))


async def test_mqtt_shelf_publisher_gone_and_back(mosquitto: Mosquitto, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    from firmware_sim.shelf import MqttShelfSim, lane_sections, lanes_for

    caplog.set_level(logging.INFO, logger="edge.supervisor")
    local = Mosquitto(workdir=tmp_path / "local")
    await asyncio.to_thread(local.start)
    w = world()
    lanes = lanes_for(w, SHELF)
    sim = MqttShelfSim(w, local.url, lanes, hz=10)
    sim.start()
    device = "shelf-a1-net"
    section = {"id": device, "type": "shelf_mqtt", "broker_url": local.url,
               "lanes": lane_sections(lanes, by="key"), "counting": {"timeout_s": 1.0}}
    try:
        async with running(tmp_path, mosquitto, [section], local.url) as run:
            counted = functools.partial(accepted_count, run)
            await until(lambda: counted() == w.count(SHELF, SKU), WAIT, "first count")
            await sim.stop()  # the shelf's publisher disconnects; the broker and the driver stay up
            await until(lambda: len(run.of_type("retail.shelf.fault.v1")) >= len(lanes), WAIT, "timeout faults")
            w.pick(SHELF, LANE, 2)
            sim.start()
            await until(lambda: len(run.of_type("retail.shelf.fault_cleared.v1")) >= len(lanes), WAIT,
                        "faults cleared")
            await until(lambda: counted() == w.count(SHELF, SKU), WAIT, "pick while silent counted")
    finally:
        await sim.stop()
        local.stop()
    verify(run, device, ["online"], caplog)  # the driver never lost its broker: no offline
    faults = [e["data"] for e in run.events if e["type"] == "retail.shelf.fault.v1"]
    assert faults and all(f["code"] == "timeout" for f in faults), faults
    cleared = Counter(e["data"]["lane"] for e in run.events if e["type"] == "retail.shelf.fault_cleared.v1")
    assert cleared == Counter(f["lane"] for f in faults)
