"""Northbound MQTT uplink: publishes the outbox to the hub at QoS 1 and deletes rows only after PUBACK.

One connection (paho on its network thread, MQTT 3.1.1), a small window of publishes in flight (a deep client-side
queue stalls paho), rows sent strictly in outbox order so the order per topic holds; on any disconnect
every unacknowledged row is sent again from the outbox after a jittered backoff (duplicates only within
the window; consumers dedupe by CloudEvents id). A retained `status` message says online at connect and
the MQTT will says offline. Retained `state/stock/{shelf}` snapshots are published when their version
moves and marked once acknowledged. `cmd/+` requests are served here too.

Staff alerts go ahead of any backlog, live or read back from disk after an outage: at the start of each
session the alerts lane loads every unacknowledged row of the `alerts` topic from the outbox, and from
then on takes every newly committed one, so an alert takes the next free window slot instead of queueing
behind the events committed before it (bench.rules.bench_alert_behind_backlog measures it). The whole
`alerts` topic goes through that lane in commit order and the main stream skips what it sent, so the
order per topic still holds; the outbox watermark still only advances over an unbroken acknowledged
prefix. (More than `ALERTS_LANE_MAX` unacknowledged alerts on disk: the lane stays off for that session
and everything goes in commit order.)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import zlib
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson

from edge import __version__
from edge.clock import Clock
from edge.commands import CommandRouter
from edge.config import HubConfig
from edge.envelope import rfc3339
from edge.metrics import Metrics
from edge.mqtt_session import MqttSession, MqttSessionError, SessionOptions
from edge.outbox import Outbox, OutRow
from edge.supervisor import Backoff

log = logging.getLogger(__name__)

ALERTS_LANE_MAX = 50_000
MAX_RUNNING_COMMANDS = 32  # cmd/ requests handled at once; more get a `busy` reply (a flood must not pile up tasks)
"""At most this many unacknowledged alert rows are loaded into the alerts lane at a session's start."""


class Follower(Protocol):
    """Read-only subscriptions riding on the hub session (edge/nearby.py: neighbouring stores' state)."""

    def topics(self) -> list[str]:
        """Filters to subscribe at each session start."""

    def session(self, up: bool) -> None:
        """The session went up (after subscribing) or down."""

    def message(self, topic: str, payload: bytes) -> None:
        """A message on one of the filters (untrusted)."""


def _raise_if_cancel_was_lost() -> None:
    """A cancel requested and not withdrawn is honoured here, even if something below dropped it (Python 3.11's
    `asyncio.wait_for`, once used in `MqttSession.open`, did when the cancel came together with the
    connection: the uplink then served on and stopping the gateway waited for it for ever)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class Uplink:
    """Keeps one hub connection alive and drains the outbox through it."""

    def __init__(
        self,
        hub: HubConfig,
        outbox: Outbox,
        *,
        store_id: str,
        topic_root: str,
        clock: Clock,
        metrics: Metrics,
        commands: CommandRouter,
        url: str | None = None,
        live_cap: int = 50_000,
    ) -> None:
        self.hub = hub
        # the hub's nodes in the order this store tries them: the list rotated to start at crc32(store id) mod n,
        # so a chain's stores spread over a cluster's nodes, each store always the same way; after any failure
        # the next node in the list (docs/fleet.md)
        urls = [url] if url else hub.endpoints
        first = zlib.crc32(store_id.encode()) % len(urls)
        self.urls = urls[first:] + urls[:first]
        self.url = self.urls[0]  # the node in use (or being tried)
        self.backoff = Backoff(initial=hub.reconnect_min, maximum=hub.reconnect_max)
        self.outbox = outbox
        self.store_id = store_id
        self.root = topic_root
        self.clock = clock
        self.metrics = metrics
        self.commands = commands
        self.connected = asyncio.Event()
        self.status_extra: Callable[[], dict[str, Any]] = dict
        self.follower: Follower | None = None  # read-only subscriptions beside cmd/+ (edge/nearby.py)
        self._live: deque[OutRow] = deque()
        self._live_on = False
        self._live_cap = live_cap
        self._cursor = 0  # highest outbox seq handed to the broker in this session
        self._max_sent = 0
        # messages in flight, in send order: [last seq, rows, acknowledged]; the acknowledged prefix becomes
        # the outbox's watermark (PUBACKs may come back out of order; the watermark never skips a message)
        self._order: deque[list[int]] = deque()
        # the alerts lane: every unacknowledged row on the alerts topic (loaded from disk at the session's
        # start, then as committed), and what it has sent ahead of the main stream (seq -> its in-flight
        # entry, put into `_order` when the main stream reaches that seq)
        self._alerts_topic = f"{topic_root}/alerts"
        self._prio: deque[OutRow] = deque()
        self._prio_on = False  # a session is up and the lane holds every unsent alert row
        self._prio_loading: list[OutRow] | None = None  # committed while the disk load runs
        self._early: dict[int, list[int]] = {}
        self._wake = asyncio.Event()
        self._retained_wake = asyncio.Event()
        self._started = clock.now()
        outbox.listeners.append(self._on_committed)
        outbox.retained_listeners.append(self._retained_wake.set)
        outbox.inflight_floor = lambda: self._max_sent

    # ---- outbox notifications ----
    def _on_committed(self, rows: list[OutRow]) -> None:
        if self._live_on:
            if len(self._live) + len(rows) > self._live_cap:
                self._live_on = False
                self._live.clear()
            else:
                self._live.extend(rows)
        if self._prio_on:
            alerts = self._alerts_topic
            new = [r for r in rows if r.topic == alerts]
            if new:
                (self._prio if self._prio_loading is None else self._prio_loading).extend(new)
        self._wake.set()

    # ---- connection ----
    def _options(self, url: str) -> SessionOptions:
        parts = urlsplit(url)
        t = self.hub.tls
        tls = parts.scheme in {"mqtts", "ssl"} or t is not None
        return SessionOptions(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or (8883 if tls else 1883),
            client_id=self.hub.client_id or f"edge-{self.store_id}",
            keepalive=self.hub.keepalive,
            username=self.hub.username or parts.username,
            password=self.hub.password or parts.password,
            will_topic=f"{self.root}/status",
            will_payload=orjson.dumps({"state": "offline", "store": self.store_id}),
            tls=tls,
            ca_file=str(t.ca_file) if t and t.ca_file else None,
            cert_file=str(t.cert_file) if t and t.cert_file else None,
            key_file=str(t.key_file) if t and t.key_file else None,
            verify=t.verify if t else True,
            max_inflight=self.hub.inflight + 10,
        )

    async def run(self) -> None:
        """Connect, serve, and on any failure move to the hub's next node after a jittered backoff, until
        cancelled. Every session starts again from the outbox's watermark, whichever node it is on."""
        attempt = 0
        node = 0
        was_up: bool | None = None
        while True:
            self.url = url = self.urls[node]
            started = time.monotonic()
            acked = self.outbox.acked_through
            session = MqttSession(self._options(url))
            try:
                await session.open()
                _raise_if_cancel_was_lost()
                if was_up is not True or len(self.urls) > 1:
                    log.info("hub %s connected", url)
                was_up = True
                self.metrics.inc("edge_uplink_connects_total")
                await self._session(session)
            except asyncio.CancelledError:
                # a clean stop: say so (the will only covers a gateway that vanishes)
                if session.connected:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(
                            session.publish(f"{self.root}/status", self._status("offline"), retain=True), 2.0
                        )
                raise
            except MqttSessionError as exc:
                if was_up is not False:
                    more = f"; next {self.urls[(node + 1) % len(self.urls)]}" if len(self.urls) > 1 else ""
                    log.warning("hub %s unreachable: %s (buffering; retrying with backoff%s)", url, exc, more)
                was_up = False
            finally:
                self.connected.clear()
                if self.follower is not None:
                    self.follower.session(False)
                self._prio_on = False
                self._prio.clear()
                await session.close()
            # a session that got anything acknowledged (or lasted) proved the hub: the next try is a quick one
            if self.outbox.acked_through > acked or time.monotonic() - started >= self.backoff.stable_after:
                attempt = 0
            attempt += 1
            if len(self.urls) > 1:
                node = (node + 1) % len(self.urls)
                self.metrics.inc("edge_uplink_failovers_total")
            await asyncio.sleep(self.backoff.delay(attempt))

    async def _session(self, session: MqttSession) -> None:
        # Start each session from the oldest row still in the outbox (not yet acknowledged).
        await self.outbox.flush()
        self._live_on = False
        self._live.clear()
        self._order.clear()
        self._early.clear()
        self._cursor = self.outbox.acked_through
        await self._load_alerts()
        await session.publish(f"{self.root}/status", self._status("online"), retain=True)
        await session.subscribe(f"{self.root}/cmd/+", qos=1)
        for topic in self.follower.topics() if self.follower is not None else ():
            await session.subscribe(topic, qos=1)
        self.connected.set()
        if self.follower is not None:
            self.follower.session(True)
        self._retained_wake.set()
        tasks = [
            asyncio.create_task(self._pump(session), name="uplink-pump"),
            asyncio.create_task(self._serve_commands(session), name="uplink-commands"),
            asyncio.create_task(self._retained(session), name="uplink-retained"),
        ]
        try:
            done, _ = await asyncio.wait([session.disconnected, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for t in tasks:
                if t in done and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
            raise MqttSessionError("connection lost")
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _load_alerts(self) -> None:
        """Fill the alerts lane with every unacknowledged alert row on disk, then follow the committer."""
        self._prio.clear()
        self._prio_loading = []
        self._prio_on = True
        topic, start, limit = self._alerts_topic, self._cursor, ALERTS_LANE_MAX + 1
        try:
            rows = await self.outbox.db.read(lambda c: c.execute(
                "SELECT seq, topic, payload, class FROM outbox WHERE seq > ? AND topic = ? ORDER BY seq LIMIT ?",
                (start, topic, limit)).fetchall())
        except BaseException:
            self._prio_on = False
            raise
        finally:
            committed, self._prio_loading = self._prio_loading, None
        if len(rows) > ALERTS_LANE_MAX:
            self._prio_on = False  # too many to hold: this session sends everything in commit order
            log.warning("more than %d unsent alerts: they go in commit order this session", ALERTS_LANE_MAX)
            return
        lane = {int(r[0]): OutRow(int(r[0]), str(r[1]), bytes(r[2]), str(r[3])) for r in rows}
        for r in committed or ():
            lane.setdefault(r.seq, r)
        self._prio.extend(sorted(lane.values()))
        if self._prio:
            self._wake.set()

    def _status(self, state: str) -> bytes:
        return orjson.dumps(
            {"state": state, "store": self.store_id, "version": __version__, "since": rfc3339(self._started),
             "time": rfc3339(self.clock.now()), **self.status_extra()}
        )

    # ---- the pump ----
    async def _next_rows(self) -> list[OutRow]:
        while True:
            if self._live:
                rows: list[OutRow] = []
                while self._live and len(rows) < 500:
                    r = self._live.popleft()
                    if r.seq > self._cursor:
                        rows.append(r)
                if rows:
                    return rows
                continue
            if not self._live_on:
                rows = await self.outbox.fetch(self._cursor, 1000)
                if len(rows) < 1000:
                    # Caught up with the disk: follow the committer from here on. Rows committed while that
                    # read ran were announced before the switch and are not in `_live`: read on until the
                    # disk is exhausted or reaches the first row that is (duplicates go by seq). One read of
                    # 1,000 was not always enough: a fast committer left rows in between, never sent.
                    self._live_on = True
                    after = rows[-1].seq if rows else self._cursor
                    while True:
                        more = await self.outbox.fetch(after, 1000)
                        rows += more
                        if (len(more) < 1000 or not self._live_on
                                or (self._live and more[-1].seq >= self._live[0].seq)):
                            break
                        after = more[-1].seq
                if rows:
                    return rows
            self._wake.clear()
            if not self._live:
                await self._wake.wait()

    async def _pump(self, session: MqttSession) -> None:
        window = asyncio.Semaphore(self.hub.inflight)
        batch = self.hub.batch
        early = self._early
        while True:
            rows = await self._next_rows()
            i = 0
            while i < len(rows):
                await window.acquire()
                if self._prio and self._send_alert(session, window):
                    continue
                if early and rows[i].seq in early:
                    # sent ahead by the alerts lane: its entry takes its place in the acknowledgement order
                    window.release()
                    entry = early.pop(rows[i].seq)
                    self._cursor = rows[i].seq
                    self._max_sent = max(self._max_sent, self._cursor)
                    self._order.append(entry)
                    self._advance()
                    i += 1
                    continue
                group = [rows[i]]
                i += 1
                if batch.enabled:
                    size = len(group[0].payload)
                    while (
                        i < len(rows)
                        and rows[i].topic == group[0].topic
                        and len(group) < batch.max_events
                        and size + len(rows[i].payload) < batch.max_bytes
                        and not (early and rows[i].seq in early)
                    ):
                        size += len(rows[i].payload)
                        group.append(rows[i])
                        i += 1
                self._cursor = group[-1].seq
                self._max_sent = max(self._max_sent, self._cursor)
                payload = (b"[" + b",".join(r.payload for r in group) + b"]") if batch.enabled else group[0].payload
                entry = [self._cursor, len(group), 0]
                self._order.append(entry)
                session.publish_cb(group[0].topic, payload, functools.partial(self._done, entry=entry, window=window))

    def _send_alert(self, session: MqttSession, window: asyncio.Semaphore) -> bool:
        """Publish the oldest waiting alert ahead of the main stream, in the window slot just taken."""
        prio, cursor = self._prio, self._cursor
        while prio and prio[0].seq <= cursor:
            prio.popleft()  # the main stream got there first
        if not prio:
            return False
        row = prio.popleft()
        entry = [row.seq, 1, 0]
        self._early[row.seq] = entry
        payload = (b"[" + row.payload + b"]") if self.hub.batch.enabled else row.payload
        session.publish_cb(row.topic, payload, functools.partial(self._done, entry=entry, window=window))
        self.metrics.inc("edge_uplink_alerts_ahead_total")
        return True

    def _done(self, ok: bool, *, entry: list[int], window: asyncio.Semaphore) -> None:
        window.release()
        if not ok:
            return  # the session is ending; these rows stay in the outbox and go again
        entry[2] = 1
        self.metrics.inc("edge_uplink_published_total", float(entry[1]))
        self.metrics.inc("edge_uplink_messages_total")
        if self._order and self._order[0] is entry:
            self._advance()

    def _advance(self) -> None:
        """Move the outbox watermark over the acknowledged prefix of what was sent, in seq order."""
        order = self._order
        last, rows = 0, 0
        while order and order[0][2]:
            done = order.popleft()
            last, rows = done[0], rows + done[1]
        if rows:
            self.outbox.ack_through(last, rows)

    # ---- retained state ----
    async def _retained(self, session: MqttSession) -> None:
        while True:
            await self._retained_wake.wait()
            self._retained_wake.clear()
            for topic, payload, version in await self.outbox.retained_due():
                await session.publish(topic, payload, retain=True)
                self.outbox.ack_retained(topic, version)
            await asyncio.sleep(0.05)  # compaction: bursts of changes collapse into one publish per shelf

    # ---- commands ----
    async def _serve_commands(self, session: MqttSession) -> None:
        prefix = f"{self.root}/cmd/"
        pending: set[asyncio.Task[None]] = set()
        while True:
            message = await session.messages.get()
            if not message.topic.startswith(prefix):
                if self.follower is not None:
                    self.follower.message(message.topic, message.payload)
                continue
            name = message.topic[len(prefix):]
            if len(pending) >= MAX_RUNNING_COMMANDS:
                await self._send_reply(session, *self.commands.refuse_busy(name, message.payload, len(pending)))
                continue
            task = asyncio.create_task(self._answer(session, name, message.payload))
            pending.add(task)
            task.add_done_callback(pending.discard)

    async def _answer(self, session: MqttSession, name: str, payload: bytes) -> None:
        await self._send_reply(session, *await self.commands.handle(name, payload))

    @staticmethod
    async def _send_reply(session: MqttSession, reply_to: str | None, reply: bytes | None) -> None:
        if reply_to is not None and reply is not None:
            with contextlib.suppress(MqttSessionError):
                await session.publish(reply_to, reply)
