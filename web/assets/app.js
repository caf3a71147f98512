// The batchctl dashboard: renders /api/dashboard, refetches it on every server-sent event from /events (the
// batchctl_batches NOTIFY channel), and polls instead while the event stream is down. No framework, no build step;
// every value is written with textContent, never as HTML.
"use strict";

const POLL_FALLBACK_MS = 3000; // while the event stream is down
const POLL_ALWAYS_MS = 60000; // a safety net: every change is pushed

// Counters the browser test reads.
window.batchctl = { sseEvents: 0, refreshes: 0, live: false };

const state = { source: "", status: "", inAfter: "", endedAfter: "", inPrev: [], endedPrev: [], detail: "", data: null };
let refreshTimer = null, fallbackTimer = null;
const flashed = new Set();

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "style") e.style.cssText = v;
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids.flat()) {
    if (kid === undefined || kid === null || kid === false) continue;
    e.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return e;
}

function dur(s) {
  s = Math.max(0, Math.round(s));
  if (s < 60) return s + "s";
  const m = Math.floor(s / 60), h = Math.floor(m / 60), d = Math.floor(h / 24);
  if (d > 0) return d + "d " + (h % 24) + "h";
  if (h > 0) return h + "h " + (m % 60) + "m";
  return m + "m";
}
const num = (n) => (n === undefined || n === null ? "—" : Number(n).toLocaleString("en-US"));
function usd(s) {
  if (s === undefined || s === null || s === "") return "—";
  const v = Number(s);
  return "$" + (v >= 1 ? v.toFixed(2) : v.toPrecision(2));
}
const when = (t) => (t ? new Date(t).toLocaleString() : "—");

function query() {
  const q = new URLSearchParams();
  if (state.source) q.set("source", state.source);
  if (state.status) q.set("status", state.status);
  if (state.inAfter) q.set("in_after", state.inAfter);
  if (state.endedAfter) q.set("ended_after", state.endedAfter);
  return q;
}

function saveURL() {
  const q = query();
  if (state.detail) q.set("batch", state.detail);
  const s = q.toString();
  history.replaceState(null, "", s ? "?" + s : location.pathname);
}

async function getJSON(url, opts) {
  const r = await fetch(url, Object.assign({ credentials: "same-origin", cache: "no-store" }, opts || {}));
  if (!r.ok) throw new Error(url + ": " + r.status + " " + (await r.text()).trim());
  return r.json();
}

async function refresh() {
  clearTimeout(refreshTimer);
  refreshTimer = null;
  try {
    const d = await getJSON("/api/dashboard?" + query().toString());
    state.data = d;
    render(d);
    document.getElementById("error").textContent = "";
    window.batchctl.refreshes++;
    if (state.detail) await showDetail(state.detail, true);
  } catch (e) {
    document.getElementById("error").textContent = e.message;
  }
}

// scheduleRefresh coalesces a burst of events (a bulk refresh ends many batches at once) into one fetch.
function scheduleRefresh() {
  if (!refreshTimer) refreshTimer = setTimeout(refresh, 150);
}

function progressBar(b) {
  const t = Math.max(b.total, 1);
  return el("span", { class: "bar", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": String(b.total),
      "aria-valuenow": String(b.completed + b.failed), title: `${b.completed} completed, ${b.failed} failed of ${b.total}` },
    el("span", { class: "ok", style: `width:${(100 * b.completed) / t}%` }),
    el("span", { class: "fail", style: `left:${(100 * b.completed) / t}%;width:${(100 * b.failed) / t}%` }));
}

function windowCell(b) {
  if (!b.window_seconds) return el("td", { class: "window muted" }, "no window (" + dur(b.age_seconds) + ")");
  const used = Math.min(1, b.age_seconds / b.window_seconds);
  const left = b.window_seconds - b.age_seconds;
  return el("td", { class: "window" },
    el("span", { class: "bar window", title: "age against the completion window" },
      el("span", { class: "used", style: `width:${100 * used}%` })),
    el("span", { class: "num" }, dur(b.age_seconds) + " / " + Math.round(b.window_seconds / 3600) + "h" + (b.near_expiry ? " · " + dur(left) + " left" : "")));
}

function idCell(b) {
  return el("td", { class: "id" }, el("a", { href: "?batch=" + encodeURIComponent(b.id), "data-batch-id": b.id,
    onclick: (ev) => { ev.preventDefault(); showDetail(b.id); } }, b.id));
}

function rowClass(b, extra) {
  const c = [extra || ""];
  if (flashed.has(b.id)) c.push("flash");
  return c.join(" ").trim() || undefined;
}

function renderInFlight(l) {
  const body = document.querySelector("#in-flight tbody");
  body.replaceChildren(...l.batches.map((b) => el("tr", { "data-batch-id": b.id, "data-status": b.status, class: rowClass(b, b.near_expiry ? "near-expiry" : "") },
    idCell(b),
    el("td", {}, el("span", { class: "status " + b.status }, b.status)),
    el("td", { class: "progress" }, progressBar(b), el("span", { class: "num" }, `${b.completed + b.failed} / ${b.total}` + (b.failed ? ` (${b.failed} failed)` : ""))),
    windowCell(b),
    el("td", {}, b.model || "—"),
    el("td", {}, b.source || "—"))));
  if (!l.batches.length) body.append(el("tr", {}, el("td", { colspan: "6", class: "muted" }, "no batch in flight")));
}

function lineage(b) {
  const parts = [];
  if (b.attempt > 1) parts.push("attempt " + b.attempt + " of " + b.root_batch_id);
  if (b.resubmitted_as) parts.push("→ " + b.resubmitted_as);
  return parts.join(" ") || "—";
}

function renderEnded(l) {
  const body = document.querySelector("#ended tbody");
  body.replaceChildren(...l.batches.map((b) => el("tr", { "data-batch-id": b.id, "data-status": b.status, class: rowClass(b) },
    idCell(b),
    el("td", {}, el("span", { class: "status " + b.status }, b.status)),
    el("td", {}, `${num(b.completed)} ok · ${num(b.failed)} failed / ${num(b.total)}`),
    el("td", { class: "rows" }, b.results_lost_at ? "lost" : (b.rows_loaded === undefined ? "loading…" : num(b.rows_loaded))),
    el("td", {}, num(b.tokens)),
    el("td", {}, usd(b.cost_usd)),
    el("td", { class: "muted" }, lineage(b)),
    el("td", { class: "muted" }, dur(b.age_seconds) + " run · " + when(b.ended_at)))));
  if (!l.batches.length) body.append(el("tr", {}, el("td", { colspan: "8", class: "muted" }, "no ended batch")));
}

function pager(which, l) {
  const box = document.querySelector(`.pager[data-list="${which}"]`);
  const prev = which === "in" ? state.inPrev : state.endedPrev;
  const cur = which === "in" ? "inAfter" : "endedAfter";
  box.replaceChildren(...[
    prev.length ? el("button", { type: "button", onclick: () => { state[cur] = prev.pop(); saveURL(); refresh(); } }, "← previous") : null,
    l && l.next ? el("button", { type: "button", onclick: () => { prev.push(state[cur]); state[cur] = l.next; saveURL(); refresh(); } }, "next →") : null].filter(Boolean));
}

function render(d) {
  const totals = document.getElementById("totals");
  const all = d.totals.reduce((n, t) => n + t.batches, 0);
  totals.replaceChildren(
    el("div", { class: "total" + (state.status === "" ? " sel" : ""), "data-status": "", onclick: () => setStatus("") }, el("b", {}, num(all)), el("small", {}, "batches")),
    ...d.totals.map((t) => el("div", { class: "total" + (state.status === t.status ? " sel" : ""), "data-status": t.status, onclick: () => setStatus(t.status) },
      el("b", {}, num(t.batches)), el("small", {}, t.status + (t.cost_usd ? " · " + usd(t.cost_usd) : "")))));

  const sel = document.getElementById("f-source");
  const have = [...sel.options].map((o) => o.value).join("\n");
  if (have !== ["", ...d.sources].join("\n")) {
    sel.replaceChildren(el("option", { value: "" }, "any"), ...d.sources.map((s) => el("option", { value: s }, s)));
  }
  sel.value = state.source;
  document.getElementById("f-status").value = state.status;

  document.getElementById("in-flight-section").hidden = !d.in_flight;
  document.getElementById("ended-section").hidden = !d.ended;
  if (d.in_flight) renderInFlight(d.in_flight);
  if (d.ended) renderEnded(d.ended);
  pager("in", d.in_flight);
  pager("ended", d.ended);
  document.getElementById("riverui-link").hidden = !d.riverui;
  document.getElementById("metrics-link").hidden = !d.metrics;
  flashed.clear();
}

function setStatus(s) {
  state.status = s;
  state.inAfter = state.endedAfter = "";
  state.inPrev = [];
  state.endedPrev = [];
  saveURL();
  refresh();
}

async function act(id, action) {
  if (!confirm(`${action} batch ${id}?`)) return;
  try {
    const r = await getJSON(`/api/batches/${encodeURIComponent(id)}/${action}`, { method: "POST", headers: { "X-Batchctl-CSRF": state.data.csrf } });
    document.getElementById("error").textContent = r.queued ? `${action} queued for ${id}` : `${action} already queued for ${id}`;
  } catch (e) {
    document.getElementById("error").textContent = e.message;
  }
}

async function showDetail(id, quiet) {
  state.detail = id;
  saveURL();
  let d;
  try {
    d = await getJSON("/api/batches/" + encodeURIComponent(id));
  } catch (e) {
    if (!quiet) document.getElementById("error").textContent = e.message;
    return;
  }
  const b = d.batch;
  const terminal = ["completed", "failed", "expired", "cancelled"].includes(b.status);
  const body = document.getElementById("detail-body");
  body.replaceChildren(
    el("h3", {}, b.id),
    el("dl", {},
      el("dt", {}, "status"), el("dd", {}, el("span", { class: "status " + b.status, id: "detail-status" }, b.status)),
      el("dt", {}, "provider"), el("dd", {}, b.provider),
      el("dt", {}, "endpoint"), el("dd", {}, b.endpoint || "—"),
      el("dt", {}, "model"), el("dd", {}, b.model || "—"),
      el("dt", {}, "source"), el("dd", {}, b.source || "—"),
      el("dt", {}, "requests"), el("dd", {}, progressBar(b), el("span", { class: "num" }, `${b.completed} completed, ${b.failed} failed of ${b.total}`)),
      el("dt", {}, "created"), el("dd", {}, when(b.created_at)),
      el("dt", {}, "ended"), el("dd", {}, when(b.ended_at)),
      el("dt", {}, "rows loaded"), el("dd", {}, num(b.rows_loaded)),
      el("dt", {}, "tokens"), el("dd", {}, num(b.tokens)),
      el("dt", {}, "cost"), el("dd", {}, usd(b.cost_usd)),
      ...Object.entries(d.files || {}).flatMap(([k, v]) => [el("dt", {}, k + " file"), el("dd", { class: "id" }, v)])),
    state.data && state.data.allow_actions ? el("div", { class: "actions" },
      !terminal ? el("button", { type: "button", class: "danger", onclick: () => act(b.id, "cancel") }, "Cancel batch") : null,
      terminal ? el("button", { type: "button", onclick: () => act(b.id, "resubmit") }, "Resubmit failed requests") : null) : null,
    el("h4", {}, "Results by outcome"),
    d.outcomes.length ? el("table", { id: "detail-outcomes" }, el("tbody", {}, d.outcomes.map((o) => el("tr", {}, el("td", {}, o.outcome), el("td", {}, num(o.count))))))
      : el("p", { class: "muted" }, "no results loaded"),
    el("h4", {}, "Errors"),
    d.errors.length ? el("table", { id: "detail-errors" }, el("thead", {}, el("tr", {}, el("th", {}, "line"), el("th", {}, "code"), el("th", {}, "message"))),
      el("tbody", {}, d.errors.map((e) => el("tr", {}, el("td", {}, e.line ?? "—"), el("td", {}, e.code || "—"), el("td", {}, e.message || "")))))
      : el("p", { class: "muted" }, "none"),
    el("h4", {}, "Lineage"),
    el("table", { id: "detail-lineage" }, el("tbody", {}, d.lineage.map((l) => el("tr", { class: l.id === b.id ? "flash" : undefined },
      el("td", {}, "attempt " + l.attempt), idCell(l), el("td", {}, el("span", { class: "status " + l.status }, l.status)),
      el("td", {}, `${num(l.completed)} / ${num(l.total)}`))))));
  document.getElementById("detail").hidden = false;
}

function connect() {
  if (!window.EventSource) return startFallback();
  const es = new EventSource("/events");
  es.addEventListener("hello", () => {
    setLive(true);
    refresh(); // whatever changed while the stream was down
  });
  es.addEventListener("batch", (ev) => {
    window.batchctl.sseEvents++;
    try { flashed.add(JSON.parse(ev.data).batch.batch_id); } catch (_) { /* refetch all the same */ }
    scheduleRefresh();
  });
  es.addEventListener("progress", () => {
    window.batchctl.sseEvents++;
    scheduleRefresh();
  });
  es.addEventListener("sync", scheduleRefresh);
  es.onerror = () => setLive(false); // the browser reconnects by itself; poll meanwhile
}

function setLive(on) {
  window.batchctl.live = on;
  const live = document.getElementById("live");
  live.className = "live " + (on ? "on" : "off");
  live.textContent = on ? "live" : "polling";
  if (on) { clearInterval(fallbackTimer); fallbackTimer = null; } else startFallback();
}

function startFallback() {
  if (!fallbackTimer) fallbackTimer = setInterval(refresh, POLL_FALLBACK_MS);
}

function init() {
  const q = new URLSearchParams(location.search);
  state.source = q.get("source") || "";
  state.status = q.get("status") || "";
  state.inAfter = q.get("in_after") || "";
  state.endedAfter = q.get("ended_after") || "";
  document.getElementById("f-source").addEventListener("change", (e) => { state.source = e.target.value; setStatus(state.status); });
  document.getElementById("f-status").addEventListener("change", (e) => setStatus(e.target.value));
  document.getElementById("detail-close").addEventListener("click", () => { state.detail = ""; document.getElementById("detail").hidden = true; saveURL(); });
  refresh();
  if (q.get("batch")) showDetail(q.get("batch"));
  connect();
  setInterval(refresh, POLL_ALWAYS_MS);
}

document.addEventListener("DOMContentLoaded", init);
