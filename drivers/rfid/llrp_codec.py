"""Binary codec for the subset of LLRP (EPCglobal Low Level Reader Protocol 1.0.1 / 1.1) that we speak.

Spec: EPCglobal LLRP 1.0.1 (messages §16.1, parameters §16.2 of 1.0.1; §15/§17 of 1.1: the section numbers
below name 1.1 where they say so); type numbers and TV lengths were checked against the spec tables (and sllurp's
`llrp_proto.py`/`llrp_decoder.py`, read, never imported).

Wire layout (all big-endian):
- message header: u16 = 3 reserved bits | 3-bit version | 10-bit type, u32 length (header included),
  u32 message id;
- TV parameter: u8 = 1 | 7-bit type, then a body whose length is fixed per type (`TV_LENGTHS`);
- TLV parameter: u16 = 6 reserved bits | 10-bit type, u16 length (header included), body.

The ROSpec we install (`rospec`; ROSpec parameter LLRP 1.0.1 §10.2.1, binary §16.2.4.1, ROSpec states
and triggers §6.1): a Periodic start trigger (Offset 0, Period = the cycle) with a Duration ROSpec stop trigger a little
shorter than the period, one
AISpec with a Null stop trigger (it runs until its ROSpec is done) and ROReportTrigger 2 with N = 0 (one
report at the end of every ROSpec run). By the spec's state machine the ROSpec goes Inactive -> Active on
every period and back to Inactive after the Duration, so a spec-following reader inventories for ever
without another START_ROSPEC, and every cycle is visible as a ROSpecEvent start/end pair. (A Null start trigger
with a Duration AISpec, our old ROSpec, is done after ONE AISpec: the reader goes quiet.)

Efficient reporting: a reader may leave out an enabled optional TagReportData field (AntennaID, PeakRSSI,
timestamps, TagSeenCount) whose value is unchanged since the last one of that type it sent on this
connection; the client must use the previous value (LLRP 1.0.1 §13.2.3 (ii): "the Client SHALL assume
that the value is identical to the last parameter of the same type received").
`decode_ro_access_report(body, carry)` does that with a per-connection `carry` list.

Resync policy of the streaming `FrameDecoder`: LLRP has no frame marker, so a message header with an
impossible length (below 10 or above `MAX_MESSAGE_LEN`, 1 MiB) or version means the byte stream can no
longer be trusted: `feed` raises `LlrpStreamError` and the driver turns it into a `DeviceError` (the
supervisor reconnects). A frame whose header arrived but whose body does not complete within a bounded
time is the driver's to detect (`FrameDecoder.announced` says how long the pending frame claims to be). A
well-framed message with a bad parameter inside (bad TLV length, truncated TV) is skipped as one
`FrameError` (counted as `Malformed`), and decoding continues with the next message.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum

from edge.errors import EdgeError, FrameError

LLRP_PORT = 5084
VERSION = 1  # LLRP 1.0.1; 1.1 readers announce 2, we accept both
HEADER = struct.Struct("!HII")
HEADER_LEN = HEADER.size  # 10
MAX_MESSAGE_LEN = 1024 * 1024
"""Largest message we accept: 1 MiB holds ~24,000 TagReportData of our 43-byte layout, over ten times the
tags one fixed reader sees in a store cycle; a header announcing more means the stream lost sync."""


class Msg(IntEnum):
    """LLRP message types (LLRP 1.1 §15)."""

    GET_READER_CAPABILITIES = 1
    SET_READER_CONFIG = 3
    CLOSE_CONNECTION_RESPONSE = 4
    GET_READER_CAPABILITIES_RESPONSE = 11
    SET_READER_CONFIG_RESPONSE = 13
    CLOSE_CONNECTION = 14
    ADD_ROSPEC = 20
    DELETE_ROSPEC = 21
    START_ROSPEC = 22
    STOP_ROSPEC = 23
    ENABLE_ROSPEC = 24
    DISABLE_ROSPEC = 25
    ADD_ROSPEC_RESPONSE = 30
    DELETE_ROSPEC_RESPONSE = 31
    START_ROSPEC_RESPONSE = 32
    STOP_ROSPEC_RESPONSE = 33
    ENABLE_ROSPEC_RESPONSE = 34
    DISABLE_ROSPEC_RESPONSE = 35
    GET_REPORT = 60
    RO_ACCESS_REPORT = 61
    KEEPALIVE = 62
    READER_EVENT_NOTIFICATION = 63
    ENABLE_EVENTS_AND_REPORTS = 64
    KEEPALIVE_ACK = 72
    ERROR_MESSAGE = 100


RESPONSE_OF = {
    Msg.GET_READER_CAPABILITIES: Msg.GET_READER_CAPABILITIES_RESPONSE,
    Msg.SET_READER_CONFIG: Msg.SET_READER_CONFIG_RESPONSE,
    Msg.CLOSE_CONNECTION: Msg.CLOSE_CONNECTION_RESPONSE,
    Msg.ADD_ROSPEC: Msg.ADD_ROSPEC_RESPONSE,
    Msg.DELETE_ROSPEC: Msg.DELETE_ROSPEC_RESPONSE,
    Msg.START_ROSPEC: Msg.START_ROSPEC_RESPONSE,
    Msg.STOP_ROSPEC: Msg.STOP_ROSPEC_RESPONSE,
    Msg.ENABLE_ROSPEC: Msg.ENABLE_ROSPEC_RESPONSE,
    Msg.DISABLE_ROSPEC: Msg.DISABLE_ROSPEC_RESPONSE,
}
"""Request type -> response type."""


class P(IntEnum):
    """LLRP parameter types (TV types < 128, TLV types >= 128; LLRP 1.1 §16/§17)."""

    # TV
    ANTENNA_ID = 1
    FIRST_SEEN_UTC = 2
    FIRST_SEEN_UPTIME = 3
    LAST_SEEN_UTC = 4
    LAST_SEEN_UPTIME = 5
    PEAK_RSSI = 6
    CHANNEL_INDEX = 7
    TAG_SEEN_COUNT = 8
    ROSPEC_ID = 9
    INVENTORY_PARAMETER_SPEC_ID = 10
    C1G2_CRC = 11
    C1G2_PC = 12
    EPC_96 = 13
    SPEC_INDEX = 14
    # TLV
    UTC_TIMESTAMP = 128
    UPTIME = 129
    GENERAL_DEVICE_CAPABILITIES = 137
    ROSPEC = 177
    RO_BOUNDARY_SPEC = 178
    ROSPEC_START_TRIGGER = 179
    PERIODIC_TRIGGER_VALUE = 180
    ROSPEC_STOP_TRIGGER = 182
    AISPEC = 183
    AISPEC_STOP_TRIGGER = 184
    TAG_OBSERVATION_TRIGGER = 185
    INVENTORY_PARAMETER_SPEC = 186
    KEEPALIVE_SPEC = 220
    EVENTS_AND_REPORTS = 226
    RO_REPORT_SPEC = 237
    TAG_REPORT_CONTENT_SELECTOR = 238
    TAG_REPORT_DATA = 240
    EPC_DATA = 241
    READER_EVENT_NOTIFICATION_SPEC = 244
    EVENT_NOTIFICATION_STATE = 245
    READER_EVENT_NOTIFICATION_DATA = 246
    ROSPEC_EVENT = 249
    READER_EXCEPTION_EVENT = 252
    ANTENNA_EVENT = 255
    CONNECTION_ATTEMPT_EVENT = 256
    CONNECTION_CLOSE_EVENT = 257
    LLRP_STATUS = 287


TV_LENGTHS: dict[int, int] = {
    1: 2, 2: 8, 3: 8, 4: 8, 5: 8, 6: 1, 7: 2, 8: 2, 9: 4, 10: 2,
    11: 2, 12: 2, 13: 12, 14: 2, 15: 2, 16: 4, 17: 2, 18: 4, 19: 2, 20: 2,
}  # fmt: skip
"""TV parameter type -> body length in bytes (LLRP 1.1 TV-encoded parameters table)."""

CONNECTION_STATUS = {
    0: "Success",
    1: "Failed (a Reader initiated connection already exists)",
    2: "Failed (a Client initiated connection already exists)",
    3: "Failed (any reason other than a connection already exists)",
    4: "Another connection attempted",
}
"""ConnectionAttemptEvent status codes (LLRP 1.1 §16.2.7.6.10)."""

# TagReportContentSelector flag bits, most significant first (LLRP 1.1 §17.2.7.1)
SEL_ROSPEC_ID = 1 << 15
SEL_SPEC_INDEX = 1 << 14
SEL_INV_PARAM_SPEC_ID = 1 << 13
SEL_ANTENNA_ID = 1 << 12
SEL_CHANNEL_INDEX = 1 << 11
SEL_PEAK_RSSI = 1 << 10
SEL_FIRST_SEEN = 1 << 9
SEL_LAST_SEEN = 1 << 8
SEL_TAG_SEEN_COUNT = 1 << 7
SEL_ACCESS_SPEC_ID = 1 << 6
SELECTOR_WE_USE = SEL_ANTENNA_ID | SEL_PEAK_RSSI | SEL_FIRST_SEEN | SEL_LAST_SEEN | SEL_TAG_SEEN_COUNT


# EventNotificationState event types (LLRP 1.0.1 §13.2.5.1 / 1.1 §17.2.7.5.1)
EVENT_ROSPEC = 2
EVENT_READER_EXCEPTION = 4
EVENT_ANTENNA = 8

# ROSpecEvent EventType (LLRP 1.1 §17.2.7.6.4)
ROSPEC_STARTED, ROSPEC_ENDED, ROSPEC_PREEMPTED = 0, 1, 2


class LlrpStreamError(EdgeError):
    """The byte stream lost framing (impossible header); the connection must be dropped."""

    def __init__(self, reason: str, raw: bytes = b"") -> None:
        self.reason = reason
        self.raw = raw
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class Message:
    """One framed LLRP message: type, id and the raw body (parameters)."""

    type: int
    msg_id: int
    body: bytes
    version: int = VERSION


# ---- encoding -------------------------------------------------------------------------------


def encode_message(msg_type: int, msg_id: int, body: bytes = b"", version: int = VERSION) -> bytes:
    """Frame a message: header (version, type, length, id) + body."""
    return HEADER.pack(((version & 7) << 10) | (msg_type & 0x3FF), HEADER_LEN + len(body), msg_id) + body


def tlv(param_type: int, body: bytes = b"") -> bytes:
    """Encode a TLV parameter."""
    return struct.pack("!HH", param_type & 0x3FF, 4 + len(body)) + body


def tv(param_type: int, body: bytes) -> bytes:
    """Encode a TV parameter (body length must match `TV_LENGTHS`)."""
    if TV_LENGTHS.get(param_type) != len(body):
        raise ValueError(f"TV parameter {param_type} takes {TV_LENGTHS.get(param_type)} bytes, got {len(body)}")
    return bytes((0x80 | param_type,)) + body


def llrp_status(code: int = 0, description: str = "") -> bytes:
    """LLRPStatus parameter (code 0 = Success)."""
    desc = description.encode()
    return tlv(P.LLRP_STATUS, struct.pack("!HH", code, len(desc)) + desc)


def u32(value: int) -> bytes:
    """Big-endian u32 (ROSpec ids in DELETE/ENABLE/START/STOP_ROSPEC bodies)."""
    return struct.pack("!I", value)


def rospec(
    rospec_id: int,
    *,
    antennas: tuple[int, ...] = (0,),
    cycle_ms: int = 1000,
    selector: int = SELECTOR_WE_USE,
) -> bytes:
    """Our continuous-inventory ROSpec (see the module docstring): starts every `cycle_ms` (Periodic start
    trigger, LLRP 1.0.1 §10.2.1.1.1), runs `on_air_ms(cycle_ms)` (Duration ROSpec stop trigger), one AISpec
    on `antennas` (0 = all) with a Null stop trigger, one report per run (ROReportTrigger 2, N = 0)."""
    periodic = tlv(P.PERIODIC_TRIGGER_VALUE, struct.pack("!II", 0, cycle_ms))  # Offset 0, Period
    start = tlv(P.ROSPEC_START_TRIGGER, bytes((2,)) + periodic)  # 2 = Periodic
    stop = tlv(P.ROSPEC_STOP_TRIGGER, struct.pack("!BI", 1, on_air_ms(cycle_ms)))  # 1 = Duration
    boundary = tlv(P.RO_BOUNDARY_SPEC, start + stop)
    ai_stop = tlv(P.AISPEC_STOP_TRIGGER, struct.pack("!BI", 0, 0))  # 0 = Null: until the ROSpec is done
    inv = tlv(P.INVENTORY_PARAMETER_SPEC, struct.pack("!HB", 1, 1))  # id 1, EPCGlobalClass1Gen2
    aispec = tlv(P.AISPEC, struct.pack("!H", len(antennas)) + b"".join(struct.pack("!H", a) for a in antennas)
                 + ai_stop + inv)  # fmt: skip
    # ROReportTrigger 2 = Upon_N_Tags_Or_End_Of_ROSpec with N = 0: one report at the end of every run
    report = tlv(P.RO_REPORT_SPEC, struct.pack("!BH", 2, 0) + tlv(P.TAG_REPORT_CONTENT_SELECTOR,
                                                                  struct.pack("!H", selector)))
    return tlv(P.ROSPEC, struct.pack("!IBB", rospec_id, 0, 0) + boundary + aispec + report)


def on_air_ms(cycle_ms: int) -> int:
    """How long each periodic ROSpec run inventories: the period minus a 10 % gap (at least 5 ms), so a run
    is done before the next period starts the ROSpec again (a period that finds it Active is lost)."""
    return max(1, cycle_ms - max(5, cycle_ms // 10))


def set_reader_config(keepalive_ms: int, reset: bool = False) -> bytes:
    """SET_READER_CONFIG body: event notifications (ROSpec, reader exception, antenna), periodic keepalives."""
    events = tlv(P.READER_EVENT_NOTIFICATION_SPEC, b"".join(
        tlv(P.EVENT_NOTIFICATION_STATE, struct.pack("!HB", kind, 0x80))
        for kind in (EVENT_ROSPEC, EVENT_READER_EXCEPTION, EVENT_ANTENNA)))  # fmt: skip
    keepalive = tlv(P.KEEPALIVE_SPEC, struct.pack("!BI", 1 if keepalive_ms else 0, keepalive_ms))
    hold = tlv(P.EVENTS_AND_REPORTS, bytes((0,)))  # do not hold reports across reconnects
    return bytes((0x80 if reset else 0,)) + events + keepalive + hold


def reader_event(status: int | None = None, *, close: bool = False, utc_us: int = 0) -> bytes:
    """READER_EVENT_NOTIFICATION body with a UTCTimestamp and a connection attempt/close event."""
    inner = tlv(P.UTC_TIMESTAMP, struct.pack("!Q", utc_us))
    if status is not None:
        inner += tlv(P.CONNECTION_ATTEMPT_EVENT, struct.pack("!H", status))
    if close:
        inner += tlv(P.CONNECTION_CLOSE_EVENT)
    return tlv(P.READER_EVENT_NOTIFICATION_DATA, inner)


def tag_report_data(
    epc: bytes,
    *,
    antenna: int | None = None,
    rssi: int | None = None,
    first_us: int | None = None,
    last_us: int | None = None,
    count: int | None = None,
) -> bytes:
    """One TagReportData (EPC-96 TV when the EPC is 96 bits, else EPCData TLV) with the enabled fields."""
    body = tv(P.EPC_96, epc) if len(epc) == 12 else tlv(P.EPC_DATA, struct.pack("!H", len(epc) * 8) + epc)
    if antenna is not None:
        body += tv(P.ANTENNA_ID, struct.pack("!H", antenna))
    if rssi is not None:
        body += tv(P.PEAK_RSSI, struct.pack("!b", rssi))
    if first_us is not None:
        body += tv(P.FIRST_SEEN_UTC, struct.pack("!Q", first_us))
    if last_us is not None:
        body += tv(P.LAST_SEEN_UTC, struct.pack("!Q", last_us))
    if count is not None:
        body += tv(P.TAG_SEEN_COUNT, struct.pack("!H", count))
    return tlv(P.TAG_REPORT_DATA, body)


# ---- decoding -------------------------------------------------------------------------------


class FrameDecoder:
    """Streaming framer: feed bytes as they arrive, get whole messages back."""

    __slots__ = ("_buf", "max_len")

    def __init__(self, max_len: int = MAX_MESSAGE_LEN) -> None:
        self._buf = bytearray()
        self.max_len = max_len

    @property
    def pending(self) -> int:
        """Bytes buffered that do not yet form a whole message."""
        return len(self._buf)

    @property
    def announced(self) -> int | None:
        """The length the pending (incomplete) frame's header announces, None if no header is buffered."""
        if len(self._buf) < HEADER_LEN:
            return None
        return int(HEADER.unpack_from(self._buf)[1])

    def feed(self, data: bytes) -> list[Message]:
        """Add bytes; return every complete message. Raises `LlrpStreamError` when framing is lost."""
        buf = self._buf
        buf += data
        out: list[Message] = []
        pos = 0
        n = len(buf)
        unpack = HEADER.unpack_from
        while n - pos >= HEADER_LEN:
            word, length, msg_id = unpack(buf, pos)
            version = (word >> 10) & 7
            if length < HEADER_LEN or length > self.max_len or version not in (1, 2):
                raw = bytes(buf[pos : pos + HEADER_LEN])
                buf.clear()
                raise LlrpStreamError(f"bad LLRP header (version {version}, length {length}): stream lost sync", raw)
            if n - pos < length:
                break
            out.append(Message(word & 0x3FF, msg_id, bytes(buf[pos + HEADER_LEN : pos + length]), version))
            pos += length
        if pos:
            del buf[:pos]
        return out


def iter_params(body: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[int, int, int]]:
    """Yield (type, body_start, body_end) of each parameter in body[start:end]; FrameError if one is bad."""
    end = len(body) if end is None else end
    pos = start
    while pos < end:
        first = body[pos]
        if first & 0x80:
            ptype = first & 0x7F
            size = TV_LENGTHS.get(ptype)
            if size is None:
                raise FrameError(f"unknown TV parameter type {ptype}: its length is unknown", body)
            if pos + 1 + size > end:
                raise FrameError(f"truncated TV parameter {ptype}", body)
            yield ptype, pos + 1, pos + 1 + size
            pos += 1 + size
        else:
            if pos + 4 > end:
                raise FrameError("truncated TLV parameter header", body)
            ptype = ((first << 8) | body[pos + 1]) & 0x3FF
            length = (body[pos + 2] << 8) | body[pos + 3]
            if length < 4 or pos + length > end:
                raise FrameError(f"TLV parameter {ptype} has bad length {length}", body)
            yield ptype, pos + 4, pos + length
            pos += length


def find_param(body: bytes, ptype: int, start: int = 0, end: int | None = None) -> tuple[int, int] | None:
    """(body_start, body_end) of the first parameter of `ptype` at this level, or None."""
    for t, s, e in iter_params(body, start, end):
        if t == ptype:
            return s, e
    return None


@dataclass(frozen=True, slots=True)
class Status:
    """A decoded LLRPStatus (code 0 = Success)."""

    code: int
    description: str

    @property
    def ok(self) -> bool:
        """Whether the reader accepted the request."""
        return self.code == 0


def decode_status(body: bytes) -> Status:
    """The LLRPStatus of a response or ERROR_MESSAGE body; FrameError if absent or malformed."""
    where = find_param(body, P.LLRP_STATUS)
    if where is None:
        raise FrameError("response without LLRPStatus", body)
    s, e = where
    if e - s < 4:
        raise FrameError("LLRPStatus too short", body)
    code, n = struct.unpack_from("!HH", body, s)
    if s + 4 + n > e:
        raise FrameError("LLRPStatus description overruns its parameter", body)
    return Status(code, body[s + 4 : s + 4 + n].decode("utf-8", "replace"))


@dataclass(frozen=True, slots=True)
class ReaderEvent:
    """What a READER_EVENT_NOTIFICATION said that we care about (LLRP 1.1 §17.2.7.6)."""

    utc_us: int | None = None
    connection_status: int | None = None
    connection_closed: bool = False
    rospec: tuple[tuple[int, int], ...] = ()  # ROSpecEvent (event type, ROSpec id)
    antenna: tuple[tuple[int, bool], ...] = ()  # AntennaEvent (antenna id, connected)
    exception: str | None = None  # ReaderExceptionEvent message


def decode_reader_event(body: bytes) -> ReaderEvent:
    """Decode READER_EVENT_NOTIFICATION (unknown events inside are skipped by length)."""
    where = find_param(body, P.READER_EVENT_NOTIFICATION_DATA)
    if where is None:
        raise FrameError("READER_EVENT_NOTIFICATION without ReaderEventNotificationData", body)
    utc: int | None = None
    status: int | None = None
    closed = False
    ros: list[tuple[int, int]] = []
    ants: list[tuple[int, bool]] = []
    exc: str | None = None
    for t, s, e in iter_params(body, *where):
        if t == P.UTC_TIMESTAMP and e - s >= 8:
            utc = struct.unpack_from("!Q", body, s)[0]
        elif t == P.CONNECTION_ATTEMPT_EVENT:
            if e - s < 2:
                raise FrameError("ConnectionAttemptEvent too short", body)
            status = struct.unpack_from("!H", body, s)[0]
        elif t == P.CONNECTION_CLOSE_EVENT:
            closed = True
        elif t == P.ROSPEC_EVENT:
            if e - s < 9:
                raise FrameError("ROSpecEvent too short", body)
            kind, rid = struct.unpack_from("!BI", body, s)
            ros.append((kind, rid))
        elif t == P.ANTENNA_EVENT:
            if e - s < 3:
                raise FrameError("AntennaEvent too short", body)
            kind, ant = struct.unpack_from("!BH", body, s)
            ants.append((ant, kind == 1))
        elif t == P.READER_EXCEPTION_EVENT:
            if e - s < 2:
                raise FrameError("ReaderExceptionEvent too short", body)
            n = struct.unpack_from("!H", body, s)[0]
            if s + 2 + n > e:
                raise FrameError("ReaderExceptionEvent message overruns its parameter", body)
            exc = body[s + 2 : s + 2 + n].decode("utf-8", "replace")
    return ReaderEvent(utc, status, closed, tuple(ros), tuple(ants), exc)


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """GeneralDeviceCapabilities, as far as we show it."""

    max_antennas: int
    manufacturer: int
    model: int
    firmware: str


def decode_capabilities(body: bytes) -> DeviceInfo | None:
    """GeneralDeviceCapabilities of a GET_READER_CAPABILITIES_RESPONSE, if present."""
    where = find_param(body, P.GENERAL_DEVICE_CAPABILITIES)
    if where is None:
        return None
    s, e = where
    if e - s < 14:
        raise FrameError("GeneralDeviceCapabilities too short", body)
    ants, _flags, manu, model, n = struct.unpack_from("!HHIIH", body, s)
    return DeviceInfo(ants, manu, model, body[s + 14 : min(e, s + 14 + n)].decode("utf-8", "replace"))


RawTag = tuple[str, int, int | None, int | None, int | None, int]
"""(EPC hex upper, antenna (0 = unknown), peak RSSI dBm, first seen µs, last seen µs, seen count)."""

Carry = list[int | None]
"""Per connection: the last AntennaID, PeakRSSI, FirstSeen, LastSeen, TagSeenCount received (efficient
reporting); start each connection with `new_carry()`."""


def new_carry() -> Carry:
    """An empty efficient-reporting memory for a new connection."""
    return [None, None, None, None, None]

# Fast path: the exact layout our own ROSpec asks for, in the spec's field order.
_FAST = struct.Struct("!HHB12sBHBbBQBQBH")
_FAST_LEN = _FAST.size  # 43 = 4 + 13 + 3 + 2 + 9 + 9 + 3
_TV = 0x80


def decode_ro_access_report(body: bytes, carry: Carry | None = None) -> list[RawTag]:
    """Decode every TagReportData of an RO_ACCESS_REPORT body; FrameError if any parameter is bad.

    Unknown parameters (at both levels) are skipped by length; a TagReportData without an EPC is
    a FrameError (a report that names no tag is not a read). With `carry` (the connection's memory), an
    optional field a TagReportData leaves out takes the last value received on the connection, and the
    values received update it; without it, an absent antenna is 0 and an absent count 1.
    """
    out: list[RawTag] = []
    append = out.append
    n = len(body)
    pos = 0
    fast = _FAST.unpack_from
    last_fast: RawTag | None = None  # the memory is updated from the last fast-path tag lazily
    while pos < n:
        if (n - pos >= _FAST_LEN and body[pos] == 0 and body[pos + 1] == 240 and body[pos + 2] == 0
                and body[pos + 3] == _FAST_LEN and body[pos + 4] == 0x8D):  # fmt: skip
            (_, _, _, epc, t1, ant, t6, rssi, t2, first, t4, last, t8, cnt) = fast(body, pos)
            if t1 == 0x81 and t6 == 0x86 and t2 == 0x82 and t4 == 0x84 and t8 == 0x88:
                last_fast = (epc.hex().upper(), ant, rssi, first, last, cnt)
                append(last_fast)
                pos += _FAST_LEN
                continue
        if body[pos] & 0x80:
            # TV parameters at report level (none defined for RO_ACCESS_REPORT): skip by table length
            ptype = body[pos] & 0x7F
            size = TV_LENGTHS.get(ptype)
            if size is None or pos + 1 + size > n:
                raise FrameError(f"bad TV parameter {ptype} in RO_ACCESS_REPORT", body)
            pos += 1 + size
            continue
        if pos + 4 > n:
            raise FrameError("truncated parameter header in RO_ACCESS_REPORT", body)
        ptype = ((body[pos] << 8) | body[pos + 1]) & 0x3FF
        length = (body[pos + 2] << 8) | body[pos + 3]
        if length < 4 or pos + length > n:
            raise FrameError(f"parameter {ptype} has bad length {length} in RO_ACCESS_REPORT", body)
        if ptype == P.TAG_REPORT_DATA:
            if carry is not None and last_fast is not None:
                carry[:] = last_fast[1:]
                last_fast = None
            append(_decode_tag_report_data(body, pos + 4, pos + length, carry))
        pos += length
    if carry is not None and last_fast is not None:
        carry[:] = last_fast[1:]
    return out


_U16 = struct.Struct("!H").unpack_from
_U64 = struct.Struct("!Q").unpack_from


def _decode_tag_report_data(body: bytes, start: int, end: int, carry: Carry | None) -> RawTag:
    """One TagReportData in any field order and with any fields left out (the general path; type numbers
    as int literals: comparing with the IntEnum members costs more than the parsing)."""
    epc: str | None = None
    ant: int | None = None
    rssi: int | None = None
    first: int | None = None
    last: int | None = None
    count: int | None = None
    for t, s, e in iter_params(body, start, end):
        if t == 13:  # EPC-96
            epc = body[s:e].hex().upper()
        elif t == 1:  # AntennaID
            ant = _U16(body, s)[0]
        elif t == 6:  # PeakRSSI, signed
            v = body[s]
            rssi = v - 256 if v > 127 else v
        elif t == 2:  # FirstSeenTimestampUTC
            first = _U64(body, s)[0]
        elif t == 4:  # LastSeenTimestampUTC
            last = _U64(body, s)[0]
        elif t == 8:  # TagSeenCount
            count = _U16(body, s)[0]
        elif t == 241:  # EPCData
            if e - s < 2:
                raise FrameError("EPCData too short", body)
            bits = _U16(body, s)[0]
            nbytes = (bits + 7) // 8
            if s + 2 + nbytes > e:
                raise FrameError(f"EPCData says {bits} bits but carries {e - s - 2} bytes", body)
            epc = body[s + 2 : s + 2 + nbytes].hex().upper()
    if epc is None:
        raise FrameError("TagReportData without an EPC", body)
    if carry is not None:
        got = [ant, rssi, first, last, count]
        for k, val in enumerate(got):
            if val is None:
                got[k] = carry[k]
            else:
                carry[k] = val
        ant, rssi, first, last, count = got
    return (epc, 0 if ant is None else ant, rssi, first, last, 1 if count is None else count)
