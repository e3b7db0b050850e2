//! Engine parameters: one patient's resolved model, in engine units.
//!
//! Volumes in litres, rate constants per minute, lags in minutes. These are
//! produced by `patient::resolve` from the drug file; the engine never reads
//! the drug file itself.

use crate::vocab::Route;
use serde::Serialize;

/// Absorption and bioavailability of one route for one patient.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RouteParams {
    /// Fraction of the dose that reaches the systemic circulation.
    pub f: f64,
    /// First-order absorption rate from the route's depot (per min); `None`
    /// for intravenous routes, which go straight into the central compartment.
    pub ka_per_min: Option<f64>,
    /// Delay between administration and the start of absorption (min).
    pub lag_min: f64,
}

/// A resolved linear mammillary model with effect site, in engine units.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PkParams {
    /// Central volume (L).
    pub v1_l: f64,
    /// Elimination from the central compartment (per min).
    pub k10_per_min: f64,
    /// Central → first peripheral (per min); 0 for a 1-compartment model.
    pub k12_per_min: f64,
    /// First peripheral → central (per min); 0 for a 1-compartment model.
    pub k21_per_min: f64,
    /// Central → second peripheral (per min); 0 below 3 compartments.
    pub k13_per_min: f64,
    /// Second peripheral → central (per min); 0 below 3 compartments.
    pub k31_per_min: f64,
    /// Effect-site equilibration rate (per min).
    pub ke0_per_min: f64,
    /// Per route, indexed by `Route as usize` order of [`Route::ALL`].
    pub routes: [RouteParams; 9],
}

/// Parameters that cannot describe a model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid PK parameter {name} = {value}: {reason}")]
pub struct InvalidParams {
    pub name: String,
    pub value: f64,
    pub reason: &'static str,
}

impl PkParams {
    /// The parameters of one route.
    pub fn route(&self, route: Route) -> &RouteParams {
        &self.routes[route_index(route)]
    }

    /// Mutable access to one route's parameters.
    pub fn route_mut(&mut self, route: Route) -> &mut RouteParams {
        &mut self.routes[route_index(route)]
    }

    /// Elimination clearance (L/min).
    pub fn cl_l_per_min(&self) -> f64 {
        self.k10_per_min * self.v1_l
    }

    /// Number of compartments the parameters describe (1, 2 or 3).
    pub fn compartments(&self) -> u8 {
        1 + u8::from(self.k12_per_min > 0.0) + u8::from(self.k13_per_min > 0.0)
    }

    /// Check every value is usable: finite, volumes and k10, ke0 positive,
    /// transfer constants paired (both zero or both positive), 0 < F ≤ 1,
    /// ka positive for extravascular routes, lags non-negative.
    pub fn validate(&self) -> Result<(), InvalidParams> {
        let positive = [
            ("v1_l", self.v1_l),
            ("k10_per_min", self.k10_per_min),
            ("ke0_per_min", self.ke0_per_min),
        ];
        for (name, value) in positive {
            if !(value.is_finite() && value > 0.0) {
                return Err(invalid(name, value, "must be a finite number above 0"));
            }
        }
        let pairs = [
            (
                "k12_per_min",
                self.k12_per_min,
                "k21_per_min",
                self.k21_per_min,
            ),
            (
                "k13_per_min",
                self.k13_per_min,
                "k31_per_min",
                self.k31_per_min,
            ),
        ];
        for (a, va, b, vb) in pairs {
            for (name, value) in [(a, va), (b, vb)] {
                if !(value.is_finite() && value >= 0.0) {
                    return Err(invalid(name, value, "must be a finite number ≥ 0"));
                }
            }
            if (va > 0.0) != (vb > 0.0) {
                return Err(invalid(
                    a,
                    va,
                    "transfer constants must both be 0 or both above 0",
                ));
            }
        }
        if self.k13_per_min > 0.0 && self.k12_per_min == 0.0 {
            return Err(invalid(
                "k13_per_min",
                self.k13_per_min,
                "a third compartment needs a second one",
            ));
        }
        for route in Route::ALL {
            let r = self.route(route);
            let name = |field: &str| format!("routes.{route}.{field}");
            if !(r.f.is_finite() && r.f > 0.0 && r.f <= 1.0) {
                return Err(InvalidParams {
                    name: name("f"),
                    value: r.f,
                    reason: "must be above 0 and at most 1",
                });
            }
            if !(r.lag_min.is_finite() && r.lag_min >= 0.0) {
                return Err(InvalidParams {
                    name: name("lag_min"),
                    value: r.lag_min,
                    reason: "must be a finite number ≥ 0",
                });
            }
            match (route.is_intravenous(), r.ka_per_min) {
                (true, None) => {}
                (true, Some(ka)) => {
                    return Err(InvalidParams {
                        name: name("ka_per_min"),
                        value: ka,
                        reason: "intravenous routes have no absorption",
                    })
                }
                (false, Some(ka)) if ka.is_finite() && ka > 0.0 => {}
                (false, other) => {
                    return Err(InvalidParams {
                        name: name("ka_per_min"),
                        value: other.unwrap_or(f64::NAN),
                        reason: "extravascular routes need a finite ka above 0",
                    })
                }
            }
        }
        Ok(())
    }
}

fn invalid(name: &str, value: f64, reason: &'static str) -> InvalidParams {
    InvalidParams {
        name: name.to_owned(),
        value,
        reason,
    }
}

/// Position of a route in [`Route::ALL`] and in [`PkParams::routes`].
pub fn route_index(route: Route) -> usize {
    route.index()
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// Domino 1984 at 70 kg (stanpumpR / opentiva constants), with simple
    /// absorption for every extravascular route. For engine tests only.
    pub(crate) fn domino_70kg() -> PkParams {
        let ev = |f: f64, ka: f64, lag: f64| RouteParams {
            f,
            ka_per_min: Some(ka),
            lag_min: lag,
        };
        let iv = RouteParams {
            f: 1.0,
            ka_per_min: None,
            lag_min: 0.0,
        };
        PkParams {
            v1_l: 0.063 * 70.0,
            k10_per_min: 0.438,
            k12_per_min: 0.592,
            k21_per_min: 0.247,
            k13_per_min: 0.590,
            k31_per_min: 0.0146,
            ke0_per_min: 0.652,
            routes: [
                iv,
                iv,
                ev(0.93, 0.2, 0.0),
                ev(0.9, 0.1, 0.0),
                ev(0.45, 0.15, 0.0),
                ev(0.2, 0.03, 5.0),
                ev(0.29, 0.05, 0.0),
                ev(0.25, 0.04, 0.0),
                ev(1.0, 0.02, 30.0),
            ],
        }
    }

    #[test]
    fn domino_is_valid_and_three_compartment() {
        let p = domino_70kg();
        p.validate().unwrap();
        assert_eq!(p.compartments(), 3);
        assert!((p.cl_l_per_min() - 1.93158).abs() < 1e-9);
    }

    #[test]
    fn validation_catches_each_kind_of_error() {
        let mut p = domino_70kg();
        p.k21_per_min = 0.0;
        assert_eq!(p.validate().unwrap_err().name, "k12_per_min");
        let mut p = domino_70kg();
        p.route_mut(Route::Oral).f = 1.2;
        assert_eq!(p.validate().unwrap_err().name, "routes.oral.f");
        let mut p = domino_70kg();
        p.route_mut(Route::IvBolus).ka_per_min = Some(1.0);
        assert_eq!(p.validate().unwrap_err().name, "routes.iv_bolus.ka_per_min");
        let mut p = domino_70kg();
        p.route_mut(Route::Sc).ka_per_min = None;
        assert_eq!(p.validate().unwrap_err().name, "routes.sc.ka_per_min");
        let mut p = domino_70kg();
        p.v1_l = f64::NAN;
        assert_eq!(p.validate().unwrap_err().name, "v1_l");
    }
}
