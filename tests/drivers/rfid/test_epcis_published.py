"""Our event hash against GS1's published hash examples (tests/drivers/rfid/data/epcis/README.md says where each
file comes from: github.com/RalphTro/epcis-event-hash-generator tests/examples/, the reference implementation's
own expected pre-hash strings and hashes).

No published example is exactly an event we emit (they list SSCCs and Digital Link ids, use +01:00 offsets, carry
business transactions), so the pieces are checked on every published event they occur in:
- SHA-256 of each published pre-hash string gives the published eventID (`event_hash`);
- every SGTIN the examples list whose serial fits SGTIN-96, encoded to SGTIN-96 and decoded again as the gateway
  does, becomes the Digital Link URI the published pre-hash lists (`hash_epc_uri`);
- every SGLN readPoint/bizLocation becomes the published `readPointid=`/`bizLocationid=` (`sgln_digital_link`);
- each published ObjectEvent made only of the fields we emit (type, eventTime, eventTimeZoneOffset, epcList, action,
  bizStep, disposition, readPoint, bizLocation) gives the published pre-hash and hash through `pre_hash` (field
  order, time in UTC rounded to the millisecond, CBV URIs), with its EPCs in their published hash form.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from drivers.rfid.epc import decode_epc
from drivers.rfid.epcis import event_hash, hash_epc_uri, pre_hash, sgln_digital_link
from firmware_sim.world import sgtin96_hex

DATA = Path(__file__).parent / "data" / "epcis"
EXAMPLES = ["epcisDocWithVariousEventTypes", "epcisDocHavingEventWithIgnoreFields", "TimeStampRoundOff",
            "epcisDocWithShippingAndTransportingEvent", "epclist_normalisation"]  # fmt: skip
OUR_FIELDS = {"type", "eventTime", "eventTimeZoneOffset", "epcList", "action", "bizStep", "disposition",
              "readPoint", "bizLocation"}  # fmt: skip
IGNORED = {"eventID", "recordTime"}  # the algorithm leaves them out


def lines(path: Path) -> list[str]:
    """Data lines of a published .hashes/.prehashes file (our `# source:` line skipped)."""
    return [ln for ln in path.read_text().splitlines() if ln and not ln.startswith("#")]


def example(name: str) -> list[tuple[dict[str, Any], str, str]]:
    """(event, published pre-hash, published hash) of every event of one published example document."""
    doc = json.loads((DATA / f"{name}.jsonld").read_text())
    events = doc["epcisBody"]["eventList"]
    pre, hashes = lines(DATA / f"{name}.prehashes"), lines(DATA / f"{name}.hashes")
    assert len(events) == len(pre) == len(hashes), name
    return list(zip(events, pre, hashes, strict=True))


ALL = [(f"{n}[{i}]", ev, p, h) for n in EXAMPLES for i, (ev, p, h) in enumerate(example(n))]


@pytest.mark.parametrize(("name", "pre", "published"), [(n, p, h) for n, _, p, h in ALL])
def test_the_hash_of_each_published_pre_hash_is_the_published_event_id(name: str, pre: str, published: str) -> None:
    assert event_hash(pre) == published, name


_SGTIN = re.compile(r"^urn:epc:id:sgtin:(\d+)\.(\d+)\.(\d+)$")


def sgtins() -> list[tuple[str, str, str]]:
    """(example, SGTIN URN, pre-hash) for every SGTIN-96-encodable SGTIN in any EPC list of the examples."""
    out = []
    for name, ev, pre, _ in ALL:
        for key in ("epcList", "childEPCs", "inputEPCList", "outputEPCList"):
            for urn in ev.get(key, []):
                m = _SGTIN.match(urn)
                if m and int(m[3]) < 2**38 and not (len(m[3]) > 1 and m[3].startswith("0")):
                    out.append((name, urn, pre))
    return out


@pytest.mark.parametrize(("name", "urn", "pre"), sgtins())
def test_a_published_sgtin_read_from_a_tag_hashes_as_published(name: str, urn: str, pre: str) -> None:
    m = _SGTIN.match(urn)
    assert m is not None
    epc = decode_epc(sgtin96_hex(m[1], m[2], int(m[3])))  # the tag a reader would report for this SGTIN
    assert epc.key == urn  # our epcList entry is the published URN itself
    assert f"epc={hash_epc_uri(epc)}" in pre, name


def test_the_published_sgtins_cover_every_partition_we_met() -> None:
    found = sgtins()
    assert len(found) >= 10
    prefixes = {len(_SGTIN.match(u)[1]) for _, u, _ in found}  # type: ignore[index]
    assert {7, 12} <= prefixes  # a 7-digit and a 12-digit company prefix (item reference "0")


def locations() -> list[tuple[str, str, str, str]]:
    out = []
    for name, ev, pre, _ in ALL:
        for key in ("readPoint", "bizLocation"):
            loc = ev.get(key, {}).get("id", "")
            if loc.startswith("urn:epc:id:sgln:"):
                out.append((name, key, loc, pre))
    return out


@pytest.mark.parametrize(("name", "key", "urn", "pre"), locations())
def test_a_published_sgln_location_hashes_as_published(name: str, key: str, urn: str, pre: str) -> None:
    assert f"{key}id={sgln_digital_link(urn)}" in pre, name


def test_the_published_locations_include_named_extensions() -> None:
    found = locations()
    assert len(found) >= 10
    assert any(not u.endswith(".0") for _, _, u, _ in found)  # `/254/<ext>` (urn:epc:id:sgln:4012345.00000.5)


def ours() -> list[tuple[str, dict[str, Any], str, str]]:
    """Published ObjectEvents made only of the fields our ObjectEvents carry."""
    return [(n, ev, p, h) for n, ev, p, h in ALL
            if ev["type"] == "ObjectEvent" and set(ev) - IGNORED <= OUR_FIELDS
            and all(loc.get("id", "").startswith(("urn:epc:id:sgln:", "https://id.gs1.org/"))
                    for loc in (ev.get("readPoint", {}), ev.get("bizLocation", {})) if loc)]  # fmt: skip


@pytest.mark.parametrize(("name", "event", "pre", "published"), ours())
def test_a_published_event_of_our_shape_hashes_as_published(
    name: str, event: dict[str, Any], pre: str, published: str
) -> None:
    links = re.findall(r"epc=(.*?)(?=epc=|action=)", pre)  # the EPCs in their published hash form
    assert len(links) == len(event["epcList"])
    ours_pre = pre_hash(event, links)
    assert ours_pre == pre, name
    assert event_hash(ours_pre) == published


def test_enough_published_events_have_our_shape() -> None:
    # VariousEventTypes[2] (SGLN readPoint, in_progress), IgnoreFields[1] (Digital Link readPoint with /254/,
    # a time without milliseconds), epclist_normalisation (many EPCs, sorted), ShippingAndTransporting[1] is a geo:
    # readPoint and is left out
    names = {n for n, *_ in ours()}
    assert {"epcisDocWithVariousEventTypes[2]", "epcisDocHavingEventWithIgnoreFields[1]"} <= names
