"""REST routes of online orders and pick tasks (edge/orders.py): the same operations, answers and error codes
as the MQTT commands `order.reserve`, `order.get`, `order.cancel` and `order.collect`.

HQ (role `hq`, or `admin`) places and cancels orders; staff, HQ and admin read them and the pick list; staff
(or admin) hand a ready order over. The request body of POST /api/v1/orders is checked by the order book
itself (not by a pydantic model), so a refusal has the same code and message as over MQTT.
(No `from __future__ import annotations`: FastAPI must see the dependency aliases at definition time.)
"""

from typing import Annotated, Any, Literal

from fastapi import Body, Depends, FastAPI, HTTPException, Query
from fastapi import Path as PathParam
from pydantic import BaseModel, Field

from edge.api.auth import Principal, TokenStore, require
from edge.configbase import IDENT_PATTERN
from edge.orders import OrderService
from edge.runtime import GatewayView

ORDER_EXAMPLE = {"order_id": "8812", "mode": "pickup", "due": "2026-12-04T18:00:00+08:00",
                 "lines": [{"sku": "cola-330", "qty": 2}, {"gtin": "05449000214911", "qty": 1}]}
_TEXT = {400: "bad request (a field named, with the fix)", 404: "no such order, SKU, GTIN or shelf",
         409: "the order id is used with another body, or the order's state does not allow it",
         503: "the order book is not running in this gateway"}


OrderState = Literal["reserved", "short", "ready", "collected", "cancelled", "expired"]
# The body's shape as parse_request checks it; what depends on the store (due ahead of its clock and within
# orders.max_ahead_s, at most orders.max_lines lines and orders.max_quantity units, SKUs in the catalog) is
# checked there, with the same codes as over MQTT.
_LINE = {"type": "object", "additionalProperties": False, "required": ["qty"],
         "properties": {"sku": {"type": "string", "minLength": 1, "maxLength": 64},
                        "gtin": {"type": "string", "pattern": "^[0-9]{14}$", "description": "GTIN-14"},
                        "qty": {"type": "integer", "minimum": 1}},
         "oneOf": [{"required": ["sku"], "not": {"required": ["gtin"]}},
                   {"required": ["gtin"], "not": {"required": ["sku"]}}]}
ORDER_SCHEMA = {"type": "object", "additionalProperties": False, "required": ["order_id", "lines", "mode", "due"],
                "properties": {"order_id": {"type": "string", "pattern": IDENT_PATTERN},
                               "lines": {"type": "array", "minItems": 1, "items": _LINE},
                               "mode": {"type": "string", "enum": ["pickup", "ship"]},
                               "due": {"type": "string", "format": "date-time", "maxLength": 64}},
                "examples": [ORDER_EXAMPLE]}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"description": _TEXT[s]} for s in statuses}


class CancelBody(BaseModel):
    """Why the order is cancelled (optional)."""

    reason: str | None = Field(default=None, max_length=200)


def add_order_routes(app: FastAPI, gw: GatewayView, store: TokenStore) -> None:
    """The order and pick-list routes on `app`."""
    Hq = Annotated[Principal, Depends(require(store, "hq", "admin"))]
    Staff = Annotated[Principal, Depends(require(store, "staff", "admin"))]
    Reader = Annotated[Principal, Depends(require(store, "staff", "hq", "admin"))]
    OrderId = Annotated[str, PathParam(pattern=IDENT_PATTERN)]

    def svc() -> OrderService:
        orders = getattr(gw, "orders", None)
        if not isinstance(orders, OrderService):
            raise HTTPException(503, detail="the order book is not running in this gateway")
        return orders

    @app.post("/api/v1/orders", tags=["orders"], responses=_errors(400, 404, 409, 503),
              openapi_extra={"requestBody": {"required": True,
                                             "content": {"application/json": {"schema": ORDER_SCHEMA}}}})
    async def reserve(body: Annotated[dict[str, Any], Body()], _: Hq) -> dict[str, Any]:
        """Reserve an online order: {order_id, lines: [{sku or gtin (GTIN-14), qty}], mode: pickup | ship, due
        (RFC 3339 with zone)}. The answer says per line what was reserved and what is short, and lists the pick
        tasks; it is committed (with its events) before this returns. The same order again (same id and body)
        answers the same order; the same id with another body is 409 `conflict`. Same as `cmd/order.reserve`."""
        return await svc().reserve(body)

    @app.get("/api/v1/orders", tags=["orders"], responses=_errors(400, 503))
    async def orders(
        _: Reader,
        state: Annotated[OrderState | None, Query(description="only orders in this state")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> dict[str, Any]:
        """Orders the store remembers (open ones, closed ones for orders.keep_closed_s), the latest due first."""
        return {"store": gw.manifest.store.id, "items": svc().list_orders(state, limit)}

    @app.get("/api/v1/orders/{order_id}", tags=["orders"], responses=_errors(400, 404, 503))
    async def order(order_id: OrderId, _: Reader) -> dict[str, Any]:
        """One order with its lines and pick tasks. Same as `cmd/order.get` with `order_id`."""
        return svc().get(order_id)

    @app.post("/api/v1/orders/{order_id}/cancel", tags=["orders"], responses=_errors(400, 404, 409, 503))
    async def cancel(order_id: OrderId, _: Hq, body: CancelBody | None = None) -> dict[str, Any]:
        """Cancel an order that is not closed: its reservations are released. Same as `cmd/order.cancel`."""
        return await svc().cancel(order_id, body.reason if body else None)

    @app.post("/api/v1/orders/{order_id}/collect", tags=["orders"], responses=_errors(400, 404, 409, 503))
    async def collect(order_id: OrderId, _: Staff) -> dict[str, Any]:
        """Hand a ready order over (the collection button; a COLLECT:<order id> scan does the same). Same as
        `cmd/order.collect`."""
        return await svc().collect(order_id, "staff")

    @app.get("/api/v1/picks", tags=["orders"], responses=_errors(404, 503))
    async def picks(
        _: Reader, shelf: Annotated[str | None, Query(max_length=64, description="only this shelf")] = None
    ) -> dict[str, Any]:
        """Open pick tasks, the earliest due first: shelf and lane to pick from, SKU, GTIN, name, quantity,
        order id, window (opens, closes = due), units scanned and sensed so far."""
        return {"store": gw.manifest.store.id, "time": gw.clock.now().isoformat().replace("+00:00", "Z"),
                "items": svc().picks(shelf=shelf)}
