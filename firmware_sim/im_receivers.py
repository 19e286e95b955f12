"""Fake WeCom, DingTalk, Feishu/Lark and Slack robot endpoints on 127.0.0.1, written from the tools' docs.

One HTTP server answers the four tools' webhook paths the way their documentation describes, so the
gateway's notification channels (rules/notify.py) can be tested, and shown in the demo, without the
internet. Each endpoint checks what its tool checks and answers as the tool answers:

- WeCom group robot (https://developer.work.weixin.qq.com/document/path/91770, 群机器人配置说明):
  POST /cgi-bin/webhook/send?key=KEY, JSON with `msgtype` text|markdown|...; text.content <= 2048 bytes,
  markdown.content <= 4096 bytes; at most 20 messages a minute. Answer HTTP 200 {"errcode", "errmsg"}:
  0 "ok"; 93000 invalid webhook url (wrong key); 40008 invalid message type; 44004 empty content (the
  body rules); 45009 api freq out of limit.
- DingTalk custom robot (https://open.dingtalk.com/document/robots/custom-robot-access,
  .../custom-bot-send-message-type): POST /robot/send?access_token=T[&timestamp=ms&sign=S]; with the
  加签 setting, sign = urlencode(base64(HmacSHA256(key=secret, msg=timestamp+"\\n"+secret))) and the
  timestamp within one hour. markdown needs `title` and `text`. Answer HTTP 200 {"errcode", "errmsg"}:
  0 "ok"; 300001 token is not exist; 310000 sign not match / timestamp invalid; 130101 send too fast
  (more than 20 a minute); 40035 missing parameter.
- Feishu/Lark custom bot (https://open.feishu.cn/document/client-docs/bot-v3/add-custom-bot):
  POST /open-apis/bot/v2/hook/TOKEN, JSON with `msg_type` (text, post, interactive, ...) and, when
  signature verification is on, "timestamp" (s) and "sign" = base64(HmacSHA256(key=timestamp+"\\n"+secret,
  msg="")) within one hour. interactive needs a `card` object. Answer {"code", "msg", "data"}: 0 "success";
  19001 param invalid (unknown token); 19021 sign match fail or timestamp is not within one hour; 9499 Bad
  Request (body shape); 11232 frequency limited (100 a minute, 5 a second).
- Slack incoming webhook (https://api.slack.com/messaging/webhooks): POST /services/T/B/X, JSON with `text`
  and/or `blocks` (Block Kit: https://api.slack.com/reference/block-kit/blocks; header text plain_text
  <= 150 chars, section fields <= 10). Answer 200 "ok"; 400 invalid_payload / invalid_blocks; 404
  no_service (unknown URL); 429 with Retry-After when posting faster than about one a second
  (https://api.slack.com/docs/rate-limits).

`script(kind, answers)` makes the next requests of a tool fail as given ("http:503", "code:45009"), for
retry tests. Accepted messages are kept in `received[kind]`, refused ones in `refused[kind]` with the reason.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

KINDS = ("wecom", "dingtalk", "feishu", "slack")
BODY_MAX = 1 << 20
"""Requests larger than this are refused before they are read (the tools' own limits are far smaller)."""


@dataclass
class Answer:
    """An HTTP answer: status, body, extra headers."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def _json(obj: object, status: int = 200) -> Answer:
    return Answer(status, json.dumps(obj, ensure_ascii=False).encode(), {"Content-Type": "application/json"})


def summary(kind: str, body: dict[str, Any]) -> str:
    """One printable line for a received message (the demo prints it): the title as the chat would show it."""
    try:
        if kind == "wecom":
            text = str(body[body["msgtype"]]["content"]).split("\n", 1)[0]
        elif kind == "dingtalk":
            text = str(body["markdown"]["title"]) if body.get("msgtype") == "markdown" else str(body)
        elif kind == "feishu":
            text = str(body["card"]["header"]["title"]["content"])
        else:
            text = str(body.get("text") or body["blocks"][0]["text"]["text"])
    except (KeyError, IndexError, TypeError):
        text = json.dumps(body, ensure_ascii=False)
    return f"[{kind}] " + re.sub(r"<[^>]*>|^#+ ", "", text)[:200]


@dataclass
class Robot:
    """One robot's credentials: the token in its URL and (DingTalk, Feishu) its signing secret."""

    token: str
    secret: str | None = None


class ImReceivers:
    """The four fake endpoints on one loopback HTTP server (`url(kind)` is a robot's webhook URL)."""

    name = "im-receivers"

    def __init__(
        self,
        robots: dict[str, Robot] | None = None,
        now: Callable[[], float] = time.time,
        on_message: Callable[[str, dict[str, Any]], None] | None = None,
        per_minute: dict[str, int] | None = None,
    ) -> None:
        self.robots = robots or {
            "wecom": Robot("wecom-key-0001"),
            "dingtalk": Robot("dingtalk-token-0001", "SECdingtalk-demo-secret"),
            "feishu": Robot("feishu-hook-0001", "feishu-demo-secret"),
            "slack": Robot("T000/B000/slackdemo0001"),
        }
        self.now = now
        self.on_message = on_message
        # documented limits: WeCom and DingTalk 20/min, Feishu 100/min; Slack about 1/s (60/min here)
        self.per_minute = {"wecom": 20, "dingtalk": 20, "feishu": 100, "slack": 60, **(per_minute or {})}
        self.received: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
        self.refused: dict[str, list[str]] = {k: [] for k in KINDS}
        self.requests: dict[str, list[tuple[str, bytes]]] = {k: [] for k in KINDS}  # (path?query, raw body)
        self._scripts: dict[str, list[str]] = {k: [] for k in KINDS}
        self._recent: dict[str, deque[float]] = {k: deque() for k in KINDS}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # ---- lifecycle ----
    def start_sync(self, port: int = 0) -> None:
        """Listen on 127.0.0.1:`port` (0: a free one) in a background thread."""
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if not 0 <= length <= BODY_MAX:
                    self._send(Answer(413, b"too large"))
                    return
                raw = self.rfile.read(length)
                self._send(outer.handle(self.path, raw))

            def _send(self, a: Answer) -> None:
                self.send_response(a.status)
                for k, v in a.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(a.body)))
                self.end_headers()
                self.wfile.write(a.body)

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="im-receivers", daemon=True)
        self._thread.start()

    def stop_sync(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    async def start(self, world: object = None, workdir: Path | None = None,
                    local_broker_url: str | None = None) -> list[dict[str, Any]]:
        """SimPart-style start (no devices: use `channels()` for the manifest's notifications section)."""
        self.start_sync()
        return []

    async def stop(self) -> None:
        """SimPart-style stop."""
        self.stop_sync()

    # ---- addresses ----
    def url(self, kind: str) -> str:
        """The webhook URL of this server's robot of `kind`, as the tool would show it."""
        base = f"http://127.0.0.1:{self.port}"
        token = self.robots[kind].token
        return {
            "wecom": f"{base}/cgi-bin/webhook/send?key={token}",
            "dingtalk": f"{base}/robot/send?access_token={token}",
            "feishu": f"{base}/open-apis/bot/v2/hook/{token}",
            "slack": f"{base}/services/{token}",
        }[kind]

    def channels(self, kinds: tuple[str, ...] = KINDS, **extra: Any) -> list[dict[str, Any]]:
        """`notifications.channels` entries pointing at these robots (extra fields go into each)."""
        return [{"id": f"{k}-staff", "kind": k, "url": self.url(k),
                 **({"secret": self.robots[k].secret} if self.robots[k].secret else {}), **extra} for k in kinds]

    def script(self, kind: str, answers: list[str]) -> None:
        """The next requests to `kind` fail as given: "http:<status>" or "code:<vendor code>"."""
        with self._lock:
            self._scripts[kind] += answers

    # ---- the endpoints ----
    def handle(self, target: str, raw: bytes) -> Answer:
        """Route one POST by path."""
        parts = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        path = parts.path
        if path == "/cgi-bin/webhook/send":
            kind, token = "wecom", query.get("key", "")
        elif path == "/robot/send":
            kind, token = "dingtalk", query.get("access_token", "")
        elif path.startswith("/open-apis/bot/v2/hook/"):
            kind, token = "feishu", path.removeprefix("/open-apis/bot/v2/hook/")
        elif path.startswith("/services/"):
            kind, token = "slack", path.removeprefix("/services/")
        else:
            return Answer(404, b"not found")
        with self._lock:
            self.requests[kind].append((target, raw))
            scripted = self._scripts[kind].pop(0) if self._scripts[kind] else None
        if scripted is not None:
            how, _, value = scripted.partition(":")
            if how == "http":
                return Answer(int(value), b"scripted failure", {"Retry-After": "1"} if value == "429" else {})
            return self._code(kind, int(value), "scripted failure")
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        problem = {"wecom": self._wecom, "dingtalk": self._dingtalk, "feishu": self._feishu,
                   "slack": self._slack}[kind](token, query, body)
        if problem is not None:
            with self._lock:
                self.refused[kind].append(problem[1])
            return problem[0]
        if not self._admit(kind):
            with self._lock:
                self.refused[kind].append("rate limited")
            if kind == "slack":
                return Answer(429, b"rate_limited", {"Retry-After": "1"})
            return self._code(kind, {"wecom": 45009, "dingtalk": 130101, "feishu": 11232}[kind], "rate limited")
        assert isinstance(body, dict)
        with self._lock:
            self.received[kind].append(body)
        if self.on_message is not None:
            self.on_message(kind, body)
        if kind == "slack":
            return Answer(200, b"ok", {"Content-Type": "text/html"})
        return self._code(kind, 0, "ok")

    def _admit(self, kind: str) -> bool:
        now = time.monotonic()
        with self._lock:
            recent = self._recent[kind]
            while recent and recent[0] <= now - 60.0:
                recent.popleft()
            if len(recent) >= self.per_minute[kind]:
                return False
            recent.append(now)
            return True

    @staticmethod
    def _code(kind: str, code: int, msg: str) -> Answer:
        if kind == "feishu":
            return _json({"code": code, "msg": "success" if code == 0 else msg, "data": {}})
        return _json({"errcode": code, "errmsg": "ok" if code == 0 else msg})

    def _fresh(self, ts: str, unit: float) -> bool:
        try:
            return abs(self.now() - int(ts) / unit) <= 3600
        except ValueError:
            return False

    def _wecom(self, token: str, query: dict[str, str], body: Any) -> tuple[Answer, str] | None:
        if token != self.robots["wecom"].token:
            return self._code("wecom", 93000, "invalid webhook url"), "bad key"
        if not isinstance(body, dict) or body.get("msgtype") not in ("text", "markdown", "image", "news", "file",
                                                                         "template_card"):
            return self._code("wecom", 40008, "invalid message type"), "msgtype"
        kind = body["msgtype"]
        part = body.get(kind)
        limit = {"text": 2048, "markdown": 4096}.get(kind)
        if kind in ("text", "markdown"):
            content = part.get("content") if isinstance(part, dict) else None
            if not isinstance(content, str) or not content:
                return self._code("wecom", 44004, "empty content"), "content"
            if limit is not None and len(content.encode()) > limit:
                return self._code("wecom", 40058, "content exceed max length"), "too long"
        return None

    def _dingtalk(self, token: str, query: dict[str, str], body: Any) -> tuple[Answer, str] | None:
        robot = self.robots["dingtalk"]
        if token != robot.token:
            return self._code("dingtalk", 300001, "token is not exist"), "bad token"
        if robot.secret is not None:
            ts, sign = query.get("timestamp", ""), query.get("sign", "")  # parse_qs already URL-decoded sign
            expected = base64.b64encode(hmac.new(robot.secret.encode(), f"{ts}\n{robot.secret}".encode(),
                                                 hashlib.sha256).digest()).decode()
            if not self._fresh(ts, 1000.0):
                return self._code("dingtalk", 310000, "invalid timestamp"), "timestamp"
            if not hmac.compare_digest(expected, sign):
                return self._code("dingtalk", 310000, "sign not match"), "sign"
        if not isinstance(body, dict) or body.get("msgtype") not in ("text", "link", "markdown", "actionCard",
                                                                         "feedCard"):
            return self._code("dingtalk", 40035, "缺少参数 msgtype"), "msgtype"
        if body["msgtype"] == "markdown":
            md = body.get("markdown")
            if not (isinstance(md, dict) and isinstance(md.get("title"), str) and md["title"]
                    and isinstance(md.get("text"), str) and md["text"]):
                return self._code("dingtalk", 40035, "缺少参数 markdown.title/text"), "markdown"
        return None

    def _feishu(self, token: str, query: dict[str, str], body: Any) -> tuple[Answer, str] | None:
        robot = self.robots["feishu"]
        if token != robot.token:
            return self._code("feishu", 19001, "param invalid: incoming webhook access token invalid"), "bad token"
        if not isinstance(body, dict):
            return self._code("feishu", 9499, "Bad Request"), "not JSON"
        if robot.secret is not None:
            ts, sign = str(body.get("timestamp", "")), str(body.get("sign", ""))
            key = f"{ts}\n{robot.secret}".encode()
            expected = base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()
            if not self._fresh(ts, 1.0) or not hmac.compare_digest(expected, sign):
                return self._code("feishu", 19021, "sign match fail or timestamp is not within one hour from "
                                                   "current time"), "sign"
        mt = body.get("msg_type")
        if mt == "interactive":
            card = body.get("card")
            if not isinstance(card, dict) or not isinstance(card.get("elements", []), list):
                return self._code("feishu", 9499, "Bad Request: card"), "card"
        elif mt not in ("text", "post", "image", "share_chat"):
            return self._code("feishu", 9499, "Bad Request: msg_type"), "msg_type"
        return None

    def _slack(self, token: str, query: dict[str, str], body: Any) -> tuple[Answer, str] | None:
        if token != self.robots["slack"].token:
            return Answer(404, b"no_service"), "bad url"
        if not isinstance(body, dict) or not (isinstance(body.get("text"), str) or isinstance(body.get("blocks"),
                                                                                             list)):
            return Answer(400, b"invalid_payload"), "payload"
        for b in body.get("blocks") or []:
            if not isinstance(b, dict) or not isinstance(b.get("type"), str):
                return Answer(400, b"invalid_blocks"), "block"
            text = b.get("text")
            if b["type"] == "header" and not (isinstance(text, dict) and text.get("type") == "plain_text"
                                              and 0 < len(str(text.get("text", ""))) <= 150):
                return Answer(400, b"invalid_blocks"), "header"
            fields = b.get("fields")
            if fields is not None and (not isinstance(fields, list) or len(fields) > 10):
                return Answer(400, b"invalid_blocks"), "fields"
        return None
