"""/metrics as Prometheus reads it: our exposition (edge/metrics.py) parsed by prometheus_client's own
text-format parser, the reference implementation, not by string matching against ourselves."""

from __future__ import annotations

import math

from prometheus_client.parser import text_string_to_metric_families

from edge.metrics import Metrics


def _parsed(text: str) -> dict[str, tuple[str, str, dict[tuple[tuple[str, str], ...], float]]]:
    out = {}
    for fam in text_string_to_metric_families(text):
        out[fam.name] = (fam.type, fam.documentation,
                         {tuple(sorted(s.labels.items())): s.value for s in fam.samples})
    return out


def test_values_keep_every_digit() -> None:
    # before: values were printed with '{:g}' (6 significant digits): a counter at 1,234,567 read
    # 1.23457e+06, so rate() over it moved in steps of 10 and a byte counter lost its kilobytes
    m = Metrics()
    m.inc("edge_events_total", 1_234_567.0, type="retail.stock.changed.v1")
    m.inc("edge_heap_bytes_total", 2.0**53)
    m.set("edge_lag_seconds", 0.000123456789)
    m.set("edge_nan", math.nan)
    m.set("edge_inf", math.inf)
    fams = _parsed(m.render())
    assert fams["edge_events"][2] == {(("type", "retail.stock.changed.v1"),): 1_234_567.0}
    assert fams["edge_heap_bytes"][2] == {(): 2.0**53}
    assert fams["edge_lag_seconds"][2] == {(): 0.000123456789}
    assert math.isnan(fams["edge_nan"][2][()])
    assert fams["edge_inf"][2] == {(): math.inf}


def test_labels_and_help_escaped() -> None:
    m = Metrics()
    nasty = 'shelf "a"\\b\nc'
    m.describe("edge_device_readings_total", 'readings per device\\driver\n(two lines)')
    m.inc("edge_device_readings_total", device=nasty)
    m.gauge_fn("edge_device_up", lambda: {(("device", nasty), ("state", "online")): 1.0})
    fams = _parsed(m.render())
    kind, doc, samples = fams["edge_device_readings"]
    assert kind == "counter"
    assert doc == 'readings per device\\driver\n(two lines)'
    assert samples == {(("device", nasty),): 1.0}
    assert fams["edge_device_up"][0] == "gauge"
    assert fams["edge_device_up"][2] == {(("device", nasty), ("state", "online")): 1.0}
