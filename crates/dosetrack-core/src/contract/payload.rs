//! A payload on an input topic: decoded ([`parse_payload`]) into an
//! [`Input`], and the time checks against the daemon's clock
//! ([`check_clock_skew`], [`check_past_age`]).

use super::command::{parse_alert_command, AlertCommand};
use super::device::{parse_device_event, DeviceEvent};
use super::json::{check_size, parse_object};
use super::names::ErrorCode;
use super::patient::{parse_admit, parse_discharge, parse_dose, Admit, Discharge, Dose};
use super::rejection::{invalid, Rejection};
use super::topic::InputTopic;
use crate::vocab::{format_rfc3339, TimeMs};
use serde::Serialize;

/// A validated input payload.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Input {
    Admit(Admit),
    Discharge(Discharge),
    Dose(Dose),
    DeviceEvent(DeviceEvent),
    AlertCommand(AlertCommand),
}

/// Decode and validate the payload of an input published on `topic`.
pub fn parse_payload(topic: &InputTopic, payload: &[u8]) -> Result<Input, Rejection> {
    check_size(payload.len())?;
    let text = std::str::from_utf8(payload).map_err(|e| {
        Rejection::new(
            ErrorCode::InvalidJson,
            None,
            format!("payload is not valid UTF-8 ({e})"),
        )
    })?;
    let obj = parse_object(text)?;
    match topic {
        InputTopic::Admit { .. } => parse_admit(&obj).map(Input::Admit),
        InputTopic::Discharge { .. } => parse_discharge(&obj).map(Input::Discharge),
        InputTopic::Dose { .. } => parse_dose(&obj).map(Input::Dose),
        InputTopic::DeviceEvent { .. } => parse_device_event(&obj).map(Input::DeviceEvent),
        InputTopic::AlertCommand { .. } => parse_alert_command(&obj).map(Input::AlertCommand),
    }
}

/// Reject an input whose `time` is more than `max_future_skew_ms` ahead of
/// `now_ms` (contract: `clock_skew`). A negative skew is treated as zero.
pub fn check_clock_skew(
    time_ms: TimeMs,
    now_ms: TimeMs,
    max_future_skew_ms: i64,
) -> Result<(), Rejection> {
    let max_skew_ms = max_future_skew_ms.max(0);
    if time_ms > now_ms.saturating_add(max_skew_ms) {
        Err(Rejection::new(
            ErrorCode::ClockSkew,
            Some("time"),
            format!(
                "time {} is {} ms ahead of the daemon's clock ({}); at most {} ms is allowed",
                format_rfc3339(time_ms),
                time_ms.saturating_sub(now_ms),
                format_rfc3339(now_ms),
                max_skew_ms
            ),
        ))
    } else {
        Ok(())
    }
}

/// Reject an input whose `time` is more than `max_past_age_ms` behind
/// `now_ms` (dosetrack's plausibility bound, configured as
/// `[limits] max_past_age_h`): `invalid_value` on `time`, the contract's code
/// for a value outside its range. Late input is normal (the contract: inputs
/// may arrive late); an input dated weeks or decades back is a wrong clock or
/// a typing error, and applying it would rebuild a patient's model from that
/// date. `None` disables the bound.
pub fn check_past_age(
    time_ms: TimeMs,
    now_ms: TimeMs,
    max_past_age_ms: Option<i64>,
) -> Result<(), Rejection> {
    let Some(max_age_ms) = max_past_age_ms else {
        return Ok(());
    };
    let max_age_ms = max_age_ms.max(0);
    if time_ms < now_ms.saturating_sub(max_age_ms) {
        Err(invalid(
            "time",
            format!(
                "time {} is {} h before the daemon's clock ({}); inputs older than {} h are \
                 refused (limits.max_past_age_h)",
                format_rfc3339(time_ms),
                now_ms.saturating_sub(time_ms) / 3_600_000,
                format_rfc3339(now_ms),
                max_age_ms / 3_600_000
            ),
        ))
    } else {
        Ok(())
    }
}
