//! Tests of device event payloads and pump rate forms.

use super::*;

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
    let stopped =
        format!(r#"{{"id": "e", "time": "{T0}", "kind": "infusion_stopped", "reason": "alarm"}}"#);
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
    let cleared =
        format!(r#"{{"id": "e", "time": "{T0}", "kind": "alarm_cleared", "code": "air_in_line"}}"#);
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
fn zero_rate_is_allowed_and_negative_zero_normalised() {
    let payload = with_raw(STARTED, "rate_mg_per_h", Some("-0.0"));
    match event(&payload).kind {
        DeviceEventKind::InfusionStarted(r) => {
            assert_eq!(r.rate_mg_per_h.to_bits(), 0.0_f64.to_bits());
        }
        other => panic!("{other:?}"),
    }
}

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
