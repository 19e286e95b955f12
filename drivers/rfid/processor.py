"""The RFID processor: `TagRead`s of every reader -> smoothed tag events, EPCIS events and shelf stock counts.

Pure (no I/O, no clock reads): `feed` and `tick` get `now`, the gateway's time, which is the only time the
smoothing uses (reader timestamps stay in the readings as information).

Stock: the engine keeps, per zone x GTIN, how many tags are present. `tick` turns every cell that changed
into `StockUpdate(count=..., origin="rfid", source=<reader>)` for the shelf x SKU it maps to: the shelves
of that zone whose planogram holds a SKU whose catalog GTIN matches. When one zone has several shelves
with the same SKU, RFID cannot tell them apart: the whole zone count is claimed for the FIRST such shelf
in manifest order and the others get no RFID claim (weight shelves or scans own them). Updates are
coalesced per tick, so a warm-up of hundreds of arrivals gives one update per cell, not hundreds.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from drivers.base import Reading
from drivers.rfid.config import RfidConfigBase
from drivers.rfid.epcis import object_event
from drivers.rfid.events import EpcisObjectEvent, TagArrived, TagDeparted, TagMoved
from drivers.rfid.reads import TagRead
from drivers.rfid.smoothing import Change, Params, SmoothingEngine
from edge.clock import Clock, utc
from edge.config import Manifest
from edge.events import Event
from edge.processing import Output, StockUpdate


def params_of(cfg: RfidConfigBase) -> Params:
    """The engine's plain parameters from a reader's config section."""
    s = cfg.smoothing
    return Params(s.present_after_reads, s.present_after_s, s.lost_timeout_s, s.rssi_alpha, s.move_margin_db,
                  s.move_hold_s, s.zone_stale_s, s.min_rssi_dbm)  # fmt: skip


class RfidProcessor:
    """One instance for all RFID readers of the store (zones cross readers)."""

    reading_types: tuple[type[Reading], ...] = (TagRead,)

    def __init__(self, manifest: Manifest, clock: Clock) -> None:
        self.engine = SmoothingEngine()
        self.default_params = Params()
        self.params: dict[str, Params] = {}
        self.epcis_readers: set[str] = set()
        for dev in manifest.typed_devices():
            if isinstance(dev, RfidConfigBase):
                self.params[dev.id] = params_of(dev)
                if dev.epcis:
                    self.epcis_readers.add(dev.id)
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

    def feed(self, reading: Reading, now: datetime) -> Sequence[Output]:
        """Account one tag read."""
        if not isinstance(reading, TagRead):
            return ()
        if reading.read_point is None:
            self.unmapped += 1
            return ()
        dev = reading.device_id
        changes = self.engine.observe(reading.epc, reading.read_point, reading.rssi_dbm, now.timestamp(), dev,
                                      self.params.get(dev, self.default_params))  # fmt: skip
        return self.outputs(changes, now) if changes else ()

    def tick(self, now: datetime) -> Sequence[Output]:
        """Departures after the lost-timeout, then one stock update per changed zone x GTIN cell."""
        changes = self.engine.expire(now.timestamp())
        out: list[Output] = self.outputs(changes, now) if changes else []
        for cell in sorted(self.engine.take_dirty()):
            target = self.cells.get(cell)
            if target is None:
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
        return out

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
