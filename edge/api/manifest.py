"""POST /api/v1/manifest (apply) and GET /api/v1/manifest (the running one): the HTTP face of edge/rollout.py,
with the same checks, outcomes and errors as `cmd/manifest.apply` / `cmd/manifest.get` (admin only)."""

from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, HTTPException

from edge.api.auth import Principal, TokenStore, require


def add_manifest_routes(app: FastAPI, gw: Any, store: TokenStore) -> None:
    """The manifest routes on `app` (the gateway's `rollout`, edge/rollout.py)."""
    Admin = Annotated[Principal, Depends(require(store, "admin"))]
    errors: dict[int | str, dict[str, Any]] = {s: {"description": d} for s, d in (
        (400, "bad_request or invalid: the manifest is refused, every problem named; nothing changed"),
        (409, "out_of_order (version not above the running one), busy, conflict (stock would be dropped), "
              "or rolled_back (the health gate failed: the previous version runs again)"),
        (413, "too_large: above rollout.max_bytes (or api.max_body_bytes)"),
        (422, "bad_request: the body is not a JSON object"),
        (503, "manifest rollout is not available in this gateway"))}

    def rollout() -> Any:
        r = getattr(gw, "rollout", None)
        if r is None:
            raise HTTPException(503, detail="manifest rollout is not available in this gateway")
        return r

    @app.post("/api/v1/manifest", tags=["manifest"], responses=errors)
    async def apply_manifest(
        _: Admin,
        body: Annotated[dict[str, Any], Body(examples=[{"version": 7, "patch": {"rules": {"defaults": {"min": 6}}}}])],
    ) -> dict[str, Any]:
        """Apply a manifest version: `{version, manifest | patch, allow_stock_loss?}` (a whole manifest, as an
        object or YAML text, or an RFC 7386 merge patch on the running one). Answers when it is committed
        (after the health gate) or rolled back; same as the MQTT command `manifest.apply` (docs/fleet.md)."""
        return dict(await rollout().apply(body, "api"))

    @app.get("/api/v1/manifest", tags=["manifest"], responses={503: errors[503]})
    async def get_manifest(_: Admin) -> dict[str, Any]:
        """The running manifest (secrets written in clear are redacted), its version, SHA-256, origin
        (bootstrap: --config; rollout: a committed apply) and the history of versions."""
        return dict(rollout().get())
