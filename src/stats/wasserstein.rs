//! First Wasserstein (earth mover's) distance between two samples,
//! `W1 = integral |F_u(x) - F_v(x)| dx` (Villani 2009, "Optimal Transport", ch. 6; Ramdas,
//! García Trillos & Cuturi 2017, eq. 2), as `scipy.stats.wasserstein_distance`. poisongate
//! reports it divided by the baseline's standard deviation, so that `0.5` reads as "half a
//! standard deviation of mass moved".

/// Exact W1 between two samples (NaNs must be removed by the caller).
#[must_use]
pub fn distance(u: &[f64], v: &[f64]) -> f64 {
    if u.is_empty() || v.is_empty() {
        return 0.0;
    }
    let mut u = u.to_vec();
    let mut v = v.to_vec();
    u.sort_unstable_by(f64::total_cmp);
    v.sort_unstable_by(f64::total_cmp);
    let (nu, nv) = (u.len() as f64, v.len() as f64);
    let (mut i, mut j) = (0usize, 0usize);
    let mut prev = u[0].min(v[0]);
    let mut total = 0.0;
    // Walk the pooled sorted values; between consecutive values both CDFs are constant.
    while i < u.len() || j < v.len() {
        let x = match (u.get(i), v.get(j)) {
            (Some(&a), Some(&b)) => a.min(b),
            (Some(&a), None) => a,
            (None, Some(&b)) => b,
            (None, None) => break,
        };
        total += (i as f64 / nu - j as f64 / nv).abs() * (x - prev);
        while i < u.len() && u[i] <= x {
            i += 1;
        }
        while j < v.len() && v[j] <= x {
            j += 1;
        }
        prev = x;
    }
    total
}
