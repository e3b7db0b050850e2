"""`dosetrack simulate` as a whole process against opentiva's in-process
compute of the same day (issue #16 item 4; figures in docs/benchmarks.md).

Run through scripts/simulate-vs-opentiva.sh, which makes the venv with
opentiva 1.1.2 from PyPI and builds the binary. Usage:

    python simulate_vs_opentiva.py DOSETRACK_BINARY WORK_DIR [REPEATS]

The day is the regimen of benches/engine.rs for a 70 kg adult on Domino,
24 h at 1-s steps (86,400 rows): a 20 mg IV bolus at 0; a pump at 20, 15,
10, 5 mg/h changing at 2, 6, 10 h, stopped at 14 h; IM 25 mg at 3 h, SC
20 mg at 7 h 13 min, intranasal 50 mg at 11 h, oral 50 mg at 15 h 30,
sublingual 25 mg at 19 h; a 1.04 mg/h patch from 12 h, worn 24 h.

opentiva models IV infusions only (no absorption, no patch). It is timed on
two days:

* "full": the regimen's 11 dosing rows, the extravascular doses and the
  patch entered as IV rows of the same amounts and times (opentiva's cost
  is per row per second, so its work is that of the regimen; its Cp is not
  the regimen's), against dosetrack on the real regimen (absorption
  included);
* "iv": the IV part only (the bolus and the four pump segments), where both
  compute the same thing: Cp is compared at several times.

Each side is timed REPEATS times; the median and the minimum are printed.
opentiva: `Pump(...)`, `add_infusion` per row, `run()` (infusion list,
Cp at every second, Ce at every second), in this process, after import.
dosetrack: `dosetrack simulate --events FILE --weight-kg 70 --model domino
--step 1s` from exec to exit, CSV written to a file.
"""

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import opentiva  # noqa: F401  (the installed package: its version is printed)
from opentiva.ketamine import Domino
from opentiva.pump import Pump

H = 3600
DAY = 24 * H
DAY0 = "2026-11-27T00:00:00Z"


def iso(s):
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"2026-11-27T{h:02d}:{m:02d}:{sec:02d}Z" if h < 24 else None


# (start s, mg/h) of the pump segments; stopped at 14 h.
PUMP = [(0, 20.0), (2 * H, 15.0), (6 * H, 10.0), (10 * H, 5.0)]
PUMP_END = 14 * H
BOLUS_IV = (0, 20.0)
EXTRAVASCULAR = [
    (3 * H, "im", 25.0),
    (7 * H + 13 * 60, "sc", 20.0),
    (11 * H, "intranasal", 50.0),
    (15 * H + 30 * 60, "oral", 50.0),
    (19 * H, "sublingual", 25.0),
]
PATCH = (12 * H, 1.04, 24.0)  # start s, mg/h, wear h


def events(full):
    """The day as a dosetrack events file (contract payloads)."""
    lines = [{"id": "b0", "time": iso(BOLUS_IV[0]), "route": "iv_bolus", "amount_mg": BOLUS_IV[1]}]
    for i, (t, rate) in enumerate(PUMP):
        kind = "infusion_started" if i == 0 else "infusion_rate_changed"
        lines.append({"device_id": "pump-1", "id": f"p{i}", "time": iso(t), "kind": kind,
                      "patient_id": "P-1", "rate_mg_per_h": rate})
    lines.append({"device_id": "pump-1", "id": "p-stop", "time": iso(PUMP_END),
                  "kind": "infusion_stopped"})
    if full:
        for i, (t, route, mg) in enumerate(EXTRAVASCULAR):
            lines.append({"id": f"d{i}", "time": iso(t), "route": route, "amount_mg": mg})
        t, rate, wear = PATCH
        lines.append({"id": "patch", "time": iso(t), "route": "transdermal",
                      "release_rate_mg_per_h": rate, "wear_h": wear})
    return "\n".join(json.dumps(x) for x in lines) + "\n"


def opentiva_rows(full):
    """(start s, mg/s, duration s) rows for opentiva's add_infusion."""
    rows = [(BOLUS_IV[0], BOLUS_IV[1], 1)]  # a bolus: its amount over 1 s
    ends = [t for t, _ in PUMP[1:]] + [PUMP_END]
    for (t, rate), end in zip(PUMP, ends):
        rows.append((t, rate / 3600.0, end - t))
    if full:
        for t, _route, mg in EXTRAVASCULAR:
            rows.append((t, mg, 1))
        t, rate, wear = PATCH
        rows.append((t, rate / 3600.0, int(wear * H)))
    return rows


def opentiva_model(micro=None):
    m = Domino(sex=0, age=40, weight=70, height=170)
    if micro:
        # dosetrack's drug file rounds opentiva's constants (0.438 for
        # 0.4381, ...): compare like with like.
        for k in ("k10", "k12", "k21", "k13", "k31"):
            setattr(m, k, micro[k])
    return m


def opentiva_day(rows, micro=None):
    pump = Pump(opentiva_model(micro), drug_concentration=10, end_time=DAY)
    for start, dose, duration in rows:
        pump.add_infusion(start, dose, duration)
    return pump.run()  # columns: time s, Cp mg/L (= µg/mL), Ce


def time_opentiva(rows, repeats, micro):
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = opentiva_day(rows, micro)
        runs.append(time.perf_counter() - t0)
    assert out.shape[0] == DAY, out.shape
    return runs, out


def time_dosetrack(binary, events_file, out_file, repeats):
    cmd = [binary, "simulate", "--events", str(events_file), "--weight-kg", "70",
           "--model", "domino", "--step", "1s"]
    runs = []
    for _ in range(repeats):
        with open(out_file, "wb") as out:
            t0 = time.perf_counter()
            subprocess.run(cmd, stdout=out, stderr=subprocess.DEVNULL, check=True)
            runs.append(time.perf_counter() - t0)
    rows = out_file.read_text().count("\n") - 1
    assert rows == DAY + 1, rows  # 00:00:00 to 24:00:00 inclusive
    return runs


def ms(xs):
    return f"median {statistics.median(xs) * 1e3:.1f} ms, min {min(xs) * 1e3:.1f} ms"


def main():
    binary, work = sys.argv[1], Path(sys.argv[2])
    repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    work.mkdir(parents=True, exist_ok=True)
    show = subprocess.run([binary, "model", "show", "--model", "domino", "--weight-kg", "70",
                           "--format", "json"], capture_output=True, check=True, text=True)
    report = json.loads(show.stdout)
    micro = {k: report["micro_constants_per_min"][k] for k in ("k10", "k12", "k21", "k13", "k31")}
    print(f"opentiva {getattr(opentiva, '__version__', '1.1.2')}, Python {sys.version.split()[0]}; "
          f"{repeats} runs each; dosetrack Domino micro constants {micro}")
    results = {}
    for name, full in (("full", True), ("iv", False)):
        ev = work / f"day-{name}.jsonl"
        ev.write_text(events(full))
        ot_runs, ot = time_opentiva(opentiva_rows(full), repeats, micro)
        dt_runs = time_dosetrack(binary, ev, work / f"day-{name}.csv", repeats)
        ratio = statistics.median(ot_runs) / statistics.median(dt_runs)
        results[name] = (ot_runs, dt_runs, ratio, ot)
        print(f"[{name}] opentiva in-process: {ms(ot_runs)}")
        print(f"[{name}] dosetrack simulate, whole process: {ms(dt_runs)}")
        print(f"[{name}] ratio (medians): {ratio:.1f}x")
    # Same thing? Cp of the IV day at chosen times, ng/mL.
    ot = results["iv"][3]
    csv = (work / "day-iv.csv").read_text().splitlines()[1:]
    worst = 0.0
    print("Cp check, IV day (opentiva with dosetrack's constants; bolus as 1 s there):")
    for t in (60, 600, 1800, H, 2 * H + 1, 5 * H, 10 * H, 14 * H, 18 * H, DAY - 1):
        d = float(csv[t].split(",")[2])
        o = ot[t, 1] * 1000.0
        rel = abs(d - o) / d
        worst = max(worst, rel) if t >= H else worst
        print(f"  t {t:>6} s  dosetrack {d:>10.4f}  opentiva {o:>10.4f}  rel diff {rel:.2e}")
    print(f"largest relative Cp difference from 1 h on: {worst:.2e} (the bolus is instantaneous "
          "in dosetrack, 1 s long in opentiva; the CSV has 4 decimals)")
    own = opentiva_day(opentiva_rows(False))
    print(f"(with opentiva's own constants, 0.4381 not 0.438 ...: Cp at 5 h "
          f"{own[5 * H, 1] * 1000.0:.4f} vs {float(csv[5 * H].split(',')[2]):.4f})")


if __name__ == "__main__":
    main()
