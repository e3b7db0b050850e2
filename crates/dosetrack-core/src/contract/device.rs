//! The device input: `devices/{device_id}/events` — the event kinds with
//! their fields, pump rates in either form, and their validation.

use super::fields::{
    boolean, closed_name, excerpt, name, number, optional, required, required_id, required_time,
    string, text,
};
use super::limits::{
    AMOUNT_MG, CONCENTRATION_MG_PER_ML, DELIVERED_TOTAL_MG, RATE_AGREEMENT_REL_TOL, RATE_MG_PER_H,
    RATE_ML_PER_H, RELEASE_RATE_MG_PER_H, SKIN_TEMP_C, TEXT_MAX_CHARS, WEAR_H,
};
use super::names::join_names;
use super::names::{AlarmCode, BolusSource, ErrorCode, StopReason};
use super::rejection::{invalid, missing, Rejection};
use crate::vocab::TimeMs;
use serde::Serialize;
use serde_json::{Map, Value};

/// `devices/{device_id}/events`. The device id comes from the topic only.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceEvent {
    pub id: String,
    pub time_ms: TimeMs,
    /// The gateway's association, when the payload carries one.
    pub patient_id: Option<String>,
    #[serde(flatten)]
    pub kind: DeviceEventKind,
}

/// A pump rate. `rate_mg_per_h` is always set: when the pump reports
/// `rate_ml_per_h` and `concentration_mg_per_ml` only, it is their product.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PumpRate {
    pub rate_mg_per_h: f64,
    pub rate_ml_per_h: Option<f64>,
    pub concentration_mg_per_ml: Option<f64>,
}

/// A device event's `kind` with its fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DeviceEventKind {
    InfusionStarted(PumpRate),
    InfusionRateChanged(PumpRate),
    InfusionStopped {
        reason: Option<StopReason>,
    },
    BolusDelivered {
        amount_mg: f64,
        source: Option<BolusSource>,
    },
    /// Pump heartbeats carry `delivered_total_mg`, patch heartbeats
    /// `skin_contact` and `skin_temp_c`; all are optional.
    Heartbeat {
        delivered_total_mg: Option<f64>,
        skin_contact: Option<bool>,
        skin_temp_c: Option<f64>,
    },
    Alarm {
        code: AlarmCode,
        message: Option<String>,
    },
    AlarmCleared {
        code: AlarmCode,
    },
    PatchApplied {
        release_rate_mg_per_h: f64,
        wear_h: f64,
        site: Option<String>,
    },
    PatchRemoved,
    PatchDetached,
}

impl DeviceEventKind {
    /// Every device event kind name, in contract order.
    pub const KIND_NAMES: [&'static str; 10] = [
        "infusion_started",
        "infusion_rate_changed",
        "infusion_stopped",
        "bolus_delivered",
        "heartbeat",
        "alarm",
        "alarm_cleared",
        "patch_applied",
        "patch_removed",
        "patch_detached",
    ];

    /// The contract's `kind` string.
    pub fn kind_name(&self) -> &'static str {
        match self {
            DeviceEventKind::InfusionStarted(_) => "infusion_started",
            DeviceEventKind::InfusionRateChanged(_) => "infusion_rate_changed",
            DeviceEventKind::InfusionStopped { .. } => "infusion_stopped",
            DeviceEventKind::BolusDelivered { .. } => "bolus_delivered",
            DeviceEventKind::Heartbeat { .. } => "heartbeat",
            DeviceEventKind::Alarm { .. } => "alarm",
            DeviceEventKind::AlarmCleared { .. } => "alarm_cleared",
            DeviceEventKind::PatchApplied { .. } => "patch_applied",
            DeviceEventKind::PatchRemoved => "patch_removed",
            DeviceEventKind::PatchDetached => "patch_detached",
        }
    }
}

/// Validate a device event payload (the device id is the topic's).
pub fn parse_device_event(obj: &Map<String, Value>) -> Result<DeviceEvent, Rejection> {
    let id = required_id(obj)?;
    let time_ms = required_time(obj)?;
    let kind_name = required(obj, "kind", |p, v| string(p, v).map(str::to_owned))?;
    let patient_id = optional(obj, "patient_id", name)?;
    let kind = match kind_name.as_str() {
        "infusion_started" => DeviceEventKind::InfusionStarted(pump_rate(obj, &kind_name)?),
        "infusion_rate_changed" => {
            DeviceEventKind::InfusionRateChanged(pump_rate(obj, &kind_name)?)
        }
        "infusion_stopped" => DeviceEventKind::InfusionStopped {
            reason: optional(obj, "reason", |p, v| {
                closed_name(p, v, StopReason::from_name, StopReason::allowed)
            })?,
        },
        "bolus_delivered" => DeviceEventKind::BolusDelivered {
            amount_mg: required(obj, "amount_mg", |p, v| number(p, v, AMOUNT_MG))?,
            source: optional(obj, "source", |p, v| {
                closed_name(p, v, BolusSource::from_name, BolusSource::allowed)
            })?,
        },
        "heartbeat" => DeviceEventKind::Heartbeat {
            delivered_total_mg: optional(obj, "delivered_total_mg", |p, v| {
                number(p, v, DELIVERED_TOTAL_MG)
            })?,
            skin_contact: optional(obj, "skin_contact", boolean)?,
            skin_temp_c: optional(obj, "skin_temp_c", |p, v| number(p, v, SKIN_TEMP_C))?,
        },
        "alarm" => DeviceEventKind::Alarm {
            code: required(obj, "code", alarm_code)?,
            message: optional(obj, "message", |p, v| text(p, v, 0, TEXT_MAX_CHARS))?,
        },
        "alarm_cleared" => DeviceEventKind::AlarmCleared {
            code: required(obj, "code", alarm_code)?,
        },
        "patch_applied" => DeviceEventKind::PatchApplied {
            release_rate_mg_per_h: required(obj, "release_rate_mg_per_h", |p, v| {
                number(p, v, RELEASE_RATE_MG_PER_H)
            })?,
            wear_h: required(obj, "wear_h", |p, v| number(p, v, WEAR_H))?,
            site: optional(obj, "site", |p, v| text(p, v, 0, TEXT_MAX_CHARS))?,
        },
        "patch_removed" => DeviceEventKind::PatchRemoved,
        "patch_detached" => DeviceEventKind::PatchDetached,
        other => {
            return Err(Rejection::new(
                ErrorCode::UnknownKind,
                Some("kind"),
                format!(
                    "unknown device event kind '{}'; known kinds: {}",
                    excerpt(other),
                    join_names(DeviceEventKind::KIND_NAMES.into_iter())
                ),
            ));
        }
    };
    Ok(DeviceEvent {
        id,
        time_ms,
        patient_id,
        kind,
    })
}

/// A pump rate from `rate_mg_per_h`, or `rate_ml_per_h` ×
/// `concentration_mg_per_ml`; when both forms are given they must agree.
fn pump_rate(obj: &Map<String, Value>, kind: &str) -> Result<PumpRate, Rejection> {
    let rate_mg_per_h = optional(obj, "rate_mg_per_h", |p, v| number(p, v, RATE_MG_PER_H))?;
    let rate_ml_per_h = optional(obj, "rate_ml_per_h", |p, v| number(p, v, RATE_ML_PER_H))?;
    let concentration_mg_per_ml = optional(obj, "concentration_mg_per_ml", |p, v| {
        number(p, v, CONCENTRATION_MG_PER_ML)
    })?;
    let from_volume = rate_ml_per_h.zip(concentration_mg_per_ml);
    let rate = |rate_mg_per_h| PumpRate {
        rate_mg_per_h,
        rate_ml_per_h,
        concentration_mg_per_ml,
    };
    match (rate_mg_per_h, from_volume) {
        (Some(mg), Some((ml, conc))) => {
            let product = ml * conc;
            let scale = mg.abs().max(product.abs());
            if (mg - product).abs() <= RATE_AGREEMENT_REL_TOL * scale {
                Ok(rate(mg))
            } else {
                Err(invalid(
                    "rate_mg_per_h",
                    format!(
                        "rate_mg_per_h ({mg}) disagrees with rate_ml_per_h × \
                         concentration_mg_per_ml ({ml} × {conc} = {product}); give one form, \
                         or both agreeing to within {RATE_AGREEMENT_REL_TOL:e} relative"
                    ),
                ))
            }
        }
        (Some(mg), None) => Ok(rate(mg)),
        (None, Some((ml, conc))) => {
            let product = ml * conc;
            if RATE_MG_PER_H.contains(product) {
                Ok(rate(product))
            } else {
                Err(invalid(
                    "rate_ml_per_h",
                    format!(
                        "rate_ml_per_h × concentration_mg_per_ml = {ml} × {conc} = {product} \
                         mg/h; {}",
                        RATE_MG_PER_H.requirement("rate_mg_per_h")
                    ),
                ))
            }
        }
        (None, None) => Err(match (rate_ml_per_h, concentration_mg_per_ml) {
            (Some(_), _) => missing(
                "concentration_mg_per_ml",
                format!(
                    "concentration_mg_per_ml is required with rate_ml_per_h when \
                     rate_mg_per_h is absent ({kind})"
                ),
            ),
            (None, Some(_)) => missing(
                "rate_ml_per_h",
                format!(
                    "rate_ml_per_h is required with concentration_mg_per_ml when \
                     rate_mg_per_h is absent ({kind})"
                ),
            ),
            (None, None) => missing(
                "rate_mg_per_h",
                format!(
                    "rate_mg_per_h (or rate_ml_per_h with concentration_mg_per_ml) is \
                     required for kind {kind}"
                ),
            ),
        }),
    }
}

fn alarm_code(path: &str, value: &Value) -> Result<AlarmCode, Rejection> {
    closed_name(path, value, AlarmCode::from_name, AlarmCode::allowed)
}
