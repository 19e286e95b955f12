"""CSV export of stock and alerts for the local API (RFC 4180 text, UTF-8 with a BOM so spreadsheet programs
read Chinese names right).

A cell that starts like a formula (`=`, `+`, `-`, `@`, tab, CR) is prefixed with `'` (OWASP "CSV injection"),
so a name or message from outside never runs as a formula in the spreadsheet that opens the file."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

STOCK_COLUMNS = (
    "shelf", "sku", "gtin", "name", "zone", "category", "unit", "count", "state", "min", "par", "capacity",
    "version", "origin", "updated", "verified", "stale", "stale_reason", "conflict", "conflict_reason",
)
ALERT_COLUMNS = (
    "id", "kind", "state", "shelf", "sku", "device", "message", "count", "threshold", "restock_qty",
    "escalation_level", "opened_at", "updated_at", "acknowledged_at", "acknowledged_by", "closed_at",
    "close_reason",
)
MAX_ROWS = 10_000  # an export of alerts holds at most this many rows (the newest)
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if isinstance(value, str) and text.startswith(_FORMULA):
        return "'" + text
    return text


def to_csv(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    """The rows as CSV text with a header line of `columns` (missing keys are empty cells)."""
    out = io.StringIO()
    out.write("\ufeff")
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([_cell(r.get(c)) for c in columns])
    return out.getvalue()
