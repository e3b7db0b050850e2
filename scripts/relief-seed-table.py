#!/usr/bin/env python3
"""Regenerate the seed table of docs/relief.md: `dosetrack relief` for a
70 kg, 45-year-old adult on the built-in drug file, each regimen starting at
08:00 on day 0, for the acute-pain and the chronic-neuropathic indication.

Usage: scripts/relief-seed-table.py [path/to/dosetrack]  (default:
target/release/dosetrack). Prints a Markdown table."""
import json, subprocess, sys, tempfile, os

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/dosetrack"
W = 70.0
D0 = "2026-01-05"


def t(day, hhmm):
    return f"2026-01-{5 + day:02d}T{hhmm}:00Z"


def dose(i, day, hhmm, route, **kw):
    return dict(id=f"d{i}", time=t(day, hhmm), route=route, **kw)


def infusion(i, day, start, rate, minutes):
    return dose(i, day, start, "iv_infusion", rate_mg_per_h=rate, duration_min=minutes)


REGIMENS = [
    ("IV bolus 0.35 mg/kg (24.5 mg)", [dose(0, 0, "08:00", "iv_bolus", amount_mg=24.5)]),
    ("IV 0.15 mg/kg/h for 4 h", [infusion(0, 0, "08:00", 10.5, 240)]),
    ("IV 0.5 mg/kg/h for 4 h", [infusion(0, 0, "08:00", 35.0, 240)]),
    ("IV 0.35 mg/kg/h, 4 h a day for 5 days", [infusion(d, d, "08:00", 24.5, 240) for d in range(5)]),
    # A 100-h infusion is longer than a manual dose may run (48 h): a pump.
    ("IV 0.3 mg/kg/h for 100 h", [
        dict(device_id="pump-1", id="s", time=t(0, "08:00"), kind="infusion_started",
             patient_id="P", rate_mg_per_h=21.0),
        dict(device_id="pump-1", id="e", time=t(4, "12:00"), kind="infusion_stopped",
             patient_id="P"),
    ]),
    ("IM 0.5 mg/kg (35 mg)", [dose(0, 0, "08:00", "im", amount_mg=35.0)]),
    ("SC 0.2 mg/kg (14 mg)", [dose(0, 0, "08:00", "sc", amount_mg=14.0)]),
    ("intranasal 25 mg", [dose(0, 0, "08:00", "intranasal", amount_mg=25.0)]),
    ("intranasal 50 mg", [dose(0, 0, "08:00", "intranasal", amount_mg=50.0)]),
    ("oral 0.5 mg/kg (35 mg)", [dose(0, 0, "08:00", "oral", amount_mg=35.0)]),
    ("sublingual 25 mg", [dose(0, 0, "08:00", "sublingual", amount_mg=25.0)]),
    ("patch 1.04 mg/h for 72 h", [dict(id="p0", time=t(0, "08:00"), route="transdermal", release_rate_mg_per_h=1.04, wear_h=72)]),
]


def relief(events, *extra):
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for e in events:
            f.write(json.dumps(e) + "\n")
        path = f.name
    try:
        out = subprocess.run(
            [BIN, "relief", "--events", path, "--weight-kg", str(W), "--age-years", "45",
             "--format", "json", *extra],
            check=True, capture_output=True, text=True).stdout
    finally:
        os.unlink(path)
    return json.loads(out)


def window(a):
    if not a["relief_from"]:
        return "never"
    f, u = a["relief_from"], a["relief_until"]
    fd, ud = int(f[8:10]) - 5, int(u[8:10]) - 5
    span = f"{f[11:16]}–{u[11:16]} (day {fd})" if fd == ud else f"{f[11:16]} day {fd} – {u[11:16]} day {ud}"
    return f"{span}, {a['duration_min']:,.0f} min"


def main():
    print("| regimen | Ce peak (ng/mL) | acute pain: Ce ≥ 100 (relief at peak) | chronic neuropathic: Ce ≥ 21 (relief at peak) | relief over weeks: peak (day) | below half of its peak from day | norketamine peak (ng/mL) |")
    print("|---|---|---|---|---|---|---|")
    for name, events in REGIMENS:
        a = relief(events, "--indication", "acute_pain")
        c = relief(events, "--indication", "chronic_neuropathic")
        ch = a["chronic"]
        nk = a["norketamine"]["peak_ng_per_ml"]
        print(f"| {name} | {a['acute']['peak_ce_ng_per_ml']:.0f} | {window(a['acute'])} ({a['acute']['peak_relief_fraction']:.2f}) | "
              f"{window(c['acute'])} ({c['acute']['peak_relief_fraction']:.2f}) | {ch['peak_relief_fraction']:.2f} (day {ch['peak_day']:.1f}) | "
              f"{ch['below_half_of_peak_day']} | {nk:.0f} |")


if __name__ == "__main__":
    main()
