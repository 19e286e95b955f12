"""LLRP reader driver (`type: llrp`): asyncio client over TCP 5084 (EPCglobal LLRP 1.0.1/1.1).

Session: expect READER_EVENT_NOTIFICATION/ConnectionAttemptEvent (Success, else `DeviceError` saying
another client holds the reader), GET_READER_CAPABILITIES, SET_READER_CONFIG (keepalives, event
notifications), DELETE_ROSPEC(0), ADD_ROSPEC (continuous inventory; report selector AntennaID, PeakRSSI,
First/LastSeenTimestampUTC, TagSeenCount), ENABLE_ROSPEC, START_ROSPEC; then every RO_ACCESS_REPORT
becomes `TagRead`s and every KEEPALIVE is answered with KEEPALIVE_ACK. On the way out (`finally`):
STOP_ROSPEC, DELETE_ROSPEC, CLOSE_CONNECTION with a short timeout.

Errors: a bad parameter inside a well-framed message -> one `Malformed` and go on; a bad message header
(the stream lost sync), EOF, a silent reader (no keepalive for 3 periods) or a refused request ->
`DeviceError`, and the supervisor reconnects with backoff. The codec is `drivers/rfid/llrp_codec.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator

from drivers.base import DeviceOnline, DriverContext, Malformed, Reading
from drivers.rfid import llrp_codec as c
from drivers.rfid.config import LlrpConfig
from drivers.rfid.reads import TagRead
from edge.errors import DeviceError, FrameError

SHUTDOWN_TIMEOUT_S = 1.0


class LlrpDriver:
    """One LLRP reader."""

    def __init__(self, config: LlrpConfig, ctx: DriverContext) -> None:
        self.config = config
        self.ctx = ctx
        self.device_id = config.id
        self.counters = {"reports": 0, "tags": 0, "keepalives": 0, "malformed": 0, "other_client_attempts": 0}
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._decoder = c.FrameDecoder()
        self._backlog: deque[c.Message] = deque()  # messages that arrived while we awaited a response
        self._frames: deque[c.Message] = deque()  # decoded, not yet consumed
        self._msg_id = 0

    def _fail(self, reason: str) -> DeviceError:
        return DeviceError(self.device_id, reason)

    async def stream(self) -> AsyncIterator[Reading]:
        """Connect, configure, yield reads until cancelled; clean up politely."""
        cfg = self.config
        self._decoder = c.FrameDecoder()
        self._backlog.clear()
        self._frames.clear()
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(cfg.host, cfg.port), cfg.connect_timeout_s
            )
        except TimeoutError:
            raise self._fail(f"no TCP connection to {cfg.host}:{cfg.port} within {cfg.connect_timeout_s}s") from None
        session = False
        try:
            await self._hello()
            session = True
            caps = await self._request(c.Msg.GET_READER_CAPABILITIES, b"\x00")
            info = c.decode_capabilities(caps.body)
            await self._request(c.Msg.SET_READER_CONFIG,
                                c.set_reader_config(int(cfg.keepalive_s * 1000), cfg.reset_to_factory))  # fmt: skip
            await self._request(c.Msg.DELETE_ROSPEC, c.u32(0), tolerate=True)  # none may exist: fine
            await self._request(c.Msg.ADD_ROSPEC, c.rospec(cfg.rospec_id, cycle_ms=cfg.cycle_ms))
            await self._request(c.Msg.ENABLE_ROSPEC, c.u32(cfg.rospec_id))
            await self._request(c.Msg.START_ROSPEC, c.u32(cfg.rospec_id))
            detail = f"LLRP {cfg.host}:{cfg.port}"
            if info is not None:
                detail += f", vendor {info.manufacturer} model {info.model} fw {info.firmware}"
            yield DeviceOnline(device_id=self.device_id, time=self.ctx.clock.now(), detail=detail)
            idle = max(3 * cfg.keepalive_s, 3 * cfg.cycle_ms / 1000)
            while True:
                msg = self._backlog.popleft() if self._backlog else await self._next(idle)
                if msg.type == c.Msg.RO_ACCESS_REPORT:
                    for reading in self._report(msg):
                        yield reading
                elif msg.type == c.Msg.READER_EVENT_NOTIFICATION:
                    bad = self._reader_event(msg)
                    if bad is not None:
                        yield bad
                elif msg.type == c.Msg.ERROR_MESSAGE:
                    yield self._malformed(f"reader sent ERROR_MESSAGE: {self._status_text(msg)}", msg.body)
        finally:
            await self._close(session)

    # ---- session -------------------------------------------------------------------------------
    async def _hello(self) -> None:
        while True:
            msg = await self._next(self.config.connect_timeout_s, what="the reader's ConnectionAttemptEvent")
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
            msg = await self._next(self.config.reply_timeout_s, what=f"the answer to {msg_type.name}")
            if msg.type in (want, c.Msg.ERROR_MESSAGE) and msg.msg_id == msg_id:
                try:
                    status = c.decode_status(msg.body)
                except FrameError as exc:
                    raise self._fail(f"unreadable answer to {msg_type.name}: {exc.reason}") from None
                if not status.ok and not tolerate:
                    raise self._fail(f"reader refused {msg_type.name}: code {status.code} {status.description!r}")
                return msg
            self._backlog.append(msg)  # reports or events that arrived meanwhile: handled after setup

    async def _next(self, wait_s: float, what: str = "a keepalive or report") -> c.Message:
        """Next message that is not a KEEPALIVE (those are answered here)."""
        assert self._reader is not None
        while True:
            pending = self._frames
            if pending:
                msg = pending.popleft()
            else:
                try:
                    data = await asyncio.wait_for(self._reader.read(65536), wait_s)
                except TimeoutError:
                    raise self._fail(f"nothing from the reader for {wait_s:g}s while waiting for {what}") from None
                if not data:
                    left = self._decoder.pending
                    mid = f" in the middle of a frame ({left} bytes pending)" if left else ""
                    raise self._fail(f"the reader closed the connection{mid}")
                try:
                    pending.extend(self._decoder.feed(data))
                except c.LlrpStreamError as exc:
                    raise self._fail(f"{exc.reason}; reconnecting") from None
                continue
            if msg.type == c.Msg.KEEPALIVE:
                self.counters["keepalives"] += 1
                self._send(c.Msg.KEEPALIVE_ACK, msg.msg_id)
                continue
            return msg

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
            tags = c.decode_ro_access_report(msg.body)
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

    def _reader_event(self, msg: c.Message) -> Reading | None:
        try:
            ev = c.decode_reader_event(msg.body)
        except FrameError as exc:
            return self._malformed(f"READER_EVENT_NOTIFICATION: {exc.reason}", msg.body)
        if ev.connection_closed:
            raise self._fail("the reader announced it is closing the connection (ConnectionCloseEvent)")
        if ev.connection_status == 4:
            self.counters["other_client_attempts"] += 1
        return None

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
