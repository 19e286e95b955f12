#!/usr/bin/env bash
# Install or upgrade the store gateway on a Debian/Ubuntu box (amd64 or arm64), from this checkout or an
# unpacked source release. Idempotent: running it again with the same source changes nothing.
#   sudo deploy/install.sh [--no-start] [--health-timeout SECONDS]
# docs/install.md is the walk-through. What it does:
#  1. apt: python3 (>= 3.11), python3-venv, a C compiler for evdev (skipped when ROOT is set, or with SKIP_APT=1);
#  2. the group edge-config (reads /etc/edge-gateway) and any missing group the unit names;
#  3. a release /opt/edge-gateway/releases/<version>-<source hash>: a venv holding exactly
#     requirements-runtime.lock (as deploy/Containerfile does) plus the gateway, built in place, marked
#     complete only at the end (a half-built release is rebuilt next time);
#  4. the unit, udev rules, journald drop-in, /etc/edge-gateway (0750 root:edge-config) with the example
#     manifest and, once, the env template (0600 root);
#  5. when a manifest is present: a backup of the state database (pre-upgrade, with the old release), the
#     `current` symlink switched atomically, `systemctl restart`, and a health gate: /healthz must answer 200
#     within the timeout; if not, `current` goes back to the previous release, which is restarted, exit 1.
# The state (/var/lib/edge-gateway) is never touched by an upgrade or a rollback.
#
# For tests (tests/deploy/test_install.py): ROOT=<dir> installs under that directory instead of /;
# SYSTEMCTL / UDEVADM name the commands to call instead of systemctl / udevadm; UV names a uv binary
# (otherwise uv on PATH, otherwise pip in the new venv); PYTHON the interpreter for the venv.
set -euo pipefail

ROOT=${ROOT:-}
SYSTEMCTL=${SYSTEMCTL:-systemctl}
UDEVADM=${UDEVADM:-udevadm}
PYTHON=${PYTHON:-/usr/bin/python3}
HEALTH_TIMEOUT=${HEALTH_TIMEOUT:-90}
START=1
SRC=$(cd "$(dirname "$0")/.." && pwd)
UNIT=edge-gateway
CONF_GROUP=edge-config

while [ $# -gt 0 ]; do
  case "$1" in
    --no-start) START=0 ;;
    --health-timeout) HEALTH_TIMEOUT=$2; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "install: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

PREFIX=$ROOT/opt/edge-gateway
ETC=$ROOT/etc/edge-gateway
DATA=${DATA_DIR:-$ROOT/var/lib/edge-gateway}
BACKUPS=$ROOT/var/backups/edge-gateway
say() { echo "install: $*" >&2; }
die() { echo "install: $*" >&2; exit 1; }

# ---- 1. system packages -------------------------------------------------------------------------------------
if [ -z "$ROOT" ]; then
  [ "$(id -u)" = 0 ] || die "run as root (sudo $0)"
  . /etc/os-release
  case " ${ID:-} ${ID_LIKE:-} " in *" debian "*|*" ubuntu "*) ;; *) die "Debian or Ubuntu required (found ${ID:-?})" ;; esac
  arch=$(dpkg --print-architecture)
  case "$arch" in amd64|arm64) ;; *) say "warning: $arch is untested (amd64 and arm64 are supported)" ;; esac
  if [ "${SKIP_APT:-0}" != 1 ]; then
    missing=()
    # gcc & headers: evdev (keyboard-wedge scanners) is published as source only and compiles at install
    for p in python3 python3-venv python3-dev gcc libc6-dev linux-libc-dev ca-certificates; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    if [ ${#missing[@]} -gt 0 ]; then
      say "apt-get install ${missing[*]}"
      DEBIAN_FRONTEND=noninteractive apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
  fi
fi
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "$PYTHON is $("$PYTHON" -V 2>&1): 3.11 or newer is required (Debian 12, Ubuntu 24.04)"

# ---- 2. groups --------------------------------------------------------------------------------------------
has_group() { if [ -n "$ROOT" ]; then grep -q "^$1:" "$ROOT/etc/group"; else getent group "$1" >/dev/null; fi; }
gid_of() { if [ -n "$ROOT" ]; then awk -F: -v g="$1" '$1 == g {print $3}' "$ROOT/etc/group"; else getent group "$1" | cut -d: -f3; fi; }
add_group() {
  if [ -n "$ROOT" ]; then groupadd --system --prefix "$ROOT" "$1"; else groupadd --system "$1"; fi
  say "created system group $1"
}
# the unit's SupplementaryGroups must all exist, or the service fails to start (216/GROUP); bluetooth exists
# only once bluez is installed
for g in $(sed -n 's/^SupplementaryGroups=//p' "$SRC/deploy/edge-gateway.service"); do
  has_group "$g" || add_group "$g"
done
CONF_GID=$(gid_of "$CONF_GROUP")

# ---- 3. the release -----------------------------------------------------------------------------------------
VERSION=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$SRC/edge/__init__.py")
[ -n "$VERSION" ] || die "no __version__ in $SRC/edge/__init__.py"
SOURCES=(pyproject.toml README.md requirements-runtime.lock edge drivers rules firmware_sim bench sinks)
HASH=$(cd "$SRC" && find "${SOURCES[@]}" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path 'bench/.cache/*' \
         -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12)
NAME=$VERSION-$HASH
REL=$PREFIX/releases/$NAME

if [ -f "$REL/.complete" ]; then
  say "release $NAME already installed"
else
  say "building release $NAME in ${REL#"$ROOT"}"
  rm -rf "$REL"
  mkdir -p "$PREFIX/releases"
  stage=$(mktemp -d)
  trap 'rm -rf "$stage"' EXIT
  (cd "$SRC" && tar -c --exclude=__pycache__ --exclude='*.pyc' --exclude=bench/.cache "${SOURCES[@]}") | tar -x -C "$stage"
  uv=${UV:-$(command -v uv || true)}
  if [ -n "$uv" ]; then
    "$PYTHON" -m venv --without-pip "$REL"  # exactly the lock: no pip/setuptools of the venv's own
    "$uv" pip sync -q --python "$REL/bin/python" --compile-bytecode "$stage/requirements-runtime.lock"
    "$uv" pip install -q --python "$REL/bin/python" --compile-bytecode --no-deps "$stage"
  else
    "$PYTHON" -m venv "$REL"
    "$REL/bin/python" -m pip install -q --disable-pip-version-check --require-hashes --no-deps \
      -r "$stage/requirements-runtime.lock"
    "$REL/bin/python" -m pip install -q --disable-pip-version-check --no-deps "$stage"
  fi
  mkdir -p "$REL/share/edge-gateway"
  cp "$SRC"/deploy/{edge-gateway.service,99-edge-gateway.rules,journald-edge-gateway.conf,edge-gateway.env.example} \
     "$SRC"/deploy/store-manifest.example.yaml "$SRC"/docs/install.md "$REL/share/edge-gateway/"
  "$REL/bin/edge-gateway" --version >/dev/null || die "the new release does not run: $REL/bin/edge-gateway --version"
  echo "$NAME" > "$REL/.complete"
  chmod -R go-w "$REL"
fi

# ---- 4. system files ----------------------------------------------------------------------------------------
changed_units=0
put() {  # put MODE SRC DEST: install when different; say whether it changed
  if ! cmp -s "$2" "$3"; then install -D -m "$1" "$2" "$3"; return 0; fi
  chmod "$1" "$3"; return 1
}
put 0644 "$SRC/deploy/edge-gateway.service" "$ROOT/etc/systemd/system/$UNIT.service" && changed_units=1
if put 0644 "$SRC/deploy/99-edge-gateway.rules" "$ROOT/etc/udev/rules.d/99-edge-gateway.rules"; then
  say "udev rules changed: reloading"
  "$UDEVADM" control --reload && "$UDEVADM" trigger --subsystem-match=tty --subsystem-match=input || \
    say "warning: udevadm failed; the rules apply at the next boot or replug"
fi
if put 0644 "$SRC/deploy/journald-edge-gateway.conf" "$ROOT/etc/systemd/journald.conf.d/edge-gateway.conf"; then
  "$SYSTEMCTL" try-restart systemd-journald.service || say "warning: journald not restarted; limits apply at boot"
fi
# configuration: root:edge-config 0750, files 0640 (read by the service's group), the secrets 0600 root
install -d -m 0750 "$ETC"
chown "0:$CONF_GID" "$ETC"
put 0640 "$SRC/deploy/store-manifest.example.yaml" "$ETC/manifest.example.yaml" || true
[ -e "$ETC/env" ] || { install -m 0600 "$SRC/deploy/edge-gateway.env.example" "$ETC/env"; say "created ${ETC#"$ROOT"}/env: fill in the secrets"; }
chown 0:0 "$ETC/env"; chmod 0600 "$ETC/env"
find "$ETC" -mindepth 1 ! -name env -exec chown "0:$CONF_GID" {} + -exec chmod g+rX,g-w,o-rwx {} +
[ "$changed_units" = 1 ] && "$SYSTEMCTL" daemon-reload
"$SYSTEMCTL" enable "$UNIT.service" >/dev/null

# ---- 5. switch, restart, health gate --------------------------------------------------------------------------
PREV=$(readlink "$PREFIX/current" 2>/dev/null || true)
PREV=${PREV#releases/}
switch_to() {  # atomic: a new symlink renamed over the old one
  ln -sfn "releases/$1" "$PREFIX/.current.new" && mv -T "$PREFIX/.current.new" "$PREFIX/current"
}
health_url() {
  [ -n "${HEALTH_URL:-}" ] && { echo "$HEALTH_URL"; return; }
  "$PREFIX/current/bin/python" - "$ETC/manifest.yaml" <<'PY'
import sys, yaml
api = (yaml.safe_load(open(sys.argv[1], encoding="utf-8")) or {}).get("api") or {}
if api.get("enabled", True) is False:
    sys.exit(0)  # no local API, no /healthz: the gate falls back to the unit staying active
listen = str(api.get("listen", "0.0.0.0:8080"))
host, _, port = listen.rpartition(":")
host = host.strip("[]")
host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
print(f"http://[{host}]:{port}/healthz" if ":" in host else f"http://{host}:{port}/healthz")
PY
}
healthy() {  # poll /healthz until 200 (exit 0) or the timeout (exit 1, the last answer on stderr)
  if [ -z "$1" ]; then  # api.enabled: false: still active after a settling time (crash loops restart within 2 s)
    say "the manifest disables the local API: no /healthz; checking that the service stays active for 15 s"
    sleep 15
    "$SYSTEMCTL" is-active --quiet "$UNIT.service"
    return
  fi
  "$PREFIX/current/bin/python" - "$1" "$HEALTH_TIMEOUT" <<'PY'
import sys, time, urllib.error, urllib.request
url, deadline, last = sys.argv[1], time.monotonic() + float(sys.argv[2]), "no answer"
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            if r.status == 200:
                sys.exit(0)
    except urllib.error.HTTPError as e:
        last = f"{e.code}: {e.read()[:2000].decode(errors='replace')}"
    except OSError as e:
        last = str(e)
    time.sleep(0.5)
print(f"install: {url} not healthy within {sys.argv[2]} s: {last}", file=sys.stderr)
sys.exit(1)
PY
}

if [ "$PREV" = "$NAME" ] && [ "$changed_units" = 0 ] && \
   { [ ! -f "$ETC/manifest.yaml" ] || [ "$START" = 0 ] || "$SYSTEMCTL" is-active --quiet "$UNIT.service"; }; then
  say "release $NAME is current; nothing to do"
  exit 0
fi
if [ ! -f "$ETC/manifest.yaml" ] || [ "$START" = 0 ]; then
  switch_to "$NAME"
  say "installed $NAME. Next: write ${ETC#"$ROOT"}/manifest.yaml (from manifest.example.yaml) and the secrets in" \
      "${ETC#"$ROOT"}/env, then run this again (or: systemctl start $UNIT)"
  exit 0
fi
if [ -n "$PREV" ] && [ "$PREV" != "$NAME" ] && [ -f "$DATA/edge.db" ]; then
  mkdir -p "$BACKUPS"
  if "$PREFIX/releases/$PREV/bin/edge-gateway" backup --data-dir "$DATA" --to "$BACKUPS/before-$NAME.db" >&2; then
    say "state backed up to ${BACKUPS#"$ROOT"}/before-$NAME.db"
  else
    say "warning: no pre-upgrade backup (release $PREV cannot make one); continuing"
  fi
fi
switch_to "$NAME"
say "starting $NAME"
"$SYSTEMCTL" restart "$UNIT.service" || true
url=$(health_url)
if healthy "$url"; then
  [ -n "$PREV" ] && [ "$PREV" != "$NAME" ] && ln -sfn "releases/$PREV" "$PREFIX/previous"
  say "release $NAME is running and healthy ($url)"
  exit 0
fi
if [ -z "$PREV" ] || [ "$PREV" = "$NAME" ]; then
  die "release $NAME is not healthy and there is no previous release to go back to: journalctl -u $UNIT"
fi
say "release $NAME failed its health check: rolling back to $PREV"
switch_to "$PREV"
"$SYSTEMCTL" restart "$UNIT.service" || true
if healthy "$url"; then
  die "rolled back to $PREV, which is healthy; $NAME stays in ${PREFIX#"$ROOT"}/releases for inspection (journalctl -u $UNIT)"
fi
die "rolled back to $PREV, which is not healthy either: journalctl -u $UNIT"
