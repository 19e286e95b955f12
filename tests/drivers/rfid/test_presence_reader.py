"""Reader-aware presence (issue 14): a tag's absence counts only while the reader that last read it could see it.

Each case plays one reader second by second through the real `RfidProcessor` (demo manifest, an LLRP reader
with antenna 1 -> apparel (rack-c1), antenna 2 -> entrance, lost-timeout 10 s, keepalive 5 s) and compares
what the processor said that matters to the shelf: departures, stock counts, stale flags, antenna events.
Three T-shirts (tee-m) lie on the rack; in most cases one of them (tag 2) is taken while the reader is blind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from drivers.rfid.config import LlrpConfig, SmoothingConfig
from drivers.rfid.events import AntennaChanged, TagDeparted
from drivers.rfid.processor import RfidProcessor
from drivers.rfid.reads import AntennaStatus, ReaderStatus, TagRead
from edge.clock import ManualClock
from edge.config import Manifest
from edge.driver import DeviceOffline, Reading
from edge.processing import StockFlag, StockUpdate
from firmware_sim.world import sgtin96_hex

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
DEV = "rfid-1"
TAGS = [sgtin96_hex("0614141", "812345", s) for s in range(4)]  # tee-m x3 on the rack, #3 at the entrance


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def tag_read(i: int, s: float, ant: int = 1, seen_s: float | None = None) -> TagRead:
    seen = at(seen_s if seen_s is not None else s)
    return TagRead(device_id=DEV, time=at(s), epc=TAGS[i], antenna=ant, read_point={1: "apparel", 2: "entrance"}[ant],
                   rssi_dbm=-55.0, seen_us=int(seen.timestamp() * 1e6))  # fmt: skip


def status(s: float, inventorying: bool) -> ReaderStatus:
    reason = "" if inventorying else "ROSpec ended"
    return ReaderStatus(device_id=DEV, time=at(s), inventorying=inventorying, reason=reason)


def antenna(s: float, connected: bool) -> AntennaStatus:
    return AntennaStatus(device_id=DEV, time=at(s), antenna=1, connected=connected, read_point="apparel",
                         seen_us=int(at(s).timestamp() * 1e6))  # fmt: skip


def offline(s: float) -> DeviceOffline:
    return DeviceOffline(device_id=DEV, time=at(s), reason="connection closed by the reader")


def rack(s: int, tags: tuple[int, ...] = (0, 1, 2)) -> list[Reading]:
    return [tag_read(i, s) for i in tags]


Script = Callable[[int], list[Reading]]


def play(manifest: Manifest, script: Script, seconds: int = 90) -> list[tuple[int, tuple[object, ...]]]:
    reader = LlrpConfig(id=DEV, host="127.0.0.1", antennas={1: "apparel", 2: "entrance"},
                        smoothing=SmoothingConfig(present_after_reads=2, lost_timeout_s=10))  # fmt: skip
    proc = RfidProcessor(manifest.model_copy(update={"devices": [reader]}), ManualClock(T0))
    seen: list[tuple[int, tuple[object, ...]]] = []
    for s in range(seconds):
        outs = [o for r in script(s) for o in proc.feed(r, at(s))]
        outs += proc.tick(at(s))
        for o in outs:
            if isinstance(o, TagDeparted):
                seen.append((s, ("departed", TAGS.index(o.epc), round((o.last_seen - T0).total_seconds()))))
            elif isinstance(o, StockUpdate) and s > 2:
                seen.append((s, ("count", o.count)))
            elif isinstance(o, StockFlag):
                assert (o.shelf, o.flag, o.origin) == ("rack-c1", "stale", "rfid"), o
                if o.sku != "tee-m":  # tee-l hangs on the same rack: flagged alike
                    continue
                since = round((o.time - T0).total_seconds())
                state = ("reconciling" if "reconciling" in o.reason else "stale") if o.on else "trusted"
                seen.append((s, (state, since) if o.on else (state,)))
            elif isinstance(o, AntennaChanged):
                seen.append((s, ("antenna", o.antenna, o.connected, o.read_point)))
    if script is SCRIPTS["replay"]:
        assert proc.replayed == 20
    return seen


def _offline(s: int) -> list[Reading]:
    if s < 20:
        return rack(s)
    if s == 20:
        return [offline(s)]
    return rack(s, (0, 1)) if s >= 60 else []


def _not_inventorying(s: int) -> list[Reading]:
    if s < 20:
        return rack(s)
    if s < 60:
        return [status(s, False)] if s % 5 == 0 else []  # connected, keepalives, but the ROSpec ended
    return ([status(s, True)] if s == 60 else []) + rack(s, (0, 1))


def _silent(s: int) -> list[Reading]:
    return rack(s) if s < 20 else rack(s, (0, 1)) if s >= 60 else []


def _antenna(s: int) -> list[Reading]:
    if s < 20:
        return rack(s)
    entrance: list[Reading] = [tag_read(3, s, ant=2)]  # the reader runs on: antenna 2 still reads
    if s == 20:
        return [antenna(s, False), *entrance]
    if s < 60:
        return entrance
    return ([antenna(s, True)] if s == 60 else []) + entrance + rack(s, (0, 1))


def _read_reconnects_antenna(s: int) -> list[Reading]:
    if s == 20:
        return [antenna(s, False)]
    return rack(s) if s < 20 or s >= 40 else []


def _report_after_unplug(s: int) -> list[Reading]:
    # the report of the inventory run during which the port was unplugged comes after the AntennaEvent: its
    # reads were made before (by the reader's clock) and say nothing about the port now
    if s == 20:
        return [antenna(s, False)]
    if s == 21:
        return [tag_read(i, s, seen_s=19.5) for i in (0, 1, 2)]
    return rack(s) if s < 20 else ([antenna(s, True)] if s == 60 else []) + rack(s, (0, 1)) if s >= 60 else []


def _restart(s: int) -> list[Reading]:
    if s == 20:
        return [offline(s)]
    return rack(s) if s < 20 or s >= 23 else []


def _replay(s: int) -> list[Reading]:
    if s < 20:
        return rack(s)
    if s < 40:  # tag 2 left at 20; the reader replays its retained reads of it, 30 s old by its own clock
        return [*rack(s, (0, 1)), tag_read(2, s, seen_s=s - 30)]
    return rack(s, (0, 1))


def _taken_while_reading(s: int) -> list[Reading]:
    return rack(s) if s < 20 else rack(s, (0, 1))


def _field_emptied_with_beats(s: int) -> list[Reading]:
    if s < 20:
        return rack(s)
    return [status(s, True)] if s % 5 == 0 else []  # keepalives while inventorying an empty rack


SCRIPTS: dict[str, Script] = {
    "offline": _offline,
    "not_inventorying": _not_inventorying,
    "silent": _silent,
    "antenna": _antenna,
    "read_reconnects_antenna": _read_reconnects_antenna,
    "report_after_unplug": _report_after_unplug,
    "restart": _restart,
    "replay": _replay,
    "taken_while_reading": _taken_while_reading,
    "field_emptied_with_beats": _field_emptied_with_beats,
}

GONE_AT_70 = [(70, ("departed", 2, 19)), (70, ("count", 2)), (70, ("trusted",))]
EXPECTED: dict[str, list[tuple[int, tuple[object, ...]]]] = {
    # offline at 20 (last heard 19), back at 60 without tag 2: gone one lost-timeout after the return
    "offline": [(20, ("stale", 19)), (60, ("reconciling", 19)), *GONE_AT_70],
    "not_inventorying": [(20, ("stale", 20)), (60, ("reconciling", 20)), *GONE_AT_70],
    # nothing heard after 19: silent once the bound (max(lost 10, 2 x keepalive 5) = 10 s) has passed
    "silent": [(30, ("stale", 19)), (60, ("reconciling", 19)), *GONE_AT_70],
    "antenna": [(20, ("antenna", 1, False, "apparel")), (20, ("stale", 20)), (60, ("antenna", 1, True, "apparel")),
                (60, ("reconciling", 20)), *GONE_AT_70],
    # a read through the port reported down shows it connected again
    "read_reconnects_antenna": [(20, ("antenna", 1, False, "apparel")), (20, ("stale", 20)),
                                (40, ("antenna", 1, True, "apparel")), (40, ("reconciling", 20)), (50, ("trusted",))],
    # before: the late report's reads showed the port connected at 21, and the rack emptied at 31
    # (the late report's reads count as received at 21, as every read counts by when it arrived)
    "report_after_unplug": [(20, ("antenna", 1, False, "apparel")), (20, ("stale", 20)),
                            (60, ("antenna", 1, True, "apparel")), (60, ("reconciling", 20)),
                            (70, ("departed", 2, 21)), (70, ("count", 2)), (70, ("trusted",))],
    # the reader closed the connection and was back 3 s later: nothing departs, stale until reconciled
    "restart": [(20, ("stale", 19)), (23, ("reconciling", 19)), (33, ("trusted",))],
    "replay": [(29, ("departed", 2, 19)), (29, ("count", 2))],
    "taken_while_reading": [(29, ("departed", 2, 19)), (29, ("count", 2))],
    # the reader says it runs (beats every 5 s) and reads nothing: the rack really is empty
    "field_emptied_with_beats": [(30, ("departed", 0, 19)), (30, ("departed", 1, 19)), (30, ("departed", 2, 19)),
                                 (30, ("count", 0))],
}


@pytest.mark.parametrize("case", list(SCRIPTS))
def test_reader_aware_presence(demo_manifest: Manifest, case: str) -> None:
    assert play(demo_manifest, SCRIPTS[case]) == EXPECTED[case]


def test_stale_flags_name_the_reader_and_cover_its_cells(demo_manifest: Manifest) -> None:
    reader = LlrpConfig(id=DEV, host="127.0.0.1", antennas={1: "apparel"})
    proc = RfidProcessor(demo_manifest.model_copy(update={"devices": [reader]}), ManualClock(T0))
    for s in range(3):
        proc.feed(tag_read(0, s), at(s))
    proc.tick(at(3))
    flags = proc.feed(offline(5), at(5))
    reason = "reader rfid-1 offline: connection closed by the reader"
    assert flags == [StockFlag(shelf="rack-c1", sku=sku, time=at(2), origin="rfid", source=DEV, flag="stale", on=True,
                               reason=reason) for sku in ("tee-m", "tee-l")]  # fmt: skip
    assert proc.feed(offline(6), at(6)) == []  # a second notice while still offline changes nothing
    assert proc.tick(at(30)) == []  # no departure, no count while blind


def test_a_reader_not_heard_since_start_vouches_for_nothing(demo_manifest: Manifest) -> None:
    # after a restart the counts (and any stale flag) kept in the database are what they were; until the reader
    # is heard from, its cells are stale, and one lost-timeout after its first read they are trusted again
    seen = play(demo_manifest, lambda s: rack(s) if s >= 5 else [], seconds=20)
    assert seen == [(0, ("stale", 0)), (5, ("reconciling", 0)), (6, ("count", 3)), (15, ("trusted",))]


@pytest.mark.parametrize(
    ("section", "silence_s"),
    [
        ({"type": "llrp", "host": "127.0.0.1"}, 10.0),  # keepalive 5 s: the lost-timeout bounds it
        ({"type": "llrp", "host": "127.0.0.1", "keepalive_s": 20}, 40.0),
        ({"type": "llrp", "host": "127.0.0.1", "smoothing": {"lost_timeout_s": 30}}, 30.0),
        ({"type": "impinj_iot", "base_url": "http://127.0.0.1:1"}, 60.0),  # its keep-alive comes after 30 s idle
        ({"type": "zebra_iotc", "topic": "z/data", "heartbeat_timeout_s": 30}, 20.0),  # 3 x a 10 s heartbeat
        ({"type": "zebra_iotc", "topic": "z/data"}, 60.0),  # period unknown: 30 s assumed
    ],
)
def test_silence_bound_outlasts_the_readers_beat(demo_manifest: Manifest, section: dict[str, object],
                                                 silence_s: float) -> None:
    # an empty field (everything sold) is not silence: the bound is twice the beat, at least the lost-timeout
    from drivers.rfid.config import ImpinjIotConfig, RfidConfigBase, ZebraIotcConfig

    models: dict[str, type[RfidConfigBase]] = {"llrp": LlrpConfig, "impinj_iot": ImpinjIotConfig,
                                               "zebra_iotc": ZebraIotcConfig}  # fmt: skip
    model = models[str(section["type"])]
    cfg = model.model_validate({"id": DEV, "antennas": {1: "apparel"}, **section})
    proc = RfidProcessor(demo_manifest.model_copy(update={"devices": [cfg]}), ManualClock(T0))
    assert proc.silence_s[DEV] == silence_s


def test_a_tag_another_reader_took_over_departs_under_that_reader(demo_manifest: Manifest) -> None:
    # rfid-1 goes offline for good; rfid-2 (same rack) reads the tags from 35 s; tag 2 leaves at 45 s: rfid-2 saw
    # it go, so it departs one lost-timeout after its last read, although rfid-1 never comes back
    readers = [LlrpConfig(id=d, host="127.0.0.1", antennas={1: "apparel"}) for d in (DEV, "rfid-2")]
    proc = RfidProcessor(demo_manifest.model_copy(update={"devices": readers}), ManualClock(T0))
    departed: list[tuple[int, int]] = []
    for s in range(90):
        reads: list[Reading] = [tag_read(i, s) for i in (0, 1, 2)] if s < 20 else []
        if s == 20:
            reads = [offline(s)]
        if s >= 35:
            reads = [replace(tag_read(i, s), device_id="rfid-2") for i in ((0, 1, 2) if s < 45 else (0, 1))]
        if s < 35:
            reads.append(ReaderStatus(device_id="rfid-2", time=at(s), inventorying=True))  # rfid-2 runs, sees none
        outs = [o for r in reads for o in proc.feed(r, at(s))] + list(proc.tick(at(s)))
        departed += [(s, TAGS.index(o.epc)) for o in outs if isinstance(o, TagDeparted)]
    assert departed == [(54, 2)]


def test_an_offline_reader_retrying_does_not_republish_its_cells(demo_manifest: Manifest) -> None:
    reader = LlrpConfig(id=DEV, host="127.0.0.1", antennas={1: "apparel"})
    proc = RfidProcessor(demo_manifest.model_copy(update={"devices": [reader]}), ManualClock(T0))
    proc.feed(tag_read(0, 0), at(0))
    proc.tick(at(0))
    assert len(proc.feed(offline(1), at(1))) == 2  # tee-m, tee-l stale
    retry = DeviceOffline(device_id=DEV, time=at(3), reason="ConnectionRefusedError: [Errno 111]")
    assert proc.feed(retry, at(3)) == []  # still offline: nothing new to say
    flags = proc.feed(status(4, False), at(4))  # connected, but not inventorying: a new reason
    assert [f.reason for f in flags if isinstance(f, StockFlag)] == ["reader rfid-1 not inventorying: ROSpec ended"] * 2
