"""Manifest validation in-process: every broken manifest of config_cases gives exactly its one error, at its
line; bounded numbers, strict SGLN/GLN, duplicate keys, references, and the rules' own bounds."""

from __future__ import annotations

import contextlib
import copy
import math
import os
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from edge.config import load_manifest, parse_manifest
from edge.configbase import check_gln, check_host, check_mqtt_url, check_sgln, gs1_check_digit, load_yaml
from edge.errors import ConfigError
from firmware_sim.world import demo_manifest_text
from rules.config import RestockRule, RulesBody
from tests.edge.config_cases import CASES, Case, manifest, text_of

ROOT = Path(__file__).resolve().parents[2]


def test_base_manifest_is_valid() -> None:
    m = parse_manifest(manifest(), "m.yaml", env={})
    assert m.store.timezone == "Europe/Amsterdam" and [d.id for d in m.devices] == ["rfid-1"]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_broken_manifest_gives_its_one_error(case: Case, tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_bytes(text_of(case))
    with pytest.raises(ConfigError) as info:
        load_manifest(path, env={})
    issues = info.value.issues
    assert len(issues) == 1, [i.render() for i in issues]  # one error per cause
    (issue,) = issues
    assert (issue.line, issue.path) == (case.line, case.path), issue.render()
    assert case.message in issue.message, issue.render()
    assert issue.render().startswith(f"{path}:{case.line}: {case.path or '<root>'}: ")


def test_all_errors_of_a_file_at_once() -> None:
    # a duplicate key does not hide the other problems of the file
    text = manifest(timezone="Asia/Beijing", debounce_s=".inf").replace(
        "  url: mqtt://127.0.0.1:1\n", "  url: mqtts://127.0.0.1:1\n  url: mqtt://127.0.0.1:1\n")
    with pytest.raises(ConfigError) as info:
        parse_manifest(text, "m.yaml", env={})
    assert sorted(i.path for i in info.value.issues) == ["hub.url", "rules.defaults.debounce_s", "store.timezone"]


@pytest.mark.parametrize("value", ["1e12", ".inf", "-.inf", ".nan", "1e999", "1e400"])
def test_rules_refuse_huge_and_infinite_numbers_with_the_field_named(value: str) -> None:
    for field in ("debounce_s", "cooldown_s", "escalate_after_s"):
        with pytest.raises(ValidationError) as info:
            RulesBody.model_validate(load_yaml(f"defaults: {{{field}: {value}}}"))
        assert info.value.errors()[0]["loc"] == ("defaults", field)
    for field in ("mute_max_s", "expire_after_s", "device_fault_grace_s", "velocity_window_s"):
        with pytest.raises(ValidationError) as info:
            RulesBody.model_validate(load_yaml(f"{field}: {value}"))
        assert info.value.errors()[0]["loc"] == (field,)


def test_rules_over_the_command_channel_are_bounded_too() -> None:
    # rules.reload hands the request's JSON to the same model: 1e999 arrives as a float inf
    for bad in ({"defaults": {"debounce_s": math.inf}}, {"defaults": {"min": 10**30}}, {"backroom": {"x": -1}},
                {"cells": [{"shelf": "a", "sku": "b", "cooldown_s": math.nan}]}, {"quiet_hours": ["12:00-13:00"] * 49}):
        with pytest.raises(ValidationError):
            RulesBody.model_validate(bad)
    assert RestockRule.model_validate({"debounce_s": 604800}).debounce_s == 604800


@pytest.mark.parametrize("urn", [
    "urn:epc:id:sgln:0614141.00001.aisle-1", "urn:epc:id:sgln:0614141.00001.0", "urn:epc:id:sgln:061414123456..0",
    "urn:epc:id:sgln:061414.123456.a!b(c)d*e+f,g:h", "urn:epc:id:sgln:0614141.00001.a%2Fb%25c",
    "urn:epc:id:sgln:0614141.00001.abcdefghijklmnopqrst",  # 20 characters
    "urn:epc:id:sgln:0614141.00001.%22%25%26%2F%3C%3E%3Fabcdefghijklm",  # 20 after un-escaping
])
def test_sgln_accepted(urn: str) -> None:
    assert check_sgln(urn) == urn


@pytest.mark.parametrize(("urn", "fix"), [
    ("urn:epc:id:sgln:0614141.0001.x", "12 digits"),
    ("urn:epc:id:sgln:0614141.000012.x", "12 digits"),
    ("urn:epc:id:sgln:06141.4100001.x", "6 to 12 digits"),
    ("urn:epc:id:sgln:0614141.00001.abcdefghijklmnopqrstu", "at most 20"),
    ("urn:epc:id:sgln:0614141.00001.a b", "not allowed"),
    ("urn:epc:id:sgln:0614141.00001.a/b", "not allowed"),
    ("urn:epc:id:sgln:0614141.00001.a%41", "escapes"),
    ("urn:epc:id:sgln:0614141.00001.", ".0"),
    ("urn:epc:id:sgln:0614141.00001", "urn:epc:id:sgln:CompanyPrefix.LocationRef.Extension"),
    ("urn:epc:id:sgtin:0614141.00001.1", "urn:epc:id:sgln:CompanyPrefix.LocationRef.Extension"),
])
def test_sgln_refused(urn: str, fix: str) -> None:
    with pytest.raises(ValueError) as info:
        check_sgln(urn)
    assert fix in str(info.value)


def test_gln_check_digit() -> None:
    # GS1's example GLN 0614141000012 (company prefix 0614141, location 00001: the issue's Digital Link example)
    assert gs1_check_digit("061414100001") == 2
    assert check_gln("0614141000012") == "0614141000012"
    for bad in ("0614141000013", "614141000012", "06141410000120", "061414100001x"):
        with pytest.raises(ValueError):
            check_gln(bad)


def test_duplicate_keys_name_both_lines_and_merge_keys_still_work() -> None:
    assert load_yaml("base: &b {a: 1}\nx:\n  <<: *b\n  a: 2\n") == {"base": {"a": 1}, "x": {"a": 2}}
    with pytest.raises(ConfigError) as info:
        parse_manifest("store: {id: s1}\nhub:\n  url: mqtts://h:8883\n  url: mqtt://h:1883\n", "m.yaml", env={})
    (issue,) = info.value.issues
    assert issue.render() == ("m.yaml:4: hub.url: duplicate key 'url', first at line 3: YAML keeps only the last "
                              "one; remove one of them")


def test_shipped_manifests_stay_valid() -> None:
    env = {"HUB_PASSWORD": "x", "EDGE_TOKEN_STAFF": "s" * 20, "EDGE_TOKEN_HQ": "h" * 20, "EDGE_TOKEN_APP": "a" * 20,
           "EDGE_TOKEN_ADMIN": "d" * 20, "EDGE_CMD_KEY_HQ": "k" * 40}
    assert load_manifest(ROOT / "deploy/store-manifest.example.yaml", env=env).store.id == "s0421"
    assert parse_manifest(demo_manifest_text(), "demo", env={}).store.id == "demo"


@pytest.mark.parametrize(("host", "fix"), [
    ("10.20.0.31", None), ("reader-1.store.lan", None), ("fe80::1", None), ("::1", None),
    ("10.20.0.31:5084", "write host: 10.20.0.31 and put the port in port: 5084"),
    ("reader-1:5084", "write host: reader-1 and put the port in port: 5084"),
    ("[fe80::1]:5084", "without brackets"), ("tcp://10.20.0.31", "is a URL"), ("reader 1", "neither"),
])
def test_host_is_a_host_alone(host: str, fix: str | None) -> None:
    if fix is None:
        assert check_host(host) == host
    else:
        with pytest.raises(ValueError, match=re.escape(fix)):
            check_host(host)


@pytest.mark.parametrize(("url", "fix"), [
    ("mqtt://h", None), ("mqtts://user:pw@h:8883", None), ("mqtt://[::1]:1883", None),
    ("http://h", "use mqtt://host"), ("mqtt://h:0", "1..65535"), ("mqtt://h:99999", "1..65535"),
    ("mqtt://h:x", "1..65535"), ("mqtt://h/topic", "no path"),
])
def test_mqtt_urls(url: str, fix: str | None) -> None:
    if fix is None:
        assert check_mqtt_url(url) == url
    else:
        with pytest.raises(ValueError, match=re.escape(fix)):
            check_mqtt_url(url)


def test_a_directory_or_a_huge_file_is_a_clear_error(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(b"a" * (5 * 1024 * 1024))
    for path, message in ((tmp_path, "cannot read the file"), (big, "larger than 4 MiB")):
        with pytest.raises(ConfigError) as info:
            load_manifest(path, env={})
        (issue,) = info.value.issues
        assert message in issue.message


# ---- fuzz: no input makes the manifest parser fail other than with ConfigError ---------------------------

FUZZ_N = 10_000 if os.environ.get("EDGE_FUZZ") == "long" else 200
JUNK = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _paths(node: object, path: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    out = [path]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*path, i))
    return out


BASE_DATA = yaml.safe_load(manifest())
BASE_PATHS = [p for p in _paths(BASE_DATA) if p]


@settings(max_examples=FUZZ_N, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(BASE_PATHS), JUNK)
def test_fuzz_any_value_anywhere(path: tuple[object, ...], junk: object) -> None:
    data = copy.deepcopy(BASE_DATA)
    node = data
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = junk
    try:
        parse_manifest(yaml.safe_dump(data, allow_unicode=True), "m.yaml", env={})
        return
    except ConfigError as err:
        issues = err.issues
    assert issues and all(i.message for i in issues)  # every refusal says something


@settings(max_examples=FUZZ_N, deadline=None)
@given(st.text(max_size=400) | st.binary(max_size=400).map(lambda b: b.decode("latin-1")))
def test_fuzz_any_text(text: str) -> None:
    with contextlib.suppress(ConfigError):
        parse_manifest(text, "m.yaml", env={})
