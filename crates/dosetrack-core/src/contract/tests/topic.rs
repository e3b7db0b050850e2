//! Tests of input topic parsing and the topic builder.

use super::*;

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
        ("dosetrack/v1/patients/P-1", None),
        ("dosetrack/v1/patients/P-1/admit/x", None),
        ("dosetrack/v1/devices/pump-7", None),
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

/// A leaf of the input space that is neither an input nor an output:
/// `unknown_topic` (dosetrack's addition), whatever the identifier.
#[test]
fn unknown_leaves_are_unknown_topic() {
    for topic in [
        "dosetrack/v1/patients/P-1/vitals",
        "dosetrack/v1/patients/P-1/dose",
        "dosetrack/v1/patients/P 1/dose",
        "dosetrack/v1/devices/pump-7/status",
        "dosetrack/v1/devices/D1/event",
        "dosetrack/v1/alerts/al-1/ack",
    ] {
        let e = parse_topic(PREFIX, topic).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownTopic, "{topic}");
        assert_eq!(e.field, None, "{topic}");
        assert!(e.message.contains("unknown topic"), "{topic}: {e}");
    }
}

/// The wide input filters match every leaf of the input space; of what they
/// match, only the daemon's own outputs are ignored.
#[test]
fn own_outputs_are_recognised() {
    let t = Topics::new("site/w3");
    for output in [
        t.state("P-1"),
        t.alerts(AlertScope::Patient("P-1")),
        t.alerts(AlertScope::Device("d-1")),
        t.alerts_active(AlertScope::Patient("P-1")),
        t.alerts_active(AlertScope::Device("d-1")),
        t.rejected(),
        t.status(),
    ] {
        assert!(t.is_own_output(&output), "{output}");
    }
    for not_output in [
        "site/w3/v1/patients/P-1/doses",
        "site/w3/v1/patients/P-1/dose",
        "site/w3/v1/devices/d-1/events",
        "site/w3/v1/alerts/a-1/commands",
        "site/w3/v1/alerts/a-1/alerts",
        "other/v1/patients/P-1/state",
        "site/w3/v2/status",
    ] {
        assert!(!t.is_own_output(not_output), "{not_output}");
    }
    let filters = t.input_filters();
    for topic in [
        "site/w3/v1/patients/P-1/dose",
        "site/w3/v1/devices/D1/event",
        "site/w3/v1/alerts/a-1/ack",
    ] {
        assert!(filters.iter().any(|f| matches_filter(f, topic)), "{topic}");
    }
}

#[test]
fn the_source_of_a_topic() {
    assert_eq!(topic_source("dt/v1/patients/P-1/dose"), "patients/P-1");
    assert_eq!(topic_source("a/b/v1/devices/D1/events"), "devices/D1");
    assert_eq!(topic_source("dt/v1/alerts/a-1/commands"), "alerts/a-1");
    assert_eq!(
        topic_source("dt/v1/patients//doses"),
        "dt/v1/patients//doses"
    );
    assert_eq!(topic_source("dt/v1/things/x/y"), "dt/v1/things/x/y");
    assert_eq!(
        topic_source("dt/v2/patients/P-1/doses"),
        "dt/v2/patients/P-1/doses"
    );
    assert_eq!(topic_source("dt/v1/patients/P-1"), "dt/v1/patients/P-1");
}

/// MQTT filter matching for `+` only (what the input filters use).
fn matches_filter(filter: &str, topic: &str) -> bool {
    let f: Vec<&str> = filter.split('/').collect();
    let t: Vec<&str> = topic.split('/').collect();
    f.len() == t.len() && f.iter().zip(&t).all(|(f, t)| *f == "+" || f == t)
}

/// Every topic the builder names, spelled out: the wire names of the
/// contract, byte for byte.
#[test]
fn the_builder_names_every_contract_topic() {
    let t = Topics::new("dt");
    assert_eq!(t.prefix(), "dt");
    assert_eq!(t.root(), "dt/v1/");
    assert_eq!(t.everything(), "dt/v1/#");
    assert_eq!(t.admit("P-1"), "dt/v1/patients/P-1/admit");
    assert_eq!(t.discharge("P-1"), "dt/v1/patients/P-1/discharge");
    assert_eq!(t.doses("P-1"), "dt/v1/patients/P-1/doses");
    assert_eq!(t.device_events("pump-7"), "dt/v1/devices/pump-7/events");
    assert_eq!(t.alert_commands("al-1"), "dt/v1/alerts/al-1/commands");
    assert_eq!(t.state("P-1"), "dt/v1/patients/P-1/state");
    assert_eq!(
        t.alerts(AlertScope::Patient("P-1")),
        "dt/v1/patients/P-1/alerts"
    );
    assert_eq!(
        t.alerts(AlertScope::Device("pump-7")),
        "dt/v1/devices/pump-7/alerts"
    );
    assert_eq!(
        t.alerts_active(AlertScope::Patient("P-1")),
        "dt/v1/patients/P-1/alerts/active"
    );
    assert_eq!(
        t.alerts_active(AlertScope::Device("pump-7")),
        "dt/v1/devices/pump-7/alerts/active"
    );
    assert_eq!(t.rejected(), "dt/v1/rejected");
    assert_eq!(t.status(), "dt/v1/status");
    assert_eq!(
        t.input_filters(),
        [
            "dt/v1/patients/+/+",
            "dt/v1/devices/+/+",
            "dt/v1/alerts/+/+",
        ]
    );
    // A prefix with levels of its own.
    assert_eq!(
        Topics::new("site/ward-3").state("P-1"),
        "site/ward-3/v1/patients/P-1/state"
    );
}

/// What the builder names as an input parses back to the same input, and
/// its outputs are refused as inputs.
#[test]
fn built_topics_parse_back() {
    let t = Topics::new(PREFIX);
    for topic in [
        patient("admit"),
        patient("discharge"),
        patient("doses"),
        device(),
        alert(),
    ] {
        assert_eq!(t.parse_input(&t.input(&topic)), Ok(topic.clone()));
        assert_eq!(prefix_of(&t.input(&topic)), Some(PREFIX));
    }
    for output in [
        t.state("P-1"),
        t.alerts(AlertScope::Patient("P-1")),
        t.alerts_active(AlertScope::Device("d-1")),
        t.rejected(),
        t.status(),
    ] {
        let e = t.parse_input(&output).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadTopic, "{output}");
    }
    assert_eq!(prefix_of("a/b/v1/status"), Some("a/b"));
    assert_eq!(prefix_of("dosetrack/v2/status"), None);
}
