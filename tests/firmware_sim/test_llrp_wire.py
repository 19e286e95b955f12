"""The simulator's LLRP 1.0.1 wire module (firmware_sim/rfid/llrp_wire.py) against the references: bytes
written by hand from the spec's diagrams (§16), and sllurp (an independent LLRP implementation) for
everything else: sllurp decodes what the simulated reader sends, and sllurp encodes the requests the
simulated reader parses. Our driver's codec takes no part on the simulator's side."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from sllurp.llrp import LLRPMessage

from firmware_sim.rfid import llrp_wire as w


def sllurp(frame: bytes) -> tuple[str, dict[str, Any]]:
    """(message name, its fields) as sllurp decodes the frame."""
    msg = LLRPMessage(msgbytes=frame)
    assert msg.msgdict is not None
    [(name, body)] = msg.msgdict.items()
    return name, body


def sllurp_request(name: str, **fields: Any) -> bytes:
    """A request encoded by sllurp; returns its value (the bytes after the 10-octet header)."""
    raw: bytes = LLRPMessage(msgdict={name: {"Ver": 1, "ID": 9, **fields}}).msgbytes
    return raw[10:]


# ---- encoding: hand-written bytes from the diagrams ------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "hexa"),
    [
        # §16.1: Rsvd 000 | Ver 001 | type 62 (0x03E) -> 0x043E; length 10 (no value); id 1
        (w.message(w.MsgType.KEEPALIVE, 1), "043E 0000000A 00000001"),
        # §16.1.41 CLOSE_CONNECTION_RESPONSE (type 4) carrying LLRPStatus (§16.2.8.1: type 287 = 0x11F,
        # length 8, StatusCode 0, ErrorDescription ByteCount 0)
        (w.message(w.MsgType.CLOSE_CONNECTION_RESPONSE, 7, w.llrp_status()),
         "0404 00000012 00000007 011F 0008 0000 0000"),
        # §16.2.7.3 TagReportData (240 = 0x0F0) = EPC-96 TV (§16.2.7.3.2: 0x80|13) + AntennaID TV (0x80|1, u16)
        # + PeakRSSI TV (0x80|6, s8 -70 = 0xBA)
        (w.tag_report_data(bytes.fromhex("3074257BF7194E4000001A85"), w.TagFields(antenna_id=1, peak_rssi=-70)),
         "00F0 0016 8D 3074257BF7194E4000001A85 81 0001 86 BA"),
        # §16.2.7.3.1 EPCData (241 = 0x0F1): EPCLengthBits 64, then the bits
        (w.tag_report_data(bytes.fromhex("E2801160600002AB"), w.TagFields()),
         "00F0 0012 00F1 000E 0040 E2801160600002AB"),
        # §16.2.7.6 ReaderEventNotificationData (246 = 0x0F6) = UTCTimestamp (128, u64 µs) +
        # ConnectionAttemptEvent (256 = 0x100, Status u16 0)
        (w.reader_event_notification(1767225600000000, w.connection_attempt_event(0)),
         "00F6 0016 0080 000C 0006474846204000 0100 0006 0000"),
    ],
    ids=["header", "status", "epc96", "epcdata", "event"],
)  # fmt: skip
def test_frames_written_from_the_spec_diagrams(frame: bytes, hexa: str) -> None:
    assert frame.hex().upper() == hexa.replace(" ", "")


def test_tv_and_tlv_guard_their_type_ranges() -> None:
    with pytest.raises(ValueError):
        w.tv(w.Param.ANTENNA_ID, b"\x00")  # AntennaID is a u16
    with pytest.raises(ValueError):
        w.tlv(13)  # 0-127 are TV types (§16.2.1.1)


# ---- encoding: sllurp decodes every message and parameter the reader sends -------------------------

ALL_FIELDS = w.TagFields(rospec_id=7, spec_index=1, inventory_parameter_spec_id=4, antenna_id=2, peak_rssi=-61,
                         channel_index=1, first_seen_utc=1767225600000000, last_seen_utc=1767225600250000,
                         tag_seen_count=3)  # fmt: skip
EPC = bytes.fromhex("3074257BF7194E4000001A85")


@pytest.mark.parametrize(
    ("frame", "name", "want"),
    [
        (w.message(w.MsgType.RO_ACCESS_REPORT, 1, w.tag_report_data(EPC, ALL_FIELDS)), "RO_ACCESS_REPORT",
         {"TagReportData": [{"EPC-96": EPC.hex().encode(), "ROSpecID": 7, "SpecIndex": 1,
                             "InventoryParameterSpecID": 4, "AntennaID": 2, "PeakRSSI": -61, "ChannelIndex": 1,
                             "FirstSeenTimestampUTC": 1767225600000000, "LastSeenTimestampUTC": 1767225600250000,
                             "TagSeenCount": 3}]}),
        (w.message(w.MsgType.RO_ACCESS_REPORT, 2, w.tag_report_data(EPC, w.TagFields(peak_rssi=-128))
                   + w.tag_report_data(bytes.fromhex("E2801160600002AB"), w.TagFields(tag_seen_count=65535))),
         "RO_ACCESS_REPORT",
         {"TagReportData": [{"EPC-96": EPC.hex().encode(), "PeakRSSI": -128},
                            {"EPC": b"e2801160600002ab", "TagSeenCount": 65535}]}),
        (w.message(w.MsgType.READER_EVENT_NOTIFICATION, 3, w.reader_event_notification(
            5, w.rospec_event(w.ROSPEC_PREEMPTED, 7, 999))), "READER_EVENT_NOTIFICATION",
         {"ReaderEventNotificationData": {"UTCTimestamp": {"Microseconds": 5}, "ROSpecEvent": {
             "EventType": "Preemption_of_ROSpec", "ROSpecID": 7, "PreemptingROSpecID": 999}}}),
        (w.message(w.MsgType.READER_EVENT_NOTIFICATION, 4, w.reader_event_notification(
            5, w.antenna_event(w.ANTENNA_CONNECTED, 3))), "READER_EVENT_NOTIFICATION",
         {"ReaderEventNotificationData": {"UTCTimestamp": {"Microseconds": 5}, "AntennaEvent": {
             "EventType": "Connected", "AntennaID": 3}}}),
        (w.message(w.MsgType.READER_EVENT_NOTIFICATION, 5, w.reader_event_notification(
            5, w.reader_exception_event("PA hot"))), "READER_EVENT_NOTIFICATION",
         {"ReaderEventNotificationData": {"UTCTimestamp": {"Microseconds": 5}, "ReaderExceptionEvent": {
             "Message": b"PA hot"}}}),
        (w.message(w.MsgType.READER_EVENT_NOTIFICATION, 6, w.reader_event_notification(
            5, w.aispec_event(7, 2))), "READER_EVENT_NOTIFICATION",
         {"ReaderEventNotificationData": {"UTCTimestamp": {"Microseconds": 5}, "AISpecEvent": {
             "EventType": "End_of_AISpec", "ROSpecID": 7, "SpecIndex": 2}}}),
        (w.message(w.MsgType.READER_EVENT_NOTIFICATION, 7, w.reader_event_notification(
            5, w.connection_close_event())), "READER_EVENT_NOTIFICATION",
         {"ReaderEventNotificationData": {"UTCTimestamp": {"Microseconds": 5}, "ConnectionCloseEvent": {}}}),
        (w.message(w.MsgType.GET_READER_CAPABILITIES_RESPONSE, 8, w.llrp_status() + w.general_device_capabilities(
            antennas=2, manufacturer=25882, model=2001, firmware="7.5.0-sim")), "GET_READER_CAPABILITIES_RESPONSE",
         {"LLRPStatus": {"StatusCode": "Success", "ErrorDescription": b""},
          "GeneralDeviceCapabilities": {
              "MaxNumberOfAntennaSupported": 2, "CanSetAntennaProperties": True, "HasUTCClockCapability": True,
              "DeviceManufacturerName": 25882, "ModelName": 2001, "ReaderFirmwareVersion": b"7.5.0-sim",
              "ReceiveSensitivityTableEntry": [{"Index": 1, "ReceiveSensitivityValue": 0}],
              "GPIOCapabilities": {"NumGPIs": 0, "NumGPOs": 0},
              "PerAntennaAirProtocol": [{"AntennaID": 1, "NumProtocols": 1, "ProtocolID": [1]},
                                        {"AntennaID": 2, "NumProtocols": 1, "ProtocolID": [1]}]}}),
        (w.message(w.MsgType.ERROR_MESSAGE, 9, w.llrp_status(w.M_UNSUPPORTED_MESSAGE, "no")), "ERROR_MESSAGE",
         {"LLRPStatus": {"StatusCode": "UnsupportedMessage", "ErrorDescription": b"no"}}),
        (w.message(w.MsgType.ERROR_MESSAGE, 9, w.llrp_status(w.M_UNSUPPORTED_VERSION, "")), "ERROR_MESSAGE",
         {"LLRPStatus": {"StatusCode": "UnsupportedVersion", "ErrorDescription": b""}}),
        (w.message(w.MsgType.ADD_ROSPEC_RESPONSE, 10, w.llrp_status(w.A_INVALID, "exists")), "ADD_ROSPEC_RESPONSE",
         {"LLRPStatus": {"StatusCode": "A_Invalid", "ErrorDescription": b"exists"}}),
        (w.message(w.MsgType.KEEPALIVE, 11), "KEEPALIVE", {}),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)  # fmt: skip
def test_sllurp_decodes_what_the_reader_sends(frame: bytes, name: str, want: dict[str, Any]) -> None:
    got_name, got = sllurp(frame)
    assert got_name == name
    assert (got["Ver"], got["Type"], got["ID"]) == (
        1, frame[1] | (frame[0] & 3) << 8, struct.unpack_from("!I", frame, 6)[0])
    for key, value in want.items():
        if isinstance(value, dict):
            assert {k: v for k, v in got[key].items() if k in value} == value, key
        elif key == "TagReportData":
            assert [{k: v for k, v in t.items() if k in exp} for t, exp in zip(got[key], value, strict=True)] == value
        else:
            assert got[key] == value


def test_every_response_type_names_its_request() -> None:
    for request, response in w.RESPONSE_TO.items():
        name, body = sllurp(w.message(response, 1, w.llrp_status()))
        assert name == request.name + "_RESPONSE" and body["LLRPStatus"]["StatusCode"] == "Success"


# ---- decoding: requests encoded by sllurp ----------------------------------------------------------


def test_add_rospec_encoded_by_sllurp() -> None:
    rospec = {
        "ROSpecID": 7, "Priority": 3, "CurrentState": "Disabled",
        "ROBoundarySpec": {
            "ROSpecStartTrigger": {"ROSpecStartTriggerType": "Periodic",
                                   "PeriodicTriggerValue": {"Offset": 5, "Period": 100}},
            "ROSpecStopTrigger": {"ROSpecStopTriggerType": "Duration", "DurationTriggerValue": 90}},
        "AISpec": [
            {"AntennaID": [1, 2],
             "AISpecStopTrigger": {"AISpecStopTriggerType": "Tag observation", "DurationTriggerValue": 0,
                                   "TagObservationTrigger": {"TriggerType": "UponSilenceMs", "NumberOfTags": 3,
                                                             "NumberOfAttempts": 4, "T": 250, "Timeout": 500}},
             "InventoryParameterSpec": [{"InventoryParameterSpecID": 4, "ProtocolID": 1}]},
            {"AntennaID": [0],
             "AISpecStopTrigger": {"AISpecStopTriggerType": "Duration", "DurationTriggerValue": 60},
             "InventoryParameterSpec": [{"InventoryParameterSpecID": 5, "ProtocolID": 1}]},
        ],
        "ROReportSpec": {"ROReportTrigger": "Upon_N_Tags_Or_End_Of_AISpec", "N": 5,
                         "TagReportContentSelector": {"EnableROSpecID": True, "EnableAntennaID": True,
                                                      "EnablePeakRSSI": True, "EnableTagSeenCount": True}},
    }  # fmt: skip
    spec = w.decode_add_rospec(sllurp_request("ADD_ROSPEC", ROSpec=rospec))
    assert spec == w.RoSpecDef(
        rospec_id=7, priority=3, state=0, start=w.START_PERIODIC, stop=w.STOP_DURATION, offset_ms=5, period_ms=100,
        stop_ms=90, report_trigger=w.REPORT_END_OF_AISPEC, report_n=5,
        selector=w.Selector.ROSPEC_ID | w.Selector.ANTENNA_ID | w.Selector.PEAK_RSSI | w.Selector.TAG_SEEN_COUNT,
        aispecs=[w.AiSpecDef((1, 2), w.AI_STOP_TAG_OBSERVATION, 0, 4, obs_type=1, obs_tags=3, obs_attempts=4,
                             obs_t_ms=250, obs_timeout_ms=500),
                 w.AiSpecDef((0,), w.AI_STOP_DURATION, 60, 5)],
    )  # fmt: skip


@pytest.mark.parametrize(
    ("boundary", "why"),
    [
        ({"ROSpecStartTrigger": {"ROSpecStartTriggerType": "Periodic"},
          "ROSpecStopTrigger": {"ROSpecStopTriggerType": "Null", "DurationTriggerValue": 0}}, "PeriodicTriggerValue"),
        ({"ROSpecStartTrigger": {"ROSpecStartTriggerType": "Null"},
          "ROSpecStopTrigger": {"ROSpecStopTriggerType": "Duration", "DurationTriggerValue": 0}}, "duration 0"),
        ({"ROSpecStartTrigger": {"ROSpecStartTriggerType": "GPI"},
          "ROSpecStopTrigger": {"ROSpecStopTriggerType": "Null", "DurationTriggerValue": 0}}, "type 3"),
    ],
)  # fmt: skip
def test_rospecs_the_reader_refuses(boundary: dict[str, Any], why: str) -> None:
    rospec = {"ROSpecID": 7, "Priority": 0, "CurrentState": "Disabled", "ROBoundarySpec": boundary,
              "AISpec": [{"AntennaID": [0], "AISpecStopTrigger": {"AISpecStopTriggerType": "Null"},
                          "InventoryParameterSpec": [{"InventoryParameterSpecID": 1, "ProtocolID": 1}]}]}  # fmt: skip
    with pytest.raises(w.LlrpRequestError, match=why) as err:
        w.decode_add_rospec(sllurp_request("ADD_ROSPEC", ROSpec=rospec))
    assert err.value.code == w.M_PARAMETER_ERROR


def test_set_reader_config_encoded_by_sllurp() -> None:
    value = sllurp_request(
        "SET_READER_CONFIG", ResetToFactoryDefaults=True, KeepaliveSpec={"KeepaliveTriggerType": 1, "TimeInterval": 50},
        ReaderEventNotificationSpec={"EventNotificationState": {"ROSpecEvent": True, "AntennaEvent": True,
                                                                "AISpecEvent": False}})  # fmt: skip
    assert w.decode_set_reader_config(value) == w.ReaderConfig(
        reset=True, events={w.EVENT_ROSPEC: True, w.EVENT_ANTENNA: True, w.EVENT_AISPEC: False}, keepalive_ms=50)


def test_rospec_ops_encoded_by_sllurp() -> None:
    for name in ("DELETE_ROSPEC", "START_ROSPEC", "STOP_ROSPEC", "ENABLE_ROSPEC", "DISABLE_ROSPEC"):
        assert w.rospec_id_of(sllurp_request(name, ROSpecID=0x01020304)) == 0x01020304


def test_frame_reader_cuts_split_and_merged_frames() -> None:
    a = LLRPMessage(msgdict={"ENABLE_ROSPEC": {"Ver": 1, "ID": 5, "ROSpecID": 7}}).msgbytes
    b = LLRPMessage(msgdict={"KEEPALIVE_ACK": {"Ver": 1, "ID": 6}}).msgbytes
    stream = a + b + a
    fr = w.FrameReader()
    got: list[w.Frame] = []
    for i in range(0, len(stream), 3):
        got += fr.feed(stream[i : i + 3])
    assert [(f.version, f.type, f.msg_id) for f in got] == [(1, 24, 5), (1, 72, 6), (1, 24, 5)]
    assert got[0].value == struct.pack("!I", 7)
    with pytest.raises(w.LlrpFramingError):
        w.FrameReader().feed(bytes.fromhex("0418 00000009 00000001"))  # shorter than its own header
