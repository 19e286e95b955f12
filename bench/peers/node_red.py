"""Node-RED as a peer: mqtt in (broker A) -> function (count, low-stock alert) -> mqtt out QoS 1 (broker B).

Node-RED (https://nodered.org, npm `node-red`) is installed by the benchmark into bench/.cache/node-red and
run headless (`red.js --userDir --settings flows.json`, editor and HTTP nodes off, listening on loopback
only). The flow is the obvious one a Node-RED user would build: the function node computes
`count = Math.round(grams / unit)` from the planogram's unit weights, sends the stock message on output 1
and, when `count < threshold`, an alert on output 2; both go to one mqtt-out node at QoS 1.
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

FUNCTION = """const p = msg.payload;
if (p === null || typeof p !== "object" || typeof p.grams !== "number") return null;
const unit = UNITS[p.shelf + ":" + p.lane];
if (unit === undefined) return null;
const count = Math.round(p.grams / unit);
const stock = {topic: "stock/" + p.shelf + "/" + p.lane,
               payload: JSON.stringify({shelf: p.shelf, lane: p.lane, count: count, grams: p.grams, m: p.m})};
const alert = count < THRESHOLD ? {topic: "alerts/" + p.shelf + "/" + p.lane,
               payload: JSON.stringify({shelf: p.shelf, lane: p.lane, count: count, alert: "low_stock", m: p.m})}
             : null;
return [stock, alert];
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


def flow(a_port: int, b_port: int, lanes: list[Lane], threshold: int) -> list[dict[str, object]]:
    """The flow file's nodes."""
    units = json.dumps({ln.key: ln.unit_g for ln in lanes})
    func = f"const UNITS = {units};\nconst THRESHOLD = {threshold};\n" + FUNCTION

    def broker(nid: str, port: int) -> dict[str, object]:
        return {"id": nid, "type": "mqtt-broker", "name": f"broker {port}", "broker": "127.0.0.1", "port": str(port),
                "clientid": f"nodered-{nid}-{port}", "autoConnect": True, "usetls": False, "protocolVersion": "4",
                "keepalive": "60", "cleansession": True, "birthTopic": "", "closeTopic": "", "willTopic": ""}

    return [
        {"id": "tab1", "type": "tab", "label": "shelves"},
        broker("brokerA", a_port),
        broker("brokerB", b_port),
        {"id": "in1", "type": "mqtt in", "z": "tab1", "name": "readings", "topic": "shelves/+/weight", "qos": "0",
         "datatype": "json", "broker": "brokerA", "nl": False, "rap": True, "rh": 0, "inputs": 0,
         "wires": [["fn1"]]},
        {"id": "fn1", "type": "function", "z": "tab1", "name": "count + alert", "func": func, "outputs": 2,
         "wires": [["out1"], ["out1"]]},
        {"id": "out1", "type": "mqtt out", "z": "tab1", "name": "to B", "topic": "", "qos": "1", "retain": "false",
         "broker": "brokerB", "wires": []},
    ]


def settings(user_dir: Path, ui_port: int) -> str:
    """settings.js: headless (no editor, no admin or HTTP-node routes), loopback only, quiet log."""
    return (
        "module.exports = {\n"
        f"  uiHost: '127.0.0.1', uiPort: {ui_port}, userDir: {json.dumps(str(user_dir))},\n"
        "  flowFile: 'flows.json', credentialSecret: false, disableEditor: true,\n"
        "  httpAdminRoot: false, httpNodeRoot: false,\n"
        "  logging: { console: { level: 'warn', metrics: false, audit: false } },\n"
        "  editorTheme: { projects: { enabled: false } },\n"
        "  externalModules: { autoInstall: false },\n"
        "};\n"
    )


class NodeRed(PeerProcess):
    """One Node-RED process running the benchmark flow."""

    name = "nodered"
    one_to_one = True

    def __init__(self) -> None:
        super().__init__()

    def start(self, a_port: int, b_port: int, lanes: list[Lane], threshold: int, workdir: Path) -> None:
        """Write flows.json and settings.js into a fresh userDir and start `node red.js`."""
        from edge.brokers import free_port

        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "flows.json").write_bytes(orjson.dumps(flow(a_port, b_port, lanes, threshold)))
        (workdir / "settings.js").write_text(settings(workdir, free_port()))
        self.workdir = workdir
        out = (workdir / "stdout.log").open("ab")
        self.proc = subprocess.Popen(
            [shutil.which("node") or "node", str(RED_JS), "--userDir", str(workdir), "--settings",
             str(workdir / "settings.js"), str(workdir / "flows.json")],
            cwd=workdir, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "NODE_ENV": "production"},
        )
