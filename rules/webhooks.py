"""Alert webhooks: each alert transition becomes a JSON POST, signed with HMAC-SHA256, retried with backoff.

A delivery is a `webhook_deliveries` row written in the same commit as the alert event it announces, so
a restart (or kill -9) never loses one; `WebhookWorker` sends due rows and records each attempt. The same
rows and worker carry the staff chat messages of rules/notify.py: a row's `webhook` column names its
`Target` (a webhook id, or `im:<channel id>`), which builds the request and judges the answer.

Receivers verify `X-Edge-Signature: sha256=<hex>` = HMAC-SHA256(secret, f"{X-Edge-Timestamp}." + body)
and reject timestamps far from their clock (replay protection). See docs/api.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from edge.envelope import dumps
from edge.runtime import GatewayView, Upsert
from rules.alerts import Transition
from rules.config import DeliveryPolicy, WebhookConfig

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


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP POST of a delivery: where, what and with which headers."""

    url: str
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a receiver's answer means: delivered, or why not and whether to try again (and when)."""

    ok: bool
    error: str | None = None
    permanent: bool = False
    retry_after_s: float | None = None


RETRY_AFTER_MAX_S = 3600.0
"""A receiver's Retry-After is honoured up to this (a larger or unreadable one falls back to the backoff)."""


def http_verdict(status: int, headers: Mapping[str, str]) -> Verdict:
    """The status alone: 2xx delivered; 408, 429 and 5xx retried (after Retry-After when given, RFC 9110
    10.2.3, seconds form); any other 4xx is the request's fault and is not retried."""
    if 200 <= status < 300:
        return Verdict(True)
    retry_after: float | None = None
    with contextlib.suppress(ValueError):
        secs = float(headers.get("retry-after", ""))
        if 0 <= secs <= RETRY_AFTER_MAX_S:
            retry_after = secs
    permanent = 400 <= status < 500 and status not in (408, 429)
    return Verdict(False, f"HTTP {status}", permanent, retry_after)


class Target(Protocol):
    """Where deliveries of one `webhook_deliveries.webhook` value go, and how (a webhook, a staff chat channel)."""

    @property
    def policy(self) -> DeliveryPolicy:
        """Retry policy and timeout."""
        ...

    @property
    def rate_per_minute(self) -> int | None:
        """Most attempts per minute (None: no limit)."""
        ...

    def request(self, row: Mapping[str, Any], now: float) -> Request:
        """The POST for a stored row at time `now` (UNIX seconds; signatures are made here)."""
        ...

    def verdict(self, status: int, headers: Mapping[str, str], text: str) -> Verdict:
        """What the receiver's answer means."""
        ...


class SignedWebhook:
    """A `webhooks:` entry: the stored body POSTed as is, signed with the X-Edge-* headers."""

    rate_per_minute: int | None = None

    def __init__(self, hook: WebhookConfig) -> None:
        self.hook = hook

    @property
    def policy(self) -> DeliveryPolicy:
        """The webhook's retry policy."""
        return self.hook

    def request(self, row: Mapping[str, Any], now: float) -> Request:
        """The body as stored, with a signature over the time of this attempt."""
        body = str(row["body"]).encode()
        ts = str(int(now))
        headers = {
            "Content-Type": "application/json",
            "X-Edge-Timestamp": ts,
            "X-Edge-Signature": sign(self.hook.secret, ts, body),
            "X-Edge-Delivery": str(row["id"]),
            "X-Edge-Event": f"retail.alert.{row['transition']}.v1",
            "User-Agent": "smart-store-edge-webhooks/1",
        }
        return Request(self.hook.url, body, headers)

    def verdict(self, status: int, headers: Mapping[str, str], text: str) -> Verdict:
        """By the status alone."""
        return http_verdict(status, headers)


def next_delay(hook: DeliveryPolicy, attempts: int) -> float:
    """Backoff before attempt `attempts + 1`: backoff_s doubling per attempt, capped at backoff_max_s."""
    return float(min(hook.backoff_s * 2 ** max(attempts - 1, 0), hook.backoff_max_s))


class WebhookWorker:
    """Sends due deliveries from the table (webhooks and staff chat channels); one attempt per row at a time.

    A target with a `rate_per_minute` gets at most that many attempts in any 60 s (in this process: a
    restart starts a new window); a row over the limit waits, without using up an attempt."""

    def __init__(
        self,
        gw: GatewayView,
        webhooks: Sequence[WebhookConfig],
        poll_s: float = 0.5,
        targets: Mapping[str, Target] | None = None,
    ) -> None:
        self.gw = gw
        self.targets: dict[str, Target] = {w.id: SignedWebhook(w) for w in webhooks}
        self.targets.update(targets or {})
        self.poll_s = poll_s
        self.sent = 0
        self.failed = 0
        self.sent_by: dict[str, int] = {}
        self.failed_by: dict[str, int] = {}
        self._busy: set[str] = set()
        self._recent: dict[str, deque[float]] = {}
        self._client: httpx.AsyncClient | None = None

    def metrics_text(self) -> str:
        """Prometheus text: delivered / given-up totals, and per staff chat channel (`im:` targets)."""
        lines = [f"edge_rules_webhook_delivered_total {self.sent}", f"edge_rules_webhook_failed_total {self.failed}"]
        for name, counts in (("edge_rules_notify_delivered_total", self.sent_by),
                             ("edge_rules_notify_failed_total", self.failed_by)):
            channels = sorted(k for k in self.targets if k.startswith("im:"))
            if channels:
                lines.append(f"# TYPE {name} counter")
                lines += [f'{name}{{channel="{k[3:]}"}} {counts.get(k, 0)}' for k in channels]
        return "\n".join(lines) + "\n"

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

    def _rate_wait(self, key: str, target: Target, now: float) -> float:
        """Seconds until `target` may send again (0: now, and the attempt is counted)."""
        limit = target.rate_per_minute
        if limit is None:
            return 0.0
        recent = self._recent.setdefault(key, deque())
        while recent and recent[0] <= now - 60.0:
            recent.popleft()
        if len(recent) >= limit:
            return recent[0] + 60.0 - now
        recent.append(now)
        return 0.0

    async def _attempt(self, row: dict[str, Any]) -> Upsert | None:
        key = str(row["webhook"])
        target = self.targets.get(key)
        if target is None:
            return Upsert(TABLE, dict(row, attempts=int(row["attempts"]) + 1, state="failed",
                                      last_error="webhook or channel no longer configured"))
        now = self.gw.clock.now().timestamp()
        wait = self._rate_wait(key, target, now)
        if wait > 0:
            return Upsert(TABLE, dict(row, next_at=now + wait))
        attempts = int(row["attempts"]) + 1
        new = dict(row, attempts=attempts)
        policy = target.policy
        req = target.request(row, now)
        import httpx

        try:
            assert self._client is not None
            resp = await self._client.post(req.url, content=req.body, headers=req.headers, timeout=policy.timeout_s)
            new["last_status"] = resp.status_code
            verdict = target.verdict(resp.status_code, resp.headers, resp.text)
        except httpx.HTTPError as exc:
            verdict = Verdict(False, f"{type(exc).__name__}: {exc}"[:300])
        if verdict.ok:
            new.update(state="delivered", last_error=None)
            self.sent += 1
            self.sent_by[key] = self.sent_by.get(key, 0) + 1
            return Upsert(TABLE, new)
        new["last_error"] = (verdict.error or "failed")[:300]
        if verdict.permanent or attempts >= policy.max_attempts:
            new["state"] = "failed"
            self.failed += 1
            self.failed_by[key] = self.failed_by.get(key, 0) + 1
            log.warning("delivery %s to %s: giving up after %d attempt(s): %s", row["id"], key, attempts,
                        new["last_error"])
        else:
            delay = next_delay(policy, attempts)
            if verdict.retry_after_s is not None:
                delay = max(delay, verdict.retry_after_s)
            new["next_at"] = self.gw.clock.now().timestamp() + delay
        return Upsert(TABLE, new)
