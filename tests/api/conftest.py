"""A real gateway (private mosquitto as the hub, API on a free loopback port) for the API and dashboard tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from edge.brokers import Mosquitto
from edge.config import Manifest, parse_manifest
from edge.gateway import Gateway
from edge.processing import StockUpdate
from firmware_sim.world import demo_manifest_text

TOKENS = {
    "staff": "staff-token-0123456789",
    "hq": "hq-token-0123456789abc",
    "shopper-app": "shopper-token-0123456789",
    "admin": "admin-token-0123456789",
}
UUID = "e2c56db5-dffb-48d2-b060-d0f5a71096e0"
CMD_KEY = "hq-command-key-0123456789abcdefghij"  # hub.commands.keys[0] (id "hq") of the test manifest


def manifest_for_tests(tmp: Path, **overrides: Any) -> Manifest:
    """The demo store, always open, fast debounce, a beacon and an offer, one token per role."""
    raw = yaml.safe_load(demo_manifest_text())
    raw["store"].update(opening_time="00:00", closing_time="00:00")
    raw["api"] = {
        "listen": "127.0.0.1:0",
        "max_body_bytes": 2048,
        "tokens": [{"token": t, "roles": [r], "name": r} for r, t in TOKENS.items()],
    }
    raw["rules"] = {
        "defaults": {"min": 3, "debounce_s": 0.3, "clear_margin": 2, "cooldown_s": 0, "escalate_after_s": 600},
        "device_fault_grace_s": 5,
    }
    raw["offers"] = {
        "beacons": [{"id": "b1", "zone": "aisle-1", "uuid": UUID, "major": 1, "minor": 2}],
        "offers": [
            {
                "id": "cola-deal",
                "zone": "aisle-1",
                "sku": "cola-330",
                "title": "Cola 2 for 1",
                "min_dwell_s": 0,
                "per_shopper_max": 1000,
                "per_shopper_cooldown_s": 0,
                "global_max_per_hour": 1_000_000,
            }
        ],
    }
    raw["hub"] = {**raw.get("hub", {}), "commands": {"keys": [{"id": "hq", "secret": CMD_KEY}]}}
    raw.update(overrides)
    raw["storage"] = {"data_dir": str(tmp / "var")}
    return parse_manifest(yaml.safe_dump(raw), "test-manifest.yaml")


@dataclass
class Running:
    """A running gateway and how to reach its API."""

    gw: Gateway
    base: str
    client: httpx.AsyncClient

    def set_stock(self, shelf: str, sku: str, count: int, origin: str = "weight") -> None:
        """Claim a count through the gateway's pipeline, as a shelf processor would."""
        now = self.gw.clock.now()
        self.gw.pipeline.route(
            [StockUpdate(shelf=shelf, sku=sku, time=now, origin=origin, source="test-shelf", count=count)], now
        )

    def headers(self, role: str) -> dict[str, str]:
        """Authorization header of a role's token."""
        return {"Authorization": f"Bearer {TOKENS[role]}"}


async def wait_for(pred: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll `pred` (sync or async) until truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = pred()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def iso_now(gw: Gateway) -> str:
    """The gateway's now, RFC 3339."""
    t: datetime = gw.clock.now()
    return t.isoformat()


@asynccontextmanager
async def serve(mosquitto: Mosquitto, tmp: Path, manifest: Manifest) -> AsyncIterator[Running]:
    """The real gateway over `manifest` (data in `tmp`/var, the same on every start) with the rules and the API."""
    async with Gateway(manifest, hub_url=mosquitto.url, data_dir=tmp / "var", tick_interval=0.1) as gw:
        assert gw.api is not None
        base = f"http://127.0.0.1:{gw.api.port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            yield Running(gw, base, client)
        await gw.rules.stop()


@pytest.fixture
async def running(mosquitto: Mosquitto, tmp_path: Path) -> AsyncIterator[Running]:
    """The real gateway with the rules engine and the API."""
    async with serve(mosquitto, tmp_path, manifest_for_tests(tmp_path)) as run:
        yield run
