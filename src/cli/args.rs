//! The command line's definition: every clap type of `dosetrack` (the
//! subcommands, their arguments and help texts), and the small conversions
//! from arguments to the library's types (a patient spec, the service's
//! config and overrides, the database to read). `dosetrack generate` builds
//! the completions and man pages from these types, so this file is also
//! what they say.

use super::input_error;
use clap::{Args, Parser, Subcommand, ValueEnum};
use dosetrack::contract::TargetOverrides;
use dosetrack::patient::{Covariates, PatientSpec};
use dosetrack::vocab::{Setting, Sex};
use std::path::PathBuf;

/// Live pharmacokinetic tracking of ketamine. Decision support and research
/// software, not a certified medical device.
#[derive(Parser, Debug)]
#[command(name = "dosetrack", version, about, long_about = None)]
pub(crate) struct Cli {
    /// Drug file (TOML). Default: the built-in config/drugs/ketamine.toml.
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) drug_file: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Concentrations over time for a file of doses and device events.
    Simulate(SimulateArgs),
    /// When Cp or Ce will next cross the target levels.
    Forecast(ForecastArgs),
    /// How long relief will last for a file of doses and device events:
    /// the acute window (Ce at or above the analgesic floor) and the relief
    /// over the weeks after (the drug file's [relief.chronic], Dahan 2011).
    Relief(ReliefArgs),
    /// The PK models of the drug file.
    #[command(subcommand)]
    Model(ModelCommand),
    /// The service live on a simulated ward, broker included (--offline:
    /// the worked example on built-in data).
    ///
    /// The live demo runs an embedded MQTT broker, the daemon and a
    /// simulated ward in this process, all on one sped-up clock; it serves
    /// the ward page (its URL printed first) and shows every patient's Cp
    /// and Ce and the active alerts in the terminal. `--offline`: one ward
    /// day on built-in data, its concentrations, forecast and chart.
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
    /// Rejected inputs from the database, oldest first: time, source,
    /// topic, code, field, message (safe while the service runs).
    Rejected(RejectedArgs),
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
pub(crate) enum GenerateCommand {
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
pub(crate) struct CheckConfigArgs {
    /// Config file (TOML). Default: the built-in defaults (what `run`
    /// without --config uses).
    #[arg(value_name = "FILE")]
    pub(crate) file: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum DbCommand {
    /// An online, consistent copy of the database (SQLite's backup API):
    /// safe while the service runs.
    Backup(DbBackupArgs),
}

#[derive(Args, Debug)]
pub(crate) struct DbBackupArgs {
    /// Where to write the copy (a new file).
    #[arg(value_name = "FILE")]
    pub(crate) file: PathBuf,
    #[command(flatten)]
    pub(crate) db: DbArgs,
    /// Replace FILE if it exists.
    #[arg(long)]
    pub(crate) force: bool,
}

#[derive(Subcommand, Debug)]
pub(crate) enum AlertsCommand {
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
pub(crate) struct AlertsWardDayArgs {
    /// Number of simulated patients.
    #[arg(long, default_value_t = 20)]
    pub(crate) patients: usize,
    /// Simulated hours.
    #[arg(long, default_value_t = 24)]
    pub(crate) hours: u32,
    /// Random seed (same seed, same day).
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    #[arg(long, value_enum, default_value = "text")]
    pub(crate) format: ReportFormat,
}

#[derive(Args, Debug)]
pub(crate) struct AlertsReportArgs {
    #[command(flatten)]
    pub(crate) db: DbArgs,
    /// From (RFC 3339); default: the first alert.
    #[arg(long, value_name = "TIME")]
    pub(crate) from: Option<String>,
    /// To (RFC 3339); default: now.
    #[arg(long, value_name = "TIME")]
    pub(crate) to: Option<String>,
    #[arg(long, value_enum, default_value = "text")]
    pub(crate) format: ReportFormat,
}

#[derive(Args, Debug)]
pub(crate) struct AlertsListArgs {
    /// Only this patient's alerts.
    #[arg(long)]
    pub(crate) patient: Option<String>,
    #[command(flatten)]
    pub(crate) db: DbArgs,
}

#[derive(Args, Debug)]
pub(crate) struct SimulateDevicesArgs {
    /// Broker address, mqtt://HOST:PORT.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883", value_name = "URL")]
    pub(crate) broker: String,
    #[arg(long, default_value = "dosetrack", value_name = "P")]
    pub(crate) topic_prefix: String,
    /// Number of simulated patients.
    #[arg(long, default_value_t = 20)]
    pub(crate) patients: usize,
    /// Random seed (same seed, same ward).
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// Simulated seconds per real second (1 = real time). Above 1 the ward
    /// starts in the past and catches up with the clock at the end.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) speedup: f64,
    /// Simulated duration (e.g. 2h, 24h).
    #[arg(long, default_value = "1h")]
    pub(crate) duration: String,
    /// At most this many messages per second.
    #[arg(long)]
    pub(crate) rate_limit: Option<f64>,
    #[arg(long, default_value = "dosetrack-devsim", value_name = "ID")]
    pub(crate) client_id: String,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct ServiceArgs {
    /// Config file (TOML); see config/dosetrack.toml. Default: built-in
    /// defaults.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Broker address, mqtt://HOST:PORT.
    #[arg(long, value_name = "URL")]
    pub(crate) broker: Option<String>,
    /// SQLite database file.
    #[arg(long, value_name = "PATH")]
    pub(crate) database: Option<PathBuf>,
    /// Topic prefix (topics are PREFIX/v1/...).
    #[arg(long, value_name = "P")]
    pub(crate) topic_prefix: Option<String>,
    /// MQTT client id of the ingest connection (fixed per deployment).
    #[arg(long, value_name = "ID")]
    pub(crate) client_id: Option<String>,
    /// Log format: auto, text, json or journald (overrides `[log] format`).
    #[arg(long, value_name = "FORMAT", value_parser = parse_log_format)]
    pub(crate) log_format: Option<dosetrack::service::settings::LogFormat>,
}

fn parse_log_format(s: &str) -> Result<dosetrack::service::settings::LogFormat, String> {
    s.parse()
}

impl ServiceArgs {
    pub(crate) fn overrides(&self) -> dosetrack::service::settings::Overrides {
        dosetrack::service::settings::Overrides {
            broker: self.broker.clone(),
            database: self.database.clone(),
            topic_prefix: self.topic_prefix.clone(),
            client_id: self.client_id.clone(),
            log_format: self.log_format,
        }
    }

    pub(crate) fn config(&self) -> anyhow::Result<dosetrack::service::settings::Config> {
        dosetrack::service::settings::Config::load(
            self.config.as_deref(),
            |k| std::env::var(k).ok(),
            &self.overrides(),
        )
        .map_err(input_error)
    }
}

#[derive(Args, Debug)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) service: ServiceArgs,
}

#[derive(Args, Debug)]
pub(crate) struct DbArgs {
    /// SQLite database file (default: the config's).
    #[arg(long, value_name = "PATH")]
    pub(crate) database: Option<PathBuf>,
    /// Config file to take the database path from.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
}

impl DbArgs {
    pub(crate) fn path(&self) -> anyhow::Result<PathBuf> {
        if let Some(p) = &self.database {
            return Ok(p.clone());
        }
        let cfg = dosetrack::service::settings::Config::load(
            self.config.as_deref(),
            |_| None,
            &dosetrack::service::settings::Overrides::default(),
        )
        .map_err(input_error)?;
        Ok(cfg.database.path)
    }

    pub(crate) fn reader(&self) -> anyhow::Result<dosetrack::store::Reader> {
        let path = self.path()?;
        if !path.exists() {
            return Err(input_error(format!("no database at {}", path.display())));
        }
        dosetrack::store::Reader::open(&path)
            .map_err(|e| input_error(format!("cannot read {}: {e}", path.display())))
    }
}

#[derive(Args, Debug)]
pub(crate) struct PatientsArgs {
    #[command(flatten)]
    pub(crate) db: DbArgs,
    #[arg(long, value_enum, default_value = "text")]
    pub(crate) format: ReportFormat,
}

#[derive(Args, Debug)]
pub(crate) struct HistoryArgs {
    pub(crate) patient_id: String,
    #[command(flatten)]
    pub(crate) db: DbArgs,
    /// From (RFC 3339).
    #[arg(long, value_name = "TIME")]
    pub(crate) from: Option<String>,
    /// To (RFC 3339).
    #[arg(long, value_name = "TIME")]
    pub(crate) to: Option<String>,
    #[arg(long, value_enum, default_value = "csv")]
    pub(crate) format: TableFormat,
    /// Also draw a chart (.svg or .png).
    #[arg(long, value_name = "FILE")]
    pub(crate) plot: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub(crate) struct EventsArgs {
    pub(crate) patient_id: String,
    #[command(flatten)]
    pub(crate) db: DbArgs,
    #[arg(long, value_enum, default_value = "csv")]
    pub(crate) format: TableFormat,
}

#[derive(Args, Debug)]
pub(crate) struct RejectedArgs {
    /// Only rejections received at or after this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    pub(crate) since: Option<String>,
    /// At most this many (the newest).
    #[arg(long, default_value_t = 100)]
    pub(crate) limit: usize,
    #[command(flatten)]
    pub(crate) db: DbArgs,
    #[arg(long, value_enum, default_value = "csv")]
    pub(crate) format: TableFormat,
}

#[derive(Subcommand, Debug)]
pub(crate) enum ModelCommand {
    /// The resolved parameters for one patient.
    Show(ModelShowArgs),
    /// The models in the drug file.
    List,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct PatientArgs {
    /// Total body weight (kg).
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) weight_kg: f64,
    /// Model key from the drug file; default: chosen by age.
    #[arg(long)]
    pub(crate) model: Option<String>,
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) age_years: Option<f64>,
    #[arg(long, value_parser = parse_sex)]
    pub(crate) sex: Option<Sex>,
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) height_cm: Option<f64>,
    /// Care setting for dose limits.
    #[arg(long, default_value = "ward", value_parser = parse_setting)]
    pub(crate) setting: Setting,
    /// A comedication (lower-case generic name); repeat for several.
    #[arg(long = "comedication", value_name = "NAME")]
    pub(crate) comedications: Vec<String>,
    /// The indication (a key of the drug file's [relief.acute], e.g.
    /// acute_pain, chronic_neuropathic); default: the drug file's default.
    #[arg(long, value_name = "KEY")]
    pub(crate) indication: Option<String>,
    /// CYP2B6 genotype as written in the drug file's [metabolism.cyp2b6],
    /// e.g. '*1/*6'; default: unknown (no genotype effect).
    #[arg(long = "cyp2b6", value_name = "GENOTYPE")]
    pub(crate) cyp2b6_genotype: Option<String>,
}

impl PatientArgs {
    pub(crate) fn spec(&self) -> PatientSpec {
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
            indication: self.indication.clone(),
            cyp2b6_genotype: self.cyp2b6_genotype.clone(),
        }
    }
}

#[derive(Copy, Clone, Debug, ValueEnum)]
pub(crate) enum TableFormat {
    Csv,
    Json,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
pub(crate) enum ReportFormat {
    Text,
    Json,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
pub(crate) enum Which {
    Cp,
    Ce,
    Both,
}

#[derive(Args, Debug)]
pub(crate) struct SimulateArgs {
    /// JSON Lines of contract dose and device-event payloads.
    #[arg(long, value_name = "FILE")]
    pub(crate) events: PathBuf,
    #[command(flatten)]
    pub(crate) patient: PatientArgs,
    /// Start (RFC 3339); default: the first event.
    #[arg(long, value_name = "TIME")]
    pub(crate) from: Option<String>,
    /// End (RFC 3339) or a duration after --from (24h); default 24h.
    #[arg(long, value_name = "TIME|DURATION")]
    pub(crate) to: Option<String>,
    /// Step between rows (60s, 1s, 5min).
    #[arg(long, default_value = "60s")]
    pub(crate) step: String,
    #[arg(long, value_enum, default_value = "csv")]
    pub(crate) format: TableFormat,
    /// Also draw a chart (.svg or .png).
    #[arg(long, value_name = "FILE")]
    pub(crate) plot: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub(crate) struct ForecastArgs {
    #[arg(long, value_name = "FILE")]
    pub(crate) events: PathBuf,
    #[command(flatten)]
    pub(crate) patient: PatientArgs,
    /// "Now" (RFC 3339); only inputs at or before it are known. Default:
    /// the last event.
    #[arg(long, value_name = "TIME")]
    pub(crate) at: Option<String>,
    /// How far ahead to look.
    #[arg(long, default_value = "24h")]
    pub(crate) horizon: String,
    /// Level to watch (ng/mL); repeat for several. Default: the patient's
    /// floor, caution level and ceiling.
    #[arg(
        long = "level",
        value_name = "NG_PER_ML",
        allow_negative_numbers = true
    )]
    pub(crate) levels: Vec<f64>,
    #[arg(long, value_enum, default_value = "both")]
    pub(crate) output: Which,
    #[arg(long, value_enum, default_value = "text")]
    pub(crate) format: ReportFormat,
}

#[derive(Args, Debug)]
pub(crate) struct ReliefArgs {
    #[arg(long, value_name = "FILE")]
    pub(crate) events: PathBuf,
    #[command(flatten)]
    pub(crate) patient: PatientArgs,
    /// Days of relief over weeks, from the first input (1 to 730).
    #[arg(long, default_value_t = dosetrack::relief::DEFAULT_DAYS)]
    pub(crate) days: u32,
    #[arg(long, value_enum, default_value = "text")]
    pub(crate) format: ReportFormat,
    /// Also draw the relief over weeks, with the target (.svg or .png).
    #[arg(long, value_name = "FILE")]
    pub(crate) plot: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub(crate) struct ModelShowArgs {
    #[command(flatten)]
    pub(crate) patient: PatientArgs,
    #[arg(long, value_enum, default_value = "json")]
    pub(crate) format: ReportFormat,
}

#[derive(Args, Debug)]
pub(crate) struct DemoArgs {
    /// The offline demo instead: one patient's ward day on built-in data
    /// (no broker, no service), its table, forecast and chart.
    #[arg(long)]
    pub(crate) offline: bool,
    /// With --offline: where to write the chart (.svg or .png).
    #[arg(long, value_name = "FILE", requires = "offline")]
    pub(crate) plot: Option<PathBuf>,
    /// How long to run (wall time; Ctrl-C stops earlier).
    #[arg(long, default_value = "60s", conflicts_with = "offline")]
    pub(crate) duration: String,
    /// Simulated patients.
    #[arg(long, default_value_t = 6, conflicts_with = "offline")]
    pub(crate) patients: usize,
    /// Simulated seconds per real second (60: an hour passes in a minute;
    /// concentrations and alert timers run at this speed).
    #[arg(long, default_value_t = 60.0, conflicts_with = "offline")]
    pub(crate) speedup: f64,
    /// Seed of the simulated ward (same seed, same ward). The default's
    /// ward starts a patch, injections, IV boluses, pumps and an intranasal
    /// dose within its first half hour; every ward has the demo's incidents
    /// (an over-limit IV bolus, a pump occlusion, a patch falling off).
    #[arg(long, default_value_t = dosetrack::sim::demo::DEFAULT_SEED, conflicts_with = "offline")]
    pub(crate) seed: u64,
    /// Keep the demo's database at PATH (a new file); default: a temporary
    /// database, removed at the end.
    #[arg(long, value_name = "PATH", conflicts_with = "offline")]
    pub(crate) database: Option<PathBuf>,
    /// Use this broker (mqtt://HOST:PORT) instead of the embedded one. The
    /// demo uses topics and client ids of its own (dosetrack-demo-…).
    #[arg(long, value_name = "URL", conflicts_with = "offline")]
    pub(crate) broker: Option<String>,
}

fn parse_sex(s: &str) -> Result<Sex, String> {
    s.parse()
        .map_err(|e: dosetrack::vocab::UnknownName| format!("{e}: use female or male"))
}

fn parse_setting(s: &str) -> Result<Setting, String> {
    s.parse()
        .map_err(|e: dosetrack::vocab::UnknownName| format!("{e}: use ward or monitored"))
}
