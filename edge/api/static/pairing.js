// Tablet sign-in (docs/api.md "Tablet sign-in"): plain JavaScript, loaded before app.js.
// - A paired tablet keeps its token in localStorage ("edge-device-token"); this file copies it into the tab's
//   sessionStorage before app.js reads it, so a shared tablet opens signed in. When the dashboard shows its
//   sign-in form again (signed out, or the token was refused because it was revoked), the kept token is
//   forgotten.
// - A tablet redeems a pairing code from the URL /#pair=CODE or typed into the sign-in page.
// - An admin (the token may GET /api/v1/tokens) sees the "Tablets and tokens" panel: pair a tablet (code and
//   URL shown; no QR code: no QR encoder is available to serve locally), list tokens, revoke paired ones.
// UI strings through app.js's t() from /static/i18n/*.json (keys "pairing.*").
"use strict";

(function () {
  const KEY = "edge-device-token";
  const SESSION = "edge-token";
  const el = (id) => document.getElementById(id);
  const tr = (key, vars) => (typeof t === "function" ? t(key, vars) : key);  // app.js's catalog lookup

  const kept = localStorage.getItem(KEY);
  if (kept && !sessionStorage.getItem(SESSION)) sessionStorage.setItem(SESSION, kept);

  function redeemError(status, body) {
    const code = body && body.error && body.error.code;
    if (code === "invalid_code") return tr("pairing.invalid");
    if (code === "code_expired") return tr("pairing.expired");
    if (code === "too_many_attempts") return tr("pairing.throttled");
    return tr("pairing.failed", { error: (body && body.error && body.error.message) || `HTTP ${status}` });
  }

  let redeeming = false;  // app.js may sign the page out while a code is being redeemed: keep the new token

  async function redeem(code) {
    redeeming = true;
    const res = await fetch("/api/v1/pairings/redeem", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ code }),
    });
    const body = await res.json().catch(() => ({}));
    if (!res.ok || typeof body.token !== "string") {
      redeeming = false;
      throw new Error(redeemError(res.status, body));
    }
    localStorage.setItem(KEY, body.token);
    sessionStorage.setItem(SESSION, body.token);
    location.replace("/");  // the dashboard, signed in
  }

  function showRedeemError(e) {
    redeeming = false;
    el("login").hidden = false;
    el("pair-error").textContent = e.message;
  }

  const fromUrl = /^#pair=([A-Za-z0-9-]{1,32})$/.exec(location.hash);
  if (fromUrl) {
    history.replaceState(null, "", "/");
    redeem(fromUrl[1]).catch(showRedeemError);
  }

  el("pair-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    el("pair-error").textContent = "";
    redeem(el("pair-code").value.trim()).catch(showRedeemError);
  });

  // signed out or refused: forget the kept token
  new MutationObserver(() => {
    if (!redeeming && !el("login").hidden && !sessionStorage.getItem(SESSION)) localStorage.removeItem(KEY);
  }).observe(el("login"), { attributes: true, attributeFilter: ["hidden"] });

  // ---- the admin's panel ----
  const admin = { tokens: [], pairing: null, timer: null, isAdmin: undefined };
  const STATE_TEXT = { active: "pairing.state.active", revoked: "pairing.state.revoked", expired: "pairing.state.expired" };
  const ROLE_TEXT = { staff: "pairing.role.staff", hq: "pairing.role.hq", admin: "pairing.role.admin",
    "shopper-app": "pairing.role.shopper-app" };

  function authHeaders(extra) {
    return Object.assign({ Authorization: `Bearer ${sessionStorage.getItem(SESSION) || ""}` }, extra || {});
  }

  function when(iso) {
    if (!iso) return "—";
    return new Date(iso).toLocaleString(document.documentElement.lang || undefined,
      { dateStyle: "medium", timeStyle: "short" });
  }

  async function loadTokens() {
    if (el("main").hidden || !sessionStorage.getItem(SESSION)) return;
    if (admin.isAdmin === undefined) {  // ask once which roles this token has (no refused request for staff)
      const me = await fetch("/api/v1/whoami", { headers: authHeaders() });
      if (!me.ok) return;
      admin.isAdmin = ((await me.json()).roles || []).includes("admin");
    }
    el("tablets-panel").hidden = !admin.isAdmin;
    if (!admin.isAdmin) return;
    const res = await fetch("/api/v1/tokens", { headers: authHeaders() });
    if (!res.ok) return;
    admin.tokens = (await res.json()).items || [];
    const p = admin.pairing;
    if (p && admin.tokens.some((x) => x.source === "pairing" && x.name === p.name && !p.before.has(x.id))) {
      admin.pairing = null;
      el("pairing-done").textContent = tr("pairing.done", { name: p.name });
    }
    render();
  }

  function render() {
    const p = admin.pairing;
    el("pairing").hidden = !p;
    if (p) {
      el("pairing-code").textContent = p.code.slice(0, 4) + " " + p.code.slice(4);
      el("pairing-url").textContent = p.url;
      el("pairing-url").href = p.url;
      el("pairing-expires").textContent = tr("pairing.valid_until", { time: when(p.expires) });
    }
    const rows = admin.tokens.map((x) => {
      const tr_ = document.createElement("tr");
      tr_.dataset.id = x.id || "";
      tr_.dataset.state = x.state;
      const name = x.source === "manifest" ? `${x.name} ${tr("pairing.from_manifest")}` : x.name;
      const roles = x.roles.map((r) => tr(ROLE_TEXT[r] || r)).join(", ");
      for (const text of [name, roles, when(x.expires), tr(STATE_TEXT[x.state] || x.state)]) {
        const td = document.createElement("td");
        td.textContent = text;
        tr_.append(td);
      }
      const td = document.createElement("td");
      if (x.revocable) {
        const b = document.createElement("button");
        b.type = "button";
        b.className = "secondary revoke";
        b.dataset.id = x.id;
        b.textContent = tr("pairing.revoke");
        td.append(b);
      }
      tr_.append(td);
      return tr_;
    });
    el("tokens").replaceChildren(...rows);
  }

  el("new-pairing").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    el("pairing-done").textContent = "";
    const res = await fetch("/api/v1/pairings", {
      method: "POST", headers: authHeaders({ "Content-Type": "application/json" }),
      body: JSON.stringify({ name: el("pairing-name").value.trim() }),
    });
    const body = await res.json().catch(() => ({}));
    if (!res.ok) {
      el("pairing-done").textContent = tr("pairing.failed", { error: (body.error && body.error.message) || res.status });
      return;
    }
    admin.pairing = Object.assign(body, { before: new Set(admin.tokens.map((x) => x.id)) });
    render();
    clearInterval(admin.timer);
    admin.timer = setInterval(() => {  // until the tablet redeemed it or it expired
      if (admin.pairing && new Date(admin.pairing.expires) <= new Date()) admin.pairing = null;
      if (!admin.pairing) clearInterval(admin.timer);
      loadTokens().catch(() => {});
    }, 2000);
  });

  el("tokens").addEventListener("click", async (ev) => {
    const b = ev.target.closest("button.revoke");
    if (!b) return;
    b.disabled = true;
    const res = await fetch(`/api/v1/tokens/${encodeURIComponent(b.dataset.id)}`,
      { method: "DELETE", headers: authHeaders() });
    if (!res.ok) b.disabled = false;
    await loadTokens().catch(() => {});
  });

  // the panel follows the dashboard being shown and the language
  new MutationObserver(() => {
    if (el("main").hidden) {  // signed out: the next token may have other roles
      Object.assign(admin, { tokens: [], pairing: null, isAdmin: undefined });
      el("tablets-panel").hidden = true;
      return;
    }
    loadTokens().catch(() => {});
  }).observe(el("main"), { attributes: true, attributeFilter: ["hidden"] });
  new MutationObserver(render).observe(document.documentElement, { attributes: true, attributeFilter: ["lang"] });
  setInterval(() => { if (!el("tablets-panel").hidden) loadTokens().catch(() => {}); }, 15000);
})();
