// The history page (issue 26): decisions with filters, paging and CSV; shift and lot; yield trend; audit log.
// Plain JS, no build step, no external origin; the token (a named user's or api.token) is kept for the session.
"use strict";

const PAGE = 25;
let offset = 0;
let total = 0;

function svg(tag, attrs) {
  const e = document.createElementNS($("trend").namespaceURI, tag); // the SVG namespace, from the page's own svg
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}
function when(iso) { const t = new Date(iso); return iso && !isNaN(t) ? t.toLocaleString() : (iso || ""); }
function short(v) {
  if (v === null || v === undefined || (typeof v === "object" && !Object.keys(v).length)) return "–";
  if (typeof v === "object" && "boxes" in v) return `${v.name}: ${v.boxes} box(es), ${v.ng} NG (n = ${v.n})`;
  return typeof v === "object" ? JSON.stringify(v) : String(v);
}

function refreshToken() {
  // the images and the CSV link cannot send a header: the token goes in the view cookie (viewing only)
  document.cookie = "boxinspect_view=" + encodeURIComponent(token()) + "; path=/; SameSite=Strict" + (token() ? "" : "; max-age=0");
  $("token-state").textContent = token() ? "token set for this session" : "";
}

function periodText(p) {
  if (!p) return "–";
  return `${p.name} since ${when(p.started)}: ${p.boxes} box(es), ${p.ng} NG, yield ${p.n ? pct(p.yield) : "–"} (n = ${p.n})`;
}

// ---------------------------------------------------------------- decisions
function filterParams() {
  const q = new URLSearchParams();
  q.set("verdict", $("f-verdict").value);
  if ($("f-part").value.trim()) q.set("part", $("f-part").value.trim());
  for (const [id, key] of [["f-since", "since"], ["f-until", "until"]]) {
    const v = $(id).value;
    if (v) q.set(key, new Date(v).toISOString());
  }
  return q;
}

async function loadHistory() {
  const q = filterParams();
  $("csv").href = "/ui/history.csv?" + q.toString();
  q.set("limit", PAGE);
  q.set("offset", offset);
  const d = await getJSON("/ui/history?" + q.toString());
  total = d.total;
  $("h-total").textContent = `(${d.total} matching)`;
  $("h-page").textContent = d.total ? `${offset + 1}–${Math.min(offset + PAGE, d.total)} of ${d.total}` : "none";
  $("h-prev").disabled = offset === 0;
  $("h-next").disabled = offset + PAGE >= d.total;
  $("h-rows").replaceChildren(...d.items.map((it) => el("tr", { "data-id": it.event_id },
    el("td", {}, when(it.decided_at)),
    el("td", { class: it.is_defect ? "ng" : "ok" }, it.is_defect ? "NG" : "OK"),
    el("td", {}, num(it.score)),
    el("td", {}, it.part_id || "–"),
    el("td", {}, it.model_id || "–"),
    el("td", {}, el("button", { type: "button", class: "open small", onclick: () => openDecision(it.event_id) },
      it.images.crop === "ok" || it.images.frame === "ok" ? "open" : "open (no images)")))));
}

function imageOrNote(id, which, stateOf, retention) {
  if (stateOf === "ok") {
    return el("figure", {}, el("img", { src: `/ui/history/${encodeURIComponent(id)}/${which}.jpg`, alt: which, class: "h-img" }),
      el("figcaption", {}, which));
  }
  const why = stateOf === "pruned"
    ? `The ${which} was deleted by the evidence retention (evidence.max_files ${retention.max_files}, max_age_days ${retention.max_age_days}).`
    : `No ${which} was saved for this decision (defects are always saved; OK boxes at evidence.ok_sample_rate).`;
  return el("figure", {}, el("p", { class: "gone", "data-image": which }, why), el("figcaption", {}, which));
}

async function openDecision(id) {
  try {
    const d = await getJSON(`/ui/history/${encodeURIComponent(id)}`);
    const retention = (await getJSON("/ui/history?limit=1")).retention;
    $("hd-title").textContent = `${d.is_defect ? "NG" : "OK"} · ${d.label} · score ${num(d.score)}`;
    $("hd-meta").textContent = `${when(d.decided_at)} · part ${d.part_id || "–"} · model ${d.model_id} · threshold ${num(d.threshold)} · ${d.event_id}`;
    $("hd-images").replaceChildren(imageOrNote(id, "frame", d.images.frame, retention), imageOrNote(id, "crop", d.images.crop, retention));
    $("h-detail").showModal();
  } catch (e) { toast("Cannot open " + id + ": " + e.message, true); }
}

// ---------------------------------------------------------------- counters, trend, audit
async function loadCounters() {
  const c = await getJSON("/ui/counters");
  $("h-shift").textContent = periodText(c.shift);
  $("h-lot").textContent = periodText(c.lot);
}

function drawTrend(d) {
  const g = $("trend");
  const W = 400, H = 160, L = 34, B = 20, T = 8;
  const pts = d.points || [];
  const y = (v) => T + (1 - v) * (H - T - B);
  const kids = [svg("line", { x1: L, y1: y(0), x2: W, y2: y(0), stroke: "#9ca3af" }),
    svg("line", { x1: L, y1: T, x2: L, y2: y(0), stroke: "#9ca3af" })];
  for (const v of [0, 0.5, 1]) {
    const t = svg("text", { x: 2, y: y(v) + 3 });
    t.textContent = (100 * v) + "%";
    kids.push(t);
  }
  const spc = d.spc_config || {};
  if (spc.enabled) {  // the SPC rate rule: yield below 1 - rate_pct raises the alarm
    const lim = 1 - spc.rate_pct / 100;
    kids.push(svg("line", { x1: L, y1: y(lim), x2: W, y2: y(lim), class: "limit" }));
  }
  if (pts.length) {
    const x = (i) => L + (pts.length === 1 ? (W - L) / 2 : i * (W - L - 6) / (pts.length - 1));
    kids.push(svg("polyline", { class: "line", points: pts.map((p, i) => `${x(i)},${y(p.yield)}`).join(" ") }));
    pts.forEach((p, i) => {
      const c = svg("circle", { cx: x(i), cy: y(p.yield), r: 3, fill: p.ng ? "#b91c1c" : "#15803d" });
      const tip = svg("title", {});
      tip.textContent = `${pct(p.yield)} (n = ${p.n}, ${p.ng} NG) ${when(p.from)} – ${when(p.to)}`;
      c.append(tip);
      kids.push(c);
    });
  }
  g.replaceChildren(...kids);
  const n = pts.reduce((a, p) => a + p.n, 0);
  $("trend-note").textContent = pts.length
    ? `Yield of the last ${n} decisions in ${pts.length} groups of about ${pts[0].n} (oldest left).` + (spc.enabled ? ` Dashed: the SPC limit (${spc.rate_pct} % NG over ${spc.window} parts).` : " SPC is off (spc.enabled).")
    : "No decisions yet.";
  const s = d.spc;
  const pill = $("spc-state");
  pill.textContent = !spc.enabled ? "SPC off" : s && s.active ? "SPC ALARM" : "SPC ok";
  pill.className = "pill " + (!spc.enabled ? "" : s && s.active ? "bad" : "ok");
}

async function loadAudit() {
  const d = await getJSON("/ui/audit?limit=50");
  $("audit-topic").textContent = d.topic;
  $("a-rows").replaceChildren(...d.items.map((a) => el("tr", { "data-action": a.action },
    el("td", {}, when(a.at)), el("td", { class: "who" }, a.who), el("td", {}, a.action), el("td", {}, a.what || ""),
    el("td", {}, short(a.before)), el("td", {}, short(a.after)))));
}

async function refresh() {
  for (const f of [loadCounters, async () => drawTrend(await getJSON("/ui/trend")), loadAudit]) {
    try { await f(); } catch (e) { /* shown on the next poll */ }
  }
}

async function poll() {
  await refresh();
  setTimeout(poll, document.hidden ? 15000 : 5000);
}

function wire() {
  $("token-button").addEventListener("click", () => { $("token-form").hidden = !$("token-form").hidden; $("token-input").focus(); });
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const v = $("token-input").value.trim();
    if (v) sessionStorage.setItem(TOKEN_KEY, v);
    $("token-input").value = "";
    $("token-form").hidden = true;
    refreshToken();
    loadHistory().catch(() => {});
    refresh();
  });
  $("token-forget").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); refreshToken(); });
  $("filter").addEventListener("submit", (ev) => { ev.preventDefault(); offset = 0; loadHistory().catch((e) => toast(e.message, true)); });
  $("h-prev").addEventListener("click", () => { offset = Math.max(0, offset - PAGE); loadHistory().catch(() => {}); });
  $("h-next").addEventListener("click", () => { if (offset + PAGE < total) offset += PAGE; loadHistory().catch(() => {}); });
  $("lot-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = { reason: $("lot-reason").value.trim() };
    if ($("lot-name").value.trim()) body.lot = $("lot-name").value.trim();
    const r = await fetch("/ui/lot/reset", { method: "POST", headers: { ...authHeaders(), "Content-Type": "application/json" }, body: JSON.stringify(body) });
    const data = await r.json().catch(() => null);
    if (!r.ok) { toast("Refused: " + ((data && data.detail) || r.status), true); return; }
    toast(`Lot ${data.ended.name} ended (${data.ended.boxes} boxes); ${data.lot.name} started`);
    $("lot-reason").value = "";
    $("lot-name").value = "";
    refresh();
  });
}

wire();
refreshToken();
loadHistory().catch(() => {});
poll();
