//! The drug file's tests: the shipped values, the parser's error reports
//! and one negative test per validation rule.

use super::*;

// ---- helpers (no unwrap/expect: the crate lints them) -----------------

fn shipped() -> DrugFile {
    match DrugFile::builtin() {
        Ok(d) => d,
        Err(e) => panic!("shipped drug file must load: {e}"),
    }
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs().max(1e-12)
}

#[track_caller]
fn assert_close(actual: f64, expected: f64, rel: f64) {
    assert!(
        close(actual, expected, rel),
        "expected {expected}, got {actual} (relative tolerance {rel})"
    );
}

/// Replace a pattern that must occur exactly once, so a mutation can
/// never silently miss.
#[track_caller]
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "pattern must occur exactly once: {from:?}"
    );
    text.replacen(from, to, 1)
}

/// Remove every table whose header starts with `header_prefix` (up to the
/// next header or comment line).
#[track_caller]
fn remove_tables(text: &str, header_prefix: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    let mut removed = 0;
    for line in text.lines() {
        if line.starts_with('[') || line.starts_with('#') {
            skipping = line.starts_with(header_prefix);
            if skipping {
                removed += 1;
            }
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(removed > 0, "no table starts with {header_prefix:?}");
    out
}

/// Load `text`, checking that the one-parse way and the long way agree:
/// the same file, or the same error word for word (every test here that
/// loads a text checks it).
#[track_caller]
fn parse(text: &str) -> Result<DrugFile, DrugFileError> {
    let path = Path::new("test/ketamine.toml");
    let got = DrugFile::from_toml_str(text, path);
    let long_way = DrugFile::from_toml_str_in_steps(text, path);
    match (&got, &long_way) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!("the two ways disagree: {got:?} against {long_way:?}"),
    }
    got
}

#[track_caller]
fn expect_invalid(text: &str, key: &str, fragment: &str) {
    match parse(text) {
        Err(DrugFileError::Invalid {
            key: got, message, ..
        }) => {
            assert_eq!(got, key, "wrong key; message: {message}");
            assert!(
                message.contains(fragment),
                "message {message:?} should contain {fragment:?}"
            );
        }
        other => panic!("expected Invalid at {key}, got {other:?}"),
    }
}

fn sourced_value(s: &Option<Sourced<f64>>) -> Option<f64> {
    s.as_ref().map(|s| s.value)
}

// ---- the shipped file ---------------------------------------------------

// The shipped file read from disk and the I/O error: `src/drug_file.rs`
// (reading files is the shell's).

#[test]
fn shipped_models_have_the_decided_values() {
    let d = shipped();
    let keys: Vec<&str> = d.models.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "clements250",
            "domino",
            "herd",
            "hijazi",
            "hornik",
            "kamp2020"
        ]
    );
    for (key, m) in &d.models {
        assert_eq!(&m.key, key);
    }

    // Domino: micro, 3 compartments, the analgesic ke0 0.0587 (Olofsen 2012)
    // flagged as an assumption.
    let m = &d.models["domino"];
    assert_eq!(m.compartments, 3);
    match &m.disposition {
        Disposition::Micro {
            v1_l_per_kg,
            k10_per_min,
            k12_per_min,
            k21_per_min,
            k13_per_min,
            k31_per_min,
        } => {
            assert_eq!(v1_l_per_kg.value, 0.063);
            assert_eq!(k10_per_min.value, 0.438);
            assert_eq!(k12_per_min.value, 0.592);
            assert_eq!(k21_per_min.value, 0.247);
            assert_eq!(sourced_value(k13_per_min), Some(0.590));
            assert_eq!(sourced_value(k31_per_min), Some(0.0146));
            assert!(!k10_per_min.assumption);
            assert!(k10_per_min.source.contains("stanpumpR"));
        }
        other => panic!("domino should be micro: {other:?}"),
    }
    match &m.effect_site {
        EffectSite::Ke0 { ke0_per_min } => {
            assert_eq!(ke0_per_min.value, 0.0587);
            assert!(ke0_per_min.assumption);
            assert!(ke0_per_min.source.contains("Olofsen"));
        }
        other => panic!("{other:?}"),
    }
    let age = m.validity.age_years.as_ref();
    assert_eq!(age.and_then(|b| b.min), Some(18.0));
    assert_eq!(age.and_then(|b| b.max), None);
    assert_eq!(age.map(|b| b.assumption), Some(true));
    assert!(m.route_overrides.is_empty());

    // Clements250 and Hijazi: micro, 2 compartments.
    for (key, v1, k10, k12, k21, ke0) in [
        ("clements250", 1.7522, 0.0109, 0.0186, 0.0137, 0.0587),
        ("hijazi", 1.08, 0.0333, 0.0088, 0.0030, 0.0587),
    ] {
        let m = &d.models[key];
        assert_eq!(m.compartments, 2, "{key}");
        match &m.disposition {
            Disposition::Micro {
                v1_l_per_kg,
                k10_per_min,
                k12_per_min,
                k21_per_min,
                k13_per_min,
                k31_per_min,
            } => {
                assert_eq!(v1_l_per_kg.value, v1, "{key}");
                assert_eq!(k10_per_min.value, k10, "{key}");
                assert_eq!(k12_per_min.value, k12, "{key}");
                assert_eq!(k21_per_min.value, k21, "{key}");
                assert!(k13_per_min.is_none() && k31_per_min.is_none(), "{key}");
            }
            other => panic!("{key} should be micro: {other:?}"),
        }
        match &m.effect_site {
            EffectSite::Ke0 { ke0_per_min } => {
                assert_eq!(ke0_per_min.value, ke0, "{key}");
                assert!(ke0_per_min.assumption, "{key}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            m.validity.age_years.as_ref().and_then(|b| b.min),
            Some(18.0),
            "{key}"
        );
    }

    // Clearance-form models: (key, cpt, V1, V2, V3, CL, Q2, Q3, exponents assumed?)
    let expected = [
        (
            "kamp2020",
            3,
            25.0,
            Some(56.0),
            Some(157.0),
            84.0,
            Some(161.0),
            Some(79.0),
            true,
        ),
        (
            "herd",
            2,
            38.7,
            Some(102.0),
            None,
            90.0,
            Some(215.0),
            None,
            false,
        ),
        (
            "hornik",
            2,
            32.8,
            Some(152.0),
            None,
            38.9,
            Some(54.9),
            None,
            false,
        ),
    ];
    for (key, cpt, v1, v2, v3, cl, q2, q3, exp_assumed) in expected {
        let m = &d.models[key];
        assert_eq!(m.compartments, cpt, "{key}");
        match &m.disposition {
            Disposition::Clearance {
                reference_weight_kg,
                v1_l,
                v2_l,
                v3_l,
                cl_l_per_h,
                q2_l_per_h,
                q3_l_per_h,
                volume_exponent,
                clearance_exponent,
            } => {
                assert_eq!(*reference_weight_kg, 70.0, "{key}");
                assert_eq!(v1_l.value, v1, "{key}");
                assert_eq!(sourced_value(v2_l), v2, "{key}");
                assert_eq!(sourced_value(v3_l), v3, "{key}");
                assert_eq!(cl_l_per_h.value, cl, "{key}");
                assert_eq!(sourced_value(q2_l_per_h), q2, "{key}");
                assert_eq!(sourced_value(q3_l_per_h), q3, "{key}");
                assert_eq!(volume_exponent.value, 1.0, "{key}");
                assert_eq!(clearance_exponent.value, 0.75, "{key}");
                assert_eq!(volume_exponent.assumption, exp_assumed, "{key}");
                assert_eq!(clearance_exponent.assumption, exp_assumed, "{key}");
            }
            other => panic!("{key} should be clearance form: {other:?}"),
        }
    }
    // Every model: the analgesic ke0 of Olofsen 2012, an assumption.
    for (key, ke0) in [
        ("kamp2020", 0.0587),
        ("herd", 0.0587),
        ("hornik", 0.0587),
        ("clements250", 0.0587),
        ("hijazi", 0.0587),
    ] {
        match &d.models[key].effect_site {
            EffectSite::Ke0 { ke0_per_min } => assert_eq!(ke0_per_min.value, ke0),
            other => panic!("{other:?}"),
        }
    }

    // Validity domains of the paediatric models.
    let herd = &d.models["herd"].validity;
    let age = herd.age_years.as_ref();
    let wt = herd.weight_kg.as_ref();
    assert_eq!(age.map(|b| (b.min, b.max)), Some((Some(1.0), Some(14.0))));
    assert_eq!(wt.map(|b| (b.min, b.max)), Some((Some(10.8), Some(74.8))));
    assert_eq!(age.map(|b| b.assumption), Some(false));
    let hornik = &d.models["hornik"].validity;
    assert_eq!(hornik.age_years.as_ref().map(|b| b.assumption), Some(true));
    assert_eq!(hornik.weight_kg.as_ref().map(|b| b.assumption), Some(true));
}

#[test]
fn domino_derived_volumes_and_clearances_for_70_kg() {
    // stanpumpR tests/testthat/test-drugs-ketamine.R: v1 4.41, v2 10.56972,
    // v3 178.2123 L; cl1 1.93158, cl2 2.61072, cl3 2.6019 L/min.
    let d = shipped();
    let m = d.models["domino"].disposition.micro_at_weight(70.0);
    assert_close(m.v1_l, 4.41, 1e-12);
    assert_close(m.v2_l(), 10.56972, 1e-6);
    assert_close(m.v3_l(), 178.2123, 1e-6);
    assert_close(m.v1_l * m.k10_per_min, 1.93158, 1e-9);
    assert_close(m.v1_l * m.k12_per_min, 2.61072, 1e-9);
    assert_close(m.v1_l * m.k13_per_min, 2.6019, 1e-9);
    // Rate constants are not weight-scaled in the micro form.
    let heavy = d.models["domino"].disposition.micro_at_weight(100.0);
    assert_eq!(heavy.k10_per_min, m.k10_per_min);
    assert_close(heavy.v1_l, 6.3, 1e-12);
}

#[test]
fn clearance_form_scales_allometrically() {
    let d = shipped();
    // Kamp 2020 at the 70 kg reference: k = Q/V with L/h converted to L/min.
    let k = d.models["kamp2020"].disposition.micro_at_weight(70.0);
    assert_close(k.v1_l, 25.0, 1e-12);
    assert_close(k.k10_per_min, 84.0 / 60.0 / 25.0, 1e-12);
    assert_close(k.k12_per_min, 161.0 / 60.0 / 25.0, 1e-12);
    assert_close(k.k21_per_min, 161.0 / 60.0 / 56.0, 1e-12);
    assert_close(k.k13_per_min, 79.0 / 60.0 / 25.0, 1e-12);
    assert_close(k.k31_per_min, 79.0 / 60.0 / 157.0, 1e-12);
    assert_close(k.v2_l(), 56.0, 1e-12);
    assert_close(k.v3_l(), 157.0, 1e-12);
    // Herd at 35 kg: volumes × 0.5, clearances × 0.5^0.75.
    let h = d.models["herd"].disposition.micro_at_weight(35.0);
    let cl = 90.0 * 0.5_f64.powf(0.75) / 60.0;
    assert_close(h.v1_l, 19.35, 1e-12);
    assert_close(h.k10_per_min, cl / 19.35, 1e-12);
    assert_close(h.v2_l(), 51.0, 1e-12);
    assert_eq!((h.k13_per_min, h.k31_per_min, h.v3_l()), (0.0, 0.0, 0.0));
}

#[test]
fn model_selection_by_age() {
    let d = shipped();
    assert_eq!(d.select_model(None), "kamp2020");
    assert_eq!(d.select_model(Some(0.5)), "herd");
    assert_eq!(d.select_model(Some(8.0)), "herd");
    assert_eq!(d.select_model(Some(17.99)), "herd");
    assert_eq!(d.select_model(Some(18.0)), "kamp2020");
    assert_eq!(d.select_model(Some(45.0)), "kamp2020");
    assert_eq!(d.select_model(Some(f64::NAN)), "kamp2020");
    assert_eq!(d.model_selection.reference_weight_kg, 70.0);
    assert!(d.model(d.select_model(Some(3.0))).is_some());
    assert!(d.model("marsh").is_none());
}

#[test]
fn route_overrides_apply_per_model() {
    let d = shipped();
    let hornik_im = d.route("hornik", Route::Im);
    let domino_im = d.route("domino", Route::Im);
    assert_eq!(hornik_im.f.value, 0.41);
    assert!(hornik_im.f.source.contains("Hornik 2018"));
    assert_eq!(domino_im.f.value, 0.93);
    // Only F is overridden: absorption and lag come from the route table.
    assert_eq!(hornik_im.absorption, domino_im.absorption);
    assert_eq!(hornik_im.lag_min, domino_im.lag_min);
    // Other routes and unknown models get the general table.
    assert_eq!(
        d.route("hornik", Route::Oral),
        d.route("domino", Route::Oral)
    );
    assert_eq!(d.route("no-such-model", Route::Im), domino_im);
}

#[test]
fn shipped_routes_have_the_decided_values() {
    let d = shipped();
    assert_eq!(d.routes.len(), Route::ALL.len());
    let tmax = |r: Route| match &d.routes[&r].absorption {
        Absorption::Tmax { tmax_min } => Some(tmax_min.value),
        _ => None,
    };
    for r in [Route::IvBolus, Route::IvInfusion] {
        assert_eq!(d.routes[&r].f.value, 1.0);
        assert_eq!(d.routes[&r].absorption, Absorption::None);
        assert_eq!(d.routes[&r].lag_min.value, 0.0);
    }
    let expected = [
        (Route::Im, 0.93, 10.0),
        (Route::Sc, 0.93, 30.0),
        (Route::Intranasal, 0.13, 18.0),
        (Route::Oral, 0.20, 60.0),
        (Route::Sublingual, 0.29, 45.0),
        (Route::Rectal, 0.30, 42.0),
    ];
    for (r, f, t) in expected {
        assert_eq!(d.routes[&r].f.value, f, "{r}");
        assert_eq!(tmax(r), Some(t), "{r}");
        assert_eq!(d.routes[&r].lag_min.value, 0.0, "{r}");
    }
    assert!(d.routes[&Route::Sc].f.assumption);
    assert!(!d.routes[&Route::Sublingual].f.assumption);
    let td = &d.routes[&Route::Transdermal];
    assert_eq!(td.f.value, 1.0);
    assert!(td.f.assumption);
    match &td.absorption {
        Absorption::Ka { ka_per_min } => {
            assert_close(ka_per_min.value, std::f64::consts::LN_2 / 30.0, 1e-3);
            assert!(ka_per_min.assumption);
        }
        other => panic!("transdermal should use ka: {other:?}"),
    }
    assert!(td.lag_min.assumption);
}

#[test]
fn shipped_targets_and_limits() {
    let d = shipped();
    let t = &d.targets;
    assert_eq!(t.analgesic_floor_ng_per_ml.value, 100.0);
    assert_eq!(t.psychotomimetic_caution_ng_per_ml.value, 250.0);
    assert_eq!(t.ceiling_ng_per_ml.value, 500.0);
    assert!(!t.analgesic_floor_ng_per_ml.assumption);
    assert!(t.ceiling_ng_per_ml.assumption);

    let ward = &d.limits[&Setting::Ward];
    assert_eq!(ward.max_bolus_mg_per_kg.value, 0.35);
    assert_eq!(ward.max_infusion_mg_per_kg_per_h.value, 1.0);
    assert_eq!(ward.max_cumulative_mg_per_kg_per_24h.value, 24.0);
    assert!(!ward.max_infusion_mg_per_kg_per_h.assumption);
    assert!(ward.max_cumulative_mg_per_kg_per_24h.assumption);
    let mon = &d.limits[&Setting::Monitored];
    assert_eq!(mon.max_bolus_mg_per_kg.value, 0.35);
    assert_eq!(mon.max_infusion_mg_per_kg_per_h.value, 2.7);
    assert_close(mon.max_cumulative_mg_per_kg_per_24h.value, 64.8, 1e-12);
    assert!(mon.max_infusion_mg_per_kg_per_h.assumption);
    // The derived cumulative limits are 24 h at the infusion limit.
    for l in d.limits.values() {
        assert_close(
            l.max_cumulative_mg_per_kg_per_24h.value,
            24.0 * l.max_infusion_mg_per_kg_per_h.value,
            1e-12,
        );
    }
}

#[test]
fn shipped_interactions() {
    let d = shipped();
    let f_mult = |drug: &str, r: Route| {
        d.interactions[drug]
            .route_f_multipliers
            .get(&r)
            .map(|s| s.value)
    };
    let cl_mult = |drug: &str| sourced_value(&d.interactions[drug].clearance_multiplier);

    for (drug, m) in [
        ("clarithromycin", 2.6),
        ("ticlopidine", 2.4),
        ("grapefruit", 3.0),
        ("st_johns_wort", 0.42),
        ("itraconazole", 1.0),
    ] {
        assert_eq!(f_mult(drug, Route::Oral), Some(m), "{drug}");
        // Sublingual and intranasal: the oral multiplier on the swallowed
        // part only (0.1775 of 0.29, 0.092 of 0.13).
        let sl = f_mult(drug, Route::Sublingual).unwrap_or(f64::NAN);
        assert_close(sl, (0.1125 + 0.1775 * m) / 0.29, 1e-4);
        let nasal = f_mult(drug, Route::Intranasal).unwrap_or(f64::NAN);
        assert_close(nasal, (0.038 + 0.092 * m) / 0.13, 1e-4);
        assert_eq!(cl_mult(drug), None, "{drug}");
        assert_eq!(d.interactions[drug].route_f_multipliers.len(), 3, "{drug}");
    }
    // Rifampicin: IV AUC -14% on clearance, oral AUC -86% on F.
    let cl = cl_mult("rifampicin").unwrap_or(f64::NAN);
    assert_close(cl, 1.0 / 0.86, 1e-4);
    let f = f_mult("rifampicin", Route::Oral).unwrap_or(f64::NAN);
    assert_close(f, 0.14 / 0.86, 1e-3);
    // Net oral exposure ratio F/CL reproduces the published -86%.
    assert_close(f / cl, 0.14, 1e-3);

    assert_eq!(
        d.interactions["diazepam"].pd_warning.as_deref(),
        Some("benzodiazepine")
    );
    assert!(d.interactions["diazepam"].route_f_multipliers.is_empty());
    let pheno = &d.interactions["phenobarbital"];
    assert!(pheno.clearance_multiplier.is_none() && pheno.route_f_multipliers.is_empty());
    assert_eq!(pheno.pd_warning, None);

    let benzos = [
        "midazolam",
        "lorazepam",
        "alprazolam",
        "clonazepam",
        "oxazepam",
        "temazepam",
    ];
    let opioids = [
        "morphine",
        "hydromorphone",
        "oxycodone",
        "fentanyl",
        "sufentanil",
        "remifentanil",
        "methadone",
        "buprenorphine",
        "tramadol",
        "tapentadol",
        "codeine",
    ];
    for (names, warning) in [(&benzos[..], "benzodiazepine"), (&opioids[..], "opioid")] {
        for name in names {
            let i = &d.interactions[*name];
            assert_eq!(i.pd_warning.as_deref(), Some(warning), "{name}");
            assert!(i.clearance_multiplier.is_none(), "{name}");
            assert!(i.route_f_multipliers.is_empty(), "{name}");
        }
    }
    assert_eq!(d.interactions.len(), 8 + benzos.len() + opioids.len());
    assert_eq!(
        d.pd_warnings.keys().map(String::as_str).collect::<Vec<_>>(),
        ["benzodiazepine", "opioid"]
    );
    // No shipped multiplier pushes a default F above 1.
    for i in d.interactions.values() {
        for (r, m) in &i.route_f_multipliers {
            assert!(d.routes[r].f.value * m.value <= 1.0, "{} {r}", i.key);
        }
    }
}

#[test]
fn every_sourced_value_is_listed_once_and_flags_are_consistent() {
    let d = shipped();
    let values = d.sourced_values();
    let mut keys: Vec<&str> = values.iter().map(|(k, _)| k.as_str()).collect();
    let n = keys.len();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), n, "duplicate keys");
    assert!(n > 80, "only {n} sourced values");
    for (key, s) in &values {
        assert!(!s.source.trim().is_empty(), "{key}");
        let says_ours = s.source.contains("DERIVED")
            || s.source.starts_with("Assumption")
            || s.source == NO_LAG_SOURCE;
        if says_ours {
            assert!(
                s.assumption,
                "{key}: source says assumption/derived but flag is false"
            );
        }
    }
}

#[test]
fn documentation_lists_every_shipped_value() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/drug-file.md");
    let doc = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => panic!("{}: {e}", path.display()),
    };
    for (key, _) in shipped().sourced_values() {
        assert!(
            doc.contains(&format!("`{key}`")),
            "docs/drug-file.md lacks `{key}`"
        );
    }
}

#[test]
fn serializes_to_json_with_contract_names() {
    let d = shipped();
    let v = match serde_json::to_value(&d) {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(v["routes"]["iv_bolus"]["absorption"]["kind"], "none");
    assert_eq!(v["routes"]["im"]["absorption"]["kind"], "tmax");
    assert_eq!(v["routes"]["im"]["absorption"]["tmax_min"]["value"], 10.0);
    assert_eq!(v["models"]["domino"]["disposition"]["kind"], "micro");
    assert_eq!(v["models"]["herd"]["disposition"]["kind"], "clearance");
    assert_eq!(
        v["models"]["hornik"]["route_overrides"]["im"]["f"]["value"],
        0.41
    );
    assert_eq!(
        v["limits"]["monitored"]["max_bolus_mg_per_kg"]["value"],
        0.35
    );
    assert_eq!(v["models"]["kamp2020"]["effect_site"]["kind"], "ke0");
}

#[test]
fn absent_lag_defaults_to_zero_as_an_assumption_and_integers_are_accepted() {
    let text = remove_tables(BUILTIN_TOML, "[routes.im.lag_min]");
    let text = replace_once(
        &text,
        "[routes.iv_bolus.f]\nvalue = 1.0",
        "[routes.iv_bolus.f]\nvalue = 1",
    );
    let d = match parse(&text) {
        Ok(d) => d,
        Err(e) => panic!("{e}"),
    };
    let lag = &d.routes[&Route::Im].lag_min;
    assert_eq!(lag.value, 0.0);
    assert_eq!(lag.source, NO_LAG_SOURCE);
    assert!(lag.assumption);
    assert_eq!(d.routes[&Route::IvBolus].f.value, 1.0);
}

#[test]
fn one_parse_and_the_long_way_agree_on_the_edge_cases() {
    // Each through `parse`, which compares the two ways.
    assert!(parse(BUILTIN_TOML).is_ok());
    assert!(parse(&replace_once(
        BUILTIN_TOML,
        "schema_version = 1\n",
        "schema_version = 0x1\n"
    ))
    .is_ok());
    for version in ["1.0", "\"1\"", "2", "-1", "99999999999999999999", "true"] {
        let t = replace_once(
            BUILTIN_TOML,
            "schema_version = 1\n",
            &format!("schema_version = {version}\n"),
        );
        assert!(parse(&t).is_err(), "{version}");
    }
    // An integer only a u64 holds, where the structure takes an f64: the
    // long way refuses it at its first step (a toml::Value holds i64).
    let t = replace_once(
        BUILTIN_TOML,
        "[targets.ceiling_ng_per_ml]\nvalue = 500.0\n",
        "[targets.ceiling_ng_per_ml]\nvalue = 18446744073709551615\n",
    );
    assert!(matches!(parse(&t), Err(DrugFileError::Parse { .. })));
    // The same inside an array, and a duplicate key.
    let t = replace_once(
        BUILTIN_TOML,
        "schema_version = 1\n",
        "schema_version = 1\nx = [1, [18446744073709551615]]\n",
    );
    assert!(matches!(parse(&t), Err(DrugFileError::Parse { .. })));
    let t = replace_once(
        BUILTIN_TOML,
        "schema_version = 1\n",
        "schema_version = 1\nschema_version = 1\n",
    );
    assert!(matches!(parse(&t), Err(DrugFileError::Parse { .. })));
    // An integer where a float is wanted: accepted both ways.
    let t = replace_once(
        BUILTIN_TOML,
        "[targets.ceiling_ng_per_ml]\nvalue = 500.0\n",
        "[targets.ceiling_ng_per_ml]\nvalue = 500\n",
    );
    assert!(parse(&t).is_ok());
}

#[test]
fn parse_errors() {
    let broken = replace_once(BUILTIN_TOML, "[drug]\n", "[drug]\noops = [\n");
    match parse(&broken) {
        Err(e @ DrugFileError::Parse { .. }) => {
            let text = e.to_string();
            assert!(text.contains("line 18"), "{text}");
            assert!(text.contains("test/ketamine.toml"), "{text}");
        }
        other => panic!("expected Parse, got {other:?}"),
    }
}

#[test]
fn invalid_error_names_file_key_and_line() {
    let text = replace_once(
        BUILTIN_TOML,
        "[models.domino.disposition.k10_per_min]",
        "[models.domino.disposition.k10_per_mn]",
    );
    match parse(&text) {
        Err(e @ DrugFileError::Invalid { .. }) => {
            let s = e.to_string();
            assert!(s.contains("test/ketamine.toml"), "{s}");
            assert!(s.contains("`models.domino.disposition.k10_per_mn`"), "{s}");
            assert!(s.contains("line "), "{s}");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

// ---- one negative test per rule ------------------------------------------

const DOMINO_K31: &str = "[models.domino.disposition.k31_per_min]\nvalue = 0.0146\nsource = \"stanpumpR R/drugs_ketamine.R (Domino 1984)\"\n";

#[test]
fn rejects_other_schema_versions() {
    let t = replace_once(BUILTIN_TOML, "schema_version = 1\n", "schema_version = 2\n");
    expect_invalid(&t, "schema_version", "unsupported schema version 2");
    let t = replace_once(BUILTIN_TOML, "schema_version = 1\n", "");
    expect_invalid(&t, "schema_version", "missing");
}

#[test]
fn rejects_unknown_keys_with_their_path() {
    let t = replace_once(
        BUILTIN_TOML,
        "[models.domino.disposition.k10_per_min]",
        "[models.domino.disposition.k10_per_mn]",
    );
    expect_invalid(&t, "models.domino.disposition.k10_per_mn", "unknown field");
    let t = replace_once(
        BUILTIN_TOML,
        "{ model = \"kamp2020\" }",
        "{ modle = \"domino\" }",
    );
    expect_invalid(&t, "model_selection.by_age[1].modle", "unknown field");
    let t = replace_once(
        BUILTIN_TOML,
        "[targets.ceiling_ng_per_ml]\nvalue = 500.0\n",
        "[targets.ceiling_ng_per_ml]\nvalue = 500.0\nunit = \"ng/mL\"\n",
    );
    expect_invalid(&t, "targets.ceiling_ng_per_ml.unit", "unknown field");
}

#[test]
fn rejects_missing_tables_and_keys_with_their_path() {
    let t = remove_tables(BUILTIN_TOML, "[targets.");
    expect_invalid(&t, "targets", "missing field `targets`");
    let t = replace_once(BUILTIN_TOML, "{ model = \"kamp2020\" }", "{ below = 1 }");
    expect_invalid(&t, "model_selection.by_age[1].below", "unknown field");
    let t = replace_once(
        BUILTIN_TOML,
        "[models.herd.disposition]\nkind = \"clearance\"\n",
        "[models.herd.disposition]\nkind = \"clearance\"\nv3_l = { value = 1.0 }\n",
    );
    expect_invalid(
        &t,
        "models.herd.disposition.v3_l.source",
        "missing field `source`",
    );
}

#[test]
fn rejects_wrong_types_with_their_path() {
    let t = replace_once(
        BUILTIN_TOML,
        "[models.domino.disposition.k31_per_min]\nvalue = 0.0146",
        "[models.domino.disposition.k31_per_min]\nvalue = \"0.0146\"",
    );
    expect_invalid(
        &t,
        "models.domino.disposition.k31_per_min.value",
        "invalid type",
    );
}

#[test]
fn rejects_missing_or_empty_source() {
    let t = replace_once(
        BUILTIN_TOML,
        DOMINO_K31,
        "[models.domino.disposition.k31_per_min]\nvalue = 0.0146\n",
    );
    expect_invalid(
        &t,
        "models.domino.disposition.k31_per_min.source",
        "missing field",
    );
    let t = replace_once(
        BUILTIN_TOML,
        DOMINO_K31,
        "[models.domino.disposition.k31_per_min]\nvalue = 0.0146\nsource = \"  \"\n",
    );
    expect_invalid(
        &t,
        "models.domino.disposition.k31_per_min.source",
        "must not be empty",
    );
    let t = replace_once(
        BUILTIN_TOML,
        DOMINO_K31,
        &format!("{DOMINO_K31}note = \"\"\n"),
    );
    expect_invalid(
        &t,
        "models.domino.disposition.k31_per_min.note",
        "must not be empty",
    );
    let t = replace_once(
        BUILTIN_TOML,
        "source = \"opentiva ketamine.py class Herd: age_lower 1, age_upper 14\"",
        "source = \"\"",
    );
    expect_invalid(
        &t,
        "models.herd.validity.age_years.source",
        "must not be empty",
    );
}

#[test]
fn rejects_empty_text_fields() {
    let t = replace_once(
        BUILTIN_TOML,
        "title = \"Domino 1984, racemic ketamine, 3-compartment\"",
        "title = \"\"",
    );
    expect_invalid(&t, "models.domino.title", "must not be empty");
    let t = replace_once(
        BUILTIN_TOML,
        "mechanism = \"CYP2B6 inhibitor\"",
        "mechanism = \"\"",
    );
    expect_invalid(
        &t,
        "interactions.ticlopidine.mechanism",
        "must not be empty",
    );
}

#[test]
fn rejects_non_finite_values() {
    for bad in ["nan", "inf", "-inf"] {
        let t = replace_once(
            BUILTIN_TOML,
            "[models.domino.disposition.k31_per_min]\nvalue = 0.0146",
            &format!("[models.domino.disposition.k31_per_min]\nvalue = {bad}"),
        );
        expect_invalid(&t, "models.domino.disposition.k31_per_min", "finite");
    }
}

#[test]
fn rejects_non_positive_rate_constants() {
    let t = replace_once(
        BUILTIN_TOML,
        "[models.domino.disposition.k21_per_min]\nvalue = 0.247",
        "[models.domino.disposition.k21_per_min]\nvalue = 0.0",
    );
    expect_invalid(
        &t,
        "models.domino.disposition.k21_per_min",
        "greater than 0",
    );
}

#[test]
fn rejects_non_positive_volumes() {
    let t = replace_once(
        BUILTIN_TOML,
        "[models.kamp2020.disposition.v1_l]\nvalue = 25.0",
        "[models.kamp2020.disposition.v1_l]\nvalue = -25.0",
    );
    expect_invalid(&t, "models.kamp2020.disposition.v1_l", "greater than 0");
    let t = replace_once(
        BUILTIN_TOML,
        "[models.clements250.disposition.v1_l_per_kg]\nvalue = 1.7522",
        "[models.clements250.disposition.v1_l_per_kg]\nvalue = 0",
    );
    expect_invalid(
        &t,
        "models.clements250.disposition.v1_l_per_kg",
        "greater than 0",
    );
}

#[test]
fn rejects_non_positive_clearances() {
    let t = replace_once(
        BUILTIN_TOML,
        "[models.herd.disposition.q2_l_per_h]\nvalue = 215.0",
        "[models.herd.disposition.q2_l_per_h]\nvalue = 0.0",
    );
    expect_invalid(&t, "models.herd.disposition.q2_l_per_h", "greater than 0");
}

#[test]
fn rejects_non_positive_reference_weights() {
    let t = replace_once(
        BUILTIN_TOML,
        "kind = \"clearance\"\nreference_weight_kg = 70.0\n\n[models.herd.disposition.v1_l]",
        "kind = \"clearance\"\nreference_weight_kg = 0.0\n\n[models.herd.disposition.v1_l]",
    );
    expect_invalid(
        &t,
        "models.herd.disposition.reference_weight_kg",
        "greater than 0",
    );
    let t = replace_once(
        BUILTIN_TOML,
        "of the per-70-kg models).\nreference_weight_kg = 70.0",
        "of the per-70-kg models).\nreference_weight_kg = -70.0",
    );
    expect_invalid(&t, "model_selection.reference_weight_kg", "greater than 0");
}

#[test]
fn rejects_non_positive_ke0_and_tpeak() {
    let t = replace_once(
        BUILTIN_TOML,
        "[models.hornik.effect_site.ke0_per_min]\nvalue = 0.0587",
        "[models.hornik.effect_site.ke0_per_min]\nvalue = -0.0587",
    );
    expect_invalid(
        &t,
        "models.hornik.effect_site.ke0_per_min",
        "greater than 0",
    );
    let t = replace_once(
        BUILTIN_TOML,
        "[models.kamp2020.effect_site.ke0_per_min]\nvalue = 0.0587",
        "[models.kamp2020.effect_site.tpeak_min]\nvalue = 0.0",
    );
    expect_invalid(
        &t,
        "models.kamp2020.effect_site.tpeak_min",
        "greater than 0",
    );
}

#[test]
fn rejects_non_positive_tmax_and_ka() {
    let t = replace_once(
        BUILTIN_TOML,
        "[routes.im.tmax_min]\nvalue = 10.0",
        "[routes.im.tmax_min]\nvalue = 0.0",
    );
    expect_invalid(&t, "routes.im.tmax_min", "greater than 0");
    let t = replace_once(
        BUILTIN_TOML,
        "[routes.transdermal.ka_per_min]\nvalue = 0.0231",
        "[routes.transdermal.ka_per_min]\nvalue = -0.0231",
    );
    expect_invalid(&t, "routes.transdermal.ka_per_min", "greater than 0");
}

#[test]
fn rejects_negative_lag() {
    let t = replace_once(
        BUILTIN_TOML,
        "[routes.oral.lag_min]\nvalue = 0.0",
        "[routes.oral.lag_min]\nvalue = -5.0",
    );
    expect_invalid(&t, "routes.oral.lag_min", "0 or greater");
}

#[test]
fn rejects_bioavailability_outside_zero_to_one() {
    let t = replace_once(
        BUILTIN_TOML,
        "[routes.im.f]\nvalue = 0.93",
        "[routes.im.f]\nvalue = 1.2",
    );
    expect_invalid(&t, "routes.im.f", "at most 1");
    let t = replace_once(
        BUILTIN_TOML,
        "[routes.oral.f]\nvalue = 0.20",
        "[routes.oral.f]\nvalue = 0.0",
    );
    expect_invalid(&t, "routes.oral.f", "greater than 0 and at most 1");
    let t = replace_once(
        BUILTIN_TOML,
        "[models.hornik.routes.im.f]\nvalue = 0.41",
        "[models.hornik.routes.im.f]\nvalue = 1.5",
    );
    expect_invalid(&t, "models.hornik.routes.im.f", "at most 1");
}

#[test]
fn rejects_non_positive_multipliers() {
    let t = replace_once(
        BUILTIN_TOML,
        "[interactions.clarithromycin.route_f_multipliers.oral]\nvalue = 2.6",
        "[interactions.clarithromycin.route_f_multipliers.oral]\nvalue = 0.0",
    );
    expect_invalid(
        &t,
        "interactions.clarithromycin.route_f_multipliers.oral",
        "greater than 0",
    );
    let t = replace_once(
        BUILTIN_TOML,
        "[interactions.rifampicin.clearance_multiplier]\nvalue = 1.1628",
        "[interactions.rifampicin.clearance_multiplier]\nvalue = -1.1628",
    );
    expect_invalid(
        &t,
        "interactions.rifampicin.clearance_multiplier",
        "greater than 0",
    );
}

#[test]
fn rejects_exponents_outside_zero_to_two() {
    let t = replace_once(
        BUILTIN_TOML,
        "[models.herd.disposition.clearance_exponent]\nvalue = 0.75",
        "[models.herd.disposition.clearance_exponent]\nvalue = 2.5",
    );
    expect_invalid(
        &t,
        "models.herd.disposition.clearance_exponent",
        "between 0 and 2",
    );
    let t = replace_once(
        BUILTIN_TOML,
        "[models.kamp2020.disposition.volume_exponent]\nvalue = 1.0",
        "[models.kamp2020.disposition.volume_exponent]\nvalue = -0.1",
    );
    expect_invalid(
        &t,
        "models.kamp2020.disposition.volume_exponent",
        "between 0 and 2",
    );
}

#[test]
fn rejects_compartment_counts_outside_one_to_three() {
    let t = replace_once(
        BUILTIN_TOML,
        "compartments = 3\n\n[models.domino.disposition]",
        "compartments = 4\n\n[models.domino.disposition]",
    );
    expect_invalid(&t, "models.domino.compartments", "must be 1, 2 or 3");
}

#[test]
fn rejects_parameters_inconsistent_with_compartments() {
    // Micro, 2 compartments declared but third-compartment constants given.
    let t = replace_once(
        BUILTIN_TOML,
        "compartments = 3\n\n[models.domino.disposition]",
        "compartments = 2\n\n[models.domino.disposition]",
    );
    expect_invalid(&t, "models.domino.disposition.k13_per_min", "not allowed");
    // Micro, 3 declared but only 2 compartments of constants.
    let t = replace_once(
        BUILTIN_TOML,
        "compartments = 2\n\n[models.clements250.disposition]",
        "compartments = 3\n\n[models.clements250.disposition]",
    );
    expect_invalid(&t, "models.clements250.disposition.k13_per_min", "missing");
    // Micro cannot be 1-compartment.
    let t = replace_once(
        BUILTIN_TOML,
        "compartments = 2\n\n[models.hijazi.disposition]",
        "compartments = 1\n\n[models.hijazi.disposition]",
    );
    expect_invalid(&t, "models.hijazi.compartments", "1-compartment");
    // Micro, 2 compartments without k21.
    let t = remove_tables(BUILTIN_TOML, "[models.hijazi.disposition.k21_per_min]");
    expect_invalid(&t, "models.hijazi.disposition.k21_per_min", "missing");
    // Clearance, 3 declared, no third compartment.
    let t = replace_once(
        BUILTIN_TOML,
        "compartments = 2\n\n[models.herd.disposition]",
        "compartments = 3\n\n[models.herd.disposition]",
    );
    expect_invalid(&t, "models.herd.disposition.v3_l", "missing");
    // Clearance, 1 declared, but a second compartment given.
    let t = replace_once(
        BUILTIN_TOML,
        "compartments = 2\n\n[models.herd.disposition]",
        "compartments = 1\n\n[models.herd.disposition]",
    );
    expect_invalid(&t, "models.herd.disposition.v2_l", "not allowed");
    // Clearance, 2 declared, third compartment given.
    let t = replace_once(
        BUILTIN_TOML,
        "compartments = 3\n\n[models.kamp2020.disposition]",
        "compartments = 2\n\n[models.kamp2020.disposition]",
    );
    expect_invalid(&t, "models.kamp2020.disposition.v3_l", "not allowed");
    // Clearance without CL.
    let t = remove_tables(BUILTIN_TOML, "[models.hornik.disposition.cl_l_per_h]");
    expect_invalid(&t, "models.hornik.disposition.cl_l_per_h", "missing");
}

#[test]
fn rejects_parameters_of_the_other_disposition_kind() {
    let t = replace_once(
        BUILTIN_TOML,
        "[models.domino.disposition]\nkind = \"micro\"\n",
        "[models.domino.disposition]\nkind = \"micro\"\nreference_weight_kg = 70.0\n",
    );
    expect_invalid(
        &t,
        "models.domino.disposition.reference_weight_kg",
        "not allowed",
    );
    let t = replace_once(
        BUILTIN_TOML,
        "[models.herd.disposition]\nkind = \"clearance\"\n",
        "[models.herd.disposition]\nkind = \"clearance\"\nk10_per_min = { value = 0.02, source = \"x\" }\n",
    );
    expect_invalid(&t, "models.herd.disposition.k10_per_min", "not allowed");
    let t = replace_once(
        BUILTIN_TOML,
        "[models.herd.disposition]\nkind = \"clearance\"\n",
        "[models.herd.disposition]\nkind = \"macro\"\n",
    );
    expect_invalid(
        &t,
        "models.herd.disposition.kind",
        "unknown disposition kind",
    );
}

#[test]
fn rejects_effect_site_with_both_or_neither() {
    let t = replace_once(
        BUILTIN_TOML,
        "[models.domino.effect_site.ke0_per_min]",
        "[models.domino.effect_site.tpeak_min]\nvalue = 1.0\nsource = \"x\"\n\n[models.domino.effect_site.ke0_per_min]",
    );
    expect_invalid(&t, "models.domino.effect_site", "exactly one");
    let t = replace_once(
        BUILTIN_TOML,
        "[models.kamp2020.effect_site.ke0_per_min]",
        "[models.kamp2020.effect_site]\n\n[models.kamp2020.effect_site.ke0_per_mn]",
    );
    // The typo is caught structurally ...
    expect_invalid(
        &t,
        "models.kamp2020.effect_site.ke0_per_mn",
        "unknown field",
    );
    // ... and an empty effect site by validation.
    let t = remove_tables(BUILTIN_TOML, "[models.kamp2020.effect_site.ke0_per_min]");
    let t = replace_once(
        &t,
        "[models.kamp2020.validity.age_years]",
        "[models.kamp2020.effect_site]\n\n[models.kamp2020.validity.age_years]",
    );
    expect_invalid(&t, "models.kamp2020.effect_site", "missing");
}

#[test]
fn rejects_absorption_on_iv_routes() {
    let t = replace_once(
        BUILTIN_TOML,
        "[routes.iv_bolus.f]",
        "[routes.iv_bolus.tmax_min]\nvalue = 1.0\nsource = \"x\"\n\n[routes.iv_bolus.f]",
    );
    expect_invalid(&t, "routes.iv_bolus.tmax_min", "intravenous");
    let t = replace_once(
        BUILTIN_TOML,
        "[models.hornik.routes.im.f]",
        "[models.hornik.routes.iv_infusion.ka_per_min]\nvalue = 1.0\nsource = \"x\"\n\n[models.hornik.routes.im.f]",
    );
    expect_invalid(
        &t,
        "models.hornik.routes.iv_infusion.ka_per_min",
        "intravenous",
    );
}

#[test]
fn rejects_extravascular_routes_without_exactly_one_absorption() {
    let t = replace_once(
        BUILTIN_TOML,
        "[routes.im.tmax_min]",
        "[routes.im.ka_per_min]\nvalue = 0.1\nsource = \"x\"\n\n[routes.im.tmax_min]",
    );
    expect_invalid(&t, "routes.im", "exactly one");
    let t = remove_tables(BUILTIN_TOML, "[routes.oral.tmax_min]");
    expect_invalid(&t, "routes.oral", "missing absorption");
    let t = remove_tables(BUILTIN_TOML, "[routes.transdermal.ka_per_min]");
    expect_invalid(&t, "routes.transdermal", "missing absorption");
    let t = replace_once(
        BUILTIN_TOML,
        "[models.hornik.routes.im.f]",
        "[models.hornik.routes.im.ka_per_min]\nvalue = 0.1\nsource = \"x\"\n\n\
         [models.hornik.routes.im.tmax_min]\nvalue = 5.0\nsource = \"x\"\n\n[models.hornik.routes.im.f]",
    );
    expect_invalid(&t, "models.hornik.routes.im", "exactly one");
}

#[test]
fn rejects_missing_routes_and_unknown_route_names() {
    let t = remove_tables(BUILTIN_TOML, "[routes.transdermal.");
    expect_invalid(&t, "routes.transdermal", "missing");
    let t = replace_once(
        BUILTIN_TOML,
        "[routes.iv_bolus.f]",
        "[routes.intranasl.f]\nvalue = 0.5\nsource = \"x\"\n\n[routes.iv_bolus.f]",
    );
    expect_invalid(&t, "routes.intranasl", "unknown route 'intranasl'");
    let t = remove_tables(BUILTIN_TOML, "[routes.im.f]");
    expect_invalid(&t, "routes.im.f", "missing");
    let t = replace_once(
        BUILTIN_TOML,
        "[models.hornik.routes.im.f]",
        "[models.hornik.routes.intramuscular.f]",
    );
    expect_invalid(&t, "models.hornik.routes.intramuscular", "unknown route");
    let t = replace_once(
        BUILTIN_TOML,
        "[interactions.clarithromycin.route_f_multipliers.oral]",
        "[interactions.clarithromycin.route_f_multipliers.po]",
    );
    expect_invalid(
        &t,
        "interactions.clarithromycin.route_f_multipliers.po",
        "unknown route",
    );
}

#[test]
fn rejects_f_multipliers_on_iv_routes() {
    let t = replace_once(
        BUILTIN_TOML,
        "[interactions.clarithromycin.route_f_multipliers.oral]",
        "[interactions.clarithromycin.route_f_multipliers.iv_bolus]",
    );
    expect_invalid(
        &t,
        "interactions.clarithromycin.route_f_multipliers.iv_bolus",
        "extravascular routes only",
    );
}

#[test]
fn rejects_missing_or_unknown_settings() {
    let t = remove_tables(BUILTIN_TOML, "[limits.monitored.");
    expect_invalid(&t, "limits.monitored", "missing");
    let t = BUILTIN_TOML.replace("[limits.monitored.", "[limits.icu.");
    assert_ne!(t, BUILTIN_TOML);
    expect_invalid(&t, "limits.icu", "unknown setting 'icu'");
    let t = replace_once(
        BUILTIN_TOML,
        "[limits.ward.max_bolus_mg_per_kg]\nvalue = 0.35",
        "[limits.ward.max_bolus_mg_per_kg]\nvalue = 0.0",
    );
    expect_invalid(&t, "limits.ward.max_bolus_mg_per_kg", "greater than 0");
}

#[test]
fn rejects_targets_out_of_order() {
    let t = replace_once(
        BUILTIN_TOML,
        "[targets.psychotomimetic_caution_ng_per_ml]\nvalue = 250.0",
        "[targets.psychotomimetic_caution_ng_per_ml]\nvalue = 100.0",
    );
    expect_invalid(
        &t,
        "targets.psychotomimetic_caution_ng_per_ml",
        "greater than analgesic_floor_ng_per_ml",
    );
    let t = replace_once(
        BUILTIN_TOML,
        "[targets.ceiling_ng_per_ml]\nvalue = 500.0",
        "[targets.ceiling_ng_per_ml]\nvalue = 200.0",
    );
    expect_invalid(
        &t,
        "targets.ceiling_ng_per_ml",
        "greater than psychotomimetic_caution_ng_per_ml",
    );
}

#[test]
fn rejects_bad_validity_bounds() {
    let t = replace_once(
        BUILTIN_TOML,
        "min = 1.0\nmax = 14.0",
        "min = 14.0\nmax = 1.0",
    );
    expect_invalid(
        &t,
        "models.herd.validity.age_years",
        "must be less than max",
    );
    let t = replace_once(
        BUILTIN_TOML,
        "[models.domino.validity.age_years]\nmin = 18.0\n",
        "[models.domino.validity.age_years]\n",
    );
    expect_invalid(
        &t,
        "models.domino.validity.age_years",
        "at least one of min or max",
    );
    let t = replace_once(
        BUILTIN_TOML,
        "min = 10.8\nmax = 74.8",
        "min = 0.0\nmax = 74.8",
    );
    expect_invalid(&t, "models.herd.validity.weight_kg.min", "greater than 0");
    let t = replace_once(
        BUILTIN_TOML,
        "[models.domino.validity.age_years]\nmin = 18.0\n",
        "[models.domino.validity.age_years]\nmin = -1.0\n",
    );
    expect_invalid(&t, "models.domino.validity.age_years.min", "0 or greater");
}

#[test]
fn rejects_bad_model_selection() {
    let t = replace_once(
        BUILTIN_TOML,
        "{ model = \"kamp2020\" }",
        "{ model = \"marsh\" }",
    );
    expect_invalid(
        &t,
        "model_selection.by_age[1].model",
        "unknown model 'marsh'",
    );
    let t = replace_once(
        BUILTIN_TOML,
        "{ model = \"kamp2020\" }",
        "{ below_age_years = 150.0, model = \"kamp2020\" }",
    );
    expect_invalid(&t, "model_selection.by_age[1].below_age_years", "last rule");
    let t = replace_once(
        BUILTIN_TOML,
        "{ below_age_years = 18.0, model = \"herd\" }",
        "{ model = \"herd\" }",
    );
    expect_invalid(
        &t,
        "model_selection.by_age[0].below_age_years",
        "only the last rule",
    );
    let t = replace_once(
        BUILTIN_TOML,
        "{ below_age_years = 18.0, model = \"herd\" },",
        "{ below_age_years = 18.0, model = \"herd\" },\n    { below_age_years = 12.0, model = \"hornik\" },",
    );
    expect_invalid(&t, "model_selection.by_age[1].below_age_years", "increase");
    let t = replace_once(BUILTIN_TOML, "by_age = [\n    { below_age_years = 18.0, model = \"herd\" },\n    { model = \"kamp2020\" },\n]", "by_age = []");
    expect_invalid(&t, "model_selection.by_age", "at least one rule");
    let t = replace_once(
        BUILTIN_TOML,
        "when_age_unknown = \"kamp2020\"",
        "when_age_unknown = \"Domino\"",
    );
    expect_invalid(&t, "model_selection.when_age_unknown", "unknown model");
}

#[test]
fn rejects_unknown_pd_warning_keys() {
    let t = replace_once(BUILTIN_TOML, "[pd_warnings.opioid]", "[pd_warnings.opiate]");
    // Interactions are checked in key order; buprenorphine is the first opioid.
    expect_invalid(
        &t,
        "interactions.buprenorphine.pd_warning",
        "unknown pd warning 'opioid'",
    );
}

#[test]
fn rejects_malformed_names() {
    let t = BUILTIN_TOML.replace("[models.hijazi", "[models.Hijazi");
    assert_ne!(t, BUILTIN_TOML);
    expect_invalid(&t, "models.Hijazi", "lower-case");
    let t = BUILTIN_TOML.replace(
        "[interactions.st_johns_wort",
        "[interactions.st john's wort",
    );
    let t = t.replace(
        "[interactions.st john's wort",
        "[interactions.\"st john's wort\"",
    );
    expect_invalid(&t, "interactions.st john's wort", "lower-case");
    let t = replace_once(
        BUILTIN_TOML,
        "[models.hornik.routes.im.f]",
        "[models.hornik.routes.sc]\n\n[models.hornik.routes.im.f]",
    );
    expect_invalid(&t, "models.hornik.routes.sc", "at least one of");
}

#[test]
fn rejects_non_positive_molar_mass() {
    let t = replace_once(BUILTIN_TOML, "value = 237.725", "value = 0.0");
    expect_invalid(&t, "drug.molar_mass_g_per_mol", "greater than 0");
}

// ---- liver, covariate effects, metabolism (issue #14) -------------------

/// The shipped file without the three optional sections.
fn without_effect_sections() -> String {
    let t = remove_tables(BUILTIN_TOML, "[liver");
    let t = remove_tables(&t, "[covariate_effects");
    remove_tables(&t, "[metabolism")
}

#[test]
fn shipped_liver_covariate_and_metabolism_values() {
    let d = shipped();
    let l = d.liver().expect("shipped [liver]");
    assert_eq!(l.hepatic_blood_flow_l_per_h.value, 151.0);
    assert!(!l.hepatic_blood_flow_l_per_h.assumption);
    assert!(l.qh_reference_weight_kg.assumption);
    assert_eq!(l.hepatic_fraction_of_clearance.value, 1.0);
    assert!(l.hepatic_fraction_of_clearance.assumption);
    let a = l.age_effect.as_ref().expect("age effect");
    assert_eq!(a.qh_age_slope_l_per_h_per_year.value, -2.19);
    assert_eq!(a.qh_age_threshold_years.value, 60.0);
    let share = |r: Route| l.swallowed_share_of_f.get(&r).map(|s| s.value);
    assert_eq!(share(Route::Oral), Some(1.0));
    assert_close(share(Route::Sublingual).unwrap_or(0.0), 0.1775 / 0.29, 1e-4);
    assert_close(share(Route::Intranasal).unwrap_or(0.0), 0.092 / 0.13, 1e-4);
    assert_eq!(share(Route::Im), None);
    let c = d.covariate_effects().expect("shipped [covariate_effects]");
    assert_eq!(sourced_value(&c.female_clearance_multiplier), Some(1.2));
    let m = d.metabolism().expect("shipped [metabolism]");
    let mult = |g: &str| {
        m.cyp2b6
            .get(g)
            .map(|x| x.intrinsic_clearance_multiplier.value)
    };
    assert_eq!(mult("*1/*1"), Some(1.0));
    assert_eq!(mult("*1/*6"), Some(0.5));
    assert_close(mult("*6/*6").unwrap_or(0.0), 1.0 / 6.0, 1e-3);
    assert!(m.cyp2b6["*6/*6"].intrinsic_clearance_multiplier.assumption);
    let keys: Vec<String> = d.sourced_values().into_iter().map(|(k, _)| k).collect();
    assert!(keys.contains(&"metabolism.cyp2b6.\"*1/*6\".intrinsic_clearance_multiplier".to_owned()));
}

#[test]
fn the_effect_sections_are_optional() {
    let d = match parse(&without_effect_sections()) {
        Ok(d) => d,
        Err(e) => panic!("{e}"),
    };
    assert!(d.liver().is_none() && d.covariate_effects().is_none() && d.metabolism().is_none());
    // Everything else is as shipped.
    assert_eq!(d.models(), shipped().models());
    assert_eq!(d.routes(), shipped().routes());
}

#[test]
fn rejects_bad_liver_covariate_and_metabolism_values() {
    let t = BUILTIN_TOML;
    let slope = "[liver.qh_age_slope_l_per_h_per_year]\nvalue = -2.19";
    expect_invalid(
        &replace_once(
            t,
            slope,
            "[liver.qh_age_slope_l_per_h_per_year]\nvalue = 2.19",
        ),
        "liver.qh_age_slope_l_per_h_per_year",
        "must be 0 or less",
    );
    expect_invalid(
        &remove_tables(t, "[liver.qh_age_threshold_years]"),
        "liver.qh_age_threshold_years",
        "missing",
    );
    expect_invalid(
        &replace_once(
            t,
            "[liver.hepatic_blood_flow_l_per_h]\nvalue = 151.0",
            "[liver.hepatic_blood_flow_l_per_h]\nvalue = 0.0",
        ),
        "liver.hepatic_blood_flow_l_per_h",
        "greater than 0",
    );
    expect_invalid(
        &replace_once(
            t,
            "[liver.hepatic_fraction_of_clearance]\nvalue = 1.0",
            "[liver.hepatic_fraction_of_clearance]\nvalue = 1.5",
        ),
        "liver.hepatic_fraction_of_clearance",
        "at most 1",
    );
    expect_invalid(
        &replace_once(
            t,
            "[liver.swallowed_share_of_f.sublingual]\nvalue = 0.6121",
            "[liver.swallowed_share_of_f.sublingual]\nvalue = 1.2",
        ),
        "liver.swallowed_share_of_f.sublingual",
        "at most 1",
    );
    expect_invalid(
        &replace_once(
            t,
            "[liver.swallowed_share_of_f.oral]",
            "[liver.swallowed_share_of_f.iv_bolus]",
        ),
        "liver.swallowed_share_of_f.iv_bolus",
        "no first pass",
    );
    expect_invalid(
        &replace_once(
            t,
            "[liver.swallowed_share_of_f.oral]",
            "[liver.swallowed_share_of_f.orl]",
        ),
        "liver.swallowed_share_of_f.orl",
        "unknown route",
    );
    expect_invalid(
        &replace_once(
            t,
            "[covariate_effects.female_clearance_multiplier]\nvalue = 1.2",
            "[covariate_effects.female_clearance_multiplier]\nvalue = -1.2",
        ),
        "covariate_effects.female_clearance_multiplier",
        "greater than 0",
    );
    expect_invalid(
        &replace_once(
            t,
            "[metabolism.cyp2b6.\"*6/*6\".intrinsic_clearance_multiplier]\nvalue = 0.1667",
            "[metabolism.cyp2b6.\"*6/*6\".intrinsic_clearance_multiplier]\nvalue = 0",
        ),
        "metabolism.cyp2b6.\"*6/*6\".intrinsic_clearance_multiplier",
        "greater than 0",
    );
    expect_invalid(
        &replace_once(
            t,
            "[metabolism.cyp2b6.\"*1/*1\"",
            "[metabolism.cyp2b6.\"1/1\"",
        ),
        "metabolism.cyp2b6.\"1/1\"",
        "*<allele>/*<allele>",
    );
    expect_invalid(
        &remove_tables(t, "[liver"),
        "metabolism",
        "needs a [liver] section",
    );
    expect_invalid(
        &replace_once(
            t,
            "[liver.qh_age_threshold_years]\nvalue = 60.0",
            "[liver.qh_age_threshold_years]\nvalue = 60.0\nunits = \"y\"",
        ),
        "liver.qh_age_threshold_years.units",
        "unknown field",
    );
}

// ---- [norketamine] ------------------------------------------------------

#[test]
fn shipped_norketamine_has_the_derived_values() {
    let d = shipped();
    let n = match d.norketamine() {
        Some(n) => n,
        None => panic!("the shipped file has [norketamine]"),
    };
    assert_eq!(n.v_l.value, 70.0);
    assert_eq!(n.cl_l_per_h.value, 38.0);
    assert_eq!(n.formation_fraction.value, 0.71);
    assert_eq!(n.potency_relative_to_ketamine.value, 0.0);
    assert!(n.potency_relative_to_ketamine.assumption);
    let fp = |r: Route| n.first_pass_fraction.get(&r).map(|s| s.value);
    assert_eq!(fp(Route::Oral), Some(0.33));
    assert_eq!(fp(Route::Sublingual), Some(0.29));
    assert_eq!(fp(Route::Intranasal), Some(0.15));
    assert_eq!(fp(Route::Im), None);
    // The derivations written in the sources.
    assert_close(0.64 * 0.72 * 0.71, 0.33, 0.01);
    assert_close((1.0 - 0.29) / (1.0 - 0.20) * 0.33, 0.29, 0.02);
    assert_close(0.46 * 0.33, 0.15, 0.02);
    assert_close(2.77 / (2.77 + 1.11), 0.71, 0.01);
    // Scaling: volumes linear, clearances to the 3/4.
    let (v, cl, vp, q) = n.at_weight(140.0);
    assert_close(v, 140.0, 1e-12);
    assert_close(vp, 230.0, 1e-12);
    assert_close(cl, 38.0 * 2f64.powf(0.75), 1e-12);
    assert_close(q, 26.1 * 2f64.powf(0.75), 1e-12);
}

#[test]
fn norketamine_is_optional() {
    let text = remove_tables(BUILTIN_TOML, "[norketamine");
    match parse(&text) {
        Ok(d) => assert!(d.norketamine().is_none()),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn norketamine_potency_other_than_0_is_refused_not_ignored() {
    let t = replace_once(
        BUILTIN_TOML,
        "[norketamine.potency_relative_to_ketamine]\nvalue = 0.0\n",
        "[norketamine.potency_relative_to_ketamine]\nvalue = 0.3\n",
    );
    expect_invalid(
        &t,
        "norketamine.potency_relative_to_ketamine",
        "only 0 is supported",
    );
}

#[test]
fn norketamine_first_pass_is_checked() {
    let oral = "[norketamine.first_pass_fraction.oral]\nvalue = 0.33\n";
    let t = replace_once(
        BUILTIN_TOML,
        oral,
        "[norketamine.first_pass_fraction.oral]\nvalue = 0.9\n",
    );
    expect_invalid(
        &t,
        "norketamine.first_pass_fraction.oral",
        "more than the dose",
    );
    let t = replace_once(
        BUILTIN_TOML,
        oral,
        "[norketamine.first_pass_fraction.iv_bolus]\nvalue = 0.1\n",
    );
    expect_invalid(
        &t,
        "norketamine.first_pass_fraction.iv_bolus",
        "no first pass",
    );
    let t = replace_once(
        BUILTIN_TOML,
        oral,
        "[norketamine.first_pass_fraction.nasal]\nvalue = 0.1\n",
    );
    expect_invalid(&t, "norketamine.first_pass_fraction.nasal", "unknown route");
    let t = replace_once(
        BUILTIN_TOML,
        "[norketamine.formation_fraction]\nvalue = 0.71\n",
        "[norketamine.formation_fraction]\nvalue = 1.71\n",
    );
    expect_invalid(&t, "norketamine.formation_fraction", "at most 1");
    let t = remove_tables(BUILTIN_TOML, "[norketamine.vp_l]");
    expect_invalid(&t, "norketamine.vp_l", "missing field");
}
