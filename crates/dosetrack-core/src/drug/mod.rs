//! The drug file: every clinical number the engine uses, each with its source.
//!
//! The shipped file is `config/drugs/ketamine.toml` (built into the binary, see
//! [`DrugFile::builtin`]); `docs/drug-file.md` describes the schema, the
//! validation rules and the shipped values. This module is pure: it parses
//! text ([`DrugFile::from_toml_str`]); reading a file is the shell's
//! (`dosetrack::drug_file::load`).
//!
//! Parsing has four steps, stopping at the first error:
//!
//! 1. TOML syntax ([`DrugFileError::Parse`], with toml's line/column report);
//! 2. `schema_version` must be [`SCHEMA_VERSION`];
//! 3. structure: `serde` into private raw structs (`raw`) that deny unknown keys, so a
//!    typo such as `k10_per_mn` is reported as [`DrugFileError::Invalid`] with
//!    its dotted key path (recovered from toml's error span) and line/column;
//! 4. validation (`validate`): ranges, cross-references and consistency rules, each
//!    failure a [`DrugFileError::Invalid`] naming the dotted key (e.g.
//!    `models.domino.disposition.k10_per_min`).
//!
//! Every clinical number is a [`Sourced`] value: the number, a non-empty
//! source, an `assumption` flag (true when the number is our assumption or our
//! own derivation rather than a published value) and an optional note.
//!
//! A [`DrugFile`] exists only validated: its fields are private, and its
//! route table and dose limits are complete by type (`tables`).
//!
//! **Decision support, not a medical device.**

mod raw;
mod tables;
#[cfg(test)]
mod tests;
mod validate;

pub use tables::{RouteTable, SettingLimits};

use crate::vocab::{Route, Setting};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The schema version this loader reads (`schema_version` in the file).
pub const SCHEMA_VERSION: u32 = 1;

/// Text of the shipped drug file, compiled into the binary.
pub const BUILTIN_TOML: &str = include_str!("../../../../config/drugs/ketamine.toml");

/// Name used for the built-in file in error messages.
pub const BUILTIN_PATH: &str = "builtin:config/drugs/ketamine.toml";

/// Source recorded for a route's lag when the file gives none.
pub const NO_LAG_SOURCE: &str = "no lag reported";

/// Why a drug file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DrugFileError {
    /// The file could not be read (by the shell's loader; the core reads
    /// no files).
    #[error("cannot read drug file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid TOML. `message` is toml's report, with line and
    /// column.
    #[error("drug file {} is not valid TOML: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    /// The file is valid TOML but breaks the schema or a validation rule.
    /// `key` is the dotted path of the offending key, e.g.
    /// `models.domino.disposition.k10_per_min` or `model_selection.by_age[1].model`.
    #[error("drug file {}: `{key}`: {message}", path.display())]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// A clinical number with its provenance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sourced<T> {
    pub value: T,
    /// Paper and/or software the value comes from; never empty.
    pub source: String,
    /// True when the value is our assumption or our own derivation, not a
    /// published value.
    pub assumption: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A validated drug file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrugFile {
    schema_version: u32,
    drug: DrugInfo,
    model_selection: ModelSelection,
    models: BTreeMap<String, ModelSpec>,
    /// All nine routes.
    routes: RouteTable,
    targets: Targets,
    /// Both settings.
    limits: SettingLimits,
    /// Keyed by lower-case generic name (the contract's `comedications`).
    interactions: BTreeMap<String, Interaction>,
    pd_warnings: BTreeMap<String, PdWarning>,
    /// The relief models (`[relief]`), if the file has them.
    relief: Option<ReliefSpec>,
    /// The well-stirred liver (`[liver]`), if the file has it.
    liver: Option<LiverSpec>,
    /// Published covariate effects (`[covariate_effects]`), if any.
    covariate_effects: Option<CovariateEffects>,
    /// Metabolic genotypes (`[metabolism]`), if any; needs `[liver]`.
    metabolism: Option<MetabolismSpec>,
    /// The metabolite model (`[norketamine]`), if the file has it.
    norketamine: Option<NorketamineSpec>,
}

/// The liver as a well-stirred organ (`[liver]`): hepatic blood flow and
/// how much of a model's clearance is hepatic, so that a change in
/// intrinsic clearance or in blood flow moves IV clearance and first-pass
/// F each by its own formula.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiverSpec {
    /// Hepatic blood flow Qh at `qh_reference_weight_kg`, age ≤ threshold.
    pub hepatic_blood_flow_l_per_h: Sourced<f64>,
    /// Qh is scaled as the model's clearance: `(W/ref)^clearance_exponent`
    /// (exponent 1 for `kind = "micro"`, whose clearance is linear in weight).
    pub qh_reference_weight_kg: Sourced<f64>,
    /// Share of the model's clearance that is hepatic (0 < x ≤ 1).
    pub hepatic_fraction_of_clearance: Sourced<f64>,
    /// Age effect on Qh: `slope` (≤ 0) per year above `threshold`.
    pub age_effect: Option<QhAgeEffect>,
    /// Per first-pass route, the share of that route's F that arrives after
    /// passing the liver (oral 1); only that share moves with hepatic F.
    pub swallowed_share_of_f: BTreeMap<Route, Sourced<f64>>,
}

/// Qh falls by `slope` L/h per year of age above `threshold`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QhAgeEffect {
    pub qh_age_slope_l_per_h_per_year: Sourced<f64>,
    pub qh_age_threshold_years: Sourced<f64>,
}

/// Published covariate effects on clearance (`[covariate_effects]`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CovariateEffects {
    /// Multiplies the elimination clearance of women.
    pub female_clearance_multiplier: Option<Sourced<f64>>,
}

/// Metabolic genotypes (`[metabolism]`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetabolismSpec {
    /// CYP2B6 genotypes (e.g. `*1/*6`), each a multiplier on hepatic
    /// intrinsic clearance.
    pub cyp2b6: BTreeMap<String, GenotypeEffect>,
}

/// What one genotype does to hepatic intrinsic clearance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GenotypeEffect {
    pub intrinsic_clearance_multiplier: Sourced<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrugInfo {
    pub name: String,
    /// What amounts are amounts of (ketamine base, per the contract).
    pub substance: String,
    pub molar_mass_g_per_mol: Sourced<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelSelection {
    /// Ordered; the first rule whose `below_age_years` is greater than the
    /// patient's age wins. The last rule has no bound (matches everyone).
    pub by_age: Vec<AgeRule>,
    pub when_age_unknown: String,
    /// Weight of the reference patient: each model's tmax-derived
    /// absorption rates and tpeak-derived ke0 are solved against that model
    /// at this weight.
    pub reference_weight_kg: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgeRule {
    pub below_age_years: Option<f64>,
    pub model: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelSpec {
    pub key: String,
    pub title: String,
    pub population: String,
    pub source: String,
    /// 1, 2 or 3; consistent with the parameters of `disposition`.
    pub compartments: u8,
    pub disposition: Disposition,
    pub effect_site: EffectSite,
    pub validity: Validity,
    /// Per-model route overrides; see [`DrugFile::route`].
    pub route_overrides: BTreeMap<Route, RouteOverride>,
}

/// Disposition (distribution and elimination) parameters.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Disposition {
    /// V1 linear in total body weight; micro rate constants per minute, not
    /// weight-scaled. Always 2 or 3 compartments.
    Micro {
        v1_l_per_kg: Sourced<f64>,
        k10_per_min: Sourced<f64>,
        k12_per_min: Sourced<f64>,
        k21_per_min: Sourced<f64>,
        k13_per_min: Option<Sourced<f64>>,
        k31_per_min: Option<Sourced<f64>>,
    },
    /// Volumes and clearances at `reference_weight_kg`, scaled allometrically:
    /// `V × (W/ref)^volume_exponent`, `CL, Q × (W/ref)^clearance_exponent`.
    Clearance {
        reference_weight_kg: f64,
        v1_l: Sourced<f64>,
        v2_l: Option<Sourced<f64>>,
        v3_l: Option<Sourced<f64>>,
        cl_l_per_h: Sourced<f64>,
        q2_l_per_h: Option<Sourced<f64>>,
        q3_l_per_h: Option<Sourced<f64>>,
        volume_exponent: Sourced<f64>,
        clearance_exponent: Sourced<f64>,
    },
}

/// Micro constants for one body weight (no interaction multipliers applied).
/// Absent compartments have zero rate constants and zero volume.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MicroConstants {
    pub v1_l: f64,
    pub k10_per_min: f64,
    pub k12_per_min: f64,
    pub k21_per_min: f64,
    pub k13_per_min: f64,
    pub k31_per_min: f64,
}

impl MicroConstants {
    /// Peripheral volume V2 = V1·k12/k21 (0 when absent).
    pub fn v2_l(&self) -> f64 {
        ratio_volume(self.v1_l, self.k12_per_min, self.k21_per_min)
    }

    /// Peripheral volume V3 = V1·k13/k31 (0 when absent).
    pub fn v3_l(&self) -> f64 {
        ratio_volume(self.v1_l, self.k13_per_min, self.k31_per_min)
    }
}

fn ratio_volume(v1: f64, k_out: f64, k_back: f64) -> f64 {
    if k_back > 0.0 {
        v1 * k_out / k_back
    } else {
        0.0
    }
}

impl Disposition {
    /// The exponent by which this model's elimination clearance scales with
    /// weight: `clearance_exponent`, or 1 for `kind = "micro"` (k10 is not
    /// weight-scaled and V1 is linear in weight).
    pub fn clearance_weight_exponent(&self) -> f64 {
        match self {
            Disposition::Micro { .. } => 1.0,
            Disposition::Clearance {
                clearance_exponent, ..
            } => clearance_exponent.value,
        }
    }

    /// Micro constants for a patient of `weight_kg` (weight scaling only).
    pub fn micro_at_weight(&self, weight_kg: f64) -> MicroConstants {
        let val = |s: &Option<Sourced<f64>>| s.as_ref().map_or(0.0, |s| s.value);
        match self {
            Disposition::Micro {
                v1_l_per_kg,
                k10_per_min,
                k12_per_min,
                k21_per_min,
                k13_per_min,
                k31_per_min,
            } => MicroConstants {
                v1_l: v1_l_per_kg.value * weight_kg,
                k10_per_min: k10_per_min.value,
                k12_per_min: k12_per_min.value,
                k21_per_min: k21_per_min.value,
                k13_per_min: val(k13_per_min),
                k31_per_min: val(k31_per_min),
            },
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
                let size = weight_kg / reference_weight_kg;
                let fv = size.powf(volume_exponent.value);
                let fc = size.powf(clearance_exponent.value) / 60.0;
                let v1 = v1_l.value * fv;
                let per_volume = |q: f64, v: f64| if v > 0.0 { q / v } else { 0.0 };
                let (v2, v3) = (val(v2_l) * fv, val(v3_l) * fv);
                let (q2, q3) = (val(q2_l_per_h) * fc, val(q3_l_per_h) * fc);
                MicroConstants {
                    v1_l: v1,
                    k10_per_min: per_volume(cl_l_per_h.value * fc, v1),
                    k12_per_min: per_volume(q2, v1),
                    k21_per_min: per_volume(q2, v2),
                    k13_per_min: per_volume(q3, v1),
                    k31_per_min: per_volume(q3, v3),
                }
            }
        }
    }
}

/// How the effect site is linked to plasma.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EffectSite {
    /// A given equilibration rate constant.
    Ke0 { ke0_per_min: Sourced<f64> },
    /// A time to peak effect after an IV bolus; the engine solves ke0 for it
    /// against the reference patient.
    Tpeak { tpeak_min: Sourced<f64> },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Validity {
    pub age_years: Option<Bounds>,
    pub weight_kg: Option<Bounds>,
}

/// A covariate range; at least one of `min`/`max` is set, and `min < max`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bounds {
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub source: String,
    pub assumption: bool,
}

impl Bounds {
    /// True when `x` lies within the bounds (inclusive).
    pub fn contains(&self, x: f64) -> bool {
        self.min.is_none_or(|m| x >= m) && self.max.is_none_or(|m| x <= m)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteSpec {
    /// Bioavailability, 0 < f ≤ 1.
    pub f: Sourced<f64>,
    pub absorption: Absorption,
    /// Absorption lag; value 0 with source [`NO_LAG_SOURCE`] (an assumption)
    /// when the file gives none.
    pub lag_min: Sourced<f64>,
}

/// How an extravascular dose reaches the central compartment.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Absorption {
    /// Intravenous: straight into the central compartment.
    None,
    /// First-order absorption with a given rate constant.
    Ka { ka_per_min: Sourced<f64> },
    /// First-order absorption whose rate the engine solves so that a single
    /// dose peaks at `tmax_min` in the reference patient.
    Tmax { tmax_min: Sourced<f64> },
}

/// A model's changes to the general route table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteOverride {
    pub f: Option<Sourced<f64>>,
    /// Never [`Absorption::None`].
    pub absorption: Option<Absorption>,
    pub lag_min: Option<Sourced<f64>>,
}

/// The relief models of the drug file (`[relief]`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReliefSpec {
    pub chronic: ChronicReliefSpec,
    /// Graded acute relief per indication (`[relief.acute]`), if given.
    pub acute: Option<AcuteReliefSpec>,
}

/// Graded acute relief: per indication, an Emax model of relief against Ce,
/// `relief = Ce^hill / (ec50^hill + Ce^hill)` (a fraction of the maximal
/// relief), and the relief fraction wanted, from which the patient's
/// analgesic floor follows ([`IndicationSpec::floor_ng_per_ml`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AcuteReliefSpec {
    /// The indication of a patient whose admission names none.
    pub default_indication: String,
    pub indications: BTreeMap<String, IndicationSpec>,
}

/// One indication's concentration–relief curve.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IndicationSpec {
    pub title: String,
    pub ec50_ng_per_ml: Sourced<f64>,
    pub hill: Sourced<f64>,
    /// The relief fraction wanted (0 < f < 1).
    pub target_relief_fraction: Sourced<f64>,
    /// Whether relief over weeks (`[relief.chronic]`) is part of this
    /// indication's live state (chronic pain after infusion series).
    pub relief_over_weeks: bool,
}

impl IndicationSpec {
    /// Relief (fraction of the maximum) at an effect-site concentration.
    pub fn relief_at(&self, ce_ng_per_ml: f64) -> f64 {
        emax_fraction(ce_ng_per_ml, self.ec50_ng_per_ml.value, self.hill.value)
    }

    /// The Ce at which relief reaches the target fraction:
    /// `ec50 · (f / (1 − f))^(1/hill)`.
    pub fn floor_ng_per_ml(&self) -> f64 {
        let f = self.target_relief_fraction.value;
        self.ec50_ng_per_ml.value * (f / (1.0 - f)).powf(1.0 / self.hill.value)
    }
}

/// `c^γ / (c50^γ + c^γ)`, 0 for c ≤ 0 (and for anything not a number).
pub fn emax_fraction(c: f64, c50: f64, hill: f64) -> f64 {
    if c.is_nan() || c <= 0.0 {
        0.0
    } else {
        let x = (c / c50).powf(hill);
        if x.is_infinite() {
            1.0
        } else {
            x / (1.0 + x)
        }
    }
}

/// Relief over weeks after infusions: a slow effect compartment driven by
/// `s_fraction` × Cp with `half_life_days`, and relief (fraction of the
/// maximum) `C^hill / (c50^hill + C^hill)` on it (Dahan 2011).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChronicReliefSpec {
    pub half_life_days: Sourced<f64>,
    pub c50_ng_per_ml: Sourced<f64>,
    pub hill: Sourced<f64>,
    pub s_fraction: Sourced<f64>,
    pub response_probability: Sourced<f64>,
    pub placebo_response_probability: Sourced<f64>,
}

/// The norketamine model (`[norketamine]`): a two-compartment metabolite
/// formed from the parent's elimination (`formation_fraction`) and, for
/// some routes, on first pass (`first_pass_fraction`, a fraction of the
/// dose). Volumes and clearances are at `reference_weight_kg`, scaled as
/// `V × (W/ref)^volume_exponent`, `CL, Q × (W/ref)^clearance_exponent`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NorketamineSpec {
    pub reference_weight_kg: f64,
    pub v_l: Sourced<f64>,
    pub cl_l_per_h: Sourced<f64>,
    pub vp_l: Sourced<f64>,
    pub q_l_per_h: Sourced<f64>,
    pub volume_exponent: Sourced<f64>,
    pub clearance_exponent: Sourced<f64>,
    pub formation_fraction: Sourced<f64>,
    /// Extravascular routes only; a route not listed has none.
    pub first_pass_fraction: BTreeMap<Route, Sourced<f64>>,
    /// Effect relative to ketamine; a sensitivity setting, 0 (not counted)
    /// by default and, for now, the only value accepted.
    pub potency_relative_to_ketamine: Sourced<f64>,
}

impl NorketamineSpec {
    /// `(v_l, cl_l_per_h, vp_l, q_l_per_h)` at a body weight.
    pub fn at_weight(&self, weight_kg: f64) -> (f64, f64, f64, f64) {
        let r = weight_kg / self.reference_weight_kg;
        let v = r.powf(self.volume_exponent.value);
        let c = r.powf(self.clearance_exponent.value);
        (
            self.v_l.value * v,
            self.cl_l_per_h.value * c,
            self.vp_l.value * v,
            self.q_l_per_h.value * c,
        )
    }
}

/// Concentration thresholds, ng/mL; floor < caution < ceiling.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Targets {
    pub analgesic_floor_ng_per_ml: Sourced<f64>,
    pub psychotomimetic_caution_ng_per_ml: Sourced<f64>,
    pub ceiling_ng_per_ml: Sourced<f64>,
}

/// Dose limits for one care setting, per kg of total body weight.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DoseLimits {
    pub max_bolus_mg_per_kg: Sourced<f64>,
    pub max_infusion_mg_per_kg_per_h: Sourced<f64>,
    pub max_cumulative_mg_per_kg_per_24h: Sourced<f64>,
}

/// What a comedication does to ketamine.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Interaction {
    pub key: String,
    pub mechanism: String,
    pub summary: String,
    pub source: String,
    /// Multiplies elimination clearance (k10, or CL in the clearance form).
    pub clearance_multiplier: Option<Sourced<f64>>,
    /// Multiplies a route's F (extravascular routes only). The caller caps
    /// the product at 1.
    pub route_f_multipliers: BTreeMap<Route, Sourced<f64>>,
    /// Key into [`DrugFile::pd_warnings`].
    pub pd_warning: Option<String>,
}

/// A pharmacodynamic warning: shown to people, never applied to
/// concentrations.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PdWarning {
    pub key: String,
    pub text: String,
    pub source: String,
    pub assumption: bool,
}

/// Whether every integer in `v` fits an `i64` (what a `toml::Value` holds).
fn integers_fit_i64(v: &toml::de::DeValue<'_>) -> bool {
    use toml::de::DeValue;
    match v {
        DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix()).is_ok(),
        DeValue::Array(a) => a.iter().all(|e| integers_fit_i64(e.get_ref())),
        DeValue::Table(t) => t.iter().all(|(_, e)| integers_fit_i64(e.get_ref())),
        DeValue::String(_) | DeValue::Float(_) | DeValue::Boolean(_) | DeValue::Datetime(_) => true,
    }
}

impl DrugFile {
    /// Parse and validate drug-file text; `path_for_errors` only labels errors.
    ///
    /// A sound file is parsed once ([`Self::parse_once`]); a file with any
    /// fault is read again the long way, which finds and words the fault.
    pub fn from_toml_str(text: &str, path_for_errors: &Path) -> Result<Self, DrugFileError> {
        match Self::parse_once(text) {
            Some(raw) => raw.validate(&raw::Ctx {
                path: path_for_errors,
            }),
            None => Self::from_toml_str_in_steps(text, path_for_errors),
        }
    }

    /// The structure of a file the long way ([`Self::from_toml_str_in_steps`])
    /// would accept up to its validation, from one parse, or `None` when
    /// that way might find a fault here.
    ///
    /// The long way parses the text twice: into a `toml::Table` (syntax,
    /// then the schema version), then into the structure. `toml::from_str`
    /// is a parse into toml's `DeTable` and a deserialisation from it, so
    /// one `DeTable` serves both when it has no fault: the first step fails
    /// on exactly a syntax error (the same parse) or an integer outside
    /// `i64` (a `toml::Value` holds `i64`; the structure's `f64` fields
    /// would take one), so both are looked for; the schema version must be
    /// the integer the long way checks; and the structure must deserialise.
    /// Otherwise `None`, and the long way gives its error word for word.
    fn parse_once(text: &str) -> Option<raw::RawFile> {
        use serde::Deserialize as _;
        let root = toml::de::DeTable::parse(text).ok()?;
        if !root
            .get_ref()
            .iter()
            .all(|(_, v)| integers_fit_i64(v.get_ref()))
        {
            return None;
        }
        let version = root
            .get_ref()
            .iter()
            .find(|(k, _)| k.get_ref() == "schema_version")
            .and_then(|(_, v)| v.get_ref().as_integer())
            .and_then(|v| i64::from_str_radix(v.as_str(), v.radix()).ok());
        if version != Some(i64::from(SCHEMA_VERSION)) {
            return None;
        }
        raw::RawFile::deserialize(toml::de::Deserializer::from(root)).ok()
    }

    /// [`Self::from_toml_str`] step by step: every fault found and worded.
    fn from_toml_str_in_steps(text: &str, path_for_errors: &Path) -> Result<Self, DrugFileError> {
        let path = path_for_errors.to_path_buf();
        let ctx = raw::Ctx { path: &path };

        // 1. Syntax.
        let table: toml::Table = toml::from_str(text).map_err(|e| DrugFileError::Parse {
            path: path.clone(),
            message: e.to_string().trim_end().to_owned(),
        })?;

        // 2. Schema version first, so a file of another version gets one clear
        //    message instead of a cascade of structural ones.
        match table.get("schema_version") {
            None => {
                return Err(ctx.invalid(
                    "schema_version",
                    format!("missing; this loader reads schema_version = {SCHEMA_VERSION}"),
                ))
            }
            Some(toml::Value::Integer(v)) if *v == i64::from(SCHEMA_VERSION) => {}
            Some(other) => {
                return Err(ctx.invalid(
                    "schema_version",
                    format!(
                        "unsupported schema version {other}; this loader reads {SCHEMA_VERSION}"
                    ),
                ))
            }
        }

        // 3. Structure.
        let raw: raw::RawFile =
            toml::from_str(text).map_err(|e| raw::structural_error(&ctx, text, &e))?;

        // 4. Values and cross-references.
        raw.validate(&ctx)
    }

    /// The shipped drug file (compiled in). Fails only if the shipped file is
    /// broken, which the tests rule out.
    pub fn builtin() -> Result<Self, DrugFileError> {
        Self::from_toml_str(BUILTIN_TOML, Path::new(BUILTIN_PATH))
    }

    pub fn model(&self, key: &str) -> Option<&ModelSpec> {
        self.models.get(key)
    }

    /// The model key for a patient's age (years); `None` uses
    /// `when_age_unknown`. A non-finite age matches only the unbounded last
    /// rule.
    pub fn select_model(&self, age_years: Option<f64>) -> &str {
        let Some(age) = age_years else {
            return &self.model_selection.when_age_unknown;
        };
        self.model_selection
            .by_age
            .iter()
            .find(|rule| rule.below_age_years.is_none_or(|b| b > age))
            .map_or(&self.model_selection.when_age_unknown, |rule| &rule.model)
    }

    /// The route table entry for `route` with `model_key`'s overrides applied
    /// (an unknown model key gets the general entry).
    pub fn route(&self, model_key: &str, route: Route) -> RouteSpec {
        let mut spec = self.routes.get(route).clone();
        if let Some(ov) = self
            .models
            .get(model_key)
            .and_then(|m| m.route_overrides.get(&route))
        {
            if let Some(f) = &ov.f {
                spec.f = f.clone();
            }
            if let Some(a) = &ov.absorption {
                spec.absorption = a.clone();
            }
            if let Some(lag) = &ov.lag_min {
                spec.lag_min = lag.clone();
            }
        }
        spec
    }

    /// The schema version the file was written for ([`SCHEMA_VERSION`]).
    pub fn schema_version(&self) -> u32 {
        self.schema_version
    }

    /// The drug: name, substance, molar mass.
    pub fn drug(&self) -> &DrugInfo {
        &self.drug
    }

    /// How a patient's model is chosen.
    pub fn model_selection(&self) -> &ModelSelection {
        &self.model_selection
    }

    /// Every model, by key.
    pub fn models(&self) -> &BTreeMap<String, ModelSpec> {
        &self.models
    }

    /// The general route table (every route; no model's overrides: see
    /// [`route`](Self::route)).
    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    /// The concentration thresholds.
    pub fn targets(&self) -> &Targets {
        &self.targets
    }

    /// The relief models, if the file has a `[relief]` section.
    pub fn relief(&self) -> Option<&ReliefSpec> {
        self.relief.as_ref()
    }

    /// The graded acute relief per indication, if the file has
    /// `[relief.acute]`.
    pub fn acute_relief(&self) -> Option<&AcuteReliefSpec> {
        self.relief.as_ref().and_then(|r| r.acute.as_ref())
    }

    /// The well-stirred liver, if the file has a `[liver]` section.
    pub fn liver(&self) -> Option<&LiverSpec> {
        self.liver.as_ref()
    }

    /// Published covariate effects, if the file has `[covariate_effects]`.
    pub fn covariate_effects(&self) -> Option<&CovariateEffects> {
        self.covariate_effects.as_ref()
    }

    /// Metabolic genotypes, if the file has a `[metabolism]` section.
    pub fn metabolism(&self) -> Option<&MetabolismSpec> {
        self.metabolism.as_ref()
    }

    /// The norketamine model, if the file has a `[norketamine]` section.
    pub fn norketamine(&self) -> Option<&NorketamineSpec> {
        self.norketamine.as_ref()
    }

    /// The dose limits of every care setting.
    pub fn limits(&self) -> &SettingLimits {
        &self.limits
    }

    /// Interactions, keyed by lower-case generic name.
    pub fn interactions(&self) -> &BTreeMap<String, Interaction> {
        &self.interactions
    }

    /// Pharmacodynamic warnings, by key.
    pub fn pd_warnings(&self) -> &BTreeMap<String, PdWarning> {
        &self.pd_warnings
    }

    /// Every sourced number in the file with its dotted key, in file-schema
    /// order (for listings such as `model show` and the documentation).
    pub fn sourced_values(&self) -> Vec<(String, &Sourced<f64>)> {
        fn opt<'a>(
            out: &mut Vec<(String, &'a Sourced<f64>)>,
            key: String,
            s: &'a Option<Sourced<f64>>,
        ) {
            if let Some(s) = s {
                out.push((key, s));
            }
        }
        let mut out: Vec<(String, &Sourced<f64>)> = Vec::new();
        out.push((
            "drug.molar_mass_g_per_mol".to_owned(),
            &self.drug.molar_mass_g_per_mol,
        ));
        for (key, m) in &self.models {
            let d = format!("models.{key}.disposition");
            match &m.disposition {
                Disposition::Micro {
                    v1_l_per_kg,
                    k10_per_min,
                    k12_per_min,
                    k21_per_min,
                    k13_per_min,
                    k31_per_min,
                } => {
                    out.push((format!("{d}.v1_l_per_kg"), v1_l_per_kg));
                    out.push((format!("{d}.k10_per_min"), k10_per_min));
                    out.push((format!("{d}.k12_per_min"), k12_per_min));
                    out.push((format!("{d}.k21_per_min"), k21_per_min));
                    opt(&mut out, format!("{d}.k13_per_min"), k13_per_min);
                    opt(&mut out, format!("{d}.k31_per_min"), k31_per_min);
                }
                Disposition::Clearance {
                    v1_l,
                    v2_l,
                    v3_l,
                    cl_l_per_h,
                    q2_l_per_h,
                    q3_l_per_h,
                    volume_exponent,
                    clearance_exponent,
                    ..
                } => {
                    out.push((format!("{d}.v1_l"), v1_l));
                    opt(&mut out, format!("{d}.v2_l"), v2_l);
                    opt(&mut out, format!("{d}.v3_l"), v3_l);
                    out.push((format!("{d}.cl_l_per_h"), cl_l_per_h));
                    opt(&mut out, format!("{d}.q2_l_per_h"), q2_l_per_h);
                    opt(&mut out, format!("{d}.q3_l_per_h"), q3_l_per_h);
                    out.push((format!("{d}.volume_exponent"), volume_exponent));
                    out.push((format!("{d}.clearance_exponent"), clearance_exponent));
                }
            }
            match &m.effect_site {
                EffectSite::Ke0 { ke0_per_min } => {
                    out.push((format!("models.{key}.effect_site.ke0_per_min"), ke0_per_min));
                }
                EffectSite::Tpeak { tpeak_min } => {
                    out.push((format!("models.{key}.effect_site.tpeak_min"), tpeak_min));
                }
            }
            for (route, ov) in &m.route_overrides {
                let p = format!("models.{key}.routes.{route}");
                opt(&mut out, format!("{p}.f"), &ov.f);
                if let Some(a) = &ov.absorption {
                    push_absorption(&mut out, &p, a);
                }
                opt(&mut out, format!("{p}.lag_min"), &ov.lag_min);
            }
        }
        for (route, spec) in self.routes.iter() {
            let p = format!("routes.{route}");
            out.push((format!("{p}.f"), &spec.f));
            push_absorption(&mut out, &p, &spec.absorption);
            out.push((format!("{p}.lag_min"), &spec.lag_min));
        }
        let t = &self.targets;
        out.push((
            "targets.analgesic_floor_ng_per_ml".to_owned(),
            &t.analgesic_floor_ng_per_ml,
        ));
        out.push((
            "targets.psychotomimetic_caution_ng_per_ml".to_owned(),
            &t.psychotomimetic_caution_ng_per_ml,
        ));
        out.push(("targets.ceiling_ng_per_ml".to_owned(), &t.ceiling_ng_per_ml));
        for (setting, l) in self.limits.iter() {
            let p = format!("limits.{}", setting.as_str());
            out.push((format!("{p}.max_bolus_mg_per_kg"), &l.max_bolus_mg_per_kg));
            out.push((
                format!("{p}.max_infusion_mg_per_kg_per_h"),
                &l.max_infusion_mg_per_kg_per_h,
            ));
            out.push((
                format!("{p}.max_cumulative_mg_per_kg_per_24h"),
                &l.max_cumulative_mg_per_kg_per_24h,
            ));
        }
        if let Some(acute) = self.acute_relief() {
            for (key, ind) in &acute.indications {
                let p = format!("relief.acute.indications.{key}");
                out.push((format!("{p}.ec50_ng_per_ml"), &ind.ec50_ng_per_ml));
                out.push((format!("{p}.hill"), &ind.hill));
                out.push((
                    format!("{p}.target_relief_fraction"),
                    &ind.target_relief_fraction,
                ));
            }
        }
        for (key, i) in &self.interactions {
            let p = format!("interactions.{key}");
            opt(
                &mut out,
                format!("{p}.clearance_multiplier"),
                &i.clearance_multiplier,
            );
            for (route, m) in &i.route_f_multipliers {
                out.push((format!("{p}.route_f_multipliers.{route}"), m));
            }
        }
        if let Some(l) = &self.liver {
            out.push((
                "liver.hepatic_blood_flow_l_per_h".to_owned(),
                &l.hepatic_blood_flow_l_per_h,
            ));
            out.push((
                "liver.qh_reference_weight_kg".to_owned(),
                &l.qh_reference_weight_kg,
            ));
            out.push((
                "liver.hepatic_fraction_of_clearance".to_owned(),
                &l.hepatic_fraction_of_clearance,
            ));
            if let Some(a) = &l.age_effect {
                out.push((
                    "liver.qh_age_slope_l_per_h_per_year".to_owned(),
                    &a.qh_age_slope_l_per_h_per_year,
                ));
                out.push((
                    "liver.qh_age_threshold_years".to_owned(),
                    &a.qh_age_threshold_years,
                ));
            }
            for (route, s) in &l.swallowed_share_of_f {
                out.push((format!("liver.swallowed_share_of_f.{route}"), s));
            }
        }
        if let Some(c) = &self.covariate_effects {
            opt(
                &mut out,
                "covariate_effects.female_clearance_multiplier".to_owned(),
                &c.female_clearance_multiplier,
            );
        }
        if let Some(m) = &self.metabolism {
            for (genotype, g) in &m.cyp2b6 {
                out.push((genotype_key(genotype), &g.intrinsic_clearance_multiplier));
            }
        }
        if let Some(n) = &self.norketamine {
            for (k, s) in [
                ("v_l", &n.v_l),
                ("cl_l_per_h", &n.cl_l_per_h),
                ("vp_l", &n.vp_l),
                ("q_l_per_h", &n.q_l_per_h),
                ("volume_exponent", &n.volume_exponent),
                ("clearance_exponent", &n.clearance_exponent),
                ("formation_fraction", &n.formation_fraction),
            ] {
                out.push((format!("norketamine.{k}"), s));
            }
            for (route, s) in &n.first_pass_fraction {
                out.push((format!("norketamine.first_pass_fraction.{route}"), s));
            }
            out.push((
                "norketamine.potency_relative_to_ketamine".to_owned(),
                &n.potency_relative_to_ketamine,
            ));
        }
        out
    }
}

/// The dotted drug-file key of a CYP2B6 genotype's multiplier, quoted as
/// TOML quotes it: `metabolism.cyp2b6."*1/*6".intrinsic_clearance_multiplier`.
pub fn genotype_key(genotype: &str) -> String {
    format!("metabolism.cyp2b6.\"{genotype}\".intrinsic_clearance_multiplier")
}

fn push_absorption<'a>(out: &mut Vec<(String, &'a Sourced<f64>)>, prefix: &str, a: &'a Absorption) {
    match a {
        Absorption::None => {}
        Absorption::Ka { ka_per_min } => out.push((format!("{prefix}.ka_per_min"), ka_per_min)),
        Absorption::Tmax { tmax_min } => out.push((format!("{prefix}.tmax_min"), tmax_min)),
    }
}

impl fmt::Display for Sourced<f64> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}", self.value, self.source)?;
        if self.assumption {
            f.write_str("; assumption")?;
        }
        f.write_str(")")
    }
}
