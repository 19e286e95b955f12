// Staff dashboard: plain JavaScript, no build step, no CDN. Talks to /api/v1 with the bearer token kept
// in sessionStorage; live updates come from the SSE stream /api/v1/events (token as access_token, since
// EventSource cannot send headers). UI strings come from one catalog per language (/static/i18n/*.json);
// product, shelf and zone names from the manifest (/api/v1/names); dates and numbers through Intl.
"use strict";

const API = "/api/v1";
const LANGS = ["zh-CN", "en"];
const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("edge-token") || "";
let source = null;
const state = {
  stock: new Map(), alerts: [], devices: new Map(), beacons: [],
  names: { store: null, zones: {}, shelves: {}, catalog: {} },
  seen: null,          // ids of urgent alerts already announced (null until the first load)
  live: false,         // the SSE stream is open
  fresh: null,         // when data last came from the gateway (Date)
  beaconSince: new Map(),  // "beacon|condition" -> when the page learned of it
};

// ---- language ----
let lang = pickLang();
let catalog = {};

function pickLang() {
  const saved = localStorage.getItem("edge-lang");
  if (LANGS.includes(saved)) return saved;
  const wanted = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language || "en"];
  for (const w of wanted) {
    const l = String(w).toLowerCase();
    if (l.startsWith("zh")) return "zh-CN";
    if (l.startsWith("en")) return "en";
  }
  return "en";
}

async function loadCatalog() {
  const res = await fetch(`/static/i18n/${lang}.json`, { cache: "no-cache" });
  if (!res.ok) throw new Error(`HTTP ${res.status}`);
  catalog = await res.json();
  loadCatalog.lang = lang;
  document.documentElement.lang = lang;
  $("lang").value = lang;
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll("[data-i18n-placeholder]")) el.placeholder = t(el.dataset.i18nPlaceholder);
  for (const el of document.querySelectorAll("[data-i18n-aria-label]")) el.setAttribute("aria-label", t(el.dataset.i18nAriaLabel));
}

// t("kind.low_stock") or t("store", {name}); a missing key shows the key (never a blank)
function t(key, vars = {}) {
  let s = key.split(".").reduce((o, k) => (o && typeof o === "object" ? o[k] : undefined), catalog);
  if (typeof s !== "string") s = key;
  return s.replace(/\{(\w+)\}/g, (_, k) => (k in vars ? String(vars[k]) : `{${k}}`));
}

// the manifest's name of a zone, shelf or catalog item in the current language, else its default, else the id
function nameOf(section, id) {
  const n = state.names[section] && state.names[section][id];
  if (!n) return String(id ?? "");
  return (n.names && n.names[lang]) || n.name || String(id);
}

const fmt = {
  num: (n) => (typeof n === "number" ? new Intl.NumberFormat(lang).format(n) : "–"),
  time: (d) => new Intl.DateTimeFormat(lang, { hour: "2-digit", minute: "2-digit" }).format(d),
  dateTime: (d) => new Intl.DateTimeFormat(lang, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" }).format(d),
  ago: (d) => {
    const s = Math.round((d.getTime() - Date.now()) / 1000);
    const rtf = new Intl.RelativeTimeFormat(lang, { numeric: "auto" });
    if (Math.abs(s) < 60) return rtf.format(s, "second");
    if (Math.abs(s) < 3600) return rtf.format(Math.round(s / 60), "minute");
    return rtf.format(Math.round(s / 3600), "hour");
  },
};

function when(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "–";
  return new Date().toDateString() === d.toDateString() ? fmt.time(d) : fmt.dateTime(d);
}

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

async function api(path, options = {}) {
  const headers = Object.assign({ Authorization: `Bearer ${token}` }, options.headers || {});
  const res = await fetch(API + path, Object.assign({}, options, { headers }));
  if (res.status === 401) { signOut(t("token_refused")); throw new Error("unauthorized"); }
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error((body.error && body.error.message) || `HTTP ${res.status}`);
  if (state.live) state.fresh = new Date();
  return body;
}

function toast(text) {
  const el = $("toast");
  el.textContent = text;
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.hidden = true; }, 3000);
}

// ---- stock ----
function cellKey(shelf, sku) { return `${shelf}|${sku}`; }

async function loadStock() {
  const body = await api("/stock");
  state.stock.clear();
  for (const c of body.items) state.stock.set(cellKey(c.shelf, c.sku), c);
  renderShelves();
}

// the cell's state from the rule's level (`min`, from the API): zero out (red), at/below min low (amber)
function cellState(c) {
  if (c.count === null || c.count === undefined || !c.version) return "unknown";
  if (c.count === 0) return "out";
  if (typeof c.min === "number" && c.count <= c.min) return "low";
  return "ok";
}

// the bar's classes: its state (an open stock alert counts as low too) plus stale/conflict
function cellClasses(c) {
  let s = cellState(c);
  if (s === "ok" && state.alerts.some((a) => a.shelf === c.shelf && a.sku === c.sku &&
    (a.kind === "low_stock" || a.kind === "out_of_stock"))) s = "low";
  const out = [s];
  if (c.stale) out.push("stale");
  if (c.conflict) out.push("conflict");
  return out;
}

function renderShelves() {
  const byShelf = new Map();
  for (const c of state.stock.values()) {
    if (!byShelf.has(c.shelf)) byShelf.set(c.shelf, []);
    byShelf.get(c.shelf).push(c);
  }
  const html = [];
  for (const [shelf, cells] of [...byShelf.entries()].sort()) {
    html.push(`<article class="shelf" data-shelf="${esc(shelf)}"><h3><span class="shelf-name">${esc(nameOf("shelves", shelf))}</span>` +
      ` <span class="zone">${esc(nameOf("zones", cells[0].zone))}</span></h3>`);
    for (const c of cells.sort((x, y) => x.sku.localeCompare(y.sku))) {
      const pct = c.capacity ? Math.min(100, Math.round((100 * c.count) / c.capacity)) : 0;
      const flags = [];
      if (c.stale) flags.push(t("stale_cell", { reason: c.stale_reason || "" }));
      if (c.conflict) flags.push(t("conflict_cell", { reason: c.conflict_reason || "" }));
      const corr = c.correction && c.correction.holding ? c.correction : null;  // a staff count served until the sensors settle
      if (corr) flags.push(t("corrected_cell", { count: fmt.num(corr.count), time: when(corr.at) }));
      const refill = state.restocking && state.restocking.get(cellKey(c.shelf, c.sku));
      if (refill) flags.push(t("restocking_cell", { time: when(refill.until) }));
      const notes = (typeof c.min === "number" ? [t("min_level", { min: fmt.num(c.min) })] : []).concat(flags);
      html.push(`<div class="cell ${cellClasses(c).join(" ")}${corr ? " corrected" : ""}${refill ? " restocking" : ""}" data-sku="${esc(c.sku)}" title="${esc(notes.join(" · "))}">` +
        `<span class="sku-name">${esc(nameOf("catalog", c.sku))}</span>` +
        `<strong class="count" data-count="${c.count}" data-capacity="${c.capacity}">` +
        `${esc(t("count_of", { count: fmt.num(c.count), capacity: fmt.num(c.capacity) }))}</strong>` +
        `<div class="bar"><span data-pct="${pct}"></span></div>` +
        (flags.length ? `<small class="flag">${esc(flags.join(" · "))}</small>` : "") +
        `<button class="correct" data-shelf="${esc(c.shelf)}" data-sku="${esc(c.sku)}" type="button"` +
        `${state.live ? "" : " disabled"}>${esc(t("correct_count"))}</button>` +
        `</div>`);
    }
    html.push("</article>");
  }
  $("shelves").innerHTML = html.join("");
  // widths through the CSSOM: the Content-Security-Policy (style-src 'self') refuses inline style attributes
  for (const bar of $("shelves").querySelectorAll(".bar span[data-pct]")) bar.style.width = `${bar.dataset.pct}%`;
}

// ---- alerts: urgency first ----
const FAULTS = new Set(["device_offline", "device_fault", "lane_fault", "unknown_object", "beacon_battery_low", "beacon_silent"]);

// 0 out of stock, 1 low, 2 faults (devices, lanes, beacons), 3 the rest
function urgency(a) {
  if (a.kind === "out_of_stock") return 0;
  if (a.kind === "low_stock") return 1;
  if (FAULTS.has(a.kind)) return 2;
  return 3;
}

function byUrgency(a, b) {
  const u = urgency(a) - urgency(b);
  if (u) return u;
  const ta = a.opened_at ? Date.parse(a.opened_at) : Infinity;  // within a class, oldest first
  const tb = b.opened_at ? Date.parse(b.opened_at) : Infinity;
  return ta - tb || String(a.id).localeCompare(String(b.id));
}

// beacon conditions the rules have no alert for (yet) as list items
function beaconItems() {
  const items = [];
  for (const b of state.beacons) {
    for (const cond of ["battery_low", "silent"]) {
      const k = `${b.beacon}|${cond}`;
      if (!b[cond]) { state.beaconSince.delete(k); continue; }
      // once the rules raise beacon alerts themselves (kind beacon_<condition>, device = the beacon), theirs
      // is the item (acknowledged like any other) and the page adds none
      if (state.alerts.some((a) => a.kind === `beacon_${cond}` && a.device === b.beacon)) continue;
      const since = cond === "silent" && b.last_seen ? b.last_seen : state.beaconSince.get(k) || new Date().toISOString();
      state.beaconSince.set(k, since);
      const reason = beaconReason(b, cond);
      items.push({ id: `beacon:${k}`, kind: `beacon_${cond}`, state: "open", beacon: b.beacon, zone: b.zone,
        opened_at: since, reason, local: true });
    }
  }
  return items;
}

// why a beacon is in the list, in the page's language, from its health in /beacons
function beaconReason(b, cond) {
  return cond === "battery_low"
    ? t("battery_mv", { mv: fmt.num(b.battery_mv) })
    : (b.last_seen ? t("heard_at", { time: when(b.last_seen) }) : t("never_heard"));
}

async function loadAlerts() {
  const [open, acked, restocking] = await Promise.all([api("/alerts?state=open"), api("/alerts?state=acknowledged"),
    api("/restocking").catch(() => ({ items: [] }))]);
  state.alerts = [...open.items, ...acked.items];
  state.restocking = new Map(restocking.items.map((r) => [cellKey(r.shelf, r.sku), r]));
  renderAlerts();
  renderShelves();
}

async function loadBeacons() {
  const body = await api("/beacons").catch(() => ({ items: [] }));
  state.beacons = body.items;
  renderAlerts();
}

function alertWhere(a) {
  if (a.kind.startsWith("beacon_") && (a.beacon || a.device)) {
    const b = a.beacon || a.device;
    const zone = a.zone || (state.beacons.find((x) => x.beacon === b) || {}).zone;
    return t("beacon_named", { beacon: b, zone: nameOf("zones", zone) });
  }
  if (a.device) return t("device_named", { device: a.device });
  return t("sku_on_shelf", { sku: nameOf("catalog", a.sku), shelf: nameOf("shelves", a.shelf) });
}

function alertReason(a) {
  if (a.reason) return a.reason;
  if (a.kind.startsWith("beacon_") && a.device) {  // the rules' beacon alert: its reason in the page's language
    const b = state.beacons.find((x) => x.beacon === a.device);
    if (b) return beaconReason(b, a.kind.slice("beacon_".length));
  }
  if (a.device) {  // the supervisor's reason for the device, when the API has one
    const d = state.devices.get(a.device);
    if (d && d.error) return d.error;
  }
  if (a.kind === "low_stock" || a.kind === "out_of_stock") {
    const c = state.stock.get(cellKey(a.shelf, a.sku));
    if (c) return t("left", { count: fmt.num(c.count), capacity: fmt.num(c.capacity) });
  }
  return a.message || "";
}

function renderAlerts() {
  const items = [...state.alerts, ...beaconItems()].sort(byUrgency);
  const nOpen = items.filter((a) => a.state === "open").length;
  $("alert-count").textContent = fmt.num(nOpen);
  $("alert-count").classList.toggle("zero", nOpen === 0);
  $("no-alerts").hidden = items.length > 0;
  $("alerts").innerHTML = items.map((a) => {
    const meta = a.state === "acknowledged"
      ? t("acknowledged_by", { by: a.acknowledged_by })
      : (a.local ? t("since", { time: when(a.opened_at) }) : t("opened_at", { time: when(a.opened_at) })) +
        (a.escalation_level ? ` · ${t("escalated", { n: fmt.num(a.escalation_level) })}` : "") +
      (snoozed(a) ? ` · ${t("snoozed_until", { time: when(a.snoozed_until) })}` : "");
    const off = state.live ? "" : " disabled";
    let button = a.state === "open" && !a.local
      ? `<button class="ack" data-id="${esc(a.id)}" type="button"${off}>${esc(t("acknowledge"))}</button>` : "";
    if (!a.local) {  // staff actions of issue 17 item 3: resolve with a reason; restocking mutes the shelf
      button += `<button class="resolve" data-id="${esc(a.id)}" type="button"${off}>${esc(t("resolve"))}</button>`;
      button += `<span class="snooze-group"><select class="snooze-for" aria-label="${esc(t("snooze_for"))}"${off}>` +
        SNOOZE_MINUTES.map((m) => `<option value="${m * 60}"${m === 30 ? " selected" : ""}>${esc(m < 60 ? t("minutes", { n: fmt.num(m) }) : t("hours", { n: fmt.num(m / 60) }))}</option>`).join("") +
        `</select><button class="snooze" data-id="${esc(a.id)}" type="button"${off}>${esc(t("snooze"))}</button></span>`;
      if (a.shelf && (a.kind === "low_stock" || a.kind === "out_of_stock")) {
        button += `<button class="restocking" data-shelf="${esc(a.shelf)}" data-sku="${esc(a.sku || "")}" type="button"${off}>${esc(t("restocking"))}</button>`;
      }
    }
    return `<li class="alert kind-${esc(a.kind)} state-${esc(a.state)} urgency-${urgency(a)}${snoozed(a) ? " snoozed" : ""}" data-id="${esc(a.id)}"` +
      ` data-opened="${esc(a.opened_at)}"><div class="what"><strong>${esc(t(`kind.${a.kind}`))}</strong> · ${esc(alertWhere(a))}` +
      `<div class="reason">${esc(alertReason(a))}</div><div class="meta">${esc(meta)}</div></div>${button}</li>`;
  }).join("");
  announce(items);
}

async function acknowledge(id, button) {
  if (!state.live) return;
  const by = $("staff-name").value.trim();
  if (!by) { toast(t("enter_name")); $("staff-name").focus(); return; }
  localStorage.setItem("edge-staff", by);
  button.disabled = true;
  try {
    await api(`/alerts/${encodeURIComponent(id)}/ack`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ by }),
    });
    toast(t("acknowledged"));
    await loadAlerts();
  } catch (e) {
    button.disabled = !state.live;
    toast(t("ack_failed", { error: e.message }));
  }
}

function staffName() {
  const by = $("staff-name").value.trim();
  if (!by) { toast(t("enter_name")); $("staff-name").focus(); return null; }
  localStorage.setItem("edge-staff", by);
  return by;
}

async function resolveAlert(id, button) {
  if (!state.live) return;
  const by = staffName();
  if (!by) return;
  const reason = (window.prompt(t("resolve_reason")) || "").trim();
  if (!reason) return;
  button.disabled = true;
  try {
    await api(`/alerts/${encodeURIComponent(id)}/resolve`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ by, reason: reason.slice(0, 200) }),
    });
    toast(t("resolve_done"));
    await loadAlerts();
  } catch (e) {
    button.disabled = !state.live;
    toast(t("resolve_failed", { error: e.message }));
  }
}

// snooze (bounded 5 min .. 8 h by the API): the alert stays listed, greyed, and comes back by itself
const SNOOZE_MINUTES = [5, 15, 30, 60, 120, 240, 480];

function snoozed(a) {
  return Boolean(a.snoozed_until) && Date.parse(a.snoozed_until) > Date.now();
}

async function snoozeAlert(id, button) {
  if (!state.live) return;
  const by = staffName();
  if (!by) return;
  const select = button.parentElement.querySelector("select.snooze-for");
  const seconds = Number(select && select.value);
  button.disabled = true;
  try {
    const a = await api(`/alerts/${encodeURIComponent(id)}/snooze`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ by, duration_s: seconds }),
    });
    toast(t("snooze_done", { time: when(a.snoozed_until) }));
    await loadAlerts();
  } catch (e) {
    button.disabled = !state.live;
    toast(t("snooze_failed", { error: e.message }));
  }
}

// restocking one cell: muted until its count rises or the rules' mute_max_s passes (GET /restocking lists them)
async function startRestocking(shelf, sku, button) {
  if (!state.live) return;
  button.disabled = true;
  try {
    await api(`/shelves/${encodeURIComponent(shelf)}/restocking`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(sku ? { on: true, sku } : { on: true }),
    });
    toast(t("restocking_on", { shelf: sku ? `${nameOf("shelves", shelf)} · ${nameOf("catalog", sku)}` : nameOf("shelves", shelf) }));
    await loadAlerts();
  } catch (e) {
    button.disabled = !state.live;
    toast(t("restocking_failed", { error: e.message }));
  }
}

async function correctCount(shelf, sku, button) {
  if (!state.live) return;
  const by = staffName();
  if (!by) return;
  const what = `${nameOf("shelves", shelf)} · ${nameOf("catalog", sku)}`;
  const typed = (window.prompt(t("correct_count_ask", { what })) || "").trim();
  if (!typed) return;
  if (!/^\d{1,6}$/.test(typed) || Number(typed) > 100000) { toast(t("correct_count_bad")); return; }
  const reason = (window.prompt(t("correct_reason")) || "").trim();
  if (!reason) return;
  button.disabled = true;
  try {
    const cell = await api(`/stock/${encodeURIComponent(shelf)}/${encodeURIComponent(sku)}/count`, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ by, count: Number(typed), reason: reason.slice(0, 200) }),
    });
    state.stock.set(cellKey(cell.shelf, cell.sku), cell);
    renderShelves();
    toast(t("correct_done", { what, count: fmt.num(cell.count) }));
  } catch (e) {
    button.disabled = !state.live;
    toast(t("correct_failed", { error: e.message }));
  }
}

// ---- chime and notification for a new urgent alert (opt-in: browsers need a click for both) ----
const chime = { on: localStorage.getItem("edge-chime") === "on", ctx: null, played: 0 };

function audio() {
  if (!chime.ctx) {
    const Ctx = window.AudioContext || window.webkitAudioContext;
    if (!Ctx) return null;
    chime.ctx = new Ctx();
  }
  if (chime.ctx.state === "suspended") chime.ctx.resume().catch(() => {});
  return chime.ctx;
}

// two short sine tones (A5, E6) with a soft envelope, generated: no sound file
function playChime() {
  const ctx = audio();
  if (!ctx) return;
  const t0 = ctx.currentTime + 0.01;
  [[880, 0], [1318.5, 0.18]].forEach(([freq, at]) => {
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    osc.type = "sine";
    osc.frequency.setValueAtTime(freq, t0 + at);
    gain.gain.setValueAtTime(0.0001, t0 + at);
    gain.gain.exponentialRampToValueAtTime(0.3, t0 + at + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, t0 + at + 0.35);
    osc.connect(gain).connect(ctx.destination);
    osc.start(t0 + at);
    osc.stop(t0 + at + 0.4);
  });
  chime.played += 1;
  $("chime").dataset.played = String(chime.played);
}

function announce(items) {
  const urgent = items.filter((a) => a.state === "open" && urgency(a) <= 2 && !snoozed(a));
  const ids = new Set(urgent.map((a) => a.id));
  const fresh = state.seen === null || !state.ready ? [] : urgent.filter((a) => !state.seen.has(a.id));
  state.seen = ids;
  if (!fresh.length || !chime.on) return;
  try {
    playChime();
  } catch (e) {
    $("chime").dataset.error = String(e);
  }
  if ("Notification" in window && Notification.permission === "granted") {
    const a = fresh[0];
    new Notification(t("notify_title", { what: t(`kind.${a.kind}`) }), { body: `${alertWhere(a)} · ${alertReason(a)}`, tag: a.id, lang });
    $("chime").dataset.notified = String(Number($("chime").dataset.notified || 0) + 1);
  }
}

function renderChime() {
  $("chime").textContent = t(chime.on ? "alerts_on" : "alerts_off");
  $("chime").setAttribute("aria-pressed", String(chime.on));
  $("chime").classList.toggle("on", chime.on);
}

async function toggleChime() {
  chime.on = !chime.on;
  localStorage.setItem("edge-chime", chime.on ? "on" : "off");
  renderChime();
  if (!chime.on) return;
  try {
    playChime();  // inside the click: unlocks audio, and staff hear what it sounds like
  } catch (e) {
    $("chime").dataset.error = String(e);
  }
  if ("Notification" in window && Notification.permission === "default") {
    await Notification.requestPermission().catch(() => "denied");
  }
}

// ---- devices and traffic ----
async function loadDevices() {
  const body = await api("/devices");
  state.devices = new Map(body.items.map((d) => [d.device, d]));
  $("no-devices").hidden = body.items.length > 0;
  $("devices").innerHTML = body.items.map((d) =>
    `<tr data-device="${esc(d.device)}"><td>${esc(d.device)}</td><td>${esc(d.type)}</td>` +
    `<td class="state-${esc(d.state)}">${esc(t(`state_${d.state}`))}` +
    (d.error && d.state !== "online" ? `<div class="reason">${esc(d.error)}</div>` : "") + `</td>` +
    `<td>${esc(when(d.last_seen))}</td></tr>`).join("");
}

async function loadTraffic() {
  const tr = await api("/traffic");
  const items = tr.available
    ? [["visitors", tr.visitors_today], ["entries", tr.entries_today], ["exits", tr.exits_today], ["in_store", tr.occupancy]]
    : [["traffic", null]];
  $("traffic").innerHTML = items.map(([k, v]) =>
    `<div><dt>${esc(t(k))}</dt><dd>${esc(v === null ? t("not_available") : fmt.num(v))}</dd></div>`).join("");
  $("traffic-panel").querySelector(".charts").hidden = !tr.available;
  if (tr.available) Charts.render(tr, { t, lang, num: fmt.num, zone: (z) => nameOf("zones", z) });  // charts.js
}

// ---- live or not ----
// `down`: the stream failed (or the first load did); only then the banner and the greying show, so a page
// that is still connecting does not flash them. Actions are disabled whenever the stream is not open.
function setLive(live, down = state.down) {
  state.live = live;
  state.down = !live && down;
  if (live) state.fresh = new Date();
  const el = $("live");
  el.dataset.state = live ? "live" : (state.fresh ? "reconnecting" : "offline");
  el.textContent = t(el.dataset.state);
  el.className = `live ${live ? "on" : "off"}`;
  document.body.classList.toggle("stale", state.down && !$("main").hidden);
  for (const b of document.querySelectorAll("#main button")) b.disabled = !live;
  renderStale();
}

function renderStale() {
  const banner = $("stale");
  if (!state.down || $("main").hidden) { banner.hidden = true; return; }
  banner.textContent = state.fresh
    ? t("stale_banner", { time: fmt.time(state.fresh), ago: fmt.ago(state.fresh) })
    : t("stale_banner_never");
  banner.hidden = false;
}

function refreshAll() {
  return Promise.all([loadStock(), loadAlerts(), loadDevices(), loadBeacons(), loadTraffic()]);
}

function connect() {
  if (source) source.close();
  clearTimeout(connect.retry);
  source = new EventSource(`${API}/events?access_token=${encodeURIComponent(token)}`);
  let opened = false;
  source.onopen = () => {
    setLive(true);
    // after a reconnect, fetch what changed while the stream was down
    if (opened || connect.wasDown) refreshAll().catch(() => {});
    opened = true;
    connect.wasDown = false;
  };
  source.onerror = () => {
    setLive(false, true);
    connect.wasDown = true;
    // the browser retries by itself unless the stream failed for good (e.g. an HTTP error): then we do
    if (source.readyState === EventSource.CLOSED) connect.retry = setTimeout(() => { if (token) connect(); }, 3000);
  };
  const touch = () => { state.fresh = new Date(); };
  source.addEventListener("retail.stock.changed.v1", (m) => {
    touch();
    const d = JSON.parse(m.data).data;
    const c = state.stock.get(cellKey(d.shelf, d.sku));
    if (c) { c.count = d.count; c.version = d.version; c.origin = d.origin; renderShelves(); renderAlerts(); }
  });
  // the gateway follows each stock change with the whole cell as it is now (min, state, stale/conflict flags)
  source.addEventListener("stock.cell", (m) => {
    const c = JSON.parse(m.data);
    if (!c || !c.shelf || !c.sku) return;
    state.stock.set(cellKey(c.shelf, c.sku), c);
    renderShelves();
  });
  for (const k of ["opened", "acknowledged", "escalated", "updated", "resolved", "expired", "snoozed", "unsnoozed"]) {
    source.addEventListener(`retail.alert.${k}.v1`, () => { touch(); loadAlerts().catch(() => {}); });
  }
  for (const k of ["started", "ended"]) {
    source.addEventListener(`retail.restocking.${k}.v1`, () => { touch(); loadAlerts().catch(() => {}); });
  }
  source.addEventListener("retail.device.status.v1", () => {
    touch();
    Promise.all([loadDevices(), loadStock()]).then(renderAlerts).catch(() => {});  // a device's state flags its cells stale
  });
  for (const k of ["battery_low", "silent", "recovered"]) {
    source.addEventListener(`retail.beacon.${k}.v1`, () => { touch(); loadBeacons().catch(() => {}); });
  }
  for (const k of ["retail.traffic.interval.v1", "retail.traffic.hourly.v1"]) {
    source.addEventListener(k, () => { touch(); loadTraffic().catch(() => {}); });
  }
}

async function start() {
  $("login").hidden = true;
  $("main").hidden = false;
  $("logout").hidden = false;
  $("staff-name").value = localStorage.getItem("edge-staff") || "";
  setLive(false);
  try {
    state.names = await api("/names");
    renderTitle();
    await refreshAll();
    state.ready = true;  // from now on a new urgent alert chimes
    connect();
  } catch (e) {
    if (e.message === "unauthorized") return;
    setLive(false, true);
    toast(t("load_failed", { error: e.message }));
    connect.retry = setTimeout(() => { if (token && !state.live) start(); }, 5000);
  }
}

function renderTitle() {
  const s = state.names.store;
  $("store").textContent = s ? t("store", { name: s.name }) : t("title");
  document.title = $("store").textContent;
}

function renderAll() {
  renderTitle();
  renderChime();
  setLive(state.live);
  renderShelves();
  renderAlerts();
  if (token && !$("main").hidden) Promise.all([loadDevices(), loadTraffic()]).catch(() => {});
}

function signOut(message) {
  sessionStorage.removeItem("edge-token");
  token = "";
  if (source) { source.close(); source = null; }
  clearTimeout(connect.retry);
  $("main").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  setLive(false);
  $("login-error").textContent = message || "";
}

$("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  token = $("token").value.trim();
  sessionStorage.setItem("edge-token", token);
  start();
});
$("logout").addEventListener("click", () => signOut(""));
$("chime").addEventListener("click", () => { toggleChime(); });
$("lang").addEventListener("change", async () => {
  const before = lang;
  lang = LANGS.includes($("lang").value) ? $("lang").value : "en";
  try {
    await loadCatalog();
  } catch (e) {  // the gateway is not reachable: stay in the language whose strings we have
    lang = before;
    $("lang").value = lang;
    return;
  }
  localStorage.setItem("edge-lang", lang);
  renderAll();
});
$("shelves").addEventListener("click", (ev) => {
  const b = ev.target.closest("button.correct");
  if (b) correctCount(b.dataset.shelf, b.dataset.sku, b);
});
$("alerts").addEventListener("click", (ev) => {
  const b = ev.target.closest("button.ack");
  if (b) acknowledge(b.dataset.id, b);
  const r = ev.target.closest("button.resolve");
  if (r) resolveAlert(r.dataset.id, r);
  const z = ev.target.closest("button.snooze");
  if (z) snoozeAlert(z.dataset.id, z);
  const m = ev.target.closest("button.restocking");
  if (m) startRestocking(m.dataset.shelf, m.dataset.sku, m);
});
setInterval(() => {
  if (!token) return;
  if (state.live) Promise.all([loadDevices(), loadStock(), loadBeacons(), loadTraffic()]).then(renderAlerts).catch(() => {});
}, 15000);
setInterval(() => { if (token && state.down) renderStale(); }, 5000);  // the banner's "n min ago"

loadCatalog().catch(() => {}).finally(() => {
  renderChime();
  if (token) start(); else signOut("");
});
