//! The contract's closed sets of names: rejection codes, infusion stop
//! reasons, bolus sources and device alarm codes (each an enum with its
//! contract names, in contract order).

use serde::Serialize;
use std::fmt;

/// Declares a closed set of contract names: the enum (serialised in
/// snake_case), `ALL` in contract order, `as_str` and `Display`.
macro_rules! closed_set {
    (
        $(#[$meta:meta])*
        $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every name, in contract order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The contract's name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// The value named `name`, if it is one of [`Self::ALL`].
            pub fn from_name(name: &str) -> Option<$name> {
                Self::ALL.iter().copied().find(|v| v.as_str() == name)
            }

            /// Every name, comma separated (for messages).
            pub fn allowed() -> String {
                join_names(Self::ALL.iter().map(|v| v.as_str()))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

closed_set! {
    /// Rejection codes (contract, "Rejections").
    ErrorCode {
        /// Not UTF-8, or not JSON.
        InvalidJson = "invalid_json",
        /// JSON, but not an object.
        NotAnObject = "not_an_object",
        /// A required field is absent.
        MissingField = "missing_field",
        /// Wrong type, non-finite number, out of range, or not a known name.
        InvalidValue = "invalid_value",
        /// Unknown device event `kind` or command `action`.
        UnknownKind = "unknown_kind",
        /// The topic is not an input topic of this contract.
        BadTopic = "bad_topic",
        /// Payload over [`MAX_PAYLOAD_BYTES`](super::MAX_PAYLOAD_BYTES).
        TooLarge = "too_large",
        /// `time` too far ahead of the daemon's clock.
        ClockSkew = "clock_skew",
        /// Same (source, `id`) already stored with different content.
        DuplicateConflict = "duplicate_conflict",
        /// dosetrack's addition: a device event from a device that is not on
        /// the configured allow-list (`[devices]`; an empty list accepts
        /// every device).
        UnknownDevice = "unknown_device",
        /// dosetrack's addition: a topic under the input space
        /// (`patients/{id}/…`, `devices/{id}/…`, `alerts/{id}/…`) whose leaf
        /// is neither an input nor one of the daemon's outputs, e.g.
        /// `patients/P-1/dose`.
        UnknownTopic = "unknown_topic",
        /// dosetrack's addition: a device event whose `patient_id` names
        /// another patient than the one the device is associated with at the
        /// event's time, where the event cannot change the association (a
        /// heartbeat, an alarm, or a delivery event other than
        /// `infusion_started` / `patch_applied`).
        AssociationConflict = "association_conflict",
        /// dosetrack's addition: an alert command whose `by` is not on the
        /// configured operator list (`[alerts] operators`; an empty list
        /// accepts every operator).
        UnknownOperator = "unknown_operator",
        /// dosetrack's addition: an alert command whose `time` is more than
        /// `[alerts] max_command_age_min` behind the daemon's clock at
        /// receipt (a command queued for long must not silence the alert of
        /// now).
        StaleCommand = "stale_command",
        /// dosetrack's addition: a `pause` of an alert occurrence whose
        /// pauses already add up to `[alerts] max_pause_per_occurrence_min`
        /// (decided when the command is applied; the command is stored as an
        /// input, its outcome recorded as not applied).
        PauseLimit = "pause_limit",
        /// dosetrack's addition: an input published at QoS 0 (the contract:
        /// "Every input is published at QoS 1"). It cannot be acknowledged
        /// and the broker may drop it; refused before it is parsed, so a
        /// QoS 0 flood costs a count, not a parse.
        WrongQos = "wrong_qos",
    }
}

closed_set! {
    /// Why an infusion stopped (`infusion_stopped.reason`).
    StopReason {
        Clinician = "clinician",
        Alarm = "alarm",
        Completed = "completed",
        Other = "other",
    }
}

closed_set! {
    /// Who or what gave a pump bolus (`bolus_delivered.source`).
    BolusSource {
        Clinician = "clinician",
        /// Patient-controlled analgesia demand.
        Pca = "pca",
        Loading = "loading",
    }
}

closed_set! {
    /// Device alarm codes (`alarm.code`, `alarm_cleared.code`).
    AlarmCode {
        Occlusion = "occlusion",
        AirInLine = "air_in_line",
        DoorOpen = "door_open",
        BatteryLow = "battery_low",
        BatteryDepleted = "battery_depleted",
        InfusionComplete = "infusion_complete",
        Other = "other",
    }
}

pub(super) fn join_names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.collect::<Vec<_>>().join(", ")
}
