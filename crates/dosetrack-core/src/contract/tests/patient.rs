//! Tests of admit, discharge and dose payloads.

use super::*;

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
            indication: None,
            cyp2b6_genotype: None,
        }
    );
}

#[test]
fn admit_names_an_indication_and_a_genotype() {
    let Input::Admit(a) = accept(
        &patient("admit"),
        r#"{"id": "a", "time": "2026-11-27T10:00:00Z", "weight_kg": 70,
            "indication": "chronic_neuropathic", "cyp2b6_genotype": "*1/*6"}"#,
    ) else {
        panic!("not an admit");
    };
    assert_eq!(a.indication.as_deref(), Some("chronic_neuropathic"));
    assert_eq!(a.cyp2b6_genotype.as_deref(), Some("*1/*6"));
    for (field, bad) in [
        ("indication", "\"two words\""),
        ("indication", "7"),
        ("cyp2b6_genotype", "\"*1/*6; drop\""),
        ("cyp2b6_genotype", "\"\""),
    ] {
        let payload = format!(
            r#"{{"id": "a", "time": "2026-11-27T10:00:00Z", "weight_kg": 70, "{field}": {bad}}}"#
        );
        let r = reject(&patient("admit"), payload.as_bytes());
        assert_eq!(r.code, ErrorCode::InvalidValue, "{field} = {bad}");
        assert_eq!(r.field.as_deref(), Some(field), "{field} = {bad}");
    }
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
