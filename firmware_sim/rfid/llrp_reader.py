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
  ROSpecEvent (start/end; a run's tag data is sent between the two), AISpecEvent (end of AISpec, after its
  tag data), AntennaEvent and ReaderExceptionEvent only when enabled by SET_READER_CONFIG's
  ReaderEventNotificationSpec (all off after a restart).
  KEEPALIVE per KeepaliveSpec.
- Frames are built and requests parsed by `llrp_wire` (this package, written from the spec's binary
  encoding, §16), never by the driver's codec: a codec bug then shows up as a disagreement, not twice.
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
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from typing import Any

from edge.clock import Clock, SystemClock
from firmware_sim.rfid import llrp_wire as w
from firmware_sim.rfid.llrp_wire import MsgType as M
from firmware_sim.rfid.llrp_wire import Selector as S
from firmware_sim.rfid.population import Population

M_PARAMETER_ERROR, M_UNSUPPORTED_MESSAGE, A_INVALID = w.M_PARAMETER_ERROR, w.M_UNSUPPORTED_MESSAGE, w.A_INVALID
EV_ROSPEC, EV_READER_EXCEPTION, EV_ANTENNA = w.EVENT_ROSPEC, w.EVENT_READER_EXCEPTION, w.EVENT_ANTENNA
DISABLE_ROSPEC = M.DISABLE_ROSPEC
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
AiSpec = w.AiSpecDef


class RoState(IntEnum):
    """ROSpec states (LLRP 1.0.1 §6.1, figure 4; CurrentState of §10.2.1)."""

    DISABLED = 0
    INACTIVE = 1
    ACTIVE = 2


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
    spec_index: int  # 1-based index of the AISpec in its ROSpec (SpecIndex, §13.2.3.4)
    inventory_parameter_spec_id: int
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
        self._acc: dict[int, dict[tuple[str, int, int], _Acc]] = {}  # ROSpec id -> accumulated reports
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
            conn.send(M.READER_EVENT_NOTIFICATION, self._next_id(),
                      w.reader_event_notification(self.now_us(), w.connection_close_event()))
            await conn.flush()
        await self.stop()
        await self.clock.sleep(down_s)
        await self.start()

    def disconnect_antenna(self, n: int) -> None:
        """Antenna port `n` unplugged: it reads nothing; AntennaEvent Disconnected when enabled."""
        self.disconnected_antennas.add(n)
        self._event(EV_ANTENNA, w.antenna_event(w.ANTENNA_DISCONNECTED, n))

    def connect_antenna(self, n: int) -> None:
        """Antenna port `n` plugged back in; AntennaEvent Connected when enabled."""
        self.disconnected_antennas.discard(n)
        self._event(EV_ANTENNA, w.antenna_event(w.ANTENNA_CONNECTED, n))

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
                self._event(EV_ROSPEC, w.rospec_event(w.ROSPEC_PREEMPTED, rs.rospec_id, by_rospec_id))

    def reader_exception(self, message: str, *, stop_inventory: bool = False) -> None:
        """A ReaderExceptionEvent (when enabled); with `stop_inventory` every Active ROSpec also ends."""
        self._event(EV_READER_EXCEPTION, w.reader_exception_event(message))
        if stop_inventory:
            for rs in self.rospecs.values():
                if rs.state == RoState.ACTIVE:
                    self._halt(rs)
                    self._ended(rs)

    # ---- helpers ---------------------------------------------------------------------------------
    def now_us(self) -> int:
        """The reader's own clock (possibly wrong by `clock_offset_us`)."""
        return (self.clock.now() - _EPOCH) // timedelta(microseconds=1) + self.clock_offset_us

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
        self._conn.send(M.READER_EVENT_NOTIFICATION, self._next_id(), w.reader_event_notification(self.now_us(), param))

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
                # §13.2.6.11: the newcomer is told a client connection exists, the client in session is told
                conn.send(M.READER_EVENT_NOTIFICATION, self._next_id(), w.reader_event_notification(
                    self.now_us(), w.connection_attempt_event(w.CONN_CLIENT_INITIATED_EXISTS)))
                self._conn.send(M.READER_EVENT_NOTIFICATION, self._next_id(), w.reader_event_notification(
                    self.now_us(), w.connection_attempt_event(w.CONN_ANOTHER_ATTEMPTED)))
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

    def handle(self, conn: _Connection, msg: w.Frame) -> bool:
        """Answer one client message; False ends the session."""
        t = msg.type
        with contextlib.suppress(ValueError):
            self.stats.requests.append(M(t).name)
        if msg.version != w.VERSION:  # §7.1.2: ERROR_MESSAGE, same version and id, M_UnsupportedVersion
            conn.send(M.ERROR_MESSAGE, msg.msg_id, w.llrp_status(w.M_UNSUPPORTED_VERSION,
                                                                 f"LLRP version {msg.version} not supported"),
                      version=msg.version)  # fmt: skip
            return True
        if t == M.ERROR_MESSAGE:  # "Readers and Clients SHALL not respond to an ERROR_MESSAGE" (§7.1.2)
            return True
        if t == M.KEEPALIVE_ACK:
            self.stats.keepalive_acks += 1
        elif t == M.GET_READER_CAPABILITIES:
            conn.send(M.GET_READER_CAPABILITIES_RESPONSE, msg.msg_id, self._capabilities(msg.value))
        elif t == M.SET_READER_CONFIG:
            conn.send(M.SET_READER_CONFIG_RESPONSE, msg.msg_id, self._configure(msg.value))
        elif t == M.ADD_ROSPEC:
            conn.send(M.ADD_ROSPEC_RESPONSE, msg.msg_id, self._add(msg.value))
        elif t in (M.DELETE_ROSPEC, M.ENABLE_ROSPEC, M.START_ROSPEC, M.STOP_ROSPEC, M.DISABLE_ROSPEC):
            try:
                status = self._rospec_op(t, w.rospec_id_of(msg.value))
            except w.LlrpRequestError as exc:
                status = w.llrp_status(exc.code, exc.reason)
            conn.send(w.RESPONSE_TO[M(t)], msg.msg_id, status)
        elif t == M.GET_REPORT:
            for rid in list(self._acc):
                self._report(rid)
        elif t == M.ENABLE_EVENTS_AND_REPORTS:
            pass  # no response (§13.1.6); nothing is held back here (HoldEventsAndReportsUponReconnect off)
        elif t == M.CLOSE_CONNECTION:
            conn.send(M.CLOSE_CONNECTION_RESPONSE, msg.msg_id, w.llrp_status())
            return False
        else:
            conn.send(M.ERROR_MESSAGE, msg.msg_id, w.llrp_status(M_UNSUPPORTED_MESSAGE,
                                                                 f"message type {t} not supported"))
        return True

    def _capabilities(self, value: bytes) -> bytes:
        """GET_READER_CAPABILITIES_RESPONSE (§16.1.2): LLRPStatus, then GeneralDeviceCapabilities when
        RequestedData (§9.1.1) is 0 All or 1 General (the others are not modelled: status only)."""
        status = w.llrp_status()
        if value[:1] in (b"\x00", b"\x01", b""):
            return status + w.general_device_capabilities(antennas=4, manufacturer=25882, model=2001,
                                                          firmware="7.5.0-sim")  # 25882: Impinj's PEN
        return status

    # ---- configuration ---------------------------------------------------------------------------
    def _configure(self, body: bytes) -> bytes:
        """SET_READER_CONFIG: ResetToFactoryDefault, ReaderEventNotificationSpec, KeepaliveSpec."""
        try:
            cfg = w.decode_set_reader_config(body)
        except w.LlrpRequestError as exc:
            return w.llrp_status(exc.code, exc.reason)
        if cfg.reset:
            for rs in list(self.rospecs.values()):
                self._disarm(rs)
                self._halt(rs)
            self.rospecs.clear()
            self.events.clear()
            self.keepalive_ms = 0
        self.events.update(cfg.events)
        if cfg.keepalive_ms is not None:
            self.keepalive_ms = cfg.keepalive_ms
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        period = self.keepalive_override if self.keepalive_override is not None else self.keepalive_ms / 1000
        if period > 0:
            self._keepalive = self._spawn(self._keepalives(period))
        return w.llrp_status()

    async def _keepalives(self, period: float) -> None:
        while True:
            await self.clock.sleep(period)
            if self._conn is not None:
                self._conn.send(M.KEEPALIVE, self._next_id())

    def _add(self, body: bytes) -> bytes:
        try:
            rs = parse_rospec(body)
        except w.LlrpRequestError as exc:
            return w.llrp_status(exc.code, f"ROSpec refused: {exc.reason}")
        if rs.rospec_id in self.rospecs:
            return w.llrp_status(A_INVALID, f"ROSpec {rs.rospec_id} exists")
        self.rospecs[rs.rospec_id] = rs
        if rs.start == 2:  # first start = receipt of this message + Offset (§6.1.1.2), whatever the state
            rs.timer = self._spawn(self._periodic(rs))
        return w.llrp_status()

    def _rospec_op(self, op: int, rid: int) -> bytes:
        if op == M.DELETE_ROSPEC:
            for r in list(self.rospecs) if rid == 0 else [rid]:
                rs = self.rospecs.get(r)
                if rs is None:
                    return w.llrp_status(A_INVALID, f"no ROSpec {r}")
                self._disarm(rs)
                if rs.state == RoState.ACTIVE:
                    self._halt(rs)
                    self._ended(rs)
                del self.rospecs[r]
                self._acc.pop(r, None)
            return w.llrp_status()
        rs = self.rospecs.get(rid)
        if rs is None:
            return w.llrp_status(A_INVALID, f"no ROSpec {rid}")
        if op == M.ENABLE_ROSPEC:
            if rs.state == RoState.DISABLED:
                rs.state = RoState.INACTIVE
                if rs.start == 1:
                    self._activate(rs)
        elif op == DISABLE_ROSPEC:
            if rs.state == RoState.ACTIVE:
                self._halt(rs)
                self._ended(rs)
            rs.state = RoState.DISABLED
        elif op == M.START_ROSPEC:
            if rs.state != RoState.INACTIVE:
                return w.llrp_status(A_INVALID, f"ROSpec {rid} is {rs.state.name}, not INACTIVE")
            self._activate(rs)
        elif op == M.STOP_ROSPEC:
            if rs.state != RoState.ACTIVE:
                return w.llrp_status(A_INVALID, f"ROSpec {rid} is {rs.state.name}, not ACTIVE")
            self._halt(rs)
            self._ended(rs)
        return w.llrp_status()

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
        self._event(EV_ROSPEC, w.rospec_event(w.ROSPEC_START, rs.rospec_id))
        rs.runner = self._spawn(self._run(rs))

    def _ended(self, rs: RoSpec) -> None:
        """Active -> Inactive: end-of-ROSpec (and end-of-AISpec) reports, then the ROSpecEvent."""
        rs.state = RoState.INACTIVE
        self.stats.rospec_ends += 1
        if rs.report_trigger in (1, 2):
            self._report(rs.rospec_id)
        self._event(EV_ROSPEC, w.rospec_event(w.ROSPEC_END, rs.rospec_id))

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
            for index, ai in enumerate(rs.aispecs, 1):
                await self._aispec(rs, ai, index, deadline)
                if rs.report_trigger == 1:
                    self._report(rs.rospec_id)
                # its tag data first, then the AISpecEvent, then (in _ended) the ROSpecEvent end (§13.2.6.1)
                self._event(w.EVENT_AISPEC, w.aispec_event(rs.rospec_id, index))
                if deadline is not None and clock.monotonic() >= deadline:
                    break
        except asyncio.CancelledError:
            return
        if rs.runner is asyncio.current_task():
            rs.runner = None
            self._ended(rs)

    async def _aispec(self, rs: RoSpec, ai: AiSpec, index: int, deadline: float | None) -> None:
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
            new = self._inventory_round(rs, ai, index, t0, self.now_us())
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

    def _inventory_round(self, rs: RoSpec, ai: AiSpec, index: int, t0: int, t1: int) -> set[str]:
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
            key = (r.epc, r.antenna, index)  # not accumulated across antennas or AISpecs (§13.2.3.1)
            a = acc.get(key)
            if a is None:
                acc[key] = _Acc(r.epc, r.antenna, index, ai.inventory_parameter_spec_id, r.rssi, t0, t1, r.count)
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
        self._conn.send_report(rid, list(acc.values()), rs.selector)


class _Connection:
    """One client connection: its writer, the efficient-reporting memory, optional split writes."""

    def __init__(self, sim: LlrpReaderSim, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sim = sim
        self.reader = reader
        self.writer = writer
        self.last: dict[str, int] = {}  # optional TagReportData field -> last value sent on this connection
        self.out: asyncio.Queue[bytes] | None = asyncio.Queue() if sim.split_frames else None
        self.pump: asyncio.Task[None] | None = sim._spawn(self._pump()) if sim.split_frames else None

    def send(self, msg_type: int, msg_id: int, body: bytes = b"", version: int = w.VERSION) -> None:
        frame = w.message(msg_type, msg_id, body, version)
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

    def send_report(self, rospec_id: int, tags: list[_Acc], sel: int) -> None:
        """Encode the TagReportData with exactly the enabled fields (§13.2.1.1), minus, when omitting, those
        whose value is the last one of their type sent on this connection (§13.2.3 (ii))."""
        omit = self.sim.omit_unchanged
        last = self.last
        parts = []
        for a in tags:
            f = w.TagFields(
                rospec_id=rospec_id if sel & S.ROSPEC_ID else None,
                spec_index=a.spec_index if sel & S.SPEC_INDEX else None,
                inventory_parameter_spec_id=a.inventory_parameter_spec_id if sel & S.INVENTORY_PARAMETER_SPEC_ID
                else None,
                antenna_id=a.antenna if sel & S.ANTENNA_ID else None,
                peak_rssi=a.rssi if sel & S.PEAK_RSSI else None,
                channel_index=1 if sel & S.CHANNEL_INDEX else None,  # one channel: index 1 (one-based, §13.2.3.8)
                first_seen_utc=a.first_us if sel & S.FIRST_SEEN else None,
                last_seen_utc=a.last_us if sel & S.LAST_SEEN else None,
                tag_seen_count=a.count if sel & S.TAG_SEEN_COUNT else None,
            )  # AccessSpecID: no AccessSpec is modelled, so there is none to report
            if omit:
                for name in w.TAG_FIELD_NAMES:
                    v = getattr(f, name)
                    if v is not None:
                        if last.get(name) == v:
                            setattr(f, name, None)
                        else:
                            last[name] = v
            parts.append(w.tag_report_data(bytes.fromhex(a.epc), f))
        self.send(M.RO_ACCESS_REPORT, self.sim._next_id(), b"".join(parts))
        self.sim.stats.reports += 1
        self.sim.stats.tags_sent += len(tags)

    async def run(self) -> None:
        self.send(M.READER_EVENT_NOTIFICATION, self.sim._next_id(),
                  w.reader_event_notification(self.sim.now_us(), w.connection_attempt_event(w.CONN_SUCCESS)))
        dec = w.FrameReader()
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
        except (w.LlrpFramingError, ConnectionError):
            return


def parse_rospec(body: bytes) -> RoSpec:
    """The ROSpec of an ADD_ROSPEC body (LLRP 1.0.1 §10.2.1, binary §16.2.4.1), Disabled and not yet armed;
    `llrp_wire.LlrpRequestError` for what a reader refuses."""
    d = w.decode_add_rospec(body)
    return RoSpec(d.rospec_id, d.start, d.stop, d.aispecs, d.offset_ms, d.period_ms, d.stop_ms, d.report_trigger,
                  d.report_n, d.selector)
