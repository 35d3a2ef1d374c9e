//! Pearson chi-square tests.
//!
//! - Goodness of fit, `sum (o - e)^2 / e` with `k - 1` degrees of freedom (Pearson 1900), as
//!   `scipy.stats.chisquare`.
//! - Homogeneity of a 2 x K contingency table (baseline counts against batch counts), with
//!   expected cells `row * col / total` and `K - 1` degrees of freedom, as
//!   `scipy.stats.chi2_contingency(correction=False)`. Columns empty in both rows carry no
//!   information and are dropped, as they would make the expected count zero.

use statrs::distribution::{ChiSquared, ContinuousCDF};

/// Result of a chi-square test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Chi2Test {
    /// Pearson's statistic.
    pub statistic: f64,
    /// Degrees of freedom.
    pub dof: f64,
    /// Upper-tail p-value.
    pub p_value: f64,
}

/// `P(X > x)` for a chi-square variable with `dof` degrees of freedom.
#[must_use]
pub fn sf(x: f64, dof: f64) -> f64 {
    if dof <= 0.0 || !x.is_finite() {
        return if x.is_finite() { 1.0 } else { 0.0 };
    }
    if x <= 0.0 {
        return 1.0;
    }
    // Regularised upper incomplete gamma: chi2.sf(x, k) = Q(k/2, x/2).
    statrs::function::gamma::gamma_ur(dof / 2.0, x / 2.0)
}

/// The `x` with `P(X > x) = p` (inverse survival function).
#[must_use]
pub fn isf(p: f64, dof: f64) -> f64 {
    let Ok(dist) = ChiSquared::new(dof) else {
        return f64::NAN;
    };
    if p >= 1.0 {
        return 0.0;
    }
    // Bisection on sf keeps full relative precision for small p, where inverse_cdf(1 - p)
    // would lose it to cancellation.
    let mut hi = dist.inverse_cdf(0.5).max(1.0);
    while sf(hi, dof) > p {
        hi *= 2.0;
    }
    let mut lo = 0.0;
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if sf(mid, dof) > p {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo <= 4.0 * f64::EPSILON * hi {
            break;
        }
    }
    0.5 * (lo + hi)
}

/// Goodness-of-fit test of observed counts against expected counts of the same total.
#[must_use]
pub fn goodness_of_fit(observed: &[f64], expected: &[f64]) -> Chi2Test {
    let statistic: f64 = observed
        .iter()
        .zip(expected)
        .filter(|(_, e)| **e > 0.0)
        .map(|(o, e)| (o - e) * (o - e) / e)
        .sum();
    let dof = observed.len().saturating_sub(1) as f64;
    Chi2Test {
        statistic,
        dof,
        p_value: sf(statistic, dof),
    }
}

/// Homogeneity test of two count vectors over the same cells.
#[must_use]
pub fn homogeneity(a: &[u64], b: &[u64]) -> Chi2Test {
    let total_a: f64 = a.iter().map(|&x| x as f64).sum();
    let total_b: f64 = b.iter().map(|&x| x as f64).sum();
    let total = total_a + total_b;
    if total_a == 0.0 || total_b == 0.0 {
        return Chi2Test {
            statistic: 0.0,
            dof: 0.0,
            p_value: 1.0,
        };
    }
    let mut statistic = 0.0;
    let mut cells = 0usize;
    for (&x, &y) in a.iter().zip(b) {
        let col = (x + y) as f64;
        if col == 0.0 {
            continue;
        }
        cells += 1;
        let ea = col * total_a / total;
        let eb = col * total_b / total;
        statistic += (x as f64 - ea).powi(2) / ea + (y as f64 - eb).powi(2) / eb;
    }
    let dof = cells.saturating_sub(1) as f64;
    Chi2Test {
        statistic,
        dof,
        p_value: sf(statistic, dof),
    }
}
