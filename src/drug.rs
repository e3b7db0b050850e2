//! The drug file: every clinical number the engine uses, each with its source.
//!
//! The shipped file is `config/drugs/ketamine.toml` (built into the binary, see
//! [`DrugFile::builtin`]); `docs/drug-file.md` describes the schema, the
//! validation rules and the shipped values. This module is pure except for
//! [`DrugFile::load`], which reads a file.
//!
//! Loading has four steps, stopping at the first error:
//!
//! 1. TOML syntax ([`DrugFileError::Parse`], with toml's line/column report);
//! 2. `schema_version` must be [`SCHEMA_VERSION`];
//! 3. structure: `serde` into private raw structs that deny unknown keys, so a
//!    typo such as `k10_per_mn` is reported as [`DrugFileError::Invalid`] with
//!    its dotted key path (recovered from toml's error span) and line/column;
//! 4. validation: ranges, cross-references and consistency rules, each
//!    failure a [`DrugFileError::Invalid`] naming the dotted key (e.g.
//!    `models.domino.disposition.k10_per_min`).
//!
//! Every clinical number is a [`Sourced`] value: the number, a non-empty
//! source, an `assumption` flag (true when the number is our assumption or our
//! own derivation rather than a published value) and an optional note.
//!
//! **Decision support, not a medical device.**

use crate::vocab::{Route, Setting};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The schema version this loader reads (`schema_version` in the file).
pub const SCHEMA_VERSION: u32 = 1;

/// Text of the shipped drug file, compiled into the binary.
pub const BUILTIN_TOML: &str = include_str!("../config/drugs/ketamine.toml");

/// Name used for the built-in file in error messages.
pub const BUILTIN_PATH: &str = "builtin:config/drugs/ketamine.toml";

/// Source recorded for a route's lag when the file gives none.
pub const NO_LAG_SOURCE: &str = "no lag reported";

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Why a drug file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DrugFileError {
    /// The file could not be read.
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

// ---------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------

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
    pub schema_version: u32,
    pub drug: DrugInfo,
    pub model_selection: ModelSelection,
    pub models: BTreeMap<String, ModelSpec>,
    /// All nine routes, always present after validation.
    pub routes: BTreeMap<Route, RouteSpec>,
    pub targets: Targets,
    /// Both settings, always present after validation.
    pub limits: BTreeMap<Setting, DoseLimits>,
    /// Keyed by lower-case generic name (the contract's `comedications`).
    pub interactions: BTreeMap<String, Interaction>,
    pub pd_warnings: BTreeMap<String, PdWarning>,
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
    /// Model of the reference patient against which tmax-derived absorption
    /// rates and tpeak-derived ke0 values are solved.
    pub reference_model: String,
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

// ---------------------------------------------------------------------------
// DrugFile API
// ---------------------------------------------------------------------------

impl DrugFile {
    /// Read and validate a drug file. The only I/O in this module.
    pub fn load(path: &Path) -> Result<Self, DrugFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| DrugFileError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_str(&text, path)
    }

    /// Parse and validate drug-file text; `path_for_errors` only labels errors.
    pub fn from_toml_str(text: &str, path_for_errors: &Path) -> Result<Self, DrugFileError> {
        let path = path_for_errors.to_path_buf();
        let ctx = Ctx { path: &path };

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
        let raw: RawFile = toml::from_str(text).map_err(|e| structural_error(&ctx, text, &e))?;

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
    /// (an unknown model key gets the general entry). `None` only for a
    /// hand-built file that lacks the route.
    pub fn try_route(&self, model_key: &str, route: Route) -> Option<RouteSpec> {
        let mut spec = self.routes.get(&route)?.clone();
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
        Some(spec)
    }

    /// As [`try_route`](Self::try_route).
    ///
    /// # Panics
    ///
    /// If the route is missing, which validation rules out for every file
    /// obtained from [`load`](Self::load), [`from_toml_str`](Self::from_toml_str)
    /// or [`builtin`](Self::builtin).
    pub fn route(&self, model_key: &str, route: Route) -> RouteSpec {
        self.try_route(model_key, route)
            .unwrap_or_else(|| panic!("drug file has no route '{route}' (not validated?)"))
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
        for (route, spec) in &self.routes {
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
        for (setting, l) in &self.limits {
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
        out
    }
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

// ---------------------------------------------------------------------------
// Raw (serde) structs
// ---------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSourced {
    value: f64,
    source: String,
    #[serde(default)]
    assumption: bool,
    #[serde(default)]
    note: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[allow(dead_code)] // checked before structural deserialization
    schema_version: i64,
    drug: RawDrug,
    model_selection: RawModelSelection,
    models: BTreeMap<String, RawModel>,
    routes: BTreeMap<String, RawRoute>,
    targets: RawTargets,
    limits: BTreeMap<String, RawLimits>,
    #[serde(default)]
    interactions: BTreeMap<String, RawInteraction>,
    #[serde(default)]
    pd_warnings: BTreeMap<String, RawPdWarning>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDrug {
    name: String,
    substance: String,
    molar_mass_g_per_mol: RawSourced,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModelSelection {
    by_age: Vec<RawAgeRule>,
    when_age_unknown: String,
    reference_model: String,
    reference_weight_kg: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgeRule {
    #[serde(default)]
    below_age_years: Option<f64>,
    model: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    title: String,
    population: String,
    source: String,
    compartments: i64,
    disposition: RawDisposition,
    effect_site: RawEffectSite,
    #[serde(default)]
    validity: RawValidity,
    #[serde(default)]
    routes: BTreeMap<String, RawRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDisposition {
    kind: String,
    // micro
    v1_l_per_kg: Option<RawSourced>,
    k10_per_min: Option<RawSourced>,
    k12_per_min: Option<RawSourced>,
    k21_per_min: Option<RawSourced>,
    k13_per_min: Option<RawSourced>,
    k31_per_min: Option<RawSourced>,
    // clearance
    reference_weight_kg: Option<f64>,
    v1_l: Option<RawSourced>,
    v2_l: Option<RawSourced>,
    v3_l: Option<RawSourced>,
    cl_l_per_h: Option<RawSourced>,
    q2_l_per_h: Option<RawSourced>,
    q3_l_per_h: Option<RawSourced>,
    volume_exponent: Option<RawSourced>,
    clearance_exponent: Option<RawSourced>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEffectSite {
    ke0_per_min: Option<RawSourced>,
    tpeak_min: Option<RawSourced>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawValidity {
    age_years: Option<RawBounds>,
    weight_kg: Option<RawBounds>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBounds {
    min: Option<f64>,
    max: Option<f64>,
    source: String,
    #[serde(default)]
    assumption: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    f: Option<RawSourced>,
    ka_per_min: Option<RawSourced>,
    tmax_min: Option<RawSourced>,
    lag_min: Option<RawSourced>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTargets {
    analgesic_floor_ng_per_ml: RawSourced,
    psychotomimetic_caution_ng_per_ml: RawSourced,
    ceiling_ng_per_ml: RawSourced,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_bolus_mg_per_kg: RawSourced,
    max_infusion_mg_per_kg_per_h: RawSourced,
    max_cumulative_mg_per_kg_per_24h: RawSourced,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInteraction {
    mechanism: String,
    source: String,
    summary: String,
    clearance_multiplier: Option<RawSourced>,
    #[serde(default)]
    route_f_multipliers: BTreeMap<String, RawSourced>,
    pd_warning: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPdWarning {
    text: String,
    source: String,
    #[serde(default)]
    assumption: bool,
}

// ---------------------------------------------------------------------------
// Structural errors: map toml's byte span to a dotted key path
// ---------------------------------------------------------------------------

fn structural_error(ctx: &Ctx<'_>, text: &str, e: &toml::de::Error) -> DrugFileError {
    let message = e.message().trim_end().to_owned();
    let Some(span) = e.span() else {
        return DrugFileError::Parse {
            path: ctx.path.to_path_buf(),
            message,
        };
    };
    let mut key = key_path_at(text, span.start).unwrap_or_default();
    // serde names the field in these messages; make it part of the key when
    // the span points at the enclosing table.
    for prefix in ["missing field `", "unknown field `"] {
        if let Some(rest) = message.strip_prefix(prefix) {
            if let Some(field) = rest.split('`').next() {
                let ends_with_field = key == field || key.ends_with(&format!(".{field}"));
                if !ends_with_field {
                    key = if key.is_empty() {
                        field.to_owned()
                    } else {
                        format!("{key}.{field}")
                    };
                }
            }
        }
    }
    let (line, column) = line_column(text, span.start);
    let key = if key.is_empty() {
        "(top level)".to_owned()
    } else {
        key
    };
    DrugFileError::Invalid {
        path: ctx.path.to_path_buf(),
        key,
        message: format!("{message} (line {line}, column {column})"),
    }
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(1, |l| l.chars().count() + 1);
    (line, column)
}

/// Dotted path of the deepest key whose key or value span contains `offset`.
fn key_path_at(text: &str, offset: usize) -> Option<String> {
    let doc = toml::de::DeTable::parse(text).ok()?;
    let mut parts = Vec::new();
    if find_in_table(doc.get_ref(), offset, &mut parts) {
        Some(join_path(&parts))
    } else {
        None
    }
}

enum PathPart {
    Key(String),
    Index(usize),
}

fn join_path(parts: &[PathPart]) -> String {
    let mut s = String::new();
    for p in parts {
        match p {
            PathPart::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            PathPart::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

fn find_in_table(table: &toml::de::DeTable<'_>, offset: usize, parts: &mut Vec<PathPart>) -> bool {
    for (k, v) in table.iter() {
        parts.push(PathPart::Key(k.get_ref().to_string()));
        if find_in_value(v.get_ref(), offset, parts) {
            return true;
        }
        let (ks, vs) = (k.span(), v.span());
        if ks.contains(&offset) || vs.contains(&offset) {
            return true;
        }
        parts.pop();
    }
    false
}

fn find_in_value(value: &toml::de::DeValue<'_>, offset: usize, parts: &mut Vec<PathPart>) -> bool {
    match value {
        toml::de::DeValue::Table(t) => find_in_table(t, offset, parts),
        toml::de::DeValue::Array(a) => {
            for (i, item) in a.iter().enumerate() {
                parts.push(PathPart::Index(i));
                if find_in_value(item.get_ref(), offset, parts) || item.span().contains(&offset) {
                    return true;
                }
                parts.pop();
            }
            false
        }
        _ => false,
    }
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

struct Ctx<'a> {
    path: &'a Path,
}

/// Range rule for a sourced number.
#[derive(Clone, Copy)]
enum Rule {
    /// > 0: rate constants, volumes, clearances, times, multipliers.
    Positive,
    /// ≥ 0: lags.
    NonNegative,
    /// 0 < x ≤ 1: bioavailability.
    Fraction,
    /// 0 ≤ x ≤ 2: allometric exponents.
    Exponent,
}

impl Rule {
    fn accepts(self, x: f64) -> bool {
        match self {
            Rule::Positive => x > 0.0,
            Rule::NonNegative => x >= 0.0,
            Rule::Fraction => x > 0.0 && x <= 1.0,
            Rule::Exponent => (0.0..=2.0).contains(&x),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Rule::Positive => "must be greater than 0",
            Rule::NonNegative => "must be 0 or greater",
            Rule::Fraction => "must be greater than 0 and at most 1",
            Rule::Exponent => "must be between 0 and 2",
        }
    }
}

type Res<T> = Result<T, DrugFileError>;

impl Ctx<'_> {
    fn invalid(&self, key: impl Into<String>, message: impl Into<String>) -> DrugFileError {
        DrugFileError::Invalid {
            path: self.path.to_path_buf(),
            key: key.into(),
            message: message.into(),
        }
    }

    fn text(&self, key: &str, s: String) -> Res<String> {
        if s.trim().is_empty() {
            Err(self.invalid(key, "must not be empty"))
        } else {
            Ok(s)
        }
    }

    fn number(&self, key: &str, x: f64, rule: Rule) -> Res<f64> {
        if !x.is_finite() {
            Err(self.invalid(key, format!("must be a finite number (got {x})")))
        } else if !rule.accepts(x) {
            Err(self.invalid(key, format!("{} (got {x})", rule.describe())))
        } else {
            Ok(x)
        }
    }

    fn sourced(&self, key: &str, raw: RawSourced, rule: Rule) -> Res<Sourced<f64>> {
        let value = self.number(key, raw.value, rule)?;
        let source = self.text(&format!("{key}.source"), raw.source)?;
        let note = match raw.note {
            Some(n) => Some(self.text(&format!("{key}.note"), n)?),
            None => None,
        };
        Ok(Sourced {
            value,
            source,
            assumption: raw.assumption,
            note,
        })
    }

    fn required(
        &self,
        key: &str,
        raw: Option<RawSourced>,
        rule: Rule,
        why: &str,
    ) -> Res<Sourced<f64>> {
        match raw {
            Some(r) => self.sourced(key, r, rule),
            None => Err(self.invalid(key, format!("missing: {why}"))),
        }
    }

    fn optional(
        &self,
        key: &str,
        raw: Option<RawSourced>,
        rule: Rule,
    ) -> Res<Option<Sourced<f64>>> {
        raw.map(|r| self.sourced(key, r, rule)).transpose()
    }

    fn forbid<T>(&self, key: &str, present: &Option<T>, why: &str) -> Res<()> {
        if present.is_some() {
            Err(self.invalid(key, format!("not allowed: {why}")))
        } else {
            Ok(())
        }
    }

    fn name(&self, key: &str, name: &str, what: &str, extra: &[char]) -> Res<()> {
        let ok = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && name.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || extra.contains(&c)
            });
        if ok {
            Ok(())
        } else {
            let allowed = if extra.is_empty() {
                "lower-case letters, digits and '_'"
            } else {
                "lower-case letters, digits, '_' and '-'"
            };
            Err(self.invalid(
                key,
                format!(
                    "{what} '{name}' must start with a lower-case letter and use only {allowed}"
                ),
            ))
        }
    }

    fn route_key(&self, key: &str, name: &str) -> Res<Route> {
        name.parse::<Route>().map_err(|_| {
            let all: Vec<&str> = Route::ALL.iter().map(|r| r.as_str()).collect();
            self.invalid(
                key,
                format!(
                    "unknown route '{name}' (expected one of {})",
                    all.join(", ")
                ),
            )
        })
    }
}

impl RawFile {
    fn validate(self, ctx: &Ctx<'_>) -> Res<DrugFile> {
        let drug = DrugInfo {
            name: ctx.text("drug.name", self.drug.name)?,
            substance: ctx.text("drug.substance", self.drug.substance)?,
            molar_mass_g_per_mol: ctx.sourced(
                "drug.molar_mass_g_per_mol",
                self.drug.molar_mass_g_per_mol,
                Rule::Positive,
            )?,
        };

        if self.models.is_empty() {
            return Err(ctx.invalid("models", "at least one model is required"));
        }
        let mut models = BTreeMap::new();
        for (key, raw) in self.models {
            let spec = validate_model(ctx, &key, raw)?;
            models.insert(key, spec);
        }

        let model_selection = validate_selection(ctx, self.model_selection, &models)?;

        let mut routes = BTreeMap::new();
        for (name, raw) in self.routes {
            let key = format!("routes.{name}");
            let route = ctx.route_key(&key, &name)?;
            routes.insert(route, validate_route(ctx, &key, route, raw)?);
        }
        for route in Route::ALL {
            if !routes.contains_key(&route) {
                return Err(ctx.invalid(
                    format!("routes.{route}"),
                    "missing: every route must be in the route table",
                ));
            }
        }

        let targets = validate_targets(ctx, self.targets)?;

        let mut limits = BTreeMap::new();
        for (name, raw) in self.limits {
            let key = format!("limits.{name}");
            let setting = name.parse::<Setting>().map_err(|_| {
                ctx.invalid(
                    &key,
                    format!("unknown setting '{name}' (expected ward or monitored)"),
                )
            })?;
            let l = DoseLimits {
                max_bolus_mg_per_kg: ctx.sourced(
                    &format!("{key}.max_bolus_mg_per_kg"),
                    raw.max_bolus_mg_per_kg,
                    Rule::Positive,
                )?,
                max_infusion_mg_per_kg_per_h: ctx.sourced(
                    &format!("{key}.max_infusion_mg_per_kg_per_h"),
                    raw.max_infusion_mg_per_kg_per_h,
                    Rule::Positive,
                )?,
                max_cumulative_mg_per_kg_per_24h: ctx.sourced(
                    &format!("{key}.max_cumulative_mg_per_kg_per_24h"),
                    raw.max_cumulative_mg_per_kg_per_24h,
                    Rule::Positive,
                )?,
            };
            limits.insert(setting, l);
        }
        for setting in [Setting::Ward, Setting::Monitored] {
            if !limits.contains_key(&setting) {
                return Err(ctx.invalid(
                    format!("limits.{}", setting.as_str()),
                    "missing: limits for both ward and monitored are required",
                ));
            }
        }

        let mut pd_warnings = BTreeMap::new();
        for (key, raw) in self.pd_warnings {
            let p = format!("pd_warnings.{key}");
            ctx.name(&p, &key, "pd warning key", &[])?;
            let w = PdWarning {
                key: key.clone(),
                text: ctx.text(&format!("{p}.text"), raw.text)?,
                source: ctx.text(&format!("{p}.source"), raw.source)?,
                assumption: raw.assumption,
            };
            pd_warnings.insert(key, w);
        }

        let mut interactions = BTreeMap::new();
        for (key, raw) in self.interactions {
            let i = validate_interaction(ctx, &key, raw, &pd_warnings)?;
            interactions.insert(key, i);
        }

        Ok(DrugFile {
            schema_version: SCHEMA_VERSION,
            drug,
            model_selection,
            models,
            routes,
            targets,
            limits,
            interactions,
            pd_warnings,
        })
    }
}

fn validate_model(ctx: &Ctx<'_>, key: &str, raw: RawModel) -> Res<ModelSpec> {
    let p = format!("models.{key}");
    ctx.name(&p, key, "model key", &[])?;
    let title = ctx.text(&format!("{p}.title"), raw.title)?;
    let population = ctx.text(&format!("{p}.population"), raw.population)?;
    let source = ctx.text(&format!("{p}.source"), raw.source)?;
    let compartments = match raw.compartments {
        1 => 1u8,
        2 => 2,
        3 => 3,
        n => {
            return Err(ctx.invalid(
                format!("{p}.compartments"),
                format!("must be 1, 2 or 3 (got {n})"),
            ))
        }
    };
    let disposition = validate_disposition(ctx, &p, compartments, raw.disposition)?;
    let effect_site = validate_effect_site(ctx, &p, raw.effect_site)?;
    let validity = Validity {
        age_years: validate_bounds(
            ctx,
            &format!("{p}.validity.age_years"),
            raw.validity.age_years,
            0.0,
        )?,
        weight_kg: validate_bounds(
            ctx,
            &format!("{p}.validity.weight_kg"),
            raw.validity.weight_kg,
            f64::MIN_POSITIVE,
        )?,
    };
    let mut route_overrides = BTreeMap::new();
    for (name, r) in raw.routes {
        let rk = format!("{p}.routes.{name}");
        let route = ctx.route_key(&rk, &name)?;
        route_overrides.insert(route, validate_override(ctx, &rk, route, r)?);
    }
    Ok(ModelSpec {
        key: key.to_owned(),
        title,
        population,
        source,
        compartments,
        disposition,
        effect_site,
        validity,
        route_overrides,
    })
}

fn validate_disposition(
    ctx: &Ctx<'_>,
    model_prefix: &str,
    compartments: u8,
    raw: RawDisposition,
) -> Res<Disposition> {
    let p = format!("{model_prefix}.disposition");
    let k = |name: &str| format!("{p}.{name}");
    let n_cpt = format!("{compartments}-compartment model");
    match raw.kind.as_str() {
        "micro" => {
            let why = "belongs to kind = \"clearance\", not kind = \"micro\"";
            ctx.forbid(&k("reference_weight_kg"), &raw.reference_weight_kg, why)?;
            ctx.forbid(&k("v1_l"), &raw.v1_l, why)?;
            ctx.forbid(&k("v2_l"), &raw.v2_l, why)?;
            ctx.forbid(&k("v3_l"), &raw.v3_l, why)?;
            ctx.forbid(&k("cl_l_per_h"), &raw.cl_l_per_h, why)?;
            ctx.forbid(&k("q2_l_per_h"), &raw.q2_l_per_h, why)?;
            ctx.forbid(&k("q3_l_per_h"), &raw.q3_l_per_h, why)?;
            ctx.forbid(&k("volume_exponent"), &raw.volume_exponent, why)?;
            ctx.forbid(&k("clearance_exponent"), &raw.clearance_exponent, why)?;
            if compartments == 1 {
                return Err(ctx.invalid(
                    format!("{model_prefix}.compartments"),
                    "kind = \"micro\" always has k12_per_min/k21_per_min, so it cannot describe \
                     a 1-compartment model; use kind = \"clearance\"",
                ));
            }
            let required = "required for kind = \"micro\"";
            let v1_l_per_kg =
                ctx.required(&k("v1_l_per_kg"), raw.v1_l_per_kg, Rule::Positive, required)?;
            let k10_per_min =
                ctx.required(&k("k10_per_min"), raw.k10_per_min, Rule::Positive, required)?;
            let need = format!("required for a {n_cpt}");
            let k12_per_min =
                ctx.required(&k("k12_per_min"), raw.k12_per_min, Rule::Positive, &need)?;
            let k21_per_min =
                ctx.required(&k("k21_per_min"), raw.k21_per_min, Rule::Positive, &need)?;
            let (k13_per_min, k31_per_min) = if compartments == 3 {
                (
                    Some(ctx.required(
                        &k("k13_per_min"),
                        raw.k13_per_min,
                        Rule::Positive,
                        &need,
                    )?),
                    Some(ctx.required(
                        &k("k31_per_min"),
                        raw.k31_per_min,
                        Rule::Positive,
                        &need,
                    )?),
                )
            } else {
                let why = format!("third-compartment parameter in a {n_cpt}");
                ctx.forbid(&k("k13_per_min"), &raw.k13_per_min, &why)?;
                ctx.forbid(&k("k31_per_min"), &raw.k31_per_min, &why)?;
                (None, None)
            };
            Ok(Disposition::Micro {
                v1_l_per_kg,
                k10_per_min,
                k12_per_min,
                k21_per_min,
                k13_per_min,
                k31_per_min,
            })
        }
        "clearance" => {
            let why = "belongs to kind = \"micro\", not kind = \"clearance\"";
            ctx.forbid(&k("v1_l_per_kg"), &raw.v1_l_per_kg, why)?;
            ctx.forbid(&k("k10_per_min"), &raw.k10_per_min, why)?;
            ctx.forbid(&k("k12_per_min"), &raw.k12_per_min, why)?;
            ctx.forbid(&k("k21_per_min"), &raw.k21_per_min, why)?;
            ctx.forbid(&k("k13_per_min"), &raw.k13_per_min, why)?;
            ctx.forbid(&k("k31_per_min"), &raw.k31_per_min, why)?;
            let reference_weight_kg = match raw.reference_weight_kg {
                Some(w) => ctx.number(&k("reference_weight_kg"), w, Rule::Positive)?,
                None => {
                    return Err(ctx.invalid(
                        k("reference_weight_kg"),
                        "missing: required for kind = \"clearance\"",
                    ))
                }
            };
            let required = "required for kind = \"clearance\"";
            let v1_l = ctx.required(&k("v1_l"), raw.v1_l, Rule::Positive, required)?;
            let cl_l_per_h =
                ctx.required(&k("cl_l_per_h"), raw.cl_l_per_h, Rule::Positive, required)?;
            let volume_exponent = ctx.required(
                &k("volume_exponent"),
                raw.volume_exponent,
                Rule::Exponent,
                required,
            )?;
            let clearance_exponent = ctx.required(
                &k("clearance_exponent"),
                raw.clearance_exponent,
                Rule::Exponent,
                required,
            )?;
            let need = format!("required for a {n_cpt}");
            let (v2_l, q2_l_per_h) = if compartments >= 2 {
                (
                    Some(ctx.required(&k("v2_l"), raw.v2_l, Rule::Positive, &need)?),
                    Some(ctx.required(&k("q2_l_per_h"), raw.q2_l_per_h, Rule::Positive, &need)?),
                )
            } else {
                let why = format!("second-compartment parameter in a {n_cpt}");
                ctx.forbid(&k("v2_l"), &raw.v2_l, &why)?;
                ctx.forbid(&k("q2_l_per_h"), &raw.q2_l_per_h, &why)?;
                (None, None)
            };
            let (v3_l, q3_l_per_h) = if compartments == 3 {
                (
                    Some(ctx.required(&k("v3_l"), raw.v3_l, Rule::Positive, &need)?),
                    Some(ctx.required(&k("q3_l_per_h"), raw.q3_l_per_h, Rule::Positive, &need)?),
                )
            } else {
                let why = format!("third-compartment parameter in a {n_cpt}");
                ctx.forbid(&k("v3_l"), &raw.v3_l, &why)?;
                ctx.forbid(&k("q3_l_per_h"), &raw.q3_l_per_h, &why)?;
                (None, None)
            };
            Ok(Disposition::Clearance {
                reference_weight_kg,
                v1_l,
                v2_l,
                v3_l,
                cl_l_per_h,
                q2_l_per_h,
                q3_l_per_h,
                volume_exponent,
                clearance_exponent,
            })
        }
        other => Err(ctx.invalid(
            k("kind"),
            format!("unknown disposition kind '{other}' (expected \"micro\" or \"clearance\")"),
        )),
    }
}

fn validate_effect_site(ctx: &Ctx<'_>, model_prefix: &str, raw: RawEffectSite) -> Res<EffectSite> {
    let p = format!("{model_prefix}.effect_site");
    match (raw.ke0_per_min, raw.tpeak_min) {
        (Some(ke0), None) => Ok(EffectSite::Ke0 {
            ke0_per_min: ctx.sourced(&format!("{p}.ke0_per_min"), ke0, Rule::Positive)?,
        }),
        (None, Some(tpeak)) => Ok(EffectSite::Tpeak {
            tpeak_min: ctx.sourced(&format!("{p}.tpeak_min"), tpeak, Rule::Positive)?,
        }),
        (Some(_), Some(_)) => {
            Err(ctx.invalid(p, "give exactly one of ke0_per_min or tpeak_min, not both"))
        }
        (None, None) => Err(ctx.invalid(p, "missing: give ke0_per_min or tpeak_min")),
    }
}

fn validate_bounds(
    ctx: &Ctx<'_>,
    key: &str,
    raw: Option<RawBounds>,
    lowest: f64,
) -> Res<Option<Bounds>> {
    let Some(raw) = raw else { return Ok(None) };
    let check = |name: &str, x: Option<f64>| -> Res<Option<f64>> {
        match x {
            None => Ok(None),
            Some(x) => {
                let k = format!("{key}.{name}");
                let x = ctx.number(&k, x, Rule::NonNegative)?;
                if x < lowest {
                    return Err(ctx.invalid(k, format!("must be greater than 0 (got {x})")));
                }
                Ok(Some(x))
            }
        }
    };
    let min = check("min", raw.min)?;
    let max = check("max", raw.max)?;
    match (min, max) {
        (None, None) => return Err(ctx.invalid(key, "give at least one of min or max")),
        (Some(lo), Some(hi)) if lo >= hi => {
            return Err(ctx.invalid(key, format!("min ({lo}) must be less than max ({hi})")))
        }
        _ => {}
    }
    Ok(Some(Bounds {
        min,
        max,
        source: ctx.text(&format!("{key}.source"), raw.source)?,
        assumption: raw.assumption,
    }))
}

fn validate_absorption(
    ctx: &Ctx<'_>,
    key: &str,
    route: Route,
    ka: Option<RawSourced>,
    tmax: Option<RawSourced>,
) -> Res<Option<Absorption>> {
    if route.is_intravenous() {
        let why = "intravenous routes have no absorption";
        ctx.forbid(&format!("{key}.ka_per_min"), &ka, why)?;
        ctx.forbid(&format!("{key}.tmax_min"), &tmax, why)?;
        return Ok(None);
    }
    match (ka, tmax) {
        (Some(ka), None) => Ok(Some(Absorption::Ka {
            ka_per_min: ctx.sourced(&format!("{key}.ka_per_min"), ka, Rule::Positive)?,
        })),
        (None, Some(t)) => Ok(Some(Absorption::Tmax {
            tmax_min: ctx.sourced(&format!("{key}.tmax_min"), t, Rule::Positive)?,
        })),
        (Some(_), Some(_)) => {
            Err(ctx.invalid(key, "give exactly one of ka_per_min or tmax_min, not both"))
        }
        (None, None) => Ok(None),
    }
}

fn validate_route(ctx: &Ctx<'_>, key: &str, route: Route, raw: RawRoute) -> Res<RouteSpec> {
    let f = ctx.required(
        &format!("{key}.f"),
        raw.f,
        Rule::Fraction,
        "every route needs f",
    )?;
    let absorption = match validate_absorption(ctx, key, route, raw.ka_per_min, raw.tmax_min)? {
        Some(a) => a,
        None if route.is_intravenous() => Absorption::None,
        None => {
            return Err(ctx.invalid(
                key,
                "missing absorption: an extravascular route needs ka_per_min or tmax_min",
            ))
        }
    };
    let lag_min = match raw.lag_min {
        Some(l) => ctx.sourced(&format!("{key}.lag_min"), l, Rule::NonNegative)?,
        None => Sourced {
            value: 0.0,
            source: NO_LAG_SOURCE.to_owned(),
            assumption: true,
            note: None,
        },
    };
    Ok(RouteSpec {
        f,
        absorption,
        lag_min,
    })
}

fn validate_override(ctx: &Ctx<'_>, key: &str, route: Route, raw: RawRoute) -> Res<RouteOverride> {
    if raw.f.is_none()
        && raw.ka_per_min.is_none()
        && raw.tmax_min.is_none()
        && raw.lag_min.is_none()
    {
        return Err(ctx.invalid(
            key,
            "a route override must set at least one of f, ka_per_min, tmax_min, lag_min",
        ));
    }
    Ok(RouteOverride {
        f: ctx.optional(&format!("{key}.f"), raw.f, Rule::Fraction)?,
        absorption: validate_absorption(ctx, key, route, raw.ka_per_min, raw.tmax_min)?,
        lag_min: ctx.optional(&format!("{key}.lag_min"), raw.lag_min, Rule::NonNegative)?,
    })
}

fn validate_targets(ctx: &Ctx<'_>, raw: RawTargets) -> Res<Targets> {
    let floor = ctx.sourced(
        "targets.analgesic_floor_ng_per_ml",
        raw.analgesic_floor_ng_per_ml,
        Rule::Positive,
    )?;
    let caution = ctx.sourced(
        "targets.psychotomimetic_caution_ng_per_ml",
        raw.psychotomimetic_caution_ng_per_ml,
        Rule::Positive,
    )?;
    let ceiling = ctx.sourced(
        "targets.ceiling_ng_per_ml",
        raw.ceiling_ng_per_ml,
        Rule::Positive,
    )?;
    if caution.value <= floor.value {
        return Err(ctx.invalid(
            "targets.psychotomimetic_caution_ng_per_ml",
            format!(
                "must be greater than analgesic_floor_ng_per_ml ({} <= {})",
                caution.value, floor.value
            ),
        ));
    }
    if ceiling.value <= caution.value {
        return Err(ctx.invalid(
            "targets.ceiling_ng_per_ml",
            format!(
                "must be greater than psychotomimetic_caution_ng_per_ml ({} <= {})",
                ceiling.value, caution.value
            ),
        ));
    }
    Ok(Targets {
        analgesic_floor_ng_per_ml: floor,
        psychotomimetic_caution_ng_per_ml: caution,
        ceiling_ng_per_ml: ceiling,
    })
}

fn validate_selection(
    ctx: &Ctx<'_>,
    raw: RawModelSelection,
    models: &BTreeMap<String, ModelSpec>,
) -> Res<ModelSelection> {
    let known = |key: &str, name: &str| -> Res<()> {
        if models.contains_key(name) {
            Ok(())
        } else {
            let all: Vec<&str> = models.keys().map(String::as_str).collect();
            Err(ctx.invalid(
                key,
                format!("unknown model '{name}' (models: {})", all.join(", ")),
            ))
        }
    };
    if raw.by_age.is_empty() {
        return Err(ctx.invalid(
            "model_selection.by_age",
            "at least one rule is required (the last one without below_age_years)",
        ));
    }
    let last = raw.by_age.len() - 1;
    let mut previous: Option<f64> = None;
    let mut by_age = Vec::with_capacity(raw.by_age.len());
    for (i, rule) in raw.by_age.into_iter().enumerate() {
        let p = format!("model_selection.by_age[{i}]");
        known(&format!("{p}.model"), &rule.model)?;
        let bound_key = format!("{p}.below_age_years");
        match rule.below_age_years {
            Some(b) => {
                let b = ctx.number(&bound_key, b, Rule::Positive)?;
                if i == last {
                    return Err(ctx.invalid(
                        bound_key,
                        "the last rule must not have below_age_years (it must match everyone)",
                    ));
                }
                if let Some(prev) = previous {
                    if b <= prev {
                        return Err(ctx.invalid(
                            bound_key,
                            format!("bounds must increase from rule to rule ({b} <= {prev})"),
                        ));
                    }
                }
                previous = Some(b);
            }
            None if i != last => {
                return Err(ctx.invalid(
                    bound_key,
                    "only the last rule may omit below_age_years (later rules would never match)",
                ))
            }
            None => {}
        }
        by_age.push(AgeRule {
            below_age_years: rule.below_age_years,
            model: rule.model,
        });
    }
    known("model_selection.when_age_unknown", &raw.when_age_unknown)?;
    known("model_selection.reference_model", &raw.reference_model)?;
    let reference_weight_kg = ctx.number(
        "model_selection.reference_weight_kg",
        raw.reference_weight_kg,
        Rule::Positive,
    )?;
    Ok(ModelSelection {
        by_age,
        when_age_unknown: raw.when_age_unknown,
        reference_model: raw.reference_model,
        reference_weight_kg,
    })
}

fn validate_interaction(
    ctx: &Ctx<'_>,
    key: &str,
    raw: RawInteraction,
    pd_warnings: &BTreeMap<String, PdWarning>,
) -> Res<Interaction> {
    let p = format!("interactions.{key}");
    ctx.name(&p, key, "interaction key", &['-'])?;
    let mechanism = ctx.text(&format!("{p}.mechanism"), raw.mechanism)?;
    let summary = ctx.text(&format!("{p}.summary"), raw.summary)?;
    let source = ctx.text(&format!("{p}.source"), raw.source)?;
    let clearance_multiplier = ctx.optional(
        &format!("{p}.clearance_multiplier"),
        raw.clearance_multiplier,
        Rule::Positive,
    )?;
    let mut route_f_multipliers = BTreeMap::new();
    for (name, m) in raw.route_f_multipliers {
        let k = format!("{p}.route_f_multipliers.{name}");
        let route = ctx.route_key(&k, &name)?;
        if route.is_intravenous() {
            return Err(ctx.invalid(
                k,
                "F multipliers apply to extravascular routes only (IV F is 1 by definition; \
                 use clearance_multiplier)",
            ));
        }
        route_f_multipliers.insert(route, ctx.sourced(&k, m, Rule::Positive)?);
    }
    if let Some(w) = &raw.pd_warning {
        if !pd_warnings.contains_key(w) {
            let all: Vec<&str> = pd_warnings.keys().map(String::as_str).collect();
            return Err(ctx.invalid(
                format!("{p}.pd_warning"),
                format!("unknown pd warning '{w}' (pd_warnings: {})", all.join(", ")),
            ));
        }
    }
    Ok(Interaction {
        key: key.to_owned(),
        mechanism,
        summary,
        source,
        clearance_multiplier,
        route_f_multipliers,
        pd_warning: raw.pd_warning,
    })
}

#[cfg(test)]
mod tests {
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

    fn parse(text: &str) -> Result<DrugFile, DrugFileError> {
        DrugFile::from_toml_str(text, Path::new("test/ketamine.toml"))
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

    #[test]
    fn shipped_file_loads_from_disk_and_matches_builtin() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/drugs/ketamine.toml");
        let from_disk = match DrugFile::load(&path) {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(from_disk, shipped());
        assert_eq!(from_disk.schema_version, 1);
        assert_eq!(from_disk.drug.name, "ketamine");
        assert_eq!(from_disk.drug.substance, "racemic ketamine base");
        assert_eq!(from_disk.drug.molar_mass_g_per_mol.value, 237.725);
    }

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

        // Domino: micro, 3 compartments, ke0 0.652 flagged as an assumption.
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
                assert_eq!(ke0_per_min.value, 0.652);
                assert!(ke0_per_min.assumption);
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
            ("clements250", 1.7522, 0.0109, 0.0186, 0.0137, 5.2),
            ("hijazi", 1.08, 0.0333, 0.0088, 0.0030, 4.773),
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
        match &d.models["kamp2020"].effect_site {
            EffectSite::Tpeak { tpeak_min } => {
                assert_eq!(tpeak_min.value, 1.0);
                assert!(tpeak_min.assumption);
            }
            other => panic!("{other:?}"),
        }
        for (key, ke0) in [("herd", 2.995), ("hornik", 4.212)] {
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
        assert_eq!(d.select_model(None), "domino");
        assert_eq!(d.select_model(Some(0.5)), "herd");
        assert_eq!(d.select_model(Some(8.0)), "herd");
        assert_eq!(d.select_model(Some(17.99)), "herd");
        assert_eq!(d.select_model(Some(18.0)), "domino");
        assert_eq!(d.select_model(Some(45.0)), "domino");
        assert_eq!(d.select_model(Some(f64::NAN)), "domino");
        assert_eq!(d.model_selection.reference_model, "domino");
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
        assert_eq!(d.try_route("hornik", Route::Im), Some(hornik_im));
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
            (Route::Intranasal, 0.45, 18.0),
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
            assert_eq!(f_mult(drug, Route::Sublingual), Some(m), "{drug}");
            assert_eq!(cl_mult(drug), None, "{drug}");
            assert_eq!(d.interactions[drug].route_f_multipliers.len(), 2, "{drug}");
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
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/drug-file.md");
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
        assert_eq!(v["models"]["kamp2020"]["effect_site"]["kind"], "tpeak");
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
    fn io_and_parse_errors() {
        let missing = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/drugs/no-such-drug.toml");
        match DrugFile::load(&missing) {
            Err(DrugFileError::Io { path, .. }) => assert_eq!(path, missing),
            other => panic!("expected Io, got {other:?}"),
        }
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
            "{ model = \"domino\" }",
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
        let t = replace_once(BUILTIN_TOML, "{ model = \"domino\" }", "{ below = 1 }");
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
            "reference_model = \"domino\"\nreference_weight_kg = 70.0",
            "reference_model = \"domino\"\nreference_weight_kg = -70.0",
        );
        expect_invalid(&t, "model_selection.reference_weight_kg", "greater than 0");
    }

    #[test]
    fn rejects_non_positive_ke0_and_tpeak() {
        let t = replace_once(
            BUILTIN_TOML,
            "[models.hornik.effect_site.ke0_per_min]\nvalue = 4.212",
            "[models.hornik.effect_site.ke0_per_min]\nvalue = -4.212",
        );
        expect_invalid(
            &t,
            "models.hornik.effect_site.ke0_per_min",
            "greater than 0",
        );
        let t = replace_once(
            BUILTIN_TOML,
            "[models.kamp2020.effect_site.tpeak_min]\nvalue = 1.0",
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
            "[models.kamp2020.effect_site.tpeak_min]",
            "[models.kamp2020.effect_site]\n\n[models.kamp2020.effect_site.tpeak_mn]",
        );
        // The typo is caught structurally ...
        expect_invalid(&t, "models.kamp2020.effect_site.tpeak_mn", "unknown field");
        // ... and an empty effect site by validation.
        let t = remove_tables(BUILTIN_TOML, "[models.kamp2020.effect_site.tpeak_min]");
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
            "{ model = \"domino\" }",
            "{ model = \"marsh\" }",
        );
        expect_invalid(
            &t,
            "model_selection.by_age[1].model",
            "unknown model 'marsh'",
        );
        let t = replace_once(
            BUILTIN_TOML,
            "{ model = \"domino\" }",
            "{ below_age_years = 150.0, model = \"domino\" }",
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
        let t = replace_once(BUILTIN_TOML, "by_age = [\n    { below_age_years = 18.0, model = \"herd\" },\n    { model = \"domino\" },\n]", "by_age = []");
        expect_invalid(&t, "model_selection.by_age", "at least one rule");
        let t = replace_once(
            BUILTIN_TOML,
            "reference_model = \"domino\"",
            "reference_model = \"marsh\"",
        );
        expect_invalid(&t, "model_selection.reference_model", "unknown model");
        let t = replace_once(
            BUILTIN_TOML,
            "when_age_unknown = \"domino\"",
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
}
