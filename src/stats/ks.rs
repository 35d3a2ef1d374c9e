//! Two-sample Kolmogorov–Smirnov test.
//!
//! - Statistic: `D = sup |F_a - F_b|` over the pooled sample, as `scipy.stats.ks_2samp`.
//! - Exact p-value: the probability that a uniformly random lattice path of `n1` and `n2` steps
//!   leaves the band `|i/n1 - j/n2| < D` (Hodges 1957, "The significance probability of the
//!   Smirnov two-sample test", Arkiv för Matematik 3; the same quantity as scipy's
//!   `ks_2samp(method="exact")`).
//! - Asymptotic p-value: the Kolmogorov limiting distribution `Q(sqrt(en) D)` with
//!   `en = n1 n2 / (n1 + n2)` (Kolmogorov 1933; Smirnov 1948), the same function as
//!   `scipy.special.kolmogorov` / `scipy.stats.kstwobign.sf`. For ties and for binned data this
//!   is conservative: ties and evaluation at bin edges only lower `D`.

/// Result of a two-sample KS test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KsTest {
    /// `sup |F_a - F_b|`.
    pub statistic: f64,
    /// Two-sided p-value.
    pub p_value: f64,
}

/// Largest sample size product for which [`two_sample`] uses the exact lattice-path p-value.
pub const EXACT_MAX_CELLS: usize = 10_000 * 10_000 / 16;

/// The two-sample KS statistic of two samples (NaNs must be removed by the caller).
#[must_use]
pub fn statistic(a: &[f64], b: &[f64]) -> f64 {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort_unstable_by(f64::total_cmp);
    b.sort_unstable_by(f64::total_cmp);
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j, mut d) = (0usize, 0usize, 0.0f64);
    while i < a.len() && j < b.len() {
        // Advance past every copy of the smaller value in both samples, so ties are handled
        // as scipy does (CDFs evaluated with side="right" at each pooled value).
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / n1 - j as f64 / n2).abs());
    }
    d
}

/// Two-sample test: exact p-value for small samples, asymptotic otherwise.
#[must_use]
pub fn two_sample(a: &[f64], b: &[f64]) -> KsTest {
    let statistic = statistic(a, b);
    let p_value = if a.len().saturating_mul(b.len()) <= EXACT_MAX_CELLS {
        exact_p_value(a.len(), b.len(), statistic)
    } else {
        asymptotic_p_value(a.len() as f64, b.len() as f64, statistic)
    };
    KsTest { statistic, p_value }
}

/// `Q(sqrt(en) d)`: the asymptotic two-sided p-value for sample sizes `n1`, `n2`.
#[must_use]
pub fn asymptotic_p_value(n1: f64, n2: f64, d: f64) -> f64 {
    if n1 <= 0.0 || n2 <= 0.0 {
        return 1.0;
    }
    kolmogorov_sf(effective_n(n1, n2).sqrt() * d)
}

/// `n1 n2 / (n1 + n2)`, the effective sample size of a two-sample comparison.
#[must_use]
pub fn effective_n(n1: f64, n2: f64) -> f64 {
    n1 * n2 / (n1 + n2)
}

/// Survival function of the Kolmogorov distribution, `P(K > x)`.
///
/// Two series, each used where it converges fast (Marsaglia, Tsang & Wang 2003, "Evaluating
/// Kolmogorov's distribution", J. Stat. Software 8(18), eqs. 1 and 2): the theta-function form
/// of the CDF below 1, the alternating series of the survival function above.
#[must_use]
pub fn kolmogorov_sf(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x <= 0.0 {
        return 1.0;
    }
    if x < 1.0 {
        let mut cdf = 0.0;
        let c = -std::f64::consts::PI * std::f64::consts::PI / (8.0 * x * x);
        for k in 1..=100u32 {
            let odd = f64::from(2 * k - 1);
            let term = (c * odd * odd).exp();
            cdf += term;
            if term < 1e-20 * cdf {
                break;
            }
        }
        let cdf = cdf * (2.0 * std::f64::consts::PI).sqrt() / x;
        (1.0 - cdf).clamp(0.0, 1.0)
    } else {
        let mut sf = 0.0;
        let mut sign = 1.0;
        for k in 1..=100u32 {
            let k = f64::from(k);
            let term = (-2.0 * k * k * x * x).exp();
            sf += sign * term;
            if term < 1e-20 * sf.abs() {
                break;
            }
            sign = -sign;
        }
        (2.0 * sf).clamp(0.0, 1.0)
    }
}

/// Inverse of [`kolmogorov_sf`]: the `x` with `P(K > x) = p`, by bisection (the function is
/// monotone; 200 halvings reach f64 resolution).
#[must_use]
pub fn kolmogorov_isf(p: f64) -> f64 {
    if p >= 1.0 {
        return 0.0;
    }
    let p = p.max(f64::MIN_POSITIVE);
    let (mut lo, mut hi) = (0.0f64, 40.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if kolmogorov_sf(mid) > p {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo <= f64::EPSILON * hi {
            break;
        }
    }
    0.5 * (lo + hi)
}

/// Exact two-sided p-value `P(D >= d)` for sample sizes `n1`, `n2` without ties.
///
/// Dynamic programme over the `(n1+1) x (n2+1)` lattice carrying the probability of a uniform
/// random path reaching each point while staying strictly inside the band; the p-value is the
/// mass that first leaves the band. Memory is one row.
#[must_use]
pub fn exact_p_value(n1: usize, n2: usize, d: f64) -> f64 {
    if n1 == 0 || n2 == 0 || d <= 0.0 {
        return 1.0;
    }
    // |i/n1 - j/n2| >= d  <=>  |i n2 - j n1| >= d n1 n2; the left side is an integer, and an
    // observed d is itself such a ratio, so rounding recovers the exact integer threshold.
    let (m, n) = (n1 as i64, n2 as i64);
    let threshold = ((d * (m * n) as f64).round() as i64).max(1);
    let outside = |i: i64, j: i64| (i * n - j * m).abs() >= threshold;
    let total = (m + n) as f64;
    let mut row = vec![0.0f64; n2 + 1];
    // Mass absorbed at the first outside point of each path: a sum of positive terms, so small
    // p-values keep full relative precision (no `1 - inside` cancellation).
    let mut absorbed = 0.0f64;
    for i in 0..=m {
        for j in 0..=n {
            let ju = j as usize;
            if i == 0 && j == 0 {
                row[0] = 1.0;
                continue;
            }
            let remaining = total - (i + j) as f64 + 1.0;
            // Arrive by an a-step from (i-1, j): at that point m-(i-1) a-steps remained.
            let from_a = if i > 0 {
                row[ju] * (m - i + 1) as f64 / remaining
            } else {
                0.0
            };
            let from_b = if j > 0 {
                row[ju - 1] * (n - j + 1) as f64 / remaining
            } else {
                0.0
            };
            if outside(i, j) {
                absorbed += from_a + from_b;
                row[ju] = 0.0;
            } else {
                row[ju] = from_a + from_b;
            }
        }
    }
    absorbed.clamp(0.0, 1.0)
}
