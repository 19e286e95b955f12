"""Where the time goes inside our gateway on the peers job (`python -m bench.peers.where`).

`python -m bench.peers.trace run --config FILE` is `edge-gateway run` with four product functions wrapped
before anything starts, each appending one line per observation to `$EDGE_TRACE_FILE`:
`SUBMIT` (lane count event handed to the outbox, ms after the reading that decided it was stamped),
`COMMIT` (the same event committed and announced to the uplink), `PUB` (the same event handed to paho), and
`WRITE` (one `Database.write`, ms from call to result: queueing on the writer thread plus the transaction),
split into `WQUEUE` (call -> the transaction's body starts: other writes ahead of it, BEGIN), `WTXN` (the body),
`WCOMMIT` (body done -> the writer thread has the result: COMMIT with its fsync, the GIL taken back) and
`WBACK` (-> the caller runs again on the event loop); `WAHEAD` is the number of writes already in flight.
`STALL` lines: a task beats every millisecond on the daemon's event loop and a watchdog thread samples the
main thread's stack whenever the beat is more than `STALL_MS` late; when the loop runs again it writes the
stall's length and the stack seen most often during it (the callback that held the loop).
Benchmark tooling only: the product never imports it.
"""

from __future__ import annotations

import asyncio
import collections
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TextIO

import orjson

_COUNT_TYPE = "retail.shelf.count.v1"


def _stamp_lag_ms(payload: bytes) -> float | None:
    ev = orjson.loads(payload)
    if ev.get("type") != _COUNT_TYPE:
        return None
    t = datetime.fromisoformat(str(ev["time"]).replace("Z", "+00:00")).timestamp()
    return (time.time() - t) * 1000


def _patch(out: TextIO) -> None:
    import edge.db as db
    import edge.mqtt_session as ms
    import edge.outbox as ob
    import edge.uplink as up

    def line(kind: str, ms_: float) -> None:
        out.write(f"{kind} {ms_:.3f}\n")

    submit = ob.Outbox.submit

    def traced_submit(self: ob.Outbox, events: Sequence[Any], *a: Any, **k: Any) -> Any:
        now = time.time()
        for ev in events:
            if getattr(ev, "TYPE", "") == _COUNT_TYPE:
                line("SUBMIT", (now - ev.time.timestamp()) * 1000)
        return submit(self, events, *a, **k)

    committed = up.Uplink._on_committed

    def traced_committed(self: up.Uplink, rows: list[ob.OutRow]) -> None:
        for r in rows:
            if r.topic.endswith("/events/shelf") and (lag := _stamp_lag_ms(r.payload)) is not None:
                line("COMMIT", lag)
        committed(self, rows)

    publish = ms.MqttSession.publish_cb

    def traced_publish(self: ms.MqttSession, topic: str, payload: bytes, done: Callable[[bool], None]) -> None:
        if topic.endswith("/events/shelf") and (lag := _stamp_lag_ms(payload)) is not None:
            line("PUB", lag)
        publish(self, topic, payload, done)

    write = db.Database.write
    inflight = [0]
    pending: list[dict[str, float]] = []
    last_back: list[float] = []
    steps: list[int] = []  # statements run by the transaction's body (each one a GIL handoff or two)

    async def traced_write(self: db.Database, fn: Callable[[Any], Any]) -> Any:
        # the parts of one write: queued behind other writes (and BEGIN), the transaction's body, COMMIT (the
        # fsync, and the writer thread getting the GIL back), the event loop resuming the writer's caller
        t = time.perf_counter()
        marks: dict[str, float] = {}
        ahead = inflight[0]
        if not ahead and last_back:
            line("WIDLE", (t - last_back[0]) * 1000)  # the writer idle since the previous write came back

        def body(conn: Any) -> Any:
            marks["start"] = time.perf_counter()
            if not steps:
                conn.set_trace_callback(lambda _sql: steps.__setitem__(0, steps[0] + 1))
                steps.append(0)
            steps[0] = 0
            try:
                return fn(conn)
            finally:
                marks["end"] = time.perf_counter()
                marks["steps"] = float(steps[0])

        pool = self._wpool
        if not hasattr(pool, "_traced"):
            submit = pool.submit

            def stamped_submit(f: Callable[..., Any], /, *a: Any, **k: Any) -> Any:
                fut = submit(f, *a, **k)
                if (m := pending.pop() if pending else None) is not None:  # the write() calling now
                    fut.add_done_callback(lambda _f: m.setdefault("done", time.perf_counter()))  # writer thread
                return fut

            pool.submit = stamped_submit  # type: ignore[method-assign]
            pool._traced = True  # type: ignore[attr-defined]
        pending.append(marks)  # write() submits before it first awaits: no other write can take it
        inflight[0] += 1
        try:
            return await write(self, body)
        finally:
            pending.clear()
            inflight[0] -= 1
            back = time.perf_counter()
            last_back[:] = [back]
            line("WRITE", (back - t) * 1000)
            if {"start", "end", "done"} <= marks.keys():
                line("WQUEUE", (marks["start"] - t) * 1000)
                line("WTXN", (marks["end"] - marks["start"]) * 1000)
                line("WCOMMIT", (marks["done"] - marks["end"]) * 1000)
                line("WBACK", (back - marks["done"]) * 1000)
                line("WAHEAD", float(ahead))
                line("WSTEPS", marks["steps"])

    ob.Outbox.submit = traced_submit  # type: ignore[method-assign]
    up.Uplink._on_committed = traced_committed  # type: ignore[method-assign]
    ms.MqttSession.publish_cb = traced_publish  # type: ignore[method-assign]
    db.Database.write = traced_write  # type: ignore[method-assign]


STALL_MS = 4.0


def _stack(frame: Any, depth: int = 4) -> str:
    parts: list[str] = []
    while frame is not None and len(parts) < depth:
        code = frame.f_code
        parts.append(f"{os.path.basename(code.co_filename)}:{frame.f_lineno}:{code.co_name}")
        frame = frame.f_back
    return " < ".join(parts)


def _watch_stalls(out: TextIO) -> None:
    """Beat on the loop; a thread samples the main thread's stack while the beat is late."""
    import edge.cli as cli

    beat = [time.perf_counter()]
    main_id = threading.main_thread().ident

    def watchdog() -> None:
        samples: collections.Counter[str] = collections.Counter()
        started = 0.0
        while True:
            time.sleep(0.001)
            now = time.perf_counter()
            late = (now - beat[0]) * 1000
            if late > STALL_MS:
                if not samples:
                    started = beat[0]
                frame = sys._current_frames().get(main_id or 0)
                samples[_stack(frame) if frame is not None else "?"] += 1
            elif samples:
                stall = (beat[0] - started) * 1000
                out.write(f"STALL {stall:.3f} {samples.most_common(1)[0][0]}\n")
                samples.clear()

    async def beating() -> None:
        while True:
            beat[0] = time.perf_counter()
            await asyncio.sleep(0.001)

    run = cli.run_gateway

    async def traced_run(config: Any) -> int:
        task = asyncio.create_task(beating())
        threading.Thread(target=watchdog, name="stall-watchdog", daemon=True).start()
        try:
            return await run(config)
        finally:
            task.cancel()

    cli.run_gateway = traced_run


def main(argv: list[str]) -> int:
    """Wrap, then run the daemon's command line."""
    from edge.cli import main as edge_main

    # buffered, written out by a thread of its own every 0.2 s: a write per line from the event loop's thread
    # released and took back the GIL each time, and the stall watchdog caught the tracer itself (`line`)
    out = open(os.environ["EDGE_TRACE_FILE"], "a", buffering=1 << 20)  # noqa: SIM115 - open for the process's life

    def flush() -> None:
        while True:
            time.sleep(0.2)
            out.flush()

    threading.Thread(target=flush, name="trace-flush", daemon=True).start()
    _patch(out)
    _watch_stalls(out)
    return edge_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
