//! Property test: forecast crossing times against a brute-force scan at
//! 1-second resolution, for random parameters, regimens, levels and start
//! times (so that future input events — infusion ends, patch ends, lagged
//! doses — fall inside the horizon).
//!
//! Acceptance: the forecast's crossing lies within the brute-force second
//! (`b − 1 s < c ≤ b`). A crossing the forecast finds that the 1-s scan
//! misses must be a real excursion shorter than a second.

use crate::common;

use common::{bolus, solve, MS_PER_H};
use dosetrack_core::pk::{Direction, Dosing, Output, PkParams};
use proptest::prelude::*;

fn params() -> impl Strategy<Value = PkParams> {
    common::strategies::params(common::strategies::ParamRanges {
        v1_l: 2.0..60.0,
        k10: 0.01..0.8,
        k12: 0.01..0.8,
        k21: 0.01..0.5,
        k13: 0.005..0.5,
        k31: 0.002..0.1,
        ke0: 0.1..6.0,
        f: 0.1..=1.0,
        ka: 0.01..0.5,
        lag_min: (0.0..20.0).boxed(),
        iv_infusion_lag_min: Just(0.0).boxed(),
    })
}

use common::strategies::BOLUS_ROUTES as ROUTES;

fn dosing() -> impl Strategy<Value = Dosing> {
    let t = 0i64..8 * MS_PER_H;
    prop_oneof![
        (t.clone(), 0usize..7, 2.0f64..100.0).prop_map(|(at, r, a)| bolus(at, ROUTES[r], a)),
        (
            t.clone(),
            prop_oneof![Just(None), (60_000i64..6 * MS_PER_H).prop_map(Some)],
            1.0f64..60.0
        )
            .prop_map(|(s, d, r)| Dosing::Infusion {
                start_ms: s,
                end_ms: d.map(|d| s + d),
                rate_mg_per_h: r,
            }),
        (t, MS_PER_H..12 * MS_PER_H, 0.5f64..5.0).prop_map(|(s, w, r)| Dosing::Patch {
            start_ms: s,
            end_ms: s + w,
            release_rate_mg_per_h: r,
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn forecast_matches_a_one_second_scan(
        p in params(),
        regimen in proptest::collection::vec(dosing(), 1..6),
        from in 0i64..10 * MS_PER_H,
        level_fraction in 0.02f64..1.2,
        ce in any::<bool>(),
    ) {
        let output = if ce { Output::Ce } else { Output::Cp };
        let s = solve(p, &regimen);
        let horizon = 12 * MS_PER_H;
        let value = |c: dosetrack_core::pk::Concentrations| if ce { c.ce_ng_per_ml } else { c.cp_ng_per_ml };
        let scan = s.sample(from, from + horizon, 1000);
        let peak = scan.iter().map(|x| if ce { x.ce_ng_per_ml } else { x.cp_ng_per_ml }).fold(0.0, f64::max);
        prop_assume!(peak > 0.0);
        let level = peak * level_fraction;
        let start_above = value(s.at(from)) > level;
        prop_assume!((value(s.at(from)) - level).abs() > 1e-6 * level);
        let brute = scan
            .iter()
            .skip(1)
            .find(|x| ((if ce { x.ce_ng_per_ml } else { x.cp_ng_per_ml }) > level) != start_above)
            .map(|x| x.t_ms);
        let ours = s.next_crossing(output, level, from, horizon);
        match (ours, brute) {
            (Some(c), Some(b)) if c.at_ms <= b - 1000 => {
                // Earlier than the scan's second: only legitimate if it is a
                // real excursion the 1-s scan stepped over.
                let v = value(s.at(c.at_ms));
                prop_assert!((v > level) != start_above, "forecast {} not on the new side ({} vs {})", c.at_ms, v, level);
                let back = s.next_crossing(output, level, c.at_ms, horizon);
                prop_assert!(back.is_some_and(|x| x.at_ms - c.at_ms < 1000), "excursion at {} lasts ≥ 1 s but the scan missed it", c.at_ms);
            }
            (Some(c), Some(b)) => {
                prop_assert!(c.at_ms <= b, "forecast {} after brute-force {}", c.at_ms, b);
                let dir = if start_above { Direction::Falling } else { Direction::Rising };
                prop_assert_eq!(c.direction, dir);
            }
            (None, Some(b)) => prop_assert!(false, "missed the crossing at {} (level {}, peak {})", b, level, peak),
            (Some(c), None) => {
                let v = value(s.at(c.at_ms));
                prop_assert!((v > level) != start_above, "phantom crossing at {}", c.at_ms);
                let back = s.next_crossing(output, level, c.at_ms, horizon);
                prop_assert!(back.is_some_and(|x| x.at_ms - c.at_ms < 1000), "excursion at {} lasts ≥ 1 s but the scan missed it", c.at_ms);
            }
            (None, None) => {}
        }
    }
}
