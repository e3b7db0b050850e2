//! proptest strategies shared by the engine's property tests: random model
//! parameters within given ranges, and the bolus routes.

use dosetrack_core::pk::{PkParams, RouteParams};
use dosetrack_core::vocab::Route;
use proptest::prelude::*;
use std::ops::{Range, RangeInclusive};

/// The routes a single amount can be given by.
pub(crate) const BOLUS_ROUTES: [Route; 7] = [
    Route::IvBolus,
    Route::Im,
    Route::Sc,
    Route::Intranasal,
    Route::Oral,
    Route::Sublingual,
    Route::Rectal,
];

/// Where each random parameter is drawn from (rate constants per min).
pub(crate) struct ParamRanges {
    pub v1_l: Range<f64>,
    pub k10: Range<f64>,
    pub k12: Range<f64>,
    pub k21: Range<f64>,
    pub k13: Range<f64>,
    pub k31: Range<f64>,
    pub ke0: Range<f64>,
    pub f: RangeInclusive<f64>,
    pub ka: Range<f64>,
    /// Lags of the extravascular routes.
    pub lag_min: BoxedStrategy<f64>,
    /// Lag of IV infusions.
    pub iv_infusion_lag_min: BoxedStrategy<f64>,
}

/// Random 1-, 2- or 3-compartment parameters; every extravascular route gets
/// its own F, ka and lag.
pub(crate) fn params(r: ParamRanges) -> impl Strategy<Value = PkParams> {
    (
        1usize..=3,
        r.v1_l,
        (r.k10, r.k12, r.k21, r.k13, r.k31),
        r.ke0,
        proptest::collection::vec((r.f, r.ka, r.lag_min), 7),
        r.iv_infusion_lag_min,
    )
        .prop_map(|(ncmt, v1, (k10, k12, k21, k13, k31), ke0, ev, iv_lag)| {
            let iv = RouteParams {
                f: 1.0,
                ka_per_min: None,
                lag_min: 0.0,
            };
            let iv_infusion = RouteParams {
                lag_min: iv_lag,
                ..iv
            };
            let e = |i: usize| RouteParams {
                f: ev[i].0,
                ka_per_min: Some(ev[i].1),
                lag_min: ev[i].2,
            };
            PkParams {
                v1_l: v1,
                k10_per_min: k10,
                k12_per_min: if ncmt >= 2 { k12 } else { 0.0 },
                k21_per_min: if ncmt >= 2 { k21 } else { 0.0 },
                k13_per_min: if ncmt >= 3 { k13 } else { 0.0 },
                k31_per_min: if ncmt >= 3 { k31 } else { 0.0 },
                ke0_per_min: ke0,
                routes: [iv, iv_infusion, e(0), e(1), e(2), e(3), e(4), e(5), e(6)],
            }
        })
}
