//! The dose rules: `dose_limit` (a bolus, an infusion rate, infusions
//! together, or the rolling 24-hour amount over the setting's limit) and
//! `dose_stacking` (a single dose while the previous one's Ce still rises,
//! or sooner than the route's minimum interval).

use super::{cause, clock, round1, Ctx, Evaluation, MIN_MS};
use crate::alerts::details::{
    BolusLimit, CumulativeLimit, DoseLimit, DoseStacking, RateLimit, RuleDetails, StackingReason,
    TotalRateLimit,
};
use crate::alerts::{min_ms, Priority, Rule};
use crate::ledger::Delivery;
use crate::vocab::round3;
use crate::vocab::{Route, TimeMs};

impl Ctx<'_> {
    pub(super) fn dose_limit(&self, ev: &mut Evaluation) {
        let w = self.weight_kg();
        if w.is_nan() || w <= 0.0 {
            return;
        }
        let limits = &self.d.patient.limits;
        let setting = self.d.patient.setting;
        let hold = min_ms(self.cfg.event_hold_min);
        let deliveries = &self.d.ledger.deliveries;
        // Single doses over the bolus limit.
        let max_bolus = limits.max_bolus_mg_per_kg.value;
        for del in deliveries {
            let Some(amount) = del.amount_mg else {
                continue;
            };
            if !self.cfg.bolus_limit_routes.contains(&del.route) {
                continue;
            }
            if del.start_ms > self.now || del.start_ms < self.now - hold {
                continue;
            }
            let per_kg = amount / w;
            if per_kg > max_bolus {
                let details = RuleDetails::DoseLimit(DoseLimit::Bolus(BolusLimit {
                    amount_mg: round1(amount),
                    assumes: self.assumes(),
                    cause: cause(del),
                    dose_mg_per_kg: round3(per_kg),
                    limit_mg_per_kg: max_bolus,
                    limit_source: limits.max_bolus_mg_per_kg.source.clone(),
                    model: self.model(),
                    setting,
                    weight_kg: w,
                }));
                ev.conditions.push(self.condition(
                    Rule::DoseLimit,
                    format!("bolus:{}:{}", del.source, del.input_id),
                    Priority::High,
                    format!(
                        "{} at {} is {:.2} mg/kg, over the {} limit of {} mg/kg",
                        del.label(),
                        clock(del.start_ms),
                        per_kg,
                        setting.as_str(),
                        max_bolus
                    ),
                    details,
                ));
                ev.wake(del.start_ms + hold);
            }
        }
        // Infusion rates over the limit, per source.
        let max_rate = limits.max_infusion_mg_per_kg_per_h.value;
        for del in self.d.ledger.running_at(self.now) {
            if del.route != Route::IvInfusion {
                continue;
            }
            let rate = del.rate_mg_per_h.unwrap_or(0.0);
            let per_kg = rate / w;
            if per_kg > max_rate {
                let details = RuleDetails::DoseLimit(DoseLimit::InfusionRate(RateLimit {
                    assumes: self.assumes(),
                    cause: cause(del),
                    limit_mg_per_kg_per_h: max_rate,
                    limit_source: limits.max_infusion_mg_per_kg_per_h.source.clone(),
                    model: self.model(),
                    rate_mg_per_h: round1(rate),
                    rate_mg_per_kg_per_h: round3(per_kg),
                    setting,
                    weight_kg: w,
                }));
                let mut c = self.condition(
                    Rule::DoseLimit,
                    format!("rate:{}", del.source),
                    Priority::High,
                    format!(
                        "Infusion from {} at {} mg/h is {:.2} mg/kg/h, over the {} limit of {} mg/kg/h",
                        del.source,
                        round1(rate),
                        per_kg,
                        setting.as_str(),
                        max_rate
                    ),
                    details,
                );
                c.fingerprint = format!("{rate}");
                ev.conditions.push(c);
                if let Some(end) = del.end_ms {
                    ev.wake(end);
                }
            }
        }
        // Several infusions together over the limit, none alone.
        let running: Vec<&Delivery> = self
            .d
            .ledger
            .running_at(self.now)
            .filter(|d| d.route == Route::IvInfusion)
            .collect();
        let total: f64 = running.iter().filter_map(|d| d.rate_mg_per_h).sum();
        let any_alone = running
            .iter()
            .any(|d| d.rate_mg_per_h.unwrap_or(0.0) / w > max_rate);
        if running.len() > 1 && !any_alone && total / w > max_rate {
            let sources: Vec<String> = running
                .iter()
                .map(|d| format!("{} {}", d.source, d.label()))
                .collect();
            let details = RuleDetails::DoseLimit(DoseLimit::InfusionRateTotal(TotalRateLimit {
                assumes: self.assumes(),
                cause: self.last_delivery().map(cause),
                infusions: sources.clone(),
                limit_mg_per_kg_per_h: max_rate,
                limit_source: limits.max_infusion_mg_per_kg_per_h.source.clone(),
                model: self.model(),
                rate_mg_per_h: round1(total),
                rate_mg_per_kg_per_h: round3(total / w),
                setting,
                weight_kg: w,
            }));
            let mut c = self.condition(
                Rule::DoseLimit,
                "rate:total".into(),
                Priority::High,
                format!(
                    "{} infusions together run at {} mg/h = {:.2} mg/kg/h, over the {} limit of {} mg/kg/h ({})",
                    running.len(),
                    round1(total),
                    total / w,
                    setting.as_str(),
                    max_rate,
                    sources.join(", ")
                ),
                details,
            );
            c.fingerprint = format!("{total}");
            ev.conditions.push(c);
        }
        // Rolling 24-hour cumulative dose (amount given, every route).
        let max_cum = limits.max_cumulative_mg_per_kg_per_24h.value;
        let day = 24 * 3_600_000;
        let from = self.now - day;
        let mut total_mg = 0.0;
        let mut running_mg_per_h = 0.0;
        let mut next_leave: Option<TimeMs> = None;
        for del in deliveries {
            if let Some(a) = del.amount_mg {
                if del.start_ms > from && del.start_ms <= self.now {
                    total_mg += a;
                    let leaves = del.start_ms + day;
                    next_leave = Some(next_leave.map_or(leaves, |t: TimeMs| t.min(leaves)));
                }
            } else if let Some(r) = del.rate_mg_per_h {
                let s = del.start_ms.max(from);
                let e = del.end_ms.unwrap_or(TimeMs::MAX).min(self.now);
                if e > s {
                    total_mg += r * (e - s) as f64 / 3_600_000.0;
                }
                if del.is_running_at(self.now) {
                    running_mg_per_h += r;
                }
            }
        }
        let per_kg = total_mg / w;
        let was = self.is_active(Rule::DoseLimit, "cumulative_24h");
        let level = if was {
            max_cum * (1.0 - self.cfg.level_hysteresis)
        } else {
            max_cum
        };
        if per_kg > level {
            let details = RuleDetails::DoseLimit(DoseLimit::Cumulative24h(CumulativeLimit {
                assumes: self.assumes(),
                cause: self.last_delivery().map(cause),
                counts: "amount given by every route, infusions and patches as rate x time, over the last 24 h".to_owned(),
                limit_mg_per_kg_per_24h: max_cum,
                limit_source: limits.max_cumulative_mg_per_kg_per_24h.source.clone(),
                model: self.model(),
                setting,
                total_mg: round1(total_mg),
                total_mg_per_kg: (per_kg * 100.0).round() / 100.0,
                weight_kg: w,
            }));
            ev.conditions.push(self.condition(
                Rule::DoseLimit,
                "cumulative_24h".into(),
                Priority::High,
                format!(
                    "{:.0} mg ({:.1} mg/kg) given in the last 24 h, over the {} limit of {} mg/kg/24 h",
                    total_mg,
                    per_kg,
                    setting.as_str(),
                    max_cum
                ),
                details,
            ));
            // Look again as doses leave the window.
            ev.wake(
                next_leave
                    .unwrap_or(self.now + 15 * 60_000)
                    .min(self.now + 15 * 60_000),
            );
        } else if running_mg_per_h > 0.0 {
            // Earliest the running deliveries can take it over the limit
            // (doses leaving the window only make it later).
            let h = (level * w - total_mg) / running_mg_per_h;
            ev.wake(self.now + ((h * 3_600_000.0).ceil() as TimeMs).max(1_000));
        }
    }

    /// Time from a single dose by `route` at `at_ms` to its Ce peak, for
    /// this patient's model.
    fn ce_peak_after(&self, route: Route, at_ms: TimeMs) -> Option<TimeMs> {
        // Ce of one dose rises to a single peak: 15 s grid over 12 h
        // (memoised on the shared dynamics: the same answer every time).
        self.d.solution.system_at(at_ms).unit_dose_ce_peak_ms(route)
    }

    pub(super) fn dose_stacking(&self, ev: &mut Evaluation) {
        let hold = min_ms(self.cfg.event_hold_min);
        let singles: Vec<&Delivery> = self
            .d
            .ledger
            .deliveries
            .iter()
            .filter(|d| d.amount_mg.is_some() && d.start_ms <= self.now)
            .collect();
        for (i, dose) in singles.iter().enumerate() {
            if dose.start_ms < self.now - hold {
                continue;
            }
            // The previous single dose (ties: arrival order).
            let Some(prev) = singles[..i]
                .iter()
                .rev()
                .find(|p| p.start_ms <= dose.start_ms)
            else {
                continue;
            };
            let gap = dose.start_ms - prev.start_ms;
            let mut reason = None;
            if let Some(peak) = self.ce_peak_after(prev.route, prev.start_ms) {
                if gap < peak {
                    reason = Some((
                        StackingReason::PreviousCeRising,
                        format!(
                            "given while the previous dose ({} at {}) was still rising (its Ce peak is at {})",
                            prev.label(),
                            clock(prev.start_ms),
                            clock(prev.start_ms + peak)
                        ),
                        peak,
                    ));
                }
            }
            if reason.is_none() {
                if let Some(&m) = self.cfg.min_interval_min.get(&dose.route) {
                    let min = min_ms(m);
                    if gap < min {
                        reason = Some((
                            StackingReason::MinInterval,
                            format!(
                                "given {} min after the previous dose ({} at {}); the minimum interval is {} min",
                                gap / 60_000,
                                prev.label(),
                                clock(prev.start_ms),
                                m
                            ),
                            min,
                        ));
                    }
                }
            }
            let Some((why, text, _)) = reason else {
                continue;
            };
            let details = RuleDetails::DoseStacking(DoseStacking {
                assumes: self.assumes(),
                cause: cause(dose),
                interval_min: round1(gap as f64 / MIN_MS),
                model: self.model(),
                previous: cause(prev),
                reason: why,
            });
            ev.conditions.push(self.condition(
                Rule::DoseStacking,
                format!("dose:{}:{}", dose.source, dose.input_id),
                Priority::Medium,
                format!("{} at {} {}", dose.label(), clock(dose.start_ms), text),
                details,
            ));
            ev.wake(dose.start_ms + hold);
        }
    }
}
