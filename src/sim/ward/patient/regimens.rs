//! The regimens' state machine: what each scheduled [`Action`] of a
//! patient does (emits, and schedules next), per archetype: IV infusion
//! courses with their alarms, intranasal doses, patches with oral doses,
//! injections.

use super::super::{MS_PER_H, MS_PER_MIN};
use super::{
    minute_ceil, num, round_dp, Action, Archetype, Device, PatientSim, StopReason,
    INCIDENT_DETACH_AFTER_MS, INCIDENT_OCCLUSION_AFTER_MS, INCIDENT_OCCLUSION_LASTS_MS,
    INCIDENT_REAPPLY_AFTER_MS,
};
use crate::vocab::{Route, TimeMs};
use rand::RngExt;
use tracing::trace;

/// Patch sites.
const PATCH_SITES: [&str; 4] = [
    "left upper arm",
    "right upper arm",
    "upper chest",
    "upper back",
];
/// Nominal release of the 25 mg/24 h patch.
const PATCH_RELEASE_MG_PER_H: f64 = 1.04;
const PATCH_WEAR_H: f64 = 24.0;

// Regimen parameters (mg/kg, mg/kg/h, probabilities).
const LOADING_MG_PER_KG: (f64, f64) = (0.1, 0.3);
const INFUSION_MG_PER_KG_PER_H: (f64, f64) = (0.1, 0.5);
const CLINICIAN_BOLUS_MG_PER_KG: (f64, f64) = (0.1, 0.25);
const NASAL_MG_PER_KG: (f64, f64) = (0.5, 1.0);
const INJECTION_MG_PER_KG: (f64, f64) = (0.1, 0.3);
const ORAL_MG_PER_KG: (f64, f64) = (0.25, 0.5);
const P_OCCLUSION_PER_COURSE: f64 = 0.08;
const P_BATTERY_LOW_PER_COURSE: f64 = 0.05;
const P_CLINICIAN_BOLUS_PER_COURSE: f64 = 0.2;
const P_COMPLETED: f64 = 0.2;
const P_PATCH_DETACHED: f64 = 0.05;
const P_ORAL_DOSE: f64 = 0.6;

impl PatientSim {
    // ----- the state machine -----

    pub(super) fn process(&mut self, t: TimeMs, action: Action) {
        trace!(patient = %self.patient_id, at = t, ?action, "devsim action");
        match action {
            Action::Admit => self.emit_admit(t),
            Action::CourseStart => self.course_start(t),
            Action::InfusionStart { course } => self.infusion_start(t, course),
            Action::RateChange { course } => self.rate_change(t, course),
            Action::ClinicianBolus { course } => {
                if course == self.pump.course && self.pump.running() {
                    self.pump.integrate(t);
                    let amount = self.bolus_mg(CLINICIAN_BOLUS_MG_PER_KG);
                    self.pump.total_mg += amount;
                    self.emit_device(
                        t,
                        Device::Pump,
                        "bolus_delivered",
                        true,
                        vec![("amount_mg", num(amount)), ("source", "clinician".into())],
                    );
                }
            }
            Action::InfusionStop { course, reason } => self.infusion_stop(t, course, reason),
            Action::IncidentBolus { mg_per_kg } => {
                let amount = (self.weight_kg * mg_per_kg).floor().max(1.0);
                self.emit_dose(t, Route::IvBolus, amount);
            }
            Action::Occlusion { course } => self.occlusion(t, course, None),
            Action::IncidentOcclusion { course } => {
                self.occlusion(t, course, Some(INCIDENT_OCCLUSION_LASTS_MS));
            }
            Action::OcclusionCleared => {
                self.pump.integrate(t);
                self.emit_device(
                    t,
                    Device::Pump,
                    "alarm_cleared",
                    false,
                    vec![("code", "occlusion".into())],
                );
                self.pump.occluded = false;
                if self.pump.course_active {
                    // Resume at the programmed rate.
                    self.pump.run += 1;
                    self.pump.last_ms = t;
                    let fields = self.rate_fields();
                    self.emit_device(t, Device::Pump, "infusion_started", true, fields);
                    self.start_pump_heartbeats(t);
                }
            }
            Action::BatteryLow { course } => {
                if course == self.pump.course && self.pump.running() && !self.pump.battery_alarm {
                    self.pump.battery_alarm = true;
                    self.emit_device(
                        t,
                        Device::Pump,
                        "alarm",
                        false,
                        vec![
                            ("code", "battery_low".into()),
                            ("message", "battery low, connect mains".into()),
                        ],
                    );
                    let clear_at = t + self.between(15 * MS_PER_MIN, 45 * MS_PER_MIN);
                    self.schedule(clear_at, Action::BatteryCleared);
                }
            }
            Action::BatteryCleared => {
                if self.pump.battery_alarm {
                    self.pump.battery_alarm = false;
                    self.emit_device(
                        t,
                        Device::Pump,
                        "alarm_cleared",
                        false,
                        vec![("code", "battery_low".into())],
                    );
                }
            }
            Action::InfusionCompleteCleared => self.emit_device(
                t,
                Device::Pump,
                "alarm_cleared",
                false,
                vec![("code", "infusion_complete".into())],
            ),
            Action::PumpHeartbeat { run, k, anchor } => {
                if run == self.pump.run && self.pump.running() {
                    self.pump.integrate(t);
                    let total = round_dp(self.pump.total_mg, 2);
                    self.emit_device(
                        t,
                        Device::Pump,
                        "heartbeat",
                        false,
                        vec![("delivered_total_mg", num(total))],
                    );
                    let next = anchor + (k + 1) * self.heartbeat_ms + self.heartbeat_jitter();
                    self.schedule(
                        next,
                        Action::PumpHeartbeat {
                            run,
                            k: k + 1,
                            anchor,
                        },
                    );
                }
            }
            Action::NasalDose => {
                let amount = self.dose_5mg(NASAL_MG_PER_KG);
                self.emit_dose(t, Route::Intranasal, amount);
                let next = minute_ceil(t + self.between(2 * MS_PER_H, 4 * MS_PER_H));
                self.schedule(next, Action::NasalDose);
            }
            Action::Injection => {
                let route = match self.archetype {
                    Archetype::Injections { route } => route,
                    _ => Route::Sc,
                };
                let amount = self.bolus_mg(INJECTION_MG_PER_KG);
                self.emit_dose(t, route, amount);
                let next = minute_ceil(t + self.between(4 * MS_PER_H, 8 * MS_PER_H));
                self.schedule(next, Action::Injection);
            }
            Action::OralCheck => {
                if self.rng.random_bool(P_ORAL_DOSE) {
                    let amount = self.dose_5mg(ORAL_MG_PER_KG);
                    self.emit_dose(t, Route::Oral, amount);
                }
                let next = minute_ceil(t + self.between(6 * MS_PER_H, 12 * MS_PER_H));
                self.schedule(next, Action::OralCheck);
            }
            Action::PatchApply => self.patch_apply(t),
            Action::PatchRemove { wear } => {
                if self.patch.applied && wear == self.patch.wear {
                    self.patch.applied = false;
                    self.emit_device(t, Device::Patch, "patch_removed", true, Vec::new());
                    let next = t + self.between(5 * MS_PER_MIN, 30 * MS_PER_MIN);
                    self.schedule(next, Action::PatchApply);
                }
            }
            Action::PatchDetach { wear } => {
                if self.patch.applied && wear == self.patch.wear {
                    self.patch.applied = false;
                    self.emit_device(t, Device::Patch, "patch_detached", true, Vec::new());
                    let drawn = self.between(20 * MS_PER_MIN, 90 * MS_PER_MIN);
                    let next = if self.incident_detach && wear == 1 {
                        t + INCIDENT_REAPPLY_AFTER_MS
                    } else {
                        t + drawn
                    };
                    self.schedule(next, Action::PatchApply);
                }
            }
            Action::PatchHeartbeat { wear, k, anchor } => {
                if self.patch.applied && wear == self.patch.wear {
                    let temp = round_dp(self.uniform((32.0, 35.5)), 1);
                    self.emit_device(
                        t,
                        Device::Patch,
                        "heartbeat",
                        false,
                        vec![("skin_contact", true.into()), ("skin_temp_c", num(temp))],
                    );
                    let next = anchor + (k + 1) * self.heartbeat_ms + self.heartbeat_jitter();
                    self.schedule(
                        next,
                        Action::PatchHeartbeat {
                            wear,
                            k: k + 1,
                            anchor,
                        },
                    );
                }
            }
        }
    }

    /// An occlusion alarm stops the running pump of `course`; it clears
    /// after `lasts_ms`, or a drawn 2–10 min.
    fn occlusion(&mut self, t: TimeMs, course: u64, lasts_ms: Option<i64>) {
        if course != self.pump.course || !self.pump.running() {
            return;
        }
        self.pump.integrate(t);
        self.emit_device(
            t,
            Device::Pump,
            "alarm",
            false,
            vec![
                ("code", "occlusion".into()),
                ("message", "downstream occlusion".into()),
            ],
        );
        self.emit_device(
            t,
            Device::Pump,
            "infusion_stopped",
            true,
            vec![("reason", "alarm".into())],
        );
        self.pump.occluded = true;
        self.pump.run += 1;
        let lasts = match lasts_ms {
            Some(ms) => ms,
            None => self.between(2 * MS_PER_MIN, 10 * MS_PER_MIN),
        };
        self.schedule(t + lasts, Action::OcclusionCleared);
    }

    fn course_start(&mut self, t: TimeMs) {
        self.pump.course += 1;
        let course = self.pump.course;
        let loading = course == 1 || self.rng.random_bool(0.5);
        let start_at = if !loading {
            t + self.between(0, 1_000)
        } else if self.rng.random_bool(0.6) {
            // The pump gives the loading bolus, then starts the infusion.
            let amount = self.bolus_mg(LOADING_MG_PER_KG);
            self.pump.integrate(t);
            self.pump.total_mg += amount;
            self.emit_device(
                t,
                Device::Pump,
                "bolus_delivered",
                true,
                vec![("amount_mg", num(amount)), ("source", "loading".into())],
            );
            t + self.between(30_000, 120_000)
        } else {
            let amount = self.bolus_mg(LOADING_MG_PER_KG);
            self.emit_dose(t, Route::IvBolus, amount);
            t + self.between(2 * MS_PER_MIN, 10 * MS_PER_MIN)
        };
        self.schedule(start_at, Action::InfusionStart { course });
    }

    fn infusion_start(&mut self, t: TimeMs, course: u64) {
        if course != self.pump.course {
            return;
        }
        let f = self.uniform(INFUSION_MG_PER_KG_PER_H);
        self.set_rate(f);
        self.pump.integrate(t);
        self.pump.course_active = true;
        self.pump.occluded = false;
        self.pump.run += 1;
        self.pump.last_ms = t;
        let fields = self.rate_fields();
        self.emit_device(t, Device::Pump, "infusion_started", true, fields);

        let stop_at = t + self.between(4 * MS_PER_H, 16 * MS_PER_H);
        let reason = if self.rng.random_bool(P_COMPLETED) {
            StopReason::Completed
        } else {
            StopReason::Clinician
        };
        // Scheduled before the heartbeats: at an equal time the stop comes
        // first and the heartbeat is dropped.
        self.schedule(stop_at, Action::InfusionStop { course, reason });
        // 1-3 rate changes, spread over the course: change j falls in the
        // middle half of the j-th of n+1 equal parts.
        let changes: i64 = self.rng.random_range(1..=3);
        let part = (stop_at - t) / (changes + 1);
        for j in 1..=changes {
            let centre = t + j * part;
            let at = self.between(centre - part / 4, centre + part / 4);
            self.schedule(at, Action::RateChange { course });
        }
        if self.rng.random_bool(P_CLINICIAN_BOLUS_PER_COURSE) {
            let at = self.between(t + MS_PER_H, stop_at - 30 * MS_PER_MIN);
            self.schedule(at, Action::ClinicianBolus { course });
        }
        if self.rng.random_bool(P_OCCLUSION_PER_COURSE) {
            let at = self.between(t + 20 * MS_PER_MIN, stop_at - 20 * MS_PER_MIN);
            self.schedule(at, Action::Occlusion { course });
        }
        if self.incident_occlusion && course == 1 {
            self.schedule(
                t + INCIDENT_OCCLUSION_AFTER_MS,
                Action::IncidentOcclusion { course },
            );
        }
        if self.rng.random_bool(P_BATTERY_LOW_PER_COURSE) {
            let at = self.between(t + 20 * MS_PER_MIN, stop_at - 20 * MS_PER_MIN);
            self.schedule(at, Action::BatteryLow { course });
        }
        self.start_pump_heartbeats(t);
    }

    fn rate_change(&mut self, t: TimeMs, course: u64) {
        if course != self.pump.course || !self.pump.course_active {
            return;
        }
        let (lo, hi) = INFUSION_MG_PER_KG_PER_H;
        let f = self.pump.mg_per_kg_per_h;
        let delta = self.uniform((0.05, 0.15));
        let up = if f + delta > hi {
            false
        } else if f - delta < lo {
            true
        } else {
            self.rng.random_bool(0.5)
        };
        let new_f = if up { f + delta } else { f - delta };
        self.pump.integrate(t);
        self.set_rate(new_f.clamp(lo, hi));
        // While stopped by an occlusion the new rate is only programmed; the
        // pump resumes with it.
        if self.pump.running() {
            let fields = self.rate_fields();
            self.emit_device(t, Device::Pump, "infusion_rate_changed", true, fields);
        }
    }

    fn infusion_stop(&mut self, t: TimeMs, course: u64, reason: StopReason) {
        if course != self.pump.course || !self.pump.course_active {
            return;
        }
        let was_running = self.pump.running();
        self.pump.integrate(t);
        self.pump.course_active = false;
        self.pump.run += 1;
        if was_running {
            match reason {
                StopReason::Completed => {
                    self.emit_device(
                        t,
                        Device::Pump,
                        "alarm",
                        false,
                        vec![("code", "infusion_complete".into())],
                    );
                    self.emit_device(
                        t,
                        Device::Pump,
                        "infusion_stopped",
                        true,
                        vec![("reason", "completed".into())],
                    );
                    let clear_at = t + self.between(MS_PER_MIN, 5 * MS_PER_MIN);
                    self.schedule(clear_at, Action::InfusionCompleteCleared);
                }
                StopReason::Clinician => self.emit_device(
                    t,
                    Device::Pump,
                    "infusion_stopped",
                    true,
                    vec![("reason", "clinician".into())],
                ),
            }
        }
        let next = minute_ceil(t + self.between(2 * MS_PER_H, 8 * MS_PER_H));
        self.schedule(next, Action::CourseStart);
    }

    fn patch_apply(&mut self, t: TimeMs) {
        if self.patch.applied {
            return;
        }
        self.patch.applied = true;
        self.patch.wear += 1;
        let wear = self.patch.wear;
        let site = PATCH_SITES[self.rng.random_range(0..PATCH_SITES.len())];
        self.emit_device(
            t,
            Device::Patch,
            "patch_applied",
            true,
            vec![
                ("release_rate_mg_per_h", num(PATCH_RELEASE_MG_PER_H)),
                ("wear_h", num(PATCH_WEAR_H)),
                ("site", site.into()),
            ],
        );
        // Removal (or detachment) is scheduled before the heartbeats: at an
        // equal time it comes first and the heartbeat is dropped. Removal is
        // never later than the end of the wear time.
        let wear_ms = (PATCH_WEAR_H * MS_PER_H as f64) as i64;
        let detached = self.rng.random_bool(P_PATCH_DETACHED);
        if self.incident_detach && wear == 1 {
            // Drawn as usual (same draws), then the incident instead.
            let _ = self.between(t + 2 * MS_PER_H, t + 20 * MS_PER_H);
            self.schedule(t + INCIDENT_DETACH_AFTER_MS, Action::PatchDetach { wear });
        } else if detached {
            let at = self.between(t + 2 * MS_PER_H, t + 20 * MS_PER_H);
            self.schedule(at, Action::PatchDetach { wear });
        } else {
            let at = self.between(t + wear_ms - MS_PER_H, t + wear_ms);
            self.schedule(at, Action::PatchRemove { wear });
        }
        if wear == 1 {
            let at = minute_ceil(t + self.between(2 * MS_PER_H, 6 * MS_PER_H));
            self.schedule(at, Action::OralCheck);
        }
        let at = t + self.heartbeat_ms + self.heartbeat_jitter();
        self.schedule(
            at,
            Action::PatchHeartbeat {
                wear,
                k: 1,
                anchor: t,
            },
        );
    }
}
