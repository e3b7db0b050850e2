//! Why an input was rejected ([`Rejection`]: a code, the offending field,
//! a message) and the shorthands the parsers build rejections with.

use super::names::ErrorCode;
use serde::Serialize;

/// Why an input was rejected: the `error` object of the contract's
/// `rejected` message.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
#[error("{}{}: {message}", code.as_str(), field.as_ref().map(|f| format!(" ({f})")).unwrap_or_default())]
pub struct Rejection {
    pub code: ErrorCode,
    /// The offending field (a path for nested fields), when there is one.
    pub field: Option<String>,
    pub message: String,
}

impl Rejection {
    pub fn new(code: ErrorCode, field: Option<&str>, message: impl Into<String>) -> Rejection {
        Rejection {
            code,
            field: field.map(str::to_owned),
            message: message.into(),
        }
    }
}

pub(super) fn missing(field: &str, message: impl Into<String>) -> Rejection {
    Rejection::new(ErrorCode::MissingField, Some(field), message)
}

pub(super) fn invalid(field: &str, message: impl Into<String>) -> Rejection {
    Rejection::new(ErrorCode::InvalidValue, Some(field), message)
}

pub(super) fn bad_topic(field: Option<&str>, message: impl Into<String>) -> Rejection {
    Rejection::new(ErrorCode::BadTopic, field, message)
}
