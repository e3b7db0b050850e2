//! Tests of every numeric range, table-driven.

use super::*;

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
