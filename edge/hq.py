"""HQ's chain-wide view (`edge-gateway hq stock|atp|stores --hub URL`): every store's stock, ATP and status
read from the retained topics the stores publish, and fresh stock pulled from all stores by request/reply.

The reader knows no device family: it reads only what CONTRACT.md promises under `{prefix}/{store}/`:
retained `status`, `state/info`, `state/stock/{shelf}` and `state/atp/{sku}`, and the read-only command
`cmd/stock.get` (reply under the store's own `reply/` root, as a store accepts by default).

One MQTT 3.1.1 connection (edge/mqtt_sub.py, clean session): it subscribes to the retained topics it needs
and to its reply topic, then publishes a marker to that reply topic; a broker delivers a new subscription's
retained messages before anything published after the SUBACK, so the marker's arrival says the snapshot is
complete (and `wait_s` bounds the read when a broker does not). Everything read is untrusted: topic levels
must be ids (the manifest's Ident), payloads JSON objects of at most `max_message` bytes, at most
`max_stores` stores, `max_shelves` shelves and `max_skus` SKUs a store; what breaks a bound is counted in
`rejected` and left out, never an error. The view keeps a few fields per cell, not the documents (the
memory per store is measured by `python -m bench.fleet`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import secrets
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from edge.mqtt_sub import MqttSubError, SubOptions, Subscriber

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # edge.configbase.Ident: what a store, shelf or SKU id is
MAX_MESSAGE = 1024 * 1024
MAX_STORES = 20_000
MAX_SHELVES = 2_000
MAX_SKUS = 50_000
MAX_ITEMS = 10_000  # cells in one stock document or reply


def _ts(value: object) -> float | None:
    """UNIX time of an RFC 3339 text, or None."""
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and -(2**53) < value < 2**53 else None


def _text(value: object, limit: int = 64) -> str | None:
    return value[:limit] if isinstance(value, str) else None


@dataclass(slots=True)
class Cell:
    """One shelf's count of one SKU, as the store's retained `state/stock/{shelf}` said."""

    count: int | None
    state: str | None
    updated: float | None


@dataclass(slots=True)
class Promise:
    """One SKU's available-to-promise in a store (retained `state/atp/{sku}`)."""

    atp: int | None
    on_hand: int | None
    reserved: int | None
    certain_only: bool
    updated: float | None


@dataclass(slots=True)
class StoreView:
    """What HQ knows of one store."""

    store: str
    status: str | None = None  # online | offline | None (no status seen)
    status_time: float | None = None
    name: str | None = None
    devices: int = 0
    devices_down: tuple[str, ...] = ()
    manifest_sha: str | None = None
    shelves: dict[str, dict[str, Cell]] = field(default_factory=dict)
    atp: dict[str, Promise] = field(default_factory=dict)
    last_update: float | None = None  # newest time any of its documents carries

    def touch(self, t: float | None) -> None:
        if t is not None and (self.last_update is None or t > self.last_update):
            self.last_update = t

    def stale_cells(self) -> int:
        """Cells whose count is stale or unknown as the store says."""
        return sum(1 for cells in self.shelves.values() for c in cells.values() if c.state in ("stale", "unknown"))


class ChainView:
    """The chain's stores from their retained messages (`apply` each one); bounded, see the module doc."""

    def __init__(self, prefix: str = "retail/v1", *, max_stores: int = MAX_STORES, max_shelves: int = MAX_SHELVES,
                 max_skus: int = MAX_SKUS, max_message: int = MAX_MESSAGE) -> None:
        self.prefix = prefix.rstrip("/")
        self.max_stores = max_stores
        self.max_shelves = max_shelves
        self.max_skus = max_skus
        self.max_message = max_message
        self.stores: dict[str, StoreView] = {}
        self.rejected = 0  # messages left out: bad topic, too large, not a JSON object, over a bound
        self.dropped_stores = 0  # stores left out because `max_stores` were known already

    def apply(self, topic: str, payload: bytes | None) -> bool:
        """Take one message; False when it is not a store document or breaks a bound (counted)."""
        if not topic.startswith(self.prefix + "/"):
            return False
        levels = topic[len(self.prefix) + 1:].split("/")
        rest = levels[1:]
        if rest in (["status"], ["state", "info"]):
            kind, key = "/".join(rest), None
        elif len(rest) == 3 and rest[0] == "state" and rest[1] in ("stock", "atp"):
            kind, key = f"state/{rest[1]}", rest[2]
        else:
            return False  # events, commands, replies: not the view's
        if not _ID.match(levels[0]):
            return self._reject()
        if payload is None or len(payload) > self.max_message:
            return self._reject()
        if not payload:  # a cleared retained message
            return self._forget(levels[0], kind, key)
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return self._reject()
        if not isinstance(doc, dict):
            return self._reject()
        view = self._store(levels[0])
        if view is None:
            return False
        if kind == "status":
            state = doc.get("state")
            view.status = state if state in ("online", "offline") else None
            view.status_time = _ts(doc.get("time"))
            view.touch(view.status_time)
        elif kind == "state/info":
            raw = doc.get("devices")
            devices: list[Any] = raw if isinstance(raw, list) else []
            view.name = _text(doc.get("name"), 128)
            view.devices = min(len(devices), 100_000)
            view.devices_down = tuple(str(d.get("device"))[:64] for d in devices[:1000]
                                      if isinstance(d, dict) and d.get("state") != "online")
            m = doc.get("manifest")
            view.manifest_sha = _text(m.get("sha256"), 64) if isinstance(m, dict) else None
            view.touch(_ts(doc.get("updated")))
        elif kind == "state/stock":
            return self._stock(view, str(key), doc)
        else:
            return self._atp(view, str(key), doc)
        return True

    def _reject(self) -> bool:
        self.rejected += 1
        return False

    def _store(self, store: str) -> StoreView | None:
        view = self.stores.get(store)
        if view is None:
            if len(self.stores) >= self.max_stores:
                self.dropped_stores += 1
                self.rejected += 1
                return None
            view = self.stores[store] = StoreView(store)
        return view

    def _forget(self, store: str, kind: str, key: str | None) -> bool:
        view = self.stores.get(store)
        if view is not None and key is not None:
            (view.shelves if kind == "state/stock" else view.atp).pop(key, None)
        return True

    def _stock(self, view: StoreView, shelf: str, doc: dict[str, Any]) -> bool:
        items = doc.get("items")
        if not _ID.match(shelf) or not isinstance(items, list) or len(items) > MAX_ITEMS:
            return self._reject()
        if shelf not in view.shelves and len(view.shelves) >= self.max_shelves:
            return self._reject()
        cells: dict[str, Cell] = {}
        for it in items:
            sku = it.get("sku") if isinstance(it, dict) else None
            if not isinstance(sku, str) or not _ID.match(sku):
                continue
            assert isinstance(it, dict)
            updated = _ts(it.get("updated"))
            state = "stale" if it.get("stale") is True else _text(it.get("state"), 16)
            cells[sku] = Cell(_int(it.get("count")), state, updated)
            view.touch(updated)
        view.shelves[shelf] = cells
        return True

    def _atp(self, view: StoreView, sku: str, doc: dict[str, Any]) -> bool:
        if not _ID.match(sku) or (sku not in view.atp and len(view.atp) >= self.max_skus):
            return self._reject()
        updated = _ts(doc.get("updated"))
        view.atp[sku] = Promise(_int(doc.get("atp")), _int(doc.get("on_hand")), _int(doc.get("reserved")),
                                doc.get("certain_only") is True, updated)
        view.touch(updated)
        return True

    # ---- answers ----
    def stock_rows(self, sku: str | None = None) -> list[dict[str, Any]]:
        """Every (store, shelf, sku) cell, or only `sku`'s, by store and shelf."""
        out = []
        for store in sorted(self.stores):
            v = self.stores[store]
            for shelf in sorted(v.shelves):
                for s, c in sorted(v.shelves[shelf].items()):
                    if sku is None or s == sku:
                        out.append({"store": store, "status": v.status, "shelf": shelf, "sku": s, "count": c.count,
                                    "state": c.state, "updated": _iso(c.updated)})
        return out

    def atp_rows(self, sku: str | None = None) -> list[dict[str, Any]]:
        """Every store's ATP of every SKU, or of `sku`."""
        out = []
        for store in sorted(self.stores):
            v = self.stores[store]
            for s, p in sorted(v.atp.items()):
                if sku is None or s == sku:
                    out.append({"store": store, "status": v.status, "sku": s, "atp": p.atp, "on_hand": p.on_hand,
                                "reserved": p.reserved, "certain_only": p.certain_only, "updated": _iso(p.updated)})
        return out

    def store_rows(self, now: float, stale_after: float) -> list[dict[str, Any]]:
        """Every store with its health: `offline` (its status says so: its will or a clean stop), `unknown`
        (no status), `stale` (online, but nothing newer than `stale_after` seconds, a device down or a cell
        stale or unknown), or `ok`; problems first."""
        out = []
        for store, v in self.stores.items():
            age = None if v.last_update is None else max(0.0, now - v.last_update)
            why = []
            if v.status == "offline":
                verdict = "offline"
            elif v.status is None:
                verdict = "unknown"
            else:
                if age is None or age > stale_after:
                    why.append("no update for " + ("ever" if age is None else f"{age:.0f} s"))
                if v.devices_down:
                    why.append("devices down: " + ", ".join(v.devices_down[:5])
                               + (" ..." if len(v.devices_down) > 5 else ""))
                if v.stale_cells():
                    why.append(f"{v.stale_cells()} stale/unknown cells")
                verdict = "stale" if why else "ok"
            out.append({"store": store, "verdict": verdict, "status": v.status, "since": _iso(v.status_time),
                        "last_update_age_s": None if age is None else round(age, 1), "devices": v.devices,
                        "devices_down": list(v.devices_down), "shelves": len(v.shelves), "skus": len(v.atp),
                        "why": "; ".join(why)})
        rank = {"offline": 0, "unknown": 1, "stale": 2, "ok": 3}
        return sorted(out, key=lambda r: (rank[r["verdict"]], r["store"]))


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


# ---- the hub connection ----------------------------------------------------------------------------------

SUBSCRIPTIONS = {"stores": ("status", "state/info", "state/stock/+"),
                 "stock": ("status", "state/stock/+"),
                 "atp": ("status", "state/atp/+")}


@dataclass(slots=True)
class Answer:
    """One store's answer to a fan-out request."""

    store: str
    ok: bool
    seconds: float | None = None
    result: Any = None
    error: str | None = None  # "timeout" when it did not answer in time


class HqClient:
    """One connection to the hub: `async with HqClient(url, view, topics) as hq: await hq.snapshot(...)`."""

    def __init__(self, url: str, view: ChainView, topics: Sequence[str], *, client_id: str | None = None,
                 live: bool = False) -> None:
        self.view = view
        self.nonce = secrets.token_hex(8)
        p = view.prefix
        self.reply_filter = f"{p}/+/reply/hq-{self.nonce}"
        self.marker = f"{p}/{self.nonce}/reply/hq-{self.nonce}"  # no store has a 16-hex id of a fresh nonce
        filters = tuple(f"{p}/+/{t}" for t in topics)
        self.opts = dataclasses.replace(
            SubOptions.from_url(url, client_id=client_id or f"hq-{self.nonce}", topic=self.reply_filter, qos=1,
                                max_packet=view.max_message),
            extra_topics=filters)
        self.live = live  # keep applying state messages after the snapshot (the bench's latency watch)
        self.on_update: Any = None  # called with (topic, t) for every state message applied after the snapshot
        self._sub: Subscriber | None = None
        self._reader: asyncio.Task[None] | None = None
        self._synced = asyncio.Event()
        self._replies: dict[str, asyncio.Future[tuple[float, Any]]] = {}
        self.received = 0

    async def __aenter__(self) -> HqClient:
        self._sub = Subscriber(self.opts)
        await self._sub.__aenter__()
        self._reader = asyncio.create_task(self._read(), name="hq-reader")
        self._sub.publish(self.marker, b"{}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
        if self._sub is not None:
            await self._sub.close()

    async def _read(self) -> None:
        assert self._sub is not None
        marker, view, replies = self.marker, self.view, self._replies
        reply_tail = f"/reply/hq-{self.nonce}"
        async for batch in self._sub.batches():
            now = time.time()
            for topic, payload in batch:
                self.received += 1
                if topic == marker:
                    self._synced.set()
                elif topic.endswith(reply_tail):
                    self._reply(topic, payload, now, replies)
                elif (not self._synced.is_set() or self.live) and view.apply(topic, payload) \
                        and self.on_update is not None and self._synced.is_set():
                    self.on_update(topic, now)

    def _reply(self, topic: str, payload: bytes | None, now: float,
               replies: dict[str, asyncio.Future[tuple[float, Any]]]) -> None:
        try:
            doc = orjson.loads(payload) if payload is not None else None
        except orjson.JSONDecodeError:
            doc = None
        rid = doc.get("id") if isinstance(doc, dict) else None
        fut = replies.get(rid) if isinstance(rid, str) else None
        if fut is None or fut.done():
            self.view.rejected += 1
            return
        fut.set_result((now, doc))

    async def snapshot(self, wait_s: float = 5.0) -> bool:
        """Wait until the retained messages of the subscription are in (True), or `wait_s` passed (False)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wait_synced(), wait_s)
        return self._synced.is_set()

    async def _wait_synced(self) -> None:
        assert self._reader is not None
        synced = asyncio.ensure_future(self._synced.wait())
        done, _ = await asyncio.wait([synced, self._reader], return_when=asyncio.FIRST_COMPLETED)
        synced.cancel()
        if self._reader in done:
            exc = self._reader.exception()
            raise exc if exc is not None else MqttSubError("connection closed")

    async def fan_out(self, stores: Sequence[str], name: str = "stock.get", args: dict[str, Any] | None = None,
                      timeout: float = 3.0) -> list[Answer]:  # noqa: ASYNC109 - each store's deadline
        """Send the read-only command `name` to every store at once; each store's answer, or `timeout` for
        those that did not answer within `timeout` seconds (a store never holds up the others)."""
        assert self._sub is not None
        loop = asyncio.get_running_loop()
        sent: dict[str, tuple[str, float, asyncio.Future[tuple[float, Any]]]] = {}
        p = self.view.prefix
        for i, store in enumerate(stores):
            rid = f"hq-{self.nonce}-{i}"
            fut: asyncio.Future[tuple[float, Any]] = loop.create_future()
            self._replies[rid] = fut
            body = {"id": rid, "reply_to": f"{p}/{store}/reply/hq-{self.nonce}", **(args or {})}
            t0 = time.time()
            self._sub.publish(f"{p}/{store}/cmd/{name}", orjson.dumps(body))
            sent[store] = (rid, t0, fut)
        if sent:
            await asyncio.wait([f for _, _, f in sent.values()], timeout=timeout)
        out = []
        for store, (rid, t0, fut) in sent.items():
            self._replies.pop(rid, None)
            if not fut.done():
                fut.cancel()
                out.append(Answer(store, False, None, None, "timeout"))
                continue
            t1, doc = fut.result()
            if doc.get("ok") is True:
                out.append(Answer(store, True, round(t1 - t0, 4), doc.get("result")))
            else:
                err = doc.get("error")
                code = err.get("code") if isinstance(err, dict) else err
                out.append(Answer(store, False, round(t1 - t0, 4), None, _text(code, 200) or "error"))
        return out


def fresh_stock_rows(answers: Sequence[Answer], sku: str | None) -> list[dict[str, Any]]:
    """Rows like `ChainView.stock_rows` from `stock.get` answers; a store that did not answer is one row with
    its error."""
    out: list[dict[str, Any]] = []
    for a in sorted(answers, key=lambda a: a.store):
        items = a.result.get("items") if a.ok and isinstance(a.result, dict) else None
        if not isinstance(items, list):
            out.append({"store": a.store, "shelf": None, "sku": sku, "count": None,
                        "state": a.error or "bad reply", "seconds": a.seconds})
            continue
        for it in items[:MAX_ITEMS]:
            if not isinstance(it, dict) or not isinstance(it.get("sku"), str):
                continue
            if sku is None or it["sku"] == sku:
                out.append({"store": a.store, "shelf": _text(it.get("shelf")), "sku": it["sku"][:64],
                            "count": _int(it.get("count")), "state": _text(it.get("state"), 16),
                            "seconds": a.seconds})
    return out


# ---- the command ------------------------------------------------------------------------------------------

def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain text table of `columns` (missing values as '-')."""
    cells = [[("-" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


async def run_hq(what: str, *, hub: str, prefix: str = "retail/v1", sku: str | None = None, fresh: bool = False,
                 timeout: float = 3.0, wait_s: float = 5.0, stale_after: float = 900.0, as_json: bool = False,  # noqa: ASYNC109
                 max_stores: int = MAX_STORES) -> int:
    """`edge-gateway hq stock|atp|stores`: print the chain-wide view; exit 0, 1 when the hub is unreachable,
    2 on a bad argument."""
    if sku is not None and not _ID.match(sku):
        print(f"edge-gateway hq: --sku {sku[:80]!r} is not a SKU id (letters, digits, '_', '.', '-')", file=sys.stderr)
        return 2
    view = ChainView(prefix, max_stores=max_stores)
    try:
        async with HqClient(hub, view, SUBSCRIPTIONS[what]) as hq:
            complete = await hq.snapshot(wait_s)
            answers = None
            if fresh:
                asked = sorted(s for s, v in view.stores.items() if v.status != "offline")
                answers = await hq.fan_out(asked, "stock.get", {"sku": sku} if sku else {}, timeout)
    except (MqttSubError, OSError) as exc:
        print(f"edge-gateway hq: hub {hub}: {exc}", file=sys.stderr)
        return 1
    note = [] if complete else [f"the hub did not confirm the snapshot within {wait_s:g} s: it may be partial"]
    if view.dropped_stores:
        note.append(f"{view.dropped_stores} messages of stores beyond --max-stores {max_stores} left out")
    if view.rejected:
        note.append(f"{view.rejected} malformed or oversized messages left out")
    if what == "stores":
        rows = view.store_rows(time.time(), stale_after)
        cols = ["store", "verdict", "status", "since", "last_update_age_s", "devices", "shelves", "why"]
    elif what == "atp":
        rows = view.atp_rows(sku)
        cols = ["store", "status", "sku", "atp", "on_hand", "reserved", "certain_only", "updated"]
    elif answers is not None:
        rows = fresh_stock_rows(answers, sku)
        cols = ["store", "shelf", "sku", "count", "state", "seconds"]
        offline = sorted(s for s, v in view.stores.items() if v.status == "offline")
        late = [a.store for a in answers if a.error == "timeout"]
        if late:
            note.append(f"{len(late)} store(s) did not answer within {timeout:g} s: {', '.join(late[:20])}")
        if offline:
            note.append(f"{len(offline)} offline store(s) not asked: {', '.join(offline[:20])}")
    else:
        rows = view.stock_rows(sku)
        cols = ["store", "status", "shelf", "sku", "count", "state", "updated"]
    total_key = "atp" if what == "atp" else "count"
    summary: dict[str, Any] = {"stores": len(view.stores), "rows": len(rows), "complete": complete, "notes": note}
    if what != "stores":
        summary[f"total_{total_key}"] = sum(r.get(total_key) or 0 for r in rows)
        summary["stores_with_units"] = len({r["store"] for r in rows if (r.get(total_key) or 0) > 0})
    if as_json:
        sys.stdout.write(orjson.dumps({**summary, "rows": rows}).decode() + "\n")
        return 0
    print(table(rows, cols))
    if what != "stores":
        print(f"{summary['stores_with_units']} of {len(view.stores)} stores have "
              f"{'it' if sku else 'stock'}: {summary[f'total_{total_key}']} units"
              + (" available to promise" if what == "atp" else ""))
    for n in note:
        print(f"note: {n}", file=sys.stderr)
    return 0
