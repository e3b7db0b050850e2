//! The device rules: `device_silent` (a delivering device not heard from),
//! `device_fault` (a device alarm, with the model's consequence: when Ce
//! falls below the floor if delivery does not resume) and
//! `association_conflict` (events refused because they named another
//! patient than the device's: the gateway and the model disagree on whom
//! the device serves).

use super::{alarm_cause, clock, in_min, round1, Ctx, Evaluation, PatientFacts, MIN_MS};
use crate::alerts::details::{AssociationConflict, DeviceFault, DeviceSilent, RuleDetails};
use crate::alerts::{Priority, Rule};
use crate::pk::{Direction, Output, Schedule, Solution};
use crate::vocab::{format_rfc3339, TimeMs};
use std::sync::Arc;

impl Ctx<'_> {
    pub(super) fn device_silent(&self, facts: &PatientFacts<'_>, ev: &mut Evaluation) {
        let stale = facts.device_stale_after_ms;
        let mut seen = std::collections::BTreeSet::new();
        for del in self.d.ledger.running_at(self.now) {
            let Some(id) = del.source.strip_prefix("devices/") else {
                continue;
            };
            if !seen.insert(id) {
                continue;
            }
            let heard = facts
                .devices
                .iter()
                .find(|d| d.device_id == id)
                .map(|d| d.last_heard_ms);
            let deadline = heard.map_or(self.now, |h| h.saturating_add(stale));
            if self.now > deadline || heard.is_none() {
                let details = RuleDetails::DeviceSilent(DeviceSilent {
                    assumes: self.assumes(),
                    consequence: "the model assumes the device keeps delivering as last reported; the state is marked stale".to_owned(),
                    delivering: del.label(),
                    device_id: id.to_owned(),
                    expected_within_min: round1(stale as f64 / MIN_MS),
                    last_heard: heard.map(format_rfc3339),
                    model: self.model(),
                });
                let mut c = self.condition(
                    Rule::DeviceSilent,
                    id.to_owned(),
                    Priority::Medium,
                    format!(
                        "Device {id} ({}) not heard from since {}: the model assumes it still delivers",
                        del.label(),
                        heard.map_or("never".to_owned(), clock)
                    ),
                    details,
                );
                c.fingerprint = heard.unwrap_or(0).to_string();
                ev.conditions.push(c);
            } else {
                ev.wake(deadline + 1);
            }
        }
    }

    pub(super) fn association_conflict(&self, facts: &PatientFacts<'_>, ev: &mut Evaluation) {
        for r in facts.refused {
            let id = &r.device_id;
            let details = RuleDetails::AssociationConflict(AssociationConflict {
                associated_patient_id: facts.patient_id.to_owned(),
                assumes: format!(
                    "the model attributes device {id}'s events without patient_id to patient {} (its association); the refused events are not in any model",
                    facts.patient_id
                ),
                device_id: id.clone(),
                latest_time: format_rfc3339(r.latest_ms),
                model: self.model(),
                named_patient_id: r.named_patient_id.clone(),
                refused_count: r.count,
                refused_input_ids: r.input_ids.clone(),
            });
            let mut c = self.condition(
                Rule::AssociationConflict,
                id.clone(),
                Priority::Medium,
                format!(
                    "Device {id} sent {} event(s) naming patient {} while associated with this patient: refused; check the device's assignment",
                    r.count, r.named_patient_id
                ),
                details,
            );
            c.fingerprint = r.count.to_string();
            ev.conditions.push(c);
        }
    }

    pub(super) fn device_fault(&self, ev: &mut Evaluation) {
        let floor = self.d.patient.targets.analgesic_floor_ng_per_ml;
        for alarm in self.d.ledger.alarms_at(self.now) {
            let (priority, stops) = match alarm.code.as_str() {
                "occlusion" | "air_in_line" | "battery_depleted" => (Priority::High, true),
                "door_open" => (Priority::Medium, true),
                "patch_detached" => (Priority::Medium, false),
                "other" => (Priority::Medium, false),
                // Low-value alarms: infusion_complete, battery_low.
                _ => (Priority::Low, false),
            };
            let mut details = DeviceFault {
                assumes: self.assumes(),
                below_floor_at: None,
                cause: alarm_cause(alarm),
                code: alarm.code.clone(),
                consequence_assumes: None,
                device_id: alarm.device_id.clone(),
                device_message: alarm.message.clone(),
                model: self.model(),
                since: format_rfc3339(alarm.start_ms),
            };
            // The model's consequence.
            let delivering = self.d.ledger.deliveries.iter().any(|d| {
                // Running at the alarm, or stopped by the pump with it
                // (`infusion_stopped` at the alarm's time).
                d.source == alarm.source
                    && d.rate_mg_per_h.is_some()
                    && d.start_ms < alarm.start_ms
                    && d.end_ms.is_none_or(|e| e >= alarm.start_ms)
            });
            let consequence = if stops && delivering {
                self.below_floor_if_stopped(&alarm.source, alarm.start_ms, floor)
                    .map(|t| (t, "if delivery does not resume"))
            } else if alarm.code == "patch_detached" {
                self.falls_below(floor, self.horizon)
                    .map(|t| (t, "with the patch off"))
            } else {
                None
            };
            let mut message = format!(
                "Device {} alarm: {}{}",
                alarm.device_id,
                alarm.code.replace('_', " "),
                alarm
                    .message
                    .as_deref()
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default()
            );
            let mut key = None;
            if let Some((t, assume)) = consequence {
                details.below_floor_at = Some(format_rfc3339(t));
                details.consequence_assumes = Some(assume.to_owned());
                message.push_str(&if t <= self.now {
                    format!("; Ce is below the floor {floor:.0} ng/mL")
                } else {
                    format!(
                        "; Ce will fall below {floor:.0} ng/mL at {} ({}) {assume}",
                        clock(t),
                        in_min(self.now, t)
                    )
                });
                // Already below: "now" is no predicted time (see redose_due).
                key = (t > self.now).then_some(t);
            }
            let mut c = self.condition(
                Rule::DeviceFault,
                format!("{}:{}", alarm.device_id, alarm.code),
                priority,
                message,
                RuleDetails::DeviceFault(details),
            );
            c.key_time_ms = key;
            ev.conditions.push(c);
        }
    }

    /// When Ce falls below `floor` if `source`'s deliveries stopped at
    /// `stop_ms` (the latest parameters throughout).
    fn below_floor_if_stopped(&self, source: &str, stop_ms: TimeMs, floor: f64) -> Option<TimeMs> {
        let dosing = self.d.ledger.dosing_stopped(source, stop_ms);
        let system = self.d.solution.system().clone();
        let schedule = Schedule::build(system.params(), &dosing).ok()?;
        let sol = Solution::new(Arc::new(system), &schedule);
        if sol.at(self.now).ce_ng_per_ml < floor {
            return Some(self.now);
        }
        sol.next_crossing(Output::Ce, floor, self.now, self.horizon)
            .filter(|c| c.direction == Direction::Falling)
            .map(|c| c.at_ms)
    }
}
