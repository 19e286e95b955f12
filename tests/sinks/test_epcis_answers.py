"""Whatever a repository answers (status, headers, body), the capture sink classifies it without raising, with every
number it takes from the answer bounded. Short profile 200 examples; EDGE_FUZZ=long: 10,000."""

from __future__ import annotations

import os
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sinks.config import EpcisCaptureConfig
from sinks.epcis_capture import MAX_RETRY_AFTER_S, CaptureReactor, CaptureWorker, _job_errors, _retry_after

N = 10_000 if os.environ.get("EDGE_FUZZ") == "long" else 200
FUZZ = settings(max_examples=N, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WORKER = CaptureWorker(None, EpcisCaptureConfig(url="http://127.0.0.1:1/epcis"), CaptureReactor(1))  # type: ignore[arg-type]
FLOAT = st.floats(allow_nan=False, allow_infinity=False)
SCALAR = st.none() | st.booleans() | st.integers() | FLOAT | st.text(max_size=20)
JSON = st.recursive(SCALAR,
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)  # fmt: skip
HEADER = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)


@FUZZ
@given(status=st.integers(100, 599), retry=HEADER, limit=HEADER,
       body=st.binary(max_size=300) | JSON.map(lambda j: httpx.Response(200, json=j).content))  # fmt: skip
def test_any_answer_is_classified(status: int, body: bytes, retry: str, limit: str) -> None:
    resp = httpx.Response(status, content=body, headers={"Retry-After": retry, "GS1-EPCIS-Capture-Limit": limit})
    out = WORKER._problem(resp)
    assert out.kind in ("done", "split", "smaller", "retry", "refused")
    assert out.retry_after is None or 0 <= out.retry_after <= MAX_RETRY_AFTER_S
    assert out.limit is None or 0 < out.limit < 10**6
    assert len(out.error) <= 300


@FUZZ
@given(job=st.dictionaries(st.sampled_from(["errors", "running", "success", "x"]), JSON, max_size=4))
def test_any_job_document_gives_a_short_reason(job: dict[str, Any]) -> None:
    assert len(_job_errors(job)) <= 260


@FUZZ
@given(value=HEADER)
def test_retry_after_is_bounded(value: str) -> None:
    got = _retry_after(value)
    assert got is None or 0 <= got <= MAX_RETRY_AFTER_S


def test_retry_after_forms() -> None:
    assert _retry_after("120") == 120.0
    assert _retry_after("99999999") == MAX_RETRY_AFTER_S
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert _retry_after("Fri, 31 Dec 9999 23:59:59 GMT") == MAX_RETRY_AFTER_S  # a date far away is capped
    assert _retry_after("soon") is None
