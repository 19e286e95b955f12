"""Remote manifest rollout: `cmd/manifest.apply` / `manifest.get`, POST/GET /api/v1/manifest, `edge-gateway apply`.

An apply carries a `version` (an integer above every version this store has staged) and either a whole
`manifest` (a mapping, or YAML/JSON text) or a JSON merge `patch` (RFC 7386) on the running one. It runs:

1. refusals that change nothing: a version not above the running one and every one staged before
   (`out_of_order`), text above `rollout.max_bytes` (`too_large`), a manifest `check-config --here` refuses
   (`invalid`, every problem with its field), a change to a section read only at start (hub, storage, api,
   local_broker, health, webhooks, notifications, epcis_capture, store.id: `invalid`), a planogram that drops
   a cell holding stock without `allow_stock_loss: true` (`conflict`), another apply still running (`busy`);
2. **staged**: `data_dir/manifest/versions/<version>.json` written atomically (temp file, fsync, rename,
   fsync of the directory);
3. **drivers restarted**: the manifest is switched in place: the drivers whose device section changed (or
   the shelves, SKUs or zones it names) stop and start with the new section, the others keep running; stock
   cells, ATP, the processors, the rules and offers take the new planogram and catalog at once;
4. the health gate (`rollout:` in the manifest): every device that was online before is online again within
   `gate_s` and stays so for `settle_s`, and none of them fails meanwhile. It needs nothing of the hub;
5. **gate passed** -> **pointer written**: `data_dir/manifest/current` names the version (atomically, as
   above): the commit. `retail.manifest.applied.v1`, the reply, `state/info` with the version and hash;
   or the gate failed: the previous manifest is switched back the same way, `retail.manifest.rolled_back.v1`
   and an error reply `rolled_back` say why.

A power cut at any point leaves `current` naming the old version (any step before the pointer) or the new
one, never a mixture: at start `edge-gateway run --config FILE` runs the committed version when FILE is
still the file it was applied on top of (its SHA-256 is kept in `current`), else FILE (store IT edited it:
a local edit wins, logged). Staged versions that never finished are marked `interrupted` in the history.
`EDGE_ROLLOUT_KILL_AT=<step>` (staged, drivers-restarted, gate-passed, pointer-written) kills the process
with SIGKILL at that step: the power-cut test's hook (docs/fleet.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import logging
import os
import signal
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from edge.config import Check, Manifest, parse_manifest, read_config_file
from edge.configbase import load_yaml
from edge.errors import CommandError, ConfigError
from edge.events import Event, EventClass
from edge.runtime import DeviceStatus
from edge.storeinfo import manifest_hash

if TYPE_CHECKING:
    from edge.gateway import Gateway

log = logging.getLogger(__name__)

KILL_ENV = "EDGE_ROLLOUT_KILL_AT"
STEPS = ("staged", "drivers-restarted", "gate-passed", "pointer-written")
MAX_VERSION = 2**53 - 1
# sections switched in place; every other one is read once at start and may not change by an apply
HOT = frozenset({"store", "zones", "catalog", "shelves", "devices", "beacons", "traffic", "rules", "offers", "atp",
                 "rollout"})
_PLANOGRAM = frozenset({"store", "zones", "catalog", "shelves", "devices", "beacons", "traffic"})
_SECRET_KEYS = frozenset({"secret", "password", "token"})
SOURCE = "gateway/manifest"


# ---- events ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class ManifestApplied(Event):
    """A manifest version passed its health gate and is committed: the store runs it (also after a restart)."""

    TYPE: ClassVar[str] = "retail.manifest.applied.v1"
    CLASS: ClassVar[EventClass] = EventClass.CONTROL
    TOPIC: ClassVar[str] = "events/manifest"

    version: int
    sha256: str  # of the validated manifest's canonical JSON (as in state/info)
    previous_version: int  # 0: the bootstrap manifest (--config)
    changed: tuple[str, ...]  # top-level sections that differ
    restarted: tuple[str, ...]  # devices whose drivers were restarted
    origin: str  # "command" | "api"


@dataclass(frozen=True, slots=True, kw_only=True)
class ManifestRolledBack(Event):
    """A manifest version failed its health gate (or could not be switched in): the previous one is back."""

    TYPE: ClassVar[str] = "retail.manifest.rolled_back.v1"
    CLASS: ClassVar[EventClass] = EventClass.CONTROL
    TOPIC: ClassVar[str] = "events/manifest"

    version: int  # the refused version
    sha256: str
    restored_version: int  # the version running again
    reason: str
    origin: str


class RolloutError(CommandError):
    """An apply refused or rolled back; `status` is the HTTP status the API answers with."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(code, message)
        self.status = status


# ---- RFC 7386 and files ---------------------------------------------------------------------------------------

def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON Merge Patch: `patch` applied to `target` (neither is changed; a new value is returned)."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a power cut leaves the old or the new content: temp file in the same
    directory, fsync, rename, fsync of the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


class VersionStore:
    """`data_dir/manifest/`: `versions/<version>.json` (staged texts), `current` (the committed version, the
    SHA-256 of the --config file it was applied on) and `history.json` (outcomes, newest last); at most `keep`
    versions and history entries are kept (the committed version always)."""

    def __init__(self, root: Path, keep: int = 20) -> None:
        self.root = root
        self.keep = keep

    def _version_path(self, version: int) -> Path:
        return self.root / "versions" / f"{version:016d}.json"

    @staticmethod
    def _read(path: Path) -> Any:
        try:
            return orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return None

    def current(self) -> dict[str, Any] | None:
        """The commit pointer ({version, sha256, bootstrap_sha256, committed}), None when there is none."""
        doc = self._read(self.root / "current")
        return doc if isinstance(doc, dict) and isinstance(doc.get("version"), int) else None

    def version(self, version: int) -> dict[str, Any] | None:
        """A staged version ({version, sha256, origin, staged, text}), None when not kept."""
        doc = self._read(self._version_path(version))
        return doc if isinstance(doc, dict) and isinstance(doc.get("text"), str) else None

    def history(self) -> list[dict[str, Any]]:
        """Outcomes of the kept versions, oldest first."""
        doc = self._read(self.root / "history.json")
        return [h for h in doc if isinstance(h, dict)] if isinstance(doc, list) else []

    def highest(self) -> int:
        """The highest version ever staged here (0: none)."""
        cur = self.current()
        versions = [int(h.get("version", 0)) for h in self.history()] + [cur["version"] if cur else 0]
        with contextlib.suppress(OSError):
            versions += [int(p.stem) for p in (self.root / "versions").glob("*.json") if p.stem.isdigit()]
        return max(versions, default=0)

    def stage(self, version: int, text: str, sha256: str, origin: str, now: datetime) -> None:
        """Write the version's text (step `staged`) and note it in the history as `staged`."""
        doc = {"version": version, "sha256": sha256, "origin": origin, "staged": _iso(now), "text": text}
        atomic_write(self._version_path(version), orjson.dumps(doc))
        self.record({"version": version, "sha256": sha256, "origin": origin, "outcome": "staged", "time": _iso(now)})

    def commit(self, version: int, sha256: str, bootstrap_sha256: str | None, now: datetime) -> None:
        """Point `current` at `version` (step `pointer-written`: from here on a restart runs it)."""
        doc = {"version": version, "sha256": sha256, "bootstrap_sha256": bootstrap_sha256, "committed": _iso(now)}
        atomic_write(self.root / "current", orjson.dumps(doc))

    def record(self, entry: dict[str, Any]) -> None:
        """Set the history entry of `entry["version"]` (appended when new), keep the last `keep`, delete the
        version files no entry names any more (never the committed one)."""
        hist = [h for h in self.history() if h.get("version") != entry["version"]]
        old = {h.get("version"): h for h in self.history()}.get(entry["version"], {})
        hist = [*hist, {**old, **entry}][-self.keep:]
        atomic_write(self.root / "history.json", orjson.dumps(hist))
        cur = self.current()
        keep = {h.get("version") for h in hist} | ({cur["version"]} if cur else set())
        with contextlib.suppress(OSError):
            for p in (self.root / "versions").glob("*.json"):
                if p.stem.isdigit() and int(p.stem) not in keep:
                    p.unlink()


# ---- what changes ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Plan:
    """What switching from one manifest to another touches."""

    changed: tuple[str, ...]  # top-level sections that differ
    stop: frozenset[str]  # devices whose drivers stop (changed, removed, disabled, or what they name changed)
    start: tuple[str, ...]  # devices whose drivers start with the new section (changed or added; enabled)
    processors: bool  # the processors are rebuilt (planogram, catalog or devices changed)


def _by_id(items: Sequence[Any], key: str) -> dict[str, Any]:
    return {str(getattr(i, key)): i.model_dump(mode="json") for i in items}


def _depends_on(dev: Any, m: Manifest) -> set[tuple[str, str]]:
    """(kind, id) of the zones, shelves and SKUs a device section names (a shelf: also its lanes' SKUs)."""
    out: set[tuple[str, str]] = set()
    for r in dev.references():
        if r.kind in ("lane", "cell") and r.shelf is not None:
            out.add(("shelf", r.shelf))
        elif r.kind in ("zone", "shelf", "sku", "read_point"):  # an antenna's read point: a zone (or a back room)
            out.add(("zone" if r.kind == "read_point" else r.kind, r.id))
    for kind, ident in list(out):
        shelf = m.shelf(ident) if kind == "shelf" else None
        if shelf is not None:
            out |= {("sku", ln.sku) for ln in shelf.lanes}
    return out


def plan_change(old: Manifest, new: Manifest) -> Plan:
    """The plan of switching `old` to `new`; `RolloutError` invalid when a section read only at start differs."""
    a, b = old.model_dump(mode="json", serialize_as_any=True), new.model_dump(mode="json", serialize_as_any=True)
    changed = tuple(k for k in b if a.get(k) != b[k])
    fixed = [k for k in changed if k not in HOT]
    if old.store.id != new.store.id:
        fixed.insert(0, "store.id")
    if fixed:
        raise RolloutError("invalid", f"{', '.join(fixed)} cannot change without a restart (read once at start): "
                                      "leave them as they are in the running manifest, or change them in the "
                                      "--config file and restart")
    moved: set[tuple[str, str]] = set()
    for kind, key, section in (("zone", "id", "zones"), ("shelf", "id", "shelves"), ("sku", "sku", "catalog")):
        before, after = _by_id(getattr(old, section), key), _by_id(getattr(new, section), key)
        moved |= {(kind, i) for i in before.keys() | after.keys() if before.get(i) != after.get(i)}
    olds, news = {d.id: d for d in old.devices}, {d.id: d for d in new.devices}
    stop = set()
    for dev_id, dev in olds.items():
        other = news.get(dev_id)
        same = other is not None and other.model_dump(mode="json") == dev.model_dump(mode="json")
        if dev.enabled and (not same or (_depends_on(dev, old) | _depends_on(other, new)) & moved):
            stop.add(dev_id)
    start = tuple(d.id for d in new.devices
                  if d.enabled and (d.id in stop or d.id not in olds or not olds[d.id].enabled))
    return Plan(changed, frozenset(stop), start, processors=bool(set(changed) & _PLANOGRAM))


def jsonable(value: Any) -> Any:
    """YAML data as JSON data: mapping keys as text (`antennas: {1: apparel}` -> `{"1": "apparel"}`), as a hub
    sends them (the manifest's models read both)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value


def redact(value: Any) -> Any:
    """`value` with every secret, password and token written in clear replaced (a `${VAR}` reference stays)."""
    if isinstance(value, Mapping):
        return {k: ("<redacted>" if k in _SECRET_KEYS and isinstance(v, str) and "${" not in v else redact(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


# ---- start-up: which manifest `run` runs ---------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Running:
    """The manifest a gateway runs: its text (secrets as `${VAR}`), version (0: --config) and where it came from."""

    manifest: Manifest
    text: str
    version: int
    origin: str  # "bootstrap" (--config) | "rollout" (a committed apply)
    bootstrap_sha256: str | None  # of the --config file's bytes


def startup(config: Path, boot: Manifest, checks: Sequence[Check] = ()) -> Running:
    """What `edge-gateway run --config FILE` runs: the committed rollout version when `current` says it was
    applied on top of this very FILE (same SHA-256) and it still validates here, else FILE itself (`boot`)."""
    text = read_config_file(config)
    bsha = hashlib.sha256(text.encode()).hexdigest()
    bootstrap = Running(boot, text, 0, "bootstrap", bsha)
    store = VersionStore(Path(boot.storage.data_dir) / "manifest", boot.rollout.keep_versions)
    cur = store.current()
    if cur is None:
        return bootstrap
    if cur.get("bootstrap_sha256") != bsha:
        log.warning("%s changed since manifest version %s was applied on top of it: running %s (a local edit "
                    "wins; the next apply must have a version above %s)", config, cur["version"], config,
                    store.highest())
        return bootstrap
    rec = store.version(int(cur["version"]))
    if rec is None:
        log.error("the committed manifest version %s is missing from %s: running %s", cur["version"], store.root,
                  config)
        return bootstrap
    try:
        m = parse_manifest(rec["text"], f"{store.root}/versions/{cur['version']}", checks=checks)
    except ConfigError as err:
        log.error("the committed manifest version %s does not validate here (%s): running %s", cur["version"],  # noqa: TRY400 (the issues are the news)
                  "; ".join(i.render() for i in err.issues[:5]), config)
        return bootstrap
    log.info("running manifest version %s (committed %s; %s is its bootstrap)", cur["version"],
             cur.get("committed"), config)
    return Running(m, rec["text"], int(cur["version"]), "rollout", bsha)


# ---- the running part -----------------------------------------------------------------------------------------

class Rollout:
    """`manifest.apply` / `manifest.get` in a running gateway (see the module docstring)."""

    def __init__(self, gw: Gateway, checks: Sequence[Check] = ()) -> None:
        self.gw = gw
        self.checks = list(checks)
        m = gw.manifest
        text = orjson.dumps(m.model_dump(mode="json", exclude_unset=True, serialize_as_any=True)).decode()
        self.running = Running(m, text, 0, "bootstrap", None)
        self.sha256 = manifest_hash(m)
        self.store = VersionStore(gw.data_dir / "manifest", m.rollout.keep_versions)
        self.applying: int | None = None  # the version being applied
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[dict[str, Any]]] = set()
        gw.commands.register("manifest.apply", self._cmd_apply)
        gw.commands.register("manifest.get", self._cmd_get, read_only=True)

    def adopt(self, running: Running) -> None:
        """Run `running` (from `startup`; before the gateway starts): its text is the base of merge patches."""
        self.running = running
        self.sha256 = manifest_hash(running.manifest)

    def info(self) -> dict[str, Any]:
        """The rollout part of `state/info`'s `manifest`."""
        return {"version": self.running.version, "origin": self.running.origin}

    async def open(self) -> None:
        """At start: a version staged and never finished (a power cut mid-apply) is marked `interrupted`."""
        now = _iso(self.gw.clock.now())

        def mark() -> None:
            for h in self.store.history():
                if h.get("outcome") == "staged":
                    self.store.record({**h, "outcome": "interrupted", "time": now,
                                       "reason": "the gateway stopped during the apply; the previous version runs"})
        await asyncio.to_thread(mark)

    # ---- manifest.get ----
    def get(self) -> dict[str, Any]:
        """The running manifest (secrets redacted), its version, hash and the history of versions."""
        try:
            raw = jsonable(load_yaml(self.running.text))
        except Exception:  # the running text was validated: this is no more than a fallback
            raw = jsonable(self.running.manifest.model_dump(mode="json", serialize_as_any=True))
        return {"store": self.gw.manifest.store.id, "version": self.running.version, "sha256": self.sha256,
                "origin": self.running.origin, "applying": self.applying, "manifest": redact(raw),
                "history": self.store.history()}

    # ---- manifest.apply ----
    async def apply(self, req: Mapping[str, Any], origin: str = "command") -> dict[str, Any]:
        """Validate, stage, switch, gate, commit or roll back (module docstring); the reply, or `RolloutError`.
        The apply runs to its end even when the asker goes away (a hub connection lost mid-apply)."""
        if self._lock.locked():
            raise RolloutError("busy", f"manifest version {self.applying} is being applied: ask again when it is "
                                       "done", 409)
        task = asyncio.create_task(self._apply(req, origin), name="manifest-apply")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return await asyncio.shield(task)

    def _done(self, task: asyncio.Task[dict[str, Any]]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None and not isinstance(exc, CommandError):
            log.error("manifest apply failed: %s", exc, exc_info=exc)

    async def _apply(self, req: Mapping[str, Any], origin: str) -> dict[str, Any]:
        async with self._lock:
            version, text = self._candidate(req)
            allow_loss = req.get("allow_stock_loss", False)
            if not isinstance(allow_loss, bool):
                raise RolloutError("bad_request", "allow_stock_loss must be true or false")
            self.applying = version
            try:
                return await self._run(version, text, allow_loss, origin)
            finally:
                self.applying = None

    def _candidate(self, req: Mapping[str, Any]) -> tuple[int, str]:
        """(version, manifest text) of a request; refusals as `RolloutError`."""
        version = req.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= MAX_VERSION:
            raise RolloutError("bad_request", f"version must be an integer 1..{MAX_VERSION}, above the running one")
        highest = max(self.running.version, self.store.highest())
        if version <= highest:
            raise RolloutError("out_of_order", f"version {version} is not above {highest} (the running version is "
                                               f"{self.running.version}; every version is tried once): send a "
                                               "newer one", 409)
        whole, patch = req.get("manifest"), req.get("patch")
        if (whole is None) == (patch is None):
            raise RolloutError("bad_request", "give either manifest (the whole manifest: an object or YAML text) "
                                              "or patch (a JSON merge patch, RFC 7386, on the running manifest)")
        if patch is not None:
            if not isinstance(patch, Mapping):
                raise RolloutError("bad_request", "patch must be an object (RFC 7386 merge patch)")
            try:
                base = jsonable(load_yaml(self.running.text))
            except Exception as exc:  # the running text was validated once; say so if it no longer parses
                raise RolloutError("conflict", f"the running manifest's text cannot be patched ({exc}): send the "
                                               "whole manifest", 409) from None
            text = orjson.dumps(merge_patch(base, patch), option=orjson.OPT_INDENT_2).decode()
        elif isinstance(whole, str):
            text = whole
        elif isinstance(whole, Mapping):
            text = orjson.dumps(jsonable(whole), option=orjson.OPT_INDENT_2).decode()
        else:
            raise RolloutError("bad_request", "manifest must be an object or YAML text")
        limit = self.running.manifest.rollout.max_bytes
        if len(text.encode()) > limit:
            raise RolloutError("too_large", f"the manifest is {len(text.encode())} bytes, above rollout.max_bytes "
                                            f"({limit})", 413)
        return version, text

    def _validate(self, version: int, text: str, allow_loss: bool) -> tuple[Manifest, Plan]:
        """Validate as `check-config --here` does, then against the running store."""
        try:
            new = parse_manifest(text, f"manifest version {version}", checks=self.checks)
        except ConfigError as err:
            problems = [f"{i.path or '<root>'}: {i.message}" + (f" (line {i.line})" if i.line else "")
                        for i in err.issues]
            more = f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""
            raise RolloutError("invalid", "; ".join(problems[:20]) + more) from None
        gw = self.gw
        plan = plan_change(gw.manifest, new)
        managed = {d.id for d in gw.manifest.devices if d.enabled}
        others = {s.device for s in gw.supervisor.statuses()} - managed  # drivers not from the manifest
        clash = sorted(others & {d.id for d in new.devices})
        if clash:
            raise RolloutError("invalid", f"device id(s) {', '.join(clash)} already used by a running device: give "
                                          "each device its own id")
        cells = {(s.id, ln.sku) for s in new.shelves for ln in s.lanes}
        lost = [c for c in gw.stock.cells() if (c.shelf, c.sku) not in cells and c.known and c.count > 0]
        if lost and not allow_loss:
            listed = ", ".join(f"{c.shelf}/{c.sku} ({c.count})" for c in lost[:10])
            raise RolloutError("conflict", f"the new planogram drops cells holding stock: {listed}; count them to 0 "
                                           "first, or send allow_stock_loss: true to drop them", 409)
        return new, plan

    async def _run(self, version: int, text: str, allow_loss: bool, origin: str) -> dict[str, Any]:
        gw, clock = self.gw, self.gw.clock
        new, plan = await asyncio.to_thread(self._validate, version, text, allow_loss)
        sha = manifest_hash(new)
        old, old_running = gw.manifest, self.running
        await asyncio.to_thread(self.store.stage, version, text, sha, origin, clock.now())
        self._step("staged")
        before = {s.device: s for s in gw.supervisor.statuses()}
        log.info("applying manifest version %d (%s changed; restarting %s)", version, ", ".join(plan.changed) or
                 "nothing", ", ".join(sorted(plan.stop | set(plan.start))) or "no device")
        try:
            await self._switch(new, plan)
            self._step("drivers-restarted")
            reason = await self._gate(old, new, before, plan)
        except Exception as exc:  # a switch that failed half-way is rolled back like a failed gate
            log.exception("manifest version %d could not be switched in", version)
            reason = f"the switch failed: {type(exc).__name__}: {exc}"
        if reason is None:
            self._step("gate-passed")
            await asyncio.to_thread(self.store.commit, version, sha, self.running.bootstrap_sha256, clock.now())
            self._step("pointer-written")
            self.running = Running(new, text, version, "rollout", old_running.bootstrap_sha256)
            self.sha256 = sha
            now = clock.now()
            await asyncio.to_thread(self.store.record, {"version": version, "outcome": "applied", "time": _iso(now)})
            ev = ManifestApplied(source=SOURCE, time=now, subject=str(version), version=version, sha256=sha,
                                 previous_version=old_running.version, changed=plan.changed,
                                 restarted=tuple(sorted(plan.stop | set(plan.start))), origin=origin)
            await self._announce(ev)
            log.info("manifest version %d applied", version)
            return {"result": "applied", "version": version, "sha256": sha, "previous_version": old_running.version,
                    "changed": list(plan.changed), "restarted": list(ev.restarted)}
        log.warning("manifest version %d failed its health gate: %s; rolling back to version %d", version, reason,
                    old_running.version)
        back = plan_change(new, old)
        try:
            await self._switch(old, Plan(back.changed, plan.stop | set(plan.start), back.start, back.processors))
        except Exception:
            log.exception("rolling back to manifest version %d failed: the process exits so that systemd starts it "
                          "with the committed version", old_running.version)
            os.kill(os.getpid(), signal.SIGTERM)
        now = clock.now()
        await asyncio.to_thread(self.store.record, {"version": version, "outcome": "rolled_back", "reason": reason,
                                                    "time": _iso(now)})
        await self._announce(ManifestRolledBack(source=SOURCE, time=now, subject=str(version), version=version,
                                                sha256=sha, restored_version=old_running.version, reason=reason,
                                                origin=origin))
        raise RolloutError("rolled_back", f"version {version} rolled back to {old_running.version}: {reason}", 409)

    @staticmethod
    def _step(name: str) -> None:
        log.debug("manifest apply step %s", name)
        if os.environ.get(KILL_ENV) == name:  # the power-cut test's hook (module docstring)
            log.warning("%s=%s: killing the process (SIGKILL) at this step", KILL_ENV, name)
            os.kill(os.getpid(), signal.SIGKILL)

    async def _announce(self, event: Event) -> None:
        """Commit `event` and publish the catalog, store info (version, hash) and ATP of the running manifest."""
        gw = self.gw
        events, snaps = gw.atp.refresh(gw.clock.now())
        gw.submit_store_docs([event, *events], snaps)
        await gw.outbox.flush()

    async def _switch(self, m: Manifest, plan: Plan) -> None:
        """Put `m` in force in place: the planogram, catalog and ATP settings, the processors, the drivers in
        the plan, the rules and offers."""
        gw = self.gw
        gw.manifest = m
        gw.stock.reconfigure(m)
        gw.atp.reconfigure(m)
        if plan.processors:
            procs = gw.build_processors(m)
            await gw.restore_processors(procs)
            gw.pipeline.set_processors(procs)
        start = set(plan.start)
        await gw.supervisor.replace(plan.stop, gw.build_drivers(m, [d for d in m.devices if d.id in start]))
        apply_rules = getattr(gw.rules, "apply_manifest", None)
        if apply_rules is not None:
            await apply_rules(m)

    async def _gate(self, old: Manifest, m: Manifest, before: Mapping[str, DeviceStatus], plan: Plan) -> str | None:
        """None when the devices online before are online again within `gate_s` and stay so for `settle_s`
        without failing; else why not."""
        cfg, clock = m.rollout, self.gw.clock
        enabled = {d.id for d in m.devices if d.enabled}
        managed = {d.id for d in old.devices}  # the others are drivers not from the manifest: kept
        required = sorted(d for d, s in before.items() if s.state == "online" and (d in enabled or d not in managed))
        kept = {d: s.restarts for d, s in before.items() if d not in plan.stop}
        deadline = clock.monotonic() + cfg.gate_s
        settled: float | None = None
        while True:
            now = {s.device: s for s in self.gw.supervisor.statuses()}
            for d in required:
                s = now.get(d)
                if s is not None and s.restarts > kept.get(d, 0):
                    return f"device {d} failed {'during the gate' if d in kept else 'after its restart'}: " \
                           f"{s.error or 'offline'}"
            waiting = [d for d in required if d not in now or now[d].state != "online"]
            t = clock.monotonic()
            if not waiting:
                settled = t if settled is None else settled
                if t - settled >= cfg.settle_s:
                    return None
            else:
                settled = None
                if t >= deadline:
                    states = ", ".join(f"{d} ({now[d].state if d in now else 'gone'})" for d in waiting)
                    return f"not online again within {cfg.gate_s:g} s: {states}"
            await clock.sleep(0.1)

    # ---- command handlers ----
    async def _cmd_apply(self, req: Mapping[str, Any]) -> Any:
        return await self.apply(req, "command")

    async def _cmd_get(self, _req: Mapping[str, Any]) -> Any:
        return self.get()



# ---- `edge-gateway apply FILE`: store IT, through the running daemon's local API ------------------------------

def apply_file(file: Path, *, url: str, token: str | None, version: int | None = None, patch: bool = False,
               allow_stock_loss: bool = False, timeout: float = 660.0) -> int:
    """POST FILE (a whole manifest, or with `patch` a JSON merge patch in YAML or JSON) to the daemon at `url`;
    without `version` the next one (above the running version and its history). Prints the outcome; exit
    0 applied, 1 refused or rolled back (the reason on stderr), 2 the file or the daemon could not be used."""
    import sys

    import httpx

    if not token:
        print("edge-gateway apply: no admin token: pass --token or set EDGE_ADMIN_TOKEN", file=sys.stderr)
        return 2
    try:
        text = read_config_file(file)
        body: dict[str, Any] = {"allow_stock_loss": allow_stock_loss}
        if patch:
            body["patch"] = load_yaml(text)
        else:
            body["manifest"] = text
    except ConfigError as err:
        print("\n".join(i.render() for i in err.issues), file=sys.stderr)
        return 2
    except Exception as exc:  # YAML errors of a patch file
        print(f"edge-gateway apply: {file}: not valid YAML or JSON: {exc}", file=sys.stderr)
        return 2
    headers = {"Authorization": f"Bearer {token}"}
    base = url.rstrip("/")
    try:
        with httpx.Client(timeout=timeout, headers=headers) as client:
            if version is None:
                got = client.get(f"{base}/api/v1/manifest")
                if got.status_code != 200:
                    print(f"edge-gateway apply: GET /api/v1/manifest: {got.status_code} {got.text[:500]}",
                          file=sys.stderr)
                    return 2
                doc = got.json()
                version = max([int(doc["version"])] + [int(h.get("version", 0)) for h in doc.get("history", [])]) + 1
            r = client.post(f"{base}/api/v1/manifest", json={**body, "version": version})
    except httpx.HTTPError as exc:
        print(f"edge-gateway apply: cannot reach the daemon at {base}: {exc}", file=sys.stderr)
        return 2
    try:
        reply = r.json()
    except ValueError:
        reply = {"error": {"code": "error", "message": r.text[:500]}}
    if r.status_code == 200:
        print(f"version {reply['version']} applied (sha256 {reply['sha256']}; changed: "
              f"{', '.join(reply['changed']) or 'nothing'}; restarted: {', '.join(reply['restarted']) or 'none'})")
        return 0
    error = reply.get("error", {})
    print(f"edge-gateway apply: version {version}: {error.get('code')}: {error.get('message')}", file=sys.stderr)
    return 2 if error.get("code") in ("bad_request", "invalid", "unauthorized", "forbidden") else 1
