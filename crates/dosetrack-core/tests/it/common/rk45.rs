//! An adaptive Dormand–Prince 5(4) integrator, written here so that the
//! engine's exact solution can be checked against an independent numerical
//! integration of the same ODEs. Deliberately plain: no shared code with the
//! engine.

/// Integrate `y' = f(t, y)` from `t0` to `t1`, in place, with relative
/// tolerance `rtol` and absolute tolerance `atol` per component.
pub(crate) fn integrate<F>(f: F, t0: f64, t1: f64, y: &mut [f64], rtol: f64, atol: f64)
where
    F: Fn(f64, &[f64], &mut [f64]),
{
    const C: [f64; 7] = [0.0, 1.0 / 5.0, 3.0 / 10.0, 4.0 / 5.0, 8.0 / 9.0, 1.0, 1.0];
    const A: [[f64; 6]; 7] = [
        [0.0; 6],
        [1.0 / 5.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [3.0 / 40.0, 9.0 / 40.0, 0.0, 0.0, 0.0, 0.0],
        [44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0, 0.0, 0.0, 0.0],
        [
            19372.0 / 6561.0,
            -25360.0 / 2187.0,
            64448.0 / 6561.0,
            -212.0 / 729.0,
            0.0,
            0.0,
        ],
        [
            9017.0 / 3168.0,
            -355.0 / 33.0,
            46732.0 / 5247.0,
            49.0 / 176.0,
            -5103.0 / 18656.0,
            0.0,
        ],
        [
            35.0 / 384.0,
            0.0,
            500.0 / 1113.0,
            125.0 / 192.0,
            -2187.0 / 6784.0,
            11.0 / 84.0,
        ],
    ];
    const B5: [f64; 7] = [
        35.0 / 384.0,
        0.0,
        500.0 / 1113.0,
        125.0 / 192.0,
        -2187.0 / 6784.0,
        11.0 / 84.0,
        0.0,
    ];
    const B4: [f64; 7] = [
        5179.0 / 57600.0,
        0.0,
        7571.0 / 16695.0,
        393.0 / 640.0,
        -92097.0 / 339200.0,
        187.0 / 2100.0,
        1.0 / 40.0,
    ];
    let n = y.len();
    if t1 <= t0 {
        return;
    }
    let mut t = t0;
    let mut h = ((t1 - t0) / 100.0).clamp(1e-12, 1e-3);
    let mut k = vec![vec![0.0; n]; 7];
    let mut tmp = vec![0.0; n];
    let mut y5 = vec![0.0; n];
    while t < t1 {
        if t + h > t1 {
            h = t1 - t;
        }
        f(t, y, &mut k[0]);
        for s in 1..7 {
            for i in 0..n {
                tmp[i] = y[i] + h * (0..s).map(|j| A[s][j] * k[j][i]).sum::<f64>();
            }
            let (done, rest) = k.split_at_mut(s);
            let _ = done;
            f(t + C[s] * h, &tmp, &mut rest[0]);
        }
        let mut err: f64 = 0.0;
        for i in 0..n {
            y5[i] = y[i] + h * (0..7).map(|s| B5[s] * k[s][i]).sum::<f64>();
            let y4 = y[i] + h * (0..7).map(|s| B4[s] * k[s][i]).sum::<f64>();
            let scale = atol + rtol * y[i].abs().max(y5[i].abs());
            err = err.max(((y5[i] - y4) / scale).abs());
        }
        if err <= 1.0 {
            t += h;
            y.copy_from_slice(&y5);
        }
        let factor = if err == 0.0 {
            5.0
        } else {
            (0.9 * err.powf(-0.2)).clamp(0.2, 5.0)
        };
        h *= factor;
    }
}

#[test]
fn integrates_exponential_decay_to_tolerance() {
    let mut y = [1.0];
    integrate(
        |_, y, dy| dy[0] = -0.7 * y[0],
        0.0,
        10.0,
        &mut y,
        1e-12,
        1e-15,
    );
    assert!((y[0] - (-7.0f64).exp()).abs() < 1e-12);
}
