"""schemathesis against the OpenAPI document served by a real gateway (edge/api over HTTP on 127.0.0.1).

The gateway (rules engine, API, private mosquitto as hub) runs in its own thread and event loop; schemathesis
loads `/openapi.json` from it and, for every operation, sends generated requests with the admin's bearer
token: schema-valid ones (positive) and schema-violating ones (negative). Every response must be no 5xx,
no dropped connection, and conform to the served schema (status code documented, content type, body schema);
valid data must not be rejected and invalid data must not be accepted.

`/api/v1/events` is an endless text/event-stream and is left out (tests/api covers it). Short profile:
20 examples per operation and mode; EDGE_FUZZ=long: 500.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from edge.brokers import Mosquitto
from edge.gateway import Gateway
from tests.api.conftest import TOKENS, manifest_for_tests

N = 500 if os.environ.get("EDGE_FUZZ") == "long" else 20
SKIPPED = {"GET /api/v1/events"}  # endless SSE stream
# Bodies validated beyond what a JSON schema says (a printable staff name, a known shopper/beacon, rules that
# fit the planogram): a schema-valid body may be refused with a documented 4xx, so positive_data_acceptance
# does not apply; every other check does.
SEMANTIC = {"POST /api/v1/alerts/{alert_id}/ack", "POST /api/v1/sightings", "POST /api/v1/rules/reload",
            "POST /api/v1/alerts/{alert_id}/resolve",  # a printable reason
            "POST /api/v1/alerts/{alert_id}/snooze",  # a printable staff name
            "POST /api/v1/shelves/{shelf}/restocking",  # duration_s up to the rules' mute_max_s (runtime config)
            "POST /api/v1/pairings/redeem",  # a code the admin opened
            "POST /api/v1/manifest",  # a manifest that validates for this store, a version above the running one
            "POST /api/v1/orders",  # due ahead of the store's clock, SKUs and GTINs of its catalog, orders.max_*
            # an alert kind the rules engine knows, a cursor this gateway handed out
            "GET /api/v1/alerts", "GET /api/v1/export/alerts.csv"}
# A refusal is a refusal: 413 (body over api.max_body_bytes) rejects negative data as well as 400/422 do.
CONFIG = schemathesis.Config.from_dict({"checks": {"negative_data_rejection": {"expected-statuses": [
    "400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]}}})
pytestmark = pytest.mark.timeout(600 if N > 20 else 120)


class ServedGateway:
    """A real Gateway with its API in a background thread's event loop; `base` is its URL."""

    def __init__(self, tmp: Path, hub_url: str) -> None:
        self.tmp = tmp
        self.hub_url = hub_url
        self.base = ""
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="gateway", daemon=True)

    def __enter__(self) -> ServedGateway:
        self._thread.start()
        if not self._ready.wait(30) or self.error is not None:
            raise RuntimeError(f"gateway did not start: {self.error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to the test thread
            self.error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        manifest = manifest_for_tests(self.tmp)
        async with Gateway(manifest, hub_url=self.hub_url, data_dir=self.tmp / "var", tick_interval=0.1) as gw:
            assert gw.api is not None
            self.base = f"http://127.0.0.1:{gw.api.port}"
            self._ready.set()
            await self._stop.wait()
            await gw.rules.stop()


@pytest.fixture
def served(mosquitto: Mosquitto, tmp_path: Path) -> Iterator[ServedGateway]:
    """The running gateway."""
    with ServedGateway(tmp_path, mosquitto.url) as s:
        yield s


POSITIVE_CHECKS: list[Any] = [not_a_server_error, status_code_conformance, content_type_conformance,
                              response_schema_conformance, positive_data_acceptance]
NEGATIVE_CHECKS: list[Any] = [not_a_server_error, status_code_conformance, content_type_conformance,
                              response_schema_conformance, negative_data_rejection]


def operation(result: Any) -> Any:
    """The APIOperation of a `get_all_operations()` result (an invalid operation schema fails the test)."""
    if isinstance(result, Err):
        pytest.fail(f"invalid operation in the served schema: {result.err()}")
    return result.ok()


def fuzz_operation(op: Any, base: str, mode: GenerationMode, session: requests.Session) -> None:
    """Run `N` generated cases of one operation; raises the first (shrunk) failure."""
    checks = POSITIVE_CHECKS if mode is GenerationMode.POSITIVE else NEGATIVE_CHECKS
    if op.label in SEMANTIC:
        checks = [c for c in checks if c is not positive_data_acceptance]
    headers = {"Authorization": f"Bearer {TOKENS['admin']}"}

    @settings(max_examples=N, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate, Phase.shrink])
    @given(case=op.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        if "authorization" not in {k.lower() for k in (case.headers or {})}:
            case.headers = {**(case.headers or {}), **headers}
        response = case.call(base_url=base, session=session, timeout=10)
        case.validate_response(response, checks=checks)

    run()


def test_served_openapi_holds_under_generated_requests(served: ServedGateway) -> None:
    schema = schemathesis.openapi.from_url(f"{served.base}/openapi.json", config=CONFIG)
    ops = [operation(r) for r in schema.get_all_operations()]
    failures: list[str] = []
    ran = 0
    with requests.Session() as session:
        for op in ops:
            if op.label in SKIPPED:
                continue
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                ran += 1
                try:
                    fuzz_operation(op, served.base, mode, session)
                except Unsatisfiable:
                    assert mode is GenerationMode.NEGATIVE, f"{op.label}: no valid request can be generated"
                    ran -= 1  # nothing in this operation's schema can be violated (no parameters, free strings)
                except (Exception, BaseExceptionGroup) as exc:  # collect every operation's failure
                    failures.append(f"{op.label} [{mode.value}]: {type(exc).__name__}: {str(exc)[:1500]}")
    assert served.error is None, served.error
    assert not failures, f"{len(failures)} of {ran} operation/mode runs failed:\n\n" + "\n\n".join(failures)
    labels = {op.label for op in ops}
    assert {"GET /api/v1/stock", "POST /api/v1/alerts/{alert_id}/ack", "POST /api/v1/sightings",
            "POST /api/v1/rules/reload", "GET /api/v1/traffic"} <= labels, labels
    assert ran >= 15, f"only {ran} operation/mode runs"
