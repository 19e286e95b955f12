// Pick tasks for online orders (issue 16 item 4): the open tasks (GET /api/v1/picks, earliest due first) with
// the shelf and lane to pick from, and the orders ready for collection (GET /api/v1/orders?state=ready) with a
// Collected button (POST /api/v1/orders/{id}/collect). Picking itself is confirmed by scanning the items or by
// the shelf's own sensors (docs/orders.md). Refreshed every few seconds while the dashboard is shown.
// Loaded after app.js: uses its t(), api(), esc(), when(), nameOf(), fmt, toast() and $().
"use strict";

const PICKS_EVERY_MS = 3000;

function pickRow(p) {
  // a back-room task has no lane: the place by its name (manifest backroom:)
  const text = p.lane
    ? t("picks.task", {
      qty: fmt.num(p.qty), name: nameOf("catalog", p.sku), shelf: nameOf("shelves", p.shelf), lane: p.lane, order: p.order_id,
    })
    : t("picks.task_backroom", {
      qty: fmt.num(p.qty), name: nameOf("catalog", p.sku), place: nameOf("backroom", p.shelf), order: p.order_id,
    });
  const done = Math.max(p.scanned || 0, p.sensed || 0);
  return `<li class="pick" data-task="${esc(p.id)}" data-order="${esc(p.order_id)}"><strong>${esc(text)}</strong>`
    + ` <span class="muted">${esc(t("picks.due", { time: when(p.closes) }))}`
    + ` · ${esc(t("picks.progress", { done: fmt.num(done), qty: fmt.num(p.qty) }))}</span></li>`;
}

function readyRow(o) {
  const items = (o.lines || []).map((l) => `${fmt.num(l.reserved)} × ${nameOf("catalog", l.sku)}`).join(", ");
  return `<li class="ready-order" data-order="${esc(o.order_id)}"><strong>${esc(t("picks.ready", { order: o.order_id }))}</strong>`
    + ` <span class="muted">${esc(items)}</span>`
    + ` <button type="button" class="collect" data-order="${esc(o.order_id)}">${esc(t("picks.collected"))}</button></li>`;
}

async function loadPicks() {
  if ($("main").hidden || !token) return;
  try {
    const [picks, ready] = await Promise.all([api("/picks"), api("/orders?state=ready")]);
    $("picks").innerHTML = picks.items.map(pickRow).join("");
    $("no-picks").hidden = picks.items.length > 0;
    $("pick-count").textContent = fmt.num(picks.items.length);
    $("ready-orders").innerHTML = ready.items.map(readyRow).join("");
  } catch (err) {
    // the stale banner says when the gateway is away; nothing else to do here
  }
}

async function collectOrder(button) {
  button.disabled = true;
  try {
    await api(`/orders/${encodeURIComponent(button.dataset.order)}/collect`, { method: "POST" });
    toast(t("picks.collected_done", { order: button.dataset.order }));
  } catch (err) {
    toast(t("picks.failed", { error: err.message }));
  }
  await loadPicks();
}

$("ready-orders").addEventListener("click", (ev) => {
  const b = ev.target.closest("button.collect");
  if (b) collectOrder(b);
});
setInterval(loadPicks, PICKS_EVERY_MS);
