"""The API against slow and hostile clients, on the real gateway's uvicorn over 127.0.0.1 TCP (edge/api/server.py,
edge/api/app.py): idle connections that never finish their headers, a stalled body, bodies over the limit
(chunked too), authentication before the body is parsed, security headers, no CDN, and the demo token kept
to the demo (`edge-gateway run` and `edge-gateway demo` as processes)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from edge.brokers import Mosquitto, free_port
from edge.gateway import Gateway
from tests.api.conftest import TOKENS, Running, manifest_for_tests, wait_for

REPO = Path(__file__).resolve().parents[2]
IDLE = 300


@contextlib.contextmanager
def idle_connections(port: int, n: int, partial: bytes = b"GET /api/v1/stock HTTP/1.1\r\nHost: x\r\n") -> Iterator[
        list[socket.socket]]:
    """`n` TCP connections to 127.0.0.1:port that send the start of a request and never finish its headers."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(partial)
            socks.append(s)
        yield socks
    finally:
        for s in socks:
            s.close()


def closed_by_server(s: socket.socket) -> bool:
    """Has the server closed this connection (EOF or reset), without blocking?"""
    s.setblocking(False)
    try:
        return s.recv(65536) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


@pytest.fixture
async def slow_api(mosquitto: Mosquitto, tmp_path: Path) -> AsyncIterator[Running]:
    """A gateway whose header timeout is long (60 s): what the tests see is not the timeout at work."""
    m = manifest_for_tests(tmp_path)
    api = m.api.model_copy(update={"header_timeout_s": 60.0, "body_timeout_s": 1.0})
    m = m.model_copy(update={"api": api})
    async with Gateway(m, hub_url=mosquitto.url, data_dir=tmp_path / "var", tick_interval=0.1) as gw:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.api.port}", timeout=30) as client:
            yield Running(gw, str(client.base_url), client)
        await gw.rules.stop()


async def test_idle_connections_do_not_starve_a_normal_request(slow_api: Running) -> None:
    api = slow_api.gw.api
    guard = getattr(api, "guard", None)

    def accepted() -> int:  # (also without a guard, so that this test shows the 503s of the code before it)
        if guard is None:
            return len(api._server.server_state.connections)
        return int(guard.counts["evicted"] + guard.open)

    with idle_connections(api.port, IDLE) as socks:
        await wait_for(lambda: accepted() >= IDLE, 30, "all idle connections accepted")
        started = time.monotonic()
        ok = await slow_api.client.get("/api/v1/stock", headers=slow_api.headers("staff"))
        refused = await slow_api.client.get("/api/v1/stock")
        took = time.monotonic() - started
        assert (ok.status_code, refused.status_code) == (200, 401), (ok.text, refused.text)
        assert guard is not None
        # bounded: the client address keeps at most max_connections_per_client; the oldest idle ones were closed
        cap = slow_api.gw.manifest.api.max_connections_per_client
        assert guard.open <= cap
        await asyncio.to_thread(wait_for_sync, lambda: sum(closed_by_server(s) for s in socks) >= IDLE - cap)
        metrics = (await slow_api.client.get("/metrics")).text
        assert re.search(r'edge_api_connections_closed_total\{reason="evicted"\} \d+', metrics)
    print(f"\n{IDLE} idle connections: two requests answered in {took * 1000:.0f} ms; "
          f"{guard.counts['evicted']} idle connections closed, {guard.open} open")


def wait_for_sync(pred: object, timeout: float = 20.0) -> None:
    """Poll `pred()` from a thread."""
    deadline = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.05)


async def test_header_timeout_closes_a_connection_that_never_finishes(mosquitto: Mosquitto, tmp_path: Path) -> None:
    m = manifest_for_tests(tmp_path)
    m = m.model_copy(update={"api": m.api.model_copy(update={"header_timeout_s": 0.5})})
    async with Gateway(m, hub_url=mosquitto.url, data_dir=tmp_path / "var", tick_interval=0.1) as gw:
        with idle_connections(gw.api.port, 3) as socks:
            # a slowloris trickling one header byte at a time does not extend its deadline either
            for _ in range(20):
                with contextlib.suppress(OSError):
                    socks[0].sendall(b"X")
                if closed_by_server(socks[0]):
                    break
                await asyncio.sleep(0.2)
            await asyncio.to_thread(wait_for_sync, lambda: all(closed_by_server(s) for s in socks), 20)
        assert gw.api.guard.counts["header_timeouts"] >= 3
        await gw.rules.stop()


async def test_per_client_cap_with_every_connection_busy(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """Two live event streams fill a cap of 2: the client's next connection is answered 503 busy, not queued."""
    m = manifest_for_tests(tmp_path)
    m = m.model_copy(update={"api": m.api.model_copy(update={"max_connections_per_client": 2})})
    async with Gateway(m, hub_url=mosquitto.url, data_dir=tmp_path / "var", tick_interval=0.1) as gw:
        port = gw.api.port
        request = (f"GET /api/v1/events?access_token={TOKENS['staff']} HTTP/1.1\r\nHost: x\r\n\r\n").encode()
        streams = []
        try:
            for _ in range(2):
                s = socket.create_connection(("127.0.0.1", port), timeout=20)
                s.sendall(request)
                assert (await asyncio.to_thread(s.recv, 65536)).startswith(b"HTTP/1.1 200")  # streaming now
                streams.append(s)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=20) as c:
                busy = await c.get("/api/v1/stock", headers={"Authorization": f"Bearer {TOKENS['staff']}"})
                assert busy.status_code == 503, busy.text
                assert (busy.json()["error"]["code"], busy.headers["retry-after"]) == ("busy", "1")
                streams.pop().close()
                await wait_for(lambda: gw.api.guard.open < 2, 10, "the closed stream forgotten")
                ok = await c.get("/api/v1/stock", headers={"Authorization": f"Bearer {TOKENS['staff']}"})
                assert ok.status_code == 200
            assert gw.api.guard.counts["refused"] == 1
        finally:
            for s in streams:
                s.close()
        await gw.rules.stop()


async def test_stalled_body_gets_408(slow_api: Running) -> None:
    s = socket.create_connection(("127.0.0.1", slow_api.gw.api.port), timeout=20)
    try:
        s.sendall(b"POST /api/v1/sightings HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                  TOKENS["shopper-app"].encode() + b"\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100\r\n\r\n{\"shopper\":")
        reply = await asyncio.to_thread(s.recv, 65536)
        assert reply.startswith(b"HTTP/1.1 408"), reply
        assert b"connection: close" in reply.lower()
    finally:
        s.close()


def _chunked_upload(port: int, path: str, headers: bytes, total: int) -> tuple[bytes, int]:
    """Send a chunked body of up to `total` bytes in 64 KiB chunks until the server answers; (answer, sent)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    try:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n".encode() + headers + b"\r\n")
        chunk = b"x" * 65536
        sent = 0
        s.setblocking(False)
        while sent < total:
            try:
                data = s.recv(65536)
                if data:
                    return data, sent
            except BlockingIOError:
                pass
            try:
                s.setblocking(True)
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
            except OSError:
                break
            finally:
                s.setblocking(False)
        s.setblocking(True)
        return s.recv(65536), sent
    finally:
        s.close()


@pytest.mark.parametrize("role", ["shopper-app", None])
async def test_chunked_body_over_the_limit_is_413_or_401(running: Running, role: str | None) -> None:
    auth = f"Authorization: Bearer {TOKENS[role]}\r\n".encode() if role else b""
    answer, sent = await asyncio.to_thread(_chunked_upload, running.gw.api.port, "/api/v1/sightings",
                                           auth + b"Content-Type: application/json\r\n", 10 * 1024 * 1024)
    want = b"HTTP/1.1 413" if role else b"HTTP/1.1 401"
    assert answer.startswith(want), answer[:200]
    assert sent < 10 * 1024 * 1024  # refused long before the 10 MB were sent


@pytest.mark.parametrize(
    ("path", "role", "status"),
    [
        ("/api/v1/alerts/x/ack", None, 401),
        ("/api/v1/alerts/x/ack", "bogus", 401),
        ("/api/v1/alerts/x/ack", "hq", 403),  # a token without the role: 403 before the body is looked at
        ("/api/v1/alerts/x/ack", "staff", 422),
        ("/api/v1/rules/reload", None, 401),
        ("/api/v1/rules/reload", "staff", 403),
        ("/api/v1/sightings", None, 401),
        ("/api/v1/sightings", "shopper-app", 422),
    ],
)
async def test_authentication_before_body_parsing(running: Running, path: str, role: str | None, status: int) -> None:
    headers = {"Content-Type": "application/json"}
    if role == "bogus":
        headers["Authorization"] = "Bearer not-a-token-at-all"
    elif role is not None:
        headers.update(running.headers(role))
    r = await running.client.post(path, headers=headers, content=b"{not json")
    assert r.status_code == status, r.text
    big = await running.client.post(path, headers=headers, content=b"x" * 100_000)
    assert big.status_code == (413 if status == 422 else status), big.text


@pytest.mark.parametrize("path", ["/", "/static/app.js", "/api/v1/stock", "/openapi.json", "/healthz", "/metrics",
                                  "/nope"])
async def test_security_headers(running: Running, path: str) -> None:
    r = await running.client.get(path)
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"


async def test_no_cdn(running: Running) -> None:
    assert (await running.client.get("/openapi.json")).status_code == 200
    for path in ("/docs", "/redoc"):
        assert (await running.client.get(path)).status_code == 404
    for page in ("/", "/static/app.js", "/static/style.css"):
        text = (await running.client.get(page)).text
        assert not re.search(r"(src|href)=[\"']?(https?:)?//|https?://|@import|url\(", text), page


# ---- the demo token stays in the demo ----


def _manifest_file(tmp: Path, port: int, hub: str) -> Path:
    raw = yaml.safe_load((REPO / "firmware_sim/demo_manifest.yaml").read_text())
    raw["api"] = {"listen": f"127.0.0.1:{port}", "tokens": [{"token": TOKENS["staff"], "roles": ["staff"]}]}
    raw["hub"] = {**raw.get("hub", {}), "url": hub}
    raw["storage"] = {"data_dir": str(tmp / "var")}
    raw["devices"] = []
    path = tmp / "store.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _get(port: int, token: str) -> int:
    return httpx.get(f"http://127.0.0.1:{port}/api/v1/stock", headers={"Authorization": f"Bearer {token}"},
                     timeout=10).status_code


@pytest.mark.timeout(120)
def test_env_token_refused_by_run(tmp_path: Path, mosquitto: Mosquitto) -> None:
    port = free_port()
    env = {**os.environ, "EDGE_API_TOKEN": "env-token-abcdefghijkl"}
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config",
                                 str(_manifest_file(tmp_path, port, mosquitto.url))],
                                stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        try:
            wait_for_sync(lambda: _up(port, proc, log), 60)
            assert _get(port, TOKENS["staff"]) == 200
            assert _get(port, "env-token-abcdefghijkl") == 401
        finally:
            proc.terminate()
            proc.wait(30)
    assert "EDGE_API_TOKEN is set but ignored" in log.read_text()


def _up(port: int, proc: subprocess.Popen[bytes], log: Path) -> bool:
    assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
    try:
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
    except httpx.TransportError:
        return False
    return True


@pytest.mark.timeout(120)
def test_env_token_grants_every_role_in_the_demo(tmp_path: Path) -> None:
    env = {**os.environ, "EDGE_API_TOKEN": "env-token-abcdefghijkl"}
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "edge", "demo", "--api", "127.0.0.1:0", "--duration", "60",
                                 "--data-dir", str(tmp_path / "var"), "--quiet"],
                                stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        try:
            wait_for_sync(lambda: proc.poll() is None and "demo: dashboard" in log.read_text(errors="replace"), 60)
            port = int(re.findall(r"dashboard http://127\.0\.0\.1:(\d+)/", log.read_text())[0])
            h = {"Authorization": "Bearer env-token-abcdefghijkl"}
            base = f"http://127.0.0.1:{port}"
            assert httpx.get(f"{base}/api/v1/stock", headers=h, timeout=10).status_code == 200
            assert httpx.post(f"{base}/api/v1/rules/reload", headers=h, timeout=10).status_code == 200
            r = httpx.post(f"{base}/api/v1/sightings", headers=h, timeout=10,
                           json={"shopper": "t", "consent": False, "zone": "aisle-1"})
            assert r.status_code == 200, r.text
        finally:
            proc.terminate()
            proc.wait(60)
    assert "EDGE_API_TOKEN is set but ignored" not in log.read_text()
