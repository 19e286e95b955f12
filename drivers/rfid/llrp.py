"""LLRP reader driver (`type: llrp`): asyncio client over TCP 5084 (EPCglobal LLRP 1.0.1/1.1).

Session: expect READER_EVENT_NOTIFICATION/ConnectionAttemptEvent (Success, else `DeviceError` saying
another client holds the reader), GET_READER_CAPABILITIES, SET_READER_CONFIG (keepalives; ROSpecEvent,
ReaderExceptionEvent and AntennaEvent notifications on), DELETE_ROSPEC(0), ADD_ROSPEC, ENABLE_ROSPEC,
START_ROSPEC (the first run at once). The ROSpec (`llrp_codec.rospec`, LLRP 1.0.1 §10.2.1) has a Periodic
start trigger (every `cycle_ms`), a Duration stop trigger, a Null AISpec stop trigger and one report per
run (ROReportTrigger 2, N = 0), so a spec-following reader starts it again every period by itself (a
Null start trigger with a Duration AISpec is done after one AISpec: the reader would go quiet). Then
every RO_ACCESS_REPORT becomes `TagRead`s (an omitted optional field takes the connection's last value,
efficient reporting, §13.2.3) and every KEEPALIVE is answered with KEEPALIVE_ACK. On the way out
(`finally`): STOP_ROSPEC, DELETE_ROSPEC, CLOSE_CONNECTION with a short timeout.

Reader health, as readings: every ROSpecEvent start of our ROSpec (each cycle) yields
`ReaderStatus(inventorying=True)`, the liveness beat; a report while not known to be inventorying yields
one too. A preempted ROSpec, or no ROSpec start and no report for `inventory_timeout_s` (at least three
cycles: the RF section died, somebody disabled the ROSpec), yields `ReaderStatus(inventorying=False)`
and reinstalls the ROSpec, at most `rospec_restarts` times in a row before the connection is dropped
as faulty. AntennaEvent -> `AntennaStatus`. ReaderExceptionEvent -> counted and logged once per device
per minute. ConnectionCloseEvent -> `ReaderStatus(inventorying=False)`, then `DeviceError` (the
supervisor retries within its initial backoff because the connection had delivered readings).

Errors: a bad parameter inside a well-framed message -> one `Malformed` and go on; a protocol error (a
bad message header: the stream lost sync; a header announcing more than 1 MiB; a frame not complete
`frame_timeout_s` after its header arrived, whatever else arrives meanwhile), EOF, a silent connection
(no byte for 3 keepalive periods) or a refused request -> `DeviceError` (protocol errors counted and
logged once per device per minute), and the supervisor reconnects. The codec is
`drivers/rfid/llrp_codec.py`; docs/llrp.md explains the choices.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator

from drivers.rfid import llrp_codec as c
from drivers.rfid.config import LlrpConfig
from drivers.rfid.reads import AntennaStatus, ReaderStatus, TagRead
from edge.driver import DeviceOnline, DriverContext, Malformed, Reading
from edge.errors import DeviceError, FrameError
from edge.ratelimit import LogLimiter

log = logging.getLogger(__name__)
_limiter = LogLimiter(60.0)

SHUTDOWN_TIMEOUT_S = 1.0


class LlrpDriver:
    """One LLRP reader."""

    def __init__(self, config: LlrpConfig, ctx: DriverContext) -> None:
        self.config = config
        self.ctx = ctx
        self.device_id = config.id
        self.counters = {"reports": 0, "tags": 0, "keepalives": 0, "malformed": 0, "other_client_attempts": 0,
                         "protocol_errors": 0, "reader_exceptions": 0, "rospec_restarts": 0}  # fmt: skip
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._decoder = c.FrameDecoder()
        self._backlog: deque[c.Message] = deque()  # messages that arrived while we awaited a response
        self._frames: deque[c.Message] = deque()  # decoded, not yet consumed
        self._frame_since: float | None = None  # loop time the pending partial frame's first bytes arrived
        self._carry = c.new_carry()
        self._msg_id = 0

    def _fail(self, reason: str) -> DeviceError:
        return DeviceError(self.device_id, reason)

    def _protocol_error(self, reason: str) -> DeviceError:
        self.counters["protocol_errors"] += 1
        _limiter.log(log, logging.WARNING, f"{self.device_id}/protocol", "LLRP reader %s: protocol error, "
                     "reconnecting: %s", self.device_id, reason)  # fmt: skip
        return self._fail(f"LLRP protocol error: {reason}; reconnecting")

    async def stream(self) -> AsyncIterator[Reading]:
        """Connect, configure, yield reads and reader health until cancelled; clean up politely."""
        cfg = self.config
        self._decoder = c.FrameDecoder()
        self._backlog.clear()
        self._frames.clear()
        self._frame_since = None
        self._carry = c.new_carry()
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(cfg.host, cfg.port), cfg.connect_timeout_s
            )
        except TimeoutError:
            raise self._fail(f"no TCP connection to {cfg.host}:{cfg.port} within {cfg.connect_timeout_s}s") from None
        session = False
        loop = asyncio.get_running_loop()
        try:
            await self._hello()
            session = True
            caps = await self._request(c.Msg.GET_READER_CAPABILITIES, b"\x00")
            info = c.decode_capabilities(caps.body)
            await self._request(c.Msg.SET_READER_CONFIG,
                                c.set_reader_config(int(cfg.keepalive_s * 1000), cfg.reset_to_factory))  # fmt: skip
            await self._request(c.Msg.DELETE_ROSPEC, c.u32(0), tolerate=True)  # none may exist: fine
            await self._install(fresh=True)
            detail = f"LLRP {cfg.host}:{cfg.port}"
            if info is not None:
                detail += f", vendor {info.manufacturer} model {info.model} fw {info.firmware}"
            yield DeviceOnline(device_id=self.device_id, time=self.ctx.clock.now(), detail=detail)
            idle = max(3 * cfg.keepalive_s, 3 * cfg.cycle_ms / 1000)
            quiet_s = max(cfg.inventory_timeout_s, 3 * cfg.cycle_ms / 1000)
            alive_at = loop.time()  # last ROSpec start or report
            inventorying: bool | None = None
            restarts = 0
            while True:
                if self._backlog:
                    msg: c.Message | None = self._backlog.popleft()
                else:
                    msg = await self._next(idle, until=alive_at + quiet_s)
                if msg is None:  # no cycle for quiet_s: the ROSpec is not running
                    if inventorying is not False:
                        inventorying = False
                        yield self._status(False, f"no inventory cycle for {quiet_s:g}s")
                    restarts += 1
                    if restarts > cfg.rospec_restarts:
                        raise self._fail(f"the reader ran no inventory cycle for {quiet_s:g}s after "
                                         f"{cfg.rospec_restarts} ROSpec reinstalls")  # fmt: skip
                    self.counters["rospec_restarts"] += 1
                    await self._install()
                    alive_at = loop.time()
                    continue
                if msg.type == c.Msg.RO_ACCESS_REPORT:
                    readings = self._report(msg)
                    if readings and isinstance(readings[0], TagRead):
                        alive_at = loop.time()
                        restarts = 0
                        if inventorying is not True:
                            inventorying = True
                            yield self._status(True, "tag reports arrive")
                    for reading in readings:
                        yield reading
                elif msg.type == c.Msg.READER_EVENT_NOTIFICATION:
                    try:
                        ev = c.decode_reader_event(msg.body)
                    except FrameError as exc:
                        yield self._malformed(f"READER_EVENT_NOTIFICATION: {exc.reason}", msg.body)
                        continue
                    for kind, rid in ev.rospec:
                        if rid != cfg.rospec_id:
                            continue
                        if kind == c.ROSPEC_STARTED:
                            alive_at = loop.time()
                            restarts = 0
                            inventorying = True
                            yield self._status(True, "ROSpec started")
                        elif kind == c.ROSPEC_PREEMPTED:
                            inventorying = False
                            yield self._status(False, "ROSpec preempted by another ROSpec")
                    for ant, connected in ev.antenna:
                        yield AntennaStatus(device_id=self.device_id, time=self.ctx.clock.now(), antenna=ant,
                                            connected=connected, read_point=cfg.read_point(ant),
                                            seen_us=ev.utc_us)  # fmt: skip
                    if ev.exception is not None:
                        self.counters["reader_exceptions"] += 1
                        _limiter.log(log, logging.WARNING, f"{self.device_id}/exception",
                                     "LLRP reader %s reports an exception: %s", self.device_id, ev.exception)
                    if ev.connection_status == 4:
                        self.counters["other_client_attempts"] += 1
                    if ev.connection_closed:
                        yield self._status(False, "the reader is closing the connection")
                        raise self._fail("the reader announced it is closing the connection (ConnectionCloseEvent)")
                elif msg.type == c.Msg.ERROR_MESSAGE:
                    yield self._malformed(f"reader sent ERROR_MESSAGE: {self._status_text(msg)}", msg.body)
        finally:
            await self._close(session)

    async def _install(self, *, fresh: bool = False) -> None:
        """(Re)install our ROSpec: delete it unless `fresh`, add, enable, start: the first run now, the next
        ones by its periodic trigger (a START_ROSPEC refused because the trigger already started it is fine)."""
        cfg = self.config
        rid = c.u32(cfg.rospec_id)
        if not fresh:
            await self._request(c.Msg.DELETE_ROSPEC, rid, tolerate=True)
        await self._request(c.Msg.ADD_ROSPEC, c.rospec(cfg.rospec_id, cycle_ms=cfg.cycle_ms))
        await self._request(c.Msg.ENABLE_ROSPEC, rid)
        await self._request(c.Msg.START_ROSPEC, rid, tolerate=True)

    def _status(self, inventorying: bool, reason: str) -> ReaderStatus:
        return ReaderStatus(device_id=self.device_id, time=self.ctx.clock.now(), inventorying=inventorying,
                            reason=reason)

    # ---- session -------------------------------------------------------------------------------
    async def _hello(self) -> None:
        while True:
            msg = await self._expect(self.config.connect_timeout_s, "the reader's ConnectionAttemptEvent")
            if msg.type != c.Msg.READER_EVENT_NOTIFICATION:
                self._backlog.append(msg)
                continue
            try:
                ev = c.decode_reader_event(msg.body)
            except FrameError as exc:
                raise self._fail(f"unreadable READER_EVENT_NOTIFICATION at connect: {exc.reason}") from None
            if ev.connection_status is None:
                continue
            if ev.connection_status != 0:
                text = c.CONNECTION_STATUS.get(ev.connection_status, f"status {ev.connection_status}")
                raise self._fail(
                    f"reader refused the LLRP connection: {text}; another client holds the reader's only "
                    "session: stop it (reader web UI, other middleware) and the gateway will retry"
                )
            return

    async def _request(self, msg_type: c.Msg, body: bytes, *, tolerate: bool = False) -> c.Message:
        self._msg_id = (self._msg_id + 1) & 0xFFFFFFFF
        msg_id = self._msg_id
        self._send(msg_type, msg_id, body)
        want = c.RESPONSE_OF[msg_type]
        while True:
            msg = await self._expect(self.config.reply_timeout_s, f"the answer to {msg_type.name}")
            if msg.type in (want, c.Msg.ERROR_MESSAGE) and msg.msg_id == msg_id:
                try:
                    status = c.decode_status(msg.body)
                except FrameError as exc:
                    raise self._fail(f"unreadable answer to {msg_type.name}: {exc.reason}") from None
                if not status.ok and not tolerate:
                    raise self._fail(f"reader refused {msg_type.name}: code {status.code} {status.description!r}")
                return msg
            self._backlog.append(msg)  # reports or events that arrived meanwhile: handled after setup

    async def _expect(self, wait_s: float, what: str) -> c.Message:
        msg = await self._next(wait_s, what)
        assert msg is not None  # no `until`: never None
        return msg

    async def _next(self, wait_s: float, what: str = "a keepalive or report",
                    until: float | None = None) -> c.Message | None:  # fmt: skip
        """Next message that is not a KEEPALIVE (those are answered here); None once loop time `until`
        passed (only when `until` is given). Raises `DeviceError` when the reader is silent for `wait_s`,
        closes, or breaks the framing (a frame not complete `frame_timeout_s` after it began included)."""
        assert self._reader is not None
        loop = asyncio.get_running_loop()
        frame_timeout = self.config.frame_timeout_s
        while True:
            pending = self._frames
            if pending:
                msg = pending.popleft()
                if msg.type == c.Msg.KEEPALIVE:
                    self.counters["keepalives"] += 1
                    self._send(c.Msg.KEEPALIVE_ACK, msg.msg_id)
                    continue
                return msg
            now = loop.time()
            wait = wait_s
            if until is not None:
                if now >= until:
                    return None
                wait = min(wait, until - now)
            since = self._frame_since
            if since is not None:
                wait = min(wait, max(0.0, since + frame_timeout - now))
            try:
                data = await asyncio.wait_for(self._reader.read(65536), wait)
            except TimeoutError:
                now = loop.time()
                if since is not None and now >= since + frame_timeout:
                    raise self._protocol_error(
                        f"a frame announcing {self._decoder.announced} bytes had only {self._decoder.pending} "
                        f"after {frame_timeout:g}s") from None
                if until is not None and now >= until and wait < wait_s:
                    return None
                raise self._fail(f"nothing from the reader for {wait_s:g}s while waiting for {what}") from None
            if not data:
                left = self._decoder.pending
                mid = f" in the middle of a frame ({left} bytes pending)" if left else ""
                raise self._fail(f"the reader closed the connection{mid}")
            try:
                got = self._decoder.feed(data)
            except c.LlrpStreamError as exc:
                raise self._protocol_error(exc.reason) from None
            if not self._decoder.pending:
                self._frame_since = None
            elif got or since is None:  # a new frame began in this chunk
                self._frame_since = loop.time()
            pending.extend(got)

    def _send(self, msg_type: int, msg_id: int, body: bytes = b"") -> None:
        assert self._writer is not None
        self._writer.write(c.encode_message(msg_type, msg_id, body))

    async def _close(self, session: bool) -> None:
        writer = self._writer
        self._writer = None
        if writer is None:
            return
        if session and not writer.is_closing():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._goodbye(writer), SHUTDOWN_TIMEOUT_S)
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), SHUTDOWN_TIMEOUT_S)

    async def _goodbye(self, writer: asyncio.StreamWriter) -> None:
        rid = c.u32(self.config.rospec_id)
        for msg_type, body in ((c.Msg.STOP_ROSPEC, rid), (c.Msg.DELETE_ROSPEC, rid), (c.Msg.CLOSE_CONNECTION, b"")):
            self._msg_id = (self._msg_id + 1) & 0xFFFFFFFF
            writer.write(c.encode_message(msg_type, self._msg_id, body))
        await writer.drain()
        assert self._reader is not None
        while True:  # until CLOSE_CONNECTION_RESPONSE or EOF (bounded by the caller's timeout)
            data = await self._reader.read(65536)
            if not data:
                return
            for msg in self._decoder.feed(data):
                if msg.type == c.Msg.CLOSE_CONNECTION_RESPONSE:
                    return

    # ---- messages ------------------------------------------------------------------------------
    def _report(self, msg: c.Message) -> list[Reading]:
        try:
            tags = c.decode_ro_access_report(msg.body, self._carry)
        except FrameError as exc:
            return [self._malformed(f"RO_ACCESS_REPORT {msg.msg_id}: {exc.reason}", msg.body)]
        self.counters["reports"] += 1
        self.counters["tags"] += len(tags)
        now = self.ctx.clock.now()
        dev = self.device_id
        rp = self.config.read_point
        return [
            TagRead(device_id=dev, time=now, epc=epc, antenna=ant, read_point=rp(ant),
                    rssi_dbm=None if rssi is None else float(rssi),
                    seen_us=last if last is not None else first, count=count)
            for epc, ant, rssi, first, last, count in tags
        ]

    def _malformed(self, reason: str, raw: bytes) -> Malformed:
        self.counters["malformed"] += 1
        return Malformed(device_id=self.device_id, time=self.ctx.clock.now(), reason=reason, raw=raw[:256])

    @staticmethod
    def _status_text(msg: c.Message) -> str:
        try:
            s = c.decode_status(msg.body)
        except FrameError as exc:
            return exc.reason
        return f"code {s.code} {s.description!r}"
