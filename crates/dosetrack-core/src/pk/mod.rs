//! The pharmacokinetic engine: pure, exact, no I/O.
//!
//! A linear mammillary model (central compartment plus up to two peripheral
//! compartments) with an effect-site compartment, fed by IV boluses and
//! infusions, by first-order absorption depots (one per extravascular
//! route, each with its own bioavailability F, absorption rate ka and lag),
//! and by a transdermal skin depot with zero-order release.
//!
//! # How it is solved
//!
//! Between input events every input is constant, so the whole model is one
//! linear system `x' = M x` once the zero-order rates are carried as extra
//! state components that do not change (see [`system`]). Its exact solution
//! over an interval `δ` is `x(t+δ) = exp(M δ) x(t)`. Event times are integer
//! milliseconds, so the engine precomputes `exp(M · 2^j ms)` for every `j`
//! (one matrix exponential each, Padé with scaling and squaring) and moves
//! the state across any interval by at most one matrix-vector product per
//! set bit of `δ`. There is no numerical integration and no step size: the
//! result is exact to floating-point rounding, for any parameters, including
//! coincident rate constants where closed-form sums of exponentials divide
//! by zero.
//!
//! A [`Solution`] keeps the state right after every input event (a
//! checkpoint), so the concentration at any moment costs a binary search and
//! a few matrix-vector products, however long the dose history.
//!
//! * [`params`]: engine parameters in engine units (L, per minute).
//! * [`system`]: the state layout, the matrix `M`, the transition tables.
//! * [`schedule`]: dosing (boluses, infusions, patches) → input events.
//! * [`solution`]: checkpoints, evaluation, sampling on a grid.
//! * [`crossing`]: what a forecast looks for, and a solution's memo of it.
//! * [`forecast`]: the next time Cp or Ce crosses a level.
//! * [`metabolite`]: the metabolite (norketamine) beside a solved parent,
//!   exact the same way, without slowing the parent engine.

pub mod crossing;
pub mod forecast;
pub mod metabolite;
pub mod params;
pub mod schedule;
pub mod solution;
pub mod system;

pub use forecast::{Crossing, Direction, Output, FORECAST_ASSUMPTIONS};
pub use metabolite::{MetaboliteAt, MetaboliteParams, MetaboliteSample, MetaboliteSolution};
pub use params::{PkParams, RouteParams};
pub use schedule::{Dosing, Schedule, ScheduleError};
pub use solution::{Concentrations, Sample, Samples, Solution};
pub use system::System;
