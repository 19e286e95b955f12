"""The manifest's epcis_capture: section: secrets from the environment, errors at their line with the fix."""

from __future__ import annotations

import pytest
import yaml

from edge.config import parse_manifest
from edge.errors import ConfigError
from firmware_sim.world import demo_manifest_text


def manifest_text(section: str) -> str:
    raw = yaml.safe_load(demo_manifest_text())
    raw.pop("epcis_capture", None)
    return yaml.safe_dump(raw) + "epcis_capture:\n" + section


def test_secrets_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EPCIS_TOKEN", "t0ken-from-env")
    text = manifest_text("  url: https://epcis.example.com/api/\n  bearer_token: ${EPCIS_TOKEN}\n")
    m = parse_manifest(text, "m.yaml")
    assert m.epcis_capture is not None
    assert m.epcis_capture.bearer_token == "t0ken-from-env"
    assert m.epcis_capture.url == "https://epcis.example.com/api"  # {url}/capture
    assert m.epcis_capture.batch_max_events == 1000 and m.epcis_capture.error_behaviour == "rollback"


def test_no_section_no_sink() -> None:
    assert parse_manifest(demo_manifest_text(), "m.yaml").epcis_capture is None


@pytest.mark.parametrize(("section", "says"), [
    ("  url: ftp://epcis.example.com\n", "url"),
    ("  url: http://:8080/epcis\n", "has no host"),
    ("  url: http://epcis.example.com:99999\n", "port"),
    ("  url: http://e.example.com/api?x=1\n", "without ?query"),
    ("  url: http://e.example.com\n  username: store\n", "both username and password"),
    ("  url: http://e.example.com\n  username: s\n  password: p\n  bearer_token: t\n", "either bearer_token"),
    ("  url: http://e.example.com\n  batch_max_events: 20000\n", "batch_max_events"),
    ("  url: http://e.example.com\n  timeout_s: 0\n", "timeout_s"),
    ("  url: http://e.example.com\n  error_behaviour: all\n", "error_behaviour"),
    ("  url: http://e.example.com\n  budget_mb: -1\n", "budget_mb"),
    ("  url: http://e.example.com\n  batch_size: 5\n", "batch_size"),  # a typo is refused, not ignored
])
def test_bad_sections_are_refused_at_their_line(section: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_manifest(manifest_text(section), "m.yaml")
    text = str(err.value)
    assert says in text and "m.yaml:" in text
