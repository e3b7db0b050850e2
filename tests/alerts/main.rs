//! The alert system's tests, in one test binary (each binary links the
//! whole crate; one for all three keeps CI's build short):
//!
//! * `lifecycle` — the alarm lifecycle on synthetic conditions;
//! * `rules` — every rule on real patient models, and the flap test;
//! * `ward_day` — the simulated ward day through the alert engine.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod lifecycle;
mod rules;
mod ward_day;
