// dosetrack pages: shared helpers (time zone formatting, fetch, live stream).
"use strict";
const DT = (() => {
  const meta = document.querySelector('meta[name="dosetrack-time-zone"]');
  let tz = meta ? meta.content : "UTC";
  let fmt, fmtDay;
  try {
    fmt = new Intl.DateTimeFormat("en-GB", { timeZone: tz, hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
    fmtDay = new Intl.DateTimeFormat("en-GB", { timeZone: tz, day: "2-digit", month: "short", hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
  } catch (e) {
    tz = "UTC (the configured time zone is unknown to this browser)";
    fmt = new Intl.DateTimeFormat("en-GB", { timeZone: "UTC", hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
    fmtDay = new Intl.DateTimeFormat("en-GB", { timeZone: "UTC", day: "2-digit", month: "short", hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
  }
  const el = (tag, attrs, ...children) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
    return e;
  };
  const time = (iso) => iso ? fmt.format(new Date(iso)) : "—";
  const dayTime = (iso) => iso ? fmtDay.format(new Date(iso)) : "—";
  const age = (s) => s === null || s === undefined ? "—" : s < 60 ? "<1 min ago" : s < 3600 ? Math.floor(s / 60) + " min ago" : Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min ago";
  const num = (x) => x === null || x === undefined ? "—" : (Math.round(x * 10) / 10).toFixed(x < 10 ? 1 : 0);
  const showError = (msg) => { const e = document.getElementById("error"); if (!e) return; e.hidden = !msg; e.textContent = msg || ""; };
  async function getJson(url) {
    const r = await fetch(url, { cache: "no-store" });
    const body = await r.json();
    if (!r.ok) throw new Error((body.error && body.error.message) || r.statusText);
    return body;
  }
  // The live stream: onChange(kind, data) for each event; EventSource
  // reconnects by itself with Last-Event-ID; "resync" means re-read all.
  function live(onChange) {
    const badge = document.getElementById("live");
    const es = new EventSource("/api/v1/stream");
    const set = (ok, text) => { badge.className = "badge " + (ok ? "live" : "stale"); badge.textContent = text; };
    es.onopen = () => set(true, "live");
    es.onerror = () => set(false, "reconnecting…");
    for (const kind of ["state", "alert"]) {
      es.addEventListener(kind, (ev) => { let d = null; try { d = JSON.parse(ev.data); } catch (e) { /* keep null */ } onChange(kind, d); });
    }
    es.addEventListener("resync", () => onChange("resync", null));
    return es;
  }
  // Acknowledging from the page: "off", "proxy_header" (the proxy names the
  // operator) or "token" (the operator's token, asked once per tab).
  const ackMeta = document.querySelector('meta[name="dosetrack-acknowledge"]');
  const ackMode = ackMeta ? ackMeta.content : "off";
  const TOKEN_KEY = "dosetrack-operator-token";
  async function acknowledge(alertId) {
    const headers = { "Content-Type": "application/json" };
    if (ackMode === "token") {
      let token = sessionStorage.getItem(TOKEN_KEY);
      if (!token) {
        token = window.prompt("Your operator token (kept for this tab only):");
        if (!token) return null;
        sessionStorage.setItem(TOKEN_KEY, token.trim());
      }
      headers["Authorization"] = "Bearer " + sessionStorage.getItem(TOKEN_KEY);
    }
    const r = await fetch("/api/v1/alerts/" + encodeURIComponent(alertId) + "/acknowledge",
      { method: "POST", headers, body: "{}", cache: "no-store" });
    let body = {};
    try { body = await r.json(); } catch (e) { /* keep {} */ }
    if (r.status === 401 && ackMode === "token") sessionStorage.removeItem(TOKEN_KEY);
    if (!r.ok) throw new Error((body.error && body.error.message) || r.statusText);
    return body;
  }
  function debounce(f, ms) { let t = null; return () => { clearTimeout(t); t = setTimeout(f, ms); }; }
  // "Now" is the daemon's clock (sped up in the demo), learned from each
  // answer's `time`; the browser's clock only moves it between answers.
  let offsetMs = 0;
  const serverNow = (iso) => { const t = Date.parse(iso || ""); if (!Number.isNaN(t)) { offsetMs = t - Date.now(); tick(); } };
  const nowMs = () => Date.now() + offsetMs;
  const tick = () => { const c = document.getElementById("clock"); if (c) c.textContent = dayTime(new Date(nowMs()).toISOString()); };
  document.addEventListener("DOMContentLoaded", () => { const t = document.getElementById("tz"); if (t) t.textContent = tz; tick(); setInterval(tick, 10000); });
  return { el, time, dayTime, age, num, getJson, live, debounce, showError, tz, ackMode, acknowledge, serverNow, nowMs };
})();
