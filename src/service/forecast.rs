//! The forecast the ward page draws ahead of "now": `GET
//! /api/v1/patients/{id}/forecast?horizon=&step=`, Cp and Ce from now on
//! if nothing more is given and what runs keeps running (the tracker's
//! forecast assumptions, said in the answer).
//!
//! It owns [`Models`], the board of each tracked patient's current model
//! (the tracker's [`Derived`]: resolved patient, ledger, solution) that
//! stage B updates, by pointer, whenever it publishes a state, and removes
//! when the patient is released; and the endpoint that samples a model
//! from the board. The answer is therefore the very model the published
//! state came from, sampled on the API's blocking thread: stage B never
//! computes a point for the page, and a request costs ingest nothing but a
//! read lock.

use crate::pk::FORECAST_ASSUMPTIONS;
use crate::service::api::{only, parse_span_ms, parse_step_ms, ApiError, MAX_SERIES_POINTS};
use crate::store::Reader;
use crate::tracker::Derived;
use crate::vocab::{format_rfc3339, round3, TimeMs};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

/// Default horizon of a forecast (ms): 6 h.
pub(crate) const DEFAULT_HORIZON_MS: TimeMs = 6 * 3_600_000;

/// Longest horizon asked for (ms): 48 h.
pub(crate) const MAX_HORIZON_MS: TimeMs = 48 * 3_600_000;

/// Default step (ms): 1 min.
pub(crate) const DEFAULT_STEP_MS: TimeMs = 60_000;

/// Each tracked patient's current model, shared by stage B (writer) and
/// the HTTP listener (readers).
#[derive(Default)]
pub(crate) struct Models {
    by_patient: RwLock<HashMap<String, Arc<Derived>>>,
}

impl Models {
    /// `patient_id`'s model is now `model` (stage B, at each state).
    pub(crate) fn set(&self, patient_id: &str, model: Arc<Derived>) {
        let mut map = match self.by_patient.write() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        match map.get_mut(patient_id) {
            Some(current) if Arc::ptr_eq(current, &model) => {}
            Some(current) => *current = model,
            None => {
                map.insert(patient_id.to_owned(), model);
            }
        }
    }

    /// `patient_id` has no model any more (released, or unsolvable).
    pub(crate) fn remove(&self, patient_id: &str) {
        let mut map = match self.by_patient.write() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.remove(patient_id);
    }

    fn get(&self, patient_id: &str) -> Option<Arc<Derived>> {
        let map = match self.by_patient.read() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.get(patient_id).cloned()
    }
}

/// A forecast request's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ForecastQuery {
    pub horizon_ms: TimeMs,
    pub step_ms: TimeMs,
}

/// `horizon` (like `step`: `6h`, `90m`, seconds; up to 48 h) and `step`.
pub(crate) fn forecast_query(q: &BTreeMap<String, String>) -> Result<ForecastQuery, ApiError> {
    only(q, &["horizon", "step"])?;
    let horizon_ms = match q.get("horizon") {
        None => DEFAULT_HORIZON_MS,
        Some(h) => match parse_span_ms(h) {
            Some(ms) if (60_000..=MAX_HORIZON_MS).contains(&ms) => ms,
            _ => {
                return Err(ApiError::bad(
                    "bad_horizon",
                    "horizon",
                    "expected 1 min to 48 h: seconds, or a number with s, m or h (e.g. 6h); \
                     the forecast assumes nothing changes, so further out it means little",
                ))
            }
        },
    };
    let step_ms = q
        .get("step")
        .map(|s| parse_step_ms(s))
        .transpose()?
        .unwrap_or(DEFAULT_STEP_MS);
    let points = horizon_ms / step_ms + 1;
    if points > MAX_SERIES_POINTS as TimeMs {
        return Err(ApiError::bad(
            "too_many_points",
            "step",
            format!(
                "the request spans {points} points, more than {MAX_SERIES_POINTS}: give a larger step or a shorter horizon"
            ),
        ));
    }
    Ok(ForecastQuery {
        horizon_ms,
        step_ms,
    })
}

/// The forecast of `patient_id` from `now_ms`: no points (and why) for a
/// patient known to the store but not tracked now.
pub(crate) fn forecast(
    models: &Models,
    reader: &Reader,
    patient_id: &str,
    q: ForecastQuery,
    now_ms: TimeMs,
) -> Result<Value, ApiError> {
    let Some(model) = models.get(patient_id) else {
        if !reader.patient_known(patient_id)? {
            return Err(ApiError::UnknownPatient(patient_id.to_owned()));
        }
        return Ok(json!({
            "patient_id": patient_id,
            "time": format_rfc3339(now_ms),
            "horizon_h": q.horizon_ms as f64 / 3_600_000.0,
            "step_s": q.step_ms / 1000,
            "model": null,
            "assumes": FORECAST_ASSUMPTIONS,
            "note": "no model in memory for this patient (not in care, or their inputs cannot be solved)",
            "count": 0,
            "points": [],
        }));
    };
    let points: Vec<Value> = (0..=q.horizon_ms / q.step_ms)
        .map(|i| {
            let t_ms = now_ms + i * q.step_ms;
            let c = model.solution.at(t_ms);
            json!({
                "time": format_rfc3339(t_ms),
                "t_ms": t_ms,
                "cp_ng_per_ml": round3(c.cp_ng_per_ml),
                "ce_ng_per_ml": round3(c.ce_ng_per_ml),
            })
        })
        .collect();
    Ok(json!({
        "patient_id": patient_id,
        "time": format_rfc3339(now_ms),
        "horizon_h": q.horizon_ms as f64 / 3_600_000.0,
        "step_s": q.step_ms / 1000,
        "model": model.patient.model_label,
        "assumes": FORECAST_ASSUMPTIONS,
        "note": null,
        "count": points.len(),
        "points": points,
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn q(text: &str) -> BTreeMap<String, String> {
        crate::service::api::query_pairs(Some(text)).unwrap()
    }

    fn code(e: ApiError) -> String {
        match e {
            ApiError::BadParameter { code, .. } => code.to_owned(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn horizon_and_step_are_checked() {
        assert_eq!(
            forecast_query(&q("")).unwrap(),
            ForecastQuery {
                horizon_ms: DEFAULT_HORIZON_MS,
                step_ms: DEFAULT_STEP_MS
            }
        );
        assert_eq!(
            forecast_query(&q("horizon=2h&step=5m")).unwrap(),
            ForecastQuery {
                horizon_ms: 7_200_000,
                step_ms: 300_000
            }
        );
        assert_eq!(
            forecast_query(&q("horizon=48h")).unwrap().horizon_ms,
            MAX_HORIZON_MS
        );
        assert_eq!(
            code(forecast_query(&q("horizon=49h")).unwrap_err()),
            "bad_horizon"
        );
        assert_eq!(
            code(forecast_query(&q("horizon=soon")).unwrap_err()),
            "bad_horizon"
        );
        assert_eq!(
            code(forecast_query(&q("horizon=30s")).unwrap_err()),
            "bad_horizon"
        );
        assert_eq!(
            code(forecast_query(&q("horizon=99999999999999999999h")).unwrap_err()),
            "bad_horizon"
        );
        assert_eq!(
            forecast_query(&q("horizon=90m")).unwrap().horizon_ms,
            5_400_000
        );
        assert_eq!(code(forecast_query(&q("step=0")).unwrap_err()), "bad_step");
        assert_eq!(
            code(forecast_query(&q("horizon=48h&step=1s")).unwrap_err()),
            "too_many_points"
        );
        assert_eq!(
            code(forecast_query(&q("from=1")).unwrap_err()),
            "unknown_parameter"
        );
    }
}
