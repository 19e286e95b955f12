"""Alert webhooks: each alert transition becomes a JSON POST, signed with HMAC-SHA256, retried with backoff.

A delivery is a `webhook_deliveries` row written in the same commit as the alert event it announces, so
a restart (or kill -9) never loses one; `WebhookWorker` sends due rows and records each attempt.

Receivers verify `X-Edge-Signature: sha256=<hex>` = HMAC-SHA256(secret, f"{X-Edge-Timestamp}." + body)
and reject timestamps far from their clock (replay protection). See docs/api.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from edge.envelope import dumps
from edge.runtime import GatewayView, Upsert
from rules.alerts import Transition
from rules.config import WebhookConfig

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

TABLE = "webhook_deliveries"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value: `sha256=` + hex HMAC-SHA256 over `timestamp.body`."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """Receiver side: constant-time check of a signature header."""
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def delivery_rows(
    t: Transition, webhooks: Sequence[WebhookConfig], store_id: str, new_id: Callable[[], str]
) -> list[Upsert]:
    """One pending delivery row per webhook that wants this transition."""
    ev = t.event
    body = dumps(
        {
            "type": ev.TYPE,
            "transition": ev.TRANSITION,
            "store": store_id,
            "time": ev.time,
            "event": ev.data(),
            "alert": t.alert.row(),
        }
    ).decode()
    return [
        Upsert(
            TABLE,
            {
                "id": new_id(),
                "webhook": w.id,
                "alert_id": t.alert.id,
                "transition": ev.TRANSITION,
                "body": body,
                "state": "pending",
                "attempts": 0,
                "next_at": ev.time.timestamp(),
                "created": ev.time.isoformat(),
                "last_status": None,
                "last_error": None,
            },
        )
        for w in webhooks
        if ev.TRANSITION in w.events
    ]


def next_delay(hook: WebhookConfig, attempts: int) -> float:
    """Backoff before attempt `attempts + 1`: backoff_s doubling per attempt, capped at backoff_max_s."""
    return float(min(hook.backoff_s * 2 ** max(attempts - 1, 0), hook.backoff_max_s))


class WebhookWorker:
    """Sends due deliveries from the table; one attempt per row at a time."""

    def __init__(self, gw: GatewayView, webhooks: Sequence[WebhookConfig], poll_s: float = 0.5) -> None:
        self.gw = gw
        self.hooks = {w.id: w for w in webhooks}
        self.poll_s = poll_s
        self.sent = 0
        self.failed = 0
        self._busy: set[str] = set()
        self._client: httpx.AsyncClient | None = None

    async def run(self) -> None:
        """Poll for due deliveries until cancelled."""
        import httpx  # only a store with webhooks loads the HTTP client (and, where installed, its CLI's rich)

        self._client = httpx.AsyncClient(follow_redirects=False)
        try:
            while True:
                with contextlib.suppress(Exception):  # a closed database at shutdown ends nothing here
                    await self.run_once()
                await asyncio.sleep(self.poll_s)
        finally:
            await self._client.aclose()

    async def run_once(self) -> int:
        """Attempt every due delivery once; returns how many were attempted."""
        now = self.gw.clock.now().timestamp()
        rows = await self.gw.query(
            f"SELECT * FROM {TABLE} WHERE state = 'pending' AND next_at <= ? ORDER BY next_at LIMIT 50",  # noqa: S608
            (now,),
        )
        rows = [r for r in rows if r["id"] not in self._busy]
        for r in rows:
            self._busy.add(r["id"])
        try:
            results = await asyncio.gather(*(self._attempt(r) for r in rows))
            if results:
                await self.gw.emit_committed([], [u for u in results if u is not None])
        finally:
            for r in rows:
                self._busy.discard(r["id"])
        return len(rows)

    async def _attempt(self, row: dict[str, Any]) -> Upsert | None:
        hook = self.hooks.get(str(row["webhook"]))
        attempts = int(row["attempts"]) + 1
        new = dict(row, attempts=attempts)
        if hook is None:
            new.update(state="failed", last_error="webhook no longer configured")
            return Upsert(TABLE, new)
        body = str(row["body"]).encode()
        ts = str(int(self.gw.clock.now().timestamp()))
        headers = {
            "Content-Type": "application/json",
            "X-Edge-Timestamp": ts,
            "X-Edge-Signature": sign(hook.secret, ts, body),
            "X-Edge-Delivery": str(row["id"]),
            "X-Edge-Event": f"retail.alert.{row['transition']}.v1",
            "User-Agent": "smart-store-edge-webhooks/1",
        }
        import httpx

        permanent = False
        try:
            assert self._client is not None
            resp = await self._client.post(hook.url, content=body, headers=headers, timeout=hook.timeout_s)
            new["last_status"] = resp.status_code
            if 200 <= resp.status_code < 300:
                new.update(state="delivered", last_error=None)
                self.sent += 1
                return Upsert(TABLE, new)
            new["last_error"] = f"HTTP {resp.status_code}"
            permanent = 400 <= resp.status_code < 500 and resp.status_code not in (408, 429)
        except httpx.HTTPError as exc:
            new["last_error"] = f"{type(exc).__name__}: {exc}"[:300]
        if permanent or attempts >= hook.max_attempts:
            new["state"] = "failed"
            self.failed += 1
            log.warning(
                "webhook %s: giving up on delivery %s after %d attempt(s): %s",
                hook.id,
                row["id"],
                attempts,
                new["last_error"],
            )
        else:
            new["next_at"] = self.gw.clock.now().timestamp() + next_delay(hook, attempts)
        return Upsert(TABLE, new)
