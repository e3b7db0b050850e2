//! Acknowledging an alert from the ward page: `POST
//! /api/v1/alerts/{alert_id}/acknowledge` on the `[http]` listener, off
//! unless `[http.acknowledge] enabled`.
//!
//! It owns who the operator is, the request's checks, and turning the
//! request into an input. The page does not change an alert itself: the
//! request becomes the contract's operator command (`{"id": "web-…",
//! "time": now, "action": "acknowledge", "by": operator}` on
//! `alerts/{alert_id}/commands`) and enters stage A beside the broker's
//! inputs, so it is checked (`[alerts] operators`, `stale_command`),
//! stored, applied by the alert lifecycle and published (`acknowledged`
//! with `by`) exactly like an acknowledgement from a nurse station. The
//! answer waits (at most [`OUTCOME_WAIT`]) for what the store says became
//! of it.
//!
//! The operator (the command's `by`) is never taken from the request body:
//!
//! * `identity = "proxy_header"`: the user the authenticating reverse proxy
//!   put in `header`; the settings refuse this unless the listener is on
//!   loopback (nobody else can reach the port to forge the header);
//! * `identity = "token"`: `Authorization: Bearer TOKEN`, looked up (in
//!   constant time) among the tokens of `tokens_file`.
//!
//! A request from another site (an `Origin` that is not this listener's
//! `Host`), or not of `Content-Type: application/json` (which a plain HTML
//! form cannot send), is refused before anything else: a page elsewhere
//! cannot make a nurse's browser acknowledge in their name.

use crate::contract::{InputTopic, Topics};
use crate::mqtt::{AckToken, Incoming};
use crate::service::settings::{valid_operator, AcknowledgeSection, OperatorIdentity};
use crate::store::{CommandFate, Reader, StoreError};
use crate::vocab::{format_rfc3339, TimeMs};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::api::json_response;

/// How long a request waits for its command to be stored and applied
/// before answering 202 (stored or on its way; the page follows the live
/// stream).
pub(crate) const OUTCOME_WAIT: Duration = Duration::from_secs(5);

/// How often the store is asked meanwhile.
const OUTCOME_POLL: Duration = Duration::from_millis(25);

/// Largest request body (the body is optional and carries nothing the
/// daemon uses: an empty object is enough).
const MAX_BODY_BYTES: usize = 1024;

/// The acknowledge endpoint's settings and its way into stage A.
pub(crate) struct Acknowledge {
    settings: AcknowledgeSection,
    topics: Topics,
    to_stage_a: mpsc::Sender<Incoming>,
    /// Makes command ids unique within a millisecond.
    counter: AtomicU64,
}

impl Acknowledge {
    pub(crate) fn new(
        settings: AcknowledgeSection,
        prefix: String,
        to_stage_a: mpsc::Sender<Incoming>,
    ) -> Acknowledge {
        Acknowledge {
            settings,
            topics: Topics::new(&prefix),
            to_stage_a,
            counter: AtomicU64::new(0),
        }
    }

    /// What the page is told: `off`, `proxy_header` or `token`.
    pub(crate) fn mode(&self) -> &'static str {
        if self.settings.enabled {
            self.settings.identity.as_str()
        } else {
            "off"
        }
    }

    /// The operator the request names, or why it names none.
    fn operator(&self, headers: &HeaderMap) -> Result<String, Refusal> {
        match self.settings.identity {
            OperatorIdentity::ProxyHeader => {
                let value = headers
                    .get(self.settings.header.as_str())
                    .and_then(|v| v.to_str().ok())
                    .map(str::trim)
                    .unwrap_or_default();
                if value.is_empty() {
                    return Err(Refusal::new(
                        StatusCode::UNAUTHORIZED,
                        "no_operator",
                        format!(
                            "no operator: the proxy did not set {} (is the page reached \
                             through the authenticating proxy?)",
                            self.settings.header
                        ),
                    ));
                }
                if !valid_operator(value) {
                    return Err(Refusal::new(
                        StatusCode::UNAUTHORIZED,
                        "no_operator",
                        format!(
                            "{} is not an operator name (1 to 64 letters, digits or . _ - @)",
                            self.settings.header
                        ),
                    ));
                }
                Ok(value.to_owned())
            }
            OperatorIdentity::Token => {
                let token = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(str::trim)
                    .unwrap_or_default();
                if token.is_empty() {
                    return Err(Refusal::new(
                        StatusCode::UNAUTHORIZED,
                        "no_operator",
                        "no operator: send Authorization: Bearer with your operator token",
                    ));
                }
                match self.settings.tokens.operator_of(token) {
                    Some(operator) => Ok(operator.to_owned()),
                    None => Err(Refusal::new(
                        StatusCode::UNAUTHORIZED,
                        "bad_token",
                        "the operator token is not known",
                    )),
                }
            }
        }
    }
}

/// A refused request: status, code and message (the API's error body).
#[derive(Debug)]
pub(crate) struct Refusal {
    status: StatusCode,
    code: String,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            code: code.to_owned(),
            message: message.into(),
        }
    }

    fn response(&self) -> Response {
        json_response(
            self.status,
            &json!({"error": {"code": self.code, "parameter": null, "message": self.message}}),
        )
    }
}

/// Refuse a request from another site or one a plain form could send.
fn same_site_json(headers: &HeaderMap, body: &Bytes) -> Result<(), Refusal> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        let origin = origin.to_str().unwrap_or_default();
        let origin_host = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .unwrap_or_default();
        if host.is_empty() || origin_host != host {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "cross_origin",
                format!("a request from {origin} may not acknowledge alerts here"),
            ));
        }
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "bad_content_type",
            "send Content-Type: application/json (an empty object is enough)",
        ));
    }
    if body.len() > MAX_BODY_BYTES {
        return Err(Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is over {MAX_BODY_BYTES} bytes"),
        ));
    }
    if !body.is_empty()
        && !serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| v.is_object())
    {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "the body, when sent, is a JSON object",
        ));
    }
    Ok(())
}

/// `POST /api/v1/alerts/{alert_id}/acknowledge`.
pub(crate) async fn acknowledge(
    ack: &Acknowledge,
    reader: Arc<Mutex<Reader>>,
    now_ms: TimeMs,
    alert_id: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    match run(ack, reader, now_ms, alert_id, headers, body).await {
        Ok(response) => response,
        Err(refusal) => {
            warn!(alert_id = %alert_id, code = %refusal.code, message = %refusal.message,
                "acknowledge from the ward page refused");
            refusal.response()
        }
    }
}

async fn run(
    ack: &Acknowledge,
    reader: Arc<Mutex<Reader>>,
    now_ms: TimeMs,
    alert_id: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    if !ack.settings.enabled {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "acknowledge_off",
            "acknowledging from the page is off ([http.acknowledge] enabled = false)",
        ));
    }
    same_site_json(headers, &body)?;
    let operator = ack.operator(headers)?;
    let topic = ack.topics.alert_commands(alert_id);
    match ack.topics.parse_input(&topic) {
        Ok(InputTopic::AlertCommand { alert_id: parsed }) if parsed == alert_id => {}
        Ok(_) => {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "bad_topic",
                "the alert id is not one segment",
            ))
        }
        Err(r) => {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "bad_topic",
                r.message,
            ))
        }
    }
    let n = ack.counter.fetch_add(1, Ordering::Relaxed);
    let command_id = format!("web-{now_ms}-{n}");
    let payload = json!({
        "id": command_id,
        "time": format_rfc3339(now_ms),
        "action": "acknowledge",
        "by": operator,
    })
    .to_string()
    .into_bytes();
    let mark = read(&reader, |r| r.rejected_mark()).await?;
    let incoming = Incoming {
        topic: topic.clone(),
        payload: Bytes::from(payload.clone()),
        received_at_ms: now_ms,
        retain: false,
        qos0: false,
        ack: AckToken::local(),
    };
    if ack.to_stage_a.try_send(incoming).is_err() {
        return Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "the daemon is busy or stopping: the command was not taken; try again",
        ));
    }
    info!(alert_id = %alert_id, by = %operator, command_id = %command_id,
        "acknowledge from the ward page");
    let deadline = Instant::now() + OUTCOME_WAIT;
    loop {
        let fate = {
            let (topic, alert_id, command_id, payload) = (
                topic.clone(),
                alert_id.to_owned(),
                command_id.clone(),
                payload.clone(),
            );
            read(&reader, move |r| {
                r.command_fate(&topic, &alert_id, &command_id, &payload, mark)
            })
            .await?
        };
        let answer = |status: StatusCode, applied: bool, outcome: &str| {
            json_response(
                status,
                &json!({"command_id": command_id, "alert_id": alert_id, "by": operator,
                        "applied": applied, "outcome": outcome}),
            )
        };
        match fate {
            CommandFate::Done {
                applied: true,
                outcome,
            } => return Ok(answer(StatusCode::OK, true, &outcome)),
            CommandFate::Done {
                applied: false,
                outcome,
            } => {
                return Err(Refusal::new(StatusCode::CONFLICT, "not_applied", outcome));
            }
            CommandFate::Rejected { code, message } => {
                let status = if code == "unknown_operator" {
                    StatusCode::FORBIDDEN
                } else {
                    StatusCode::BAD_REQUEST
                };
                return Err(Refusal {
                    status,
                    code,
                    message,
                });
            }
            CommandFate::Pending if Instant::now() >= deadline => {
                return Ok(answer(
                    StatusCode::ACCEPTED,
                    false,
                    "taken, not yet applied: the ward page shows it when it is",
                ));
            }
            CommandFate::Pending => tokio::time::sleep(OUTCOME_POLL).await,
        }
    }
}

/// Run `f` with the API's reader on a blocking thread.
async fn read<T, F>(reader: &Arc<Mutex<Reader>>, f: F) -> Result<T, Refusal>
where
    T: Send + 'static,
    F: FnOnce(&Reader) -> Result<T, StoreError> + Send + 'static,
{
    let reader = Arc::clone(reader);
    let internal = |e: String| {
        warn!(error = %e, "acknowledge: the store could not be read");
        Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the store could not be read; see the daemon's log",
        )
    };
    tokio::task::spawn_blocking(move || {
        let guard = reader
            .lock()
            .map_err(|_| "the API reader is poisoned".to_owned())?;
        f(&guard).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| internal(e.to_string()))?
    .map_err(internal)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn only_same_site_json_passes() {
        let body = Bytes::from_static(b"{}");
        let ok = headers(&[
            ("host", "127.0.0.1:9187"),
            ("content-type", "application/json"),
        ]);
        assert!(same_site_json(&ok, &body).is_ok());
        assert!(same_site_json(&ok, &Bytes::new()).is_ok());
        let same = headers(&[
            ("host", "ward.example:443"),
            ("origin", "https://ward.example:443"),
            ("content-type", "application/json; charset=utf-8"),
        ]);
        assert!(same_site_json(&same, &body).is_ok());
        let other = headers(&[
            ("host", "127.0.0.1:9187"),
            ("origin", "https://evil.example"),
            ("content-type", "application/json"),
        ]);
        assert_eq!(
            same_site_json(&other, &body).unwrap_err().code,
            "cross_origin"
        );
        let form = headers(&[
            ("host", "127.0.0.1:9187"),
            ("content-type", "application/x-www-form-urlencoded"),
        ]);
        assert_eq!(
            same_site_json(&form, &body).unwrap_err().code,
            "bad_content_type"
        );
        let none = headers(&[("host", "127.0.0.1:9187")]);
        assert_eq!(
            same_site_json(&none, &body).unwrap_err().code,
            "bad_content_type"
        );
        assert_eq!(
            same_site_json(&ok, &Bytes::from_static(b"[1]"))
                .unwrap_err()
                .code,
            "invalid_json"
        );
        assert_eq!(
            same_site_json(&ok, &Bytes::from(vec![b' '; 2000]))
                .unwrap_err()
                .code,
            "too_large"
        );
    }

    fn with(identity: OperatorIdentity, tokens: &str) -> Acknowledge {
        let (tx, _rx) = mpsc::channel(1);
        let settings = AcknowledgeSection {
            enabled: true,
            identity,
            tokens: crate::service::settings::OperatorTokens::parse(tokens).unwrap(),
            ..AcknowledgeSection::default()
        };
        Acknowledge::new(settings, "dt".into(), tx)
    }

    #[test]
    fn the_operator_comes_from_the_proxy_header_or_the_token() {
        let proxy = with(OperatorIdentity::ProxyHeader, "");
        assert_eq!(proxy.mode(), "proxy_header");
        assert_eq!(
            proxy
                .operator(&headers(&[("x-remote-user", "rn-4471")]))
                .unwrap(),
            "rn-4471"
        );
        assert_eq!(
            proxy.operator(&HeaderMap::new()).unwrap_err().code,
            "no_operator"
        );
        assert_eq!(
            proxy
                .operator(&headers(&[("x-remote-user", "rn 4471; drop")]))
                .unwrap_err()
                .code,
            "no_operator"
        );
        let token = with(
            OperatorIdentity::Token,
            "# ward 7\nrn-4471 aaaaaaaaaaaaaaaaaaaaaaaa\nrn-4472 bbbbbbbbbbbbbbbbbbbbbbbb\n",
        );
        assert_eq!(token.mode(), "token");
        assert_eq!(
            token
                .operator(&headers(&[(
                    "authorization",
                    "Bearer bbbbbbbbbbbbbbbbbbbbbbbb"
                )]))
                .unwrap(),
            "rn-4472"
        );
        assert_eq!(
            token
                .operator(&headers(&[(
                    "authorization",
                    "Bearer cccccccccccccccccccccccc"
                )]))
                .unwrap_err()
                .code,
            "bad_token"
        );
        // The proxy header means nothing in token mode.
        assert_eq!(
            token
                .operator(&headers(&[("x-remote-user", "rn-4471")]))
                .unwrap_err()
                .code,
            "no_operator"
        );
    }
}
