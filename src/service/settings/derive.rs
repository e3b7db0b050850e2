//! What the daemon derives from a configuration: the drug file it names
//! ([`formulary`], [`formulary_and_table`]), stage A's checks
//! ([`intake_rules`]), the tracker's settings ([`tracker_config`]) and the
//! broker connections' ([`broker_config`]).

use super::*;

/// The drug file named by the config (or the built-in one) could not be
/// loaded. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum DrugLoadError {
    #[error("drug file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Its message names the file already.
    #[error("{0}")]
    Invalid(#[from] crate::drug::DrugFileError),
    /// The models cannot be derived against the reference patient.
    #[error("drug file {}: {source}", path.display())]
    Derive {
        path: PathBuf,
        #[source]
        source: crate::patient::DeriveError,
    },
    #[error("drug file {}: {source}", path.display())]
    Toml {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
}

/// Load the drug file named by the config (or the built-in one).
pub fn formulary(cfg: &Config) -> Result<Formulary, DrugLoadError> {
    formulary_and_table(cfg).map(|(formulary, _)| formulary)
}

/// The drug file named by the config, loaded and validated, with its parsed
/// TOML (for [`crate::reload::classify`]).
pub fn formulary_and_table(cfg: &Config) -> Result<(Formulary, toml::Table), DrugLoadError> {
    let (text, path) = match &cfg.drug.file {
        Some(p) => (
            std::fs::read_to_string(p).map_err(|source| DrugLoadError::Read {
                path: p.clone(),
                source,
            })?,
            p.clone(),
        ),
        None => (
            crate::drug::BUILTIN_TOML.to_owned(),
            PathBuf::from(crate::drug::BUILTIN_PATH),
        ),
    };
    let drug = DrugFile::from_toml_str(&text, &path)?;
    let formulary = Formulary::new(drug).map_err(|source| DrugLoadError::Derive {
        path: path.clone(),
        source,
    })?;
    let table = text
        .parse::<toml::Table>()
        .map_err(|source| DrugLoadError::Toml { path, source })?;
    Ok((formulary, table))
}

/// Stage A's checks beyond the contract, from the configuration: the clock
/// skew and past bounds (`[limits]`), the device allow-list
/// (`[devices]`, whose `allow_file` is read here) and the alert commands'
/// operator list and maximum age (`[alerts] operators`,
/// `max_command_age_min`).
pub fn intake_rules(cfg: &Config) -> Result<IntakeRules, ConfigError> {
    Ok(IntakeRules {
        max_future_skew_ms: (cfg.limits.max_future_skew_s * 1000) as i64,
        max_past_age_ms: Some((cfg.limits.max_past_age_h * 3_600_000) as i64),
        allowed_devices: cfg.devices.allowed()?.map(Arc::new),
        operators: (!cfg.alerts.operators.is_empty())
            .then(|| Arc::new(cfg.alerts.operators.iter().cloned().collect())),
        max_command_age_ms: Some((cfg.alerts.max_command_age_min * 60_000.0).round() as i64),
    })
}

/// The tracker's settings (`[state]`).
pub fn tracker_config(cfg: &Config) -> TrackerConfig {
    TrackerConfig {
        forecast_horizon_ms: (cfg.state.forecast_horizon_h * 3_600_000.0) as TimeMs,
        device_stale_after_ms: (cfg.state.device_stale_after_min * 60_000.0) as TimeMs,
    }
}

/// One broker connection's settings (`[broker]`), as `client_id`.
pub fn broker_config(cfg: &Config, client_id: String) -> BrokerConfig {
    let mut b = BrokerConfig::new(cfg.broker.host.clone(), cfg.broker.port, client_id);
    b.username = cfg.broker.username.clone();
    b.password = cfg.broker.password.clone();
    b.tls = cfg.broker.tls_client.clone();
    b.keep_alive = cfg.keep_alive();
    b.max_packet_bytes = cfg.broker.max_packet_bytes;
    b.held_input_bytes = cfg.broker.max_held_input_mib.saturating_mul(1024 * 1024);
    b
}
