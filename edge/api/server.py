"""Run the API with uvicorn as a task in the gateway's own event loop (no threads, no signal handlers)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator
from typing import Any

import uvicorn

from edge.api.app import create_app
from edge.config import TokenConfig
from edge.runtime import GatewayView


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

    def __init__(self, server: _Server, task: asyncio.Task[None], sock: socket.socket, app: Any) -> None:
        self._server = server
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
    app = create_app(gw, tokens)
    sock = _bind(listen)
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,
        limit_concurrency=256,
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
    return ApiServer(server, task, sock, app)
