//! `dosetrack rejected`: the stored rejections, oldest first — when, from
//! which source (`patients/{id}`, `devices/{id}`, `alerts/{id}`, else the
//! topic), on which topic, the code, field and message. Reads the database
//! with a [`dosetrack::store::Reader`] (safe while the service runs); the
//! daemon logs the same rejections, rate-limited, at warn.

use super::args::{RejectedArgs, TableFormat};
use super::time_arg;
use dosetrack::contract::topic_source;
use dosetrack::vocab::format_rfc3339;
use serde::Serialize;
use std::io::Write;

/// One rejection as a JSON line.
#[derive(Serialize)]
struct RejectedLine<'a> {
    received_at: String,
    source: &'a str,
    topic: &'a str,
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    message: &'a str,
}

pub(crate) fn rejected(a: &RejectedArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let since_ms = a
        .since
        .as_deref()
        .map(|t| time_arg("--since", t))
        .transpose()?;
    let rows = a.db.reader()?.rejected_since(since_ms, a.limit)?;
    match a.format {
        TableFormat::Csv => {
            writeln!(out, "received_at,source,topic,code,field,message")?;
            for r in &rows {
                writeln!(
                    out,
                    "{},{},{},{},{},{}",
                    format_rfc3339(r.received_at_ms),
                    csv_field(topic_source(&r.topic)),
                    csv_field(&r.topic),
                    csv_field(&r.code),
                    csv_field(r.field.as_deref().unwrap_or("")),
                    csv_field(&r.message),
                )?;
            }
        }
        TableFormat::Json => {
            for r in &rows {
                let line = RejectedLine {
                    received_at: format_rfc3339(r.received_at_ms),
                    source: topic_source(&r.topic),
                    topic: &r.topic,
                    code: &r.code,
                    field: r.field.as_deref(),
                    message: &r.message,
                };
                writeln!(out, "{}", serde_json::to_string(&line)?)?;
            }
        }
    }
    Ok(())
}

/// Quote a CSV field when it needs it (topics and messages are outside
/// data: commas, quotes, line breaks).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}
