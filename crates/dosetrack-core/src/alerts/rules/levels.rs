//! The level rules: `redose_due` (Ce falling below the analgesic floor
//! within the lead time, never while Ce is still rising to the peak of the
//! dose just given; a patch reaching its planned end),
//! `subtherapeutic` (Ce below the floor during therapy) and
//! `concentration_high` (Ce above, or rising above, the ceiling; Cp above
//! it for a sustained time).

use super::{cause, clock, in_min, round1, Ctx, Evaluation};
use crate::alerts::details::{
    HighCe, HighCp, RedoseFloor, RedosePatchEnd, RuleDetails, Subtherapeutic,
};
use crate::alerts::{min_ms, Priority, Rule};
use crate::pk::{Direction, Output};
use crate::vocab::{format_rfc3339, Route, TimeMs};

/// How long after a single dose `redose_due` looks for its Ce peak (an oral
/// dose peaks within about an hour in plasma, later in Ce).
const PEAK_SEARCH_MS: TimeMs = 4 * 3_600_000;
/// The grid of that search.
const PEAK_STEP_MS: TimeMs = 30_000;

impl Ctx<'_> {
    pub(super) fn redose_due(&self, therapy: bool, ev: &mut Evaluation) {
        if !therapy {
            return;
        }
        let floor = self.d.patient.targets.analgesic_floor_ng_per_ml;
        let lead = min_ms(self.cfg.redose_lead_min);
        let was = self.is_active(Rule::RedoseDue, "floor");
        // An active alert holds a little longer (level hysteresis).
        let lead_now = if was {
            lead + (lead as f64 * self.cfg.level_hysteresis) as TimeMs
        } else {
            lead
        };
        let ce = self.d.solution.at(self.now).ce_ng_per_ml;
        // Never raised on the dose that just caused it: while Ce is still
        // rising to that dose's peak, the fall below the floor is not yet
        // the question; look again at the peak. (An alert already active
        // stays through a redose, as before: clearing it on the redose would
        // only raise it again after the peak.)
        let peak_ahead = if was { None } else { self.ce_peak_ahead() };
        let below = match peak_ahead {
            Some(peak) => {
                ev.wake(peak);
                None
            }
            None => self.falls_below(floor, self.horizon),
        };
        match below {
            Some(t) if t - self.now <= lead_now => {
                let details = RuleDetails::RedoseFloor(RedoseFloor {
                    assumes: self.assumes(),
                    below_floor_at: format_rfc3339(t),
                    cause: self.last_delivery().map(cause),
                    ce_ng_per_ml: round1(ce),
                    floor_ng_per_ml: round1(floor),
                    lead_min: round1(self.cfg.redose_lead_min),
                    model: self.model(),
                });
                let message = if t <= self.now {
                    format!(
                        "Redose due now: Ce {:.0} ng/mL is below the analgesic floor {:.0} ng/mL",
                        ce, floor
                    )
                } else {
                    format!(
                        "Redose due: Ce will fall below {:.0} ng/mL at {} ({})",
                        floor,
                        clock(t),
                        in_min(self.now, t)
                    )
                };
                let mut c = self.condition(
                    Rule::RedoseDue,
                    "floor".into(),
                    Priority::Low,
                    message,
                    details,
                );
                // Already below: the crossing is "now" at every evaluation,
                // not a predicted time (a moving key would be an `updated`
                // every `update_shift_min` for as long as Ce stays low).
                if t > self.now {
                    c.key_time_ms = Some(t);
                    c.fingerprint = "predicted".into();
                } else {
                    c.fingerprint = "below".into();
                }
                ev.conditions.push(c);
                // It stops holding when Ce climbs back over the floor.
                if let Some(up) = self
                    .d
                    .solution
                    .next_crossing(Output::Ce, floor, self.now, self.horizon)
                    .filter(|c| c.direction == Direction::Rising)
                {
                    ev.wake(up.at_ms);
                }
            }
            Some(t) => ev.wake(t - lead),
            None => {}
        }
        // A patch reaching its planned end (not one removed early).
        let deliveries = &self.d.ledger.deliveries;
        for p in deliveries.iter().filter(|d| d.route == Route::Transdermal) {
            let Some(end) = p.planned_end_ms.filter(|&e| p.end_ms == Some(e)) else {
                continue;
            };
            let replaced = deliveries
                .iter()
                .any(|o| o.route == Route::Transdermal && o.start_ms > p.start_ms);
            if replaced || p.start_ms > self.now {
                continue;
            }
            let subject = format!("patch_end:{}", p.source);
            if self.now >= end - lead && self.now < end + lead {
                let details = RuleDetails::RedosePatchEnd(RedosePatchEnd {
                    assumes: self.assumes(),
                    cause: cause(p),
                    model: self.model(),
                    patch_source: p.source.clone(),
                    planned_end: format_rfc3339(end),
                });
                let message = if self.now < end {
                    format!(
                        "Patch from {} reaches its planned end at {} ({}): plan the next dose",
                        p.source,
                        clock(end),
                        in_min(self.now, end)
                    )
                } else {
                    format!(
                        "Patch from {} reached its planned end at {}: plan the next dose",
                        p.source,
                        clock(end)
                    )
                };
                let mut c =
                    self.condition(Rule::RedoseDue, subject, Priority::Low, message, details);
                c.key_time_ms = Some(end);
                ev.conditions.push(c);
                ev.wake(end + lead);
            } else if self.now < end - lead {
                ev.wake(end - lead);
            }
        }
    }

    /// When Ce, still rising from the latest single dose (a bolus or an
    /// absorbing dose, its lag included), reaches its peak; `None` when Ce
    /// is not rising to a peak ahead, when an infusion or patch is running
    /// (their course is the pump's), or when the latest dose is more than
    /// [`PEAK_SEARCH_MS`] old. Ce rises exactly while Cp > Ce (Ce' =
    /// ke0·(Cp − Ce)); the peak is found on a 30-s grid, so the wake-up is
    /// at most one step after it.
    fn ce_peak_ahead(&self) -> Option<TimeMs> {
        let last = self.last_delivery()?;
        if last.amount_mg.is_none()
            || self.d.ledger.running_at(self.now).next().is_some()
            || self.now - last.start_ms > PEAK_SEARCH_MS
        {
            return None;
        }
        let s = &self.d.solution;
        let rising = |t: TimeMs| {
            let c = s.at(t);
            c.cp_ng_per_ml > c.ce_ng_per_ml * (1.0 + 1e-9) + 1e-12
        };
        let end = last.start_ms + PEAK_SEARCH_MS;
        let lag_ms = (self.d.patient.params.route(last.route).lag_min * 60_000.0) as TimeMs;
        let rise_from = last.start_ms + lag_ms;
        if !rising(self.now) && self.now > rise_from {
            return None;
        }
        // Rising now, or waiting out the lag: the first grid point after
        // the rise has begun where Ce no longer rises.
        let mut t = self.now;
        let mut rose = rising(self.now);
        while t < end {
            t = (t + PEAK_STEP_MS).min(end);
            let up = rising(t);
            if rose && !up {
                return Some(t);
            }
            rose |= up;
        }
        rose.then_some(end)
    }

    pub(super) fn subtherapeutic(&self, therapy: bool, ev: &mut Evaluation) {
        if !therapy {
            return;
        }
        let floor = self.d.patient.targets.analgesic_floor_ng_per_ml;
        let was = self.is_active(Rule::Subtherapeutic, "ce");
        // Between intermittent doses (no infusion or patch running) a fall
        // below the floor is what an open `redose_due` already says: one
        // fact, one alert (docs/alerts-ward-day.md). While a continuous
        // delivery runs, Ce below the floor says its rate is too low: that
        // is this rule's own message.
        let continuous = self
            .d
            .ledger
            .deliveries
            .iter()
            .any(|del| del.start_ms <= self.now && del.is_running_at(self.now));
        if !was && !continuous && self.is_active(Rule::RedoseDue, "floor") {
            return;
        }
        let level = if was {
            floor * (1.0 + self.cfg.level_hysteresis)
        } else {
            floor
        };
        let ce = self.d.solution.at(self.now).ce_ng_per_ml;
        // A dose still being absorbed that brings Ce over the floor within
        // the lead time is not under-dosing (an oral dose, a new patch).
        let rising_soon = self
            .d
            .solution
            .next_crossing(
                Output::Ce,
                level,
                self.now,
                min_ms(self.cfg.redose_lead_min),
            )
            .filter(|c| c.direction == Direction::Rising);
        if ce < level && !was {
            if let Some(c) = rising_soon {
                ev.wake(c.at_ms);
                return;
            }
        }
        if ce < level {
            let details = RuleDetails::Subtherapeutic(Subtherapeutic {
                assumes: self.assumes(),
                cause: self.last_delivery().map(cause),
                ce_ng_per_ml: round1(ce),
                floor_ng_per_ml: round1(floor),
                model: self.model(),
            });
            ev.conditions.push(self.condition(
                Rule::Subtherapeutic,
                "ce".into(),
                Priority::Medium,
                format!(
                    "Ce {:.0} ng/mL is below the analgesic floor {:.0} ng/mL during active therapy",
                    ce, floor
                ),
                details,
            ));
            if let Some(c) =
                self.d
                    .solution
                    .next_crossing(Output::Ce, level, self.now, self.horizon)
            {
                ev.wake(c.at_ms);
            }
        } else if let Some(t) = self.falls_below(level, self.horizon) {
            ev.wake(t);
        }
    }

    pub(super) fn concentration_high(&self, ev: &mut Evaluation) {
        let ceiling = self.d.patient.targets.ceiling_ng_per_ml;
        let h = self.cfg.level_hysteresis;
        let s = &self.d.solution;
        let now_c = s.at(self.now);
        let lead = min_ms(self.cfg.high_lead_min);
        // Ce: above now, or predicted to rise above within the lead.
        let was_ce = self.is_active(Rule::ConcentrationHigh, "ce");
        let level = if was_ce { ceiling * (1.0 - h) } else { ceiling };
        let cross = s.next_crossing(Output::Ce, level, self.now, self.horizon);
        let above_now = now_c.ce_ng_per_ml > level;
        let rising_at = cross
            .filter(|c| c.direction == Direction::Rising)
            .map(|c| c.at_ms);
        let predicted = rising_at.filter(|t| t - self.now <= lead);
        if above_now || predicted.is_some() {
            let running: Vec<String> = self
                .d
                .ledger
                .running_at(self.now)
                .map(|d| format!("{} {}", d.source, d.label()))
                .collect();
            let mut details = HighCe {
                above_ceiling_at: None,
                assumes: self.assumes(),
                cause: self.last_delivery().map(cause),
                ce_ng_per_ml: round1(now_c.ce_ng_per_ml),
                ceiling_ng_per_ml: round1(ceiling),
                cp_ng_per_ml: round1(now_c.cp_ng_per_ml),
                model: self.model(),
                running,
            };
            let (message, key) = match predicted {
                Some(t) if !above_now => {
                    details.above_ceiling_at = Some(format_rfc3339(t));
                    (
                        format!(
                            "Ce will rise above the ceiling {:.0} ng/mL at {} ({}) under current inputs",
                            ceiling,
                            clock(t),
                            in_min(self.now, t)
                        ),
                        Some(t),
                    )
                }
                _ => (
                    format!(
                        "Ce {:.0} ng/mL is above the ceiling {:.0} ng/mL",
                        now_c.ce_ng_per_ml, ceiling
                    ),
                    None,
                ),
            };
            let mut c = self.condition(
                Rule::ConcentrationHigh,
                "ce".into(),
                Priority::High,
                message,
                RuleDetails::HighCe(details),
            );
            c.key_time_ms = key;
            c.fingerprint = if above_now { "above" } else { "predicted" }.into();
            ev.conditions.push(c);
            if let Some(c) = cross.filter(|c| c.direction == Direction::Falling) {
                ev.wake(c.at_ms);
            }
        } else if let Some(t) = rising_at {
            ev.wake(t - lead);
        }
        // Cp: above the ceiling for a sustained time (a bolus's plasma peak
        // passes; the delay is the condition delay of this subject).
        let was_cp = self.is_active(Rule::ConcentrationHigh, "cp");
        let level = if was_cp { ceiling * (1.0 - h) } else { ceiling };
        if now_c.cp_ng_per_ml > level {
            let details = RuleDetails::HighCp(HighCp {
                assumes: self.assumes(),
                cause: self.last_delivery().map(cause),
                ce_ng_per_ml: round1(now_c.ce_ng_per_ml),
                ceiling_ng_per_ml: round1(ceiling),
                cp_ng_per_ml: round1(now_c.cp_ng_per_ml),
                model: self.model(),
                sustained_min: Some(round1(self.cfg.cp_high_delay_min)),
            });
            let mut c = self.condition(
                Rule::ConcentrationHigh,
                "cp".into(),
                Priority::High,
                format!(
                    "Cp {:.0} ng/mL has stayed above the ceiling {:.0} ng/mL for {:.0} min",
                    now_c.cp_ng_per_ml, ceiling, self.cfg.cp_high_delay_min
                ),
                details,
            );
            c.condition_delay_ms = Some(min_ms(self.cfg.cp_high_delay_min));
            ev.conditions.push(c);
            if let Some(c) = s.next_crossing(Output::Cp, level, self.now, self.horizon) {
                ev.wake(c.at_ms);
            }
        } else if let Some(c) = s.next_crossing(Output::Cp, level, self.now, self.horizon) {
            ev.wake(c.at_ms);
        }
    }
}
