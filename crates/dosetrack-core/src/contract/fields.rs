//! The field accessors the payload parsers share. Each takes the field's
//! path (for messages and the rejection's `field`) and its JSON value;
//! the identifier rule ([`is_name`]) and message helpers live here too.

use super::json::{is_non_finite_marker, type_name};
use super::limits::{Range, ID_MAX_CHARS, NAME_MAX_CHARS};
use super::rejection::{invalid, missing, Rejection};
use crate::vocab::{parse_rfc3339_ms, TimeMs};
use serde_json::{Map, Value};

pub(super) fn required<T>(
    obj: &Map<String, Value>,
    field: &str,
    parse: impl FnOnce(&str, &Value) -> Result<T, Rejection>,
) -> Result<T, Rejection> {
    match obj.get(field) {
        Some(value) => parse(field, value),
        None => Err(missing(field, format!("{field} is required"))),
    }
}

pub(super) fn optional<T>(
    obj: &Map<String, Value>,
    field: &str,
    parse: impl FnOnce(&str, &Value) -> Result<T, Rejection>,
) -> Result<Option<T>, Rejection> {
    obj.get(field).map(|value| parse(field, value)).transpose()
}

pub(super) fn required_id(obj: &Map<String, Value>) -> Result<String, Rejection> {
    required(obj, "id", |p, v| printable(p, v, ID_MAX_CHARS))
}

pub(super) fn required_time(obj: &Map<String, Value>) -> Result<TimeMs, Rejection> {
    required(obj, "time", |p, v| {
        let s = string(p, v)?;
        parse_rfc3339_ms(s).map_err(|e| {
            invalid(
                p,
                format!(
                    "time must be an RFC 3339 time with offset, e.g. 2026-11-27T10:00:00Z, \
                     got '{}' ({})",
                    excerpt(s),
                    e.reason
                ),
            )
        })
    })
}

pub(super) fn number(path: &str, value: &Value, range: Range) -> Result<f64, Rejection> {
    // A number too large for f64 arrives as the marker string and is
    // reported by the wrong-type branch ("..., got a number too large to be
    // finite").
    let x = match value {
        Value::Number(n) => n.as_f64(),
        _ => {
            return Err(invalid(
                path,
                format!("{}, got {}", range.requirement(path), type_name(value)),
            ))
        }
    };
    match x {
        // `+ 0.0` turns -0 into 0.
        Some(x) if range.contains(x) => Ok(x + 0.0),
        _ => Err(invalid(path, range.requirement(path))),
    }
}

pub(super) fn string<'a>(path: &str, value: &'a Value) -> Result<&'a str, Rejection> {
    match value {
        Value::String(s) if !is_non_finite_marker(value) => Ok(s),
        _ => Err(invalid(
            path,
            format!("{path} must be a string, got {}", type_name(value)),
        )),
    }
}

pub(super) fn boolean(path: &str, value: &Value) -> Result<bool, Rejection> {
    value.as_bool().ok_or_else(|| {
        invalid(
            path,
            format!("{path} must be true or false, got {}", type_name(value)),
        )
    })
}

/// 1 to `max_chars` printable characters: anything but control characters.
pub(super) fn printable(path: &str, value: &Value, max_chars: usize) -> Result<String, Rejection> {
    let s = string(path, value)?;
    let len = s.chars().count();
    if len == 0 || len > max_chars || s.chars().any(char::is_control) {
        Err(invalid(
            path,
            format!(
                "{path} must be 1 to {max_chars} printable characters (no control characters), \
                 got {len} characters{}",
                if s.chars().any(char::is_control) {
                    " including a control character"
                } else {
                    ""
                }
            ),
        ))
    } else {
        Ok(s.to_owned())
    }
}

/// Free text of `min_chars` to `max_chars` characters.
pub(super) fn text(
    path: &str,
    value: &Value,
    min_chars: usize,
    max_chars: usize,
) -> Result<String, Rejection> {
    let s = string(path, value)?;
    let len = s.chars().count();
    if len < min_chars || len > max_chars {
        Err(invalid(
            path,
            format!("{path} must be {min_chars} to {max_chars} characters, got {len}"),
        ))
    } else {
        Ok(s.to_owned())
    }
}

/// An identifier under the contract's `patient_id` rule.
pub(super) fn name(path: &str, value: &Value) -> Result<String, Rejection> {
    let s = string(path, value)?;
    if is_name(s) {
        Ok(s.to_owned())
    } else {
        Err(invalid(path, name_requirement(path, s)))
    }
}

/// The contract's identifier rule (`patient_id`; dosetrack applies it to
/// every identifier in a topic): 1 to [`NAME_MAX_CHARS`] of `A-Za-z0-9._-`.
pub fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= NAME_MAX_CHARS
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

pub(super) fn name_requirement(field: &str, got: &str) -> String {
    format!(
        "{field} must be 1 to {NAME_MAX_CHARS} characters of A-Za-z0-9._-, got '{}'",
        excerpt(got)
    )
}

pub(super) fn closed_name<T>(
    path: &str,
    value: &Value,
    lookup: fn(&str) -> Option<T>,
    allowed: fn() -> String,
) -> Result<T, Rejection> {
    let s = string(path, value)?;
    lookup(s).ok_or_else(|| {
        invalid(
            path,
            format!("{path} must be one of {}, got '{}'", allowed(), excerpt(s)),
        )
    })
}

/// Input text quoted in a message: at most 64 characters, control
/// characters escaped.
pub(super) fn excerpt(s: &str) -> String {
    const MAX: usize = 64;
    let mut out: String = s.chars().take(MAX).flat_map(char::escape_default).collect();
    if s.chars().nth(MAX).is_some() {
        out.push('…');
    }
    out
}
