#!/usr/bin/env bash
# Set up everything the gateway needs on a fresh Debian machine, idempotently:
#   system packages (when root; otherwise say exactly what is missing) and .venv from requirements.lock.
# Usage: scripts/bootstrap.sh [demo|test]   (demo: what the demo needs; test: also brokers, D-Bus, Chromium)
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-test}

# binary -> Debian package; runtime needs a broker for the demo, tests need the rest too.
# dbus-python (python-dbusmock's dependency, used by the demo's BLE simulator and the tests) builds
# against libdbus and glib, so their -dev packages are needed by both.
declare -A need=([mosquitto]=mosquitto [mosquitto_sub]=mosquitto-clients [pkg-config]=pkg-config
                 [dbus-daemon]=dbus [gcc]=gcc)
pkgs_extra=(libdbus-1-dev libglib2.0-dev)
if [ "$mode" = test ]; then
  # systemd-analyze: tests/deploy/test_install.py verifies the installed unit (the package, not a running systemd)
  need+=([nats-server]=nats-server [chromium]=chromium [openssl]=openssl [systemd-analyze]=systemd)
  pkgs_extra+=(fonts-wqy-microhei)  # a CJK font: the dashboard's zh-CN tests and screenshots show Chinese, not boxes
fi

missing=()
for bin in "${!need[@]}"; do command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || missing+=("${need[$bin]}"); done
for p in "${pkgs_extra[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: installing system packages: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "bootstrap: missing system packages: ${missing[*]}" >&2
    echo "bootstrap: install them (e.g. 'sudo apt-get install ${missing[*]}') and run again" >&2
    exit 3
  fi
fi

# the lock pins the packages; pyproject.toml lists our own packages for the editable install (a new top-level
# package needs a reinstall to be importable)
stamp=.venv/.lock-$(cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  command -v python3 >/dev/null || { echo "bootstrap: python3 (>= 3.11) is required" >&2; exit 3; }
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "bootstrap: python3 must be >= 3.11" >&2; exit 3; }
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check 'uv>=0.4'
  .venv/bin/uv pip sync -q --python .venv/bin/python requirements.lock
  .venv/bin/uv pip install -q --python .venv/bin/python --no-deps -e .
  rm -f .venv/.lock-*; touch "$stamp"
fi
