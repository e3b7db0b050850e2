//! The `dosetrack` command line, one module per command group (`main.rs`
//! only parses, dispatches and maps errors to exit codes):
//!
//! - [`args`]: the clap definition of every subcommand;
//! - [`offline`]: `simulate`, `forecast`, `model show|list`, `demo --offline`;
//! - [`read`]: `patients`, `history`, `events` (read-only database commands);
//! - [`rejected`]: `rejected`, the stored rejections (read-only);
//! - [`alerts`]: `alerts report|list|ward-day`;
//! - [`service`]: `run`, `check-config`, `db backup`, `generate`;
//! - [`sim`]: `simulate-devices` and the live `demo`;
//! - [`runtime`]: the one async runtime and signal handling of `run`,
//!   `demo` and `simulate-devices`.
//!
//! Shared here: the input error (exit code 2), the drug file, time and chart
//! arguments, and the command line's clock.

pub(crate) mod alerts;
pub(crate) mod args;
pub(crate) mod offline;
pub(crate) mod read;
pub(crate) mod rejected;
pub(crate) mod runtime;
pub(crate) mod service;
pub(crate) mod sim;

use dosetrack::drug::DrugFile;
use dosetrack::patient::Formulary;
use dosetrack::vocab::{parse_rfc3339_ms, TimeMs};
use std::path::Path;

/// The target of the command line's log lines: `dosetrack`, the binary's
/// crate, as when they were logged from `main.rs` (`RUST_LOG` filters and
/// the JSON and journal fields name it), not the module that logs them.
pub(crate) const LOG_TARGET: &str = "dosetrack";

/// An error that is the user's input: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct InputError(String);

pub(crate) fn input_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::Error::new(InputError(e.to_string()))
}

/// The exit code of a failed command: 2 for bad input, 1 for anything else.
pub(crate) fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<InputError>().is_some() {
        2
    } else {
        1
    }
}

/// The command line's "now" (wall clock, Unix ms): the one place it is read.
pub(crate) fn now_ms() -> TimeMs {
    dosetrack::clock::Clock::system().now_ms()
}

/// The drug file: `--drug-file`, else the built-in one. Its models are
/// derived on demand ([`Formulary::on_demand`]): a command derives only
/// the models of the patients it resolves (`simulate` one, `model list`
/// none), and a model that cannot be derived is an input error of the
/// command that needs it.
pub(crate) fn formulary(path: Option<&Path>) -> anyhow::Result<Formulary> {
    let drug = match path {
        Some(p) => dosetrack::drug_file::load(p),
        None => DrugFile::builtin(),
    }
    .map_err(input_error)?;
    Ok(Formulary::on_demand(drug))
}

/// An RFC 3339 time argument (`option` names it in the error).
pub(crate) fn time_arg(option: &str, text: &str) -> anyhow::Result<TimeMs> {
    parse_rfc3339_ms(text).map_err(|e| input_error(format!("{option}: {e}")))
}

/// A chart path must name a format we can write: checked before any work.
pub(crate) fn check_plot_path(path: &Path) -> anyhow::Result<()> {
    dosetrack::plot::PlotFormat::from_path(path)
        .map(|_| ())
        .map_err(|e| input_error(format!("--plot: {e}")))
}
