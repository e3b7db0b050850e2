//! The machine-readable API description against the code it describes.
//!
//! `docs/schemas/*.schema.json` (JSON Schema draft 2020-12) describe every
//! MQTT payload of the contract, and `docs/asyncapi.yaml` every topic. These
//! tests keep them in step with dosetrack:
//!
//! * every schema is a valid draft 2020-12 schema with `$id`, `title`,
//!   `description` and `examples`, and its examples validate against it;
//! * every input example is also accepted by dosetrack's own parser
//!   (`contract::parse_topic` + `contract::parse_payload`);
//! * deliberately bad payloads (missing field, wrong type, out of range, bad
//!   enum, bad id) are rejected by both the schema and the parser, with the
//!   rejection code the documentation gives;
//! * the schemas' ranges, lengths and enums are the constants of
//!   `crates/dosetrack-core/src/contract/`;
//! * state messages the tracker actually produces validate against
//!   `state.schema.json`;
//! * the AsyncAPI document references every schema, and its channel
//!   addresses are the topics `parse_topic` accepts (inputs) or knows as
//!   outputs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use dosetrack::contract::{
    self, AlarmCode, BolusSource, DeviceEventKind, ErrorCode, Input, Rejection, StopReason,
};
use dosetrack::drug::DrugFile;
use dosetrack::patient::Formulary;
use dosetrack::tracker::{StateMessage, TrackedInput, Tracker, TrackerConfig};
use dosetrack::vocab::{parse_rfc3339_ms, Route, Setting, Sex};
use jsonschema::{Registry, Validator};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;

const PREFIX: &str = "dosetrack";

/// Every schema file (`docs/schemas/{name}.schema.json`), with the topic its
/// payloads are parsed under when it is an input.
const SCHEMAS: [(&str, Option<&str>); 10] = [
    ("admit", Some("dosetrack/v1/patients/P-1001/admit")),
    ("discharge", Some("dosetrack/v1/patients/P-1001/discharge")),
    ("dose", Some("dosetrack/v1/patients/P-1001/doses")),
    ("device-event", Some("dosetrack/v1/devices/pump-7/events")),
    ("alert-command", Some("dosetrack/v1/alerts/al-1/commands")),
    ("state", None),
    ("alert", None),
    ("alerts-active", None),
    ("rejected", None),
    ("status", None),
];

fn docs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs")
}

fn load(name: &str) -> Value {
    let path = docs().join("schemas").join(format!("{name}.schema.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()))
}

fn topic_of(name: &str) -> Option<&'static str> {
    SCHEMAS
        .iter()
        .find(|(n, _)| *n == name)
        .and_then(|(_, topic)| *topic)
}

/// Every schema under its `$id`, so that references between the files
/// (`alerts-active` → `alert`) resolve without any retrieval.
fn registry() -> Registry<'static> {
    let mut builder = Registry::new();
    for (name, _) in SCHEMAS {
        let schema = load(name);
        let id = schema["$id"].as_str().unwrap().to_owned();
        builder = builder.add(id, schema).unwrap();
    }
    builder.prepare().unwrap()
}

/// A validator for one schema, with `format` asserted (`date-time`).
fn validator(name: &str) -> Validator {
    let registry = registry();
    jsonschema::options()
        .with_registry(&registry)
        .should_validate_formats(true)
        .build(&load(name))
        .unwrap_or_else(|e| panic!("{name}.schema.json does not compile: {e}"))
}

fn schema_errors(v: &Validator, instance: &Value) -> Vec<String> {
    v.iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

fn parse(topic: &str, payload: &str) -> Result<Input, Rejection> {
    let topic = contract::parse_topic(PREFIX, topic)?;
    contract::parse_payload(&topic, payload.as_bytes())
}

fn examples(name: &str) -> Vec<Value> {
    load(name)["examples"].as_array().unwrap().clone()
}

// ---------------------------------------------------------------------------
// (a) Every file is a schema with the required metadata.
// ---------------------------------------------------------------------------

#[test]
fn every_schema_file_is_listed_and_has_id_title_description_examples() {
    let mut on_disk: Vec<String> = std::fs::read_dir(docs().join("schemas"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".schema.json"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = SCHEMAS
        .iter()
        .map(|(n, _)| format!("{n}.schema.json"))
        .collect();
    listed.sort();
    assert_eq!(on_disk, listed, "docs/schemas and this test list differ");

    for (name, _) in SCHEMAS {
        let s = load(name);
        assert_eq!(
            s["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{name}: $schema"
        );
        let id = s["$id"].as_str().unwrap_or_default();
        assert!(
            id.ends_with(&format!("/{name}.schema.json")),
            "{name}: $id {id:?} must name the file"
        );
        for key in ["title", "description"] {
            assert!(
                s[key].as_str().is_some_and(|t| !t.is_empty()),
                "{name}: {key} missing"
            );
        }
        assert!(
            s["examples"].as_array().is_some_and(|e| !e.is_empty()),
            "{name}: examples missing"
        );
        if let Err(e) = jsonschema::meta::validate(&s) {
            panic!("{name}.schema.json is not a valid draft 2020-12 schema: {e}");
        }
        // Unknown fields are ignored (contract, Conventions): every object
        // schema says so and allows them.
        if s["type"] == "object" {
            assert_eq!(s["additionalProperties"], true, "{name}");
            assert!(
                s["description"]
                    .as_str()
                    .unwrap()
                    .contains("additionalProperties: true"),
                "{name}: the description must say unknown fields are allowed"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// (b) Examples validate against their schema.
// ---------------------------------------------------------------------------

#[test]
fn every_example_validates_against_its_schema() {
    for (name, _) in SCHEMAS {
        let v = validator(name);
        for example in examples(name) {
            let errors = schema_errors(&v, &example);
            assert!(
                errors.is_empty(),
                "{name} example {example} is invalid: {errors:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// (c) Input examples are accepted by dosetrack; bad payloads are rejected by
// both the schema and dosetrack.
// ---------------------------------------------------------------------------

#[test]
fn every_input_example_is_accepted_by_the_parser() {
    for (name, topic) in SCHEMAS {
        let Some(topic) = topic else { continue };
        for example in examples(name) {
            if let Err(r) = parse(topic, &example.to_string()) {
                panic!("{name} example {example} is rejected by dosetrack: {r}");
            }
        }
    }
}

/// One payload that breaks one rule: (schema, payload, code, field).
type Bad = (&'static str, &'static str, ErrorCode, Option<&'static str>);

const T: &str = "2026-11-27T10:00:00Z";

fn bad_payloads() -> Vec<Bad> {
    use ErrorCode::{InvalidValue, MissingField, UnknownKind};
    vec![
        // Missing required fields.
        (
            "admit",
            r#"{"id":"a","time":"T"}"#,
            MissingField,
            Some("weight_kg"),
        ),
        ("discharge", r#"{"time":"T"}"#, MissingField, Some("id")),
        ("discharge", r#"{"id":"d"}"#, MissingField, Some("time")),
        (
            "dose",
            r#"{"id":"m","time":"T","amount_mg":5}"#,
            MissingField,
            Some("route"),
        ),
        (
            "dose",
            r#"{"id":"m","time":"T","route":"intranasal"}"#,
            MissingField,
            Some("amount_mg"),
        ),
        (
            "dose",
            r#"{"id":"m","time":"T","route":"iv_infusion","rate_mg_per_h":20}"#,
            MissingField,
            Some("duration_min"),
        ),
        (
            "dose",
            r#"{"id":"m","time":"T","route":"transdermal","wear_h":24}"#,
            MissingField,
            Some("release_rate_mg_per_h"),
        ),
        // amount_mg does not stand in for an infusion's rate.
        (
            "dose",
            r#"{"id":"m","time":"T","route":"iv_infusion","amount_mg":20,"duration_min":60}"#,
            MissingField,
            Some("rate_mg_per_h"),
        ),
        (
            "device-event",
            r#"{"id":"e","time":"T"}"#,
            MissingField,
            Some("kind"),
        ),
        (
            "device-event",
            r#"{"id":"e","time":"T","kind":"infusion_started"}"#,
            MissingField,
            Some("rate_mg_per_h"),
        ),
        (
            "device-event",
            r#"{"id":"e","time":"T","kind":"infusion_rate_changed","rate_ml_per_h":10}"#,
            MissingField,
            Some("concentration_mg_per_ml"),
        ),
        (
            "device-event",
            r#"{"id":"e","time":"T","kind":"bolus_delivered"}"#,
            MissingField,
            Some("amount_mg"),
        ),
        (
            "device-event",
            r#"{"id":"e","time":"T","kind":"alarm"}"#,
            MissingField,
            Some("code"),
        ),
        (
            "device-event",
            r#"{"id":"e","time":"T","kind":"alarm_cleared"}"#,
            MissingField,
            Some("code"),
        ),
        (
            "device-event",
            r#"{"id":"e","time":"T","kind":"patch_applied","release_rate_mg_per_h":1}"#,
            MissingField,
            Some("wear_h"),
        ),
        (
            "alert-command",
            r#"{"id":"c","time":"T","action":"pause","by":"rn-1"}"#,
            MissingField,
            Some("minutes"),
        ),
        (
            "alert-command",
            r#"{"id":"c","time":"T","action":"acknowledge"}"#,
            MissingField,
            Some("by"),
        ),
        // Wrong types; null is a wrong type, not an absent field.
        (
            "admit",
            r#"{"id":"a","time":"T","weight_kg":"72"}"#,
            InvalidValue,
            Some("weight_kg"),
        ),
        (
            "admit",
            r#"{"id":"a","time":"T","weight_kg":null}"#,
            InvalidValue,
            Some("weight_kg"),
        ),
        (
            "admit",
            r#"{"id":null,"time":"T","weight_kg":72}"#,
            InvalidValue,
            Some("id"),
        ),
        (
            "admit",
            r#"{"id":"a","time":"T","weight_kg":72,"comedications":"midazolam"}"#,
            InvalidValue,
            Some("comedications"),
        ),
        (
            "admit",
            r#"{"id":"a","time":"T","weight_kg":72,"targets":[100]}"#,
            InvalidValue,
            Some("targets"),
        ),
        (
            "discharge",
            r#"{"id":7,"time":"T"}"#,
            InvalidValue,
            Some("id"),
        ),
        (
            "discharge",
            r#"{"id":"d","time":1795773600000}"#,
            InvalidValue,
            Some("time"),
        ),
        (
            "device-event",
            r#"{"id":"e","time":"T","kind":"heartbeat","skin_contact":"yes"}"#,
            InvalidValue,
            Some("skin_contact"),
        ),
        (
            "device-event",
            r#"{"id":"e","time":"T","kind":7}"#,
            InvalidValue,
            Some("kind"),
        ),
        (
            "alert-command",
            r#"{"id":"c","time":"T","action":null,"by":"rn-1"}"#,
            InvalidValue,
            Some("action"),
        ),
        // Out of range.
        (
            "admit",
            r#"{"id":"a","time":"T","weight_kg":400.01}"#,
            InvalidValue,
            Some("weight_kg"),
        ),
        (
            "admit",
            r#"{"id":"a","time":"T","weight_kg":0.49}"#,
            InvalidValue,
            Some("weight_kg"),
        ),
        (
            "admit",
            r#"{"id":"a","time":"T","weight_kg":72,"age_years":131}"#,
            InvalidValue,
            Some("age_years"),
        ),
        (
            "admit",
            r#"{"id":"a","time":"T","weight_kg":72,"targets":{"ceiling_ng_per_ml":0}}"#,
            InvalidValue,
            Some("targets.ceiling_ng_per_ml"),
        ),
        (
            "dose",
            r#"{"id":"m","time":"T","route":"oral","amount_mg":0}"#,
            InvalidValue,
            Some("amount_mg"),
        ),
        (
            "dose",
            r#"{"id":"m","time":"T","route":"oral","amount_mg":-5}"#,
            InvalidValue,
            Some("amount_mg"),
        ),
        (
            "dose",
            r#"{"id":"m","time":"T","route":"transdermal","release_rate_mg_per_h":1,"wear_h":337}"#,
            InvalidValue,
            Some("wear_h"),
        ),
        (
            "device-event",
            r#"{"id":"e","time":"T","kind":"infusion_started","rate_mg_per_h":10001}"#,
            InvalidValue,
            Some("rate_mg_per_h"),
        ),
        (
            "device-event",
            r#"{"id":"e","time":"T","kind":"infusion_started","rate_ml_per_h":10,"concentration_mg_per_ml":0}"#,
            InvalidValue,
            Some("concentration_mg_per_ml"),
        ),
        (
            "device-event",
            r#"{"id":"e","time":"T","kind":"heartbeat","skin_temp_c":51}"#,
            InvalidValue,
            Some("skin_temp_c"),
        ),
        (
            "alert-command",
            r#"{"id":"c","time":"T","action":"pause","minutes":0,"by":"rn-1"}"#,
            InvalidValue,
            Some("minutes"),
        ),
        (
            "alert-command",
            r#"{"id":"c","time":"T","action":"pause","minutes":1441,"by":"rn-1"}"#,
            InvalidValue,
            Some("minutes"),
        ),
        // Names outside their closed sets.
        (
            "admit",
            r#"{"id":"a","time":"T","weight_kg":72,"sex":"f"}"#,
            InvalidValue,
            Some("sex"),
        ),
        (
            "admit",
            r#"{"id":"a","time":"T","weight_kg":72,"setting":"icu"}"#,
            InvalidValue,
            Some("setting"),
        ),
        (
            "dose",
            r#"{"id":"m","time":"T","route":"iv","amount_mg":5}"#,
            InvalidValue,
            Some("route"),
        ),
        (
            "device-event",
            r#"{"id":"e","time":"T","kind":"teleport"}"#,
            UnknownKind,
            Some("kind"),
        ),
        (
            "device-event",
            r#"{"id":"e","time":"T","kind":"infusion_stopped","reason":"bored"}"#,
            InvalidValue,
            Some("reason"),
        ),
        (
            "device-event",
            r#"{"id":"e","time":"T","kind":"bolus_delivered","amount_mg":5,"source":"patient"}"#,
            InvalidValue,
            Some("source"),
        ),
        (
            "device-event",
            r#"{"id":"e","time":"T","kind":"alarm","code":"fire"}"#,
            InvalidValue,
            Some("code"),
        ),
        (
            "alert-command",
            r#"{"id":"c","time":"T","action":"snooze","by":"rn-1"}"#,
            UnknownKind,
            Some("action"),
        ),
        // Identifiers, names and text.
        (
            "discharge",
            r#"{"id":"","time":"T"}"#,
            InvalidValue,
            Some("id"),
        ),
        (
            "discharge",
            r#"{"id":"d\u0007","time":"T"}"#,
            InvalidValue,
            Some("id"),
        ),
        (
            "discharge",
            r#"{"id":"d\u0085","time":"T"}"#,
            InvalidValue,
            Some("id"),
        ),
        (
            "admit",
            r#"{"id":"a","time":"T","weight_kg":72,"model":"ketamine/domino"}"#,
            InvalidValue,
            Some("model"),
        ),
        (
            "admit",
            r#"{"id":"a","time":"T","weight_kg":72,"comedications":["Midazolam"]}"#,
            InvalidValue,
            Some("comedications[0]"),
        ),
        (
            "admit",
            r#"{"id":"a","time":"T","weight_kg":72,"comedications":[""]}"#,
            InvalidValue,
            Some("comedications[0]"),
        ),
        (
            "device-event",
            r#"{"id":"e","time":"T","kind":"heartbeat","patient_id":"P 1001"}"#,
            InvalidValue,
            Some("patient_id"),
        ),
        (
            "alert-command",
            r#"{"id":"c","time":"T","action":"acknowledge","by":""}"#,
            InvalidValue,
            Some("by"),
        ),
        // Times without an offset, or not a time.
        (
            "discharge",
            r#"{"id":"d","time":"2026-11-27T10:00:00"}"#,
            InvalidValue,
            Some("time"),
        ),
        (
            "discharge",
            r#"{"id":"d","time":"2026-11-27"}"#,
            InvalidValue,
            Some("time"),
        ),
        (
            "discharge",
            r#"{"id":"d","time":"2026-02-30T10:00:00Z"}"#,
            InvalidValue,
            Some("time"),
        ),
    ]
}

#[test]
fn bad_payloads_are_rejected_by_schema_and_parser() {
    for (name, payload, code, field) in bad_payloads() {
        let payload = payload.replace("\"T\"", &format!("\"{T}\""));
        let instance: Value = serde_json::from_str(&payload).unwrap();
        let v = validator(name);
        assert!(
            !v.is_valid(&instance),
            "{name}.schema.json accepts the bad payload {payload}"
        );
        let topic = topic_of(name).unwrap();
        match parse(topic, &payload) {
            Ok(input) => panic!("dosetrack accepts the bad payload {payload}: {input:?}"),
            Err(r) => assert_eq!(
                (r.code, r.field.as_deref()),
                (code, field),
                "{name} {payload}: {r}"
            ),
        }
    }
}

/// Long strings and arrays, built rather than written out.
#[test]
fn length_limits_agree() {
    let id128 = format!("{}é", "i ".repeat(63) + "i");
    let id129 = format!("{id128}x");
    let name64 = "P".repeat(64);
    let name65 = "P".repeat(65);
    let text1024 = "x".repeat(1024);
    let text1025 = "x".repeat(1025);
    let meds = |n: usize| json!(vec!["midazolam"; n]);
    let cases: Vec<(&str, Value, bool)> = vec![
        ("discharge", json!({"id": id128, "time": T}), true),
        ("discharge", json!({"id": id129, "time": T}), false),
        (
            "alert-command",
            json!({"id": "c", "time": T, "action": "acknowledge", "by": id128}),
            true,
        ),
        (
            "alert-command",
            json!({"id": "c", "time": T, "action": "acknowledge", "by": id129}),
            false,
        ),
        (
            "device-event",
            json!({"id": "e", "time": T, "kind": "heartbeat", "patient_id": name64}),
            true,
        ),
        (
            "device-event",
            json!({"id": "e", "time": T, "kind": "heartbeat", "patient_id": name65}),
            false,
        ),
        (
            "admit",
            json!({"id": "a", "time": T, "weight_kg": 72, "model": name65}),
            false,
        ),
        (
            "device-event",
            json!({"id": "e", "time": T, "kind": "alarm", "code": "other", "message": text1024}),
            true,
        ),
        (
            "device-event",
            json!({"id": "e", "time": T, "kind": "alarm", "code": "other", "message": ""}),
            true,
        ),
        (
            "device-event",
            json!({"id": "e", "time": T, "kind": "alarm", "code": "other", "message": text1025}),
            false,
        ),
        (
            "device-event",
            json!({"id": "e", "time": T, "kind": "patch_applied", "release_rate_mg_per_h": 1, "wear_h": 24, "site": text1025}),
            false,
        ),
        (
            "admit",
            json!({"id": "a", "time": T, "weight_kg": 72, "comedications": meds(64)}),
            true,
        ),
        (
            "admit",
            json!({"id": "a", "time": T, "weight_kg": 72, "comedications": meds(65)}),
            false,
        ),
        (
            "admit",
            json!({"id": "a", "time": T, "weight_kg": 72, "comedications": ["st john's wort", "drug-2_b"]}),
            true,
        ),
    ];
    for (name, instance, ok) in cases {
        let by_schema = validator(name).is_valid(&instance);
        let by_parser = parse(topic_of(name).unwrap(), &instance.to_string());
        assert_eq!(by_schema, ok, "{name} schema on {instance}");
        assert_eq!(
            by_parser.is_ok(),
            ok,
            "{name} parser on {instance}: {by_parser:?}"
        );
    }
}

/// Fields that do not belong to the route or kind are ignored by dosetrack,
/// and so by the schema; unknown fields too.
#[test]
fn fields_of_other_kinds_and_unknown_fields_are_ignored_by_both() {
    let cases = [
        (
            "dose",
            json!({"id": "m", "time": T, "route": "oral", "amount_mg": 5, "rate_mg_per_h": -1, "wear_h": "x"}),
        ),
        (
            "dose",
            json!({"id": "m", "time": T, "route": "iv_infusion", "rate_mg_per_h": 20, "duration_min": 60, "amount_mg": -1}),
        ),
        (
            "device-event",
            json!({"id": "e", "time": T, "kind": "heartbeat", "code": "fire", "amount_mg": -1}),
        ),
        (
            "device-event",
            json!({"id": "e", "time": T, "kind": "patch_removed", "release_rate_mg_per_h": "x"}),
        ),
        (
            "alert-command",
            json!({"id": "c", "time": T, "action": "acknowledge", "by": "rn-1", "minutes": -1}),
        ),
        (
            "admit",
            json!({"id": "a", "time": T, "weight_kg": 72, "ward": "7B", "targets": {"other_ng_per_ml": -1}}),
        ),
        ("discharge", json!({"id": "d", "time": T, "reason": null})),
    ];
    for (name, instance) in cases {
        let errors = schema_errors(&validator(name), &instance);
        assert!(errors.is_empty(), "{name} schema on {instance}: {errors:?}");
        let parsed = parse(topic_of(name).unwrap(), &instance.to_string());
        assert!(parsed.is_ok(), "{name} parser on {instance}: {parsed:?}");
    }
}

/// `format: date-time` and dosetrack's RFC 3339 parser agree on ordinary
/// times. (Two documented edge cases differ, the schema being the stricter:
/// dosetrack also takes a space for `T`, and a leap second `:60` at any
/// minute.)
#[test]
fn time_format_agrees_with_the_parser() {
    let v = validator("discharge");
    for (time, ok) in [
        ("2026-11-27T10:00:00Z", true),
        ("2026-11-27T11:00:00.250+01:00", true),
        ("2026-11-27T10:00:00-05:30", true),
        ("2026-11-27t10:00:00z", true),
        ("2026-11-27T10:00:00.123456789Z", true),
        ("2026-12-31T23:59:60Z", true),
        ("2026-11-27T10:00:00", false),
        ("2026-11-27T10:00:00+0100", false),
        ("2026-11-27T24:00:00Z", false),
        ("2026-11-27T10:00Z", false),
        ("2026-11-27T10:00:00,5Z", false),
        ("27/11/2026 10:00", false),
    ] {
        let instance = json!({"id": "d", "time": time});
        assert_eq!(v.is_valid(&instance), ok, "schema on {time}");
        assert_eq!(parse_rfc3339_ms(time).is_ok(), ok, "parser on {time}");
    }
}

// ---------------------------------------------------------------------------
// The schemas' numbers and names are the constants of crates/dosetrack-core/src/contract/.
// ---------------------------------------------------------------------------

/// Every `properties.{key}` schema anywhere in `v`, outside `examples` and
/// `if` conditions.
fn properties_named<'a>(v: &'a Value, key: &str, out: &mut Vec<&'a Value>) {
    match v {
        Value::Object(m) => {
            if let Some(p) = m.get("properties").and_then(|p| p.get(key)) {
                out.push(p);
            }
            for (k, child) in m {
                // Examples are data; `if` holds the discriminator tests.
                if k != "examples" && k != "if" {
                    properties_named(child, key, out);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                properties_named(item, key, out);
            }
        }
        _ => {}
    }
}

fn input_properties(key: &str) -> Vec<Value> {
    let schemas: Vec<Value> = SCHEMAS
        .iter()
        .filter(|(_, topic)| topic.is_some())
        .map(|(name, _)| load(name))
        .collect();
    let mut out = Vec::new();
    for s in &schemas {
        let mut found = Vec::new();
        properties_named(s, key, &mut found);
        out.extend(found.into_iter().cloned());
    }
    out
}

fn enum_of(v: &Value) -> Vec<String> {
    v["enum"]
        .as_array()
        .unwrap_or_else(|| panic!("no enum in {v}"))
        .iter()
        .map(|x| x.as_str().unwrap().to_owned())
        .collect()
}

fn names<T: std::fmt::Display>(all: &[T]) -> Vec<String> {
    all.iter().map(ToString::to_string).collect()
}

#[test]
fn numeric_ranges_are_the_contract_module_constants() {
    for (path, range) in contract::RANGES {
        let key = path.rsplit('.').next().unwrap();
        let found = input_properties(key);
        assert!(!found.is_empty(), "no schema property for {path}");
        for p in found {
            assert_eq!(p["type"], "number", "{path}: {p}");
            let (lower, other) = if range.min_exclusive {
                ("exclusiveMinimum", "minimum")
            } else {
                ("minimum", "exclusiveMinimum")
            };
            assert_eq!(p[lower].as_f64(), Some(range.min), "{path} {lower}: {p}");
            assert!(p.get(other).is_none(), "{path} has {other}: {p}");
            assert_eq!(
                p["maximum"].as_f64(),
                Some(range.max),
                "{path} maximum: {p}"
            );
        }
    }
}

#[test]
fn lengths_and_patterns_are_the_contract_module_constants() {
    let printable = "^[^\\x00-\\x1F\\x7F-\\x9F]*$";
    let name = format!("^[A-Za-z0-9._-]{{1,{}}}$", contract::NAME_MAX_CHARS);
    for schema in [
        "admit",
        "discharge",
        "dose",
        "device-event",
        "alert-command",
    ] {
        let s = load(schema);
        let id = &s["$defs"]["id"];
        assert_eq!(id["minLength"], 1, "{schema}");
        assert_eq!(id["maxLength"], contract::ID_MAX_CHARS, "{schema}");
        assert_eq!(id["pattern"], printable, "{schema}");
    }
    for (key, max) in [
        ("by", contract::BY_MAX_CHARS),
        ("message", contract::TEXT_MAX_CHARS),
        ("site", contract::TEXT_MAX_CHARS),
    ] {
        for p in input_properties(key) {
            assert_eq!(p["maxLength"], max, "{key}");
        }
    }
    assert_eq!(input_properties("by")[0]["pattern"], printable);
    for schema in ["admit", "device-event"] {
        assert_eq!(load(schema)["$defs"]["name"]["pattern"], name.as_str());
    }
    let meds = &input_properties("comedications")[0];
    assert_eq!(meds["maxItems"], contract::COMEDICATIONS_MAX_ENTRIES);
    assert_eq!(
        meds["items"]["pattern"],
        format!("^[a-z0-9 _'-]{{1,{}}}$", contract::COMEDICATION_MAX_CHARS)
    );
}

#[test]
fn enums_are_the_contract_module_names() {
    let one = |key: &str| {
        let found = input_properties(key);
        assert!(!found.is_empty(), "no schema property {key}");
        let first = enum_of(&found[0]);
        for p in &found {
            assert_eq!(enum_of(p), first, "{key}: schemas disagree");
        }
        first
    };
    assert_eq!(one("route"), names(&Route::ALL));
    assert_eq!(one("kind"), DeviceEventKind::KIND_NAMES.to_vec());
    assert_eq!(one("reason"), names(StopReason::ALL));
    assert_eq!(one("source"), names(BolusSource::ALL));
    assert_eq!(one("code"), names(AlarmCode::ALL));
    assert_eq!(one("action"), vec!["acknowledge", "pause"]);
    for sex in one("sex") {
        assert!(sex.parse::<Sex>().is_ok(), "{sex}");
    }
    assert_eq!(one("sex").len(), 2);
    let settings = one("setting");
    assert_eq!(
        settings,
        vec![Setting::Ward.as_str(), Setting::Monitored.as_str()]
    );
    let rejected = load("rejected");
    assert_eq!(
        enum_of(&rejected["properties"]["error"]["properties"]["code"]),
        names(ErrorCode::ALL)
    );
    let state = load("state");
    assert_eq!(
        enum_of(&state["$defs"]["active_input"]["properties"]["route"]),
        names(&Route::ALL)
    );
}

// ---------------------------------------------------------------------------
// Outputs: what dosetrack produces validates.
// ---------------------------------------------------------------------------

fn ms(text: &str) -> i64 {
    parse_rfc3339_ms(text).unwrap()
}

fn tracked(seq: i64, topic: &str, payload: Value) -> TrackedInput {
    let topic = contract::parse_topic(PREFIX, topic).unwrap();
    let input = contract::parse_payload(&topic, payload.to_string().as_bytes()).unwrap();
    TrackedInput { seq, topic, input }
}

fn state_at(inputs: Vec<TrackedInput>, now: &str) -> StateMessage {
    let formulary = Formulary::new(DrugFile::builtin().unwrap()).unwrap();
    let mut tracker = Tracker::new(Arc::new(formulary), TrackerConfig::default());
    for i in inputs {
        tracker.apply(i);
    }
    tracker.state("P-1001", ms(now)).unwrap()
}

fn assert_valid_state(state: &StateMessage) -> Value {
    let value = serde_json::to_value(state).unwrap();
    let errors = schema_errors(&validator("state"), &value);
    assert!(errors.is_empty(), "state {value} is invalid: {errors:?}");
    value
}

#[test]
fn states_the_tracker_produces_validate() {
    let patient = "dosetrack/v1/patients/P-1001";
    let admit = examples("admit")[0].clone();
    let admitted = || tracked(1, &format!("{patient}/admit"), admit.clone());

    // Admitted, nothing given: Ce is below the floor now.
    let s = state_at(vec![admitted()], "2026-11-27T08:30:00Z");
    let v = assert_valid_state(&s);
    assert_eq!(v["forecast"]["below_floor_at"], v["time"]);
    assert_eq!(v["forecast"]["above_ceiling_at"], Value::Null);

    // A running pump and a patch, then the pump goes quiet: stale.
    let inputs = vec![
        admitted(),
        tracked(
            2,
            "dosetrack/v1/devices/pump-7/events",
            json!({"id": "e-1", "time": "2026-11-27T08:00:00Z", "kind": "infusion_started", "patient_id": "P-1001", "rate_mg_per_h": 20}),
        ),
        tracked(
            3,
            "dosetrack/v1/devices/pump-7/events",
            json!({"id": "e-2", "time": "2026-11-27T08:05:00Z", "kind": "bolus_delivered", "amount_mg": 20}),
        ),
        tracked(
            4,
            "dosetrack/v1/devices/patch-2/events",
            json!({"id": "t-1", "time": "2026-11-27T08:00:00Z", "kind": "patch_applied", "patient_id": "P-1001", "release_rate_mg_per_h": 1.04, "wear_h": 24}),
        ),
        tracked(
            5,
            "dosetrack/v1/devices/patch-2/events",
            json!({"id": "t-2", "time": "2026-11-27T10:00:00Z", "kind": "heartbeat", "skin_contact": true}),
        ),
        tracked(
            6,
            &format!("{patient}/doses"),
            json!({"id": "mar-8", "time": "2026-11-27T09:30:00Z", "route": "iv_infusion", "rate_mg_per_h": 5, "duration_min": 120}),
        ),
    ];
    let s = state_at(inputs, "2026-11-27T10:00:00Z");
    let v = assert_valid_state(&s);
    assert!(s.stale);
    assert_eq!(s.stale_devices, vec!["pump-7".to_owned()]);
    assert_eq!(v["active_inputs"].as_array().unwrap().len(), 3);
    assert!(!s.warnings.is_empty(), "clarithromycin gives a warning");

    // Far above the ceiling: above_ceiling_at is now.
    let inputs = vec![
        admitted(),
        tracked(
            2,
            &format!("{patient}/doses"),
            json!({"id": "mar-1", "time": "2026-11-27T09:00:00Z", "route": "iv_bolus", "amount_mg": 500}),
        ),
    ];
    let s = state_at(inputs, "2026-11-27T09:10:00Z");
    let v = assert_valid_state(&s);
    assert_eq!(v["forecast"]["above_ceiling_at"], v["time"]);
}

/// Alert messages and active lists the engine actually produces validate,
/// for a patient (several rules at once) and for a device-level alert.
#[test]
fn alerts_the_engine_produces_validate() {
    use dosetrack::alerts::{AlertBook, AlertConfig, AlertEngine, Scope};
    let patient = "dosetrack/v1/patients/P-1001";
    let formulary = Formulary::new(DrugFile::builtin().unwrap()).unwrap();
    let mut tracker = Tracker::new(Arc::new(formulary), TrackerConfig::default());
    // The contract's admit (clarithromycin: interaction; midazolam: PD),
    // an IV bolus over the ward limit, a pump with an occlusion, and an
    // event from a device with no patient.
    tracker.apply(tracked(
        1,
        &format!("{patient}/admit"),
        examples("admit")[0].clone(),
    ));
    tracker.apply(tracked(
        2,
        &format!("{patient}/doses"),
        json!({"id": "d-1", "time": "2026-11-27T08:05:00Z", "route": "iv_bolus", "amount_mg": 40}),
    ));
    tracker.apply(tracked(
        3,
        "dosetrack/v1/devices/pump-7/events",
        json!({"id": "e-1", "time": "2026-11-27T08:06:00Z", "kind": "infusion_started",
               "patient_id": "P-1001", "rate_mg_per_h": 20}),
    ));
    tracker.apply(tracked(
        4,
        "dosetrack/v1/devices/pump-7/events",
        json!({"id": "e-2", "time": "2026-11-27T08:20:00Z", "kind": "alarm", "code": "occlusion"}),
    ));
    tracker.apply(tracked(
        5,
        "dosetrack/v1/devices/pump-9/events",
        json!({"id": "e-1", "time": "2026-11-27T08:20:00Z", "kind": "heartbeat"}),
    ));
    let mut engine = AlertEngine::new(AlertBook::new(AlertConfig::default()));
    let scopes = [
        Scope::Patient("P-1001".into()),
        Scope::Device("pump-9".into()),
    ]
    .into_iter()
    .collect();
    // Twice, 2 min apart: the device alert's 60 s condition delay passes.
    let mut w = engine.evaluate(&mut tracker, &scopes, ms("2026-11-27T08:21:00Z"));
    let w2 = engine.evaluate(&mut tracker, &scopes, ms("2026-11-27T08:23:00Z"));
    w.messages.extend(w2.messages);
    w.outbox.extend(w2.outbox);
    let rules: std::collections::BTreeSet<String> =
        w.messages.iter().map(|m| m.rule.to_string()).collect();
    for r in [
        "dose_limit",
        "device_fault",
        "interaction",
        "unassigned_input",
    ] {
        assert!(rules.contains(r), "{r} not raised: {rules:?}");
    }
    let alert = validator("alert");
    for m in &w.messages {
        let v = serde_json::to_value(m).unwrap();
        let errors = schema_errors(&alert, &v);
        assert!(errors.is_empty(), "alert {v} is invalid: {errors:?}");
    }
    let active = validator("alerts-active");
    // The engine names scopes; the daemon names the topics as it commits.
    let w = dosetrack::store::AlertCommit::new(w, &dosetrack::contract::Topics::new(PREFIX));
    let lists: Vec<_> = w.outbox.iter().filter(|o| o.retained).collect();
    assert!(lists
        .iter()
        .any(|o| o.topic == "dosetrack/v1/patients/P-1001/alerts/active"));
    assert!(lists
        .iter()
        .any(|o| o.topic == "dosetrack/v1/devices/pump-9/alerts/active"));
    for o in lists {
        let v: Value = serde_json::from_str(&o.payload).unwrap();
        let errors = schema_errors(&active, &v);
        assert!(errors.is_empty(), "{} {v} is invalid: {errors:?}", o.topic);
    }
}

/// The output schemas are not vacuous: broken messages fail them, also
/// through the reference from `alerts-active` to `alert`.
#[test]
fn broken_outputs_are_invalid() {
    let alert = examples("alert")[0].clone();
    let mut no_phase = alert.clone();
    no_phase.as_object_mut().unwrap().remove("phase");
    let mut bad_priority = alert.clone();
    bad_priority["priority"] = json!("urgent");
    let mut state = examples("state")[0].clone();
    state.as_object_mut().unwrap().remove("stale");
    let mut bad_forecast = examples("state")[0].clone();
    bad_forecast["forecast"]["below_floor_at"] = json!("11:42");
    let mut bad_code = examples("rejected")[0].clone();
    bad_code["error"]["code"] = json!("too_old");
    for (name, instance) in [
        ("alert", no_phase.clone()),
        ("alerts-active", json!([alert, no_phase])),
        ("alerts-active", json!([bad_priority])),
        ("alerts-active", json!({"alerts": []})),
        ("state", state),
        ("state", bad_forecast),
        ("rejected", bad_code),
        ("status", json!({"state": "online"})),
        ("status", json!({"state": "busy"})),
    ] {
        assert!(
            !validator(name).is_valid(&instance),
            "{name}.schema.json accepts {instance}"
        );
    }
}

#[test]
fn rejection_notices_validate() {
    let v = validator("rejected");
    let mut cases: Vec<(String, String)> = bad_payloads()
        .into_iter()
        .map(|(name, payload, _, _)| (topic_of(name).unwrap().to_owned(), payload.to_owned()))
        .collect();
    cases.push((
        "dosetrack/v1/patients/P-1001/doses".into(),
        "{\"id\": ".into(),
    ));
    cases.push(("dosetrack/v1/patients/P-1001/doses".into(), "[1]".into()));
    cases.push(("dosetrack/v1/patients/P 1/doses".into(), "{}".into()));
    cases.push(("dosetrack/v1/patients/P-1001/state".into(), "{}".into()));
    for (topic, payload) in cases {
        let r = parse(&topic, &payload).unwrap_err();
        // As the daemon publishes it: `field` omitted when there is none.
        let mut error = json!({"code": r.code, "message": r.message});
        if let Some(f) = &r.field {
            error["field"] = json!(f);
        }
        let notice = json!({
            "topic": topic,
            "received_at": "2026-11-27T10:00:00.250Z",
            "error": error,
            "payload_excerpt": payload,
        });
        let errors = schema_errors(&v, &notice);
        assert!(errors.is_empty(), "{notice}: {errors:?}");
    }
}

#[test]
fn the_contract_rejection_example_is_what_the_parser_says() {
    let example = &examples("rejected")[0];
    let r = parse(
        example["topic"].as_str().unwrap(),
        r#"{"id":"e-9","kind":"infusion_started","time":"2026-11-27T10:00:00Z","rate_mg_per_h":10001}"#,
    )
    .unwrap_err();
    assert_eq!(json!(r.code), example["error"]["code"]);
    assert_eq!(json!(r.field), example["error"]["field"]);
    assert_eq!(json!(r.message), example["error"]["message"]);
}

// ---------------------------------------------------------------------------
// The AsyncAPI document.
// ---------------------------------------------------------------------------

#[test]
fn asyncapi_references_every_schema_and_its_topics_parse() {
    let path = docs().join("asyncapi.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("asyncapi: 3.0.0") || text.contains("\nasyncapi: 3.0.0"));
    for (name, _) in SCHEMAS {
        assert!(
            text.contains(&format!("./schemas/{name}.schema.json")),
            "asyncapi.yaml does not reference {name}.schema.json"
        );
    }
    let addresses: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("address: "))
        .map(|a| a.trim_matches(|c| c == '\'' || c == '"').to_owned())
        .collect();
    // The contract's ten topics and dosetrack's two device-level alert
    // topics.
    assert_eq!(
        addresses.len(),
        12,
        "one channel per contract topic: {addresses:?}"
    );
    for address in addresses {
        let topic = address
            .replace("{prefix}", PREFIX)
            .replace("{patient_id}", "P-1001")
            .replace("{device_id}", "pump-7")
            .replace("{alert_id}", "al-1");
        assert!(!topic.contains('{'), "unknown parameter in {address}");
        let is_input = ["/admit", "/discharge", "/doses", "/events", "/commands"]
            .iter()
            .any(|end| topic.ends_with(end));
        match contract::parse_topic(PREFIX, &topic) {
            Ok(_) => assert!(is_input, "{address} parses as an input topic"),
            Err(r) => {
                assert!(!is_input, "{address}: {r}");
                assert_eq!(r.code, ErrorCode::BadTopic);
                assert!(r.message.contains("output topic"), "{address}: {r}");
            }
        }
    }
}
