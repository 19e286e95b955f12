"""The uplink over TLS with a client certificate and username/password, and what verification refuses."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.brokers import Mosquitto
from edge.config import Manifest, TlsConfig
from edge.gateway import Gateway
from tests.edge.fakes import CountingDriver, CountingProcessor


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _ca(d: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt",
             "-days", "2", "-subj", f"/CN={name}", cwd=d)


def _leaf(d: Path, name: str, ca: str, san: str) -> None:
    (d / f"{name}.ext").write_text(f"subjectAltName={san}\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", f"/CN={name}", cwd=d)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    _ca(d, "ca")
    _ca(d, "other-ca")
    _leaf(d, "server", "ca", "IP:127.0.0.1")
    _leaf(d, "client", "ca", "DNS:edge-s1")
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(d / "passwd"), "store-demo", "s3cret"], check=True)
    return d


@pytest.fixture
def tls_broker(pki: Path, tmp_path: Path) -> Iterator[Mosquitto]:
    extra = (f"cafile {pki / 'ca.crt'}\ncertfile {pki / 'server.crt'}\nkeyfile {pki / 'server.key'}\n"
             f"require_certificate true\npassword_file {pki / 'passwd'}\n")
    broker = Mosquitto(workdir=tmp_path / "broker", anonymous=False, extra=extra)
    broker.start()
    yield broker
    broker.stop()


def _gateway(
    m: Manifest, url: str, data: Path, tls: TlsConfig, user: str, password: str
) -> tuple[Gateway, CountingDriver]:
    hub = m.hub.model_copy(update={"tls": tls, "username": user, "password": password, "reconnect_max": 0.5})
    m = m.model_copy(update={"hub": hub, "api": m.api.model_copy(update={"enabled": False})})
    drv = CountingDriver("dev-tls", 200)
    gw = Gateway(m, hub_url=url, data_dir=data, extra_drivers=[(drv, "counting")], install_rules=False)
    gw.pipeline.add_processor(CountingProcessor())
    return gw, drv


async def _settle(gw: Gateway, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not (gw.uplink.connected.is_set() and gw.outbox.depth == 0):
        await asyncio.sleep(0.05)


async def test_tls_client_cert_and_password(pki: Path, tls_broker: Mosquitto, demo_manifest: Manifest,
                                            tmp_path: Path) -> None:
    tls = TlsConfig(ca_file=pki / "ca.crt", cert_file=pki / "client.crt", key_file=pki / "client.key")
    url = f"mqtts://127.0.0.1:{tls_broker.port}"
    gw, drv = _gateway(demo_manifest, url, tmp_path / "d", tls, "store-demo", "s3cret")
    async with gw:
        await _settle(gw, 20)
        assert gw.uplink.connected.is_set()
        assert drv.next_n > 200 and gw.outbox.depth == 0  # every event acknowledged over TLS


@pytest.mark.parametrize("case", ["untrusted-ca", "wrong-password"])
async def test_refused_connections_buffer(case: str, pki: Path, tls_broker: Mosquitto, demo_manifest: Manifest,
                                          tmp_path: Path) -> None:
    ca = pki / ("other-ca.crt" if case == "untrusted-ca" else "ca.crt")
    password = "wrong" if case == "wrong-password" else "s3cret"
    tls = TlsConfig(ca_file=ca, cert_file=pki / "client.crt", key_file=pki / "client.key")
    url = f"mqtts://127.0.0.1:{tls_broker.port}"
    gw, _drv = _gateway(demo_manifest, url, tmp_path / "d", tls, "store-demo", password)
    async with gw:
        await _settle(gw, 3)
        assert not gw.uplink.connected.is_set()
        assert gw.outbox.depth >= 200  # nothing lost: all buffered until the hub is trusted
