//! Patients: from covariates, model choice and comedications to engine
//! parameters, with every warning and assumption said out loud.
//!
//! [`Formulary`] is a validated drug file plus the values derived from it
//! once: absorption rates solved from published times to peak (`tmax_min`)
//! and effect-site rates solved from times to peak effect (`tpeak_min`), each
//! against its own model at the drug file's reference weight. [`Formulary::resolve`] turns a
//! [`PatientSpec`] into a [`ResolvedPatient`]: the model (chosen by age
//! unless named), weight scaling, interaction multipliers, targets with the
//! patient's overrides, the dose limits for the setting, validity-domain
//! warnings, and the list of assumptions the result rests on. Covariate
//! and genotype effects (sex, age, CYP2B6 through a well-stirred liver) are
//! in [`effects`]; measured interaction multipliers compose after them.

use crate::contract::TargetOverrides;
use crate::drug::{
    Absorption, DoseLimits, DrugFile, EffectSite, MicroConstants, ModelSpec, Sourced,
};
use crate::pk::params::route_index;
use crate::pk::{PkParams, RouteParams};
use crate::vocab::{Route, Setting, Sex};
use nalgebra::{DMatrix, DVector};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

mod effects;
mod known;
use effects::EffectKey;
pub use effects::{LiverResolution, PatientEffects};

/// What is known about a patient.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Covariates {
    pub weight_kg: f64,
    pub age_years: Option<f64>,
    pub sex: Option<Sex>,
    pub height_cm: Option<f64>,
}

/// A patient as admitted: covariates and the clinician's choices.
#[derive(Debug, Clone, PartialEq)]
pub struct PatientSpec {
    pub covariates: Covariates,
    /// A model key from the drug file; `None`: chosen by age.
    pub model: Option<String>,
    pub setting: Setting,
    /// Lower-case generic names.
    pub comedications: Vec<String>,
    pub targets: TargetOverrides,
    /// An indication key of the drug file's `[relief.acute]`; `None`: its
    /// default indication.
    pub indication: Option<String>,
    /// CYP2B6 genotype as written in the drug file's `[metabolism.cyp2b6]`,
    /// e.g. `*1/*6` (alleles in either order); `None`: unknown, no effect.
    /// On the spec rather than [`Covariates`] because it is not a model
    /// covariate (no validity domain) and is optional clinical data.
    pub cyp2b6_genotype: Option<String>,
}

impl PatientSpec {
    /// A patient with only a weight: adult default model, ward setting.
    pub fn weight_only(weight_kg: f64) -> Self {
        PatientSpec {
            covariates: Covariates {
                weight_kg,
                age_years: None,
                sex: None,
                height_cm: None,
            },
            model: None,
            setting: Setting::Ward,
            comedications: Vec::new(),
            targets: TargetOverrides::default(),
            indication: None,
            cyp2b6_genotype: None,
        }
    }
}

/// Why a patient could not be resolved.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PatientError {
    #[error("unknown model '{key}'; the drug file has: {known}")]
    UnknownModel { key: String, known: String },
    #[error("unknown indication '{key}'; the drug file has: {known}")]
    UnknownIndication { key: String, known: String },
    #[error("{field} = {value} is not usable: {reason}")]
    InvalidCovariate {
        field: &'static str,
        value: f64,
        reason: String,
    },
    #[error("targets must satisfy floor < caution < ceiling; got floor {floor}, caution {caution}, ceiling {ceiling} ng/mL")]
    InvalidTargets {
        floor: f64,
        caution: f64,
        ceiling: f64,
    },
    #[error("unknown CYP2B6 genotype '{genotype}'; the drug file has: {known}")]
    UnknownGenotype { genotype: String, known: String },
    #[error("the drug file's parameters do not give a valid model: {0}")]
    InvalidParams(#[from] crate::pk::params::InvalidParams),
    /// The patient's model could not be derived (only from a
    /// [`Formulary::on_demand`]; [`Formulary::new`] refuses such a drug
    /// file).
    #[error("the drug file's model cannot be used: {0}")]
    Derive(#[from] DeriveError),
}

/// A drug file could not be prepared (a tmax or tpeak with no solution).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("cannot derive {what}: {reason}")]
pub struct DeriveError {
    pub what: String,
    pub reason: String,
}

/// How one route's parameters were obtained for a patient.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteResolution {
    pub route: Route,
    /// F after covariate/genotype effects and interaction multipliers (and
    /// the cap at 1, if it applied).
    pub f: f64,
    /// F from the drug file, before interactions.
    pub f_drug_file: f64,
    pub ka_per_min: Option<f64>,
    /// The time to peak the ka was solved from, if it was.
    pub ka_from_tmax_min: Option<f64>,
    pub lag_min: f64,
}

/// An interaction that applies to this patient.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppliedInteraction {
    pub comedication: String,
    pub mechanism: String,
    pub summary: String,
    pub source: String,
    pub clearance_multiplier: Option<f64>,
    pub route_f_multipliers: BTreeMap<Route, f64>,
    /// The pharmacodynamic warning text, if any.
    pub pd_warning: Option<String>,
}

/// Something a clinician should know about how the model fits this patient.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PatientWarning {
    /// `model_domain`, `age_unknown`, `unknown_comedication`,
    /// `pk_interaction`, `pd_interaction`, `f_capped`, `covariate_effect`
    /// (sex, age), `metabolism` (genotype), `liver` (the well-stirred
    /// liver's result, or why it could not apply).
    pub code: &'static str,
    pub message: String,
}

/// A value the result rests on that is an assumption, not a published value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Assumption {
    /// Dotted drug-file key.
    pub key: String,
    pub value: f64,
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The indication a patient's graded acute relief and floor come from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PatientIndication {
    /// Indication key (`acute_pain`).
    pub key: String,
    pub title: String,
    pub ec50_ng_per_ml: f64,
    pub hill: f64,
    pub target_relief_fraction: f64,
    /// The Ce at which relief reaches the target fraction.
    pub floor_ng_per_ml: f64,
    /// The admission named none: the drug file's default.
    pub defaulted: bool,
    /// Relief over weeks is part of the live state.
    pub relief_over_weeks: bool,
}

impl PatientIndication {
    /// Relief (fraction of the maximal relief) at an effect-site
    /// concentration.
    pub fn relief_at(&self, ce_ng_per_ml: f64) -> f64 {
        crate::drug::emax_fraction(ce_ng_per_ml, self.ec50_ng_per_ml, self.hill)
    }
}

/// Concentration targets for this patient (ng/mL).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PatientTargets {
    pub analgesic_floor_ng_per_ml: f64,
    pub psychotomimetic_caution_ng_per_ml: f64,
    pub ceiling_ng_per_ml: f64,
}

/// Everything the engine and the alert rules need about one patient.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResolvedPatient {
    /// Drug-file model key, e.g. `domino`.
    pub model_key: String,
    /// `ketamine/domino`, as the contract's state message names it.
    pub model_label: String,
    pub model_title: String,
    pub model_source: String,
    pub covariates: Covariates,
    pub setting: Setting,
    /// Disposition at this weight, before interactions.
    pub micro_drug_file: MicroConstants,
    /// The engine parameters (covariate effects and interactions applied).
    pub params: PkParams,
    /// What sex, age and genotype changed, before the interactions.
    pub effects: PatientEffects,
    /// ke0 came from a time to peak effect (min), if it did.
    pub ke0_from_tpeak_min: Option<f64>,
    pub routes: Vec<RouteResolution>,
    pub targets: PatientTargets,
    /// `None` when the drug file has no `[relief.acute]` (the floor is then
    /// the drug file's single analgesic floor).
    pub indication: Option<PatientIndication>,
    pub limits: DoseLimits,
    pub interactions: Vec<AppliedInteraction>,
    pub warnings: Vec<PatientWarning>,
    /// Shared by every patient on the same model with the same target
    /// overrides and no covariate effects (built once per model, see
    /// [`Formulary`]); with effects, shared per effect combination.
    #[serde(serialize_with = "serialize_assumptions")]
    pub assumptions: Arc<[Assumption]>,
}

fn serialize_assumptions<S: serde::Serializer>(
    assumptions: &Arc<[Assumption]>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(assumptions.iter())
}

impl ResolvedPatient {
    /// Peripheral volumes and clearances, for people.
    pub fn volumes_l(&self) -> [f64; 3] {
        let p = &self.params;
        let v = |k_out: f64, k_back: f64| {
            if k_back > 0.0 {
                p.v1_l * k_out / k_back
            } else {
                0.0
            }
        };
        [
            p.v1_l,
            v(p.k12_per_min, p.k21_per_min),
            v(p.k13_per_min, p.k31_per_min),
        ]
    }
}

/// A validated drug file with its derived absorption and effect-site rates.
///
/// Two ways to build one, with the same results: [`Formulary::new`]
/// derives every model at once (the daemon: a drug file that cannot be
/// derived stops the start, before any patient), [`Formulary::on_demand`]
/// derives a model the first time a patient on it is resolved (the command
/// line: `dosetrack simulate` for one Domino patient derives Domino only,
/// not the six models' 36 absorption rates).
#[derive(Debug, Clone)]
pub struct Formulary {
    drug: DrugFile,
    /// Per model key: its derived values, once derived (or why they could
    /// not be).
    derived: BTreeMap<String, OnceLock<Result<Arc<ModelDerived>, DeriveError>>>,
    /// The lists of patients with covariate effects, built on first use.
    effect_sets: Arc<EffectSets>,
}

/// What a [`Formulary`] derives for one model, against that model at the
/// drug file's reference weight.
#[derive(Debug)]
struct ModelDerived {
    /// ke0 solved from tpeak, when the model gives a tpeak.
    ke0_from_tpeak: Option<f64>,
    /// ka solved from tmax, per route (index [`route_index`]).
    ka_from_tmax: [Option<f64>; 9],
    /// The assumption lists, per target-override pattern (see
    /// [`override_pattern`]) and indication key (empty: none): built once,
    /// shared by every patient on the model.
    assumption_sets: BTreeMap<(u8, String), Arc<[Assumption]>>,
}

/// The assumption lists of patients with covariate effects, per model key,
/// target-override pattern and effect combination.
type EffectSets = Mutex<BTreeMap<(String, u8, String, EffectKey), Arc<[Assumption]>>>;

/// Which targets a patient overrides, as bits: floor 1, caution 2,
/// ceiling 4 (the assumption list leaves the overridden ones out).
fn override_pattern(overrides: &TargetOverrides) -> u8 {
    u8::from(overrides.analgesic_floor_ng_per_ml.is_some())
        | (u8::from(overrides.psychotomimetic_caution_ng_per_ml.is_some()) << 1)
        | (u8::from(overrides.ceiling_ng_per_ml.is_some()) << 2)
}

impl Formulary {
    /// Derive every model's tmax- and tpeak-based rates and assumption
    /// lists now, each against its own model at the drug file's reference
    /// weight; the first model (in key order) that cannot be derived is the
    /// error.
    pub fn new(drug: DrugFile) -> Result<Self, DeriveError> {
        let formulary = Formulary::on_demand(drug);
        for key in formulary.drug.models().keys() {
            formulary.derived_model(key)?;
        }
        Ok(formulary)
    }

    /// Derive nothing yet: each model is derived the first time a patient
    /// on it is resolved, with the same values [`Formulary::new`] gives (a
    /// model that cannot be derived is then that patient's error,
    /// [`PatientError::Derive`]).
    pub fn on_demand(drug: DrugFile) -> Self {
        let derived = drug
            .models()
            .keys()
            .map(|k| (k.clone(), OnceLock::new()))
            .collect();
        Formulary {
            drug,
            derived,
            effect_sets: Arc::default(),
        }
    }

    /// The derived values of `key` (derived now if they were not yet);
    /// `None` for a key the drug file does not have.
    fn derived_model(&self, key: &str) -> Result<Option<Arc<ModelDerived>>, DeriveError> {
        match self.derived.get(key) {
            None => Ok(None),
            Some(cell) => cell
                .get_or_init(|| self.derive_model(key).map(Arc::new))
                .clone()
                .map(Some),
        }
    }

    /// Derive one model: its ke0 from tpeak, each route's ka from tmax,
    /// and its assumption lists.
    fn derive_model(&self, key: &str) -> Result<ModelDerived, DeriveError> {
        let drug = &self.drug;
        let reference_weight_kg = drug.model_selection().reference_weight_kg;
        let Some(model) = drug.model(key) else {
            return Err(DeriveError {
                what: format!("models.{key}"),
                reason: "no such model".to_owned(),
            });
        };
        let micro = model.disposition.micro_at_weight(reference_weight_kg);
        let ke0_from_tpeak = match &model.effect_site {
            EffectSite::Tpeak { tpeak_min } => Some(
                known::lookup(known::Solved::Ke0ForTpeak, &micro, tpeak_min.value)
                    .or_else(|| solve_ke0_for_tpeak(&micro, tpeak_min.value))
                    .ok_or_else(|| DeriveError {
                        what: format!("models.{key}.effect_site.ke0"),
                        reason: format!("no ke0 gives a peak effect at {} min", tpeak_min.value),
                    })?,
            ),
            EffectSite::Ke0 { .. } => None,
        };
        // Each model's own ka for each tmax, so the time to peak holds for
        // every model (a ka solved on one model and reused peaks late or
        // early in another).
        let mut ka_from_tmax = [None; 9];
        for route in Route::ALL {
            if let Absorption::Tmax { tmax_min } = drug.route(key, route).absorption {
                let ka = known::lookup(known::Solved::KaForTmax, &micro, tmax_min.value)
                    .or_else(|| solve_ka_for_tmax(&micro, tmax_min.value))
                    .ok_or_else(|| DeriveError {
                    what: format!("models.{key}: {route} ka"),
                    reason: format!(
                        "no absorption rate gives a peak at {} min in a {reference_weight_kg} kg patient",
                        tmax_min.value
                    ),
                })?;
                ka_from_tmax[route_index(route)] = Some(ka);
            }
        }
        let indications: Vec<String> = match drug.acute_relief() {
            Some(a) => a.indications.keys().cloned().collect(),
            None => vec![String::new()],
        };
        let mut assumption_sets = BTreeMap::new();
        for pattern in 0..8u8 {
            for ind in &indications {
                let list = self.assumptions_for(key, pattern, ind);
                assumption_sets.insert((pattern, ind.clone()), Arc::from(list));
            }
        }
        Ok(ModelDerived {
            ke0_from_tpeak,
            ka_from_tmax,
            assumption_sets,
        })
    }

    /// The drug file.
    pub fn drug(&self) -> &DrugFile {
        &self.drug
    }

    /// The drug's name, for labels (`ketamine`).
    pub fn drug_name(&self) -> &str {
        &self.drug.drug().name
    }

    /// Resolve a patient.
    pub fn resolve(&self, spec: &PatientSpec) -> Result<ResolvedPatient, PatientError> {
        let cov = &spec.covariates;
        use crate::contract::{AGE_YEARS, HEIGHT_CM, WEIGHT_KG};
        check_covariate("weight_kg", Some(cov.weight_kg), WEIGHT_KG)?;
        check_covariate("age_years", cov.age_years, AGE_YEARS)?;
        check_covariate("height_cm", cov.height_cm, HEIGHT_CM)?;

        let mut warnings = Vec::new();
        let model_key = match &spec.model {
            Some(key) => key.clone(),
            None => {
                if cov.age_years.is_none() {
                    warnings.push(PatientWarning {
                        code: "age_unknown",
                        message: format!(
                            "age not given: the model for unknown age ('{}') is used",
                            self.drug.model_selection().when_age_unknown
                        ),
                    });
                }
                self.drug.select_model(cov.age_years).to_owned()
            }
        };
        let unknown_model = || PatientError::UnknownModel {
            key: model_key.clone(),
            known: self
                .drug
                .models()
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
        };
        let model = self.drug.model(&model_key).ok_or_else(unknown_model)?;
        let derived = self.derived_model(&model_key)?.ok_or_else(unknown_model)?;
        domain_warnings(model, cov, &mut warnings);

        let micro = model.disposition.micro_at_weight(cov.weight_kg);
        let (effects, effect_key) = effects::resolve_effects(
            &self.drug,
            model,
            &micro,
            cov,
            spec.cyp2b6_genotype.as_deref(),
            &mut warnings,
        )?;
        let (ke0, ke0_from_tpeak_min) = match &model.effect_site {
            EffectSite::Ke0 { ke0_per_min } => (ke0_per_min.value, None),
            EffectSite::Tpeak { tpeak_min } => (
                derived.ke0_from_tpeak.unwrap_or(f64::NAN),
                Some(tpeak_min.value),
            ),
        };

        // Interactions.
        let mut interactions = Vec::new();
        let mut cl_multiplier = 1.0;
        let mut f_multipliers: BTreeMap<Route, f64> = BTreeMap::new();
        for name in &spec.comedications {
            let Some(ix) = self.drug.interactions().get(name) else {
                warnings.push(PatientWarning {
                    code: "unknown_comedication",
                    message: format!(
                        "comedication '{name}' is not in the drug file: no interaction data, none applied"
                    ),
                });
                continue;
            };
            let cl = ix.clearance_multiplier.as_ref().map(|s| s.value);
            if let Some(m) = cl {
                cl_multiplier *= m;
            }
            let mut fm = BTreeMap::new();
            for (route, m) in &ix.route_f_multipliers {
                *f_multipliers.entry(*route).or_insert(1.0) *= m.value;
                fm.insert(*route, m.value);
            }
            let pd_warning = ix
                .pd_warning
                .as_ref()
                .and_then(|k| self.drug.pd_warnings().get(k))
                .map(|w| w.text.clone());
            if cl.is_some_and(|m| m != 1.0) || fm.values().any(|m| *m != 1.0) {
                warnings.push(PatientWarning {
                    code: "pk_interaction",
                    message: format!("{name}: {}", ix.summary),
                });
            }
            if let Some(text) = &pd_warning {
                warnings.push(PatientWarning {
                    code: "pd_interaction",
                    message: format!("{name}: {text}"),
                });
            }
            interactions.push(AppliedInteraction {
                comedication: name.clone(),
                mechanism: ix.mechanism.clone(),
                summary: ix.summary.clone(),
                source: ix.source.clone(),
                clearance_multiplier: cl,
                route_f_multipliers: fm,
                pd_warning,
            });
        }

        // Routes.
        let mut routes = Vec::with_capacity(Route::ALL.len());
        let iv = RouteParams {
            f: 1.0,
            ka_per_min: None,
            lag_min: 0.0,
        };
        let mut route_params = [iv; 9];
        for route in Route::ALL {
            let rs = self.drug.route(&model_key, route);
            let (ka, from_tmax) = match &rs.absorption {
                Absorption::None => (None, None),
                Absorption::Ka { ka_per_min } => (Some(ka_per_min.value), None),
                Absorption::Tmax { tmax_min } => (
                    derived.ka_from_tmax[route_index(route)],
                    Some(tmax_min.value),
                ),
            };
            let mult = f_multipliers.get(&route).copied().unwrap_or(1.0);
            let liver_mult = effects.route_f_multipliers.get(&route).copied();
            let mut f = match liver_mult {
                Some(l) => rs.f.value * l * mult,
                None => rs.f.value * mult,
            };
            if f > 1.0 {
                let by_liver = liver_mult
                    .map(|l| format!(" × liver {l:.3}"))
                    .unwrap_or_default();
                warnings.push(PatientWarning {
                    code: "f_capped",
                    message: format!(
                        "{route}: bioavailability {:.3}{by_liver} × interaction multipliers {:.3} = {:.3} exceeds 1; 1 is used",
                        rs.f.value, mult, f
                    ),
                });
                f = 1.0;
            }
            route_params[route_index(route)] = RouteParams {
                f,
                ka_per_min: ka,
                lag_min: rs.lag_min.value,
            };
            routes.push(RouteResolution {
                route,
                f,
                f_drug_file: rs.f.value,
                ka_per_min: ka,
                ka_from_tmax_min: from_tmax,
                lag_min: rs.lag_min.value,
            });
        }

        let params = PkParams {
            v1_l: micro.v1_l,
            k10_per_min: if effects.clearance_multiplier == 1.0 {
                micro.k10_per_min * cl_multiplier
            } else {
                micro.k10_per_min * effects.clearance_multiplier * cl_multiplier
            },
            k12_per_min: micro.k12_per_min,
            k21_per_min: micro.k21_per_min,
            k13_per_min: micro.k13_per_min,
            k31_per_min: micro.k31_per_min,
            ke0_per_min: ke0,
            routes: route_params,
        };
        params.validate()?;

        let indication = self.indication_of(spec)?;
        let t = self.drug.targets();
        let targets = PatientTargets {
            analgesic_floor_ng_per_ml: spec.targets.analgesic_floor_ng_per_ml.unwrap_or(
                indication
                    .as_ref()
                    .map_or(t.analgesic_floor_ng_per_ml.value, |i| i.floor_ng_per_ml),
            ),
            psychotomimetic_caution_ng_per_ml: spec
                .targets
                .psychotomimetic_caution_ng_per_ml
                .unwrap_or(t.psychotomimetic_caution_ng_per_ml.value),
            ceiling_ng_per_ml: spec
                .targets
                .ceiling_ng_per_ml
                .unwrap_or(t.ceiling_ng_per_ml.value),
        };
        if !(targets.analgesic_floor_ng_per_ml < targets.psychotomimetic_caution_ng_per_ml
            && targets.psychotomimetic_caution_ng_per_ml < targets.ceiling_ng_per_ml)
        {
            return Err(PatientError::InvalidTargets {
                floor: targets.analgesic_floor_ng_per_ml,
                caution: targets.psychotomimetic_caution_ng_per_ml,
                ceiling: targets.ceiling_ng_per_ml,
            });
        }
        let limits = self.drug.limits().get(spec.setting).clone();

        let pattern = override_pattern(&spec.targets);
        let ind_key = indication.as_ref().map_or("", |i| i.key.as_str());
        let assumptions = if effect_key.is_empty() {
            match derived.assumption_sets.get(&(pattern, ind_key.to_owned())) {
                Some(shared) => Arc::clone(shared),
                None => Arc::from(self.assumptions_for(&model_key, pattern, ind_key)),
            }
        } else {
            self.effect_assumptions(&model_key, pattern, ind_key, effect_key)
        };
        Ok(ResolvedPatient {
            model_label: format!("{}/{}", self.drug.drug().name, model_key),
            model_title: model.title.clone(),
            model_source: model.source.clone(),
            model_key,
            covariates: cov.clone(),
            setting: spec.setting,
            micro_drug_file: micro,
            params,
            effects,
            ke0_from_tpeak_min,
            routes,
            targets,
            indication,
            limits,
            interactions,
            warnings,
            assumptions,
        })
    }

    /// The patient's indication: the admission's, or the drug file's
    /// default; `None` when the drug file has no `[relief.acute]` (an
    /// indication named anyway is then an error, not ignored).
    fn indication_of(&self, spec: &PatientSpec) -> Result<Option<PatientIndication>, PatientError> {
        let Some(acute) = self.drug.acute_relief() else {
            return match &spec.indication {
                Some(key) => Err(PatientError::UnknownIndication {
                    key: key.clone(),
                    known: "(none: the drug file has no [relief.acute])".to_owned(),
                }),
                None => Ok(None),
            };
        };
        let key = spec
            .indication
            .clone()
            .unwrap_or_else(|| acute.default_indication.clone());
        let ind = acute
            .indications
            .get(&key)
            .ok_or_else(|| PatientError::UnknownIndication {
                key: key.clone(),
                known: acute
                    .indications
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        Ok(Some(PatientIndication {
            title: ind.title.clone(),
            ec50_ng_per_ml: ind.ec50_ng_per_ml.value,
            hill: ind.hill.value,
            target_relief_fraction: ind.target_relief_fraction.value,
            floor_ng_per_ml: ind.floor_ng_per_ml(),
            defaulted: spec.indication.is_none(),
            relief_over_weeks: ind.relief_over_weeks,
            key,
        }))
    }

    /// The assumption list of a patient with covariate effects: the shared
    /// list plus the flagged values of the effects that applied; built once
    /// per combination and shared after (the cache is small: models ×
    /// override patterns × sex/age/genotype).
    fn effect_assumptions(
        &self,
        model_key: &str,
        pattern: u8,
        indication: &str,
        key: EffectKey,
    ) -> Arc<[Assumption]> {
        let cache_key = (model_key.to_owned(), pattern, indication.to_owned(), key);
        if let Ok(cache) = self.effect_sets.lock() {
            if let Some(shared) = cache.get(&cache_key) {
                return Arc::clone(shared);
            }
        }
        let mut list = self.assumptions_for(model_key, pattern, indication);
        list.extend(
            self.drug
                .sourced_values()
                .into_iter()
                .filter(|(k, s)| s.assumption && cache_key.3.covers(k))
                .map(|(k, s)| Assumption {
                    key: k,
                    value: s.value,
                    source: s.source.clone(),
                    note: s.note.clone(),
                }),
        );
        let list: Arc<[Assumption]> = Arc::from(list);
        if let Ok(mut cache) = self.effect_sets.lock() {
            cache.insert(cache_key, Arc::clone(&list));
        }
        list
    }

    /// The assumption-flagged values that a patient on `model_key` rests on:
    /// the model's own values and every route's, and the targets the patient
    /// has not overridden.
    /// `pattern`: the targets overridden, see [`override_pattern`].
    fn assumptions_for(&self, model_key: &str, pattern: u8, indication: &str) -> Vec<Assumption> {
        let model_prefix = format!("models.{model_key}.");
        let indication_prefix = format!("relief.acute.indications.{indication}.");
        let overridden = |key: &str| {
            (key.ends_with("analgesic_floor_ng_per_ml") && pattern & 1 != 0)
                || (key.ends_with("psychotomimetic_caution_ng_per_ml") && pattern & 2 != 0)
                || (key.ends_with("ceiling_ng_per_ml") && pattern & 4 != 0)
        };
        self.drug
            .sourced_values()
            .into_iter()
            .filter(|(key, s)| {
                s.assumption
                    && (key.starts_with(&model_prefix)
                        || key.starts_with("routes.")
                        || (!indication.is_empty()
                            && key.starts_with(&indication_prefix)
                            && pattern & 1 == 0)
                        || (key.starts_with("targets.")
                            && !overridden(key)
                            // With an indication the floor is its, not this.
                            && (indication.is_empty()
                                || !key.ends_with("analgesic_floor_ng_per_ml"))))
            })
            .map(|(key, s): (String, &Sourced<f64>)| Assumption {
                key,
                value: s.value,
                source: s.source.clone(),
                note: s.note.clone(),
            })
            .collect()
    }
}

/// Covariates use the contract's plausibility ranges, so the offline
/// commands and the daemon accept the same patients.
fn check_covariate(
    field: &'static str,
    value: Option<f64>,
    range: crate::contract::Range,
) -> Result<(), PatientError> {
    match value {
        Some(v) if !range.contains(v) => Err(PatientError::InvalidCovariate {
            field,
            value: v,
            reason: range.requirement(field),
        }),
        _ => Ok(()),
    }
}

fn domain_warnings(model: &ModelSpec, cov: &Covariates, warnings: &mut Vec<PatientWarning>) {
    let describe = |b: &crate::drug::Bounds| match (b.min, b.max) {
        (Some(lo), Some(hi)) => format!("{lo}–{hi}"),
        (Some(lo), None) => format!("≥ {lo}"),
        (None, Some(hi)) => format!("≤ {hi}"),
        (None, None) => "any".to_owned(),
    };
    if let (Some(b), Some(age)) = (&model.validity.age_years, cov.age_years) {
        if !b.contains(age) {
            warnings.push(PatientWarning {
                code: "model_domain",
                message: format!(
                    "age {age} y is outside the {} model's validity domain ({} y{})",
                    model.key,
                    describe(b),
                    if b.assumption {
                        ", itself an assumption"
                    } else {
                        ""
                    }
                ),
            });
        }
    }
    if let Some(b) = &model.validity.weight_kg {
        if !b.contains(cov.weight_kg) {
            warnings.push(PatientWarning {
                code: "model_domain",
                message: format!(
                    "weight {} kg is outside the {} model's validity domain ({} kg{})",
                    cov.weight_kg,
                    model.key,
                    describe(b),
                    if b.assumption {
                        ", itself an assumption"
                    } else {
                        ""
                    }
                ),
            });
        }
    }
}

// ---------------------------------------------------------------------------
// Derivations: ke0 from tpeak, ka from tmax. Small dense systems solved with
// the matrix exponential directly (a few µs each); monotone in the unknown,
// so bisection in log space converges to a relative 1e-10.
// ---------------------------------------------------------------------------

/// Disposition matrix rows for A1, A2, A3 (amounts, per min).
fn disposition(m: &mut DMatrix<f64>, micro: &MicroConstants) {
    m[(0, 0)] = -(micro.k10_per_min + micro.k12_per_min + micro.k13_per_min);
    m[(0, 1)] = micro.k21_per_min;
    m[(0, 2)] = micro.k31_per_min;
    m[(1, 0)] = micro.k12_per_min;
    m[(1, 1)] = -micro.k21_per_min;
    m[(2, 0)] = micro.k13_per_min;
    m[(2, 2)] = -micro.k31_per_min;
}

/// First time in `(0, 600 min]` where `pred` holds, given it fails just
/// after 0; bisected to 1e-7 min.
fn first_time(
    m: &DMatrix<f64>,
    x0: &DVector<f64>,
    pred: impl Fn(&DVector<f64>) -> bool,
) -> Option<f64> {
    let at = |t: f64| (m * t).exp() * x0;
    // Geometric scan from 1e-3 min.
    let mut lo = 0.0;
    let mut hi = 1e-3;
    while !pred(&at(hi)) {
        lo = hi;
        hi *= 1.25;
        if hi > 600.0 {
            return None;
        }
    }
    while hi - lo > 1e-7 {
        let mid = 0.5 * (lo + hi);
        if pred(&at(mid)) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

/// Time to peak effect-site concentration after an IV bolus (min).
pub fn tpeak_for_ke0(micro: &MicroConstants, ke0: f64) -> Option<f64> {
    let mut m = DMatrix::<f64>::zeros(4, 4);
    disposition(&mut m, micro);
    m[(3, 0)] = ke0 / micro.v1_l;
    m[(3, 3)] = -ke0;
    let x0 = DVector::from_vec(vec![1.0, 0.0, 0.0, 0.0]);
    // Ce peaks where Ce' = ke0 (Cp − Ce) turns negative.
    first_time(&m, &x0, |x| x[0] / micro.v1_l - x[3] < 0.0)
}

/// Time to peak plasma concentration after a depot dose absorbed at `ka`.
pub fn tmax_for_ka(micro: &MicroConstants, ka: f64) -> Option<f64> {
    let mut m = DMatrix::<f64>::zeros(4, 4);
    disposition(&mut m, micro);
    m[(0, 3)] = ka;
    m[(3, 3)] = -ka;
    let x0 = DVector::from_vec(vec![0.0, 0.0, 0.0, 1.0]);
    let row0 = m.row(0).clone_owned();
    // Cp peaks where A1' turns negative.
    first_time(&m, &x0, |x| (row0.clone() * x)[(0, 0)] < 0.0)
}

/// Solve `f(rate) = target` for a decreasing `f` by bisection in log space.
fn solve_decreasing(target: f64, f: impl Fn(f64) -> Option<f64>) -> Option<f64> {
    if !(target.is_finite() && target > 0.0) {
        return None;
    }
    let (mut lo, mut hi) = (1e-5f64.ln(), 1e3f64.ln());
    // f(lo) must be above the target and f(hi) below it.
    let above = |r: f64| f(r.exp()).is_none_or(|t| t > target);
    if !above(lo) || above(hi) {
        return None;
    }
    for _ in 0..200 {
        if hi - lo < 1e-11 {
            break;
        }
        let mid = 0.5 * (lo + hi);
        if above(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some((0.5 * (lo + hi)).exp())
}

/// The ke0 (per min) giving a peak effect at `tpeak_min` after an IV bolus.
pub fn solve_ke0_for_tpeak(micro: &MicroConstants, tpeak_min: f64) -> Option<f64> {
    solve_decreasing(tpeak_min, |ke0| tpeak_for_ke0(micro, ke0))
}

/// The ka (per min) giving a plasma peak at `tmax_min` after a depot dose.
pub fn solve_ka_for_tmax(micro: &MicroConstants, tmax_min: f64) -> Option<f64> {
    solve_decreasing(tmax_min, |ka| tmax_for_ka(micro, ka))
}

#[cfg(test)]
mod tests;
