// What the operator page (app.js) and the history page (history.js) share; loaded before either.
"use strict";

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
