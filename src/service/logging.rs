//! Log output of the long-running commands (`[log]` in the config): the
//! format — human-readable text on stderr, one JSON object per line on
//! stderr, or native systemd journal records with structured fields — and
//! a level that a reload can change while the daemon runs.
//!
//! `auto` picks the journal when stderr is connected to it: systemd sets
//! `$JOURNAL_STREAM` to the `device:inode` of the stream it connected, and
//! it is the journal only if that is still our stderr (the documented test;
//! a child with redirected stderr must not write to the journal).
//! In the journal every event field is its own journal field, prefixed
//! `F_` by `tracing-journald` (`patient_id` → `F_PATIENT_ID`), so
//! `journalctl -u dosetrack F_PATIENT_ID=P-1` works.
//!
//! `RUST_LOG`, when set, wins over `[log] level` at start.
//!
//! Text output is coloured only when stderr is a terminal: redirected to a
//! file or a pipe it carries no ANSI escape codes.

use crate::service::settings::LogFormat;
use std::io::IsTerminal;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// Changes the level of the running log output.
#[derive(Clone)]
pub struct LogHandle {
    filter: reload::Handle<EnvFilter, Registry>,
    /// The format in use (`auto` resolved).
    pub format: LogFormat,
}

impl std::fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogHandle")
            .field("format", &self.format)
            .finish()
    }
}

impl LogHandle {
    /// Apply a new filter (`info`, `dosetrack=debug,rumqttc=warn`).
    pub fn set_level(&self, level: &str) -> Result<(), LogLevelError> {
        let filter =
            EnvFilter::builder()
                .parse(level)
                .map_err(|source| LogLevelError::NotAFilter {
                    level: level.to_string(),
                    source,
                })?;
        self.filter.reload(filter).map_err(LogLevelError::Reload)
    }
}

/// Why a new log level could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum LogLevelError {
    #[error("'{level}' is not a log filter: {source}")]
    NotAFilter {
        level: String,
        source: tracing_subscriber::filter::ParseError,
    },
    /// The subscriber holding the filter is gone (never expected while the
    /// daemon runs).
    #[error("{0}")]
    Reload(tracing_subscriber::reload::Error),
}

/// Whether stderr is the stream systemd connected to the journal.
pub fn stderr_is_journal() -> bool {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        use std::os::unix::fs::MetadataExt;
        let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
            return false;
        };
        let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
            return false;
        };
        let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
            return false;
        };
        let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
            return false;
        };
        match std::fs::File::from(fd).metadata() {
            Ok(m) => m.dev() == dev && m.ino() == ino,
            Err(_) => false,
        }
    }
    #[cfg(not(unix))]
    false
}

/// `auto` resolved: `journald` when stderr is the journal, else `text`.
pub fn resolve(format: LogFormat) -> LogFormat {
    match format {
        LogFormat::Auto if stderr_is_journal() => LogFormat::Journald,
        LogFormat::Auto => LogFormat::Text,
        f => f,
    }
}

/// Install the global subscriber: `format` (resolved), at `level` unless
/// `RUST_LOG` is set. `None` if a subscriber was already installed.
pub fn init(format: LogFormat, level: &str) -> Option<LogHandle> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let (filter, handle) = reload::Layer::new(filter);
    let mut format = resolve(format);
    let mut journal_error = None;
    let journald = if format == LogFormat::Journald {
        match tracing_journald::layer() {
            Ok(l) => Some(l.with_syslog_identifier("dosetrack".to_owned())),
            Err(e) => {
                journal_error = Some(e.to_string());
                format = LogFormat::Text;
                None
            }
        }
    } else {
        None
    };
    // Colour only on a terminal: a file, a pipe or a log collector gets
    // plain text, never ANSI escape codes.
    let text = (format == LogFormat::Text).then(|| {
        tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
    });
    let json = (format == LogFormat::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(std::io::stderr)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(journald)
        .with(text)
        .with(json)
        .try_init()
        .ok()?;
    if let Some(e) = journal_error {
        tracing::warn!(error = %e, "the systemd journal is not reachable; logging text to stderr");
    }
    Some(LogHandle {
        filter: handle,
        format,
    })
}
