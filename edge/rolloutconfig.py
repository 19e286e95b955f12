"""The manifest's `rollout:` section: how a remote manifest change is gated and kept (edge/rollout.py).

Only pydantic and edge.configbase here: edge/config.py imports this module for the manifest schema.
"""

from __future__ import annotations

from pydantic import Field

from edge.configbase import StrictModel


class RolloutConfig(StrictModel):
    """The health gate after `manifest.apply` and how many versions the data directory keeps (docs/fleet.md)."""

    gate_s: float = Field(
        default=30, gt=0, le=600, allow_inf_nan=False,
        description="seconds the devices that were online before an apply have to be online again (at most "
                    "10 min); else the previous manifest is put back",
    )
    settle_s: float = Field(
        default=2, ge=0, le=60, allow_inf_nan=False,
        description="seconds the gate keeps watching once they are all online: a device that fails again in "
                    "this time fails the gate",
    )
    keep_versions: int = Field(default=20, ge=2, le=1000,
                               description="manifest versions (and history entries) kept in data_dir/manifest/")
    max_bytes: int = Field(default=1024 * 1024, ge=4096, le=4 * 1024 * 1024,
                           description="the largest manifest an apply accepts (bytes of its text; at most 4 MiB)")
