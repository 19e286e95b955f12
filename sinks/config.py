"""The manifest's `epcis_capture:` section: where and how the RFID EPCIS events go to an EPCIS 2.0 repository.

Only pydantic and edge.configbase here: edge/config.py imports this module for the manifest schema (as it does
rules/config.py), so nothing of the capture sink itself is loaded by a gateway without the section.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from edge.configbase import Megabytes, PositiveSeconds, StrictModel


class EpcisCaptureConfig(StrictModel):
    """Delivery of the `events/epcis` ObjectEvents to an EPCIS 2.0 repository's REST capture interface."""

    enabled: bool = Field(default=True, description="false keeps the section but captures nothing")
    url: str = Field(pattern=r"^https?://", description="base URL of the repository: POST {url}/capture")
    bearer_token: str | None = Field(default=None, description="Authorization: Bearer; write ${ENV_VAR}")
    username: str | None = Field(default=None, description="HTTP basic auth user (with password)")
    password: str | None = Field(default=None, description="HTTP basic auth password; write ${ENV_VAR}")
    batch_max_events: int = Field(default=1000, ge=1, le=10_000,
                                  description="events per EPCISDocument (the repository may ask for fewer)")
    batch_max_bytes: int = Field(default=4 * 1024 * 1024, ge=4096, le=64 * 1024 * 1024,
                                 description="bytes per EPCISDocument")
    batch_wait_s: PositiveSeconds = Field(default=5.0, description="send a partial batch once its oldest event "
                                          "waited this long")  # fmt: skip
    timeout_s: float = Field(default=30.0, gt=0, le=300, description="per HTTP request, at most 300 s")
    poll_interval_s: float = Field(default=1.0, gt=0, le=60, description="capture job status polling interval")
    job_timeout_s: float = Field(default=600.0, gt=0, le=86_400,
                                 description="a job still running after this is posted again (the repository "
                                             "deduplicates by eventID)")  # fmt: skip
    backoff_s: PositiveSeconds = Field(default=2.0, description="first retry delay; doubles per failure")
    backoff_max_s: PositiveSeconds = 300.0
    budget_mb: Megabytes = Field(default=50.0, description="disk for events not yet captured; beyond it new events "
                                 "are dropped with a gap event")  # fmt: skip
    error_behaviour: Literal["rollback", "proceed"] = Field(
        default="rollback", description="GS1-Capture-Error-Behaviour: rollback (all or nothing, the default) lets "
        "the gateway find the rejected events by splitting the batch")  # fmt: skip

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        try:
            parts = urlsplit(v)
            parts.port  # noqa: B018 - raises ValueError for a port out of range
        except ValueError:
            raise ValueError(f"{v!r}: the port must be a number in 1..65535") from None
        if not parts.hostname:
            raise ValueError(f"{v!r} has no host: write e.g. https://epcis.example.com/api")
        if parts.query or parts.fragment:
            raise ValueError(f"{v!r}: give the base URL without ?query or #fragment (capture is {{url}}/capture)")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _auth(self) -> EpcisCaptureConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("basic auth needs both username and password (or use bearer_token)")
        if self.bearer_token is not None and self.username is not None:
            raise ValueError("give either bearer_token or username/password, not both")
        return self
