// dosetrack ward page: every patient in care, most urgent first, live.
"use strict";
(() => {
  const { el, time, age, num, getJson, live, debounce, showError, ackMode, acknowledge, serverNow } = DT;
  let soundOn = false, audio = null, known = new Set();
  const soundBtn = document.getElementById("sound");
  soundBtn.addEventListener("click", () => {
    soundOn = !soundOn;
    if (soundOn && !audio) audio = new AudioContext();
    soundBtn.textContent = "Sound: " + (soundOn ? "on" : "off");
    soundBtn.setAttribute("aria-pressed", String(soundOn));
  });
  function beep() {
    if (!soundOn || !audio) return;
    const o = audio.createOscillator(), g = audio.createGain();
    o.frequency.value = 880; g.gain.value = 0.1; o.connect(g); g.connect(audio.destination);
    o.start(); o.stop(audio.currentTime + 0.3);
  }
  function running(list) {
    if (!list.length) return "—";
    return el("div", {}, ...list.map((a) => el("div", {}, (a.route || "").replace(/_/g, " ") +
      (a.rate_mg_per_h !== undefined ? " " + num(a.rate_mg_per_h) + " mg/h" : "") +
      (a.release_rate_mg_per_h !== undefined ? " " + num(a.release_rate_mg_per_h) + " mg/h" : "") +
      (a.source ? " (" + a.source.replace(/^devices\//, "") + ")" : ""))));
  }
  function alerts(list) {
    if (!list.length) return el("span", { class: "ok" }, "none");
    return el("div", {}, ...list.map((a) => el("div", { "data-alert": a.alert_id },
      el("span", { class: "prio " + a.priority }, a.priority), " ", a.message, " ",
      a.acknowledged ? el("span", { class: "acked" }, "✓ acknowledged by " + a.acknowledged.by + " at " + time(a.acknowledged.at))
        : ackMode !== "off" ? el("button", { type: "button", class: "ack", "data-ack": a.alert_id }, "Acknowledge") : null)));
  }
  // Relief now (graded for the patient's indication) and until when, or
  // from when the doses given reach the floor; relief over weeks if any.
  function relief(st) {
    const r = st && st.relief;
    if (!r) return "—";
    const pct = Math.round(r.relief_fraction * 100) + " %";
    const when = r.relief_until ? "until " + time(r.relief_until)
      : r.relief_from ? "from " + time(r.relief_from)
      : r.relief_fraction >= r.target_relief_fraction ? "" : "below target";
    const weeks = r.over_weeks ? el("div", { class: "muted" }, el("small", {},
      "weeks: " + Math.round(r.over_weeks.relief_fraction * 100) + " %" +
      (r.over_weeks.below_half_of_peak_on ? ", next series " + r.over_weeks.below_half_of_peak_on : ""))) : null;
    return el("div", { title: r.indication.replace(/_/g, " ") + ": relief as a share of the maximal relief; wanted " + Math.round(r.target_relief_fraction * 100) + " %" },
      el("b", {}, pct), when ? " " + when : "", weeks);
  }
  function row(p) {
    const trend = { rising: "↑ rising", falling: "↓ falling", steady: "→ steady" }[p.trend] || "—";
    return el("tr", { class: "u" + p.urgency, "data-patient": p.patient_id, "data-last-input": p.last_input_at || "" },
      el("td", {}, el("a", { href: "/patients/" + encodeURIComponent(p.patient_id) }, p.patient_id)),
      el("td", { class: "num", "data-ce": p.ce_ng_per_ml === null ? "" : String(p.ce_ng_per_ml) }, num(p.ce_ng_per_ml)),
      el("td", {}, trend),
      el("td", { "data-below-floor": (p.state && p.state.forecast && p.state.forecast.below_floor_at) || "",
        "data-relief": (p.state && p.state.relief) ? String(p.state.relief.relief_fraction) : "" }, relief(p.state)),
      el("td", {}, running(p.running)),
      el("td", {}, alerts(p.alerts)),
      el("td", {}, age(p.last_input_age_s), el("br"), el("small", { class: "muted" }, time(p.last_input_at))),
      el("td", {}, p.stale ? el("span", { class: "staleflag", title: p.stale_reasons.join("; ") }, "STALE") : el("span", { class: "ok" }, "current"),
        p.stale ? el("div", { class: "muted" }, el("small", {}, p.stale_reasons.join("; "))) : null));
  }
  async function refresh() {
    try {
      const w = await getJson("/api/v1/patients");
      const rows = document.getElementById("rows");
      rows.replaceChildren(...(w.patients.length ? w.patients.map(row) : [el("tr", {}, el("td", { colspan: "8", class: "muted" }, "No patient in care."))]));
      let fresh = false;
      for (const p of w.patients) for (const a of p.alerts) { if (!known.has(a.alert_id) && !a.acknowledged && a.priority !== "low") fresh = true; known.add(a.alert_id); }
      if (fresh) beep();
      document.body.dataset.updated = w.time;
      serverNow(w.time);
      showError(null);
    } catch (e) { showError("Cannot read the ward: " + e.message); }
  }
  document.getElementById("rows").addEventListener("click", async (ev) => {
    const b = ev.target.closest("button[data-ack]");
    if (!b) return;
    b.disabled = true; b.textContent = "Acknowledging…";
    try { await acknowledge(b.dataset.ack); showError(null); refresh(); }
    catch (e) { showError("Not acknowledged: " + e.message); b.disabled = false; b.textContent = "Acknowledge"; }
  });
  const soon = debounce(refresh, 150);
  refresh();
  live(() => soon());
  setInterval(refresh, 30000);
})();
