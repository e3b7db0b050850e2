//! The offline commands: `simulate`, `forecast`, `model show`, `model
//! list` and `demo --offline`. They read an events file (or the built-in
//! ward day) and the drug file, compute with the core's offline
//! computations (`dosetrack::simulate`), and print tables, reports and
//! charts; no broker, no database, no clock.

use super::args::{
    DemoArgs, ForecastArgs, ModelShowArgs, ReliefArgs, ReportFormat, SimulateArgs, TableFormat,
    Which,
};
use super::{check_plot_path, input_error, time_arg};
use anyhow::Context as _;
use dosetrack::patient::{Formulary, PatientSpec};
use dosetrack::pk::Output;
use dosetrack::simulate::{self, SimulateError};
use dosetrack::vocab::{format_rfc3339, Sex};
use std::io::Write;
use std::path::{Path, PathBuf};

fn read_events(path: &Path) -> anyhow::Result<Vec<dosetrack::ledger::LedgerInput>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| input_error(format!("cannot read events file {}: {e}", path.display())))?;
    simulate::parse_events(&text).map_err(|e| input_error(format!("{}: {e}", path.display())))
}

fn sim_err(e: SimulateError) -> anyhow::Error {
    input_error(e)
}

/// `dosetrack simulate`: concentrations over time, CSV or JSON, and a chart.
pub(crate) fn simulate(
    f: &Formulary,
    a: &SimulateArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    if let Some(path) = &a.plot {
        check_plot_path(path)?;
    }
    let inputs = read_events(&a.events)?;
    let step =
        simulate::parse_duration_ms(&a.step).map_err(|m| input_error(format!("--step: {m}")))?;
    let from = a
        .from
        .as_deref()
        .map(|t| time_arg("--from", t))
        .transpose()?;
    let solved = simulate::solve(f, &a.patient.spec(), &inputs, None).map_err(sim_err)?;
    // A CSV table alone is written as its samples are computed (a day at
    // 1-s steps is 86,400 of them); JSON and charts need them all.
    let streamed = matches!(a.format, TableFormat::Csv) && a.plot.is_none();
    let report = if streamed {
        simulate::simulate_table(&solved, from, a.to.as_deref(), step)
    } else {
        simulate::simulate(&solved, from, a.to.as_deref(), step)
    }
    .map_err(sim_err)?;
    for w in &report.warnings {
        eprintln!("warning [{}]: {}", w.code, w.message);
    }
    for n in &report.ledger_notes {
        eprintln!(
            "note: {} {} ({}): {}",
            format_rfc3339(n.time_ms),
            n.source,
            n.input_id,
            n.message
        );
    }
    match a.format {
        TableFormat::Csv if streamed => simulate::write_csv_streamed(&solved, &report, out)?,
        TableFormat::Csv => simulate::write_csv(&report, out)?,
        TableFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, &report)?;
            writeln!(out)?;
        }
    }
    if let Some(path) = &a.plot {
        let title = format!(
            "Ketamine — {} kg patient, {}",
            a.patient.weight_kg,
            a.events
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        );
        let spec = simulate::plot_spec(&solved, &report, &title);
        dosetrack::plot::write_plot(path, &spec)
            .with_context(|| format!("writing the chart to {}", path.display()))?;
        eprintln!("chart written to {}", path.display());
    }
    Ok(())
}

/// `dosetrack forecast`: when Cp or Ce next crosses the target levels.
pub(crate) fn forecast(
    f: &Formulary,
    a: &ForecastArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let inputs = read_events(&a.events)?;
    let horizon = simulate::parse_duration_ms(&a.horizon)
        .map_err(|m| input_error(format!("--horizon: {m}")))?;
    let at = match a.at.as_deref() {
        Some(t) => Some(time_arg("--at", t)?),
        None => None,
    };
    let solved = simulate::solve(f, &a.patient.spec(), &inputs, at).map_err(sim_err)?;
    let at = at.unwrap_or(solved.last_event_ms);
    let outputs: &[Output] = match a.output {
        Which::Cp => &[Output::Cp],
        Which::Ce => &[Output::Ce],
        Which::Both => &[Output::Ce, Output::Cp],
    };
    let report = simulate::forecast(&solved, at, horizon, outputs, &a.levels).map_err(sim_err)?;
    match a.format {
        ReportFormat::Text => out.write_all(simulate::forecast_text(&report).as_bytes())?,
        ReportFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, &report)?;
            writeln!(out)?;
        }
    }
    Ok(())
}

/// `dosetrack relief`: how long relief lasts for a regimen.
pub(crate) fn relief(f: &Formulary, a: &ReliefArgs, out: &mut impl Write) -> anyhow::Result<()> {
    if !(1..=730).contains(&a.days) {
        return Err(input_error(format!("--days {}: must be 1 to 730", a.days)));
    }
    if let Some(path) = &a.plot {
        check_plot_path(path)?;
    }
    let inputs = read_events(&a.events)?;
    let solved = simulate::solve(f, &a.patient.spec(), &inputs, None).map_err(sim_err)?;
    let chronic = f.drug().relief().map(|r| &r.chronic);
    let report = dosetrack::relief::relief(&solved, chronic, a.days).map_err(sim_err)?;
    if let Some(path) = &a.plot {
        let title = format!("Ketamine — relief over weeks ({} kg)", a.patient.weight_kg);
        dosetrack::plot::write_relief_plot(path, &report, &title)
            .with_context(|| format!("writing the plot to {}", path.display()))?;
    }
    match a.format {
        ReportFormat::Text => out.write_all(dosetrack::relief::relief_text(&report).as_bytes())?,
        ReportFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, &report)?;
            writeln!(out)?;
        }
    }
    Ok(())
}

/// `dosetrack model show`: one patient's resolved parameters.
pub(crate) fn model_show(
    f: &Formulary,
    a: &ModelShowArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let report = simulate::model_report(f, &a.patient.spec()).map_err(sim_err)?;
    match a.format {
        ReportFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, &report)?;
            writeln!(out)?;
        }
        ReportFormat::Text => {
            writeln!(
                out,
                "{} — {} ({})",
                report.model,
                report.title,
                simulate::NOTICE
            )?;
            writeln!(out, "source: {}", report.source)?;
            let [v1, v2, v3] = report.volumes_l;
            writeln!(out, "volumes (L): V1 {v1:.4}  V2 {v2:.4}  V3 {v3:.4}")?;
            let m = &report.micro_constants_per_min;
            writeln!(
                out,
                "per min: k10 {:.6}  k12 {:.6}  k21 {:.6}  k13 {:.6}  k31 {:.6}  ke0 {:.6}",
                m.k10, m.k12, m.k21, m.k13, m.k31, report.ke0_per_min
            )?;
            for r in &report.routes {
                writeln!(
                    out,
                    "  {:<12} F {:.3}  ka {}  lag {} min",
                    r.route.as_str(),
                    r.f,
                    r.ka_per_min
                        .map_or_else(|| "-".to_owned(), |k| format!("{k:.5}/min")),
                    r.lag_min
                )?;
            }
            if let Some(i) = &report.indication {
                writeln!(
                    out,
                    "indication: {} ({}{}): relief = Ce^{} / ({}^{} + Ce^{}); {} of the maximum wanted, reached at Ce {} ng/mL",
                    i.key,
                    i.title,
                    if i.defaulted { ", the drug file's default" } else { "" },
                    i.hill,
                    i.ec50_ng_per_ml,
                    i.hill,
                    i.hill,
                    i.target_relief_fraction,
                    dosetrack::vocab::round3(i.floor_ng_per_ml)
                )?;
            }
            writeln!(
                out,
                "targets (ng/mL): floor {}  caution {}  ceiling {}",
                report.targets.analgesic_floor_ng_per_ml,
                report.targets.psychotomimetic_caution_ng_per_ml,
                report.targets.ceiling_ng_per_ml
            )?;
            let e = &report.effects;
            if e.clearance_multiplier != 1.0 || !e.route_f_multipliers.is_empty() {
                let fs: Vec<String> = e
                    .route_f_multipliers
                    .iter()
                    .map(|(r, m)| format!("{} F x{m:.3}", r.as_str()))
                    .collect();
                writeln!(
                    out,
                    "covariate and metabolism effects: clearance x{:.3}{}{}",
                    e.clearance_multiplier,
                    if fs.is_empty() { "" } else { "; " },
                    fs.join(", ")
                )?;
            }
            if let Some(acute) = report.relief.as_ref().and_then(|r| r.acute.as_ref()) {
                writeln!(
                    out,
                    "graded acute relief per indication (default {}):",
                    acute.default_indication
                )?;
                for (key, ind) in &acute.indications {
                    for (name, v) in [
                        ("EC50 (ng/mL)", &ind.ec50_ng_per_ml),
                        ("steepness", &ind.hill),
                        ("relief wanted", &ind.target_relief_fraction),
                    ] {
                        writeln!(
                            out,
                            "  {key:<20} {name:<14} {}{} — {}",
                            v.value,
                            if v.assumption { " (assumption)" } else { "" },
                            v.source
                        )?;
                    }
                }
            }
            if let Some(n) = &report.norketamine {
                writeln!(
                    out,
                    "norketamine (exposure only; potency {}, a sensitivity setting): V {} L, CL {} L/h, Vp {} L, Q {} L/h per {} kg; formation fraction {} — {}",
                    n.potency_relative_to_ketamine.value,
                    n.v_l.value,
                    n.cl_l_per_h.value,
                    n.vp_l.value,
                    n.q_l_per_h.value,
                    n.reference_weight_kg,
                    n.formation_fraction.value,
                    n.v_l.source
                )?;
            }
            if let Some(r) = &report.relief {
                let c = &r.chronic;
                writeln!(out, "relief over weeks (dosetrack relief):")?;
                for (name, v) in [
                    ("half-life (days)", &c.half_life_days),
                    ("C50 (ng/mL, S-ketamine)", &c.c50_ng_per_ml),
                    ("steepness", &c.hill),
                    ("S fraction of Cp", &c.s_fraction),
                    ("probability of response", &c.response_probability),
                    ("... on placebo", &c.placebo_response_probability),
                ] {
                    writeln!(
                        out,
                        "  {name:<24} {}{} — {}",
                        v.value,
                        if v.assumption { " (assumption)" } else { "" },
                        v.source
                    )?;
                }
            }
            for w in &report.warnings {
                writeln!(out, "warning [{}]: {}", w.code, w.message)?;
            }
            writeln!(
                out,
                "{} assumed values; --format json lists them",
                report.assumptions.len()
            )?;
        }
    }
    Ok(())
}

/// `dosetrack model list`: the models of the drug file.
pub(crate) fn model_list(f: &Formulary, out: &mut impl Write) -> anyhow::Result<()> {
    let drug = f.drug();
    for (key, m) in drug.models() {
        writeln!(out, "{key:<12} {}-compartment  {}", m.compartments, m.title)?;
    }
    Ok(())
}

/// `dosetrack demo --offline`: the worked example, its chart written to
/// `--plot` (default `dosetrack-demo.svg`).
pub(crate) fn demo_offline(
    f: &Formulary,
    a: &DemoArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let plot = a
        .plot
        .clone()
        .unwrap_or_else(|| PathBuf::from("dosetrack-demo.svg"));
    demo(f, &plot, out)
}

/// One built-in ward day for a 72 kg adult.
const DEMO_EVENTS: &str = include_str!("../../examples/ward-day.jsonl");

fn demo(f: &Formulary, plot: &Path, out: &mut impl Write) -> anyhow::Result<()> {
    check_plot_path(plot)?;
    let inputs = simulate::parse_events(DEMO_EVENTS).map_err(sim_err)?;
    let mut spec = PatientSpec::weight_only(72.0);
    spec.covariates.age_years = Some(41.0);
    spec.covariates.sex = Some(Sex::Female);
    spec.comedications = vec!["midazolam".to_owned()];
    let solved = simulate::solve(f, &spec, &inputs, None).map_err(sim_err)?;
    let report = simulate::simulate(&solved, None, Some("24h"), 60_000).map_err(sim_err)?;
    writeln!(out, "dosetrack demo — {}", simulate::NOTICE)?;
    writeln!(
        out,
        "patient: 72 kg, 41 y, female, on midazolam · model {} ({})",
        report.model, report.model_title
    )?;
    writeln!(out, "inputs (examples/ward-day.jsonl):")?;
    for d in &solved.ledger.deliveries {
        let end = d
            .end_ms
            .map_or_else(|| "running".to_owned(), format_rfc3339);
        let span = if d.rate_mg_per_h.is_some() {
            format!(" until {end}")
        } else {
            String::new()
        };
        writeln!(
            out,
            "  {}  {:<16} {}{span}",
            format_rfc3339(d.start_ms),
            d.label(),
            d.source
        )?;
    }
    writeln!(out, "\n  time (UTC)             Cp ng/mL   Ce ng/mL")?;
    let floor = solved.patient.targets.analgesic_floor_ng_per_ml;
    for s in report.samples.iter().step_by(60) {
        let mark = if s.ce_ng_per_ml < floor {
            "  below floor"
        } else {
            ""
        };
        writeln!(
            out,
            "  {}  {:>9.1}  {:>9.1}{mark}",
            format_rfc3339(s.t_ms),
            s.cp_ng_per_ml,
            s.ce_ng_per_ml
        )?;
    }
    let at = solved.last_event_ms;
    let fc =
        simulate::forecast(&solved, at, 24 * 3_600_000, &[Output::Ce], &[]).map_err(sim_err)?;
    writeln!(out)?;
    out.write_all(simulate::forecast_text(&fc).as_bytes())?;
    let spec = simulate::plot_spec(&solved, &report, "Ketamine — demo ward day, 72 kg");
    dosetrack::plot::write_plot(plot, &spec)
        .with_context(|| format!("writing the chart to {}", plot.display()))?;
    writeln!(out, "\nchart written to {}", plot.display())?;
    Ok(())
}
