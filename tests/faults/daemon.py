"""Helpers for fault tests that run the real daemon as a process and check what reached the hub."""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from edge.brokers import Mosquitto
from firmware_sim.hub import HubProcess

STORE = "demo"


def until(pred: Callable[[], bool], timeout: float, what: str, log: Path | None = None) -> None:
    """Poll `pred` until it holds; fail with `what` (and the daemon's log tail) after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
            raise AssertionError(f"timed out waiting for: {what}\n--- daemon log tail ---\n{tail}")
        time.sleep(0.1)


def healthz(port: int) -> tuple[int, dict[str, Any]]:
    """GET /healthz: (status, body); (0, {}) when the API does not answer."""
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    except httpx.HTTPError:
        return 0, {}
    try:
        return r.status_code, r.json()
    except ValueError:
        return r.status_code, {}


def short(source: str) -> str:
    """'/stores/demo/tele' -> 'tele'."""
    return source.rsplit("/", 1)[-1]


def committed_sequences(db: Path) -> dict[str, int]:
    """source -> the last sequence number the gateway committed (what it accepted)."""
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return {str(r[0]): int(r[1]) for r in c.execute("SELECT source, last FROM sequences")}
    finally:
        c.close()


def holes_without_gap(events: list[dict[str, Any]], committed: dict[str, int]) -> dict[str, list[int]]:
    """Per source, the sequence numbers 1..committed that neither arrived nor are covered by a gap event."""
    got: dict[str, set[int]] = defaultdict(set)
    covered: dict[str, set[int]] = defaultdict(set)
    for e in events:
        got[short(str(e["source"]))].add(int(e["sequence"]))
        if e.get("type") == "retail.gap.v1":
            d = e["data"]
            covered[str(d["gap_source"])].update(range(int(d["first"]), int(d["last"]) + 1))
    out: dict[str, list[int]] = {}
    for source, last in committed.items():
        missing = sorted(set(range(1, last + 1)) - got[source] - covered[source])
        if missing:
            out[source] = missing[:20]
    return out


class NotifySocket:
    """An AF_UNIX datagram socket where systemd's would be; collects the daemon's notifications."""

    def __init__(self, path: Path | None = None, abstract: str | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract is not None:
            self.sock.bind(b"\0" + abstract.encode())
            self.env = "@" + abstract
        else:
            assert path is not None
            self.sock.bind(str(path))
            self.env = str(path)
        self.sock.setblocking(False)
        self.messages: list[dict[str, str]] = []

    def drain(self) -> list[dict[str, str]]:
        """Read every datagram waiting; return (and keep) them parsed."""
        new: list[dict[str, str]] = []
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                break
            msg = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            new.append(msg)
        self.messages += new
        return new

    def seen(self, key: str) -> int:
        """How many notifications so far carried `key`."""
        self.drain()
        return sum(1 for m in self.messages if key in m)

    def close(self) -> None:
        self.drain()
        self.sock.close()


@contextlib.contextmanager
def hub_broker(workdir: Path, topic: str = "retail/v1/demo/#") -> Iterator[tuple[Mosquitto, HubProcess]]:
    """A private mosquitto as the hub and a recorder of everything published under `topic`; both stopped after."""
    broker = Mosquitto(workdir=workdir / "mq")
    broker.start()
    try:
        rec = HubProcess(broker.port, topic, workdir / "hub.log")
        try:
            yield broker, rec
        finally:
            rec.close()
    finally:
        broker.stop()
