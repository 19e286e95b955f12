"""Table-driven cases of the pure offer decision and of sighting validation (plus a short fuzz)."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.config import Manifest
from rules.config import OffersConfig
from rules.offers import (
    OfferState,
    SightingError,
    check_time,
    compile_offers,
    decide,
    parse_sighting,
    purge,
)
from rules.restock import RulesError

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)  # Monday 10:00
UUID = "e2c56db5-dffb-48d2-b060-d0f5a71096e0"

CFG = OffersConfig.model_validate(
    {
        "retention_s": 600,
        "max_gap_s": 30,
        "beacons": [
            {"id": "b-drinks", "zone": "aisle-1", "uuid": UUID, "major": 1, "minor": 1},
            {"id": "b-snacks", "zone": "aisle-2", "namespace": "00112233445566778899", "instance": "aabbccddeeff"},
        ],
        "offers": [
            {
                "id": "cola-deal",
                "zone": "aisle-1",
                "sku": "cola-330",
                "title": "2 for 1",
                "min_dwell_s": 20,
                "per_shopper_max": 2,
                "per_shopper_cooldown_s": 100,
                "global_max_per_hour": 3,
            },
            {
                "id": "water-vip",
                "zone": "aisle-1",
                "sku": "water-500",
                "title": "VIP water",
                "min_dwell_s": 0,
                "audience": ["vip"],
                "schedule": {"days": ["mon"], "start": "09:00", "end": "11:00"},
            },
            {"id": "choc", "zone": "aisle-2", "sku": "choc-100", "title": "Chocolate", "min_dwell_s": 0},
        ],
    }
)

DRINKS = {"uuid": UUID.upper(), "major": 1, "minor": 1}
SNACKS = {"namespace": "00112233445566778899", "instance": "AABBCCDDEEFF"}


def sight(shopper: str = "tok-1", consent: bool = True, beacon: dict[str, Any] | None = None, **kw: Any) -> Any:
    raw: dict[str, Any] = {"shopper": shopper, "consent": consent, "beacon": beacon or DRINKS, **kw}
    return parse_sighting(raw)


Step = tuple[float, Any, list[str]]
STOCKED = {("aisle-1", "cola-330"), ("aisle-1", "water-500"), ("aisle-2", "choc-100")}

CASES: dict[str, tuple[list[Step], set[tuple[str, str]]]] = {
    "dwell reached after consecutive sightings": (
        [(0, sight(), []), (10, sight(), []), (21, sight(), ["cola-deal"])],
        STOCKED,
    ),
    "a gap restarts the dwell": (
        [(0, sight(), []), (15, sight(), []), (50, sight(), []), (65, sight(), []), (71, sight(), ["cola-deal"])],
        STOCKED,
    ),
    "zone change restarts the dwell": (
        [(0, sight(beacon=SNACKS), ["choc"]), (10, sight(), []), (25, sight(), []), (31, sight(), ["cola-deal"])],
        STOCKED,
    ),
    "never offer what is not on a shelf of the zone": (
        [(0, sight(), []), (25, sight(), [])],
        STOCKED - {("aisle-1", "cola-330")},
    ),
    "audience tag and schedule": (
        [(0, sight(tags=["vip"]), ["water-vip"]), (5, sight(tags=["vip"]), [])],
        STOCKED,
    ),
    "outside schedule: no vip offer": (
        [(3600 * 2, sight(tags=["vip"]), [])],  # 12:00
        STOCKED,
    ),
    "per-shopper cooldown then cap": (
        [
            (0, sight(), []),
            (20, sight(), ["cola-deal"]),
            (45, sight(), []),
            (70, sight(), []),
            (95, sight(), []),
            (121, sight(), ["cola-deal"]),
            (140, sight(), []),
            (170, sight(), []),
            (230, sight(), []),
        ],
        STOCKED,
    ),
    "global cap per hour across shoppers": (
        [
            (0, sight("a"), []),
            (0, sight("b"), []),
            (0, sight("c"), []),
            (0, sight("d"), []),
            (20, sight("a"), ["cola-deal"]),
            (20, sight("b"), ["cola-deal"]),
            (20, sight("c"), ["cola-deal"]),
            (20, sight("d"), []),
        ],
        STOCKED,
    ),
    "no consent: nothing, and nothing kept": (
        [(0, sight(consent=False), []), (25, sight(consent=False), [])],
        STOCKED,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_offer_cases(demo_manifest: Manifest, name: str) -> None:
    book = compile_offers(demo_manifest, CFG)
    steps, stocked = CASES[name]
    state = OfferState()
    for offset, s, expected in steps:
        now = T0 + timedelta(seconds=offset)
        state, chosen = decide(book, state, s, book.zone_of(s), lambda z, k: (z, k) in stocked, now)
        assert [o.id for o in chosen] == expected, f"{name} at +{offset}s"
    if name.startswith("no consent"):
        assert state.shoppers == {}


def test_withdrawing_consent_forgets_and_retention_expires(demo_manifest: Manifest) -> None:
    book = compile_offers(demo_manifest, CFG)
    state, _ = decide(book, OfferState(), sight(), "aisle-1", lambda z, k: True, T0)
    assert "tok-1" in state.shoppers
    state2, _ = decide(book, state, sight(consent=False), "aisle-1", lambda z, k: True, T0)
    assert "tok-1" not in state2.shoppers
    assert purge(state, T0 + timedelta(seconds=599), 600).shoppers
    assert not purge(state, T0 + timedelta(seconds=601), 600).shoppers


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("nope", "bad_request"),
        ({"consent": True, "zone": "aisle-1"}, "bad_shopper"),
        ({"shopper": "x" * 65, "consent": True, "zone": "aisle-1"}, "bad_shopper"),
        ({"shopper": "t", "consent": "yes", "zone": "aisle-1"}, "bad_consent"),
        ({"shopper": "t", "consent": True}, "bad_request"),
        ({"shopper": "t", "consent": True, "beacon": {"uuid": "xyz", "major": 1, "minor": 1}}, "bad_beacon"),
        ({"shopper": "t", "consent": True, "beacon": {"uuid": UUID, "major": 70000, "minor": 1}}, "bad_beacon"),
        ({"shopper": "t", "consent": True, "beacon": {"namespace": "00", "instance": "11"}}, "bad_beacon"),
        ({"shopper": "t", "consent": True, "zone": "aisle-1", "rssi": 99}, "bad_rssi"),
        ({"shopper": "t", "consent": True, "zone": "aisle-1", "time": "yesterday"}, "bad_time"),
        ({"shopper": "t", "consent": True, "zone": "aisle-1", "tags": "vip"}, "bad_tags"),
    ],
)
def test_bad_sightings_say_why(raw: object, code: str) -> None:
    with pytest.raises(SightingError) as err:
        parse_sighting(raw)
    assert err.value.code == code
    assert err.value.status == 422


def test_unknown_beacon_and_zone_are_404(demo_manifest: Manifest) -> None:
    book = compile_offers(demo_manifest, CFG)
    with pytest.raises(SightingError) as err:
        book.zone_of(sight(beacon={"uuid": UUID, "major": 9, "minor": 9}))
    assert (err.value.code, err.value.status) == ("unknown_beacon", 404)
    with pytest.raises(SightingError) as err:
        book.zone_of(parse_sighting({"shopper": "t", "consent": True, "zone": "moon"}))
    assert err.value.status == 404


def test_stale_sighting_refused() -> None:
    s = sight(time="2026-01-05T09:00:00Z")
    with pytest.raises(SightingError, match=r"from now"):
        check_time(s, T0, 120)
    check_time(sight(time="2026-01-05T09:59:30+00:00"), T0, 120)


def test_offers_that_do_not_fit_the_store(demo_manifest: Manifest) -> None:
    bad = OffersConfig.model_validate({"offers": [{"id": "x", "zone": "moon", "sku": "nope", "title": "t"}]})
    with pytest.raises(RulesError) as err:
        compile_offers(demo_manifest, bad)
    assert len(err.value.problems) == 2


@settings(max_examples=200)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=80),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=6),
    )
)
def test_fuzz_parse_sighting_never_crashes(raw: object) -> None:
    with contextlib.suppress(SightingError):
        parse_sighting(raw)
