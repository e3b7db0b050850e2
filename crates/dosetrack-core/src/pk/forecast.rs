//! Forecast: when will Cp or Ce next cross a level?
//!
//! The forecast uses the inputs known now, continued as they were given:
//! running infusions keep running, patches release until their planned end,
//! lagged doses still enter when their lag ends. Those assumptions are in the
//! [`Solution`] the forecast is asked of; here we only
//! search it.
//!
//! # Method
//!
//! The signed difference `f(t) = C(t) − level` is smooth between input
//! events and may jump at them (a bolus). The search walks from `from` to the
//! horizon in steps of [`GRID_MS`] (and to each event time exactly). On each
//! step it looks at `f` and its time derivative at both ends:
//!
//! * `f` changes side: a crossing is bracketed. If the derivative also
//!   changes sign, the extremum is bracketed first (by bisection on the
//!   derivative) so that the *first* crossing is the one found.
//! * `f` keeps its side but the derivative turns towards the level (a
//!   maximum while below, a minimum while above): the extremum is located
//!   and, if it passes the level, the crossing before it is bracketed. This
//!   finds an excursion shorter than one step, which a plain sign scan
//!   misses.
//!
//! Far from the level the walk skips ahead: the system's envelopes
//! (`System::output_range`) bound the output over the next `2^j` ms from
//! the current state, and when the bound stays on the current side no
//! crossing is possible there, so the walk advances `2^j` ms at once (up to
//! 70 min). Only near the level does it take the careful steps above.
//!
//! Every bracket is then bisected to one millisecond with the exact
//! transition matrices. A value within a relative `1e-9` of the level counts
//! as *on* the level: touching the level without passing it, or resting on
//! it in a flat tail, is not a crossing. No optimiser, no squared error: the
//! result is the first moment on the other side, to the millisecond.

pub use super::crossing::{Crossing, Direction, Output};
use super::solution::Solution;
use super::system::{State, System, Watched, CENTRAL, EFFECT};
use crate::vocab::TimeMs;

/// What a forecast assumes about inputs after "now", in words (states,
/// alerts and reports carry it).
pub const FORECAST_ASSUMPTIONS: &str =
    "running infusions continue at their current rate; patches stay on until their planned end; no further doses";

/// Careful step of the search, 2^14 ms (16.4 s): short beside every
/// absorption, distribution and effect-site time constant in the drug file.
pub const GRID_LEVEL: usize = 14;
/// [`GRID_LEVEL`] in ms.
pub const GRID_MS: TimeMs = 1 << GRID_LEVEL;
/// Longest provably-safe skip, 2^22 ms (70 min).
const MAX_SKIP_LEVEL: usize = 22;

/// Relative band around the level treated as "on the level".
const ON_LEVEL_REL: f64 = 1e-9;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Below,
    On,
    Above,
}

struct Probe<'a> {
    system: &'a System,
    output: Output,
    level: f64,
    tol: f64,
}

impl Probe<'_> {
    /// True when the output provably stays on side `side` for the next
    /// `2^level` ms.
    fn stays(&self, side: Side, x: &State, level: usize) -> bool {
        let watched = match self.output {
            Output::Cp => Watched::Cp,
            Output::Ce => Watched::Ce,
        };
        let (lo, hi) = self.system.output_range(watched, x, level);
        match side {
            Side::Below => hi < self.level - self.tol,
            Side::Above => lo > self.level + self.tol,
            Side::On => false,
        }
    }

    fn value(&self, x: &State) -> f64 {
        match self.output {
            Output::Cp => self.system.cp_ng_per_ml(x),
            Output::Ce => self.system.ce_ng_per_ml(x),
        }
    }

    fn side(&self, x: &State) -> Side {
        let f = self.value(x) - self.level;
        if f > self.tol {
            Side::Above
        } else if f < -self.tol {
            Side::Below
        } else {
            Side::On
        }
    }

    /// Sign of the time derivative of the watched concentration.
    fn slope(&self, x: &State) -> f64 {
        match self.output {
            Output::Cp => self.system.derivative(x, CENTRAL),
            Output::Ce => self.system.derivative(x, EFFECT),
        }
    }

    /// First ms in `(lo, hi]` where `pred` holds, given it fails at `lo` and
    /// holds at `hi` (and switches once in between).
    fn bisect(
        &self,
        mut lo: TimeMs,
        mut x_lo: State,
        mut hi: TimeMs,
        mut x_hi: State,
        pred: impl Fn(&Self, &State) -> bool,
    ) -> (TimeMs, State) {
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            let mut x_mid = x_lo;
            self.system.advance(&mut x_mid, mid - lo);
            if pred(self, &x_mid) {
                hi = mid;
                x_hi = x_mid;
            } else {
                lo = mid;
                x_lo = x_mid;
            }
        }
        (hi, x_hi)
    }

    /// Search one smooth step `[a, b]` for the first point on side `target`.
    fn search_step(
        &self,
        a: TimeMs,
        xa: &State,
        b: TimeMs,
        xb: &State,
        target: Side,
    ) -> Option<TimeMs> {
        let on_target = |p: &Self, x: &State| p.side(x) == target;
        let da = self.slope(xa);
        let db = self.slope(xb);
        // An interior extremum exists when the slope changes sign.
        let extremum = if da != 0.0 && db != 0.0 && (da > 0.0) != (db > 0.0) {
            let b_positive = db > 0.0;
            let (tm, xm) = self.bisect(a, *xa, b, *xb, |p, x| (p.slope(x) > 0.0) == b_positive);
            Some((tm, xm))
        } else {
            None
        };
        if let Some((tm, xm)) = extremum {
            if on_target(self, &xm) {
                return Some(self.bisect(a, *xa, tm, xm, on_target).0);
            }
            if on_target(self, xb) {
                return Some(self.bisect(tm, xm, b, *xb, on_target).0);
            }
            return None;
        }
        if on_target(self, xb) {
            return Some(self.bisect(a, *xa, b, *xb, on_target).0);
        }
        None
    }
}

fn opposite(side: Side) -> Side {
    match side {
        Side::Below => Side::Above,
        Side::Above => Side::Below,
        Side::On => Side::On,
    }
}

fn crossing(at_ms: TimeMs, target: Side) -> Crossing {
    Crossing {
        at_ms,
        direction: if target == Side::Above {
            Direction::Rising
        } else {
            Direction::Falling
        },
    }
}

impl Solution {
    /// The first time after `from_ms` and at most `from_ms + horizon_ms` at
    /// which `output` passes to the other side of `level_ng_per_ml`, in
    /// either direction; `None` when it does not within the horizon.
    ///
    /// If the value is on the level at `from_ms`, the side it first leaves
    /// to becomes the reference and leaving is not reported as a crossing.
    /// A level that is not a finite positive number has no crossing.
    pub fn next_crossing(
        &self,
        output: Output,
        level_ng_per_ml: f64,
        from_ms: TimeMs,
        horizon_ms: TimeMs,
    ) -> Option<Crossing> {
        if !(level_ng_per_ml.is_finite() && level_ng_per_ml > 0.0) || horizon_ms <= 0 {
            return None;
        }
        // The same question on the same solution: the same answer.
        let key = (output, level_ng_per_ml.to_bits(), from_ms, horizon_ms);
        if let Some(known) = self.crossings.get(&key) {
            return known;
        }
        let found = self.search_crossing(output, level_ng_per_ml, from_ms, horizon_ms);
        self.crossings.put(key, found);
        found
    }

    /// [`Solution::next_crossing`]'s search (for a valid level and horizon).
    fn search_crossing(
        &self,
        output: Output,
        level_ng_per_ml: f64,
        from_ms: TimeMs,
        horizon_ms: TimeMs,
    ) -> Option<Crossing> {
        let (start_state, start_system) = self.state_and_system_at(from_ms);
        let mut probe = Probe {
            system: start_system,
            output,
            level: level_ng_per_ml,
            tol: level_ng_per_ml * ON_LEVEL_REL,
        };
        let end = from_ms.saturating_add(horizon_ms);
        let times = self.event_times();
        let mut next_event = times.partition_point(|&ti| ti <= from_ms);
        let mut t = from_ms;
        let mut x = start_state;
        let mut reference = probe.side(&x);

        let mut skip_level = MAX_SKIP_LEVEL;
        while t < end {
            let segment_end = times.get(next_event).map_or(end, |&te| te.min(end));
            while t < segment_end {
                // Skip ahead while the envelope proves the side holds.
                let room = segment_end - t;
                let mut level = skip_level.min(63 - room.leading_zeros() as usize);
                let mut skipped = false;
                while level > GRID_LEVEL {
                    if probe.stays(reference, &x, level) {
                        probe.system.advance_level(&mut x, level);
                        t += 1 << level;
                        skip_level = (level + 1).min(MAX_SKIP_LEVEL);
                        skipped = true;
                        break;
                    }
                    level -= 1;
                }
                if skipped {
                    continue;
                }
                skip_level = GRID_LEVEL + 1;
                let tn = (t + GRID_MS).min(segment_end);
                let mut xn = x;
                probe.system.advance(&mut xn, tn - t);
                if reference == Side::On {
                    // Still resting on the level: adopt the first side left to.
                    let side = probe.side(&xn);
                    if side != Side::On {
                        reference = side;
                    }
                } else if let Some(at) = probe.search_step(t, &x, tn, &xn, opposite(reference)) {
                    return Some(crossing(at, opposite(reference)));
                }
                t = tn;
                x = xn;
            }
            if next_event < times.len() && times[next_event] == t && t <= end {
                if let Some(after) = self.checkpoint(next_event) {
                    x = *after;
                }
                if let Some(system) = self.checkpoint_system(next_event) {
                    probe.system = system;
                }
                next_event += 1;
                let side = probe.side(&x);
                if reference == Side::On {
                    reference = side;
                } else if side == opposite(reference) {
                    return Some(crossing(t, side));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pk::params::test_support::domino_70kg;
    use crate::pk::schedule::{Dosing, Schedule};
    use crate::pk::system::System;
    use crate::vocab::Route;
    use std::sync::Arc;

    fn solve(dosing: &[Dosing]) -> Solution {
        let p = domino_70kg();
        let schedule = Schedule::build(&p, dosing).unwrap();
        Solution::new(Arc::new(System::new(p).unwrap()), &schedule)
    }

    /// First second at which the side differs from the side at `from`
    /// (brute force, 1 s steps).
    fn brute(
        s: &Solution,
        out: Output,
        level: f64,
        from: TimeMs,
        horizon: TimeMs,
    ) -> Option<TimeMs> {
        let value = |c: super::super::Concentrations| match out {
            Output::Cp => c.cp_ng_per_ml,
            Output::Ce => c.ce_ng_per_ml,
        };
        let start_above = value(s.at(from)) > level;
        (1..=horizon / 1000)
            .map(|k| from + k * 1000)
            .find(|&t| (value(s.at(t)) > level) != start_above)
    }

    #[test]
    fn redose_time_after_a_bolus_matches_brute_force() {
        let s = solve(&[Dosing::Bolus {
            at_ms: 0,
            route: Route::IvBolus,
            amount_mg: 24.5,
        }]);
        let c = s
            .next_crossing(Output::Ce, 100.0, 60_000, 6 * 3_600_000)
            .unwrap();
        assert_eq!(c.direction, Direction::Falling);
        let b = brute(&s, Output::Ce, 100.0, 60_000, 6 * 3_600_000).unwrap();
        assert!(c.at_ms > b - 1000 && c.at_ms <= b, "{} vs {}", c.at_ms, b);
        // stanpumpR's optimiser reported ~1440 min for a crossing near 7 min;
        // ours is minutes after the bolus, as the Domino table says (Ce 138
        // at 10 min, 85 at 15 min).
        assert!(c.at_ms > 10 * 60_000 && c.at_ms < 15 * 60_000);
    }

    #[test]
    fn a_short_peak_inside_one_step_is_found() {
        // Ce after an IV bolus rises to its peak at ~1 min and falls again.
        let s = solve(&[Dosing::Bolus {
            at_ms: 0,
            route: Route::IvBolus,
            amount_mg: 24.5,
        }]);
        let peak = (0..200_000)
            .step_by(100)
            .map(|t| s.at(t).ce_ng_per_ml)
            .fold(0.0, f64::max);
        // A level just under the peak: Ce is above it for only a few seconds.
        let level = peak * 0.999;
        let up = s.next_crossing(Output::Ce, level, 0, 3_600_000).unwrap();
        assert_eq!(up.direction, Direction::Rising);
        let down = s
            .next_crossing(Output::Ce, level, up.at_ms, 3_600_000)
            .unwrap();
        assert_eq!(down.direction, Direction::Falling);
        assert!(
            down.at_ms - up.at_ms < GRID_MS,
            "excursion shorter than a step"
        );
        // Touching without crossing: a level above the peak is never crossed.
        assert_eq!(
            s.next_crossing(Output::Ce, peak * 1.0001, 0, 3_600_000),
            None
        );
    }

    #[test]
    fn flat_tail_at_steady_state_is_not_a_crossing() {
        let s = solve(&[Dosing::Infusion {
            start_ms: 0,
            end_ms: None,
            rate_mg_per_h: 60.0,
        }]);
        let css = 1.0 / s.system().params().cl_l_per_min() * 1000.0;
        let late = 400 * 24 * 3_600_000;
        // At steady state the value rests on its asymptote; a level equal to
        // it is "on the level" and nothing crosses.
        assert_eq!(s.next_crossing(Output::Cp, css, late, 24 * 3_600_000), None);
        // Rising towards a level just above steady state never gets there.
        assert_eq!(
            s.next_crossing(Output::Cp, css * 1.001, 0, 48 * 3_600_000),
            None
        );
        // A level just below is crossed, late, and where brute force says.
        let c = s
            .next_crossing(Output::Cp, css * 0.99, 0, 48 * 3_600_000)
            .unwrap();
        let b = brute(&s, Output::Cp, css * 0.99, 0, 48 * 3_600_000).unwrap();
        assert!(c.at_ms > b - 1000 && c.at_ms <= b);
    }

    #[test]
    fn already_below_with_nothing_given_never_crosses() {
        let s = solve(&[]);
        assert_eq!(s.next_crossing(Output::Cp, 100.0, 0, 24 * 3_600_000), None);
    }

    #[test]
    fn a_future_bolus_jump_is_a_crossing_at_its_instant() {
        let s = solve(&[Dosing::Bolus {
            at_ms: 600_000,
            route: Route::IvBolus,
            amount_mg: 24.5,
        }]);
        let c = s.next_crossing(Output::Cp, 100.0, 0, 3_600_000).unwrap();
        assert_eq!(
            c,
            Crossing {
                at_ms: 600_000,
                direction: Direction::Rising
            }
        );
    }

    #[test]
    fn infusion_end_in_the_future_is_honoured() {
        let s = solve(&[Dosing::Infusion {
            start_ms: 0,
            end_ms: Some(7_200_000),
            rate_mg_per_h: 35.0,
        }]);
        let c = s
            .next_crossing(Output::Ce, 100.0, 3_600_000, 6 * 3_600_000)
            .unwrap();
        assert_eq!(c.direction, Direction::Falling);
        assert!(c.at_ms > 7_200_000);
        let b = brute(&s, Output::Ce, 100.0, 3_600_000, 6 * 3_600_000).unwrap();
        assert!(c.at_ms > b - 1000 && c.at_ms <= b);
    }

    #[test]
    fn forecast_follows_a_change_of_parameters() {
        // Clearance doubles at 30 min (an inducer started): Ce falls faster.
        let p = domino_70kg();
        let mut fast = p.clone();
        fast.k10_per_min *= 2.0;
        let dosing = [Dosing::Infusion {
            start_ms: 0,
            end_ms: None,
            rate_mg_per_h: 35.0,
        }];
        let schedule = Schedule::build(&p, &dosing).unwrap();
        let s = Solution::piecewise(
            vec![
                (i64::MIN, Arc::new(System::new(p).unwrap())),
                (1_800_000, Arc::new(System::new(fast).unwrap())),
            ],
            &schedule,
        );
        let c = s.next_crossing(Output::Ce, 100.0, 0, 6 * 3_600_000);
        let b = brute(&s, Output::Ce, 100.0, 0, 6 * 3_600_000);
        match (c, b) {
            (Some(c), Some(b)) => assert!(c.at_ms > b - 1000 && c.at_ms <= b, "{c:?} vs {b}"),
            other => panic!("{other:?}"),
        }
        // From after the change, the steady state is half: Ce ends below 100
        // where the unchanged model would stay above it.
        let late = s.next_crossing(Output::Ce, 100.0, 3_600_000, 6 * 3_600_000);
        let b = brute(&s, Output::Ce, 100.0, 3_600_000, 6 * 3_600_000);
        assert_eq!(
            late.map(|c| c.at_ms <= b.unwrap_or(i64::MAX)),
            b.map(|_| true)
        );
    }

    #[test]
    fn invalid_levels_have_no_crossing() {
        let s = solve(&[]);
        assert_eq!(s.next_crossing(Output::Cp, f64::NAN, 0, 1000), None);
        assert_eq!(s.next_crossing(Output::Cp, -1.0, 0, 1000), None);
        assert_eq!(s.next_crossing(Output::Cp, 1.0, 0, 0), None);
    }
}
