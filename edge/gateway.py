"""The running gateway: wires database, outbox, uplink, pipeline, supervisor, rules and API together.

Start order is sinks first (database, outbox committer, uplink), then processors and rules, then the API,
then the devices; stop is the reverse, so nothing read from a device is left without a place to go, and
everything in flight is committed before the database closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import orjson

from drivers.registry import FAMILIES, PROCESSORS, load
from edge.atp import AtpTracker
from edge.backroom import BackroomService
from edge.clock import Clock, SystemClock
from edge.commands import CommandRouter
from edge.config import Manifest, machine_problems
from edge.db import Database, SpaceReserve, describe, is_disk_full, is_transient
from edge.driver import Driver, DriverContext
from edge.envelope import dumps
from edge.events import DeviceStatusChanged, Event
from edge.health import CoreTasks, Health, Thresholds
from edge.metrics import Labels, Metrics
from edge.nearby import NearbyView
from edge.orders import OrderService
from edge.outbox import Outbox, OutRow
from edge.pipeline import Pipeline
from edge.processing import Processor, Reactor
from edge.rollout import Rollout
from edge.runtime import CommandHandler, DeviceStatus, StateWrite, TrafficSource, Upsert
from edge.state import TRUST_KEY, StockState
from edge.storeinfo import CATALOG, INFO, RetainedDocs, catalog_doc, info_doc
from edge.supervisor import Backoff, Supervisor
from edge.uplink import Uplink

log = logging.getLogger(__name__)
SWITCH_INTERVAL_S = 0.001  # see Gateway.start
P = TypeVar("P")


class Gateway:
    """One store's gateway; `async with Gateway(manifest) as gw:` runs it."""

    def __init__(
        self,
        manifest: Manifest,
        *,
        clock: Clock | None = None,
        hub_url: str | None = None,
        data_dir: Path | None = None,
        api_listen: str | None = None,
        local_broker_url: str | None = None,
        backoff: Backoff | None = None,
        extra_drivers: Sequence[tuple[Driver, str]] = (),
        tick_interval: float = 1.0,
        install_rules: bool = True,
    ) -> None:
        self.manifest = manifest
        self.clock: Clock = clock or SystemClock()
        self.data_dir = Path(data_dir or manifest.storage.data_dir)
        self.hub_url = hub_url or ", ".join(manifest.hub.endpoints)  # hub.urls: the uplink fails over among them
        self.api_listen = api_listen or manifest.api.listen
        self.local_broker_url = local_broker_url or (manifest.local_broker.url if manifest.local_broker else None)
        self.metrics = Metrics()
        self.topic_root = f"{manifest.hub.topic_prefix}/{manifest.store.id}"
        self.db = Database(self.data_dir / "edge.db")
        self.reserve = SpaceReserve(self.data_dir / "edge.reserve", int(manifest.storage.reserve_mb * 1024 * 1024))
        self.stock = StockState(manifest)
        self.atp = AtpTracker(manifest, self.stock)  # available-to-promise, follows the cells (edge/atp.py)
        self.stock.add_deriver(self.atp.derive)
        self.store_docs = RetainedDocs()  # retained state/info and state/catalog (edge/storeinfo.py)
        self.outbox = Outbox(
            self.db,
            store_id=manifest.store.id,
            topic_root=self.topic_root,
            clock=self.clock,
            metrics=self.metrics,
            telemetry_budget_bytes=int(manifest.storage.budgets.telemetry_mb * 1024 * 1024),
            commit_interval=manifest.storage.commit_interval_ms / 1000,
            journal_retention_s=manifest.storage.journal_retention_days * 86400,
            reserve=self.reserve,
        )
        self.commands = CommandRouter(self.metrics, topic_root=self.topic_root, config=manifest.hub.commands,
                                      clock=self.clock)
        self.uplink = Uplink(
            manifest.hub, self.outbox, store_id=manifest.store.id, topic_root=self.topic_root, clock=self.clock,
            metrics=self.metrics, commands=self.commands, url=hub_url,
        )
        # neighbouring stores' retained ATP, read-only through the hub session (edge/nearby.py)
        self.nearby = NearbyView(manifest.nearby, prefix=manifest.hub.topic_prefix, clock=self.clock,
                                 metrics=self.metrics)
        self.uplink.follower = self.nearby
        self.commands.register("nearby.get", self.nearby.cmd_get, read_only=True)
        self.pipeline = Pipeline(stock=self.stock, outbox=self.outbox, clock=self.clock, metrics=self.metrics,
                                 tick_interval=tick_interval)
        drivers = list(extra_drivers) + self.build_drivers(manifest, [d for d in manifest.devices if d.enabled])
        for proc in self.build_processors(manifest):
            self.pipeline.add_processor(proc)
        self.supervisor = Supervisor(drivers, sink=self.pipeline.queue.put,
                                     try_put=self.pipeline.queue.try_put, on_status=self._device_changed,
                                     clock=self.clock, metrics=self.metrics, backoff=backoff)
        self.install_rules = install_rules
        self.rules: Any = None
        self.sinks: Any = None  # optional outputs (sinks.install): EPCIS capture
        self.api: Any = None
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self.core = CoreTasks(self.metrics)
        h = manifest.health
        self.health = Health(self.core, self.outbox, self, reserve=self.reserve,
                             thresholds=Thresholds(h.commit_lag_max_s, h.uplink_lag_max_s, h.stall_s))
        self.watchdog: Callable[[], object] | None = None  # set by `edge-gateway run` under systemd
        self.health_interval = 1.0  # seconds between health samples (and watchdog notifications)
        self._started = False
        self._pending: set[asyncio.Future[None]] = set()
        self._switch_interval = sys.getswitchinterval()
        self.outbox.listeners.append(self._fan_out)
        self.commands.register("stock.get", self._cmd_stock_get, read_only=True)
        self.commands.register("atp.get", self._cmd_atp_get, read_only=True)
        self.orders = OrderService(self)  # reservations and pick tasks (edge/orders.py): its reactor before the rules'
        self.backroom = BackroomService(self)  # back-room counts and ledgers toward ATP (edge/backroom.py)
        from edge.cli import rules_fit  # what check-config checks (the rules are the composition root's)

        self.rollout = Rollout(self, checks=[rules_fit, machine_problems])  # manifest.apply / manifest.get
        self._register_metrics()

    # ---- lifecycle ----
    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Open storage, start the uplink, processors, rules, API and finally the devices."""
        # Three threads share the GIL: the event loop, the SQLite writer and paho's network thread. The
        # writer and paho release the GIL around every blocking call and need it back right after; with
        # CPython's default 5 ms switch interval each such handoff can wait 5 ms behind a busy loop (a
        # 1,000-row commit then took ~100 ms instead of ~12). 1 ms keeps them moving at little cost.
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(self._switch_interval, SWITCH_INTERVAL_S))
        try:
            await self.db.open()
        except (sqlite3.Error, OSError) as exc:
            # started on a full disk (the reserve from the last run is still there): use its space
            # (opening WAL mode on a full tmpfs says SQLITE_IOERR, not SQLITE_FULL: ask the file system)
            full = is_disk_full(exc) or (is_transient(exc) and self.reserve.free_bytes() < 64 * 1024)
            if not full or not self.reserve.release():
                raise
            log.error("disk full at start (%s): released the space reserve; telemetry is shed until space "  # noqa: TRY400 (the error is the news; no traceback)
                      "returns", describe(exc))
            self.outbox.shedding = True
            await self.db.open()
        await self.outbox.open()
        if not self.outbox.shedding and not await asyncio.to_thread(self.reserve.restore):
            log.warning("disk space reserve (%d bytes) not allocated: free space is low", self.reserve.size)
        await self.rollout.open()  # the manifest version this process runs, staged ones left by a power cut
        self.stock.load(await self.db.query("SELECT * FROM stock"))
        self.stock.load_trust(await self.db.query("SELECT key, value FROM kv WHERE key >= ? AND key < ?",
                                                  (TRUST_KEY, TRUST_KEY[:-1] + "/")))  # fmt: skip
        await self.orders.load()  # reservations count in the first ATP published
        await self.backroom.load()  # and so do the back room's counts and ledgers
        await self._publish_store_state()
        await self.restore_processors(self.pipeline.processors)
        self._started = True
        # Supervision policy per task (docs/operations.md). `exit`: the committer holds the accepted-to-be
        # events and their futures (a bug there must not be retried in a loop: a fresh process starts from
        # the database). `restart`: the others keep their state outside the task (outbox, queue, database,
        # reactors), so a new run of the same loop continues where the failed one stopped.
        core = self.core
        core.spawn("outbox-committer", self.outbox.run, policy="exit")
        core.spawn("checkpoints", self.db.run_checkpoints, policy="restart")
        core.spawn("uplink", self.uplink.run, policy="restart")
        core.spawn("pipeline", self.pipeline.run, policy="restart")
        core.spawn("ticks", self.pipeline.run_ticks, policy="restart")
        core.spawn("deadlines", self.pipeline.run_deadlines, policy="restart")
        core.spawn("health", lambda: self.health.run(lambda: self.watchdog and self.watchdog(),
                                                     self.health_interval), policy="restart")
        if self.install_rules:
            import rules  # the rules package wires itself into the gateway through GatewayView

            install = getattr(rules, "install", None)
            if install is not None:
                self.rules = install(self)
        import sinks  # optional outputs (EPCIS capture); queued with the events, so installed before the devices

        install_sinks = getattr(sinks, "install", None)
        if install_sinks is not None:
            self.sinks = await install_sinks(self)
        if self.manifest.api.enabled:
            try:
                from edge.api.server import start_api
            except ImportError:
                log.warning("local API not available in this build")
            else:
                self.api = await start_api(self, self.api_listen, list(self.manifest.api.tokens))
                api_task = getattr(self.api, "_task", None)
                if isinstance(api_task, asyncio.Task):
                    core.watch("api", api_task)
        for task in getattr(self.rules, "_tasks", None) or ():
            if isinstance(task, asyncio.Task):  # the rules' own tasks: restore runs once, the others for good
                core.watch(task.get_name(), task, may_end=task.get_name() == "rules-restore")
        self.supervisor.start()
        log.info("gateway for store %s started: %d device(s), hub %s", self.manifest.store.id,
                 len(self.supervisor.drivers), self.hub_url)

    async def stop(self) -> None:
        """Devices first, then API, then drain the pipeline, commit everything, close storage."""
        if not self._started:
            return  # not started, or already stopped
        self._started = False
        self.core.stopping = True
        await self.supervisor.stop()
        if self.api is not None:
            await self.api.stop()
        if self.rules is not None and hasattr(self.rules, "stop"):
            await self.rules.stop()
        if self.sinks is not None:
            await self.sinks.stop()
        # let the pipeline drain what the devices already delivered
        for _ in range(200):
            if self.pipeline.queue.empty():
                break
            await asyncio.sleep(0.01)
        await self.core.cancel("health", "uplink", "pipeline", "ticks", "deadlines", "checkpoints")
        await self.outbox.close()
        committer = self.core.task("outbox-committer")
        if committer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(committer), 10)
            await self.core.cancel("outbox-committer")
        await self.db.close()
        sys.setswitchinterval(self._switch_interval)
        log.info("gateway stopped")

    # ---- GatewayView ----
    def emit(self, events: Sequence[Event], writes: Sequence[StateWrite] = ()) -> None:
        """Route events and writes (through reactors) to the outbox."""
        self.pipeline.route([*events, *writes], self.clock.now())

    async def emit_committed(self, events: Sequence[Event], writes: Sequence[StateWrite] = ()) -> None:
        """Emit and wait until committed."""
        self.emit(events, writes)
        await self.outbox.flush()

    def devices(self) -> list[DeviceStatus]:
        """Status of every device (and of the sinks: an EPCIS repository that refuses events is a fault)."""
        return self.supervisor.statuses() + (self.sinks.statuses() if self.sinks is not None else [])

    def add_reactor(self, reactor: Reactor) -> None:
        """Feed every event to `reactor`."""
        self.pipeline.add_reactor(reactor)

    def processor(self, kind: type[P]) -> P | None:
        """The running processor of class `kind`, if the manifest uses its family."""
        return next((p for p in self.pipeline.processors if isinstance(p, kind)), None)

    def traffic(self) -> TrafficSource | None:
        """The running processor that keeps foot traffic (by its shape: edge.runtime.TrafficSource)."""
        return next((p for p in self.pipeline.processors if isinstance(p, TrafficSource)), None)

    def register_command(self, name: str, handler: CommandHandler, *, read_only: bool = False) -> None:
        """Serve `cmd/{name}`; unless `read_only` it changes state and needs the hub's signature."""
        self.commands.register(name, handler, read_only=read_only)

    async def subscribe(self) -> AsyncIterator[dict[str, Any]]:
        """Every accepted event from now on; a consumer that falls 1,000 behind loses the oldest."""
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(1000)
        self._subscribers.add(q)
        try:
            while True:
                yield await q.get()
        finally:
            self._subscribers.discard(q)

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Read-only SQL."""
        return await self.db.query(sql, params)

    def metrics_text(self) -> str:
        """Prometheus exposition."""
        return self.metrics.render()

    # ---- what the health monitor reads (edge.health._Counts) ----
    def pipeline_waiting(self) -> int:
        """Readings queued for the pipeline."""
        return self.pipeline.queue.qsize()

    def pipeline_taken(self) -> int:
        """Readings the pipeline has taken so far."""
        return self.pipeline.taken

    def hub_connected(self) -> bool:
        """The uplink has a hub session."""
        return self.uplink.connected.is_set()

    # ---- building (also for a manifest rollout, edge/rollout.py) ----
    def build_drivers(self, manifest: Manifest, devices: Sequence[Any]) -> list[tuple[Driver, str]]:
        """A driver per device section in `devices` (of `manifest`), with its family name."""
        ctx = DriverContext(manifest=manifest, clock=self.clock, data_dir=self.data_dir,
                            local_broker_url=self.local_broker_url)
        return [(load(FAMILIES[dev.type].driver)(dev, ctx), dev.type) for dev in devices]

    def build_processors(self, manifest: Manifest) -> list[Processor]:
        """The processors of the families `manifest`'s enabled devices belong to."""
        keys = {FAMILIES[d.type].processor_key for d in manifest.devices if d.enabled}
        return [load(PROCESSORS[key])(manifest, self.clock) for key in sorted(k for k in keys if k)]

    async def restore_processors(self, procs: Sequence[Processor]) -> None:
        """Processors that keep state rows get them back (shelf tares)."""
        for proc in procs:
            table, restore = getattr(proc, "state_table", None), getattr(proc, "restore_state", None)
            if isinstance(table, str) and table.isidentifier() and restore is not None:
                restore(await self.db.query(f"SELECT * FROM {table}"))  # noqa: S608 - an identifier

    def submit_store_docs(self, events: list[Event], snaps: dict[str, tuple[dict[str, Any], int]]) -> None:
        """Submit `events`, the snapshots `snaps` and the catalog and store info when they differ from the
        last published ones."""
        now = self.clock.now()
        for suffix, content in ((CATALOG, catalog_doc(self.manifest)), (INFO, self._info())):
            doc = self.store_docs.update(suffix, content, now)
            if doc is not None:
                snaps[suffix] = doc
        if events or snaps:
            self.outbox.submit(events, [], {self.outbox.topic(k): (dumps(d), v) for k, (d, v) in snaps.items()})

    def _info(self, devices: Sequence[DeviceStatus] | None = None) -> dict[str, Any]:
        doc = info_doc(self.manifest, self.devices() if devices is None else devices)
        doc["manifest"].update(self.rollout.info())  # the applied version (edge/rollout.py)
        return doc

    # ---- internals ----
    def _fan_out(self, rows: list[OutRow]) -> None:
        if not self._subscribers:
            return
        envs = [orjson.loads(r.payload) for r in rows]  # parsed only while someone listens (SSE)
        for q in self._subscribers:
            for env in envs:
                if q.full():
                    q.get_nowait()
                    self.metrics.inc("edge_subscriber_dropped_total")
                q.put_nowait(env)

    def _device_changed(self, new: DeviceStatus, old: DeviceStatus | None) -> None:
        if new.state == "starting":
            return
        now = self.clock.now()
        ev = DeviceStatusChanged(source=new.device, time=now, subject=new.device, device=new.device,
                                 device_type=new.device_type, state=new.state, error=new.error,
                                 last_seen=new.last_seen)
        row = {"device": new.device, "type": new.device_type, "state": new.state,
               "last_seen": new.last_seen.isoformat() if new.last_seen else None, "error": new.error,
               "changed": now.isoformat()}
        self.emit([ev], [Upsert("devices", row)])
        devices = [new if d.device == new.device else d for d in self.devices()]
        doc = self.store_docs.update(INFO, self._info(devices), now)
        if doc is not None:
            self.outbox.submit([], [], {self.outbox.topic(INFO): (dumps(doc[0]), doc[1])})

    async def _publish_store_state(self) -> None:
        """At start: the last published retained documents back, then whatever differs from them (the
        catalog and store info, every SKU's ATP) submitted to be published."""
        root = self.topic_root
        rows = await self.db.query("SELECT topic, payload, version FROM retained WHERE topic >= ? AND topic < ?",
                                   (f"{root}/state/", f"{root}/state0"))  # fmt: skip
        self.atp.load(rows, root)
        self.store_docs.load(rows, root)
        self.submit_store_docs(*self.atp.refresh(self.clock.now()))

    async def _cmd_stock_get(self, req: Any) -> dict[str, Any]:
        cells = self.stock.select(shelf=req.get("shelf"), sku=req.get("sku"), zone=req.get("zone"))
        return {"store": self.manifest.store.id, "time": self.clock.now().isoformat().replace("+00:00", "Z"),
                "items": [self.stock.describe(c) for c in cells]}

    async def _cmd_atp_get(self, req: Any) -> dict[str, Any]:
        now = self.clock.now()
        if req.get("sku") is not None:
            return self.atp.get(req["sku"], now)
        return {"store": self.manifest.store.id, "time": now.isoformat().replace("+00:00", "Z"),
                "items": self.atp.items(now, category=req.get("category"))}

    def _register_metrics(self) -> None:
        m = self.metrics
        m.describe("edge_outbox_depth", "events committed and not yet acknowledged by the hub")
        m.describe("edge_outbox_dropped_total", "events dropped on purpose, by class (telemetry over budget)")
        m.gauge_fn("edge_outbox_depth", lambda: {(): float(self.outbox.depth)})
        m.gauge_fn("edge_outbox_telemetry_bytes", lambda: {(): float(self.outbox.telemetry_bytes)})
        m.gauge_fn("edge_stock_claims_ignored", lambda: {(): float(self.stock.ignored)})
        m.gauge_fn("edge_device_readings", lambda: {(("device", s.device),): float(s.readings)
                                                    for s in self.supervisor.statuses()})
        m.gauge_fn("edge_uplink_connected", lambda: {(): 1.0 if self.uplink.connected.is_set() else 0.0})
        self.health.register_metrics(m)

        def states() -> dict[Labels, float]:
            return {(("device", s.device), ("state", s.state)): 1.0 for s in self.supervisor.statuses()}

        m.gauge_fn("edge_device_up", states)
