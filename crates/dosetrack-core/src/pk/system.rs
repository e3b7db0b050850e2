//! The state layout, the system matrix and the exact transition tables.
//!
//! State vector (amounts in mg, rates in mg/min):
//!
//! | index | component |
//! |---|---|
//! | 0 | central amount A1 |
//! | 1 | first peripheral amount A2 |
//! | 2 | second peripheral amount A3 |
//! | 3 | effect-site amount equivalent Ae = Ce·V1 (mg) |
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
//! Every state component is an amount (or a rate), and V1 enters only when
//! amounts are turned into concentrations (Cp = A1/V1, Ce = Ae/V1). So the
//! matrix, its transition tables, envelopes and steady states — the
//! expensive part, [`Dynamics`] — depend on the rate constants alone and are
//! shared by every patient with the same rate constants: all adults on a
//! weight-linear model such as Domino share one, whatever their weight.
//!
//! Rows 0–4 are the only dense rows of every transition matrix: a depot row
//! depends only on itself (and the skin depot also on its rate), and the rate
//! rows are the identity. The exponential of a block-triangular matrix keeps
//! those zeros exactly, and [`System::advance`] exploits that.

use super::params::{route_index, InvalidParams, PkParams};
use crate::vocab::{Route, TimeMs, MS_PER_MIN};
use nalgebra::DMatrix;
use std::collections::HashMap;

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

    /// This transition for repeated use from the state `x` on (a fixed
    /// sampling step between two input events): the same results, bit for
    /// bit, without the terms that are zero all along. See [`SparseStep`].
    pub fn from_state(&self, x: &State) -> SparseStep {
        let plus_zero = |v: f64| v.to_bits() == 0;
        // A component that is +0 in `x` stays +0 under repeated steps when
        // nothing flows into it: a depot (its own row only), the skin
        // depot if its rate is +0 too, a rate (constant) — provided its
        // own coefficients are not negative (`m · (+0)` is then +0).
        let no_negative =
            |i: usize, js: &[usize]| js.iter().all(|&j| !self.m[i][j].is_sign_negative());
        let mut idle = [false; N];
        for (j, idle_j) in idle
            .iter_mut()
            .enumerate()
            .take(SKIN_DEPOT)
            .skip(FIRST_DEPOT)
        {
            *idle_j = plus_zero(x[j]) && no_negative(j, &[j]);
        }
        idle[RATE_SKIN] = plus_zero(x[RATE_SKIN]);
        idle[RATE_CENTRAL] = plus_zero(x[RATE_CENTRAL]);
        idle[SKIN_DEPOT] = plus_zero(x[SKIN_DEPOT])
            && idle[RATE_SKIN]
            && no_negative(SKIN_DEPOT, &[SKIN_DEPOT, RATE_SKIN]);
        let mut step = SparseStep {
            columns: [(0, [0.0; DENSE_ROWS]); N],
            column_count: 0,
            depots: [(0, 0.0); SKIN_DEPOT - FIRST_DEPOT],
            depot_count: 0,
            skin: (!idle[SKIN_DEPOT]).then(|| {
                (
                    self.m[SKIN_DEPOT][SKIN_DEPOT],
                    self.m[SKIN_DEPOT][RATE_SKIN],
                )
            }),
        };
        for (j, &idle_j) in idle.iter().enumerate() {
            let mut column = [0.0; DENSE_ROWS];
            for (i, c) in column.iter_mut().enumerate() {
                *c = self.m[i][j];
            }
            if !idle_j && column.iter().any(|&m| m != 0.0) {
                step.columns[step.column_count] = (j, column);
                step.column_count += 1;
            }
        }
        for (j, &idle_j) in idle.iter().enumerate().take(SKIN_DEPOT).skip(FIRST_DEPOT) {
            if !idle_j {
                step.depots[step.depot_count] = (j, self.m[j][j]);
                step.depot_count += 1;
            }
        }
        step
    }
}

/// A [`Transition`] for repeated steps from one state on: the dense rows
/// are summed column by column over the columns that can contribute (all
/// five rows at once), and the depots that are empty (and stay empty) are
/// left alone. A sampling step's cost is the chain of additions over those
/// columns: 14 in the full matrix, 6 for a day of IV dosing.
///
/// Bit for bit [`Transition::apply`] on every state reached by repeated
/// steps from the state it was made for, as long as that state is finite:
/// a dense row is the sum `((0 + m₀x₀) + m₁x₁) + …` in column order, and a
/// term left out is a product `±0` (a column whose coefficients are all
/// zero, times a finite amount; or a coefficient times an amount that is
/// +0 and stays so), as is a zero coefficient's term kept in a column that
/// other rows need. Adding `±0` changes no sum that starts at +0: such a
/// sum is never −0 (`+0 + −0` is +0, and an exact cancellation rounds to
/// +0), so adding `±0` to it gives it back. The other terms are added in
/// the same order.
#[derive(Clone)]
pub struct SparseStep {
    /// The columns that contribute, in order: `(column, its coefficient in
    /// each dense row)`.
    columns: [(usize, [f64; DENSE_ROWS]); N],
    column_count: usize,
    /// The route depots in use: `(index, coefficient)`.
    depots: [(usize, f64); SKIN_DEPOT - FIRST_DEPOT],
    depot_count: usize,
    /// The skin depot's row (itself, its rate), if it is in use.
    skin: Option<(f64, f64)>,
}

impl SparseStep {
    /// `x ← exp(M δ) x` (see the type's docs for when this is exact).
    #[inline]
    pub fn apply(&self, x: &mut State) {
        let old = *x;
        let mut acc = [0.0; DENSE_ROWS];
        for (j, column) in &self.columns[..self.column_count] {
            let v = old[*j];
            for (a, m) in acc.iter_mut().zip(column) {
                *a += m * v;
            }
        }
        x[..DENSE_ROWS].copy_from_slice(&acc);
        for &(j, m) in &self.depots[..self.depot_count] {
            x[j] = m * old[j];
        }
        if let Some((own, rate)) = self.skin {
            x[SKIN_DEPOT] = own * old[SKIN_DEPOT] + rate * old[RATE_SKIN];
        }
    }
}

/// Which concentration an envelope bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watched {
    Cp,
    Ce,
}

/// Bounds on how far an output can move within a dyadic interval.
///
/// `M` is a Metzler matrix (every off-diagonal entry ≥ 0), so every
/// transition matrix is non-negative and every state component is. For an
/// output `y = c·x` and an interval of `2^j` ms, `upper[j]` and `lower[j]`
/// bound `c·exp(M τ)` elementwise for every `τ` in `[0, 2^j ms]`, hence
/// `lower[j]·x ≤ y(t+τ) ≤ upper[j]·x` for every non-negative state. Built by
/// doubling: over `[0, 2h]` the response is the response over `[0, h]`,
/// or that followed by `exp(M h)` (non-negative, so the bounds carry over):
/// `upper_{2h} = max(upper_h, upper_h·Φ_h)`, `lower` likewise with `min`.
/// The base interval is 1 ms, against time constants of seconds and more.
#[derive(Clone)]
struct Envelope {
    upper: Vec<State>,
    lower: Vec<State>,
}

/// The part of a model that depends on its rate constants only: the matrix,
/// the dyadic transition table, the envelopes and the steady states, all in
/// amount units. Expensive to build (~0.4 ms), shared through `Arc`.
pub struct Dynamics {
    /// `M` itself, for derivatives (d/dt of any component is a row of `M x`).
    matrix: [[f64; N]; N],
    /// `levels[j] = exp(M · 2^j ms)`.
    levels: Vec<Transition>,
    /// Envelopes of A1 (for Cp) and Ae (for Ce), per level, in mg.
    envelopes: [Envelope; 2],
    /// Steady state for a unit rate into central and into the skin depot
    /// (the eliminated amount, which grows without bound, left at 0);
    /// `None` if the system has none (then only the first bound is used).
    steady_per_unit_rate: Option<[State; 2]>,
    /// Memo of [`System::unit_dose_ce_peak_ms`], keyed by what it depends
    /// on beyond these dynamics: the route and the bits of V1, its F and
    /// its lag. A pure cache (same answer as computing it); at most
    /// [`PEAK_MEMO_MAX`] entries, past which answers are computed and not
    /// kept.
    peak_memo: std::sync::Mutex<HashMap<PeakKey, Option<TimeMs>>>,
}

/// (route index, V1 bits, F bits, lag bits).
type PeakKey = (usize, u64, u64, u64);

/// Most entries of one [`Dynamics`]'s peak memo: one per route given and
/// distinct V1/F/lag, so up to 9 per patient weight when every adult
/// shares the dynamics (weights to 0.1 kg: ~2,000 distinct, ~18,000
/// entries). ~50 bytes an entry: at most ~3 MiB. (At 4,096, 1,000 patients
/// dosed by 5 routes overflowed it and every evaluation computed again.)
const PEAK_MEMO_MAX: usize = 65_536;

impl std::fmt::Debug for Dynamics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dynamics").finish_non_exhaustive()
    }
}

impl Dynamics {
    /// Build the dynamics of validated parameters (V1, F and lags are not
    /// used): one matrix exponential per dyadic level.
    pub fn new(params: &PkParams) -> Result<Self, InvalidParams> {
        params.validate()?;
        let matrix = system_matrix(params);
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
            .collect::<Vec<_>>();
        let mut a1 = [0.0; N];
        a1[CENTRAL] = 1.0;
        let mut ae = [0.0; N];
        ae[EFFECT] = 1.0;
        let envelopes = [envelope(&a1, &levels), envelope(&ae, &levels)];
        let steady_per_unit_rate = steady_state(&matrix, RATE_CENTRAL)
            .zip(steady_state(&matrix, RATE_SKIN))
            .map(|(central, skin)| [central, skin]);
        Ok(Dynamics {
            matrix,
            levels,
            envelopes,
            steady_per_unit_rate,
            peak_memo: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The exact bits of everything the dynamics depend on: equal keys,
    /// identical dynamics (for sharing).
    pub fn key(params: &PkParams) -> Vec<u64> {
        let mut k = vec![
            params.k10_per_min.to_bits(),
            params.k12_per_min.to_bits(),
            params.k21_per_min.to_bits(),
            params.k13_per_min.to_bits(),
            params.k31_per_min.to_bits(),
            params.ke0_per_min.to_bits(),
        ];
        for route in Route::ALL {
            k.push(params.route(route).ka_per_min.map_or(0, f64::to_bits));
        }
        k
    }
}

/// One patient's linear system: shared [`Dynamics`] plus the parameters
/// that only scale inputs and outputs (V1, F, lags). Cheap to clone.
#[derive(Clone)]
pub struct System {
    params: PkParams,
    dynamics: std::sync::Arc<Dynamics>,
}

impl std::fmt::Debug for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("System")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl System {
    /// Build the system for validated parameters, with dynamics of its own
    /// (about 0.4 ms). See [`System::with_dynamics`] to share them.
    pub fn new(params: PkParams) -> Result<Self, InvalidParams> {
        let dynamics = std::sync::Arc::new(Dynamics::new(&params)?);
        Ok(System { params, dynamics })
    }

    /// A system on existing dynamics, which must have been built for
    /// parameters with the same [`Dynamics::key`] (checked).
    pub fn with_dynamics(
        params: PkParams,
        dynamics: std::sync::Arc<Dynamics>,
        dynamics_key: &[u64],
    ) -> Result<Self, InvalidParams> {
        params.validate()?;
        if Dynamics::key(&params) != dynamics_key {
            return Err(InvalidParams {
                name: "dynamics".to_owned(),
                value: f64::NAN,
                reason: "the shared dynamics were built for other rate constants",
            });
        }
        Ok(System { params, dynamics })
    }

    /// The shared part.
    pub fn dynamics(&self) -> &std::sync::Arc<Dynamics> {
        &self.dynamics
    }

    /// The answer of [`System::unit_dose_ce_peak_ms`] for `route`: from
    /// the shared dynamics' memo, or `compute`d and kept (the computation
    /// solves a dose, so it lives with [`super::solution`]).
    pub(super) fn unit_dose_peak_memo(
        &self,
        route: Route,
        compute: impl FnOnce() -> Option<TimeMs>,
    ) -> Option<TimeMs> {
        let r = self.params.route(route);
        let key: PeakKey = (
            route_index(route),
            self.params.v1_l.to_bits(),
            r.f.to_bits(),
            r.lag_min.to_bits(),
        );
        if let Some(hit) = self
            .dynamics
            .peak_memo
            .lock()
            .ok()
            .and_then(|m| m.get(&key).copied())
        {
            return hit;
        }
        let peak = compute();
        if let Ok(mut m) = self.dynamics.peak_memo.lock() {
            if m.len() < PEAK_MEMO_MAX {
                m.insert(key, peak);
            }
        }
        peak
    }

    /// Number of dyadic levels: `exp(M · 2^j ms)` exists for `j < levels()`.
    pub fn levels(&self) -> usize {
        self.dynamics.levels.len()
    }

    /// Advance by exactly `2^level` ms (one matrix-vector product).
    pub fn advance_level(&self, x: &mut State, level: usize) {
        if let Some(t) = self.dynamics.levels.get(level) {
            t.apply(x);
        }
    }

    /// Bounds `(lower, upper)` on the watched output (ng/mL) over the next
    /// `2^level` ms from state `x`, with no input event in between.
    ///
    /// Two bounds, the tighter taken: the envelope applied to the state
    /// (`lower·x ≤ y ≤ upper·x`), and the same envelope applied to the
    /// state's distance from the steady state of the current rates: with
    /// rates constant `x(t+τ) = x_ss + Φ(τ)(x − x_ss)`, and as `Φ ≥ 0` and
    /// the output weights are ≥ 0, `|c·Φ(τ)(x − x_ss)| ≤ upper·|x − x_ss|`.
    /// The first is tight after a bolus, the second near a plateau.
    pub fn output_range(&self, watched: Watched, x: &State, level: usize) -> (f64, f64) {
        let scale = 1000.0 / self.params.v1_l;
        let e = &self.dynamics.envelopes[watched as usize];
        let (Some(lo_env), Some(hi_env)) = (e.lower.get(level), e.upper.get(level)) else {
            return (0.0, f64::INFINITY);
        };
        let (lo_x, hi_x) = (dot(lo_env, x) * scale, dot(hi_env, x) * scale);
        let Some([per_central, per_skin]) = &self.dynamics.steady_per_unit_rate else {
            return (lo_x, hi_x);
        };
        let mut deviation = 0.0;
        let mut steady = [0.0; N];
        for i in 0..N {
            steady[i] = x[RATE_CENTRAL] * per_central[i] + x[RATE_SKIN] * per_skin[i];
            if i != ELIMINATED && i != RATE_CENTRAL && i != RATE_SKIN {
                deviation += hi_env[i] * (x[i] - steady[i]).abs();
            }
        }
        let deviation = deviation * scale;
        let y_ss = match watched {
            Watched::Cp => self.cp_ng_per_ml(&steady),
            Watched::Ce => self.ce_ng_per_ml(&steady),
        };
        (lo_x.max(y_ss - deviation), hi_x.min(y_ss + deviation))
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
        let levels = &self.dynamics.levels;
        while rest >= 1u64 << LEVELS {
            levels[top].apply(x);
            rest -= top_span;
        }
        // Now rest < 2^LEVELS: every set bit has its level.
        for level in levels {
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
        let levels = &self.dynamics.levels;
        while rest >= 1u64 << LEVELS {
            t = levels[top].compose(&t);
            rest -= 1u64 << top;
        }
        let mut j = 0;
        while rest != 0 {
            if rest & 1 == 1 {
                t = levels[j].compose(&t);
            }
            rest >>= 1;
            j += 1;
        }
        t
    }

    /// The system matrix `M` of `x' = M x` (per minute), for models built
    /// on top of this one (the metabolite's augmented system).
    pub fn matrix(&self) -> &[[f64; N]; N] {
        &self.dynamics.matrix
    }

    /// Time derivative of component `i` in state `x` (per minute).
    pub fn derivative(&self, x: &State, i: usize) -> f64 {
        self.dynamics.matrix[i]
            .iter()
            .zip(x)
            .map(|(m, v)| m * v)
            .sum()
    }

    /// Rate of change of Ce in ng/mL per minute.
    pub fn ce_slope_ng_per_ml_per_min(&self, x: &State) -> f64 {
        self.derivative(x, EFFECT) / self.params.v1_l * 1000.0
    }

    /// Plasma concentration in ng/mL.
    pub fn cp_ng_per_ml(&self, x: &State) -> f64 {
        x[CENTRAL] / self.params.v1_l * 1000.0
    }

    /// Effect-site concentration in ng/mL.
    pub fn ce_ng_per_ml(&self, x: &State) -> f64 {
        x[EFFECT] / self.params.v1_l * 1000.0
    }

    /// Amount of drug in the body (central, peripherals and depots), in mg.
    /// With [`ELIMINATED`] this is the mass balance: everything that entered
    /// is in the body or has been eliminated.
    pub fn amount_in_body_mg(&self, x: &State) -> f64 {
        x[CENTRAL] + x[1] + x[2] + x[FIRST_DEPOT..=SKIN_DEPOT].iter().sum::<f64>()
    }
}

fn dot(a: &State, b: &State) -> f64 {
    a.iter().zip(b).map(|(p, q)| p * q).sum()
}

/// `c · Φ` for a row vector `c`.
fn row_times(c: &State, t: &Transition) -> State {
    let mut out = [0.0; N];
    for (j, o) in out.iter_mut().enumerate() {
        *o = (0..N).map(|i| c[i] * t.m[i][j]).sum();
    }
    out
}

/// Steady state of the dynamic components for a unit rate on `rate`:
/// solves `M_dd x_d = −M_d,rate` over the components other than the rates,
/// the eliminated amount, and absent compartments (an all-zero row: nothing
/// flows in or out, so it stays 0). `None` when that system is singular.
fn steady_state(m: &[[f64; N]; N], rate: usize) -> Option<State> {
    let dynamic: Vec<usize> = (0..N)
        .filter(|&i| i != ELIMINATED && i != RATE_CENTRAL && i != RATE_SKIN)
        .filter(|&i| m[i].iter().any(|v| *v != 0.0))
        .collect();
    let n = dynamic.len();
    let a = DMatrix::from_fn(n, n, |r, c| m[dynamic[r]][dynamic[c]]);
    let b = nalgebra::DVector::from_fn(n, |r, _| -m[dynamic[r]][rate]);
    let x = a.lu().solve(&b)?;
    let mut out = [0.0; N];
    for (k, &i) in dynamic.iter().enumerate() {
        if !x[k].is_finite() {
            return None;
        }
        out[i] = x[k];
    }
    out[rate] = 1.0;
    Some(out)
}

fn envelope(c: &State, levels: &[Transition]) -> Envelope {
    let mut upper = Vec::with_capacity(levels.len());
    let mut lower = Vec::with_capacity(levels.len());
    let mut hi = *c;
    let mut lo = *c;
    // Base: [0, 1 ms] is bounded by its end points.
    if let Some(first) = levels.first() {
        let moved = row_times(c, first);
        for j in 0..N {
            hi[j] = hi[j].max(moved[j]);
            lo[j] = lo[j].min(moved[j]).max(0.0);
        }
    }
    upper.push(hi);
    lower.push(lo);
    for t in levels.iter().take(levels.len().saturating_sub(1)) {
        let (hm, lm) = (row_times(&hi, t), row_times(&lo, t));
        for j in 0..N {
            hi[j] = hi[j].max(hm[j]);
            lo[j] = lo[j].min(lm[j]).max(0.0);
        }
        upper.push(hi);
        lower.push(lo);
    }
    Envelope { upper, lower }
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
    m[EFFECT][0] = p.ke0_per_min;
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
        for level in &sys.dynamics.levels {
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

    use crate::test_rng::Rng;

    #[test]
    fn sparse_steps_are_bit_for_bit_the_full_product() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let sys = System::new(domino_70kg()).unwrap();
        let mut one_compartment = domino_70kg();
        one_compartment.k12_per_min = 0.0;
        one_compartment.k21_per_min = 0.0;
        one_compartment.k13_per_min = 0.0;
        one_compartment.k31_per_min = 0.0;
        let small = System::new(one_compartment).unwrap();
        for case in 0..2_000 {
            let system = if case % 3 == 0 { &small } else { &sys };
            let step_ms = [1, 7, 1_000, 60_000, 3_600_000][case % 5];
            let t = system.transition(step_ms);
            // Each component zero (+0 mostly, now and then −0), tiny,
            // or an amount.
            let mut x = [0.0; N];
            for v in &mut x {
                *v = match rng.next() % 8 {
                    0..=2 => 0.0,
                    3 => -0.0,
                    4 => 1e-300 * rng.unit(),
                    _ => 100.0 * rng.unit(),
                };
            }
            let sparse = t.from_state(&x);
            let (mut a, mut b) = (x, x);
            for n in 0..200 {
                t.apply(&mut a);
                sparse.apply(&mut b);
                let bits = |s: &State| s.map(f64::to_bits);
                assert_eq!(bits(&a), bits(&b), "case {case}, step {n}, from {x:?}");
            }
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
    fn envelopes_bound_the_output_over_their_interval() {
        let sys = System::new(domino_70kg()).unwrap();
        let mut x0 = [0.0; N];
        x0[FIRST_DEPOT + 2] = 40.0; // intranasal depot: Cp rises, peaks, falls
        x0[CENTRAL] = 5.0;
        x0[RATE_CENTRAL] = 0.2;
        for level in [10usize, 14, 18, 22] {
            let (lo_cp, hi_cp) = sys.output_range(Watched::Cp, &x0, level);
            let (lo_ce, hi_ce) = sys.output_range(Watched::Ce, &x0, level);
            let span = 1i64 << level;
            let mut x = x0;
            let step = (span / 97).max(1);
            let mut t = 0;
            while t <= span {
                let (cp, ce) = (sys.cp_ng_per_ml(&x), sys.ce_ng_per_ml(&x));
                assert!(
                    lo_cp <= cp + 1e-9 && cp <= hi_cp + 1e-9,
                    "Cp {cp} outside [{lo_cp}, {hi_cp}]"
                );
                assert!(
                    lo_ce <= ce + 1e-9 && ce <= hi_ce + 1e-9,
                    "Ce {ce} outside [{lo_ce}, {hi_ce}]"
                );
                sys.advance(&mut x, step);
                t += step;
            }
            // And they are not vacuous: the upper bound is within a factor of
            // the true maximum for short intervals.
            if level <= 14 {
                assert!(hi_cp < 10.0 * sys.cp_ng_per_ml(&x0) + 1000.0);
            }
        }
    }

    #[test]
    fn one_compartment_systems_have_a_steady_state_and_sound_bounds() {
        let mut p = domino_70kg();
        (p.k12_per_min, p.k21_per_min, p.k13_per_min, p.k31_per_min) = (0.0, 0.0, 0.0, 0.0);
        let sys = System::new(p).unwrap();
        assert!(sys.dynamics.steady_per_unit_rate.is_some());
        let mut x = [0.0; N];
        x[RATE_CENTRAL] = 1.0 / 60.0;
        for level in 12..24 {
            let (_, hi) = sys.output_range(Watched::Cp, &x, level);
            let mut y = x;
            sys.advance(&mut y, 1 << level);
            assert!(sys.cp_ng_per_ml(&y) <= hi + 1e-9, "level {level}");
        }
    }

    #[test]
    fn steady_state_bound_is_tight_on_a_plateau() {
        let sys = System::new(domino_70kg()).unwrap();
        let mut x = [0.0; N];
        x[RATE_CENTRAL] = 0.5;
        x[RATE_SKIN] = 0.02;
        sys.advance(&mut x, 400 * 3_600_000);
        let cp = sys.cp_ng_per_ml(&x);
        let (lo, hi) = sys.output_range(Watched::Cp, &x, 22);
        assert!(lo <= cp && cp <= hi);
        assert!(
            hi - lo < 1e-6 * cp,
            "plateau bound [{lo}, {hi}] around {cp}"
        );
        // Steady state is rate / CL for the central rate plus the patch.
        let expected = (0.5 + 0.02 * sys.params().route(crate::vocab::Route::Transdermal).f)
            / sys.params().cl_l_per_min()
            * 1000.0;
        assert!((cp - expected).abs() < 1e-6 * expected);
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

    /// The memoised unit-dose peak is the computed one, for systems that
    /// share dynamics but differ in V1 and a route's lag (the memo's key),
    /// on the first (computed) and second (memo) call alike; and the lag
    /// moves it.
    #[test]
    fn the_unit_dose_peak_memo_gives_the_computed_answer() {
        let base = domino_70kg();
        let a = System::new(base.clone()).unwrap();
        let mut p = base.clone();
        p.v1_l = 0.063 * 90.0;
        p.route_mut(Route::Oral).lag_min = 20.0;
        let b = System::with_dynamics(p, a.dynamics().clone(), &Dynamics::key(&base)).unwrap();
        for sys in [&a, &b] {
            for route in Route::ALL {
                let computed = sys.compute_unit_dose_ce_peak_ms(route);
                assert_eq!(sys.unit_dose_ce_peak_ms(route), computed, "{route:?}");
                assert_eq!(
                    sys.unit_dose_ce_peak_ms(route),
                    computed,
                    "{route:?} (memo)"
                );
            }
        }
        let (pa, pb) = (
            a.unit_dose_ce_peak_ms(Route::Oral).unwrap(),
            b.unit_dose_ce_peak_ms(Route::Oral).unwrap(),
        );
        assert!(pb > pa, "a later lag, a later peak: {pa} vs {pb}");
        assert!(a.unit_dose_ce_peak_ms(Route::IvBolus).unwrap() > 0);
    }
}
