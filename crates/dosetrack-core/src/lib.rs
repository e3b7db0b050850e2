//! dosetrack's functional core: everything that decides, nothing that
//! waits. Inputs plus "now" in, state and decisions out; no clock, socket,
//! database or log sink inside (this crate's dependencies make that a
//! compiler fact: see its `Cargo.toml`).
//!
//! **Decision support and research software, not a certified medical device.**
//!
//! # Layout
//!
//! * [`vocab`]: routes, settings, sex, and the core's time type [`vocab::TimeMs`].
//! * [`contract`]: the MQTT contract's input topics and payloads, parsed
//!   and validated with the contract's error codes.
//! * [`drug`]: the drug file: published models, route table, targets, dose
//!   limits and interactions, each value sourced.
//! * [`patient`]: covariates, model choice and comedications → engine
//!   parameters, with validity-domain warnings and assumptions.
//! * [`ledger`]: contract inputs → the engine's piecewise-constant deliveries.
//! * [`pk`]: the pharmacokinetic engine: exact Cp/Ce trajectories and
//!   crossing forecasts.
//! * [`tracker`]: the live state of every patient, derived from their inputs.
//! * [`alerts`]: alert rules, lifecycle, timers, the engine and the burden report.
//! * [`intake`]: one MQTT message → the record to store or the rejection.
//! * [`records`]: the records the shell's store persists and hands back.
//! * [`republish`]: which patients a periodic state tick republishes.
//! * [`reload`]: which configuration differences a reload may apply.
//! * [`simulate`]: the offline computations (`simulate`, `forecast`,
//!   `model show`) as functions over text.
//! * [`chart`]: what a concentration chart shows, as data.

pub mod alerts;
pub mod chart;
pub mod contract;
pub mod drug;
pub mod intake;
pub mod ledger;
pub mod patient;
pub mod pk;
pub mod records;
pub mod relief;
pub mod reload;
pub mod republish;
pub mod simulate;
#[cfg(test)]
mod test_rng;
pub mod tracker;
pub mod vocab;
