"""deploy/hub-mosquitto.conf + deploy/hub-mosquitto.acl on a real mosquitto: what a store and the hub service
may publish and read (docs/commands.md, "Hub-side broker permissions").

The shipped conf is used as is, except its port (a free one on 127.0.0.1), the file paths and the TLS lines
(no certificates here). Users: the hub service `hq` and two stores, `s0421` and `s0422`.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.brokers import BrokerProcess, _which

ROOT = Path(__file__).resolve().parents[2]
USERS = {"hq": "hq-password-1", "s0421": "store-password-1", "s0422": "store-password-2"}


class HubMosquitto(BrokerProcess):
    """mosquitto with the shipped hub conf and ACL on a free loopback port."""

    kind = "hub-mosquitto"

    def command(self) -> list[str]:
        """mosquitto -c <the shipped conf, port/paths rewritten, TLS lines dropped>."""
        passwd = self.workdir / "stores.passwd"
        passwd.write_text("")
        for user, password in USERS.items():
            subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, password], check=True)
        conf = (ROOT / "deploy/hub-mosquitto.conf").read_text()
        conf = re.sub(r"(?m)^listener \d+$", f"listener {self.port} 127.0.0.1", conf)
        conf = re.sub(r"(?m)^password_file .*$", f"password_file {passwd}", conf)
        conf = re.sub(r"(?m)^acl_file .*$", f"acl_file {ROOT / 'deploy/hub-mosquitto.acl'}", conf)
        conf = re.sub(r"(?m)^(cafile|certfile|keyfile) .*\n", "", conf)
        path = self.workdir / "hub.conf"
        root = "user root\n" if os.geteuid() == 0 else ""  # else it drops to 'mosquitto' and cannot read the files
        path.write_text(conf + "persistence false\nlog_type error\n" + root)
        return [str(_which("mosquitto") or "mosquitto"), "-c", str(path)]


class Client:
    """A paho client logged in as `user`, recording what it receives."""

    def __init__(self, port: int, user: str | None, password: str | None = None) -> None:
        self.got: list[str] = []
        self.rc: object = None
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._acks: set[int] = set()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"acl-{uuid.uuid4().hex[:8]}")
        if user is not None:
            self.c.username_pw_set(user, password)
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_subscribe = lambda _c, _u, mid, *_: self._acks.add(mid)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        self._connected.wait(10)

    def _on_connect(self, _c: mqtt.Client, _u: object, _f: object, rc: object, _p: object = None) -> None:
        self.rc = rc
        self._connected.set()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.got.append(msg.topic)

    @property
    def accepted(self) -> bool:
        """Did the broker accept the login?"""
        return not getattr(self.rc, "is_failure", True)

    def subscribe(self, topic: str) -> None:
        """Subscribe and wait for the SUBACK."""
        _, mid = self.c.subscribe(topic, qos=1)
        deadline = time.monotonic() + 10
        while mid not in self._acks:
            assert time.monotonic() < deadline, "no SUBACK"
            time.sleep(0.02)

    def publish(self, topic: str) -> None:
        """Publish at QoS 1 and wait until the broker acknowledged it (denied publishes are acknowledged too)."""
        self.c.publish(topic, b"x", qos=1).wait_for_publish(10)

    def received(self, sentinel: str) -> list[str]:
        """Everything received up to `sentinel` (waits for it: per-publisher order holds)."""
        deadline = time.monotonic() + 10
        while True:
            with self._lock:
                if sentinel in self.got:
                    return self.got[: self.got.index(sentinel)]
            assert time.monotonic() < deadline, f"sentinel {sentinel} never arrived: {self.got}"
            time.sleep(0.02)

    def close(self) -> None:
        """Disconnect."""
        self.c.loop_stop()
        self.c.disconnect()


@pytest.fixture(scope="module")
def hub() -> Iterator[HubMosquitto]:
    broker = HubMosquitto()
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def test_logins(hub: HubMosquitto) -> None:
    for user, password, ok in [("s0421", USERS["s0421"], True), ("s0421", "wrong", False), (None, None, False),
                               ("hq", USERS["hq"], True)]:
        c = Client(hub.port, user, password)
        try:
            assert c.accepted == ok, (user, password)
        finally:
            c.close()


STORE_PUBLISHES = [
    ("retail/v1/s0421/status", True),
    ("retail/v1/s0421/alerts", True),
    ("retail/v1/s0421/events/stock", True),
    ("retail/v1/s0421/events/rfid/x", True),
    ("retail/v1/s0421/state/stock/shelf-a1", True),
    ("retail/v1/s0421/reply/hq-tools/42", True),
    ("retail/v1/s0421/bridge/status", True),
    ("retail/v1/s0421/cmd/restock.mute", False),  # commanding itself
    ("retail/v1/s0421/other", False),
    ("retail/v1/s0422/events/stock", False),  # another store's events
    ("retail/v1/s0422/reply/hq-tools/42", False),  # another store's replies
    ("retail/v1/s0422/cmd/rules.reload", False),  # commanding another store
    ("retail/v1/hq/status", True),  # pattern lines apply to every user: a store named "hq" would collide
    ("hq/replies/1", False),
]


def test_store_publishes_only_under_its_own_root(hub: HubMosquitto) -> None:
    observer = Client(hub.port, "hq", USERS["hq"])
    store = Client(hub.port, "s0421", USERS["s0421"])
    try:
        observer.subscribe("retail/v1/#")
        observer.subscribe("hq/#")  # denied to hq: nothing arrives from there either way
        for topic, _ in STORE_PUBLISHES:
            store.publish(topic)
        sentinel = f"retail/v1/s0421/events/end-{uuid.uuid4().hex[:6]}"
        store.publish(sentinel)
        got = observer.received(sentinel)
        expected = [t for t, ok in STORE_PUBLISHES if ok and not t.startswith("retail/v1/hq/")]
        assert [t for t in got if not t.startswith("retail/v1/hq/")] == expected
        denied = {t for t, ok in STORE_PUBLISHES if not ok}
        assert not denied & set(got)
    finally:
        store.close()
        observer.close()


def test_store_reads_only_its_own_commands_and_hub_forges_nothing(hub: HubMosquitto) -> None:
    store = Client(hub.port, "s0421", USERS["s0421"])
    other = Client(hub.port, "s0422", USERS["s0422"])
    hq = Client(hub.port, "hq", USERS["hq"])
    observer = Client(hub.port, "hq", USERS["hq"])
    try:
        store.subscribe("retail/v1/#")  # allowed to subscribe, but only its own cmd/ is delivered
        other.subscribe("retail/v1/#")
        observer.subscribe("retail/v1/#")
        attempts = [
            ("retail/v1/s0421/cmd/restock.mute", True),
            ("retail/v1/s0422/cmd/restock.mute", True),
            ("retail/v1/s0421/events/stock", False),  # the hub cannot forge a store's events
            ("retail/v1/s0421/status", False),
            ("retail/v1/s0421/reply/x", False),
        ]
        for topic, _ in attempts:
            hq.publish(topic)
        other.publish("retail/v1/s0422/events/stock")  # another store's traffic is not readable
        end = "retail/v1/s0421/cmd/end"
        hq.publish(end)
        hq.publish("retail/v1/s0422/cmd/end")
        seen = observer.received(end)
        assert [t for t in seen if t != "retail/v1/s0422/events/stock"] == [t for t, ok in attempts if ok]
        assert store.received(end) == ["retail/v1/s0421/cmd/restock.mute"]
        assert other.received("retail/v1/s0422/cmd/end") == ["retail/v1/s0422/cmd/restock.mute"]
    finally:
        for c in (store, other, hq, observer):
            c.close()


def test_store_reads_its_neighbours_status_info_and_atp_only(hub: HubMosquitto) -> None:
    store = Client(hub.port, "s0421", USERS["s0421"])
    other = Client(hub.port, "s0422", USERS["s0422"])
    try:
        store.subscribe("retail/v1/s0422/#")
        published = [("retail/v1/s0422/status", True), ("retail/v1/s0422/state/info", True),
                     ("retail/v1/s0422/state/atp/cola-330", True), ("retail/v1/s0422/state/catalog", False),
                     ("retail/v1/s0422/state/stock/shelf-a1", False), ("retail/v1/s0422/events/stock", False),
                     ("retail/v1/s0422/alerts", False), ("retail/v1/s0422/reply/hq-tools/1", False)]
        for topic, _ in published:
            other.publish(topic)
        end = "retail/v1/s0422/state/atp/end"
        other.publish(end)
        assert store.received(end) == [t for t, ok in published if ok]
    finally:
        store.close()
        other.close()
