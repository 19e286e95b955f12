"""An LLRP reader emulator: asyncio TCP server on 127.0.0.1 speaking the subset our driver uses, in real
binary frames (LLRP 1.1 layouts, encoded with `drivers/rfid/llrp_codec.py`).

It greets with READER_EVENT_NOTIFICATION/ConnectionAttemptEvent, answers GET_READER_CAPABILITIES,
SET_READER_CONFIG (keepalive period), ADD/DELETE/ENABLE/START/STOP_ROSPEC and CLOSE_CONNECTION, sends
one RO_ACCESS_REPORT per AISpec cycle with exactly the fields the ROSpec's TagReportContentSelector enables,
sends KEEPALIVEs and counts the ACKs, and refuses a second concurrent client (status 2 to it, status 4
"another connection attempted" to the client it keeps). Fault hooks for tests: `inject`, `drop_client`,
`clock_offset_us` (a reader whose clock is wrong).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from drivers.rfid import llrp_codec as c
from drivers.rfid.reads import to_us
from edge.clock import Clock, SystemClock
from firmware_sim.rfid.population import Population


@dataclass(slots=True)
class ReaderStats:
    """What the emulator saw (tests assert on it)."""

    connections: int = 0
    refused: int = 0
    keepalive_acks: int = 0
    reports: int = 0
    requests: list[str] = field(default_factory=list)


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
    ) -> None:
        self.population = population
        self.clock = clock or SystemClock()
        self.host = host
        self.port = port
        self.keepalive_override = keepalive_s
        self.clock_offset_us = 0
        self.stats = ReaderStats()
        self._server: asyncio.Server | None = None
        self._active: asyncio.StreamWriter | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._ids = 1000

    async def start(self) -> int:
        """Listen; return the port."""
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        """Close the listener and every connection."""
        if self._server is not None:
            self._server.close()
        if self._active is not None:
            self._active.transport.abort()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    @property
    def connected(self) -> bool:
        """Whether a client holds the session."""
        return self._active is not None

    def inject(self, raw: bytes) -> None:
        """Write raw bytes to the current client (malformed frames, split frames)."""
        if self._active is not None:
            self._active.write(raw)

    def drop_client(self, partial: bytes = b"") -> None:
        """Reset the current connection, optionally after writing the first bytes of a frame."""
        if self._active is not None:
            if partial:
                self._active.write(partial)
            self._active.transport.abort()

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

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            if self._active is not None:
                self.stats.refused += 1
                writer.write(c.encode_message(c.Msg.READER_EVENT_NOTIFICATION, self._next_id(),
                                              c.reader_event(2, utc_us=self.now_us())))  # fmt: skip
                self._active.write(c.encode_message(c.Msg.READER_EVENT_NOTIFICATION, self._next_id(),
                                                    c.reader_event(4, utc_us=self.now_us())))  # fmt: skip
                with contextlib.suppress(Exception):
                    await writer.drain()
                    writer.close()
                return
            self._active = writer
            self.stats.connections += 1
            await _Session(self, reader, writer).run()
        finally:
            if self._active is writer:
                self._active = None
            writer.transport.abort()
            if task is not None:
                self._tasks.discard(task)


class _Session:
    """One client connection's protocol state."""

    def __init__(self, sim: LlrpReaderSim, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sim = sim
        self.reader = reader
        self.writer = writer
        self.rospecs: dict[int, tuple[int, int]] = {}  # id -> (cycle ms, selector)
        self.enabled: set[int] = set()
        self.reporting: asyncio.Task[None] | None = None
        self.keepalive: asyncio.Task[None] | None = None

    def send(self, msg_type: int, msg_id: int, body: bytes = b"") -> None:
        self.writer.write(c.encode_message(msg_type, msg_id, body))

    async def run(self) -> None:
        self.send(c.Msg.READER_EVENT_NOTIFICATION, self.sim._next_id(), c.reader_event(0, utc_us=self.sim.now_us()))
        dec = c.FrameDecoder()
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    return
                for msg in dec.feed(data):
                    if not self.handle(msg):
                        await self.writer.drain()
                        return
                await self.writer.drain()
        except (c.LlrpStreamError, ConnectionError):
            return
        finally:
            for t in (self.reporting, self.keepalive):
                if t is not None:
                    t.cancel()

    def handle(self, msg: c.Message) -> bool:
        """Answer one client message; False ends the session."""
        t = msg.type
        ok = c.llrp_status()
        with contextlib.suppress(ValueError):
            self.sim.stats.requests.append(c.Msg(t).name)
        if t == c.Msg.KEEPALIVE_ACK:
            self.sim.stats.keepalive_acks += 1
        elif t == c.Msg.GET_READER_CAPABILITIES:
            fw = b"7.5.0-sim"
            caps = c.tlv(c.P.GENERAL_DEVICE_CAPABILITIES, struct.pack("!HHIIH", 4, 0xC000, 25882, 2001, len(fw)) + fw)
            self.send(c.Msg.GET_READER_CAPABILITIES_RESPONSE, msg.msg_id, ok + caps)
        elif t == c.Msg.SET_READER_CONFIG:
            self.configure(msg.body)
            self.send(c.Msg.SET_READER_CONFIG_RESPONSE, msg.msg_id, ok)
        elif t == c.Msg.ADD_ROSPEC:
            try:
                rid, cycle, sel = parse_rospec(msg.body)
            except Exception:  # a bad ROSpec is the client's error, answered as such
                self.send(c.Msg.ADD_ROSPEC_RESPONSE, msg.msg_id, c.llrp_status(100, "cannot parse ROSpec"))
                return True
            if rid in self.rospecs:
                self.send(c.Msg.ADD_ROSPEC_RESPONSE, msg.msg_id, c.llrp_status(300, f"ROSpec {rid} exists"))
                return True
            self.rospecs[rid] = (cycle, sel)
            self.send(c.Msg.ADD_ROSPEC_RESPONSE, msg.msg_id, ok)
        elif t in (c.Msg.DELETE_ROSPEC, c.Msg.ENABLE_ROSPEC, c.Msg.START_ROSPEC, c.Msg.STOP_ROSPEC):
            rid = struct.unpack_from("!I", msg.body)[0] if len(msg.body) >= 4 else -1
            self.send(c.RESPONSE_OF[c.Msg(t)], msg.msg_id, self.rospec_op(c.Msg(t), rid))
        elif t == c.Msg.CLOSE_CONNECTION:
            self.send(c.Msg.CLOSE_CONNECTION_RESPONSE, msg.msg_id, ok)
            return False
        elif t not in (c.Msg.KEEPALIVE_ACK,):
            self.send(c.Msg.ERROR_MESSAGE, msg.msg_id, c.llrp_status(109, f"message type {t} not supported"))
        return True

    def configure(self, body: bytes) -> None:
        interval_ms = 0
        with contextlib.suppress(Exception):
            where = c.find_param(body, c.P.KEEPALIVE_SPEC, 1)
            if where is not None:
                kind, interval_ms = struct.unpack_from("!BI", body, where[0])
                interval_ms = interval_ms if kind == 1 else 0
        if self.sim.keepalive_override is not None:
            interval_ms = int(self.sim.keepalive_override * 1000)
        if self.keepalive is not None:
            self.keepalive.cancel()
            self.keepalive = None
        if interval_ms:
            self.keepalive = self.sim._spawn(self.keepalives(interval_ms / 1000))

    def rospec_op(self, op: c.Msg, rid: int) -> bytes:
        if op == c.Msg.DELETE_ROSPEC:
            for r in list(self.rospecs) if rid == 0 else [rid]:
                if r not in self.rospecs:
                    return c.llrp_status(300, f"no ROSpec {r}")
                del self.rospecs[r]
                self.enabled.discard(r)
                self.stop_reports()
            return c.llrp_status()
        if rid not in self.rospecs:
            return c.llrp_status(300, f"no ROSpec {rid}")
        if op == c.Msg.ENABLE_ROSPEC:
            self.enabled.add(rid)
        elif op == c.Msg.START_ROSPEC:
            if rid not in self.enabled:
                return c.llrp_status(300, f"ROSpec {rid} is not enabled")
            self.stop_reports()
            self.reporting = self.sim._spawn(self.reports(*self.rospecs[rid]))
        elif op == c.Msg.STOP_ROSPEC:
            self.stop_reports()
        return c.llrp_status()

    def stop_reports(self) -> None:
        if self.reporting is not None:
            self.reporting.cancel()
            self.reporting = None

    async def keepalives(self, period: float) -> None:
        while True:
            await self.sim.clock.sleep(period)
            self.send(c.Msg.KEEPALIVE, self.sim._next_id())

    async def reports(self, cycle_ms: int, selector: int) -> None:
        while True:
            start = self.sim.now_us()
            await self.sim.clock.sleep(cycle_ms / 1000)
            end = self.sim.now_us()
            body = b"".join(
                c.tag_report_data(
                    bytes.fromhex(r.epc),
                    antenna=r.antenna if selector & c.SEL_ANTENNA_ID else None,
                    rssi=r.rssi if selector & c.SEL_PEAK_RSSI else None,
                    first_us=start if selector & c.SEL_FIRST_SEEN else None,
                    last_us=end if selector & c.SEL_LAST_SEEN else None,
                    count=r.count if selector & c.SEL_TAG_SEEN_COUNT else None,
                )
                for r in self.sim.population.cycle()
            )
            self.send(c.Msg.RO_ACCESS_REPORT, self.sim._next_id(), body)
            self.sim.stats.reports += 1


def parse_rospec(body: bytes) -> tuple[int, int, int]:
    """(ROSpec id, AISpec duration ms, TagReportContentSelector flags) of an ADD_ROSPEC body."""
    where = c.find_param(body, c.P.ROSPEC)
    if where is None:
        raise ValueError("no ROSpec")
    s, e = where
    rid = struct.unpack_from("!I", body, s)[0]
    cycle, selector = 1000, c.SELECTOR_WE_USE
    for t, ps, pe in c.iter_params(body, s + 6, e):
        if t == c.P.AISPEC:
            n = struct.unpack_from("!H", body, ps)[0]
            stop = c.find_param(body, c.P.AISPEC_STOP_TRIGGER, ps + 2 + 2 * n, pe)
            if stop is not None:
                kind, duration = struct.unpack_from("!BI", body, stop[0])
                cycle = duration if kind == 1 and duration else cycle
        elif t == c.P.RO_REPORT_SPEC:
            sel = c.find_param(body, c.P.TAG_REPORT_CONTENT_SELECTOR, ps + 3, pe)
            if sel is not None:
                selector = struct.unpack_from("!H", body, sel[0])[0]
    return rid, cycle, selector
