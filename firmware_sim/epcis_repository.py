"""A local EPCIS 2.0 repository: the REST capture interface as GS1 documents it (EPCIS 2.0 §12, github gs1/EPCIS
"REST Bindings/openapi.json" paths `/capture` and `/capture/{captureID}`), real HTTP on 127.0.0.1, for tests and
the benchmark. It speaks to any client; it was written from the OpenAPI, not from our sink.

- `POST {base}/capture` with an EPCISDocument (application/json or application/ld+json): `202 Accepted`, a
  `Location` header naming the capture job, `GS1-EPCIS-Version`/`GS1-CBV-Version` headers. The capture job runs
  after the answer (it stays `running` for `running_polls` GETs).
- `GET {base}/capture/{captureID}`: the CaptureJob (`captureID`, `createdAt`, `finishedAt`, `running`, `success`,
  `captureErrorBehaviour`, `errors`); 404 NoSuchResourceException for an unknown job.
- `OPTIONS {base}/capture`: 204 with `GS1-EPCIS-Capture-Limit`, `GS1-EPCIS-Capture-File-Size-Limit`,
  `GS1-Capture-Error-Behaviour`.
- Problems are RFC 7807 `application/problem+json` with the EPCIS exception types: 401 SecurityException (bearer
  token or basic auth, when configured), 406 (a GS1-EPCIS-Version it does not serve), 415 (media type),
  413 CaptureLimitExceededException (more events than `capture_limit` or more bytes than `file_size_limit`,
  with the limit headers), 400 ValidationException (not JSON, or not valid against GS1's EPCIS 2.0 JSON schema
  with format checking).
- Configurable failures: `script` (statuses to answer the next POSTs with: 409 ResourceAlreadyExistsException,
  422, 500, 503 with Retry-After...), `reject_ids` (eventIDs the capture job rejects: with `rollback` the whole job
  fails and nothing is stored, with `proceed` the others are stored and the job reports the errors).
- Events are stored by eventID: a document sent twice stores its events once (`duplicates` counts the repeats).
"""

from __future__ import annotations

import base64
import json
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

# GS1's schema, kept with the tests' data (origin and commit in that folder's README.md)
SCHEMA = Path(__file__).resolve().parent.parent / "tests/drivers/rfid/data/epcis/EPCIS-JSON-Schema.json"
EXC = "epcisException:"
TITLES = {400: "ValidationException", 401: "SecurityException", 403: "SecurityException",
          404: "NoSuchResourceException",
          406: "NotAcceptable", 409: "ResourceAlreadyExistsException", 413: "CaptureLimitExceededException",
          415: "UnsupportedMediaType", 422: "ValidationException", 429: "TooManyRequests",
          500: "ImplementationException", 503: "ServiceUnavailable"}  # fmt: skip


def schema_validator(path: Path = SCHEMA) -> Any:
    """A Draft-07 validator of GS1's EPCIS 2.0 JSON schema with format checking on (date-time, uri ...)."""
    from jsonschema import Draft7Validator

    return Draft7Validator(json.loads(path.read_text()), format_checker=Draft7Validator.FORMAT_CHECKER)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class CaptureJob:
    """A capture job resource."""

    id: str
    behaviour: str
    created: str
    events: list[dict[str, Any]]
    polls_left: int
    finished: str | None = None
    success: bool = True
    errors: list[dict[str, Any]] = field(default_factory=list)

    def document(self) -> dict[str, Any]:
        """The CaptureJob JSON."""
        return {"captureID": self.id, "createdAt": self.created, "finishedAt": self.finished,
                "running": self.finished is None, "success": self.success,
                "captureErrorBehaviour": self.behaviour, "errors": self.errors}  # fmt: skip


class EpcisRepository:
    """The server; `start()` binds 127.0.0.1 on a free port, `url` is the base the capture interface lives under."""

    def __init__(
        self,
        *,
        base_path: str = "/epcis",
        token: str | None = None,
        basic: tuple[str, str] | None = None,
        capture_limit: int = 1000,
        file_size_limit: int = 16 * 1024 * 1024,
        validate: bool = True,
        running_polls: int = 0,
    ) -> None:
        self.base_path = base_path.rstrip("/")
        self.token = token
        self.basic = basic
        self.capture_limit = capture_limit
        self.file_size_limit = file_size_limit
        self.validate = validate
        self.running_polls = running_polls
        self.script: deque[int] = deque()  # statuses for the next POSTs
        self.location_base: str | None = None  # a misbehaving repository: Location under another base (tests)
        self.reject_ids: set[str] = set()
        self.events: dict[str, dict[str, Any]] = {}  # eventID -> event
        self.order: list[str] = []  # eventIDs in capture order
        self.duplicates = 0
        self.documents = 0  # accepted documents (202)
        self.posts = 0  # every POST /capture
        self.statuses: list[int] = []  # the status of every POST /capture, in order
        self.sizes: list[int] = []  # events per accepted document
        self.invalid = 0  # documents refused by the schema
        self.jobs: dict[str, CaptureJob] = {}
        self.lock = threading.Lock()
        self._validator: Any = schema_validator() if validate else None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL (POST {url}/capture)."""
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}{self.base_path}"

    def start(self) -> EpcisRepository:
        """Listen on 127.0.0.1 (a free port) in a thread."""
        repo = self

        class Handler(_Handler):
            server_repo = repo

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="epcis-repository", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # ---- the capture job ----
    def _run_job(self, job: CaptureJob) -> None:
        with self.lock:
            if job.finished is not None:
                return
            bad = [e for e in job.events if e.get("eventID") in self.reject_ids]
            job.errors = [{"type": f"{EXC}ValidationException", "title": "event rejected", "status": 400,
                           "detail": f"eventID {e.get('eventID')} refused by the repository's rules"}
                          for e in bad]  # fmt: skip
            job.success = not bad
            if not bad or job.behaviour == "proceed":
                for e in job.events:
                    if e in bad:
                        continue
                    eid = str(e.get("eventID"))
                    if eid in self.events:
                        self.duplicates += 1
                    else:
                        self.events[eid] = e
                        self.order.append(eid)
            job.finished = _now()

    def capture(self, doc: dict[str, Any], behaviour: str) -> CaptureJob:
        """Create a capture job for an accepted document."""
        events = list(doc.get("epcisBody", {}).get("eventList", []))
        with self.lock:
            self.documents += 1
            self.sizes.append(len(events))
            job = CaptureJob(id=f"id{len(self.jobs) + 1:08d}", behaviour=behaviour, created=_now(), events=events,
                             polls_left=self.running_polls)  # fmt: skip
            self.jobs[job.id] = job
        if job.polls_left <= 0:
            self._run_job(job)
        return job

    def poll(self, job_id: str) -> dict[str, Any] | None:
        """The job's document; a job still `running` for some polls finishes after them."""
        job = self.jobs.get(job_id)
        if job is None:
            return None
        if job.finished is None:
            if job.polls_left > 0:
                job.polls_left -= 1
            else:
                self._run_job(job)
        return job.document()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-answer (a gateway stopped while polling) is not an error here."""
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server_repo: EpcisRepository
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def _send(self, code: int, body: bytes = b"", ctype: str = "application/json",
              headers: dict[str, str] | None = None) -> None:  # fmt: skip
        self.send_response(code)
        self.send_header("GS1-EPCIS-Version", "2.0.0")
        self.send_header("GS1-CBV-Version", "2.0.0")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if body:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _problem(self, code: int, detail: str = "", headers: dict[str, str] | None = None) -> None:
        doc = {"type": f"{EXC}{TITLES.get(code, 'ImplementationException')}", "title": TITLES.get(code, "error"),
               "status": code}  # fmt: skip
        if detail:
            doc["detail"] = detail[:1000]
        self._send(code, json.dumps(doc).encode(), "application/problem+json", headers)

    def _authorised(self) -> bool:
        repo = self.server_repo
        if repo.token is None and repo.basic is None:
            return True
        auth = self.headers.get("Authorization", "")
        if repo.token is not None and auth == f"Bearer {repo.token}":
            return True
        if repo.basic is not None:
            want = base64.b64encode(f"{repo.basic[0]}:{repo.basic[1]}".encode()).decode()
            if auth == f"Basic {want}":
                return True
        self._problem(401, "missing or wrong credentials", {"WWW-Authenticate": 'Bearer realm="epcis"'})
        return False

    def _path(self) -> str | None:
        base = self.server_repo.base_path
        path = self.path.split("?", 1)[0]
        return path[len(base):] if path.startswith(base + "/") else None

    def do_OPTIONS(self) -> None:
        """Capture endpoint discovery."""
        repo = self.server_repo
        if self._path() != "/capture":
            self._problem(404)
            return
        self._send(204, headers={"GS1-EPCIS-Capture-Limit": str(repo.capture_limit),
                                 "GS1-EPCIS-Capture-File-Size-Limit": str(repo.file_size_limit),
                                 "GS1-Capture-Error-Behaviour": "rollback, proceed",
                                 "Allow": "OPTIONS, POST"})  # fmt: skip

    def do_GET(self) -> None:
        """The capture job."""
        path = self._path()
        if not self._authorised():
            return
        if path is None or not path.startswith("/capture/"):
            self._problem(404)
            return
        doc = self.server_repo.poll(path[len("/capture/"):])
        if doc is None:
            self._problem(404, "no such capture job")
            return
        self._send(200, json.dumps(doc).encode())

    def do_POST(self) -> None:
        """Capture an EPCISDocument."""
        repo = self.server_repo
        length = int(self.headers.get("Content-Length") or 0)
        code = self._post(length)
        with repo.lock:
            repo.posts += 1
            repo.statuses.append(code)

    def _post(self, length: int) -> int:
        repo = self.server_repo
        if length > repo.file_size_limit:
            self._problem(413, f"{length} bytes exceed {repo.file_size_limit}",
                          {"GS1-EPCIS-Capture-File-Size-Limit": str(repo.file_size_limit), "Connection": "close"})
            self.close_connection = True
            return 413
        raw = self.rfile.read(length) if length > 0 else b""
        if self._path() != "/capture":
            self._problem(404)
            return 404
        if not self._authorised():
            return 401
        ctype = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if ctype not in ("application/json", "application/ld+json"):
            self._problem(415, f"{ctype or 'no Content-Type'}: send application/ld+json or application/json")
            return 415
        version = self.headers.get("GS1-EPCIS-Version")
        if version is not None and not version.startswith("2."):
            self._problem(406, f"GS1-EPCIS-Version {version} not served (2.0.0 is)")
            return 406
        with repo.lock:
            scripted = repo.script.popleft() if repo.script else None
        if scripted is not None:
            self._problem(scripted, "scripted failure", {"Retry-After": "1"} if scripted in (429, 503) else None)
            return scripted
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            self._problem(400, f"not JSON: {exc}")
            return 400
        if not isinstance(doc, dict) or doc.get("type") not in ("EPCISDocument", "EPCISQueryDocument"):
            self._problem(400, "an EPCISDocument is expected")
            return 400
        events = doc.get("epcisBody", {}).get("eventList", [])
        if isinstance(events, list) and len(events) > repo.capture_limit:
            self._problem(413, f"{len(events)} events exceed the capture limit {repo.capture_limit}",
                          {"GS1-EPCIS-Capture-Limit": str(repo.capture_limit)})
            return 413
        if repo._validator is not None:
            err = next(iter(repo._validator.iter_errors(doc)), None)
            if err is not None:
                with repo.lock:
                    repo.invalid += 1
                self._problem(400, f"schema: {'/'.join(map(str, err.absolute_path))}: {err.message}"[:1000])
                return 400
        behaviour = self.headers.get("GS1-Capture-Error-Behaviour", "rollback").strip().lower()
        job = repo.capture(doc, "proceed" if behaviour == "proceed" else "rollback")
        self._send(202, headers={"Location": f"{repo.location_base or repo.base_path}/capture/{job.id}"})
        return 202
