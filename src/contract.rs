//! The input side of the MQTT contract (`/work/shared/spec/mqtt-contract.md`,
//! version 1): input topics and payloads, parsed and validated into typed
//! values, with the contract's rejection codes.
//!
//! This module owns:
//!
//! * the input topic grammar ([`parse_topic`]);
//! * payload decoding: the size limit, UTF-8, JSON, "must be an object"
//!   ([`parse_payload`]);
//! * field-by-field validation of every input kind ([`parse_admit`],
//!   [`parse_discharge`], [`parse_dose`], [`parse_device_event`],
//!   [`parse_alert_command`]), with every accepted range declared once at the
//!   top of this file;
//! * the future clock-skew check ([`check_clock_skew`]) and dosetrack's
//!   past-age bound ([`check_past_age`]);
//! * the JSON Lines input of the offline `simulate` command
//!   ([`parse_simulation_line`]).
//!
//! It is pure: no I/O, no clock (the caller passes "now"). Duplicate
//! detection (`duplicate_conflict`) needs storage and lives with the store;
//! this module only defines the code.
//!
//! Every rejection names the offending field. Nested fields use a path:
//! `targets.ceiling_ng_per_ml`, `comedications[2]`. A JSON `null` is a value
//! of the wrong type, not an absent field (the contract: "a value of the
//! wrong type ... makes the message rejected").

use crate::vocab::{format_rfc3339, parse_rfc3339_ms, Route, Setting, Sex, TimeMs};
use serde::Serialize;
use serde_json::{Map, Value};
use std::fmt;

// ---------------------------------------------------------------------------
// Limits. Each says where its number comes from: "contract" when the MQTT
// contract states it, otherwise "dosetrack's plausibility bound" (a bound
// wide enough for any real use, narrow enough to catch unit and typing
// errors).
// ---------------------------------------------------------------------------

/// Largest accepted payload, in bytes. Contract: "at most 64 KiB".
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// Longest `id`, in characters. Contract: "1 to 128 printable characters".
pub const ID_MAX_CHARS: usize = 128;

/// Longest `patient_id` (contract: "1 to 64 characters of `A-Za-z0-9._-`");
/// dosetrack applies the same rule to `device_id`, `alert_id` and `model`.
pub const NAME_MAX_CHARS: usize = 64;

/// Longest operator identity in a command's `by`. dosetrack's plausibility
/// bound (same as `id`).
pub const BY_MAX_CHARS: usize = 128;

/// Longest comedication name. dosetrack's plausibility bound.
pub const COMEDICATION_MAX_CHARS: usize = 64;

/// Most comedications in one `admit`. dosetrack's plausibility bound.
pub const COMEDICATIONS_MAX_ENTRIES: usize = 64;

/// Longest free text (`message` of an alarm, `site` of a patch).
/// dosetrack's plausibility bound.
pub const TEXT_MAX_CHARS: usize = 1024;

/// When a pump gives both `rate_mg_per_h` and `rate_ml_per_h` ×
/// `concentration_mg_per_ml`, they must agree to within this relative
/// difference. dosetrack's choice: the two forms describe one rate, so
/// anything beyond floating-point rounding is a contradiction.
pub const RATE_AGREEMENT_REL_TOL: f64 = 1e-9;

/// A closed numeric range for one field. The upper end is always inclusive;
/// the lower end is inclusive unless `min_exclusive` (e.g. "greater than 0").
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Range {
    pub min: f64,
    pub max: f64,
    pub min_exclusive: bool,
}

impl Range {
    /// `min <= x <= max`.
    pub const fn inclusive(min: f64, max: f64) -> Range {
        Range {
            min,
            max,
            min_exclusive: false,
        }
    }

    /// `min < x <= max`.
    pub const fn above(min: f64, max: f64) -> Range {
        Range {
            min,
            max,
            min_exclusive: true,
        }
    }

    /// True when `x` is finite and inside the range.
    pub fn contains(&self, x: f64) -> bool {
        let above_min = if self.min_exclusive {
            x > self.min
        } else {
            x >= self.min
        };
        x.is_finite() && above_min && x <= self.max
    }

    /// The contract's wording: "`field` must be a finite number from 0 to
    /// 10000" (or "greater than 0 and at most 100" for an exclusive minimum).
    pub fn requirement(&self, field: &str) -> String {
        if self.min_exclusive {
            format!(
                "{field} must be a finite number greater than {} and at most {}",
                self.min, self.max
            )
        } else {
            format!(
                "{field} must be a finite number from {} to {}",
                self.min, self.max
            )
        }
    }
}

/// `weight_kg`, total body weight. Contract: 0.5–400.
pub const WEIGHT_KG: Range = Range::inclusive(0.5, 400.0);
/// `age_years`. dosetrack's plausibility bound.
pub const AGE_YEARS: Range = Range::inclusive(0.0, 130.0);
/// `height_cm`. dosetrack's plausibility bound.
pub const HEIGHT_CM: Range = Range::inclusive(20.0, 280.0);
/// Each value in `targets` (`*_ng_per_ml`). dosetrack's plausibility bound.
pub const TARGET_NG_PER_ML: Range = Range::above(0.0, 100_000.0);
/// `rate_mg_per_h` (pump events, `iv_infusion` doses). Contract: the
/// rejection example ("from 0 to 10000").
pub const RATE_MG_PER_H: Range = Range::inclusive(0.0, 10_000.0);
/// `rate_ml_per_h`. dosetrack's plausibility bound.
pub const RATE_ML_PER_H: Range = Range::inclusive(0.0, 10_000.0);
/// `concentration_mg_per_ml`. dosetrack's plausibility bound.
pub const CONCENTRATION_MG_PER_ML: Range = Range::above(0.0, 1_000.0);
/// `amount_mg` (doses and pump boluses); zero and negative are rejected.
/// dosetrack's plausibility bound.
pub const AMOUNT_MG: Range = Range::above(0.0, 10_000.0);
/// `duration_min` of an `iv_infusion` dose (at most 30 days).
/// dosetrack's plausibility bound.
pub const DURATION_MIN: Range = Range::above(0.0, 43_200.0);
/// `release_rate_mg_per_h` of a patch. dosetrack's plausibility bound.
pub const RELEASE_RATE_MG_PER_H: Range = Range::above(0.0, 100.0);
/// `wear_h` of a patch (at most 14 days). dosetrack's plausibility bound.
pub const WEAR_H: Range = Range::above(0.0, 336.0);
/// `delivered_total_mg` of a pump heartbeat. dosetrack's plausibility bound.
pub const DELIVERED_TOTAL_MG: Range = Range::inclusive(0.0, 10_000_000.0);
/// `skin_temp_c` of a patch heartbeat. dosetrack's plausibility bound.
pub const SKIN_TEMP_C: Range = Range::inclusive(0.0, 50.0);
/// `minutes` of a `pause` command (at most one day; the daemon's configured
/// maximum applies on top). dosetrack's plausibility bound.
pub const PAUSE_MINUTES: Range = Range::above(0.0, 1_440.0);

/// Every numeric field and its range, for documentation and schema checks.
pub const RANGES: [(&str, Range); 16] = [
    ("weight_kg", WEIGHT_KG),
    ("age_years", AGE_YEARS),
    ("height_cm", HEIGHT_CM),
    ("targets.analgesic_floor_ng_per_ml", TARGET_NG_PER_ML),
    (
        "targets.psychotomimetic_caution_ng_per_ml",
        TARGET_NG_PER_ML,
    ),
    ("targets.ceiling_ng_per_ml", TARGET_NG_PER_ML),
    ("rate_mg_per_h", RATE_MG_PER_H),
    ("rate_ml_per_h", RATE_ML_PER_H),
    ("concentration_mg_per_ml", CONCENTRATION_MG_PER_ML),
    ("amount_mg", AMOUNT_MG),
    ("duration_min", DURATION_MIN),
    ("release_rate_mg_per_h", RELEASE_RATE_MG_PER_H),
    ("wear_h", WEAR_H),
    ("delivered_total_mg", DELIVERED_TOTAL_MG),
    ("skin_temp_c", SKIN_TEMP_C),
    ("minutes", PAUSE_MINUTES),
];

// ---------------------------------------------------------------------------
// Closed sets of names.
// ---------------------------------------------------------------------------

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
        /// Payload over [`MAX_PAYLOAD_BYTES`].
        TooLarge = "too_large",
        /// `time` too far ahead of the daemon's clock.
        ClockSkew = "clock_skew",
        /// Same (source, `id`) already stored with different content.
        DuplicateConflict = "duplicate_conflict",
        /// dosetrack's addition: a device event from a device that is not on
        /// the configured allow-list (`[devices]`; an empty list accepts
        /// every device).
        UnknownDevice = "unknown_device",
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

// ---------------------------------------------------------------------------
// Rejections.
// ---------------------------------------------------------------------------

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

fn missing(field: &str, message: impl Into<String>) -> Rejection {
    Rejection::new(ErrorCode::MissingField, Some(field), message)
}

fn invalid(field: &str, message: impl Into<String>) -> Rejection {
    Rejection::new(ErrorCode::InvalidValue, Some(field), message)
}

fn bad_topic(field: Option<&str>, message: impl Into<String>) -> Rejection {
    Rejection::new(ErrorCode::BadTopic, field, message)
}

// ---------------------------------------------------------------------------
// Parsed inputs.
// ---------------------------------------------------------------------------

/// Per-patient overrides of the drug file's target levels (`targets`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TargetOverrides {
    pub analgesic_floor_ng_per_ml: Option<f64>,
    pub psychotomimetic_caution_ng_per_ml: Option<f64>,
    pub ceiling_ng_per_ml: Option<f64>,
}

/// `patients/{patient_id}/admit`: admit or update a patient.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Admit {
    pub id: String,
    pub time_ms: TimeMs,
    pub weight_kg: f64,
    pub age_years: Option<f64>,
    pub sex: Option<Sex>,
    pub height_cm: Option<f64>,
    pub model: Option<String>,
    /// `ward` when absent (contract default).
    pub setting: Setting,
    pub comedications: Vec<String>,
    pub targets: TargetOverrides,
}

/// `patients/{patient_id}/discharge`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Discharge {
    pub id: String,
    pub time_ms: TimeMs,
}

/// `patients/{patient_id}/doses`: a manually given dose.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dose {
    pub id: String,
    pub time_ms: TimeMs,
    pub kind: DoseKind,
}

/// What a manual dose delivers, by route.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DoseKind {
    /// Every route except `iv_infusion` and `transdermal`: one amount.
    Amount { route: Route, amount_mg: f64 },
    /// `iv_infusion`: constant rate for a duration.
    Infusion {
        rate_mg_per_h: f64,
        duration_min: f64,
    },
    /// `transdermal`: constant release for the wear time.
    Patch {
        release_rate_mg_per_h: f64,
        wear_h: f64,
    },
}

impl DoseKind {
    /// The dose's route.
    pub fn route(&self) -> Route {
        match self {
            DoseKind::Amount { route, .. } => *route,
            DoseKind::Infusion { .. } => Route::IvInfusion,
            DoseKind::Patch { .. } => Route::Transdermal,
        }
    }
}

/// `devices/{device_id}/events`. The device id comes from the topic only.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceEvent {
    pub id: String,
    pub time_ms: TimeMs,
    /// The gateway's association, when the payload carries one.
    pub patient_id: Option<String>,
    #[serde(flatten)]
    pub kind: DeviceEventKind,
}

/// A pump rate. `rate_mg_per_h` is always set: when the pump reports
/// `rate_ml_per_h` and `concentration_mg_per_ml` only, it is their product.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PumpRate {
    pub rate_mg_per_h: f64,
    pub rate_ml_per_h: Option<f64>,
    pub concentration_mg_per_ml: Option<f64>,
}

/// A device event's `kind` with its fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DeviceEventKind {
    InfusionStarted(PumpRate),
    InfusionRateChanged(PumpRate),
    InfusionStopped {
        reason: Option<StopReason>,
    },
    BolusDelivered {
        amount_mg: f64,
        source: Option<BolusSource>,
    },
    /// Pump heartbeats carry `delivered_total_mg`, patch heartbeats
    /// `skin_contact` and `skin_temp_c`; all are optional.
    Heartbeat {
        delivered_total_mg: Option<f64>,
        skin_contact: Option<bool>,
        skin_temp_c: Option<f64>,
    },
    Alarm {
        code: AlarmCode,
        message: Option<String>,
    },
    AlarmCleared {
        code: AlarmCode,
    },
    PatchApplied {
        release_rate_mg_per_h: f64,
        wear_h: f64,
        site: Option<String>,
    },
    PatchRemoved,
    PatchDetached,
}

impl DeviceEventKind {
    /// Every device event kind name, in contract order.
    pub const KIND_NAMES: [&'static str; 10] = [
        "infusion_started",
        "infusion_rate_changed",
        "infusion_stopped",
        "bolus_delivered",
        "heartbeat",
        "alarm",
        "alarm_cleared",
        "patch_applied",
        "patch_removed",
        "patch_detached",
    ];

    /// The contract's `kind` string.
    pub fn kind_name(&self) -> &'static str {
        match self {
            DeviceEventKind::InfusionStarted(_) => "infusion_started",
            DeviceEventKind::InfusionRateChanged(_) => "infusion_rate_changed",
            DeviceEventKind::InfusionStopped { .. } => "infusion_stopped",
            DeviceEventKind::BolusDelivered { .. } => "bolus_delivered",
            DeviceEventKind::Heartbeat { .. } => "heartbeat",
            DeviceEventKind::Alarm { .. } => "alarm",
            DeviceEventKind::AlarmCleared { .. } => "alarm_cleared",
            DeviceEventKind::PatchApplied { .. } => "patch_applied",
            DeviceEventKind::PatchRemoved => "patch_removed",
            DeviceEventKind::PatchDetached => "patch_detached",
        }
    }
}

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

/// A validated input payload.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Input {
    Admit(Admit),
    Discharge(Discharge),
    Dose(Dose),
    DeviceEvent(DeviceEvent),
    AlertCommand(AlertCommand),
}

/// One line of a `simulate` JSON Lines file. There is no topic, so a device
/// event carries its `device_id` in the payload.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SimulationInput {
    Dose(Dose),
    DeviceEvent {
        device_id: String,
        event: DeviceEvent,
    },
}

// ---------------------------------------------------------------------------
// Topics.
// ---------------------------------------------------------------------------

/// Parse an input topic: `{prefix}/v1/patients/{patient_id}/admit|discharge|doses`,
/// `{prefix}/v1/devices/{device_id}/events`, `{prefix}/v1/alerts/{alert_id}/commands`.
///
/// Anything else is `bad_topic`; an identifier that breaks the name rule
/// is `bad_topic` with the identifier's name as field.
pub fn parse_topic(prefix: &str, topic: &str) -> Result<InputTopic, Rejection> {
    let expected_start = format!("{prefix}/v1/");
    let Some(rest) = topic.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')) else {
        return Err(bad_topic(
            None,
            format!(
                "topic '{}' does not start with '{expected_start}'",
                excerpt(topic)
            ),
        ));
    };
    let Some(rest) = rest.strip_prefix("v1/") else {
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
                other => Err(bad_topic(
                    None,
                    format!(
                        "unknown patient topic '{}': a patient input topic ends in \
                         admit, discharge or doses",
                        excerpt(other)
                    ),
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

fn topic_name(field: &str, text: &str) -> Result<String, Rejection> {
    if is_name(text) {
        Ok(text.to_owned())
    } else {
        Err(bad_topic(Some(field), name_requirement(field, text)))
    }
}

// ---------------------------------------------------------------------------
// Payloads.
// ---------------------------------------------------------------------------

/// Decode and validate the payload of an input published on `topic`.
pub fn parse_payload(topic: &InputTopic, payload: &[u8]) -> Result<Input, Rejection> {
    check_size(payload.len())?;
    let text = std::str::from_utf8(payload).map_err(|e| {
        Rejection::new(
            ErrorCode::InvalidJson,
            None,
            format!("payload is not valid UTF-8 ({e})"),
        )
    })?;
    let obj = parse_object(text)?;
    match topic {
        InputTopic::Admit { .. } => parse_admit(&obj).map(Input::Admit),
        InputTopic::Discharge { .. } => parse_discharge(&obj).map(Input::Discharge),
        InputTopic::Dose { .. } => parse_dose(&obj).map(Input::Dose),
        InputTopic::DeviceEvent { .. } => parse_device_event(&obj).map(Input::DeviceEvent),
        InputTopic::AlertCommand { .. } => parse_alert_command(&obj).map(Input::AlertCommand),
    }
}

/// Parse one line of a `simulate` JSON Lines file. An object with `kind` is
/// a device event and needs a `device_id`; otherwise an object with `route`
/// is a dose; anything else is `missing_field` "route or kind".
pub fn parse_simulation_line(line: &str) -> Result<SimulationInput, Rejection> {
    check_size(line.len())?;
    let obj = parse_object(line)?;
    if obj.contains_key("kind") {
        let device_id = required(&obj, "device_id", name)?;
        let event = parse_device_event(&obj)?;
        Ok(SimulationInput::DeviceEvent { device_id, event })
    } else if obj.contains_key("route") {
        parse_dose(&obj).map(SimulationInput::Dose)
    } else {
        Err(missing(
            "route or kind",
            "a simulation line needs route (a dose) or kind (a device event, with device_id)",
        ))
    }
}

/// Reject an input whose `time` is more than `max_future_skew_ms` ahead of
/// `now_ms` (contract: `clock_skew`). A negative skew is treated as zero.
pub fn check_clock_skew(
    time_ms: TimeMs,
    now_ms: TimeMs,
    max_future_skew_ms: i64,
) -> Result<(), Rejection> {
    let max_skew_ms = max_future_skew_ms.max(0);
    if time_ms > now_ms.saturating_add(max_skew_ms) {
        Err(Rejection::new(
            ErrorCode::ClockSkew,
            Some("time"),
            format!(
                "time {} is {} ms ahead of the daemon's clock ({}); at most {} ms is allowed",
                format_rfc3339(time_ms),
                time_ms.saturating_sub(now_ms),
                format_rfc3339(now_ms),
                max_skew_ms
            ),
        ))
    } else {
        Ok(())
    }
}

/// Reject an input whose `time` is more than `max_past_age_ms` behind
/// `now_ms` (dosetrack's plausibility bound, configured as
/// `[limits] max_past_age_h`): `invalid_value` on `time`, the contract's code
/// for a value outside its range. Late input is normal (the contract: inputs
/// may arrive late); an input dated weeks or decades back is a wrong clock or
/// a typing error, and applying it would rebuild a patient's model from that
/// date. `None` disables the bound.
pub fn check_past_age(
    time_ms: TimeMs,
    now_ms: TimeMs,
    max_past_age_ms: Option<i64>,
) -> Result<(), Rejection> {
    let Some(max_age_ms) = max_past_age_ms else {
        return Ok(());
    };
    let max_age_ms = max_age_ms.max(0);
    if time_ms < now_ms.saturating_sub(max_age_ms) {
        Err(invalid(
            "time",
            format!(
                "time {} is {} h before the daemon's clock ({}); inputs older than {} h are \
                 refused (limits.max_past_age_h)",
                format_rfc3339(time_ms),
                now_ms.saturating_sub(time_ms) / 3_600_000,
                format_rfc3339(now_ms),
                max_age_ms / 3_600_000
            ),
        ))
    } else {
        Ok(())
    }
}

fn check_size(len: usize) -> Result<(), Rejection> {
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

fn parse_object(text: &str) -> Result<Map<String, Value>, Rejection> {
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
const NON_FINITE_MARKER: &str = "\u{0}dosetrack:non-finite-number:";
/// The same marker as it is written inside a JSON string literal.
const NON_FINITE_MARKER_JSON: &str = "\\u0000dosetrack:non-finite-number:";

/// Parse JSON text. serde_json refuses numbers beyond f64 (`1e400`) as a
/// syntax error, yet they are valid JSON and the contract treats a
/// non-finite number as an invalid value of its field. So on a parse error,
/// such numbers are replaced by a marker string and the text is parsed
/// again; the field accessors report the marker as `invalid_value` on the
/// field that held it.
fn parse_json(text: &str) -> Result<Value, Rejection> {
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
fn mark_non_finite_numbers(text: &str) -> Option<String> {
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

fn is_non_finite_marker(value: &Value) -> bool {
    matches!(value, Value::String(s) if s.starts_with(NON_FINITE_MARKER))
}

fn type_name(value: &Value) -> &'static str {
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

// ---------------------------------------------------------------------------
// Input kinds.
// ---------------------------------------------------------------------------

/// Validate an `admit` payload.
pub fn parse_admit(obj: &Map<String, Value>) -> Result<Admit, Rejection> {
    let id = required_id(obj)?;
    let time_ms = required_time(obj)?;
    let weight_kg = required(obj, "weight_kg", |p, v| number(p, v, WEIGHT_KG))?;
    let age_years = optional(obj, "age_years", |p, v| number(p, v, AGE_YEARS))?;
    let sex = optional(obj, "sex", |p, v| {
        let s = string(p, v)?;
        s.parse::<Sex>().map_err(|_| {
            invalid(
                p,
                format!("sex must be one of female, male, got '{}'", excerpt(s)),
            )
        })
    })?;
    let height_cm = optional(obj, "height_cm", |p, v| number(p, v, HEIGHT_CM))?;
    let model = optional(obj, "model", name)?;
    let setting = optional(obj, "setting", |p, v| {
        let s = string(p, v)?;
        s.parse::<Setting>().map_err(|_| {
            invalid(
                p,
                format!(
                    "setting must be one of ward, monitored, got '{}'",
                    excerpt(s)
                ),
            )
        })
    })?
    .unwrap_or_default();
    let comedications = optional(obj, "comedications", comedication_list)?.unwrap_or_default();
    let targets = optional(obj, "targets", target_overrides)?.unwrap_or_default();
    Ok(Admit {
        id,
        time_ms,
        weight_kg,
        age_years,
        sex,
        height_cm,
        model,
        setting,
        comedications,
        targets,
    })
}

/// Validate a `discharge` payload.
pub fn parse_discharge(obj: &Map<String, Value>) -> Result<Discharge, Rejection> {
    Ok(Discharge {
        id: required_id(obj)?,
        time_ms: required_time(obj)?,
    })
}

/// Validate a manual dose (`doses`) payload.
pub fn parse_dose(obj: &Map<String, Value>) -> Result<Dose, Rejection> {
    let id = required_id(obj)?;
    let time_ms = required_time(obj)?;
    let route = required(obj, "route", |p, v| {
        let s = string(p, v)?;
        s.parse::<Route>().map_err(|_| {
            invalid(
                p,
                format!(
                    "route must be one of {}, got '{}'",
                    join_names(Route::ALL.iter().map(|r| r.as_str())),
                    excerpt(s)
                ),
            )
        })
    })?;
    let for_route = |e: Rejection| match e.code {
        ErrorCode::MissingField => Rejection {
            message: format!("{} for route {route}", e.message),
            ..e
        },
        _ => e,
    };
    let kind = match route {
        Route::IvInfusion => DoseKind::Infusion {
            rate_mg_per_h: required(obj, "rate_mg_per_h", |p, v| number(p, v, RATE_MG_PER_H))
                .map_err(for_route)?,
            duration_min: required(obj, "duration_min", |p, v| number(p, v, DURATION_MIN))
                .map_err(for_route)?,
        },
        Route::Transdermal => DoseKind::Patch {
            release_rate_mg_per_h: required(obj, "release_rate_mg_per_h", |p, v| {
                number(p, v, RELEASE_RATE_MG_PER_H)
            })
            .map_err(for_route)?,
            wear_h: required(obj, "wear_h", |p, v| number(p, v, WEAR_H)).map_err(for_route)?,
        },
        other => DoseKind::Amount {
            route: other,
            amount_mg: required(obj, "amount_mg", |p, v| number(p, v, AMOUNT_MG))
                .map_err(for_route)?,
        },
    };
    Ok(Dose { id, time_ms, kind })
}

/// Validate a device event payload (the device id is the topic's).
pub fn parse_device_event(obj: &Map<String, Value>) -> Result<DeviceEvent, Rejection> {
    let id = required_id(obj)?;
    let time_ms = required_time(obj)?;
    let kind_name = required(obj, "kind", |p, v| string(p, v).map(str::to_owned))?;
    let patient_id = optional(obj, "patient_id", name)?;
    let kind = match kind_name.as_str() {
        "infusion_started" => DeviceEventKind::InfusionStarted(pump_rate(obj, &kind_name)?),
        "infusion_rate_changed" => {
            DeviceEventKind::InfusionRateChanged(pump_rate(obj, &kind_name)?)
        }
        "infusion_stopped" => DeviceEventKind::InfusionStopped {
            reason: optional(obj, "reason", |p, v| {
                closed_name(p, v, StopReason::from_name, StopReason::allowed)
            })?,
        },
        "bolus_delivered" => DeviceEventKind::BolusDelivered {
            amount_mg: required(obj, "amount_mg", |p, v| number(p, v, AMOUNT_MG))?,
            source: optional(obj, "source", |p, v| {
                closed_name(p, v, BolusSource::from_name, BolusSource::allowed)
            })?,
        },
        "heartbeat" => DeviceEventKind::Heartbeat {
            delivered_total_mg: optional(obj, "delivered_total_mg", |p, v| {
                number(p, v, DELIVERED_TOTAL_MG)
            })?,
            skin_contact: optional(obj, "skin_contact", boolean)?,
            skin_temp_c: optional(obj, "skin_temp_c", |p, v| number(p, v, SKIN_TEMP_C))?,
        },
        "alarm" => DeviceEventKind::Alarm {
            code: required(obj, "code", alarm_code)?,
            message: optional(obj, "message", |p, v| text(p, v, 0, TEXT_MAX_CHARS))?,
        },
        "alarm_cleared" => DeviceEventKind::AlarmCleared {
            code: required(obj, "code", alarm_code)?,
        },
        "patch_applied" => DeviceEventKind::PatchApplied {
            release_rate_mg_per_h: required(obj, "release_rate_mg_per_h", |p, v| {
                number(p, v, RELEASE_RATE_MG_PER_H)
            })?,
            wear_h: required(obj, "wear_h", |p, v| number(p, v, WEAR_H))?,
            site: optional(obj, "site", |p, v| text(p, v, 0, TEXT_MAX_CHARS))?,
        },
        "patch_removed" => DeviceEventKind::PatchRemoved,
        "patch_detached" => DeviceEventKind::PatchDetached,
        other => {
            return Err(Rejection::new(
                ErrorCode::UnknownKind,
                Some("kind"),
                format!(
                    "unknown device event kind '{}'; known kinds: {}",
                    excerpt(other),
                    join_names(DeviceEventKind::KIND_NAMES.into_iter())
                ),
            ));
        }
    };
    Ok(DeviceEvent {
        id,
        time_ms,
        patient_id,
        kind,
    })
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

/// A pump rate from `rate_mg_per_h`, or `rate_ml_per_h` ×
/// `concentration_mg_per_ml`; when both forms are given they must agree.
fn pump_rate(obj: &Map<String, Value>, kind: &str) -> Result<PumpRate, Rejection> {
    let rate_mg_per_h = optional(obj, "rate_mg_per_h", |p, v| number(p, v, RATE_MG_PER_H))?;
    let rate_ml_per_h = optional(obj, "rate_ml_per_h", |p, v| number(p, v, RATE_ML_PER_H))?;
    let concentration_mg_per_ml = optional(obj, "concentration_mg_per_ml", |p, v| {
        number(p, v, CONCENTRATION_MG_PER_ML)
    })?;
    let from_volume = rate_ml_per_h.zip(concentration_mg_per_ml);
    let rate = |rate_mg_per_h| PumpRate {
        rate_mg_per_h,
        rate_ml_per_h,
        concentration_mg_per_ml,
    };
    match (rate_mg_per_h, from_volume) {
        (Some(mg), Some((ml, conc))) => {
            let product = ml * conc;
            let scale = mg.abs().max(product.abs());
            if (mg - product).abs() <= RATE_AGREEMENT_REL_TOL * scale {
                Ok(rate(mg))
            } else {
                Err(invalid(
                    "rate_mg_per_h",
                    format!(
                        "rate_mg_per_h ({mg}) disagrees with rate_ml_per_h × \
                         concentration_mg_per_ml ({ml} × {conc} = {product}); give one form, \
                         or both agreeing to within {RATE_AGREEMENT_REL_TOL:e} relative"
                    ),
                ))
            }
        }
        (Some(mg), None) => Ok(rate(mg)),
        (None, Some((ml, conc))) => {
            let product = ml * conc;
            if RATE_MG_PER_H.contains(product) {
                Ok(rate(product))
            } else {
                Err(invalid(
                    "rate_ml_per_h",
                    format!(
                        "rate_ml_per_h × concentration_mg_per_ml = {ml} × {conc} = {product} \
                         mg/h; {}",
                        RATE_MG_PER_H.requirement("rate_mg_per_h")
                    ),
                ))
            }
        }
        (None, None) => Err(match (rate_ml_per_h, concentration_mg_per_ml) {
            (Some(_), _) => missing(
                "concentration_mg_per_ml",
                format!(
                    "concentration_mg_per_ml is required with rate_ml_per_h when \
                     rate_mg_per_h is absent ({kind})"
                ),
            ),
            (None, Some(_)) => missing(
                "rate_ml_per_h",
                format!(
                    "rate_ml_per_h is required with concentration_mg_per_ml when \
                     rate_mg_per_h is absent ({kind})"
                ),
            ),
            (None, None) => missing(
                "rate_mg_per_h",
                format!(
                    "rate_mg_per_h (or rate_ml_per_h with concentration_mg_per_ml) is \
                     required for kind {kind}"
                ),
            ),
        }),
    }
}

fn comedication_list(path: &str, value: &Value) -> Result<Vec<String>, Rejection> {
    let Value::Array(items) = value else {
        return Err(invalid(
            path,
            format!(
                "{path} must be an array of strings, got {}",
                type_name(value)
            ),
        ));
    };
    if items.len() > COMEDICATIONS_MAX_ENTRIES {
        return Err(invalid(
            path,
            format!(
                "{path} must have at most {COMEDICATIONS_MAX_ENTRIES} entries, got {}",
                items.len()
            ),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| comedication(&format!("{path}[{i}]"), item))
        .collect()
}

fn comedication(path: &str, value: &Value) -> Result<String, Rejection> {
    let s = string(path, value)?;
    let allowed = |c: char| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, ' ' | '_' | '\'' | '-')
    };
    let len = s.chars().count();
    if s.chars().any(|c| c.is_uppercase()) {
        Err(invalid(
            path,
            format!(
                "{path} must be a generic name in lower case, got '{}'",
                excerpt(s)
            ),
        ))
    } else if len == 0 || len > COMEDICATION_MAX_CHARS || !s.chars().all(allowed) {
        Err(invalid(
            path,
            format!(
                "{path} must be 1 to {COMEDICATION_MAX_CHARS} characters of a-z, 0-9, space, \
                 _, ' and -, got '{}'",
                excerpt(s)
            ),
        ))
    } else {
        Ok(s.to_owned())
    }
}

fn target_overrides(path: &str, value: &Value) -> Result<TargetOverrides, Rejection> {
    let Value::Object(obj) = value else {
        return Err(invalid(
            path,
            format!("{path} must be an object, got {}", type_name(value)),
        ));
    };
    let target = |key: &str| -> Result<Option<f64>, Rejection> {
        match obj.get(key) {
            None => Ok(None),
            Some(v) => number(&format!("{path}.{key}"), v, TARGET_NG_PER_ML).map(Some),
        }
    };
    Ok(TargetOverrides {
        analgesic_floor_ng_per_ml: target("analgesic_floor_ng_per_ml")?,
        psychotomimetic_caution_ng_per_ml: target("psychotomimetic_caution_ng_per_ml")?,
        ceiling_ng_per_ml: target("ceiling_ng_per_ml")?,
    })
}

fn alarm_code(path: &str, value: &Value) -> Result<AlarmCode, Rejection> {
    closed_name(path, value, AlarmCode::from_name, AlarmCode::allowed)
}

// ---------------------------------------------------------------------------
// Field accessors. Each takes the field's path (for messages and the
// rejection's `field`) and its JSON value.
// ---------------------------------------------------------------------------

fn required<T>(
    obj: &Map<String, Value>,
    field: &str,
    parse: impl FnOnce(&str, &Value) -> Result<T, Rejection>,
) -> Result<T, Rejection> {
    match obj.get(field) {
        Some(value) => parse(field, value),
        None => Err(missing(field, format!("{field} is required"))),
    }
}

fn optional<T>(
    obj: &Map<String, Value>,
    field: &str,
    parse: impl FnOnce(&str, &Value) -> Result<T, Rejection>,
) -> Result<Option<T>, Rejection> {
    obj.get(field).map(|value| parse(field, value)).transpose()
}

fn required_id(obj: &Map<String, Value>) -> Result<String, Rejection> {
    required(obj, "id", |p, v| printable(p, v, ID_MAX_CHARS))
}

fn required_time(obj: &Map<String, Value>) -> Result<TimeMs, Rejection> {
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

fn number(path: &str, value: &Value, range: Range) -> Result<f64, Rejection> {
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

fn string<'a>(path: &str, value: &'a Value) -> Result<&'a str, Rejection> {
    match value {
        Value::String(s) if !is_non_finite_marker(value) => Ok(s),
        _ => Err(invalid(
            path,
            format!("{path} must be a string, got {}", type_name(value)),
        )),
    }
}

fn boolean(path: &str, value: &Value) -> Result<bool, Rejection> {
    value.as_bool().ok_or_else(|| {
        invalid(
            path,
            format!("{path} must be true or false, got {}", type_name(value)),
        )
    })
}

/// 1 to `max_chars` printable characters: anything but control characters.
fn printable(path: &str, value: &Value, max_chars: usize) -> Result<String, Rejection> {
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
fn text(
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
fn name(path: &str, value: &Value) -> Result<String, Rejection> {
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

fn name_requirement(field: &str, got: &str) -> String {
    format!(
        "{field} must be 1 to {NAME_MAX_CHARS} characters of A-Za-z0-9._-, got '{}'",
        excerpt(got)
    )
}

fn closed_name<T>(
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

fn join_names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.collect::<Vec<_>>().join(", ")
}

/// Input text quoted in a message: at most 64 characters, control
/// characters escaped.
fn excerpt(s: &str) -> String {
    const MAX: usize = 64;
    let mut out: String = s.chars().take(MAX).flat_map(char::escape_default).collect();
    if s.chars().nth(MAX).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFIX: &str = "dosetrack";
    const T0: &str = "2026-11-27T10:00:00Z";

    fn patient(kind: &str) -> InputTopic {
        let patient_id = "P-1001".to_owned();
        match kind {
            "admit" => InputTopic::Admit { patient_id },
            "discharge" => InputTopic::Discharge { patient_id },
            _ => InputTopic::Dose { patient_id },
        }
    }

    fn device() -> InputTopic {
        InputTopic::DeviceEvent {
            device_id: "pump-7".to_owned(),
        }
    }

    fn alert() -> InputTopic {
        InputTopic::AlertCommand {
            alert_id: "al-1".to_owned(),
        }
    }

    fn accept(topic: &InputTopic, payload: &str) -> Input {
        match parse_payload(topic, payload.as_bytes()) {
            Ok(input) => input,
            Err(e) => panic!("rejected {payload}: {e}"),
        }
    }

    fn reject(topic: &InputTopic, payload: &[u8]) -> Rejection {
        match parse_payload(topic, payload) {
            Ok(input) => panic!("accepted {}: {input:?}", String::from_utf8_lossy(payload)),
            Err(e) => e,
        }
    }

    #[track_caller]
    fn assert_rejects(topic: &InputTopic, payload: &str, code: ErrorCode, field: Option<&str>) {
        let e = reject(topic, payload.as_bytes());
        assert_eq!(
            (e.code, e.field.as_deref()),
            (code, field),
            "payload {payload}: {e}"
        );
    }

    fn obj(json: &str) -> Map<String, Value> {
        match serde_json::from_str(json) {
            Ok(Value::Object(m)) => m,
            other => panic!("test fixture is not an object: {other:?}"),
        }
    }

    /// `base` with `field` (a top-level name or `targets.name`) set to the
    /// raw JSON text `raw`, or removed when `raw` is `None`.
    fn with_raw(base: &str, field: &str, raw: Option<&str>) -> String {
        let mut m = obj(base);
        const SLOT: &str = "__raw_slot__";
        let (container, key) = match field.split_once('.') {
            Some((outer, inner)) => match m.get_mut(outer) {
                Some(Value::Object(inner_obj)) => (inner_obj, inner),
                _ => panic!("fixture lacks object {outer}"),
            },
            None => (&mut m, field),
        };
        match raw {
            Some(_) => {
                container.insert(key.to_owned(), Value::String(SLOT.to_owned()));
            }
            None => {
                container.remove(key);
            }
        }
        let text = Value::Object(m).to_string();
        match raw {
            Some(raw) => text.replace(&format!("\"{SLOT}\""), raw),
            None => text,
        }
    }

    // Contract examples, verbatim (placeholder times "…" filled in).
    const ADMIT_EXAMPLE: &str = r#"{"id": "adm-1", "time": "2026-11-27T08:00:00Z",
 "weight_kg": 72.5, "age_years": 41, "sex": "female", "height_cm": 168,
 "model": "domino",
 "setting": "ward",
 "comedications": ["clarithromycin", "midazolam"],
 "targets": {"analgesic_floor_ng_per_ml": 100, "ceiling_ng_per_ml": 500}}"#;
    const DOSE_EXAMPLE_1: &str = r#"{"id": "mar-7", "time": "2026-11-27T09:00:00Z", "route": "intranasal", "amount_mg": 50}"#;
    const DOSE_EXAMPLE_2: &str = r#"{"id": "mar-8", "time": "2026-11-27T09:30:00Z", "route": "iv_infusion", "rate_mg_per_h": 20, "duration_min": 120}"#;
    const PATCH_DOSE: &str = r#"{"id": "mar-9", "time": "2026-11-27T09:30:00Z", "route": "transdermal", "release_rate_mg_per_h": 1.04, "wear_h": 24}"#;
    const CMD_ACK: &str = r#"{"id": "cmd-1", "time": "2026-11-27T10:00:00Z", "action": "acknowledge", "by": "rn-4471"}"#;
    const CMD_PAUSE: &str = r#"{"id": "cmd-2", "time": "2026-11-27T10:00:00Z", "action": "pause", "minutes": 15, "by": "rn-4471"}"#;
    const DISCHARGE: &str = r#"{"id": "dis-1", "time": "2026-11-27T10:00:00Z"}"#;
    const STARTED: &str = r#"{"id": "e-9", "time": "2026-11-27T10:00:00Z", "kind": "infusion_started", "patient_id": "P-1001", "rate_mg_per_h": 20}"#;
    const STARTED_ML: &str = r#"{"id": "e-9", "time": "2026-11-27T10:00:00Z", "kind": "infusion_started", "rate_ml_per_h": 10, "concentration_mg_per_ml": 2}"#;
    const BOLUS: &str = r#"{"id": "e-10", "time": "2026-11-27T10:00:00Z", "kind": "bolus_delivered", "patient_id": "P-1001", "amount_mg": 5, "source": "pca"}"#;
    const HEARTBEAT_PUMP: &str = r#"{"id": "e-11", "time": "2026-11-27T10:00:00Z", "kind": "heartbeat", "delivered_total_mg": 250}"#;
    const HEARTBEAT_PATCH: &str = r#"{"id": "e-12", "time": "2026-11-27T10:00:00Z", "kind": "heartbeat", "skin_contact": true, "skin_temp_c": 33.5}"#;
    const PATCH_APPLIED: &str = r#"{"id": "e-13", "time": "2026-11-27T10:00:00Z", "kind": "patch_applied", "patient_id": "P-1001", "release_rate_mg_per_h": 1.04, "wear_h": 24, "site": "left upper arm"}"#;
    const ALARM: &str = r#"{"id": "e-14", "time": "2026-11-27T10:00:00Z", "kind": "alarm", "code": "occlusion", "message": "downstream occlusion"}"#;

    fn t(text: &str) -> TimeMs {
        match parse_rfc3339_ms(text) {
            Ok(ms) => ms,
            Err(e) => panic!("{e}"),
        }
    }

    fn event(payload: &str) -> DeviceEvent {
        match accept(&device(), payload) {
            Input::DeviceEvent(e) => e,
            other => panic!("not a device event: {other:?}"),
        }
    }

    // ----- accepting -----

    #[test]
    fn accepts_contract_admit_example() {
        let Input::Admit(a) = accept(&patient("admit"), ADMIT_EXAMPLE) else {
            panic!("not an admit");
        };
        assert_eq!(
            a,
            Admit {
                id: "adm-1".into(),
                time_ms: t("2026-11-27T08:00:00Z"),
                weight_kg: 72.5,
                age_years: Some(41.0),
                sex: Some(Sex::Female),
                height_cm: Some(168.0),
                model: Some("domino".into()),
                setting: Setting::Ward,
                comedications: vec!["clarithromycin".into(), "midazolam".into()],
                targets: TargetOverrides {
                    analgesic_floor_ng_per_ml: Some(100.0),
                    psychotomimetic_caution_ng_per_ml: None,
                    ceiling_ng_per_ml: Some(500.0),
                },
            }
        );
    }

    #[test]
    fn admit_minimal_defaults_and_ignores_unknown_fields() {
        let payload = r#"{"id": "adm-2", "time": "2026-11-27T11:00:00.250+01:00", "weight_kg": 0.5,
            "setting": "monitored", "extra": [1, {"x": 1e400}], "targets": {"other": "x"}}"#;
        let Input::Admit(a) = accept(&patient("admit"), payload) else {
            panic!("not an admit");
        };
        assert_eq!(a.time_ms, t(T0) + 250);
        assert_eq!(a.setting, Setting::Monitored);
        assert_eq!(a.targets, TargetOverrides::default());
        assert!(a.comedications.is_empty());
        assert_eq!((a.age_years, a.sex, a.model), (None, None, None));
        let Input::Admit(a) = accept(
            &patient("admit"),
            r#"{"id": "a", "time": "2026-11-27T10:00:00Z", "weight_kg": 70, "sex": "male",
                "comedications": ["st john's wort", "co-trimoxazole_2"]}"#,
        ) else {
            panic!("not an admit");
        };
        assert_eq!(a.setting, Setting::Ward);
        assert_eq!(a.sex, Some(Sex::Male));
        assert_eq!(a.comedications.len(), 2);
    }

    #[test]
    fn accepts_discharge() {
        assert_eq!(
            accept(&patient("discharge"), DISCHARGE),
            Input::Discharge(Discharge {
                id: "dis-1".into(),
                time_ms: t(T0)
            })
        );
    }

    #[test]
    fn accepts_contract_dose_examples() {
        assert_eq!(
            accept(&patient("doses"), DOSE_EXAMPLE_1),
            Input::Dose(Dose {
                id: "mar-7".into(),
                time_ms: t("2026-11-27T09:00:00Z"),
                kind: DoseKind::Amount {
                    route: Route::Intranasal,
                    amount_mg: 50.0
                },
            })
        );
        assert_eq!(
            accept(&patient("doses"), DOSE_EXAMPLE_2),
            Input::Dose(Dose {
                id: "mar-8".into(),
                time_ms: t("2026-11-27T09:30:00Z"),
                kind: DoseKind::Infusion {
                    rate_mg_per_h: 20.0,
                    duration_min: 120.0
                },
            })
        );
        let Input::Dose(d) = accept(&patient("doses"), PATCH_DOSE) else {
            panic!("not a dose");
        };
        assert_eq!(
            d.kind,
            DoseKind::Patch {
                release_rate_mg_per_h: 1.04,
                wear_h: 24.0
            }
        );
        assert_eq!(d.kind.route(), Route::Transdermal);
    }

    #[test]
    fn every_amount_route_takes_amount_mg() {
        for route in Route::EXTRAVASCULAR_BOLUS
            .into_iter()
            .chain([Route::IvBolus])
        {
            let payload =
                format!(r#"{{"id": "d", "time": "{T0}", "route": "{route}", "amount_mg": 12.5}}"#);
            let Input::Dose(d) = accept(&patient("doses"), &payload) else {
                panic!("not a dose");
            };
            assert_eq!(
                d.kind,
                DoseKind::Amount {
                    route,
                    amount_mg: 12.5
                }
            );
        }
    }

    #[test]
    fn accepts_contract_commands() {
        assert_eq!(
            accept(&alert(), CMD_ACK),
            Input::AlertCommand(AlertCommand {
                id: "cmd-1".into(),
                time_ms: t(T0),
                action: CommandAction::Acknowledge,
                by: "rn-4471".into()
            })
        );
        assert_eq!(
            accept(&alert(), CMD_PAUSE),
            Input::AlertCommand(AlertCommand {
                id: "cmd-2".into(),
                time_ms: t(T0),
                action: CommandAction::Pause { minutes: 15.0 },
                by: "rn-4471".into()
            })
        );
    }

    #[test]
    fn accepts_infusion_started_and_rate_changed() {
        let e = event(STARTED);
        assert_eq!(e.id, "e-9");
        assert_eq!(e.patient_id.as_deref(), Some("P-1001"));
        assert_eq!(
            e.kind,
            DeviceEventKind::InfusionStarted(PumpRate {
                rate_mg_per_h: 20.0,
                rate_ml_per_h: None,
                concentration_mg_per_ml: None
            })
        );
        let changed = STARTED.replace("infusion_started", "infusion_rate_changed");
        let e = event(&changed);
        assert!(
            matches!(e.kind, DeviceEventKind::InfusionRateChanged(ref r) if r.rate_mg_per_h == 20.0)
        );
        assert_eq!(e.kind.kind_name(), "infusion_rate_changed");
    }

    #[test]
    fn ml_per_h_times_concentration_gives_mg_per_h() {
        assert_eq!(
            event(STARTED_ML).kind,
            DeviceEventKind::InfusionStarted(PumpRate {
                rate_mg_per_h: 20.0,
                rate_ml_per_h: Some(10.0),
                concentration_mg_per_ml: Some(2.0)
            })
        );
        // Both forms, in agreement.
        let both = with_raw(STARTED_ML, "rate_mg_per_h", Some("20"));
        assert!(matches!(event(&both).kind,
            DeviceEventKind::InfusionStarted(ref r) if r.rate_mg_per_h == 20.0));
        // Agreement within rounding: 0.1 × 3 is 0.30000000000000004.
        let rounding = r#"{"id": "e", "time": "2026-11-27T10:00:00Z", "kind": "infusion_rate_changed", "rate_mg_per_h": 0.3, "rate_ml_per_h": 0.1, "concentration_mg_per_ml": 3}"#;
        assert!(matches!(event(rounding).kind,
            DeviceEventKind::InfusionRateChanged(ref r) if r.rate_mg_per_h == 0.3));
    }

    #[test]
    fn accepts_every_other_device_kind() {
        let stopped = format!(
            r#"{{"id": "e", "time": "{T0}", "kind": "infusion_stopped", "reason": "alarm"}}"#
        );
        assert_eq!(
            event(&stopped).kind,
            DeviceEventKind::InfusionStopped {
                reason: Some(StopReason::Alarm)
            }
        );
        let stopped_bare = format!(r#"{{"id": "e", "time": "{T0}", "kind": "infusion_stopped"}}"#);
        assert_eq!(
            event(&stopped_bare).kind,
            DeviceEventKind::InfusionStopped { reason: None }
        );
        assert_eq!(
            event(BOLUS).kind,
            DeviceEventKind::BolusDelivered {
                amount_mg: 5.0,
                source: Some(BolusSource::Pca)
            }
        );
        assert_eq!(
            event(HEARTBEAT_PUMP).kind,
            DeviceEventKind::Heartbeat {
                delivered_total_mg: Some(250.0),
                skin_contact: None,
                skin_temp_c: None
            }
        );
        let hb = event(HEARTBEAT_PATCH);
        assert_eq!(hb.patient_id, None);
        assert_eq!(
            hb.kind,
            DeviceEventKind::Heartbeat {
                delivered_total_mg: None,
                skin_contact: Some(true),
                skin_temp_c: Some(33.5)
            }
        );
        assert_eq!(
            event(ALARM).kind,
            DeviceEventKind::Alarm {
                code: AlarmCode::Occlusion,
                message: Some("downstream occlusion".into())
            }
        );
        let cleared = format!(
            r#"{{"id": "e", "time": "{T0}", "kind": "alarm_cleared", "code": "air_in_line"}}"#
        );
        assert_eq!(
            event(&cleared).kind,
            DeviceEventKind::AlarmCleared {
                code: AlarmCode::AirInLine
            }
        );
        assert_eq!(
            event(PATCH_APPLIED).kind,
            DeviceEventKind::PatchApplied {
                release_rate_mg_per_h: 1.04,
                wear_h: 24.0,
                site: Some("left upper arm".into())
            }
        );
        for (kind, expected) in [
            ("patch_removed", DeviceEventKind::PatchRemoved),
            ("patch_detached", DeviceEventKind::PatchDetached),
        ] {
            let payload = format!(r#"{{"id": "e", "time": "{T0}", "kind": "{kind}"}}"#);
            let e = event(&payload);
            assert_eq!(e.kind, expected);
            assert_eq!(e.kind.kind_name(), kind);
        }
    }

    #[test]
    fn every_alarm_code_is_accepted() {
        for code in AlarmCode::ALL {
            let payload =
                format!(r#"{{"id": "e", "time": "{T0}", "kind": "alarm", "code": "{code}"}}"#);
            assert_eq!(
                event(&payload).kind,
                DeviceEventKind::Alarm {
                    code: *code,
                    message: None
                }
            );
        }
    }

    #[test]
    fn kind_names_round_trip_through_the_parser() {
        let mut seen = 0;
        for kind in DeviceEventKind::KIND_NAMES {
            let payload = format!(
                r#"{{"id": "e", "time": "{T0}", "kind": "{kind}", "rate_mg_per_h": 1,
                    "amount_mg": 1, "code": "other", "release_rate_mg_per_h": 1, "wear_h": 1}}"#
            );
            assert_eq!(event(&payload).kind.kind_name(), kind);
            seen += 1;
        }
        assert_eq!(seen, 10);
    }

    #[test]
    fn serialised_names_match_contract_names() {
        fn check<T: Serialize + fmt::Display>(all: &[T]) {
            for v in all {
                assert_eq!(
                    serde_json::to_value(v).ok(),
                    Some(Value::String(v.to_string()))
                );
            }
        }
        check(ErrorCode::ALL);
        check(StopReason::ALL);
        check(BolusSource::ALL);
        check(AlarmCode::ALL);
        assert_eq!(ErrorCode::ALL.len(), 10);
        let e = event(STARTED);
        let json = serde_json::to_value(&e).ok();
        assert_eq!(
            json.as_ref().and_then(|j| j.get("kind")),
            Some(&Value::String("infusion_started".into()))
        );
        let r = Rejection::new(ErrorCode::InvalidValue, Some("rate_mg_per_h"), "m");
        assert_eq!(
            serde_json::to_value(&r).ok(),
            Some(
                serde_json::json!({"code": "invalid_value", "field": "rate_mg_per_h", "message": "m"})
            )
        );
        assert_eq!(r.to_string(), "invalid_value (rate_mg_per_h): m");
    }

    // ----- topics -----

    #[test]
    fn parses_input_topics() {
        let ok = |topic: &str| match parse_topic(PREFIX, topic) {
            Ok(t) => t,
            Err(e) => panic!("{topic}: {e}"),
        };
        assert_eq!(ok("dosetrack/v1/patients/P-1001/admit"), patient("admit"));
        assert_eq!(
            ok("dosetrack/v1/patients/P-1001/discharge"),
            patient("discharge")
        );
        assert_eq!(ok("dosetrack/v1/patients/P-1001/doses"), patient("doses"));
        assert_eq!(ok("dosetrack/v1/devices/pump-7/events"), device());
        assert_eq!(ok("dosetrack/v1/alerts/al-1/commands"), alert());
        assert_eq!(
            parse_topic(
                "site-a/dosetrack",
                "site-a/dosetrack/v1/devices/p.2_x/events"
            ),
            Ok(InputTopic::DeviceEvent {
                device_id: "p.2_x".into()
            })
        );
        let id64 = "a".repeat(64);
        assert_eq!(
            ok(&format!("dosetrack/v1/patients/{id64}/admit")),
            InputTopic::Admit { patient_id: id64 }
        );
    }

    #[test]
    fn rejects_bad_topics() {
        let cases: &[(&str, Option<&str>)] = &[
            ("other/v1/patients/P-1/admit", None),
            ("dosetrackx/v1/patients/P-1/admit", None),
            ("dosetrack/v2/patients/P-1/admit", None),
            ("dosetrack/patients/P-1/admit", None),
            ("dosetrack/v1/patients/P-1/state", None),
            ("dosetrack/v1/patients/P-1/alerts", None),
            ("dosetrack/v1/patients/P-1/alerts/active", None),
            ("dosetrack/v1/patients/P-1/vitals", None),
            ("dosetrack/v1/patients/P-1", None),
            ("dosetrack/v1/patients/P-1/admit/x", None),
            ("dosetrack/v1/devices/pump-7/status", None),
            ("dosetrack/v1/devices/pump-7", None),
            ("dosetrack/v1/alerts/al-1/ack", None),
            ("dosetrack/v1/rejected", None),
            ("dosetrack/v1/status", None),
            ("dosetrack/v1/things/x/events", None),
            ("dosetrack/v1/", None),
            ("", None),
            ("dosetrack/v1/patients//admit", Some("patient_id")),
            ("dosetrack/v1/patients/P 1/admit", Some("patient_id")),
            ("dosetrack/v1/patients/P\u{1}1/doses", Some("patient_id")),
            ("dosetrack/v1/patients/+/admit", Some("patient_id")),
            ("dosetrack/v1/devices/pump 7/events", Some("device_id")),
            ("dosetrack/v1/alerts/al\u{e9}/commands", Some("alert_id")),
        ];
        for (topic, field) in cases {
            match parse_topic(PREFIX, topic) {
                Ok(t) => panic!("accepted topic {topic:?}: {t:?}"),
                Err(e) => {
                    assert_eq!(e.code, ErrorCode::BadTopic, "{topic:?}");
                    assert_eq!(e.field.as_deref(), *field, "{topic:?}: {e}");
                    assert!(!e.message.is_empty());
                }
            }
        }
        let long = format!("dosetrack/v1/devices/{}/events", "d".repeat(65));
        assert_eq!(
            parse_topic(PREFIX, &long).map_err(|e| (e.code, e.field)),
            Err((ErrorCode::BadTopic, Some("device_id".into())))
        );
        let e = parse_topic(PREFIX, "dosetrack/v1/patients/P-1/state").err();
        assert!(e.is_some_and(|e| e.message.contains("output topic")));
    }

    // ----- payload framing -----

    #[test]
    fn rejects_bad_framing() {
        let topic = patient("doses");
        let e = reject(&topic, b"{\"id\": \"\xff\xfe\"}");
        assert_eq!((e.code, e.field), (ErrorCode::InvalidJson, None));
        assert!(e.message.contains("UTF-8"));
        assert_rejects(&topic, "{\"id\": ", ErrorCode::InvalidJson, None);
        assert_rejects(&topic, "", ErrorCode::InvalidJson, None);
        assert_rejects(&topic, "{'id': 1}", ErrorCode::InvalidJson, None);
        assert_rejects(&topic, "[]", ErrorCode::NotAnObject, None);
        assert_rejects(&topic, "\"x\"", ErrorCode::NotAnObject, None);
        assert_rejects(&topic, "null", ErrorCode::NotAnObject, None);
        assert_rejects(&topic, "42", ErrorCode::NotAnObject, None);
        assert_rejects(&topic, "1e400", ErrorCode::NotAnObject, None);
        // Still broken JSON, even with a huge number in it.
        assert_rejects(
            &topic,
            "{\"amount_mg\": 1e400",
            ErrorCode::InvalidJson,
            None,
        );
    }

    #[test]
    fn payload_size_limit_is_64_kib() {
        let topic = patient("doses");
        let pad = |total: usize| {
            let base = DOSE_EXAMPLE_1.trim_end_matches('}');
            let filler = total - base.len() - r#", "pad": ""}"#.len();
            format!(r#"{base}, "pad": "{}"}}"#, "x".repeat(filler))
        };
        let at_limit = pad(MAX_PAYLOAD_BYTES);
        assert_eq!(at_limit.len(), 65_536);
        assert!(matches!(accept(&topic, &at_limit), Input::Dose(_)));
        let over = pad(MAX_PAYLOAD_BYTES + 1);
        assert_rejects(&topic, &over, ErrorCode::TooLarge, None);
        // Size is checked before anything else.
        let garbage = vec![0xff_u8; MAX_PAYLOAD_BYTES + 1];
        assert_eq!(reject(&topic, &garbage).code, ErrorCode::TooLarge);
    }

    // ----- id and time -----

    #[test]
    fn id_rules() {
        let topic = patient("doses");
        let set = |raw: Option<&str>| with_raw(DOSE_EXAMPLE_1, "id", raw);
        assert_rejects(&topic, &set(None), ErrorCode::MissingField, Some("id"));
        for bad in [
            "\"\"".to_owned(),
            "7".to_owned(),
            "null".to_owned(),
            "[\"mar-7\"]".to_owned(),
            "\"mar\\u0007\"".to_owned(),
            "\"mar\\n7\"".to_owned(),
            "\"mar\\u007f\"".to_owned(),
            format!("\"{}\"", "i".repeat(129)),
        ] {
            assert_rejects(
                &topic,
                &set(Some(&bad)),
                ErrorCode::InvalidValue,
                Some("id"),
            );
        }
        // 128 printable characters, including spaces and non-ASCII, are fine.
        let ok128 = format!("\"{}é\"", "i ".repeat(63) + "i");
        let Input::Dose(d) = accept(&topic, &set(Some(&ok128))) else {
            panic!("not a dose");
        };
        assert_eq!(d.id.chars().count(), 128);
    }

    #[test]
    fn time_rules() {
        let topic = patient("discharge");
        let set = |raw: Option<&str>| with_raw(DISCHARGE, "time", raw);
        assert_rejects(&topic, &set(None), ErrorCode::MissingField, Some("time"));
        for bad in [
            "\"2026-11-27T10:00:00\"",
            "\"2026-11-27\"",
            "\"yesterday\"",
            "\"\"",
            "1795773600000",
            "null",
        ] {
            assert_rejects(
                &topic,
                &set(Some(bad)),
                ErrorCode::InvalidValue,
                Some("time"),
            );
        }
    }

    #[test]
    fn clock_skew() {
        let now = t(T0);
        let five_min = 300_000;
        assert_eq!(check_clock_skew(now + five_min, now, five_min), Ok(()));
        assert_eq!(check_clock_skew(now - 86_400_000, now, five_min), Ok(()));
        let e = check_clock_skew(now + five_min + 1, now, five_min).err();
        assert_eq!(
            e.map(|e| (e.code, e.field)),
            Some((ErrorCode::ClockSkew, Some("time".into())))
        );
        assert!(check_clock_skew(i64::MAX, i64::MAX - 1, i64::MAX).is_ok());
        assert!(check_clock_skew(i64::MAX, i64::MIN, five_min).is_err());
        assert!(check_clock_skew(now + 1, now, -5).is_err());
    }

    // ----- numeric ranges -----

    /// One numeric field in a valid base payload.
    struct NumericCase {
        topic: InputTopic,
        base: &'static str,
        field: &'static str,
        range: Range,
        required: bool,
    }

    fn numeric_cases() -> Vec<NumericCase> {
        let case = |topic, base, field, range, required| NumericCase {
            topic,
            base,
            field,
            range,
            required,
        };
        // Bases for the volume form keep the product within rate_mg_per_h.
        const STARTED_ML_FOR_ML: &str = r#"{"id": "e", "time": "2026-11-27T10:00:00Z", "kind": "infusion_started", "rate_ml_per_h": 10, "concentration_mg_per_ml": 0.5}"#;
        const ADMIT_ALL_TARGETS: &str = r#"{"id": "a", "time": "2026-11-27T10:00:00Z", "weight_kg": 70, "targets": {"analgesic_floor_ng_per_ml": 100, "psychotomimetic_caution_ng_per_ml": 300, "ceiling_ng_per_ml": 500}}"#;
        vec![
            case(
                patient("admit"),
                ADMIT_EXAMPLE,
                "weight_kg",
                WEIGHT_KG,
                true,
            ),
            case(
                patient("admit"),
                ADMIT_EXAMPLE,
                "age_years",
                AGE_YEARS,
                false,
            ),
            case(
                patient("admit"),
                ADMIT_EXAMPLE,
                "height_cm",
                HEIGHT_CM,
                false,
            ),
            case(
                patient("admit"),
                ADMIT_ALL_TARGETS,
                "targets.analgesic_floor_ng_per_ml",
                TARGET_NG_PER_ML,
                false,
            ),
            case(
                patient("admit"),
                ADMIT_ALL_TARGETS,
                "targets.psychotomimetic_caution_ng_per_ml",
                TARGET_NG_PER_ML,
                false,
            ),
            case(
                patient("admit"),
                ADMIT_ALL_TARGETS,
                "targets.ceiling_ng_per_ml",
                TARGET_NG_PER_ML,
                false,
            ),
            case(
                patient("doses"),
                DOSE_EXAMPLE_1,
                "amount_mg",
                AMOUNT_MG,
                true,
            ),
            case(
                patient("doses"),
                DOSE_EXAMPLE_2,
                "rate_mg_per_h",
                RATE_MG_PER_H,
                true,
            ),
            case(
                patient("doses"),
                DOSE_EXAMPLE_2,
                "duration_min",
                DURATION_MIN,
                true,
            ),
            case(
                patient("doses"),
                PATCH_DOSE,
                "release_rate_mg_per_h",
                RELEASE_RATE_MG_PER_H,
                true,
            ),
            case(patient("doses"), PATCH_DOSE, "wear_h", WEAR_H, true),
            case(device(), STARTED, "rate_mg_per_h", RATE_MG_PER_H, true),
            case(
                device(),
                STARTED_ML_FOR_ML,
                "rate_ml_per_h",
                RATE_ML_PER_H,
                true,
            ),
            case(
                device(),
                STARTED_ML,
                "concentration_mg_per_ml",
                CONCENTRATION_MG_PER_ML,
                true,
            ),
            case(device(), BOLUS, "amount_mg", AMOUNT_MG, true),
            case(
                device(),
                HEARTBEAT_PUMP,
                "delivered_total_mg",
                DELIVERED_TOTAL_MG,
                false,
            ),
            case(device(), HEARTBEAT_PATCH, "skin_temp_c", SKIN_TEMP_C, false),
            case(
                device(),
                PATCH_APPLIED,
                "release_rate_mg_per_h",
                RELEASE_RATE_MG_PER_H,
                true,
            ),
            case(device(), PATCH_APPLIED, "wear_h", WEAR_H, true),
            case(alert(), CMD_PAUSE, "minutes", PAUSE_MINUTES, true),
        ]
    }

    #[test]
    fn numeric_fields_accept_their_range_and_reject_outside_it() {
        let cases = numeric_cases();
        // Every range in the table is exercised.
        for (name, range) in RANGES {
            let leaf = name.rsplit('.').next().unwrap_or(name);
            assert!(
                cases
                    .iter()
                    .any(|c| c.range == range && c.field.ends_with(leaf)),
                "{name} has no test case"
            );
        }
        for c in &cases {
            let set = |raw: &str| with_raw(c.base, c.field, Some(raw));
            let rejects = |raw: &str, code: ErrorCode| {
                let payload = set(raw);
                let e = reject(&c.topic, payload.as_bytes());
                assert_eq!(
                    (e.code, e.field.as_deref()),
                    (code, Some(c.field)),
                    "{} = {raw}: {e}",
                    c.field
                );
                e
            };
            let accepts = |raw: &str| {
                let payload = set(raw);
                if let Err(e) = parse_payload(&c.topic, payload.as_bytes()) {
                    panic!("{} = {raw} rejected: {e}", c.field);
                }
            };
            let (min, max) = (c.range.min, c.range.max);
            let step = |x: f64| (x.abs() * 1e-6).max(1e-6);
            // Lower end.
            if c.range.min_exclusive {
                rejects(&format!("{min}"), ErrorCode::InvalidValue);
                accepts(&format!("{}", min + step(min)));
            } else {
                accepts(&format!("{min}"));
                rejects(&format!("{}", min - step(min)), ErrorCode::InvalidValue);
            }
            rejects("-1", ErrorCode::InvalidValue);
            // Upper end.
            accepts(&format!("{max}"));
            let e = rejects(&format!("{}", max + step(max)), ErrorCode::InvalidValue);
            assert_eq!(e.message, c.range.requirement(c.field));
            // Huge and non-finite.
            rejects("1e308", ErrorCode::InvalidValue);
            rejects("-1e308", ErrorCode::InvalidValue);
            let e = rejects("1e400", ErrorCode::InvalidValue);
            assert!(e.message.starts_with(&c.range.requirement(c.field)));
            rejects("-1e400", ErrorCode::InvalidValue);
            // Wrong types.
            rejects("\"5\"", ErrorCode::InvalidValue);
            rejects("null", ErrorCode::InvalidValue);
            rejects("true", ErrorCode::InvalidValue);
            rejects("[5]", ErrorCode::InvalidValue);
            // Absent.
            let absent = with_raw(c.base, c.field, None);
            if c.required {
                assert_rejects(&c.topic, &absent, ErrorCode::MissingField, Some(c.field));
            } else {
                accepts_payload(&c.topic, &absent);
            }
        }
    }

    fn accepts_payload(topic: &InputTopic, payload: &str) {
        accept(topic, payload);
    }

    /// The ranges themselves, pinned to the numbers in the contract and the
    /// module's brief (the table-driven test above follows the constants).
    #[test]
    fn ranges_are_the_specified_numbers() {
        let inc = |min, max| Range::inclusive(min, max);
        let above = |min, max| Range::above(min, max);
        let expected = [
            ("weight_kg", inc(0.5, 400.0)),
            ("age_years", inc(0.0, 130.0)),
            ("height_cm", inc(20.0, 280.0)),
            ("targets.analgesic_floor_ng_per_ml", above(0.0, 100_000.0)),
            (
                "targets.psychotomimetic_caution_ng_per_ml",
                above(0.0, 100_000.0),
            ),
            ("targets.ceiling_ng_per_ml", above(0.0, 100_000.0)),
            ("rate_mg_per_h", inc(0.0, 10_000.0)),
            ("rate_ml_per_h", inc(0.0, 10_000.0)),
            ("concentration_mg_per_ml", above(0.0, 1_000.0)),
            ("amount_mg", above(0.0, 10_000.0)),
            ("duration_min", above(0.0, 43_200.0)),
            ("release_rate_mg_per_h", above(0.0, 100.0)),
            ("wear_h", above(0.0, 336.0)),
            ("delivered_total_mg", inc(0.0, 1e7)),
            ("skin_temp_c", inc(0.0, 50.0)),
            ("minutes", above(0.0, 1_440.0)),
        ];
        assert_eq!(RANGES, expected);
        assert_eq!(
            (
                MAX_PAYLOAD_BYTES,
                ID_MAX_CHARS,
                NAME_MAX_CHARS,
                BY_MAX_CHARS
            ),
            (65_536, 128, 64, 128)
        );
        assert_eq!(
            (
                COMEDICATION_MAX_CHARS,
                COMEDICATIONS_MAX_ENTRIES,
                TEXT_MAX_CHARS
            ),
            (64, 64, 1024)
        );
        // And the constants the parsers use are the ones in the table.
        let w = |raw: &str| with_raw(ADMIT_EXAMPLE, "weight_kg", Some(raw));
        accepts_payload(&patient("admit"), &w("400"));
        accepts_payload(&patient("admit"), &w("0.5"));
        assert_rejects(
            &patient("admit"),
            &w("400.01"),
            ErrorCode::InvalidValue,
            Some("weight_kg"),
        );
        assert_rejects(
            &patient("admit"),
            &w("0.49"),
            ErrorCode::InvalidValue,
            Some("weight_kg"),
        );
    }

    #[test]
    fn non_finite_number_message() {
        let payload = with_raw(STARTED, "rate_mg_per_h", Some("1e400"));
        assert_eq!(
            reject(&device(), payload.as_bytes()).message,
            "rate_mg_per_h must be a finite number from 0 to 10000, got a number too large to be finite"
        );
    }

    #[test]
    fn contract_rejection_example_message() {
        let payload = with_raw(STARTED, "rate_mg_per_h", Some("20000"));
        let e = reject(&device(), payload.as_bytes());
        assert_eq!(e.code, ErrorCode::InvalidValue);
        assert_eq!(e.field.as_deref(), Some("rate_mg_per_h"));
        assert_eq!(
            e.message,
            "rate_mg_per_h must be a finite number from 0 to 10000"
        );
        let payload = with_raw(DOSE_EXAMPLE_1, "amount_mg", Some("0"));
        assert_eq!(
            reject(&patient("doses"), payload.as_bytes()).message,
            "amount_mg must be a finite number greater than 0 and at most 10000"
        );
    }

    #[test]
    fn negative_and_zero_doses_are_rejected() {
        let topic = patient("doses");
        for raw in ["0", "-0", "-50", "0.0"] {
            let payload = with_raw(DOSE_EXAMPLE_1, "amount_mg", Some(raw));
            assert_rejects(&topic, &payload, ErrorCode::InvalidValue, Some("amount_mg"));
        }
        let payload = with_raw(DOSE_EXAMPLE_2, "rate_mg_per_h", Some("-20"));
        assert_rejects(
            &topic,
            &payload,
            ErrorCode::InvalidValue,
            Some("rate_mg_per_h"),
        );
        let payload = with_raw(BOLUS, "amount_mg", Some("0"));
        assert_rejects(
            &device(),
            &payload,
            ErrorCode::InvalidValue,
            Some("amount_mg"),
        );
    }

    #[test]
    fn zero_rate_is_allowed_and_negative_zero_normalised() {
        let payload = with_raw(STARTED, "rate_mg_per_h", Some("-0.0"));
        match event(&payload).kind {
            DeviceEventKind::InfusionStarted(r) => {
                assert_eq!(r.rate_mg_per_h.to_bits(), 0.0_f64.to_bits());
            }
            other => panic!("{other:?}"),
        }
    }

    // ----- pump rate forms -----

    #[test]
    fn pump_rate_form_errors() {
        let topic = device();
        // Disagreeing forms.
        let both = with_raw(STARTED_ML, "rate_mg_per_h", Some("21"));
        let e = reject(&topic, both.as_bytes());
        assert_eq!(
            (e.code, e.field.as_deref()),
            (ErrorCode::InvalidValue, Some("rate_mg_per_h"))
        );
        assert!(e.message.contains("10 × 2 = 20"), "{}", e.message);
        // Product out of rate_mg_per_h's range.
        let big = with_raw(STARTED_ML, "rate_ml_per_h", Some("6000"));
        assert_rejects(&topic, &big, ErrorCode::InvalidValue, Some("rate_ml_per_h"));
        // Half of the volume form.
        let no_conc = with_raw(STARTED_ML, "concentration_mg_per_ml", None);
        assert_rejects(
            &topic,
            &no_conc,
            ErrorCode::MissingField,
            Some("concentration_mg_per_ml"),
        );
        let no_ml = with_raw(STARTED_ML, "rate_ml_per_h", None);
        assert_rejects(
            &topic,
            &no_ml,
            ErrorCode::MissingField,
            Some("rate_ml_per_h"),
        );
        // No rate at all.
        let none = with_raw(STARTED, "rate_mg_per_h", None);
        assert_rejects(
            &topic,
            &none,
            ErrorCode::MissingField,
            Some("rate_mg_per_h"),
        );
        let none = none.replace("infusion_started", "infusion_rate_changed");
        assert_rejects(
            &topic,
            &none,
            ErrorCode::MissingField,
            Some("rate_mg_per_h"),
        );
        // mg/h with half of the volume form: the given half is kept.
        let partial = with_raw(STARTED, "rate_ml_per_h", Some("10"));
        assert!(matches!(event(&partial).kind,
            DeviceEventKind::InfusionStarted(ref r)
                if r.rate_mg_per_h == 20.0 && r.rate_ml_per_h == Some(10.0)
                    && r.concentration_mg_per_ml.is_none()));
    }

    // ----- routes, kinds, codes, actions -----

    #[test]
    fn dose_route_rules() {
        let topic = patient("doses");
        let set = |raw: Option<&str>| with_raw(DOSE_EXAMPLE_1, "route", raw);
        assert_rejects(&topic, &set(None), ErrorCode::MissingField, Some("route"));
        for bad in ["\"iv\"", "\"IV_BOLUS\"", "\"\"", "3", "null"] {
            assert_rejects(
                &topic,
                &set(Some(bad)),
                ErrorCode::InvalidValue,
                Some("route"),
            );
        }
        let e = reject(&topic, set(Some("\"iv\"")).as_bytes());
        assert!(e
            .message
            .contains("iv_bolus, iv_infusion, im, sc, intranasal"));
        // Each route needs its own fields.
        let infusion_with_amount = DOSE_EXAMPLE_1.replace("intranasal", "iv_infusion");
        assert_rejects(
            &topic,
            &infusion_with_amount,
            ErrorCode::MissingField,
            Some("rate_mg_per_h"),
        );
        let patch_with_amount = DOSE_EXAMPLE_1.replace("intranasal", "transdermal");
        assert_rejects(
            &topic,
            &patch_with_amount,
            ErrorCode::MissingField,
            Some("release_rate_mg_per_h"),
        );
        let oral_with_rate = DOSE_EXAMPLE_2.replace("iv_infusion", "oral");
        let e = reject(&topic, oral_with_rate.as_bytes());
        assert_eq!(
            (e.code, e.field.as_deref()),
            (ErrorCode::MissingField, Some("amount_mg"))
        );
        assert!(e.message.contains("route oral"));
    }

    #[test]
    fn device_event_kind_and_names() {
        let topic = device();
        let set = |field, raw: Option<&str>| with_raw(STARTED, field, raw);
        assert_rejects(
            &topic,
            &set("kind", None),
            ErrorCode::MissingField,
            Some("kind"),
        );
        assert_rejects(
            &topic,
            &set("kind", Some("\"infusion_paused\"")),
            ErrorCode::UnknownKind,
            Some("kind"),
        );
        assert_rejects(
            &topic,
            &set("kind", Some("\"Heartbeat\"")),
            ErrorCode::UnknownKind,
            Some("kind"),
        );
        assert_rejects(
            &topic,
            &set("kind", Some("1")),
            ErrorCode::InvalidValue,
            Some("kind"),
        );
        for bad in ["\"P 1001\"", "\"\"", "\"P\\u00001\"", "12", "null"] {
            assert_rejects(
                &topic,
                &set("patient_id", Some(bad)),
                ErrorCode::InvalidValue,
                Some("patient_id"),
            );
        }
        let long = format!("\"{}\"", "p".repeat(65));
        assert_rejects(
            &topic,
            &set("patient_id", Some(&long)),
            ErrorCode::InvalidValue,
            Some("patient_id"),
        );
    }

    #[test]
    fn device_event_enumerations_and_text() {
        let topic = device();
        let stopped = format!(r#"{{"id": "e", "time": "{T0}", "kind": "infusion_stopped"}}"#);
        for bad in ["\"power\"", "1"] {
            let p = with_raw(&stopped, "reason", Some(bad));
            assert_rejects(&topic, &p, ErrorCode::InvalidValue, Some("reason"));
        }
        let p = with_raw(BOLUS, "source", Some("\"patient\""));
        assert_rejects(&topic, &p, ErrorCode::InvalidValue, Some("source"));
        let p = with_raw(BOLUS, "amount_mg", None);
        assert_rejects(&topic, &p, ErrorCode::MissingField, Some("amount_mg"));
        // Alarm codes.
        let p = with_raw(ALARM, "code", Some("\"fire\""));
        let e = reject(&topic, p.as_bytes());
        assert_eq!(
            (e.code, e.field.as_deref()),
            (ErrorCode::InvalidValue, Some("code"))
        );
        assert!(e.message.contains("occlusion, air_in_line"));
        let p = with_raw(ALARM, "code", None);
        assert_rejects(&topic, &p, ErrorCode::MissingField, Some("code"));
        let cleared = format!(r#"{{"id": "e", "time": "{T0}", "kind": "alarm_cleared"}}"#);
        assert_rejects(&topic, &cleared, ErrorCode::MissingField, Some("code"));
        let p = with_raw(&cleared, "code", Some("\"OCCLUSION\""));
        assert_rejects(&topic, &p, ErrorCode::InvalidValue, Some("code"));
        // Text lengths.
        let long = format!("\"{}\"", "m".repeat(1025));
        let ok = format!("\"{}\"", "m".repeat(1024));
        let p = with_raw(ALARM, "message", Some(&long));
        assert_rejects(&topic, &p, ErrorCode::InvalidValue, Some("message"));
        accepts_payload(&topic, &with_raw(ALARM, "message", Some(&ok)));
        let p = with_raw(ALARM, "message", Some("5"));
        assert_rejects(&topic, &p, ErrorCode::InvalidValue, Some("message"));
        let p = with_raw(PATCH_APPLIED, "site", Some(&long));
        assert_rejects(&topic, &p, ErrorCode::InvalidValue, Some("site"));
        // skin_contact must be a boolean.
        for bad in ["\"true\"", "1", "null"] {
            let p = with_raw(HEARTBEAT_PATCH, "skin_contact", Some(bad));
            assert_rejects(&topic, &p, ErrorCode::InvalidValue, Some("skin_contact"));
        }
    }

    #[test]
    fn alert_command_rules() {
        let topic = alert();
        let p = with_raw(CMD_ACK, "action", Some("\"snooze\""));
        assert_rejects(&topic, &p, ErrorCode::UnknownKind, Some("action"));
        let p = with_raw(CMD_ACK, "action", Some("2"));
        assert_rejects(&topic, &p, ErrorCode::InvalidValue, Some("action"));
        let p = with_raw(CMD_ACK, "action", None);
        assert_rejects(&topic, &p, ErrorCode::MissingField, Some("action"));
        let p = with_raw(CMD_ACK, "by", None);
        assert_rejects(&topic, &p, ErrorCode::MissingField, Some("by"));
        let long_by = format!("\"{}\"", "b".repeat(129));
        for bad in ["\"\"", "\"rn\\t4471\"", "4471", long_by.as_str()] {
            let p = with_raw(CMD_ACK, "by", Some(bad));
            assert_rejects(&topic, &p, ErrorCode::InvalidValue, Some("by"));
        }
        // Acknowledge ignores minutes; pause requires it.
        accepts_payload(&topic, &with_raw(CMD_ACK, "minutes", Some("\"x\"")));
        let p = with_raw(CMD_PAUSE, "minutes", None);
        assert_rejects(&topic, &p, ErrorCode::MissingField, Some("minutes"));
    }

    #[test]
    fn admit_rules() {
        let topic = patient("admit");
        let set = |field, raw: Option<&str>| with_raw(ADMIT_EXAMPLE, field, raw);
        for (field, bad) in [
            ("sex", "\"f\""),
            ("sex", "\"Female\""),
            ("sex", "1"),
            ("setting", "\"icu\""),
            ("setting", "null"),
            ("model", "\"\""),
            ("model", "\"domino model\""),
            ("model", "\"ketamine/domino\""),
            ("model", "5"),
            ("comedications", "\"midazolam\""),
            ("comedications", "{}"),
            ("targets", "[]"),
            ("targets", "100"),
            ("targets", "null"),
        ] {
            assert_rejects(
                &topic,
                &set(field, Some(bad)),
                ErrorCode::InvalidValue,
                Some(field),
            );
        }
        let long_model = format!("\"{}\"", "m".repeat(65));
        assert_rejects(
            &topic,
            &set("model", Some(&long_model)),
            ErrorCode::InvalidValue,
            Some("model"),
        );
        let ok_model = format!("\"{}\"", "m".repeat(64));
        accepts_payload(&topic, &set("model", Some(&ok_model)));
        accepts_payload(&topic, &set("model", Some("\"Domino_2.1-b\"")));
    }

    #[test]
    fn comedication_rules() {
        let topic = patient("admit");
        let set = |raw: &str| with_raw(ADMIT_EXAMPLE, "comedications", Some(raw));
        let e = reject(&topic, set(r#"["clarithromycin", "Midazolam"]"#).as_bytes());
        assert_eq!(
            (e.code, e.field.as_deref()),
            (ErrorCode::InvalidValue, Some("comedications[1]"))
        );
        assert!(e.message.contains("lower case"), "{}", e.message);
        for (raw, field) in [
            (r#"["MIDAZOLAM"]"#, "comedications[0]"),
            (r#"[""]"#, "comedications[0]"),
            (r#"["midazolam", 5]"#, "comedications[1]"),
            (r#"["midazolam", null]"#, "comedications[1]"),
            (r#"["mida/zolam"]"#, "comedications[0]"),
            (r#"["midazolam\n"]"#, "comedications[0]"),
            (r#"["ﬂuoxetine"]"#, "comedications[0]"),
            (r#"[1e400]"#, "comedications[0]"),
        ] {
            assert_rejects(&topic, &set(raw), ErrorCode::InvalidValue, Some(field));
        }
        let long = format!("[\"{}\"]", "c".repeat(65));
        assert_rejects(
            &topic,
            &set(&long),
            ErrorCode::InvalidValue,
            Some("comedications[0]"),
        );
        let ok = format!("[\"{}\"]", "c".repeat(64));
        accepts_payload(&topic, &set(&ok));
        let names = |n: usize| {
            let items: Vec<String> = (0..n).map(|i| format!("\"drug {i}\"")).collect();
            format!("[{}]", items.join(","))
        };
        accepts_payload(&topic, &set(&names(64)));
        assert_rejects(
            &topic,
            &set(&names(65)),
            ErrorCode::InvalidValue,
            Some("comedications"),
        );
        accepts_payload(&topic, &set("[]"));
    }

    #[test]
    fn huge_numbers_in_string_and_object_fields_name_the_field() {
        let p = with_raw(DOSE_EXAMPLE_1, "route", Some("1e400"));
        let e = reject(&patient("doses"), p.as_bytes());
        assert_eq!(
            (e.code, e.field.as_deref()),
            (ErrorCode::InvalidValue, Some("route"))
        );
        assert!(e.message.contains("too large"), "{}", e.message);
        let p = with_raw(ADMIT_EXAMPLE, "targets", Some("-1e999"));
        assert_rejects(
            &patient("admit"),
            &p,
            ErrorCode::InvalidValue,
            Some("targets"),
        );
        let p = with_raw(HEARTBEAT_PATCH, "skin_contact", Some("1E+400"));
        assert_rejects(&device(), &p, ErrorCode::InvalidValue, Some("skin_contact"));
        // A long integer beyond f64.
        let p = with_raw(DOSE_EXAMPLE_1, "amount_mg", Some(&"9".repeat(400)));
        assert_rejects(
            &patient("doses"),
            &p,
            ErrorCode::InvalidValue,
            Some("amount_mg"),
        );
        // Numbers inside strings are left alone.
        let p = with_raw(ALARM, "message", Some("\"1e400 \\\" 1e400\""));
        assert!(matches!(event(&p).kind,
            DeviceEventKind::Alarm { message: Some(ref m), .. } if m == "1e400 \" 1e400"));
    }

    // ----- parse_* on maps, and simulation lines -----

    #[test]
    fn parse_functions_work_on_maps() {
        assert!(parse_admit(&obj(ADMIT_EXAMPLE)).is_ok());
        assert!(parse_discharge(&obj(DISCHARGE)).is_ok());
        assert!(parse_dose(&obj(DOSE_EXAMPLE_2)).is_ok());
        assert!(parse_device_event(&obj(ALARM)).is_ok());
        assert!(parse_alert_command(&obj(CMD_PAUSE)).is_ok());
        // The topic decides the parser, not the payload.
        assert_rejects(
            &patient("admit"),
            DOSE_EXAMPLE_1,
            ErrorCode::MissingField,
            Some("weight_kg"),
        );
    }

    #[test]
    fn simulation_lines() {
        let dose = parse_simulation_line(DOSE_EXAMPLE_2);
        assert!(matches!(dose, Ok(SimulationInput::Dose(ref d)) if d.id == "mar-8"));
        let with_device = with_raw(STARTED, "device_id", Some("\"pump-7\""));
        match parse_simulation_line(&with_device) {
            Ok(SimulationInput::DeviceEvent { device_id, event }) => {
                assert_eq!(device_id, "pump-7");
                assert_eq!(event.kind.kind_name(), "infusion_started");
            }
            other => panic!("{other:?}"),
        }
        let err = |line: &str| match parse_simulation_line(line) {
            Ok(v) => panic!("accepted {line}: {v:?}"),
            Err(e) => (e.code, e.field),
        };
        assert_eq!(
            err(STARTED),
            (ErrorCode::MissingField, Some("device_id".into()))
        );
        assert_eq!(
            err(&with_raw(STARTED, "device_id", Some("\"pump 7\""))),
            (ErrorCode::InvalidValue, Some("device_id".into()))
        );
        assert_eq!(
            err(DISCHARGE),
            (ErrorCode::MissingField, Some("route or kind".into()))
        );
        // kind wins over route.
        let both = with_raw(DOSE_EXAMPLE_1, "kind", Some("\"heartbeat\""));
        assert_eq!(
            err(&both),
            (ErrorCode::MissingField, Some("device_id".into()))
        );
        assert_eq!(err("[]"), (ErrorCode::NotAnObject, None));
        assert_eq!(err("{"), (ErrorCode::InvalidJson, None));
        assert_eq!(
            err(&with_raw(DOSE_EXAMPLE_1, "amount_mg", Some("0"))),
            (ErrorCode::InvalidValue, Some("amount_mg".into()))
        );
    }

    #[test]
    fn marker_rewrite_only_touches_overflowing_numbers() {
        assert_eq!(
            mark_non_finite_numbers(r#"{"a": 1e300, "b": "1e400"}"#),
            None
        );
        assert_eq!(
            mark_non_finite_numbers(r#"[1e400,-2E+999, 3]"#).as_deref(),
            Some(
                r#"["\u0000dosetrack:non-finite-number:1e400","\u0000dosetrack:non-finite-number:-2E+999", 3]"#
            )
        );
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                for topic in [
                    InputTopic::Admit { patient_id: "p".into() },
                    InputTopic::Dose { patient_id: "p".into() },
                    InputTopic::DeviceEvent { device_id: "d".into() },
                    InputTopic::AlertCommand { alert_id: "a".into() },
                ] {
                    let _ = parse_payload(&topic, &bytes);
                }
                let _ = mark_non_finite_numbers(&String::from_utf8_lossy(&bytes));
            }

            #[test]
            fn arbitrary_field_values_never_panic(
                key in prop::sample::select(vec![
                    "id", "time", "kind", "route", "amount_mg", "rate_mg_per_h", "rate_ml_per_h",
                    "concentration_mg_per_ml", "code", "patient_id", "comedications", "targets",
                ]),
                raw in prop::sample::select(vec![
                    "1e400", "-0", "0", "1e-400", "\"\"", "null", "[]", "{}", "[1e400]",
                    "{\"ceiling_ng_per_ml\": 1e400}", "\"\\u0000\"", "18446744073709551616",
                    "-9223372036854775809",
                ]),
                kind in prop::sample::select(DeviceEventKind::KIND_NAMES.to_vec()),
            ) {
                let base = format!(
                    r#"{{"id": "x", "time": "2026-11-27T10:00:00Z", "kind": "{kind}",
                        "route": "oral", "weight_kg": 70, "action": "pause", "by": "b",
                        "{key}": {raw}}}"#
                );
                for topic in [
                    InputTopic::Admit { patient_id: "p".into() },
                    InputTopic::Dose { patient_id: "p".into() },
                    InputTopic::DeviceEvent { device_id: "d".into() },
                    InputTopic::AlertCommand { alert_id: "a".into() },
                ] {
                    let _ = parse_payload(&topic, base.as_bytes());
                }
                let _ = parse_simulation_line(&base);
            }
        }
    }
}
