//! The service commands: `run` (the daemon, until a stop signal),
//! `check-config` (a config validated and shown, nothing started), `db
//! backup` (an online copy of the database) and the hidden `generate`
//! (completions and man pages from the clap definition, for packaging).

use super::args::{CheckConfigArgs, Cli, DbBackupArgs, GenerateCommand, ServiceArgs};
use super::runtime::{self, Ending, Signals};
use super::{input_error, LOG_TARGET};
use anyhow::Context as _;
use std::io::Write;
use std::path::{Path, PathBuf};

/// `dosetrack run`: the service, with its signals (SIGTERM/SIGINT stop,
/// SIGHUP reloads), until it stops.
pub(crate) fn run(args: &ServiceArgs) -> anyhow::Result<()> {
    let cfg = args.config()?;
    let log = dosetrack::service::logging::init(cfg.log.format, &cfg.log.level);
    let file = args.config.clone();
    let overrides = args.overrides();
    runtime::block_on(Signals::Service, Ending::Wait, |stop| async move {
        tracing::info!(
            target: LOG_TARGET,
            broker = %format!("{}:{}", cfg.broker.host, cfg.broker.port),
            client_id = %cfg.broker.client_id,
            tls = cfg.broker.tls_client.is_some(),
            prefix = %cfg.topics.prefix,
            database = %cfg.database.path.display(),
            log_format = log.as_ref().map_or("?", |l| l.format.as_str()),
            "dosetrack starting — decision support, not a certified medical device"
        );
        let reloads = stop.reloads.map(|requests| dosetrack::service::Reloads {
            requests,
            file,
            overrides,
            log,
        });
        dosetrack::service::run_with(cfg, stop.shutdown, reloads)
            .await
            .map(|_| ())
            .map_err(anyhow::Error::from)
    })?
}

/// `dosetrack check-config [FILE]`: the config and its drug file, loaded and
/// validated as `run` would, nothing started.
pub(crate) fn check_config(a: &CheckConfigArgs, out: &mut impl Write) -> anyhow::Result<()> {
    use dosetrack::service::settings::{
        Config, Overrides, CREDENTIAL_PASSWORD, ENV_CREDENTIALS_DIRECTORY,
    };
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
        dosetrack::service::formulary(&cfg).map_err(|e| input_error(format!("{what}: {e}")))?;
    writeln!(
        out,
        "drug file: {drug_name}: valid ({} models)",
        drug.drug().models().len()
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
    let missing_dir = dosetrack::store::check_directory(db).err();
    let db_state = if missing_dir.is_some() {
        "its directory does not exist"
    } else if db.is_file() {
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
        dosetrack::service::logging::resolve(dosetrack::service::settings::LogFormat::Auto)
            .as_str()
    )?;
    // Reported, not an error: the config is valid, and the package
    // creates the directory at install; but `run` here would stop at once.
    if missing_dir.is_some() {
        writeln!(
            out,
            "\nnote: the database directory does not exist here: `run` would stop; create it, or choose another path with --database"
        )?;
    }
    Ok(())
}

/// `dosetrack generate`: completions and man pages from the clap
/// definition, so they never drift from the real command line.
pub(crate) fn generate(g: &GenerateCommand, out: &mut impl Write) -> anyhow::Result<()> {
    use clap::CommandFactory as _;
    let mut cmd = Cli::command();
    match g {
        GenerateCommand::Completions { shell } => {
            // Into memory first: clap_complete panics when a write fails
            // (a closed pipe); ours returns the error.
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut cmd, "dosetrack", &mut script);
            out.write_all(&script)?;
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
pub(crate) fn db_backup(a: &DbBackupArgs, out: &mut impl Write) -> anyhow::Result<()> {
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
