"""Shared pieces of the manifest schema; family config modules import only this, never `edge.config`."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Ident = Annotated[
    str,
    Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="letters, digits, '_', '.', '-'"),
]
"""An id that is safe inside an MQTT topic level and a URL path segment (no `/`, `+`, `#`)."""

Seconds = Annotated[float, Field(ge=0)]


class StrictModel(BaseModel):
    """Base of every manifest section: unknown fields are errors (they are usually typos)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceConfigBase(StrictModel):
    """Fields every device section has; each family subclasses it with `type: Literal[...]`."""

    id: Ident
    type: str
    name: str = ""
    enabled: bool = True
    zone: Ident | None = Field(default=None, description="where the device is, if it is in one zone")


class AnyDeviceConfig(DeviceConfigBase):
    """First-pass view of a device section: only the common fields are checked, the rest by its family."""

    model_config = ConfigDict(extra="allow", frozen=True)
