//! The MQTT contract (`docs/mqtt-contract.md`, version 1): its topics, and
//! its input payloads parsed and validated into typed values, with the
//! contract's rejection codes.
//!
//! This module owns, one file each:
//!
//! * `topic`: the input topic grammar ([`parse_topic`]) and the one
//!   builder of every topic name under a prefix ([`Topics`]): inputs,
//!   states, alerts, the rejection notices, the status, the ingest
//!   subscriptions. Nothing else in the workspace formats a topic.
//! * `limits`: every accepted range and length, declared once
//!   ([`RANGES`], [`MAX_PAYLOAD_BYTES`], …);
//! * `names`: the closed sets of names ([`ErrorCode`], [`StopReason`],
//!   [`BolusSource`], [`AlarmCode`]); `rejection`: [`Rejection`];
//! * `payload` with `json`: decoding a payload — the size limit, UTF-8,
//!   JSON, "must be an object" ([`parse_payload`]) — and the future
//!   clock-skew check ([`check_clock_skew`]) and dosetrack's past-age bound
//!   ([`check_past_age`]);
//! * one file per payload family, with its typed values and its
//!   field-by-field validation: `patient` ([`parse_admit`],
//!   [`parse_discharge`], [`parse_dose`]), `device`
//!   ([`parse_device_event`]), `command` ([`parse_alert_command`]); the
//!   accessors they share are in `fields`;
//! * `simulation`: the JSON Lines input of the offline `simulate` command
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

mod command;
mod device;
mod fields;
mod json;
mod limits;
mod names;
mod patient;
mod payload;
mod rejection;
mod simulation;
mod topic;

pub use command::{
    check_command_age, check_operator, parse_alert_command, AlertCommand, CommandAction,
};
pub use device::{parse_device_event, DeviceEvent, DeviceEventKind, PumpRate};
pub use fields::is_name;
pub use limits::{
    Range, AGE_YEARS, AMOUNT_MG, BY_MAX_CHARS, COMEDICATIONS_MAX_ENTRIES, COMEDICATION_MAX_CHARS,
    CONCENTRATION_MG_PER_ML, DELIVERED_TOTAL_MG, DURATION_MIN, HEIGHT_CM, ID_MAX_CHARS,
    MAX_PAYLOAD_BYTES, NAME_MAX_CHARS, PAUSE_MINUTES, RANGES, RATE_AGREEMENT_REL_TOL,
    RATE_MG_PER_H, RATE_ML_PER_H, RELEASE_RATE_MG_PER_H, SKIN_TEMP_C, TARGET_NG_PER_ML,
    TEXT_MAX_CHARS, WEAR_H, WEIGHT_KG,
};
pub use names::{AlarmCode, BolusSource, ErrorCode, StopReason};
pub use patient::{
    parse_admit, parse_discharge, parse_dose, Admit, Discharge, Dose, DoseKind, TargetOverrides,
};
pub use payload::{check_clock_skew, check_past_age, parse_payload, Input};
pub use rejection::Rejection;
pub use simulation::{parse_simulation_line, SimulationInput};
pub use topic::{parse_topic, prefix_of, topic_source, AlertScope, InputTopic, Topics, VERSION};

#[cfg(test)]
mod tests;
