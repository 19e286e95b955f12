// Staff dashboard: plain JavaScript, no build step, no CDN. Talks to /api/v1 with the bearer token kept
// in sessionStorage; live updates come from the SSE stream /api/v1/events (token as access_token, since
// EventSource cannot send headers).
"use strict";

const API = "/api/v1";
const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("edge-token") || "";
let source = null;
const state = { stock: new Map(), alerts: [], shelves: new Map() };

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

async function api(path, options = {}) {
  const headers = Object.assign({ Authorization: `Bearer ${token}` }, options.headers || {});
  const res = await fetch(API + path, Object.assign({}, options, { headers }));
  if (res.status === 401) { signOut("The token was not accepted."); throw new Error("unauthorized"); }
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error((body.error && body.error.message) || `HTTP ${res.status}`);
  return body;
}

function toast(text) {
  const t = $("toast");
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 3000);
}

// ---- stock ----
function cellKey(c) { return `${c.shelf}|${c.sku}`; }

async function loadStock() {
  const body = await api("/stock");
  state.stock.clear();
  for (const c of body.items) state.stock.set(cellKey(c), c);
  renderShelves();
}

function renderShelves() {
  const byShelf = new Map();
  for (const c of state.stock.values()) {
    if (!byShelf.has(c.shelf)) byShelf.set(c.shelf, []);
    byShelf.get(c.shelf).push(c);
  }
  const flagged = new Map();
  for (const a of state.alerts) {
    if (a.shelf && a.sku && (a.kind === "low_stock" || a.kind === "out_of_stock")) {
      const k = `${a.shelf}|${a.sku}`;
      if (flagged.get(k) !== "out") flagged.set(k, a.kind === "out_of_stock" ? "out" : "low");
    }
  }
  const html = [];
  for (const [shelf, cells] of [...byShelf.entries()].sort()) {
    html.push(`<article class="shelf" data-shelf="${esc(shelf)}"><h3>${esc(shelf)} <span class="zone">${esc(cells[0].zone)}</span></h3>`);
    for (const c of cells.sort((x, y) => x.sku.localeCompare(y.sku))) {
      const flag = c.count === 0 && c.version > 0 ? "out" : flagged.get(cellKey(c)) || "";
      const pct = c.capacity ? Math.min(100, Math.round((100 * c.count) / c.capacity)) : 0;
      html.push(`<div class="cell ${flag}" data-sku="${esc(c.sku)}"><span>${esc(c.sku)}</span>` +
        `<strong class="count">${c.count}<span class="muted">/${c.capacity}</span></strong>` +
        `<div class="bar"><span data-pct="${pct}"></span></div></div>`);
    }
    html.push("</article>");
  }
  $("shelves").innerHTML = html.join("");
  // widths through the CSSOM: the Content-Security-Policy (style-src 'self') refuses inline style attributes
  for (const bar of $("shelves").querySelectorAll(".bar span[data-pct]")) bar.style.width = `${bar.dataset.pct}%`;
}

// ---- alerts ----
async function loadAlerts() {
  const [open, acked] = await Promise.all([api("/alerts?state=open"), api("/alerts?state=acknowledged")]);
  state.alerts = [...open.items, ...acked.items].sort((a, b) => (a.opened_at < b.opened_at ? 1 : -1));
  renderAlerts();
  renderShelves();
}

function renderAlerts() {
  const nOpen = state.alerts.filter((a) => a.state === "open").length;
  $("alert-count").textContent = String(nOpen);
  $("alert-count").classList.toggle("zero", nOpen === 0);
  $("no-alerts").hidden = state.alerts.length > 0;
  $("alerts").innerHTML = state.alerts.map((a) => {
    const where = a.device ? `device ${esc(a.device)}` : `${esc(a.sku)} on ${esc(a.shelf)}`;
    const meta = a.state === "acknowledged"
      ? `acknowledged by ${esc(a.acknowledged_by)}`
      : `opened ${new Date(a.opened_at).toLocaleTimeString()}${a.escalation_level ? ` · escalated ×${a.escalation_level}` : ""}`;
    const button = a.state === "open"
      ? `<button class="ack" data-id="${esc(a.id)}" type="button">Acknowledge</button>` : "";
    return `<li class="alert kind-${esc(a.kind)} state-${esc(a.state)}" data-id="${esc(a.id)}">` +
      `<div class="what"><strong>${esc(a.kind.replace(/_/g, " "))}</strong> · ${where}` +
      `<div class="meta">${esc(a.message)} · ${meta}</div></div>${button}</li>`;
  }).join("");
}

async function acknowledge(id, button) {
  const by = $("staff-name").value.trim();
  if (!by) { toast("Enter your name first"); $("staff-name").focus(); return; }
  sessionStorage.setItem("edge-staff", by);
  button.disabled = true;
  try {
    await api(`/alerts/${encodeURIComponent(id)}/ack`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ by }),
    });
    toast("Acknowledged");
    await loadAlerts();
  } catch (e) {
    button.disabled = false;
    toast(`Could not acknowledge: ${e.message}`);
  }
}

// ---- devices and traffic ----
async function loadDevices() {
  const body = await api("/devices");
  $("no-devices").hidden = body.items.length > 0;
  $("devices").innerHTML = body.items.map((d) =>
    `<tr><td>${esc(d.device)}</td><td>${esc(d.type)}</td><td class="state-${esc(d.state)}">${esc(d.state)}</td>` +
    `<td>${d.last_seen ? new Date(d.last_seen).toLocaleTimeString() : "–"}</td></tr>`).join("");
}

async function loadTraffic() {
  const t = await api("/traffic");
  const items = t.available
    ? [["Visitors", t.visitors_today], ["Entries", t.entries_today], ["Exits", t.exits_today], ["In store now", t.occupancy]]
    : [["Traffic", "n/a"]];
  $("traffic").innerHTML = items.map(([k, v]) => `<div><dt>${esc(k)}</dt><dd>${esc(v)}</dd></div>`).join("");
}

// ---- live ----
function connect() {
  if (source) source.close();
  source = new EventSource(`${API}/events?access_token=${encodeURIComponent(token)}`);
  let opened = false;
  source.onopen = () => {
    $("live").textContent = "live";
    $("live").className = "live on";
    // after a reconnect, fetch what changed while the stream was down
    if (opened) Promise.all([loadStock(), loadAlerts(), loadDevices()]).catch(() => {});
    opened = true;
  };
  source.onerror = () => { $("live").textContent = "reconnecting"; $("live").className = "live off"; };
  source.addEventListener("retail.stock.changed.v1", (m) => {
    const d = JSON.parse(m.data).data;
    const c = state.stock.get(`${d.shelf}|${d.sku}`);
    if (c) { c.count = d.count; c.version = d.version; c.origin = d.origin; renderShelves(); }
  });
  for (const t of ["opened", "acknowledged", "escalated", "updated", "resolved", "expired"]) {
    source.addEventListener(`retail.alert.${t}.v1`, () => loadAlerts().catch(() => {}));
  }
  source.addEventListener("retail.device.status.v1", () => loadDevices().catch(() => {}));
  for (const t of ["retail.traffic.interval.v1", "retail.traffic.hourly.v1"]) {
    source.addEventListener(t, () => loadTraffic().catch(() => {}));
  }
}

async function start() {
  $("login").hidden = true;
  $("main").hidden = false;
  $("logout").hidden = false;
  $("staff-name").value = sessionStorage.getItem("edge-staff") || "";
  try {
    await Promise.all([loadStock(), loadAlerts(), loadDevices(), loadTraffic()]);
    const health = await fetch("/healthz").then((r) => r.json());
    $("store").textContent = `Store ${health.store}`;
    connect();
  } catch (e) {
    if (e.message !== "unauthorized") toast(`Could not load: ${e.message}`);
  }
}

function signOut(message) {
  sessionStorage.removeItem("edge-token");
  token = "";
  if (source) { source.close(); source = null; }
  $("main").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
}

$("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  token = $("token").value.trim();
  sessionStorage.setItem("edge-token", token);
  start();
});
$("logout").addEventListener("click", () => signOut(""));
$("alerts").addEventListener("click", (ev) => {
  const b = ev.target.closest("button.ack");
  if (b) acknowledge(b.dataset.id, b);
});
setInterval(() => { if (token) { loadDevices().catch(() => {}); loadTraffic().catch(() => {}); } }, 30000);

if (token) start(); else signOut("");
