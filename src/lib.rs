//! dosetrack: live pharmacokinetic tracking of ketamine from device and
//! medication events, with concentration forecasts and alerts.
//!
//! **Decision support and research software, not a certified medical device.**
//!
//! # Layout
//!
//! The crate is a functional core with a thin shell (see `ARCHITECTURE.md`):
//!
//! * [`vocab`]: routes, settings, and the millisecond time type shared by all.
//! * [`pk`]: the pharmacokinetic engine. Pure: parameters and an input
//!   schedule in, exact Cp/Ce trajectories and crossing forecasts out.
//! * [`drug`]: the drug file (`config/drugs/ketamine.toml`): published models,
//!   route table, targets, dose limits and interactions, each value sourced.
//! * [`patient`]: resolves a patient's covariates, model choice and
//!   comedications into engine parameters, with validity-domain warnings.
//! * [`contract`]: the MQTT contract's input payloads, parsed and validated
//!   with the contract's error codes.
//! * [`ledger`]: turns contract inputs (manual doses, pump and patch events)
//!   into the engine's piecewise-constant input schedule.
//! * [`plot`]: Cp/Ce charts (SVG or PNG) for people.
//! * [`simulate`]: the `dosetrack simulate` / `model show` / `forecast`
//!   commands as pure functions over text input.
//! * [`health`]: the daemon's technical problems (database writes failing),
//!   published in the retained status.
//! * [`republish`]: which tracked patients' periodic states each tick
//!   republishes (spread over the interval, each patient once per interval).
//! * [`memstats`]: the heap in use, the heap held free and SQLite's share,
//!   for `/metrics` and the soak harness (the crate's only `unsafe`).
//! * [`demo`]: the live `dosetrack demo`: the daemon, an embedded broker
//!   (feature `embedded-broker`) and a simulated ward, in one process.

pub mod clock;
pub mod drug_file;
pub mod mqtt;
pub mod plot;
pub mod service;
pub mod sim;
pub mod store;

pub use dosetrack_core::{
    alerts, chart, contract, drug, intake, ledger, patient, pk, records, reload, republish,
    simulate, tracker, vocab,
};
