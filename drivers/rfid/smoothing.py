"""Pure smoothing engine: raw tag reads -> presence, zones and moves (EPCglobal ALE-style), no I/O.

Time is the gateway's receive time in float seconds, passed in by the caller (`now`); reader timestamps
never enter here, so a reader whose clock jumps cannot reorder or stretch anything.

Rules, per tag (parameters per reader, from the reader that first saw the tag):
- *present* after `present_after_reads` reads, or when read again `present_after_s` after its first read;
- *departed* only after `lost_timeout_s` without any read (a tag that was never present just vanishes);
- its *zone* is the read point with the strongest smoothed RSSI (EWMA, `rssi_alpha`); it moves only when
  another read point beats the current one by `move_margin_db` continuously for `move_hold_s`, or when
  the current read point has not read it for `zone_stale_s` (the tag really left that antenna's field);
  the candidate needs a few reads of its own first and the move is decided on one of its reads.

Reader-aware presence (the caller, `RfidProcessor`, tells the engine what it knows of each reader): a tag's
absence counts only while the reader that last read it could have read it.
- `heard[reader]`: when the reader was last heard from (a read or a status beat). A tag past its deadline
  departs only once its reader has been heard from at or after that deadline: a reader that fell silent
  cannot report absences (readers the caller says nothing about keep the plain lost-timeout rule).
- `frozen` (reader -> since) and `frozen_points` ((reader, read point) -> since): readers offline, silent
  or not inventorying, and read points of a disconnected antenna. Their tags past the deadline are parked,
  not departed, until `resume`, which restarts their lost-timeout clock at the resume time: a tag really
  gone departs one lost-timeout after the reader came back, a present one is refreshed by its first cycles.

Cost: one dict lookup and a few float operations per read on the common path (a tag seen by one read
point); expiry pops a heap ordered by deadline (each tag has exactly one entry, re-pushed at most once
per lost-timeout, or parked while its reader is frozen), so nothing ever scans all tags.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from drivers.rfid.epc import decode_epc

DEFAULT_RSSI = -70.0  # a read without PeakRSSI (not enabled) competes as a mediocre read
MIN_CANDIDATE_READS = 3.0  # a read point's EWMA starts at its first sample: let it settle before it competes
RECHECK_S = 1.0  # a tag past its deadline whose reader was not heard from since is looked at again this much later


@dataclass(frozen=True, slots=True)
class Params:
    """Smoothing parameters of one reader (plain values, read on every observation)."""

    present_after_reads: int = 2
    present_after_s: float = 3.0
    lost_timeout_s: float = 10.0
    rssi_alpha: float = 0.2
    move_margin_db: float = 4.0
    move_hold_s: float = 3.0
    zone_stale_s: float = 5.0
    min_rssi_dbm: float | None = None


class Tag:
    """Tracked state of one EPC (slotted: 100k of them must fit in a few tens of MB)."""

    __slots__ = (
        "arrived",
        "cand",
        "cand_since",
        "epc",
        "gtin",
        "last",
        "others",
        "params",
        "present",
        "reader",
        "reads",
        "rssi",
        "zone",
        "zone_last",
    )

    def __init__(  # noqa: PLR0917 - built once per new tag on the hot path, positional on purpose
        self, epc: str, gtin: str | None, zone: str, rssi: float, now: float, reader: str, params: Params
    ) -> None:
        self.epc = epc  # the URN is not stored (memory): `key` decodes it again when an event needs it
        self.gtin = gtin
        self.zone = zone
        self.rssi = rssi
        self.zone_last = now
        self.last = now
        self.arrived = now  # first read until present, then the time it became present
        self.reader = reader
        self.params = params
        self.reads = 1
        self.present = False
        self.others: dict[str, list[float]] | None = None  # read point -> [smoothed rssi, last read, reads]
        self.cand: str | None = None
        self.cand_since = 0.0

    @property
    def key(self) -> str:
        """The EPC's pure-identity URN (or `raw:<HEX>`)."""
        return decode_epc(self.epc).key


class Change:
    """A smoothed fact: kind is "arrived", "moved" or "departed"; `zone` is the zone after the change."""

    __slots__ = ("from_zone", "kind", "now", "tag", "zone")

    def __init__(self, kind: str, tag: Tag, zone: str, now: float, from_zone: str | None = None) -> None:
        self.kind = kind
        self.tag = tag
        self.zone = zone
        self.now = now
        self.from_zone = from_zone

    def __repr__(self) -> str:
        return f"Change({self.kind}, {self.tag.key}, {self.from_zone}->{self.zone})"


class SmoothingEngine:
    """All tracked tags across readers, and the per zone x GTIN counts of present tags."""

    def __init__(self) -> None:
        self.tags: dict[str, Tag] = {}
        self.counts: dict[tuple[str, str], int] = {}
        self.dirty: set[tuple[str, str]] = set()
        self._heap: list[tuple[float, str]] = []
        self.weak = 0  # reads ignored as weaker than the reader's min_rssi_dbm
        self._intern: dict[str, str] = {}
        # reader-aware presence (see the module docstring); maintained by the caller through the methods below
        self.heard: dict[str, float] = {}
        self.frozen: dict[str, float] = {}
        self.frozen_points: dict[tuple[str, str], float] = {}
        self.resumed: dict[str | tuple[str, str], float] = {}
        self._parked: dict[str | tuple[str, str], list[str]] = {}
        self.held = 0  # deadline checks that did not depart a tag because its reader could not see it
        self._unparked_at = float("-inf")

    def __len__(self) -> int:
        return len(self.tags)

    def observe(  # noqa: PLR0917 - the per-read hot path: positional arguments are measurably cheaper
        self, epc: str, zone: str, rssi: float | None, now: float, reader: str, p: Params
    ) -> list[Change]:
        """Account one read of `epc` at read point `zone`; return the changes it causes (usually none)."""
        if p.min_rssi_dbm is not None and rssi is not None and rssi < p.min_rssi_dbm:
            self.weak += 1
            return []
        tag = self.tags.get(epc)
        if tag is None:
            d = decode_epc(epc)
            intern = self._intern
            gtin = intern.setdefault(d.gtin, d.gtin) if d.gtin is not None else None
            zone = intern.setdefault(zone, zone)
            tag = Tag(epc, gtin, zone, DEFAULT_RSSI if rssi is None else rssi, now, reader, p)
            self.tags[epc] = tag
            heapq.heappush(self._heap, (now + p.lost_timeout_s, epc))
            if p.present_after_reads <= 1:
                return self._arrive(tag, now)
            return []
        tag.last = now
        tag.reader = reader
        r = DEFAULT_RSSI if rssi is None else rssi
        tp = tag.params
        if zone == tag.zone:
            tag.rssi += tp.rssi_alpha * (r - tag.rssi)
            tag.zone_last = now
        else:
            others = tag.others
            if others is None:
                others = tag.others = {}
            o = others.get(zone)
            if o is None:
                others[self._intern.setdefault(zone, zone)] = [r, now, 1.0]
            else:
                o[0] += tp.rssi_alpha * (r - o[0])
                o[1] = now
                o[2] += 1.0
        if not tag.present:
            tag.reads += 1
            if tag.reads >= tp.present_after_reads or now - tag.arrived >= tp.present_after_s:
                self._best_zone_now(tag, now)
                return self._arrive(tag, now)
            return []
        if tag.others is not None:
            return self._consider_move(tag, now, zone)
        return []

    def expire(self, now: float) -> list[Change]:
        """Depart tags not read for their lost-timeout while their reader could see them; drop never-present
        ones silently; park the tags of frozen readers / read points."""
        heap = self._heap
        tags = self.tags
        heard = self.heard
        out: list[Change] = []
        while heap and heap[0][0] <= now:
            _, epc = heapq.heappop(heap)
            tag = tags.get(epc)
            if tag is None:
                continue
            lost = tag.params.lost_timeout_s
            deadline = tag.last + lost
            if deadline > now:
                heapq.heappush(heap, (deadline, epc))
                continue
            r = tag.reader
            if heard:
                later = self._held(tag, r, deadline, now)
                if later is not None:
                    self.held += 1
                    if later > 0:
                        heapq.heappush(heap, (later, epc))
                    continue
            del tags[epc]
            if tag.present:
                self._count(tag, -1)
                out.append(Change("departed", tag, tag.zone, now))
        return out

    def _held(self, tag: Tag, r: str, deadline: float, now: float) -> float | None:
        """None when the tag may depart now; else when to look again (0: parked until its reader resumes)."""
        key: str | tuple[str, str] | None = None
        if r in self.frozen:
            key = r
        elif self.frozen_points and (r, tag.zone) in self.frozen_points:
            key = (r, tag.zone)
        if key is not None:
            self._parked.setdefault(key, []).append(tag.epc)
            return 0.0
        lost = tag.params.lost_timeout_s
        res = max(self.resumed.get(r, 0.0), self.resumed.get((r, tag.zone), 0.0))
        if res > tag.last and res + lost > now:
            return res + lost  # blind before `res`: its clock restarted when the reader came back
        h = self.heard.get(r)
        if h is not None and h < deadline:
            return now + RECHECK_S  # the reader has said nothing since the deadline: it may be what is silent
        return None

    def unpark_moved(self, now: float, every: float) -> None:
        """Parked tags read since by another reader (or at another read point) are that one's now: back on the
        heap. Scans the parked tags, so at most once per `every` seconds (while something is frozen)."""
        if now - self._unparked_at < every:
            return
        self._unparked_at = now
        for key, epcs in self._parked.items():
            reader, zone = (key, None) if isinstance(key, str) else key
            keep: list[str] = []
            for epc in epcs:
                tag = self.tags.get(epc)
                if tag is None:
                    continue
                if tag.reader == reader and (zone is None or tag.zone == zone):
                    keep.append(epc)
                else:
                    heapq.heappush(self._heap, (now, epc))
            epcs[:] = keep

    def freeze(self, key: str | tuple[str, str], since: float) -> None:
        """A reader (key: its id) or a read point of it (key: (reader, zone)) cannot see its tags from `since`."""
        target = self.frozen if isinstance(key, str) else self.frozen_points
        target.setdefault(key, since)  # type: ignore[arg-type]

    def resume(self, key: str | tuple[str, str], now: float) -> None:
        """The reader / read point sees again from `now`: parked tags get a full lost-timeout from `now`."""
        if isinstance(key, str):
            if self.frozen.pop(key, None) is None:
                return
        elif self.frozen_points.pop(key, None) is None:
            return
        self.resumed[key] = now
        for epc in self._parked.pop(key, ()):
            tag = self.tags.get(epc)
            if tag is not None:
                heapq.heappush(self._heap, (now + tag.params.lost_timeout_s, epc))

    def count(self, zone: str, gtin: str) -> int:
        """Present tags of `gtin` in `zone`."""
        return self.counts.get((zone, gtin), 0)

    def take_dirty(self) -> set[tuple[str, str]]:
        """Zone x GTIN cells whose count changed since the last call."""
        dirty, self.dirty = self.dirty, set()
        return dirty

    # ---- internals ----
    def _arrive(self, tag: Tag, now: float) -> list[Change]:
        tag.present = True
        tag.arrived = now
        self._count(tag, +1)
        return [Change("arrived", tag, tag.zone, now)]

    def _count(self, tag: Tag, delta: int) -> None:
        if tag.gtin is None:
            return
        cell = (tag.zone, tag.gtin)
        n = self.counts.get(cell, 0) + delta
        if n:
            self.counts[cell] = n
        else:
            self.counts.pop(cell, None)
        self.dirty.add(cell)

    def _best_zone_now(self, tag: Tag, now: float) -> None:
        """Before presence there is no hysteresis: start in the strongest fresh read point."""
        others = tag.others
        if not others:
            return
        stale = now - tag.params.zone_stale_s
        best, best_rssi = tag.zone, (tag.rssi if tag.zone_last >= stale else float("-inf"))
        for z, (r, t, _) in others.items():
            if t >= stale and r > best_rssi:
                best, best_rssi = z, r
        if best != tag.zone:
            self._swap(tag, best)

    def _consider_move(self, tag: Tag, now: float, read_at: str) -> list[Change]:
        """Hysteresis: a candidate read point must be fresh, have `MIN_CANDIDATE_READS` reads, beat the
        current zone by the margin at every evaluation for the hold time, and be the one reading now."""
        p = tag.params
        others = tag.others
        assert others is not None  # checked by the caller
        stale = now - p.zone_stale_s
        current = tag.rssi if tag.zone_last >= stale else float("-inf")
        best: str | None = None
        best_rssi = float("-inf")
        for z in list(others):
            r, t, n = others[z]
            if t < stale:
                del others[z]
            elif r > best_rssi and n >= MIN_CANDIDATE_READS:
                best, best_rssi = z, r
        if not others:
            tag.others = None
        if best is None or best_rssi <= current + p.move_margin_db:
            tag.cand = None
            return []
        if tag.cand != best:
            tag.cand = best
            tag.cand_since = now
        if now - tag.cand_since < p.move_hold_s or read_at != best:
            return []
        old = tag.zone
        self._count(tag, -1)
        self._swap(tag, best)
        self._count(tag, +1)
        tag.cand = None
        return [Change("moved", tag, best, now, old)]

    def _swap(self, tag: Tag, zone: str) -> None:
        others = tag.others if tag.others is not None else {}
        r, t, _ = others.pop(zone)
        others[tag.zone] = [tag.rssi, tag.zone_last, MIN_CANDIDATE_READS]
        tag.others = others
        tag.zone, tag.rssi, tag.zone_last = zone, r, t
