"""The local HTTP API (FastAPI): stock, alerts, devices, traffic, offers, sightings, live events, rules.

Base path `/api/v1`, bearer tokens with roles (edge/api/auth.py); `/healthz` and `/metrics` need no
token; the staff dashboard (static files, no build step) is served at `/`. OpenAPI at `/openapi.json`; no
Swagger UI (it loads from a CDN the store may not reach). Every refusal is a JSON `{"error": {"code",
"message"}}` with a 4xx status; nothing changes. Hardening, outermost first: security headers on every
response (CSP, X-Frame-Options, nosniff, Referrer-Policy), the route's token check before anything reads the
body (401/403 before 413/422), the whole body read within `api.body_timeout_s` (408) and at most
`api.max_body_bytes` (413, chunked too). See docs/api.md. (No `from __future__ import annotations` here:
FastAPI must see the local dependency aliases of the routes at definition time.)
"""

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from fastapi import Body, Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from pydantic import AwareDatetime, BaseModel, BeforeValidator, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from edge.api.auth import AuthError, Principal, TokenStore, require, token_valid
from edge.api.export import ALERT_COLUMNS, MAX_ROWS, STOCK_COLUMNS, to_csv
from edge.api.manifest import add_manifest_routes
from edge.api.orders import add_order_routes
from edge.api.pairing import add_pairing_routes
from edge.api.sse import event_stream
from edge.config import TokenConfig
from edge.configbase import IDENT_PATTERN
from edge.errors import CommandError
from edge.runtime import TRAFFIC_HOUR_KEY, GatewayView
from edge.state import MAX_CORRECTED_COUNT, StockCorrected

STATIC = Path(__file__).parent / "static"
VERSION = "1"

_STATUS = {
    "not_found": 404,
    "unknown_beacon": 404,
    "unknown_zone": 404,
    "conflict": 409,
    "rules_rejected": 422,
    "too_large": 413,
}


class StockCellDoc(BaseModel):
    """One shelf x SKU cell, self-explaining (docs/api.md); the form of REST, `cmd/stock.get`, state/stock."""

    shelf: str
    sku: str
    gtin: str | None = Field(description="GTIN-14 from the catalog")
    name: str | None
    unit: str = Field(description="UN/ECE Rec 20 code, EA = each")
    category: str | None
    zone: str
    count: int | None = Field(description="null while no source ever reported the cell (state unknown), not 0")
    state: Literal["unknown", "out", "low", "ok"]
    low: bool = Field(description="low or out")
    min: int | None = Field(description="the restock rule's min; null without an enabled rule")
    par: int | None = Field(description="the restock rule's par (restocked up to)")
    version: int
    origin: str
    updated: str | None = Field(description="last change of the count")
    verified: str | None = Field(description="last claim of a count, also one that changed nothing")
    capacity: int
    stale: bool
    stale_since: str | None
    stale_reason: str | None
    conflict: bool
    conflict_since: str | None
    conflict_reason: str | None
    sources: dict[str, int] | None = Field(default=None, description="a fused cell's last count per origin")
    correction: dict[str, Any] | None = Field(
        default=None, description="the last staff count correction {count, at, reason, holding, sensor}: while "
        "`holding`, the counted number is served (also as sources.manual) until the sensors settle")


class StockList(BaseModel):
    """Current stock."""

    store: str
    time: str
    items: list[StockCellDoc]


class ShelfStock(BaseModel):
    """One shelf: the retained `state/stock/{shelf}` payload."""

    shelf: str
    zone: str | None
    version: int
    items: list[StockCellDoc]


class AtpLocation(BaseModel):
    """One shelf cell of the SKU as ATP counted it."""

    shelf: str
    zone: str
    count: int | None = Field(description="the cell's count; null: never reported (unknown)")
    counted: int = Field(description="what ATP counted of it (0 when unknown or stale; the lower source in a conflict)")
    version: int


class AtpSplit(BaseModel):
    """Units by where they are: the shelves and the back room."""

    shelves: int
    backroom: int


class AtpBackroom(BaseModel):
    """One back-room location holding the SKU, as ATP counted it (manifest `backroom:`, edge/backroom.py)."""

    location: str
    name: str
    names: dict[str, str] = Field(description="the name per language, e.g. {zh-CN: 仓库}")
    count: int | None = Field(description="what its sources say (the RFID count where counted by RFID, else the "
                                          "receiving ledger); null: never counted")
    counted: int = Field(description="what ATP counted (0 while the RFID count is stale or not vouched for; with "
                                     "RFID and receiving, the lower)")
    counted_by: list[Literal["rfid", "receiving"]]


class AtpDoc(BaseModel):
    """Available-to-promise of one SKU (the retained `state/atp/{sku}` document)."""

    sku: str
    gtin: str | None
    name: str | None
    unit: str
    category: str | None
    atp: int = Field(description="certain - reserved - safety_stock, never below 0")
    on_hand: int = Field(description="sum of the reported counts, shelves and back room")
    certain: int = Field(description="on hand counted at what is sure")
    on_hand_split: AtpSplit = Field(description="on_hand by where: shelves, back room")
    certain_split: AtpSplit = Field(description="certain by where: shelves, back room")
    reserved: int
    safety_stock: int
    certain_only: bool = Field(description="some stock was not counted (unknown, stale or conflicting): see reasons")
    reasons: list[str]
    locations: list[AtpLocation]
    backroom: list[AtpBackroom] = Field(description="the back-room locations holding the SKU")
    thresholds: list[int]
    level: int = Field(description="how many thresholds ATP lies above")
    version: int
    updated: str


class AtpList(BaseModel):
    """Every catalog SKU's ATP."""

    store: str
    time: str
    items: list[AtpDoc]


class AckBody(BaseModel):
    """Who acknowledges the alert."""

    by: str = Field(min_length=1, max_length=64, description="the staff member's name")


class ResolveBody(BaseModel):
    """Who resolves the alert by hand, and why."""

    by: str = Field(min_length=1, max_length=64, description="the staff member's name")
    reason: str = Field(min_length=1, max_length=200, description="why it is resolved (e.g. 'counted: 12 on shelf')")


class SnoozeBody(BaseModel):
    """Who snoozes the alert, and for how long (5 min .. 8 h)."""

    by: str = Field(min_length=1, max_length=64, description="the staff member's name")
    duration_s: float = Field(ge=300, le=28800, description="seconds until the alert comes back (300..28800)")


class CountBody(BaseModel):
    """The number staff counted on the shelf, who counted and why."""

    by: str = Field(min_length=1, max_length=64, description="the staff member's name")
    count: int = Field(ge=0, le=MAX_CORRECTED_COUNT, description="units counted on the shelf")
    reason: str = Field(min_length=1, max_length=200, description="why the count is corrected")


class RestockingBody(BaseModel):
    """Staff start (`on`) or finish restocking a shelf: its restock alerts are muted meanwhile."""

    on: bool = Field(default=True, description="true: start restocking (mute); false: finished (unmute)")
    duration_s: float | None = Field(
        default=None, description="how long the mute lasts at most: 0 < duration_s <= the rules' mute_max_s "
        "(default mute_max_s)")
    sku: str | None = Field(default=None, min_length=1, max_length=64, description="restock only this cell of the "
                            "shelf: the mute also ends as soon as the cell's count rises")


class ErrorDetail(BaseModel):
    """What went wrong: a stable code and a message saying what to do."""

    code: str
    message: str


class ErrorBody(BaseModel):
    """Every refusal (4xx/503) has this body."""

    error: ErrorDetail


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the refusals a route can give (all share `ErrorBody`)."""
    text = {400: "bad request", 401: "no, unknown or expired token", 403: "the token's role may not do this",
            404: "not found", 409: "conflict with the current state", 413: "request body too large",
            422: "invalid request", 503: "the rules engine is not running"}
    return {s: {"model": ErrorBody, "description": text[s]} for s in statuses}


AlertState = Literal["open", "acknowledged", "resolved", "expired"]
_ISO_TIME = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _iso_text(v: object) -> object:
    """Only ISO 8601 text: pydantic would also take a number ("0.0") as a UNIX time."""
    if not isinstance(v, str) or not _ISO_TIME.match(v):
        raise ValueError("must be an ISO 8601 time with a zone, e.g. 2026-12-04T09:00:00+08:00")
    return v


IsoTime = Annotated[AwareDatetime, BeforeValidator(_iso_text)]


def _iso_date_text(v: object) -> object:
    """Only YYYY-MM-DD: pydantic would also take a number ("6.3e-93") as a UNIX time's day."""
    if not isinstance(v, str) or not _ISO_DATE.fullmatch(v):
        raise ValueError("must be a day as YYYY-MM-DD, e.g. 2026-12-04")
    return v


IsoDate = Annotated[date, BeforeValidator(_iso_date_text)]


class ReloadBody(BaseModel):
    """Optional new rules; without them the rules file (or the manifest's inline rules) is reloaded."""

    rules: dict[str, Any] | None = None


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


class ApiCounters:
    """Requests by route and status (exported on /metrics)."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}

    def add(self, method: str, route: str, status: int) -> None:
        """Count one request."""
        key = (method, route, status)
        self.requests[key] = self.requests.get(key, 0) + 1

    def text(self) -> str:
        """Prometheus text."""
        lines = ["# TYPE edge_api_requests_total counter"]
        for (m, r, s), n in sorted(self.requests.items()):
            lines.append(f'edge_api_requests_total{{method="{m}",route="{r}",status="{s}"}} {n}')
        return "\n".join(lines) + "\n"


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


SECURITY_HEADERS = [
    # the dashboard loads only its own files; nothing may frame it (clickjacking), no inline script or style
    (b"content-security-policy", b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                 b"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
                                 b"frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


class SecurityHeaders:
    """ASGI middleware: the security headers on every HTTP response (dashboard, API, errors)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Add the headers to `http.response.start` unless the response set them itself."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                headers = list(msg.get("headers") or [])
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                msg = {**msg, "headers": headers}
            await send(msg)

        await self.app(scope, receive, send_with_headers)


AuthCheck = Callable[[Request], Awaitable[Principal]]


class AuthFirst:
    """ASGI middleware: a route's token check (`require(...)`) runs before anything reads the request body,
    so a caller without a (suitable) token learns nothing from body parsing: 401/403, never 413/422."""

    def __init__(self, app: ASGIApp, api: FastAPI, counters: ApiCounters) -> None:
        self.app = app
        self.api = api
        self.counters = counters
        self._checks: dict[int, AuthCheck | None] = {}  # id(route) -> its token check (routes live with the app)

    def _check(self, scope: Scope) -> tuple[str, AuthCheck | None]:
        for route in self.api.router.routes:
            match, _ = route.matches(scope)
            if match != Match.FULL:
                continue
            if not isinstance(route, APIRoute):
                return "<unmatched>", None
            if id(route) not in self._checks:
                calls = [d.call for d in route.dependant.dependencies]
                self._checks[id(route)] = next((c for c in calls if getattr(c, "edge_auth", False)), None)
            return route.path, self._checks[id(route)]
        return "<unmatched>", None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse a request whose route needs a token it does not carry, before the body is read."""
        if scope["type"] == "http":
            path, check = self._check(scope)
            if check is not None:
                try:
                    await check(Request(scope))
                except AuthError as err:
                    self.counters.add(scope["method"], path, err.status_code)
                    await _error(err.status_code, err.code, str(err.detail), dict(err.headers or {}))(
                        scope, receive, send)
                    return
        await self.app(scope, receive, send)


class BodyLimit:
    """ASGI middleware: the whole request body is read before the handler sees it, within `timeout` seconds
    (else 408) and at most `limit` bytes (else 413, also for chunked bodies); both answers close the
    connection."""

    def __init__(self, app: ASGIApp, limit: int, counters: ApiCounters, timeout: float = 30.0) -> None:
        self.app = app
        self.limit = limit
        self.counters = counters
        self.timeout = timeout

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, refusal: tuple[int, str, str]) -> None:
        status, code, text = refusal
        self.counters.add(scope["method"], "<body-limit>", status)
        await _error(status, code, text, {"Connection": "close"})(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check Content-Length, then read (and count) the body, then run the app with it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        too_big = f"the request body is over {self.limit} bytes"
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await self._refuse(scope, receive, send, (413, "too_large", too_big))
            return
        chunks: list[bytes] = []
        seen = 0
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    msg = await receive()
                    if msg["type"] == "http.disconnect":
                        return
                    body = msg.get("body", b"")
                    seen += len(body)
                    if seen > self.limit:
                        await self._refuse(scope, receive, send, (413, "too_large", too_big))
                        return
                    chunks.append(body)
                    if not msg.get("more_body", False):
                        break
        except TimeoutError:
            await self._refuse(scope, receive, send,
                               (408, "timeout", f"the request body did not arrive within {self.timeout:g} s"))
            return
        pending: Message | None = {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        async def replay() -> Message:
            nonlocal pending
            if pending is not None:
                msg, pending = pending, None
                return msg
            return await receive()  # after the body: http.disconnect (streaming responses wait for it)

        await self.app(scope, replay, send)


def _route_of(app: FastAPI, scope: Scope) -> str:
    for route in app.router.routes:
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return str(getattr(route, "path", "?"))
    return "<unmatched>"


def _traffic(gw: GatewayView) -> dict[str, Any]:
    """Today's foot traffic from the traffic processor (drivers/traffic), if the gateway runs one."""
    proc = gw.traffic()
    if proc is not None:
        return dict(proc.view(gw.clock.now()).as_dict(), available=True)
    return {"available": False, "reason": "no door counter or BLE presence device is configured"}


async def _traffic_hours(gw: GatewayView, day: date) -> list[dict[str, Any]]:
    """The closed hours of a store-local day the traffic processor kept (kv `traffic.hour/<day>T<HH>`, the
    last 15 days), oldest first; [] when none were kept (before the gateway ran, or past the retention)."""
    lo = f"{TRAFFIC_HOUR_KEY}{day.isoformat()}T"
    rows = await gw.query("SELECT value FROM kv WHERE key >= ? AND key < ? ORDER BY key LIMIT 26",
                          (lo, lo[:-1] + "U"))  # fmt: skip
    out = []
    for r in rows:
        try:
            v = orjson.loads(r["value"])
        except orjson.JSONDecodeError:
            continue
        if isinstance(v, dict):
            out.append(v)
    return out


def _names(gw: GatewayView) -> dict[str, Any]:
    """Display names of the store, zones, shelves, catalog items and back-room locations: `name` (the default)
    and `names` per language, for the dashboard (edge/config.py `Names`)."""
    m = gw.manifest
    return {
        "store": {"id": m.store.id, "name": m.store.name or m.store.id},
        "zones": {z.id: {"name": z.name or z.id, "names": dict(z.names)} for z in m.zones},
        "shelves": {s.id: {"name": s.name or s.id, "names": dict(s.names), "zone": s.zone} for s in m.shelves},
        "catalog": {c.sku: {"name": c.name or c.sku, "names": dict(c.names)} for c in m.catalog},
        "backroom": {b.id: {"name": b.label(), "names": dict(b.names)} for b in m.backroom.locations},
    }


def _beacons(gw: GatewayView) -> list[dict[str, Any]]:
    """Every store beacon's health from the traffic processor (battery_low / silent and since when)."""
    proc = gw.traffic()
    status = proc.beacon_status() if proc is not None else {}
    out = []
    for b in getattr(gw.manifest, "beacons", []):
        st = status.get(b.id, {})
        seen = st.get("last_seen_t")
        last_seen = (datetime.fromtimestamp(seen, UTC).isoformat().replace("+00:00", "Z")
                     if isinstance(seen, (int, float)) and 0 < seen < 1e11 else None)
        out.append({"beacon": b.id, "zone": b.zone, "battery_mv": st.get("battery_mv"),
                    "battery_low": bool(st.get("battery_low")), "silent": bool(st.get("silent")),
                    "last_seen": last_seen})
    return out


def create_app(
    gw: GatewayView,
    tokens: list[TokenConfig],
    *,
    rules: Any = None,
    env_token: str | None = None,
    body_timeout: float = 30.0,
    extra_metrics: Callable[[], str] | None = None,
) -> FastAPI:
    """The FastAPI application over a running gateway (and its rules service, `gw.rules` by default);
    `env_token`, if given, holds every role (the demo's token; `edge-gateway run` gives none)."""
    store = TokenStore(tokens, env_token, clock=gw.clock)
    counters = ApiCounters()
    stop = asyncio.Event()
    app = FastAPI(
        responses=_errors(401, 403, 413, 422),  # every route: auth, body limit, request validation
        title="Smart-store edge gateway",
        version=VERSION,
        description="Local API of one store's edge gateway: live stock, staff alerts, devices, traffic, offers.",
        docs_url=None,  # Swagger UI and ReDoc load their assets from a CDN: off; /openapi.json stays
        redoc_url=None,
    )
    app.state.stop = stop
    app.state.counters = counters

    def svc() -> Any:
        r = rules if rules is not None else getattr(gw, "rules", None)
        if r is None:
            raise HTTPException(503, detail="the rules engine is not running in this gateway")
        return r

    any_reader = require(store, "staff", "hq", "admin")
    staff = require(store, "staff", "admin")
    shopper = require(store, "shopper-app", "admin")
    offers_reader = require(store, "shopper-app", "staff", "hq", "admin")
    admin = require(store, "admin")
    sse_reader = require(store, "staff", "hq", "admin", query_token=True)
    Reader = Annotated[Principal, Depends(any_reader)]

    @app.middleware("http")
    async def count_requests(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        counters.add(request.method, _route_of(app, request.scope), response.status_code)
        return response

    @app.exception_handler(StarletteHTTPException)  # also FastAPI's own (e.g. a body that is not JSON)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = exc.code if isinstance(exc, AuthError) else {
            401: "unauthorized", 403: "forbidden", 404: "not_found", 503: "unavailable"
        }.get(exc.status_code, "error")
        return _error(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(CommandError)
    async def command_error(_: Request, exc: CommandError) -> JSONResponse:
        status = getattr(exc, "status", None) or _STATUS.get(exc.code, 400)
        return _error(int(status), exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return _error(422, "bad_request", "; ".join(parts) or "invalid request")

    # ---- no token ----
    @app.get("/healthz", tags=["ops"], responses={503: {"description": "a check failed (see `checks`)"}})
    async def healthz() -> JSONResponse:
        """200 only when the daemon is healthy (core tasks run, commit and uplink lag under their limits, disk
        reserve holds), else 503; each check with `ok` and a `reason` (edge/health.py, docs/api.md)."""
        health = getattr(gw, "health", None)  # edge.health.Health on the real gateway
        checks: dict[str, Any] = {}
        if health is not None:
            await health.measure_uplink_lag()
            checks = health.checks()
        ok = all(c["ok"] for c in checks.values())
        body = {"status": "ok" if ok else "unhealthy", "store": gw.manifest.store.id,
                "time": gw.clock.now().isoformat(), "checks": checks}
        return JSONResponse(body, status_code=200 if ok else 503, headers={"Cache-Control": "no-store"})

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        """Prometheus text: the gateway's metrics, the rules engine's counters, API requests."""
        r = rules if rules is not None else getattr(gw, "rules", None)
        extra = r.metrics_text() if r is not None and hasattr(r, "metrics_text") else ""
        text = gw.metrics_text() + extra + counters.text() + store.metrics_text() + paired.metrics_text()
        if extra_metrics is not None:
            text += extra_metrics()
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # ---- stock (same cells and versions as state/stock/{shelf} and cmd/stock.get) ----
    @app.get("/api/v1/stock", tags=["stock"], response_model=None,
             responses={200: {"model": StockList}, **_errors(404)})
    async def stock(
        _: Reader,
        shelf: Annotated[str | None, Query(max_length=64)] = None,
        sku: Annotated[str | None, Query(max_length=64)] = None,
        zone: Annotated[str | None, Query(max_length=64)] = None,
    ) -> dict[str, Any]:
        """Current stock, every cell with its version and explanation (docs/api.md); filters combine; a shelf,
        SKU or zone the store does not have is 404 `not_found` (as `cmd/stock.get` answers)."""
        cells = gw.stock.select(shelf=shelf, sku=sku, zone=zone)
        return {
            "store": gw.manifest.store.id,
            "time": gw.clock.now().isoformat().replace("+00:00", "Z"),
            "items": [gw.stock.describe(c) for c in cells],
        }

    @app.get("/api/v1/stock/sku/{sku}", tags=["stock"], responses=_errors(404))
    async def stock_sku(sku: str, _: Reader) -> dict[str, Any]:
        """One SKU on every shelf, with the total."""
        cells = gw.stock.cells(sku=sku)
        if not cells:
            raise CommandError("not_found", f"sku {sku!r} is on no shelf of the planogram")
        return {"sku": sku, "total": sum(c.count for c in cells), "items": [gw.stock.describe(c) for c in cells]}

    @app.get("/api/v1/stock/{shelf}", tags=["stock"], response_model=None,
             responses={200: {"model": ShelfStock}, **_errors(404)})
    async def stock_shelf(shelf: str, _: Reader) -> dict[str, Any]:
        """One shelf: the same payload as the retained `state/stock/{shelf}` topic."""
        if gw.manifest.shelf(shelf) is None:
            raise CommandError("not_found", f"no shelf {shelf!r} in the planogram")
        return gw.stock.shelf_snapshot(shelf)

    # ---- available-to-promise (same documents as state/atp/{sku} and cmd/atp.get) ----
    @app.get("/api/v1/atp", tags=["stock"], response_model=AtpList, responses=_errors(404))
    async def atp_all(
        _: Reader,
        category: Annotated[str | None, Query(max_length=64, description="only this catalog category")] = None,
    ) -> dict[str, Any]:
        """Available-to-promise of every catalog SKU: certainly on hand - reserved - safety stock."""
        now = gw.clock.now()
        return {"store": gw.manifest.store.id, "time": now.isoformat().replace("+00:00", "Z"),
                "items": gw.atp.items(now, category=category)}

    @app.get("/api/v1/atp/{sku}", tags=["stock"], response_model=AtpDoc, responses=_errors(404))
    async def atp_one(sku: Annotated[str, PathParam(max_length=64)], _: Reader) -> dict[str, Any]:
        """One SKU's available-to-promise, with why it is lower than on hand (`reasons`)."""
        return gw.atp.get(sku, gw.clock.now())

    # ---- nearby stores (edge/nearby.py; the same answers as cmd/nearby.get) ----
    @app.get("/api/v1/nearby", tags=["stock"], responses=_errors(400))
    async def nearby(
        _: Reader, sku: Annotated[str | None, Query(pattern=IDENT_PATTERN, description="answer for this SKU")] = None,
    ) -> dict[str, Any]:
        """The neighbouring stores (manifest `nearby:`) and whether they can be seen; with `sku`, who nearby
        has it, how many and how fresh (as `/api/v1/nearby/{sku}`)."""
        return gw.nearby.overview() if sku is None else gw.nearby.answer(sku)

    @app.get("/api/v1/nearby/{sku}", tags=["stock"], responses=_errors(400))
    async def nearby_sku(sku: Annotated[str, PathParam(pattern=IDENT_PATTERN)], _: Reader) -> dict[str, Any]:
        """Who nearby has `sku`: per neighbour `state` fresh (its `atp` now), stale or unknown (`atp` null,
        `why`, the last figure known apart in `last_known`): never a guess."""
        return gw.nearby.answer(sku)

    # ---- alerts ----
    @app.get("/api/v1/alerts", tags=["alerts"], responses=_errors(400, 503))
    async def alerts(
        _: Reader,
        *,
        state: Annotated[AlertState | None, Query(description="only alerts in this state")] = None,
        limit: Annotated[int, Query(ge=1, le=1000, description="page size")] = 200,
        kind: Annotated[str | None, Query(max_length=32, description="only this kind (e.g. low_stock)")] = None,
        shelf: Annotated[str | None, Query(max_length=64, description="only alerts of this shelf")] = None,
        since: Annotated[IsoTime | None, Query(description="opened at or after (ISO 8601 with zone)")] = None,
        until: Annotated[IsoTime | None, Query(description="opened before (ISO 8601 with zone)")] = None,
        after: Annotated[str | None, Query(max_length=128, description="the `next` cursor of the previous page")]
        = None,
    ) -> dict[str, Any]:
        """Alert history, newest first, filtered; `next` is the cursor of the following page (null: the last)."""
        items, nxt = await svc().alerts(state, limit, kind=kind, shelf=shelf, since=since, until=until, after=after)
        return {"items": items, "next": nxt}

    # ---- CSV export (edge/api/export.py) ----
    def _csv(text: str, name: str) -> Response:
        return Response(text, media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    @app.get("/api/v1/export/stock.csv", tags=["stock"], response_class=Response, responses=_errors(404))
    async def export_stock(
        _: Reader,
        shelf: Annotated[str | None, Query(max_length=64)] = None,
        sku: Annotated[str | None, Query(max_length=64)] = None,
        zone: Annotated[str | None, Query(max_length=64)] = None,
    ) -> Response:
        """The current stock (the cells of GET /api/v1/stock, same filters) as CSV."""
        cells = gw.stock.select(shelf=shelf, sku=sku, zone=zone)
        return _csv(to_csv(STOCK_COLUMNS, [gw.stock.describe(c) for c in cells]), "stock.csv")

    @app.get("/api/v1/export/alerts.csv", tags=["alerts"], response_class=Response, responses=_errors(400, 503))
    async def export_alerts(
        _: Reader,
        *,
        state: Annotated[AlertState | None, Query()] = None,
        kind: Annotated[str | None, Query(max_length=32)] = None,
        shelf: Annotated[str | None, Query(max_length=64)] = None,
        since: Annotated[IsoTime | None, Query(description="opened at or after (ISO 8601 with zone)")] = None,
        until: Annotated[IsoTime | None, Query(description="opened before (ISO 8601 with zone)")] = None,
    ) -> Response:
        """The alert history (filters as GET /api/v1/alerts) as CSV, newest first, at most MAX_ROWS rows."""
        rows: list[dict[str, Any]] = []
        after: str | None = None
        while len(rows) < MAX_ROWS:
            page, after = await svc().alerts(state, min(1000, MAX_ROWS - len(rows)), kind=kind, shelf=shelf,
                                             since=since, until=until, after=after)
            rows += page
            if after is None:
                break
        return _csv(to_csv(ALERT_COLUMNS, rows), "alerts.csv")

    @app.post("/api/v1/alerts/{alert_id}/ack", tags=["alerts"], responses=_errors(400, 404, 409, 503))
    async def ack(alert_id: str, body: AckBody, _: Annotated[Principal, Depends(staff)]) -> dict[str, Any]:
        """Acknowledge an open alert; the acknowledged event is committed (and published) after this."""
        return dict(await svc().ack(alert_id, body.by))

    # ---- devices, traffic ----
    @app.post("/api/v1/alerts/{alert_id}/resolve", tags=["alerts"], responses=_errors(400, 404, 409, 503))
    async def resolve(alert_id: str, body: ResolveBody, _: Annotated[Principal, Depends(staff)]) -> dict[str, Any]:
        """Resolve a live alert by hand with a reason (close_reason `manual: <reason>`); the resolved event,
        naming `by`, is committed (and published) after this. Same as the MQTT command `alert.resolve`."""
        return dict(await svc().resolve(alert_id, body.by, body.reason))

    @app.post("/api/v1/alerts/{alert_id}/snooze", tags=["alerts"], responses=_errors(400, 404, 409, 503))
    async def snooze(alert_id: str, body: SnoozeBody, _: Annotated[Principal, Depends(staff)]) -> dict[str, Any]:
        """Snooze a live alert for 5 min .. 8 h: no escalation and no staff chat messages until it comes back
        (retail.alert.unsnoozed.v1). The snoozed event is committed (and published) after this. Same as the
        MQTT command `alert.snooze`."""
        return dict(await svc().snooze(alert_id, body.by, body.duration_s))

    @app.post("/api/v1/stock/{shelf}/{sku}/count", tags=["stock"], responses=_errors(400, 404))
    async def correct_count(
        shelf: Annotated[str, PathParam(max_length=64)], sku: Annotated[str, PathParam(max_length=64)],
        body: CountBody, _: Annotated[Principal, Depends(staff)],
    ) -> dict[str, Any]:
        """Staff enter the counted number of a cell: the audited retail.stock.corrected.v1 (by, old, new,
        reason) and the cell's manual count commit together; returns the cell after it."""
        cells = gw.stock.select(shelf=shelf, sku=sku)
        if not cells:
            raise CommandError("not_found", f"shelf {shelf!r} does not hold {sku!r} in the planogram")
        by, reason = body.by.strip(), body.reason.strip()
        if not by or not reason or not by.isprintable() or not reason.isprintable():
            raise CommandError("bad_request", "by and reason must be printable text, not blank")
        old = gw.stock.describe(cells[0])["count"]
        ev = StockCorrected(source="api", time=gw.clock.now(), subject=shelf, shelf=shelf, sku=sku, by=by,
                            old=old, new=body.count, reason=reason)
        await gw.emit_committed([ev])
        return gw.stock.describe(gw.stock.select(shelf=shelf, sku=sku)[0])

    @app.post("/api/v1/shelves/{shelf}/restocking", tags=["alerts"], responses=_errors(400, 404, 503))
    async def restocking(
        shelf: Annotated[str, PathParam(max_length=64)], body: RestockingBody, _: Annotated[Principal, Depends(staff)]
    ) -> dict[str, Any]:
        """Start or finish restocking a shelf (mutes its restock alerts for at most the rules' mute_max_s), or with
        `sku` one cell (also ending when its count rises: retail.restocking.started/ended.v1); the same as the MQTT
        command `restock.mute`."""
        return dict(await svc().mute(shelf, body.on, body.duration_s, body.sku))

    @app.get("/api/v1/restocking", tags=["alerts"], responses=_errors(503))
    async def restocking_cells(_: Reader) -> dict[str, Any]:
        """The cells being restocked now (shelf, sku, until, baseline): muted until the count rises above
        `baseline` or `until` passes."""
        return {"items": svc().engine.restocking()}

    @app.get("/api/v1/devices", tags=["devices"])
    async def devices(_: Reader) -> dict[str, Any]:
        """Every configured device with its state."""
        return {"items": [d.as_dict() for d in gw.devices()]}

    @app.get("/api/v1/names", tags=["stock"])
    async def names(_: Reader) -> dict[str, Any]:
        """Display names (default and per language) of the store, zones, shelves and catalog items."""
        return _names(gw)

    @app.get("/api/v1/beacons", tags=["devices"])
    async def beacons(_: Reader) -> dict[str, Any]:
        """Store beacons with their health: `battery_low`, `silent`, last seen (the rules raise no alert
        for them; their `retail.beacon.*` events are on the hub and the SSE stream)."""
        return {"items": _beacons(gw)}

    @app.get("/api/v1/traffic", tags=["traffic"])
    async def traffic(
        _: Reader,
        day: Annotated[IsoDate | None, Query(description="only the closed hours kept of this store-local day "
                                                       "(YYYY-MM-DD; the last 15 days are kept)")] = None,
    ) -> dict[str, Any]:
        """Foot traffic today (store-local day), occupancy, zone presence, and the hours of the same weekday
        last week (`last_week`); with `day`, only that day's kept hours."""
        if day is not None:
            return {"day": day.isoformat(), "hours": await _traffic_hours(gw, day)}
        out = _traffic(gw)
        if out.get("available"):
            last = date.fromisoformat(out["day"]) - timedelta(days=7)
            out["last_week"] = {"day": last.isoformat(), "hours": await _traffic_hours(gw, last)}
        return out

    # ---- offers ----
    @app.get("/api/v1/offers", tags=["offers"])
    async def offers(_: Annotated[Principal, Depends(offers_reader)]) -> dict[str, Any]:
        """The configured offers."""
        cfg = getattr(gw.manifest, "offers", None)
        return {"items": [o.as_json() for o in (cfg.offers if cfg else [])]}

    @app.post("/api/v1/sightings", tags=["offers"], responses=_errors(400, 404, 503))
    async def sightings(
        payload: Annotated[dict[str, Any], Body(examples=[{"shopper": "a1b2c3", "consent": True, "zone": "aisle-1"}])],
        _: Annotated[Principal, Depends(shopper)],
    ) -> dict[str, Any]:
        """A shopper app reports a beacon (or zone) it sees; returns the offers to show now."""
        return dict(await svc().sighting(payload))

    # ---- events ----
    @app.get("/api/v1/events", tags=["events"], response_class=StreamingResponse)
    async def events(
        request: Request,
        _: Annotated[Principal, Depends(sse_reader)],
        type_prefix: Annotated[str, Query(max_length=100, description="only types starting with this")] = "",
    ) -> StreamingResponse:
        """Live stream (text/event-stream) of every accepted event as CloudEvents JSON; it ends soon after
        the token that opened it is revoked or expires."""
        token: str = request.state.token
        return StreamingResponse(
            event_stream(gw, stop, type_prefix, valid=lambda: token_valid(store, token)),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    # ---- rules ----
    @app.post("/api/v1/rules/reload", tags=["rules"], responses=_errors(400, 503))
    async def reload(_: Annotated[Principal, Depends(admin)], body: ReloadBody | None = None) -> dict[str, Any]:
        """Reload the restock rules (validated first; on error the old rules stay and the reply says why)."""
        return dict(await svc().reload(body.rules if body else None))

    paired = add_pairing_routes(app, gw, store)  # tablet sign-in: /api/v1/pairings, /api/v1/tokens
    add_order_routes(app, gw, store)  # online orders and pick tasks: /api/v1/orders, /api/v1/picks
    add_manifest_routes(app, gw, store)  # remote manifest rollout: /api/v1/manifest (edge/rollout.py)
    app.state.started = time.monotonic()
    # outermost last: security headers on everything, then the token, then the body
    app.add_middleware(BodyLimit, limit=gw.manifest.api.max_body_bytes, counters=counters, timeout=body_timeout)
    app.add_middleware(AuthFirst, api=app, counters=counters)
    app.add_middleware(SecurityHeaders)
    return app
