"""The manifest's `nearby:` section: neighbouring stores whose stock a clerk may look up (edge/nearby.py).

Only pydantic and edge.configbase here: edge/config.py imports this module for the manifest schema.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from edge.configbase import SECONDS_MAX, Ident, StrictModel

MAX_NEIGHBOURS = 50


class NearbyStore(StrictModel):
    """One neighbouring store of the same chain (its gateway publishes under the same topic prefix)."""

    id: Ident = Field(description="the neighbour's store id (its manifest's store: id)")
    name: str = Field(default="", max_length=128, description="what staff call it; its state/info name when empty")
    distance_km: float | None = Field(default=None, ge=0, le=1000, allow_inf_nan=False,
                                      description="how far it is, for ordering the answer (nearest first)")


class NearbyConfig(StrictModel):
    """Neighbouring stores: the gateway follows their retained `state/atp/+`, `state/info` and `status` through
    the hub, read-only, and answers "who nearby has this SKU, how many, how fresh" (docs/omnichannel.md)."""

    stores: list[NearbyStore] = Field(
        default_factory=list, max_length=MAX_NEIGHBOURS,
        description=f"the neighbours, at most {MAX_NEIGHBOURS}; e.g. [{{id: s0422, name: 南京西路店, "
                    "distance_km: 1.2}]")
    max_age_s: float = Field(
        default=86400, gt=0, le=SECONDS_MAX, allow_inf_nan=False,
        description="a neighbour's figure older than this (by its own time) is answered as stale, not as fact")
    max_skus: int = Field(default=20_000, ge=1, le=200_000,
                          description="SKUs kept per neighbour; more are refused and counted")
    max_message_bytes: int = Field(default=64 * 1024, ge=1024, le=1024 * 1024,
                                   description="a neighbour's message longer than this is refused and counted")

    @field_validator("stores")
    @classmethod
    def _unique(cls, v: list[NearbyStore]) -> list[NearbyStore]:
        seen: set[str] = set()
        for s in v:
            if s.id in seen:
                raise ValueError(f"store {s.id!r} is listed twice: list each neighbour once")
            seen.add(s.id)
        return v

    def problems(self, own_store: str) -> list[tuple[tuple[str | int, ...], str]]:
        """(path, what to fix) for a neighbour that is this store itself."""
        return [(("nearby", "stores", i, "id"), f"{s.id!r} is this store's own id: a store is not its own "
                                                "neighbour; remove it or fix the id")
                for i, s in enumerate(self.stores) if s.id == own_store]
