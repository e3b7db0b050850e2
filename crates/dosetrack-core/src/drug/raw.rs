//! The drug file's raw (serde) shape and its structural errors.
//!
//! TOML is first deserialised into these private structs, which deny unknown
//! keys; [`super::validate`] turns them into the public types. A structural
//! error (an unknown or missing key, a wrong type) is reported with the
//! dotted key path recovered from toml's error span, and its line/column.

use super::DrugFileError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Where the file being read came from (for error messages); the
/// validation's context ([`super::validate`] adds its checks to it).
pub(super) struct Ctx<'a> {
    pub(super) path: &'a Path,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSourced {
    pub(super) value: f64,
    pub(super) source: String,
    #[serde(default)]
    pub(super) assumption: bool,
    #[serde(default)]
    pub(super) note: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    #[allow(dead_code)] // checked before structural deserialization
    pub(super) schema_version: i64,
    pub(super) drug: RawDrug,
    pub(super) model_selection: RawModelSelection,
    pub(super) models: BTreeMap<String, RawModel>,
    pub(super) routes: BTreeMap<String, RawRoute>,
    pub(super) targets: RawTargets,
    pub(super) limits: BTreeMap<String, RawLimits>,
    #[serde(default)]
    pub(super) interactions: BTreeMap<String, RawInteraction>,
    #[serde(default)]
    pub(super) pd_warnings: BTreeMap<String, RawPdWarning>,
    #[serde(default)]
    pub(super) relief: Option<RawRelief>,
    #[serde(default)]
    pub(super) liver: Option<RawLiver>,
    #[serde(default)]
    pub(super) covariate_effects: Option<RawCovariateEffects>,
    #[serde(default)]
    pub(super) metabolism: Option<RawMetabolism>,
    #[serde(default)]
    pub(super) norketamine: Option<RawNorketamine>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLiver {
    pub(super) hepatic_blood_flow_l_per_h: RawSourced,
    pub(super) qh_reference_weight_kg: RawSourced,
    pub(super) hepatic_fraction_of_clearance: RawSourced,
    pub(super) qh_age_slope_l_per_h_per_year: Option<RawSourced>,
    pub(super) qh_age_threshold_years: Option<RawSourced>,
    #[serde(default)]
    pub(super) swallowed_share_of_f: BTreeMap<String, RawSourced>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCovariateEffects {
    pub(super) female_clearance_multiplier: Option<RawSourced>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetabolism {
    #[serde(default)]
    pub(super) cyp2b6: BTreeMap<String, RawGenotype>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGenotype {
    pub(super) intrinsic_clearance_multiplier: RawSourced,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNorketamine {
    pub(super) reference_weight_kg: f64,
    pub(super) v_l: RawSourced,
    pub(super) cl_l_per_h: RawSourced,
    pub(super) vp_l: RawSourced,
    pub(super) q_l_per_h: RawSourced,
    pub(super) volume_exponent: RawSourced,
    pub(super) clearance_exponent: RawSourced,
    pub(super) formation_fraction: RawSourced,
    #[serde(default)]
    pub(super) first_pass_fraction: BTreeMap<String, RawSourced>,
    pub(super) potency_relative_to_ketamine: RawSourced,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRelief {
    pub(super) chronic: RawChronicRelief,
    #[serde(default)]
    pub(super) acute: Option<RawAcuteRelief>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAcuteRelief {
    pub(super) default_indication: String,
    pub(super) indications: BTreeMap<String, RawIndication>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIndication {
    pub(super) title: String,
    pub(super) ec50_ng_per_ml: RawSourced,
    pub(super) hill: RawSourced,
    pub(super) target_relief_fraction: RawSourced,
    #[serde(default)]
    pub(super) relief_over_weeks: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawChronicRelief {
    pub(super) half_life_days: RawSourced,
    pub(super) c50_ng_per_ml: RawSourced,
    pub(super) hill: RawSourced,
    pub(super) s_fraction: RawSourced,
    pub(super) response_probability: RawSourced,
    pub(super) placebo_response_probability: RawSourced,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDrug {
    pub(super) name: String,
    pub(super) substance: String,
    pub(super) molar_mass_g_per_mol: RawSourced,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawModelSelection {
    pub(super) by_age: Vec<RawAgeRule>,
    pub(super) when_age_unknown: String,
    pub(super) reference_weight_kg: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAgeRule {
    #[serde(default)]
    pub(super) below_age_years: Option<f64>,
    pub(super) model: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawModel {
    pub(super) title: String,
    pub(super) population: String,
    pub(super) source: String,
    pub(super) compartments: i64,
    pub(super) disposition: RawDisposition,
    pub(super) effect_site: RawEffectSite,
    #[serde(default)]
    pub(super) validity: RawValidity,
    #[serde(default)]
    pub(super) routes: BTreeMap<String, RawRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDisposition {
    pub(super) kind: String,
    // micro
    pub(super) v1_l_per_kg: Option<RawSourced>,
    pub(super) k10_per_min: Option<RawSourced>,
    pub(super) k12_per_min: Option<RawSourced>,
    pub(super) k21_per_min: Option<RawSourced>,
    pub(super) k13_per_min: Option<RawSourced>,
    pub(super) k31_per_min: Option<RawSourced>,
    // clearance
    pub(super) reference_weight_kg: Option<f64>,
    pub(super) v1_l: Option<RawSourced>,
    pub(super) v2_l: Option<RawSourced>,
    pub(super) v3_l: Option<RawSourced>,
    pub(super) cl_l_per_h: Option<RawSourced>,
    pub(super) q2_l_per_h: Option<RawSourced>,
    pub(super) q3_l_per_h: Option<RawSourced>,
    pub(super) volume_exponent: Option<RawSourced>,
    pub(super) clearance_exponent: Option<RawSourced>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEffectSite {
    pub(super) ke0_per_min: Option<RawSourced>,
    pub(super) tpeak_min: Option<RawSourced>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawValidity {
    pub(super) age_years: Option<RawBounds>,
    pub(super) weight_kg: Option<RawBounds>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBounds {
    pub(super) min: Option<f64>,
    pub(super) max: Option<f64>,
    pub(super) source: String,
    #[serde(default)]
    pub(super) assumption: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) f: Option<RawSourced>,
    pub(super) ka_per_min: Option<RawSourced>,
    pub(super) tmax_min: Option<RawSourced>,
    pub(super) lag_min: Option<RawSourced>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTargets {
    pub(super) analgesic_floor_ng_per_ml: RawSourced,
    pub(super) psychotomimetic_caution_ng_per_ml: RawSourced,
    pub(super) ceiling_ng_per_ml: RawSourced,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) max_bolus_mg_per_kg: RawSourced,
    pub(super) max_infusion_mg_per_kg_per_h: RawSourced,
    pub(super) max_cumulative_mg_per_kg_per_24h: RawSourced,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInteraction {
    pub(super) mechanism: String,
    pub(super) source: String,
    pub(super) summary: String,
    pub(super) clearance_multiplier: Option<RawSourced>,
    #[serde(default)]
    pub(super) route_f_multipliers: BTreeMap<String, RawSourced>,
    pub(super) pd_warning: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPdWarning {
    pub(super) text: String,
    pub(super) source: String,
    #[serde(default)]
    pub(super) assumption: bool,
}

// Structural errors: map toml's byte span to a dotted key path.

pub(super) fn structural_error(ctx: &Ctx<'_>, text: &str, e: &toml::de::Error) -> DrugFileError {
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
