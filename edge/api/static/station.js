// The station view: plain JS, no build step, talks only to the daemon that served it.
// Every tile shows the age of its data; past station.stale_after_s it is greyed out: "no data since HH:MM:SS".
"use strict";

const SOUND_KEY = "boxinspect-station-sound";
const cfg = { staleAfter: 3, stream: true };
const seen = { live: null, result: null, counters: null, alarm: null }; // ms of the newest data of each tile
let station = null;
let summary = null;
let soundOn = false;
let lastAlarmKey = "";
let lastBeep = 0;

function hms(ms) { return new Date(ms).toLocaleTimeString([], { hour12: false }); }

// ---------------------------------------------------------------- staleness: every tile, every 250 ms
function tick() {
  const now = Date.now();
  $("clock").textContent = hms(now);
  for (const [name, at] of Object.entries(seen)) {
    const tile = $("tile-" + name), age = $("age-" + name);
    const stale = at === null || (now - at) / 1000 > cfg.staleAfter;
    tile.classList.toggle("stale", stale);
    tile.setAttribute("data-stale", String(stale));
    age.textContent = at === null ? "no data yet" : stale ? "no data since " + hms(at) : `age ${((now - at) / 1000).toFixed(1)} s`;
  }
}

// ---------------------------------------------------------------- live image: MJPEG stream, else polling
let polling = false;
function startLive() {
  const img = $("st-live");
  if (!cfg.stream) { pollLive(); return; }
  img.onerror = () => { img.onerror = null; pollLive(); }; // streams full (503) or off: poll instead
  img.onload = () => { $("st-live-mode").textContent = "live stream"; };
  img.src = "/ui/stream.mjpg?t=" + Date.now();
  $("st-live-mode").textContent = "live stream";
}

function pollLive() {
  if (polling) return;
  polling = true;
  $("st-live-mode").textContent = "polling";
  const img = $("st-live");
  const next = () => setTimeout(loop, document.hidden ? 2000 : 250);
  function loop() {
    const probe = new Image();
    probe.onload = () => { img.src = probe.src; next(); };
    probe.onerror = () => next();
    probe.src = "/ui/frame.jpg?t=" + Date.now();
  }
  loop();
}

// ---------------------------------------------------------------- the station document: tile, alarms
function renderStation(s, at) {
  station = s;
  cfg.staleAfter = s.stale_after_s;
  seen.result = seen.alarm = at;
  if (s.frame_age_s !== null && s.frame_age_s !== undefined) seen.live = at - 1000 * s.frame_age_s;
  const st = $("st-live-state");
  st.textContent = s.inspecting ? "inspecting…" : "waiting for a box";
  st.className = s.inspecting ? "inspecting" : "";

  const t = s.tile;
  const v = $("st-verdict");
  const tile = $("tile-result");
  if (t) {
    v.textContent = t.is_defect ? "NG" : "OK";
    v.className = "verdict " + (t.is_defect ? "bad" : "ok");
    v.setAttribute("data-event", t.event_id);
    $("st-score").textContent = `${t.label} · score ${num(t.score)} / ${num(t.threshold, 2)}`;
    $("st-part").textContent = "part " + (t.part_id || "–");
    const crop = $("st-crop");
    if (crop.getAttribute("src") !== t.crop) { crop.hidden = false; crop.src = t.crop; }
    crop.onerror = () => { crop.hidden = true; };
  }
  const ng = s.alarms.ng;
  tile.classList.toggle("alarm", !!(t && t.frozen));
  tile.setAttribute("data-frozen", String(!!(t && t.frozen)));
  const latest = s.latest;
  $("st-frozen-note").textContent = t && t.frozen
    ? `held until acknowledged · ${ng.waiting} NG waiting` + (latest && latest.event_id !== t.event_id
      ? ` · newest: ${latest.is_defect ? "NG" : "OK"} ${latest.part_id || ""}` : "")
    : t ? "last part" : "no part decided yet";
  $("ack-ng").disabled = !(t && t.frozen);
  const lastNg = (s.acks || []).find((a) => a.alarm === "ng");
  $("st-last-ack").textContent = lastNg ? `NG acknowledged by ${lastNg.who} at ${hms(Date.parse(lastNg.at))}` : "";

  const spc = s.alarms.spc;
  $("st-spc").textContent = spc.raised ? (spc.active ? "SPC ALARM" : "SPC alarm (acknowledged)") : "SPC ok";
  $("st-spc-reason").textContent = spc.raised ? (spc.reason || "") : "";
  $("tile-alarm").classList.toggle("alarm", spc.active);
  $("ack-spc").disabled = !spc.active;
  alarmSound(ng, spc);
}

async function stationLoop() {
  try { renderStation(await getJSON("/ui/station"), Date.now()); } catch (e) { /* stale tiles say so */ }
  setTimeout(stationLoop, 500);
}

// ---------------------------------------------------------------- counters (shift if the daemon has them)
function renderSummary(s, at) {
  summary = s;
  seen.counters = at;
  $("where").textContent = `${s.line} / ${s.camera_id}`;
  const ready = $("ready");
  ready.textContent = s.ready ? "READY" : "NOT READY";
  ready.className = "pill " + (s.ready ? "ok" : "bad");
  $("st-reasons").replaceChildren(...(s.reasons || []).map((r) => { const li = document.createElement("li"); li.textContent = r; return li; }));
  const shift = s.shift && typeof s.shift === "object" ? s.shift : null; // persistent shift counters, when served
  const c = shift || s.counters;
  const boxes = c.boxes, ng = c.defects !== undefined ? c.defects : c.ng;
  $("st-ng").textContent = `NG ${ng} / ${boxes} boxes`;
  $("st-yield").textContent = boxes ? `yield ${(100 * (boxes - ng) / boxes).toFixed(1)} % of ${boxes}` : "yield – (no box yet)";
  $("st-counter-scope").textContent = shift ? `shift ${shift.name || shift.id || ""}`.trim() : "since start";
  const h = (s.counters || {}).last_hour;
  $("st-rate-h").textContent = h ? `last hour: NG ${h.defects} / ${h.boxes}` : "";
}

async function summaryLoop() {
  try { renderSummary(await getJSON("/ui/summary"), Date.now()); } catch (e) {
    $("ready").textContent = "NO CONNECTION"; $("ready").className = "pill bad";
  }
  setTimeout(summaryLoop, 1000);
}

// ---------------------------------------------------------------- alarm sound: a beep made here, no file
let audio = null;
function beep() {
  try {
    audio = audio || new (window.AudioContext || window.webkitAudioContext)();
    const osc = audio.createOscillator(), gain = audio.createGain();
    osc.type = "square";
    osc.frequency.value = 880;
    gain.gain.setValueAtTime(0.15, audio.currentTime);
    gain.gain.setValueAtTime(0, audio.currentTime + 0.25);
    osc.connect(gain).connect(audio.destination);
    osc.start();
    osc.stop(audio.currentTime + 0.3);
    document.body.setAttribute("data-beeps", String(1 + Number(document.body.getAttribute("data-beeps") || 0)));
  } catch (e) { /* no audio device: the flashing tile still shows the alarm */ }
}

function alarmSound(ng, spc) {
  const key = (ng.active ? ng.event_id : "") + "|" + (spc.active ? spc.since : "");
  const active = ng.active || spc.active;
  const now = Date.now();
  if (soundOn && active && (key !== lastAlarmKey || now - lastBeep > 5000)) { beep(); lastBeep = now; }
  lastAlarmKey = key;
}

function setSound(on) {
  soundOn = on;
  localStorage.setItem(SOUND_KEY, on ? "on" : "off");
  const b = $("sound");
  b.setAttribute("aria-pressed", String(on));
  b.lastChild.textContent = on ? " sound on" : " sound off";
  if (on) beep(); // also unlocks audio: browsers start it only from a user's action
}

// ---------------------------------------------------------------- actions
async function acknowledge(alarm) {
  if (!station) return;
  const body = alarm === "ng" ? { alarm, event_id: station.tile && station.tile.event_id } : { alarm };
  const r = await fetch("/ui/station/ack", { method: "POST", headers: { ...authHeaders(), "Content-Type": "application/json" }, body: JSON.stringify(body) });
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  if (r.status === 401 || r.status === 403) {
    toast("Refused: " + ((data && data.detail) || "acknowledging needs the operate role"), true);
    if (r.status === 401) showTokenForm(true);
    return;
  }
  if (!r.ok) { toast("Not done: " + ((data && data.detail) || `HTTP ${r.status}`), true); return; }
  toast(`${alarm === "ng" ? "NG" : "SPC alarm"} acknowledged by ${data.who} at ${hms(Date.parse(data.at))}`);
  try { renderStation(await getJSON("/ui/station"), Date.now()); } catch (e) { /* next poll */ }
}

function showTokenForm(show) {
  $("token-form").hidden = !show;
  if (show) $("token-input").focus();
}

function refreshCookie() {
  // api.viewing: token: the images carry the token in the view cookie (grants viewing only)
  document.cookie = "boxinspect_view=" + encodeURIComponent(token()) + "; path=/; SameSite=Strict" + (token() ? "" : "; max-age=0");
}

function kiosk() {
  if (document.fullscreenElement) document.exitFullscreen();
  else document.documentElement.requestFullscreen().catch(() => toast("Full screen refused by the browser", true));
}

function wire() {
  $("ack-ng").addEventListener("click", () => acknowledge("ng"));
  $("ack-spc").addEventListener("click", () => acknowledge("spc"));
  $("sound").addEventListener("click", () => setSound(!soundOn));
  $("kiosk").addEventListener("click", kiosk);
  $("token-button").addEventListener("click", () => showTokenForm($("token-form").hidden));
  $("token-form").addEventListener("submit", onTokenSubmit(() => {
    showTokenForm(false);
    $("token-input").blur(); // the keys go to the station again (A acknowledges)
    if (!$("ack-ng").disabled) $("ack-ng").focus();
    refreshCookie();
  }));
  document.addEventListener("keydown", (ev) => {
    const t = ev.target;
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA") || ev.ctrlKey || ev.altKey || ev.metaKey) return;
    const key = ev.key.toLowerCase();
    const actions = { a: () => !$("ack-ng").disabled && acknowledge("ng"), q: () => !$("ack-spc").disabled && acknowledge("spc"),
      s: () => setSound(!soundOn), f: kiosk, t: () => showTokenForm($("token-form").hidden) };
    if (actions[key]) { ev.preventDefault(); actions[key](); }
  });
}

getJSON("/ui/station").then((s) => {
  cfg.stream = s.stream;
  soundOn = s.sound;
  const stored = localStorage.getItem(SOUND_KEY);
  if (stored) soundOn = stored === "on";
  $("sound").setAttribute("aria-pressed", String(soundOn));
  $("sound").lastChild.textContent = soundOn ? " sound on" : " sound off";
}).catch(() => { /* defaults */ }).finally(startLive);
refreshCookie();
wire();
tick();
setInterval(tick, 250);
stationLoop();
summaryLoop();
