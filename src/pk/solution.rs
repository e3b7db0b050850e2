//! A solved regimen: checkpoints after every input event, and evaluation.
//!
//! The state right after each event is computed once, in time order, when
//! the solution is built. Evaluating at any moment is then a binary search
//! for the last event at or before it and one exact advance from there, so
//! its cost does not grow with the length of the dose history.

use super::schedule::{Event, Schedule};
use super::system::{State, System, N};
use crate::vocab::TimeMs;
use serde::Serialize;
use std::sync::Arc;

/// Plasma and effect-site concentrations at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Concentrations {
    pub cp_ng_per_ml: f64,
    pub ce_ng_per_ml: f64,
}

/// One point of a sampled trajectory.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    pub t_ms: TimeMs,
    pub cp_ng_per_ml: f64,
    pub ce_ng_per_ml: f64,
}

/// A regimen solved for one patient's system.
#[derive(Debug, Clone)]
pub struct Solution {
    system: Arc<System>,
    /// Distinct event times, increasing.
    times: Vec<TimeMs>,
    /// `states[i]`: the state right after the events at `times[i]`.
    states: Vec<State>,
}

impl Solution {
    /// Solve `schedule`: one exact advance per event.
    pub fn new(system: Arc<System>, schedule: &Schedule) -> Self {
        let events = schedule.events();
        let mut times = Vec::with_capacity(events.len());
        let mut states = Vec::with_capacity(events.len());
        let mut x: State = [0.0; N];
        let mut prev: Option<TimeMs> = None;
        for e in events {
            if let Some(p) = prev {
                system.advance(&mut x, e.at_ms - p);
            }
            apply_event(&mut x, e);
            times.push(e.at_ms);
            states.push(x);
            prev = Some(e.at_ms);
        }
        Solution {
            system,
            times,
            states,
        }
    }

    /// The system this solution was computed with.
    pub fn system(&self) -> &System {
        &self.system
    }

    /// Event times, increasing.
    pub fn event_times(&self) -> &[TimeMs] {
        &self.times
    }

    /// The checkpoint state right after the event at `event_times()[i]`.
    pub fn checkpoint(&self, i: usize) -> Option<&State> {
        self.states.get(i)
    }

    /// The state at `t_ms`, with every event at or before `t_ms` applied
    /// (concentrations are right-continuous: a bolus at `t` counts at `t`).
    pub fn state_at(&self, t_ms: TimeMs) -> State {
        let idx = self.times.partition_point(|&ti| ti <= t_ms);
        match idx.checked_sub(1) {
            None => [0.0; N],
            Some(i) => {
                let mut x = self.states[i];
                self.system.advance(&mut x, t_ms - self.times[i]);
                x
            }
        }
    }

    /// Cp and Ce at `t_ms`.
    pub fn at(&self, t_ms: TimeMs) -> Concentrations {
        let x = self.state_at(t_ms);
        Concentrations {
            cp_ng_per_ml: self.system.cp_ng_per_ml(&x),
            ce_ng_per_ml: self.system.ce_ng_per_ml(&x),
        }
    }

    /// Cp and Ce every `step_ms` from `from_ms` to `to_ms` inclusive (the
    /// last point is the last grid point not after `to_ms`). A fixed step
    /// costs one precomputed matrix-vector product per point; a step that
    /// contains events restarts from the last checkpoint in it.
    pub fn sample(&self, from_ms: TimeMs, to_ms: TimeMs, step_ms: TimeMs) -> Vec<Sample> {
        if step_ms <= 0 || to_ms < from_ms {
            return Vec::new();
        }
        let count = ((to_ms - from_ms) / step_ms + 1) as usize;
        let mut out = Vec::with_capacity(count);
        let step = self.system.transition(step_ms);
        let mut t = from_ms;
        let mut x = self.state_at(from_ms);
        let mut next_event = self.times.partition_point(|&ti| ti <= from_ms);
        loop {
            out.push(Sample {
                t_ms: t,
                cp_ng_per_ml: self.system.cp_ng_per_ml(&x),
                ce_ng_per_ml: self.system.ce_ng_per_ml(&x),
            });
            let tn = t + step_ms;
            if tn > to_ms {
                break;
            }
            if next_event < self.times.len() && self.times[next_event] <= tn {
                let idx = self.times.partition_point(|&ti| ti <= tn);
                let last = idx - 1;
                x = self.states[last];
                self.system.advance(&mut x, tn - self.times[last]);
                next_event = idx;
            } else {
                step.apply(&mut x);
            }
            t = tn;
        }
        out
    }
}

fn apply_event(x: &mut State, e: &Event) {
    for &(component, amount) in &e.additions {
        x[component] += amount;
    }
    for &(component, rate) in &e.rates {
        x[component] = rate;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pk::params::test_support::domino_70kg;
    use crate::pk::schedule::Dosing;
    use crate::vocab::Route;

    fn solve(dosing: &[Dosing]) -> Solution {
        let p = domino_70kg();
        let schedule = Schedule::build(&p, dosing).unwrap();
        Solution::new(Arc::new(System::new(p).unwrap()), &schedule)
    }

    #[test]
    fn nothing_given_is_zero_everywhere() {
        let s = solve(&[]);
        assert_eq!(s.at(0).cp_ng_per_ml, 0.0);
        assert_eq!(s.sample(0, 10_000, 1000).len(), 11);
    }

    #[test]
    fn bolus_counts_at_its_own_instant_not_before() {
        let s = solve(&[Dosing::Bolus {
            at_ms: 60_000,
            route: Route::IvBolus,
            amount_mg: 24.5,
        }]);
        assert_eq!(s.at(59_999).cp_ng_per_ml, 0.0);
        let c = s.at(60_000);
        assert!((c.cp_ng_per_ml - 24.5 / 4.41 * 1000.0).abs() < 1e-9);
        assert_eq!(c.ce_ng_per_ml, 0.0);
    }

    #[test]
    fn sampling_matches_pointwise_evaluation() {
        let s = solve(&[
            Dosing::Bolus {
                at_ms: 1_500,
                route: Route::Intranasal,
                amount_mg: 50.0,
            },
            Dosing::Infusion {
                start_ms: 10_250,
                end_ms: Some(3_600_000),
                rate_mg_per_h: 20.0,
            },
        ]);
        let samples = s.sample(0, 4_000_000, 1000);
        assert_eq!(samples.len(), 4001);
        for smp in samples.iter().step_by(97) {
            let c = s.at(smp.t_ms);
            assert!((c.cp_ng_per_ml - smp.cp_ng_per_ml).abs() <= 1e-10 * c.cp_ng_per_ml.max(1.0));
            assert!((c.ce_ng_per_ml - smp.ce_ng_per_ml).abs() <= 1e-10 * c.ce_ng_per_ml.max(1.0));
        }
    }
}
