"""Tablet sign-in through the real gateway (edge/api/pairing.py): an admin opens a pairing, a tablet redeems its
code once for a staff token, the admin lists and revokes it; paired tokens survive a restart and are stored
hashed; wrong and expired codes are refused and guessing is bounded per client."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

from edge.api.pairing import ALPHABET, CODE_LENGTH, MAX_FAILURES
from edge.brokers import Mosquitto
from tests.api.conftest import Running, manifest_for_tests, serve, wait_for


async def pair(run: Running, **body: Any) -> dict[str, Any]:
    """Open a pairing as the admin."""
    r = await run.client.post("/api/v1/pairings", json={"name": "tablet-front", **body}, headers=run.headers("admin"))
    assert r.status_code == 200, r.text
    return dict(r.json())


async def redeem(run: Running, code: str) -> Any:
    """Redeem a code without a token."""
    return await run.client.post("/api/v1/pairings/redeem", json={"code": code})


def bearer(token: str) -> dict[str, str]:
    """Authorization header of a token."""
    return {"Authorization": f"Bearer {token}"}


async def test_only_an_admin_opens_a_pairing(running: Running) -> None:
    for role, status in (("staff", 403), ("hq", 403), ("shopper-app", 403), ("admin", 200)):
        r = await running.client.post("/api/v1/pairings", json={"name": "t"}, headers=running.headers(role))
        assert r.status_code == status, (role, r.text)
    r = await running.client.post("/api/v1/pairings", json={"name": "t"})
    assert r.status_code == 401
    # auth before the body: a staff token with a body that is not JSON is 403, not 422
    r = await running.client.post("/api/v1/pairings", content=b"{", headers=running.headers("staff"))
    assert r.status_code == 403
    # a pairing never mints an admin token
    r = await running.client.post("/api/v1/pairings", json={"name": "t", "roles": ["admin"]},
                                  headers=running.headers("admin"))
    assert r.status_code == 422
    for path in ("/api/v1/tokens",):
        assert (await running.client.get(path, headers=running.headers("staff"))).status_code == 403


async def test_pair_redeem_once_use_list_revoke(running: Running) -> None:
    p = await pair(running)
    code = p["code"]
    assert len(code) == CODE_LENGTH and set(code) <= set(ALPHABET)
    assert p["url"].endswith(f"/#pair={code}") and p["url"].startswith(running.base)
    assert p["roles"] == ["staff"]
    r = await redeem(running, code.lower()[:4] + "-" + code.lower()[4:])  # typed: lower case, a dash
    assert r.status_code == 200, r.text
    tok = r.json()
    assert tok["name"] == "tablet-front" and tok["roles"] == ["staff"]
    # single use
    again = await redeem(running, code)
    assert again.status_code == 400 and again.json()["error"]["code"] == "invalid_code"
    # the token works with the staff role, not beyond it
    h = bearer(tok["token"])
    assert (await running.client.get("/api/v1/stock", headers=h)).status_code == 200
    assert (await running.client.get("/api/v1/tokens", headers=h)).status_code == 403
    me = (await running.client.get("/api/v1/whoami", headers=h)).json()
    assert me == {"name": "tablet-front", "roles": ["staff"], "expires": tok["expires"]}
    # listed with name, roles, expiry; the manifest's tokens too, not revocable
    items = (await running.client.get("/api/v1/tokens", headers=running.headers("admin"))).json()["items"]
    mine = [i for i in items if i["id"] == tok["id"]]
    assert len(mine) == 1 and mine[0]["state"] == "active" and mine[0]["revocable"] is True
    assert mine[0]["expires"] == tok["expires"] and mine[0]["created_by"] == "admin"
    assert datetime.fromisoformat(tok["expires"]) > running.gw.clock.now()
    assert {i["name"] for i in items if i["source"] == "manifest"} == {"staff", "hq", "shopper-app", "admin"}
    assert not any(i["revocable"] for i in items if i["source"] == "manifest")
    # revoked: refused at once
    r = await running.client.delete(f"/api/v1/tokens/{tok['id']}", headers=running.headers("staff"))
    assert r.status_code == 403
    r = await running.client.delete(f"/api/v1/tokens/{tok['id']}", headers=running.headers("admin"))
    assert r.status_code == 200 and r.json()["state"] == "revoked"
    r = await running.client.get("/api/v1/stock", headers=h)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert (await running.client.delete("/api/v1/tokens/nope", headers=running.headers("admin"))).status_code == 404
    metrics = (await running.client.get("/metrics")).text
    assert "edge_api_pairings_redeemed_total 1" in metrics


async def test_token_in_the_event_stream_and_revocation_ends_it(running: Running) -> None:
    """A paired token opens the event stream; revoking it ends the open stream (not only the next request)."""
    tok = (await redeem(running, (await pair(running))["code"])).json()
    async with running.client.stream("GET", "/api/v1/events", params={"access_token": tok["token"]}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = r.aiter_lines()
        assert await anext(lines) == "retry: 3000"
        gone = await running.client.delete(f"/api/v1/tokens/{tok['id']}", headers=running.headers("admin"))
        assert gone.status_code == 200
        seen: list[str] = []
        async with asyncio.timeout(30):
            async for line in lines:  # the stream ends (the loop ends) after the unauthorized message
                seen.append(line)
        assert "event: unauthorized" in seen, seen
    r = await running.client.get("/api/v1/events", params={"access_token": tok["token"]})
    assert r.status_code == 401


async def test_expired_and_wrong_codes_are_refused(running: Running) -> None:
    p = await pair(running, ttl_s=5)
    await wait_for(lambda: running.gw.clock.now() >= datetime.fromisoformat(p["expires"]), timeout=20,
                   what="the pairing's expiry")
    r = await redeem(running, p["code"])
    assert r.status_code == 410 and r.json()["error"]["code"] == "code_expired"
    wrong = "".join(c for c in ALPHABET[:CODE_LENGTH])
    r = await redeem(running, wrong)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_code"
    assert (await running.client.post("/api/v1/pairings/redeem", json={"code": ""})).status_code == 422


async def test_guessing_is_bounded_per_client(running: Running) -> None:
    good = (await pair(running))["code"]
    for i in range(MAX_FAILURES):
        guess = ALPHABET[i] * CODE_LENGTH
        assert guess != good
        assert (await redeem(running, guess)).status_code == 400
    # the next attempt is refused even with the right code, and says when to try again
    r = await redeem(running, good)
    assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_attempts"
    assert int(r.headers["Retry-After"]) > 0
    assert 'edge_api_pairings_refused_total{reason="throttled"} 1' in (await running.client.get("/metrics")).text


async def test_paired_tokens_survive_a_restart_and_are_stored_hashed(mosquitto: Mosquitto, tmp_path: Path) -> None:
    m = manifest_for_tests(tmp_path)
    async with serve(mosquitto, tmp_path, m) as run:
        kept = (await redeem(run, (await pair(run, name="tablet-kept"))["code"])).json()
        gone = (await redeem(run, (await pair(run, name="tablet-gone"))["code"])).json()
        r = await run.client.delete(f"/api/v1/tokens/{gone['id']}", headers=run.headers("admin"))
        assert r.status_code == 200
    db = tmp_path / "var" / "edge.db"
    with sqlite3.connect(db) as c:
        rows = {r[0]: r[1:] for r in c.execute("SELECT name, token_hash, revoked FROM api_tokens")}
        dump = "\n".join(c.iterdump())
    assert rows["tablet-kept"] == (hashlib.sha256(kept["token"].encode()).hexdigest(), None)
    assert rows["tablet-gone"][1] is not None
    assert kept["token"] not in dump and gone["token"] not in dump
    async with serve(mosquitto, tmp_path, m) as run:
        assert (await run.client.get("/api/v1/stock", headers=bearer(kept["token"]))).status_code == 200
        assert (await run.client.get("/api/v1/stock", headers=bearer(gone["token"]))).status_code == 401
        items = (await run.client.get("/api/v1/tokens", headers=run.headers("admin"))).json()["items"]
        assert {i["name"]: i["state"] for i in items if i["source"] == "pairing"} == {
            "tablet-kept": "active", "tablet-gone": "revoked"}
