//! The simulated ward day: an offline, deterministic replay of a simulated
//! ward through the real alert engine on a virtual clock.
//!
//! This module owns three things:
//!
//! * **The replay** ([`run`]). The ward's messages ([`crate::sim::ward::Ward`])
//!   go through the daemon's path — [`crate::intake::intake`] (received at
//!   their occurrence time), [`Tracker::apply`], then
//!   [`AlertEngine::evaluate`] of the scopes touched — while the engine's
//!   timers fire at their own times in between, exactly as the daemon will
//!   call them. No clock, socket or database: the same spec gives the same
//!   lifecycle messages.
//! * **The simulated nurse** ([`NursePolicy`]): every alert raised is
//!   acknowledged after a seeded delay that depends on its priority; an
//!   escalation reaches the nurse again at its new priority.
//! * **The independent check** of every `raised` message: the condition is
//!   re-derived at the raise time by brute force (a separate tracker fed the
//!   inputs received up to then, Ce/Cp sampled every 15 s, dose limits
//!   recomputed from the resolved patient, device state from the raw device
//!   events), without calling the rules. A raise whose condition does not
//!   hold is a [`Violation`].

use crate::alerts::report::{self, AlertEvent, Report};
use crate::alerts::{
    AlertBook, AlertConfig, AlertEngine, AlertMessage, Phase, Priority, Rule, Scope,
};
use crate::contract::{AlertCommand, CommandAction, DeviceEventKind, Input, InputTopic};
use crate::intake::{self, Intake};
use crate::patient::Formulary;
use crate::pk::{Dosing, Schedule, Solution};
use crate::sim::ward::{Ward, WardSpec};
use crate::tracker::{Derived, TrackedInput, Tracker, TrackerConfig};
use crate::vocab::{Route, TimeMs};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// What to replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WardDaySpec {
    pub patients: usize,
    pub hours: u32,
    pub seed: u64,
    /// Simulated start, ms since the epoch.
    pub start_ms: TimeMs,
}

/// 2026-01-05T07:00:00Z: a Monday morning, the start of a day shift.
pub const DEFAULT_START_MS: TimeMs = 1_767_596_400_000;

impl WardDaySpec {
    pub fn new(patients: usize, hours: u32, seed: u64) -> Self {
        WardDaySpec {
            patients,
            hours,
            seed,
            start_ms: DEFAULT_START_MS,
        }
    }

    pub fn end_ms(&self) -> TimeMs {
        self.start_ms + TimeMs::from(self.hours) * 3_600_000
    }
}

/// The simulated nurse: how long after a notification she acknowledges it,
/// by the alert's priority at that moment (uniform in the range, seeded by
/// the run's seed and the alert id).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct NursePolicy {
    pub high_min: (f64, f64),
    pub medium_min: (f64, f64),
    pub low_min: (f64, f64),
    /// Share of low-priority notifications never acknowledged (an
    /// escalation to medium reaches the nurse again).
    pub low_never_share: f64,
}

impl Default for NursePolicy {
    fn default() -> Self {
        NursePolicy {
            high_min: (1.0, 3.0),
            medium_min: (2.0, 10.0),
            low_min: (5.0, 30.0),
            low_never_share: 0.2,
        }
    }
}

impl NursePolicy {
    /// One line for people.
    pub fn describe(&self) -> String {
        format!(
            "acknowledges high after {}-{} min, medium after {}-{} min, low after {}-{} min \
             ({:.0} % of low never); an escalation is a new notification at its new priority",
            self.high_min.0,
            self.high_min.1,
            self.medium_min.0,
            self.medium_min.1,
            self.low_min.0,
            self.low_min.1,
            self.low_never_share * 100.0
        )
    }

    /// Delay before acknowledging (`None`: never), from two uniform draws.
    fn delay_ms(&self, priority: Priority, u_delay: f64, u_never: f64) -> Option<TimeMs> {
        let (lo, hi) = match priority {
            Priority::High => self.high_min,
            Priority::Medium => self.medium_min,
            Priority::Low => {
                if u_never < self.low_never_share {
                    return None;
                }
                self.low_min
            }
        };
        Some(((lo + (hi - lo) * u_delay) * 60_000.0).round() as TimeMs)
    }
}

/// SplitMix64: a deterministic hash for the nurse's draws.
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A uniform draw in [0, 1) from the seed, an alert id and a salt.
fn draw(seed: u64, alert_id: &str, salt: u64) -> f64 {
    let mut h = splitmix(seed ^ salt.wrapping_mul(0xA24B_AED4_963E_E407));
    for b in alert_id.bytes() {
        h = splitmix(h ^ u64::from(b));
    }
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Lifecycle messages of one rule, by phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PhaseCounts {
    pub raised: u64,
    pub updated: u64,
    pub escalated: u64,
    pub acknowledged: u64,
    pub paused: u64,
    pub cleared: u64,
}

impl PhaseCounts {
    fn add(&mut self, phase: Phase) {
        match phase {
            Phase::Raised => self.raised += 1,
            Phase::Updated => self.updated += 1,
            Phase::Escalated => self.escalated += 1,
            Phase::Acknowledged => self.acknowledged += 1,
            Phase::Paused => self.paused += 1,
            Phase::Cleared => self.cleared += 1,
        }
    }
}

/// A `raised` whose condition the independent check could not confirm.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Violation {
    pub alert_id: String,
    pub rule: Rule,
    pub subject: String,
    pub scope: String,
    pub time_ms: TimeMs,
    pub why: String,
}

/// Everything the replay produced.
#[derive(Debug, Clone, Serialize)]
pub struct WardDayResult {
    pub spec: WardDaySpec,
    pub nurse: NursePolicy,
    /// Ward messages generated, accepted by intake, rejected.
    pub messages_generated: usize,
    pub inputs_accepted: usize,
    pub inputs_rejected: usize,
    /// Rejection codes seen (should be none).
    pub rejections: BTreeMap<String, u64>,
    /// Engine evaluations after inputs, and on timers.
    pub input_evaluations: u64,
    pub timer_evaluations: u64,
    /// Acknowledgements the nurse sent (and how many found the alert
    /// already gone or acknowledged).
    pub nurse_acks_sent: u64,
    pub nurse_acks_void: u64,
    /// Admitted time in the window.
    pub patient_days: f64,
    /// Every lifecycle message, in order.
    #[serde(skip)]
    pub messages: Vec<AlertMessage>,
    /// Per rule, per phase.
    pub phase_counts: BTreeMap<Rule, PhaseCounts>,
    /// The burden report ([`report::build`]) over the run.
    pub report: Report,
    /// `raised` messages checked, and those whose condition did not hold.
    pub raised_checked: u64,
    pub violations: Vec<Violation>,
}

/// One raise, with how many accepted inputs had been applied before it.
struct Raise {
    message: AlertMessage,
    inputs_applied: usize,
}

/// One accepted input, kept for the independent check.
struct Accepted {
    topic: InputTopic,
    input: Input,
}

/// Replay the ward day. Pure and deterministic.
pub fn run(spec: &WardDaySpec, formulary: Arc<Formulary>) -> WardDayResult {
    let nurse = NursePolicy::default();
    let end_ms = spec.end_ms();
    let ward_spec = WardSpec::new(spec.patients, spec.seed, spec.start_ms);
    let prefix = ward_spec.prefix.clone();
    let mut ward = Ward::new(ward_spec);
    let generated = ward.messages_between(spec.start_ms, end_ms);
    let max_skew_ms: TimeMs = 300_000;

    let tracker_cfg = TrackerConfig::default();
    let mut tracker = Tracker::new(formulary.clone(), tracker_cfg.clone());
    let mut engine = AlertEngine::new(AlertBook::new(AlertConfig::default()));

    let mut accepted: Vec<Accepted> = Vec::new();
    let mut rejections: BTreeMap<String, u64> = BTreeMap::new();
    let mut messages: Vec<AlertMessage> = Vec::new();
    let mut raises: Vec<Raise> = Vec::new();
    // Planned acknowledgements: (time, alert id).
    let mut acks: BTreeSet<(TimeMs, String)> = BTreeSet::new();
    let mut planned: BTreeMap<String, TimeMs> = BTreeMap::new();
    let mut input_evaluations = 0u64;
    let mut timer_evaluations = 0u64;
    let mut acks_sent = 0u64;
    let mut acks_void = 0u64;
    // Admitted intervals: patient → (admitted at, discharged at).
    let mut admitted: BTreeMap<String, (TimeMs, Option<TimeMs>)> = BTreeMap::new();

    let mut next_msg = 0usize;
    loop {
        let t_msg = generated.get(next_msg).map(|m| m.at_ms);
        let t_timer = engine.next_wake().filter(|&t| t < end_ms);
        let t_ack = acks.first().map(|(t, _)| *t).filter(|&t| t < end_ms);
        let Some(now) = [t_msg, t_timer, t_ack].into_iter().flatten().min() else {
            break;
        };
        let new_messages: Vec<AlertMessage>;
        if t_timer == Some(now) {
            // Due timers first, at their own time.
            let due = engine.due(now);
            timer_evaluations += 1;
            new_messages = engine.evaluate(&mut tracker, &due, now).messages;
        } else if t_ack == Some(now) {
            let Some((_, alert_id)) = acks.pop_first() else {
                break;
            };
            planned.remove(&alert_id);
            let open = engine
                .book()
                .get(&alert_id)
                .is_some_and(|r| r.acknowledged.is_none());
            acks_sent += 1;
            if !open {
                acks_void += 1;
            }
            let cmd = AlertCommand {
                id: format!("sim-nurse-{acks_sent}"),
                time_ms: now,
                action: CommandAction::Acknowledge,
                by: "sim-nurse".to_owned(),
            };
            let seq = -(acks_sent as i64);
            new_messages = engine.command(seq, &alert_id, &cmd, now).messages;
        } else {
            let m = &generated[next_msg];
            next_msg += 1;
            match intake::intake(
                &prefix,
                &m.topic,
                m.payload.as_bytes(),
                m.at_ms,
                max_skew_ms,
                &formulary,
            ) {
                Intake::Reject { record, .. } => {
                    *rejections
                        .entry(record.code.as_str().to_owned())
                        .or_default() += 1;
                    continue;
                }
                Intake::Accept { topic, input, .. } => {
                    let input = *input;
                    let mut scopes: BTreeSet<Scope> = BTreeSet::new();
                    match (&topic, &input) {
                        (InputTopic::Admit { patient_id }, Input::Admit(a)) => {
                            admitted
                                .entry(patient_id.clone())
                                .or_insert((a.time_ms, None));
                            scopes.insert(Scope::Patient(patient_id.clone()));
                        }
                        (InputTopic::Discharge { patient_id }, Input::Discharge(d)) => {
                            if let Some(e) = admitted.get_mut(patient_id) {
                                e.1 = Some(d.time_ms);
                            }
                            scopes.insert(Scope::Patient(patient_id.clone()));
                        }
                        (InputTopic::Dose { patient_id }, _) => {
                            scopes.insert(Scope::Patient(patient_id.clone()));
                        }
                        (InputTopic::DeviceEvent { device_id }, Input::DeviceEvent(e)) => {
                            scopes.insert(Scope::Device(device_id.clone()));
                            if let Some(p) = &e.patient_id {
                                scopes.insert(Scope::Patient(p.clone()));
                            }
                        }
                        _ => {}
                    }
                    accepted.push(Accepted {
                        topic: topic.clone(),
                        input: input.clone(),
                    });
                    let touched = tracker.apply(TrackedInput {
                        seq: accepted.len() as i64,
                        topic,
                        input,
                    });
                    scopes.extend(touched.into_iter().map(Scope::Patient));
                    input_evaluations += 1;
                    new_messages = engine.evaluate(&mut tracker, &scopes, now).messages;
                }
            }
        }
        for m in new_messages {
            // The nurse hears raises and escalations.
            if matches!(m.phase, Phase::Raised | Phase::Escalated) && m.acknowledged.is_none() {
                let salt = match m.phase {
                    Phase::Raised => 0,
                    _ => 1 + messages.len() as u64,
                };
                let u_delay = draw(spec.seed, &m.alert_id, salt * 2 + 1);
                let u_never = draw(spec.seed, &m.alert_id, salt * 2 + 2);
                if let Some(d) = nurse.delay_ms(m.priority, u_delay, u_never) {
                    let at = now + d;
                    let earlier = planned.get(&m.alert_id).is_none_or(|&p| at < p);
                    if earlier {
                        if let Some(p) = planned.insert(m.alert_id.clone(), at) {
                            acks.remove(&(p, m.alert_id.clone()));
                        }
                        acks.insert((at, m.alert_id.clone()));
                    }
                }
            }
            if m.phase == Phase::Raised {
                raises.push(Raise {
                    message: m.clone(),
                    inputs_applied: accepted.len(),
                });
            }
            messages.push(m);
        }
    }

    let patient_days = admitted
        .values()
        .map(|&(from, to)| {
            let from = from.max(spec.start_ms);
            let to = to.unwrap_or(end_ms).min(end_ms);
            (to - from).max(0) as f64 / 86_400_000.0
        })
        .sum();
    let mut phase_counts: BTreeMap<Rule, PhaseCounts> = BTreeMap::new();
    for m in &messages {
        phase_counts.entry(m.rule).or_default().add(m.phase);
    }
    let events: Vec<AlertEvent> = messages
        .iter()
        .map(|m| AlertEvent {
            alert_id: m.alert_id.clone(),
            rule: m.rule,
            phase: m.phase,
            time_ms: m.time_ms,
        })
        .collect();
    let report = report::build(&events, patient_days, spec.start_ms, end_ms);
    let checker = Checker {
        cfg: AlertConfig::default(),
        stale_ms: tracker_cfg.device_stale_after_ms,
        accepted: &accepted,
        tracker: Tracker::new(formulary, tracker_cfg),
        applied: 0,
    };
    let violations = checker.check_all(&raises);

    WardDayResult {
        spec: spec.clone(),
        nurse,
        messages_generated: generated.len(),
        inputs_accepted: accepted.len(),
        inputs_rejected: rejections.values().sum::<u64>() as usize,
        rejections,
        input_evaluations,
        timer_evaluations,
        nurse_acks_sent: acks_sent,
        nurse_acks_void: acks_void,
        patient_days,
        messages,
        phase_counts,
        report,
        raised_checked: raises.len() as u64,
        violations,
    }
}

// ---------------------------------------------------------------------------
// The independent check.
// ---------------------------------------------------------------------------

const STEP_MS: TimeMs = 15_000;

/// Re-derives each raised condition from the inputs received up to its
/// raise: a separate tracker advanced input by input, brute-force samples.
struct Checker<'a> {
    cfg: AlertConfig,
    stale_ms: TimeMs,
    accepted: &'a [Accepted],
    tracker: Tracker,
    applied: usize,
}

impl Checker<'_> {
    fn check_all(mut self, raises: &[Raise]) -> Vec<Violation> {
        let mut out = Vec::new();
        for r in raises {
            while self.applied < r.inputs_applied {
                let a = &self.accepted[self.applied];
                self.applied += 1;
                self.tracker.apply(TrackedInput {
                    seq: self.applied as i64,
                    topic: a.topic.clone(),
                    input: a.input.clone(),
                });
            }
            if let Err(why) = self.check(&r.message) {
                let m = &r.message;
                out.push(Violation {
                    alert_id: m.alert_id.clone(),
                    rule: m.rule,
                    subject: m.subject.clone(),
                    scope: m
                        .scope
                        .as_ref()
                        .map_or_else(String::new, ToString::to_string),
                    time_ms: m.time_ms,
                    why,
                });
            }
        }
        out
    }

    /// The inputs received so far.
    fn received(&self) -> &[Accepted] {
        &self.accepted[..self.applied]
    }

    fn check(&mut self, m: &AlertMessage) -> Result<(), String> {
        let t = m.time_ms;
        let scope = m.scope.clone().ok_or("no scope")?;
        let pid = match &scope {
            Scope::Patient(p) => p.clone(),
            Scope::Device(d) => {
                return match m.rule {
                    Rule::UnassignedInput if !self.tracker.unowned_seqs(d).is_empty() => Ok(()),
                    _ => Err(format!("device-scope {} with nothing unassigned", m.rule)),
                };
            }
        };
        if m.rule == Rule::UnassignedInput {
            return if self.tracker.orphan_seqs(&pid).is_empty() {
                Err("no unassigned input for the patient".into())
            } else {
                Ok(())
            };
        }
        let d = self
            .tracker
            .derived(&pid)
            .ok_or_else(|| format!("patient {pid} has no model at the raise time"))?;
        let floor = d.patient.targets.analgesic_floor_ng_per_ml;
        let ceiling = d.patient.targets.ceiling_ng_per_ml;
        let h = self.cfg.level_hysteresis;
        let sol = &d.solution;
        let ce = |at: TimeMs| sol.at(at).ce_ng_per_ml;
        let cp = |at: TimeMs| sol.at(at).cp_ng_per_ml;
        let grid = |from: TimeMs, to: TimeMs| {
            let mut v = Vec::new();
            let mut x = from;
            while x <= to {
                v.push(x);
                x += STEP_MS;
            }
            v.push(to);
            v
        };
        let subject = m.subject.as_str();
        match m.rule {
            Rule::RedoseDue if subject == "floor" => {
                require(therapy(&d, t, &self.cfg), "no therapy in the last 24 h")?;
                let lead = crate::alerts::min_ms(self.cfg.redose_lead_min);
                let min_ce = grid(t, t + lead + STEP_MS)
                    .into_iter()
                    .map(ce)
                    .fold(f64::INFINITY, f64::min);
                require(
                    min_ce < floor,
                    &format!("Ce stays >= floor {floor:.1} within the lead (min {min_ce:.2})"),
                )
            }
            Rule::RedoseDue => {
                let source = subject
                    .strip_prefix("patch_end:")
                    .ok_or("unknown redose_due subject")?;
                let lead = crate::alerts::min_ms(self.cfg.redose_lead_min);
                let near = d.ledger.deliveries.iter().any(|p| {
                    p.route == Route::Transdermal
                        && p.source == source
                        && p.start_ms <= t
                        && p.planned_end_ms
                            .is_some_and(|e| t >= e - lead && t < e + lead)
                });
                require(near, "no patch of that source near its planned end")
            }
            Rule::Subtherapeutic => {
                require(therapy(&d, t, &self.cfg), "no therapy in the last 24 h")?;
                let now = ce(t);
                require(
                    now < floor,
                    &format!("Ce {now:.2} is not below the floor {floor:.1} at the raise"),
                )?;
                let delay = self.cfg.rule(Rule::Subtherapeutic).condition_delay_s as TimeMs * 1000;
                let worst = grid(t - delay, t)
                    .into_iter()
                    .map(ce)
                    .fold(f64::NEG_INFINITY, f64::max);
                require(
                    worst < floor * (1.0 + h),
                    &format!("Ce reached {worst:.2} during the condition delay (floor {floor:.1})"),
                )
            }
            Rule::ConcentrationHigh if subject == "ce" => {
                let lead = crate::alerts::min_ms(self.cfg.high_lead_min);
                let max_ce = grid(t, t + lead + STEP_MS)
                    .into_iter()
                    .map(ce)
                    .fold(f64::NEG_INFINITY, f64::max);
                require(
                    max_ce > ceiling,
                    &format!("Ce stays <= ceiling {ceiling:.1} within the lead (max {max_ce:.2})"),
                )
            }
            Rule::ConcentrationHigh => {
                let now = cp(t);
                require(
                    now > ceiling,
                    &format!("Cp {now:.2} is not above the ceiling {ceiling:.1}"),
                )?;
                let delay = crate::alerts::min_ms(self.cfg.cp_high_delay_min);
                let low = grid(t - delay, t)
                    .into_iter()
                    .map(cp)
                    .fold(f64::INFINITY, f64::min);
                require(
                    low > ceiling * (1.0 - h),
                    &format!("Cp fell to {low:.2} during the 15 min delay"),
                )
            }
            Rule::DoseLimit => self.check_dose_limit(&d, subject, t),
            Rule::DoseStacking => self.check_stacking(&d, subject, t),
            Rule::DeviceSilent => {
                let running = d
                    .ledger
                    .running_at(t)
                    .any(|del| del.source == format!("devices/{subject}"));
                require(running, "the device delivers nothing at the raise")?;
                let last = self
                    .received()
                    .iter()
                    .filter_map(|a| match (&a.topic, &a.input) {
                        (InputTopic::DeviceEvent { device_id }, Input::DeviceEvent(e))
                            if device_id == subject && e.time_ms <= t =>
                        {
                            Some(e.time_ms)
                        }
                        _ => None,
                    })
                    .max();
                match last {
                    Some(l) if t - l <= self.stale_ms => Err(format!(
                        "device heard {} s before the raise",
                        (t - l) / 1000
                    )),
                    _ => Ok(()),
                }
            }
            Rule::DeviceFault => {
                let (device, code) = subject.split_once(':').ok_or("bad device_fault subject")?;
                let mut on = false;
                let mut events: Vec<(TimeMs, bool)> = self
                    .received()
                    .iter()
                    .filter_map(|a| match (&a.topic, &a.input) {
                        (InputTopic::DeviceEvent { device_id }, Input::DeviceEvent(e))
                            if device_id == device && e.time_ms <= t =>
                        {
                            match &e.kind {
                                DeviceEventKind::Alarm { code: c, .. } if c.as_str() == code => {
                                    Some((e.time_ms, true))
                                }
                                DeviceEventKind::AlarmCleared { code: c } if c.as_str() == code => {
                                    Some((e.time_ms, false))
                                }
                                DeviceEventKind::PatchDetached if code == "patch_detached" => {
                                    Some((e.time_ms, true))
                                }
                                DeviceEventKind::PatchApplied { .. }
                                    if code == "patch_detached" =>
                                {
                                    Some((e.time_ms, false))
                                }
                                _ => None,
                            }
                        }
                        _ => None,
                    })
                    .collect();
                events.sort_by_key(|&(at, _)| at);
                for (_, open) in events {
                    on = open;
                }
                require(on, "no alarm of that code active on the device")
            }
            Rule::Interaction => {
                let listed =
                    self.received()
                        .iter()
                        .rev()
                        .find_map(|a| match (&a.topic, &a.input) {
                            (InputTopic::Admit { patient_id }, Input::Admit(ad))
                                if *patient_id == pid =>
                            {
                                Some(ad.comedications.iter().any(|c| c == subject))
                            }
                            _ => None,
                        });
                require(
                    listed == Some(true),
                    "comedication not in the latest admission",
                )
            }
            Rule::ModelDomain => require(
                d.patient.warnings.iter().any(|w| w.code == "model_domain"),
                "no model_domain warning for the resolved patient",
            ),
            Rule::UnassignedInput => Ok(()),
            Rule::AssociationConflict => require(
                !self.tracker.refused_events(&pid, t).is_empty(),
                "no refused event from a device associated with the patient",
            ),
        }
    }

    fn check_dose_limit(&self, d: &Derived, subject: &str, t: TimeMs) -> Result<(), String> {
        let w = d.patient.covariates.weight_kg;
        let limits = &d.patient.limits;
        if let Some(rest) = subject.strip_prefix("bolus:") {
            let hold = crate::alerts::min_ms(self.cfg.event_hold_min);
            let found = d.ledger.deliveries.iter().find(|del| {
                format!("{}:{}", del.source, del.input_id) == rest
                    && del.start_ms <= t
                    && del.start_ms >= t - hold
            });
            let del = found.ok_or("no such dose within the hold time")?;
            let per_kg = del.amount_mg.unwrap_or(0.0) / w;
            return require(
                per_kg > limits.max_bolus_mg_per_kg.value,
                &format!("{per_kg:.3} mg/kg is within the bolus limit"),
            );
        }
        if let Some(source) = subject.strip_prefix("rate:") {
            let max = d
                .ledger
                .running_at(t)
                .filter(|del| del.source == source && del.route == Route::IvInfusion)
                .filter_map(|del| del.rate_mg_per_h)
                .fold(0.0, f64::max);
            return require(
                max / w > limits.max_infusion_mg_per_kg_per_h.value,
                &format!("{:.3} mg/kg/h is within the rate limit", max / w),
            );
        }
        if subject == "cumulative_24h" {
            // Integrate every delivery over (t - 24 h, t] on a 1-minute grid.
            let from = t - 24 * 3_600_000;
            let mut total = 0.0;
            for del in &d.ledger.deliveries {
                if let Some(a) = del.amount_mg {
                    if del.start_ms > from && del.start_ms <= t {
                        total += a;
                    }
                } else if let Some(r) = del.rate_mg_per_h {
                    let s = del.start_ms.max(from);
                    let e = del.end_ms.unwrap_or(t).min(t);
                    total += r * (e - s).max(0) as f64 / 3_600_000.0;
                }
            }
            return require(
                total / w > limits.max_cumulative_mg_per_kg_per_24h.value,
                &format!("{:.2} mg/kg in 24 h is within the limit", total / w),
            );
        }
        Err("unknown dose_limit subject".into())
    }

    fn check_stacking(&self, d: &Derived, subject: &str, t: TimeMs) -> Result<(), String> {
        let rest = subject
            .strip_prefix("dose:")
            .ok_or("bad dose_stacking subject")?;
        let hold = crate::alerts::min_ms(self.cfg.event_hold_min);
        let singles: Vec<_> = d
            .ledger
            .deliveries
            .iter()
            .filter(|del| del.amount_mg.is_some() && del.start_ms <= t)
            .collect();
        let i = singles
            .iter()
            .position(|del| format!("{}:{}", del.source, del.input_id) == rest)
            .ok_or("no such single dose")?;
        let dose = singles[i];
        require(
            dose.start_ms >= t - hold,
            "the dose is older than the hold time",
        )?;
        let prev = singles[..i]
            .iter()
            .rev()
            .find(|p| p.start_ms <= dose.start_ms)
            .ok_or("no previous single dose")?;
        let gap = dose.start_ms - prev.start_ms;
        if let Some(&m) = self.cfg.min_interval_min.get(&dose.route) {
            if gap < crate::alerts::min_ms(m) {
                return Ok(());
            }
        }
        // Was the previous dose's own Ce still rising when this one came?
        // (One unit dose of it alone, sampled either side of the gap.)
        let system = d.solution.system_at(prev.start_ms).clone();
        let schedule = Schedule::build(
            system.params(),
            &[Dosing::Bolus {
                at_ms: 0,
                route: prev.route,
                amount_mg: 1.0,
            }],
        )
        .map_err(|e| e.to_string())?;
        let single = Solution::new(Arc::new(system), &schedule);
        let before = single.at(gap).ce_ng_per_ml;
        let after = single.at(gap + STEP_MS).ce_ng_per_ml;
        require(
            after > before,
            &format!(
                "the previous dose's Ce was not rising {} min after it",
                gap / 60_000
            ),
        )
    }
}

fn require(ok: bool, why: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(why.to_owned())
    }
}

/// A delivery started at or before `t` that runs, or started or ended
/// within the active-therapy window.
fn therapy(d: &Derived, t: TimeMs, cfg: &AlertConfig) -> bool {
    let window = crate::alerts::min_ms(cfg.active_therapy_h * 60.0);
    d.ledger.deliveries.iter().any(|del| {
        del.start_ms <= t
            && (del.start_ms >= t - window || del.end_ms.is_none_or(|e| e >= t - window))
    })
}
