//! Reload (SIGHUP): the reload task reads and validates the config file and
//! its drug file again ([`load_files`]), classifies the differences
//! ([`crate::reload`]), logs one warning per refused key, and sends the
//! reloadable part ([`ReloadRequest`]) into stage B's loop, so it is
//! ordered with the input batches; once stage B has applied it, stage A's
//! checks ([`IntakeSettings`]) and the log level are replaced.
//!
//! What runs is kept as it was loaded ([`Running`]): a refused key stays
//! refused at the next reload, which compares with what runs, not with the
//! last file read ([`restore_key`]).

use crate::patient::Formulary;
use crate::service::logging::LogHandle;
use crate::service::settings::{
    self, formulary_and_table, intake_rules, Config, ConfigError, DrugLoadError, Overrides,
};
use crate::service::stage_a::IntakeSettings;
use crate::service::systemd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// How a running daemon is reloaded (SIGHUP): see
/// [`run_with`](crate::service::run_with).
pub struct Reloads {
    /// One message per reload request (a SIGHUP).
    pub requests: mpsc::Receiver<()>,
    /// The config file given at start (`--config`); `None`: built-in
    /// defaults, nothing to reload.
    pub file: Option<PathBuf>,
    /// The command line's overrides: they still win after a reload.
    pub overrides: Overrides,
    /// Applies a new `[log] level`.
    pub log: Option<LogHandle>,
}

/// The reloadable part of a new configuration, for stage B.
pub(super) struct ReloadRequest {
    pub(super) cfg: Config,
    /// A changed drug file.
    pub(super) formulary: Option<Arc<Formulary>>,
    pub(super) done: oneshot::Sender<()>,
}

/// What the daemon runs with, to compare a reload against.
pub(super) struct Running {
    pub(super) cfg: Config,
    /// The config file's TOML as last loaded (`None` until the first
    /// reload reads it: then the file as it was at start is not known
    /// exactly, see [`reloader`]).
    pub(super) config_table: Option<toml::Table>,
    pub(super) drug_table: toml::Table,
}

/// Why a reload was refused (the running configuration is kept).
#[derive(Debug, thiserror::Error)]
pub(super) enum ReloadError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {}: {source}", path.display())]
    Toml {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Drug(#[from] DrugLoadError),
}

/// Read and validate the config file and its drug file.
fn load_files(
    file: &Path,
    overrides: &Overrides,
) -> Result<(Config, toml::Table, Formulary, toml::Table), ReloadError> {
    let text = std::fs::read_to_string(file).map_err(|source| ReloadError::Read {
        path: file.to_owned(),
        source,
    })?;
    let table = text
        .parse::<toml::Table>()
        .map_err(|source| ReloadError::Toml {
            path: file.to_owned(),
            source,
        })?;
    let cfg = Config::load(Some(file), |k| std::env::var(k).ok(), overrides)?;
    let (formulary, drug_table) = formulary_and_table(&cfg)?;
    Ok((cfg, table, formulary, drug_table))
}

/// The reload task: one reload per request, until the daemon stops.
pub(super) async fn reloader(
    mut r: Reloads,
    mut running: Running,
    to_stage_b: mpsc::Sender<ReloadRequest>,
    intake: watch::Sender<IntakeSettings>,
    shutdown: CancellationToken,
) {
    // The config file as it was at start: read now (the daemon started a
    // moment ago; the same file).
    if let Some(file) = &r.file {
        running.config_table = std::fs::read_to_string(file)
            .ok()
            .and_then(|t| t.parse::<toml::Table>().ok());
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            req = r.requests.recv() => if req.is_none() { return },
        }
        systemd::reloading();
        let Some(file) = r.file.clone() else {
            warn!(signal = "SIGHUP", "reload: no config file was given at start (--config), so there is nothing to reload (built-in defaults and drug file); restart with --config to change settings");
            systemd::reloaded();
            continue;
        };
        let loaded = tokio::task::spawn_blocking({
            let overrides = r.overrides.clone();
            move || load_files(&file, &overrides)
        })
        .await;
        let (new_cfg, new_table, formulary, drug_table) = match loaded {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => {
                error!(error = %e, "reload refused: the configuration is invalid; keeping the running configuration");
                systemd::reloaded();
                continue;
            }
            Err(e) => {
                error!(error = %e, "reload failed; keeping the running configuration");
                systemd::reloaded();
                continue;
            }
        };
        let old_table = running.config_table.clone().unwrap_or_default();
        let classified = crate::reload::classify(
            &old_table,
            &new_table,
            &settings::overridden_keys(&r.overrides),
            &running.drug_table,
            &drug_table,
        );
        for c in &classified.refused {
            warn!(key = %c.key, "{}", c.refusal());
        }
        if classified.applied.is_empty() {
            info!(
                refused = classified.refused.len(),
                "reload: nothing to apply"
            );
            // The refused keys stay pending: the next reload compares with
            // what runs, not with this file.
            systemd::reloaded();
            continue;
        }
        let cfg = settings::reload_apply(&running.cfg, &new_cfg);
        let formulary = Arc::new(formulary);
        let (done_tx, done_rx) = oneshot::channel();
        let req = ReloadRequest {
            cfg: cfg.clone(),
            formulary: classified.drug_changed().then(|| formulary.clone()),
            done: done_tx,
        };
        if to_stage_b.send(req).await.is_err() || done_rx.await.is_err() {
            warn!("reload not applied: the daemon is stopping");
            return;
        }
        let intake_formulary = if classified.drug_changed() {
            formulary
        } else {
            intake.borrow().formulary.clone()
        };
        let rules = match intake_rules(&cfg) {
            Ok(rules) => rules,
            Err(e) => {
                warn!(error = %e, "intake limits and device allow-list not changed");
                intake.borrow().rules.clone()
            }
        };
        intake.send_replace(IntakeSettings {
            formulary: intake_formulary,
            rules,
            rejection_samples_per_minute: cfg.limits.rejection_samples_per_minute,
        });
        if cfg.log.level != running.cfg.log.level {
            if let Some(log) = &r.log {
                if let Err(e) = log.set_level(&cfg.log.level) {
                    warn!(error = %e, "log level not changed");
                }
            }
        }
        info!(
            changes = %classified.applied_summary(),
            refused = classified.refused.len(),
            "reloaded: {}",
            classified.applied_summary()
        );
        // What runs now: the applied keys from the new file, the refused
        // ones as before (so they are refused again at the next reload).
        let mut table = new_table;
        for c in &classified.refused {
            restore_key(&mut table, &old_table, &c.key);
        }
        running = Running {
            cfg,
            config_table: Some(table),
            drug_table,
        };
        systemd::reloaded();
    }
}

/// Set dotted `key` in `table` to its value in `from` (removed if absent
/// there).
fn restore_key(table: &mut toml::Table, from: &toml::Table, key: &str) {
    let parts: Vec<&str> = key.split('.').collect();
    let Some((last, path)) = parts.split_last() else {
        return;
    };
    let mut source = Some(from);
    let mut target = table;
    for p in path {
        source = source.and_then(|s| s.get(*p)).and_then(|v| v.as_table());
        let entry = target
            .entry((*p).to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(t) = entry.as_table_mut() else {
            return;
        };
        target = t;
    }
    match source.and_then(|s| s.get(*last)) {
        Some(v) => {
            target.insert((*last).to_owned(), v.clone());
        }
        None => {
            target.remove(*last);
        }
    }
}
