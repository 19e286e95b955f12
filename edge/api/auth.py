"""Bearer tokens with roles (staff, hq, shopper-app, admin) from the manifest and `EDGE_API_TOKEN`.

No or unknown token -> 401 with `WWW-Authenticate: Bearer`; a token past its manifest `expires` (checked
against the gateway's clock) -> 401 with `error="invalid_token", error_description="token expired"` (RFC 6750
section 3); a known token without the role -> 403. Refusals are counted by reason
(`edge_api_auth_refused_total`).
Only the demo (`edge-gateway demo`) has a token with every role: it puts `EDGE_API_TOKEN` (or one it makes
up and prints) into its built-in manifest. `edge-gateway run` ignores that variable (and warns when it is
set but matches no manifest token). Tokens are compared in constant time. The check runs before the body is
read (edge/api/app.py `AuthFirst`).
The SSE stream also accepts `?access_token=` because browsers' EventSource cannot send headers.
Besides the manifest's tokens, a store's admin can pair a tablet (edge/api/pairing.py): those tokens live
hashed in the state database, are checked after the manifest's and are refused at once when revoked.
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from fastapi import HTTPException, Request

from edge.clock import Clock, SystemClock
from edge.config import TokenConfig

log = logging.getLogger(__name__)

ROLES = ("staff", "hq", "shopper-app", "admin")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who called: the token's name and roles."""

    name: str
    roles: frozenset[str]
    expires: datetime | None = None


class AuthError(HTTPException):
    """A refused token: 401/403 with a stable error `code` for the JSON body."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status, detail=detail, headers=headers)
        self.code = code


class PairedSource(Protocol):
    """Tokens besides the manifest's (edge/api/pairing.py `PairedTokens`)."""

    async def ready(self) -> None:
        """Load what the state database holds (once)."""
        ...

    def lookup(self, token: str) -> Principal | None:
        """The principal of a live (not revoked) token, or None."""
        ...


class TokenStore:
    """The accepted tokens; expiry is judged by `clock` (the gateway's), refusals counted by reason."""

    def __init__(
        self, tokens: Sequence[TokenConfig], env_token: str | None = None, *, clock: Clock | None = None
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self.refused: dict[str, int] = {}
        self.paired: PairedSource | None = None  # set by edge/api/pairing.py
        self._tokens: list[tuple[bytes, Principal]] = [
            (t.token.encode(), Principal(t.name or f"token-{i}", frozenset(t.roles), t.expires))
            for i, t in enumerate(tokens)
        ]
        if env_token:
            self._tokens.append((env_token.encode(), Principal("EDGE_API_TOKEN", frozenset(ROLES))))
        env = os.environ.get("EDGE_API_TOKEN")
        if env and env_token is None and self.lookup(env) is None:
            log.warning("EDGE_API_TOKEN is set but ignored: only `edge-gateway demo` accepts it; give tokens "
                        "and their roles in the manifest (api.tokens)")
        now = self.clock.now()
        for _, p in self._tokens:
            if p.expires is not None and p.expires <= now:
                log.warning("API token %r expired at %s: it is refused; renew it in the manifest", p.name,
                            p.expires.isoformat())

    def lookup(self, token: str) -> Principal | None:
        """The principal of a token, or None (every entry is compared, in constant time each)."""
        found = None
        given = token.encode()
        for secret, principal in self._tokens:
            if hmac.compare_digest(secret, given):
                found = principal
        if found is None and self.paired is not None:
            found = self.paired.lookup(token)
        return found

    def manifest_principals(self) -> list[Principal]:
        """The manifest's (and the demo's) tokens as principals, for the admin's token list."""
        return [p for _, p in self._tokens]

    def refuse(self, reason: str, error: AuthError) -> AuthError:
        """Count a refusal by `reason` and hand back the error to raise."""
        self.refused[reason] = self.refused.get(reason, 0) + 1
        return error

    def metrics_text(self) -> str:
        """Prometheus text of the refusals."""
        lines = ["# TYPE edge_api_auth_refused_total counter"]
        lines += [f'edge_api_auth_refused_total{{reason="{r}"}} {n}' for r, n in sorted(self.refused.items())]
        return "\n".join(lines) + "\n"


REALM = 'Bearer realm="edge-gateway"'


def token_valid(store: TokenStore, token: str) -> bool:
    """Is `token` still known (not revoked) and unexpired?"""
    principal = store.lookup(token)
    return principal is not None and (principal.expires is None or store.clock.now() < principal.expires)


def _unauthorized(detail: str) -> AuthError:
    return AuthError(401, "unauthorized", detail, headers={"WWW-Authenticate": REALM})


def require(store: TokenStore, *roles: str, query_token: bool = False) -> Callable[[Request], Awaitable[Principal]]:
    """A FastAPI dependency admitting tokens that hold any of `roles`."""
    wanted = frozenset(roles)

    async def dep(request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        token = ""
        if header:
            scheme, _, value = header.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise store.refuse("malformed", _unauthorized("use 'Authorization: Bearer <token>'"))
            token = value.strip()
        elif query_token:
            token = request.query_params.get("access_token", "")
        if not token:
            raise store.refuse("missing", _unauthorized("a bearer token is required"))
        if store.paired is not None:
            await store.paired.ready()
        principal = store.lookup(token)
        if principal is None:
            raise store.refuse("unknown", _unauthorized("unknown token"))
        if principal.expires is not None and store.clock.now() >= principal.expires:
            when = principal.expires.astimezone(UTC).isoformat().replace("+00:00", "Z")
            header = f'{REALM}, error="invalid_token", error_description="token expired"'
            raise store.refuse("expired", AuthError(
                401, "token_expired", f"this token expired at {when}; ask the store's admin for a new one",
                headers={"WWW-Authenticate": header},
            ))
        if not principal.roles & wanted:
            raise store.refuse("forbidden", AuthError(
                403, "forbidden", f"this needs one of the roles: {', '.join(sorted(wanted))}"
            ))
        request.state.principal = principal
        request.state.token = token  # a long-lived response (the event stream) re-checks it: token_valid
        return principal

    dep.edge_auth = True  # type: ignore[attr-defined]  # AuthFirst runs it before the body is read
    return dep
