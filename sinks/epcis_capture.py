"""EPCIS capture: the RFID family's EPCIS 2.0 ObjectEvents delivered to an EPCIS repository (GS1 EPCIS 2.0 §12,
REST bindings: github gs1/EPCIS "REST Bindings/openapi.json"; docs/epcis.md).

Durable like the alert webhooks (rules/webhooks.py): `CaptureReactor` turns each `EpcisObjectEvent` into an
`epcis_capture` row written in the same commit as the event, so a restart (or kill -9) loses none. `CaptureWorker`
takes the oldest rows in batches (<= batch_max_events, <= batch_max_bytes, or older than batch_wait_s), POSTs them
as one EPCISDocument to `{url}/capture` (Content-Type application/ld+json, GS1-EPCIS-Version 2.0.0,
GS1-Capture-Error-Behaviour), follows the `202 Accepted` + `Location` capture job with GET until it is no longer
`running`, and deletes the rows once the job reports `success`. A crash between 202 and the delete sends the batch
again: repositories deduplicate by eventID (our eventIDs are the CBV 2.0 event hash).

Answers (RFC 7807 problem responses, EPCIS exception types):
- 202: follow the job. Job `success: true` -> done. Job finished with `success: false` (rollback: the whole batch
  was rejected) -> the batch is split in halves until the rejected events stand alone; those are marked `failed`.
- 409 (ResourceAlreadyExists): the events are there already -> done.
- 413 (CaptureLimitExceeded): the batch limit drops to the `GS1-EPCIS-Capture-Limit` header (or half) and the same
  events are sent in smaller documents; a single event too large is `failed`.
- 400 / 422 (ValidationException, unprocessable): split like a rejected job; a single event -> `failed`.
- 401 / 403 / 406 / 415 (credentials, versions, media type): the repository refuses us, not the events: kept,
  retried with backoff, the sink's status says `fault` with the reason (device health in the dashboard).
- 408 / 429 / 5xx / network errors / job timeouts: kept, retried with backoff (Retry-After honoured, bounded).
A `failed` row is kept (never silently dropped): counted in `edge_epcis_capture_failed_total`, logged once per
batch, the sink's status is `fault` until a later batch succeeds, and `epcis.capture.status` shows it.

Disk: the rows' bytes are bounded by `budget_mb`; over it, new events are not queued and a `Gap` event
(gap_source "epcis-capture", the capture numbers skipped) announces the range once room returns (or every 60 s).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

import orjson

from drivers.rfid.epcis import epcis_document_bytes
from drivers.rfid.events import EpcisObjectEvent
from edge.events import DeviceStatusChanged, Event, Gap
from edge.runtime import Delete, DeviceStatus, Upsert
from sinks.config import EpcisCaptureConfig

if TYPE_CHECKING:
    import httpx

    from edge.metrics import Metrics
    from edge.runtime import GatewayView

log = logging.getLogger(__name__)

TABLE = "epcis_capture"
NAME = "epcis-capture"  # the sink's name in device health, gap events and metrics
EPCIS_VERSION = "2.0.0"
GAP_EVERY_S = 60.0
MAX_RETRY_AFTER_S = 3600.0
MAX_JOB_BODY = 1024 * 1024  # a capture job or problem document larger than this is not read


class CaptureReactor:
    """Reactor: every EpcisObjectEvent becomes a pending `epcis_capture` row in the event's own commit."""

    def __init__(self, budget_bytes: int, next_seq: int = 1, queued_bytes: int = 0) -> None:
        self.budget_bytes = budget_bytes
        self.next_seq = next_seq  # capture number of the next event (dropped ones use theirs up too)
        self.queued_bytes = queued_bytes  # bytes of the rows in the table (the worker subtracts what it deletes)
        self.queued = 0
        self.dropped = 0
        self._gap: list[int] | None = None  # [first, last, count] dropped since the last gap event
        self._gap_since = 0.0

    def react(self, event: Event, now: datetime) -> list[object]:
        """Queue the ObjectEvent for capture (or drop it over budget); announce a finished gap."""
        if not isinstance(event, EpcisObjectEvent):
            return []
        seq = self.next_seq
        self.next_seq += 1
        body = orjson.dumps({k: v for k, v in event.document.items() if k != "@context"})
        if self.queued_bytes + len(body) > self.budget_bytes:
            self.dropped += 1
            if self._gap is None:
                self._gap, self._gap_since = [seq, seq, 1], now.timestamp()
            else:
                self._gap[1], self._gap[2] = seq, self._gap[2] + 1
            return self._gap_event(now) if now.timestamp() - self._gap_since >= GAP_EVERY_S else []
        self.queued_bytes += len(body)
        self.queued += 1
        row = {"seq": seq, "event_id": event.event_id, "body": body.decode(), "size": len(body), "state": "pending",
               "created": now.timestamp(), "last_error": None}  # fmt: skip
        return [*self._gap_event(now), Upsert(TABLE, row)]

    def tick(self, now: datetime) -> list[object]:
        """A gap still growing is announced every GAP_EVERY_S."""
        if self._gap is not None and now.timestamp() - self._gap_since >= GAP_EVERY_S:
            return self._gap_event(now)
        return []

    def _gap_event(self, now: datetime) -> list[object]:
        if self._gap is None:
            return []
        first, last, n = self._gap
        self._gap = None
        return [Gap(source="gateway", time=now, gap_source=NAME, first=first, last=last, dropped=n,
                    event_class="epcis", reason="epcis capture disk budget")]  # fmt: skip


@dataclass
class _Outcome:
    """What one POST (and its job) said about a batch."""

    kind: str  # "done" | "split" | "smaller" | "retry" | "refused"
    error: str = ""
    limit: int | None = None  # 413: the repository's GS1-EPCIS-Capture-Limit
    retry_after: float | None = None


@dataclass
class CaptureStats:
    """Counters of the worker (also exported as metrics)."""

    documents: int = 0
    captured: int = 0
    failed: int = 0
    retries: int = 0
    splits: int = 0
    last_error: str | None = None
    errors: dict[str, int] = field(default_factory=dict)


class CaptureWorker:
    """Sends the queued rows to the repository, oldest first, one document at a time."""

    def __init__(self, gw: GatewayView, cfg: EpcisCaptureConfig, reactor: CaptureReactor,
                 metrics: Metrics | None = None, idle_s: float = 0.2) -> None:  # fmt: skip
        self.gw = gw
        self.cfg = cfg
        self.reactor = reactor
        self.metrics = metrics
        self.idle_s = idle_s
        self.limit = cfg.batch_max_events  # lowered by a 413's GS1-EPCIS-Capture-Limit
        self.stats = CaptureStats()
        self.state = "online"  # "online" | "fault" (the DeviceStatus of the sink)
        self.error: str | None = None
        self.last_ok: datetime | None = None
        self._failures = 0  # consecutive transient failures: the backoff
        self.failed_rows = 0  # rows in state `failed` (restored at start)
        self._client: httpx.AsyncClient | None = None
        self._headers = self._auth_headers()

    # ---- status ----
    def status(self) -> DeviceStatus:
        """The sink as a DeviceStatus (device health)."""
        return DeviceStatus(device=NAME, device_type=NAME, state=self.state, last_seen=self.last_ok,
                            error=self.error, restarts=0, malformed=self.stats.failed,
                            readings=self.stats.captured)  # fmt: skip

    def _set_state(self, state: str, error: str | None) -> None:
        """Change the sink's status; a transition (not a new error text) is announced as a device status event."""
        if state == self.state:
            self.error = error
            return
        self.state, self.error = state, error
        now = self.gw.clock.now()
        ev = DeviceStatusChanged(source=NAME, time=now, subject=NAME, device=NAME, device_type=NAME,
                                 state=state, error=error, last_seen=self.last_ok)  # fmt: skip
        self.gw.emit([ev])

    def _auth_headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/ld+json", "GS1-EPCIS-Version": EPCIS_VERSION,
             "GS1-CBV-Version": "2.0.0", "GS1-Capture-Error-Behaviour": self.cfg.error_behaviour,
             "Accept": "application/json, application/problem+json",
             "User-Agent": "smart-store-edge-epcis/1"}  # fmt: skip
        if self.cfg.bearer_token is not None:
            h["Authorization"] = f"Bearer {self.cfg.bearer_token}"
        elif self.cfg.username is not None and self.cfg.password is not None:
            cred = base64.b64encode(f"{self.cfg.username}:{self.cfg.password}".encode()).decode()
            h["Authorization"] = f"Basic {cred}"
        return h

    # ---- loop ----
    async def run(self) -> None:
        """Deliver until cancelled."""
        import httpx

        self._client = httpx.AsyncClient(follow_redirects=False, timeout=self.cfg.timeout_s)
        try:
            while True:
                try:
                    wait = await self.run_once()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a closed database at shutdown, a bug: logged, retried later
                    log.warning("epcis capture: %s: %s", type(exc).__name__, exc)
                    wait = self._backoff()
                await asyncio.sleep(wait)
        finally:
            await self._client.aclose()

    async def run_once(self, *, flush: bool = False) -> float:
        """Send one due batch if there is one; returns how long to wait before the next call."""
        rows = await self.gw.query(
            f"SELECT seq, body, size, created FROM {TABLE} WHERE state = 'pending' ORDER BY seq LIMIT ?",  # noqa: S608
            (self.limit,),
        )
        if not rows:
            return self.idle_s
        batch: list[dict[str, Any]] = []
        size = 0
        for r in rows:
            if batch and size + int(r["size"]) > self.cfg.batch_max_bytes:
                break
            batch.append(r)
            size += int(r["size"])
        full = len(batch) < len(rows) or len(batch) >= self.limit
        age = self.gw.clock.now().timestamp() - float(batch[0]["created"])
        if not (flush or full or age >= self.cfg.batch_wait_s):
            return min(self.idle_s, max(self.cfg.batch_wait_s - age, 0.01))
        return await self._deliver(batch)

    async def _deliver(self, batch: list[dict[str, Any]]) -> float:
        outcome = await self._send(batch)
        if outcome.kind == "done":
            await self._delete(batch)
            self._failures = 0
            self.last_ok = self.gw.clock.now()
            if self.failed_rows == 0:  # rejected events keep the sink at `fault` (epcis.capture.status)
                self._set_state("online", None)
            return 0.0
        if outcome.kind == "smaller":
            new = min(outcome.limit or len(batch) // 2, len(batch) // 2) if len(batch) > 1 else 0
            if new >= 1:
                self.stats.splits += 1
                self.limit = new
                log.warning("epcis capture: the repository refused %d events in one document (413); sending at "
                            "most %d per document from now on", len(batch), new)  # fmt: skip
                return 0.0
            await self._fail(batch, outcome.error)
            return 0.0
        if outcome.kind == "split":
            if len(batch) == 1:
                await self._fail(batch, outcome.error)
                return 0.0
            self.stats.splits += 1
            half = len(batch) // 2
            delay = await self._deliver(batch[:half])  # bisect: log2(1000) < 11 levels, each half sent once
            if delay > 0:
                return delay  # the repository went away meanwhile: the second half waits (order kept)
            return await self._deliver(batch[half:])
        # retry / refused: keep the rows
        self._failures += 1
        self.stats.retries += 1
        self._count_error(outcome.error)
        if outcome.kind == "refused" or self._failures >= 3:  # a blip is not a fault; a refusal is at once
            self._set_state("fault", outcome.error)
        if self._failures == 1 or self._failures % 20 == 0:
            log.warning("epcis capture: %d events kept for retry (failure %d): %s", len(batch), self._failures,
                        outcome.error)  # fmt: skip
        delay = self._backoff()
        if outcome.retry_after is not None:
            delay = max(delay, min(outcome.retry_after, MAX_RETRY_AFTER_S))
        return delay

    def _backoff(self) -> float:
        return float(min(self.cfg.backoff_s * 2 ** max(self._failures - 1, 0), self.cfg.backoff_max_s))

    def _count_error(self, error: str) -> None:
        key = error.split(":", 1)[0][:40]
        self.stats.errors[key] = self.stats.errors.get(key, 0) + 1
        self.stats.last_error = error
        if self.metrics is not None:
            self.metrics.inc("edge_epcis_capture_errors_total", reason=key)

    async def _delete(self, batch: list[dict[str, Any]]) -> None:
        await self.gw.emit_committed([], [Delete(TABLE, {"seq": r["seq"]}) for r in batch])
        self.reactor.queued_bytes -= sum(int(r["size"]) for r in batch)
        self.stats.captured += len(batch)
        self.stats.documents += 1
        if self.metrics is not None:
            self.metrics.inc("edge_epcis_captured_total", float(len(batch)))

    async def _fail(self, batch: list[dict[str, Any]], error: str) -> None:
        """Events the repository rejects for what they are: kept as `failed` rows, counted, surfaced."""
        seqs = [int(r["seq"]) for r in batch]
        rows = await self.gw.query(f"SELECT * FROM {TABLE} WHERE seq IN ({','.join('?' * len(seqs))})", seqs)  # noqa: S608
        writes = [Upsert(TABLE, {**r, "state": "failed", "last_error": error[:300]}) for r in rows]
        await self.gw.emit_committed([], writes)
        self.stats.failed += len(batch)
        self.failed_rows += len(batch)
        self._count_error(error)
        if self.metrics is not None:
            self.metrics.inc("edge_epcis_capture_failed_total", float(len(batch)))
        log.error("epcis capture: the repository rejected %d event(s) (capture numbers %d..%d): %s; kept as failed "
                  "in %s", len(batch), seqs[0], seqs[-1], error, TABLE)  # fmt: skip
        self._set_state("fault", f"repository rejected {self.failed_rows} event(s), last: {error}"[:300])

    # ---- HTTP ----
    async def _send(self, batch: list[dict[str, Any]]) -> _Outcome:
        import httpx

        assert self._client is not None
        body = epcis_document_bytes([str(r["body"]).encode() for r in batch], self.gw.clock.now())
        url = f"{self.cfg.url}/capture"
        try:
            resp = await self._client.post(url, content=body, headers=self._headers)
            if resp.status_code == 202:
                location = resp.headers.get("Location")
                if not location or len(location) > 2048:
                    return _Outcome("retry", "202 without a usable Location header")
                job_url = urljoin(url, location)
                if _origin(job_url) != _origin(url):  # our credentials go to the repository only
                    return _Outcome("refused", f"202 Location {job_url[:200]} is not on {_origin(url)}")
                return await self._follow(job_url)
            return self._problem(resp)
        except httpx.HTTPError as exc:
            return _Outcome("retry", f"{type(exc).__name__}: {exc}"[:300])

    async def _follow(self, job_url: str) -> _Outcome:
        import httpx

        assert self._client is not None
        deadline = time.monotonic() + self.cfg.job_timeout_s
        headers = {k: v for k, v in self._headers.items() if k in ("Authorization", "User-Agent")}
        headers["Accept"] = "application/json"
        first = True
        while True:
            if not first:
                await asyncio.sleep(self.cfg.poll_interval_s)
            first = False
            try:
                resp = await self._client.get(job_url, headers=headers)
            except httpx.HTTPError as exc:
                if time.monotonic() > deadline:
                    return _Outcome("retry", f"capture job {job_url}: {type(exc).__name__}: {exc}"[:300])
                continue
            if resp.status_code != 200:
                out = self._problem(resp)
                out.error = f"capture job {job_url}: {out.error}"[:300]
                return out if out.kind == "refused" and resp.status_code in (401, 403) else _Outcome("retry", out.error)
            job = _json(resp)
            if not isinstance(job, dict) or not isinstance(job.get("running"), bool):
                return _Outcome("retry", f"capture job {job_url}: not a CaptureJob document")
            if not job["running"]:
                if job.get("success") is True:
                    return _Outcome("done")
                return _Outcome("split", f"capture job rejected: {_job_errors(job)}"[:300])
            if time.monotonic() > deadline:
                return _Outcome("retry", f"capture job {job_url} still running after {self.cfg.job_timeout_s:g} s")

    def _problem(self, resp: httpx.Response) -> _Outcome:
        code = resp.status_code
        doc = _json(resp)
        detail = ""
        if isinstance(doc, dict):
            detail = " ".join(str(doc.get(k)) for k in ("type", "title", "detail") if isinstance(doc.get(k), str))
        error = f"HTTP {code}{': ' + detail if detail else ''}"[:300]
        retry_after = _retry_after(resp.headers.get("Retry-After"))
        if code == 409:
            return _Outcome("done")  # already captured (ResourceAlreadyExists)
        if code == 413:
            limit = resp.headers.get("GS1-EPCIS-Capture-Limit", "")
            return _Outcome("smaller", error, limit=int(limit) if limit.isdigit() and 0 < int(limit) < 10**6 else None)
        if code in (400, 422):
            return _Outcome("split", error)
        if code in (401, 403, 404, 405, 406, 415):
            return _Outcome("refused", error, retry_after=retry_after)
        return _Outcome("retry", error, retry_after=retry_after)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        port = None
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


def _json(resp: httpx.Response) -> Any:
    if len(resp.content) > MAX_JOB_BODY:
        return None
    try:
        return orjson.loads(resp.content)
    except orjson.JSONDecodeError:
        return None


def _job_errors(job: dict[str, Any]) -> str:
    errors = job.get("errors")
    if isinstance(errors, list) and errors:
        first = errors[0]
        if isinstance(first, dict):
            return " ".join(str(first.get(k)) for k in ("type", "title", "detail") if first.get(k))[:200] + (
                f" (+{len(errors) - 1} more)" if len(errors) > 1 else "")  # fmt: skip
    return "success false"


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    if value.strip().isdigit():
        return float(min(int(value.strip()), int(MAX_RETRY_AFTER_S)))
    with contextlib.suppress(TypeError, ValueError, IndexError):
        return min(max(0.0, parsedate_to_datetime(value).timestamp() - time.time()), MAX_RETRY_AFTER_S)
    return None


class EpcisCapture:
    """The installed sink: reactor + worker task + status; `install(gw)` builds it."""

    def __init__(self, gw: GatewayView, cfg: EpcisCaptureConfig, metrics: Metrics | None = None) -> None:
        self.gw = gw
        self.cfg = cfg
        self.metrics = metrics
        self.reactor = CaptureReactor(int(cfg.budget_mb * 1024 * 1024))
        self.worker = CaptureWorker(gw, cfg, self.reactor, metrics)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Restore the queue's size and numbering, feed the reactor, start the worker."""
        (row,) = await self.gw.query(f"SELECT coalesce(sum(size), 0) AS b, count(*) AS n FROM {TABLE}")  # noqa: S608
        seqs = await self.gw.query("SELECT seq FROM sqlite_sequence WHERE name = ?", (TABLE,))
        top = await self.gw.query(f"SELECT coalesce(max(seq), 0) AS m FROM {TABLE}")  # noqa: S608
        self.reactor.queued_bytes = int(row["b"])
        self.reactor.next_seq = max([int(top[0]["m"])] + [int(r["seq"]) for r in seqs]) + 1
        (failed,) = await self.gw.query(f"SELECT count(*) AS n FROM {TABLE} WHERE state = 'failed'")  # noqa: S608
        self.worker.failed_rows = int(failed["n"])
        if self.worker.failed_rows:
            self.worker.state = "fault"
            self.worker.error = f"repository rejected {self.worker.failed_rows} event(s) (kept in {TABLE})"
        self.gw.add_reactor(self.reactor)
        self.gw.register_command("epcis.capture.status", self._cmd_status, read_only=True)
        self.gw.register_command("epcis.capture.retry_failed", self._cmd_retry_failed)
        if self.metrics is not None:
            m = self.metrics
            m.describe("edge_epcis_captured_total", "EPCIS events an EPCIS repository accepted (capture job success)")
            m.describe("edge_epcis_capture_failed_total", "EPCIS events the repository rejected (kept as failed)")
            m.describe("edge_epcis_capture_errors_total", "failed capture attempts by reason (retried or failed)")
            m.gauge_fn("edge_epcis_capture_queued_bytes", lambda: {(): float(self.reactor.queued_bytes)})
            m.gauge_fn("edge_epcis_capture_dropped", lambda: {(): float(self.reactor.dropped)})
        self._task = asyncio.create_task(self.worker.run(), name="epcis-capture")

    async def stop(self) -> None:
        """Stop the worker (a batch in flight is sent again at the next start)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def statuses(self) -> list[DeviceStatus]:
        """Device health entries of the sink."""
        return [self.worker.status()]

    async def _cmd_retry_failed(self, req: Any) -> dict[str, Any]:
        """Send the `failed` rows again (after the repository's operator fixed what refused them)."""
        rows = await self.gw.query(f"SELECT * FROM {TABLE} WHERE state = 'failed' ORDER BY seq")  # noqa: S608
        await self.gw.emit_committed([], [Upsert(TABLE, {**r, "state": "pending", "last_error": None}) for r in rows])
        self.worker.failed_rows = 0
        self.worker._set_state("online", None)
        return {"requeued": len(rows)}

    async def _cmd_status(self, req: Any) -> dict[str, Any]:
        counts = await self.gw.query(f"SELECT state, count(*) AS n FROM {TABLE} GROUP BY state")  # noqa: S608
        s = self.worker.stats
        return {"state": self.worker.state, "error": self.worker.error, "documents": s.documents,
                "captured": s.captured, "failed": s.failed, "retries": s.retries, "splits": s.splits,
                "dropped": self.reactor.dropped, "queued_bytes": self.reactor.queued_bytes,
                "rows": {str(r["state"]): int(r["n"]) for r in counts}, "batch_limit": self.worker.limit}  # fmt: skip
