//! The daemon's configuration: a TOML file (`config/dosetrack.toml` is the
//! documented default), environment overrides for secrets, and command-line
//! overrides for the common settings.
//!
//! Precedence, lowest first: built-in defaults, the file (a password in
//! `broker.password_file`, or `broker.password`), the environment
//! (`DOSETRACK_BROKER_USERNAME`, `DOSETRACK_BROKER_PASSWORD`), the systemd
//! credential `broker-password` (the file `$CREDENTIALS_DIRECTORY/broker-password`,
//! from `LoadCredential=` in the unit), the command line. Unknown keys are
//! errors (a typo must not silently fall back to a default). The password
//! is never printed: `Debug` redacts it.
//!
//! TLS (`broker.tls = true`): the CA file, the client certificate and its
//! key (`broker.client_key_file`, or under systemd the credential
//! `broker-client-key`) are read and checked by [`Config::load`]; a missing
//! or unreadable file is a [`ConfigError::Invalid`] naming its key, so the
//! daemon does not start with it. The loaded configuration is
//! `broker.tls_client`; key contents are never printed.
//! A reload (SIGHUP, see [`crate::reload`]) loads the file again with the
//! same environment and the same command-line overrides: a setting given on
//! the command line still wins after a reload, whatever the file says.
//! `RUST_LOG` wins over `[log] level` at start only.
//!
//! It also owns what the daemon derives from a configuration: the drug file
//! it names ([`formulary`], [`formulary_and_table`]), stage A's checks
//! ([`intake_rules`]), the tracker's settings ([`tracker_config`]) and the
//! broker connections' ([`broker_config`]).

use crate::drug::DrugFile;
use crate::intake::IntakeRules;
use crate::mqtt::BrokerConfig;
use crate::patient::Formulary;
use crate::tracker::TrackerConfig;
use crate::vocab::TimeMs;
use serde::Deserialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Environment variable for the broker user name.
pub const ENV_USERNAME: &str = "DOSETRACK_BROKER_USERNAME";
/// Environment variable for the broker password.
pub const ENV_PASSWORD: &str = "DOSETRACK_BROKER_PASSWORD";
/// Set by systemd to the directory of the unit's credentials.
pub const ENV_CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";
/// The credential holding the broker password (`LoadCredential=broker-password:…`).
pub const CREDENTIAL_PASSWORD: &str = "broker-password";
/// The credential holding the TLS client key (`LoadCredential=broker-client-key:…`).
pub const CREDENTIAL_CLIENT_KEY: &str = "broker-client-key";

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

/// Broker connection. `Debug` never shows the password.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerSection {
    pub host: String,
    pub port: u16,
    /// Fixed client id: the broker keeps the session (and what arrives while
    /// the daemon is down) under it.
    pub client_id: String,
    pub username: Option<String>,
    /// Prefer `password_file`, the environment or, under systemd, the
    /// credential.
    pub password: Option<String>,
    /// A file holding the password (its first line); read at start.
    pub password_file: Option<PathBuf>,
    /// Connect over TLS (rustls): the broker's certificate must be signed by
    /// the CA in `ca_file` and name `host`.
    pub tls: bool,
    /// PEM file of the CA(s) that signed the broker's certificate; required
    /// with `tls`.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) presented to the broker; optional.
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate (under systemd, the
    /// credential `broker-client-key` instead).
    pub client_key_file: Option<PathBuf>,
    /// The TLS configuration loaded from the files above by [`Config::load`].
    #[serde(skip)]
    pub tls_client: Option<crate::mqtt::TlsClient>,
    pub keep_alive_s: u64,
    /// Largest packet accepted from the broker; above the contract's 64 KiB
    /// so an over-size input still arrives, is rejected `too_large`, stored
    /// and acknowledged.
    pub max_packet_bytes: usize,
    /// Most received input held at once, from the socket to the
    /// acknowledgement, in MiB: while it is held the daemon stops reading
    /// the broker connection (back-pressure, not buffering).
    pub max_held_input_mib: usize,
}

impl Default for BrokerSection {
    fn default() -> Self {
        BrokerSection {
            host: "127.0.0.1".to_owned(),
            port: 1883,
            client_id: "dosetrack".to_owned(),
            username: None,
            password: None,
            password_file: None,
            tls: false,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            tls_client: None,
            keep_alive_s: 30,
            max_packet_bytes: 1024 * 1024,
            max_held_input_mib: 16,
        }
    }
}

impl std::fmt::Debug for BrokerSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerSection")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("password_file", &self.password_file)
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .field("client_cert_file", &self.client_cert_file)
            .field("client_key_file", &self.client_key_file)
            .field("tls_client", &self.tls_client)
            .field("keep_alive_s", &self.keep_alive_s)
            .field("max_packet_bytes", &self.max_packet_bytes)
            .field("max_held_input_mib", &self.max_held_input_mib)
            .finish()
    }
}

/// Topics.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsSection {
    /// Every topic starts with `{prefix}/v1/`.
    pub prefix: String,
}

impl Default for TopicsSection {
    fn default() -> Self {
        TopicsSection {
            prefix: "dosetrack".to_owned(),
        }
    }
}

/// The SQLite database.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSection {
    pub path: PathBuf,
    /// Most inputs committed in one transaction.
    pub batch_max: usize,
    /// Longest wait to fill a batch, in ms.
    pub batch_window_ms: u64,
    /// Days of sampled concentration history kept (0 = keep forever).
    /// Inputs, rejected messages, alerts and published states are always
    /// kept.
    pub history_retention_days: u32,
    /// Database care (retention, WAL checkpoint, optimize) runs at start
    /// and this often (h).
    pub maintenance_interval_h: u32,
}

impl Default for DatabaseSection {
    fn default() -> Self {
        DatabaseSection {
            path: PathBuf::from("dosetrack.db"),
            batch_max: 256,
            batch_window_ms: 2,
            history_retention_days: 90,
            maintenance_interval_h: 6,
        }
    }
}

/// Patient state and history.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StateSection {
    /// The state message is republished at least this often (s).
    pub interval_s: u64,
    /// Concentration history is sampled this often per tracked patient (s).
    pub history_interval_s: u64,
    /// How far ahead the state's forecast looks (h).
    pub forecast_horizon_h: f64,
    /// A delivering device not heard from for this long makes the state
    /// stale (min).
    pub device_stale_after_min: f64,
    /// A patient whose last stay ended this long ago is released from
    /// memory (min); a later input for them reloads their stored inputs.
    pub release_after_discharge_min: f64,
}

impl Default for StateSection {
    fn default() -> Self {
        StateSection {
            interval_s: 60,
            history_interval_s: 60,
            forecast_horizon_h: 12.0,
            device_stale_after_min: 10.0,
            release_after_discharge_min: 60.0,
        }
    }
}

/// Input limits.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Inputs dated further ahead of the daemon's clock are rejected
    /// `clock_skew` (s).
    pub max_future_skew_s: u64,
    /// Inputs dated further behind the daemon's clock are rejected
    /// `invalid_value` on `time` (h). dosetrack's plausibility bound:
    /// longer than any gateway buffer, broker queue or late charting
    /// correction, short enough to refuse a 1970 or year-1 time.
    pub max_past_age_h: u64,
    /// Rejections of one source with one code stored in full (and
    /// published) per minute; the rest of that minute are counted
    /// (`rejection_counts`). At least 1.
    pub rejection_samples_per_minute: u32,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_future_skew_s: 300,
            max_past_age_h: 720,
            rejection_samples_per_minute: 10,
        }
    }
}

/// The device allow-list (`[devices]`).
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DevicesSection {
    /// Device ids whose events are accepted. With `allow_file`, the union.
    /// Both empty/unset: every device is accepted.
    pub allow: Vec<String>,
    /// A file of device ids, one per line (blank lines and `#` comments
    /// ignored). It must list at least one device.
    pub allow_file: Option<PathBuf>,
}

impl DevicesSection {
    /// The allow-list (`allow` plus `allow_file`); `None` when every device
    /// is accepted. Reads `allow_file`.
    pub fn allowed(&self) -> Result<Option<HashSet<String>>, ConfigError> {
        let mut ids: HashSet<String> = HashSet::new();
        for id in &self.allow {
            if !crate::contract::is_name(id) {
                return Err(ConfigError::Invalid {
                    key: "devices.allow",
                    message: format!(
                        "'{id}' is not a device id (1 to 64 characters of A-Za-z0-9._-)"
                    ),
                });
            }
            ids.insert(id.clone());
        }
        if let Some(path) = &self.allow_file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
                path: path.clone(),
                source,
            })?;
            let listed = parse_device_list(&text).map_err(|message| ConfigError::Parse {
                path: path.clone(),
                message,
            })?;
            if listed.is_empty() {
                return Err(ConfigError::Parse {
                    path: path.clone(),
                    message: "devices.allow_file lists no device; remove allow_file to accept every device".to_owned(),
                });
            }
            ids.extend(listed);
        }
        Ok((!ids.is_empty()).then_some(ids))
    }
}

/// The device ids of an allow file: one per line, blank lines and `#`
/// comments ignored, surrounding spaces trimmed.
pub fn parse_device_list(text: &str) -> Result<Vec<String>, String> {
    let mut ids = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let id = line.split('#').next().unwrap_or_default().trim();
        if id.is_empty() {
            continue;
        }
        if !crate::contract::is_name(id) {
            return Err(format!(
                "line {}: '{id}' is not a device id (1 to 64 characters of A-Za-z0-9._-)",
                n + 1
            ));
        }
        ids.push(id.to_owned());
    }
    Ok(ids)
}

/// The drug file.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DrugSection {
    /// `None`: the built-in `config/drugs/ketamine.toml`.
    pub file: Option<PathBuf>,
}

/// How the daemon logs (`[log]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// A `tracing` filter: `info`, `debug`, `dosetrack=debug,rumqttc=warn`.
    /// `RUST_LOG`, when set, wins at start; a reload (SIGHUP) applies this.
    pub level: String,
    /// `auto` (the journal when stderr is connected to it, else text),
    /// `text`, `json` (one object per line) or `journald`.
    pub format: LogFormat,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            level: "info".to_owned(),
            format: LogFormat::Auto,
        }
    }
}

/// Where and how log records are written.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `journald` when stderr is the journal (`$JOURNAL_STREAM`), else
    /// `text`.
    #[default]
    Auto,
    /// Human-readable lines on stderr.
    Text,
    /// One JSON object per line on stderr.
    Json,
    /// Native journal records with structured fields.
    Journald,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Auto => "auto",
            LogFormat::Text => "text",
            LogFormat::Json => "json",
            LogFormat::Journald => "journald",
        }
    }
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(LogFormat::Auto),
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            "journald" => Ok(LogFormat::Journald),
            _ => Err(format!("'{s}': must be one of auto, text, json, journald")),
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub broker: BrokerSection,
    pub topics: TopicsSection,
    pub database: DatabaseSection,
    pub state: StateSection,
    pub limits: LimitsSection,
    /// The device allow-list (`[devices]`).
    pub devices: DevicesSection,
    pub drug: DrugSection,
    /// Alert rule timings (`[alerts]`); thresholds are in the drug file.
    pub alerts: crate::alerts::AlertConfig,
    /// The health and metrics listener (`[http]`).
    pub http: HttpSection,
    /// Logging (`[log]`).
    pub log: LogSection,
}

/// Command-line overrides.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// `mqtt://HOST:PORT`.
    pub broker: Option<String>,
    pub database: Option<PathBuf>,
    pub topic_prefix: Option<String>,
    pub client_id: Option<String>,
    /// `--log-format`.
    pub log_format: Option<LogFormat>,
}

impl Config {
    /// Parse a configuration file's text.
    pub fn from_toml_str(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Build the configuration: defaults, then `file` if given, then the
    /// environment, then `overrides`; validated.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        let mut cfg = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
                    path: path.to_owned(),
                    source,
                })?;
                Self::from_toml_str(&text, path)?
            }
            None => Config::default(),
        };
        if let Some(path) = &cfg.broker.password_file {
            if cfg.broker.password.is_some() {
                return Err(ConfigError::Invalid {
                    key: "broker.password_file",
                    message: "set broker.password or broker.password_file, not both".into(),
                });
            }
            match read_credential(path) {
                Ok(Some(p)) => cfg.broker.password = Some(p),
                Ok(None) => {
                    return Err(ConfigError::Invalid {
                        key: "broker.password_file",
                        message: format!("{} is missing or empty", path.display()),
                    })
                }
                Err(e) => {
                    return Err(ConfigError::Invalid {
                        key: "broker.password_file",
                        message: e.to_string(),
                    })
                }
            }
        }
        if let Some(u) = env(ENV_USERNAME).filter(|s| !s.is_empty()) {
            cfg.broker.username = Some(u);
        }
        if let Some(p) = env(ENV_PASSWORD).filter(|s| !s.is_empty()) {
            cfg.broker.password = Some(p);
        }
        let credentials = env(ENV_CREDENTIALS_DIRECTORY)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from);
        if let Some(dir) = &credentials {
            if let Some(p) = read_credential(&dir.join(CREDENTIAL_PASSWORD))? {
                cfg.broker.password = Some(p);
            }
        }
        if let Some(url) = &overrides.broker {
            let (host, port) = parse_broker_url(url)?;
            cfg.broker.host = host;
            cfg.broker.port = port;
        }
        if let Some(db) = &overrides.database {
            cfg.database.path = db.clone();
        }
        if let Some(prefix) = &overrides.topic_prefix {
            cfg.topics.prefix = prefix.clone();
        }
        if let Some(id) = &overrides.client_id {
            cfg.broker.client_id = id.clone();
        }
        if let Some(f) = overrides.log_format {
            cfg.log.format = f;
        }
        cfg.validate()?;
        cfg.broker.tls_client = cfg.broker.load_tls(credentials.as_deref())?;
        let ack = &mut cfg.http.acknowledge;
        if let (true, OperatorIdentity::Token, Some(path)) =
            (ack.enabled, ack.identity, &ack.tokens_file)
        {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
                path: path.to_owned(),
                source,
            })?;
            ack.tokens = OperatorTokens::parse(&text).map_err(|message| ConfigError::Invalid {
                key: "http.acknowledge.tokens_file",
                message: format!("{}: {message}", path.display()),
            })?;
            if ack.tokens.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "http.acknowledge.tokens_file",
                    message: format!("{} holds no token", path.display()),
                });
            }
        }
        Ok(cfg)
    }

    /// Check every value is usable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.to_owned(),
            })
        };
        if self.broker.host.trim().is_empty() {
            return invalid("broker.host", "must not be empty");
        }
        if let Err(e) = self.alerts.validate() {
            return Err(ConfigError::Invalid {
                key: "alerts",
                message: e.to_string(),
            });
        }
        if self.broker.port == 0 {
            return invalid("broker.port", "must be 1 to 65535");
        }
        let b = &self.broker;
        if b.tls {
            if b.ca_file.is_none() {
                return invalid(
                    "broker.ca_file",
                    "required with broker.tls = true: the PEM file of the CA that signed the broker's certificate",
                );
            }
        } else {
            for (key, set) in [
                ("broker.ca_file", b.ca_file.is_some()),
                ("broker.client_cert_file", b.client_cert_file.is_some()),
                ("broker.client_key_file", b.client_key_file.is_some()),
            ] {
                if set {
                    return invalid(
                        key,
                        "set, but broker.tls is false: set tls = true, or remove it",
                    );
                }
            }
        }
        if b.client_key_file.is_some() && b.client_cert_file.is_none() {
            return invalid(
                "broker.client_cert_file",
                "required with broker.client_key_file",
            );
        }
        if !valid_client_id(&self.broker.client_id) {
            return invalid(
                "broker.client_id",
                "must be 1 to 64 characters of A-Za-z0-9._-",
            );
        }
        if !(5..=3600).contains(&self.broker.keep_alive_s) {
            return invalid("broker.keep_alive_s", "must be 5 to 3600");
        }
        if self.broker.max_packet_bytes < crate::contract::MAX_PAYLOAD_BYTES + 1024 {
            return invalid(
                "broker.max_packet_bytes",
                "must exceed the contract's 64 KiB payload limit (with headers), so over-size inputs are rejected and acknowledged instead of dropping the connection",
            );
        }
        if self.broker.max_held_input_mib == 0
            || self.broker.max_held_input_mib * 1024 * 1024 < 2 * self.broker.max_packet_bytes
        {
            return invalid(
                "broker.max_held_input_mib",
                "must be at least 1 and hold two packets of max_packet_bytes",
            );
        }
        let p = &self.topics.prefix;
        if p.is_empty()
            || p.len() > 64
            || p.contains(['+', '#', '\0'])
            || p.starts_with('/')
            || p.ends_with('/')
        {
            return invalid(
                "topics.prefix",
                "must be 1 to 64 characters, without MQTT wildcards (+ #) or leading/trailing '/'",
            );
        }
        if let Err(why) = prefix_round_trips(p) {
            return invalid("topics.prefix", &why);
        }
        if self.database.path.as_os_str().is_empty() {
            return invalid("database.path", "must not be empty");
        }
        if !(1..=10_000).contains(&self.database.batch_max) {
            return invalid("database.batch_max", "must be 1 to 10000");
        }
        if self.database.batch_window_ms > 1000 {
            return invalid("database.batch_window_ms", "must be at most 1000");
        }
        if self.database.history_retention_days > 36_500 {
            return invalid(
                "database.history_retention_days",
                "must be 0 (keep forever) to 36500",
            );
        }
        if !(1..=168).contains(&self.database.maintenance_interval_h) {
            return invalid("database.maintenance_interval_h", "must be 1 to 168");
        }
        if !(1..=3600).contains(&self.state.interval_s) {
            return invalid("state.interval_s", "must be 1 to 3600");
        }
        if !(1..=3600).contains(&self.state.history_interval_s) {
            return invalid("state.history_interval_s", "must be 1 to 3600");
        }
        let h = self.state.forecast_horizon_h;
        if !(h.is_finite() && h > 0.0 && h <= 168.0) {
            return invalid(
                "state.forecast_horizon_h",
                "must be above 0 and at most 168",
            );
        }
        let r = self.state.release_after_discharge_min;
        if !(r.is_finite() && (0.0..=10_080.0).contains(&r)) {
            return invalid(
                "state.release_after_discharge_min",
                "must be 0 to 10080 (7 days)",
            );
        }
        let m = self.state.device_stale_after_min;
        if !(m.is_finite() && m > 0.0 && m <= 1440.0) {
            return invalid(
                "state.device_stale_after_min",
                "must be above 0 and at most 1440",
            );
        }
        if self.limits.max_future_skew_s > 86_400 {
            return invalid("limits.max_future_skew_s", "must be at most 86400");
        }
        self.http.listen_addr()?;
        if !is_time_zone_name(&self.http.time_zone) {
            return invalid(
                "http.time_zone",
                "must be an IANA time zone name such as UTC or Europe/Paris",
            );
        }
        if !(1..=86_400).contains(&self.http.max_unacked_age_s) {
            return invalid("http.max_unacked_age_s", "must be 1 to 86400");
        }
        let ack = &self.http.acknowledge;
        if ack.enabled {
            let Some(addr) = self.http.listen_addr()? else {
                return invalid(
                    "http.acknowledge.enabled",
                    "needs http.listen (the pages are served there)",
                );
            };
            match ack.identity {
                OperatorIdentity::ProxyHeader => {
                    if !addr.ip().is_loopback() {
                        return invalid(
                            "http.acknowledge.identity",
                            "proxy_header needs http.listen on loopback behind the \
                             authenticating proxy: anyone reaching another address could \
                             set the header and acknowledge as anybody (use token)",
                        );
                    }
                    if axum::http::HeaderName::from_bytes(ack.header.as_bytes()).is_err() {
                        return invalid(
                            "http.acknowledge.header",
                            "must be an HTTP header name such as X-Remote-User",
                        );
                    }
                }
                OperatorIdentity::Token => {
                    if ack.tokens_file.is_none() {
                        return invalid(
                            "http.acknowledge.tokens_file",
                            "identity = \"token\" needs a tokens file (OPERATOR TOKEN lines)",
                        );
                    }
                }
            }
        }
        if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&self.log.level) {
            return Err(ConfigError::Invalid {
                key: "log.level",
                message: format!("'{}' is not a log filter: {e}", self.log.level),
            });
        }
        if self.limits.rejection_samples_per_minute == 0 {
            return invalid(
                "limits.rejection_samples_per_minute",
                "must be at least 1 (the rest of a minute's repeats are counted)",
            );
        }
        if !(1..=87_600).contains(&self.limits.max_past_age_h) {
            return invalid("limits.max_past_age_h", "must be 1 to 87600 (10 years)");
        }
        // Reads allow_file: a missing or malformed list fails at start (and
        // in check-config), not at the first device event.
        self.devices.allowed()?;
        Ok(())
    }

    pub fn keep_alive(&self) -> Duration {
        Duration::from_secs(self.broker.keep_alive_s)
    }
}

impl BrokerSection {
    /// With `tls`: read and check the CA, client certificate and key files
    /// (the key from the systemd credential `broker-client-key` when it is
    /// in `credentials`, else `client_key_file`).
    fn load_tls(
        &self,
        credentials: Option<&Path>,
    ) -> Result<Option<crate::mqtt::TlsClient>, ConfigError> {
        use crate::mqtt::tls::ClientIdentity;
        let Some(ca_file) = self.ca_file.as_deref().filter(|_| self.tls) else {
            return Ok(None);
        };
        let credential_key = credentials
            .map(|d| d.join(CREDENTIAL_CLIENT_KEY))
            .filter(|p| p.is_file());
        let key = match (&credential_key, &self.client_key_file) {
            (Some(p), _) => Some((p.as_path(), "credential broker-client-key")),
            (None, Some(p)) => Some((p.as_path(), "broker.client_key_file")),
            (None, None) => None,
        };
        let identity = match (&self.client_cert_file, key) {
            (None, None) => None,
            (Some(cert), Some((key_file, key_setting))) => Some(ClientIdentity {
                cert_file: cert,
                key_file,
                key_setting,
            }),
            (Some(_), None) => {
                return Err(ConfigError::Invalid {
                    key: "broker.client_key_file",
                    message: "required with broker.client_cert_file (or the systemd credential broker-client-key)".into(),
                })
            }
            (None, Some(_)) => {
                return Err(ConfigError::Invalid {
                    key: "broker.client_cert_file",
                    message: "required with a client key (the systemd credential broker-client-key is present)".into(),
                })
            }
        };
        crate::mqtt::TlsClient::load(ca_file, identity)
            .map(Some)
            .map_err(|e| ConfigError::Invalid {
                key: e.key,
                message: e.message,
            })
    }
}

/// A credential file's text without its trailing newline; `None` when the
/// file is absent (the credential is optional) or empty.
fn read_credential(path: &Path) -> Result<Option<String>, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let secret = text.trim_end_matches(['\n', '\r']);
            Ok((!secret.is_empty()).then(|| secret.to_owned()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ConfigError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

fn valid_client_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// `mqtt://HOST:PORT` (or `HOST:PORT`, or `mqtt://HOST` for port 1883).
pub fn parse_broker_url(url: &str) -> Result<(String, u16), ConfigError> {
    let bad = |message: String| ConfigError::Invalid {
        key: "--broker",
        message,
    };
    let rest = url.strip_prefix("mqtt://").unwrap_or(url);
    if rest.contains("://") {
        return Err(bad(format!(
            "'{url}': only mqtt://HOST:PORT here; for TLS set [broker] tls = true and ca_file in the config file"
        )));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad(format!("'{url}': port must be 1 to 65535")))?,
        ),
        None => (rest, 1883),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains('/') {
        return Err(bad(format!("'{url}' is not mqtt://HOST:PORT")));
    }
    Ok((host.to_owned(), port))
}

/// The keys the command line sets (they keep their command-line value).
pub fn overridden_keys(o: &Overrides) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if o.broker.is_some() {
        keys.extend(["broker.host", "broker.port"]);
    }
    if o.database.is_some() {
        keys.push("database.path");
    }
    if o.topic_prefix.is_some() {
        keys.push("topics.prefix");
    }
    if o.client_id.is_some() {
        keys.push("broker.client_id");
    }
    if o.log_format.is_some() {
        keys.push("log.format");
    }
    keys
}

/// The configuration to run with after a reload (see
/// [`dosetrack_core::reload`]): `running` with the
/// reloadable sections of `new` (everything refused keeps its running
/// value).
pub fn reload_apply(running: &Config, new: &Config) -> Config {
    let mut cfg = running.clone();
    cfg.state = new.state.clone();
    cfg.limits = new.limits.clone();
    cfg.drug = new.drug.clone();
    cfg.alerts = new.alerts.clone();
    cfg.log.level = new.log.level.clone();
    cfg
}

mod derive;
mod http;
pub use derive::*;
pub use http::*;

/// Whether every input topic built with `prefix` parses back to the same
/// topic under the same prefix, as the daemon does with the stored inputs
/// at each start (the prefix is found again from the stored topic, before
/// its first `/v1/`). A prefix with a `v1` segment of its own (`site/v1`)
/// does not: the daemon would take every stored input for another prefix's
/// and lose every patient at restart.
fn prefix_round_trips(prefix: &str) -> Result<(), String> {
    use crate::contract::{parse_topic, prefix_of, Topics};
    let topics = Topics::new(prefix);
    for topic in [
        topics.admit("P-1"),
        topics.discharge("P-1"),
        topics.doses("P-1"),
        topics.device_events("pump-1"),
        topics.alert_commands("al-1"),
    ] {
        if prefix_of(&topic) != Some(prefix) {
            return Err(format!(
                "'{prefix}' cannot be told apart from the contract version in a topic such as '{topic}' (a stored input would be read under the prefix '{}' at the next start); choose a prefix without a 'v1' segment",
                prefix_of(&topic).unwrap_or("")
            ));
        }
        if let Err(r) = parse_topic(prefix, &topic) {
            return Err(format!(
                "'{prefix}' does not round-trip through the topic grammar ({topic}: {})",
                r.message
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
