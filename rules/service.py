"""The rules engine in a running gateway: commands, rules-file watching, restore at start, webhook sender.

`rules.install(gw)` builds one `RulesService`. MQTT commands (request/reply, see edge/commands.py):
`alert.ack` {alert_id, by}, `alert.resolve` {alert_id, by, reason} (resolved by hand: close_reason
`manual: <reason>`, the resolved event names `by`), `alert.snooze` {alert_id, by, duration_s} (300..28800 s:
no escalation and no staff chat messages until it comes back),
`sighting` {shopper, consent, beacon|zone, rssi?, time?, tags?},
`rules.reload` {rules?}, `restock.mute` {shelf, sku?, on?, duration_s?} (0 < duration_s <= the rules'
`mute_max_s`, default mute_max_s; with `sku` only that cell, until its count rises). The HTTP API calls the
same methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.errors import CommandError
from edge.runtime import GatewayView
from rules.actions import KINDS
from rules.alerts import STATES
from rules.config import OffersConfig, RulesBody, RulesConfig, WebhookConfig
from rules.engine import RulesEngine, split
from rules.notify import targets
from rules.webhooks import WebhookWorker

log = logging.getLogger(__name__)


def mute_duration(duration_s: object, mute_max_s: float) -> float | None:
    """A `restock.mute` duration: None (the rules' mute_max_s) or a finite number of seconds in
    (0, mute_max_s]; anything else is a `bad_request` naming the field and the bound."""
    if duration_s is None:
        return None
    if (isinstance(duration_s, bool) or not isinstance(duration_s, int | float) or not math.isfinite(duration_s)
            or not 0 < duration_s <= mute_max_s):
        raise CommandError(
            "bad_request", f"duration_s must be a number of seconds above 0 and at most mute_max_s ({mute_max_s:g})"
        )
    return float(duration_s)


def inline_body(cfg: RulesConfig) -> RulesBody:
    """The rules written inline in the manifest (everything but `file` and `watch_interval_s`)."""
    return RulesBody.model_validate(cfg.model_dump(exclude={"file", "watch_interval_s"}))


class RulesService:
    """Owns the engine and its background tasks inside a gateway."""

    def __init__(self, gw: GatewayView) -> None:
        self.gw = gw
        m = gw.manifest
        self.config: RulesConfig = getattr(m, "rules", None) or RulesConfig()
        offers: OffersConfig = getattr(m, "offers", None) or OffersConfig()
        self.webhooks: list[WebhookConfig] = list(getattr(m, "webhooks", None) or [])
        self.engine = RulesEngine(m, rules=self.config, offers=offers, webhooks=self.webhooks)
        self.worker = WebhookWorker(gw, self.webhooks, targets=targets(self.engine.notifier.config))
        self._tasks: list[asyncio.Task[None]] = []
        self._file_sig: str | None = None
        self.last_problems: list[str] = []

    # ---- lifecycle ----
    def start(self) -> None:
        """Load the rules, hook into the gateway, and start the background tasks (needs a running loop)."""
        now = self.gw.clock.now()
        path = self.config.file
        text = self._read(path) if path is not None else None
        if text is not None:
            self._file_sig = self._sig(text)
            ok, problems, out = self.engine.load_text(text, "start", now)
        else:
            ok, problems, out = self.engine.load_body(inline_body(self.config), "start", now)
            if path is not None:
                ok, problems, more = self.engine.reject(
                    "start", [f"cannot read rules file {path}: check the path; using the inline rules"], now
                )
                out += more
        if not ok:
            log.error("rules not loaded: %s; using the default rules", "; ".join(problems))
            self.last_problems = problems
        self.gw.add_reactor(self.engine)
        self.gw.stock.set_levels(self._levels)  # each stock cell's min/par and low flag (issue 16)
        self.engine.reserved = self.gw.atp.reserved_at  # units of a cell held for online orders (edge/orders.py)
        self.engine.backroom = self.gw.atp.backroom_counted  # units counted in the back room (edge/backroom.py)
        self.gw.register_command("alert.ack", self._cmd_ack)
        self.gw.register_command("alert.resolve", self._cmd_resolve)
        self.gw.register_command("alert.snooze", self._cmd_snooze)
        self.gw.register_command("sighting", self._cmd_sighting)
        self.gw.register_command("rules.reload", self._cmd_reload)
        self.gw.register_command("restock.mute", self._cmd_mute)
        self._emit(out)
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._restore(), name="rules-restore"))
        if path is not None:
            self._tasks.append(loop.create_task(self._watch(path), name="rules-watch"))
        if self.worker.targets:  # webhooks and staff chat channels
            self._tasks.append(loop.create_task(self.worker.run(), name="rules-webhooks"))

    def _levels(self, shelf: str, sku: str) -> tuple[int, int] | None:
        """(min, par) of the cell's enabled restock rule in the loaded rules, None without one."""
        rule = self.engine.ruleset.cells.get((shelf, sku))
        return (rule.min, rule.max) if rule is not None and rule.enabled else None

    async def stop(self) -> None:
        """Cancel the background tasks."""
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def open_alerts(self) -> int:
        """How many alerts are open (not yet acknowledged or closed)."""
        return sum(1 for a in self.engine.book.live.values() if a.state == "open")

    def metrics_text(self) -> str:
        """The engine's counters plus webhook and staff chat delivery counters, Prometheus text."""
        return self.engine.metrics_text() + self.worker.metrics_text()

    # ---- operations shared by MQTT commands and the HTTP API ----
    async def ack(self, alert_id: object, by: object) -> dict[str, Any]:
        """Acknowledge an alert; the acknowledged event is committed before this returns."""
        await self._alert_action(alert_id, lambda now: self.engine.ack(alert_id, by, now))
        alert = self.engine.book.live.get(str(alert_id))
        return alert.row() if alert else {"id": alert_id}

    async def snooze(self, alert_id: object, by: object, duration_s: object) -> dict[str, Any]:
        """Snooze a live alert for 5 min .. 8 h; the snoozed event is committed before this returns."""
        await self._alert_action(alert_id, lambda now: self.engine.snooze(alert_id, by, duration_s, now))
        alert = self.engine.book.live.get(str(alert_id))
        return alert.row() if alert else {"id": alert_id}

    async def resolve(self, alert_id: object, by: object, reason: object) -> dict[str, Any]:
        """Resolve a live alert by hand with a reason; the resolved event is committed before this returns."""
        await self._alert_action(alert_id, lambda now: self.engine.resolve(alert_id, by, reason, now))
        rows = await self.gw.query("SELECT * FROM alerts WHERE id = ?", (str(alert_id),))
        return dict(rows[0]) if rows else {"id": alert_id}

    async def _alert_action(self, alert_id: object, act: Callable[[datetime], list[object]]) -> None:
        """Run a staff action on a live alert and commit its outputs; a closed alert is a `conflict`."""
        try:
            out = act(self.gw.clock.now())
        except CommandError as err:
            if err.code == "not_found" and isinstance(alert_id, str):
                rows = await self.gw.query("SELECT state FROM alerts WHERE id = ?", (alert_id,))
                if rows:
                    raise CommandError("conflict", f"alert {alert_id} is already {rows[0]['state']}") from None
            raise
        await self.gw.emit_committed(*split(out))

    async def sighting(self, raw: object) -> dict[str, Any]:
        """Handle a shopper sighting; returns the offers to show (raises SightingError for bad input)."""
        reply, out = self.engine.sighting(raw, self.gw.clock.now(), self.gw.stock)
        if out:
            self._emit(out)
        return reply

    async def reload(self, rules: object = None, origin: str = "command") -> dict[str, Any]:
        """Reload the rules (from `rules` if given, else the rules file, else the manifest's inline rules)."""
        now = self.gw.clock.now()
        if rules is not None:
            if not isinstance(rules, Mapping):
                raise CommandError("bad_request", "rules must be an object with the rules fields")
            ok, problems, out = self.engine.load_body(dict(rules), origin, now)
        elif self.config.file is not None:
            text = await asyncio.to_thread(self._read, self.config.file)
            if text is None:
                ok, problems, out = self.engine.reject(origin, [f"cannot read rules file {self.config.file}"], now)
            else:
                self._file_sig = self._sig(text)
                ok, problems, out = self.engine.load_text(text, origin, now)
        else:
            ok, problems, out = self.engine.load_body(inline_body(self.config), origin, now)
        await self.gw.emit_committed(*split(out))
        if not ok:
            self.last_problems = problems
            raise CommandError("rules_rejected", "the old rules stay in force: " + "; ".join(problems))
        self.last_problems = []
        return {"digest": self.engine.digest, "cells": len(self.engine.ruleset.cells)}

    async def apply_manifest(self, manifest: Any) -> dict[str, Any]:
        """Take a new store manifest without a restart (edge/rollout.py): its planogram, catalog, offers and
        rules (inline or its rules file) are in force when this returns; live alerts and mutes stay. Raises
        `CommandError` rules_rejected (the old rules stay) when its rules do not compile."""
        self.config = manifest.rules
        self.engine.retarget(manifest, manifest.offers)
        return await self.reload(origin="manifest")

    async def mute(self, shelf: object, on: object = True, duration_s: object = None,
                   sku: object = None) -> dict[str, Any]:
        """Mute or unmute restock alerts of a shelf, or with `sku` of one cell (until its count rises)."""
        if not isinstance(shelf, str) or not isinstance(on, bool):
            raise CommandError("bad_request", "shelf must be a shelf id and on a boolean")
        if sku is not None and (not isinstance(sku, str) or not sku or len(sku) > 64):
            raise CommandError("bad_request", "sku must be a SKU of the shelf")
        dur = mute_duration(duration_s, self.engine.ruleset.mute_max_s)
        out = self.engine.mute(shelf, on=on, now=self.gw.clock.now(), duration_s=dur, sku=sku)
        await self.gw.emit_committed(*split(out))
        if sku is None:
            return {"shelf": shelf, "muted": on}
        cell = next((c for c in self.engine.restocking() if (c["shelf"], c["sku"]) == (shelf, sku)), None)
        return {"shelf": shelf, "sku": sku, "muted": cell is not None, "until": cell["until"] if cell else None}

    async def alerts(
        self, state: str | None = None, limit: int = 200, *, kind: str | None = None, shelf: str | None = None,
        since: datetime | None = None, until: datetime | None = None, after: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Alerts from the table, newest first (by opened_at, then id), filtered by state, kind, shelf and
        opened_at in [since, until); at most `limit` (1..1000) and the cursor of the next page (None: no more).
        `after` is the cursor a previous page returned."""
        if state is not None and state not in STATES:
            raise CommandError("bad_request", f"state must be one of {', '.join(STATES)}")
        if kind is not None and kind not in KINDS:
            raise CommandError("bad_request", f"kind must be one of {', '.join(KINDS)}")
        if not 1 <= limit <= 1000:
            raise CommandError("bad_request", "limit must be 1..1000")
        where: list[str] = []
        args: list[Any] = []
        for col, value in (("state", state), ("kind", kind), ("shelf", shelf)):
            if value is not None:
                where.append(f"{col} = ?")
                args.append(value)
        for op, bound in ((">=", since), ("<", until)):
            if bound is not None:
                if bound.tzinfo is None:
                    raise CommandError("bad_request", "since/until must carry a time zone (e.g. 2026-01-05T10:00:00Z)")
                where.append(f"julianday(opened_at) {op} julianday(?)")
                args.append(bound.astimezone(UTC).isoformat())
        if after is not None:
            opened, sep, last_id = after.partition("~")
            if not sep or not opened or not last_id or len(after) > 128:
                raise CommandError("bad_request", "after must be the `next` cursor of a previous page")
            where.append("(opened_at < ? OR (opened_at = ? AND id < ?))")
            args += [opened, opened, last_id]
        # only the fixed clauses above are joined; every value is a bound parameter
        sql = "SELECT * FROM alerts" + (" WHERE " + " AND ".join(where) if where else "")  # noqa: S608
        rows = await self.gw.query(sql + " ORDER BY opened_at DESC, id DESC LIMIT ?", (*args, limit + 1))
        page = rows[:limit]
        cursor = f"{page[-1]['opened_at']}~{page[-1]['id']}" if len(rows) > limit else None
        return page, cursor

    # ---- command handlers ----
    async def _cmd_ack(self, req: Mapping[str, Any]) -> Any:
        return await self.ack(req.get("alert_id"), req.get("by"))

    async def _cmd_resolve(self, req: Mapping[str, Any]) -> Any:
        return await self.resolve(req.get("alert_id"), req.get("by"), req.get("reason"))

    async def _cmd_snooze(self, req: Mapping[str, Any]) -> Any:
        return await self.snooze(req.get("alert_id"), req.get("by"), req.get("duration_s"))

    async def _cmd_sighting(self, req: Mapping[str, Any]) -> Any:
        return await self.sighting({k: v for k, v in req.items() if k not in ("id", "reply_to")})

    async def _cmd_reload(self, req: Mapping[str, Any]) -> Any:
        return await self.reload(req.get("rules"))

    async def _cmd_mute(self, req: Mapping[str, Any]) -> Any:
        return await self.mute(req.get("shelf"), req.get("on", True), req.get("duration_s"), req.get("sku"))

    # ---- internals ----
    def _emit(self, out: list[object]) -> None:
        events, writes = split(out)
        if events or writes:
            self.gw.emit(events, writes)

    async def _restore(self) -> None:
        try:
            rows = await self.gw.query("SELECT * FROM alerts WHERE state IN ('open', 'acknowledged')")
        except Exception:
            log.exception("could not load the open alerts; starting without them")
            rows = []
        self._emit(self.engine.restore(rows, self.gw.stock, self.gw.clock.now()))

    async def _watch(self, path: Path) -> None:
        while True:
            await asyncio.sleep(self.config.watch_interval_s)
            text = await asyncio.to_thread(self._read, path)
            if text is None or self._sig(text) == self._file_sig:
                continue
            self._file_sig = self._sig(text)
            with contextlib.suppress(CommandError):
                await self.reload(origin="file")
            log.info("rules file %s changed: %s", path, "rejected" if self.last_problems else "reloaded")

    @staticmethod
    def _read(path: Path) -> str | None:
        try:
            return path.read_text(encoding="utf-8")
        except OSError:
            return None

    @staticmethod
    def _sig(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()
