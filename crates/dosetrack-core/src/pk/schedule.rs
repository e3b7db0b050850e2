//! From dosing to input events.
//!
//! A [`Dosing`] is what was given, in clinical terms: a bolus by a route, an
//! IV infusion segment at a rate, a patch worn over an interval. A
//! [`Schedule`] is what the engine needs: at each event time, the amounts
//! added to compartments and the new total zero-order rates, with
//! bioavailability and lag applied.
//!
//! Overlapping infusions (several pumps, a pump and a manual infusion) and
//! overlapping patches add up. At every boundary the total rate is
//! recomputed from the segments active then, so a rate returns to exactly
//! zero when everything stops (no residue from adding and subtracting).

use super::params::PkParams;
use super::system::{depot_of, CENTRAL, RATE_CENTRAL, RATE_SKIN};
use crate::vocab::{Route, TimeMs, MS_PER_MIN};

/// Something given to the patient.
#[derive(Debug, Clone, PartialEq)]
pub enum Dosing {
    /// A single amount by `route` (IV bolus or any extravascular route
    /// except transdermal).
    Bolus {
        at_ms: TimeMs,
        route: Route,
        amount_mg: f64,
    },
    /// Zero-order IV infusion from `start_ms` until `end_ms` (`None`: runs
    /// on, as a running pump is assumed to).
    Infusion {
        start_ms: TimeMs,
        end_ms: Option<TimeMs>,
        rate_mg_per_h: f64,
    },
    /// A transdermal patch releasing from `start_ms` until `end_ms` (its
    /// removal, detachment, or planned end).
    Patch {
        start_ms: TimeMs,
        end_ms: TimeMs,
        release_rate_mg_per_h: f64,
    },
}

impl Dosing {
    /// When this dosing starts.
    pub fn start_ms(&self) -> TimeMs {
        match self {
            Dosing::Bolus { at_ms, .. } => *at_ms,
            Dosing::Infusion { start_ms, .. } | Dosing::Patch { start_ms, .. } => *start_ms,
        }
    }
}

/// Dosing the engine cannot take.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScheduleError {
    #[error("dosing #{index}: {what} must be a finite number {rule} (got {value})")]
    InvalidValue {
        index: usize,
        what: &'static str,
        rule: &'static str,
        value: f64,
    },
    #[error("dosing #{index}: route {route} is not a bolus route")]
    NotABolusRoute { index: usize, route: Route },
    #[error("dosing #{index}: ends ({end_ms}) before it starts ({start_ms})")]
    EndsBeforeStart {
        index: usize,
        start_ms: TimeMs,
        end_ms: TimeMs,
    },
}

/// What happens at one event time.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub at_ms: TimeMs,
    /// Amounts (mg, bioavailability applied) added to state components.
    pub additions: Vec<(usize, f64)>,
    /// New total rate (mg/min) for a rate component, when it changes here.
    pub rates: Vec<(usize, f64)>,
}

/// The engine's input: events in time order, at most one per instant.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Schedule {
    events: Vec<Event>,
}

/// A zero-order segment on one rate component.
struct Segment {
    component: usize,
    start_ms: TimeMs,
    end_ms: Option<TimeMs>,
    rate_mg_per_min: f64,
}

impl Schedule {
    /// Turn dosing into events for a patient's parameters.
    pub fn build(params: &PkParams, dosing: &[Dosing]) -> Result<Self, ScheduleError> {
        Self::build_with(|_| params, dosing)
    }

    /// Turn dosing into events when parameters change over time: `params`
    /// are `(from_ms, params)` in increasing `from_ms`, the first also in
    /// force before its start. Each dosing takes bioavailability and lag
    /// from the parameters in force when it starts.
    pub fn build_piecewise(
        params: &[(TimeMs, &PkParams)],
        dosing: &[Dosing],
    ) -> Result<Self, ScheduleError> {
        let Some(first) = params.first() else {
            return Ok(Schedule::default());
        };
        Self::build_with(|t| in_force(params, first.1, t), dosing)
    }

    /// A whole build is the events from the beginning of time onto an
    /// empty schedule.
    fn build_with<'p>(
        params_at: impl Fn(TimeMs) -> &'p PkParams,
        dosing: &[Dosing],
    ) -> Result<Self, ScheduleError> {
        let mut schedule = Schedule::default();
        schedule.events_from(params_at, dosing, TimeMs::MIN)?;
        Ok(schedule)
    }

    /// Replace the events at or after `from_ms` by those `dosing` gives
    /// there, when `dosing` differs from the dosing this schedule was built
    /// from only at or after `from_ms` (new deliveries starting then or
    /// later, ends moved to then or later) and every change to the dosing
    /// order is at its end — what an input at `from_ms` does to a ledger.
    /// `params` are as for [`Self::build_piecewise`] and unchanged. The
    /// result equals `build_piecewise(params, dosing)` exactly: events
    /// before `from_ms` depend on no delivery changed; the rates from
    /// `from_ms` on are summed over the same segments, in the same order.
    /// Only dosing that reaches `from_ms` or later (lag included) is looked
    /// at (and checked); `dosing` may leave out any other, as long as it
    /// keeps the order of the rest.
    /// On an error the schedule is left truncated: build it again.
    pub fn rebuild_from(
        &mut self,
        params: &[(TimeMs, &PkParams)],
        dosing: &[Dosing],
        from_ms: TimeMs,
    ) -> Result<(), ScheduleError> {
        let Some(first) = params.first() else {
            *self = Schedule::default();
            return Ok(());
        };
        self.events_from(|t| in_force(params, first.1, t), dosing, from_ms)
    }

    /// The events at or after `from_ms` from `dosing`, in place of this
    /// schedule's (see [`Self::rebuild_from`]; `TimeMs::MIN`: all of them,
    /// a whole build). Rates are summed over the segments active at each
    /// time in dosing order, so the totals are the same bits whichever
    /// `from_ms` the events are built from.
    fn events_from<'p>(
        &mut self,
        params_at: impl Fn(TimeMs) -> &'p PkParams,
        dosing: &[Dosing],
        from_ms: TimeMs,
    ) -> Result<(), ScheduleError> {
        let keep = self.events.partition_point(|e| e.at_ms < from_ms);
        self.events.truncate(keep);
        let mut additions: Vec<(TimeMs, usize, f64)> = Vec::new();
        let mut segments: Vec<Segment> = Vec::new();
        for (index, d) in dosing.iter().enumerate() {
            match *d {
                Dosing::Bolus {
                    at_ms,
                    route,
                    amount_mg,
                } => {
                    check(index, "amount_mg", amount_mg, "above 0", amount_mg > 0.0)?;
                    if matches!(route, Route::IvInfusion | Route::Transdermal) {
                        return Err(ScheduleError::NotABolusRoute { index, route });
                    }
                    let rp = params_at(at_ms).route(route);
                    let at = at_ms + lag_ms(rp.lag_min);
                    if at < from_ms {
                        continue;
                    }
                    let component = depot_of(route).unwrap_or(CENTRAL);
                    additions.push((at, component, rp.f * amount_mg));
                }
                Dosing::Infusion {
                    start_ms,
                    end_ms,
                    rate_mg_per_h,
                } => {
                    let rp = params_at(start_ms).route(Route::IvInfusion);
                    let lag = lag_ms(rp.lag_min);
                    if end_ms.is_some_and(|e| e + lag < from_ms) {
                        continue;
                    }
                    check(
                        index,
                        "rate_mg_per_h",
                        rate_mg_per_h,
                        "≥ 0",
                        rate_mg_per_h >= 0.0,
                    )?;
                    check_order(index, start_ms, end_ms)?;
                    segments.push(Segment {
                        component: RATE_CENTRAL,
                        start_ms: start_ms + lag,
                        end_ms: end_ms.map(|e| e + lag),
                        rate_mg_per_min: rp.f * rate_mg_per_h / 60.0,
                    });
                }
                Dosing::Patch {
                    start_ms,
                    end_ms,
                    release_rate_mg_per_h,
                } => {
                    let rp = params_at(start_ms).route(Route::Transdermal);
                    let lag = lag_ms(rp.lag_min);
                    if end_ms + lag < from_ms {
                        continue;
                    }
                    check(
                        index,
                        "release_rate_mg_per_h",
                        release_rate_mg_per_h,
                        "≥ 0",
                        release_rate_mg_per_h >= 0.0,
                    )?;
                    check_order(index, start_ms, Some(end_ms))?;
                    segments.push(Segment {
                        component: RATE_SKIN,
                        start_ms: start_ms + lag,
                        end_ms: Some(end_ms + lag),
                        rate_mg_per_min: rp.f * release_rate_mg_per_h / 60.0,
                    });
                }
            }
        }
        // The totals in force just before `from_ms`: what `build` compares
        // the first total from `from_ms` with. Its last total before then
        // was summed at the last boundary before `from_ms`, over the same
        // segments in the same order as here (any later boundary before
        // `from_ms` left the total equal), so the values compare equal.
        let mut current = [0.0f64; 2];
        // From the beginning of time nothing was in force before.
        let components = if from_ms == TimeMs::MIN {
            &[][..]
        } else {
            &[RATE_CENTRAL, RATE_SKIN][..]
        };
        for (k, &component) in components.iter().enumerate() {
            let before = from_ms.saturating_sub(1);
            current[k] = segments
                .iter()
                .filter(|s| {
                    s.component == component
                        && s.start_ms <= before
                        && s.end_ms.is_none_or(|e| before < e)
                })
                .map(|s| s.rate_mg_per_min)
                .sum();
        }
        let mut times: Vec<TimeMs> = additions.iter().map(|a| a.0).collect();
        for s in &segments {
            times.push(s.start_ms);
            times.extend(s.end_ms);
        }
        times.retain(|&t| t >= from_ms);
        times.sort_unstable();
        times.dedup();
        // A sweep: the segments active at each time, in dosing order (the
        // order `build` sums them in, so the totals are the same bits).
        let mut by_start: Vec<usize> = (0..segments.len()).collect();
        by_start.sort_by_key(|&i| segments[i].start_ms);
        let mut by_end: Vec<usize> = (0..segments.len())
            .filter(|&i| segments[i].end_ms.is_some())
            .collect();
        by_end.sort_by_key(|&i| segments[i].end_ms);
        let mut active: [std::collections::BTreeSet<usize>; 2] = Default::default();
        let slot = |component: usize| usize::from(component != RATE_CENTRAL);
        let (mut si, mut ei) = (0, 0);
        let tail_start = self.events.len();
        for &t in &times {
            while let Some(&i) = by_start.get(si).filter(|&&i| segments[i].start_ms <= t) {
                active[slot(segments[i].component)].insert(i);
                si += 1;
            }
            while let Some(&i) = by_end
                .get(ei)
                .filter(|&&i| segments[i].end_ms.is_some_and(|e| e <= t))
            {
                active[slot(segments[i].component)].remove(&i);
                ei += 1;
            }
            let mut event = Event {
                at_ms: t,
                additions: Vec::new(),
                rates: Vec::new(),
            };
            for (k, component) in [RATE_CENTRAL, RATE_SKIN].into_iter().enumerate() {
                let total: f64 = active[k].iter().map(|&i| segments[i].rate_mg_per_min).sum();
                if total != current[k] {
                    event.rates.push((component, total));
                    current[k] = total;
                }
            }
            self.events.push(event);
        }
        let mut tail = self.events.split_off(tail_start);
        for (t, component, amount) in additions {
            if let Ok(i) = tail.binary_search_by_key(&t, |e| e.at_ms) {
                tail[i].additions.push((component, amount));
            }
        }
        tail.retain(|e| !e.additions.is_empty() || !e.rates.is_empty());
        self.events.append(&mut tail);
        Ok(())
    }

    /// The events, in time order.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// True when nothing is ever given.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

/// The parameters in force at `t`: the last of `params` (increasing
/// `from_ms`) starting at or before `t`, `first` before them all.
fn in_force<'p>(params: &[(TimeMs, &'p PkParams)], first: &'p PkParams, t: TimeMs) -> &'p PkParams {
    let k = params.partition_point(|(from, _)| *from <= t);
    params.get(k.saturating_sub(1)).map_or(first, |p| p.1)
}

/// A lag in minutes as whole milliseconds (nearest).
pub fn lag_ms(lag_min: f64) -> TimeMs {
    (lag_min * MS_PER_MIN).round() as TimeMs
}

fn check(
    index: usize,
    what: &'static str,
    value: f64,
    rule: &'static str,
    ok: bool,
) -> Result<(), ScheduleError> {
    if value.is_finite() && ok {
        Ok(())
    } else {
        Err(ScheduleError::InvalidValue {
            index,
            what,
            rule,
            value,
        })
    }
}

fn check_order(
    index: usize,
    start_ms: TimeMs,
    end_ms: Option<TimeMs>,
) -> Result<(), ScheduleError> {
    match end_ms {
        Some(end_ms) if end_ms < start_ms => Err(ScheduleError::EndsBeforeStart {
            index,
            start_ms,
            end_ms,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pk::params::test_support::domino_70kg;
    use crate::pk::system::{FIRST_DEPOT, SKIN_DEPOT};

    #[test]
    fn overlapping_infusions_add_and_return_to_exact_zero() {
        let p = domino_70kg();
        let s = Schedule::build(
            &p,
            &[
                Dosing::Infusion {
                    start_ms: 0,
                    end_ms: Some(60_000),
                    rate_mg_per_h: 0.1,
                },
                Dosing::Infusion {
                    start_ms: 30_000,
                    end_ms: Some(90_000),
                    rate_mg_per_h: 0.2,
                },
            ],
        )
        .unwrap();
        let rates: Vec<(TimeMs, f64)> = s
            .events()
            .iter()
            .flat_map(|e| e.rates.iter().map(move |r| (e.at_ms, r.1)))
            .collect();
        assert_eq!(rates.len(), 4);
        assert!((rates[1].1 - 0.3 / 60.0).abs() < 1e-15);
        assert_eq!(rates[3], (90_000, 0.0));
    }

    #[test]
    fn bioavailability_and_lag_are_applied() {
        let p = domino_70kg();
        let s = Schedule::build(
            &p,
            &[
                Dosing::Bolus {
                    at_ms: 0,
                    route: Route::Oral,
                    amount_mg: 100.0,
                },
                Dosing::Patch {
                    start_ms: 0,
                    end_ms: 3_600_000,
                    release_rate_mg_per_h: 1.2,
                },
            ],
        )
        .unwrap();
        let e = &s.events()[0];
        assert_eq!(e.at_ms, 5 * 60_000); // oral lag 5 min in the test params
        assert_eq!(e.additions, vec![(FIRST_DEPOT + 3, 20.0)]);
        let patch_start = &s.events()[1];
        assert_eq!(patch_start.at_ms, 30 * 60_000); // transdermal lag 30 min
        assert_eq!(patch_start.rates, vec![(RATE_SKIN, 0.02)]);
        assert_eq!(s.events()[2].at_ms, 90 * 60_000);
        let _ = SKIN_DEPOT;
    }

    #[test]
    fn piecewise_parameters_apply_by_dose_time() {
        let p = domino_70kg();
        let mut later = p.clone();
        later.route_mut(Route::Oral).f = 0.5;
        let oral = |t| Dosing::Bolus {
            at_ms: t,
            route: Route::Oral,
            amount_mg: 100.0,
        };
        let s = Schedule::build_piecewise(
            &[(i64::MIN, &p), (1_000_000, &later)],
            &[oral(0), oral(2_000_000)],
        )
        .unwrap();
        let amounts: Vec<f64> = s
            .events()
            .iter()
            .flat_map(|e| e.additions.iter().map(|a| a.1))
            .collect();
        assert_eq!(amounts, vec![20.0, 50.0]);
    }

    #[test]
    fn bad_dosing_is_refused_with_its_index() {
        let p = domino_70kg();
        let bad = [
            Dosing::Bolus {
                at_ms: 0,
                route: Route::IvBolus,
                amount_mg: -1.0,
            },
            Dosing::Bolus {
                at_ms: 0,
                route: Route::Transdermal,
                amount_mg: 1.0,
            },
            Dosing::Infusion {
                start_ms: 10,
                end_ms: Some(5),
                rate_mg_per_h: 1.0,
            },
            Dosing::Infusion {
                start_ms: 0,
                end_ms: None,
                rate_mg_per_h: f64::NAN,
            },
        ];
        for d in bad {
            assert!(
                Schedule::build(&p, std::slice::from_ref(&d)).is_err(),
                "{d:?}"
            );
        }
    }
}
