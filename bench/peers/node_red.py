"""Node-RED as a peer: mqtt in (broker A) -> function (count, low-stock alert) -> mqtt out QoS 1 (broker B).

Node-RED (https://nodered.org, npm `node-red`) is installed by the benchmark into bench/.cache/node-red and
run headless (`red.js --userDir --settings flows.json`, editor and HTTP nodes off, listening on loopback
only). The flow is the obvious one a Node-RED user would build: `mqtt in` (QoS 1) -> a function node that
computes `count = Math.round(grams / unit)` from the planogram's unit weights (output 1 the stock message,
output 2 the low-stock state) -> one `mqtt out` at QoS 1. Profile `change` puts a filter (`rbe`) node keyed by
topic on each output (forward on change); profile `every` forwards every reading (and an alert for each one
below the threshold). An inject node publishes the function's processed-readings count to `stats/nodered`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import orjson

from bench.peers.loadgen import Lane
from bench.peers.proc import PeerProcess

REPO = Path(__file__).resolve().parents[2]
PREFIX = REPO / "bench" / ".cache" / "node-red"
RED_JS = PREFIX / "node_modules" / "node-red" / "red.js"

# Both profiles: count = round(grams / unit); output 1 the stock message, output 2 the low-stock state.
# `flow.n` counts the readings processed (the stats node publishes it; the harness's processed count).
FUNCTION = """flow.set("n", (flow.get("n") || 0) + 1);
const p = msg.payload;
if (p === null || typeof p !== "object" || typeof p.grams !== "number") return null;
const unit = UNITS[p.shelf + ":" + p.lane];
if (unit === undefined) return null;
const count = Math.round(p.grams / unit);
const low = count < THRESHOLD;
const stock = {topic: "stock/" + p.shelf + "/" + p.lane,
               payload: {shelf: p.shelf, lane: p.lane, count: count, m: p.m}};
const alert = {topic: "alerts/" + p.shelf + "/" + p.lane,
               payload: {shelf: p.shelf, lane: p.lane, count: count, low: low, m: p.m}};
return EVERY ? [stock, low ? alert : null] : [stock, alert];
"""

STATS = """msg.topic = "stats/nodered";
msg.payload = {processed: flow.get("n") || 0};
return msg;
"""


def ensure_installed(timeout: float = 900) -> str | None:
    """`npm install --prefix bench/.cache/node-red node-red` when missing; None when ready, else the reason."""
    if RED_JS.exists():
        return None
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return "node/npm not installed on this machine"
    PREFIX.mkdir(parents=True, exist_ok=True)
    log = REPO / "bench" / ".cache" / "npm.log"
    try:
        with log.open("ab") as f:
            r = subprocess.run([npm, "install", "--prefix", str(PREFIX), "node-red"], stdout=f, stderr=f, check=False,
                               timeout=timeout)
    except (subprocess.SubprocessError, OSError) as exc:
        return f"npm install node-red failed: {exc}"
    if r.returncode != 0 or not RED_JS.exists():
        return f"npm install node-red failed (rc {r.returncode}, see {log})"
    return None


def flow(a_port: int, b_port: int, lanes: list[Lane], threshold: int, profile: str) -> list[dict[str, object]]:
    """The flow file's nodes. `change`: both outputs through a filter (rbe) node keyed by topic, so a lane's
    stock message goes out when its count changes and its alert when its low-stock state changes; `every`:
    every reading's stock message, plus an alert for every reading below the threshold."""
    units = json.dumps({ln.key: ln.unit_g for ln in lanes})
    every = "true" if profile == "every" else "false"
    func = f"const UNITS = {units};\nconst THRESHOLD = {threshold};\nconst EVERY = {every};\n" + FUNCTION

    def broker(nid: str, port: int) -> dict[str, object]:
        # the mqtt-broker config node as the editor creates it; nothing tuned
        return {"id": nid, "type": "mqtt-broker", "name": f"broker {port}", "broker": "127.0.0.1", "port": str(port),
                "clientid": f"nodered-{nid}-{port}", "autoConnect": True, "usetls": False, "protocolVersion": "4",
                "keepalive": "60", "cleansession": True, "birthTopic": "", "closeTopic": "", "willTopic": ""}

    def rbe(nid: str, prop: str) -> dict[str, object]:
        # the filter node's "block unless value changes" mode, separately for each msg.topic (= each lane)
        return {"id": nid, "type": "rbe", "z": "tab1", "name": f"on change: {prop}", "func": "rbe", "gap": "",
                "start": "", "inout": "out", "septopics": True, "property": prop, "topi": "topic",
                "wires": [["out1"]]}

    nodes: list[dict[str, object]] = [
        {"id": "tab1", "type": "tab", "label": "shelves"},
        broker("brokerA", a_port),
        broker("brokerB", b_port),
        # QoS 1 in: the job (the editor's default is 2; every system subscribes at 1)
        {"id": "in1", "type": "mqtt in", "z": "tab1", "name": "readings", "topic": "shelves/+/weight", "qos": "1",
         "datatype": "json", "broker": "brokerA", "nl": False, "rap": True, "rh": 0, "inputs": 0,
         "wires": [["fn1"]]},
        {"id": "fn1", "type": "function", "z": "tab1", "name": "count + low stock", "func": func, "outputs": 2,
         "wires": [["out1"], ["out1"]] if profile == "every" else [["rbe1"], ["rbe2"]]},
        # QoS 1 out to the hub: the job
        {"id": "out1", "type": "mqtt out", "z": "tab1", "name": "to B", "topic": "", "qos": "1", "retain": "false",
         "broker": "brokerB", "wires": []},
        # the processed-readings count, twice a second (harness instrumentation, same for both profiles)
        {"id": "tick", "type": "inject", "z": "tab1", "name": "stats", "repeat": "0.5", "once": True,
         "onceDelay": "0.1", "topic": "", "payload": "", "payloadType": "date", "wires": [["fn2"]]},
        {"id": "fn2", "type": "function", "z": "tab1", "name": "stats", "func": STATS, "outputs": 1,
         "wires": [["out1"]]},
    ]
    if profile != "every":
        nodes += [rbe("rbe1", "payload.count"), rbe("rbe2", "payload.low")]
    return nodes


def settings(user_dir: Path, ui_port: int) -> str:
    """settings.js: Node-RED's defaults except what a headless deployment turns off; one comment per line."""
    return (
        "module.exports = {\n"
        "  // loopback only, the port the harness picked: nothing else may listen on this machine\n"
        f"  uiHost: '127.0.0.1', uiPort: {ui_port},\n"
        "  // the flow written by bench/peers/node_red.py\n"
        f"  userDir: {json.dumps(str(user_dir))}, flowFile: 'flows.json',\n"
        "  credentialSecret: false, // no credentials in the flow\n"
        "  // headless: no editor, no HTTP nodes\n"
        "  disableEditor: true, httpAdminRoot: false, httpNodeRoot: false,\n"
        "  // info is the default level (as ours and ThingsBoard Gateway run at INFO); metrics/audit off by default\n"
        "  logging: { console: { level: 'info', metrics: false, audit: false } },\n"
        "  // mqttReconnectTime not set: the default 5 s (each system keeps its own default reconnect policy)\n"
        "  editorTheme: { projects: { enabled: false } }, // the default\n"
        "  externalModules: { autoInstall: false }, // nothing is fetched at run time\n"
        "};\n"
    )


class NodeRed(PeerProcess):
    """One Node-RED process running the benchmark flow."""

    name = "nodered"
    time_kind = "m"  # its outputs carry the causing reading's `m` (id and send time)

    def __init__(self) -> None:
        super().__init__()

    def processed(self) -> int:
        """Unknown here: the harness reads it from the stats message on B."""
        return -1

    def start(self, a_port: int, b_port: int, lanes: list[Lane], threshold: int, workdir: Path,
              profile: str = "change") -> None:
        """Write flows.json and settings.js into a fresh userDir and start `node red.js`."""
        from edge.brokers import free_port

        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "flows.json").write_bytes(orjson.dumps(flow(a_port, b_port, lanes, threshold, profile)))
        (workdir / "settings.js").write_text(settings(workdir, free_port()))
        self.workdir = workdir
        out = (workdir / "stdout.log").open("ab")
        self.proc = subprocess.Popen(
            [shutil.which("node") or "node", str(RED_JS), "--userDir", str(workdir), "--settings",
             str(workdir / "settings.js"), str(workdir / "flows.json")],
            cwd=workdir, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "NODE_ENV": "production"},
        )
