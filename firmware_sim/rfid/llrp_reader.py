"""A strict LLRP 1.0.1 fixed-reader emulator: asyncio TCP server on 127.0.0.1, real binary frames.

Written from the EPCglobal LLRP 1.0.1 specification (not from our driver), so a client that relies on
behaviour the spec does not promise fails against it as it would against a real reader:

- ROSpec states (LLRP 1.0.1 §6.1, figure 4: Disabled -> Inactive -> Active): ADD_ROSPEC leaves it
  Disabled, ENABLE_ROSPEC makes it Inactive, START_ROSPEC (only from Inactive) or its start trigger makes
  it Active, and it goes back to Inactive when its ROSpec stop trigger fires, when all its AISpecs are
  done, or on STOP_ROSPEC. A Disabled ROSpec ignores its triggers; DELETE_ROSPEC (id 0 = all) removes it.
- ROSpecStartTrigger (§10.2.1.1.1, triggers §6.1.1.2): Null (only START_ROSPEC starts it), Immediate
  (starts once, when enabled; it does NOT restart by itself after it is done), Periodic (first start time
  = receipt of the ADD_ROSPEC + Offset, then every Period, Period 0 = once; a start time that finds the
  ROSpec Disabled, or still Active, is skipped).
- ROSpecStopTrigger (§10.2.1.1.2): Null (done when its AISpecs are done, or STOP_ROSPEC), Duration.
- AISpecStopTrigger (§10.2.2.1): Null (runs until its ROSpec is done, §6.1.1.2), Duration, Tag observation
  (type 0 N unique tags or timeout, type 1 no new tag for T ms or timeout, type 2 N attempts or timeout).
  An AISpec inventories in rounds of `round_ms` (one `Population.cycle()` per round, the World's truth).
- ROReportSpec (§13.2.1): ROReportTrigger 0 None (reports only on GET_REPORT), 1 every N TagReportData
  or end of AISpec, 2 every N or end of ROSpec (N = 0: no limit). TagReportData accumulate per (EPC,
  antenna) and carry exactly the fields the TagReportContentSelector enables. Nothing accumulated -> no
  report (a reader sends no empty RO_ACCESS_REPORT).
- READER_EVENT_NOTIFICATION (§13.2.5, §13.2.6): ConnectionAttemptEvent on every connection (status 0, or
  2 to a second client and 4 to the one it keeps), ConnectionCloseEvent before the reader closes;
  ROSpecEvent (start/end; a run's tag data is sent between the two), AntennaEvent and ReaderExceptionEvent
  only when enabled by SET_READER_CONFIG's ReaderEventNotificationSpec (all off after a restart).
  KEEPALIVE per KeepaliveSpec.
- Options: `omit_unchanged` (the reader leaves out an enabled optional TagReportData field whose value is
  the same as the last one of that type it sent on this connection, LLRP 1.0.1 §13.2.3 (ii)), and
  `split_frames` (every frame written in two TCP segments).

Reader state (ROSpecs, event/keepalive configuration) belongs to the reader, not to a connection, as on a
real reader: it survives a client disconnect and is lost only on `restart()`. Fault injection for tests
and the store day: `go_silent`, `restart`, `disconnect_antenna`/`connect_antenna`, `reader_exception`,
`disable_rospecs`, `preempt`, `inject`, `drop_client`, `clock_offset_us`. Not modelled: ROSpec priorities
(preemption only as the `preempt` fault), AccessSpecs, GPI triggers, LLRP 1.1 LoopSpec.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Coroutine
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from drivers.rfid import llrp_codec as c
from drivers.rfid.reads import to_us
from edge.clock import Clock, SystemClock
from edge.errors import FrameError
from firmware_sim.rfid.population import Population

# LLRPStatus error codes (LLRP 1.0.1 §14.1.3)
M_PARAMETER_ERROR = 100
M_UNSUPPORTED_MESSAGE = 108
A_INVALID = 300
# EventNotificationState event types (§13.2.5.1)
EV_ROSPEC, EV_READER_EXCEPTION, EV_ANTENNA = 2, 4, 8
# Reader event parameter types inside ReaderEventNotificationData (§13.2.6)
ROSPEC_EVENT, READER_EXCEPTION_EVENT, ANTENNA_EVENT = 249, 252, 255
PERIODIC_TRIGGER_VALUE, TAG_OBSERVATION_TRIGGER = 180, 185
DISABLE_ROSPEC, DISABLE_ROSPEC_RESPONSE = 25, 35
GET_REPORT = 60


class RoState(IntEnum):
    """ROSpec states (LLRP 1.0.1 §6.1, figure 4; CurrentState of §10.2.1)."""

    DISABLED = 0
    INACTIVE = 1
    ACTIVE = 2


@dataclass(slots=True)
class AiSpec:
    """One AISpec: antennas (0 = all) and its stop trigger."""

    antennas: tuple[int, ...]
    stop: int  # 0 Null, 1 Duration, 2 GPI (unsupported), 3 Tag observation
    duration_ms: int = 0
    obs_type: int = 0
    obs_tags: int = 0
    obs_attempts: int = 0
    obs_t_ms: int = 0
    obs_timeout_ms: int = 0


@dataclass(slots=True)
class RoSpec:
    """One ROSpec as the reader holds it."""

    rospec_id: int
    start: int  # 0 Null, 1 Immediate, 2 Periodic
    stop: int  # 0 Null, 1 Duration
    aispecs: list[AiSpec]
    offset_ms: int = 0
    period_ms: int = 0
    stop_ms: int = 0
    report_trigger: int = 0
    report_n: int = 0
    selector: int = 0
    state: RoState = RoState.DISABLED
    runner: asyncio.Task[None] | None = None  # the Active run
    timer: asyncio.Task[None] | None = None  # the armed periodic start trigger


class RoSpecError(ValueError):
    """A ROSpec the reader refuses (answered with an LLRPStatus error)."""


@dataclass(slots=True)
class ReaderStats:
    """What the emulator saw and did (tests and the bench assert on it)."""

    connections: int = 0
    refused: int = 0
    keepalive_acks: int = 0
    reports: int = 0
    tags_sent: int = 0  # TagReportData parameters sent
    rospec_starts: int = 0
    rospec_ends: int = 0
    requests: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Acc:
    """One accumulated TagReportData."""

    epc: str
    antenna: int
    rssi: int
    first_us: int
    last_us: int
    count: int


class LlrpReaderSim:
    """One simulated LLRP reader."""

    def __init__(
        self,
        population: Population,
        *,
        clock: Clock | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        keepalive_s: float | None = None,
        round_ms: int = 1000,
        omit_unchanged: bool = False,
        split_frames: bool = False,
    ) -> None:
        self.population = population
        self.clock = clock or SystemClock()
        self.host = host
        self.port = port
        self.keepalive_override = keepalive_s
        self.round_ms = round_ms
        self.omit_unchanged = omit_unchanged
        self.split_frames = split_frames
        self.clock_offset_us = 0
        self.stats = ReaderStats()
        self.rospecs: dict[int, RoSpec] = {}
        self.events: dict[int, bool] = {}
        self.keepalive_ms = 0
        self.disconnected_antennas: set[int] = set()
        self._silent_until = -1.0
        self._server: asyncio.Server | None = None
        self._conn: _Connection | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._handlers: set[asyncio.Task[None]] = set()  # connection handler tasks (in _tasks too)
        self._keepalive: asyncio.Task[None] | None = None
        self._acc: dict[int, dict[tuple[str, int], _Acc]] = {}  # ROSpec id -> accumulated reports
        self._ids = 1000

    # ---- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> int:
        """Listen (a restarted reader comes back with a factory configuration); return the port."""
        self._reset_state()
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        """Close the listener and every connection, stop every ROSpec."""
        if self._server is not None:
            self._server.close()
        if self._conn is not None:
            self._conn.close()
        self._reset_state()
        # connection handlers end by themselves once their socket is aborted (cancelling one makes Python
        # 3.11's asyncio.streams log a spurious "Exception in callback"); everything else is cancelled
        for t in list(self._tasks):
            if t not in self._handlers:
                t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(t), 2) if t in self._handlers else await t
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    def _reset_state(self) -> None:
        for rs in self.rospecs.values():
            self._disarm(rs)
            self._halt(rs)
        self.rospecs.clear()
        self._acc.clear()
        self.events.clear()
        self.keepalive_ms = 0
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None

    @property
    def connected(self) -> bool:
        """Whether a client holds the session."""
        return self._conn is not None

    # ---- fault injection -------------------------------------------------------------------------
    def inject(self, raw: bytes) -> None:
        """Write raw bytes to the current client (malformed frames, split frames)."""
        if self._conn is not None:
            self._conn.writer.write(raw)

    def drop_client(self, partial: bytes = b"") -> None:
        """Reset the current connection, optionally after writing the first bytes of a frame."""
        if self._conn is not None:
            if partial:
                self._conn.writer.write(partial)
            self._conn.writer.transport.abort()

    async def go_silent(self, seconds: float) -> None:
        """A dead RF section for `seconds` (returns when it is over): the connection stays up and keepalives
        are answered and sent, but no tag is read, no report and no event is sent."""
        self._silent_until = self.clock.monotonic() + seconds
        await self.clock.sleep(seconds)

    @property
    def silent(self) -> bool:
        """Whether the RF section is dead (`go_silent`)."""
        return self.clock.monotonic() < self._silent_until

    async def restart(self, down_s: float) -> None:
        """Reboot: ConnectionCloseEvent to the client, close it, refuse connections for `down_s` seconds,
        come back with a factory configuration (no ROSpec, no events, no keepalives). Returns when back."""
        conn = self._conn
        if conn is not None:
            conn.send(c.Msg.READER_EVENT_NOTIFICATION, self._next_id(), c.reader_event(close=True,
                                                                                        utc_us=self.now_us()))
            await conn.flush()
        await self.stop()
        await self.clock.sleep(down_s)
        await self.start()

    def disconnect_antenna(self, n: int) -> None:
        """Antenna port `n` unplugged: it reads nothing; AntennaEvent Disconnected when enabled."""
        self.disconnected_antennas.add(n)
        self._event(EV_ANTENNA, c.tlv(ANTENNA_EVENT, struct.pack("!BH", 0, n)))

    def connect_antenna(self, n: int) -> None:
        """Antenna port `n` plugged back in; AntennaEvent Connected when enabled."""
        self.disconnected_antennas.discard(n)
        self._event(EV_ANTENNA, c.tlv(ANTENNA_EVENT, struct.pack("!BH", 1, n)))

    def disable_rospecs(self) -> None:
        """Every ROSpec Disabled behind the client's back (another client, the reader's web UI)."""
        for rs in self.rospecs.values():
            self._rospec_op(DISABLE_ROSPEC, rs.rospec_id)

    def preempt(self, by_rospec_id: int = 999) -> None:
        """Every Active ROSpec preempted by a higher-priority one (another client's, `by_rospec_id`): it goes
        back to Inactive with a ROSpecEvent Preemption (§13.2.6.4); its triggers stay armed."""
        for rs in self.rospecs.values():
            if rs.state == RoState.ACTIVE:
                self._halt(rs)
                rs.state = RoState.INACTIVE
                self._event(EV_ROSPEC, c.tlv(ROSPEC_EVENT, struct.pack("!BII", 2, rs.rospec_id, by_rospec_id)))

    def reader_exception(self, message: str, *, stop_inventory: bool = False) -> None:
        """A ReaderExceptionEvent (when enabled); with `stop_inventory` every Active ROSpec also ends."""
        text = message.encode()
        self._event(EV_READER_EXCEPTION, c.tlv(READER_EXCEPTION_EVENT, struct.pack("!H", len(text)) + text))
        if stop_inventory:
            for rs in self.rospecs.values():
                if rs.state == RoState.ACTIVE:
                    self._halt(rs)
                    self._ended(rs)

    # ---- helpers ---------------------------------------------------------------------------------
    def now_us(self) -> int:
        """The reader's own clock (possibly wrong by `clock_offset_us`)."""
        return to_us(self.clock.now()) + self.clock_offset_us

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _event(self, event_type: int, param: bytes) -> None:
        """Send one reader event if the client enabled its type (and the RF section is alive)."""
        if self._conn is None or not self.events.get(event_type) or self.silent:
            return
        body = c.tlv(c.P.READER_EVENT_NOTIFICATION_DATA, c.tlv(c.P.UTC_TIMESTAMP, struct.pack("!Q", self.now_us()))
                     + param)  # fmt: skip
        self._conn.send(c.Msg.READER_EVENT_NOTIFICATION, self._next_id(), body)

    # ---- connections -----------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            self._handlers.add(task)
        conn = _Connection(self, reader, writer)
        try:
            if self._conn is not None:
                self.stats.refused += 1
                conn.send(c.Msg.READER_EVENT_NOTIFICATION, self._next_id(), c.reader_event(2, utc_us=self.now_us()))
                self._conn.send(c.Msg.READER_EVENT_NOTIFICATION, self._next_id(),
                                c.reader_event(4, utc_us=self.now_us()))  # fmt: skip
                with contextlib.suppress(Exception):
                    await conn.flush()
                return
            self._conn = conn
            self.stats.connections += 1
            await conn.run()
        finally:
            if self._conn is conn:
                self._conn = None
            conn.close()
            if task is not None:
                self._tasks.discard(task)
                self._handlers.discard(task)

    def handle(self, conn: _Connection, msg: c.Message) -> bool:
        """Answer one client message; False ends the session."""
        t = msg.type
        ok = c.llrp_status()
        with contextlib.suppress(ValueError):
            self.stats.requests.append(c.Msg(t).name)
        if t == DISABLE_ROSPEC:
            self.stats.requests.append("DISABLE_ROSPEC")
        if t == c.Msg.KEEPALIVE_ACK:
            self.stats.keepalive_acks += 1
        elif t == c.Msg.GET_READER_CAPABILITIES:
            fw = b"7.5.0-sim"
            caps = c.tlv(c.P.GENERAL_DEVICE_CAPABILITIES, struct.pack("!HHIIH", 4, 0xC000, 25882, 2001, len(fw)) + fw)
            conn.send(c.Msg.GET_READER_CAPABILITIES_RESPONSE, msg.msg_id, ok + caps)
        elif t == c.Msg.SET_READER_CONFIG:
            conn.send(c.Msg.SET_READER_CONFIG_RESPONSE, msg.msg_id, self._configure(msg.body))
        elif t == c.Msg.ADD_ROSPEC:
            conn.send(c.Msg.ADD_ROSPEC_RESPONSE, msg.msg_id, self._add(msg.body))
        elif t in (c.Msg.DELETE_ROSPEC, c.Msg.ENABLE_ROSPEC, c.Msg.START_ROSPEC, c.Msg.STOP_ROSPEC, DISABLE_ROSPEC):
            rid = struct.unpack_from("!I", msg.body)[0] if len(msg.body) >= 4 else -1
            resp = DISABLE_ROSPEC_RESPONSE if t == DISABLE_ROSPEC else c.RESPONSE_OF[c.Msg(t)]
            conn.send(resp, msg.msg_id, self._rospec_op(t, rid))
        elif t == GET_REPORT:
            for rid in list(self._acc):
                self._report(rid)
        elif t == c.Msg.CLOSE_CONNECTION:
            conn.send(c.Msg.CLOSE_CONNECTION_RESPONSE, msg.msg_id, ok)
            return False
        else:
            conn.send(c.Msg.ERROR_MESSAGE, msg.msg_id, c.llrp_status(M_UNSUPPORTED_MESSAGE,
                                                                     f"message type {t} not supported"))
        return True

    # ---- configuration ---------------------------------------------------------------------------
    def _configure(self, body: bytes) -> bytes:
        """SET_READER_CONFIG: ResetToFactoryDefault, ReaderEventNotificationSpec, KeepaliveSpec."""
        try:
            reset, events, keepalive_ms = parse_reader_config(body)
        except (FrameError, RoSpecError, struct.error) as exc:
            return c.llrp_status(M_PARAMETER_ERROR, str(exc))
        if reset:
            for rs in list(self.rospecs.values()):
                self._disarm(rs)
                self._halt(rs)
            self.rospecs.clear()
            self.events.clear()
            self.keepalive_ms = 0
        self.events.update(events)
        if keepalive_ms is not None:
            self.keepalive_ms = keepalive_ms
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        period = self.keepalive_override if self.keepalive_override is not None else self.keepalive_ms / 1000
        if period > 0:
            self._keepalive = self._spawn(self._keepalives(period))
        return c.llrp_status()

    async def _keepalives(self, period: float) -> None:
        while True:
            await self.clock.sleep(period)
            if self._conn is not None:
                self._conn.send(c.Msg.KEEPALIVE, self._next_id())

    def _add(self, body: bytes) -> bytes:
        try:
            rs = parse_rospec(body)
        except (RoSpecError, FrameError, struct.error, IndexError) as exc:
            return c.llrp_status(M_PARAMETER_ERROR, f"ROSpec refused: {exc}")
        if rs.rospec_id in self.rospecs:
            return c.llrp_status(A_INVALID, f"ROSpec {rs.rospec_id} exists")
        self.rospecs[rs.rospec_id] = rs
        if rs.start == 2:  # first start = receipt of this message + Offset (§6.1.1.2), whatever the state
            rs.timer = self._spawn(self._periodic(rs))
        return c.llrp_status()

    def _rospec_op(self, op: int, rid: int) -> bytes:
        if op == c.Msg.DELETE_ROSPEC:
            for r in list(self.rospecs) if rid == 0 else [rid]:
                rs = self.rospecs.get(r)
                if rs is None:
                    return c.llrp_status(A_INVALID, f"no ROSpec {r}")
                self._disarm(rs)
                if rs.state == RoState.ACTIVE:
                    self._halt(rs)
                    self._ended(rs)
                del self.rospecs[r]
                self._acc.pop(r, None)
            return c.llrp_status()
        rs = self.rospecs.get(rid)
        if rs is None:
            return c.llrp_status(A_INVALID, f"no ROSpec {rid}")
        if op == c.Msg.ENABLE_ROSPEC:
            if rs.state == RoState.DISABLED:
                rs.state = RoState.INACTIVE
                if rs.start == 1:
                    self._activate(rs)
        elif op == DISABLE_ROSPEC:
            if rs.state == RoState.ACTIVE:
                self._halt(rs)
                self._ended(rs)
            rs.state = RoState.DISABLED
        elif op == c.Msg.START_ROSPEC:
            if rs.state != RoState.INACTIVE:
                return c.llrp_status(A_INVALID, f"ROSpec {rid} is {rs.state.name}, not INACTIVE")
            self._activate(rs)
        elif op == c.Msg.STOP_ROSPEC:
            if rs.state != RoState.ACTIVE:
                return c.llrp_status(A_INVALID, f"ROSpec {rid} is {rs.state.name}, not ACTIVE")
            self._halt(rs)
            self._ended(rs)
        return c.llrp_status()

    # ---- ROSpec execution ------------------------------------------------------------------------
    def _disarm(self, rs: RoSpec) -> None:
        if rs.timer is not None:
            rs.timer.cancel()
            rs.timer = None

    def _halt(self, rs: RoSpec) -> None:
        if rs.runner is not None and rs.runner is not asyncio.current_task():
            rs.runner.cancel()
        rs.runner = None

    def _activate(self, rs: RoSpec) -> None:
        rs.state = RoState.ACTIVE
        self.stats.rospec_starts += 1
        self._event(EV_ROSPEC, c.tlv(ROSPEC_EVENT, struct.pack("!BII", 0, rs.rospec_id, 0)))
        rs.runner = self._spawn(self._run(rs))

    def _ended(self, rs: RoSpec) -> None:
        """Active -> Inactive: end-of-ROSpec (and end-of-AISpec) reports, then the ROSpecEvent."""
        rs.state = RoState.INACTIVE
        self.stats.rospec_ends += 1
        if rs.report_trigger in (1, 2):
            self._report(rs.rospec_id)
        self._event(EV_ROSPEC, c.tlv(ROSPEC_EVENT, struct.pack("!BII", 1, rs.rospec_id, 0)))

    async def _periodic(self, rs: RoSpec) -> None:
        clock = self.clock
        due = clock.monotonic() + rs.offset_ms / 1000
        while True:
            await clock.sleep(max(0.0, due - clock.monotonic()))
            if rs.state == RoState.INACTIVE:  # a Disabled ROSpec ignores triggers, an Active one is busy
                self._activate(rs)
            if rs.period_ms == 0:  # one-shot
                return
            due += rs.period_ms / 1000
            while due < clock.monotonic():  # periods missed while Active or late: skipped
                due += rs.period_ms / 1000

    async def _run(self, rs: RoSpec) -> None:
        clock = self.clock
        try:
            deadline = clock.monotonic() + rs.stop_ms / 1000 if rs.stop == 1 else None
            for ai in rs.aispecs:
                await self._aispec(rs, ai, deadline)
                if rs.report_trigger == 1:
                    self._report(rs.rospec_id)
                if deadline is not None and clock.monotonic() >= deadline:
                    break
        except asyncio.CancelledError:
            return
        if rs.runner is asyncio.current_task():
            rs.runner = None
            self._ended(rs)

    async def _aispec(self, rs: RoSpec, ai: AiSpec, deadline: float | None) -> None:
        clock = self.clock
        start = clock.monotonic()
        ends = [deadline] if deadline is not None else []
        if ai.stop == 1:
            ends.append(start + ai.duration_ms / 1000)
        elif ai.stop == 3 and ai.obs_timeout_ms:
            ends.append(start + ai.obs_timeout_ms / 1000)
        end = min(ends) if ends else None
        seen: set[str] = set()
        attempts = 0
        last_new = start
        while True:
            now = clock.monotonic()
            if end is not None and now >= end:
                return
            step = self.round_ms / 1000 if end is None else min(self.round_ms / 1000, end - now)
            t0 = self.now_us()
            await clock.sleep(step)
            new = self._inventory_round(rs, ai, t0, self.now_us())
            attempts += 1
            if new - seen:
                last_new = clock.monotonic()
            seen |= new
            if ai.stop == 3:
                if ai.obs_type == 0 and len(seen) >= ai.obs_tags:
                    return
                if ai.obs_type == 1 and clock.monotonic() - last_new >= ai.obs_t_ms / 1000:
                    return
                if ai.obs_type == 2 and attempts >= ai.obs_attempts:
                    return

    def _inventory_round(self, rs: RoSpec, ai: AiSpec, t0: int, t1: int) -> set[str]:
        """One round of reads from the World into the ROSpec's accumulated TagReportData."""
        if self.silent:
            return set()
        acc = self._acc.setdefault(rs.rospec_id, {})
        want = set(ai.antennas)
        seen: set[str] = set()
        for r in self.population.cycle():
            if (0 not in want and r.antenna not in want) or r.antenna in self.disconnected_antennas:
                continue
            seen.add(r.epc)
            key = (r.epc, r.antenna)
            a = acc.get(key)
            if a is None:
                acc[key] = _Acc(r.epc, r.antenna, r.rssi, t0, t1, r.count)
            else:
                a.rssi = max(a.rssi, r.rssi)
                a.last_us = t1
                a.count = min(65535, a.count + r.count)
            if rs.report_trigger in (1, 2) and rs.report_n and len(acc) >= rs.report_n:
                self._report(rs.rospec_id)
                acc = self._acc.setdefault(rs.rospec_id, {})
        return seen

    def _report(self, rid: int) -> None:
        """Send what the ROSpec accumulated as one RO_ACCESS_REPORT (nothing accumulated: nothing sent)."""
        acc = self._acc.pop(rid, None)
        rs = self.rospecs.get(rid)
        if not acc or rs is None or self._conn is None or self.silent:
            return
        self._conn.send_report(list(acc.values()), rs.selector)


class _Connection:
    """One client connection: its writer, the efficient-reporting memory, optional split writes."""

    def __init__(self, sim: LlrpReaderSim, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sim = sim
        self.reader = reader
        self.writer = writer
        self.last: dict[str, int] = {}  # optional TagReportData field -> last value sent on this connection
        self.out: asyncio.Queue[bytes] | None = asyncio.Queue() if sim.split_frames else None
        self.pump: asyncio.Task[None] | None = sim._spawn(self._pump()) if sim.split_frames else None

    def send(self, msg_type: int, msg_id: int, body: bytes = b"") -> None:
        frame = c.encode_message(msg_type, msg_id, body)
        if self.out is not None:
            self.out.put_nowait(frame)
        else:
            self.writer.write(frame)

    async def _pump(self) -> None:
        assert self.out is not None
        with contextlib.suppress(ConnectionError):
            while True:
                frame = await self.out.get()
                cut = max(1, len(frame) // 2)
                try:
                    self.writer.write(frame[:cut])
                    await self.writer.drain()
                    await asyncio.sleep(0.001)
                    self.writer.write(frame[cut:])
                    await self.writer.drain()
                finally:
                    self.out.task_done()

    async def flush(self) -> None:
        """Wait until every queued frame was written."""
        if self.out is not None:
            await self.out.join()
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()

    def close(self) -> None:
        if self.pump is not None:
            self.pump.cancel()
        self.writer.transport.abort()

    def send_report(self, tags: list[_Acc], sel: int) -> None:
        """Encode the TagReportData with exactly the enabled fields (minus unchanged ones when omitting)."""
        omit = self.sim.omit_unchanged
        last = self.last
        parts = []
        for a in tags:
            fields: dict[str, int | None] = {
                "antenna": a.antenna if sel & c.SEL_ANTENNA_ID else None,
                "rssi": a.rssi if sel & c.SEL_PEAK_RSSI else None,
                "first_us": a.first_us if sel & c.SEL_FIRST_SEEN else None,
                "last_us": a.last_us if sel & c.SEL_LAST_SEEN else None,
                "count": a.count if sel & c.SEL_TAG_SEEN_COUNT else None,
            }
            if omit:
                for k, v in fields.items():
                    if v is not None:
                        if last.get(k) == v:
                            fields[k] = None
                        else:
                            last[k] = v
            parts.append(c.tag_report_data(bytes.fromhex(a.epc), **fields))
        self.send(c.Msg.RO_ACCESS_REPORT, self.sim._next_id(), b"".join(parts))
        self.sim.stats.reports += 1
        self.sim.stats.tags_sent += len(tags)

    async def run(self) -> None:
        self.send(c.Msg.READER_EVENT_NOTIFICATION, self.sim._next_id(), c.reader_event(0, utc_us=self.sim.now_us()))
        dec = c.FrameDecoder()
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    return
                for msg in dec.feed(data):
                    if not self.sim.handle(self, msg):
                        await self.flush()
                        return
                await self.flush()
        except (c.LlrpStreamError, ConnectionError):
            return


def parse_reader_config(body: bytes) -> tuple[bool, dict[int, bool], int | None]:
    """(ResetToFactoryDefault, event type -> on, keepalive period ms or None) of a SET_READER_CONFIG body."""
    if not body:
        raise RoSpecError("SET_READER_CONFIG without its ResetToFactoryDefault byte")
    events: dict[int, bool] = {}
    keepalive: int | None = None
    for t, s, e in c.iter_params(body, 1):
        if t == c.P.READER_EVENT_NOTIFICATION_SPEC:
            for t2, s2, e2 in c.iter_params(body, s, e):
                if t2 == c.P.EVENT_NOTIFICATION_STATE:
                    if e2 - s2 < 3:
                        raise RoSpecError("EventNotificationState too short")
                    kind, state = struct.unpack_from("!HB", body, s2)
                    events[kind] = bool(state & 0x80)
        elif t == c.P.KEEPALIVE_SPEC:
            if e - s < 5:
                raise RoSpecError("KeepaliveSpec too short")
            kind, interval = struct.unpack_from("!BI", body, s)
            keepalive = interval if kind == 1 else 0
    return bool(body[0] & 0x80), events, keepalive


def parse_rospec(body: bytes) -> RoSpec:
    """The ROSpec of an ADD_ROSPEC body (LLRP 1.0.1 §10.2.1, binary §16.2.4.1); `RoSpecError` for what a
    reader refuses."""
    where = c.find_param(body, c.P.ROSPEC)
    if where is None:
        raise RoSpecError("no ROSpec parameter")
    s, e = where
    if e - s < 6:
        raise RoSpecError("ROSpec too short")
    rid, _priority, state = struct.unpack_from("!IBB", body, s)
    if rid == 0:
        raise RoSpecError("ROSpecID 0 is reserved")
    if state != 0:
        raise RoSpecError("a new ROSpec's CurrentState must be Disabled")
    start = stop = -1
    offset = period = stop_ms = 0
    aispecs: list[AiSpec] = []
    trigger, n, selector = 0, 0, 0
    for t, ps, pe in c.iter_params(body, s + 6, e):
        if t == c.P.RO_BOUNDARY_SPEC:
            for t2, s2, e2 in c.iter_params(body, ps, pe):
                if t2 == c.P.ROSPEC_START_TRIGGER:
                    start = body[s2]
                    pv = c.find_param(body, PERIODIC_TRIGGER_VALUE, s2 + 1, e2)
                    if start == 2:
                        if pv is None or pv[1] - pv[0] < 8:
                            raise RoSpecError("a Periodic start trigger needs a PeriodicTriggerValue")
                        offset, period = struct.unpack_from("!II", body, pv[0])
                    elif start not in (0, 1):
                        raise RoSpecError(f"ROSpecStartTrigger type {start} not supported")
                elif t2 == c.P.ROSPEC_STOP_TRIGGER:
                    stop, stop_ms = struct.unpack_from("!BI", body, s2)
                    if stop not in (0, 1) or (stop == 1 and stop_ms == 0):
                        raise RoSpecError(f"ROSpecStopTrigger type {stop} / duration {stop_ms} not supported")
        elif t == c.P.AISPEC:
            count = struct.unpack_from("!H", body, ps)[0]
            ants = struct.unpack_from(f"!{count}H", body, ps + 2)
            ai: AiSpec | None = None
            for t2, s2, e2 in c.iter_params(body, ps + 2 + 2 * count, pe):
                if t2 == c.P.AISPEC_STOP_TRIGGER:
                    kind, dur = struct.unpack_from("!BI", body, s2)
                    ai = AiSpec(tuple(ants), kind, dur)
                    if kind == 1 and dur == 0:
                        raise RoSpecError("AISpec Duration stop trigger of 0 ms")
                    if kind == 3:
                        obs = c.find_param(body, TAG_OBSERVATION_TRIGGER, s2 + 5, e2)
                        if obs is None or obs[1] - obs[0] < 12:
                            raise RoSpecError("Tag observation stop trigger without TagObservationTrigger")
                        ai.obs_type, _, ai.obs_tags, ai.obs_attempts, ai.obs_t_ms, ai.obs_timeout_ms = (
                            struct.unpack_from("!BBHHHI", body, obs[0]))
                    elif kind not in (0, 1):
                        raise RoSpecError(f"AISpecStopTrigger type {kind} not supported")
            if ai is None:
                raise RoSpecError("AISpec without AISpecStopTrigger")
            aispecs.append(ai)
        elif t == c.P.RO_REPORT_SPEC:
            trigger, n = struct.unpack_from("!BH", body, ps)
            sel = c.find_param(body, c.P.TAG_REPORT_CONTENT_SELECTOR, ps + 3, pe)
            if sel is not None:
                selector = struct.unpack_from("!H", body, sel[0])[0]
    if start < 0 or stop < 0:
        raise RoSpecError("ROBoundarySpec needs a start and a stop trigger")
    if not aispecs:
        raise RoSpecError("no AISpec")
    return RoSpec(rid, start, stop, aispecs, offset, period, stop_ms, trigger, n, selector)
