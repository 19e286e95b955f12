// Foot-traffic charts of the staff dashboard, drawn as SVG by this file (no chart library, no CDN):
// visitors per hour today beside the same weekday last week, occupancy over the day, dwell per zone.
// Elements are built with createElementNS and setAttribute only (the Content-Security-Policy refuses inline
// style attributes); colours come from classes in style.css. Numbers and hours go through Intl in the page's
// language. Data: GET /api/v1/traffic (hours_today, hour_now, last_week.hours, occupancy, zones).
"use strict";

const Charts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const W = 480, H = 180, PAD = { l: 40, r: 8, t: 10, b: 26 };

  function el(name, attrs, parent, text) {
    const e = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }

  // a fresh <svg> in `box` with an accessible name
  function svg(box, label) {
    box.replaceChildren();
    const s = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label, class: "chart" }, box);
    el("title", {}, s, label);
    return s;
  }

  // a "nice" top for the y axis and its gridlines
  function axis(s, max, fmtNum) {
    const top = max <= 4 ? 4 : Math.ceil(max / 4) * 4;
    const y = (v) => PAD.t + (H - PAD.t - PAD.b) * (1 - v / top);
    for (let i = 0; i <= 4; i++) {
      const v = (top / 4) * i;
      el("line", { x1: PAD.l, x2: W - PAD.r, y1: y(v), y2: y(v), class: "grid" }, s);
      el("text", { x: PAD.l - 4, y: y(v) + 4, "text-anchor": "end", class: "tick" }, s, fmtNum(v));
    }
    return y;
  }

  function empty(s, text) {
    el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, s, text);
  }

  const hourOf = (iso) => new Date(iso).getTime();

  // visitors per hour: today's bars (closed hours and the hour so far) beside last week's, by hour of day
  function hours(box, tr, o) {
    const s = svg(box, o.t("chart_hours"));
    const today = [...(tr.hours_today || []), ...(tr.hour_now ? [tr.hour_now] : [])];
    const week = ms(7 * 24);
    const last = new Map(((tr.last_week && tr.last_week.hours) || []).map((h) => [hourOf(h.start) + week, h]));
    const slots = [...new Set([...today.map((h) => hourOf(h.start)), ...last.keys()])].sort((a, b) => a - b);
    if (!slots.length) { empty(s, o.t("chart_no_data")); return; }
    const byStart = new Map(today.map((h) => [hourOf(h.start), h]));
    const max = Math.max(1, ...today.map((h) => h.visitors), ...[...last.values()].map((h) => h.visitors));
    const y = axis(s, max, o.num);
    const step = (W - PAD.l - PAD.r) / slots.length, bw = Math.max(2, step * 0.4);
    const hourFmt = new Intl.DateTimeFormat(o.lang, { hour: "numeric" });
    slots.forEach((t, i) => {
      const x = PAD.l + i * step + step * 0.1;
      for (const [h, cls, dx] of [[last.get(t), "bar lastweek", 0], [byStart.get(t), "bar today", bw]]) {
        if (!h) continue;
        const r = el("rect", { x: x + dx, y: y(h.visitors), width: bw, height: y(0) - y(h.visitors), class: cls,
          "data-hour": new Date(t).toISOString(), "data-value": h.visitors }, s);
        el("title", {}, r, `${hourFmt.format(new Date(t))}: ${o.num(h.visitors)}`);
      }
      if (slots.length <= 12 || i % 2 === 0) {
        el("text", { x: x + bw, y: H - 8, "text-anchor": "middle", class: "tick" }, s, hourFmt.format(new Date(t)));
      }
    });
    legend(s, [["today", o.t("chart_today")], ["lastweek", o.t("chart_last_week")]]);
  }

  function ms(hoursN) { return hoursN * 3600 * 1000; }

  function legend(s, items) {
    items.forEach(([cls, text], i) => {
      const x = W - PAD.r - 110 * (items.length - i);
      el("rect", { x, y: 0, width: 10, height: 10, class: `swatch ${cls}` }, s);
      el("text", { x: x + 14, y: 9, class: "tick legend" }, s, text);
    });
  }

  // occupancy over the day: one point at the end of each closed hour and one now
  function occupancy(box, tr, o) {
    const s = svg(box, o.t("chart_occupancy"));
    const pts = (tr.hours_today || []).map((h) => [hourOf(h.end), h.occupancy]);
    if (typeof tr.occupancy === "number" && tr.time) pts.push([hourOf(tr.time), tr.occupancy]);
    if (!pts.length) { empty(s, o.t("chart_no_data")); return; }
    const y = axis(s, Math.max(1, ...pts.map((p) => p[1])), o.num);
    const t0 = Math.min(...pts.map((p) => p[0])) - ms(1), t1 = Math.max(...pts.map((p) => p[0]));
    const x = (t) => PAD.l + (W - PAD.l - PAD.r) * ((t - t0) / Math.max(1, t1 - t0));
    el("polyline", { points: pts.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" "), class: "line" }, s);
    const timeFmt = new Intl.DateTimeFormat(o.lang, { hour: "2-digit", minute: "2-digit" });
    for (const [t, v] of pts) {
      const c = el("circle", { cx: x(t), cy: y(v), r: 3.5, class: "point", "data-value": v }, s);
      el("title", {}, c, `${timeFmt.format(new Date(t))}: ${o.num(v)}`);
    }
    el("text", { x: PAD.l, y: H - 8, class: "tick" }, s, timeFmt.format(new Date(t0)));
    el("text", { x: W - PAD.r, y: H - 8, "text-anchor": "end", class: "tick" }, s, timeFmt.format(new Date(t1)));
  }

  // dwell per zone: median (bar) and 90th percentile (tick) of today's visits, in minutes
  function dwell(box, tr, o) {
    const s = svg(box, o.t("chart_dwell"));
    const zones = Object.entries(tr.zones || {}).filter(([, z]) => typeof z.dwell_median_s === "number");
    if (!zones.length) { empty(s, o.t("chart_no_data")); return; }
    const min = new Intl.NumberFormat(o.lang, { style: "unit", unit: "minute", unitDisplay: "short", maximumFractionDigits: 1 });
    const max = Math.max(...zones.map(([, z]) => Math.max(z.dwell_median_s, z.dwell_p90_s || 0))) / 60;
    const left = 110, right = W - 60, rowH = Math.min(28, (H - PAD.t) / zones.length);
    const x = (m) => left + (right - left) * (m / Math.max(max, 0.1));
    zones.forEach(([zone, z], i) => {
      const yy = PAD.t + i * rowH;
      const m = z.dwell_median_s / 60;
      el("text", { x: left - 6, y: yy + rowH * 0.6, "text-anchor": "end", class: "tick" }, s, o.zone(zone));
      const r = el("rect", { x: left, y: yy + 3, width: Math.max(1, x(m) - left), height: rowH - 8, class: "bar today",
        "data-zone": zone, "data-value": z.dwell_median_s }, s);
      el("title", {}, r, `${o.zone(zone)}: ${min.format(m)}`);
      if (typeof z.dwell_p90_s === "number") {
        el("line", { x1: x(z.dwell_p90_s / 60), x2: x(z.dwell_p90_s / 60), y1: yy + 1, y2: yy + rowH - 3, class: "p90" }, s);
      }
      el("text", { x: x(m) + 4, y: yy + rowH * 0.6, class: "tick" }, s, min.format(m));
    });
  }

  // o: { t (catalog lookup), num (Intl number), lang, zone (zone id -> display name) }
  function render(tr, o) {
    hours(document.getElementById("chart-hours"), tr, o);
    occupancy(document.getElementById("chart-occupancy"), tr, o);
    dwell(document.getElementById("chart-dwell"), tr, o);
  }

  return { render };
})();
