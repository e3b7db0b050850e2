//! Drug-file validation: ranges, cross-references and consistency rules
//! over the raw structs, each failure a [`DrugFileError::Invalid`] naming
//! the dotted key (e.g. `models.domino.disposition.k10_per_min`).

use super::raw::{
    Ctx, RawBounds, RawCovariateEffects, RawDisposition, RawEffectSite, RawFile, RawInteraction,
    RawLiver, RawMetabolism, RawModel, RawModelSelection, RawNorketamine, RawRelief, RawRoute,
    RawSourced, RawTargets,
};
use super::*;

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
    /// ≤ 0: slopes that can only lower a value (Qh with age).
    NonPositive,
}

impl Rule {
    fn accepts(self, x: f64) -> bool {
        match self {
            Rule::Positive => x > 0.0,
            Rule::NonNegative => x >= 0.0,
            Rule::Fraction => x > 0.0 && x <= 1.0,
            Rule::Exponent => (0.0..=2.0).contains(&x),
            Rule::NonPositive => x <= 0.0,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Rule::Positive => "must be greater than 0",
            Rule::NonNegative => "must be 0 or greater",
            Rule::Fraction => "must be greater than 0 and at most 1",
            Rule::Exponent => "must be between 0 and 2",
            Rule::NonPositive => "must be 0 or less",
        }
    }
}

type Res<T> = Result<T, DrugFileError>;

impl Ctx<'_> {
    pub(super) fn invalid(
        &self,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> DrugFileError {
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
    pub(super) fn validate(self, ctx: &Ctx<'_>) -> Res<DrugFile> {
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
        let mut ordered = Vec::with_capacity(Route::ALL.len());
        for route in Route::ALL {
            let Some(spec) = routes.remove(&route) else {
                return Err(ctx.invalid(
                    format!("routes.{route}"),
                    "missing: every route must be in the route table",
                ));
            };
            ordered.push(spec);
        }
        let routes = RouteTable::from_ordered(ordered)
            .ok_or_else(|| ctx.invalid("routes", "the route table must have every route"))?;

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
        let mut take = |setting: Setting| {
            limits.remove(&setting).ok_or_else(|| {
                ctx.invalid(
                    format!("limits.{}", setting.as_str()),
                    "missing: limits for both ward and monitored are required",
                )
            })
        };
        let ward = take(Setting::Ward)?;
        let monitored = take(Setting::Monitored)?;
        let limits = SettingLimits::new(ward, monitored);

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

        let relief = match self.relief {
            Some(r) => Some(validate_relief(ctx, r, &targets)?),
            None => None,
        };

        let liver = self.liver.map(|l| validate_liver(ctx, l)).transpose()?;
        let covariate_effects = self
            .covariate_effects
            .map(|c| validate_covariate_effects(ctx, c))
            .transpose()?;
        let metabolism = self
            .metabolism
            .map(|m| validate_metabolism(ctx, m, liver.is_some()))
            .transpose()?;
        let norketamine = match self.norketamine {
            Some(n) => Some(validate_norketamine(ctx, n, &routes)?),
            None => None,
        };

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
            relief,
            liver,
            covariate_effects,
            metabolism,
            norketamine,
        })
    }
}

fn validate_liver(ctx: &Ctx<'_>, raw: RawLiver) -> Res<LiverSpec> {
    let key = |k: &str| format!("liver.{k}");
    let hepatic_blood_flow_l_per_h = ctx.sourced(
        &key("hepatic_blood_flow_l_per_h"),
        raw.hepatic_blood_flow_l_per_h,
        Rule::Positive,
    )?;
    let qh_reference_weight_kg = ctx.sourced(
        &key("qh_reference_weight_kg"),
        raw.qh_reference_weight_kg,
        Rule::Positive,
    )?;
    let hepatic_fraction_of_clearance = ctx.sourced(
        &key("hepatic_fraction_of_clearance"),
        raw.hepatic_fraction_of_clearance,
        Rule::Fraction,
    )?;
    let age_effect = match (
        raw.qh_age_slope_l_per_h_per_year,
        raw.qh_age_threshold_years,
    ) {
        (Some(slope), Some(threshold)) => Some(QhAgeEffect {
            qh_age_slope_l_per_h_per_year: ctx.sourced(
                &key("qh_age_slope_l_per_h_per_year"),
                slope,
                Rule::NonPositive,
            )?,
            qh_age_threshold_years: ctx.sourced(
                &key("qh_age_threshold_years"),
                threshold,
                Rule::NonNegative,
            )?,
        }),
        (None, None) => None,
        (Some(_), None) => {
            return Err(ctx.invalid(
                key("qh_age_threshold_years"),
                "missing: qh_age_slope_l_per_h_per_year needs the age it applies above",
            ))
        }
        (None, Some(_)) => {
            return Err(ctx.invalid(
                key("qh_age_slope_l_per_h_per_year"),
                "missing: qh_age_threshold_years needs a slope",
            ))
        }
    };
    let mut swallowed_share_of_f = BTreeMap::new();
    for (name, share) in raw.swallowed_share_of_f {
        let k = key(&format!("swallowed_share_of_f.{name}"));
        let route = ctx.route_key(&k, &name)?;
        if route.is_intravenous() {
            return Err(ctx.invalid(
                k,
                "intravenous doses have no first pass (the liver changes IV exposure through clearance)",
            ));
        }
        swallowed_share_of_f.insert(route, ctx.sourced(&k, share, Rule::Fraction)?);
    }
    Ok(LiverSpec {
        hepatic_blood_flow_l_per_h,
        qh_reference_weight_kg,
        hepatic_fraction_of_clearance,
        age_effect,
        swallowed_share_of_f,
    })
}

fn validate_covariate_effects(ctx: &Ctx<'_>, raw: RawCovariateEffects) -> Res<CovariateEffects> {
    Ok(CovariateEffects {
        female_clearance_multiplier: ctx.optional(
            "covariate_effects.female_clearance_multiplier",
            raw.female_clearance_multiplier,
            Rule::Positive,
        )?,
    })
}

/// A genotype is written `*<allele>/*<allele>`, e.g. `*1/*6`.
fn is_genotype(name: &str) -> bool {
    let allele = |a: &str| {
        a.strip_prefix('*').is_some_and(|rest| {
            !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '.')
        })
    };
    name.split_once('/')
        .is_some_and(|(a, b)| allele(a) && allele(b))
}

fn validate_metabolism(ctx: &Ctx<'_>, raw: RawMetabolism, has_liver: bool) -> Res<MetabolismSpec> {
    if !has_liver {
        return Err(ctx.invalid(
            "metabolism",
            "needs a [liver] section: genotype multipliers act on intrinsic clearance in the liver",
        ));
    }
    let mut cyp2b6 = BTreeMap::new();
    for (genotype, g) in raw.cyp2b6 {
        let k = genotype_key(&genotype);
        if !is_genotype(&genotype) {
            return Err(ctx.invalid(
                format!("metabolism.cyp2b6.\"{genotype}\""),
                format!(
                    "genotype '{genotype}' must be written *<allele>/*<allele>, e.g. \"*1/*6\""
                ),
            ));
        }
        let m = ctx.sourced(&k, g.intrinsic_clearance_multiplier, Rule::Positive)?;
        cyp2b6.insert(
            genotype,
            GenotypeEffect {
                intrinsic_clearance_multiplier: m,
            },
        );
    }
    Ok(MetabolismSpec { cyp2b6 })
}

fn validate_norketamine(
    ctx: &Ctx<'_>,
    raw: RawNorketamine,
    routes: &RouteTable,
) -> Res<NorketamineSpec> {
    let key = |k: &str| format!("norketamine.{k}");
    let reference_weight_kg = ctx.number(
        &key("reference_weight_kg"),
        raw.reference_weight_kg,
        Rule::Positive,
    )?;
    let mut first_pass_fraction = BTreeMap::new();
    for (name, s) in raw.first_pass_fraction {
        let k = key(&format!("first_pass_fraction.{name}"));
        let route = ctx.route_key(&k, &name)?;
        if route.is_intravenous() {
            return Err(ctx.invalid(
                k,
                "intravenous doses reach the circulation directly: no first pass",
            ));
        }
        let fp = ctx.sourced(&k, s, Rule::Fraction)?;
        let f = routes.get(route).f.value;
        if fp.value + f > 1.0 {
            return Err(ctx.invalid(
                k,
                format!(
                    "the first-pass fraction ({}) and the route's F ({f}) add up to more than the dose",
                    fp.value
                ),
            ));
        }
        first_pass_fraction.insert(route, fp);
    }
    let potency = ctx.sourced(
        &key("potency_relative_to_ketamine"),
        raw.potency_relative_to_ketamine,
        Rule::NonNegative,
    )?;
    if potency.value != 0.0 {
        return Err(ctx.invalid(
            key("potency_relative_to_ketamine"),
            format!(
                "only 0 is supported for now (got {}): counting norketamine's effect in the relief \
                 needs a norketamine effect site, which is not implemented",
                potency.value
            ),
        ));
    }
    Ok(NorketamineSpec {
        reference_weight_kg,
        v_l: ctx.sourced(&key("v_l"), raw.v_l, Rule::Positive)?,
        cl_l_per_h: ctx.sourced(&key("cl_l_per_h"), raw.cl_l_per_h, Rule::Positive)?,
        vp_l: ctx.sourced(&key("vp_l"), raw.vp_l, Rule::Positive)?,
        q_l_per_h: ctx.sourced(&key("q_l_per_h"), raw.q_l_per_h, Rule::Positive)?,
        volume_exponent: ctx.sourced(
            &key("volume_exponent"),
            raw.volume_exponent,
            Rule::Exponent,
        )?,
        clearance_exponent: ctx.sourced(
            &key("clearance_exponent"),
            raw.clearance_exponent,
            Rule::Exponent,
        )?,
        formation_fraction: ctx.sourced(
            &key("formation_fraction"),
            raw.formation_fraction,
            Rule::Fraction,
        )?,
        first_pass_fraction,
        potency_relative_to_ketamine: potency,
    })
}

fn validate_acute(
    ctx: &Ctx<'_>,
    raw: super::raw::RawAcuteRelief,
    targets: &Targets,
) -> Res<AcuteReliefSpec> {
    let mut indications = BTreeMap::new();
    for (name, ind) in raw.indications {
        let p = format!("relief.acute.indications.{name}");
        ctx.name(&p, &name, "indication key", &[])?;
        let spec = IndicationSpec {
            title: ctx.text(&format!("{p}.title"), ind.title)?,
            ec50_ng_per_ml: ctx.sourced(
                &format!("{p}.ec50_ng_per_ml"),
                ind.ec50_ng_per_ml,
                Rule::Positive,
            )?,
            hill: ctx.sourced(&format!("{p}.hill"), ind.hill, Rule::Positive)?,
            target_relief_fraction: ctx.sourced(
                &format!("{p}.target_relief_fraction"),
                ind.target_relief_fraction,
                Rule::Fraction,
            )?,
            relief_over_weeks: ind.relief_over_weeks,
        };
        if spec.target_relief_fraction.value >= 1.0 {
            return Err(ctx.invalid(
                format!("{p}.target_relief_fraction"),
                "must be below 1: an Emax model never reaches its maximum",
            ));
        }
        let floor = spec.floor_ng_per_ml();
        let caution = targets.psychotomimetic_caution_ng_per_ml.value;
        if !(floor.is_finite() && floor < caution) {
            return Err(ctx.invalid(
                format!("{p}.target_relief_fraction"),
                format!(
                    "gives an analgesic floor of {floor} ng/mL, which must be below targets.psychotomimetic_caution_ng_per_ml ({caution})"
                ),
            ));
        }
        indications.insert(name, spec);
    }
    if !indications.contains_key(&raw.default_indication) {
        return Err(ctx.invalid(
            "relief.acute.default_indication",
            format!(
                "'{}' is not one of the indications ({})",
                raw.default_indication,
                indications.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    Ok(AcuteReliefSpec {
        default_indication: raw.default_indication,
        indications,
    })
}

fn validate_relief(ctx: &Ctx<'_>, raw: RawRelief, targets: &Targets) -> Res<ReliefSpec> {
    let acute = match raw.acute {
        Some(a) => Some(validate_acute(ctx, a, targets)?),
        None => None,
    };
    let c = raw.chronic;
    let key = |k: &str| format!("relief.chronic.{k}");
    Ok(ReliefSpec {
        acute,
        chronic: ChronicReliefSpec {
            half_life_days: ctx.sourced(
                &key("half_life_days"),
                c.half_life_days,
                Rule::Positive,
            )?,
            c50_ng_per_ml: ctx.sourced(&key("c50_ng_per_ml"), c.c50_ng_per_ml, Rule::Positive)?,
            hill: ctx.sourced(&key("hill"), c.hill, Rule::Positive)?,
            s_fraction: ctx.sourced(&key("s_fraction"), c.s_fraction, Rule::Fraction)?,
            response_probability: ctx.sourced(
                &key("response_probability"),
                c.response_probability,
                Rule::Fraction,
            )?,
            placebo_response_probability: ctx.sourced(
                &key("placebo_response_probability"),
                c.placebo_response_probability,
                Rule::Fraction,
            )?,
        },
    })
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
    let reference_weight_kg = ctx.number(
        "model_selection.reference_weight_kg",
        raw.reference_weight_kg,
        Rule::Positive,
    )?;
    Ok(ModelSelection {
        by_age,
        when_age_unknown: raw.when_age_unknown,
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
