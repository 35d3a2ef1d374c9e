//! Tests on rates: is a share of rows in the batch larger than the baseline's?
//!
//! One-sided exact binomial test, `P(X >= k)` for `X ~ Binomial(n, p0)`, through the identity
//! `P(X >= k) = I_{p0}(k, n - k + 1)` with the regularised incomplete beta function
//! (Abramowitz & Stegun 1964, 26.5.24). `p0` is the baseline's rate with add-one smoothing,
//! `(x + 1) / (m + 2)` (Laplace's rule of succession), so that a rate never seen in `m`
//! trusted rows is not treated as impossible.

/// `P(X >= k)` for `X ~ Binomial(n, p0)`.
#[must_use]
pub fn binomial_upper_tail(k: u64, n: u64, p0: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k > n {
        return 0.0;
    }
    if p0 <= 0.0 {
        return 0.0;
    }
    if p0 >= 1.0 {
        return 1.0;
    }
    statrs::function::beta::beta_reg(k as f64, (n - k + 1) as f64, p0).clamp(0.0, 1.0)
}

/// The smoothed baseline rate of an event seen `x` times in `m` rows.
#[must_use]
pub fn smoothed_rate(x: u64, m: u64) -> f64 {
    (x as f64 + 1.0) / (m as f64 + 2.0)
}

/// Upper tail of the standard normal, `P(Z > z)`, through the complementary error function
/// (Abramowitz & Stegun 1964, 7.1.2 and 26.2.29).
#[must_use]
pub fn normal_upper_tail(z: f64) -> f64 {
    0.5 * statrs::function::erf::erfc(z / std::f64::consts::SQRT_2)
}
