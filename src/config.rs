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

use serde::Deserialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
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
}

impl Default for StateSection {
    fn default() -> Self {
        StateSection {
            interval_s: 60,
            history_interval_s: 60,
            forecast_horizon_h: 12.0,
            device_stale_after_min: 10.0,
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
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_future_skew_s: 300,
            max_past_age_h: 720,
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

/// The health and metrics listener (`/healthz`, `/metrics`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// `IP:PORT` to listen on; `None` (the built-in default): no listener.
    /// Loopback is expected; another address is allowed (a scraper on the
    /// hospital network) and logged as a warning at start.
    pub listen: Option<String>,
    /// `/healthz` answers 503 when an input has waited this long without
    /// being acknowledged (s).
    pub max_unacked_age_s: u64,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            listen: None,
            max_unacked_age_s: 60,
        }
    }
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

impl HttpSection {
    /// The address to listen on, if the listener is on.
    pub fn listen_addr(&self) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        self.listen
            .as_deref()
            .map(|a| {
                a.parse().map_err(|_| ConfigError::Invalid {
                    key: "http.listen",
                    message: format!("'{a}' is not IP:PORT (e.g. 127.0.0.1:9187)"),
                })
            })
            .transpose()
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
        if let Err(message) = self.alerts.validate() {
            return Err(ConfigError::Invalid {
                key: "alerts",
                message,
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
        if !(1..=86_400).contains(&self.http.max_unacked_age_s) {
            return invalid("http.max_unacked_age_s", "must be 1 to 86400");
        }
        if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&self.log.level) {
            return Err(ConfigError::Invalid {
                key: "log.level",
                message: format!("'{}' is not a log filter: {e}", self.log.level),
            });
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

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = include_str!("../config/dosetrack.toml");

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn the_shipped_file_is_the_defaults() {
        let cfg = Config::from_toml_str(SHIPPED, Path::new("config/dosetrack.toml")).unwrap();
        cfg.validate().unwrap();
        let mut expected = Config::default();
        expected.database.path = PathBuf::from("/var/lib/dosetrack/dosetrack.db");
        // The built-in default has no listener; the shipped file turns it on
        // (loopback).
        expected.http.listen = Some("127.0.0.1:9187".to_owned());
        assert_eq!(cfg, expected);
    }

    #[test]
    fn precedence_is_defaults_file_env_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[broker]\nhost = \"broker.ward\"\nport = 8883\nusername = \"file\"\n",
        )
        .unwrap();
        let env = |k: &str| match k {
            ENV_USERNAME => Some("env-user".to_owned()),
            ENV_PASSWORD => Some("s3cret".to_owned()),
            _ => None,
        };
        let cfg = Config::load(
            Some(&path),
            env,
            &Overrides {
                broker: Some("mqtt://127.0.0.1:1999".into()),
                database: Some("/tmp/x.db".into()),
                topic_prefix: Some("test-1".into()),
                client_id: Some("dt-test".into()),
                log_format: Some(LogFormat::Json),
            },
        )
        .unwrap();
        assert_eq!(
            (cfg.broker.host.as_str(), cfg.broker.port),
            ("127.0.0.1", 1999)
        );
        assert_eq!(cfg.broker.username.as_deref(), Some("env-user"));
        assert_eq!(cfg.broker.password.as_deref(), Some("s3cret"));
        assert_eq!(cfg.topics.prefix, "test-1");
        assert_eq!(cfg.broker.client_id, "dt-test");
        assert_eq!(cfg.database.path, PathBuf::from("/tmp/x.db"));
        assert_eq!(cfg.log.format, LogFormat::Json);
        assert!(
            !format!("{cfg:?}").contains("s3cret"),
            "password must not be printed"
        );
    }

    #[test]
    fn typos_and_bad_values_are_errors_naming_the_key() {
        let typo = Config::from_toml_str("[broker]\nhots = \"x\"\n", Path::new("c.toml"));
        assert!(
            matches!(typo, Err(ConfigError::Parse { message, .. }) if message.contains("hots"))
        );
        for (text, key) in [
            ("[broker]\nport = 0\n", "broker.port"),
            ("[broker]\nclient_id = \"has space\"\n", "broker.client_id"),
            (
                "[broker]\nmax_packet_bytes = 1000\n",
                "broker.max_packet_bytes",
            ),
            ("[topics]\nprefix = \"a/#\"\n", "topics.prefix"),
            (
                "[state]\nforecast_horizon_h = 0\n",
                "state.forecast_horizon_h",
            ),
            ("[database]\nbatch_max = 0\n", "database.batch_max"),
            ("[http]\nlisten = \"localhost\"\n", "http.listen"),
            ("[http]\nmax_unacked_age_s = 0\n", "http.max_unacked_age_s"),
            ("[log]\nlevel = \"dosetrack=loud\"\n", "log.level"),
            ("[limits]\nmax_past_age_h = 0\n", "limits.max_past_age_h"),
            ("[devices]\nallow = [\"pump 1\"]\n", "devices.allow"),
            (
                "[database]\nhistory_retention_days = 36501\n",
                "database.history_retention_days",
            ),
            (
                "[database]\nmaintenance_interval_h = 0\n",
                "database.maintenance_interval_h",
            ),
            (
                "[database]\nmaintenance_interval_h = 169\n",
                "database.maintenance_interval_h",
            ),
        ] {
            let cfg = Config::from_toml_str(text, Path::new("c.toml")).unwrap();
            match cfg.validate() {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_device_allow_list_is_the_union_of_allow_and_allow_file() {
        assert_eq!(DevicesSection::default().allowed().unwrap(), None);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("devices.allow");
        std::fs::write(&file, "# ward 7 pumps\npump-1\n\n  pump-2  # bed 2\n").unwrap();
        let text = format!(
            "[devices]\nallow = [\"patch-9\"]\nallow_file = {:?}\n",
            file.to_str().unwrap()
        );
        let cfg = Config::from_toml_str(&text, Path::new("c.toml")).unwrap();
        cfg.validate().unwrap();
        let allowed = cfg.devices.allowed().unwrap().unwrap();
        let mut ids: Vec<_> = allowed.into_iter().collect();
        ids.sort();
        assert_eq!(ids, ["patch-9", "pump-1", "pump-2"]);
        // An empty file, a bad id, a missing file: errors, never "allow all".
        for (content, what) in [("# none\n", "no device"), ("pump 3\n", "line 1")] {
            std::fs::write(&file, content).unwrap();
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(what), "{err}");
        }
        std::fs::remove_file(&file).unwrap();
        assert!(matches!(cfg.validate(), Err(ConfigError::Io { .. })));
    }

    #[test]
    fn the_password_credential_wins_over_the_environment_and_is_optional() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().to_str().unwrap().to_owned();
        let env = |k: &str| match k {
            ENV_PASSWORD => Some("from-env".to_owned()),
            ENV_CREDENTIALS_DIRECTORY => Some(creds.clone()),
            _ => None,
        };
        // Absent credential: the environment's.
        let cfg = Config::load(None, env, &Overrides::default()).unwrap();
        assert_eq!(cfg.broker.password.as_deref(), Some("from-env"));
        std::fs::write(dir.path().join(CREDENTIAL_PASSWORD), "cred-s3cret\n").unwrap();
        let cfg = Config::load(None, env, &Overrides::default()).unwrap();
        assert_eq!(cfg.broker.password.as_deref(), Some("cred-s3cret"));
        assert!(!format!("{cfg:?}").contains("cred-s3cret"));
    }

    #[test]
    fn the_password_file_is_read_at_start_and_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "file-s3cret\n").unwrap();
        let path = dir.path().join("c.toml");
        let text = format!(
            "[broker]\nusername = \"dt\"\npassword_file = \"{}\"\n",
            pw.display()
        );
        std::fs::write(&path, &text).unwrap();
        let cfg = Config::load(Some(&path), no_env, &Overrides::default()).unwrap();
        assert_eq!(cfg.broker.password.as_deref(), Some("file-s3cret"));
        assert!(!format!("{cfg:?}").contains("file-s3cret"));
        // Missing, or set together with `password`: errors naming the key.
        std::fs::remove_file(&pw).unwrap();
        let missing = Config::load(Some(&path), no_env, &Overrides::default());
        assert!(
            matches!(
                missing,
                Err(ConfigError::Invalid {
                    key: "broker.password_file",
                    ..
                })
            ),
            "{missing:?}"
        );
        std::fs::write(&path, format!("{text}password = \"x\"\n")).unwrap();
        let both = Config::load(Some(&path), no_env, &Overrides::default());
        assert!(
            matches!(
                both,
                Err(ConfigError::Invalid {
                    key: "broker.password_file",
                    ..
                })
            ),
            "{both:?}"
        );
    }

    #[test]
    fn tls_settings_are_checked_and_their_files_read_at_start() {
        for (text, key) in [
            ("[broker]\ntls = true\n", "broker.ca_file"),
            ("[broker]\nca_file = \"/x/ca.crt\"\n", "broker.ca_file"),
            (
                "[broker]\ntls = true\nca_file = \"/x/ca.crt\"\nclient_key_file = \"/x/k\"\n",
                "broker.client_cert_file",
            ),
        ] {
            let cfg = Config::from_toml_str(text, Path::new("c.toml")).unwrap();
            match cfg.validate() {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let ca = dir.path().join("nope.crt");
        std::fs::write(
            &path,
            format!("[broker]\ntls = true\nca_file = \"{}\"\n", ca.display()),
        )
        .unwrap();
        match Config::load(Some(&path), no_env, &Overrides::default()) {
            Err(
                e @ ConfigError::Invalid {
                    key: "broker.ca_file",
                    ..
                },
            ) => {
                assert!(e.to_string().contains("nope.crt"), "{e}")
            }
            other => panic!("{other:?}"),
        }
        // A client certificate needs a key (file or credential).
        std::fs::write(&ca, "not pem").unwrap();
        std::fs::write(
            &path,
            format!(
                "[broker]\ntls = true\nca_file = \"{}\"\nclient_cert_file = \"{}\"\n",
                ca.display(),
                ca.display()
            ),
        )
        .unwrap();
        let no_key = Config::load(Some(&path), no_env, &Overrides::default());
        assert!(
            matches!(
                no_key,
                Err(ConfigError::Invalid {
                    key: "broker.client_key_file",
                    ..
                })
            ),
            "{no_key:?}"
        );
    }

    #[test]
    fn broker_urls() {
        assert_eq!(
            parse_broker_url("mqtt://127.0.0.1:1883").unwrap(),
            ("127.0.0.1".into(), 1883)
        );
        assert_eq!(
            parse_broker_url("broker:1999").unwrap(),
            ("broker".into(), 1999)
        );
        assert_eq!(
            parse_broker_url("mqtt://broker").unwrap(),
            ("broker".into(), 1883)
        );
        assert!(parse_broker_url("mqtts://broker:8883").is_err());
        assert!(parse_broker_url("mqtt://:1883").is_err());
        assert!(parse_broker_url("mqtt://h:0").is_err());
        assert!(parse_broker_url("mqtt://h:99999").is_err());
        assert!(Config::load(None, no_env, &Overrides::default()).is_ok());
    }
}
