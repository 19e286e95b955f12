"""What a simulated reader's antennas see in one inventory cycle, read from the World's truth.

Each antenna covers one zone. Items on lanes of a covered zone are read with `reliability` per cycle
(real readers manage 60-70 %), at a per-tag base RSSI plus Gaussian noise; with `bleed_p` they are also
read faintly (`bleed_db` weaker) by the reader's other antennas; items in shoppers' hands (World.carried)
are now and then seen very faintly by any antenna. An antenna mapped to the World's back room
(`World.backroom_point`) reads the back room's tagged items (`World.backroom_epcs`) and nothing else: it is
behind a wall, so it neither bleeds into the shop's zones nor they into it.

With `last_read` given, each cycle records there when it last reported each EPC at `record_min_rssi` or
stronger (what a gateway filtering at that RSSI saw last): a gateway can only date a departure by a tag's
last read, so the store-day checker uses this to know how far before the real pick that date can lie.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass

from firmware_sim.world import World


@dataclass(frozen=True, slots=True)
class SimRead:
    """One tag read by one antenna in one cycle."""

    epc: str
    antenna: int
    rssi: int
    count: int


class Population:
    """Per-cycle reads of the tags near a reader's antennas."""

    def __init__(
        self,
        world: World,
        antennas: dict[int, str],
        *,
        reliability: float = 0.65,
        noise_db: float = 2.0,
        bleed_p: float = 0.3,
        bleed_db: float = 15.0,
        carried_p: float = 0.05,
        seed: int = 5,
        last_read: dict[str, float] | None = None,
        record_min_rssi: float = -127.0,
    ) -> None:
        self.world = world
        self.antennas = dict(antennas)
        self.reliability = reliability
        self.noise_db = noise_db
        self.bleed_p = bleed_p
        self.bleed_db = bleed_db
        self.carried_p = carried_p
        self.rng = random.Random(seed)
        self.last_read = last_read
        self.record_min_rssi = record_min_rssi

    @staticmethod
    def base_rssi(epc: str) -> float:
        """A stable per-tag RSSI between -62 and -48 dBm (tag orientation, distance to the antenna)."""
        return -62.0 + (zlib.crc32(epc.encode()) % 15)

    def cycle(self) -> list[SimRead]:
        """The reads of one inventory cycle."""
        rng = self.rng
        out: list[SimRead] = []
        by_zone: dict[str, list[int]] = {}
        for ant, zone in self.antennas.items():
            by_zone.setdefault(zone, []).append(ant)
        room = self.world.backroom_point
        room_ants = by_zone.get(room, []) if room is not None else []
        ants = [a for a in self.antennas if a not in room_ants]
        for lane in self.world.lanes.values():
            home = by_zone.get(lane.zone)
            if not home:
                continue
            for epc in lane.epcs:
                base = self.base_rssi(epc)
                for ant in ants:
                    near = ant in home
                    if rng.random() >= (self.reliability if near else self.reliability * self.bleed_p):
                        continue
                    rssi = base + rng.gauss(0, self.noise_db) - (0 if near else self.bleed_db)
                    out.append(SimRead(epc, ant, max(-127, min(0, round(rssi))), rng.randint(1, 4)))
        for epc, _sku in self.world.carried:
            if ants and rng.random() < self.carried_p:
                out.append(SimRead(epc, rng.choice(ants), -78 + round(rng.gauss(0, 2)), 1))
        for epcs in self.world.backroom_epcs.values() if room_ants else ():
            for epc in epcs:
                for ant in room_ants:
                    if rng.random() < self.reliability:
                        rssi = self.base_rssi(epc) + rng.gauss(0, self.noise_db)
                        out.append(SimRead(epc, ant, max(-127, min(0, round(rssi))), rng.randint(1, 4)))
        if self.last_read is not None:
            now, floor, seen = self.world.clock.monotonic(), self.record_min_rssi, self.last_read
            for r in out:
                if r.rssi >= floor:
                    seen[r.epc] = now
        return out
