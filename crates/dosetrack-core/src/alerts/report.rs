//! The alarm-burden report (`dosetrack alerts report`), from stored
//! lifecycle messages.
//!
//! Per rule: how many alerts were raised, how many per patient-day, the
//! median time from raise to acknowledgement, and the share that cleared
//! within 2 minutes with no operator action (a measure of nuisance alarms).

use super::{Phase, Rule};
use crate::vocab::TimeMs;
use serde::Serialize;
use std::collections::BTreeMap;

/// One stored lifecycle message.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertEvent {
    pub alert_id: String,
    pub rule: Rule,
    pub phase: Phase,
    pub time_ms: TimeMs,
}

/// One rule's line of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleBurden {
    pub rule: Rule,
    pub raised: u64,
    pub per_patient_day: Option<f64>,
    pub acknowledged: u64,
    pub median_time_to_ack_min: Option<f64>,
    pub cleared: u64,
    /// Share of the cleared alerts that cleared within 2 minutes of being
    /// raised with no acknowledgement or pause.
    pub cleared_within_2_min_without_action: Option<f64>,
    pub escalations: u64,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub from_ms: TimeMs,
    pub to_ms: TimeMs,
    pub patient_days: f64,
    pub rules: Vec<RuleBurden>,
}

const QUICK_MS: TimeMs = 2 * 60_000;

/// Build the report for alerts raised in `[from_ms, to_ms)`; `events` are
/// every lifecycle message of those alerts (any order), `patient_days` the
/// tracked time in the window.
pub fn build(events: &[AlertEvent], patient_days: f64, from_ms: TimeMs, to_ms: TimeMs) -> Report {
    #[derive(Default)]
    struct Life {
        rule: Option<Rule>,
        raised: Option<TimeMs>,
        acked: Option<TimeMs>,
        paused: bool,
        cleared: Option<TimeMs>,
        escalations: u64,
    }
    let mut lives: BTreeMap<&str, Life> = BTreeMap::new();
    for e in events {
        let l = lives.entry(e.alert_id.as_str()).or_default();
        l.rule = Some(e.rule);
        match e.phase {
            Phase::Raised => l.raised = Some(e.time_ms),
            Phase::Acknowledged => l.acked = Some(l.acked.map_or(e.time_ms, |a| a.min(e.time_ms))),
            Phase::Paused => l.paused = true,
            Phase::Cleared => l.cleared = Some(e.time_ms),
            Phase::Escalated => l.escalations += 1,
            Phase::Updated => {}
        }
    }
    let mut per_rule: BTreeMap<Rule, (u64, Vec<f64>, u64, u64, u64)> = BTreeMap::new();
    for l in lives.values() {
        let (Some(rule), Some(raised)) = (l.rule, l.raised) else {
            continue;
        };
        if raised < from_ms || raised >= to_ms {
            continue;
        }
        let e = per_rule.entry(rule).or_default();
        e.0 += 1;
        if let Some(a) = l.acked {
            e.1.push((a - raised) as f64 / 60_000.0);
        }
        if let Some(c) = l.cleared {
            e.2 += 1;
            if l.acked.is_none() && !l.paused && c - raised <= QUICK_MS {
                e.3 += 1;
            }
        }
        e.4 += l.escalations;
    }
    let rules = Rule::ALL
        .iter()
        .map(|&rule| {
            let (raised, mut acks, cleared, quick, escalations) =
                per_rule.remove(&rule).unwrap_or_default();
            acks.sort_by(f64::total_cmp);
            RuleBurden {
                rule,
                raised,
                per_patient_day: (patient_days > 0.0).then(|| raised as f64 / patient_days),
                acknowledged: acks.len() as u64,
                median_time_to_ack_min: median(&acks),
                cleared,
                cleared_within_2_min_without_action: (cleared > 0)
                    .then(|| quick as f64 / cleared as f64),
                escalations,
            }
        })
        .collect();
    Report {
        from_ms,
        to_ms,
        patient_days,
        rules,
    }
}

fn median(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str, rule: Rule, phase: Phase, t_min: i64) -> AlertEvent {
        AlertEvent {
            alert_id: id.into(),
            rule,
            phase,
            time_ms: t_min * 60_000,
        }
    }

    #[test]
    fn counts_medians_and_quick_clears() {
        let events = vec![
            ev("a", Rule::RedoseDue, Phase::Raised, 0),
            ev("a", Rule::RedoseDue, Phase::Acknowledged, 4),
            ev("a", Rule::RedoseDue, Phase::Cleared, 30),
            ev("b", Rule::RedoseDue, Phase::Raised, 10),
            ev("b", Rule::RedoseDue, Phase::Cleared, 11), // quick, no action
            ev("c", Rule::RedoseDue, Phase::Raised, 20),
            ev("c", Rule::RedoseDue, Phase::Escalated, 35),
            ev("c", Rule::RedoseDue, Phase::Acknowledged, 40),
            ev("d", Rule::DoseLimit, Phase::Raised, 5),
            // raised outside the window: not counted
            ev("e", Rule::DoseLimit, Phase::Raised, 5000),
        ];
        let r = build(&events, 2.0, 0, 1000 * 60_000);
        let redose = &r.rules[0];
        assert_eq!(redose.rule, Rule::RedoseDue);
        assert_eq!(redose.raised, 3);
        assert_eq!(redose.per_patient_day, Some(1.5));
        assert_eq!(redose.median_time_to_ack_min, Some(12.0)); // (4 + 20) / 2
        assert_eq!(redose.cleared, 2);
        assert_eq!(redose.cleared_within_2_min_without_action, Some(0.5));
        assert_eq!(redose.escalations, 1);
        let limit = r.rules.iter().find(|b| b.rule == Rule::DoseLimit).unwrap();
        assert_eq!(limit.raised, 1);
        assert_eq!(limit.median_time_to_ack_min, None);
        assert_eq!(limit.cleared_within_2_min_without_action, None);
    }
}
