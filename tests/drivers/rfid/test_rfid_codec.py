"""LLRP codec: spec-derived fixtures, sllurp as an independent decoder, framing, malformed input, fuzz."""

from __future__ import annotations

import contextlib
import os
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sllurp.llrp import LLRPMessage
from sllurp.llrp_proto import decode_param

from drivers.rfid import llrp_codec as c
from edge.errors import FrameError

from .frames import frames

FUZZ = 10_000 if os.environ.get("EDGE_FUZZ") == "long" else 200


def _sllurp(frame: bytes) -> dict[str, Any]:
    msg = LLRPMessage(msgbytes=frame)
    assert msg.msgdict is not None
    name, body = next(iter(msg.msgdict.items()))
    return {"name": name, **body}


def test_fixture_report_epc96_ours_and_sllurp_agree() -> None:
    frame = frames()["ro_access_report_epc96"]
    [msg] = c.FrameDecoder().feed(frame)
    assert (msg.type, msg.msg_id, msg.version) == (c.Msg.RO_ACCESS_REPORT, 1, 1)
    ours = c.decode_ro_access_report(msg.body)
    assert ours == [("3074257BF7194E4000001A85", 1, -70, 1767225600000000, 1767225600250000, 3)]
    theirs = _sllurp(frame)
    [tag] = theirs["TagReportData"]
    assert tag["EPC-96"].decode().upper() == ours[0][0]
    assert (tag["AntennaID"], tag["PeakRSSI"], tag["TagSeenCount"]) == (1, -70, 3)
    assert (tag["FirstSeenTimestampUTC"], tag["LastSeenTimestampUTC"]) == ours[0][3:5]


def test_fixture_report_epcdata() -> None:
    [msg] = c.FrameDecoder().feed(frames()["ro_access_report_epcdata"])
    assert c.decode_ro_access_report(msg.body) == [("E2801160600002054C3A7F11", 2, -55, None, None, 1)]
    [tag] = _sllurp(frames()["ro_access_report_epcdata"])["TagReportData"]
    assert tag["EPC"].decode().upper() == "E2801160600002054C3A7F11"


@pytest.mark.parametrize(
    ("name", "status"),
    [("reader_event_success", 0), ("reader_event_refused", 2)],
)
def test_fixture_reader_events(name: str, status: int) -> None:
    [msg] = c.FrameDecoder().feed(frames()[name])
    ev = c.decode_reader_event(msg.body)
    assert (ev.utc_us, ev.connection_status, ev.connection_closed) == (1767225600000000, status, False)
    sl = _sllurp(frames()[name])["ReaderEventNotificationData"]
    assert sl["ConnectionAttemptEvent"]["Status"] == c.CONNECTION_STATUS[status]


def test_fixture_status_messages() -> None:
    dec = c.FrameDecoder()
    ok, err, ka = dec.feed(frames()["add_rospec_response"] + frames()["error_message"] + frames()["keepalive"])
    assert (ok.type, c.decode_status(ok.body)) == (c.Msg.ADD_ROSPEC_RESPONSE, c.Status(0, ""))
    assert (err.type, c.decode_status(err.body)) == (c.Msg.ERROR_MESSAGE, c.Status(109, "nope!"))
    assert (ka.type, ka.msg_id, ka.body) == (c.Msg.KEEPALIVE, 7, b"")


def test_our_encoder_reproduces_the_hand_written_frames() -> None:
    epc = bytes.fromhex("3074257BF7194E4000001A85")
    body = c.tag_report_data(epc, antenna=1, rssi=-70, first_us=1767225600000000,
                             last_us=1767225600250000, count=3)
    assert c.encode_message(c.Msg.RO_ACCESS_REPORT, 1, body) == frames()["ro_access_report_epc96"]
    epc2 = bytes.fromhex("E2801160600002054C3A7F11")
    body2 = c.tlv(c.P.TAG_REPORT_DATA, c.tlv(c.P.EPC_DATA, struct.pack("!H", 96) + epc2)
                  + c.tv(c.P.ANTENNA_ID, b"\x00\x02") + c.tv(c.P.PEAK_RSSI, b"\xc9"))
    assert c.encode_message(c.Msg.RO_ACCESS_REPORT, 2, body2) == frames()["ro_access_report_epcdata"]
    assert c.encode_message(c.Msg.READER_EVENT_NOTIFICATION, 0, c.reader_event(
        0, utc_us=1767225600000000)) == frames()["reader_event_success"]
    assert c.encode_message(c.Msg.ADD_ROSPEC_RESPONSE, 5, c.llrp_status()) == frames()["add_rospec_response"]


def test_sllurp_decodes_our_rospec_and_config() -> None:
    # sllurp has no decoder for the ADD_ROSPEC message itself, but it decodes the ROSpec parameter
    name, spec, used = decode_param(c.rospec(77, cycle_ms=500))
    assert (name, used) == ("ROSpec", len(c.rospec(77, cycle_ms=500)))
    assert spec["ROSpecID"] == 77
    sel = spec["ROReportSpec"]["TagReportContentSelector"]
    enabled = {k for k, v in sel.items() if v}
    assert enabled == {"EnableAntennaID", "EnablePeakRSSI", "EnableTagSeenCount", "EnableFirstSeenTimestamp",
                       "EnableLastSeenTimestamp"}
    # continuous inventory (LLRP 1.0.1 §10.2.1): Periodic start, Duration stop, Null AISpec stop, one report
    # per ROSpec run
    bounds = spec["ROBoundarySpec"]
    assert bounds["ROSpecStartTrigger"]["ROSpecStartTriggerType"] == 2
    # sllurp 2.x files PeriodicTriggerValue (type 180) under the name GPITriggerValue (whose type is 181,
    # see Wireshark's packet-llrp.c LLRP_TLV_PER_TRIGGER_VAL / LLRP_TLV_GPI_TRIGGER_VAL), so it reads our
    # Offset 0 / Period 500 through the GPI layout: port 0, event bit 0, "timeout" = bytes 3..6 = 1
    assert bounds["ROSpecStartTrigger"]["GPITriggerValue"] == {"GPIPortNum": 0, "GPIEvent": False, "Timeout": 1}
    raw = c.rospec(77, cycle_ms=500)
    where = c.find_param(raw, c.P.ROSPEC)
    assert where is not None
    boundary = c.find_param(raw, c.P.RO_BOUNDARY_SPEC, where[0] + 6, where[1])
    assert boundary is not None
    start = c.find_param(raw, c.P.ROSPEC_START_TRIGGER, *boundary)
    assert start is not None
    periodic = c.find_param(raw, c.P.PERIODIC_TRIGGER_VALUE, start[0] + 1, start[1])
    assert periodic is not None
    assert struct.unpack_from("!II", raw, periodic[0]) == (0, 500)  # Offset, Period
    assert bounds["ROSpecStopTrigger"] == {"ROSpecStopTriggerType": "Duration", "DurationTriggerValue": 450}
    assert spec["AISpec"][0]["AISpecStopTrigger"]["AISpecStopTriggerType"] == 0
    assert (spec["ROReportSpec"]["ROReportTrigger"], spec["ROReportSpec"]["N"]) == ("Upon_N_Tags_Or_End_Of_ROSpec", 0)
    name, events, _ = decode_param(c.set_reader_config(5000)[1:])
    assert name == "ReaderEventNotificationSpec"
    assert [e["EventType"] for e in events["EventNotificationState"]] == ["ROSpecEvent", "ReaderExceptionEvent",
                                                                          "AntennaEvent"]


def test_multi_tag_report_with_unknown_parameters_skipped() -> None:
    epc = bytes.fromhex("3074257BF7194E4000001A85")
    unknown_tlv = c.tlv(999, b"\x01\x02\x03")  # skipped by length, at both levels
    inner = (c.tv(c.P.EPC_96, epc) + c.tv(c.P.CHANNEL_INDEX, b"\x00\x05") + unknown_tlv
             + c.tv(c.P.ANTENNA_ID, b"\x00\x03"))
    body = c.tag_report_data(epc, antenna=2, rssi=-60, count=1) + unknown_tlv + c.tlv(c.P.TAG_REPORT_DATA, inner)
    tags = c.decode_ro_access_report(body)
    assert tags == [(epc.hex().upper(), 2, -60, None, None, 1), (epc.hex().upper(), 3, None, None, None, 1)]


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (c.tlv(c.P.TAG_REPORT_DATA, c.tv(c.P.ANTENNA_ID, b"\x00\x01")), "without an EPC"),
        (bytes.fromhex("00F0 0020 8D 3074".replace(" ", "")), "bad length"),  # TLV length overruns
        (bytes.fromhex("00F0 0007 8D3074".replace(" ", "")), "truncated TV"),  # TV body cut short
        (bytes.fromhex("00F0 0002".replace(" ", "")), "bad length"),  # TLV length below its header
        (bytes.fromhex("00F0 0008 FF000000".replace(" ", "")), "unknown TV"),  # TV type 127: no length
        (bytes.fromhex("00F0"), "truncated parameter header"),
    ],
)
def test_malformed_reports_raise_frame_error(body: bytes, why: str) -> None:
    with pytest.raises(FrameError, match=why):
        c.decode_ro_access_report(body)


def test_split_and_merged_frames_with_keepalives_interleaved() -> None:
    f = frames()
    stream = f["keepalive"] + f["ro_access_report_epc96"] + f["keepalive"] + f["ro_access_report_epcdata"]
    for chunk in (1, 3, 7, 10, 11, 52, len(stream)):
        dec = c.FrameDecoder()
        got: list[c.Message] = []
        for i in range(0, len(stream), chunk):
            got += dec.feed(stream[i : i + chunk])
        assert [m.type for m in got] == [62, 61, 62, 61], chunk
        assert dec.pending == 0


@pytest.mark.parametrize(
    "header",
    [
        struct.pack("!HII", (1 << 10) | 61, 3, 1),  # length below the header size
        struct.pack("!HII", (1 << 10) | 61, 1 << 30, 1),  # absurd length
        struct.pack("!HII", (5 << 10) | 61, 20, 1),  # unknown version
    ],
)
def test_bad_header_means_lost_sync(header: bytes) -> None:
    with pytest.raises(c.LlrpStreamError):
        c.FrameDecoder().feed(frames()["keepalive"] + header)


@settings(max_examples=FUZZ, deadline=None)
@given(st.binary(max_size=400), st.integers(min_value=1, max_value=64))
def test_fuzz_frame_decoder_and_report_parser(data: bytes, chunk: int) -> None:
    dec = c.FrameDecoder()
    try:
        for i in range(0, len(data), chunk):
            for msg in dec.feed(data[i : i + chunk]):
                try:
                    c.decode_ro_access_report(msg.body)
                    c.decode_reader_event(msg.body)
                    c.decode_status(msg.body)
                    c.decode_capabilities(msg.body)
                except FrameError:
                    pass
    except c.LlrpStreamError:
        pass


@settings(max_examples=FUZZ, deadline=None)
@given(st.lists(st.tuples(st.binary(min_size=2, max_size=32), st.integers(0, 65535), st.integers(-128, 127),
                          st.integers(0, 2**64 - 1), st.integers(0, 65535)), max_size=5))
def test_fuzz_report_round_trip(tags: list[tuple[bytes, int, int, int, int]]) -> None:
    body = b"".join(c.tag_report_data(e, antenna=a, rssi=r, first_us=t, last_us=t, count=n) for e, a, r, t, n in tags)
    [msg] = c.FrameDecoder().feed(c.encode_message(c.Msg.RO_ACCESS_REPORT, 1, body))
    assert c.decode_ro_access_report(msg.body) == [(e.hex().upper(), a, r, t, t, n) for e, a, r, t, n in tags]


@pytest.mark.parametrize(
    ("name", "want", "sllurp_key", "sllurp_value"),
    [
        ("rospec_event_start", c.ReaderEvent(1767225600000000, rospec=((c.ROSPEC_STARTED, 1234),)),
         "ROSpecEvent", {"EventType": "Start_of_ROSpec", "ROSpecID": 1234, "PreemptingROSpecID": 0}),
        ("antenna_event_disconnected", c.ReaderEvent(1767225600000000, antenna=((2, False),)),
         "AntennaEvent", {"EventType": "Disconnected", "AntennaID": 2}),
        ("reader_exception", c.ReaderEvent(1767225600000000, exception="RF fault"),
         "ReaderExceptionEvent", {"Message": b"RF fault"}),
        ("connection_close", c.ReaderEvent(1767225600000000, connection_closed=True), "ConnectionCloseEvent", {}),
    ],
)
def test_fixture_reader_health_events_ours_and_sllurp_agree(
    name: str, want: c.ReaderEvent, sllurp_key: str, sllurp_value: dict[str, Any]
) -> None:
    [msg] = c.FrameDecoder().feed(frames()[name])
    assert c.decode_reader_event(msg.body) == want
    theirs = _sllurp(frames()[name])["ReaderEventNotificationData"]
    assert {k: v for k, v in theirs[sllurp_key].items() if k in sllurp_value} == sllurp_value


def test_efficient_reporting_carries_omitted_fields_across_tags_and_reports() -> None:
    first, last = 1767225600000000, 1767225600250000
    one, two = c.FrameDecoder().feed(frames()["efficient_report_1"] + frames()["efficient_report_2"])
    carry = c.new_carry()
    assert c.decode_ro_access_report(one.body, carry) == [
        ("3074257BF7194E4000001A85", 1, -70, first, last, 3),
        ("3074257BF7194E4000001A86", 1, -70, first, last, 1),  # antenna, RSSI, times: the previous ones
    ]
    assert c.decode_ro_access_report(two.body, carry) == [("3074257BF7194E4000001A85", 1, -70, first, last, 1)]
    # without the connection's memory the fields would be absent (what the decoder did before)
    assert c.decode_ro_access_report(two.body)[0][1:] == (0, None, None, None, 1)
    # sllurp (no carrying) sees the same fields present / absent
    [t1, t2] = _sllurp(frames()["efficient_report_1"])["TagReportData"]
    assert "AntennaID" in t1 and "AntennaID" not in t2 and t2["TagSeenCount"] == 1


def test_carry_after_fast_path_tags_and_a_fresh_connection() -> None:
    epc = bytes.fromhex("3074257BF7194E4000001A85")
    full = c.tag_report_data(epc, antenna=3, rssi=-61, first_us=5, last_us=6, count=2)  # fast path layout
    bare = c.tag_report_data(epc)
    carry = c.new_carry()
    assert c.decode_ro_access_report(full + full + bare, carry)[-1] == (epc.hex().upper(), 3, -61, 5, 6, 2)
    assert carry == [3, -61, 5, 6, 2]
    assert c.decode_ro_access_report(bare, c.new_carry()) == [(epc.hex().upper(), 0, None, None, None, 1)]


def test_announced_length_and_the_size_bound() -> None:
    dec = c.FrameDecoder()
    empty = dec.announced
    dec.feed(struct.pack("!HII", (1 << 10) | 61, 1_000_000, 1)[:6])
    half = dec.announced  # header incomplete
    dec.feed(struct.pack("!HII", (1 << 10) | 61, 1_000_000, 1)[6:] + frames()["keepalive"])
    # the keepalive after the header is just more of the frame's payload
    assert (empty, half, dec.announced, dec.pending) == (None, None, 1_000_000, 10 + len(frames()["keepalive"]))
    assert c.FrameDecoder().feed(struct.pack("!HII", (1 << 10) | 61, c.MAX_MESSAGE_LEN, 1)) == []
    with pytest.raises(c.LlrpStreamError, match="length 1048577"):
        c.FrameDecoder().feed(struct.pack("!HII", (1 << 10) | 61, c.MAX_MESSAGE_LEN + 1, 1))


@settings(max_examples=FUZZ, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([c.P.ROSPEC_EVENT, c.P.ANTENNA_EVENT, c.P.READER_EXCEPTION_EVENT,
                                           c.P.CONNECTION_ATTEMPT_EVENT, c.P.CONNECTION_CLOSE_EVENT, 999]),
                          st.binary(max_size=20)), max_size=4))
def test_fuzz_reader_events_with_valid_framing(events: list[tuple[int, bytes]]) -> None:
    body = c.tlv(c.P.READER_EVENT_NOTIFICATION_DATA, b"".join(c.tlv(t, b) for t, b in events))
    with contextlib.suppress(FrameError):
        c.decode_reader_event(body)


@settings(max_examples=FUZZ, deadline=None)
@given(st.lists(st.lists(st.tuples(st.sampled_from([1, 2, 4, 6, 7, 8, 13]), st.binary(min_size=12, max_size=12)),
                         max_size=6), max_size=5))
def test_fuzz_tag_reports_with_carry(tags: list[list[tuple[int, bytes]]]) -> None:
    body = b"".join(c.tlv(c.P.TAG_REPORT_DATA, b"".join(c.tv(t, v[: c.TV_LENGTHS[t]]) for t, v in params))
                    for params in tags)  # fmt: skip
    carry = c.new_carry()
    with contextlib.suppress(FrameError):
        for epc, ant, _rssi, _first, _last, count in c.decode_ro_access_report(body, carry):
            assert epc and 0 <= ant < 65536 and 0 <= count < 65536
