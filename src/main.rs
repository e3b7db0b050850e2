//! The `dosetrack` command: argument parsing, file I/O, printing and exit
//! codes. Everything else lives in the library.
//!
//! Exit codes: 0 success; 2 bad input (arguments, events file, drug file,
//! patient); 1 anything else (for example a plot that could not be written).

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use dosetrack::contract::TargetOverrides;
use dosetrack::drug::DrugFile;
use dosetrack::patient::{Covariates, Formulary, PatientSpec};
use dosetrack::pk::Output;
use dosetrack::simulate::{self, SimulateError};
use dosetrack::vocab::{format_rfc3339, parse_rfc3339_ms, Setting, Sex, TimeMs};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Live pharmacokinetic tracking of ketamine. Decision support and research
/// software, not a certified medical device.
#[derive(Parser, Debug)]
#[command(name = "dosetrack", version, about, long_about = None)]
struct Cli {
    /// Drug file (TOML). Default: the built-in config/drugs/ketamine.toml.
    #[arg(long, global = true, value_name = "FILE")]
    drug_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Concentrations over time for a file of doses and device events.
    Simulate(SimulateArgs),
    /// When Cp or Ce will next cross the target levels.
    Forecast(ForecastArgs),
    /// The PK models of the drug file.
    #[command(subcommand)]
    Model(ModelCommand),
    /// The service live on a simulated ward, broker included (--offline:
    /// the worked example on built-in data).
    ///
    /// The live demo runs an embedded MQTT broker, the daemon and a
    /// simulated ward in this process and shows every patient's Cp and Ce
    /// in the terminal. `--offline`: one ward day on built-in data, its
    /// concentrations, forecast and chart.
    Demo(DemoArgs),
    /// The service: inputs over MQTT, history in SQLite, live state out.
    Run(RunArgs),
    /// Check a daemon config file and the drug file it names, without
    /// starting anything; print the effective (non-secret) settings. Exit 0
    /// when valid, 2 when not.
    CheckConfig(CheckConfigArgs),
    /// Database maintenance.
    #[command(subcommand)]
    Db(DbCommand),
    /// Tracked patients with their last published concentrations
    /// (reads the database; safe while the service runs).
    Patients(PatientsArgs),
    /// A patient's concentration history from the database.
    History(HistoryArgs),
    /// Every stored input of a patient, one per line.
    Events(EventsArgs),
    /// Publish a simulated ward's pump, patch and medication-record traffic
    /// to a broker (for demos and load tests).
    SimulateDevices(SimulateDevicesArgs),
    /// Alerts from the database: the alarm-burden report, a patient's
    /// lifecycle messages.
    #[command(subcommand)]
    Alerts(AlertsCommand),
    /// Shell completions and man pages generated from this command line
    /// (for packaging: packaging/build-deb.sh). Hidden from --help.
    #[command(subcommand, hide = true)]
    Generate(GenerateCommand),
}

#[derive(Subcommand, Debug)]
enum GenerateCommand {
    /// The completion script for SHELL, on standard output.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// The man pages (dosetrack.1 and one per subcommand, e.g.
    /// dosetrack-run.1) written into DIR; prints their paths.
    Man {
        #[arg(value_name = "DIR", default_value = ".")]
        dir: PathBuf,
    },
}

#[derive(Args, Debug)]
struct CheckConfigArgs {
    /// Config file (TOML). Default: the built-in defaults (what `run`
    /// without --config uses).
    #[arg(value_name = "FILE")]
    file: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum DbCommand {
    /// An online, consistent copy of the database (SQLite's backup API):
    /// safe while the service runs.
    Backup(DbBackupArgs),
}

#[derive(Args, Debug)]
struct DbBackupArgs {
    /// Where to write the copy (a new file).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    #[command(flatten)]
    db: DbArgs,
    /// Replace FILE if it exists.
    #[arg(long)]
    force: bool,
}

#[derive(Subcommand, Debug)]
enum AlertsCommand {
    /// Per rule: alerts raised, per patient-day, median time to
    /// acknowledge, share cleared within 2 minutes without action.
    Report(AlertsReportArgs),
    /// Every lifecycle message (JSON Lines), of one patient or all.
    List(AlertsListArgs),
    /// Replay a simulated ward day through the alert engine on a virtual
    /// clock (offline, deterministic): alert counts per rule, the burden
    /// report, and an independent check of every raised alert.
    WardDay(AlertsWardDayArgs),
}

#[derive(Args, Debug)]
struct AlertsWardDayArgs {
    /// Number of simulated patients.
    #[arg(long, default_value_t = 20)]
    patients: usize,
    /// Simulated hours.
    #[arg(long, default_value_t = 24)]
    hours: u32,
    /// Random seed (same seed, same day).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, value_enum, default_value = "text")]
    format: ReportFormat,
}

#[derive(Args, Debug)]
struct AlertsReportArgs {
    #[command(flatten)]
    db: DbArgs,
    /// From (RFC 3339); default: the first alert.
    #[arg(long, value_name = "TIME")]
    from: Option<String>,
    /// To (RFC 3339); default: now.
    #[arg(long, value_name = "TIME")]
    to: Option<String>,
    #[arg(long, value_enum, default_value = "text")]
    format: ReportFormat,
}

#[derive(Args, Debug)]
struct AlertsListArgs {
    /// Only this patient's alerts.
    #[arg(long)]
    patient: Option<String>,
    #[command(flatten)]
    db: DbArgs,
}

#[derive(Args, Debug)]
struct SimulateDevicesArgs {
    /// Broker address, mqtt://HOST:PORT.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883", value_name = "URL")]
    broker: String,
    #[arg(long, default_value = "dosetrack", value_name = "P")]
    topic_prefix: String,
    /// Number of simulated patients.
    #[arg(long, default_value_t = 20)]
    patients: usize,
    /// Random seed (same seed, same ward).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Simulated seconds per real second (1 = real time). Above 1 the ward
    /// starts in the past and catches up with the clock at the end.
    #[arg(long, default_value_t = 1.0)]
    speedup: f64,
    /// Simulated duration (e.g. 2h, 24h).
    #[arg(long, default_value = "1h")]
    duration: String,
    /// At most this many messages per second.
    #[arg(long)]
    rate_limit: Option<f64>,
    #[arg(long, default_value = "dosetrack-devsim", value_name = "ID")]
    client_id: String,
}

#[derive(Args, Debug, Clone)]
struct ServiceArgs {
    /// Config file (TOML); see config/dosetrack.toml. Default: built-in
    /// defaults.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Broker address, mqtt://HOST:PORT.
    #[arg(long, value_name = "URL")]
    broker: Option<String>,
    /// SQLite database file.
    #[arg(long, value_name = "PATH")]
    database: Option<PathBuf>,
    /// Topic prefix (topics are PREFIX/v1/...).
    #[arg(long, value_name = "P")]
    topic_prefix: Option<String>,
    /// MQTT client id of the ingest connection (fixed per deployment).
    #[arg(long, value_name = "ID")]
    client_id: Option<String>,
    /// Log format: auto, text, json or journald (overrides `[log] format`).
    #[arg(long, value_name = "FORMAT", value_parser = parse_log_format)]
    log_format: Option<dosetrack::config::LogFormat>,
}

fn parse_log_format(s: &str) -> Result<dosetrack::config::LogFormat, String> {
    s.parse()
}

impl ServiceArgs {
    fn overrides(&self) -> dosetrack::config::Overrides {
        dosetrack::config::Overrides {
            broker: self.broker.clone(),
            database: self.database.clone(),
            topic_prefix: self.topic_prefix.clone(),
            client_id: self.client_id.clone(),
            log_format: self.log_format,
        }
    }

    fn config(&self) -> anyhow::Result<dosetrack::config::Config> {
        dosetrack::config::Config::load(
            self.config.as_deref(),
            |k| std::env::var(k).ok(),
            &self.overrides(),
        )
        .map_err(input_error)
    }
}

#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    service: ServiceArgs,
}

#[derive(Args, Debug)]
struct DbArgs {
    /// SQLite database file (default: the config's).
    #[arg(long, value_name = "PATH")]
    database: Option<PathBuf>,
    /// Config file to take the database path from.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

impl DbArgs {
    fn path(&self) -> anyhow::Result<PathBuf> {
        if let Some(p) = &self.database {
            return Ok(p.clone());
        }
        let cfg = dosetrack::config::Config::load(
            self.config.as_deref(),
            |_| None,
            &dosetrack::config::Overrides::default(),
        )
        .map_err(input_error)?;
        Ok(cfg.database.path)
    }

    fn reader(&self) -> anyhow::Result<dosetrack::store::Reader> {
        let path = self.path()?;
        if !path.exists() {
            return Err(input_error(format!("no database at {}", path.display())));
        }
        dosetrack::store::Reader::open(&path)
            .map_err(|e| input_error(format!("cannot read {}: {e}", path.display())))
    }
}

#[derive(Args, Debug)]
struct PatientsArgs {
    #[command(flatten)]
    db: DbArgs,
    #[arg(long, value_enum, default_value = "text")]
    format: ReportFormat,
}

#[derive(Args, Debug)]
struct HistoryArgs {
    patient_id: String,
    #[command(flatten)]
    db: DbArgs,
    /// From (RFC 3339).
    #[arg(long, value_name = "TIME")]
    from: Option<String>,
    /// To (RFC 3339).
    #[arg(long, value_name = "TIME")]
    to: Option<String>,
    #[arg(long, value_enum, default_value = "csv")]
    format: TableFormat,
    /// Also draw a chart (.svg or .png).
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct EventsArgs {
    patient_id: String,
    #[command(flatten)]
    db: DbArgs,
    #[arg(long, value_enum, default_value = "csv")]
    format: TableFormat,
}

#[derive(Subcommand, Debug)]
enum ModelCommand {
    /// The resolved parameters for one patient.
    Show(ModelShowArgs),
    /// The models in the drug file.
    List,
}

#[derive(Args, Debug, Clone)]
struct PatientArgs {
    /// Total body weight (kg).
    #[arg(long, allow_negative_numbers = true)]
    weight_kg: f64,
    /// Model key from the drug file; default: chosen by age.
    #[arg(long)]
    model: Option<String>,
    #[arg(long, allow_negative_numbers = true)]
    age_years: Option<f64>,
    #[arg(long, value_parser = parse_sex)]
    sex: Option<Sex>,
    #[arg(long, allow_negative_numbers = true)]
    height_cm: Option<f64>,
    /// Care setting for dose limits.
    #[arg(long, default_value = "ward", value_parser = parse_setting)]
    setting: Setting,
    /// A comedication (lower-case generic name); repeat for several.
    #[arg(long = "comedication", value_name = "NAME")]
    comedications: Vec<String>,
}

impl PatientArgs {
    fn spec(&self) -> PatientSpec {
        PatientSpec {
            covariates: Covariates {
                weight_kg: self.weight_kg,
                age_years: self.age_years,
                sex: self.sex,
                height_cm: self.height_cm,
            },
            model: self.model.clone(),
            setting: self.setting,
            comedications: self.comedications.clone(),
            targets: TargetOverrides::default(),
        }
    }
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum TableFormat {
    Csv,
    Json,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum ReportFormat {
    Text,
    Json,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum Which {
    Cp,
    Ce,
    Both,
}

#[derive(Args, Debug)]
struct SimulateArgs {
    /// JSON Lines of contract dose and device-event payloads.
    #[arg(long, value_name = "FILE")]
    events: PathBuf,
    #[command(flatten)]
    patient: PatientArgs,
    /// Start (RFC 3339); default: the first event.
    #[arg(long, value_name = "TIME")]
    from: Option<String>,
    /// End (RFC 3339) or a duration after --from (24h); default 24h.
    #[arg(long, value_name = "TIME|DURATION")]
    to: Option<String>,
    /// Step between rows (60s, 1s, 5min).
    #[arg(long, default_value = "60s")]
    step: String,
    #[arg(long, value_enum, default_value = "csv")]
    format: TableFormat,
    /// Also draw a chart (.svg or .png).
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct ForecastArgs {
    #[arg(long, value_name = "FILE")]
    events: PathBuf,
    #[command(flatten)]
    patient: PatientArgs,
    /// "Now" (RFC 3339); only inputs at or before it are known. Default:
    /// the last event.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// How far ahead to look.
    #[arg(long, default_value = "24h")]
    horizon: String,
    /// Level to watch (ng/mL); repeat for several. Default: the patient's
    /// floor, caution level and ceiling.
    #[arg(
        long = "level",
        value_name = "NG_PER_ML",
        allow_negative_numbers = true
    )]
    levels: Vec<f64>,
    #[arg(long, value_enum, default_value = "both")]
    output: Which,
    #[arg(long, value_enum, default_value = "text")]
    format: ReportFormat,
}

#[derive(Args, Debug)]
struct ModelShowArgs {
    #[command(flatten)]
    patient: PatientArgs,
    #[arg(long, value_enum, default_value = "json")]
    format: ReportFormat,
}

#[derive(Args, Debug)]
struct DemoArgs {
    /// The offline demo instead: one patient's ward day on built-in data
    /// (no broker, no service), its table, forecast and chart.
    #[arg(long)]
    offline: bool,
    /// With --offline: where to write the chart (.svg or .png).
    #[arg(long, value_name = "FILE", requires = "offline")]
    plot: Option<PathBuf>,
    /// How long to run (wall time; Ctrl-C stops earlier).
    #[arg(long, default_value = "60s", conflicts_with = "offline")]
    duration: String,
    /// Simulated patients.
    #[arg(long, default_value_t = 6, conflicts_with = "offline")]
    patients: usize,
    /// Simulated seconds per real second (60: an hour passes in a minute).
    #[arg(long, default_value_t = 60.0, conflicts_with = "offline")]
    speedup: f64,
    /// Seed of the simulated ward (same seed, same ward). The default's
    /// ward starts a patch, injections, IV boluses, pumps and an intranasal
    /// dose within its first half hour.
    #[arg(long, default_value_t = dosetrack::demo::DEFAULT_SEED, conflicts_with = "offline")]
    seed: u64,
    /// Keep the demo's database at PATH (a new file); default: a temporary
    /// database, removed at the end.
    #[arg(long, value_name = "PATH", conflicts_with = "offline")]
    database: Option<PathBuf>,
    /// Use this broker (mqtt://HOST:PORT) instead of the embedded one. The
    /// demo uses topics and client ids of its own (dosetrack-demo-…).
    #[arg(long, value_name = "URL", conflicts_with = "offline")]
    broker: Option<String>,
}

fn parse_sex(s: &str) -> Result<Sex, String> {
    s.parse()
        .map_err(|e: dosetrack::vocab::UnknownName| format!("{e}: use female or male"))
}

fn parse_setting(s: &str) -> Result<Setting, String> {
    s.parse()
        .map_err(|e: dosetrack::vocab::UnknownName| format!("{e}: use ward or monitored"))
}

/// A chart path must name a format we can write: checked before any work.
fn check_plot_path(path: &Path) -> anyhow::Result<()> {
    dosetrack::plot::PlotFormat::from_path(path)
        .map(|_| ())
        .map_err(|e| input_error(format!("--plot: {e}")))
}

/// An error that is the user's input: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct InputError(String);

fn input_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::Error::new(InputError(e.to_string()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dosetrack: {e:#}");
            if e.downcast_ref::<InputError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn formulary(path: Option<&Path>) -> anyhow::Result<Formulary> {
    let drug = match path {
        Some(p) => DrugFile::load(p),
        None => DrugFile::builtin(),
    }
    .map_err(input_error)?;
    Formulary::new(drug).map_err(input_error)
}

fn read_events(path: &Path) -> anyhow::Result<Vec<dosetrack::ledger::LedgerInput>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| input_error(format!("cannot read events file {}: {e}", path.display())))?;
    simulate::parse_events(&text).map_err(|e| input_error(format!("{}: {e}", path.display())))
}

fn time_arg(option: &str, text: &str) -> anyhow::Result<TimeMs> {
    parse_rfc3339_ms(text).map_err(|e| input_error(format!("{option}: {e}")))
}

fn sim_err(e: SimulateError) -> anyhow::Error {
    input_error(e)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    if let Command::Generate(g) = &cli.command {
        return generate(g, &mut stdout);
    }
    let f = formulary(cli.drug_file.as_deref())?;
    match cli.command {
        Command::Simulate(a) => {
            if let Some(path) = &a.plot {
                check_plot_path(path)?;
            }
            let inputs = read_events(&a.events)?;
            let step = simulate::parse_duration_ms(&a.step)
                .map_err(|m| input_error(format!("--step: {m}")))?;
            let from = a
                .from
                .as_deref()
                .map(|t| time_arg("--from", t))
                .transpose()?;
            let solved = simulate::solve(&f, &a.patient.spec(), &inputs, None).map_err(sim_err)?;
            let report =
                simulate::simulate(&solved, from, a.to.as_deref(), step).map_err(sim_err)?;
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
                TableFormat::Csv => stdout.write_all(simulate::to_csv(&report).as_bytes())?,
                TableFormat::Json => {
                    serde_json::to_writer_pretty(&mut stdout, &report)?;
                    writeln!(stdout)?;
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
        }
        Command::Forecast(a) => {
            let inputs = read_events(&a.events)?;
            let horizon = simulate::parse_duration_ms(&a.horizon)
                .map_err(|m| input_error(format!("--horizon: {m}")))?;
            let at = match a.at.as_deref() {
                Some(t) => Some(time_arg("--at", t)?),
                None => None,
            };
            let solved = simulate::solve(&f, &a.patient.spec(), &inputs, at).map_err(sim_err)?;
            let at = at.unwrap_or(solved.last_event_ms);
            let outputs: &[Output] = match a.output {
                Which::Cp => &[Output::Cp],
                Which::Ce => &[Output::Ce],
                Which::Both => &[Output::Ce, Output::Cp],
            };
            let report =
                simulate::forecast(&solved, at, horizon, outputs, &a.levels).map_err(sim_err)?;
            match a.format {
                ReportFormat::Text => {
                    stdout.write_all(simulate::forecast_text(&report).as_bytes())?
                }
                ReportFormat::Json => {
                    serde_json::to_writer_pretty(&mut stdout, &report)?;
                    writeln!(stdout)?;
                }
            }
        }
        Command::Model(ModelCommand::Show(a)) => {
            let report = simulate::model_report(&f, &a.patient.spec()).map_err(sim_err)?;
            match a.format {
                ReportFormat::Json => {
                    serde_json::to_writer_pretty(&mut stdout, &report)?;
                    writeln!(stdout)?;
                }
                ReportFormat::Text => {
                    writeln!(
                        stdout,
                        "{} — {} ({})",
                        report.model,
                        report.title,
                        simulate::NOTICE
                    )?;
                    writeln!(stdout, "source: {}", report.source)?;
                    let [v1, v2, v3] = report.volumes_l;
                    writeln!(stdout, "volumes (L): V1 {v1:.4}  V2 {v2:.4}  V3 {v3:.4}")?;
                    let m = &report.micro_constants_per_min;
                    writeln!(
                        stdout,
                        "per min: k10 {:.6}  k12 {:.6}  k21 {:.6}  k13 {:.6}  k31 {:.6}  ke0 {:.6}",
                        m.k10, m.k12, m.k21, m.k13, m.k31, report.ke0_per_min
                    )?;
                    for r in &report.routes {
                        writeln!(
                            stdout,
                            "  {:<12} F {:.3}  ka {}  lag {} min",
                            r.route.as_str(),
                            r.f,
                            r.ka_per_min
                                .map_or_else(|| "-".to_owned(), |k| format!("{k:.5}/min")),
                            r.lag_min
                        )?;
                    }
                    for w in &report.warnings {
                        writeln!(stdout, "warning [{}]: {}", w.code, w.message)?;
                    }
                    writeln!(
                        stdout,
                        "{} assumed values; --format json lists them",
                        report.assumptions.len()
                    )?;
                }
            }
        }
        Command::Model(ModelCommand::List) => {
            let drug = f.drug();
            for (key, m) in &drug.models {
                writeln!(
                    stdout,
                    "{key:<12} {}-compartment  {}",
                    m.compartments, m.title
                )?;
            }
        }
        Command::Demo(a) if a.offline => {
            let plot = a
                .plot
                .clone()
                .unwrap_or_else(|| PathBuf::from("dosetrack-demo.svg"));
            demo(&f, &plot, &mut stdout)?;
        }
        Command::Demo(a) => demo_live(&a, cli.drug_file.as_deref(), &mut stdout)?,
        Command::Run(a) => run_service(&a.service)?,
        Command::CheckConfig(a) => check_config(&a, &mut stdout)?,
        Command::Db(DbCommand::Backup(a)) => db_backup(&a, &mut stdout)?,
        Command::Patients(a) => patients(&a, &mut stdout)?,
        Command::History(a) => history(&f, &a, &mut stdout)?,
        Command::Events(a) => events(&a, &mut stdout)?,
        Command::SimulateDevices(a) => simulate_devices(&a)?,
        Command::Alerts(AlertsCommand::Report(a)) => alerts_report(&a, &mut stdout)?,
        Command::Alerts(AlertsCommand::List(a)) => alerts_list(&a, &mut stdout)?,
        Command::Generate(g) => generate(&g, &mut stdout)?,
        Command::Alerts(AlertsCommand::WardDay(a)) => {
            alerts_ward_day(&a, cli.drug_file.as_deref(), &mut stdout)?
        }
    }
    Ok(())
}

fn alerts_report(a: &AlertsReportArgs, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    let from = a
        .from
        .as_deref()
        .map(|t| time_arg("--from", t))
        .transpose()?
        .unwrap_or(i64::MIN / 2);
    let to =
        a.to.as_deref()
            .map(|t| time_arg("--to", t))
            .transpose()?
            .unwrap_or_else(|| chrono::Utc::now().timestamp_millis() + 1);
    if to <= from {
        return Err(input_error("--to must be after --from"));
    }
    let reader = a.db.reader()?;
    let events = reader.alert_events(from, to)?;
    let first = events.iter().map(|e| e.time_ms).min().unwrap_or(to);
    let from = from.max(first.min(to));
    let days = reader.patient_days(from, to)?;
    let report = dosetrack::alerts::report::build(&events, days, from, to);
    match a.format {
        ReportFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?,
        ReportFormat::Text => {
            writeln!(
                out,
                "Alarm burden {} to {} ({:.2} patient-days)",
                format_rfc3339(from),
                format_rfc3339(to),
                days
            )?;
            writeln!(
                out,
                "{:<20} {:>7} {:>9} {:>6} {:>14} {:>8} {:>16} {:>6}",
                "rule",
                "raised",
                "per pt-d",
                "acked",
                "median ack min",
                "cleared",
                "quick clear (%)",
                "escal"
            )?;
            let opt =
                |v: Option<f64>, k: f64| v.map_or("-".to_owned(), |x| format!("{:.1}", x * k));
            for r in &report.rules {
                writeln!(
                    out,
                    "{:<20} {:>7} {:>9} {:>6} {:>14} {:>8} {:>16} {:>6}",
                    r.rule.as_str(),
                    r.raised,
                    opt(r.per_patient_day, 1.0),
                    r.acknowledged,
                    opt(r.median_time_to_ack_min, 1.0),
                    r.cleared,
                    opt(r.cleared_within_2_min_without_action, 100.0),
                    r.escalations
                )?;
            }
        }
    }
    Ok(())
}

fn alerts_ward_day(
    a: &AlertsWardDayArgs,
    drug_file: Option<&Path>,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    use dosetrack::wardday;
    if a.patients == 0 || a.hours == 0 {
        return Err(input_error("--patients and --hours must be at least 1"));
    }
    let formulary = std::sync::Arc::new(formulary(drug_file)?);
    let spec = wardday::WardDaySpec::new(a.patients, a.hours, a.seed);
    let started = std::time::Instant::now();
    let r = wardday::run(&spec, formulary);
    let run_time_s = started.elapsed().as_secs_f64();
    match a.format {
        ReportFormat::Json => {
            let mut v = serde_json::to_value(&r)?;
            if let Some(o) = v.as_object_mut() {
                o.insert("run_time_s".into(), serde_json::json!(run_time_s));
                o.insert(
                    "violation_count".into(),
                    serde_json::json!(r.violations.len()),
                );
            }
            writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        }
        ReportFormat::Text => {
            writeln!(
                out,
                "Ward day: {} patients, {} h from {}, seed {} ({:.2} patient-days)",
                spec.patients,
                spec.hours,
                format_rfc3339(spec.start_ms),
                spec.seed,
                r.patient_days
            )?;
            writeln!(
                out,
                "Inputs: {} generated, {} accepted, {} rejected; {} evaluations after inputs, {} on timers",
                r.messages_generated,
                r.inputs_accepted,
                r.inputs_rejected,
                r.input_evaluations,
                r.timer_evaluations
            )?;
            writeln!(out, "Nurse: {}", r.nurse.describe())?;
            writeln!(
                out,
                "  {} acknowledgements sent ({} found the alert already cleared or acknowledged)",
                r.nurse_acks_sent, r.nurse_acks_void
            )?;
            writeln!(out)?;
            writeln!(
                out,
                "{:<20} {:>7} {:>8} {:>9} {:>7} {:>8} {:>9} {:>10} {:>12}",
                "rule",
                "raised",
                "updated",
                "escalated",
                "acked",
                "cleared",
                "per pt-d",
                "median ack",
                "quick clear"
            )?;
            let opt = |v: Option<f64>, k: f64, unit: &str| {
                v.map_or("-".to_owned(), |x| format!("{:.1}{unit}", x * k))
            };
            let mut total = wardday::PhaseCounts::default();
            for b in &r.report.rules {
                let c = r.phase_counts.get(&b.rule).cloned().unwrap_or_default();
                total.raised += c.raised;
                total.updated += c.updated;
                total.escalated += c.escalated;
                total.acknowledged += c.acknowledged;
                total.cleared += c.cleared;
                writeln!(
                    out,
                    "{:<20} {:>7} {:>8} {:>9} {:>7} {:>8} {:>9} {:>10} {:>12}",
                    b.rule.as_str(),
                    c.raised,
                    c.updated,
                    c.escalated,
                    c.acknowledged,
                    c.cleared,
                    opt(b.per_patient_day, 1.0, ""),
                    opt(b.median_time_to_ack_min, 1.0, " min"),
                    opt(b.cleared_within_2_min_without_action, 100.0, " %")
                )?;
            }
            let per_day = (r.patient_days > 0.0).then(|| total.raised as f64 / r.patient_days);
            writeln!(
                out,
                "{:<20} {:>7} {:>8} {:>9} {:>7} {:>8} {:>9}",
                "all",
                total.raised,
                total.updated,
                total.escalated,
                total.acknowledged,
                total.cleared,
                opt(per_day, 1.0, "")
            )?;
            writeln!(out)?;
            writeln!(
                out,
                "Independent check: {} raised alerts re-derived, {} violations",
                r.raised_checked,
                r.violations.len()
            )?;
            for v in &r.violations {
                writeln!(
                    out,
                    "  VIOLATION {} {} {} [{}] at {}: {}",
                    v.alert_id,
                    v.scope,
                    v.rule,
                    v.subject,
                    format_rfc3339(v.time_ms),
                    v.why
                )?;
            }
            writeln!(out, "Run time: {run_time_s:.2} s")?;
        }
    }
    Ok(())
}

fn alerts_list(a: &AlertsListArgs, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    let reader = a.db.reader()?;
    for line in reader.alert_messages(a.patient.as_deref())? {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

fn init_logging() {
    init_logging_with("info");
}

/// Logs as text to stderr; `RUST_LOG` overrides `default_filter` (the
/// service's own setup, without its journal or JSON choice).
fn init_logging_with(default_filter: &str) {
    let _ = dosetrack::logging::init(dosetrack::config::LogFormat::Text, default_filter);
}

fn run_service(args: &ServiceArgs) -> anyhow::Result<()> {
    let cfg = args.config()?;
    let log = dosetrack::logging::init(cfg.log.format, &cfg.log.level);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let file = args.config.clone();
    let overrides = args.overrides();
    runtime.block_on(async move {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
        service_signals(shutdown.clone(), reload_tx).context("installing signal handlers")?;
        tracing::info!(
            broker = %format!("{}:{}", cfg.broker.host, cfg.broker.port),
            client_id = %cfg.broker.client_id,
            tls = cfg.broker.tls_client.is_some(),
            prefix = %cfg.topics.prefix,
            database = %cfg.database.path.display(),
            log_format = log.as_ref().map_or("?", |l| l.format.as_str()),
            "dosetrack starting — decision support, not a certified medical device"
        );
        let reloads = dosetrack::daemon::Reloads {
            requests: reload_rx,
            file,
            overrides,
            log,
        };
        dosetrack::daemon::run_with(cfg, shutdown, Some(reloads))
            .await
            .map(|_| ())
            .map_err(anyhow::Error::from)
    })
}

/// The service's signals, handled from now on: SIGTERM and SIGINT start a
/// clean stop (`STOPPING=1` to systemd first); SIGHUP (`systemctl reload`)
/// asks the daemon to reload its configuration (`reload`; one pending
/// request at most: SIGHUPs during a reload fold into the next one).
fn service_signals(
    stop: tokio_util::sync::CancellationToken,
    reload: tokio::sync::mpsc::Sender<()>,
) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        tokio::spawn(async move {
            let name = loop {
                tokio::select! {
                    _ = term.recv() => break "SIGTERM",
                    _ = int.recv() => break "SIGINT",
                    _ = hup.recv() => {
                        tracing::info!(signal = "SIGHUP", "reload requested");
                        // Full: a reload is already pending and reads the
                        // files as they are then.
                        let _ = reload.try_send(());
                    }
                }
            };
            dosetrack::service::stopping();
            tracing::info!(signal = name, "stop signal received");
            stop.cancel();
        });
    }
    #[cfg(not(unix))]
    {
        drop(reload);
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            dosetrack::service::stopping();
            tracing::info!("stop signal received");
            stop.cancel();
        });
    }
    Ok(())
}

/// `dosetrack check-config [FILE]`: the config and its drug file, loaded and
/// validated as `run` would, nothing started.
fn check_config(a: &CheckConfigArgs, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    use dosetrack::config::{Config, Overrides, CREDENTIAL_PASSWORD, ENV_CREDENTIALS_DIRECTORY};
    let what = a
        .file
        .as_ref()
        .map_or("built-in defaults".to_owned(), |p| p.display().to_string());
    let cfg = Config::load(
        a.file.as_deref(),
        |k| std::env::var(k).ok(),
        &Overrides::default(),
    )
    .map_err(|e| input_error(format!("{what}: {e}")))?;
    writeln!(out, "config: {what}: valid")?;
    let drug_name = cfg
        .drug
        .file
        .as_ref()
        .map_or("built-in config/drugs/ketamine.toml".to_owned(), |p| {
            p.display().to_string()
        });
    let drug =
        dosetrack::daemon::formulary(&cfg).map_err(|e| input_error(format!("{what}: {e}")))?;
    writeln!(
        out,
        "drug file: {drug_name}: valid ({} models)",
        drug.drug().models.len()
    )?;
    let password = if cfg.broker.password.is_none() {
        "not set".to_owned()
    } else if std::env::var_os(ENV_CREDENTIALS_DIRECTORY)
        .is_some_and(|d| Path::new(&d).join(CREDENTIAL_PASSWORD).is_file())
    {
        "set (systemd credential)".to_owned()
    } else if let Some(f) = &cfg.broker.password_file {
        format!("set (password_file {})", f.display())
    } else {
        "set".to_owned()
    };
    let tls = match &cfg.broker.tls_client {
        Some(t) => format!("on: {}", t.describe()),
        None => "off (plain TCP)".to_owned(),
    };
    let db = &cfg.database.path;
    let db_state = if db.is_file() {
        "exists"
    } else {
        "not created yet"
    };
    writeln!(out, "\neffective settings (secrets not shown):")?;
    writeln!(
        out,
        "  broker            {}:{}",
        cfg.broker.host, cfg.broker.port
    )?;
    writeln!(
        out,
        "  client_id         {} (publisher: {}-pub)",
        cfg.broker.client_id, cfg.broker.client_id
    )?;
    writeln!(
        out,
        "  username          {}",
        cfg.broker.username.as_deref().unwrap_or("(none)")
    )?;
    writeln!(out, "  password          {password}")?;
    writeln!(out, "  tls               {tls}")?;
    writeln!(out, "  keep_alive_s      {}", cfg.broker.keep_alive_s)?;
    writeln!(out, "  max_packet_bytes  {}", cfg.broker.max_packet_bytes)?;
    writeln!(out, "  topic prefix      {}/v1/", cfg.topics.prefix)?;
    writeln!(out, "  database          {} ({db_state})", db.display())?;
    writeln!(
        out,
        "  batch             {} inputs / {} ms",
        cfg.database.batch_max, cfg.database.batch_window_ms
    )?;
    let retention = match cfg.database.history_retention_days {
        0 => "kept forever".to_owned(),
        d => format!("{d} days"),
    };
    writeln!(
        out,
        "  maintenance       history {retention}, every {} h",
        cfg.database.maintenance_interval_h
    )?;
    writeln!(out, "  state             every {} s, history every {} s, forecast {} h, device stale after {} min",
        cfg.state.interval_s, cfg.state.history_interval_s, cfg.state.forecast_horizon_h, cfg.state.device_stale_after_min)?;
    writeln!(out, "  max_future_skew_s {}", cfg.limits.max_future_skew_s)?;
    writeln!(out, "  max_past_age_h    {}", cfg.limits.max_past_age_h)?;
    writeln!(
        out,
        "  devices           {}",
        match cfg.devices.allowed()? {
            Some(ids) => format!("{} on the allow-list", ids.len()),
            None => "every device accepted".to_owned(),
        }
    )?;
    writeln!(out, "  drug file         {drug_name}")?;
    writeln!(
        out,
        "  http              {}",
        cfg.http
            .listen
            .as_deref()
            .map_or("off".to_owned(), |a| format!(
                "{a} (/healthz, /metrics; unhealthy after {} s unacknowledged)",
                cfg.http.max_unacked_age_s
            ))
    )?;
    writeln!(
        out,
        "  alerts            redose lead {} min, high lead {} min, hysteresis {}",
        cfg.alerts.redose_lead_min, cfg.alerts.high_lead_min, cfg.alerts.level_hysteresis
    )?;
    writeln!(
        out,
        "  log               level {}, format {} (auto: {})",
        cfg.log.level,
        cfg.log.format.as_str(),
        dosetrack::logging::resolve(dosetrack::config::LogFormat::Auto).as_str()
    )?;
    Ok(())
}

/// `dosetrack generate`: completions and man pages from the clap
/// definition, so they never drift from the real command line.
fn generate(g: &GenerateCommand, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    use clap::CommandFactory as _;
    let mut cmd = Cli::command();
    match g {
        GenerateCommand::Completions { shell } => {
            clap_complete::generate(*shell, &mut cmd, "dosetrack", out);
        }
        GenerateCommand::Man { dir } => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            // One page per visible (sub)command; hidden ones (generate) are
            // left out.
            clap_mangen::generate_to(cmd, dir)
                .with_context(|| format!("cannot write the man pages into {}", dir.display()))?;
            let mut pages: Vec<PathBuf> = std::fs::read_dir(dir)
                .with_context(|| format!("cannot list {}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "1"))
                .collect();
            pages.sort();
            for p in pages {
                writeln!(out, "{}", p.display())?;
            }
        }
    }
    Ok(())
}

/// `dosetrack db backup FILE`: an online copy with SQLite's backup API.
fn db_backup(a: &DbBackupArgs, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    use dosetrack::store::BackupError;
    let source = a.db.path()?;
    let started = std::time::Instant::now();
    let report = dosetrack::store::backup(&source, &a.file, a.force).map_err(|e| match e {
        BackupError::NoDatabase(_) | BackupError::Exists(_) => input_error(e),
        e => anyhow::Error::new(e).context(format!("backing up {}", source.display())),
    })?;
    writeln!(
        out,
        "backed up {} to {}: {} pages, {} bytes, schema version {}, integrity ok, {:.2} s",
        source.display(),
        a.file.display(),
        report.pages,
        report.bytes,
        report.schema_version,
        started.elapsed().as_secs_f64()
    )?;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `dosetrack demo` (live): the service, an embedded broker and a simulated
/// ward in this process, the table on stdout.
fn demo_live(
    a: &DemoArgs,
    drug_file: Option<&Path>,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    use dosetrack::demo::{DemoError, DemoOptions};
    use std::io::IsTerminal as _;
    let duration_ms = simulate::parse_duration_ms(&a.duration)
        .map_err(|m| input_error(format!("--duration: {m}")))?;
    let broker = a
        .broker
        .as_deref()
        .map(dosetrack::config::parse_broker_url)
        .transpose()
        .map_err(input_error)?;
    let opts = DemoOptions {
        duration: std::time::Duration::from_millis(duration_ms.max(0) as u64),
        patients: a.patients,
        speedup: a.speedup,
        seed: a.seed,
        database: a.database.clone(),
        broker,
        drug_file: drug_file.map(Path::to_path_buf),
        ansi: std::io::stdout().is_terminal(),
    };
    // Only warnings: the table is the output (RUST_LOG=info for more).
    // rumqttd logs ordinary disconnects as errors: silent unless asked for.
    init_logging_with("warn,rumqttd=off");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(async move {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            stop.cancel();
        });
        dosetrack::demo::run(opts, shutdown, out).await
    });
    // The signal task (and anything else left) must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(_) => Ok(()),
        Err(e @ (DemoError::Invalid(_) | DemoError::NoBroker)) => Err(input_error(e)),
        Err(e) => Err(anyhow::Error::from(e)),
    }
}

fn simulate_devices(a: &SimulateDevicesArgs) -> anyhow::Result<()> {
    use dosetrack::devsim;
    let (host, port) = dosetrack::config::parse_broker_url(&a.broker).map_err(input_error)?;
    let duration_ms = simulate::parse_duration_ms(&a.duration)
        .map_err(|m| input_error(format!("--duration: {m}")))?;
    if !(a.speedup.is_finite() && a.speedup >= 1.0) {
        return Err(input_error("--speedup must be a number ≥ 1"));
    }
    init_logging();
    let now = devsim::wall_clock_ms().map_err(input_error)?;
    let mut spec = devsim::WardSpec::new(
        a.patients,
        a.seed,
        devsim::catch_up_start_ms(now, duration_ms, a.speedup),
    );
    spec.prefix = a.topic_prefix.clone();
    let mut ward = devsim::Ward::new(spec);
    let publish = devsim::PublishSpec {
        host,
        port,
        client_id: a.client_id.clone(),
        speedup: a.speedup,
        duration_ms,
        rate_limit_per_s: a.rate_limit,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let stats = runtime.block_on(async move {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            stop.cancel();
        });
        devsim::publish_ward(&mut ward, &publish, shutdown).await
    })?;
    eprintln!(
        "published {} messages ({} acknowledged) in {:.1} s",
        stats.sent,
        stats.acked,
        stats.elapsed.as_secs_f64()
    );
    Ok(())
}

fn patients(a: &PatientsArgs, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    let rows = a.db.reader()?.patients()?;
    let json_rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            let state: serde_json::Value = r
                .last_state
                .as_ref()
                .and_then(|s| serde_json::from_str(&s.payload).ok())
                .unwrap_or(serde_json::Value::Null);
            serde_json::json!({
                "patient_id": r.patient_id,
                "admitted_at": format_rfc3339(r.first_admitted_at_ms),
                "discharged_at": r.discharged_at_ms.map(format_rfc3339),
                "state_time": state.get("time"),
                "cp_ng_per_ml": state.get("cp_ng_per_ml"),
                "ce_ng_per_ml": state.get("ce_ng_per_ml"),
                "trend": state.get("trend"),
                "model": state.get("model"),
                "stale": state.get("stale"),
            })
        })
        .collect();
    match a.format {
        ReportFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, &json_rows)?;
            writeln!(out)?;
        }
        ReportFormat::Text => {
            writeln!(
                out,
                "{:<16} {:<22} {:<22} {:>10} {:>10}  {:<8} model",
                "patient", "admitted", "state at", "Cp ng/mL", "Ce ng/mL", "trend"
            )?;
            for r in &json_rows {
                let s = |k: &str| r.get(k).and_then(|v| v.as_str()).unwrap_or("-").to_owned();
                let n = |k: &str| {
                    r.get(k)
                        .and_then(serde_json::Value::as_f64)
                        .map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
                };
                let discharged = if r.get("discharged_at").is_some_and(|v| !v.is_null()) {
                    " (discharged)"
                } else {
                    ""
                };
                writeln!(
                    out,
                    "{:<16} {:<22} {:<22} {:>10} {:>10}  {:<8} {}{discharged}",
                    s("patient_id"),
                    s("admitted_at"),
                    s("state_time"),
                    n("cp_ng_per_ml"),
                    n("ce_ng_per_ml"),
                    s("trend"),
                    s("model"),
                )?;
            }
        }
    }
    Ok(())
}

fn history(f: &Formulary, a: &HistoryArgs, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    if let Some(p) = &a.plot {
        check_plot_path(p)?;
    }
    let from = a
        .from
        .as_deref()
        .map(|t| time_arg("--from", t))
        .transpose()?;
    let to = a.to.as_deref().map(|t| time_arg("--to", t)).transpose()?;
    let reader = a.db.reader()?;
    let rows = reader.history(&a.patient_id, from, to)?;
    if rows.is_empty() {
        return Err(input_error(format!(
            "no history for patient '{}'",
            a.patient_id
        )));
    }
    let start = rows.first().map_or(0, |r| r.t_ms);
    match a.format {
        TableFormat::Csv => {
            writeln!(out, "time,t_min,cp_ng_per_ml,ce_ng_per_ml")?;
            for r in &rows {
                writeln!(
                    out,
                    "{},{},{:.4},{:.4}",
                    format_rfc3339(r.t_ms),
                    (r.t_ms - start) as f64 / 60_000.0,
                    r.cp_ng_per_ml,
                    r.ce_ng_per_ml
                )?;
            }
        }
        TableFormat::Json => {
            let v: Vec<serde_json::Value> = rows
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "time": format_rfc3339(r.t_ms),
                        "cp_ng_per_ml": r.cp_ng_per_ml,
                        "ce_ng_per_ml": r.ce_ng_per_ml,
                    })
                })
                .collect();
            serde_json::to_writer_pretty(&mut *out, &v)?;
            writeln!(out)?;
        }
    }
    if let Some(path) = &a.plot {
        // Targets from the last published state, else the drug file's.
        let last: Option<serde_json::Value> = reader
            .patients()?
            .into_iter()
            .find(|p| p.patient_id == a.patient_id)
            .and_then(|p| p.last_state)
            .and_then(|s| serde_json::from_str(&s.payload).ok());
        let t = &f.drug().targets;
        let target = |k: &str, default: f64| {
            last.as_ref()
                .and_then(|s| s.get("targets"))
                .and_then(|t| t.get(k))
                .and_then(serde_json::Value::as_f64)
                .unwrap_or(default)
        };
        let model = last
            .as_ref()
            .and_then(|s| s.get("model"))
            .and_then(|m| m.as_str())
            .unwrap_or("unknown")
            .to_owned();
        let spec = dosetrack::plot::PlotSpec {
            title: format!("Ketamine — patient {} (recorded history)", a.patient_id),
            subtitle: format!("model {model} · {}", simulate::NOTICE),
            times_ms: rows.iter().map(|r| r.t_ms).collect(),
            cp_ng_per_ml: rows.iter().map(|r| r.cp_ng_per_ml).collect(),
            ce_ng_per_ml: rows.iter().map(|r| r.ce_ng_per_ml).collect(),
            targets: dosetrack::plot::TargetLines {
                analgesic_floor_ng_per_ml: target(
                    "analgesic_floor_ng_per_ml",
                    t.analgesic_floor_ng_per_ml.value,
                ),
                caution_ng_per_ml: target(
                    "psychotomimetic_caution_ng_per_ml",
                    t.psychotomimetic_caution_ng_per_ml.value,
                ),
                ceiling_ng_per_ml: target("ceiling_ng_per_ml", t.ceiling_ng_per_ml.value),
            },
            doses: Vec::new(),
            spans: Vec::new(),
        };
        dosetrack::plot::write_plot(path, &spec)
            .with_context(|| format!("writing the chart to {}", path.display()))?;
        eprintln!("chart written to {}", path.display());
    }
    Ok(())
}

fn events(a: &EventsArgs, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    let rows = a.db.reader()?.inputs_for_patient(&a.patient_id)?;
    match a.format {
        TableFormat::Csv => {
            writeln!(out, "seq,occurred_at,received_at,source,kind,id,payload")?;
            for r in &rows {
                let payload = r.payload.replace('"', "\"\"");
                writeln!(
                    out,
                    "{},{},{},{}/{},{},{},\"{payload}\"",
                    r.seq,
                    format_rfc3339(r.occurred_at_ms),
                    format_rfc3339(r.received_at_ms),
                    r.source.kind(),
                    r.source.id(),
                    r.kind,
                    csv_field(&r.input_id),
                )?;
            }
        }
        TableFormat::Json => {
            for r in &rows {
                let payload: serde_json::Value = serde_json::from_str(&r.payload)
                    .unwrap_or(serde_json::Value::String(r.payload.clone()));
                let line = serde_json::json!({
                    "seq": r.seq,
                    "occurred_at": format_rfc3339(r.occurred_at_ms),
                    "received_at": format_rfc3339(r.received_at_ms),
                    "source": format!("{}/{}", r.source.kind(), r.source.id()),
                    "kind": r.kind,
                    "id": r.input_id,
                    "payload": payload,
                });
                writeln!(out, "{line}")?;
            }
        }
    }
    Ok(())
}

/// Quote a CSV field when it needs it.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// One built-in ward day for a 72 kg adult.
const DEMO_EVENTS: &str = include_str!("../examples/ward-day.jsonl");

fn demo(f: &Formulary, plot: &Path, out: &mut impl std::io::Write) -> anyhow::Result<()> {
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
