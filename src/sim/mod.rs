//! The simulated ward: a deterministic generator of a ward's traffic
//! ([`ward`], pure), its MQTT publisher ([`publisher`], through
//! [`crate::mqtt`]), the ward day replayed through the alert engine on a
//! virtual clock ([`ward_day`]), and the live `dosetrack demo` ([`demo`]).
//! [`clock`] is where all of them read the wall clock.

pub mod clock;
pub mod demo;
pub mod publisher;
pub mod ward;
pub mod ward_day;
