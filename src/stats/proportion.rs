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

/// `P(K >= k)` for the predictive count `K` of events among `n` new rows, when the trusted
/// data showed `x` events in `m` rows: `K ~ BetaBinomial(n, x + a, m - x + b)`, the posterior
/// predictive of a binomial rate under a Beta(a, b) prior (Gelman et al. 2013, *Bayesian Data
/// Analysis*, 3rd ed., §2.4 and Appendix A).
///
/// This is what a batch-level rate test needs when the trusted rate was itself estimated
/// from `m` rows: it carries that estimate's uncertainty, so a rate pinned from 250 rows is
/// not treated as known exactly (a one-sample binomial against `x / m` is far too sure of
/// itself when `m` is small). With `a = b = 1/2` (Jeffreys) an event never seen in the trusted
/// rows still has a small, finite predictive rate.
///
/// The pmf ratio `f(j + 1) / f(j) = (n - j)(j + α) / ((j + 1)(n - j - 1 + β))` is summed
/// outward from `k` (upper tail) or, when `k` lies below the mean, the lower tail is summed
/// down from `k - 1` and subtracted; either way the sum stops once terms no longer matter, so
/// the cost is a few standard deviations of `K`, not `n`.
#[must_use]
pub fn beta_binomial_upper_tail(k: u64, n: u64, x: u64, m: u64) -> f64 {
    beta_binomial_upper_tail_ab(k, n, x as f64 + 0.5, m.saturating_sub(x) as f64 + 0.5)
}

/// [`beta_binomial_upper_tail`] for a trusted rate `rate` measured on `m` rows (the event
/// count is `rate × m`, rounded).
#[must_use]
pub fn predictive_upper_tail(k: u64, n: u64, rate: f64, m: u64) -> f64 {
    let x = (rate.clamp(0.0, 1.0) * m as f64).round() as u64;
    beta_binomial_upper_tail(k, n, x.min(m), m)
}

/// `P(K >= k)` for `K ~ BetaBinomial(n, alpha, beta)`.
#[must_use]
pub fn beta_binomial_upper_tail_ab(k: u64, n: u64, alpha: f64, beta: f64) -> f64 {
    use statrs::function::gamma::ln_gamma;
    if k == 0 {
        return 1.0;
    }
    if k > n {
        return 0.0;
    }
    if !(alpha > 0.0 && beta > 0.0 && alpha.is_finite() && beta.is_finite()) {
        return f64::NAN;
    }
    let nf = n as f64;
    let ln_beta = |a: f64, b: f64| ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b);
    let ln_pmf = |j: f64| {
        ln_gamma(nf + 1.0) - ln_gamma(j + 1.0) - ln_gamma(nf - j + 1.0)
            + ln_beta(j + alpha, nf - j + beta)
            - ln_beta(alpha, beta)
    };
    let mean = nf * alpha / (alpha + beta);
    let upper = k as f64 >= mean;
    // Start at the tail's edge nearest the mean and walk outward.
    let start = if upper { k } else { k - 1 };
    let mut term = ln_pmf(start as f64).exp();
    let mut sum = term;
    let mut j = start;
    loop {
        let jf = j as f64;
        if upper {
            if j >= n {
                break;
            }
            term *= (nf - jf) * (jf + alpha) / ((jf + 1.0) * (nf - jf - 1.0 + beta));
            j += 1;
        } else {
            if j == 0 {
                break;
            }
            // f(j - 1) / f(j) = j (n - j + β) / ((n - j + 1)(j - 1 + α)).
            term *= jf * (nf - jf + beta) / ((nf - jf + 1.0) * (jf - 1.0 + alpha));
            j -= 1;
        }
        sum += term;
        if term <= sum * 1e-17 {
            break;
        }
    }
    let p = if upper { sum } else { 1.0 - sum };
    p.clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beta_binomial_reduces_to_known_cases() {
        // Beta(1, 1) predictive: K uniform on 0..=n.
        for k in 0..=10u64 {
            let want = (11 - k) as f64 / 11.0;
            assert!((beta_binomial_upper_tail_ab(k, 10, 1.0, 1.0) - want).abs() < 1e-12);
        }
        // Exchangeability: of n new draws, P(all top k above m old) = prod (n-i)/(m+n-i),
        // which is BetaBinomial(n, 1, m).
        let (n, m, k) = (300u64, 250u64, 3u64);
        let want: f64 = (0..k)
            .map(|i| (n - i) as f64 / (m + n - i) as f64)
            .product();
        assert!((beta_binomial_upper_tail_ab(k, n, 1.0, m as f64) - want).abs() < 1e-12);
        // Far more trusted rows than batch rows: close to the binomial at the rate.
        let bb = beta_binomial_upper_tail(40, 2000, 100_000, 10_000_000);
        let bin = binomial_upper_tail(40, 2000, 0.01);
        assert!((bb / bin - 1.0).abs() < 0.05, "{bb} vs {bin}");
    }
}
