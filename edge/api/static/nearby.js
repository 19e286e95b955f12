// Nearby stores (issue 16 item 6): a clerk looks up a SKU and sees which neighbouring store has it, how many
// and how fresh (GET /api/v1/nearby/{sku}). A figure the gateway cannot vouch for (hub offline, the store
// offline, too old) is shown as unknown or stale with why, and its last known value apart: never as stock.
// Loaded after app.js: uses its t(), api(), esc(), when(), nameOf(), fmt and $().
"use strict";

// why a figure is not current, in the page's language (the answer's `why` stays as the title)
const NEARBY_WHY = {
  hub_offline: "nearby.why_hub_offline", no_status: "nearby.why_no_status", store_offline: "nearby.why_store_offline",
  no_figure: "nearby.why_no_figure", clock_ahead: "nearby.why_clock_ahead", too_old: "nearby.why_too_old",
};

function nearbySkuOptions() {
  const list = $("nearby-skus");
  list.innerHTML = Object.keys(state.names.catalog || {}).sort()
    .map((sku) => `<option value="${esc(sku)}">${esc(nameOf("catalog", sku))}</option>`).join("");
}

function nearbyRow(r) {
  const who = esc(r.name || r.store) + (typeof r.distance_km === "number"
    ? ` <span class="muted">${esc(t("nearby.km", { km: fmt.num(r.distance_km) }))}</span>` : "");
  const label = { fresh: "nearby.state_fresh", stale: "nearby.state_stale", unknown: "nearby.state_unknown" }[r.state]
    || "nearby.state_unknown";
  let what;
  if (r.state === "fresh") {
    what = `<strong class="nearby-atp">${esc(t("nearby.available", { n: fmt.num(r.atp) }))}</strong>`
      + ` <span class="muted">${esc(t("nearby.as_of", { time: when(r.updated) }))}</span>`;
  } else {
    const why = NEARBY_WHY[r.reason];
    what = `<span class="nearby-why" title="${esc(r.why || "")}">${esc(why ? t(why, { time: when(r.since) }) : r.why || "")}</span>`;
    if (r.last_known) {
      what += ` <span class="muted">${esc(t("nearby.last_known", { n: fmt.num(r.last_known.atp), time: when(r.last_known.updated) }))}</span>`;
    }
  }
  return `<li class="nearby-${esc(r.state)}" data-store="${esc(r.store)}" data-state="${esc(r.state)}">`
    + `<span class="nearby-who">${who}</span> <span class="badge">${esc(t(label))}</span> ${what}</li>`;
}

async function nearbyLookup(ev) {
  ev.preventDefault();
  const sku = $("nearby-sku").value.trim();
  const out = $("nearby-result");
  if (!sku) return;
  try {
    const a = await api(`/nearby/${encodeURIComponent(sku)}`);
    const head = a.hub.connected ? t("nearby.summary", { n: fmt.num(a.have), sku: nameOf("catalog", a.sku) })
      : t("nearby.hub_offline", { time: when(a.hub.since) });
    out.innerHTML = `<p class="nearby-head">${esc(head)}</p>`
      + (a.stores.length ? `<ul class="nearby-list">${a.stores.map(nearbyRow).join("")}</ul>`
        : `<p class="muted">${esc(t("nearby.none_configured"))}</p>`);
  } catch (err) {
    out.innerHTML = `<p class="error" role="alert">${esc(t("nearby.failed", { error: err.message }))}</p>`;
  }
}

$("nearby-form").addEventListener("submit", nearbyLookup);
$("nearby-sku").addEventListener("focus", nearbySkuOptions);
