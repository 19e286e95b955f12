"""deploy/install.sh in a throwaway root: layout, permissions, idempotence, `systemd-analyze verify` of the
installed unit, upgrade keeping the data, rollback of a release that fails its health check.

There is no systemd as PID 1 here, so `systemctl` is a stand-in script (STUB below) that records its calls
and, for `restart edge-gateway`, does what the unit does: check-config, then `edge-gateway run` from
/opt/edge-gateway/current with the env file, as a background process. The venvs are built for real from
requirements-runtime.lock (uv, offline from its cache: the development venv was built from the same pins).
"""

from __future__ import annotations

import configparser
import contextlib
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bench.spine import manifest_dict
from edge.brokers import free_port
from tests.deploy.test_backup import GTIN
from tests.deploy.test_backup import rows as outbox_rows
from tests.faults.daemon import healthz, until

# one worker runs the whole file: base_root installs once per session (per worker under pytest-xdist)
pytestmark = [pytest.mark.timeout(240), pytest.mark.xdist_group("install")]
REPO = Path(__file__).resolve().parents[2]
UV = REPO / ".venv" / "bin" / "uv"
SOURCES = ("pyproject.toml", "README.md", "requirements-runtime.lock", "edge", "drivers", "rules", "firmware_sim",
           "bench", "sinks", "deploy", "docs")

STUB = """#!/usr/bin/env bash
# systemctl stand-in (no systemd as PID 1 here): records calls; restart/stop run the unit's commands
echo "$*" >> "$ROOT/systemctl.log"
gw=$ROOT/opt/edge-gateway/current/bin/edge-gateway
conf=$ROOT/etc/edge-gateway/manifest.yaml
pidf=$ROOT/daemon.pid
stop() {
  [ -f "$pidf" ] || return 0
  pid=$(cat "$pidf"); kill "$pid" 2>/dev/null || true
  for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$pidf"
}
case "$1 $2" in
  "restart edge-gateway.service")
    stop
    set -a; . "$ROOT/etc/edge-gateway/env"; set +a
    "$gw" check-config --here "$conf" >> "$ROOT/daemon.log" 2>&1 || exit 1
    nohup "$gw" run --config "$conf" >> "$ROOT/daemon.log" 2>&1 < /dev/null &
    echo $! > "$pidf" ;;
  "stop edge-gateway.service") stop ;;
  "is-active --quiet") [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null || exit 3 ;;
esac
exit 0
"""


def source_tree(dst: Path, version: str, *, broken: bool = False) -> Path:
    """A copy of the gateway's source as a release would ship it, with its own version (and a bug)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in SOURCES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".cache"))
        else:
            shutil.copy2(src, dst / name)
    init = dst / "edge" / "__init__.py"
    init.write_text(re.sub(r'__version__ = "[^"]*"', f'__version__ = "{version}"', init.read_text()))
    if broken:  # starts, then dies before serving: it never answers /healthz
        cli = dst / "edge" / "cli.py"
        text = cli.read_text()
        marker = re.compile(r"^    manifest = check_manifest\(config\).*$", re.M)  # `run` only: the daemon's start
        assert len(marker.findall(text)) == 1, "edge/cli.py: the daemon's start line to break is not found once"
        cli.write_text(marker.sub(lambda m: m.group(0) + '\n    raise SystemExit("broken release")', text))
    return dst


def new_root(path: Path) -> Path:
    """A throwaway root: /etc/group and gshadow of this machine (groupadd --prefix writes them), the systemd
    units of this machine under usr/lib (for `systemd-analyze verify --root`), the stand-in systemctl."""
    (path / "etc").mkdir(parents=True)
    for f in ("group", "gshadow"):
        if Path("/etc", f).exists():
            shutil.copy2(Path("/etc", f), path / "etc" / f)
    shutil.copytree("/usr/lib/systemd/system", path / "usr/lib/systemd/system", symlinks=True)
    stub = path / "systemctl"
    stub.write_text(STUB)
    stub.chmod(0o755)
    return path


def install(root: Path, source: Path, *args: str, health_timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `source`/deploy/install.sh into `root`."""
    env = {**os.environ, "ROOT": str(root), "SYSTEMCTL": str(root / "systemctl"), "UDEVADM": "true",
           "UV": str(UV), "UV_OFFLINE": "1", "PYTHON": "/usr/bin/python3", "HEALTH_TIMEOUT": str(health_timeout)}
    return subprocess.run(["bash", str(source / "deploy" / "install.sh"), *args], capture_output=True, text=True,
                          env=env, timeout=300, check=False)


def current(root: Path) -> str:
    """The release `current` points at."""
    return os.readlink(root / "opt/edge-gateway/current").removeprefix("releases/")


def calls(root: Path) -> list[str]:
    """The stand-in systemctl's calls so far."""
    log = root / "systemctl.log"
    return log.read_text().splitlines() if log.exists() else []


@pytest.fixture(scope="session")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A snapshot of this checkout (others may edit the work tree meanwhile: its hash must not move)."""
    return source_tree(tmp_path_factory.mktemp("src"), "0.1.0")


@pytest.fixture(scope="session")
def base_root(tmp_path_factory: pytest.TempPathFactory, checkout: Path) -> Path:
    """This checkout installed once (--no-start) into a throwaway root; shared by the layout tests."""
    root = new_root(tmp_path_factory.mktemp("root"))
    res = install(root, checkout, "--no-start")
    assert res.returncode == 0, res.stderr
    return root


def test_systemd_analyze_verify_the_installed_unit(base_root: Path) -> None:
    assert shutil.which("systemd-analyze"), "systemd-analyze missing: scripts/bootstrap.sh test installs systemd"
    res = subprocess.run(["systemd-analyze", "verify", f"--root={base_root}",
                          "/etc/systemd/system/edge-gateway.service"], capture_output=True, text=True, timeout=60,
                         check=False)
    # any output is a finding (an unknown key, a key in the wrong section, a missing ExecStart binary)
    assert (res.returncode, res.stdout + res.stderr) == (0, ""), res.stderr
    # and it does find problems: the same unit without the release it runs from
    link = base_root / "opt/edge-gateway/current"
    target = os.readlink(link)
    link.unlink()
    try:
        bad = subprocess.run(["systemd-analyze", "verify", f"--root={base_root}",
                              "/etc/systemd/system/edge-gateway.service"], capture_output=True, text=True,
                             timeout=60, check=False)
    finally:
        link.symlink_to(target)
    assert "current/bin/edge-gateway is not executable" in bad.stderr


def test_unit_limits_serial_ports_groups_and_start_limit() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    text = (REPO / "deploy/edge-gateway.service").read_text()
    unit.read_string(text)
    assert unit["Unit"]["StartLimitIntervalSec"] == "0" and "StartLimitIntervalSec" not in unit["Service"]
    allowed = [ln.split("=", 1)[1] for ln in text.splitlines() if ln.startswith("DeviceAllow=")]
    assert allowed == ["char-ttyUSB rw", "char-ttyACM rw", "char-ttyS rw", "char-ttyAMA rw", "char-input r"]
    svc = unit["Service"]
    assert "edge-config" in svc["SupplementaryGroups"].split()
    assert svc["ExecStart"].startswith("/opt/edge-gateway/current/bin/edge-gateway run ")
    assert svc["ConfigurationDirectoryMode"] == "0750"


def test_layout_and_permissions(base_root: Path) -> None:
    rel = base_root / "opt/edge-gateway/releases" / current(base_root)
    assert (rel / ".complete").read_text().strip() == current(base_root)
    out = subprocess.run([str(rel / "bin/edge-gateway"), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "edge-gateway 0.1.0"
    # exactly the runtime lock: every pinned distribution at its pinned version, no test tools
    lock = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", (REPO / "requirements-runtime.lock").read_text(), re.M))
    frozen = subprocess.run([str(UV), "pip", "freeze", "--python", str(rel / "bin/python")], capture_output=True,
                            text=True, check=True).stdout
    have = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", frozen, re.M))
    norm = {k.lower().replace("_", "-"): v for k, v in have.items()}
    assert {k.lower().replace("_", "-"): v for k, v in lock.items()} == {
        k: v for k, v in norm.items() if k != "edge-gateway"}
    assert "pytest" not in norm
    gid = next(int(ln.split(":")[2]) for ln in (base_root / "etc/group").read_text().splitlines()
               if ln.startswith("edge-config:"))
    etc = base_root / "etc/edge-gateway"
    st = etc.stat()
    assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o750, 0, gid)
    env = (etc / "env").stat()
    assert (env.st_mode & 0o777, env.st_uid, env.st_gid) == (0o600, 0, 0)
    example = (etc / "manifest.example.yaml").stat()
    assert (example.st_mode & 0o777, example.st_gid) == (0o640, gid)
    for path in ("etc/udev/rules.d/99-edge-gateway.rules", "etc/systemd/journald.conf.d/edge-gateway.conf",
                 "etc/systemd/system/edge-gateway.service"):
        assert (base_root / path).read_bytes() == (REPO / "deploy" / {
            "99-edge-gateway.rules": "99-edge-gateway.rules", "edge-gateway.conf": "journald-edge-gateway.conf",
            "edge-gateway.service": "edge-gateway.service"}[Path(path).name]).read_bytes()
    assert "enable edge-gateway.service" in calls(base_root)


def test_second_run_changes_nothing(base_root: Path, checkout: Path) -> None:
    def tree() -> dict[str, tuple[int, int]]:
        return {str(p.relative_to(base_root)): (p.lstat().st_mtime_ns, p.lstat().st_mode)
                for p in base_root.rglob("*") if "systemctl.log" not in p.name}

    before, n_calls = tree(), len(calls(base_root))
    res = install(base_root, checkout, "--no-start")
    assert res.returncode == 0, res.stderr
    assert "already installed" in res.stderr and "nothing to do" in res.stderr
    assert tree() == before
    assert calls(base_root)[n_calls:] == ["enable edge-gateway.service"]  # no restart, no reload


def test_env_template_names_every_secret_of_the_example_manifest() -> None:
    needed = set(re.findall(r"\$\{([A-Z0-9_]+)\}", (REPO / "deploy/store-manifest.example.yaml").read_text())) - {"VAR"}
    given = set(re.findall(r"^([A-Z0-9_]+)=", (REPO / "deploy/edge-gateway.env.example").read_text(), re.M))
    assert needed == given


def test_udev_rules_are_well_formed() -> None:
    # no udev event can be replayed here: check every rule line's syntax against udev(7)'s grammar
    pair = re.compile(r'^(ACTION|SUBSYSTEM|SUBSYSTEMS|KERNEL|ENV\{[A-Z_]+\}|ATTRS\{[a-zA-Z]+\}|GROUP|MODE|SYMLINK|'
                      r'GOTO|LABEL)(==|!=|\+=|=)"[^"]*"$')
    rules = 0
    for line in (REPO / "deploy/99-edge-gateway.rules").read_text().splitlines():
        body = line[1:] if line.startswith("#") and "==" in line and "," in line else line
        if not body.strip() or body.startswith("#"):
            continue
        for item in body.split(", "):
            assert pair.match(item.strip()), f"bad udev key in: {line}"
        if "SYMLINK+=" in body:
            assert re.search(r'SYMLINK\+="edge/[a-z0-9-]+"', body), line
        rules += 1
    assert rules >= 8


@pytest.fixture
def pty_scanner() -> Iterator[tuple[int, str]]:
    master, slave = os.openpty()
    try:
        yield master, os.ttyname(slave)
    finally:
        for fd in (master, slave):
            with contextlib.suppress(OSError):
                os.close(fd)


def scan_until(master: int, db: Path, n: int, log: Path) -> None:
    """Type scans (one per 50 ms: the driver may not have opened the port yet) until `db` holds `n` rows."""
    def done() -> bool:
        os.write(master, f"{GTIN}\r".encode())
        return db.exists() and outbox_rows(db) >= n

    until(done, 60, f"{n} outbox rows", log)


def test_upgrade_keeps_data_and_a_failing_release_rolls_back(tmp_path: Path, checkout: Path,
                                                             pty_scanner: tuple[int, str]) -> None:
    master, port = pty_scanner
    root = new_root(tmp_path / "root")
    api = free_port()
    data = root / "var/lib/edge-gateway"
    raw = manifest_dict(data, f"mqtt://127.0.0.1:{free_port()}",
                        [{"id": "scanner-1", "type": "scanner_serial", "port": port, "role": "receive"}], api_port=api)
    db = data / "edge.db"
    log = root / "daemon.log"
    try:
        # first install: no manifest yet -> installed, not started
        first = install(root, checkout)
        assert first.returncode == 0, first.stderr
        assert "Next: write /etc/edge-gateway/manifest.yaml" in first.stderr
        v1 = current(root)
        assert not any(c.startswith("restart") for c in calls(root))
        (root / "etc/edge-gateway/manifest.yaml").write_text(yaml.safe_dump(raw))
        # with the manifest: started (same release), healthy
        started = install(root, checkout)
        assert started.returncode == 0, started.stderr + log.read_text(errors="replace")[-2000:]
        assert current(root) == v1 and "is running and healthy" in started.stderr
        scan_until(master, db, 30, log)
        kept = outbox_rows(db)

        # upgrade to v2: backed up first, switched, healthy, the data kept
        v2_src = source_tree(tmp_path / "v2", "0.1.1")
        up = install(root, v2_src)
        assert up.returncode == 0, up.stderr + log.read_text(errors="replace")[-2000:]
        v2 = current(root)
        assert v2.startswith("0.1.1-") and v2 != v1
        assert os.readlink(root / "opt/edge-gateway/previous") == f"releases/{v1}"
        backup = root / f"var/backups/edge-gateway/before-{v2}.db"
        assert outbox_rows(backup) >= kept  # (a scan typed while the 30th was committed may follow)
        kept = outbox_rows(backup)
        assert outbox_rows(db) >= kept
        assert healthz(api)[0] == 200
        body = healthz(api)[1]
        assert body["checks"]["clock"]["ok"] is True  # synchronised or not, never a 503
        scan_until(master, db, kept + 1, log)
        kept = outbox_rows(db)

        # v3 dies at start: the health gate fails, `current` goes back to v2, which runs again on the same data
        v3_src = source_tree(tmp_path / "v3", "0.1.2", broken=True)
        bad = install(root, v3_src, health_timeout=8)
        assert bad.returncode == 1
        assert "failed its health check: rolling back to " + v2 in bad.stderr
        assert "rolled back to " + v2 + ", which is healthy" in bad.stderr
        assert current(root) == v2
        assert "broken release" in log.read_text(errors="replace")
        v3 = next(p.name for p in (root / "opt/edge-gateway/releases").iterdir() if p.name.startswith("0.1.2-"))
        assert (root / "opt/edge-gateway/releases" / v3 / ".complete").exists()  # kept for inspection
        assert healthz(api)[0] == 200
        assert outbox_rows(db) >= kept
        scan_until(master, db, kept + 1, log)
    finally:
        pid = root / "daemon.pid"
        if pid.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid.read_text()), signal.SIGTERM)
