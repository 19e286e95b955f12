"""Retained `state/info` and `state/catalog`: what HQ needs to read a store without asking it.

`state/info`: the store (id, name, time zone, opening hours, GLN), the gateway's version, the manifest's
schema version and SHA-256, and every device with its state. `state/catalog`: SKU <-> GTIN-14, names (per
language), unit, category, case pack. Both are JSON documents with a `version` that increases by one per
change of their content (persisted in the `retained` table, so it keeps increasing across restarts); the
gateway submits them at start when they differ from what was last published, and `state/info` again
whenever a device changes state.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import orjson

from edge import __version__
from edge.config import Manifest
from edge.runtime import DeviceStatus

INFO = "state/info"
CATALOG = "state/catalog"


def manifest_hash(manifest: Manifest) -> str:
    """SHA-256 (hex) of the manifest's canonical JSON: equal manifests hash equal, whatever their layout."""
    # serialize_as_any: the device sections as their family's model (the field's type knows only the common fields)
    doc = manifest.model_dump(mode="json", serialize_as_any=True)
    return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()


def info_doc(manifest: Manifest, devices: Iterable[DeviceStatus]) -> dict[str, Any]:
    """The `state/info` content (without version/updated)."""
    s = manifest.store
    return {
        "store": s.id, "name": s.name or None, "timezone": s.timezone, "gln": s.gln,
        "opening_hours": {"open": s.opening_time, "close": s.closing_time},
        "gateway_version": __version__,
        "manifest": {"schema_version": manifest.version, "sha256": manifest_hash(manifest)},
        "devices": [{"device": d.device, "type": d.device_type, "state": d.state, "error": d.error}
                    for d in sorted(devices, key=lambda d: d.device)],
    }  # fmt: skip


def catalog_doc(manifest: Manifest) -> dict[str, Any]:
    """The `state/catalog` content (without version/updated)."""
    return {"store": manifest.store.id, "items": [
        {"sku": c.sku, "gtin": c.gtin, "name": c.name or None, "names": dict(c.names), "unit": c.unit,
         "category": c.category or None, "case_pack": c.case_pack}
        for c in sorted(manifest.catalog, key=lambda c: c.sku)]}  # fmt: skip


class RetainedDocs:
    """Versioned retained documents by topic suffix: a new version only when the content changed."""

    def __init__(self) -> None:
        self._docs: dict[str, dict[str, Any]] = {}

    def load(self, rows: Iterable[dict[str, Any]], topic_root: str) -> None:
        """Restore the last published documents from `retained` rows (topic, payload, version)."""
        for r in rows:
            topic = str(r.get("topic", ""))
            suffix = topic[len(topic_root) + 1:] if topic.startswith(topic_root + "/") else ""
            if suffix not in (INFO, CATALOG):
                continue
            try:
                doc = orjson.loads(r["payload"])
                doc["version"] = int(r["version"])
            except (orjson.JSONDecodeError, TypeError, KeyError, ValueError):
                continue
            self._docs[suffix] = doc

    def get(self, suffix: str) -> dict[str, Any] | None:
        """The last document of `suffix`, if any."""
        return self._docs.get(suffix)

    def update(self, suffix: str, content: dict[str, Any], now: datetime) -> tuple[dict[str, Any], int] | None:
        """(document, version) when `content` differs from the last one, else None."""
        last = self._docs.get(suffix)
        if last is not None and {k: v for k, v in last.items() if k not in ("version", "updated")} == content:
            return None
        version = (int(last["version"]) if last is not None else 0) + 1
        doc = {**content, "version": version, "updated": now.isoformat().replace("+00:00", "Z")}
        self._docs[suffix] = doc
        return doc, version
