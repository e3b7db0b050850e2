//! The state layout, the system matrix and the exact transition tables.
//!
//! State vector (amounts in mg, Ce in mg/L, rates in mg/min):
//!
//! | index | component |
//! |---|---|
//! | 0 | central amount A1 |
//! | 1 | first peripheral amount A2 |
//! | 2 | second peripheral amount A3 |
//! | 3 | effect-site concentration Ce (mg/L) |
//! | 4 | cumulative amount eliminated (mg) |
//! | 5..=10 | depots: im, sc, intranasal, oral, sublingual, rectal |
//! | 11 | transdermal skin depot |
//! | 12 | zero-order rate into central (IV infusions) |
//! | 13 | zero-order rate into the skin depot (patches) |
//!
//! The rates are state components with zero derivative, so a regimen whose
//! inputs are piecewise constant is a piecewise homogeneous linear system and
//! its exact solution over any interval is one matrix exponential.
//!
//! Rows 0–4 are the only dense rows of every transition matrix: a depot row
//! depends only on itself (and the skin depot also on its rate), and the rate
//! rows are the identity. The exponential of a block-triangular matrix keeps
//! those zeros exactly, and [`System::advance`] exploits that.

use super::params::{InvalidParams, PkParams};
use crate::vocab::{Route, TimeMs, MS_PER_MIN};
use nalgebra::DMatrix;

/// Length of the state vector.
pub const N: usize = 14;
/// Index of the central amount.
pub const CENTRAL: usize = 0;
/// Index of the effect-site concentration (mg/L).
pub const EFFECT: usize = 3;
/// Index of the cumulative eliminated amount.
pub const ELIMINATED: usize = 4;
/// Index of the first route depot.
pub const FIRST_DEPOT: usize = 5;
/// Index of the transdermal skin depot.
pub const SKIN_DEPOT: usize = 11;
/// Index of the zero-order rate into central.
pub const RATE_CENTRAL: usize = 12;
/// Index of the zero-order rate into the skin depot.
pub const RATE_SKIN: usize = 13;
/// Rows that can depend on every column.
const DENSE_ROWS: usize = 5;

/// Number of dyadic levels kept: `exp(M · 2^j ms)` for `j` in `0..LEVELS`;
/// `2^37 ms` is about 4.4 years, longer intervals repeat the top level.
const LEVELS: usize = 38;

/// A state vector.
pub type State = [f64; N];

/// The depot index that receives doses of an extravascular route, or `None`
/// for intravenous routes (which go into the central compartment).
pub fn depot_of(route: Route) -> Option<usize> {
    match route {
        Route::IvBolus | Route::IvInfusion => None,
        Route::Im => Some(FIRST_DEPOT),
        Route::Sc => Some(FIRST_DEPOT + 1),
        Route::Intranasal => Some(FIRST_DEPOT + 2),
        Route::Oral => Some(FIRST_DEPOT + 3),
        Route::Sublingual => Some(FIRST_DEPOT + 4),
        Route::Rectal => Some(FIRST_DEPOT + 5),
        Route::Transdermal => Some(SKIN_DEPOT),
    }
}

/// A row-major `N × N` transition matrix `exp(M δ)`.
#[derive(Clone, PartialEq)]
pub struct Transition {
    m: [[f64; N]; N],
}

impl Transition {
    fn from_dmatrix(d: &DMatrix<f64>) -> Self {
        let mut m = [[0.0; N]; N];
        for (i, row) in m.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = d[(i, j)];
            }
        }
        Transition { m }
    }

    fn identity() -> Self {
        let mut m = [[0.0; N]; N];
        for (i, row) in m.iter_mut().enumerate() {
            row[i] = 1.0;
        }
        Transition { m }
    }

    /// `self · other` (apply `other` first, then `self`).
    fn compose(&self, other: &Transition) -> Transition {
        let mut m = [[0.0; N]; N];
        for (i, row) in m.iter_mut().enumerate() {
            for (j, out) in row.iter_mut().enumerate() {
                *out = (0..N).map(|k| self.m[i][k] * other.m[k][j]).sum();
            }
        }
        Transition { m }
    }

    /// `x ← exp(M δ) x`, using the structure described in the module docs.
    #[inline]
    pub fn apply(&self, x: &mut State) {
        let old = *x;
        for (i, xi) in x.iter_mut().enumerate().take(DENSE_ROWS) {
            let row = &self.m[i];
            let mut acc = 0.0;
            for j in 0..N {
                acc += row[j] * old[j];
            }
            *xi = acc;
        }
        for (i, xi) in x.iter_mut().enumerate().take(SKIN_DEPOT).skip(FIRST_DEPOT) {
            *xi = self.m[i][i] * old[i];
        }
        x[SKIN_DEPOT] = self.m[SKIN_DEPOT][SKIN_DEPOT] * old[SKIN_DEPOT]
            + self.m[SKIN_DEPOT][RATE_SKIN] * old[RATE_SKIN];
        // Rate rows are the identity: nothing to do.
    }

    /// Entry `(i, j)`.
    pub fn get(&self, i: usize, j: usize) -> f64 {
        self.m[i][j]
    }
}

/// One patient's linear system: its matrix and the dyadic transition table.
#[derive(Clone)]
pub struct System {
    params: PkParams,
    /// `M` itself, for derivatives (d/dt of any component is a row of `M x`).
    matrix: [[f64; N]; N],
    /// `levels[j] = exp(M · 2^j ms)`.
    levels: Vec<Transition>,
}

impl std::fmt::Debug for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("System")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl System {
    /// Build the system for validated parameters: one matrix exponential per
    /// dyadic level (about 0.6 ms in all).
    pub fn new(params: PkParams) -> Result<Self, InvalidParams> {
        params.validate()?;
        let matrix = system_matrix(&params);
        let mut dm = DMatrix::<f64>::zeros(N, N);
        for i in 0..N {
            for j in 0..N {
                dm[(i, j)] = matrix[i][j];
            }
        }
        let levels = (0..LEVELS)
            .map(|j| {
                let dt_min = (1u64 << j) as f64 / MS_PER_MIN;
                Transition::from_dmatrix(&(&dm * dt_min).exp())
            })
            .collect();
        Ok(System {
            params,
            matrix,
            levels,
        })
    }

    /// The parameters this system was built from.
    pub fn params(&self) -> &PkParams {
        &self.params
    }

    /// Advance `x` by `delta_ms ≥ 0` milliseconds, exactly: one
    /// matrix-vector product per set bit of `delta_ms`.
    pub fn advance(&self, x: &mut State, delta_ms: TimeMs) {
        debug_assert!(delta_ms >= 0, "cannot advance backwards");
        let mut rest = delta_ms.max(0) as u64;
        let top = LEVELS - 1;
        let top_span = 1u64 << top;
        while rest >= 1u64 << LEVELS {
            self.levels[top].apply(x);
            rest -= top_span;
        }
        // Now rest < 2^LEVELS: every set bit has its level.
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

    /// The transition matrix for an arbitrary interval, composed from the
    /// dyadic levels (used to precompute a fixed sampling step).
    pub fn transition(&self, delta_ms: TimeMs) -> Transition {
        let mut t = Transition::identity();
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

    /// Time derivative of component `i` in state `x` (per minute).
    pub fn derivative(&self, x: &State, i: usize) -> f64 {
        self.matrix[i].iter().zip(x).map(|(m, v)| m * v).sum()
    }

    /// Plasma concentration in ng/mL.
    pub fn cp_ng_per_ml(&self, x: &State) -> f64 {
        x[CENTRAL] / self.params.v1_l * 1000.0
    }

    /// Effect-site concentration in ng/mL.
    pub fn ce_ng_per_ml(&self, x: &State) -> f64 {
        x[EFFECT] * 1000.0
    }

    /// Amount of drug in the body (central, peripherals and depots), in mg.
    /// With [`ELIMINATED`] this is the mass balance: everything that entered
    /// is in the body or has been eliminated.
    pub fn amount_in_body_mg(&self, x: &State) -> f64 {
        x[CENTRAL] + x[1] + x[2] + x[FIRST_DEPOT..=SKIN_DEPOT].iter().sum::<f64>()
    }
}

/// Build `M` for `x' = M x`.
fn system_matrix(p: &PkParams) -> [[f64; N]; N] {
    let mut m = [[0.0; N]; N];
    m[0][0] = -(p.k10_per_min + p.k12_per_min + p.k13_per_min);
    m[0][1] = p.k21_per_min;
    m[0][2] = p.k31_per_min;
    m[0][RATE_CENTRAL] = 1.0;
    m[1][0] = p.k12_per_min;
    m[1][1] = -p.k21_per_min;
    m[2][0] = p.k13_per_min;
    m[2][2] = -p.k31_per_min;
    m[EFFECT][0] = p.ke0_per_min / p.v1_l;
    m[EFFECT][EFFECT] = -p.ke0_per_min;
    m[ELIMINATED][0] = p.k10_per_min;
    for route in Route::ALL {
        if let (Some(depot), Some(ka)) = (depot_of(route), p.route(route).ka_per_min) {
            m[depot][depot] = -ka;
            m[0][depot] = ka;
        }
    }
    m[SKIN_DEPOT][RATE_SKIN] = 1.0;
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pk::params::test_support::domino_70kg;

    #[test]
    fn transitions_keep_the_structural_zeros() {
        let sys = System::new(domino_70kg()).unwrap();
        for level in &sys.levels {
            for i in FIRST_DEPOT..N {
                for j in 0..N {
                    let allowed = i == j || (i == SKIN_DEPOT && j == RATE_SKIN);
                    if !allowed {
                        assert_eq!(level.get(i, j), 0.0, "entry ({i},{j})");
                    }
                }
            }
            assert_eq!(level.get(RATE_CENTRAL, RATE_CENTRAL), 1.0);
            assert_eq!(level.get(RATE_SKIN, RATE_SKIN), 1.0);
        }
    }

    #[test]
    fn advance_composes_like_one_interval() {
        let sys = System::new(domino_70kg()).unwrap();
        let mut a = [0.0; N];
        a[CENTRAL] = 24.5;
        a[FIRST_DEPOT + 2] = 10.0;
        a[RATE_CENTRAL] = 0.5;
        let mut b = a;
        sys.advance(&mut a, 1_234_567);
        sys.advance(&mut b, 1_000_000);
        sys.advance(&mut b, 234_567);
        for i in 0..N {
            assert!(
                (a[i] - b[i]).abs() <= 1e-12 * a[i].abs().max(1e-9),
                "component {i}"
            );
        }
        let t = sys.transition(1_234_567);
        let mut c = [0.0; N];
        c[CENTRAL] = 24.5;
        c[FIRST_DEPOT + 2] = 10.0;
        c[RATE_CENTRAL] = 0.5;
        t.apply(&mut c);
        for i in 0..N {
            assert!(
                (a[i] - c[i]).abs() <= 1e-12 * a[i].abs().max(1e-9),
                "component {i}"
            );
        }
    }

    #[test]
    fn very_long_intervals_use_the_top_level_repeatedly() {
        let sys = System::new(domino_70kg()).unwrap();
        let mut x = [0.0; N];
        x[RATE_CENTRAL] = 1.0;
        // Ten years of constant infusion: steady state Cp = rate / CL.
        sys.advance(&mut x, 10 * 365 * 24 * 3_600_000);
        let css = 1.0 / sys.params().cl_l_per_min() * 1000.0;
        assert!((sys.cp_ng_per_ml(&x) - css).abs() < 1e-6 * css);
    }
}
