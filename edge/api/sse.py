"""Server-sent events (text/event-stream) of every accepted event, from `GatewayView.subscribe()`.

Each message is `id: <CloudEvents id>`, `event: <type>`, `data: <the CloudEvents JSON>`; a comment line
every `keepalive_s` keeps proxies from closing an idle stream. Streams end when the server stops, and within
`recheck_s` of the token that opened them being revoked or expiring (`valid`), after an `event: unauthorized`
message (the browser's EventSource then reconnects and gets the 401). Each
`retail.stock.changed.v1` is followed by an `event: stock.cell` message (no id) whose data is that cell as it
is now, in the same self-explaining form as `GET /api/v1/stock` (GTIN, name, unit, min/par, state, trust).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from edge.runtime import GatewayView

UNAUTHORIZED = '{"code": "unauthorized", "message": "the token was revoked or expired"}'


def format_event(env: dict[str, Any]) -> str:
    """One SSE message for a CloudEvents dict."""
    data = orjson.dumps(env, option=orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC).decode()
    return f"id: {env.get('id', '')}\nevent: {env.get('type', 'message')}\ndata: {data}\n\n"


def stock_cell(gw: GatewayView, env: dict[str, Any]) -> str | None:
    """The `stock.cell` message following a stock change: the cell as it is now (None for other events)."""
    data = env.get("data")
    if env.get("type") != "retail.stock.changed.v1" or not isinstance(data, dict):
        return None
    cell = gw.stock.get(str(data.get("shelf")), str(data.get("sku")))
    if cell is None:
        return None
    body = orjson.dumps(gw.stock.describe(cell), option=orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC).decode()
    return f"event: stock.cell\ndata: {body}\n\n"


async def event_stream(
    gw: GatewayView, stop: asyncio.Event, type_prefix: str = "", keepalive_s: float = 15.0, *,
    valid: Callable[[], bool] | None = None, recheck_s: float = 5.0,
) -> AsyncIterator[str]:
    """Yield SSE messages until `stop` is set, the client goes away (the task is cancelled) or `valid()`
    (checked at most every `recheck_s`) says the caller's token no longer is."""
    loop = asyncio.get_running_loop()
    it = gw.subscribe().__aiter__()
    stopper: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    nxt: asyncio.Future[Any] | None = None
    checked = loop.time()
    try:
        yield "retry: 3000\n: connected\n\n"
        while not stop.is_set():
            if valid is not None and loop.time() - checked >= recheck_s:
                checked = loop.time()
                if not valid():
                    yield f"event: unauthorized\ndata: {UNAUTHORIZED}\n\n"
                    return
            if nxt is None:
                nxt = asyncio.ensure_future(anext(it))
            wait = keepalive_s if valid is None else min(keepalive_s, recheck_s)
            done, _ = await asyncio.wait({nxt, stopper}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            if nxt in done:
                env = nxt.result()
                nxt = None
                if str(env.get("type", "")).startswith(type_prefix):
                    yield format_event(env)
                    cell = stock_cell(gw, env)
                    if cell is not None:
                        yield cell
            elif not done:
                yield ": keepalive\n\n"
    finally:
        stopper.cancel()
        if nxt is not None:
            nxt.cancel()
            with contextlib.suppress(BaseException):
                await nxt
        aclose = getattr(it, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(BaseException):
                await aclose()
