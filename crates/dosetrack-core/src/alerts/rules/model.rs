//! The model rules: `interaction` (a comedication that changes the model
//! or warrants a warning) and `model_domain` (covariates outside the
//! model's validity domain).

use super::{Ctx, Evaluation};
use crate::alerts::details::{Interaction, ModelDomain, RuleDetails};
use crate::alerts::{Priority, Rule};

impl Ctx<'_> {
    pub(super) fn interaction(&self, ev: &mut Evaluation) {
        for i in &self.d.patient.interactions {
            let changes_pk = i.clearance_multiplier.is_some_and(|m| m != 1.0)
                || i.route_f_multipliers.values().any(|&m| m != 1.0);
            if !changes_pk && i.pd_warning.is_none() {
                continue;
            }
            let details = RuleDetails::Interaction(Interaction {
                assumes: self.assumes(),
                clearance_multiplier: i.clearance_multiplier,
                comedication: i.comedication.clone(),
                mechanism: i.mechanism.clone(),
                model: self.model(),
                model_adjusted: changes_pk,
                pd_warning: i.pd_warning.clone(),
                route_f_multipliers: i
                    .route_f_multipliers
                    .iter()
                    .map(|(r, m)| (r.as_str().to_owned(), *m))
                    .collect(),
                source: i.source.clone(),
                summary: i.summary.clone(),
            });
            let what = if changes_pk {
                "the model is adjusted for it"
            } else {
                "pharmacodynamic: the model is not adjusted"
            };
            ev.conditions.push(self.condition(
                Rule::Interaction,
                i.comedication.clone(),
                Priority::Medium,
                format!(
                    "Interaction with {} ({}): {what}. {}",
                    i.comedication, i.mechanism, i.summary
                ),
                details,
            ));
        }
    }

    pub(super) fn model_domain(&self, ev: &mut Evaluation) {
        let warnings: Vec<&str> = self
            .d
            .patient
            .warnings
            .iter()
            .filter(|w| w.code == "model_domain")
            .map(|w| w.message.as_str())
            .collect();
        if warnings.is_empty() {
            return;
        }
        let details = RuleDetails::ModelDomain(ModelDomain {
            assumes: self.assumes(),
            model: self.model(),
            warnings: warnings.iter().map(|w| (*w).to_owned()).collect(),
        });
        let mut c = self.condition(
            Rule::ModelDomain,
            "covariates".into(),
            Priority::Low,
            format!(
                "Outside the validity domain of {}: {}",
                self.model,
                warnings.join("; ")
            ),
            details,
        );
        c.fingerprint = warnings.join("|");
        ev.conditions.push(c);
    }
}
