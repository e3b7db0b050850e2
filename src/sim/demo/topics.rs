//! Every MQTT topic and topic filter the demo names, in one place: the
//! contract's topics under the run's own prefix, named by the core's one
//! topic builder ([`Topics`]). (The daemon, the ward and the ingest session
//! build theirs from the same prefix; the alerts' retained topics come from
//! the store.)

use crate::contract::{AlertScope, Topics};

/// The topics of one demo run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DemoTopics {
    topics: Topics,
}

impl DemoTopics {
    /// The topics under `dosetrack-demo-{tag}`.
    pub(super) fn new(tag: &str) -> DemoTopics {
        DemoTopics {
            topics: Topics::new(&format!("dosetrack-demo-{tag}")),
        }
    }

    /// The run's topic prefix (also the daemon's client id).
    pub(super) fn prefix(&self) -> &str {
        self.topics.prefix()
    }

    /// What the watcher subscribes to: `{prefix}/v1/patients/+/state`,
    /// `…/patients/+/doses`, `…/devices/+/events`, and the alerts of
    /// patients and devices: `…/patients/+/alerts` (lifecycle),
    /// `…/patients/+/alerts/active` (retained lists), the same under
    /// `…/devices/+/`.
    pub(super) fn watch_filters(&self) -> Vec<String> {
        let (patient, device) = (AlertScope::Patient("+"), AlertScope::Device("+"));
        vec![
            self.topics.state("+"),
            self.topics.doses("+"),
            self.topics.device_events("+"),
            self.topics.alerts(patient),
            self.topics.alerts_active(patient),
            self.topics.alerts(device),
            self.topics.alerts_active(device),
        ]
    }

    /// `{prefix}/v1/`: what every topic of the run starts with.
    pub(super) fn watched_prefix(&self) -> String {
        self.topics.root()
    }

    /// `{prefix}/v1/patients/{patient_id}/state` (retained).
    pub(super) fn patient_state(&self, patient_id: &str) -> String {
        self.topics.state(patient_id)
    }

    /// `{prefix}/v1/status`: the daemon's retained status.
    pub(super) fn status(&self) -> String {
        self.topics.status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_the_contracts_under_the_runs_prefix() {
        let t = DemoTopics::new("0a1b2c3d");
        assert_eq!(t.prefix(), "dosetrack-demo-0a1b2c3d");
        assert_eq!(
            t.watch_filters(),
            vec![
                "dosetrack-demo-0a1b2c3d/v1/patients/+/state",
                "dosetrack-demo-0a1b2c3d/v1/patients/+/doses",
                "dosetrack-demo-0a1b2c3d/v1/devices/+/events",
                "dosetrack-demo-0a1b2c3d/v1/patients/+/alerts",
                "dosetrack-demo-0a1b2c3d/v1/patients/+/alerts/active",
                "dosetrack-demo-0a1b2c3d/v1/devices/+/alerts",
                "dosetrack-demo-0a1b2c3d/v1/devices/+/alerts/active",
            ]
        );
        assert_eq!(t.watched_prefix(), "dosetrack-demo-0a1b2c3d/v1/");
        assert_eq!(
            t.patient_state("P-0001"),
            "dosetrack-demo-0a1b2c3d/v1/patients/P-0001/state"
        );
        assert_eq!(t.status(), "dosetrack-demo-0a1b2c3d/v1/status");
    }
}
