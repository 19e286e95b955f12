"""Tablet sign-in (issue 17 item 6): an admin pairs a device, the device gets a long-lived staff token.

The admin asks for a pairing (`POST /api/v1/pairings`): an 8-character code from an alphabet without look-alike
characters (no 0/O, 1/I/L), single use, valid `ttl_s` seconds (default 300), and the URL `/#pair=<code>`
(in the fragment, so the code never reaches a server log). The tablet opens the URL or types the code on the
sign-in page (`POST /api/v1/pairings/redeem`, no token) and gets a random token (256 bits) that its browser
keeps in localStorage. Each client address has at most `MAX_FAILURES` wrong or expired codes per
`FAILURE_WINDOW_S` (then 429 with Retry-After): with 32^8 codes and at most `MAX_PENDING` open at once,
guessing is hopeless.

Paired tokens are rows of `api_tokens` (edge/schema.py migration 7) written through the outbox's state
writes like every other state row: name, roles (staff and/or hq, never admin), expiry, and the token's
SHA-256 (never the token). The admin lists and revokes them (`GET /api/v1/tokens`, `DELETE
/api/v1/tokens/{id}`); a revoked token is refused from the next request on. The manifest's tokens
(`api.tokens`) are listed too, but are changed only in the manifest. See docs/api.md "Tablet sign-in".
(No `from __future__ import annotations`: FastAPI must see the route dependencies at definition time.)
"""

import asyncio
import dataclasses
import hashlib
import json
import secrets
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi import Path as PathParam
from pydantic import BaseModel, Field

from edge.api.auth import ROLES, AuthError, Principal, TokenStore, require
from edge.runtime import GatewayView, Upsert

ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L: read off a screen, typed on a tablet
CODE_LENGTH = 8
MAX_PENDING = 20  # open pairings at once
MAX_FAILURES = 5  # wrong or expired codes per client address per window
FAILURE_WINDOW_S = 600.0
MAX_CLIENTS = 1024  # client addresses tracked for failures (oldest forgotten first)
PairedRole = Literal["staff", "hq"]


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def hash_token(token: str) -> str:
    """Hex SHA-256 of a token: what the database keeps (the token is 256 random bits, no slow hash needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


def normalize_code(code: str) -> str:
    """A typed code as issued: upper case, without blanks and dashes."""
    return "".join(ch for ch in code.upper() if ch not in " -\t")


class PairingError(AuthError):
    """A refused pairing request (bad code, too many attempts, unknown token)."""


@dataclass(frozen=True, slots=True)
class Pairing:
    """An open pairing: what the redeemed token will be."""

    code: str
    name: str
    roles: tuple[str, ...]
    token_days: int
    expires: datetime
    created_by: str


@dataclass(frozen=True, slots=True)
class PairedToken:
    """One paired token as stored (without the token)."""

    id: str
    name: str
    roles: tuple[str, ...]
    token_hash: str
    created: str
    created_by: str
    expires: datetime
    revoked: str | None

    def row(self) -> dict[str, Any]:
        """The `api_tokens` row."""
        return {"id": self.id, "name": self.name, "roles": json.dumps(list(self.roles)),
                "token_hash": self.token_hash, "created": self.created, "created_by": self.created_by,
                "expires": _iso(self.expires), "revoked": self.revoked}

    def as_dict(self, now: datetime) -> dict[str, Any]:
        """JSON-ready form for the token list."""
        state = "revoked" if self.revoked else ("expired" if now >= self.expires else "active")
        return {"id": self.id, "name": self.name, "roles": list(self.roles), "source": "pairing",
                "created": self.created, "created_by": self.created_by, "expires": _iso(self.expires),
                "revoked": self.revoked, "state": state, "revocable": not self.revoked}


class PairedTokens:
    """Open pairings (memory), paired tokens (database + memory index by hash), failures per client."""

    def __init__(self, gw: GatewayView) -> None:
        self.gw = gw
        self._pending: dict[str, Pairing] = {}
        self._tokens: dict[str, PairedToken] = {}  # id -> token
        self._by_hash: dict[str, PairedToken] = {}  # live (not revoked) tokens by hash
        self._failures: OrderedDict[str, list[float]] = OrderedDict()
        self._loaded = False
        self._lock = asyncio.Lock()
        self.redeemed = 0
        self.refused: dict[str, int] = {}

    async def ready(self) -> None:
        """Load the stored tokens once."""
        if self._loaded:
            return
        async with self._lock:
            if self._loaded:
                return
            for r in await self.gw.query("SELECT * FROM api_tokens"):
                self._add(PairedToken(
                    id=str(r["id"]), name=str(r["name"]), roles=tuple(json.loads(r["roles"])),
                    token_hash=str(r["token_hash"]), created=str(r["created"]), created_by=str(r["created_by"]),
                    expires=datetime.fromisoformat(str(r["expires"]).replace("Z", "+00:00")),
                    revoked=r["revoked"]))
            self._loaded = True

    def _add(self, tok: PairedToken) -> None:
        self._tokens[tok.id] = tok
        if tok.revoked is None:
            self._by_hash[tok.token_hash] = tok
        else:
            self._by_hash.pop(tok.token_hash, None)

    def lookup(self, token: str) -> Principal | None:
        """The principal of a live paired token (expiry is judged by the caller, as for manifest tokens)."""
        tok = self._by_hash.get(hash_token(token))
        if tok is None or tok.revoked is not None:
            return None
        return Principal(tok.name, frozenset(tok.roles), tok.expires)

    def _purge(self, now: datetime) -> None:
        for code in [c for c, p in self._pending.items() if p.expires <= now - timedelta(minutes=10)]:
            del self._pending[code]

    def create(self, name: str, roles: list[str], token_days: int, ttl_s: int, by: str) -> dict[str, Any]:
        """Open a pairing and return its code and expiry."""
        now = self.gw.clock.now()
        self._purge(now)
        if sum(1 for p in self._pending.values() if p.expires > now) >= MAX_PENDING:
            raise PairingError(409, "too_many_pairings",
                               f"{MAX_PENDING} pairings are open; use or let them expire first")
        code = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
        while code in self._pending:
            code = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
        p = Pairing(code, name, tuple(sorted(set(roles))), token_days, now + timedelta(seconds=ttl_s), by)
        self._pending[code] = p
        return {"code": code, "name": name, "roles": list(p.roles), "expires": _iso(p.expires),
                "token_days": token_days}

    def _check_client(self, client: str) -> None:
        now = time.monotonic()
        recent = [t for t in self._failures.get(client, []) if now - t < FAILURE_WINDOW_S]
        if recent:
            self._failures[client] = recent
        else:
            self._failures.pop(client, None)
        if len(recent) >= MAX_FAILURES:
            retry = max(1, int(FAILURE_WINDOW_S - (now - recent[0])) + 1)
            raise self._refuse("throttled", PairingError(
                429, "too_many_attempts", f"too many wrong pairing codes from this device; try again in {retry} s",
                headers={"Retry-After": str(retry)}))

    def _fail(self, client: str, reason: str, err: PairingError) -> PairingError:
        self._failures.setdefault(client, []).append(time.monotonic())
        self._failures.move_to_end(client)
        while len(self._failures) > MAX_CLIENTS:
            self._failures.popitem(last=False)
        return self._refuse(reason, err)

    def _refuse(self, reason: str, err: PairingError) -> PairingError:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        return err

    async def redeem(self, code: str, client: str) -> dict[str, Any]:
        """Turn an open pairing's code into a token (once); wrong and expired codes count against `client`."""
        await self.ready()
        self._check_client(client)
        now = self.gw.clock.now()
        p = self._pending.pop(normalize_code(code), None)
        if p is None:
            raise self._fail(client, "unknown", PairingError(
                400, "invalid_code", "this pairing code is not valid: ask the admin for a new one"))
        if now >= p.expires:
            raise self._fail(client, "expired", PairingError(
                410, "code_expired", "this pairing code has expired: ask the admin for a new one"))
        token = "edge_" + secrets.token_urlsafe(32)
        tok = PairedToken(id=uuid.uuid4().hex[:12], name=p.name, roles=p.roles, token_hash=hash_token(token),
                          created=_iso(now), created_by=p.created_by, expires=now + timedelta(days=p.token_days),
                          revoked=None)
        await self.gw.emit_committed([], [Upsert("api_tokens", tok.row())])
        self._add(tok)
        self.redeemed += 1
        return {"token": token, "id": tok.id, "name": tok.name, "roles": list(tok.roles),
                "expires": _iso(tok.expires)}

    async def items(self) -> list[dict[str, Any]]:
        """Every paired token (newest first)."""
        await self.ready()
        now = self.gw.clock.now()
        return [t.as_dict(now) for t in sorted(self._tokens.values(), key=lambda t: t.created, reverse=True)]

    async def revoke(self, token_id: str) -> dict[str, Any]:
        """Revoke a paired token: refused at once, then the row is committed with `revoked` set."""
        await self.ready()
        tok = self._tokens.get(token_id)
        if tok is None:
            raise PairingError(404, "not_found", f"no paired token {token_id!r} (manifest tokens are changed "
                                                 "in the manifest)")
        if tok.revoked is None:
            tok = dataclasses.replace(tok, revoked=_iso(self.gw.clock.now()))
            self._add(tok)  # refused from now on, before the commit
            await self.gw.emit_committed([], [Upsert("api_tokens", tok.row())])
        return tok.as_dict(self.gw.clock.now())

    def metrics_text(self) -> str:
        """Prometheus text: redeemed pairings, refused redeems by reason."""
        lines = ["# TYPE edge_api_pairings_redeemed_total counter",
                 f"edge_api_pairings_redeemed_total {self.redeemed}",
                 "# TYPE edge_api_pairings_refused_total counter"]
        lines += [f'edge_api_pairings_refused_total{{reason="{r}"}} {n}' for r, n in sorted(self.refused.items())]
        return "\n".join(lines) + "\n"


class PairingBody(BaseModel):
    """What the paired device's token will be."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f]+$",
                      description="the device's name in the token list, e.g. 'tablet-front'")
    roles: list[PairedRole] = Field(default=["staff"], min_length=1, max_length=2,
                                    description="the token's roles (staff, hq; never admin)")
    token_days: int = Field(default=180, ge=1, le=730, description="days the token is valid")
    ttl_s: int = Field(default=300, ge=5, le=900, description="seconds the code may be redeemed in")


class RedeemBody(BaseModel):
    """The code shown on the admin's screen."""

    code: str = Field(min_length=1, max_length=32)


def add_pairing_routes(app: FastAPI, gw: GatewayView, store: TokenStore) -> PairedTokens:
    """The pairing and token routes on `app`; paired tokens become valid in `store`."""
    paired = PairedTokens(gw)
    store.paired = paired
    Admin = Annotated[Principal, Depends(require(store, "admin"))]
    errors: dict[int | str, dict[str, Any]] = {s: {"description": d} for s, d in (
        (400, "unknown code"), (404, "no such paired token"), (409, "too many open pairings"),
        (410, "expired code"), (429, "too many wrong codes from this client"))}

    @app.post("/api/v1/pairings", tags=["tokens"],
              responses={400: {"description": "a body that cannot be parsed"}, 409: errors[409]})
    async def create_pairing(body: PairingBody, request: Request, who: Admin) -> dict[str, Any]:
        """Open a device pairing: a single-use code (and the URL to open on the tablet) valid `ttl_s` seconds."""
        out = paired.create(body.name, list(body.roles), body.token_days, body.ttl_s, who.name)
        out["url"] = f"{str(request.base_url).rstrip('/')}/#pair={out['code']}"
        return out

    @app.post("/api/v1/pairings/redeem", tags=["tokens"], responses={s: errors[s] for s in (400, 410, 429)})
    async def redeem(body: RedeemBody, request: Request) -> dict[str, Any]:
        """Redeem a pairing code (no token needed): the device's token, shown only in this answer."""
        client = request.client.host if request.client else "?"
        return await paired.redeem(body.code, client)

    @app.get("/api/v1/whoami", tags=["tokens"])
    async def whoami(who: Annotated[Principal, Depends(require(store, *ROLES))]) -> dict[str, Any]:
        """The calling token's name, roles and expiry (the dashboard shows the admin's panel by it)."""
        return {"name": who.name, "roles": sorted(who.roles), "expires": _iso(who.expires) if who.expires else None}

    @app.get("/api/v1/tokens", tags=["tokens"])
    async def tokens(_: Admin) -> dict[str, Any]:
        """Every token: paired ones (revocable) and the manifest's (changed in the manifest)."""
        now = gw.clock.now()
        manifest = [{"id": None, "name": p.name, "roles": sorted(p.roles), "source": "manifest",
                     "expires": _iso(p.expires) if p.expires else None, "revoked": None,
                     "state": "expired" if p.expires and now >= p.expires else "active", "revocable": False}
                    for p in store.manifest_principals()]
        return {"items": await paired.items() + manifest}

    @app.delete("/api/v1/tokens/{token_id}", tags=["tokens"], responses={404: errors[404]})
    async def revoke(token_id: Annotated[str, PathParam(max_length=64)], _: Admin) -> dict[str, Any]:
        """Revoke a paired token: refused from the next request on."""
        return await paired.revoke(token_id)

    return paired
