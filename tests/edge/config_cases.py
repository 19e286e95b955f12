"""Broken manifests, each with the one error check-config must report: `file:line: field.path: fix`.

Shared by tests/edge/test_config.py (parse_manifest in-process) and tests/edge/test_config_cli.py (both
`edge-gateway check-config` and `edge-gateway run` as processes). Every case passed validation, or was
reported without its line or with a traceback, before issue 15 / issue 19 item 4.
"""

from __future__ import annotations

from dataclasses import dataclass

# A small valid store; `{hub}`, `{storage}` ... are replaced per case. `run` of it needs no hub: the hub URL
# points at a closed port (the uplink retries), the API listens on a free port, data in a temp directory.
BASE = """\
version: 1
store:
  id: s1
  timezone: {timezone}
hub:
  url: mqtt://127.0.0.1:1
  reconnect_max: 1
storage:
  data_dir: {data_dir}
  budgets: {{telemetry_mb: {telemetry_mb}}}
api:
  listen: 127.0.0.1:0
zones:
  - {{id: aisle-1, sgln: "{sgln}"}}
  - {{id: apparel}}
catalog:
  - {{sku: cola, gtin: "05449000000996", category: drinks}}
  - {{sku: tee, category: apparel}}
shelves:
  - id: shelf-a1
    zone: aisle-1
    lanes: [{{id: l1, sku: cola, capacity: 24}}]
  - id: rack-c1
    zone: apparel
    lanes: [{{id: l1, sku: tee, capacity: 40}}]
devices:
{devices}
rules:
  defaults: {{min: 2, debounce_s: {debounce_s}}}
{rules}
"""
DEFAULTS = {
    "timezone": "Europe/Amsterdam",
    "telemetry_mb": "64",
    "sgln": "urn:epc:id:sgln:0614141.00001.aisle-1",
    "devices": "  - {id: rfid-1, type: llrp, host: 127.0.0.1, port: 1, antennas: {1: apparel}}",
    "debounce_s": "30",
    "rules": "",
}
LINE_DEVICES = 27  # the first device's line in BASE
LINE_RULES_DEFAULTS = LINE_DEVICES + 2


def manifest(data_dir: str = "./var", **over: str) -> str:
    """BASE with `over` replacing the defaults."""
    return BASE.format(data_dir=data_dir, **{**DEFAULTS, **over})


@dataclass(frozen=True)
class Case:
    """A broken manifest and the one error it must give."""

    name: str
    over: dict[str, str]
    line: int | None
    path: str
    message: str  # a fragment of the message
    edit: tuple[str, str] | None = None  # (old, new) replaced in the manifest text
    data: bytes | None = None  # the file's bytes instead of the manifest


# 'billion laughs': ten aliases of ten aliases ... nine levels deep; the old loader expanded it while
# substituting ${VAR}s and never finished
BOMB = ("store: {id: s1}\na: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"b{i}: &b{i} [{','.join([f'*b{i - 1}' if i > 1 else '*a'] * 10)}]\n" for i in range(1, 9))).encode()
DEV = "  - {id: shelf-ctrl, type: shelf_serial, port: /dev/null/nope, lanes: [{channel: '1', shelf: %s, lane: %s}]}"
HUB_URL = "  url: mqtt://127.0.0.1:1\n"

CASES: list[Case] = [
    # ---- issue 15 item 4: huge or infinite numbers ----
    Case("debounce 1e12", {"debounce_s": "1e12"}, LINE_RULES_DEFAULTS, "rules.defaults.debounce_s",
         "less than or equal to 604800"),
    Case("debounce .inf", {"debounce_s": ".inf"}, LINE_RULES_DEFAULTS, "rules.defaults.debounce_s",
         "finite number"),
    Case("debounce 1e999", {"debounce_s": "1e999"}, LINE_RULES_DEFAULTS, "rules.defaults.debounce_s",
         "finite number"),
    Case("debounce .nan", {"debounce_s": ".nan"}, LINE_RULES_DEFAULTS, "rules.defaults.debounce_s",
         "finite number"),
    Case("telemetry_mb .inf", {"telemetry_mb": ".inf"}, 10, "storage.budgets.telemetry_mb", "finite number"),
    Case("telemetry_mb 1e12", {"telemetry_mb": "1e12"}, 10, "storage.budgets.telemetry_mb",
         "less than or equal to 1048576"),
    Case("mute_max_s .inf", {"rules": "  mute_max_s: .inf"}, LINE_RULES_DEFAULTS + 1, "rules.mute_max_s",
         "finite number"),
    Case("mute_max_s 1e9", {"rules": "  mute_max_s: 1e9"}, LINE_RULES_DEFAULTS + 1, "rules.mute_max_s",
         "less than or equal to 604800"),
    Case("capacity 1e30", {}, 22, "shelves[0].lanes[0].capacity", "less than or equal to 1000000",
         edit=("capacity: 24", "capacity: 1000000000000000000000000000000")),
    Case("device smoothing .inf", {"devices": "  - {id: rfid-1, type: llrp, host: 127.0.0.1, antennas: {1: apparel}, "
                                              "smoothing: {lost_timeout_s: .inf}}"},
         LINE_DEVICES, "devices[0].smoothing.lost_timeout_s", "finite number"),
    Case("device duration 1e12 (no maximum of its own)",
         {"devices": "  - {id: rfid-1, type: llrp, host: 127.0.0.1, antennas: {1: apparel}, "
                     "connect_timeout_s: 1e12}"},
         LINE_DEVICES, "devices[0].connect_timeout_s", "out of range: no number in the manifest is beyond"),
    # ---- issue 15 item 5: check-config said ok, run failed or misread ----
    Case("unknown time zone", {"timezone": "Asia/Beijing"}, 4, "store.timezone", "did you mean 'Asia/Shanghai'"),
    Case("device lane names a missing shelf", {"devices": DEV % ("shelf-b1", "l1")}, LINE_DEVICES,
         "devices[0].lanes[0].shelf", "shelf 'shelf-b1' is not defined under shelves: did you mean 'shelf-a1'?"),
    Case("device lane names a missing lane", {"devices": DEV % ("shelf-a1", "l2")}, LINE_DEVICES,
         "devices[0].lanes[0].lane", "shelf 'shelf-a1' has no lane 'l2'"),
    Case("antenna names a missing zone", {"devices": "  - {id: rfid-1, type: llrp, host: 127.0.0.1,\n"
                                                     "     antennas: {1: aisle1}}"},
         LINE_DEVICES + 1, "devices[0].antennas[1]",
         "zone 'aisle1' is not defined under zones: did you mean 'aisle-1'?"),
    Case("rules name a missing sku", {"rules": "  skus:\n    colaa: {min: 1}"}, LINE_RULES_DEFAULTS + 2,
         "rules.skus.colaa", "did you mean 'cola'?"),
    Case("rules cell without such a lane", {"rules": "  cells:\n    - {shelf: rack-c1, sku: cola, min: 1}"},
         LINE_RULES_DEFAULTS + 2, "rules.cells[0].sku", "shelf 'rack-c1' holds no lane of sku 'cola'"),
    Case("host with port", {"devices": "  - {id: rfid-1, type: llrp, host: '10.20.0.31:5084', antennas: {1: apparel}}"},
         LINE_DEVICES, "devices[0].host", "write host: 10.20.0.31 and put the port in port: 5084"),
    Case("duplicate key", {}, 7, "hub.url", "duplicate key 'url', first at line 6",
         edit=(HUB_URL, "  url: mqtts://127.0.0.1:1\n" + HUB_URL)),
    Case("not UTF-8", {}, 3, "", "not UTF-8 text", data=b"store:\n  id: s1\n  name: Caf\xe9\n"),
    Case("alias bomb (10**9 values)", {}, 1, "", "expands to more than 100,000 values", data=BOMB),
    Case("nested 50,000 deep", {}, 1, "", "nested too deeply",
         data=b"store: {id: s1}\nx: " + b"[" * 50_000 + b"]" * 50_000 + b"\n"),
    Case("unset secret reported once", {}, 13, "api.tokens[0].token", "environment variable H6_UNSET_SECRET is not set",
         edit=("  listen: 127.0.0.1:0\n",
               "  listen: 127.0.0.1:0\n  tokens: [{token: '${H6_UNSET_SECRET}', roles: [hq]}]\n")),
    Case("unknown field", {"rules": "  mute_max: 5"}, LINE_RULES_DEFAULTS + 1, "rules.mute_max",
         "did you mean 'mute_max_s'?"),
    Case("unknown device type", {"devices": "  - {id: rfid-1, type: lrp, host: 127.0.0.1}"}, LINE_DEVICES,
         "devices[0].type", "did you mean 'llrp'?"),
    Case("two devices weigh one lane", {"devices": DEV % ("shelf-a1", "l1") + "\n" + (DEV % ("shelf-a1", "l1")).replace(
        "shelf-ctrl", "shelf-ctrl-2")}, LINE_DEVICES + 1, "devices[1].lanes[0].lane",
         "already measured at devices[0].lanes[0].lane"),
    Case("MQTT device without a broker", {"devices": "  - {id: zebra-1, type: zebra_iotc, topic: zebra/fx/data,\n"
                                                     "     antennas: {1: apparel}}"},
         LINE_DEVICES, "devices[0].type", "set its broker_url: or the manifest's local_broker: url"),
    Case("topic prefix with a control character", {}, 8, "hub.topic_prefix", "no control characters",
         edit=("  reconnect_max: 1\n", '  reconnect_max: 1\n  topic_prefix: "retail/v1\\x01"\n')),
    Case("one token twice", {}, 15, "api.tokens[1].token", "the same token as api.tokens[0]",
         edit=("  listen: 127.0.0.1:0\n", "  listen: 127.0.0.1:0\n  tokens:\n    - {token: s3cr3t-t0ken-0123456789, "
               "roles: [staff]}\n    - {token: s3cr3t-t0ken-0123456789, roles: [admin]}\n")),
    Case("webhook without host", {}, 13, "webhooks[0].url", "has no host",
         edit=("zones:\n", "webhooks: [{id: w1, url: 'https:///hook', secret: 0123456789abcdef}]\nzones:\n")),
    Case("webhook event misspelt", {}, 13, "webhooks[0].events[0]", "did you mean 'opened'?",
         edit=("zones:\n", "webhooks: [{id: w1, url: 'https://h/hook', secret: 0123456789abcdef, events: [opend]}]\n"
                           "zones:\n")),
    Case("MQTT device broker URL with a bad port",
         {"devices": "  - {id: shelf-mq, type: shelf_mqtt, broker_url: 'mqtt://127.0.0.1:99999'}"},
         LINE_DEVICES, "devices[0].broker_url", "not a number in 1..65535"),
    Case("duplicate device id", {"devices": "  - {id: rfid-1, type: llrp, host: 127.0.0.1, antennas: {1: apparel}}\n"
                                            "  - {id: rfid-1, type: llrp, host: 127.0.0.2, antennas: {1: apparel}}"},
         LINE_DEVICES + 1, "devices[1].id", "duplicate device id 'rfid-1' (also at devices[0])"),
    Case("hub url with a bad port", {}, 6, "hub.url", "not a number in 1..65535",
         edit=(HUB_URL, "  url: mqtt://127.0.0.1:99999\n")),
    # ---- issue 19 item 4: strict SGLN / GLN ----
    Case("sgln prefix + location ref not 12 digits", {"sgln": "urn:epc:id:sgln:0614141.0001.aisle-1"}, 14,
         "zones[0].sgln", "must make 12 digits"),
    Case("sgln extension over 20 characters", {"sgln": "urn:epc:id:sgln:0614141.00001.abcdefghijklmnopqrstu"}, 14,
         "zones[0].sgln", "at most 20"),
    Case("sgln extension outside GS1 set", {"sgln": "urn:epc:id:sgln:0614141.00001.caf\u00e9"}, 14, "zones[0].sgln",
         "is not allowed (GS1 character set 82"),
    Case("sgln without extension", {"sgln": "urn:epc:id:sgln:0614141.00001."}, 14, "zones[0].sgln",
         'write ".0" for none'),
    Case("store GLN check digit", {}, 4, "store.gln", "wrong check digit: the last digit should be 2",
         edit=("  id: s1\n", "  id: s1\n  gln: '0614141000013'\n")),
]


def text_of(case: Case, data_dir: str = "./var") -> bytes:
    """The manifest file's bytes for `case`."""
    if case.data is not None:
        return case.data
    text = manifest(data_dir, **case.over)
    if case.edit is not None:
        assert case.edit[0] in text, case.name
        text = text.replace(*case.edit)
    return text.encode()
