// dosetrack patient page: Cp and Ce over the stay, alerts, model; live.
"use strict";
(() => {
  const { el, time, dayTime, age, num, getJson, live, debounce, showError, serverNow, nowMs } = DT;
  const id = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");
  document.getElementById("pid").textContent = id;
  document.title = "dosetrack — " + id;
  const base = "/api/v1/patients/" + encodeURIComponent(id);
  const SVG = "http://www.w3.org/2000/svg";
  const s = (tag, attrs) => { const e = document.createElementNS(SVG, tag); for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v); return e; };

  // points: the stored history; ahead: the forecast from now (drawn faded);
  // nowMs: the daemon's "now" (its clock, which the demo speeds up).
  function chart(points, targets, events, ahead, nowMs) {
    const W = 900, H = 320, L = 48, R = 12, T = 12, B = 28;
    const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "Cp and Ce over the stay" });
    if (!points.length) { const t = s("text", { x: L, y: H / 2 }); t.textContent = "No history yet."; svg.append(t); return svg; }
    const t0 = points[0].t_ms, t1 = Math.max(points[points.length - 1].t_ms, nowMs, ...ahead.map((p) => p.t_ms));
    const tg = targets || {};
    // The y axis: round ticks (1, 2 or 5 × 10^k ng/mL apart), its top the
    // first tick at or above the highest value.
    const high = Math.max(1, ...points.concat(ahead).map((p) => Math.max(p.cp_ng_per_ml, p.ce_ng_per_ml)), (tg.ceiling_ng_per_ml || 0) * 1.05);
    const raw = high / 4, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * mag).find((v) => v >= raw);
    const ymax = Math.ceil(high / step) * step;
    const x = (t) => L + (W - L - R) * (t - t0) / Math.max(1, t1 - t0);
    const y = (c) => T + (H - T - B) * (1 - c / ymax);
    if (tg.analgesic_floor_ng_per_ml !== undefined) {
      const top = tg.psychotomimetic_caution_ng_per_ml || tg.ceiling_ng_per_ml || ymax;
      svg.append(s("rect", { x: L, y: y(top), width: W - L - R, height: y(tg.analgesic_floor_ng_per_ml) - y(top), fill: "#c8e6c9", opacity: 0.6 }));
    }
    if (tg.ceiling_ng_per_ml) svg.append(s("line", { x1: L, x2: W - R, y1: y(tg.ceiling_ng_per_ml), y2: y(tg.ceiling_ng_per_ml), stroke: "#c62828", "stroke-dasharray": "6 4" }));
    for (let c = 0; c <= ymax + step / 2; c += step) {
      const l = s("text", { x: L - 6, y: y(c) + 4, "text-anchor": "end", "font-size": 11, fill: "#556", class: "y-tick" });
      l.textContent = String(Math.round(c)); svg.append(l, s("line", { x1: L, x2: W - R, y1: y(c), y2: y(c), stroke: "#eee" }));
    }
    for (let i = 0; i <= 5; i++) {
      const t = t0 + (t1 - t0) * i / 5, l = s("text", { x: x(t), y: H - 8, "text-anchor": "middle", "font-size": 11, fill: "#556" });
      l.textContent = time(new Date(t).toISOString()); svg.append(l);
    }
    for (const ev of events) {
      if (["admit", "heartbeat", "discharge"].includes(ev.kind)) continue;
      const t = Date.parse(ev.occurred_at); if (t < t0 || t > t1) continue;
      const m = s("line", { x1: x(t), x2: x(t), y1: T, y2: H - B, stroke: "#6a1b9a", "stroke-width": 2, opacity: 0.7, class: "dose-marker" });
      const tip = s("title", {}); tip.textContent = ev.kind + " " + time(ev.occurred_at) + " " + JSON.stringify(ev.payload); m.append(tip); svg.append(m);
    }
    const path = (pts, key, attrs) => s("path", Object.assign({ d: pts.map((p, i) => (i ? "L" : "M") + x(p.t_ms).toFixed(1) + " " + y(p[key]).toFixed(1)).join(" "), fill: "none" }, attrs));
    svg.append(path(points, "cp_ng_per_ml", { stroke: "#90a4ae", "stroke-width": 1.5, class: "cp" }), path(points, "ce_ng_per_ml", { stroke: "#1565c0", "stroke-width": 2.5, class: "ce" }));
    if (ahead.length) {
      svg.append(path(ahead, "cp_ng_per_ml", { stroke: "#90a4ae", "stroke-width": 1.5, opacity: 0.45, "stroke-dasharray": "5 4", class: "cp-forecast" }),
        path(ahead, "ce_ng_per_ml", { stroke: "#1565c0", "stroke-width": 2.5, opacity: 0.4, "stroke-dasharray": "5 4", class: "ce-forecast" }));
    }
    const now = x(nowMs);
    svg.append(s("line", { x1: now, x2: now, y1: T, y2: H - B, stroke: "#333", "stroke-dasharray": "2 3" }));
    return svg;
  }
  const card = (label, value) => el("div", { class: "card" }, el("small", {}, label), el("b", {}, value));
  async function refresh() {
    try {
      const [p, series, events, alerts, ahead] = await Promise.all([
        getJson(base), getJson(base + "/series?step=1m&from=" + Math.round(nowMs() - 6 * 86400000)),
        getJson(base + "/events"), getJson(base + "/alerts"), getJson(base + "/forecast?horizon=2h&step=2m")]);
      const fc = p.forecast || {};
      document.getElementById("now").replaceChildren(
        card("Ce now (ng/mL)", num(p.ce_ng_per_ml)), card("Cp now (ng/mL)", num(p.cp_ng_per_ml)),
        card("Trend", p.trend || "—"), card("Below floor at", fc.below_floor_at ? time(fc.below_floor_at) : "—"),
        card("Relief now", p.state && p.state.relief ? Math.round(p.state.relief.relief_fraction * 100) + " % (" + p.state.relief.indication.replace(/_/g, " ") + ")" : "—"),
        card("Last input", age(p.last_input_age_s)), card("Data", p.stale ? "STALE: " + p.stale_reasons.join("; ") : "current"),
        card("Status", p.in_care ? "in care since " + dayTime(p.admitted_at) : "discharged " + dayTime(p.discharged_at)));
      serverNow(ahead.time);
      document.getElementById("chart").replaceChildren(chart(series.points, p.targets, events.events, ahead.points, Date.parse(ahead.time)));
      document.getElementById("timeline").replaceChildren(...alerts.messages.slice().reverse().map((m) => el("tr", {},
        el("td", {}, dayTime(m.time)), el("td", {}, el("span", { class: "prio " + m.priority }, m.priority)), el("td", {}, m.rule),
        el("td", {}, m.phase), el("td", {}, m.phase === "paused" && m.paused ? m.paused.by : m.acknowledged ? m.acknowledged.by : ""), el("td", {}, m.message))));
      const st = p.state || {};
      document.getElementById("model").replaceChildren(
        el("p", {}, "Model: ", el("b", {}, p.model || "—"), ". ", st.assumes ? "The forecast assumes: " + st.assumes + "." : ""),
        el("p", {}, "Assumed drug-file values this state rests on:"),
        el("ul", {}, ...(p.assumptions || []).map((a) => el("li", {}, a))),
        ...(st.warnings || []).map((w) => el("p", { class: "muted" }, "Warning: " + (w.message || JSON.stringify(w)))));
      document.body.dataset.updated = p.state_time || "";
      showError(null);
    } catch (e) { showError("Cannot read patient " + id + ": " + e.message); }
  }
  const soon = debounce(refresh, 200);
  refresh();
  live((kind, d) => { if (kind === "resync" || !d || d.patient_id === id) soon(); });
  setInterval(refresh, 60000);
})();
