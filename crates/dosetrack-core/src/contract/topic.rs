//! Topics: the one place that parses an input topic ([`parse_topic`]) and
//! builds every topic name under a prefix ([`Topics`]).
//!
//! Every topic is `{prefix}/v1/…` (the contract's version segment,
//! [`VERSION`]):
//!
//! | topic | direction | builder |
//! |---|---|---|
//! | `patients/{patient_id}/admit`, `…/discharge`, `…/doses` | in | [`Topics::admit`], [`Topics::discharge`], [`Topics::doses`] |
//! | `devices/{device_id}/events` | in | [`Topics::device_events`] |
//! | `alerts/{alert_id}/commands` | in | [`Topics::alert_commands`] |
//! | `patients/{patient_id}/state` (retained) | out | [`Topics::state`] |
//! | `patients/{patient_id}/alerts`, `devices/{device_id}/alerts` | out | [`Topics::alerts`] |
//! | `…/alerts/active` (retained) | out | [`Topics::alerts_active`] |
//! | `rejected` | out | [`Topics::rejected`] |
//! | `status` (retained) | out | [`Topics::status`] |

use super::fields::{excerpt, is_name, name_requirement};
use super::names::ErrorCode;
use super::rejection::{bad_topic, Rejection};
use serde::Serialize;

/// The contract version segment every topic carries after the prefix.
pub const VERSION: &str = "v1";

/// Whose alert topics: a patient's or a device's (the alert engine's
/// `Scope` converts into it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertScope<'a> {
    Patient(&'a str),
    Device(&'a str),
}

/// Builds every topic name under one prefix: `{prefix}/v1/…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
    /// `{prefix}/v1`, computed once.
    root: String,
}

impl Topics {
    pub fn new(prefix: &str) -> Topics {
        Topics {
            prefix: prefix.to_owned(),
            root: format!("{prefix}/{VERSION}"),
        }
    }

    /// The prefix the topics are under.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `{prefix}/v1/`: what every topic of this contract starts with.
    pub fn root(&self) -> String {
        format!("{}/", self.root)
    }

    /// `{prefix}/v1/#`: every topic of this contract (a subscription).
    pub fn everything(&self) -> String {
        format!("{}/#", self.root)
    }

    /// Parse an input topic under this prefix ([`parse_topic`]).
    pub fn parse_input(&self, topic: &str) -> Result<InputTopic, Rejection> {
        parse_topic(&self.prefix, topic)
    }

    /// `patients/{patient_id}/admit` (input).
    pub fn admit(&self, patient_id: &str) -> String {
        self.patient(patient_id, "admit")
    }

    /// `patients/{patient_id}/discharge` (input).
    pub fn discharge(&self, patient_id: &str) -> String {
        self.patient(patient_id, "discharge")
    }

    /// `patients/{patient_id}/doses` (input).
    pub fn doses(&self, patient_id: &str) -> String {
        self.patient(patient_id, "doses")
    }

    /// `devices/{device_id}/events` (input).
    pub fn device_events(&self, device_id: &str) -> String {
        format!("{}/devices/{device_id}/events", self.root)
    }

    /// `alerts/{alert_id}/commands` (input).
    pub fn alert_commands(&self, alert_id: &str) -> String {
        format!("{}/alerts/{alert_id}/commands", self.root)
    }

    /// The topic of an input: the inverse of [`parse_topic`].
    pub fn input(&self, topic: &InputTopic) -> String {
        match topic {
            InputTopic::Admit { patient_id } => self.admit(patient_id),
            InputTopic::Discharge { patient_id } => self.discharge(patient_id),
            InputTopic::Dose { patient_id } => self.doses(patient_id),
            InputTopic::DeviceEvent { device_id } => self.device_events(device_id),
            InputTopic::AlertCommand { alert_id } => self.alert_commands(alert_id),
        }
    }

    /// `patients/{patient_id}/state`: a patient's state (retained).
    pub fn state(&self, patient_id: &str) -> String {
        self.patient(patient_id, "state")
    }

    /// `patients/{patient_id}/alerts` or `devices/{device_id}/alerts`: a
    /// scope's alert lifecycle messages.
    pub fn alerts<'a>(&self, scope: impl Into<AlertScope<'a>>) -> String {
        match scope.into() {
            AlertScope::Patient(p) => self.patient(p, "alerts"),
            AlertScope::Device(d) => format!("{}/devices/{d}/alerts", self.root),
        }
    }

    /// `…/alerts/active`: a scope's retained list of active alerts.
    pub fn alerts_active<'a>(&self, scope: impl Into<AlertScope<'a>>) -> String {
        format!("{}/active", self.alerts(scope))
    }

    /// `rejected`: the rejection notices.
    pub fn rejected(&self) -> String {
        format!("{}/rejected", self.root)
    }

    /// `status`: the daemon's retained online/offline status.
    pub fn status(&self) -> String {
        format!("{}/status", self.root)
    }

    /// The subscriptions of the ingest connection: the whole input space,
    /// one filter per collection (`patients/+/+`, `devices/+/+`,
    /// `alerts/+/+`), so that a message on an unknown leaf (a misspelt
    /// `patients/P-1/dose`) reaches the daemon and is rejected
    /// `unknown_topic` instead of being dropped by the broker unseen. They
    /// also match two of the daemon's own outputs (`patients/{id}/state`,
    /// `…/alerts`): the ingest ignores those ([`Topics::is_own_output`]).
    pub fn input_filters(&self) -> Vec<String> {
        ["patients", "devices", "alerts"]
            .iter()
            .map(|c| format!("{}/{c}/+/+", self.root))
            .collect()
    }

    /// Whether `topic` is one of the daemon's own output topics under this
    /// prefix (state, alerts, alerts/active, rejected, status): the ingest
    /// acknowledges and ignores it without a trace, because the daemon
    /// published it (its input filters match `patients/{id}/state` and
    /// `…/alerts`).
    pub fn is_own_output(&self, topic: &str) -> bool {
        let Some(rest) = topic
            .strip_prefix(self.root.as_str())
            .and_then(|r| r.strip_prefix('/'))
        else {
            return false;
        };
        let segments: Vec<&str> = rest.split('/').collect();
        matches!(
            segments.as_slice(),
            ["patients", _, "state" | "alerts"]
                | ["patients" | "devices", _, "alerts", "active"]
                | ["devices", _, "alerts"]
                | ["rejected"]
                | ["status"]
        )
    }

    fn patient(&self, patient_id: &str, leaf: &str) -> String {
        format!("{}/patients/{patient_id}/{leaf}", self.root)
    }
}

/// An input topic with the identifier it carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InputTopic {
    Admit { patient_id: String },
    Discharge { patient_id: String },
    Dose { patient_id: String },
    DeviceEvent { device_id: String },
    AlertCommand { alert_id: String },
}

/// The prefix a topic of this contract is under: everything before its
/// first `/v1/` (`None` when it has none).
pub fn prefix_of(topic: &str) -> Option<&str> {
    topic
        .find(&format!("/{VERSION}/"))
        .and_then(|i| topic.get(..i))
}

/// Who a topic speaks for, for logs and listings: `patients/{id}`,
/// `devices/{id}` or `alerts/{id}` for a topic of the input space's shape
/// (whatever its leaf), else the topic itself.
pub fn topic_source(topic: &str) -> &str {
    let marker = format!("/{VERSION}/");
    let Some(start) = topic.find(&marker).map(|i| i + marker.len()) else {
        return topic;
    };
    let rest = topic.get(start..).unwrap_or_default();
    let mut parts = rest.splitn(3, '/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("patients" | "devices" | "alerts"), Some(id), Some(_)) if !id.is_empty() => {
            let end = start + rest.find('/').unwrap_or(0) + 1 + id.len();
            topic.get(start..end).unwrap_or(topic)
        }
        _ => topic,
    }
}

/// Parse an input topic: `{prefix}/v1/patients/{patient_id}/admit|discharge|doses`,
/// `{prefix}/v1/devices/{device_id}/events`, `{prefix}/v1/alerts/{alert_id}/commands`.
///
/// A topic `patients|devices|alerts/{id}/{leaf}` whose leaf is neither an
/// input nor an output of the daemon is `unknown_topic` (dosetrack's
/// addition; e.g. `patients/P-1/dose`). Anything else is `bad_topic`; an
/// identifier that breaks the name rule is `bad_topic` with the
/// identifier's name as field.
pub fn parse_topic(prefix: &str, topic: &str) -> Result<InputTopic, Rejection> {
    let expected_start = format!("{prefix}/{VERSION}/");
    let Some(rest) = topic.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')) else {
        return Err(bad_topic(
            None,
            format!(
                "topic '{}' does not start with '{expected_start}'",
                excerpt(topic)
            ),
        ));
    };
    let Some(rest) = rest.strip_prefix(VERSION).and_then(|r| r.strip_prefix('/')) else {
        let version = rest.split('/').next().unwrap_or_default();
        return Err(bad_topic(
            None,
            format!(
                "topic '{}' is not a contract version 1 topic (got version segment '{}', \
                 expected '{expected_start}...')",
                excerpt(topic),
                excerpt(version)
            ),
        ));
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let output = |what: &str| {
        Err(bad_topic(
            None,
            format!(
                "topic '{}' is the output topic {what}, not an input",
                excerpt(topic)
            ),
        ))
    };
    match segments.as_slice() {
        ["patients", id, action] => {
            let patient_id = || topic_name("patient_id", id);
            match *action {
                "admit" => Ok(InputTopic::Admit {
                    patient_id: patient_id()?,
                }),
                "discharge" => Ok(InputTopic::Discharge {
                    patient_id: patient_id()?,
                }),
                "doses" => Ok(InputTopic::Dose {
                    patient_id: patient_id()?,
                }),
                "state" => output("patients/{patient_id}/state"),
                "alerts" => output("patients/{patient_id}/alerts"),
                other => Err(unknown_topic(
                    topic,
                    other,
                    "a patient input topic ends in admit, discharge or doses",
                )),
            }
        }
        ["patients", _, "alerts", "active"] => output("patients/{patient_id}/alerts/active"),
        ["devices", _, "alerts"] => output("devices/{device_id}/alerts"),
        ["devices", _, "alerts", "active"] => output("devices/{device_id}/alerts/active"),
        ["devices", id, "events"] => Ok(InputTopic::DeviceEvent {
            device_id: topic_name("device_id", id)?,
        }),
        ["alerts", id, "commands"] => Ok(InputTopic::AlertCommand {
            alert_id: topic_name("alert_id", id)?,
        }),
        ["devices", _, leaf] => Err(unknown_topic(
            topic,
            leaf,
            "a device input topic ends in events",
        )),
        ["alerts", _, leaf] => Err(unknown_topic(
            topic,
            leaf,
            "an alert input topic ends in commands",
        )),
        ["rejected"] => output("rejected"),
        ["status"] => output("status"),
        [collection @ ("patients" | "devices" | "alerts"), ..] => {
            let shape = match *collection {
                "patients" => "patients/{patient_id}/admit|discharge|doses",
                "devices" => "devices/{device_id}/events",
                _ => "alerts/{alert_id}/commands",
            };
            Err(bad_topic(
                None,
                format!(
                    "topic '{}' does not match {expected_start}{shape}",
                    excerpt(topic)
                ),
            ))
        }
        [collection, ..] => Err(bad_topic(
            None,
            format!(
                "unknown topic collection '{}' after '{expected_start}': expected patients, \
                 devices or alerts",
                excerpt(collection)
            ),
        )),
        [] => Err(bad_topic(None, "empty topic")),
    }
}

/// `unknown_topic`: a topic of the input space's shape
/// (`{collection}/{id}/{leaf}`) whose leaf is not an input.
fn unknown_topic(topic: &str, leaf: &str, expected: &str) -> Rejection {
    Rejection::new(
        ErrorCode::UnknownTopic,
        None,
        format!(
            "unknown topic '{}': no input ends in '{}'; {expected}",
            excerpt(topic),
            excerpt(leaf)
        ),
    )
}

fn topic_name(field: &str, text: &str) -> Result<String, Rejection> {
    if is_name(text) {
        Ok(text.to_owned())
    } else {
        Err(bad_topic(Some(field), name_requirement(field, text)))
    }
}
