"""Scan semantics: what a scan means depends on the scanner's role (manifest `role:` or a MODE: barcode).

- receive: an item scan books goods into the backroom (`retail.scan.received.v1`).
- restock: `SHELF:<id>` starts a session on that shelf (`retail.restock.started.v1`); each item of a SKU of
  that shelf is `StockUpdate(delta=+qty, origin="scan")`; RESTOCK:END, another shelf/mode or the session
  timeout finishes it (`retail.restock.finished.v1`).
- count: `SHELF:<id>` then items; COUNT:END (or the timeout, or another shelf/mode) sets every SKU of the
  shelf to what was scanned (`StockUpdate(count=...)`, `retail.scan.count.finished.v1`).
- lookup: `retail.scan.lookup.v1`.
- pick (online orders, edge/orders.py): `ORDER:<id>` names the order being picked (optional); each item is
  `retail.scan.picked.v1` (the order book counts it toward the open pick task of that SKU).
- any role: `COLLECT:<id>` hands a ready order over (`retail.scan.collected.v1`).
Back room (manifest `backroom:`, edge/backroom.py): where a location is counted by receiving for this scanner, a
receive scan also books its units into that location (`retail.backroom.counted.v1`, delta +qty) and every item of a
restock session moves its units out of it onto the session's shelf (delta -qty, `shelf` set): staff restock a shelf
from the back room, so the restock scan is the move.
Unknown GTINs, unreadable and ambiguous codes are reported as events, never dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from drivers.scanner.config import ScannerConfigBase
from drivers.scanner.events import (
    CycleCountFinished,
    RestockFinished,
    RestockStarted,
    ScanAmbiguous,
    ScanCollected,
    ScanLookup,
    ScanModeChanged,
    ScanPicked,
    ScanReceived,
    ScanRejected,
    ScanUnknownGtin,
    ScanUnreadable,
)
from drivers.scanner.gs1 import Decoded, parse_code
from drivers.scanner.reads import Scan
from edge.backroom import BackroomCounted
from edge.clock import Clock
from edge.config import Manifest
from edge.driver import Reading
from edge.processing import Output, StockUpdate

ROLES = ("receive", "restock", "count", "lookup", "pick")


@dataclass
class _Session:
    role: str
    shelf: str | None = None
    items: int = 0
    tally: dict[str, int] = field(default_factory=dict)
    last: datetime | None = None
    order: str | None = None  # role pick: the order named by ORDER:<id>


class ScannerProcessor:
    """Turns `Scan` readings into stock updates and scan/restock events."""

    reading_types: tuple[type[Reading], ...] = (Scan,)

    def __init__(self, manifest: Manifest, clock: Clock) -> None:
        self._manifest = manifest
        self._devices = {d.id: d for d in manifest.typed_devices() if isinstance(d, ScannerConfigBase)}
        self._by_gtin = {c.gtin: c.sku for c in manifest.catalog if c.gtin}
        self._sessions: dict[str, _Session] = {}

    def _session(self, device: str) -> _Session:
        s = self._sessions.get(device)
        if s is None:
            dev = self._devices.get(device)
            s = self._sessions[device] = _Session(role=dev.role if dev else "lookup")
        return s

    def _shelf_skus(self, shelf: str) -> list[str]:
        sh = self._manifest.shelf(shelf)
        return list(dict.fromkeys(ln.sku for ln in sh.lanes)) if sh else []

    def feed(self, reading: Reading, now: datetime) -> Sequence[Output]:
        """Handle one scan."""
        if not isinstance(reading, Scan):
            return ()
        dev = self._devices.get(reading.device_id)
        code = parse_code(reading.value, dev.extra_separators if dev else "")
        s = self._session(reading.device_id)
        src, t = reading.device_id, reading.time
        s.last = t
        if code.kind == "control" and code.control is not None:
            return self._control(s, src, t, code.control)
        if code.kind == "unreadable":
            return [
                ScanUnreadable(
                    source=src, time=t, raw=reading.value[:200], reason=code.reason, symbology=code.symbology
                )
            ]
        return self._item(s, src, t, code, reading.value)

    def _control(self, s: _Session, src: str, t: datetime, control: tuple[str, str]) -> list[Output]:
        kind, arg = control
        out: list[Output] = []
        if kind == "MODE":
            role = arg.lower()
            if role not in ROLES:
                return [ScanUnreadable(source=src, time=t, raw=f"MODE:{arg}", reason="unknown mode")]
            out += self._finish(s, src, t, "mode changed")
            out.append(ScanModeChanged(source=src, time=t, role=role, previous=s.role))
            s.role = role
            return out
        if kind == "SHELF":
            if self._manifest.shelf(arg) is None:
                return [ScanRejected(source=src, time=t, role=s.role, reason="unknown shelf label")]
            if s.shelf == arg:
                return out
            out += self._finish(s, src, t, "another shelf")
            s.shelf = arg
            if s.role == "restock":
                out.append(RestockStarted(source=src, time=t, subject=arg, shelf=arg, scanner=src))
            return out
        if kind == "ORDER":
            if s.role != "pick":
                return [ScanRejected(source=src, time=t, role=s.role, reason="ORDER: codes need the pick mode")]
            s.order = arg
            return out
        if kind == "COLLECT":
            return [ScanCollected(source=src, time=t, order_id=arg)]
        if (kind, arg) in (("COUNT", "END"), ("RESTOCK", "END")):
            return self._finish(s, src, t, "end code")
        return [ScanUnreadable(source=src, time=t, raw=f"{kind}:{arg}", reason="unknown control code")]

    def _finish(self, s: _Session, src: str, t: datetime, reason: str) -> list[Output]:
        out: list[Output] = []
        shelf = s.shelf
        if shelf is not None and s.role == "restock":
            out.append(
                RestockFinished(
                    source=src, time=t, subject=shelf, shelf=shelf, scanner=src, items=s.items, reason=reason
                )
            )
        elif shelf is not None and s.role == "count":
            counts = {sku: s.tally.get(sku, 0) for sku in self._shelf_skus(shelf)}
            out += [
                StockUpdate(
                    shelf=shelf, sku=sku, time=t, origin="count", source=src, count=n, reason=f"cycle count ({reason})"
                )
                for sku, n in counts.items()
            ]
            out.append(CycleCountFinished(source=src, time=t, subject=shelf, shelf=shelf, counts=counts, reason=reason))
        s.shelf = None
        s.items = 0
        s.tally = {}
        s.order = None
        return out

    def _item(self, s: _Session, src: str, t: datetime, code: Decoded, raw: str) -> list[Output]:
        assert code.gtin is not None
        out: list[Output] = []
        if code.ambiguous:
            out.append(ScanAmbiguous(source=src, time=t, raw=raw[:200], gtin=code.gtin))
        sku = self._by_gtin.get(code.gtin)
        if sku is None:
            out.append(ScanUnknownGtin(source=src, time=t, gtin=code.gtin, role=s.role))
            return out
        room = self._manifest.backroom.receiving_for(src)
        room = room if room is not None and room.keeps(sku) else None
        if s.role == "receive":
            if room is not None:
                out.append(BackroomCounted(source=src, time=t, subject=room.id, location=room.id, sku=sku,
                                           gtin=code.gtin, origin="receiving", delta=code.quantity,
                                           reason="receive scan"))  # fmt: skip
            out.append(
                ScanReceived(
                    source=src,
                    time=t,
                    sku=sku,
                    gtin=code.gtin,
                    qty=code.quantity,
                    batch=code.batch,
                    expiry=code.expiry,
                    serial=code.serial,
                    ambiguous=code.ambiguous,
                )
            )
        elif s.role == "lookup":
            out.append(ScanLookup(source=src, time=t, sku=sku, gtin=code.gtin, batch=code.batch, expiry=code.expiry))
        elif s.role == "pick":
            out.append(ScanPicked(source=src, time=t, sku=sku, gtin=code.gtin, qty=code.quantity,
                                  order_id=s.order, serial=code.serial))
        elif s.shelf is None:
            out.append(
                ScanRejected(source=src, time=t, role=s.role, reason="scan a SHELF: label first", gtin=code.gtin)
            )
        elif sku not in self._shelf_skus(s.shelf):
            out.append(
                ScanRejected(
                    source=src,
                    time=t,
                    subject=s.shelf,
                    role=s.role,
                    reason="sku not on this shelf",
                    gtin=code.gtin,
                    shelf=s.shelf,
                )
            )
        elif s.role == "restock":
            s.items += code.quantity
            if room is not None:
                out.append(BackroomCounted(source=src, time=t, subject=room.id, location=room.id, sku=sku,
                                           gtin=code.gtin, origin="receiving", delta=-code.quantity, shelf=s.shelf,
                                           reason=f"restock scan onto {s.shelf}"))  # fmt: skip
            out.append(
                StockUpdate(
                    shelf=s.shelf,
                    sku=sku,
                    time=t,
                    origin="scan",
                    source=src,
                    delta=code.quantity,
                    reason="restock scan",
                )
            )
        else:
            s.tally[sku] = s.tally.get(sku, 0) + code.quantity
        return out

    def tick(self, now: datetime) -> Sequence[Output]:
        """End restock/count sessions idle for longer than the scanner's session timeout."""
        out: list[Output] = []
        for device, s in self._sessions.items():
            if s.shelf is None or s.last is None:
                continue
            dev = self._devices.get(device)
            timeout = dev.session_timeout_s if dev else 120.0
            if now - s.last >= timedelta(seconds=timeout):
                out += self._finish(s, device, now, "timeout")
        return out
