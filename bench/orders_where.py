"""Where an `order.reserve`'s reply time goes in bench/orders.py: `python -m bench.orders where [--full] [--plain-hub]`.

Runs `bench.orders.bench_orders` in this process with timestamps (`time.perf_counter`, one clock for the hub
and the gateway, both in this process) at each hop of every request: the hub hands it to paho, paho's
socket send, the gateway's paho socket read and callback, the event loop, `CommandRouter.handle`, the
database write (queued on the writer thread, the transaction's body, COMMIT with its fsync, back on the loop),
the reply handed to paho, its socket send, the hub's socket read and callback. Prints p50/p90/p99/max of each
hop. Development tooling like bench/peers/where.py: it wraps product functions, the product never imports it.
"""

from __future__ import annotations

import contextvars
import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson
import paho.mqtt.client as mqtt

import bench.orders as bo
import edge.commands as cm
import edge.db as db
import edge.mqtt_session as ms

_RID = re.compile(rb'"id":"(r\d+)"')
P = time.perf_counter
HOPS = [
    ("sent", "hub_send", "hub: publish -> its socket send"),
    ("hub_send", "gw_recv", "mosquitto -> the gateway's socket read"),
    ("gw_recv", "loop_in", "gateway: paho's thread -> the event loop"),
    ("loop_in", "handle", "the loop -> CommandRouter.handle"),
    ("handle", "w_call", "handle -> Database.write (the order book)"),
    ("w_call", "w_start", "write queued (writes ahead, BEGIN)"),
    ("w_start", "w_end", "the transaction's body"),
    ("w_end", "w_done", "COMMIT (fsync, the GIL back)"),
    ("w_done", "w_back", "back on the event loop"),
    ("w_back", "publish", "-> the reply handed to paho"),
    ("publish", "gw_send", "gateway: paho's socket send"),
    ("gw_send", "hub_recv", "mosquitto -> the hub's socket read"),
    ("hub_recv", "got", "hub: paho's callback"),
    ("loop_in", "publish", "= the gateway's part (loop in -> reply handed to paho)"),
    ("w_call", "w_back", "= the commit (Database.write)"),
    ("sent", "got", "= the reply time (orders_reserve_reply_ms)"),
]


def _rid(payload: bytes) -> str | None:
    m = _RID.search(payload)
    return m.group(1).decode() if m else None


def _install(stamps: dict[str, dict[str, float]], hubs: list[bo._Hub]) -> None:
    current: contextvars.ContextVar[str | None] = contextvars.ContextVar("rid", default=None)

    def stamp(rid: str | None, hop: str, t: float | None = None) -> None:
        if rid is not None:
            stamps.setdefault(rid, {}).setdefault(hop, P() if t is None else t)

    def who(client: mqtt.Client) -> str:
        return "hub" if bytes(client._client_id).startswith(b"bench-") else "gw"

    send, recv = mqtt.Client._sock_send, mqtt.Client._sock_recv

    def sock_send(self: mqtt.Client, buf: bytes | bytearray) -> int:
        t = P()
        n = send(self, buf)
        stamp(_rid(bytes(buf[:n])), f"{who(self)}_send", t)
        return n

    def sock_recv(self: mqtt.Client, size: int) -> bytes:
        data = recv(self, size)
        stamp(_rid(data), f"{who(self)}_recv")
        return data

    received = ms.MqttSession._received

    def on_loop(self: ms.MqttSession, msg: ms.Incoming) -> None:
        if "/cmd/" in msg.topic:
            stamp(_rid(msg.payload), "loop_in")
        received(self, msg)

    handle = cm.CommandRouter.handle

    async def traced_handle(self: cm.CommandRouter, name: str, payload: bytes) -> tuple[str | None, bytes | None]:
        rid = _rid(payload)
        stamp(rid, "handle")
        current.set(rid)
        return await handle(self, name, payload)

    publish = ms.MqttSession.publish

    async def traced_publish(self: ms.MqttSession, topic: str, payload: bytes, **kw: Any) -> None:
        if "/reply/" in topic:
            stamp(_rid(payload), "publish")
        await publish(self, topic, payload, **kw)

    write = db.Database.write
    pending: list[dict[str, float]] = []

    async def traced_write(self: db.Database, fn: Callable[[Any], Any]) -> Any:
        rid = current.get()
        marks: dict[str, float] = {"w_call": P()}

        def body(conn: Any) -> Any:
            marks["w_start"] = P()
            try:
                return fn(conn)
            finally:
                marks["w_end"] = P()

        pool = self._wpool
        if not hasattr(pool, "_stamped"):
            submit = pool.submit

            def stamped_submit(f: Callable[..., Any], /, *a: Any, **k: Any) -> Any:
                fut = submit(f, *a, **k)
                if pending:  # the write() calling now (it submits before it first awaits)
                    m = pending.pop()
                    fut.add_done_callback(lambda _f: m.setdefault("w_done", P()))  # on the writer's thread
                return fut

            pool.submit = stamped_submit  # type: ignore[method-assign]
            pool._stamped = True  # type: ignore[attr-defined]
        pending.append(marks)
        try:
            result = await write(self, body)
        finally:
            pending.clear()
        marks["w_back"] = P()
        if rid is not None and "w_call" not in stamps.get(rid, {}):
            for hop, t in marks.items():
                stamp(rid, hop, t)
        return result

    hub_init = bo._Hub.__init__

    def traced_hub(self: bo._Hub, port: int, *, plain: bool = False) -> None:
        hub_init(self, port, plain=plain)
        hubs.append(self)

    mqtt.Client._sock_send = sock_send  # type: ignore[method-assign]
    mqtt.Client._sock_recv = sock_recv  # type: ignore[method-assign,assignment]
    ms.MqttSession._received = on_loop  # type: ignore[method-assign]
    cm.CommandRouter.handle = traced_handle  # type: ignore[method-assign]
    ms.MqttSession.publish = traced_publish  # type: ignore[method-assign]
    db.Database.write = traced_write  # type: ignore[method-assign]
    bo._Hub.__init__ = traced_hub  # type: ignore[method-assign]


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")


def where(quick: bool = True, plain_hub: bool = False) -> dict[str, float]:
    """Run the orders bench with the hops stamped; print and return the figures."""
    stamps: dict[str, dict[str, float]] = {}
    hubs: list[bo._Hub] = []
    _install(stamps, hubs)
    out: dict[str, float] = dict(bo.bench_orders(quick, plain_hub=plain_hub))
    for rid, t in hubs[0].sent.items():
        stamps.setdefault(rid, {})["sent"] = t
        if rid in hubs[0].got:
            stamps[rid]["got"] = hubs[0].got[rid][0]
    print(orjson.dumps(out).decode())
    for a, b, label in HOPS:
        xs = [(d[b] - d[a]) * 1000 for d in stamps.values() if a in d and b in d]
        figures: Mapping[str, float] = {"p50": _pct(xs, 0.5), "p90": _pct(xs, 0.9), "p99": _pct(xs, 0.99),
                                        "max": max(xs, default=float("nan"))}
        for k, v in figures.items():
            out[f"where_{a}_{b}_{k}_ms"] = round(v, 3)
        print(f"{label:58s} p50 {figures['p50']:6.2f}  p90 {figures['p90']:6.2f}  p99 {figures['p99']:6.2f}  "
              f"max {figures['max']:6.2f} ms  ({len(xs)})")
    print(json.dumps(out))
    return out
