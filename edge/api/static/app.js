// The operator page: plain JS, no build step, talks only to the daemon that served it.
"use strict";

let summary = null;
let promoteNeedsConfirm = false;
let lastModelDoc = null; // issue 26: the last /ui/model, for the confirmation dialogs
let confirmAction = null;
let labels = ["ok", "defective"]; // (negative, positive), from the model
let queueItem = null;
let lastDecisionsKey = "";
let everyShown = null; // the collection interval last taken from the daemon

// ---------------------------------------------------------------- helpers
function when(iso) {
  if (!iso) return "";
  const t = new Date(iso);
  return isNaN(t) ? iso : t.toLocaleTimeString();
}


function showTokenForm(show) {
  $("token-form").hidden = !show;
  if (show) $("token-input").focus();
}

function refreshTokenState() {
  const need = summary && summary.token_required;
  $("token-state").textContent = need ? (token() ? "token set for this session" : "actions need the API token") : "";
  // issue 24: with no credential configured the page is read-only and says how to enable actions
  const access = summary && summary.access;
  if (access && !access.actions_enabled) $("token-state").textContent = "read-only: " + access.how_to_enable;
  document.cookie = "boxinspect_view=" + encodeURIComponent(token()) + "; path=/; SameSite=Strict" + (token() ? "" : "; max-age=0");
  $("token-button").hidden = !need;
}

// Every action goes through here: it sends the token and says plainly when the daemon refused it.
async function act(path, body, isForm = false) {
  const headers = {};
  if (token()) headers["Authorization"] = "Bearer " + token();
  if (!isForm) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method: "POST", headers, body: isForm ? body : JSON.stringify(body || {}) });
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  if (r.status === 401) {
    if ($("detail").open) $("detail").close(); // a modal dialog would keep the token form out of reach
    sessionStorage.removeItem(TOKEN_KEY);
    refreshTokenState();
    showTokenForm(true);
    toast("Refused: " + ((data && data.detail) || "the API token is missing or wrong") + ". Enter the token and try again.", true);
    throw new Error("refused");
  }
  if (!r.ok) {
    const detail = data && data.reason ? data.reason : data && data.detail ? (typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail)) : `HTTP ${r.status}`;
    toast("Not done: " + detail, true);
    throw new Error(detail);
  }
  return data;
}

// ---------------------------------------------------------------- live frame (one request at a time)
function liveLoop() {
  const img = $("live");
  const next = () => setTimeout(liveLoop, document.hidden ? 2000 : 500);
  if (document.hidden) { next(); return; }
  const probe = new Image();
  probe.onload = () => { img.src = probe.src; next(); };
  probe.onerror = () => next();
  probe.src = "/ui/frame.jpg?t=" + Date.now();
}

// ---------------------------------------------------------------- summary
function renderSummary(s) {
  summary = s;
  if (s.model && s.model.labels && s.model.labels.length === 2) {
    const pos = s.model.positive_class;
    labels = [s.model.labels.find((l) => l !== pos), pos];
  }
  $("where").textContent = `${s.line} / ${s.camera_id}`;
  $("version").textContent = "boxinspect " + s.version;
  const ready = $("ready");
  ready.textContent = s.ready ? "READY" : "NOT READY";
  ready.className = "pill " + (s.ready ? "ok" : "bad");
  const spc = $("spc-alarm");  // the SPC alarm: "the line started producing bad boxes" (docs/INTEGRATION.md)
  spc.hidden = !(s.spc && s.spc.active);
  spc.textContent = s.spc && s.spc.active ? "SPC ALARM" : "";
  spc.title = s.spc && s.spc.reason ? s.spc.reason : "";
  const reasons = $("reasons");
  reasons.replaceChildren(...s.reasons.map((r) => el("li", {}, r)));

  const cam = s.camera || {};
  const stats = cam.stats || {};
  $("st-camera").textContent = `${cam.state}${cam.frozen ? " (picture frozen)" : ""}` +
    (stats.fps ? ` · ${num(stats.fps, 1)} fps captured` : "");
  const m = s.model || {};
  $("st-model").textContent = m.loaded
    ? `${m.model_id} · threshold ${num(m.threshold, 2)} · ${m.format || ""}${m.self_test_passed ? "" : " · SELF-TEST FAILED"}`
    : "not loaded";
  const q = s.mqtt || {};
  $("st-mqtt").textContent = !q.enabled ? "disabled (events kept in the outbox)"
    : q.connected ? `connected to ${q.broker}` : `not connected${q.last_error ? " (" + q.last_error + ")" : ""}`;
  $("st-outbox").textContent = q.outbox_depth === undefined ? "–"
    : `${q.outbox_depth} event(s) waiting${q.outbox_dropped ? ` · ${q.outbox_dropped} dropped` : ""}`;
  $("st-mode").textContent = s.mode;
  $("trigger").hidden = s.mode !== "triggered";

  renderLive(s);
  const c = s.counters;
  $("c-boxes").textContent = c.boxes;
  $("c-defects").textContent = c.defects;
  $("c-rate-n").textContent = pct(c.last_n.rate);
  $("c-rate-n-label").textContent = `defect rate, last ${c.last_n.n}`;
  $("c-rate-h").textContent = pct(c.last_hour.rate);
  $("c-fps").textContent = c.fps === null || c.fps === undefined ? "–" : num(c.fps, 1);
  const loc = Object.entries(c.localizer || {}).filter(([k]) => !k.startsWith("box/"));
  $("c-crop").textContent = loc.length ? loc.map(([k, v]) => `${k} ${v}`).join(", ") : "none";
  $("c-nobox").textContent = c.no_box_frames === null || c.no_box_frames === undefined ? "–" : c.no_box_frames;
  renderShiftLot(s);

  const f = s.feedback;
  $("fb-new").textContent = f.new_since_model === null ? "–" : f.new_since_model;
  $("fb-total").textContent = f.total;
  $("fb-counts").replaceChildren(...Object.entries(f.counts).map(([k, v]) => el("li", { "data-class": k }, `${k}: ${v}`)));

  const col = s.collection;
  if (col.every !== everyShown) { $("collect-every").value = col.every; everyShown = col.every; } // not while typing
  $("collect-on").checked = col.enabled;
  $("collect-queued").textContent = col.queued;
  $("q-neg").textContent = $("q-neg-b").textContent = labels[0];
  $("q-pos").textContent = $("q-pos-b").textContent = labels[1];
  refreshTokenState();
}

// The live view says what it is looking at: "inspecting…" while a box is in the ROI (never the previous box's
// verdict); the result tile shows the last box decided, on the frame that decided it.
let resultShown = null;
function renderLive(s) {
  const st = $("live-state");
  st.textContent = s.inspecting ? "inspecting…" : "waiting for a box";
  st.className = s.inspecting ? "state-inspecting" : "state-idle";
  const r = s.result;
  if (!r || r.event_id === resultShown) return;
  resultShown = r.event_id;
  const v = $("result-verdict");
  v.textContent = r.label;
  v.className = "verdict " + (r.is_defect ? "bad" : "ok");
  v.setAttribute("data-event", r.event_id);
  $("result-score").textContent = `${num(r.score)} (threshold ${num(r.threshold, 2)}) · ${when(r.decided_at)}`;
  const img = $("result-img");
  img.src = `/ui/result.jpg?e=${encodeURIComponent(r.event_id)}`;
  img.hidden = false;
}

async function summaryLoop() {
  try { renderSummary(await getJSON("/ui/summary")); } catch (e) { $("ready").textContent = "NO CONNECTION"; $("ready").className = "pill bad"; }
  setTimeout(summaryLoop, 1000);
}

// ---------------------------------------------------------------- answers (feedback buttons)
function answerButtons(target, record, container, after) {
  const id = target === "decision" ? record.event_id : record.check_id;
  const kinds = record.is_defect
    ? [["correct", "Correct (defect)", "bad"], ["false_reject", "False reject: it is OK", "ok"]]
    : [["correct", "Correct (OK)", "ok"], ["missed_defect", "Missed defect", "bad"]];
  container.replaceChildren(...kinds.map(([kind, text, cls]) =>
    el("button", {
      type: "button", class: cls, "data-kind": kind, "data-id": id,
      onclick: async (ev) => {
        ev.stopPropagation();
        try {
          const rec = await act("/ui/feedback", { target, id, kind });
          toast(`Stored as "${rec.label}" in feedback/${rec.label}/`);
          container.setAttribute("data-answered", rec.label);
          if (after) after(rec);
          summaryLoopOnce();
          lastDecisionsKey = "";
        } catch (e) { /* toast says why */ }
      },
    }, text)));
}

async function summaryLoopOnce() {
  try { renderSummary(await getJSON("/ui/summary")); } catch (e) { /* next poll */ }
}

// ---------------------------------------------------------------- recent decisions
function openDecision(d) {
  $("d-title").textContent = `${d.label.toUpperCase()} · score ${num(d.score)} (threshold ${num(d.threshold, 2)})`;
  $("d-meta").textContent = `${when(d.decided_at)} · ${d.frame_count} frame(s) · model ${d.model_id}` +
    (d.part_id ? ` · part ${d.part_id}` : "") + ` · ${d.event_id}`;
  $("d-frame").src = d.images ? `/ui/decisions/${d.event_id}/frame.jpg` : "";
  $("d-crop").src = d.images ? `/ui/decisions/${d.event_id}/crop.jpg` : "";
  drawHeat(d.anomaly_map);
  answerButtons("decision", d, $("d-answers"), () => $("detail").close());
  $("detail").showModal();
}

// The decision's map (edge/judge/heatmap.py) over the crop, where the model input lies in it: an anomaly package's
// distances to the good parts, or a supervised head's score of each cell. A cell's colour grows with its value:
// transparent when far below the threshold, red from 100 % on.
function heatCaption(map) {
  if (!map) return "crop";
  return map.kind === "head"
    ? `crop · where the head sees a defect (each cell scored by the head; largest ${map.max} % of the threshold)`
    : `crop · anomaly map (unlike the good parts; largest cell ${map.max} % of the threshold)`;
}

function drawHeat(map) {
  const canvas = $("d-heat"), img = $("d-crop");
  canvas.hidden = !map;
  $("d-heat-caption").textContent = heatCaption(map);
  if (!map) return;
  const paint = () => {
    canvas.width = img.clientWidth; canvas.height = img.clientHeight;
    const ctx = canvas.getContext("2d");
    const [x0, y0, x1, y1] = map.region || [0, 0, 1, 1];
    const cw = (x1 - x0) * canvas.width / map.cols, ch = (y1 - y0) * canvas.height / map.rows;
    map.values.forEach((v, i) => {
      const a = Math.min(1, Math.max(0, (v - 50) / 50)) * 0.6;
      if (a <= 0) return;
      ctx.fillStyle = v >= 100 ? `rgba(220,30,30,${a})` : `rgba(240,200,40,${a})`;
      ctx.fillRect(x0 * canvas.width + (i % map.cols) * cw, y0 * canvas.height + Math.floor(i / map.cols) * ch, cw, ch);
    });
  };
  if (img.complete && img.clientWidth) paint(); else img.onload = paint;
}

function renderDecisions(list) {
  const key = list.map((d) => d.event_id + (d.answered || "")).join(",");
  if (key === lastDecisionsKey) return;
  lastDecisionsKey = key;
  $("decisions-empty").hidden = list.length > 0;
  const focused = document.activeElement && document.activeElement.closest && document.activeElement.closest("#decisions li");
  const focusedId = focused ? focused.getAttribute("data-event") : null; // keep the keyboard's place over a redraw
  $("decisions").replaceChildren(...list.map((d) => {
    const thumb = d.images
      ? el("img", { src: `/ui/decisions/${d.event_id}/thumb.jpg`, alt: "crop", width: 80, height: 80, loading: "lazy" })
      : el("div", { class: "nothumb" }, "no image");
    // issue 26: a decision is reached with Tab and opened with Enter or Space (keyboard-only feedback)
    return el("li", { class: d.is_defect ? "bad" : "ok", "data-event": d.event_id, "data-defect": String(d.is_defect), onclick: () => openDecision(d),
      tabIndex: 0, role: "button", onkeydown: (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); openDecision(d); } } },
      thumb,
      el("div", {},
        el("b", {}, d.label.toUpperCase()), " ",
        el("span", {}, `${num(d.score)} / ${num(d.threshold, 2)}`),
        el("br"),
        el("span", { class: "muted" }, when(d.decided_at) + (d.part_id ? ` · ${d.part_id}` : "")),
        d.answered ? el("span", { class: "tag" }, `→ ${d.answered}`) : ""));
  }));
  const again = focusedId && document.querySelector(`#decisions li[data-event="${focusedId}"]`);
  if (again) again.focus();
}

async function decisionsLoop() {
  try { renderDecisions(await getJSON("/ui/decisions?limit=24")); } catch (e) { /* next poll */ }
  setTimeout(decisionsLoop, 2000);
}

// ---------------------------------------------------------------- manual check
function showCheck(rec) {
  $("check-result").hidden = false;
  const v = $("check-verdict");
  if (rec.no_box) {  // the localiser found no box: nothing was classified, so there is nothing to answer
    $("check-result").setAttribute("data-check", "");
    v.textContent = "no box";
    v.className = "verdict";
    $("check-score").textContent = "–";
    $("check-threshold").textContent = "–";
    $("check-seen").removeAttribute("src");
    $("check-answers").replaceChildren(el("span", { class: "muted" }, rec.reason || "no box in the ROI"));
    return;
  }
  $("check-result").setAttribute("data-check", rec.check_id);
  v.textContent = rec.label.toUpperCase();
  v.className = "verdict " + (rec.is_defect ? "bad" : "ok");
  $("check-score").textContent = num(rec.score);
  $("check-threshold").textContent = num(rec.threshold, 2);
  $("check-seen").src = `/ui/checks/${rec.check_id}/seen.jpg`;
  answerButtons("check", rec, $("check-answers"));
}

async function checkFile(file) {
  if (!file) return;
  const fd = new FormData();
  fd.append("file", file, file.name || "image");
  try { showCheck(await act("/ui/check", fd, true)); } catch (e) { /* toast says why */ }
}

// ---------------------------------------------------------------- collection and the label queue
async function queueLoop() {
  try {
    const q = await getJSON("/ui/queue?limit=1");
    queueItem = q.items.length ? q.items[0] : null;
    $("queue").hidden = !queueItem;
    if (queueItem) {
      const src = `/ui/queue/${queueItem.name}.jpg`;
      if (!$("queue-img").src.endsWith(src)) $("queue-img").src = src;
    }
  } catch (e) { /* next poll */ }
  setTimeout(queueLoop, 3000);
}

async function labelQueued(key) {
  if (!queueItem) return;
  const label = key === "1" ? labels[0] : key === "2" ? labels[1] : "skip";
  const name = queueItem.name;
  queueItem = null;
  try {
    await act(`/ui/queue/${encodeURIComponent(name)}`, { label });
    toast(label === "skip" ? "Skipped" : `Labelled "${label}"`);
  } catch (e) { /* toast says why */ }
  const q = await getJSON("/ui/queue?limit=1");
  queueItem = q.items.length ? q.items[0] : null;
  $("queue").hidden = !queueItem;
  if (queueItem) $("queue-img").src = `/ui/queue/${queueItem.name}.jpg`;
}

// The checkbox sends on/off (and the interval); the interval field sends only the interval, so the two
// requests a click can trigger (the field's change on blur, the checkbox's change) never undo each other.
async function setCollection(withEnabled) {
  const every = parseInt($("collect-every").value, 10);
  if (!(every >= 1) && !withEnabled) return; // half-typed: wait for a number
  const body = every >= 1 ? { every } : {};
  if (withEnabled) body.enabled = $("collect-on").checked;
  try { await act("/ui/collection", body); } catch (e) { /* toast says why */ }
  summaryLoopOnce();
}

// ---------------------------------------------------------------- model: live vs candidate, shadow, disagreements
const METRIC_ROWS = [["model_id", "model"], ["kind", "kind"], ["source", "metrics from"], ["auc", "AUC"],
  ["recall", "recall"], ["specificity", "specificity"], ["macro_f1", "macro F1"], ["n", "images"], ["threshold", "threshold"]];
let lastDisKey = "";

function metricCell(m, key) {
  if (!m) return "–";
  if (key === "model_id") return m.model_id;
  if (key === "kind") return m.kind || "–"; // issue 29: anomaly (good parts only) or supervised head
  const v = key === "threshold" ? m.threshold : (m.metrics || {})[key];
  if (v === null || v === undefined) return "–";
  return typeof v === "number" && key !== "n" ? num(v, 3) : String(v);
}

function renderModel(d) {
  const cols = [d.live, d.candidate, d.previous];
  $("model-rows").replaceChildren(...METRIC_ROWS.map(([key, name]) =>
    el("tr", { "data-row": key }, el("td", {}, name), ...cols.map((m) => el("td", {}, metricCell(m, key))))));
  const sh = d.shadow || {};
  $("shadow-stats").textContent = d.candidate
    ? `Shadow: ${sh.judged} box(es) judged · agreement ${pct(sh.agreement_ratio)} · ${sh.disagreed} disagreement(s)` +
      ` (${sh.live_defect_candidate_ok} the candidate would pass, ${sh.live_ok_candidate_defect} it would reject)` +
      (sh.errors ? ` · ${sh.errors} error(s)` : "") + (sh.skipped ? ` · ${sh.skipped} skipped` : "")
    : "No candidate in shadow.";
  const r = d.retrain || {};
  const recipe = r.recipe ? ` (${r.recipe} recipe)` : "";
  $("retrain-state").textContent = r.state === "running" ? `Retrain${recipe} running: ${r.progress || ""}`
    : r.state === "done" ? `Last retrain${recipe}: done in ${num(r.seconds, 1)} s`
    : r.state === "failed" ? `Last retrain${recipe} failed: ${r.error}` : "";
  $("m-promote").disabled = !d.candidate;
  // issue 24: the review (edge/learn/poison.py): labels that disagree with live, the recent parts, and the warning
  const rv = d.review;
  const la = rv && rv.label_audit;
  $("review-warning").hidden = !(rv && rv.warning);
  $("review-warning").textContent = rv && rv.warning ? "Warning: " + rv.warning : "";
  $("label-audit").textContent = la ? `Labels: ${la.labels}, of which ${la.disagree_with_live} disagree with the live model's verdict` +
    (Object.keys(la.disagreeing_sources || {}).length ? " · most from " + Object.entries(la.disagreeing_sources).map(([k, v]) => `${k}: ${v}`).join(", ") : "") : "";
  promoteNeedsConfirm = !!(rv && rv.needs_confirmation);
  $("m-rollback").disabled = !d.previous;
  lastModelDoc = d; // issue 26: the confirmation dialog names the models from it
  $("m-retrain").disabled = r.state === "running";
  renderSuggestion(d.suggestion, r.state === "running");
  const list = d.disagreements || [];
  $("dis-count").textContent = list.length ? `(${list.length})` : "";
  $("dis-empty").hidden = list.length > 0;
  const key = list.map((x) => x.name).join(",");
  if (key === lastDisKey) return;
  lastDisKey = key;
  $("disagreements").replaceChildren(...list.map((x) => {
    const live = x.live || {}, cand = x.candidate || {};
    const names = x.labels || labels;
    const buttons = el("div", { class: "answers" }, ...names.map((lbl, i) =>
      el("button", { type: "button", class: i === 1 ? "bad small" : "ok small", "data-label": lbl,
        onclick: () => labelDisagreement(x.name, lbl) }, `it is ${lbl}`)),
      el("button", { type: "button", class: "small", "data-label": "skip", onclick: () => labelDisagreement(x.name, "skip") }, "skip"));
    return el("li", { class: "dis", "data-name": x.name },
      el("img", { src: `/ui/shadow/${encodeURIComponent(x.name)}.jpg`, alt: "crop", width: 80, height: 80, loading: "lazy" }),
      el("div", {},
        el("span", {}, `live: ${live.label} ${num(live.score)}`), el("br"),
        el("span", {}, `candidate: ${cand.label} ${num(cand.score)}`), el("br"),
        el("span", { class: "muted" }, when((x.decision || {}).decided_at))),
      buttons);
  }));
}

// issue 29: while an anomaly package is live, the label counts toward a supervised head; once every class has
// enough, the button trains one (POST /model/retrain {"recipe": "head"}) to run in shadow beside the live model.
function renderSuggestion(s, running) {
  $("head-suggestion").hidden = !s;
  $("head-suggestion-text").textContent = s ? s.text : "";
  $("m-switch-head").hidden = !(s && s.action === "switch_to_head");
  $("m-switch-head").disabled = running;
}

async function labelDisagreement(name, label) {
  try {
    await act(`/ui/shadow/${encodeURIComponent(name)}`, { label });
    toast(label === "skip" ? "Skipped" : `Labelled "${label}": stored in feedback/${label}/`);
  } catch (e) { /* toast says why */ }
  lastDisKey = "";
  modelLoopOnce();
}

async function modelLoopOnce() {
  try { renderModel(await getJSON("/ui/model?limit=12")); } catch (e) { /* next poll */ }
}

async function modelLoop() {
  await modelLoopOnce();
  setTimeout(modelLoop, document.hidden ? 10000 : 3000);
}

async function modelAction(path, body, done) {
  try { const d = await act(path, body); toast(done(d)); } catch (e) { /* toast says why */ }
  modelLoopOnce();
  summaryLoopOnce();
}

// ---------------------------------------------------------------- wiring
function wire() {
  $("token-button").addEventListener("click", () => showTokenForm($("token-form").hidden));
  $("token-form").addEventListener("submit", onTokenSubmit(() => { showTokenForm(false); refreshTokenState(); }));
  $("token-forget").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); refreshTokenState(); });

  $("check-file").addEventListener("change", (ev) => checkFile(ev.target.files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => { ev.preventDefault(); drop.classList.remove("over"); checkFile(ev.dataTransfer.files[0]); });
  $("check-current").addEventListener("click", async () => {
    try { showCheck(await act("/ui/check/current", {})); } catch (e) { /* toast says why */ }
  });
  $("reload").addEventListener("click", () => askConfirm(
    `Reload the model: ${liveModelId() || "no model"} (live now) is replaced by the package loaded again from the ` +
    "model path (or the one last promoted); its id shows after its self-test.", "", async () => {
    try {
      const r = await act("/reload", { confirm: liveModelId() });
      toast(r.ok ? `Model reloaded: ${r.model_id}` : `Reload refused: ${r.reason}`, !r.ok);
    } catch (e) { /* toast says why */ }
  }));
  $("trigger").addEventListener("click", async () => {
    try {
      const r = await act("/trigger", {});
      toast(`Part triggered${r.part_id ? ": " + r.part_id : ""}; the next frames decide it`);
    } catch (e) { /* toast says why */ }
  });
  $("m-retrain").addEventListener("click", () => modelAction("/model/retrain", {}, () => "Retrain started: the candidate runs in shadow when it is ready"));
  $("m-switch-head").addEventListener("click", () => modelAction("/model/retrain", { recipe: "head" },
    () => "Supervised head retrain started: it runs in shadow beside the live model when it is ready"));
  $("m-promote").addEventListener("click", () => {
    // issue 24: the review's warning shows in the dialog; issue 26: the dialog names both models, the request the live one
    const d = lastModelDoc || {}, live = liveModelId();
    askConfirm(`Promote ${(d.candidate || {}).model_id} to replace ${live}?`,
      promoteNeedsConfirm ? $("review-warning").textContent : "",
      () => modelAction("/model/promote", { confirm: live }, (r) => `Promoted: ${r.live.model_id} is live`));
  });
  $("m-rollback").addEventListener("click", () => {
    const d = lastModelDoc || {}, live = liveModelId();
    askConfirm(`Roll back from ${live} to ${(d.previous || {}).model_id}?`, "",
      () => modelAction("/model/rollback", { confirm: live }, (r) => `Rolled back: ${r.live.model_id} is live`));
  });
  $("confirm-no").addEventListener("click", () => $("confirm-change").close());
  $("confirm-yes").addEventListener("click", () => {
    const go = confirmAction;
    confirmAction = null;
    $("confirm-change").close();
    if (go) go();
  });
  $("m-load").addEventListener("click", () => {
    const path = $("m-candidate").value.trim();
    if (path) modelAction("/model/candidate", { path }, (d) => `${d.candidate.model_id} runs in shadow`);
  });
  $("collect-on").addEventListener("change", () => setCollection(true));
  $("collect-every").addEventListener("change", () => setCollection(false));
  $("q-1").addEventListener("click", () => labelQueued("1"));
  $("q-2").addEventListener("click", () => labelQueued("2"));
  $("q-0").addEventListener("click", () => labelQueued("0"));
  document.addEventListener("keydown", (ev) => {
    const t = ev.target;
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA") || $("detail").open) return;
    if (["0", "1", "2"].includes(ev.key) && queueItem) { ev.preventDefault(); labelQueued(ev.key); }
  });
}

wire();
summaryLoop();
decisionsLoop();
queueLoop();
liveLoop();
modelLoop();

// ---------------------------------------------------------------- issue 26: confirmations, shift and lot

function liveModelId() {
  return (lastModelDoc && lastModelDoc.live && lastModelDoc.live.model_id) || (summary && summary.model && summary.model.model_id) || null;
}

// A model change runs only after the dialog (naming both models) is confirmed; the request names the live model,
// and the daemon refuses it (409) if another one is live by then.
function askConfirm(text, warning, action) {
  $("confirm-text").textContent = text;
  $("confirm-warning").textContent = warning || "";
  $("confirm-warning").hidden = !warning;
  confirmAction = action;
  $("confirm-change").showModal();
  $("confirm-no").focus();
}

function periodText(p) {
  if (!p) return "–";
  return `${p.name}: ${p.boxes} box(es), ${p.ng} NG, yield ${p.n ? pct(p.yield) : "–"} (n = ${p.n})`;
}

function renderShiftLot(s) {
  const box = $("shift-lot");
  if (!box) return;
  box.hidden = !s.shift;
  $("c-shift").textContent = periodText(s.shift);
  $("c-lot").textContent = periodText(s.lot);
}
