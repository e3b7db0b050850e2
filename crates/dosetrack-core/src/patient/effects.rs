//! Covariate and metabolic effects on a model's clearance and first-pass F
//! (issue #14): the published female clearance multiplier, and a
//! well-stirred liver through which age (hepatic blood flow) and CYP2B6
//! genotype (intrinsic clearance) act.
//!
//! The model's clearance CL (taken as hepatic, in the share the drug file
//! gives) and hepatic blood flow Qh give the intrinsic clearance
//! `CLint = CL·Qh/(Qh − CL)`; with a genotype multiplier m and the patient's
//! flow Qh', `CL' = Qh'·m·CLint/(Qh' + m·CLint)` and hepatic
//! `F_H' = Qh'/(Qh' + m·CLint)`, against `F_H = Qh/(Qh + CLint)`. IV
//! clearance moves by CL'/CL; each first-pass route's F moves by F_H'/F_H
//! on its swallowed share only. Where CL ≥ Qh the liver model cannot
//! describe the model and nothing is changed (a warning says so). Every
//! applied effect is a [`PatientWarning`]; a drug file without the
//! sections changes nothing.

use super::{Covariates, PatientError, PatientWarning};
use crate::drug::{DrugFile, LiverSpec, MicroConstants, ModelSpec};
use crate::vocab::{Route, Sex};
use serde::Serialize;
use std::collections::BTreeMap;

/// How the well-stirred liver changed this patient (all flows L/h at the
/// patient's weight).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiverResolution {
    /// The model's elimination clearance, before any effect.
    pub cl_model_l_per_h: f64,
    /// The hepatic part of it (`hepatic_fraction_of_clearance` × CL).
    pub cl_hepatic_l_per_h: f64,
    /// Hepatic blood flow at this weight, before the age effect.
    pub qh_l_per_h: f64,
    /// Hepatic blood flow for this patient (age applied).
    pub qh_patient_l_per_h: f64,
    /// `CL_h·Qh/(Qh − CL_h)`, before the genotype.
    pub intrinsic_clearance_l_per_h: f64,
    /// The genotype's multiplier m on intrinsic clearance (1: none).
    pub intrinsic_clearance_multiplier: f64,
    /// Elimination clearance after the liver effects.
    pub cl_l_per_h: f64,
    /// `cl_l_per_h / cl_model_l_per_h`.
    pub clearance_ratio: f64,
    /// Hepatic F before and after, and their ratio F_H'/F_H.
    pub hepatic_f: f64,
    pub hepatic_f_patient: f64,
    pub hepatic_f_ratio: f64,
}

/// What covariates and genotype did to a patient, before the measured
/// interactions (which compose after these).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PatientEffects {
    /// The genotype as given (and found in the drug file).
    pub cyp2b6_genotype: Option<String>,
    /// The liver model's numbers, when age or genotype changed anything.
    pub liver: Option<LiverResolution>,
    /// The female clearance multiplier, when it applied.
    pub female_clearance_multiplier: Option<f64>,
    /// Product on elimination clearance (liver ratio × sex); 1: none.
    pub clearance_multiplier: f64,
    /// Per first-pass route: `1 + share·(F_H'/F_H − 1)`; empty: none.
    pub route_f_multipliers: BTreeMap<Route, f64>,
}

impl PatientEffects {
    fn none() -> Self {
        PatientEffects {
            cyp2b6_genotype: None,
            liver: None,
            female_clearance_multiplier: None,
            clearance_multiplier: 1.0,
            route_f_multipliers: BTreeMap::new(),
        }
    }

    /// True when nothing was changed.
    pub fn is_empty(&self) -> bool {
        self.liver.is_none() && self.female_clearance_multiplier.is_none()
    }
}

/// Which effect-dependent assumptions a patient's list carries (the key of
/// the assumption-list cache).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct EffectKey {
    pub(super) female: bool,
    pub(super) liver: bool,
    pub(super) age: bool,
    pub(super) genotype: Option<String>,
}

impl EffectKey {
    pub(super) fn is_empty(&self) -> bool {
        !self.female && !self.liver
    }

    /// Whether the drug-file value at `key` belongs to these effects.
    pub(super) fn covers(&self, key: &str) -> bool {
        (self.female && key == "covariate_effects.female_clearance_multiplier")
            || (self.liver
                && (key == "liver.hepatic_blood_flow_l_per_h"
                    || key == "liver.qh_reference_weight_kg"
                    || key == "liver.hepatic_fraction_of_clearance"
                    || key.starts_with("liver.swallowed_share_of_f.")))
            || (self.age
                && (key == "liver.qh_age_slope_l_per_h_per_year"
                    || key == "liver.qh_age_threshold_years"))
            || self
                .genotype
                .as_deref()
                .is_some_and(|g| key == crate::drug::genotype_key(g))
    }
}

/// The genotype as the drug file spells it: exact, or with the alleles
/// swapped (`*6/*1` is `*1/*6`).
fn find_genotype<'a>(known: impl Iterator<Item = &'a String>, given: &str) -> Option<&'a String> {
    let given = given.trim();
    let swapped = given
        .split_once('/')
        .map(|(a, b)| format!("{}/{}", b.trim(), a.trim()));
    known
        .into_iter()
        .find(|k| k.as_str() == given || swapped.as_deref().is_some_and(|s| k.as_str() == s))
}

/// Covariate and genotype effects for one patient on one model.
pub(super) fn resolve_effects(
    drug: &DrugFile,
    model: &ModelSpec,
    micro: &MicroConstants,
    cov: &Covariates,
    cyp2b6_genotype: Option<&str>,
    warnings: &mut Vec<PatientWarning>,
) -> Result<(PatientEffects, EffectKey), PatientError> {
    let mut effects = PatientEffects::none();
    let mut key = EffectKey {
        female: false,
        liver: false,
        age: false,
        genotype: None,
    };

    // Genotype: the multiplier m on intrinsic clearance.
    let mut m = 1.0;
    let mut genotype_note = None;
    if let Some(given) = cyp2b6_genotype {
        match drug.metabolism() {
            None => warnings.push(PatientWarning {
                code: "metabolism",
                message: format!(
                    "CYP2B6 genotype {given}: the drug file has no genotype data, none applied"
                ),
            }),
            Some(meta) => {
                let Some(name) = find_genotype(meta.cyp2b6.keys(), given) else {
                    return Err(PatientError::UnknownGenotype {
                        genotype: given.to_owned(),
                        known: meta.cyp2b6.keys().cloned().collect::<Vec<_>>().join(", "),
                    });
                };
                let s = meta
                    .cyp2b6
                    .get(name)
                    .map(|g| &g.intrinsic_clearance_multiplier);
                if let Some(s) = s {
                    m = s.value;
                    effects.cyp2b6_genotype = Some(name.clone());
                    if m != 1.0 {
                        genotype_note = Some((name.clone(), s.value, s.source.clone()));
                    }
                }
            }
        }
    }

    // Age: the change in hepatic blood flow at the reference weight.
    let liver = drug.liver();
    let mut qh_age_delta = 0.0;
    let mut age_note = None;
    if let (Some(l), Some(age)) = (liver, cov.age_years) {
        if let Some(a) = &l.age_effect {
            let threshold = a.qh_age_threshold_years.value;
            if age > threshold {
                let slope = a.qh_age_slope_l_per_h_per_year.value;
                qh_age_delta = slope * (age - threshold);
                if qh_age_delta != 0.0 {
                    let source = a.qh_age_slope_l_per_h_per_year.source.clone();
                    age_note = Some((age, slope, threshold, source));
                }
            }
        }
    }

    if let Some(l) = liver {
        if genotype_note.is_some() || age_note.is_some() {
            match well_stirred(l, model, micro, cov.weight_kg, qh_age_delta, m) {
                Ok(r) => {
                    if let Some((age, slope, threshold, source)) = &age_note {
                        key.age = true;
                        warnings.push(PatientWarning {
                            code: "covariate_effect",
                            message: format!(
                                "age {age} y: hepatic blood flow {:.1} → {:.1} L/h ({slope} L/h per year above {threshold} y; {})",
                                r.qh_l_per_h, r.qh_patient_l_per_h, source
                            ),
                        });
                    }
                    if let Some((name, value, source)) = &genotype_note {
                        key.genotype = Some(name.clone());
                        warnings.push(PatientWarning {
                            code: "metabolism",
                            message: format!(
                                "CYP2B6 {name}: intrinsic hepatic clearance × {value} ({source}; in vitro, in vivo evidence conflicts)"
                            ),
                        });
                    }
                    key.liver = true;
                    let mut routes = Vec::new();
                    for (route, share) in &l.swallowed_share_of_f {
                        let f = 1.0 + share.value * (r.hepatic_f_ratio - 1.0);
                        effects.route_f_multipliers.insert(*route, f);
                        routes.push(format!("{route} × {f:.3}"));
                    }
                    warnings.push(PatientWarning {
                        code: "liver",
                        message: format!(
                            "well-stirred liver (Qh {:.1} L/h, intrinsic clearance {:.1} L/h × {}): elimination clearance {:.1} → {:.1} L/h (× {:.3}); hepatic F × {:.3}, applied to the swallowed share of F: {}",
                            r.qh_patient_l_per_h,
                            r.intrinsic_clearance_l_per_h,
                            r.intrinsic_clearance_multiplier,
                            r.cl_model_l_per_h,
                            r.cl_l_per_h,
                            r.clearance_ratio,
                            r.hepatic_f_ratio,
                            if routes.is_empty() { "no first-pass routes".to_owned() } else { routes.join(", ") }
                        ),
                    });
                    effects.clearance_multiplier = r.clearance_ratio;
                    effects.liver = Some(r);
                }
                Err(reason) => warnings.push(PatientWarning {
                    code: "liver",
                    message: format!(
                        "the well-stirred liver cannot describe the {} model for this patient ({reason}): {} not applied",
                        model.key,
                        match (&genotype_note, &age_note) {
                            (Some(_), Some(_)) => "the genotype and age effects are",
                            (Some(_), None) => "the genotype effect is",
                            _ => "the age effect is",
                        }
                    ),
                }),
            }
        }
    }

    // Sex: a measured multiplier on elimination clearance.
    if cov.sex == Some(Sex::Female) {
        if let Some(s) = drug
            .covariate_effects()
            .and_then(|c| c.female_clearance_multiplier.as_ref())
        {
            if s.value != 1.0 {
                key.female = true;
                effects.female_clearance_multiplier = Some(s.value);
                effects.clearance_multiplier *= s.value;
                warnings.push(PatientWarning {
                    code: "covariate_effect",
                    message: format!(
                        "female: elimination clearance × {} ({}; measured for S-ketamine)",
                        s.value, s.source
                    ),
                });
            }
        }
    }
    Ok((effects, key))
}

/// The well-stirred liver for one patient; `Err` says why it cannot apply.
fn well_stirred(
    l: &LiverSpec,
    model: &ModelSpec,
    micro: &MicroConstants,
    weight_kg: f64,
    qh_age_delta_l_per_h: f64,
    m: f64,
) -> Result<LiverResolution, String> {
    let scale = (weight_kg / l.qh_reference_weight_kg.value)
        .powf(model.disposition.clearance_weight_exponent());
    let qh = l.hepatic_blood_flow_l_per_h.value * scale;
    let qh_patient = (l.hepatic_blood_flow_l_per_h.value + qh_age_delta_l_per_h) * scale;
    let cl_model = micro.k10_per_min * micro.v1_l * 60.0;
    let cl_h = l.hepatic_fraction_of_clearance.value * cl_model;
    if cl_h >= qh || cl_h.is_nan() || qh.is_nan() {
        return Err(format!(
            "its hepatic clearance {cl_h:.2} L/h is not below hepatic blood flow {qh:.2} L/h"
        ));
    }
    if qh_patient <= 0.0 || qh_patient.is_nan() {
        return Err(format!(
            "hepatic blood flow at this age would be {qh_patient:.1} L/h"
        ));
    }
    let clint = cl_h * qh / (qh - cl_h);
    let mclint = m * clint;
    let cl_h_patient = qh_patient * mclint / (qh_patient + mclint);
    let cl = cl_model - cl_h + cl_h_patient;
    let hepatic_f = qh / (qh + clint);
    let hepatic_f_patient = qh_patient / (qh_patient + mclint);
    let r = LiverResolution {
        cl_model_l_per_h: cl_model,
        cl_hepatic_l_per_h: cl_h,
        qh_l_per_h: qh,
        qh_patient_l_per_h: qh_patient,
        intrinsic_clearance_l_per_h: clint,
        intrinsic_clearance_multiplier: m,
        cl_l_per_h: cl,
        clearance_ratio: cl / cl_model,
        hepatic_f,
        hepatic_f_patient,
        hepatic_f_ratio: hepatic_f_patient / hepatic_f,
    };
    if [r.clearance_ratio, r.hepatic_f_ratio]
        .iter()
        .all(|x| x.is_finite() && *x > 0.0)
    {
        Ok(r)
    } else {
        Err("the liver formulas give no finite positive ratio".to_owned())
    }
}
