"""`cmd/{name}` request/reply over MQTT 3.1.1, authorized by the hub (the scheme: docs/commands.md).

A request is a JSON object `{id, reply_to, ...arguments, auth?}` published to `{root}/cmd/{name}`; the reply
`{id, ok, result|error}` goes to `reply_to`. Handlers are async callables registered by name; they get the
whole request object and return a JSON-ready result or raise `CommandError`.

A command changes state unless it is registered `read_only=True`; such a command runs only with a valid `auth`
member: an HMAC-SHA256 (RFC 2104) with a key from `hub.commands.keys` over the command topic, key id, `ts` and
the RFC 8785 (JCS) canonical form of the request without `auth`. `ts` must lie within `window_s` of the
gateway's clock and not before the gateway started; the request `id` is the nonce (remembered for the window):
the exact signed request again (a QoS 1 redelivery) gets the first reply again and does not run twice; the id
with other content is refused as a replay. Read-only commands are open unless `hub.commands.sign_reads` (a
signature present is always checked). Refusals are error replies with code `unauthorized` and a
machine-readable `reason`.

`reply_to` must be a valid MQTT topic name (UTF-8, no wildcards, control characters, surrogates or
non-characters, no empty level, not `$`-prefixed, at most 256 bytes and 32 levels) under `{root}/reply/` or a
prefix from `hub.commands.reply_prefixes`, and never elsewhere under the store's own root. A request whose
`reply_to` breaks that rule gets no reply at all (error replies obey the same rule); it is counted and logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import hmac
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from edge.clock import Clock, SystemClock
from edge.config import CommandsConfig
from edge.errors import CommandError
from edge.metrics import Metrics
from edge.ratelimit import LogLimiter
from edge.runtime import CommandHandler

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024
MAX_SALVAGE_BYTES = 4 * 1024 * 1024  # an oversized request up to this size is parsed once, for its reply_to
MAX_REPLY_TOPIC_BYTES = 256
MAX_REPLY_TOPIC_LEVELS = 32
MAX_ID_CHARS = 128
MAX_CANONICAL_DEPTH = 64
MAX_SAFE_INTEGER = 2**53 - 1  # I-JSON (RFC 7493): larger integers do not survive a JSON number as a double
ALG = "HMAC-SHA256"
SCHEME = "EDGE-CMD-HMAC-SHA256"
_SIG = re.compile(r"[0-9a-f]{64}")


# ---- RFC 8785 JSON Canonicalization Scheme --------------------------------------------------------------

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f]')


def _jcs_string(s: str) -> str:
    return '"' + _NEEDS_ESCAPE.sub(lambda m: _ESCAPES.get(m[0]) or f"\\u{ord(m[0]):04x}", s) + '"'


def _jcs_number(x: float) -> str:
    """ECMAScript Number::toString (RFC 8785 section 3.2.2.3) from the shortest round-trip digits."""
    if not math.isfinite(x):
        raise ValueError("NaN and infinity are not JSON numbers")
    if x == 0:
        return "0"
    _, digit_tuple, exp = Decimal(repr(abs(x))).as_tuple()
    digits = "".join(map(str, digit_tuple))
    assert isinstance(exp, int)
    stripped = digits.rstrip("0")
    exp += len(digits) - len(stripped)
    digits = stripped
    k, n = len(digits), len(digits) + exp
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        text = "0." + "0" * -n + digits
    else:
        e = n - 1
        text = digits[0] + ("." + digits[1:] if k > 1 else "") + "e" + ("+" if e >= 0 else "-") + str(abs(e))
    return ("-" if x < 0 else "") + text


def canonical_json(value: object, _depth: int = 0) -> str:
    """RFC 8785 (JCS) text of a parsed JSON value: members sorted by UTF-16 code units, no whitespace,
    ECMAScript number form; integers beyond +-(2^53 - 1) and nesting deeper than 64 raise ValueError."""
    if _depth > MAX_CANONICAL_DEPTH:
        raise ValueError(f"nested deeper than {MAX_CANONICAL_DEPTH} levels")
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _jcs_string(value)
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise ValueError(f"integer {value} is beyond +-(2^53 - 1): send it as a string")
        return str(value)
    if isinstance(value, float):
        return _jcs_number(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(canonical_json(v, _depth + 1) for v in value) + "]"
    if isinstance(value, Mapping):
        items = sorted(value.items(), key=lambda kv: str(kv[0]).encode("utf-16-be"))
        return "{" + ",".join(_jcs_string(str(k)) + ":" + canonical_json(v, _depth + 1) for k, v in items) + "}"
    raise ValueError(f"{type(value).__name__} is not a JSON value")


def string_to_sign(topic: str, kid: str, ts: int, request: Mapping[str, Any]) -> bytes:
    """The exact bytes the hub signs: scheme, command topic, key id, ts and the JCS form of the request
    without `auth`, joined by LF (docs/commands.md)."""
    body = {k: v for k, v in request.items() if k != "auth"}
    return "\n".join([SCHEME, topic, kid, str(ts), canonical_json(body)]).encode("utf-8")


def sign(request: Mapping[str, Any], *, topic: str, kid: str, secret: str, ts: int) -> dict[str, Any]:
    """`request` with its `auth` member added, as the hub sends it (for HQ tools and the CLI)."""
    sig = hmac.new(secret.encode("utf-8"), string_to_sign(topic, kid, ts, request), hashlib.sha256).hexdigest()
    return {**{k: v for k, v in request.items() if k != "auth"}, "auth": {"alg": ALG, "kid": kid, "ts": ts,
                                                                          "sig": sig}}


# ---- reply topics ----------------------------------------------------------------------------------------


def _bad_char(c: str) -> bool:
    o = ord(c)
    return (c in "+#" or o < 0x20 or 0x7F <= o <= 0x9F or 0xD800 <= o <= 0xDFFF or 0xFDD0 <= o <= 0xFDEF
            or (o & 0xFFFE) == 0xFFFE)


def reply_topic_problem(topic: object, root: str, prefixes: Sequence[str] = ()) -> str | None:
    """Why `topic` may not carry a reply of the store at `root` (None: it may)."""
    if not isinstance(topic, str) or not topic:
        return "reply_to must be a topic name (a non-empty string)"
    try:
        size = len(topic.encode("utf-8"))
    except UnicodeEncodeError:
        return "reply_to is not valid UTF-8"
    if size > MAX_REPLY_TOPIC_BYTES or topic.count("/") >= MAX_REPLY_TOPIC_LEVELS:
        return f"reply_to is longer than {MAX_REPLY_TOPIC_BYTES} bytes or {MAX_REPLY_TOPIC_LEVELS} levels"
    if any(_bad_char(c) for c in topic):
        return "reply_to holds a wildcard, a control character or a Unicode non-character"
    if topic.startswith("$") or "" in topic.split("/"):
        return "reply_to may not start with '$' or have an empty level"
    own = f"{root}/reply/"
    if topic.startswith(own) or (
        not topic.startswith(root + "/") and any(topic.startswith(p + "/") for p in prefixes)
    ):
        return None
    allowed = " or ".join([own, *(p + "/" for p in prefixes)])
    return f"reply_to must lie under {allowed}"


# ---- replay protection -----------------------------------------------------------------------------------


class NonceCache:
    """Request ids seen, each until its `ts + window` has passed; at most `cap` at a time.

    Each id keeps the signature it came with and, once the request has run, its reply: an exact redelivery
    (QoS 1 after a lost acknowledgement or reply) is answered with that reply instead of running again.
    """

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._seen: dict[str, tuple[float, _Answer]] = {}
        self._expiry: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, key: str, expires: float, now: float, answer: _Answer) -> _Answer | bool | None:
        """True: new (remembered with `answer`); the earlier answer: seen before; None: full of live ids."""
        while self._expiry and self._expiry[0][0] < now:
            when, old = heapq.heappop(self._expiry)
            entry = self._seen.get(old)
            if entry is not None and entry[0] == when:
                del self._seen[old]
        entry = self._seen.get(key)
        if entry is not None:
            return entry[1]
        if len(self._seen) >= self.cap:
            return None
        self._seen[key] = (expires, answer)
        heapq.heappush(self._expiry, (expires, key))
        return True


class _Answer:
    """The signature a request id was first used with, and the reply it got (None until it has run)."""

    __slots__ = ("done", "reply", "sig")
    MAX_KEPT = 16 * 1024  # a longer reply is not kept: its redelivery is refused as a replay

    def __init__(self, sig: str) -> None:
        self.sig = sig
        self.reply: bytes | None = None
        self.done = asyncio.Event()

    def finish(self, reply: bytes | None) -> None:
        self.reply = reply if reply is not None and len(reply) <= self.MAX_KEPT else None
        self.done.set()


class _Redelivery(Exception):
    """The exact signed request was seen before (same id and signature): answer with its reply."""

    def __init__(self, answer: _Answer) -> None:
        super().__init__("redelivery")
        self.answer = answer


# ---- the router ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Command:
    handler: CommandHandler
    read_only: bool


class Unauthorized(CommandError):
    """A refused authorization: code `unauthorized` with a machine-readable `reason`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__("unauthorized", message)
        self.reason = reason


class CommandRouter:
    """Name -> handler, with request validation, the hub's authorization and reply building."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        topic_root: str = "retail/v1/store",
        config: CommandsConfig | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._commands: dict[str, _Command] = {}
        self.metrics = metrics
        self.root = topic_root
        self.config = config or CommandsConfig()
        self.clock: Clock = clock or SystemClock()
        self._keys = {k.id: k.secret.encode("utf-8") for k in self.config.keys}
        self._nonces = NonceCache(self.config.nonce_cache)
        self._started = int(self.clock.now().timestamp())
        self._logs = LogLimiter(60.0)
        for p in self.config.reply_prefixes:
            if p == self.root or p.startswith(self.root + "/") or self.root.startswith(p + "/"):
                log.warning("hub.commands.reply_prefixes: %r overlaps the store's own topics; only %s/reply/ "
                            "is used there", p, self.root)

    def register(self, name: str, handler: CommandHandler, *, read_only: bool = False) -> None:
        """Serve `cmd/{name}`; unless `read_only`, the command changes state and needs the hub's signature."""
        if not name or any(c in name for c in "/+#") or any(_bad_char(c) for c in name):
            raise ValueError(f"bad command name {name!r}")
        self._commands[name] = _Command(handler, read_only)

    @property
    def names(self) -> list[str]:
        """Registered command names."""
        return sorted(self._commands)

    def read_only(self, name: str) -> bool:
        """Is `name` registered as read-only (False for an unknown name)?"""
        cmd = self._commands.get(name)
        return cmd is not None and cmd.read_only

    async def handle(self, name: str, payload: bytes) -> tuple[str | None, bytes | None]:
        """Run one request; return (reply topic, reply payload), or (None, None) when no reply may be sent."""
        request: Any = None
        answer: _Answer | None = None
        label = name if name in self._commands else "unknown"
        topic_reply: tuple[str | None, bytes | None] = (None, None)
        try:
            if len(payload) > MAX_REQUEST_BYTES:
                request = _loads_or_none(payload) if len(payload) <= MAX_SALVAGE_BYTES else None
            request = self._parse(payload)
            if not self._reply_ok(label, request):
                return topic_reply
            cmd = self._validate(name, request)
            answer = self._authorize(name, request, cmd.read_only)
            result = await cmd.handler(request)
            self.metrics.inc("edge_commands_total", command=label, outcome="ok")
            topic_reply = str(request["reply_to"]), orjson.dumps({"id": request["id"], "ok": True, "result": result})
        except _Redelivery as again:
            return await self._answer_again(label, request, again.answer)
        except CommandError as err:
            self.metrics.inc("edge_commands_total", command=label, outcome=err.code)
            if isinstance(err, Unauthorized):
                self.metrics.inc("edge_commands_refused_total", reason=err.reason)
                self._logs.log(log, logging.WARNING, f"unauthorized:{err.reason}",
                               "command %s refused: %s", label, err.message)
            topic_reply = self._error_reply(request, err)
        except Exception as exc:  # a handler bug must not take down the command loop
            log.exception("command %s failed", name)
            self.metrics.inc("edge_commands_total", command=label, outcome="internal")
            topic_reply = self._error_reply(request, CommandError("internal", type(exc).__name__))
        finally:  # also when cancelled: a redelivery waiting for this answer must not wait for ever
            if answer is not None:
                answer.finish(topic_reply[1])
        return topic_reply

    async def _answer_again(self, label: str, request: Mapping[str, Any],
                            answer: _Answer) -> tuple[str | None, bytes | None]:
        """A redelivery: wait for the first delivery's reply (it may still run) and send it again."""
        await answer.done.wait()
        if answer.reply is None:  # the first reply was too long to keep: refuse as before
            err = Unauthorized("replay", "this request was already executed and its reply is not kept: "
                                         "ask again with a new id")
            self.metrics.inc("edge_commands_total", command=label, outcome=err.code)
            self.metrics.inc("edge_commands_refused_total", reason=err.reason)
            return self._error_reply(request, err)
        self.metrics.inc("edge_commands_total", command=label, outcome="redelivered")
        return str(request["reply_to"]), answer.reply

    def refuse_busy(self, name: str, payload: bytes, running: int) -> tuple[str | None, bytes | None]:
        """The reply to a request not run because `running` requests already run (the caller's cap)."""
        label = name if name in self._commands else "unknown"
        self.metrics.inc("edge_commands_total", command=label, outcome="busy")
        self._logs.log(log, logging.WARNING, "busy", "command %s refused: %d commands already running", label,
                       running)
        request = _loads_or_none(payload) if len(payload) <= MAX_REQUEST_BYTES else None
        return self._error_reply(request, CommandError("busy", f"{running} commands are running: retry later"))

    @staticmethod
    def _parse(payload: bytes) -> Any:
        if len(payload) > MAX_REQUEST_BYTES:
            raise CommandError("too_large", f"request is over {MAX_REQUEST_BYTES} bytes")
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise CommandError("bad_json", f"request is not JSON: {exc}") from None

    def _reply_ok(self, label: str, request: Any) -> bool:
        """May a reply (result or error) go to this request's reply_to? Counts and logs when not."""
        if not isinstance(request, Mapping):
            raise CommandError("bad_request", "request must be a JSON object with id and reply_to")
        problem = reply_topic_problem(request.get("reply_to"), self.root, self.config.reply_prefixes)
        if problem is None:
            return True
        self.metrics.inc("edge_commands_total", command=label, outcome="bad_reply_to")
        self._logs.log(log, logging.WARNING, "bad_reply_to", "command %s not answered: %s", label, problem)
        return False

    def _validate(self, name: str, request: Mapping[str, Any]) -> _Command:
        if not _valid_id(request.get("id")):
            raise CommandError("bad_id", f"id must be a string of 1 to {MAX_ID_CHARS} characters or an integer")
        cmd = self._commands.get(name)
        if cmd is None:
            raise CommandError("unknown_command", f"no command {name[:64]!r}; known: {', '.join(self.names)}")
        return cmd

    def _authorize(self, name: str, request: Mapping[str, Any], read_only: bool) -> _Answer | None:
        """Check the hub's signature; a signed request's id is remembered with the answer it will get."""
        auth = request.get("auth")
        if auth is None:
            if read_only and not self.config.sign_reads:
                return None
            if not self._keys:
                raise Unauthorized("no_keys", "this store accepts no state-changing commands: the manifest "
                                              "lists no hub.commands.keys")
            raise Unauthorized("missing", "this command needs the hub's signature (auth); see docs/commands.md")
        if not isinstance(auth, Mapping):
            raise Unauthorized("malformed", "auth must be an object {alg, kid, ts, sig}")
        kid, ts, sig = auth.get("kid"), auth.get("ts"), auth.get("sig")
        if auth.get("alg") != ALG:
            raise Unauthorized("malformed", f"auth.alg must be {ALG!r}")
        if not isinstance(ts, int) or isinstance(ts, bool) or abs(ts) > MAX_SAFE_INTEGER:
            raise Unauthorized("malformed", "auth.ts must be an integer: seconds since 1970-01-01T00:00:00Z")
        if not isinstance(sig, str) or not _SIG.fullmatch(sig):
            raise Unauthorized("malformed", "auth.sig must be 64 lowercase hex digits (HMAC-SHA256)")
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise Unauthorized("unknown_key", "auth.kid names no key of this store's hub.commands.keys")
        assert isinstance(kid, str)
        try:
            text = string_to_sign(f"{self.root}/cmd/{name}", kid, ts, request)
        except ValueError as exc:
            raise CommandError("bad_request", f"request cannot be canonicalized (RFC 8785): {exc}") from None
        if not hmac.compare_digest(hmac.new(key, text, hashlib.sha256).hexdigest(), sig):
            raise Unauthorized("bad_signature", "auth.sig does not match the request (docs/commands.md)")
        now = self.clock.now().timestamp()
        window = self.config.window_s
        if abs(now - ts) > window:
            raise Unauthorized("stale", f"auth.ts is {now - ts:+.0f} s from the gateway's clock; the window is "
                                        f"+-{window:g} s: sign again with the current time")
        if ts < self._started:
            raise Unauthorized("before_start", "signed before the gateway started (a replay across a restart "
                                               "is refused): sign again")
        answer = _Answer(sig)
        seen = self._nonces.add(canonical_json(request.get("id")), ts + window, now, answer)
        if seen is None:
            raise CommandError("busy", f"over {self.config.nonce_cache} signed requests in the window: retry later")
        if isinstance(seen, _Answer):
            if seen.sig == sig:  # the same signed bytes again: a redelivery, answered, never run twice
                raise _Redelivery(seen)
            raise Unauthorized("replay", "this request id was already used by another signed request: "
                                         "use a new id")
        return answer

    def _error_reply(self, request: Any, err: CommandError) -> tuple[str | None, bytes | None]:
        if not isinstance(request, Mapping):
            return None, None
        if reply_topic_problem(request.get("reply_to"), self.root, self.config.reply_prefixes) is not None:
            return None, None
        rid = request.get("id")
        error: dict[str, Any] = {"code": err.code, "message": err.message}
        if isinstance(err, Unauthorized):
            error["reason"] = err.reason
        body = {"id": rid if _valid_id(rid) else None, "ok": False, "error": error}
        return str(request["reply_to"]), orjson.dumps(body)


def _valid_id(rid: object) -> bool:
    if isinstance(rid, str):
        return 0 < len(rid) <= MAX_ID_CHARS
    return isinstance(rid, int) and not isinstance(rid, bool)


def _loads_or_none(payload: bytes) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
