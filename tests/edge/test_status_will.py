"""The retained `status` topic: online at connect, offline through the MQTT will when the gateway dies,
and online again after a restart; a clean SIGTERM exits 0."""

from __future__ import annotations

from pathlib import Path

from bench.spine import GatewayProc, manifest_dict
from edge.brokers import Mosquitto
from firmware_sim.hub import HubRecorder

STATUS = "retail/v1/demo/status"


def _last_status(hub: HubRecorder) -> str | None:
    msgs = [m for m in hub.snapshot() if m.topic == STATUS]
    return str(msgs[-1].json()["state"]) if msgs else None


def test_will_says_offline_when_killed(mosquitto: Mosquitto, tmp_path: Path) -> None:
    hub = HubRecorder(mosquitto.port, STATUS)
    try:
        raw = manifest_dict(tmp_path / "var", mosquitto.url, [], keepalive=5)
        gw = GatewayProc(raw, tmp_path, plain=True)
        hub.wait_for(lambda h: _last_status(h) == "online", 20)
        gw.kill()  # no DISCONNECT: the broker publishes the will
        hub.wait_for(lambda h: _last_status(h) == "offline", 20)
        gw = GatewayProc(raw, tmp_path, plain=True)
        hub.wait_for(lambda h: _last_status(h) == "online", 20)
        assert gw.stop() == 0  # SIGTERM: clean shutdown, and it says so itself
        hub.wait_for(lambda h: _last_status(h) == "offline", 10)
    finally:
        hub.close()
    # a new subscriber gets the retained state straight away
    late = HubRecorder(mosquitto.port, STATUS)
    try:
        late.wait_for(lambda h: _last_status(h) is not None, 10)
        assert late.snapshot()[-1].retain
        assert _last_status(late) == "offline"
    finally:
        late.close()
