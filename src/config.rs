//! The daemon's configuration: a TOML file (`config/dosetrack.toml` is the
//! documented default), environment overrides for secrets, and command-line
//! overrides for the common settings.
//!
//! Precedence, lowest first: built-in defaults, the file, the environment
//! (`DOSETRACK_BROKER_USERNAME`, `DOSETRACK_BROKER_PASSWORD`), the systemd
//! credential `broker-password` (the file `$CREDENTIALS_DIRECTORY/broker-password`,
//! from `LoadCredential=` in the unit), the command line. Unknown keys are
//! errors (a typo must not silently fall back to a default). The password
//! is never printed: `Debug` redacts it.

use serde::Deserialize;
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

/// Broker connection.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerSection {
    pub host: String,
    pub port: u16,
    /// Fixed client id: the broker keeps the session (and what arrives while
    /// the daemon is down) under it.
    pub client_id: String,
    pub username: Option<String>,
    /// Prefer the environment (or, under systemd, a credential file).
    pub password: Option<String>,
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
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_future_skew_s: 300,
        }
    }
}

/// The drug file.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DrugSection {
    /// `None`: the built-in `config/drugs/ketamine.toml`.
    pub file: Option<PathBuf>,
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
    pub drug: DrugSection,
    /// Alert rule timings (`[alerts]`); thresholds are in the drug file.
    pub alerts: crate::alerts::AlertConfig,
}

/// Command-line overrides.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// `mqtt://HOST:PORT`.
    pub broker: Option<String>,
    pub database: Option<PathBuf>,
    pub topic_prefix: Option<String>,
    pub client_id: Option<String>,
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
        if let Some(u) = env(ENV_USERNAME).filter(|s| !s.is_empty()) {
            cfg.broker.username = Some(u);
        }
        if let Some(p) = env(ENV_PASSWORD).filter(|s| !s.is_empty()) {
            cfg.broker.password = Some(p);
        }
        if let Some(dir) = env(ENV_CREDENTIALS_DIRECTORY).filter(|s| !s.is_empty()) {
            if let Some(p) = read_credential(&Path::new(&dir).join(CREDENTIAL_PASSWORD))? {
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
        cfg.validate()?;
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
        Ok(())
    }

    pub fn keep_alive(&self) -> Duration {
        Duration::from_secs(self.broker.keep_alive_s)
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
            "'{url}': only mqtt:// is supported here (TLS comes with the broker security work)"
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
