"""Test devices for the spine: the benchmark's counting `load` family (bench/load.py), under the names the
spine tests use, and a stock claim helper. They fake a device, never a part of the product."""

from __future__ import annotations

from datetime import datetime

from bench.load import Count, Counted, CountedAlert, CountedTelemetry
from bench.load import LoadDriver as CountingDriver
from bench.load import LoadProcessor as CountingProcessor
from edge.processing import StockUpdate

__all__ = ["Count", "Counted", "CountedAlert", "CountedTelemetry", "CountingDriver", "CountingProcessor",
           "stock_update"]


def stock_update(shelf: str, sku: str, count: int, now: datetime) -> StockUpdate:
    """A weight-origin absolute count claim."""
    return StockUpdate(shelf=shelf, sku=sku, time=now, origin="weight", source="test-shelf", count=count)
