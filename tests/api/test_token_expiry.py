"""Expired API tokens and sightings past the retention, against the real gateway on a ManualClock: clear 4xx,
counted on /metrics, nothing changed. Also the manifest's `expires` validation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from edge.brokers import Mosquitto
from edge.clock import ManualClock
from edge.config import TokenConfig
from edge.gateway import Gateway
from tests.api.conftest import UUID, manifest_for_tests

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
TOKENS: dict[str, tuple[str, list[str], str | None]] = {  # name -> (token, roles, expires)
    "forever": ("forever-token-0123456789", ["staff"], None),
    "valid": ("valid-token-0123456789ab", ["staff"], "2026-03-02T10:00:00Z"),
    "expired": ("expired-token-0123456789", ["staff", "admin"], "2026-03-02T08:59:59Z"),
    "offset": ("offset-token-0123456789a", ["staff"], "2026-03-02T10:00:10+01:00"),  # 09:00:10Z
    "app-expired": ("app-expired-token-012345", ["shopper-app"], "2026-03-01T00:00:00Z"),
    "app": ("app-token-0123456789abcd", ["shopper-app"], None),
}


class Api:
    """The running gateway, its manual clock and an HTTP client on its API port."""

    def __init__(self, gw: Gateway, clock: ManualClock, client: httpx.AsyncClient) -> None:
        self.gw = gw
        self.clock = clock
        self.client = client

    async def call(self, method: str, path: str, token: str, **kw: Any) -> httpx.Response:
        """One request with `token` (a name from TOKENS) as the bearer."""
        headers = {"Authorization": f"Bearer {TOKENS[token][0]}"}
        return await self.client.request(method, path, headers=headers, **kw)

    async def metrics(self) -> str:
        """The /metrics text."""
        return (await self.client.get("/metrics")).text


@pytest.fixture
async def api(mosquitto: Mosquitto, tmp_path: Path) -> AsyncIterator[Api]:
    """A gateway on a ManualClock at T0 with tokens that expire at different moments."""
    tokens = [{"token": t, "roles": r, "name": n, **({"expires": e} if e else {})} for n, (t, r, e) in TOKENS.items()]
    api = {"listen": "127.0.0.1:0", "max_body_bytes": 2048, "tokens": tokens}
    offers = manifest_for_tests(tmp_path).model_dump(mode="json", exclude_none=True)["offers"]
    offers.update(retention_s=60, max_clock_skew_s=300)  # a sighting may be inside the skew but past the retention
    m = manifest_for_tests(tmp_path, api=api, offers=offers)
    clock = ManualClock(T0)
    async with Gateway(m, clock=clock, hub_url=mosquitto.url, data_dir=tmp_path / "var") as gw:
        assert gw.api is not None
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.api.port}", timeout=10) as client:
            yield Api(gw, clock, client)
        await gw.rules.stop()


@pytest.mark.parametrize(
    ("token", "advance_s", "status"),
    [
        ("forever", 0, 200),
        ("forever", 10 * 365 * 86400, 200),
        ("valid", 0, 200),
        ("valid", 3599, 200),  # one second before it expires
        ("valid", 3600, 401),  # at the instant it expires
        ("valid", 3601, 401),
        ("expired", 0, 401),
        ("offset", 9, 200),  # +01:00 is honoured: 10:00:10+01:00 is 09:00:10Z
        ("offset", 10, 401),
    ],
)
async def test_token_expiry_on_the_gateway_clock(api: Api, token: str, advance_s: float, status: int) -> None:
    api.clock.advance(advance_s)
    r = await api.call("GET", "/api/v1/stock", token)
    assert r.status_code == status, r.text
    metrics = await api.metrics()
    if status == 200:
        assert "edge_api_auth_refused_total{" not in metrics
        return
    challenge = r.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'error="invalid_token"' in challenge
    assert 'error_description="token expired"' in challenge
    err = r.json()["error"]
    assert err["code"] == "token_expired"
    expires = TokenConfig.model_validate({"token": "x" * 16, "roles": ["staff"], "expires": TOKENS[token][2]}).expires
    assert expires is not None
    assert expires.astimezone(UTC).isoformat().replace("+00:00", "Z") in err["message"]
    assert 'edge_api_auth_refused_total{reason="expired"} 1' in metrics
    assert 'edge_api_requests_total{method="GET",route="/api/v1/stock",status="401"} 1' in metrics


@pytest.mark.parametrize(
    ("method", "path", "token", "body", "params"),
    [
        ("POST", "/api/v1/rules/reload", "expired", {"rules": {"defaults": {"min": 9}}}, None),  # admin role, expired
        ("POST", "/api/v1/alerts/x/ack", "expired", {"by": "Sam"}, None),
        ("POST", "/api/v1/sightings", "app-expired",
         {"shopper": "tok-1", "consent": True, "beacon": {"uuid": UUID, "major": 1, "minor": 2}}, None),
        ("GET", "/api/v1/events", "expired", None, {"access_token": TOKENS["expired"][0]}),  # SSE query token
    ],
)
async def test_expired_token_changes_nothing(
    api: Api, method: str, path: str, token: str, body: dict[str, Any] | None, params: dict[str, str] | None
) -> None:
    rules_before = api.gw.rules.engine.ruleset
    if params is not None:  # the query token of EventSource, no header
        r = await api.client.request(method, path, params=params)
    else:
        r = await api.call(method, path, token, json=body)
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == "token_expired"
    assert api.gw.rules.engine.ruleset is rules_before
    assert api.gw.rules.engine.offer_state.shoppers == {}
    metrics = await api.metrics()
    assert 'edge_api_auth_refused_total{reason="expired"} 1' in metrics
    assert "edge_rules_sightings_total{" not in metrics


@pytest.mark.parametrize(
    ("age_s", "status", "code", "words"),
    [
        (-30, 200, None, None),  # a little ahead of the gateway's clock: within the skew
        (30, 200, None, None),
        (61, 422, "stale_sighting", "older than the retention (60 s)"),  # inside the skew, past the retention
        (299, 422, "stale_sighting", "older than the retention (60 s)"),
        (-301, 422, "stale_sighting", "more than 300 s from now"),
        (3600, 422, "stale_sighting", "older than the retention (60 s)"),
    ],
)
async def test_sighting_past_retention_is_refused_and_counted(
    api: Api, age_s: float, status: int, code: str | None, words: str | None
) -> None:
    api.clock.advance(3600)
    when = (api.clock.now() - timedelta(seconds=age_s)).isoformat().replace("+00:00", "Z")
    body = {"shopper": "tok-1", "consent": True, "beacon": {"uuid": UUID, "major": 1, "minor": 2}, "time": when}
    r = await api.call("POST", "/api/v1/sightings", "app", json=body)
    assert r.status_code == status, r.text
    metrics = await api.metrics()
    if code is None:
        assert "tok-1" in api.gw.rules.engine.offer_state.shoppers
        assert 'edge_rules_sightings_total{reason="ok",result="accepted"} 1' in metrics
        return
    assert words is not None
    assert r.json()["error"]["code"] == code
    assert words in r.json()["error"]["message"]
    assert api.gw.rules.engine.offer_state.shoppers == {}
    assert f'edge_rules_sightings_total{{reason="{code}",result="rejected"}} 1' in metrics
    assert 'edge_api_requests_total{method="POST",route="/api/v1/sightings",status="422"} 1' in metrics


@pytest.mark.parametrize(
    ("expires", "problem"),
    [
        ("2027-01-31T18:00:00", "add Z or an offset"),
        (datetime(2027, 1, 31, 18, 0), "add Z or an offset"),  # what YAML makes of an unquoted naive timestamp
        ("2027-01-31", "add Z or an offset"),
        (datetime(2027, 1, 31).date(), "add Z or an offset"),  # an unquoted YAML date
        ("next tuesday", "not an ISO 8601 date and time"),
        ("2027-01-31T18:00:00Z", None),
        ("2027-01-31T18:00:00+05:30", None),
        (datetime(2027, 1, 31, 18, 0, tzinfo=UTC), None),
        (None, None),
    ],
)
def test_expires_must_be_aware(expires: object, problem: str | None) -> None:
    raw = {"token": "t" * 16, "roles": ["staff"], "expires": expires}
    if problem is None:
        got = TokenConfig.model_validate(raw).expires
        assert got is None or got.utcoffset() is not None
        return
    with pytest.raises(ValidationError) as err:
        TokenConfig.model_validate(raw)
    assert problem in str(err.value)
