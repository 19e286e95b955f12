"""The simulated LLRP reader over real TCP, driven by requests sllurp encodes, every frame it sends decoded by
sllurp (the reference): each message type and each event the simulator can send appears and says what the
spec says it should. Then our driver's codec reads the same reports (every optional TagReportData field,
efficient reporting) and must agree with sllurp."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import Any

from sllurp.llrp import LLRPMessage

from drivers.rfid import llrp_codec
from edge.clock import SystemClock
from edge.config import Manifest
from firmware_sim.rfid.llrp_reader import LlrpReaderSim
from firmware_sim.rfid.population import Population
from firmware_sim.world import World

RID = 7
ALL_ON = dict.fromkeys(("EnableROSpecID", "EnableSpecIndex", "EnableInventoryParameterSpecID", "EnableAntennaID",
                        "EnableChannelIndex", "EnablePeakRSSI", "EnableFirstSeenTimestamp", "EnableLastSeenTimestamp",
                        "EnableTagSeenCount"), True)  # fmt: skip
CARRIED = ("AntennaID", "PeakRSSI", "FirstSeenTimestampUTC", "LastSeenTimestampUTC", "TagSeenCount")


class RawClient:
    """Writes sllurp-encoded requests; keeps every frame the reader sends (framed by the header's length)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.frames: list[bytes] = []
        self._ids = 100
        self._task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        buf = b""
        while data := await self.reader.read(65536):
            buf += data
            while len(buf) >= 10 and len(buf) >= (n := struct.unpack_from("!I", buf, 2)[0]):
                self.frames.append(buf[:n])
                buf = buf[n:]

    def decoded(self) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for f in self.frames:
            msg = LLRPMessage(msgbytes=f)
            assert msg.msgdict is not None
            out.append(next(iter(msg.msgdict.items())))
        return out

    def events(self, key: str) -> list[dict[str, Any]]:
        return [b["ReaderEventNotificationData"][key] for n, b in self.decoded()
                if n == "READER_EVENT_NOTIFICATION" and key in b["ReaderEventNotificationData"]]  # fmt: skip

    async def request(self, name: str, **fields: Any) -> dict[str, Any]:
        """Send a request; return sllurp's decoding of the answer with the same message id."""
        self._ids += 1
        mid = self._ids
        self.writer.write(LLRPMessage(msgdict={name: {"Ver": 1, "ID": mid, **fields}}).msgbytes)
        await until(lambda: any(b["ID"] == mid for n, b in self.decoded() if n != "RO_ACCESS_REPORT"))
        [(_, body)] = [(n, b) for n, b in self.decoded() if b["ID"] == mid and n != "RO_ACCESS_REPORT"]
        return body

    async def close(self) -> None:
        self._task.cancel()
        self.writer.close()


async def until(cond: Callable[[], bool], timeout: float = 10) -> None:
    async def poll() -> None:
        while not cond():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


def rospec(ai_ms: int) -> dict[str, Any]:
    """Null start, Null stop, one Duration AISpec on all antennas, a report at its end with every field."""
    return {
        "ROSpecID": RID, "Priority": 0, "CurrentState": "Disabled",
        "ROBoundarySpec": {"ROSpecStartTrigger": {"ROSpecStartTriggerType": "Null"},
                           "ROSpecStopTrigger": {"ROSpecStopTriggerType": "Null", "DurationTriggerValue": 0}},
        "AISpec": [{"AntennaID": [0],
                    "AISpecStopTrigger": {"AISpecStopTriggerType": "Duration", "DurationTriggerValue": ai_ms},
                    "InventoryParameterSpec": [{"InventoryParameterSpecID": 4, "ProtocolID": 1}]}],
        "ROReportSpec": {"ROReportTrigger": "Upon_N_Tags_Or_End_Of_AISpec", "N": 0,
                         "TagReportContentSelector": ALL_ON},
    }  # fmt: skip


def ends(cl: RawClient) -> int:
    return sum(e["EventType"] == "End_of_ROSpec" for e in cl.events("ROSpecEvent"))


def ok(body: dict[str, Any]) -> bool:
    return bool(body["LLRPStatus"]["StatusCode"] == "Success")


async def test_sllurp_reads_every_message_and_event_the_simulated_reader_sends(demo_manifest: Manifest) -> None:
    sim = LlrpReaderSim(Population(World(demo_manifest, SystemClock()), {1: "apparel", 2: "entrance"},
                                   reliability=1.0), round_ms=20, omit_unchanged=True)  # fmt: skip
    await sim.start()
    cl = RawClient(*await asyncio.open_connection("127.0.0.1", sim.port))
    try:
        await until(lambda: bool(cl.frames))
        caps = await cl.request("GET_READER_CAPABILITIES", RequestedData=0)
        assert ok(caps) and caps["GeneralDeviceCapabilities"]["MaxNumberOfAntennaSupported"] == 4
        assert ok(await cl.request(
            "SET_READER_CONFIG", ResetToFactoryDefaults=False,
            KeepaliveSpec={"KeepaliveTriggerType": 1, "TimeInterval": 100},
            ReaderEventNotificationSpec={"EventNotificationState": {
                "ROSpecEvent": True, "ReaderExceptionEvent": True, "AntennaEvent": True}}))  # fmt: skip
        assert ok(await cl.request("ADD_ROSPEC", ROSpec=rospec(60)))
        assert (await cl.request("ADD_ROSPEC", ROSpec=rospec(60)))["LLRPStatus"]["StatusCode"] == "A_Invalid"
        assert ok(await cl.request("ENABLE_ROSPEC", ROSpecID=RID))
        for n in (1, 2):  # two runs: the second report may leave out what did not change
            assert ok(await cl.request("START_ROSPEC", ROSpecID=RID))
            await until(lambda: ends(cl) == n)  # noqa: B023 (awaited before n changes)
        sim.disconnect_antenna(2)
        sim.reader_exception("PA temperature high")
        assert ok(await cl.request("START_ROSPEC", ROSpecID=RID))
        sim.preempt(by_rospec_id=999)
        assert ok(await cl.request("DISABLE_ROSPEC", ROSpecID=RID))
        assert ok(await cl.request("DELETE_ROSPEC", ROSpecID=RID))
        assert (await cl.request("STOP_ROSPEC", ROSpecID=RID))["LLRPStatus"]["StatusCode"] == "A_Invalid"
        error = await cl.request("GET_READER_CONFIG", AntennaID=0, RequestedData=0, GPIPortNum=0, GPOPortNum=0)
        assert error["LLRPStatus"]["StatusCode"] == "UnsupportedMessage"  # 109, §14.2.1
        await until(lambda: any(n == "KEEPALIVE" for n, _ in cl.decoded()))
        second = RawClient(*await asyncio.open_connection("127.0.0.1", sim.port))
        await until(lambda: bool(second.frames) and len(cl.events("ConnectionAttemptEvent")) == 2)
        assert [e["Status"] for e in second.events("ConnectionAttemptEvent")] == [
            "Failed (a Client initiated connection already exists)"]
        await second.close()
        await sim.restart(0.1)
        await until(lambda: bool(cl.events("ConnectionCloseEvent")))
        third = RawClient(*await asyncio.open_connection("127.0.0.1", sim.port))
        await until(lambda: bool(third.frames))
        assert ok(await third.request("CLOSE_CONNECTION"))
        await third.close()
    finally:
        await cl.close()
        await sim.stop()

    names = {n for n, _ in cl.decoded()} | {"CLOSE_CONNECTION_RESPONSE"}
    assert names == {"READER_EVENT_NOTIFICATION", "GET_READER_CAPABILITIES_RESPONSE", "SET_READER_CONFIG_RESPONSE",
                     "ADD_ROSPEC_RESPONSE", "ENABLE_ROSPEC_RESPONSE", "START_ROSPEC_RESPONSE",
                     "DISABLE_ROSPEC_RESPONSE", "DELETE_ROSPEC_RESPONSE", "STOP_ROSPEC_RESPONSE", "ERROR_MESSAGE",
                     "RO_ACCESS_REPORT", "KEEPALIVE", "CLOSE_CONNECTION_RESPONSE"}  # fmt: skip
    assert [e["Status"] for e in cl.events("ConnectionAttemptEvent")] == ["Success", "Another connection attempted"]
    assert [e["EventType"] for e in cl.events("ROSpecEvent")] == ["Start_of_ROSpec", "End_of_ROSpec"] * 2 + [
        "Start_of_ROSpec", "Preemption_of_ROSpec"]
    assert cl.events("ROSpecEvent")[-1]["PreemptingROSpecID"] == 999
    assert cl.events("AntennaEvent") == [{"EventType": "Disconnected", "AntennaID": 2}]
    assert cl.events("ReaderExceptionEvent") == [{"Message": b"PA temperature high"}]
    assert cl.events("ConnectionCloseEvent") == [{}]

    # the reports: every enabled field in the first TagReportData, omissions only of unchanged values
    reports = [b for n, b in cl.decoded() if n == "RO_ACCESS_REPORT"]
    tags = [t for r in reports for t in r["TagReportData"]]
    assert len(reports) >= 2 and len(tags) == sim.stats.tags_sent
    assert set(tags[0]) >= {"EPC-96", "ROSpecID", "SpecIndex", "InventoryParameterSpecID", "AntennaID", "PeakRSSI",
                            "ChannelIndex", "FirstSeenTimestampUTC", "LastSeenTimestampUTC", "TagSeenCount"}
    assert (tags[0]["ROSpecID"], tags[0]["SpecIndex"], tags[0]["InventoryParameterSpecID"]) == (RID, 1, 4)
    assert all("ROSpecID" not in t for t in tags[1:])  # unchanged on this connection: left out (§13.2.3 (ii))

    # our driver's codec, with its efficient-reporting memory, reads the same as sllurp + that rule
    carry = llrp_codec.new_carry()
    ours = [t for f in cl.frames if LLRPMessage(msgbytes=f).msgdict and "RO_ACCESS_REPORT" in LLRPMessage(
        msgbytes=f).msgdict for t in llrp_codec.decode_ro_access_report(f[10:], carry)]  # fmt: skip
    last: dict[str, Any] = {}
    theirs = []
    for t in tags:
        last.update({k: t[k] for k in CARRIED if k in t})
        theirs.append((t["EPC-96"].decode().upper(), *(last[k] for k in CARRIED)))
    assert ours == theirs


async def test_another_version_is_answered_in_that_version_and_an_error_message_not_at_all(
        demo_manifest: Manifest) -> None:  # fmt: skip
    sim = LlrpReaderSim(Population(World(demo_manifest, SystemClock()), {1: "apparel"}), round_ms=20)
    await sim.start()
    cl = RawClient(*await asyncio.open_connection("127.0.0.1", sim.port))
    try:
        await until(lambda: bool(cl.frames))
        # ERROR_MESSAGE from the client (§16.1.35, type 100): no answer (§7.1.2); then a GET_READER_CAPABILITIES
        # of version 2 (0x0801, §16.1): ERROR_MESSAGE of version 2, same id, M_UnsupportedVersion (§7.1.2)
        cl.writer.write(bytes.fromhex("0464 00000012 00000004 011F 0008 0000 0000"))  # LLRPStatus Success
        cl.writer.write(bytes.fromhex("0801 0000000B 00000005 00"))
        await until(lambda: len(cl.frames) == 2)
        await asyncio.sleep(0.05)
        [(name, body)] = cl.decoded()[1:]
        assert (name, body["Ver"], body["ID"]) == ("ERROR_MESSAGE", 2, 5)
        assert body["LLRPStatus"]["StatusCode"] == "UnsupportedVersion"
    finally:
        await cl.close()
        await sim.stop()


async def test_aispec_event_after_its_tag_data_and_before_the_rospec_end(demo_manifest: Manifest) -> None:
    # LLRP 1.0.1 §13.2.6.1: tag data of an AISpec before its AISpecEvent (ROReportTrigger 1), the AISpecEvent
    # of the last AISpec before the ROSpecEvent end
    sim = LlrpReaderSim(Population(World(demo_manifest, SystemClock()), {1: "apparel"}, reliability=1.0),
                        round_ms=20)  # fmt: skip
    await sim.start()
    cl = RawClient(*await asyncio.open_connection("127.0.0.1", sim.port))
    try:
        await until(lambda: bool(cl.frames))
        assert ok(await cl.request("SET_READER_CONFIG", ResetToFactoryDefaults=False, ReaderEventNotificationSpec={
            "EventNotificationState": {"ROSpecEvent": True, "AISpecEvent": True}}))  # fmt: skip
        assert ok(await cl.request("ADD_ROSPEC", ROSpec=rospec(60)))
        assert ok(await cl.request("ENABLE_ROSPEC", ROSpecID=RID))
        assert ok(await cl.request("START_ROSPEC", ROSpecID=RID))
        await until(lambda: ends(cl) == 1)
    finally:
        await cl.close()
        await sim.stop()
    seq = []
    for name, body in cl.decoded():
        if name == "RO_ACCESS_REPORT":
            seq.append("report")
        elif name == "READER_EVENT_NOTIFICATION":
            data = body["ReaderEventNotificationData"]
            seq += [f"{k}:{data[k]['EventType']}" for k in ("AISpecEvent", "ROSpecEvent") if k in data]
    assert seq == ["ROSpecEvent:Start_of_ROSpec", "report", "AISpecEvent:End_of_AISpec", "ROSpecEvent:End_of_ROSpec"]
    assert cl.events("AISpecEvent") == [{"EventType": "End_of_AISpec", "ROSpecID": RID, "SpecIndex": 1}]
