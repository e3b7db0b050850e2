//! The pure core's tests, in one test binary that links the core alone:
//!
//! * `engine_vs_rk45` — property tests: the exact engine, and its
//!   metabolite (norketamine), against an independent RK45 integration;
//! * `forecast_vs_brute_force` — property test: crossing forecasts against
//!   a brute-force scan;
//! * `incremental` — property test: incremental apply (in order and late)
//!   gives exactly the model and state of a full replay;
//! * `invariants` — mass balance, non-negativity and other invariants for any
//!   valid parameters and regimen;
//! * `reference_vectors` — other engines' published vectors and the Domino
//!   cross-check table;
//! * `alerts_lifecycle` — the alarm lifecycle on synthetic conditions;
//! * `norketamine` — the metabolite with the shipped drug file: mass
//!   balance, the parent untouched, PMC9118341's norketamine observations,
//!   and the relief report's norketamine keys;
//! * `published_observations` — the shipped drug file against measured
//!   exposures (PMC9118341) and the guideline-maximum bolus;
//! * `relief` — relief over weeks (Dahan 2011 decay, Sigtermans 2009 shape)
//!   and the acute window.
//!
//! Shared helpers: `common` (the RK45 integrator, proptest strategies).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod alerts_lifecycle;
mod engine_vs_rk45;
mod forecast_vs_brute_force;
mod incremental;
mod invariants;
mod norketamine;
mod published_observations;
mod reference_vectors;
mod relief;
