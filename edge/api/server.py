"""Run the API with uvicorn as a task in the gateway's own event loop (no threads, no signal handlers).

Slow clients cannot starve the others (uvicorn alone answers 503 to everyone once idle connections fill its
`limit_concurrency`, and keeps a connection that never finishes its headers forever). `GuardedH11Protocol`
adds, per connection: a header deadline (`api.header_timeout_s` from the moment the connection opened or its
previous response ended until the request's headers are complete; then it is closed), and per client address
a cap (`api.max_connections_per_client`): a new connection beyond it closes that client's oldest connection
still waiting for a request, or is itself answered 503 and closed when none is waiting. At most `MAX_WAITING`
connections wait for a request at any time (the oldest is closed first). The body deadline
(`api.body_timeout_s`, 408) and the 413 for oversized bodies are in the app (edge/api/app.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import OrderedDict
from collections.abc import Generator
from typing import Any, ClassVar

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from edge.api.app import create_app
from edge.config import TokenConfig
from edge.ratelimit import LogLimiter
from edge.runtime import GatewayView
from edge.state import CountCorrections

log = logging.getLogger(__name__)

MAX_WAITING = 128  # connections waiting for a request (idle keep-alive or headers still coming), all clients
LIMIT_CONCURRENCY = 512  # uvicorn answers 503 beyond this many connections or running requests
MAX_HEADER_BYTES = 16 * 1024  # h11_max_incomplete_event_size: request line + headers
KEEP_ALIVE_S = 5
_BUSY_BODY = b'{"error":{"code":"busy","message":"too many connections from this address: retry later"}}'
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
        b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY))


class ConnectionGuard:
    """Bookkeeping shared by every connection of one API server: who is connected, who waits for a request."""

    def __init__(self, header_timeout: float, per_client: int, max_waiting: int = MAX_WAITING) -> None:
        self.header_timeout = header_timeout
        self.per_client = per_client
        self.max_waiting = max_waiting
        self.clients: dict[str, int] = {}
        self.waiting: OrderedDict[GuardedH11Protocol, None] = OrderedDict()
        self._members: set[GuardedH11Protocol] = set()
        self.counts = {"refused": 0, "evicted": 0, "header_timeouts": 0}
        self._logs = LogLimiter(60.0)

    @property
    def open(self) -> int:
        """Connections currently admitted."""
        return len(self._members)

    def admit(self, conn: GuardedH11Protocol) -> bool:
        """Take in a new connection, making room by closing idle ones; False: refuse it."""
        host = conn.host
        if self.clients.get(host, 0) >= self.per_client:
            victim = next((c for c in self.waiting if c.host == host), None)
            if victim is None:
                self.counts["refused"] += 1
                self._logs.log(log, logging.WARNING, f"cap:{host}", "API client %s holds %d busy connections: "
                               "refusing more", host, self.per_client)
                return False
            self._evict(victim)
        while len(self.waiting) >= self.max_waiting:
            self._evict(next(iter(self.waiting)))
        self._members.add(conn)
        self.clients[host] = self.clients.get(host, 0) + 1
        return True

    def _evict(self, conn: GuardedH11Protocol) -> None:
        self.counts["evicted"] += 1
        self._logs.log(log, logging.WARNING, "evict", "API: closing idle connections of %s (too many open)",
                       conn.host)
        self.forget(conn)
        conn.transport.close()

    def forget(self, conn: GuardedH11Protocol) -> None:
        """A connection is gone (idempotent)."""
        self.waiting.pop(conn, None)
        if conn in self._members:
            self._members.discard(conn)
            n = self.clients.get(conn.host, 1) - 1
            if n > 0:
                self.clients[conn.host] = n
            else:
                self.clients.pop(conn.host, None)

    def metrics_text(self) -> str:
        """Prometheus text: open connections and what the guard did."""
        lines = ["# TYPE edge_api_connections gauge", f"edge_api_connections {self.open}",
                 "# TYPE edge_api_connections_waiting gauge", f"edge_api_connections_waiting {len(self.waiting)}",
                 "# TYPE edge_api_connections_closed_total counter"]
        lines += [f'edge_api_connections_closed_total{{reason="{k}"}} {v}' for k, v in sorted(self.counts.items())]
        return "\n".join(lines) + "\n"


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header deadline and the per-client cap of `ConnectionGuard`."""

    guard: ClassVar[ConnectionGuard]
    host: str
    _deadline: asyncio.TimerHandle | None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Admit (or refuse) the connection and start its header deadline."""
        super().connection_made(transport)
        self.host = self.client[0] if self.client else "?"
        self._deadline = None
        if not self.guard.admit(self):
            transport.write(BUSY)
            transport.close()
            return
        self._wait()

    def _wait(self) -> None:
        self.guard.waiting[self] = None
        self.guard.waiting.move_to_end(self)
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(self.guard.header_timeout, self._header_timeout)

    def _busy(self) -> None:
        self.guard.waiting.pop(self, None)
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _header_timeout(self) -> None:
        self._deadline = None
        if self in self.guard.waiting and not self.transport.is_closing():
            self.guard.counts["header_timeouts"] += 1
            self.guard.forget(self)
            self.transport.close()

    def handle_events(self) -> None:
        """uvicorn's event loop; a new request cycle means the headers are complete."""
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:
            self._busy()

    def on_response_complete(self) -> None:
        """The next request's headers are due within the header timeout (pipelined ones are handled at once)."""
        if not self.transport.is_closing():
            self._wait()
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection."""
        self._busy()
        self.guard.forget(self)
        super().connection_lost(exc)


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the gateway owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """Leave the process's signal handlers alone."""
        yield


def _bind(listen: str) -> socket.socket:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP: asyncio only sets TCP_NODELAY on accepted sockets whose proto says TCP, and
    # without it Nagle + delayed ACK add ~40 ms to every response on loopback
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, int(port)))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class ApiServer:
    """A running API: `.port` is the actual port (listen may ask for port 0); `await stop()` ends it."""

    def __init__(self, server: _Server, task: asyncio.Task[None], sock: socket.socket, app: Any,
                 guard: ConnectionGuard) -> None:
        self._server = server
        self.guard = guard
        self._task = task
        self._sock = sock
        self.app = app
        self.port: int = int(sock.getsockname()[1])

    async def stop(self) -> None:
        """Close live streams, stop accepting, and wait (bounded) for the server task."""
        self.app.state.stop.set()
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), 5)
        except (TimeoutError, asyncio.CancelledError):
            self._server.force_exit = True
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        finally:
            self._sock.close()


async def start_api(gw: GatewayView, listen: str, tokens: list[TokenConfig]) -> ApiServer:
    """Bind `listen` (HOST:PORT, port 0 = any free one) and serve the API until `stop()`."""
    api = gw.manifest.api
    guard = ConnectionGuard(api.header_timeout_s, api.max_connections_per_client)
    protocol = type("ApiProtocol", (GuardedH11Protocol,), {"guard": guard})
    gw.add_reactor(CountCorrections())  # staff count corrections (POST /stock/{shelf}/{sku}/count) -> manual counts
    app = create_app(gw, tokens, body_timeout=api.body_timeout_s, extra_metrics=guard.metrics_text)
    sock = _bind(listen)
    config = uvicorn.Config(
        app,
        http=protocol,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,
        timeout_keep_alive=KEEP_ALIVE_S,
        limit_concurrency=LIMIT_CONCURRENCY,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        server_header=False,
    )
    server = _Server(config)
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]), name="api")
    while not server.started:
        if task.done():
            sock.close()
            task.result()  # raises what went wrong
            raise RuntimeError(f"the API on {listen} stopped while starting")
        await asyncio.sleep(0.01)
    return ApiServer(server, task, sock, app, guard)
