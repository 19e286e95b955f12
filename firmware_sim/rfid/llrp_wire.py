"""The reader's side of the LLRP 1.0.1 binary encoding: what a fixed reader sends and how it reads requests.

Written from the EPCglobal LLRP 1.0.1 specification (llrp_1_0_1-standard-20070813.pdf, in sllurp's
repository), never from our driver's codec (drivers/rfid/llrp_codec.py): the simulator is evidence about
that codec only if the two were written apart. Section numbers below are LLRP 1.0.1's: the binary encoding
is §16 (messages §16.1, parameters §16.2), the meaning of each field is in §8-§15.

Wire layout (§16, all integers big-endian, "network order"):
- message (§16.1): u16 = 3 reserved bits (0) | 3-bit version (1 for LLRP 1.0.1) | 10-bit message type,
  u32 message length (header included: 10 for an empty message), u32 message id;
- TLV parameter (§16.2.1.1): u16 = 6 reserved bits (0) | 10-bit type (128-2047), u16 length (header
  included: 4 for an empty parameter), value;
- TV parameter (§16.2.1.2): u8 = 1 | 7-bit type (1-127), then a value whose length the type fixes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntEnum

VERSION = 1  # §16.1: "Implementations of LLRP based on this specification are using the value 0x1"
_HEADER = struct.Struct("!HII")
HEADER_LEN = 10  # §16.1: the length of a message without a value


class MsgType(IntEnum):
    """Message types (the "Message Type =" of each diagram in §16.1)."""

    GET_READER_CAPABILITIES = 1  # §16.1.1
    SET_READER_CONFIG = 3  # §16.1.38
    CLOSE_CONNECTION_RESPONSE = 4  # §16.1.41
    GET_READER_CAPABILITIES_RESPONSE = 11  # §16.1.2
    SET_READER_CONFIG_RESPONSE = 13  # §16.1.39
    CLOSE_CONNECTION = 14  # §16.1.40
    ADD_ROSPEC = 20  # §16.1.3
    DELETE_ROSPEC = 21  # §16.1.5
    START_ROSPEC = 22  # §16.1.7
    STOP_ROSPEC = 23  # §16.1.9
    ENABLE_ROSPEC = 24  # §16.1.11
    DISABLE_ROSPEC = 25  # §16.1.13
    ADD_ROSPEC_RESPONSE = 30  # §16.1.4
    DELETE_ROSPEC_RESPONSE = 31  # §16.1.6
    START_ROSPEC_RESPONSE = 32  # §16.1.8
    STOP_ROSPEC_RESPONSE = 33  # §16.1.10
    ENABLE_ROSPEC_RESPONSE = 34  # §16.1.12
    DISABLE_ROSPEC_RESPONSE = 35  # §16.1.14
    GET_REPORT = 60  # §16.1.29
    RO_ACCESS_REPORT = 61  # §16.1.30
    KEEPALIVE = 62  # §16.1.31
    READER_EVENT_NOTIFICATION = 63  # §16.1.33
    ENABLE_EVENTS_AND_REPORTS = 64  # §16.1.34
    KEEPALIVE_ACK = 72  # §16.1.32
    ERROR_MESSAGE = 100  # §16.1.35


RESPONSE_TO = {
    MsgType.GET_READER_CAPABILITIES: MsgType.GET_READER_CAPABILITIES_RESPONSE,
    MsgType.SET_READER_CONFIG: MsgType.SET_READER_CONFIG_RESPONSE,
    MsgType.CLOSE_CONNECTION: MsgType.CLOSE_CONNECTION_RESPONSE,
    MsgType.ADD_ROSPEC: MsgType.ADD_ROSPEC_RESPONSE,
    MsgType.DELETE_ROSPEC: MsgType.DELETE_ROSPEC_RESPONSE,
    MsgType.START_ROSPEC: MsgType.START_ROSPEC_RESPONSE,
    MsgType.STOP_ROSPEC: MsgType.STOP_ROSPEC_RESPONSE,
    MsgType.ENABLE_ROSPEC: MsgType.ENABLE_ROSPEC_RESPONSE,
    MsgType.DISABLE_ROSPEC: MsgType.DISABLE_ROSPEC_RESPONSE,
}
"""Request -> the response the reader answers it with (§16.1, each request's "_RESPONSE" message)."""


class Param(IntEnum):
    """Parameter types (the "Type =" of each diagram in §16.2); TV types are 1-127, TLV types 128-2047."""

    # TV (§16.2.7.3.x)
    ANTENNA_ID = 1  # §16.2.7.3.6
    FIRST_SEEN_UTC = 2  # §16.2.7.3.9
    FIRST_SEEN_UPTIME = 3  # §16.2.7.3.10
    LAST_SEEN_UTC = 4  # §16.2.7.3.11
    LAST_SEEN_UPTIME = 5  # §16.2.7.3.12
    PEAK_RSSI = 6  # §16.2.7.3.7
    CHANNEL_INDEX = 7  # §16.2.7.3.8
    TAG_SEEN_COUNT = 8  # §16.2.7.3.13
    ROSPEC_ID = 9  # §16.2.7.3.3
    INVENTORY_PARAMETER_SPEC_ID = 10  # §16.2.7.3.5
    EPC_96 = 13  # §16.2.7.3.2
    SPEC_INDEX = 14  # §16.2.7.3.4
    # TLV
    UTC_TIMESTAMP = 128  # §16.2.2.1
    GENERAL_DEVICE_CAPABILITIES = 137  # §16.2.3.1
    RECEIVE_SENSITIVITY_TABLE_ENTRY = 139  # §16.2.3.1.1
    PER_ANTENNA_AIR_PROTOCOL = 140  # §16.2.3.1.3
    GPIO_CAPABILITIES = 141  # §16.2.3.1.4
    ROSPEC = 177  # §16.2.4.1
    RO_BOUNDARY_SPEC = 178  # §16.2.4.1.1
    ROSPEC_START_TRIGGER = 179  # §16.2.4.1.1.1
    PERIODIC_TRIGGER_VALUE = 180  # §16.2.4.1.1.1.1
    ROSPEC_STOP_TRIGGER = 182  # §16.2.4.1.1.2
    AISPEC = 183  # §16.2.4.2
    AISPEC_STOP_TRIGGER = 184  # §16.2.4.2.1
    TAG_OBSERVATION_TRIGGER = 185  # §16.2.4.2.1.1
    INVENTORY_PARAMETER_SPEC = 186  # §16.2.4.2.2
    KEEPALIVE_SPEC = 220  # §16.2.6.4
    RO_REPORT_SPEC = 237  # §16.2.7.1
    TAG_REPORT_CONTENT_SELECTOR = 238  # §16.2.7.1.1
    TAG_REPORT_DATA = 240  # §16.2.7.3
    EPC_DATA = 241  # §16.2.7.3.1
    READER_EVENT_NOTIFICATION_SPEC = 244  # §16.2.7.5
    EVENT_NOTIFICATION_STATE = 245  # §16.2.7.5.1
    READER_EVENT_NOTIFICATION_DATA = 246  # §16.2.7.6
    ROSPEC_EVENT = 249  # §16.2.7.6.3
    READER_EXCEPTION_EVENT = 252  # §16.2.7.6.6
    AISPEC_EVENT = 254  # §16.2.7.6.8
    ANTENNA_EVENT = 255  # §16.2.7.6.9
    CONNECTION_ATTEMPT_EVENT = 256  # §16.2.7.6.10
    CONNECTION_CLOSE_EVENT = 257  # §16.2.7.6.11
    LLRP_STATUS = 287  # §16.2.8.1


TV_VALUE_LEN: dict[int, int] = {
    1: 2,  # AntennaID: u16 (§16.2.7.3.6)
    2: 8,  # FirstSeenTimestampUTC: u64 µs (§16.2.7.3.9)
    3: 8,  # FirstSeenTimestampUptime: u64 µs (§16.2.7.3.10)
    4: 8,  # LastSeenTimestampUTC: u64 µs (§16.2.7.3.11)
    5: 8,  # LastSeenTimestampUptime: u64 µs (§16.2.7.3.12)
    6: 1,  # PeakRSSI: s8 dBm (§16.2.7.3.7)
    7: 2,  # ChannelIndex: u16 (§16.2.7.3.8)
    8: 2,  # TagSeenCount: u16 (§16.2.7.3.13)
    9: 4,  # ROSpecID: u32 (§16.2.7.3.3)
    10: 2,  # InventoryParameterSpecID: u16 (§16.2.7.3.5)
    11: 2,  # C1G2CRC: u16 (§16.3.1.5.3)
    12: 2,  # C1G2PC: u16 (§16.3.1.5.2)
    13: 12,  # EPC-96: 96 bits (§16.2.7.3.2)
    14: 2,  # SpecIndex: u16 (§16.2.7.3.4)
    15: 2,  # ClientRequestOpSpecResult: u16 OpSpecID (§16.2.7.3.14)
    16: 4,  # AccessSpecID: u32 (§16.2.7.3.15)
    17: 2,  # OpSpecID: u16 (§16.2.7.6.6.1)
    18: 4,  # C1G2SingulationDetails: u16 collision slots, u16 empty slots (§16.3.1.5.4)
}
"""TV parameter type -> length of its value in octets (a TV parameter has no length field: §16.2.1.2)."""

# LLRPStatus StatusCode (§14.2.1)
M_SUCCESS = 0
M_PARAMETER_ERROR = 100
M_FIELD_ERROR = 101
M_MISSING_PARAMETER = 103
M_UNSUPPORTED_MESSAGE = 109
M_UNSUPPORTED_VERSION = 110
A_INVALID = 300

# EventNotificationState EventType (§13.2.5.1)
EVENT_HOPPING, EVENT_GPI, EVENT_ROSPEC, EVENT_BUFFER_WARNING = 0, 1, 2, 3
EVENT_READER_EXCEPTION, EVENT_RF_SURVEY, EVENT_AISPEC, EVENT_AISPEC_WITH_DETAILS, EVENT_ANTENNA = 4, 5, 6, 7, 8

# ROSpecEvent EventType (§13.2.6.4)
ROSPEC_START, ROSPEC_END, ROSPEC_PREEMPTED = 0, 1, 2
# AntennaEvent EventType (§13.2.6.10)
ANTENNA_DISCONNECTED, ANTENNA_CONNECTED = 0, 1
# ConnectionAttemptEvent Status (§13.2.6.11)
CONN_SUCCESS, CONN_READER_INITIATED_EXISTS, CONN_CLIENT_INITIATED_EXISTS, CONN_FAILED, CONN_ANOTHER_ATTEMPTED = range(5)

# ROSpecStartTriggerType (§10.2.1.1.1), ROSpecStopTriggerType (§10.2.1.1.2), AISpecStopTriggerType (§10.2.2.1)
START_NULL, START_IMMEDIATE, START_PERIODIC, START_GPI = 0, 1, 2, 3
STOP_NULL, STOP_DURATION, STOP_GPI = 0, 1, 2
AI_STOP_NULL, AI_STOP_DURATION, AI_STOP_GPI, AI_STOP_TAG_OBSERVATION = 0, 1, 2, 3
# ROReportTrigger (§13.2.1)
REPORT_NONE, REPORT_END_OF_AISPEC, REPORT_END_OF_ROSPEC = 0, 1, 2
# ProtocolID of InventoryParameterSpec / PerAntennaAirProtocol (§10.2.2.2)
PROTOCOL_EPC_C1G2 = 1


class Selector:
    """TagReportContentSelector flags (§16.2.7.1.1: R I P A C R F L T S, then 6 reserved bits, in one u16
    whose most significant bit is the first flag; meaning §13.2.1.1)."""

    ROSPEC_ID = 1 << 15
    SPEC_INDEX = 1 << 14
    INVENTORY_PARAMETER_SPEC_ID = 1 << 13
    ANTENNA_ID = 1 << 12
    CHANNEL_INDEX = 1 << 11
    PEAK_RSSI = 1 << 10
    FIRST_SEEN = 1 << 9
    LAST_SEEN = 1 << 8
    TAG_SEEN_COUNT = 1 << 7
    ACCESS_SPEC_ID = 1 << 6


class LlrpRequestError(ValueError):
    """A request the reader cannot accept; `code` is the LLRPStatus StatusCode it answers with (§14.2.1)."""

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(reason)


class LlrpFramingError(ValueError):
    """A message header no LLRP 1.0.1 peer sends (length below 10 or absurd): the stream is lost."""


# ---- encoding (what the reader sends) -------------------------------------------------------------


def message(msg_type: int, msg_id: int, value: bytes = b"", version: int = VERSION) -> bytes:
    """One message (§16.1): reserved 0, version (1; another only to answer a message of that version with
    M_UnsupportedVersion, §7.1.2), type, length of the whole message, id, value."""
    return _HEADER.pack(((version & 7) << 10) | (msg_type & 0x3FF), HEADER_LEN + len(value), msg_id) + value


def tlv(param_type: int, value: bytes = b"") -> bytes:
    """A TLV parameter (§16.2.1.1): reserved 0, 10-bit type, length including this 4-octet header."""
    if not 128 <= param_type <= 2047:
        raise ValueError(f"TLV parameter types are 128-2047, not {param_type}")
    return struct.pack("!HH", param_type, 4 + len(value)) + value


def tv(param_type: int, value: bytes) -> bytes:
    """A TV parameter (§16.2.1.2): 1 | 7-bit type, then the value of the length its type fixes."""
    if TV_VALUE_LEN.get(param_type) != len(value):
        want = TV_VALUE_LEN.get(param_type)
        raise ValueError(f"TV parameter {param_type} has a {want}-octet value, not {len(value)}")
    return bytes((0x80 | param_type,)) + value


def utf8(text: str) -> bytes:
    """An LLRP UTF-8 string field: u16 byte count, then the bytes (§16.2.8.1's ErrorDescription and others)."""
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


def llrp_status(code: int = M_SUCCESS, description: str = "") -> bytes:
    """LLRPStatus (§16.2.8.1): StatusCode u16, ErrorDescription (every response's first parameter)."""
    return tlv(Param.LLRP_STATUS, struct.pack("!H", code) + utf8(description))


def utc_timestamp(us: int) -> bytes:
    """UTCTimestamp (§16.2.2.1): u64 microseconds since the UNIX epoch (§7.1.3.1.1.1)."""
    return tlv(Param.UTC_TIMESTAMP, struct.pack("!Q", us))


def reader_event_notification(utc_us: int, *events: bytes) -> bytes:
    """READER_EVENT_NOTIFICATION's value (§16.1.33): one ReaderEventNotificationData (§16.2.7.6) with its
    timestamp first, then the events, each at most once, in the order of the diagram."""
    return tlv(Param.READER_EVENT_NOTIFICATION_DATA, utc_timestamp(utc_us) + b"".join(events))


def rospec_event(event_type: int, rospec_id: int, preempting_id: int = 0) -> bytes:
    """ROSpecEvent (§16.2.7.6.3): EventType u8, ROSpecID u32, PreemptingROSpecID u32."""
    return tlv(Param.ROSPEC_EVENT, struct.pack("!BII", event_type, rospec_id, preempting_id))


def aispec_event(rospec_id: int, spec_index: int) -> bytes:
    """AISpecEvent End of AISpec (§16.2.7.6.8): EventType u8 (0), ROSpecID u32, SpecIndex u16."""
    return tlv(Param.AISPEC_EVENT, struct.pack("!BIH", 0, rospec_id, spec_index))


def antenna_event(event_type: int, antenna_id: int) -> bytes:
    """AntennaEvent (§16.2.7.6.9): EventType u8, AntennaID u16."""
    return tlv(Param.ANTENNA_EVENT, struct.pack("!BH", event_type, antenna_id))


def reader_exception_event(text: str) -> bytes:
    """ReaderExceptionEvent (§16.2.7.6.6): the message as a UTF-8 string field."""
    return tlv(Param.READER_EXCEPTION_EVENT, utf8(text))


def connection_attempt_event(status: int) -> bytes:
    """ConnectionAttemptEvent (§16.2.7.6.10): Status u16."""
    return tlv(Param.CONNECTION_ATTEMPT_EVENT, struct.pack("!H", status))


def connection_close_event() -> bytes:
    """ConnectionCloseEvent (§16.2.7.6.11): no value."""
    return tlv(Param.CONNECTION_CLOSE_EVENT)


def general_device_capabilities(
    *, antennas: int, manufacturer: int, model: int, firmware: str, utc_clock: bool = True
) -> bytes:
    """GeneralDeviceCapabilities (§16.2.3.1, meaning §9.2.1) with its mandatory sub-parameters: a receive
    sensitivity table of one entry of 0 (a reader without sensitivity control, §9.2.1.1), no GPIO
    (§16.2.3.1.4) and one PerAntennaAirProtocol per antenna, EPC C1G2 (§16.2.3.1.3)."""
    flags = 0x8000 | (0x4000 if utc_clock else 0)  # CanSetAntennaProperties, HasUTCClockCapability
    value = struct.pack("!HHII", antennas, flags, manufacturer, model) + utf8(firmware)
    value += tlv(Param.RECEIVE_SENSITIVITY_TABLE_ENTRY, struct.pack("!Hh", 1, 0))
    value += tlv(Param.GPIO_CAPABILITIES, struct.pack("!HH", 0, 0))
    for ant in range(1, antennas + 1):
        value += tlv(Param.PER_ANTENNA_AIR_PROTOCOL, struct.pack("!HHB", ant, 1, PROTOCOL_EPC_C1G2))
    return tlv(Param.GENERAL_DEVICE_CAPABILITIES, value)


@dataclass(slots=True)
class TagFields:
    """The optional TagReportData fields a reader sends (None = left out), in the order of §16.2.7.3."""

    rospec_id: int | None = None
    spec_index: int | None = None
    inventory_parameter_spec_id: int | None = None
    antenna_id: int | None = None
    peak_rssi: int | None = None
    channel_index: int | None = None
    first_seen_utc: int | None = None
    last_seen_utc: int | None = None
    tag_seen_count: int | None = None


_TAG_FIELDS: tuple[tuple[str, int, str], ...] = (
    ("rospec_id", Param.ROSPEC_ID, "!I"),
    ("spec_index", Param.SPEC_INDEX, "!H"),
    ("inventory_parameter_spec_id", Param.INVENTORY_PARAMETER_SPEC_ID, "!H"),
    ("antenna_id", Param.ANTENNA_ID, "!H"),
    ("peak_rssi", Param.PEAK_RSSI, "!b"),
    ("channel_index", Param.CHANNEL_INDEX, "!H"),
    ("first_seen_utc", Param.FIRST_SEEN_UTC, "!Q"),
    ("last_seen_utc", Param.LAST_SEEN_UTC, "!Q"),
    ("tag_seen_count", Param.TAG_SEEN_COUNT, "!H"),
)
"""(TagFields attribute, TV type, value format), in the order the TagReportData diagram gives (§16.2.7.3)."""

TAG_FIELD_NAMES = tuple(name for name, _, _ in _TAG_FIELDS)


def epc_parameter(epc: bytes, bits: int | None = None) -> bytes:
    """The EPC of a TagReportData (§16.2.7.3 notes): EPC-96 (TV, §16.2.7.3.2) for a 96-bit EPC, EPCData
    (TLV, §16.2.7.3.1: EPCLengthBits u16, then the bits, padded to an octet) for any other length."""
    bits = len(epc) * 8 if bits is None else bits
    if bits == 96:
        return tv(Param.EPC_96, epc)
    return tlv(Param.EPC_DATA, struct.pack("!H", bits) + epc)


def tag_report_data(epc: bytes, fields: TagFields) -> bytes:
    """One TagReportData (§16.2.7.3): the EPC, then every field that is not None, as TV parameters."""
    value = epc_parameter(epc)
    for name, ptype, fmt in _TAG_FIELDS:
        v = getattr(fields, name)
        if v is not None:
            value += tv(ptype, struct.pack(fmt, v))
    return tlv(Param.TAG_REPORT_DATA, value)


# ---- decoding (what the reader receives) ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Frame:
    """One received message."""

    version: int
    type: int
    msg_id: int
    value: bytes


class FrameReader:
    """Cuts a TCP byte stream into messages by their length field (a message may come in pieces, several
    may come in one read)."""

    __slots__ = ("_buf", "max_len")

    def __init__(self, max_len: int = 1 << 20) -> None:
        self._buf = bytearray()
        self.max_len = max_len

    def feed(self, data: bytes) -> list[Frame]:
        """Add received bytes, return the messages they complete; `LlrpFramingError` if a header's length
        is below the 10-octet header or above `max_len` (nothing after it can be framed)."""
        buf = self._buf
        buf += data
        out: list[Frame] = []
        while len(buf) >= HEADER_LEN:
            word, length, msg_id = _HEADER.unpack_from(buf)
            if length < HEADER_LEN or length > self.max_len:
                buf.clear()
                raise LlrpFramingError(f"message length {length}")
            if len(buf) < length:
                break
            out.append(Frame((word >> 10) & 7, word & 0x3FF, msg_id, bytes(buf[HEADER_LEN:length])))
            del buf[:length]
        return out


def params(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[int, int, int]]:
    """(type, value start, value end) of each parameter in data[start:end] (§16.2.1); a parameter that
    overruns its container or a TV type of unknown length is an M_ParameterError."""
    end = len(data) if end is None else end
    pos = start
    while pos < end:
        if data[pos] & 0x80:  # TV: the first bit is 1 (§16.2.1)
            ptype = data[pos] & 0x7F
            n = TV_VALUE_LEN.get(ptype)
            if n is None or pos + 1 + n > end:
                raise LlrpRequestError(M_PARAMETER_ERROR, f"TV parameter {ptype} unknown or truncated")
            yield ptype, pos + 1, pos + 1 + n
            pos += 1 + n
            continue
        if pos + 4 > end:
            raise LlrpRequestError(M_PARAMETER_ERROR, "truncated TLV parameter header")
        word, length = struct.unpack_from("!HH", data, pos)
        if length < 4 or pos + length > end:
            raise LlrpRequestError(M_PARAMETER_ERROR, f"TLV parameter {word & 0x3FF} has length {length}")
        yield word & 0x3FF, pos + 4, pos + length
        pos += length


def first_param(data: bytes, ptype: int, start: int = 0, end: int | None = None) -> tuple[int, int] | None:
    """(value start, value end) of the first parameter of type `ptype` in data[start:end], or None."""
    for t, s, e in params(data, start, end):
        if t == ptype:
            return s, e
    return None


def _unpack(fmt: str, data: bytes, start: int, end: int, what: str) -> tuple[int, ...]:
    if end - start < struct.calcsize(fmt):
        raise LlrpRequestError(M_PARAMETER_ERROR, f"{what} too short")
    return struct.unpack_from(fmt, data, start)


def rospec_id_of(value: bytes) -> int:
    """The ROSpecID u32 of DELETE/START/STOP/ENABLE/DISABLE_ROSPEC (§16.1.5, .7, .9, .11, .13)."""
    if len(value) < 4:
        raise LlrpRequestError(M_FIELD_ERROR, "no ROSpecID")
    return int(struct.unpack_from("!I", value)[0])


@dataclass(slots=True)
class ReaderConfig:
    """What SET_READER_CONFIG asks (§16.1.38, meaning §12.1.3) as far as the simulator honours it."""

    reset: bool
    events: dict[int, bool] = field(default_factory=dict)  # EventNotificationState: type -> on
    keepalive_ms: int | None = None  # KeepaliveSpec: period (0 = Null), None = not in the message


def decode_set_reader_config(value: bytes) -> ReaderConfig:
    """SET_READER_CONFIG: the R (ResetToFactoryDefault) bit, ReaderEventNotificationSpec (§16.2.7.5) of
    EventNotificationState (§16.2.7.5.1: EventType u16, NotificationState bit), KeepaliveSpec (§16.2.6.4:
    KeepaliveTriggerType u8, TimeInterval u32 ms, §12.2.4)."""
    if not value:
        raise LlrpRequestError(M_FIELD_ERROR, "SET_READER_CONFIG without its ResetToFactoryDefault octet")
    cfg = ReaderConfig(reset=bool(value[0] & 0x80))
    for t, s, e in params(value, 1):
        if t == Param.READER_EVENT_NOTIFICATION_SPEC:
            for t2, s2, e2 in params(value, s, e):
                if t2 == Param.EVENT_NOTIFICATION_STATE:
                    kind, state = _unpack("!HB", value, s2, e2, "EventNotificationState")
                    cfg.events[kind] = bool(state & 0x80)
        elif t == Param.KEEPALIVE_SPEC:
            kind, interval = _unpack("!BI", value, s, e, "KeepaliveSpec")
            cfg.keepalive_ms = interval if kind == 1 else 0
    return cfg


@dataclass(slots=True)
class AiSpecDef:
    """An AISpec (§10.2.2, binary §16.2.4.2): antennas (0 = all) and its AISpecStopTrigger."""

    antennas: tuple[int, ...]
    stop: int  # AI_STOP_*
    duration_ms: int = 0
    inventory_parameter_spec_id: int = 0  # of its first InventoryParameterSpec (§16.2.4.2.2)
    obs_type: int = 0  # TagObservationTrigger (§10.2.2.1.1): 0 N tags, 1 no new tag for T, 2 N attempts
    obs_tags: int = 0
    obs_attempts: int = 0
    obs_t_ms: int = 0
    obs_timeout_ms: int = 0


@dataclass(slots=True)
class RoSpecDef:
    """A ROSpec as ADD_ROSPEC carries it (§10.2.1, binary §16.2.4.1)."""

    rospec_id: int
    priority: int
    state: int
    start: int  # START_*
    stop: int  # STOP_*
    aispecs: list[AiSpecDef]
    offset_ms: int = 0
    period_ms: int = 0
    stop_ms: int = 0
    report_trigger: int = REPORT_NONE
    report_n: int = 0
    selector: int = 0


def decode_add_rospec(value: bytes) -> RoSpecDef:
    """The ROSpec of an ADD_ROSPEC (§16.1.3), checked as a reader that implements Null/Immediate/Periodic
    starts, Null/Duration stops and Null/Duration/tag-observation AISpec stops checks it; anything else is
    an `LlrpRequestError` (M_ParameterError, §14.2.1)."""
    where = first_param(value, Param.ROSPEC)
    if where is None:
        raise LlrpRequestError(M_PARAMETER_ERROR, "no ROSpec parameter")
    s, e = where
    # ROSpecID u32, Priority u8, CurrentState u8 (§16.2.4.1)
    rid, priority, state = _unpack("!IBB", value, s, e, "ROSpec")
    if rid == 0:
        raise LlrpRequestError(M_PARAMETER_ERROR, "ROSpecID 0 is reserved")  # §10.2.1: 0 is illegal
    if state != 0:
        raise LlrpRequestError(M_PARAMETER_ERROR, "a new ROSpec's CurrentState must be Disabled")  # §10.1.1
    spec = RoSpecDef(rid, priority, state, -1, -1, [])
    for t, ps, pe in params(value, s + 6, e):
        if t == Param.RO_BOUNDARY_SPEC:
            _boundary(value, ps, pe, spec)
        elif t == Param.AISPEC:
            spec.aispecs.append(_aispec(value, ps, pe))
        elif t == Param.RO_REPORT_SPEC:
            # ROReportTrigger u8, N u16, TagReportContentSelector (§16.2.7.1)
            spec.report_trigger, spec.report_n = _unpack("!BH", value, ps, pe, "ROReportSpec")
            sel = first_param(value, Param.TAG_REPORT_CONTENT_SELECTOR, ps + 3, pe)
            if sel is not None:
                spec.selector = _unpack("!H", value, sel[0], sel[1], "TagReportContentSelector")[0]
    if spec.start < 0 or spec.stop < 0:
        raise LlrpRequestError(M_PARAMETER_ERROR, "ROBoundarySpec needs a start and a stop trigger")
    if not spec.aispecs:
        raise LlrpRequestError(M_PARAMETER_ERROR, "no AISpec")
    return spec


def _boundary(value: bytes, s: int, e: int, spec: RoSpecDef) -> None:
    """ROBoundarySpec (§16.2.4.1.1): ROSpecStartTrigger, ROSpecStopTrigger."""
    for t, s2, e2 in params(value, s, e):
        if t == Param.ROSPEC_START_TRIGGER:
            # ROSpecStartTriggerType u8, PeriodicTriggerValue (0-1), GPITriggerValue (0-1) (§16.2.4.1.1.1)
            spec.start = _unpack("!B", value, s2, e2, "ROSpecStartTrigger")[0]
            if spec.start == START_PERIODIC:
                pv = first_param(value, Param.PERIODIC_TRIGGER_VALUE, s2 + 1, e2)
                if pv is None or pv[1] - pv[0] < 8:  # §10.2.1.1.1: SHALL be present when the type is 2
                    raise LlrpRequestError(M_PARAMETER_ERROR, "a Periodic start trigger needs a PeriodicTriggerValue")
                spec.offset_ms, spec.period_ms = struct.unpack_from("!II", value, pv[0])  # Offset, Period (ms)
            elif spec.start not in (START_NULL, START_IMMEDIATE):
                raise LlrpRequestError(M_PARAMETER_ERROR, f"ROSpecStartTrigger type {spec.start} not supported")
        elif t == Param.ROSPEC_STOP_TRIGGER:
            # ROSpecStopTriggerType u8, DurationTriggerValue u32 ms, GPITriggerValue (0-1) (§16.2.4.1.1.2)
            spec.stop, spec.stop_ms = _unpack("!BI", value, s2, e2, "ROSpecStopTrigger")
            if spec.stop not in (STOP_NULL, STOP_DURATION) or (spec.stop == STOP_DURATION and spec.stop_ms == 0):
                raise LlrpRequestError(
                    M_PARAMETER_ERROR, f"ROSpecStopTrigger type {spec.stop} / duration {spec.stop_ms} not supported")


def _aispec(value: bytes, s: int, e: int) -> AiSpecDef:
    """AISpec (§16.2.4.2): AntennaCount u16, AntennaID u16 each, AISpecStopTrigger, InventoryParameterSpec."""
    count = _unpack("!H", value, s, e, "AISpec")[0]
    ants = _unpack(f"!{count}H", value, s + 2, e, "AISpec antenna list")
    ai: AiSpecDef | None = None
    inventory_ids: list[int] = []
    for t, s2, e2 in params(value, s + 2 + 2 * count, e):
        if t == Param.INVENTORY_PARAMETER_SPEC:
            # InventoryParameterSpecID u16 (0 is illegal, §10.2.2.2), ProtocolID u8
            spec_id, _protocol = _unpack("!HB", value, s2, e2, "InventoryParameterSpec")
            if spec_id == 0:
                raise LlrpRequestError(M_PARAMETER_ERROR, "InventoryParameterSpecID 0 is illegal")
            inventory_ids.append(spec_id)
        if t != Param.AISPEC_STOP_TRIGGER:
            continue
        # AISpecStopTriggerType u8, DurationTrigger u32 ms, GPITriggerValue (0-1), TagObservationTrigger (0-1)
        kind, duration = _unpack("!BI", value, s2, e2, "AISpecStopTrigger")
        ai = AiSpecDef(tuple(ants), kind, duration)
        if kind == AI_STOP_DURATION and duration == 0:
            raise LlrpRequestError(M_PARAMETER_ERROR, "AISpec Duration stop trigger of 0 ms")
        if kind == AI_STOP_TAG_OBSERVATION:
            obs = first_param(value, Param.TAG_OBSERVATION_TRIGGER, s2 + 5, e2)
            if obs is None or obs[1] - obs[0] < 12:  # §10.2.2.1: SHALL be present when the type is 3
                raise LlrpRequestError(M_PARAMETER_ERROR, "Tag observation stop trigger without TagObservationTrigger")
            # TriggerType u8, reserved u8, NumberOfTags u16, NumberOfAttempts u16, T u16 ms, Timeout u32 ms
            ai.obs_type, _, ai.obs_tags, ai.obs_attempts, ai.obs_t_ms, ai.obs_timeout_ms = struct.unpack_from(
                "!BBHHHI", value, obs[0])
        elif kind not in (AI_STOP_NULL, AI_STOP_DURATION):
            raise LlrpRequestError(M_PARAMETER_ERROR, f"AISpecStopTrigger type {kind} not supported")
    if ai is None:
        raise LlrpRequestError(M_PARAMETER_ERROR, "AISpec without AISpecStopTrigger")
    if not inventory_ids:  # InventoryParameterSpec (1-n), §16.2.4.2
        raise LlrpRequestError(M_PARAMETER_ERROR, "AISpec without InventoryParameterSpec")
    ai.inventory_parameter_spec_id = inventory_ids[0]
    return ai
