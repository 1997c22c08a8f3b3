// What the operator page (app.js), the history page (history.js) and the station view (station.js) share;
// loaded before each of them.
"use strict";

const TOKEN_KEY = "boxinspect-token"; // the API token for this browser session (sessionStorage), shared by the pages
const $ = (id) => document.getElementById(id);
function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }
function authHeaders() { return token() ? { "Authorization": "Bearer " + token() } : {}; }
function pct(x) { return x === null || x === undefined ? "–" : (100 * x).toFixed(1) + " %"; }
function num(x, d = 3) { return x === null || x === undefined ? "–" : Number(x).toFixed(d); }

// A short message at the bottom of the page (#toast), red when bad; gone after 6 s.
let toastTimer = null;
function toast(text, bad = false) {
  const t = document.getElementById("toast");
  t.textContent = text;
  t.className = bad ? "bad" : "good";
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, 6000);
}

// The token form (#token-form, #token-input): keep the token for this browser session, then ``after()`` (each page
// hides its form and refreshes what depends on the token).
function onTokenSubmit(after) {
  return (ev) => {
    ev.preventDefault();
    const v = $("token-input").value.trim();
    if (v) sessionStorage.setItem(TOKEN_KEY, v);
    $("token-input").value = "";
    after();
    toast("Token kept for this session");
  };
}

// An element: ``class``, ``on<event>`` listeners, ``data-*`` attributes, other keys as properties; children as nodes
// or text.
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

// A read of the daemon's JSON with the session's token (api.viewing: token); a refusal (401, 403) opens the page's
// token form, and any non-2xx throws with the path and status.
async function getJSON(path) {
  const r = await fetch(path, { cache: "no-store", headers: authHeaders() });
  if (r.status === 401 || r.status === 403) $("token-form").hidden = false;
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}
