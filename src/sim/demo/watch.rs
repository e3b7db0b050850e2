//! What the demo watches: a plain subscriber ([`mqtt::spawn_subscriber`])
//! to the patients' state, their manual doses, the devices' events and the
//! alerts (lifecycle messages and the retained active lists, of patients
//! and of devices), and the messages among them that the view uses
//! ([`Watched`]).

use super::sessions::{broker_error, cannot_connect, close, wait_for, CONNECT_WAIT};
use super::topics::DemoTopics;
use super::DemoError;
use crate::mqtt::{self, BrokerConfig, Message, MqttError};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Messages held for the table before the subscriber waits.
const CAPACITY: usize = 1024;

/// One message the watcher saw.
#[derive(Debug)]
pub(super) enum Watched {
    State {
        patient_id: String,
        state: Value,
    },
    Dose {
        patient_id: String,
        payload: Value,
    },
    /// A scope's (a patient's or a device's) retained active alert list.
    ActiveAlerts {
        scope: String,
        list: Vec<Value>,
    },
    /// An alert lifecycle message.
    AlertEvent {
        scope: String,
        payload: Value,
    },
}

/// The watching connection.
pub(super) struct Watcher {
    /// `{prefix}/v1/`: what every watched topic starts with.
    prefix: String,
    rx: mpsc::Receiver<Message>,
    stop: CancellationToken,
    task: JoinHandle<Result<(), MqttError>>,
}

impl Watcher {
    /// Subscribe to the patients' state and their manual and pump doses;
    /// returns once the broker has granted the subscriptions.
    pub(super) async fn start(
        host: &str,
        port: u16,
        client_id: &str,
        topics: &DemoTopics,
    ) -> Result<Watcher, DemoError> {
        let (tx, rx) = mpsc::channel(CAPACITY);
        let stop = CancellationToken::new();
        let (handle, task) = mqtt::spawn_subscriber(
            BrokerConfig::new(host, port, client_id),
            topics.watch_filters(),
            tx,
            stop.clone(),
        );
        let error = if !wait_for(|| handle.stats().connections > 0, CONNECT_WAIT).await {
            Some(cannot_connect(handle.connect_error()))
        } else if !wait_for(|| handle.stats().subscriptions > 0, CONNECT_WAIT).await {
            Some("subscribe: no SUBACK".to_owned())
        } else {
            None
        };
        if let Some(message) = error {
            close(&stop, task, "watcher").await;
            return Err(broker_error(host, port, message));
        }
        Ok(Watcher {
            prefix: topics.watched_prefix(),
            rx,
            stop,
            task,
        })
    }

    /// The next message the table uses; `None` once the subscriber ended.
    /// Cancel-safe (nothing the table uses is lost when cancelled).
    pub(super) async fn recv(&mut self) -> Option<Watched> {
        loop {
            let m = self.rx.recv().await?;
            if let Some(w) = watched(&self.prefix, &m.topic, &m.payload) {
                return Some(w);
            }
        }
    }

    /// The next message the table uses, if one has arrived.
    pub(super) fn try_recv(&mut self) -> Option<Watched> {
        while let Ok(m) = self.rx.try_recv() {
            if let Some(w) = watched(&self.prefix, &m.topic, &m.payload) {
                return Some(w);
            }
        }
        None
    }

    /// Unsubscribe and disconnect.
    pub(super) async fn stop(self) {
        close(&self.stop, self.task, "watcher").await;
    }
}

/// A watched message, if it is one the table uses.
fn watched(prefix: &str, topic: &str, payload: &[u8]) -> Option<Watched> {
    let rest = topic.strip_prefix(prefix)?;
    let parts: Vec<&str> = rest.split('/').collect();
    let value = || serde_json::from_slice::<Value>(payload).ok();
    match parts.as_slice() {
        ["patients", id, "state"] => Some(Watched::State {
            patient_id: (*id).to_owned(),
            state: value()?,
        }),
        ["patients", id, "doses"] => Some(Watched::Dose {
            patient_id: (*id).to_owned(),
            payload: value()?,
        }),
        ["patients" | "devices", scope, "alerts"] => Some(Watched::AlertEvent {
            scope: (*scope).to_owned(),
            payload: value()?,
        }),
        ["patients" | "devices", scope, "alerts", "active"] => Some(Watched::ActiveAlerts {
            scope: (*scope).to_owned(),
            // An empty retained message (a cleared topic) is no list.
            list: match value() {
                Some(Value::Array(list)) => list,
                _ => Vec::new(),
            },
        }),
        ["devices", _, "events"] => {
            let v = value()?;
            if v.get("kind")?.as_str()? != "bolus_delivered" {
                return None;
            }
            let patient_id = v.get("patient_id")?.as_str()?.to_owned();
            Some(Watched::Dose {
                patient_id,
                payload: v,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::sim::demo::view::dose_label;

    #[test]
    fn watched_messages_are_recognised() {
        let p = "x/v1/";
        assert!(matches!(
            watched(p, "x/v1/patients/P-1/state", br#"{"cp_ng_per_ml":1}"#),
            Some(Watched::State { .. })
        ));
        let dose =
            br#"{"id":"a","time":"2026-11-27T10:00:00Z","route":"intranasal","amount_mg":50}"#;
        let Some(Watched::Dose {
            patient_id,
            payload,
        }) = watched(p, "x/v1/patients/P-1/doses", dose)
        else {
            panic!("a dose");
        };
        assert_eq!(patient_id, "P-1");
        assert_eq!(dose_label(&payload).unwrap().label, "intranasal 50 mg");
        let hb = br#"{"id":"h","time":"2026-11-27T10:00:00Z","kind":"heartbeat"}"#;
        assert!(watched(p, "x/v1/devices/pump-1/events", hb).is_none());
        let bolus = br#"{"id":"b","time":"2026-11-27T10:00:00Z","kind":"bolus_delivered","amount_mg":7.5,"patient_id":"P-2"}"#;
        assert!(matches!(
            watched(p, "x/v1/devices/pump-1/events", bolus),
            Some(Watched::Dose { .. })
        ));
        assert!(watched(p, "y/v1/patients/P-1/state", b"{}").is_none());
        let Some(Watched::ActiveAlerts { scope, list }) = watched(
            p,
            "x/v1/patients/P-1/alerts/active",
            br#"[{"alert_id":"a","rule":"dose_limit"}]"#,
        ) else {
            panic!("an active list");
        };
        assert_eq!((scope.as_str(), list.len()), ("P-1", 1));
        assert!(matches!(
            watched(p, "x/v1/devices/pump-1/alerts/active", b""),
            Some(Watched::ActiveAlerts { list, .. }) if list.is_empty()
        ));
        assert!(matches!(
            watched(p, "x/v1/patients/P-1/alerts", br#"{"phase":"raised"}"#),
            Some(Watched::AlertEvent { .. })
        ));
    }
}
