//! dosetrack's integration tests, in one test binary (one link of the
//! shell instead of one per file): the real `dosetrack` binary as a process
//! (`CARGO_BIN_EXE_dosetrack`), a real Mosquitto (the shared one on
//! 127.0.0.1:1883, or a private one per test for restarts, TLS and ACLs) and
//! real SQLite files. The pure core's own tests are in
//! `crates/dosetrack-core/tests/it/`.
//!
//! * `alert_command_trust` — who may silence an alert (issue #13 item 13);
//! * `bounded_intake` — a flood from one publisher (issue #13 item 7);
//! * `alerts_rules`, `alerts_ward_day` — the alert rules on real patient
//!   models through intake and the tracker; the simulated ward day;
//! * `bounded_outputs` — bounded alert messages, the outbox's dead letters
//!   and per-scope order (issue #13 item 3);
//! * `broker_security` — TLS, the password file and the ACL;
//! * `cli` — every command of the binary: exit codes, output, files;
//! * `daemon`, `daemon_alerts` — `dosetrack run` end to end, inputs and alerts;
//! * `demo` — `dosetrack demo`;
//! * `device_association` — device/patient associations (issue #13 item 2);
//! * `hostile` — the hostile corpus through the daemon and the intake;
//! * `http_api` — the JSON API, the ward pages and the live stream of the
//!   `[http]` listener (`docs/http-api.md`), and a headless Chromium on the
//!   ward page (skipped without chromium and chromium-driver);
//! * `mqtt_ingest`, `mqtt_publisher` — the MQTT layer against Mosquitto;
//! * `observability` — `/healthz` and `/metrics`;
//! * `one_database` — one daemon per database, a vanished database, the
//!   topic prefix, a new user's frictions at start;
//! * `operations`, `reload`, `systemd_service` — check-config, backup,
//!   reload, stop, logs, sd_notify and the watchdog;
//! * `restart` — a start from what the patients in care need equals a full
//!   replay with the ended stays released (issue #16 item 2);
//! * `retained_outputs` — retained state after a discharge, retained inputs
//!   at restart (issue #13 item 6);
//! * `stays` — stays as episodes: readmission, late discharge, history
//!   only inside stays and rewritten after a late input, release of ended
//!   stays, the backlog rate and memory after many stays (issue #13 items
//!   1, 4, 5);
//! * `scaling` — two instances on one broker, one per unit, each tracking
//!   only its own patients (issue #16 item 5, `docs/scaling.md`);
//! * `schemas` — the AsyncAPI document and JSON Schemas against the code;
//! * `ward_acknowledge` — acknowledging an alert from the ward page: off by
//!   default, the operator from a token or the proxy's header, refusals;
//! * `reliability`, `soak` — the fault and scale harnesses at their small
//!   size (`scripts/reliability.sh`, `scripts/soak.sh` run them full).
//!
//! Shared helpers: `mqtt_common` (brokers, clients, the daemon process).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod mqtt_common;

mod alert_command_trust;
mod alerts_rules;
mod alerts_ward_day;
mod bounded_intake;
mod bounded_outputs;
mod broker_security;
mod cli;
mod daemon;
mod daemon_alerts;
mod demo;
mod device_association;
mod hostile;
mod http_api;
mod mqtt_ingest;
mod mqtt_publisher;
mod observability;
mod one_database;
mod operations;
mod reliability;
mod reload;
mod restart;
mod retained_outputs;
mod scaling;
mod schemas;
mod soak;
mod stays;
mod systemd_service;
mod traffic_trust;
mod ward_acknowledge;
