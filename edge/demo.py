"""`edge-gateway demo`: the whole gateway against the simulated store, with embedded defaults.

Starts a private mosquitto (as hub and store-local broker) when the binary is present, every device
family's simulator through its real wire protocol (LLRP over TCP, Zebra JSON over MQTT, serial shelf and
scanner on pseudo-terminals, Modbus-RTU, BLE through BlueZ on a private D-Bus, a door counter), then the
gateway with the built-in manifest, the API and a live one-line status. A simulator that cannot start
here (no dbus-daemon, say) is reported and left out; the rest of the store runs.

The first minute is scripted (`FirstMinute`) so a new user sees every part at work: a lane starts one unit
above its minimum and a shopper takes two early (a low-stock alert after the rule's debounce, posted to a
local fake WeCom and Slack robot whose messages the demo prints), staff top up another lane and then the low
one with the restock scanner, a shopper's app reports the store beacon it sees and gets an offer, a beacon's
battery drops below its threshold, and the door counter counts visitors. Demo-only configuration (not the
built-in manifest, which tests share): the store is open around the clock (opening_time = closing_time) so
alerts fire whatever the hour, and traffic is aggregated every 15 s instead of 60 s. The status line counts
alerts, staff chat messages, offers, scans, beacon events and visitors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import yaml

from edge.brokers import Mosquitto
from edge.clock import SystemClock
from edge.config import Manifest, parse_manifest
from edge.gateway import Gateway
from firmware_sim.hub import HubCommander
from firmware_sim.im_receivers import ImReceivers, summary
from firmware_sim.neighbour import NeighbourStore
from firmware_sim.world import World, demo_manifest_text

log = logging.getLogger("edge.demo")


class SimPart(Protocol):
    """A family's simulated devices (see docs/dev/BRIEF-helpers.md)."""

    name: str

    async def start(self, world: World, workdir: Path, local_broker_url: str | None) -> list[dict[str, Any]]:
        """Start the simulated devices; return manifest device sections pointing at them."""
        ...

    async def stop(self) -> None:
        """Stop them."""
        ...


def sim_parts() -> list[SimPart]:
    """Every family's simulator, in start order (BLE last: it sets the D-Bus address for bleak)."""
    from firmware_sim.ble import BleSimPart
    from firmware_sim.door import DoorSimPart
    from firmware_sim.rfid.simpart import RfidSimPart
    from firmware_sim.scanner import ScannerSimPart
    from firmware_sim.shelf import ShelfSimPart

    return [ShelfSimPart(), ScannerSimPart(), RfidSimPart(), DoorSimPart(),
            BleSimPart(low_battery_in_s=FirstMinute.beacon_low_after_s)]


async def run_demo(
    *,
    mqtt: str | None,
    api: str,
    duration: float | None,
    data_dir: Path,
    live_status: bool = True,
) -> int:
    """Run the simulated store; exit 0 after `duration` seconds or on SIGINT/SIGTERM, shut down cleanly."""
    clock = SystemClock()
    # the demo's API token holds every role (only here: `run` takes tokens from the manifest alone)
    token = os.environ.get("EDGE_API_TOKEN")
    if token is not None and len(token) < 16:
        print("demo: EDGE_API_TOKEN is shorter than 16 characters: give a longer one, or none to get one made up",
              file=sys.stderr)
        return 2
    if not token:
        token = secrets.token_urlsafe(24)
        print(f"demo: API token (every role): {token}", file=sys.stderr)
    cmd_key = secrets.token_urlsafe(32)  # the hub's key for state-changing cmd/ requests (docs/commands.md)
    data_dir = Path.cwd() / data_dir if not data_dir.is_absolute() else data_dir
    workdir = data_dir / "sim"
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)

    broker: Mosquitto | None = None
    hub_url = mqtt
    if hub_url is None:
        if Mosquitto.available():
            broker = Mosquitto(workdir=workdir / "broker")
            broker.start()
            hub_url = broker.url
            print(f"demo: private mosquitto on {hub_url} (hub and store-local broker)", file=sys.stderr)
        else:
            hub_url = "mqtt://127.0.0.1:1"
            print("demo: mosquitto is not installed: no hub; events are buffered in the outbox "
                  f"({data_dir / 'edge.db'}) until one is given with --mqtt", file=sys.stderr)
    local_url = hub_url if (mqtt is not None or broker is not None) else None

    raw: dict[str, Any] = yaml.safe_load(demo_manifest_text())
    base = parse_manifest(demo_manifest_text(), "demo_manifest.yaml")
    world = World(base, clock)
    first = FirstMinute(world, say=lambda text: _say(text, live_status))
    first.prepare()
    rx = ImReceivers(on_message=lambda kind, body: first.say(f"staff chat {summary(kind, body)}"))
    await asyncio.to_thread(rx.start_sync)
    print(f"demo: fake staff chats (WeCom, Slack robots) on http://127.0.0.1:{rx.port}/", file=sys.stderr)
    parts = sim_parts()
    started: list[SimPart] = []
    devices: list[dict[str, Any]] = []
    for part in parts:
        try:
            (workdir / part.name).mkdir(parents=True, exist_ok=True)
            devices += await part.start(world, workdir / part.name, local_url)
            started.append(part)
        except Exception as exc:  # a simulator that cannot run here leaves the rest of the store running
            print(f"demo: simulated {part.name} unavailable here: {exc}", file=sys.stderr)
    for part in started:
        beacons = getattr(part, "beacons_manifest", None)
        if beacons is not None:
            raw["beacons"] = beacons()
    raw["devices"] = devices
    raw["storage"] = {**raw.get("storage", {}), "data_dir": str(data_dir)}
    raw["api"] = {**raw.get("api", {}), "listen": api,
                  "tokens": [{"token": token, "roles": ["staff", "hq", "shopper-app", "admin"], "name": "demo"}]}
    raw["hub"] = {**raw.get("hub", {}), "commands": {"keys": [{"id": "demo", "secret": cmd_key}]}}
    # demo-only: open around the clock (alerts fire whatever the hour), traffic every 15 s
    raw["store"] = {**raw.get("store", {}), "opening_time": "00:00", "closing_time": "00:00"}
    raw["traffic"] = {**raw.get("traffic", {}), "interval_s": 15}
    api_port = api.rpartition(":")[2]
    raw["notifications"] = {"lang": "zh-CN", "channels": rx.channels(kinds=("wecom", "slack")),
                            **({"dashboard_url": f"http://{_loopback(api)}:{api_port}/"}
                               if api_port.isdigit() and int(api_port) else {})}
    if local_url:
        raw["local_broker"] = {"url": local_url}
    manifest = parse_manifest(yaml.safe_dump(raw, sort_keys=False), "demo (built-in)")

    # a second simulated store on the hub, listed under nearby: (its stock answers /api/v1/nearby/{sku})
    neighbour = NeighbourStore(base) if mqtt is not None or broker is not None else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        if neighbour is not None:
            await neighbour.start(hub_url)
            print(f"demo: a second simulated store {neighbour.store_id!r} publishes its stock to the hub: see "
                  "'Nearby stores' on the dashboard, GET /api/v1/nearby/cola-330", file=sys.stderr)
        async with Gateway(manifest, clock=clock, hub_url=hub_url, api_listen=api) as gw:
            port = getattr(gw.api, "port", None)
            if port is not None:
                host = api.rpartition(":")[0]
                print(f"demo: dashboard http://{host}:{port}/  API http://{host}:{port}/api/v1/stock", file=sys.stderr)
            print(f"demo: {len(devices)} simulated devices; store id 'demo'; data in {data_dir}", file=sys.stderr)
            print(f"demo: hub command key id 'demo', secret {cmd_key} (sign cmd/ requests as docs/commands.md "
                  "says, e.g. firmware_sim.hub.HubCommander)", file=sys.stderr)
            api_url = f"http://{_loopback(api)}:{port}" if port is not None else None
            tasks = [asyncio.create_task(_store_life(world, clock)),
                     *([asyncio.create_task(_online_orders(gw, world, hub_url or "", cmd_key, first.say))]
                       if neighbour is not None else []),
                     asyncio.create_task(first.run(gw, api_url, token, _offer_beacon(raw))),
                     asyncio.create_task(_status_line(gw, rx, live_status))]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), duration)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if live_status:
                print(file=sys.stderr)
            print(f"demo: shutting down ({_status(gw, rx, 0.0)})", file=sys.stderr)
    finally:
        if neighbour is not None:
            await neighbour.stop()
        for part in reversed(started):
            with contextlib.suppress(Exception):
                await part.stop()
        await asyncio.to_thread(rx.stop_sync)
        if broker is not None:
            broker.stop()
    return 0


def _say(text: str, live: bool) -> None:
    """One demo line on stderr (over the live status line, which the next second redraws)."""
    print(f"\r\033[Kdemo: {text}" if live else f"demo: {text}", file=sys.stderr, flush=True)


def _loopback(api: str) -> str:
    """The host to reach the API at: its listen host, loopback for a wildcard listen."""
    host = api.rpartition(":")[0].strip("[]")
    wildcard = host in ("", "0.0.0.0", "::")  # noqa: S104 - recognising a wildcard listen, not binding one
    return "127.0.0.1" if wildcard else (f"[{host}]" if ":" in host else host)


def _offer_beacon(raw: dict[str, Any]) -> dict[str, Any] | None:
    """The iBeacon/Eddystone-UID identity of a store beacon in a zone that has an offer (what the app sees)."""
    offers = raw.get("offers") or {}
    zones = [o.get("zone") for o in offers.get("offers", [])]
    for b in [*(raw.get("beacons") or []), *offers.get("beacons", [])]:
        if b.get("zone") in zones and not b.get("staff_badge"):
            if b.get("uuid"):
                return {"uuid": b["uuid"], "major": b["major"], "minor": b["minor"]}
            if b.get("namespace"):
                return {"namespace": b["namespace"], "instance": b["instance"]}
    return None


class FirstMinute:
    """The demo's scripted first minute: every part of the store shows up in it (see the module docstring)."""

    low_lane = ("shelf-a1", "l2")  # water-500: starts at min + 1; a shopper takes 2 early
    topup_lane = ("shelf-b1", "l2")  # choc-100: staff top it up with the scanner early on
    take_at_s = 2.0
    topup_at_s = 6.0
    sightings_from_s = 4.0
    sighting_every_s = 2.0
    sightings_until_s = 50.0
    restock_after_alert_s = 8.0
    beacon_low_after_s = 15.0  # the decaying Eddystone beacon falls below 2500 mV this long after the BLE sim starts

    def __init__(self, world: World, say: Callable[[str], None]) -> None:
        self.world = world
        self.out = say
        self.t0: float | None = None  # when the store opened (the gateway is up)
        self.lanes = [k for k in (self.low_lane, self.topup_lane) if k in world.lanes]
        self.low_min = 0
        self._alerted = asyncio.Event()  # the low lane's alert is open: staff go and restock it

    def say(self, text: str) -> None:
        """Print `text` stamped with the time since the store opened (any thread)."""
        if self.t0 is None:
            self.out(text)
            return
        m, sec = divmod(int(time.monotonic() - self.t0), 60)
        self.out(f"[{m}:{sec:02d}] {text}")

    def _name(self, sku: str) -> str:
        item = self.world.manifest.sku(sku)
        return (item.name if item is not None and item.name else None) or sku

    def prepare(self) -> None:
        """Before the devices start: the low lane holds min + 1 units, and random shoppers leave both lanes alone."""
        self.world.scripted.update(self.lanes)
        if self.low_lane in self.world.lanes:
            truth = self.world.lanes[self.low_lane]
            self.low_min = _min_of(self.world.manifest, truth.shelf, truth.sku)
            self.world.set_count(*self.low_lane, self.low_min + 1)

    async def run(self, gw: Gateway, api_url: str | None, token: str, beacon: dict[str, Any] | None) -> None:
        """Play the script against the running gateway (time 0 = the gateway is up)."""
        t0 = self.t0 = time.monotonic()
        jobs = [self._narrate(gw), self._low_stock(t0), self._topup(t0)]
        if api_url is not None and beacon is not None:
            jobs.append(self._shopper_app(api_url, token, beacon, t0))
        await asyncio.gather(*jobs)

    @staticmethod
    async def _at(t0: float, at_s: float) -> None:
        await asyncio.sleep(max(0.0, t0 + at_s - time.monotonic()))

    async def _narrate(self, gw: Gateway) -> None:
        """Print what the store did that a new user should notice, as the gateway emits it."""
        async for env in gw.subscribe():
            kind, d = env.get("type"), env.get("data") or {}
            if kind == "retail.alert.opened.v1":
                self.say(f"alert opened: {d.get('kind')} {d.get('message') or d.get('device') or ''}")
                if (d.get("shelf"), d.get("sku")) == (self.low_lane[0], self._low_sku()):
                    self._alerted.set()
            elif kind == "retail.alert.resolved.v1":
                self.say(f"alert resolved: {d.get('kind')} {d.get('shelf') or d.get('device') or ''} "
                         f"{d.get('sku') or ''}")
            elif kind == "retail.restock.finished.v1":
                self.say(f"restock scan session on {d.get('shelf')}: {d.get('items')} items ({d.get('reason')})")
            elif kind == "retail.beacon.battery_low.v1":
                self.say(f"beacon {d.get('beacon')} in {d.get('zone')}: battery low, {d.get('battery_mv')} mV "
                         f"(below {d.get('threshold_mv')} mV)")
            elif kind == "retail.beacon.silent.v1":
                self.say(f"beacon {d.get('beacon')} in {d.get('zone')} went silent")
            elif kind == "retail.traffic.interval.v1":
                self.say(f"foot traffic: {d.get('entries')} in, {d.get('exits')} out, {d.get('visitors')} visitors, "
                         f"{d.get('occupancy')} inside")

    def _low_sku(self) -> str | None:
        truth = self.world.lanes.get(self.low_lane)
        return truth.sku if truth is not None else None

    async def _low_stock(self, t0: float) -> None:
        if self.low_lane not in self.world.lanes:
            return
        truth = self.world.lanes[self.low_lane]
        await self._at(t0, self.take_at_s)
        self.world.pick(*self.low_lane, 2)
        self.say(f"a shopper takes 2 x {self._name(truth.sku)} from {truth.shelf}: {truth.count} left, "
                 f"min {self.low_min} (a low-stock alert follows the rule's debounce)")
        await self._alerted.wait()
        await asyncio.sleep(self.restock_after_alert_s)
        moved = self.world.restock(*self.low_lane)
        self.say(f"staff restock {truth.shelf} with {moved} x {self._name(truth.sku)}, scanning each item")

    async def _topup(self, t0: float) -> None:
        if self.topup_lane not in self.world.lanes:
            return
        truth = self.world.lanes[self.topup_lane]
        await self._at(t0, self.topup_at_s)
        moved = self.world.restock(*self.topup_lane)
        self.say(f"staff top up {truth.shelf} with {moved} x {self._name(truth.sku)}, scanning each item")

    async def _shopper_app(self, api_url: str, token: str, beacon: dict[str, Any], t0: float) -> None:
        """A consenting shopper's app reports the beacon it sees every few seconds until it gets an offer."""
        await self._at(t0, self.sightings_from_s)
        body = {"shopper": "demo-shopper-1", "consent": True, "beacon": beacon, "rssi": -61}
        self.say(f"a shopper's app sees a store beacon ({_beacon_text(beacon)}) and tells the store, every "
                 f"{self.sighting_every_s:g} s while the shopper browses")
        trouble = False
        async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {token}"},
                                     timeout=10.0) as client:
            while time.monotonic() - t0 < self.sightings_until_s:
                offers: list[Any] = []
                try:
                    r = await client.post("/api/v1/sightings", json=body)
                    if r.status_code == 200:
                        offers = list(r.json().get("offers", []))
                    elif not trouble:
                        trouble = True
                        self.say(f"the shopper app's sighting was refused: HTTP {r.status_code} {r.text[:200]}")
                except (httpx.HTTPError, ValueError) as exc:
                    if not trouble:
                        trouble = True
                        self.say(f"the shopper app cannot reach the store's API: {exc}")
                if offers:
                    self.say("the shopper's app shows the offer: " + "; ".join(str(o.get("title")) for o in offers))
                    return
                await asyncio.sleep(self.sighting_every_s)


def _beacon_text(b: dict[str, Any]) -> str:
    return (f"iBeacon {b['uuid']} {b['major']}/{b['minor']}" if "uuid" in b
            else f"Eddystone {b['namespace']}/{b['instance']}")


def _min_of(manifest: Manifest, shelf: str, sku: str) -> int:
    """The restock minimum the manifest's inline rules give the cell, resolved by the rules engine itself."""
    from rules.config import RulesConfig
    from rules.restock import compile_rules
    from rules.service import inline_body

    cfg: RulesConfig = getattr(manifest, "rules", None) or RulesConfig()
    rule = compile_rules(manifest, inline_body(cfg)).cells.get((shelf, sku))
    return rule.min if rule is not None else 0


ORDER_EVERY_S = 60.0  # the simulated hub places an online order this often (the first 8 s after the start)


async def _online_orders(gw: Gateway, world: World, hub_url: str, cmd_key: str, say: Callable[[str], None]) -> None:
    """The hub places a signed online order (cmd/order.reserve, pickup) every `ORDER_EVERY_S`; staff see the
    pick task on the dashboard and take the units off its lane a few seconds later (the shelf's sensor confirms
    the pick), the order becomes ready, and the customer collects it (cmd/order.collect)."""
    port = urlsplit(hub_url).port or 1883
    hub = await asyncio.to_thread(HubCommander, port, gw.topic_root, kid="demo", secret=cmd_key)
    try:
        await asyncio.sleep(8.0)
        n = 0
        while True:
            n += 1
            order_id = f"web-{n:04d}"
            due = (gw.clock.now() + timedelta(hours=2)).isoformat()
            reply = await asyncio.to_thread(hub.call, "order.reserve", {
                "order_id": order_id, "mode": "pickup", "due": due, "lines": [{"sku": "cola-330", "qty": 2}]})
            if reply.get("ok"):
                tasks = reply["result"].get("tasks") or []
                say(f"online order {order_id}: 2 x cola-330 reserved ({reply['result']['state']}), "
                    f"{len(tasks)} pick task(s) on the dashboard")
                await asyncio.sleep(5.0)
                for task in tasks:
                    world.pick(task["shelf"], task["lane"], int(task["qty"]))  # staff take them off the lane
                    say(f"staff pick {task['qty']} x {task['sku']} from {task['shelf']} for order {order_id}")
                for _ in range(60):
                    await asyncio.sleep(0.5)
                    if gw.orders.get(order_id)["state"] == "ready":
                        say(f"order {order_id} ready for collection")
                        await asyncio.sleep(5.0)
                        done = await asyncio.to_thread(hub.call, "order.collect", {"order_id": order_id})
                        say(f"order {order_id} collected by the customer" if done.get("ok")
                            else f"order {order_id} not collected: {done.get('error')}")
                        break
            else:
                say(f"online order {order_id} refused: {reply.get('error')}")
            await asyncio.sleep(max(0.0, ORDER_EVERY_S - 5.0))
    finally:
        await asyncio.to_thread(hub.close)


async def _store_life(world: World, clock: SystemClock) -> None:
    """Shoppers and staff: one simulated second of store life per real second."""
    while True:
        world.step()
        await clock.sleep(1.0)


_COUNTED = {
    "orders": ("retail.order.reserved.v1", "retail.order.short.v1"),
    "ready": ("retail.order.ready.v1",),
    "collected": ("retail.order.collected.v1",),
    "alerts": ("retail.alert.opened.v1",),
    "offers": ("retail.offer.triggered.v1",),
    "scans": ("retail.restock.finished.v1", "retail.scan.received.v1", "retail.scan.count.finished.v1"),
    "beacon": ("retail.beacon.battery_low.v1", "retail.beacon.silent.v1", "retail.beacon.recovered.v1"),
}
"""What the status line counts: event types per column (restock sessions and receiving/count scans)."""


def _counts(gw: Gateway, rx: ImReceivers) -> dict[str, int]:
    """Alerts opened, staff chat messages delivered, offers, scans, beacon events and visitors so far."""
    from drivers.traffic.processor import TrafficProcessor

    out = {k: int(sum(gw.metrics.value("edge_events_total", type=t) for t in types)) for k, types in _COUNTED.items()}
    out["chat"] = sum(len(rx.received[k]) for k in ("wecom", "slack"))
    traffic = gw.processor(TrafficProcessor)
    out["visitors"] = traffic.view(gw.clock.now()).visitors_today if traffic is not None else 0
    return out


def _status(gw: Gateway, rx: ImReceivers, rate: float) -> str:
    online = sum(1 for d in gw.devices() if d.state == "online")
    alerts = gw.metrics.value("edge_alerts_open")
    rules = gw.rules
    if rules is not None and hasattr(rules, "open_alerts"):
        alerts = float(rules.open_alerts())
    hub = "up" if gw.uplink.connected.is_set() else "down"
    c = _counts(gw, rx)
    nearby = gw.nearby.overview()["stores"]
    return (f"{rate:7.1f} events/s | alerts {c['alerts']} (open {int(alerts)}) | staff chat {c['chat']} | "
            f"offers {c['offers']} | orders {c['orders']} (ready {c['ready']}, collected {c['collected']}) | "
            f"scans {c['scans']} | "
            f"beacon events {c['beacon']} | visitors {c['visitors']} | "
            f"nearby {sum(1 for s in nearby if s['state'] == 'fresh')}/{len(nearby)} | "
            f"outbox {gw.outbox.depth} | devices online {online}/{len(gw.devices())} | hub {hub}")


async def _status_line(gw: Gateway, rx: ImReceivers, live: bool) -> None:
    last_total, last_t = gw.metrics.total("edge_events_total"), time.monotonic()
    while True:
        await asyncio.sleep(1.0 if live else 10.0)
        total, now = gw.metrics.total("edge_events_total"), time.monotonic()
        line = _status(gw, rx, (total - last_total) / max(1e-6, now - last_t))
        last_total, last_t = total, now
        if live:
            print(f"\r{line}", end="", file=sys.stderr, flush=True)
        else:
            print(f"demo: {line}", file=sys.stderr, flush=True)
