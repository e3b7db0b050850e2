//! Tests of payload framing, ids, times, the clock checks and non-finite numbers.

use super::*;

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
    use super::*;
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
