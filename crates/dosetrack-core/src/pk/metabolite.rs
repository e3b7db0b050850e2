//! The metabolite (norketamine): a parent–metabolite model solved exactly
//! beside the parent engine, without touching it.
//!
//! It owns the metabolite's parameters ([`MetaboliteParams`]), the
//! augmented linear system (the parent's 14 state components, see
//! [`super::system`], plus four) and its solution ([`MetaboliteSolution`]).
//! The parent engine ([`super::System`], [`super::Solution`]) is used as is:
//! the live tracker never pays for the metabolite.
//!
//! # The model
//!
//! Amounts in mg, rates per minute. The metabolite has a central and a
//! peripheral compartment (`Vn`, `CLn`, `Vpn`, `Qn`) and two sources:
//!
//! * **systemic formation**: a fraction `fm` of the parent's elimination
//!   from its central compartment, `fm · k10 · A1`;
//! * **first-pass formation**: for a route with a first-pass fraction `fp`
//!   (a fraction of the *dose*), metabolite enters from the route's depot
//!   with the route's absorption rate. The depot holds `F · dose` (the
//!   schedule applies F), so the flow is `ka · (fp / F) · depot`, which
//!   brings `fp · dose` in all, with the parent's own lag and absorption
//!   profile. The depot itself still empties into the parent's central
//!   compartment only (`ka · depot`), so the parent is untouched; the
//!   first-pass metabolite is the part of the dose that never reached the
//!   parent (`1 − F`), which is why `F + fp ≤ 1` is required.
//!
//! ```text
//! Anc' = fm·k10·A1 + Σ_routes ka_r·(fp_r/F_r)·depot_r − (kel + kcp)·Anc + kpc·Anp
//! Anp' = kcp·Anc − kpc·Anp
//! ```
//!
//! with `kel = CLn/Vn`, `kcp = Qn/Vn`, `kpc = Qn/Vpn`. Two more components
//! integrate the concentrations exactly: `∫ Cn dt` and `∫ Cp dt` (mg/L·min),
//! for the areas under the curves.
//!
//! # How it is solved
//!
//! As the parent: the augmented matrix is constant between input events
//! (zero-order rates are state), so the exact solution over `δ` is
//! `exp(M δ)`, precomputed for every dyadic `2^j ms` (one 18 × 18 matrix
//! exponential each, ~1 ms per system). At every checkpoint of the parent's
//! [`Solution`] (input events, changes of system) the parent components
//! are taken from the parent's own checkpoint state, so the parent part is
//! exactly the engine's and only the metabolite components are carried
//! over; between checkpoints everything moves with the augmented
//! transitions.

use super::params::{route_index, InvalidParams, PkParams};
use super::solution::Solution;
use super::system::{depot_of, System, CENTRAL, N};
use crate::vocab::{Route, TimeMs, MS_PER_MIN};
use nalgebra::DMatrix;
use serde::Serialize;

/// Index of the metabolite's central amount (mg).
pub const NK_CENTRAL: usize = N;
/// Index of the metabolite's peripheral amount (mg).
pub const NK_PERIPHERAL: usize = N + 1;
/// Index of `∫ Cn dt` (mg/L·min).
pub const AUC_METABOLITE: usize = N + 2;
/// Index of `∫ Cp dt` (mg/L·min).
pub const AUC_PARENT: usize = N + 3;
/// Length of the augmented state.
pub const NA: usize = N + 4;

/// Dyadic levels kept (as the parent engine: `2^37 ms` ≈ 4.4 years).
const LEVELS: usize = 38;

/// An augmented state vector.
pub type AugState = [f64; NA];

/// mg/L·min → ng·h/mL.
const AUC_TO_NG_H_PER_ML: f64 = 1000.0 / 60.0;

/// The metabolite's parameters, in engine units.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetaboliteParams {
    /// Central volume (L).
    pub v_l: f64,
    /// Elimination from the metabolite's central compartment, CLn/Vn (per min).
    pub k_el_per_min: f64,
    /// Central → peripheral, Qn/Vn (per min); 0 for one compartment.
    pub k_cp_per_min: f64,
    /// Peripheral → central, Qn/Vpn (per min); 0 for one compartment.
    pub k_pc_per_min: f64,
    /// Fraction of the parent's elimination that becomes metabolite.
    pub formation_fraction: f64,
    /// Per route (in [`Route::ALL`] order), the fraction of the dose that
    /// becomes metabolite on first pass; 0 for most routes, and always 0
    /// for intravenous ones.
    pub first_pass_fraction: [f64; 9],
}

impl MetaboliteParams {
    /// From volumes (L) and clearances (L/h); `vp_l` or `q_l_per_h` 0
    /// gives one compartment.
    pub fn from_clearances(
        v_l: f64,
        cl_l_per_h: f64,
        vp_l: f64,
        q_l_per_h: f64,
        formation_fraction: f64,
        first_pass_fraction: [f64; 9],
    ) -> Self {
        let two = vp_l > 0.0 && q_l_per_h > 0.0;
        MetaboliteParams {
            v_l,
            k_el_per_min: cl_l_per_h / v_l / 60.0,
            k_cp_per_min: if two { q_l_per_h / v_l / 60.0 } else { 0.0 },
            k_pc_per_min: if two { q_l_per_h / vp_l / 60.0 } else { 0.0 },
            formation_fraction,
            first_pass_fraction,
        }
    }

    /// Check the values, and against the parent's: `F + fp ≤ 1` per route.
    pub fn validate(&self, parent: &PkParams) -> Result<(), InvalidParams> {
        let bad = |name: &str, value: f64, reason: &'static str| InvalidParams {
            name: format!("metabolite.{name}"),
            value,
            reason,
        };
        for (name, v) in [("v_l", self.v_l), ("k_el_per_min", self.k_el_per_min)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(bad(name, v, "must be a finite number above 0"));
            }
        }
        for (name, v) in [
            ("k_cp_per_min", self.k_cp_per_min),
            ("k_pc_per_min", self.k_pc_per_min),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(bad(name, v, "must be a finite number ≥ 0"));
            }
        }
        if (self.k_cp_per_min > 0.0) != (self.k_pc_per_min > 0.0) {
            return Err(bad(
                "k_cp_per_min",
                self.k_cp_per_min,
                "transfer constants must both be 0 or both above 0",
            ));
        }
        let fm = self.formation_fraction;
        if !(fm.is_finite() && (0.0..=1.0).contains(&fm)) {
            return Err(bad("formation_fraction", fm, "must be between 0 and 1"));
        }
        for route in Route::ALL {
            let fp = self.first_pass_fraction[route_index(route)];
            let name = format!("first_pass_fraction.{route}");
            if !(fp.is_finite() && (0.0..=1.0).contains(&fp)) {
                return Err(bad(&name, fp, "must be between 0 and 1"));
            }
            if fp > 0.0 && route.is_intravenous() {
                return Err(bad(&name, fp, "intravenous doses have no first pass"));
            }
            if fp + parent.route(route).f > 1.0 + 1e-12 {
                return Err(bad(
                    &name,
                    fp,
                    "with the route's F it exceeds the dose (F + fp must be ≤ 1)",
                ));
            }
        }
        Ok(())
    }
}

/// A row-major augmented transition matrix.
#[derive(Clone)]
struct AugTransition {
    m: Box<[[f64; NA]; NA]>,
}

impl AugTransition {
    fn from_dmatrix(d: &DMatrix<f64>) -> Self {
        let mut m = Box::new([[0.0; NA]; NA]);
        for (i, row) in m.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = d[(i, j)];
            }
        }
        AugTransition { m }
    }

    fn identity() -> Self {
        let mut m = Box::new([[0.0; NA]; NA]);
        for (i, row) in m.iter_mut().enumerate() {
            row[i] = 1.0;
        }
        AugTransition { m }
    }

    /// `self · other` (apply `other` first).
    fn compose(&self, other: &AugTransition) -> AugTransition {
        let mut m = Box::new([[0.0; NA]; NA]);
        for (i, row) in m.iter_mut().enumerate() {
            for (j, out) in row.iter_mut().enumerate() {
                *out = (0..NA).map(|k| self.m[i][k] * other.m[k][j]).sum();
            }
        }
        AugTransition { m }
    }

    fn apply(&self, x: &mut AugState) {
        let old = *x;
        for (xi, row) in x.iter_mut().zip(self.m.iter()) {
            *xi = row.iter().zip(&old).map(|(a, b)| a * b).sum();
        }
    }
}

/// One system's augmented dynamics: the dyadic transition table.
struct AugDynamics {
    levels: Vec<AugTransition>,
}

impl AugDynamics {
    fn new(parent: &System, metabolite: &MetaboliteParams) -> Result<Self, InvalidParams> {
        metabolite.validate(parent.params())?;
        let m = augmented_matrix(parent, metabolite);
        let levels = (0..LEVELS)
            .map(|j| {
                let dt_min = (1u64 << j) as f64 / MS_PER_MIN;
                AugTransition::from_dmatrix(&(&m * dt_min).exp())
            })
            .collect();
        Ok(AugDynamics { levels })
    }

    fn advance(&self, x: &mut AugState, delta_ms: TimeMs) {
        let mut rest = delta_ms.max(0) as u64;
        let top = LEVELS - 1;
        while rest >= 1u64 << LEVELS {
            self.levels[top].apply(x);
            rest -= 1u64 << top;
        }
        for level in &self.levels {
            if rest == 0 {
                break;
            }
            if rest & 1 == 1 {
                level.apply(x);
            }
            rest >>= 1;
        }
    }

    fn transition(&self, delta_ms: TimeMs) -> AugTransition {
        let mut t = AugTransition::identity();
        let mut rest = delta_ms.max(0) as u64;
        let top = LEVELS - 1;
        while rest >= 1u64 << LEVELS {
            t = self.levels[top].compose(&t);
            rest -= 1u64 << top;
        }
        let mut j = 0;
        while rest != 0 {
            if rest & 1 == 1 {
                t = self.levels[j].compose(&t);
            }
            rest >>= 1;
            j += 1;
        }
        t
    }
}

/// The augmented matrix: the parent's `M` in the top-left block, the
/// metabolite's rows as in the module docs, and the two integrals.
fn augmented_matrix(parent: &System, nk: &MetaboliteParams) -> DMatrix<f64> {
    let p = parent.params();
    let pm = parent.matrix();
    let mut m = DMatrix::<f64>::zeros(NA, NA);
    for i in 0..N {
        for j in 0..N {
            m[(i, j)] = pm[i][j];
        }
    }
    m[(NK_CENTRAL, CENTRAL)] = nk.formation_fraction * p.k10_per_min;
    for route in Route::ALL {
        let fp = nk.first_pass_fraction[route_index(route)];
        let rp = p.route(route);
        if let (Some(depot), Some(ka)) = (depot_of(route), rp.ka_per_min) {
            if fp > 0.0 {
                m[(NK_CENTRAL, depot)] += ka * fp / rp.f;
            }
        }
    }
    m[(NK_CENTRAL, NK_CENTRAL)] = -(nk.k_el_per_min + nk.k_cp_per_min);
    m[(NK_CENTRAL, NK_PERIPHERAL)] = nk.k_pc_per_min;
    m[(NK_PERIPHERAL, NK_CENTRAL)] = nk.k_cp_per_min;
    m[(NK_PERIPHERAL, NK_PERIPHERAL)] = -nk.k_pc_per_min;
    m[(AUC_METABOLITE, NK_CENTRAL)] = 1.0 / nk.v_l;
    m[(AUC_PARENT, CENTRAL)] = 1.0 / p.v1_l;
    m
}

/// The metabolite at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MetaboliteAt {
    /// Metabolite plasma concentration.
    pub c_ng_per_ml: f64,
    /// Area under the metabolite's curve from the first input to now.
    pub auc_ng_h_per_ml: f64,
    /// Area under the parent's Cp curve from the first input to now.
    pub parent_auc_ng_h_per_ml: f64,
}

/// One point of a sampled metabolite curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MetaboliteSample {
    pub t_ms: TimeMs,
    pub c_ng_per_ml: f64,
}

/// A parent solution with its metabolite.
pub struct MetaboliteSolution {
    /// One augmented dynamics per distinct parent system.
    dynamics: Vec<AugDynamics>,
    /// The metabolite's central volume (L).
    v_l: f64,
    /// The parent's checkpoint times.
    times: Vec<TimeMs>,
    /// Augmented state right after each checkpoint.
    states: Vec<AugState>,
    /// Index into `dynamics` in force from each checkpoint on.
    dynamics_of: Vec<usize>,
}

impl std::fmt::Debug for MetaboliteSolution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaboliteSolution")
            .field("checkpoints", &self.times.len())
            .finish_non_exhaustive()
    }
}

impl MetaboliteSolution {
    /// Solve the metabolite of `parent` with `params` (the same for every
    /// system the parent solution holds).
    pub fn new(parent: &Solution, params: &MetaboliteParams) -> Result<Self, InvalidParams> {
        let times = parent.event_times().to_vec();
        let mut systems: Vec<*const System> = Vec::new();
        let mut dynamics = Vec::new();
        let mut dynamics_of = Vec::with_capacity(times.len());
        let mut states = Vec::with_capacity(times.len());
        let mut x: AugState = [0.0; NA];
        for i in 0..times.len() {
            let (Some(sys), Some(checkpoint)) = (parent.checkpoint_system(i), parent.checkpoint(i))
            else {
                break;
            };
            if i > 0 {
                if let Some(&k) = dynamics_of.last() {
                    let d: &AugDynamics = &dynamics[k];
                    d.advance(&mut x, times[i] - times[i - 1]);
                }
            }
            x[..N].copy_from_slice(checkpoint);
            let k = match systems.iter().position(|s| std::ptr::eq(*s, sys)) {
                Some(k) => k,
                None => {
                    systems.push(sys as *const System);
                    dynamics.push(AugDynamics::new(sys, params)?);
                    systems.len() - 1
                }
            };
            dynamics_of.push(k);
            states.push(x);
        }
        Ok(MetaboliteSolution {
            dynamics,
            v_l: params.v_l,
            times: times[..states.len()].to_vec(),
            states,
            dynamics_of,
        })
    }

    /// The augmented state at `t_ms` (events at `t_ms` applied).
    pub fn state_at(&self, t_ms: TimeMs) -> AugState {
        let idx = self.times.partition_point(|&t| t <= t_ms);
        match idx.checked_sub(1) {
            None => [0.0; NA],
            Some(i) => {
                let mut x = self.states[i];
                self.dynamics[self.dynamics_of[i]].advance(&mut x, t_ms - self.times[i]);
                x
            }
        }
    }

    /// Metabolite concentration and both areas at `t_ms`.
    pub fn at(&self, t_ms: TimeMs) -> MetaboliteAt {
        let x = self.state_at(t_ms);
        MetaboliteAt {
            c_ng_per_ml: x[NK_CENTRAL] / self.v_l * 1000.0,
            auc_ng_h_per_ml: x[AUC_METABOLITE] * AUC_TO_NG_H_PER_ML,
            parent_auc_ng_h_per_ml: x[AUC_PARENT] * AUC_TO_NG_H_PER_ML,
        }
    }

    /// The metabolite concentration every `step_ms` from `from_ms` to
    /// `to_ms` inclusive (as [`Solution::sample`]: one precomputed
    /// transition per point, restarting from a checkpoint inside a step).
    pub fn sample(&self, from_ms: TimeMs, to_ms: TimeMs, step_ms: TimeMs) -> Vec<MetaboliteSample> {
        if step_ms <= 0 || to_ms < from_ms || self.dynamics.is_empty() {
            return Vec::new();
        }
        let mut steps: Vec<Option<AugTransition>> = vec![None; self.dynamics.len()];
        let mut out = Vec::with_capacity(((to_ms - from_ms) / step_ms + 1) as usize);
        let first = self.times.partition_point(|&t| t <= from_ms);
        let mut k = first.checked_sub(1).map_or(0, |i| self.dynamics_of[i]);
        let mut x = self.state_at(from_ms);
        let mut next = first;
        let mut t = from_ms;
        loop {
            out.push(MetaboliteSample {
                t_ms: t,
                c_ng_per_ml: x[NK_CENTRAL] / self.v_l * 1000.0,
            });
            let tn = t + step_ms;
            if tn > to_ms {
                break;
            }
            if next < self.times.len() && self.times[next] <= tn {
                let idx = self.times.partition_point(|&ti| ti <= tn);
                let last = idx - 1;
                k = self.dynamics_of[last];
                x = self.states[last];
                self.dynamics[k].advance(&mut x, tn - self.times[last]);
                next = idx;
            } else {
                steps[k]
                    .get_or_insert_with(|| self.dynamics[k].transition(step_ms))
                    .apply(&mut x);
            }
            t = tn;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pk::params::test_support::domino_70kg;
    use crate::pk::schedule::{Dosing, Schedule};
    use std::sync::Arc;

    fn one_compartment() -> PkParams {
        let mut p = domino_70kg();
        (p.k12_per_min, p.k21_per_min, p.k13_per_min, p.k31_per_min) = (0.0, 0.0, 0.0, 0.0);
        p.v1_l = 50.0;
        p.k10_per_min = 0.02;
        p
    }

    fn nk(k_el: f64) -> MetaboliteParams {
        MetaboliteParams {
            v_l: 70.0,
            k_el_per_min: k_el,
            k_cp_per_min: 0.0,
            k_pc_per_min: 0.0,
            formation_fraction: 0.7,
            first_pass_fraction: [0.0; 9],
        }
    }

    fn solve(
        p: PkParams,
        m: &MetaboliteParams,
        dosing: &[Dosing],
    ) -> (Solution, MetaboliteSolution) {
        let schedule = Schedule::build(&p, dosing).unwrap();
        let s = Solution::new(Arc::new(System::new(p).unwrap()), &schedule);
        let ms = MetaboliteSolution::new(&s, m).unwrap();
        (s, ms)
    }

    /// Closed form (Bateman): 1-cpt parent bolus D, 1-cpt metabolite,
    /// `Cm = fm·k·D/Vm · (e^{−k t} − e^{−km t}) / (km − k)`, and for
    /// `km = k` the limit `fm·k·D/Vm · t·e^{−k t}`.
    #[test]
    fn one_compartment_pair_matches_the_closed_form() {
        let d = 100.0;
        for km in [0.005, 0.02, 0.08] {
            let p = one_compartment();
            let m = nk(km);
            let (_, ms) = solve(
                p.clone(),
                &m,
                &[Dosing::Bolus {
                    at_ms: 0,
                    route: Route::IvBolus,
                    amount_mg: d,
                }],
            );
            let k = p.k10_per_min;
            for t_min in [1.0, 10.0, 60.0, 240.0, 1440.0] {
                let expected = if km == k {
                    0.7 * k * d / 70.0 * t_min * (-k * t_min).exp()
                } else {
                    0.7 * k * d / 70.0 * ((-k * t_min).exp() - (-km * t_min).exp()) / (km - k)
                } * 1000.0;
                let got = ms.at((t_min * 60_000.0) as TimeMs).c_ng_per_ml;
                assert!(
                    (got - expected).abs() <= 1e-9 * expected,
                    "km {km} t {t_min}: {got} vs {expected}"
                );
            }
            // AUCs to infinity: parent D/CL, metabolite fm·D/CLm.
            let late = ms.at(400 * 24 * 3_600_000);
            let parent_auc = d / (k * p.v1_l) / 60.0 * 1000.0;
            let nk_auc = 0.7 * d / (km * 70.0) / 60.0 * 1000.0;
            assert!((late.parent_auc_ng_h_per_ml - parent_auc).abs() < 1e-9 * parent_auc);
            assert!((late.auc_ng_h_per_ml - nk_auc).abs() < 1e-9 * nk_auc);
        }
    }

    #[test]
    fn first_pass_brings_fp_times_the_dose_and_leaves_the_parent_alone() {
        let p = one_compartment();
        let mut m = nk(0.01);
        m.formation_fraction = 0.0;
        m.first_pass_fraction[Route::Oral.index()] = 0.33;
        let oral = [Dosing::Bolus {
            at_ms: 0,
            route: Route::Oral,
            amount_mg: 100.0,
        }];
        let (s, ms) = solve(p.clone(), &m, &oral);
        let late = ms.at(400 * 24 * 3_600_000);
        let expected = 0.33 * 100.0 / (0.01 * 70.0) / 60.0 * 1000.0;
        assert!((late.auc_ng_h_per_ml - expected).abs() < 1e-9 * expected);
        // The parent part of every state is the engine's, bit for bit, at
        // the checkpoints, and within rounding in between.
        let (plain, _) = solve(p, &nk(0.01), &oral);
        for t in [0, 1, 60_000, 3_600_000, 86_400_000] {
            assert_eq!(s.at(t), plain.at(t));
            let x = ms.state_at(t);
            let y = s.state_at(t);
            for i in 0..N {
                assert!((x[i] - y[i]).abs() <= 1e-12 * y[i].abs().max(1e-9), "{i}");
            }
        }
        assert_eq!(&ms.states[0][..N], &s.checkpoint(0).unwrap()[..]);
    }

    #[test]
    fn sampling_matches_pointwise_evaluation() {
        let mut p = domino_70kg();
        p.route_mut(Route::Intranasal).lag_min = 3.0;
        let mut m = MetaboliteParams::from_clearances(70.0, 38.0, 115.0, 26.1, 0.71, [0.0; 9]);
        m.first_pass_fraction[Route::Intranasal.index()] = 0.15;
        let (_, ms) = solve(
            p,
            &m,
            &[
                Dosing::Bolus {
                    at_ms: 1_500,
                    route: Route::Intranasal,
                    amount_mg: 50.0,
                },
                Dosing::Infusion {
                    start_ms: 10_250,
                    end_ms: Some(3_600_000),
                    rate_mg_per_h: 20.0,
                },
            ],
        );
        let samples = ms.sample(-120_000, 8_000_000, 1000);
        assert_eq!(samples.len(), 8121);
        for smp in samples.iter().step_by(37) {
            let c = ms.at(smp.t_ms).c_ng_per_ml;
            assert!(
                (c - smp.c_ng_per_ml).abs() <= 1e-10 * c.max(1.0),
                "{}",
                smp.t_ms
            );
        }
        assert!(samples.iter().any(|s| s.c_ng_per_ml > 1.0));
    }

    #[test]
    fn validation_names_the_bad_value() {
        let p = domino_70kg();
        let mut m = nk(0.01);
        m.first_pass_fraction[Route::Oral.index()] = 0.9; // F 0.2 + 0.9 > 1
        let e = m.validate(&p).unwrap_err();
        assert_eq!(e.name, "metabolite.first_pass_fraction.oral");
        let mut m = nk(0.01);
        m.first_pass_fraction[Route::IvBolus.index()] = 0.1;
        assert!(m.validate(&p).is_err());
        let mut m = nk(0.01);
        m.k_cp_per_min = 0.1;
        assert_eq!(m.validate(&p).unwrap_err().name, "metabolite.k_cp_per_min");
        let mut m = nk(f64::NAN);
        m.v_l = 1.0;
        assert_eq!(m.validate(&p).unwrap_err().name, "metabolite.k_el_per_min");
    }
}
