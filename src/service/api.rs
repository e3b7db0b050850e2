//! The JSON API of the `[http]` listener (`/api/v1/…`, documented in
//! `docs/http-api.md`): the ward (patients in care, their state, alerts,
//! last input and staleness), a patient's concentration series and
//! events, and the open alerts.
//!
//! It owns the query-parameter grammar (times as RFC 3339 or epoch ms, the
//! step, limits) with its specific 400 errors ([`ApiError`]), the cap on
//! series points, the urgency order of the ward, and the JSON shapes.
//! Every read goes through the store's read side (a read-only SQLite
//! connection under WAL, on a blocking thread): a request never waits on,
//! nor delays, the ingest path.

use crate::alerts::{AlertRecord, Priority, Scope};
use crate::store::{Reader, StoreError};
use crate::vocab::{format_rfc3339, parse_rfc3339_ms, TimeMs};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Most points one `series` answer holds; a wider request needs a larger
/// `step`.
pub(crate) const MAX_SERIES_POINTS: usize = 10_000;

/// The smallest and largest `step` (ms).
const STEP_MIN_MS: TimeMs = 1_000;
const STEP_MAX_MS: TimeMs = 86_400_000;

/// `events`: the default and largest `limit`.
const EVENTS_DEFAULT_LIMIT: usize = 500;
const EVENTS_MAX_LIMIT: usize = 5_000;

/// A patient's alert timeline: at most this many lifecycle messages.
const TIMELINE_MAX: usize = 1_000;

/// Why a request was not answered with data.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// A query parameter is malformed, out of range or unknown (400).
    #[error("{parameter}: {message}")]
    BadParameter {
        code: &'static str,
        parameter: String,
        message: String,
    },
    /// The patient was never admitted (404).
    #[error("no patient '{0}'")]
    UnknownPatient(String),
    /// The store could not be read (500).
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The request's work failed (500).
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub(crate) fn bad(code: &'static str, parameter: &str, message: impl Into<String>) -> ApiError {
        ApiError::BadParameter {
            code,
            parameter: parameter.to_owned(),
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match &self {
            ApiError::BadParameter {
                code,
                parameter,
                message,
            } => (
                StatusCode::BAD_REQUEST,
                json!({"error": {"code": code, "parameter": parameter, "message": message}}),
            ),
            ApiError::UnknownPatient(id) => (
                StatusCode::NOT_FOUND,
                json!({"error": {"code": "unknown_patient", "parameter": "id",
                                 "message": format!("no patient '{id}' was ever admitted")}}),
            ),
            ApiError::Store(_) | ApiError::Internal(_) => {
                tracing::warn!(error = %self, "http api request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"error": {"code": "internal", "parameter": null,
                                     "message": "the store could not be read; see the daemon's log"}}),
                )
            }
        };
        json_response(status, &body)
    }
}

/// A JSON body with its content type.
pub(crate) fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_string(body) {
        Ok(text) => (status, [(header::CONTENT_TYPE, "application/json")], text).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "not encoded\n").into_response(),
    }
}

// ---------------------------------------------------------------------------
// Query parameters (pure).
// ---------------------------------------------------------------------------

/// The query string as (name, value) pairs, percent-decoded (`+` is kept
/// as `+`, so an RFC 3339 offset may be written as is). A repeated name is
/// an error.
pub(crate) fn query_pairs(raw: Option<&str>) -> Result<BTreeMap<String, String>, ApiError> {
    let mut out = BTreeMap::new();
    let Some(raw) = raw else { return Ok(out) };
    for part in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let k = percent_decode(k)
            .ok_or_else(|| ApiError::bad("bad_parameter", "query", "malformed percent-encoding"))?;
        let v = percent_decode(v)
            .ok_or_else(|| ApiError::bad("bad_parameter", &k, "malformed percent-encoding"))?;
        if out.insert(k.clone(), v).is_some() {
            return Err(ApiError::bad("bad_parameter", &k, "given more than once"));
        }
    }
    Ok(out)
}

/// Refuse parameters outside `allowed`.
pub(crate) fn only(q: &BTreeMap<String, String>, allowed: &[&str]) -> Result<(), ApiError> {
    match q.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(ApiError::bad(
            "unknown_parameter",
            k,
            format!("unknown parameter (allowed: {})", allowed.join(", ")),
        )),
        None => Ok(()),
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A time bound: RFC 3339 with an offset (`2026-12-03T10:00:00Z`) or
/// integer milliseconds since the epoch.
pub(crate) fn parse_time(parameter: &str, text: &str) -> Result<TimeMs, ApiError> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse::<TimeMs>()
            .map_err(|_| ApiError::bad("bad_time", parameter, "epoch milliseconds out of range"));
    }
    parse_rfc3339_ms(text).map_err(|e| {
        ApiError::bad(
            "bad_time",
            parameter,
            format!("expected RFC 3339 with an offset or epoch milliseconds: {e}"),
        )
    })
}

/// A span of time: seconds (`60`), or a number with `s`, `m`/`min` or `h`
/// (`90s`, `5m`, `1h`); `None` when it is not that. A number too large
/// saturates at `TimeMs::MAX` (out of every range a caller allows).
pub(crate) fn parse_span_ms(text: &str) -> Option<TimeMs> {
    let split = text
        .char_indices()
        .find(|(_, c)| !c.is_ascii_digit())
        .map_or(text.len(), |(i, _)| i);
    let (number, unit) = text.split_at(split);
    let unit_ms: TimeMs = match unit {
        "" | "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    let n: TimeMs = number.parse().ok()?;
    Some(n.checked_mul(unit_ms).unwrap_or(TimeMs::MAX))
}

/// A step: a span ([`parse_span_ms`]) from 1 s to 1 day.
pub(crate) fn parse_step_ms(text: &str) -> Result<TimeMs, ApiError> {
    let ms = parse_span_ms(text).ok_or_else(|| {
        ApiError::bad(
            "bad_step",
            "step",
            "expected seconds, or a number with s, m or h (e.g. 60, 5m)",
        )
    })?;
    if !(STEP_MIN_MS..=STEP_MAX_MS).contains(&ms) {
        return Err(ApiError::bad(
            "bad_step",
            "step",
            "must be from 1 s to 1 day",
        ));
    }
    Ok(ms)
}

/// The parameters of `series`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SeriesQuery {
    pub from_ms: Option<TimeMs>,
    pub to_ms: Option<TimeMs>,
    pub step_ms: Option<TimeMs>,
}

pub(crate) fn series_query(q: &BTreeMap<String, String>) -> Result<SeriesQuery, ApiError> {
    only(q, &["from", "to", "step"])?;
    let from_ms = q.get("from").map(|t| parse_time("from", t)).transpose()?;
    let to_ms = q.get("to").map(|t| parse_time("to", t)).transpose()?;
    let step_ms = q.get("step").map(|s| parse_step_ms(s)).transpose()?;
    if let (Some(f), Some(t)) = (from_ms, to_ms) {
        if f > t {
            return Err(ApiError::bad("bad_range", "from", "from is after to"));
        }
        if let Some(step) = step_ms {
            let points = (t - f) / step + 1;
            if points > MAX_SERIES_POINTS as TimeMs {
                return Err(too_many(points));
            }
        }
    }
    Ok(SeriesQuery {
        from_ms,
        to_ms,
        step_ms,
    })
}

fn too_many(points: TimeMs) -> ApiError {
    ApiError::bad(
        "too_many_points",
        "step",
        format!(
            "the request spans {points} points, more than {MAX_SERIES_POINTS}: give a larger step or a shorter range"
        ),
    )
}

/// The points kept at `step_ms`: the first stored point of each step on
/// the epoch grid (stored points are never interpolated).
pub(crate) fn downsample(
    rows: &[crate::store::HistoryRow],
    step_ms: Option<TimeMs>,
) -> Vec<&crate::store::HistoryRow> {
    match step_ms {
        None => rows.iter().collect(),
        Some(step) => {
            let mut last_bucket = None;
            rows.iter()
                .filter(|r| {
                    let b = r.t_ms.div_euclid(step);
                    let keep = last_bucket != Some(b);
                    last_bucket = Some(b);
                    keep
                })
                .collect()
        }
    }
}

// ---------------------------------------------------------------------------
// JSON shapes.
// ---------------------------------------------------------------------------

/// An open alert as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AlertView {
    pub alert_id: String,
    pub patient_id: Option<String>,
    pub device_id: Option<String>,
    pub rule: &'static str,
    pub subject: String,
    pub priority: &'static str,
    /// The last lifecycle phase.
    pub phase: &'static str,
    pub raised_at: String,
    pub message: String,
    /// Does the condition hold now?
    pub present: bool,
    /// Ended, waiting for acknowledgement.
    pub latched: bool,
    pub escalations: u32,
    pub acknowledged: Option<Operator>,
    pub paused_until: Option<String>,
    pub paused: Option<Operator>,
    pub model: Option<String>,
    pub assumptions: Vec<String>,
}

/// Who did an operator action, and when.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Operator {
    pub by: String,
    pub at: String,
}

impl AlertView {
    pub(crate) fn of(r: &AlertRecord, now_ms: TimeMs) -> AlertView {
        let (patient_id, device_id) = match &r.scope {
            Scope::Patient(p) => (Some(p.clone()), None),
            Scope::Device(d) => (None, Some(d.clone())),
        };
        let op = |a: &crate::alerts::lifecycle::OperatorAction| Operator {
            by: a.by.clone(),
            at: format_rfc3339(a.at_ms),
        };
        AlertView {
            alert_id: r.alert_id.clone(),
            patient_id,
            device_id,
            rule: r.rule.as_str(),
            subject: r.subject.clone(),
            priority: r.priority.as_str(),
            phase: r.last_phase.as_str(),
            raised_at: format_rfc3339(r.raised_at_ms),
            message: r.message.clone(),
            present: r.present,
            latched: r.latched,
            escalations: r.escalations,
            acknowledged: r.acknowledged.as_ref().map(op),
            paused_until: r
                .paused_until_ms
                .filter(|&t| t > now_ms)
                .map(format_rfc3339),
            paused: r
                .paused
                .as_ref()
                .filter(|_| r.paused_until_ms.is_some_and(|t| t > now_ms))
                .map(op),
            model: r.model.clone(),
            assumptions: r.assumptions.clone(),
        }
    }
}

/// Open alerts, most urgent first: unacknowledged before acknowledged,
/// then priority (high first), then the oldest.
pub(crate) fn sort_alerts(alerts: &mut [(Priority, bool, TimeMs, AlertView)]) {
    alerts.sort_by(|a, b| {
        a.1.cmp(&b.1)
            .then(b.0.cmp(&a.0))
            .then(a.2.cmp(&b.2))
            .then(a.3.alert_id.cmp(&b.3.alert_id))
    });
}

/// A patient's urgency on the ward: 0 is the most urgent. High
/// unacknowledged alerts first, then medium, then low, then stale data,
/// then acknowledged alerts, then the rest.
pub(crate) fn urgency_rank(unacked: Option<Priority>, stale: bool, any_alert: bool) -> u8 {
    match unacked {
        Some(Priority::High) => 0,
        Some(Priority::Medium) => 1,
        Some(Priority::Low) => 2,
        None if stale => 3,
        None if any_alert => 4,
        None => 5,
    }
}

/// One patient in care, for `/api/v1/patients`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PatientView {
    pub patient_id: String,
    /// The current stay's admission (the last admit's time).
    pub admitted_at: Option<String>,
    /// The last published state's time.
    pub state_time: Option<String>,
    pub state_age_s: Option<i64>,
    pub cp_ng_per_ml: Option<f64>,
    pub ce_ng_per_ml: Option<f64>,
    pub trend: Option<String>,
    /// What is delivering now (the state's `active_inputs`).
    pub running: Vec<Value>,
    pub forecast: Option<Value>,
    pub targets: Option<Value>,
    pub model: Option<String>,
    pub assumptions: Vec<String>,
    pub last_input_at: Option<String>,
    pub last_input_age_s: Option<i64>,
    pub stale: bool,
    pub stale_reasons: Vec<String>,
    pub alerts: Vec<AlertView>,
    pub urgency: u8,
    /// The last published state message, as published.
    pub state: Option<Value>,
}

/// What [`patient_view`] reads for one patient.
pub(crate) struct PatientFacts<'a> {
    pub patient_id: &'a str,
    pub stay_start_ms: Option<TimeMs>,
    pub state_time_ms: Option<TimeMs>,
    pub state: Option<Value>,
    pub last_input_ms: Option<TimeMs>,
    pub alerts: Vec<&'a AlertRecord>,
    pub now_ms: TimeMs,
    /// A state older than this is stale (the daemon republishes every
    /// `state.interval_s`).
    pub state_stale_after_ms: TimeMs,
}

/// One patient's view (pure).
pub(crate) fn patient_view(f: PatientFacts<'_>) -> PatientView {
    let s = f.state.as_ref();
    let field = |k: &str| s.and_then(|v| v.get(k)).filter(|v| !v.is_null());
    let num = |k: &str| field(k).and_then(Value::as_f64);
    let age = |t: Option<TimeMs>| t.map(|t| (f.now_ms - t).max(0) / 1000);
    let mut stale_reasons = Vec::new();
    match f.state_time_ms {
        None => stale_reasons.push("no state published yet".to_owned()),
        Some(t) if f.now_ms - t > f.state_stale_after_ms => stale_reasons.push(format!(
            "state not updated for {} min",
            (f.now_ms - t) / 60_000
        )),
        Some(_) => {}
    }
    if field("stale").and_then(Value::as_bool) == Some(true) {
        let devices: Vec<String> = field("stale_devices")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|d| d.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        stale_reasons.push(if devices.is_empty() {
            "a delivering device has gone quiet".to_owned()
        } else {
            format!("device(s) not heard from: {}", devices.join(", "))
        });
    }
    let mut alerts: Vec<(Priority, bool, TimeMs, AlertView)> = f
        .alerts
        .iter()
        .map(|r| {
            (
                r.priority,
                r.acknowledged.is_some(),
                r.raised_at_ms,
                AlertView::of(r, f.now_ms),
            )
        })
        .collect();
    sort_alerts(&mut alerts);
    let unacked = alerts.iter().filter(|a| !a.1).map(|a| a.0).max();
    let stale = !stale_reasons.is_empty();
    PatientView {
        patient_id: f.patient_id.to_owned(),
        admitted_at: f.stay_start_ms.map(format_rfc3339),
        state_time: f.state_time_ms.map(format_rfc3339),
        state_age_s: age(f.state_time_ms),
        cp_ng_per_ml: num("cp_ng_per_ml"),
        ce_ng_per_ml: num("ce_ng_per_ml"),
        trend: field("trend").and_then(Value::as_str).map(str::to_owned),
        running: field("active_inputs")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        forecast: field("forecast").cloned(),
        targets: field("targets").cloned(),
        model: field("model").and_then(Value::as_str).map(str::to_owned),
        assumptions: field("assumptions")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|d| d.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        last_input_at: f.last_input_ms.map(format_rfc3339),
        last_input_age_s: age(f.last_input_ms),
        stale,
        stale_reasons,
        urgency: urgency_rank(unacked, stale, !alerts.is_empty()),
        alerts: alerts.into_iter().map(|a| a.3).collect(),
        state: f.state,
    }
}

// ---------------------------------------------------------------------------
// The endpoints' reads (blocking: run on a blocking thread).
// ---------------------------------------------------------------------------

/// `GET /api/v1/patients`.
pub(crate) fn patients(
    reader: &Reader,
    now_ms: TimeMs,
    state_stale_after_ms: TimeMs,
) -> Result<Value, ApiError> {
    let open = reader.open_alerts()?;
    let mut views = Vec::new();
    for p in reader
        .patients()?
        .into_iter()
        .filter(|p| p.discharged_at_ms.is_none())
    {
        let state: Option<Value> = p
            .last_state
            .as_ref()
            .and_then(|s| serde_json::from_str(&s.payload).ok());
        let alerts = open
            .iter()
            .filter(|r| r.scope.patient_id() == Some(p.patient_id.as_str()))
            .collect();
        views.push(patient_view(PatientFacts {
            patient_id: &p.patient_id,
            stay_start_ms: reader.stay_start_ms(&p.patient_id)?,
            state_time_ms: p.last_state.as_ref().map(|s| s.time_ms),
            state,
            last_input_ms: reader.last_input_ms(&p.patient_id)?,
            alerts,
            now_ms,
            state_stale_after_ms,
        }));
    }
    views.sort_by(|a, b| {
        a.urgency
            .cmp(&b.urgency)
            .then(a.patient_id.cmp(&b.patient_id))
    });
    Ok(json!({
        "time": format_rfc3339(now_ms),
        "count": views.len(),
        "patients": views,
    }))
}

/// `GET /api/v1/patients/{id}`: one patient, in care or not.
pub(crate) fn patient(
    reader: &Reader,
    patient_id: &str,
    now_ms: TimeMs,
    state_stale_after_ms: TimeMs,
) -> Result<Value, ApiError> {
    let Some(p) = reader
        .patients()?
        .into_iter()
        .find(|p| p.patient_id == patient_id)
    else {
        return Err(ApiError::UnknownPatient(patient_id.to_owned()));
    };
    let open = reader.open_alerts()?;
    let state: Option<Value> = p
        .last_state
        .as_ref()
        .and_then(|s| serde_json::from_str(&s.payload).ok());
    let view = patient_view(PatientFacts {
        patient_id,
        stay_start_ms: reader.stay_start_ms(patient_id)?,
        state_time_ms: p.last_state.as_ref().map(|s| s.time_ms),
        state,
        last_input_ms: reader.last_input_ms(patient_id)?,
        alerts: open
            .iter()
            .filter(|r| r.scope.patient_id() == Some(patient_id))
            .collect(),
        now_ms,
        state_stale_after_ms,
    });
    let mut v = serde_json::to_value(view).map_err(|e| ApiError::Internal(e.to_string()))?;
    if let Some(o) = v.as_object_mut() {
        o.insert("in_care".into(), Value::Bool(p.discharged_at_ms.is_none()));
        o.insert(
            "discharged_at".into(),
            p.discharged_at_ms.map(format_rfc3339).into(),
        );
    }
    Ok(v)
}

/// `GET /api/v1/patients/{id}/series`.
pub(crate) fn series(reader: &Reader, patient_id: &str, q: SeriesQuery) -> Result<Value, ApiError> {
    if !reader.patient_known(patient_id)? {
        return Err(ApiError::UnknownPatient(patient_id.to_owned()));
    }
    let rows = reader.history(patient_id, q.from_ms, q.to_ms)?;
    let kept = downsample(&rows, q.step_ms);
    if kept.len() > MAX_SERIES_POINTS {
        return Err(too_many(kept.len() as TimeMs));
    }
    let points: Vec<Value> = kept
        .iter()
        .map(|r| {
            json!({
                "time": format_rfc3339(r.t_ms),
                "t_ms": r.t_ms,
                "cp_ng_per_ml": r.cp_ng_per_ml,
                "ce_ng_per_ml": r.ce_ng_per_ml,
            })
        })
        .collect();
    Ok(json!({
        "patient_id": patient_id,
        "from": q.from_ms.map(format_rfc3339),
        "to": q.to_ms.map(format_rfc3339),
        "step_s": q.step_ms.map(|s| s / 1000),
        "max_points": MAX_SERIES_POINTS,
        "count": points.len(),
        "points": points,
    }))
}

/// `GET /api/v1/patients/{id}/events`: the patient's stored inputs in
/// occurrence order, the last `limit`.
pub(crate) fn events(
    reader: &Reader,
    patient_id: &str,
    q: &BTreeMap<String, String>,
) -> Result<Value, ApiError> {
    only(q, &["limit"])?;
    let limit = match q.get("limit") {
        None => EVENTS_DEFAULT_LIMIT,
        Some(t) => match t.parse::<usize>() {
            Ok(n) if (1..=EVENTS_MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::bad(
                    "bad_limit",
                    "limit",
                    format!("must be an integer from 1 to {EVENTS_MAX_LIMIT}"),
                ))
            }
        },
    };
    if !reader.patient_known(patient_id)? {
        return Err(ApiError::UnknownPatient(patient_id.to_owned()));
    }
    let rows = reader.inputs_for_patient(patient_id)?;
    let total = rows.len();
    let events: Vec<Value> = rows
        .iter()
        .skip(total.saturating_sub(limit))
        .map(|s| {
            let r = &s.record;
            json!({
                "seq": s.seq,
                "id": r.input_id,
                "kind": r.kind,
                "source": format!("{}/{}", r.source.kind(), r.source.id()),
                "occurred_at": format_rfc3339(r.occurred_at_ms),
                "received_at": format_rfc3339(r.received_at_ms),
                "payload": serde_json::from_str::<Value>(&r.payload)
                    .unwrap_or_else(|_| Value::String(r.payload.clone())),
            })
        })
        .collect();
    Ok(json!({
        "patient_id": patient_id,
        "total": total,
        "count": events.len(),
        "events": events,
    }))
}

/// `GET /api/v1/patients/{id}/alerts`: the lifecycle messages of the
/// patient's current (or last) stay, in order (the alert timeline).
pub(crate) fn patient_alerts(reader: &Reader, patient_id: &str) -> Result<Value, ApiError> {
    if !reader.patient_known(patient_id)? {
        return Err(ApiError::UnknownPatient(patient_id.to_owned()));
    }
    let from = reader.stay_start_ms(patient_id)?.unwrap_or(TimeMs::MIN);
    let messages: Vec<Value> = reader
        .patient_alert_messages(patient_id, from, TIMELINE_MAX)?
        .into_iter()
        .filter_map(|m| serde_json::from_str::<Value>(&m.payload).ok())
        .collect();
    Ok(json!({
        "patient_id": patient_id,
        "count": messages.len(),
        "messages": messages,
    }))
}

/// `GET /api/v1/alerts`: every open alert, most urgent first.
pub(crate) fn alerts(
    reader: &Reader,
    now_ms: TimeMs,
    q: &BTreeMap<String, String>,
) -> Result<Value, ApiError> {
    only(q, &["patient_id"])?;
    let want = q.get("patient_id");
    let mut all: Vec<(Priority, bool, TimeMs, AlertView)> = reader
        .open_alerts()?
        .iter()
        .filter(|r| want.is_none_or(|p| r.scope.patient_id() == Some(p.as_str())))
        .map(|r| {
            (
                r.priority,
                r.acknowledged.is_some(),
                r.raised_at_ms,
                AlertView::of(r, now_ms),
            )
        })
        .collect();
    sort_alerts(&mut all);
    let alerts: Vec<AlertView> = all.into_iter().map(|a| a.3).collect();
    Ok(json!({
        "time": format_rfc3339(now_ms),
        "count": alerts.len(),
        "alerts": alerts,
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::HistoryRow;

    fn q(s: &str) -> BTreeMap<String, String> {
        query_pairs(Some(s)).unwrap()
    }

    fn code(e: ApiError) -> (&'static str, String) {
        match e {
            ApiError::BadParameter {
                code, parameter, ..
            } => (code, parameter),
            other => panic!("not a bad parameter: {other}"),
        }
    }

    #[test]
    fn times_are_rfc3339_or_epoch_ms() {
        assert_eq!(parse_time("from", "1000").unwrap(), 1000);
        assert_eq!(
            parse_time("from", "2026-12-03T10:00:00Z").unwrap(),
            1_796_292_000_000
        );
        assert_eq!(
            parse_time("from", "2026-12-03T11:00:00+01:00").unwrap(),
            1_796_292_000_000
        );
        assert_eq!(
            code(parse_time("from", "yesterday").unwrap_err()).0,
            "bad_time"
        );
        assert_eq!(
            code(parse_time("to", "99999999999999999999999").unwrap_err()),
            ("bad_time", "to".to_owned())
        );
        // Percent-encoded and '+' kept.
        let p = q("from=2026-12-03T11%3A00%3A00+01:00");
        assert_eq!(parse_time("from", &p["from"]).unwrap(), 1_796_292_000_000);
    }

    #[test]
    fn steps_and_their_bounds() {
        assert_eq!(parse_step_ms("60").unwrap(), 60_000);
        assert_eq!(parse_step_ms("5m").unwrap(), 300_000);
        assert_eq!(parse_step_ms("1h").unwrap(), 3_600_000);
        for bad in ["0", "2d", "", "m", "-5", "99999999999999999999h", "86401"] {
            assert_eq!(code(parse_step_ms(bad).unwrap_err()).0, "bad_step", "{bad}");
        }
    }

    #[test]
    fn series_parameters_are_checked() {
        assert_eq!(
            code(series_query(&q("from=2000&to=1000")).unwrap_err()).0,
            "bad_range"
        );
        assert_eq!(
            code(series_query(&q("frm=1")).unwrap_err()),
            ("unknown_parameter", "frm".to_owned())
        );
        // 30 days at 1 s is far over the cap.
        assert_eq!(
            code(series_query(&q("from=0&to=2592000000&step=1")).unwrap_err()).0,
            "too_many_points"
        );
        assert_eq!(
            code(query_pairs(Some("from=1&from=2")).unwrap_err()).1,
            "from"
        );
        assert_eq!(code(query_pairs(Some("from=%zz")).unwrap_err()).1, "from");
        let ok = series_query(&q("from=0&to=600000&step=60")).unwrap();
        assert_eq!(ok.step_ms, Some(60_000));
    }

    #[test]
    fn downsampling_keeps_the_first_stored_point_of_each_step() {
        let rows: Vec<HistoryRow> = (0..10)
            .map(|i| HistoryRow {
                patient_id: "P".into(),
                t_ms: i * 30_000,
                cp_ng_per_ml: i as f64,
                ce_ng_per_ml: 0.0,
            })
            .collect();
        let kept: Vec<i64> = downsample(&rows, Some(60_000))
            .iter()
            .map(|r| r.t_ms)
            .collect();
        assert_eq!(kept, vec![0, 60_000, 120_000, 180_000, 240_000]);
        assert_eq!(downsample(&rows, None).len(), 10);
    }

    #[test]
    fn urgency_orders_unacknowledged_priority_then_stale() {
        assert!(
            urgency_rank(Some(Priority::High), false, true)
                < urgency_rank(Some(Priority::Medium), true, true)
        );
        assert!(urgency_rank(Some(Priority::Low), false, true) < urgency_rank(None, true, false));
        assert!(urgency_rank(None, true, false) < urgency_rank(None, false, true));
        assert!(urgency_rank(None, false, true) < urgency_rank(None, false, false));
    }

    #[test]
    fn a_patient_view_flags_stale_data_and_quiet_devices() {
        let state = json!({"cp_ng_per_ml": 100.0, "ce_ng_per_ml": 90.0, "trend": "falling",
            "active_inputs": [{"source": "devices/pump-1", "route": "iv_infusion"}],
            "model": "ketamine/domino", "stale": true, "stale_devices": ["pump-1"]});
        let v = patient_view(PatientFacts {
            patient_id: "P-1",
            stay_start_ms: Some(0),
            state_time_ms: Some(0),
            state: Some(state),
            last_input_ms: Some(60_000),
            alerts: Vec::new(),
            now_ms: 600_000,
            state_stale_after_ms: 150_000,
        });
        assert!(v.stale);
        assert_eq!(v.stale_reasons.len(), 2, "{:?}", v.stale_reasons);
        assert!(v.stale_reasons[0].contains("10 min"));
        assert!(v.stale_reasons[1].contains("pump-1"));
        assert_eq!(v.last_input_age_s, Some(540));
        assert_eq!(v.ce_ng_per_ml, Some(90.0));
        assert_eq!(v.running.len(), 1);
        assert_eq!(v.urgency, 3);
    }
}
