//! The patient inputs: `patients/{patient_id}/admit`, `…/discharge` and
//! `…/doses` — their typed values and field-by-field validation.

use super::fields::{
    excerpt, name, number, optional, required, required_id, required_time, string,
};
use super::json::type_name;
use super::limits::{
    AGE_YEARS, AMOUNT_MG, COMEDICATIONS_MAX_ENTRIES, COMEDICATION_MAX_CHARS, DURATION_MIN,
    HEIGHT_CM, RATE_MG_PER_H, RELEASE_RATE_MG_PER_H, TARGET_NG_PER_ML, WEAR_H, WEIGHT_KG,
};
use super::names::join_names;
use super::names::ErrorCode;
use super::rejection::{invalid, Rejection};
use crate::vocab::{Route, Setting, Sex, TimeMs};
use serde::Serialize;
use serde_json::{Map, Value};

/// Per-patient overrides of the drug file's target levels (`targets`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TargetOverrides {
    pub analgesic_floor_ng_per_ml: Option<f64>,
    pub psychotomimetic_caution_ng_per_ml: Option<f64>,
    pub ceiling_ng_per_ml: Option<f64>,
}

/// `patients/{patient_id}/admit`: admit or update a patient.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Admit {
    pub id: String,
    pub time_ms: TimeMs,
    pub weight_kg: f64,
    pub age_years: Option<f64>,
    pub sex: Option<Sex>,
    pub height_cm: Option<f64>,
    pub model: Option<String>,
    /// `ward` when absent (contract default).
    pub setting: Setting,
    pub comedications: Vec<String>,
    pub targets: TargetOverrides,
    /// An indication key of the drug file (`acute_pain`,
    /// `chronic_neuropathic`); the drug file's default when absent.
    pub indication: Option<String>,
    /// CYP2B6 genotype as written in the drug file (`*1/*6`); absent:
    /// not known (no genotype effect applied).
    pub cyp2b6_genotype: Option<String>,
}

/// `patients/{patient_id}/discharge`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Discharge {
    pub id: String,
    pub time_ms: TimeMs,
}

/// `patients/{patient_id}/doses`: a manually given dose.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dose {
    pub id: String,
    pub time_ms: TimeMs,
    pub kind: DoseKind,
}

/// What a manual dose delivers, by route.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DoseKind {
    /// Every route except `iv_infusion` and `transdermal`: one amount.
    Amount { route: Route, amount_mg: f64 },
    /// `iv_infusion`: constant rate for a duration.
    Infusion {
        rate_mg_per_h: f64,
        duration_min: f64,
    },
    /// `transdermal`: constant release for the wear time.
    Patch {
        release_rate_mg_per_h: f64,
        wear_h: f64,
    },
}

impl DoseKind {
    /// The dose's route.
    pub fn route(&self) -> Route {
        match self {
            DoseKind::Amount { route, .. } => *route,
            DoseKind::Infusion { .. } => Route::IvInfusion,
            DoseKind::Patch { .. } => Route::Transdermal,
        }
    }
}

/// Validate an `admit` payload.
pub fn parse_admit(obj: &Map<String, Value>) -> Result<Admit, Rejection> {
    let id = required_id(obj)?;
    let time_ms = required_time(obj)?;
    let weight_kg = required(obj, "weight_kg", |p, v| number(p, v, WEIGHT_KG))?;
    let age_years = optional(obj, "age_years", |p, v| number(p, v, AGE_YEARS))?;
    let sex = optional(obj, "sex", |p, v| {
        let s = string(p, v)?;
        s.parse::<Sex>().map_err(|_| {
            invalid(
                p,
                format!("sex must be one of female, male, got '{}'", excerpt(s)),
            )
        })
    })?;
    let height_cm = optional(obj, "height_cm", |p, v| number(p, v, HEIGHT_CM))?;
    let model = optional(obj, "model", name)?;
    let setting = optional(obj, "setting", |p, v| {
        let s = string(p, v)?;
        s.parse::<Setting>().map_err(|_| {
            invalid(
                p,
                format!(
                    "setting must be one of ward, monitored, got '{}'",
                    excerpt(s)
                ),
            )
        })
    })?
    .unwrap_or_default();
    let comedications = optional(obj, "comedications", comedication_list)?.unwrap_or_default();
    let targets = optional(obj, "targets", target_overrides)?.unwrap_or_default();
    let indication = optional(obj, "indication", name)?;
    let cyp2b6_genotype = optional(obj, "cyp2b6_genotype", genotype)?;
    Ok(Admit {
        id,
        time_ms,
        weight_kg,
        age_years,
        sex,
        height_cm,
        model,
        setting,
        comedications,
        targets,
        indication,
        cyp2b6_genotype,
    })
}

/// A genotype as written in a drug file: 1 to 16 characters of
/// `A-Za-z0-9*/` (`*1/*6`).
fn genotype(path: &str, value: &Value) -> Result<String, Rejection> {
    let s = string(path, value)?;
    let ok = !s.is_empty()
        && s.len() <= 16
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'*' | b'/'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(invalid(
            path,
            format!(
                "{path} must be 1 to 16 characters of A-Za-z0-9*/ (e.g. \"*1/*6\"), got '{}'",
                excerpt(s)
            ),
        ))
    }
}

/// Validate a `discharge` payload.
pub fn parse_discharge(obj: &Map<String, Value>) -> Result<Discharge, Rejection> {
    Ok(Discharge {
        id: required_id(obj)?,
        time_ms: required_time(obj)?,
    })
}

/// Validate a manual dose (`doses`) payload.
pub fn parse_dose(obj: &Map<String, Value>) -> Result<Dose, Rejection> {
    let id = required_id(obj)?;
    let time_ms = required_time(obj)?;
    let route = required(obj, "route", |p, v| {
        let s = string(p, v)?;
        s.parse::<Route>().map_err(|_| {
            invalid(
                p,
                format!(
                    "route must be one of {}, got '{}'",
                    join_names(Route::ALL.iter().map(|r| r.as_str())),
                    excerpt(s)
                ),
            )
        })
    })?;
    let for_route = |e: Rejection| match e.code {
        ErrorCode::MissingField => Rejection {
            message: format!("{} for route {route}", e.message),
            ..e
        },
        _ => e,
    };
    let kind = match route {
        Route::IvInfusion => DoseKind::Infusion {
            rate_mg_per_h: required(obj, "rate_mg_per_h", |p, v| number(p, v, RATE_MG_PER_H))
                .map_err(for_route)?,
            duration_min: required(obj, "duration_min", |p, v| number(p, v, DURATION_MIN))
                .map_err(for_route)?,
        },
        Route::Transdermal => DoseKind::Patch {
            release_rate_mg_per_h: required(obj, "release_rate_mg_per_h", |p, v| {
                number(p, v, RELEASE_RATE_MG_PER_H)
            })
            .map_err(for_route)?,
            wear_h: required(obj, "wear_h", |p, v| number(p, v, WEAR_H)).map_err(for_route)?,
        },
        other => DoseKind::Amount {
            route: other,
            amount_mg: required(obj, "amount_mg", |p, v| number(p, v, AMOUNT_MG))
                .map_err(for_route)?,
        },
    };
    Ok(Dose { id, time_ms, kind })
}

fn comedication_list(path: &str, value: &Value) -> Result<Vec<String>, Rejection> {
    let Value::Array(items) = value else {
        return Err(invalid(
            path,
            format!(
                "{path} must be an array of strings, got {}",
                type_name(value)
            ),
        ));
    };
    if items.len() > COMEDICATIONS_MAX_ENTRIES {
        return Err(invalid(
            path,
            format!(
                "{path} must have at most {COMEDICATIONS_MAX_ENTRIES} entries, got {}",
                items.len()
            ),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| comedication(&format!("{path}[{i}]"), item))
        .collect()
}

fn comedication(path: &str, value: &Value) -> Result<String, Rejection> {
    let s = string(path, value)?;
    let allowed = |c: char| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, ' ' | '_' | '\'' | '-')
    };
    let len = s.chars().count();
    if s.chars().any(|c| c.is_uppercase()) {
        Err(invalid(
            path,
            format!(
                "{path} must be a generic name in lower case, got '{}'",
                excerpt(s)
            ),
        ))
    } else if len == 0 || len > COMEDICATION_MAX_CHARS || !s.chars().all(allowed) {
        Err(invalid(
            path,
            format!(
                "{path} must be 1 to {COMEDICATION_MAX_CHARS} characters of a-z, 0-9, space, \
                 _, ' and -, got '{}'",
                excerpt(s)
            ),
        ))
    } else {
        Ok(s.to_owned())
    }
}

fn target_overrides(path: &str, value: &Value) -> Result<TargetOverrides, Rejection> {
    let Value::Object(obj) = value else {
        return Err(invalid(
            path,
            format!("{path} must be an object, got {}", type_name(value)),
        ));
    };
    let target = |key: &str| -> Result<Option<f64>, Rejection> {
        match obj.get(key) {
            None => Ok(None),
            Some(v) => number(&format!("{path}.{key}"), v, TARGET_NG_PER_ML).map(Some),
        }
    };
    Ok(TargetOverrides {
        analgesic_floor_ng_per_ml: target("analgesic_floor_ng_per_ml")?,
        psychotomimetic_caution_ng_per_ml: target("psychotomimetic_caution_ng_per_ml")?,
        ceiling_ng_per_ml: target("ceiling_ng_per_ml")?,
    })
}
