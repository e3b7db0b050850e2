//! dosetrack's shell: everything that waits on the outside world (the
//! clock, MQTT, SQLite, HTTP, signals, files), around the pure
//! [`dosetrack_core`] that decides. The `dosetrack` binary (`src/main.rs`,
//! `src/cli/`) is a thin layer of commands over this library.
//!
//! **Decision support and research software, not a certified medical device.**
//!
//! # Layout
//!
//! * [`clock`]: the one source of "now" ([`clock::Clock`]: the system clock,
//!   a manual one in tests, or the demo's sped-up one), passed to
//!   everything that reads time.
//! * [`drug_file`]: reads a drug file from disk (the parsing is the core's).
//! * [`mqtt`]: broker connections: the ingest (persistent session, manual
//!   acknowledgement), the publisher, a plain subscriber; back-off and TLS.
//! * [`store`]: SQLite: the inputs (the truth), projections, alerts and
//!   their outbox, history; the single writer, readers, backup, maintenance.
//! * [`service`]: the daemon: stage A (intake), stage B (store, track,
//!   alert), reload, settings, the outbox publisher, status and health,
//!   `/healthz` and `/metrics`, logging, systemd.
//! * [`sim`]: the simulated ward (a pure generator and its publisher), the
//!   ward day and the live demo.
//! * [`plot`]: concentration charts (SVG, PNG) drawn from the core's
//!   [`chart`] data.
//!
//! The core's modules are re-exported under their own names
//! ([`vocab`], [`contract`], [`drug`], [`tracker`], [`alerts`], …), so
//! `dosetrack::tracker::Tracker` and `dosetrack_core::tracker::Tracker` are
//! the same type. Items are `pub` only where this root exports them
//! (`unreachable_pub` is on); the rest is `pub(crate)`. Module docs link
//! their private parts: read them with `cargo doc --document-private-items`.
#![allow(rustdoc::private_intra_doc_links)]

pub mod clock;
pub mod drug_file;
pub mod mqtt;
pub mod plot;
pub mod service;
pub mod sim;
pub mod store;

pub use dosetrack_core::{
    alerts, chart, contract, drug, intake, ledger, patient, pk, records, relief, reload, republish,
    simulate, tracker, vocab,
};
