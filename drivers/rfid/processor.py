"""The RFID processor: `TagRead`s of every reader -> smoothed tag events, EPCIS events and shelf stock counts.

Pure (no I/O, no clock reads): `feed` and `tick` get `now`, the gateway's time, which is the only time the
smoothing uses (reader timestamps stay in the readings as information).

Stock: the engine keeps, per zone x GTIN, how many tags are present. `tick` turns every cell that changed
into `StockUpdate(count=..., origin="rfid", source=<reader>)` for the shelf x SKU it maps to: the shelves
of that zone whose planogram holds a SKU whose catalog GTIN matches. When one zone has several shelves
with the same SKU, RFID cannot tell them apart: the whole zone count is claimed for the FIRST such shelf
in manifest order and the others get no RFID claim (weight shelves or scans own them). Updates are
coalesced per tick, so a warm-up of hundreds of arrivals gives one update per cell, not hundreds.

Reader-aware presence (issue 14): a tag's absence counts only while the reader that last read it could see
it. A reader is *blind* while it is offline (`DeviceOffline` from the supervisor), not inventorying
(`ReaderStatus(inventorying=False)`), or silent (nothing at all, no read and no status beat, for its silence
bound: `max(lost_timeout_s, 2 x its beat period)`, see `beat_s`); a read point is blind while an antenna mapped to it is
disconnected (`AntennaStatus`). Blind tags never depart (no stock change, no alert); every cell of a blind
reader's zones gets `StockFlag(stale, on)` dated from when it was last known to see (its last message); a
configured reader not heard from by the first tick is blind from then (a count kept across a restart, or a
stale flag persisted with it, is vouched for again only by the reader).
A fresh read or `ReaderStatus(inventorying=True)` brings a reader back; `AntennaStatus(connected=True)` or a
read through that antenna brings a read point back. Then its frozen tags' lost-timeout clocks restart at the
resume time and the cells stay stale until one lost-timeout later (its first complete cycles: present tags
re-read, gone ones departed), when `StockFlag(stale, off)` follows the reconciled count. Besides, a tag past
its deadline departs only once its reader has been heard from after that deadline (see smoothing.py).

Replays: a read whose own (offset-corrected) timestamp `seen_us` is older than the reader's lost-timeout
(a Zebra reader's retained events after an outage) neither makes a tag present nor extends its presence;
counted in `replayed`. A timestamp more than a day away is the reader's clock, not a replay, and is ignored.

Back room (manifest `backroom:`, edge/backroom.py): an antenna mapped to a back-room location counted by rfid is a
read point like a zone; `tick` reports every changed location x GTIN cell as `BackroomCounted(origin="rfid",
count=n)` for the catalog SKU of that GTIN (kept there). The same blindness makes the location stale:
`BackroomStale(on=True)` while a reader covering it is blind or reconciling (also for one lost-timeout after the
gateway started: the count kept from before is vouched for only once the tags had time to be read again),
`on=False` once it is seen again, followed by the count of every SKU kept there that differs from the last one
reported (after a restart: all of them).

Antennas: every change of an antenna's state is an `AntennaChanged` device-health event (events/device).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from drivers.rfid.config import RfidConfigBase
from drivers.rfid.epcis import object_event
from drivers.rfid.events import AntennaChanged, EpcisObjectEvent, TagArrived, TagDeparted, TagMoved
from drivers.rfid.reads import AntennaStatus, ReaderStatus, TagRead
from drivers.rfid.smoothing import Change, Params, SmoothingEngine
from edge.backroom import BackroomCounted, BackroomStale
from edge.clock import Clock, utc
from edge.config import Manifest
from edge.driver import DeviceOffline, Reading
from edge.events import Event
from edge.processing import Output, StockFlag, StockUpdate

MAX_SKEW_S = 86_400.0  # a reader timestamp further away than a day is its clock being wrong, not a replay
BlindKey = str | tuple[str, str]  # a reader id, or (reader id, read point)


def params_of(cfg: RfidConfigBase) -> Params:
    """The engine's plain parameters from a reader's config section."""
    s = cfg.smoothing
    return Params(s.present_after_reads, s.present_after_s, s.lost_timeout_s, s.rssi_alpha, s.move_margin_db,
                  s.move_hold_s, s.zone_stale_s, s.min_rssi_dbm)  # fmt: skip


IMPINJ_KEEPALIVE_S = 30.0  # Impinj IoT interface: a CR-LF keep-alive after 30 s without data (drivers/rfid/impinj.py)
UNKNOWN_BEAT_S = 30.0  # a reader whose beat period the manifest does not say (Zebra without heartbeat_timeout_s)


def beat_s(cfg: RfidConfigBase) -> float:
    """How often a reader with no tag in its field still says something (its liveness beat)."""
    keepalive = getattr(cfg, "keepalive_s", None)  # LLRP KEEPALIVE
    if isinstance(keepalive, int | float):
        return float(keepalive)
    if hasattr(cfg, "idle_timeout_s"):
        return IMPINJ_KEEPALIVE_S
    heartbeat_timeout = getattr(cfg, "heartbeat_timeout_s", None)  # Zebra: 3 x the heartbeat period
    if isinstance(heartbeat_timeout, int | float):
        return heartbeat_timeout / 3
    return UNKNOWN_BEAT_S


class RfidProcessor:
    """One instance for all RFID readers of the store (zones cross readers)."""

    reading_types: tuple[type[Reading], ...] = (TagRead, ReaderStatus, AntennaStatus, DeviceOffline)

    def __init__(self, manifest: Manifest, clock: Clock) -> None:
        self.engine = SmoothingEngine()
        self.default_params = Params()
        self.params: dict[str, Params] = {}
        self.epcis_readers: set[str] = set()
        self.silence_s: dict[str, float] = {}  # reader -> nothing heard for longer than this: silent
        self.covers: dict[str, set[str]] = {}  # reader -> read points (zones) its antennas map to
        for dev in manifest.typed_devices():
            if isinstance(dev, RfidConfigBase):
                self.params[dev.id] = params_of(dev)
                if dev.epcis:
                    self.epcis_readers.add(dev.id)
                self.silence_s[dev.id] = max(dev.smoothing.lost_timeout_s, 2 * beat_s(dev))
                points = set(dev.antennas.values())
                if dev.zone is not None:
                    points.add(dev.zone)
                self.covers[dev.id] = points
        self.sgln = {z.id: z.sgln for z in manifest.zones}
        gtin_skus: dict[str, list[str]] = {}
        for item in manifest.catalog:
            if item.gtin:
                gtin_skus.setdefault(item.gtin, []).append(item.sku)
        # (zone, gtin) -> (shelf, sku): first shelf of the zone holding a SKU with that GTIN
        self.cells: dict[tuple[str, str], tuple[str, str]] = {}
        for shelf in manifest.shelves:
            for lane in shelf.lanes:
                for gtin, skus in gtin_skus.items():
                    if lane.sku in skus:
                        self.cells.setdefault((shelf.zone, gtin), (shelf.id, lane.sku))
        self.emitted: dict[tuple[str, str], int] = {}
        # zone x GTIN -> earliest time (UNIX s) a change of the cell really happened since its last update:
        # a departed item left when it was last read, not when the lost-timeout declared it gone
        self.changed_at: dict[tuple[str, str], float] = {}
        self.cell_source: dict[tuple[str, str], str] = {}
        self.unmapped = 0  # reads from antennas mapped to no zone
        self.replayed = 0  # reads older than the reader's lost-timeout by its own clock (retained, replayed)
        self.zone_targets: dict[str, list[tuple[str, str]]] = {}
        for (zone, _gtin), target in self.cells.items():
            self.zone_targets.setdefault(zone, []).append(target)
        # back-room locations counted by rfid: (location, gtin) -> sku; what was last said of each location
        rooms = [x for x in manifest.backroom.locations if "rfid" in x.counted_by]
        self.room_cells: dict[tuple[str, str], str] = {
            (x.id, gtin): sku for x in rooms for gtin, skus in gtin_skus.items() for sku in skus[:1] if x.keeps(sku)}
        self.room_stale: dict[str, tuple[float, str] | None] = {}  # location -> (since, reason) said, None: fresh
        covered = set().union(*self.covers.values()) if self.covers else set()
        self.rooms = {x.id for x in rooms} & covered  # a location no antenna reads is never vouched for
        # blind readers / read points: key -> (since, reason); reconciling after a resume: key -> until
        self.blind: dict[BlindKey, tuple[float, str]] = {}
        self.reconciling: dict[BlindKey, tuple[float, float, str]] = {}  # key -> (until, since, reason)
        self.stale: dict[tuple[str, str], tuple[float, str]] = {}  # (shelf, sku) flagged -> (since, reason)
        self.antennas_down: dict[tuple[str, int], str | None] = {}  # (reader, port) -> its read point
        self.antenna_state: dict[tuple[str, int], bool] = {}
        self.antenna_down_us: dict[tuple[str, int], int] = {}  # (reader, port) -> down since, by the reader's clock
        self._started = False

    def feed(self, reading: Reading, now: datetime) -> Sequence[Output]:
        """Account one tag read, reader status, antenna status or device-offline notice."""
        if type(reading) is not TagRead:
            return self._status(reading, now)
        dev = reading.device_id
        p = self.params.get(dev, self.default_params)
        t = now.timestamp()
        seen = reading.seen_us
        if seen is not None and p.lost_timeout_s < t - seen * 1e-6 < MAX_SKEW_S:
            self.replayed += 1
            return ()
        self.engine.heard[dev] = t
        rp = reading.read_point
        flags: list[Output] | None = None
        if (self.blind or self.antennas_down) and (dev in self.blind or (dev, reading.antenna) in self.antennas_down) \
                and not self._before_unplug(dev, reading):
            flags = self._back(dev, reading.antenna, now)
        if rp is None:
            self.unmapped += 1
            return flags or ()
        changes = self.engine.observe(reading.epc, rp, reading.rssi_dbm, t, dev, p)
        if flags is None:
            return self.outputs(changes, now) if changes else ()
        return flags + self.outputs(changes, now) if changes else flags

    def _status(self, reading: Reading, now: datetime) -> list[Output]:
        """ReaderStatus, AntennaStatus, DeviceOffline: what the reader can see now."""
        dev = reading.device_id
        t = now.timestamp()
        if isinstance(reading, DeviceOffline):
            since = min(self.engine.heard.get(dev, t), t)
            return self._go_blind(dev, since, f"reader {dev} offline: {reading.reason}".rstrip(": "), now)
        if isinstance(reading, ReaderStatus):
            self.engine.heard[dev] = t
            if reading.inventorying:
                return self._back(dev, None, now) if self.blind else []
            reason = f"reader {dev} not inventorying: {reading.reason}".rstrip(": ")
            return self._go_blind(dev, t, reason, now)
        if isinstance(reading, AntennaStatus):
            self.engine.heard[dev] = t
            return self._antenna(reading, now)
        return []

    def _antenna(self, st: AntennaStatus, now: datetime) -> list[Output]:
        out = self._antenna_state(st.device_id, st.antenna, st.connected, st.read_point, now)
        if not st.connected and st.seen_us is not None:
            self.antenna_down_us[(st.device_id, st.antenna)] = st.seen_us
        return out + self._restale(now)

    def _before_unplug(self, dev: str, reading: TagRead) -> bool:
        """A read through a port reported down, made before it went down by the reader's own clock: the report
        of the run during which the antenna was unplugged arrives after the AntennaEvent, and its reads say
        nothing about the port now (they would show it connected, and the tags behind it would then depart)."""
        down = self.antenna_down_us.get((dev, reading.antenna))
        return down is not None and reading.seen_us is not None and reading.seen_us <= down \
            and (dev, reading.antenna) in self.antennas_down and dev not in self.blind

    def _antenna_state(self, dev: str, port: int, connected: bool, rp: str | None, now: datetime) -> list[Output]:
        """Record an antenna's state; its event when it changed. Stale flags are the caller's (`_restale`)."""
        out: list[Output] = []
        if self.antenna_state.get((dev, port), True) != connected:
            out.append(AntennaChanged(source=dev, time=now, subject=dev, antenna=port, connected=connected,
                                      read_point=rp))  # fmt: skip
        self.antenna_state[(dev, port)] = connected
        if not connected:
            self.antennas_down[(dev, port)] = rp
            if rp is not None:
                self._blind((dev, rp), now.timestamp(), f"reader {dev} antenna {port} disconnected")
            return out
        rp = self.antennas_down.pop((dev, port), rp)
        self.antenna_down_us.pop((dev, port), None)
        if rp is not None and not any(k[0] == dev and v == rp for k, v in self.antennas_down.items()):
            self._resume((dev, rp), now)
        return out

    def _go_blind(self, key: BlindKey, since: float, reason: str, now: datetime) -> list[Output]:
        self._blind(key, since, reason)
        return self._restale(now)

    def _blind(self, key: BlindKey, since: float, reason: str) -> None:
        old = self.blind.get(key)
        if old is not None:
            # a new kind of blindness (offline -> not inventorying) is said; the same one again (every failed
            # reconnect of an offline reader) is not, so the shelf snapshot is not republished per retry
            if old[1].split(":", 1)[0] != reason.split(":", 1)[0]:
                self.blind[key] = (old[0], reason)
        else:
            self.blind[key] = (since, reason)
            self.engine.freeze(key, since)
        self.reconciling.pop(key, None)

    def _back(self, dev: str, antenna: int | None, now: datetime) -> list[Output]:
        """A fresh read (through `antenna`) or an inventorying status from a blind reader."""
        out: list[Output] = []
        if antenna is not None and (dev, antenna) in self.antennas_down:
            out += self._antenna_state(dev, antenna, True, self.antennas_down[(dev, antenna)], now)
        self._resume(dev, now)
        return out + self._restale(now)

    def _resume(self, key: BlindKey, now: datetime) -> None:
        entry = self.blind.pop(key, None)
        if entry is None:
            return
        t = now.timestamp()
        self.engine.resume(key, t)
        dev = key if isinstance(key, str) else key[0]
        lost = self.params.get(dev, self.default_params).lost_timeout_s
        since, reason = entry
        self.reconciling[key] = (t + lost, since, f"{reason}; reconciling since its return")

    def _zones(self, key: BlindKey) -> set[str]:
        return self.covers.get(key, set()) if isinstance(key, str) else {key[1]}

    def _restale(self, now: datetime) -> list[Output]:
        """StockFlag(stale) on/off for every cell whose blind/reconciling coverage changed."""
        want: dict[tuple[str, str], tuple[float, str]] = {}
        for key, (since, reason) in [*self.blind.items(), *((k, v[1:]) for k, v in self.reconciling.items())]:
            for zone in self._zones(key):
                for target in self.zone_targets.get(zone, ()):
                    if target not in want or since < want[target][0]:
                        want[target] = (since, reason)
        out: list[Output] = []
        for target, (since, reason) in want.items():
            old = self.stale.get(target)
            if old is None or old[1] != reason:
                out.append(StockFlag(shelf=target[0], sku=target[1], time=utc(since), origin="rfid",
                                     source=self._source(reason), flag="stale", on=True, reason=reason))  # fmt: skip
        for target in self.stale.keys() - want.keys():
            out.append(StockFlag(shelf=target[0], sku=target[1], time=now, origin="rfid", source="rfid",
                                 flag="stale", on=False, reason="readers see the cell again"))  # fmt: skip
        self.stale = want
        return out + self._rooms_stale(now) if self.rooms else out

    def _rooms_stale(self, now: datetime) -> list[Output]:
        """BackroomStale on/off for every rfid-counted back-room location whose coverage changed (or was never
        said); a vouched location's counts follow its flag."""
        want: dict[str, tuple[float, str]] = {}
        for key, (since, reason) in [*self.blind.items(), *((k, v[1:]) for k, v in self.reconciling.items())]:
            for point in self._zones(key) & self.rooms:
                if point not in want or since < want[point][0]:
                    want[point] = (since, reason)
        out: list[Output] = []
        for loc in sorted(self.rooms):
            new = want.get(loc)
            if loc in self.room_stale:
                old = self.room_stale[loc]
                if (old is None) == (new is None) and (old is None or new is None or old[1] == new[1]):
                    continue  # the same word again (a new reason of blindness is said, the same one is not)
            self.room_stale[loc] = new
            if new is not None:
                out.append(BackroomStale(source=self._source(new[1]), time=now, subject=loc, location=loc, on=True,
                                         since=utc(new[0]), reason=new[1]))  # fmt: skip
                continue
            out.append(BackroomStale(source="rfid", time=now, subject=loc, location=loc, on=False,
                                     reason="readers see the location"))  # fmt: skip
            for cell in sorted(c for c in self.room_cells if c[0] == loc):
                n = self.engine.count(*cell)
                if self.emitted.get(cell) != n:
                    self.emitted[cell] = n
                    out.append(self._room_count(cell, n, now, "vouched for again"))
        return out

    def _room_count(self, cell: tuple[str, str], n: int, when: datetime, why: str) -> BackroomCounted:
        loc, gtin = cell
        return BackroomCounted(source=self.cell_source.get(cell, "rfid"), time=when, subject=loc, location=loc,
                               sku=self.room_cells[cell], gtin=gtin, origin="rfid", count=n,
                               reason=f"{n} tag(s) of GTIN {gtin} present at {loc} ({why})")  # fmt: skip

    @staticmethod
    def _source(reason: str) -> str:
        parts = reason.split(" ", 2)
        return parts[1] if len(parts) > 1 and parts[0] == "reader" else "rfid"

    def _presence(self, now: datetime) -> list[Output]:
        """Silent readers go blind; reconciliations that lasted a lost-timeout end."""
        t = now.timestamp()
        changed = False
        if not self._started:  # a reader not heard from yet cannot vouch for the counts kept from before
            self._started = True
            for dev in self.params.keys() - self.engine.heard.keys():
                self._blind(dev, t, f"reader {dev} not heard from since the gateway started")
                changed = True
            # a back-room count kept from before is vouched for only after a lost-timeout of fresh reads (its
            # tags present again, gone ones departed); readers not heard are blind above
            for dev in self.params.keys() & self.engine.heard.keys():
                lost = self.params[dev].lost_timeout_s
                for room in self.covers.get(dev, set()) & self.rooms:
                    self.reconciling[(dev, room)] = (t + lost, t, f"reader {dev} counting {room} since the gateway "
                                                                  "started")  # fmt: skip
                    changed = True
        for dev, heard in self.engine.heard.items():
            if dev not in self.blind and t - heard > self.silence_s.get(dev, self.default_params.lost_timeout_s):
                self._blind(dev, heard, f"reader {dev} silent: nothing heard since its last message")
                changed = True
        if any(until <= t for until, _, _ in self.reconciling.values()):
            self.reconciling = {k: v for k, v in self.reconciling.items() if v[0] > t}
            changed = True
        return self._restale(now) if changed else []

    def tick(self, now: datetime) -> Sequence[Output]:
        """Blind readers, departures after the lost-timeout, one stock update per changed zone x GTIN cell, then
        stale flags that a reconciliation ended."""
        presence = self._presence(now)
        t = now.timestamp()
        if self.engine.frozen or self.engine.frozen_points:
            self.engine.unpark_moved(t, every=self.default_params.lost_timeout_s)
        changes = self.engine.expire(t)
        out: list[Output] = self.outputs(changes, now) if changes else []
        for cell in sorted(self.engine.take_dirty()):
            target = self.cells.get(cell)
            if target is None:
                if cell in self.room_cells and self.emitted.get(cell) != (n := self.engine.count(*cell)):
                    self.emitted[cell] = n
                    at = self.changed_at.pop(cell, None)
                    out.append(self._room_count(cell, n, min(now, utc(at)) if at is not None else now, "counted"))
                continue
            n = self.engine.count(*cell)
            if self.emitted.get(cell) == n:
                continue
            self.emitted[cell] = n
            shelf, sku = target
            at = self.changed_at.pop(cell, None)
            when = min(now, utc(at)) if at is not None else now
            out.append(StockUpdate(shelf=shelf, sku=sku, time=when, origin="rfid",
                                   source=self.cell_source.get(cell, "rfid"), count=n,
                                   reason=f"{n} tag(s) of GTIN {cell[1]} present in zone {cell[0]}"))  # fmt: skip
        return self._order(presence, out)

    @staticmethod
    def _order(flags: list[Output], out: list[Output]) -> list[Output]:
        """New stale flags before the tick's updates, cleared ones after them (a cell is served as trusted only
        once its reconciled count is in)."""
        if not flags:
            return out
        on = [f for f in flags if isinstance(f, StockFlag) and f.on]
        off = [f for f in flags if not (isinstance(f, StockFlag) and f.on)]
        return [*on, *out, *off]

    def outputs(self, changes: list[Change], now: datetime) -> list[Output]:
        """Events for smoothed changes (and their EPCIS form for readers with `epcis: true`)."""
        out: list[Output] = []
        for ch in changes:
            tag = ch.tag
            src = tag.reader
            ev: Event
            if tag.gtin is not None:
                self.cell_source[(ch.zone, tag.gtin)] = src
                happened = tag.last if ch.kind == "departed" else now.timestamp()
                cell = (ch.zone, tag.gtin)
                self.changed_at[cell] = min(self.changed_at.get(cell, happened), happened)
            if ch.kind == "arrived":
                ev = TagArrived(source=src, time=now, subject=ch.zone, epc=tag.epc, epc_uri=tag.key, gtin=tag.gtin,
                                zone=ch.zone, rssi_dbm=round(tag.rssi, 1))  # fmt: skip
            elif ch.kind == "moved":
                assert ch.from_zone is not None
                if tag.gtin is not None:
                    self.cell_source[(ch.from_zone, tag.gtin)] = src
                ev = TagMoved(source=src, time=now, subject=ch.zone, epc=tag.epc, epc_uri=tag.key, gtin=tag.gtin,
                              from_zone=ch.from_zone, zone=ch.zone, rssi_dbm=round(tag.rssi, 1))  # fmt: skip
            else:
                last = now - timedelta(seconds=max(0.0, now.timestamp() - tag.last))
                dwell = round(max(0.0, tag.last - tag.arrived), 3)
                ev = TagDeparted(source=src, time=now, subject=ch.zone, epc=tag.epc, epc_uri=tag.key, gtin=tag.gtin,
                                 zone=ch.zone, last_seen=last, dwell_s=dwell)  # fmt: skip
            out.append(ev)
            if src in self.epcis_readers:
                out.append(self.epcis(ch, now))
        return out

    def epcis(self, ch: Change, now: datetime) -> EpcisObjectEvent:
        """The EPCIS 2.0 ObjectEvent of one change (see drivers/rfid/epcis.py for the choices)."""
        sgln = self.sgln.get(ch.zone)
        if ch.kind == "departed":
            doc = object_event([ch.tag.epc], utc(ch.tag.last), disposition="unknown", read_point=sgln)
        else:
            doc = object_event([ch.tag.epc], now, read_point=sgln, biz_location=sgln)
        return EpcisObjectEvent(source=ch.tag.reader, time=now, subject=ch.zone, event_id=doc["eventID"], document=doc)
