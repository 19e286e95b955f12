"""`cmd/{name}` request/reply over MQTT 3.1.1: JSON `{id, reply_to, ...}` in, `{id, ok, result|error}` out.

Handlers are async callables registered by name; they get the whole request object (filters and
arguments are top-level fields) and return a JSON-ready result or raise `CommandError`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson

from edge.errors import CommandError
from edge.metrics import Metrics
from edge.runtime import CommandHandler

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024


class CommandRouter:
    """Name -> handler, plus request validation and reply building."""

    def __init__(self, metrics: Metrics) -> None:
        self._handlers: dict[str, CommandHandler] = {}
        self.metrics = metrics

    def register(self, name: str, handler: CommandHandler) -> None:
        """Serve `cmd/{name}`."""
        if not name or any(c in name for c in "/+#"):
            raise ValueError(f"bad command name {name!r}")
        self._handlers[name] = handler

    @property
    def names(self) -> list[str]:
        """Registered command names."""
        return sorted(self._handlers)

    async def handle(self, name: str, payload: bytes) -> tuple[str | None, bytes | None]:
        """Run one request; return (reply topic, reply payload), or (None, None) when no reply is possible."""
        request: Any = None
        try:
            request, handler = self._validate(name, payload)
            result = await handler(request)
            self.metrics.inc("edge_commands_total", command=name, outcome="ok")
            return str(request["reply_to"]), orjson.dumps({"id": request["id"], "ok": True, "result": result})
        except CommandError as err:
            if request is None:
                request = _loads_or_none(payload)
            self.metrics.inc("edge_commands_total", command=name if name in self._handlers else "unknown",
                             outcome=err.code)
            return self._error_reply(request, err)
        except Exception as exc:  # a handler bug must not take down the command loop
            log.exception("command %s failed", name)
            self.metrics.inc("edge_commands_total", command=name, outcome="internal")
            return self._error_reply(request, CommandError("internal", type(exc).__name__))

    def _validate(self, name: str, payload: bytes) -> tuple[dict[str, Any], CommandHandler]:
        if len(payload) > MAX_REQUEST_BYTES:
            raise CommandError("too_large", f"request is over {MAX_REQUEST_BYTES} bytes")
        try:
            request = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise CommandError("bad_json", f"request is not JSON: {exc}") from None
        if not isinstance(request, dict):
            raise CommandError("bad_request", "request must be a JSON object with id and reply_to")
        reply_to = request.get("reply_to")
        if not isinstance(reply_to, str) or not reply_to or any(c in reply_to for c in "+#") or len(reply_to) > 512:
            raise CommandError("bad_reply_to", "reply_to must be a topic name without wildcards")
        rid = request.get("id")
        if not isinstance(rid, str | int) or isinstance(rid, bool):
            raise CommandError("bad_id", "id must be a string or an integer")
        handler = self._handlers.get(name)
        if handler is None:
            raise CommandError("unknown_command", f"no command {name!r}; known: {', '.join(self.names)}")
        return request, handler

    @staticmethod
    def _error_reply(request: Any, err: CommandError) -> tuple[str | None, bytes | None]:
        if not isinstance(request, Mapping):
            return None, None
        reply_to = request.get("reply_to")
        if not isinstance(reply_to, str) or not reply_to or any(c in reply_to for c in "+#"):
            return None, None
        rid = request.get("id")
        body = {"id": rid if isinstance(rid, str | int) else None, "ok": False,
                "error": {"code": err.code, "message": err.message}}
        return reply_to, orjson.dumps(body)


def _loads_or_none(payload: bytes) -> Any:
    try:
        return orjson.loads(payload) if len(payload) <= MAX_REQUEST_BYTES else None
    except orjson.JSONDecodeError:
        return None
