//! Payload decoding below the fields: the size limit, JSON text to an
//! object, and numbers too large for an f64 (parsed as a marker the field
//! accessors report on the field that held it).

use super::limits::MAX_PAYLOAD_BYTES;
use super::names::ErrorCode;
use super::rejection::Rejection;
use serde_json::{Map, Value};

pub(super) fn check_size(len: usize) -> Result<(), Rejection> {
    if len > MAX_PAYLOAD_BYTES {
        Err(Rejection::new(
            ErrorCode::TooLarge,
            None,
            format!("payload is {len} bytes; at most {MAX_PAYLOAD_BYTES} (64 KiB) are allowed"),
        ))
    } else {
        Ok(())
    }
}

pub(super) fn parse_object(text: &str) -> Result<Map<String, Value>, Rejection> {
    match parse_json(text)? {
        Value::Object(obj) => Ok(obj),
        other => Err(Rejection::new(
            ErrorCode::NotAnObject,
            None,
            format!("payload must be a JSON object, got {}", type_name(&other)),
        )),
    }
}

/// Prefix of the string that stands in for a number too large for an f64.
/// Starts with NUL, which no valid field value contains.
pub(super) const NON_FINITE_MARKER: &str = "\u{0}dosetrack:non-finite-number:";
/// The same marker as it is written inside a JSON string literal.
pub(super) const NON_FINITE_MARKER_JSON: &str = "\\u0000dosetrack:non-finite-number:";

/// Parse JSON text. serde_json refuses numbers beyond f64 (`1e400`) as a
/// syntax error, yet they are valid JSON and the contract treats a
/// non-finite number as an invalid value of its field. So on a parse error,
/// such numbers are replaced by a marker string and the text is parsed
/// again; the field accessors report the marker as `invalid_value` on the
/// field that held it.
pub(super) fn parse_json(text: &str) -> Result<Value, Rejection> {
    match serde_json::from_str::<Value>(text) {
        Ok(value) => Ok(value),
        Err(error) => mark_non_finite_numbers(text)
            .and_then(|marked| serde_json::from_str::<Value>(&marked).ok())
            .ok_or_else(|| {
                Rejection::new(
                    ErrorCode::InvalidJson,
                    None,
                    format!("payload is not valid JSON: {error}"),
                )
            }),
    }
}

/// Replace every number token outside strings that overflows f64 by a
/// marker string. `None` when there is none (or the text cannot be sliced).
pub(super) fn mark_non_finite_numbers(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut copied_to = 0;
    let mut in_string = false;
    let mut escaped = false;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            i += 1;
        } else if b == b'"' {
            in_string = true;
            i += 1;
        } else if b == b'-' || b.is_ascii_digit() {
            let start = i;
            while bytes.get(i).is_some_and(|c| {
                c.is_ascii_digit() || matches!(c, b'+' | b'-' | b'.' | b'e' | b'E')
            }) {
                i += 1;
            }
            let token = text.get(start..i)?;
            if token.parse::<f64>().is_ok_and(|x| !x.is_finite()) {
                out.push_str(text.get(copied_to..start)?);
                out.push('"');
                out.push_str(NON_FINITE_MARKER_JSON);
                out.push_str(token);
                out.push('"');
                copied_to = i;
            }
        } else {
            i += 1;
        }
    }
    if copied_to == 0 {
        return None;
    }
    out.push_str(text.get(copied_to..)?);
    Some(out)
}

pub(super) fn is_non_finite_marker(value: &Value) -> bool {
    matches!(value, Value::String(s) if s.starts_with(NON_FINITE_MARKER))
}

pub(super) fn type_name(value: &Value) -> &'static str {
    match value {
        _ if is_non_finite_marker(value) => "a number too large to be finite",
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
