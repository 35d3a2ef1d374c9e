//! Paired tests: the same rows scored by two models.
//!
//! - McNemar's test of paired correctness (McNemar 1947): only the discordant rows count, `b`
//!   (right before, wrong after) and `c` (wrong before, right after); under no change
//!   `b ~ Binomial(b + c, 1/2)`. The exact two-sided p-value is `min(1, 2 P(X <= min(b, c)))`
//!   (statsmodels' `mcnemar(exact=True)`); the mid-p version subtracts the point probability
//!   of the observed count (Fagerland, Lydersen & Laake 2013, "The McNemar test for binary
//!   matched-pairs data: mid-p and asymptotic are better than exact conditional", BMC Medical
//!   Research Methodology 13:91), which keeps the size close to nominal without the exact
//!   test's conservatism.
//! - The paired t-test on per-row differences (Student 1908), for log-loss and Brier changes.
//! - Bowker's test of symmetry of a square transition table (Bowker 1948), the multi-class
//!   generalisation of McNemar's test: are flips A→B as common as B→A?
//! - Expected calibration error with equal-width confidence bins (Naeini, Cooper & Hauskrecht
//!   2015; Guo et al. 2017, "On Calibration of Modern Neural Networks", eq. 3).

use statrs::distribution::{ContinuousCDF, StudentsT};

use super::proportion::binomial_upper_tail;

/// Exact two-sided McNemar p-value for `b` and `c` discordant rows.
#[must_use]
pub fn mcnemar_exact(b: u64, c: u64) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    let k = b.min(c);
    // P(X <= k) = 1 - P(X >= k + 1)
    let lower = 1.0 - binomial_upper_tail(k + 1, n, 0.5);
    (2.0 * lower).min(1.0)
}

/// Two-sided McNemar mid-p value, `2 P(X <= min(b, c)) - P(X = min(b, c))` capped at 1: the
/// uncapped exact p-value less the point probability (1 when `b == c`).
#[must_use]
pub fn mcnemar_mid_p(b: u64, c: u64) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    let k = b.min(c);
    let lower = 1.0 - binomial_upper_tail(k + 1, n, 0.5);
    (2.0 * lower - binomial_pmf_half(k, n)).clamp(0.0, 1.0)
}

/// One-sided McNemar mid-p value for "more rows got worse than better" (`b` large):
/// `P(X > b) + P(X = b) / 2` with `X ~ Binomial(b + c, 1/2)`.
#[must_use]
pub fn mcnemar_mid_p_greater(b: u64, c: u64) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    (binomial_upper_tail(b + 1, n, 0.5) + 0.5 * binomial_pmf_half(b, n)).clamp(0.0, 1.0)
}

/// `P(X = k)` for `X ~ Binomial(n, 1/2)`, through log-gamma so that large `n` does not
/// overflow.
#[must_use]
pub fn binomial_pmf_half(k: u64, n: u64) -> f64 {
    if k > n {
        return 0.0;
    }
    let ln = statrs::function::gamma::ln_gamma;
    let (k, n) = (k as f64, n as f64);
    (ln(n + 1.0) - ln(k + 1.0) - ln(n - k + 1.0) - n * std::f64::consts::LN_2).exp()
}

/// Continuity-corrected McNemar chi-square p-value, `max(|b - c| - 1, 0)^2 / (b + c)` on one
/// degree of freedom (Edwards 1948). statsmodels does not clamp, so for `b == c` it reports
/// a statistic of `1 / (b + c)` where this reports 0.
#[must_use]
pub fn mcnemar_chi2(b: u64, c: u64) -> f64 {
    let n = (b + c) as f64;
    if n == 0.0 {
        return 1.0;
    }
    let d = (b as f64 - c as f64).abs() - 1.0;
    let stat = d.max(0.0).powi(2) / n;
    super::chi2::sf(stat, 1.0)
}

/// A paired t-test of the mean difference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TTest {
    /// Mean of the differences.
    pub mean: f64,
    /// Standard error of the mean difference.
    pub se: f64,
    /// The t statistic.
    pub statistic: f64,
    /// Degrees of freedom, `n - 1`.
    pub df: f64,
    /// Two-sided p-value.
    pub p_two_sided: f64,
    /// One-sided p-value for a positive mean difference.
    pub p_greater: f64,
}

/// Upper tail of Student's t distribution with `df` degrees of freedom.
#[must_use]
pub fn t_sf(t: f64, df: f64) -> f64 {
    if t.is_nan() || df <= 0.0 {
        return f64::NAN;
    }
    if t == f64::INFINITY {
        return 0.0;
    }
    if t == f64::NEG_INFINITY {
        return 1.0;
    }
    match StudentsT::new(0.0, 1.0, df) {
        // sf(t) = cdf(-t) by symmetry keeps precision in the far upper tail.
        Ok(dist) => dist.cdf(-t),
        Err(_) => f64::NAN,
    }
}

/// Paired t-test on differences `d` (after minus before). Needs at least 2 values; identical
/// differences (zero variance) give p 1 for a zero mean and 0 otherwise.
#[must_use]
pub fn ttest_paired(d: &[f64]) -> Option<TTest> {
    let n = d.len();
    if n < 2 {
        return None;
    }
    let nf = n as f64;
    let mean = d.iter().sum::<f64>() / nf;
    let var = d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (nf - 1.0);
    let se = (var / nf).sqrt();
    let df = nf - 1.0;
    if se == 0.0 || !se.is_finite() {
        let p = if mean == 0.0 { 1.0 } else { 0.0 };
        let greater = if mean > 0.0 { 0.0 } else { 1.0 };
        return Some(TTest {
            mean,
            se,
            statistic: if mean == 0.0 {
                0.0
            } else {
                mean.signum() * f64::INFINITY
            },
            df,
            p_two_sided: p,
            p_greater: greater,
        });
    }
    let t = mean / se;
    let upper = t_sf(t.abs(), df);
    Some(TTest {
        mean,
        se,
        statistic: t,
        df,
        p_two_sided: (2.0 * upper).min(1.0),
        p_greater: t_sf(t, df),
    })
}

/// Bowker's symmetry test of a square table `table[i][j]` (before class i, after class j).
/// Returns the statistic, the degrees of freedom `k (k - 1) / 2` and the p-value. Pairs whose
/// two cells are both zero contribute nothing.
#[must_use]
pub fn bowker(table: &[Vec<u64>]) -> (f64, f64, f64) {
    let k = table.len();
    let mut stat = 0.0;
    for (i, row) in table.iter().enumerate() {
        for (j, other) in table.iter().enumerate().skip(i + 1) {
            let (a, b) = (row[j] as f64, other[i] as f64);
            if a + b > 0.0 {
                stat += (a - b).powi(2) / (a + b);
            }
        }
    }
    let df = (k * k.saturating_sub(1) / 2) as f64;
    let p = if df > 0.0 {
        super::chi2::sf(stat, df)
    } else {
        1.0
    };
    (stat, df, p)
}

/// Bins of the expected calibration error.
pub const ECE_BINS: usize = 10;

/// Expected calibration error over `ECE_BINS` equal-width bins of confidence: bin `b` holds
/// confidences in `(b/M, (b+1)/M]`, the first bin also holds 0.
/// `ECE = sum_b (n_b / n) |acc_b - conf_b|`.
#[must_use]
pub fn ece(confidence: &[f64], correct: &[bool]) -> f64 {
    let mut n = [0u64; ECE_BINS];
    let mut conf = [0.0f64; ECE_BINS];
    let mut hits = [0u64; ECE_BINS];
    for (&c, &ok) in confidence.iter().zip(correct) {
        let b = ece_bin(c);
        n[b] += 1;
        conf[b] += c;
        hits[b] += u64::from(ok);
    }
    let total = confidence.len().max(1) as f64;
    (0..ECE_BINS)
        .filter(|&b| n[b] > 0)
        .map(|b| {
            let nb = n[b] as f64;
            (nb / total) * (hits[b] as f64 / nb - conf[b] / nb).abs()
        })
        .sum()
}

/// The ECE bin of a confidence in [0, 1].
#[must_use]
pub fn ece_bin(c: f64) -> usize {
    let m = ECE_BINS as f64;
    ((c * m).ceil() as usize).clamp(1, ECE_BINS) - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mcnemar_of_no_discordance_is_one() {
        assert_eq!(mcnemar_exact(0, 0), 1.0);
        assert_eq!(mcnemar_mid_p_greater(0, 0), 1.0);
    }

    #[test]
    fn one_sided_mid_p_is_half_the_two_sided_when_b_exceeds_c() {
        // For b > c the two-sided mid-p is twice the one-sided one (symmetric null).
        let (b, c) = (30, 12);
        let two = mcnemar_mid_p(b, c);
        let one = mcnemar_mid_p_greater(b, c);
        assert!((two - 2.0 * one).abs() < 1e-12, "{two} {one}");
    }

    #[test]
    fn ece_of_perfect_calibration_is_zero() {
        let conf = [1.0, 1.0, 0.5, 0.5];
        let ok = [true, true, true, false];
        assert!(ece(&conf, &ok).abs() < 1e-12);
        assert_eq!(ece_bin(0.0), 0);
        assert_eq!(ece_bin(0.1), 0);
        assert_eq!(ece_bin(0.1000001), 1);
        assert_eq!(ece_bin(1.0), 9);
    }
}
