"""Bearer tokens with roles (staff, hq, shopper-app, admin) from the manifest and `EDGE_API_TOKEN`.

No or unknown token -> 401 with `WWW-Authenticate: Bearer`; a known token without the role -> 403.
`EDGE_API_TOKEN` grants every role (the demo prints the one it uses). Tokens are compared in constant time.
The SSE stream also accepts `?access_token=` because browsers' EventSource cannot send headers.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from fastapi import HTTPException, Request

from edge.config import TokenConfig

ROLES = ("staff", "hq", "shopper-app", "admin")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who called: the token's name and roles."""

    name: str
    roles: frozenset[str]


class TokenStore:
    """The accepted tokens."""

    def __init__(self, tokens: Sequence[TokenConfig], env_token: str | None = None) -> None:
        self._tokens: list[tuple[bytes, Principal]] = [
            (t.token.encode(), Principal(t.name or f"token-{i}", frozenset(t.roles))) for i, t in enumerate(tokens)
        ]
        env = env_token if env_token is not None else os.environ.get("EDGE_API_TOKEN")
        if env:
            self._tokens.append((env.encode(), Principal("EDGE_API_TOKEN", frozenset(ROLES))))

    def lookup(self, token: str) -> Principal | None:
        """The principal of a token, or None (every entry is compared, in constant time each)."""
        found = None
        given = token.encode()
        for secret, principal in self._tokens:
            if hmac.compare_digest(secret, given):
                found = principal
        return found


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail=detail, headers={"WWW-Authenticate": 'Bearer realm="edge-gateway"'})


def require(store: TokenStore, *roles: str, query_token: bool = False) -> Callable[[Request], Awaitable[Principal]]:
    """A FastAPI dependency admitting tokens that hold any of `roles`."""
    wanted = frozenset(roles)

    async def dep(request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        token = ""
        if header:
            scheme, _, value = header.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise _unauthorized("use 'Authorization: Bearer <token>'")
            token = value.strip()
        elif query_token:
            token = request.query_params.get("access_token", "")
        if not token:
            raise _unauthorized("a bearer token is required")
        principal = store.lookup(token)
        if principal is None:
            raise _unauthorized("unknown token")
        if not principal.roles & wanted:
            raise HTTPException(403, detail=f"this needs one of the roles: {', '.join(sorted(wanted))}")
        request.state.principal = principal
        return principal

    return dep
