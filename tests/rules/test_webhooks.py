"""Alert webhooks against a real HTTP receiver on loopback: signature, retries with backoff, durability."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from edge.brokers import Mosquitto, free_port
from edge.gateway import Gateway
from rules.config import WebhookConfig
from rules.webhooks import next_delay, sign, verify
from tests.api.conftest import Running, manifest_for_tests, wait_for

SECRET = "webhook-secret-0123456789"


class Receiver:
    """Records POSTs; answers with the next status from `script` (then 200)."""

    def __init__(self, port: int = 0, script: list[int] | None = None) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.script = list(script or [])
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = outer.script.pop(0) if outer.script else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(script=[500])
    yield r
    r.close()


def test_signature_roundtrip_and_backoff() -> None:
    body = b'{"a":1}'
    sig = sign(SECRET, "1700000000", body)
    assert sig.startswith("sha256=")
    assert len(sig) == 7 + 64
    assert verify(SECRET, "1700000000", body, sig)
    assert not verify(SECRET, "1700000001", body, sig)
    assert not verify("other-secret-0123456", "1700000000", body, sig)
    hook = WebhookConfig(id="h", url="http://127.0.0.1:1/", secret=SECRET, backoff_s=2, backoff_max_s=10)
    assert [next_delay(hook, n) for n in (1, 2, 3, 4, 5)] == [2, 4, 8, 10, 10]


def hooks(port: int) -> list[dict[str, Any]]:
    return [
        {
            "id": "ops",
            "url": f"http://127.0.0.1:{port}/hook",
            "secret": SECRET,
            "backoff_s": 0.2,
            "backoff_max_s": 0.5,
            "events": ["opened", "acknowledged"],
        }
    ]


async def test_webhook_signed_and_retried(mosquitto: Mosquitto, tmp_path: Path, receiver: Receiver) -> None:
    m = manifest_for_tests(tmp_path, webhooks=hooks(receiver.port))
    async with Gateway(m, hub_url=mosquitto.url, data_dir=tmp_path / "var", tick_interval=0.1) as gw:
        run = Running(gw, "", None)  # type: ignore[arg-type]
        run.set_stock("shelf-a1", "cola-330", 1)
        await wait_for(lambda: len(receiver.requests) >= 2, 10, "a retried delivery")
        (h1, b1), (h2, b2) = receiver.requests[:2]
        assert b1 == b2  # the same body is retried
        payload = orjson.loads(b2)
        assert payload["type"] == "retail.alert.opened.v1"
        assert payload["alert"]["sku"] == "cola-330"
        assert verify(SECRET, h2["x-edge-timestamp"], b2, h2["x-edge-signature"])
        assert h1["x-edge-delivery"] == h2["x-edge-delivery"]

        async def delivered() -> bool:
            rows = await gw.query("SELECT state, attempts, last_status FROM webhook_deliveries")
            return any(r["state"] == "delivered" for r in rows)

        await wait_for(delivered, 5, "delivered row")
        rows = await gw.query("SELECT state, attempts, last_status FROM webhook_deliveries")
        assert [(r["state"], r["attempts"], r["last_status"]) for r in rows] == [("delivered", 2, 200)]
        assert "edge_rules_webhook_delivered_total 1" in gw.rules.metrics_text()
        await gw.rules.stop()


async def test_webhook_delivery_survives_restart(mosquitto: Mosquitto, tmp_path: Path) -> None:
    port = free_port()  # nothing listens yet: every attempt fails
    m = manifest_for_tests(tmp_path, webhooks=hooks(port))
    async with Gateway(m, hub_url=mosquitto.url, data_dir=tmp_path / "var", tick_interval=0.1) as gw:
        Running(gw, "", None).set_stock("shelf-a1", "cola-330", 1)  # type: ignore[arg-type]

        async def failing() -> bool:
            rows = await gw.query("SELECT attempts FROM webhook_deliveries WHERE state = 'pending'")
            return bool(rows) and rows[0]["attempts"] >= 1

        await wait_for(failing, 10, "a failed attempt")
        await gw.rules.stop()
    receiver = Receiver(port=port)
    try:
        async with Gateway(m, hub_url=mosquitto.url, data_dir=tmp_path / "var", tick_interval=0.1) as gw:
            await wait_for(lambda: receiver.requests, 10, "delivery after restart")
            assert orjson.loads(receiver.requests[0][1])["transition"] == "opened"
            await gw.rules.stop()
    finally:
        receiver.close()
