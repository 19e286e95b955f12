"""The order book and the restock rules' view of reservations, pure (no gateway, no clock reads)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from edge.config import Manifest, OrdersConfig
from edge.errors import CommandError
from edge.events import StockChanged
from edge.orders import (
    OrderBook,
    OrderCancelled,
    OrderExpired,
    OrderPicked,
    OrderReady,
    OrderShort,
    allocate,
    parse_request,
)
from rules.config import RulesBody
from rules.restock import Picked, Reserved, RestockState, StockSeen, compile_rules, step

T0 = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
CFG = OrdersConfig(sensor_grace_s=60)


def req(manifest: Manifest, oid: str = "8812", lines: list[dict[str, Any]] | None = None, due_s: float = 3600,
        mode: str = "pickup") -> dict[str, Any]:  # fmt: skip
    return {"order_id": oid, "mode": mode, "due": (T0 + timedelta(seconds=due_s)).isoformat(),
            "lines": lines or [{"sku": "cola-330", "qty": 2}]}  # fmt: skip


def book_with(manifest: Manifest, body: dict[str, Any], atp: int = 10,
              free: list[tuple[str, str, int]] | None = None) -> tuple[OrderBook, Any, list[Any]]:  # fmt: skip
    book = OrderBook(manifest, CFG)
    r = parse_request(body, manifest, CFG, T0)
    skus = {s for s, _ in r.lines}
    order, events, _ = book.reserve(r, T0, dict.fromkeys(skus, atp),
                                    {s: free if free is not None else [("shelf-a1", "l1", atp)] for s in skus})
    return book, order, events


def sold(shelf: str, sku: str, count: int, delta: int, t: datetime, origin: str = "weight") -> StockChanged:
    return StockChanged(source="shelf", time=t, subject=shelf, shelf=shelf, sku=sku, count=count,
                        previous=count - delta, delta=delta, version=2, origin=origin)  # fmt: skip


def test_request_gtin_maps_to_sku_and_digest_is_stable(demo_manifest: Manifest) -> None:
    a = parse_request(req(demo_manifest, lines=[{"gtin": "05449000000996", "qty": 2}]), demo_manifest, CFG, T0)
    b = parse_request(req(demo_manifest, lines=[{"sku": "cola-330", "qty": 2}]), demo_manifest, CFG, T0)
    assert a.lines == (("cola-330", 2),)
    assert a.digest == b.digest  # the same order, written with the GTIN or the SKU
    assert parse_request(req(demo_manifest, lines=[{"sku": "cola-330", "qty": 3}]), demo_manifest, CFG,
                         T0).digest != a.digest  # fmt: skip


@pytest.mark.parametrize(("change", "code"), [
    ({"lines": [{"sku": "nope", "qty": 1}]}, "not_found"),
    ({"lines": [{"sku": "cola-330", "qty": 1001}]}, "bad_request"),
    ({"lines": [{"sku": "cola-330", "qty": 1}] * 51}, "bad_request"),
    ({"due": T0.isoformat()}, "bad_request"),  # not in the future
    ({"due": (T0 + timedelta(days=8)).isoformat()}, "bad_request"),
    ({"order_id": "has space"}, "bad_request"),
    ({"lines": [{"gtin": "\u0660\u0665\u0664\u0664\u0669\u0660\u0660\u0660\u0660\u0660\u0660\u0669\u0669\u0666",
                 "qty": 1}]}, "bad_request"),  # Arabic-Indic digits are no GTIN (Python's \d would take them)
])
def test_request_refusals(demo_manifest: Manifest, change: dict[str, Any], code: str) -> None:
    with pytest.raises(CommandError) as err:
        parse_request({**req(demo_manifest), **change}, demo_manifest, CFG, T0)
    assert err.value.code == code


def test_allocate_most_free_first_and_short() -> None:
    assert allocate(5, [("a", "l1", 2), ("b", "l1", 4)]) == [("b", "l1", 4), ("a", "l1", 1)]
    assert allocate(9, [("a", "l1", 2), ("b", "l1", -1)]) == [("a", "l1", 2)]


def test_reserve_bounded_by_atp_across_lines_and_idempotent(demo_manifest: Manifest) -> None:
    body = req(demo_manifest, lines=[{"sku": "cola-330", "qty": 2}, {"sku": "cola-330", "qty": 2}])
    book, order, events = book_with(demo_manifest, body, atp=3)
    assert [(ln.reserved, ln.short) for ln in order.lines] == [(2, 0), (1, 1)]
    assert [t.qty for t in order.tasks] == [2, 1]
    assert isinstance(events[-1], OrderShort)
    assert book.held(T0) == {("shelf-a1", "cola-330"): 3}
    again, evs, new = book.reserve(parse_request(body, demo_manifest, CFG, T0), T0, {"cola-330": 0}, {})
    assert (again, evs, new) == (order, [], False)
    with pytest.raises(CommandError) as err:
        book.reserve(parse_request({**body, "mode": "ship"}, demo_manifest, CFG, T0), T0, {}, {})
    assert err.value.code == "conflict"


def test_shelf_sensor_pick_only_inside_the_window_and_by_sensors(demo_manifest: Manifest) -> None:
    book, _, _ = book_with(demo_manifest, req(demo_manifest, due_s=600))
    assert book.sensed(sold("shelf-a1", "cola-330", 8, -2, T0 + timedelta(seconds=5), origin="scan")) == []
    assert book.sensed(sold("shelf-a1", "cola-330", 8, -2, T0 + timedelta(seconds=601))) == []  # after due
    changes = book.sensed(sold("shelf-a1", "cola-330", 9, -1, T0 + timedelta(seconds=5)))
    assert changes[0][1] == [] and book.held(T0) == {("shelf-a1", "cola-330"): 1}
    changes = book.sensed(sold("shelf-a1", "cola-330", 7, -2, T0 + timedelta(seconds=9)))  # one of them a sale
    picked, ready = changes[0][1]
    assert isinstance(picked, OrderPicked) and (picked.by, picked.sensed, picked.qty) == ("shelf", 2, 2)
    assert isinstance(ready, OrderReady) and book.orders["8812"].state == "ready"
    assert book.held(T0 + timedelta(seconds=9)) == {}


def test_scan_pick_holds_until_the_shelf_sees_it_or_the_grace_ends(demo_manifest: Manifest) -> None:
    book, _, _ = book_with(demo_manifest, req(demo_manifest))
    t1 = T0 + timedelta(seconds=10)
    assert book.scanned("water-500", 1, None, t1) == []  # no task of that SKU
    assert book.scanned("cola-330", 1, "other", t1) == []
    events = [e for _, evs in book.scanned("cola-330", 2, "8812", t1) for e in evs]
    assert [type(e) for e in events] == [OrderPicked, OrderReady]
    assert book.held(t1) == {("shelf-a1", "cola-330"): 2}  # picked, the scale has not seen them leave yet
    assert book.sensed(sold("shelf-a1", "cola-330", 9, -1, t1 + timedelta(seconds=3)))[0][1] == []
    assert book.held(t1 + timedelta(seconds=3)) == {("shelf-a1", "cola-330"): 1}
    assert book.held(t1 + timedelta(seconds=61)) == {}  # the grace ended
    assert book.next_deadline(t1) == t1 + timedelta(seconds=60)


def test_expiry_at_due_unless_picked_and_cancel(demo_manifest: Manifest) -> None:
    book, _, _ = book_with(demo_manifest, req(demo_manifest, "A", due_s=60))
    book.reserve(parse_request(req(demo_manifest, "B", due_s=60), demo_manifest, CFG, T0), T0, {"cola-330": 8},
                 {"cola-330": [("shelf-a1", "l1", 8)]})  # fmt: skip
    book.scanned("cola-330", 2, "B", T0)
    assert book.expire(T0 + timedelta(seconds=59)) == []
    (order, (ev,)), = book.expire(T0 + timedelta(seconds=60))
    assert isinstance(ev, OrderExpired) and (order.id, ev.released) == ("A", 2)
    assert book.orders["B"].state == "ready"  # picked: no expiry
    _, (cancel,) = book.cancel("B", "customer", T0 + timedelta(seconds=61))
    assert isinstance(cancel, OrderCancelled) and (cancel.released, cancel.picked) == (0, 2)
    with pytest.raises(CommandError):
        book.cancel("B", None, T0)
    assert book.forget(T0 + timedelta(seconds=61 + CFG.keep_closed_s + 1)) == ["A", "B"]


def test_restock_rule_on_unreserved_units_and_picks_are_no_sales(demo_manifest: Manifest) -> None:
    body = RulesBody.model_validate({"defaults": {"min": 3, "debounce_s": 0, "cooldown_s": 0}})
    rules = compile_rules(demo_manifest.model_copy(update={"store": demo_manifest.store.model_copy(
        update={"opening_time": "00:00", "closing_time": "00:00"})}), body)
    st, acts = step(rules, RestockState(), StockSeen("shelf-a1", "cola-330", 5, 0, "weight"), T0)
    assert acts == []
    st, acts = step(rules, st, Reserved("shelf-a1", "cola-330", 4), T0)
    assert [(a.kind, a.count) for a in acts] == [("low_stock", 1)]
    st, _ = step(rules, st, StockSeen("shelf-a1", "cola-330", 3, -2, "weight", reserved=4), T0)  # picked off
    assert sum(n for _, n in st.cells[("shelf-a1", "cola-330")].sales.buckets) == 2
    st, _ = step(rules, st, Picked("shelf-a1", "cola-330", 2, 2, T0 + timedelta(seconds=60)), T0)
    assert st.cells[("shelf-a1", "cola-330")].sales.buckets == ()  # taken back
    st, _ = step(rules, st, StockSeen("shelf-a1", "cola-330", 1, -2, "weight", reserved=0), T0)  # the rest
    st, _ = step(rules, st, StockSeen("shelf-a1", "cola-330", 0, -1, "weight", reserved=0), T0)  # a shopper
    assert sum(n for _, n in st.cells[("shelf-a1", "cola-330")].sales.buckets) == 1
    off = compile_rules(demo_manifest, RulesBody.model_validate({"unreserved_stock": False}))
    assert off.unreserved is False
