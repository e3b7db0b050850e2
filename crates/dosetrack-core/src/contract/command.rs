//! The operator input: `alerts/{alert_id}/commands` (acknowledge, pause)
//! and its validation.

use super::fields::{excerpt, number, printable, required, required_id, required_time, string};
use super::limits::{BY_MAX_CHARS, PAUSE_MINUTES};
use super::names::ErrorCode;
use super::rejection::Rejection;
use crate::vocab::TimeMs;
use serde::Serialize;
use serde_json::{Map, Value};

/// `alerts/{alert_id}/commands`: an operator command on an alert.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertCommand {
    pub id: String,
    pub time_ms: TimeMs,
    #[serde(flatten)]
    pub action: CommandAction,
    /// Who gave the command (operator identity).
    pub by: String,
}

/// The command's `action`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum CommandAction {
    Acknowledge,
    Pause { minutes: f64 },
}

/// Validate an alert command payload.
pub fn parse_alert_command(obj: &Map<String, Value>) -> Result<AlertCommand, Rejection> {
    let id = required_id(obj)?;
    let time_ms = required_time(obj)?;
    let action_name = required(obj, "action", |p, v| string(p, v).map(str::to_owned))?;
    let action = match action_name.as_str() {
        "acknowledge" => CommandAction::Acknowledge,
        "pause" => CommandAction::Pause {
            minutes: required(obj, "minutes", |p, v| number(p, v, PAUSE_MINUTES)).map_err(|e| {
                match e.code {
                    ErrorCode::MissingField => Rejection {
                        message: format!("{} for action pause", e.message),
                        ..e
                    },
                    _ => e,
                }
            })?,
        },
        other => {
            return Err(Rejection::new(
                ErrorCode::UnknownKind,
                Some("action"),
                format!(
                    "unknown action '{}'; known actions: acknowledge, pause",
                    excerpt(other)
                ),
            ))
        }
    };
    let by = required(obj, "by", |p, v| printable(p, v, BY_MAX_CHARS))?;
    Ok(AlertCommand {
        id,
        time_ms,
        action,
        by,
    })
}

/// dosetrack's operator list: with `operators` set, a command whose `by` is
/// not on it is `unknown_operator` (`field` `by`). `None`: every operator
/// (the contract's behaviour).
pub fn check_operator(
    cmd: &AlertCommand,
    operators: Option<&std::collections::HashSet<String>>,
) -> Result<(), Rejection> {
    match operators {
        Some(list) if !list.contains(&cmd.by) => Err(Rejection::new(
            ErrorCode::UnknownOperator,
            Some("by"),
            format!(
                "operator '{}' is not on the daemon's operator list ([alerts] operators)",
                excerpt(&cmd.by)
            ),
        )),
        _ => Ok(()),
    }
}

/// dosetrack's bound on a command's age: a command whose `time` is more than
/// `max_age_ms` behind the receive time is `stale_command` (`field`
/// `time`): an acknowledge or pause queued for long (a broker queue, a
/// replayed capture) must not silence the alert of now. `None`: no bound.
pub fn check_command_age(
    cmd: &AlertCommand,
    received_at_ms: TimeMs,
    max_age_ms: Option<i64>,
) -> Result<(), Rejection> {
    let Some(max_age_ms) = max_age_ms else {
        return Ok(());
    };
    let age_ms = received_at_ms.saturating_sub(cmd.time_ms);
    if age_ms > max_age_ms.max(0) {
        Err(Rejection::new(
            ErrorCode::StaleCommand,
            Some("time"),
            format!(
                "command dated {} is {} s older than its receipt ({}); commands older than {} s \
                 are refused ([alerts] max_command_age_min)",
                crate::vocab::format_rfc3339(cmd.time_ms),
                age_ms / 1000,
                crate::vocab::format_rfc3339(received_at_ms),
                max_age_ms.max(0) / 1000
            ),
        ))
    } else {
        Ok(())
    }
}
