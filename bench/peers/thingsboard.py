"""ThingsBoard IoT Gateway as a peer: MQTT connector on broker A, a custom converter, SQLite storage, broker B.

ThingsBoard IoT Gateway (PyPI `thingsboard-gateway`, https://thingsboard.io/docs/iot-gateway/) is installed
by the benchmark into its own venv `bench/.cache/tb-venv`. Its MQTT connector subscribes to the shelves'
topic on A; its JSON converter can only map fields, so the job uses a custom uplink converter, installed the
TB-documented way (a class in the gateway's `extensions/mqtt/` folder, named by `"extension"` in the
mapping): it computes `count = round(grams / unit)` and `alert = count < threshold` and keeps `m` (reading
id and time). Storage is SQLite; the "ThingsBoard server" is mosquitto B, where the gateway publishes the
device API (`v1/gateway/connect`, `v1/gateway/telemetry` packs of `{device: [{ts, values}]}`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import orjson

from bench.peers.loadgen import Lane
from bench.runtime import build_venv

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / "bench" / ".cache" / "tb-venv"
PY = VENV / "bin" / "python"

CONVERTER = '''"""Benchmark converter (from bench/peers/thingsboard.py): shelf weight -> count, low-stock flag."""
import os
import threading
import time

from thingsboard_gateway.connectors.mqtt.mqtt_uplink_converter import MqttUplinkConverter
from thingsboard_gateway.gateway.entities.converted_data import ConvertedData
from thingsboard_gateway.gateway.entities.telemetry_entry import TelemetryEntry


class PeersShelfConverter(MqttUplinkConverter):
    processed = 0  # readings converted, written to `processedFile` 4 times a second (the harness reads it)

    def __init__(self, config, logger):
        self._log = logger
        self.__config = config.get("converter")
        ext = self.__config.get("extensionConfig", {})
        self._units = ext.get("units", {})
        self._threshold = ext.get("threshold", 5)
        self._keep_m = ext.get("keepM", False)
        path = ext.get("processedFile")
        if path:
            threading.Thread(target=self._report, args=(path,), daemon=True).start()

    @staticmethod
    def _report(path):
        while True:
            time.sleep(0.25)
            with open(path + ".tmp", "w") as f:
                f.write(str(PeersShelfConverter.processed))
            os.replace(path + ".tmp", path)

    @property
    def config(self):
        return self.__config

    def convert(self, topic, body):
        PeersShelfConverter.processed += 1
        try:
            shelf, lane, grams = body["shelf"], body["lane"], float(body["grams"])
            unit = self._units[shelf + ":" + lane]
        except Exception:
            self._log.warning("not a shelf reading: %r", body)
            return None
        count = round(grams / unit)
        m = str(body.get("m", ""))
        ts = int(float(m.split(":")[1]) * 1000) if ":" in m else None  # the reading's time is the entry's
        values = {"count": count, "low": count < self._threshold}
        if self._keep_m:  # profile every: the reading's id, so each reading is identified at the hub
            values["m"] = m
        data = ConvertedData(device_name=shelf + "-" + lane, device_type="shelf-lane")
        data.add_to_telemetry(TelemetryEntry(values, ts=ts))
        return data
'''


def ensure_installed(timeout: float = 900) -> str | None:
    """Create the venv and pip-install thingsboard-gateway when missing; None when ready, else the reason."""
    if PY.exists():
        with contextlib.suppress(subprocess.TimeoutExpired):
            ok = subprocess.run([str(PY), "-c", "import thingsboard_gateway"], capture_output=True, timeout=120,
                                check=False)
            if ok.returncode == 0:
                return None
    log = REPO / "bench" / ".cache" / "tb.log"
    try:
        rc = build_venv(VENV, [str(PY), "-m", "pip", "install", "thingsboard-gateway"], log, timeout)
    except (subprocess.SubprocessError, OSError) as exc:
        return f"cannot install thingsboard-gateway into {VENV}: {exc}"
    return None if rc == 0 else f"pip install thingsboard-gateway failed (rc {rc}, see {log})"


def _site_packages() -> Path:
    out = subprocess.run([str(PY), "-c", "import thingsboard_gateway, os; print(os.path.dirname("
                          "thingsboard_gateway.__file__))"], capture_output=True, text=True, timeout=120, check=True)
    return Path(out.stdout.strip())


def install_converter() -> Path:
    """Put the custom converter into the gateway's extensions/mqtt folder (where TB looks for `extension`)."""
    path = _site_packages() / "extensions" / "mqtt" / "peers_shelf_converter.py"
    if not path.exists() or path.read_text() != CONVERTER:
        path.write_text(CONVERTER)
    return path


def configs(a_port: int, b_port: int, lanes: list[Lane], threshold: int, workdir: Path,
            profile: str = "change") -> dict[str, Any]:
    """tb_gateway.json, the MQTT connector and logging, as dicts (written by `ThingsBoardGateway.start`).

    The shipped config/tb_gateway.json and config/mqtt.json (3.8.5) with one comment per setting that differs
    from them or that the job depends on."""
    units = {ln.key: ln.unit_g for ln in lanes}
    gateway = {
        "thingsboard": {
            "host": "127.0.0.1", "port": b_port,  # the hub: mosquitto B
            "remoteShell": False,  # the default
            "remoteConfiguration": False,  # default true: there is no ThingsBoard server to configure it
            "latencyDebugMode": False,  # the default
            # the default (statistics every 60 s to the server: part of the product's normal load)
            "statistics": {"enable": True, "statsSendPeriodInSeconds": 60, "customStatsSendPeriodInSeconds": 3600},
            "deviceFiltering": {"enable": False},  # the default
            "maxPayloadSizeBytes": 8196, "minPackSendDelayMS": 50, "minPackSizeToSend": 500,  # the defaults
            "checkConnectorsConfigurationInSeconds": 60, "handleDeviceRenaming": True,  # the defaults
            "security": {"type": "accessToken", "accessToken": "bench-token"},  # any token: B does not check
            "qos": 1,  # the default, and the job: QoS 1 to the hub
            # the profile: forward on change (each data point when its value changed) or every reading
            "reportStrategy": {"type": "ON_CHANGE" if profile == "change" else "ON_RECEIVED"},
            "checkingDeviceActivity": {"checkDeviceInactivity": False},  # the default
            # default DEFAULT_*: a ThingsBoard Cloud tenant's limits; a self-hosted server (what a store chain
            # that runs its own hub has) sets none, and the server stub below answers with none
            "rateLimits": "0:0,", "dpRateLimits": "0:0,", "messagesRateLimits": "0:0,",
            "deviceMessagesRateLimits": "0:0,", "deviceRateLimits": "0:0,", "deviceDpRateLimits": "0:0,",
        },
        # default "memory": persistence for everyone who has it (ours' outbox is durable by default); the
        # documented persistent choice that keeps data across a restart; other keys at their defaults
        "storage": {"type": "sqlite", "data_file_path": str(workdir / "data" / "data.db"),
                    "messages_ttl_check_in_hours": 1, "messages_ttl_in_days": 7, "max_read_records_count": 1000},
        "grpc": {"enabled": False},  # the default
        "connectors": [{"type": "mqtt", "name": "shelves", "configuration": "mqtt.json"}],  # the job
    }
    connector = {
        # broker A; maxMessageNumberPerWorker / maxNumberOfWorkers / cleanSession: the shipped values;
        # MQTT 3.1.1 (shipped: 5) as every other system's connection to A
        "broker": {"host": "127.0.0.1", "port": a_port, "clientId": f"tb-gw-{a_port}", "version": 4,
                   "maxMessageNumberPerWorker": 10, "maxNumberOfWorkers": 100, "cleanSession": True,
                   "security": {"type": "anonymous"}},
        # QoS 1 in (the shipped default and the job); the custom converter computes the count (its JSON
        # converter can only map fields), the TB-documented way for computed values
        "mapping": [{"topicFilter": "shelves/+/weight", "subscriptionQos": 1,
                     "converter": {"type": "custom", "extension": "PeersShelfConverter",
                                   "extensionConfig": {"units": units, "threshold": threshold,
                                                       "keepM": profile == "every",
                                                       "processedFile": str(workdir / "processed.txt")}}}],
        "requestsMapping": {},
    }
    # INFO, the shipped level (ours and Node-RED run at their default INFO too), into one file
    logs = {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"f": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
        "handlers": {"file": {"class": "logging.FileHandler", "filename": str(workdir / "tb.log"), "formatter": "f",
                              "level": "INFO"}},
        "loggers": {n: {"handlers": ["file"], "level": "INFO", "propagate": False}
                    for n in ("service", "connector", "converter", "tb_connection", "storage", "extension",
                              "tb_gateway.service", "root")},
        "root": {"level": "INFO", "handlers": ["file"]},
    }
    return {"tb_gateway.json": gateway, "mqtt.json": connector, "logs.json": logs}


class ServerStub:
    """The one thing the ThingsBoard server must answer before the gateway sends data: `getSessionLimits`.

    The gateway's client waits (`rate_limits_received`) for the RPC reply; this paho client on broker B
    answers every `v1/devices/me/rpc/request/+` with no rate limits and TB's default in-flight window, and
    keeps answering after B restarts (paho reconnects).
    """

    REPLY = {"rateLimits": {"messages": "", "telemetryMessages": "", "telemetryDataPoints": ""},
             "maxInflightMessages": 1000, "maxPayloadSize": 65536}

    def __init__(self, b_port: int) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.answered = 0
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"tb-server-stub-{b_port}")
        self.client.on_connect = lambda c, *_a: c.subscribe("v1/devices/me/rpc/request/+", qos=1)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 2)
        self.client.connect("127.0.0.1", b_port)
        self.client.loop_start()

    def _on_message(self, client: Any, _u: Any, msg: Any) -> None:
        rid = msg.topic.rsplit("/", 1)[-1]
        client.publish(f"v1/devices/me/rpc/response/{rid}", orjson.dumps(self.REPLY), qos=1)
        self.answered += 1

    def close(self) -> None:
        """Disconnect."""
        self.client.loop_stop()
        self.client.disconnect()


class ThingsBoardGateway:
    """One `thingsboard-gateway` process with the benchmark's configuration."""

    name = "thingsboard"
    time_kind = "ms"  # an output's ts is the causing reading's send time in whole milliseconds

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.workdir: Path | None = None
        self.stub: ServerStub | None = None

    def processed(self) -> int:
        """Readings its converter has handled (the file it writes 4 times a second; -1 before the first)."""
        try:
            return int((self.workdir / "processed.txt").read_text()) if self.workdir else -1
        except (OSError, ValueError):
            return -1

    def start(self, a_port: int, b_port: int, lanes: list[Lane], threshold: int, workdir: Path,
              profile: str = "change") -> None:
        """Write the configuration and start the gateway (cwd = its config dir, logs there)."""
        install_converter()
        self.stub = ServerStub(b_port)
        conf = workdir / "config"
        conf.mkdir(parents=True, exist_ok=True)
        (workdir / "data").mkdir(exist_ok=True)
        (conf / "logs").mkdir(exist_ok=True)
        for name, body in configs(a_port, b_port, lanes, threshold, workdir, profile).items():
            (conf / name).write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2))
        # its update check posts to updates.thingsboard.io: send it to a closed loopback port instead
        env = {**os.environ, "TB_GW_CONFIG_DIR": str(conf), "PYTHONUNBUFFERED": "1",
               "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}
        self.workdir = workdir
        out = (workdir / "stdout.log").open("ab")
        self.proc = subprocess.Popen(
            [str(PY), "-c", "from thingsboard_gateway.tb_gateway import daemon; daemon()"],
            cwd=conf, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def pids(self) -> list[int]:
        """The gateway's PID."""
        return [self.proc.pid] if self.proc is not None and self.proc.poll() is None else []

    def alive(self) -> bool:
        """Still running?"""
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self) -> str:
        """Last lines of its output (for an 'unavailable' reason)."""
        if self.workdir is None:
            return ""
        text = ""
        for f in ("stdout.log", "tb.log"):
            p = self.workdir / f
            if p.exists():
                text += p.read_text(errors="replace")[-1500:]
        return text

    def stop(self) -> None:
        """SIGTERM by PID, SIGKILL after 10 s."""
        if self.stub is not None:
            self.stub.close()
            self.stub = None
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
