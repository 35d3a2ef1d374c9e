//! The detectable effect of a count test: the smallest excess share of flagged rows that the
//! gate's decision rule would block with a stated probability, at this batch's size.
//!
//! A count test flags `k` of `n` rows and decides on two things at once (DESIGN §5): its
//! p-value `P(K >= k | null)` is below the level, and its effect, the excess share
//! `k / n - base`, reaches the deny threshold. Both grow with `k`, so the test denies exactly
//! when `k >= k*`, the smallest count that satisfies both. Under an attack that flags a true
//! excess share `e` on top of the null's rate, `K ~ Binomial(n, base + e)`, and the power at
//! `e` is `P(K >= k*) = I_{base + e}(k*, n - k* + 1)` (Abramowitz & Stegun 1964, 26.5.24).
//! The detectable effect is the smallest `e` with that power at least `power`, found by
//! bisection (the tail grows with the rate). This is the textbook minimum detectable effect
//! of an exact one-sided test (Cohen 1988, *Statistical Power Analysis*, ch. 5), computed from
//! the same null as the decision, not from a normal approximation.
//!
//! The level is the one the test faces when the attack is the only effect in the batch: the
//! first step of the weighted Holm procedure, `alpha * w / sum(w)` (Holm 1979, §5).

use super::proportion::binomial_upper_tail;

/// Detection probability the report states detectable effects at.
pub const POWER: f64 = 0.8;

/// What a count test needs to block: the critical count and the detectable excess share.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CountPower {
    /// Smallest count of flagged rows that blocks.
    pub critical: u64,
    /// Smallest true excess share detected with probability `power`.
    pub excess_share: f64,
}

/// The smallest `k` in `0..=n` with `pred(k)`, for a predicate false then true as `k` grows.
pub(crate) fn first_count(n: u64, pred: impl Fn(u64) -> bool) -> Option<u64> {
    if !pred(n) {
        return None;
    }
    let (mut lo, mut hi) = (0u64, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Some(lo)
}

/// The smallest `x` in `[lo, hi]` with `ok(x)`, for a predicate false then true as `x` grows
/// and true at `hi`, to a relative 1e-12 (resolving far below any effect a report prints).
pub(crate) fn bisect(mut lo: f64, mut hi: f64, ok: impl Fn(f64) -> bool) -> f64 {
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if ok(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
        if hi - lo <= 1e-12 * hi.abs() {
            break;
        }
    }
    hi
}

/// Whether a true excess share `share` is detected with probability at least `power` (the
/// same test as [`count`], without searching for the smallest such share).
pub fn count_reaches(
    n: u64,
    base: f64,
    deny: f64,
    level: f64,
    power: f64,
    share: f64,
    tail: impl Fn(u64) -> f64,
) -> bool {
    critical(n, base, deny, level, tail)
        .is_some_and(|k| binomial_upper_tail(k, n, (base + share).clamp(0.0, 1.0)) >= power)
}

/// The smallest count of flagged rows out of `n` at which the test denies (see [`count`]).
fn critical(n: u64, base: f64, deny: f64, level: f64, tail: impl Fn(u64) -> f64) -> Option<u64> {
    if n == 0 || level.is_nan() || level <= 0.0 {
        return None;
    }
    let nf = n as f64;
    // Both conditions of the decision rule, as `decide` applies them (`value >= threshold`,
    // and a positive value).
    first_count(n, |k: u64| {
        let value = k as f64 / nf - base;
        value >= deny && value > 0.0 && tail(k) < level
    })
}

/// The detectable effect of a count test on `n` rows whose p-value at `k` flagged rows is
/// `tail(k)` and whose statistic is `k / n - base`, at `level`, with deny threshold `deny`
/// on the statistic and detection probability `power`. `None` when no count up to `n` would
/// block (the batch is too small for the test to block on anything).
pub fn count(
    n: u64,
    base: f64,
    deny: f64,
    level: f64,
    power: f64,
    tail: impl Fn(u64) -> f64,
) -> Option<CountPower> {
    let critical = critical(n, base, deny, level, tail)?;
    let power_at = |q: f64| binomial_upper_tail(critical, n, q);
    let lo_q = base.clamp(0.0, 1.0);
    if power_at(1.0) < power {
        return None;
    }
    if power_at(lo_q) >= power {
        return Some(CountPower {
            critical,
            excess_share: 0.0,
        });
    }
    let hi = bisect(lo_q, 1.0, |q| power_at(q) >= power);
    Some(CountPower {
        critical,
        excess_share: hi - lo_q,
    })
}

/// The detectable share of an attack that moves each of `available` rows (labels of one
/// class, values of one category) with probability `pi`, for a test whose decision at `j`
/// moved rows is `denies(j)`, known to hold from some count on once `j >= start` (before
/// `start` a move can only undo the batch's own lean). The moved count is
/// `Binomial(available, pi)`, so the power is the binomial tail at the critical count (as in
/// [`count`]). Returns the critical count and the smallest `pi` with that power at least
/// `power`; `None` when moving every row would not deny.
pub fn moved(
    available: u64,
    start: u64,
    power: f64,
    denies: impl Fn(u64) -> bool,
) -> Option<(u64, f64)> {
    let start = start.min(available);
    let critical = start + first_count(available - start, |j| denies(start + j))?;
    if critical == 0 {
        // The batch is denied as it is: no move is needed.
        return Some((0, 0.0));
    }
    let reaches = |pi: f64| binomial_upper_tail(critical, available, pi) >= power;
    if !reaches(1.0) {
        return None;
    }
    Some((critical, bisect(0.0, 1.0, reaches)))
}

/// The null of `poison-stitched-rows` as its detectable share needs it: the trusted
/// cross-fitted mean and spread of the independence weight (`mean`, `sd`), its mean on
/// shuffled rows (`stitched`), the pairs' summed information (`information`) and the spread of
/// a row's summed pointwise information (`score_sd`), measured on `trusted` rows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StitchedNull {
    /// Batch rows.
    pub rows: u64,
    /// Trusted rows.
    pub trusted: u64,
    /// Trusted mean weight.
    pub mean: f64,
    /// Its spread.
    pub sd: f64,
    /// Mean weight of stitched rows.
    pub stitched: f64,
    /// Trusted summed information of the pairs.
    pub information: f64,
    /// Spread of a row's summed pointwise information.
    pub score_sd: f64,
}

/// The detectable stitched share of `poison-stitched-rows`: the smallest share `e` of rows
/// stitched from other rows' values that the test denies with probability `power` at
/// `level`, deny threshold `deny` on the estimated share. The test is the intersection of two
/// (Berger 1982): the mean weight, normal around `mean + e (stitched - mean)` with standard
/// error `sd sqrt(1/n + 1/N)`, and the information drop, normal around
/// `information (1 - (1 - e)^2)` with standard error `score_sd sqrt(1/n + 1/N)` (the
/// delta-method error the test uses); each must be significant at `level` and give a share
/// at or past `deny`, which on each path is one threshold on its statistic. The power is the
/// product of the two paths' (their statistics are positively related, so the product is a
/// lower bound on the power of both). `None` when no share up to 1 is denied.
#[must_use]
pub fn stitched(null: &StitchedNull, deny: f64, level: f64, power: f64) -> Option<f64> {
    let gap = null.stitched - null.mean;
    if null.rows == 0 || gap <= 0.0 || null.information <= 0.0 || level.is_nan() || level <= 0.0 {
        return None;
    }
    let scale = (1.0 / null.rows as f64 + 1.0 / null.trusted.max(1) as f64).sqrt();
    let zc = normal_quantile(1.0 - level);
    let (se_w, se_i) = (null.sd.max(1e-12) * scale, null.score_sd.max(1e-12) * scale);
    // The weights' path denies past this excess mean weight; the information's past this drop.
    let w_critical = (zc * se_w).max(deny * gap);
    let drop_at = |share: f64| null.information * (1.0 - (1.0 - share).powi(2));
    let i_critical = (zc * se_i).max(drop_at(deny));
    let at = |e: f64| {
        let w = super::proportion::normal_upper_tail((w_critical - e * gap) / se_w);
        let i = super::proportion::normal_upper_tail((i_critical - drop_at(e)) / se_i);
        w * i
    };
    if at(1.0) < power {
        return None;
    }
    Some(bisect(0.0, 1.0, |e| at(e) >= power))
}

/// What a test on a continuous statistic needs to block: the smallest value of the statistic
/// that denies, and the smallest true effect denied with the stated power.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThresholdPower {
    /// Smallest observed value of the statistic that denies.
    pub critical: f64,
    /// Smallest true (population) value detected with probability `power`.
    pub effect: f64,
}

/// `z` with `P(Z <= z) = p` for a standard normal `Z`.
pub(crate) fn normal_quantile(p: f64) -> f64 {
    use statrs::distribution::{ContinuousCDF, Normal};
    Normal::new(0.0, 1.0).map_or(f64::NAN, |d| d.inverse_cdf(p))
}

/// The detectable distance of the two-sample Kolmogorov-Smirnov test of `drift-numeric`,
/// `n` batch values against `m` baseline values.
///
/// The test denies on its KS path when the asymptotic p-value (doubled: the drift test's
/// p-value is twice the smaller of the KS and chi-square p-values) is below `level` and the
/// distance reaches `deny`; `critical` is the smallest distance doing both. Under an
/// alternative whose CDFs differ by `delta` at some point `x0`, the sample distance is at
/// least the sample difference at `x0`, which is asymptotically normal with mean `delta`
/// and variance `F(1 - F) / n + G(1 - G) / m <= (1/n + 1/m) / 4`. So the power is at least
/// `Phi((delta - critical) / sigma)` with `sigma = sqrt(1/n + 1/m) / 2`, and
/// `delta = critical + z_power * sigma` is detected with at least that power (Massey 1951,
/// "The Kolmogorov-Smirnov test for goodness of fit", JASA 46, §4, the two-sample form).
/// The bound is tight for a shift of the centre of a distribution, where the CDFs differ
/// most near the median. `None` when even a distance of 1 could not deny.
#[must_use]
pub fn ks(n: u64, m: u64, deny: f64, level: f64, power: f64) -> Option<ThresholdPower> {
    if n == 0 || m == 0 || level.is_nan() || level <= 0.0 {
        return None;
    }
    let (nf, mf) = (n as f64, m as f64);
    let at_level = super::ks::kolmogorov_isf(0.5 * level) / super::ks::effective_n(nf, mf).sqrt();
    // The p-value must fall strictly below the level: the next representable distance.
    let critical = at_level.next_up().max(deny).max(f64::MIN_POSITIVE);
    if critical > 1.0 {
        return None;
    }
    let sigma = 0.5 * (1.0 / nf + 1.0 / mf).sqrt();
    Some(ThresholdPower {
        critical,
        effect: (critical + normal_quantile(power) * sigma).min(1.0),
    })
}

/// The detectable shift of `drift-numeric` for the drift it is most often asked about, a shift
/// of the centre: a normal column whose mean moves by `shift` standard deviations, at KS
/// distance `2 Phi(shift / 2) - 1` from the unmoved one. The test denies when its p-value is
/// below `level` and one of its effects reaches its deny threshold, so two paths deny a shift:
/// the KS distance reaching `max(significance, deny_ks)` (see [`ks`]), and the distance reaching
/// significance while the Wasserstein distance over the standard deviation reaches `deny_w`.
/// For the second, the Wasserstein distance is at least the difference of the means, whose
/// sampling standard deviation is `sqrt(1/n + 1/m)` standard deviations; the two events are
/// taken as independent (both grow with the shift, so their joint chance is if anything
/// higher). The power is the larger of the two paths' (a lower bound on the test's, which
/// can also deny on the PSI), and the detectable shift is the smallest with that power at
/// `power`, by bisection. Returns the critical KS distance and the detectable one with its
/// shift; `None` when no shift would be denied.
#[must_use]
pub fn location_shift(
    n: u64,
    m: u64,
    deny_ks: f64,
    deny_w: f64,
    level: f64,
    power: f64,
) -> Option<(ThresholdPower, f64)> {
    let significance = ks(n, m, 0.0, level, power)?.critical;
    let critical = significance.max(deny_ks);
    let (nf, mf) = (n as f64, m as f64);
    let sigma = 0.5 * (1.0 / nf + 1.0 / mf).sqrt();
    let sigma_w = (1.0 / nf + 1.0 / mf).sqrt();
    let phi = |z: f64| 1.0 - super::proportion::normal_upper_tail(z);
    let distance = |shift: f64| 2.0 * phi(0.5 * shift) - 1.0;
    let power_at = |shift: f64| {
        let d = distance(shift);
        let by_ks = if critical <= 1.0 {
            phi((d - critical) / sigma)
        } else {
            0.0
        };
        let by_w = phi((d - significance) / sigma) * phi((shift - deny_w) / sigma_w);
        by_ks.max(by_w)
    };
    let mut hi = 1.0f64;
    while power_at(hi) < power {
        hi *= 2.0;
        if hi > 64.0 {
            return None;
        }
    }
    let hi = bisect(0.0, hi, |shift| power_at(shift) >= power);
    Some((
        ThresholdPower {
            critical,
            effect: distance(hi),
        },
        hi,
    ))
}

/// `P(X > x)` for a noncentral chi-square variable with `dof` degrees of freedom and
/// noncentrality `lambda`: the Poisson mixture of central chi-square tails,
/// `sum_j Pois(j; lambda / 2) P(chi2_{dof + 2j} > x)` (Johnson, Kotz & Balakrishnan 1995,
/// *Continuous Univariate Distributions* vol. 2, eq. 29.2), summed outwards from the
/// Poisson mode until the weights are negligible.
///
/// Only the mode's term calls the incomplete gamma function; the others follow from it by
/// the recurrences `Q(a + 1, y) = Q(a, y) + y^a e^-y / Gamma(a + 1)` and `Pois(j + 1) =
/// Pois(j) mu / (j + 1)` (the scheme of Ding 1992, *Applied Statistics* 41(2), algorithm AS
/// 275, and Benton & Krishnamoorthy 2003, *Comput. Stat. Data Anal.* 43(2)). At a batch of
/// millions of rows the mixture spans tens of thousands of terms, and an incomplete gamma
/// per term made this the larger part of `check`'s time.
#[must_use]
pub fn noncentral_chi2_sf(x: f64, dof: f64, lambda: f64) -> f64 {
    if lambda <= 0.0 || x <= 0.0 || !x.is_finite() || dof <= 0.0 {
        return super::chi2::sf(x, dof);
    }
    let mu = 0.5 * lambda;
    let y = 0.5 * x;
    let ln_gamma = statrs::function::gamma::ln_gamma;
    let mode = mu.floor();
    let a0 = 0.5 * dof + mode;
    let w0 = (-mu + mode * mu.ln() - ln_gamma(mode + 1.0)).exp();
    let q0 = super::chi2::sf(x, dof + 2.0 * mode);
    // g(a) = y^a e^-y / Gamma(a + 1), the step from Q(a, y) to Q(a + 1, y).
    let g0 = (a0 * y.ln() - y - ln_gamma(a0 + 1.0)).exp();
    let mut total = w0 * q0;
    // Upwards: j = mode + 1, mode + 2, ...
    let (mut w, mut q, mut g, mut j) = (w0, q0, g0, mode);
    loop {
        j += 1.0;
        w *= mu / j;
        if w <= 1e-17 {
            break;
        }
        // q was Q(a_{j-1}, y) and g was g(a_{j-1}); a_j = dof / 2 + j = a_{j-1} + 1.
        q += g;
        g *= y / (0.5 * dof + j);
        total += w * q.min(1.0);
    }
    // Downwards: j = mode - 1, ..., 0; Q(a - 1, y) = Q(a, y) - g(a - 1).
    let (mut w, mut q, mut g, mut j) = (w0, q0, g0, mode);
    while j >= 1.0 {
        // g(a_{j-1}) = g(a_j) a_j / y, with a_j = dof / 2 + j.
        g *= (0.5 * dof + j) / y;
        w *= j / mu;
        j -= 1.0;
        if w <= 1e-17 {
            break;
        }
        q = (q - g).max(0.0);
        total += w * q;
    }
    total.clamp(0.0, 1.0)
}

/// The detectable shift of a category mix, for `drift-categorical` and `drift-label-prior`:
/// the chi-square homogeneity test with `dof` degrees of freedom, `n` batch and `m` baseline
/// values, denying when its p-value is below `level` and the PSI reaches `deny`.
///
/// For a true shift whose chi-square effect is `w2 = sum (p - q)^2 / q` (Cohen 1988, ch. 7),
/// the statistic is asymptotically noncentral chi-square with noncentrality `n_eff * w2`,
/// `n_eff = n m / (n + m)`; and the observed PSI, `sum (p - q) ln(p / q)`, agrees with the
/// statistic over `n_eff` to second order in the shift (both equal `w2` there). So the test
/// denies from the statistic `critical = max(chi2_isf(level), n_eff * deny)`, and the
/// detectable effect is the `w2` at which the noncentral tail there reaches `power`, stated
/// as the PSI it amounts to. `None` for a test with no degree of freedom.
#[must_use]
pub fn chi2(dof: f64, n: u64, m: u64, deny: f64, level: f64, power: f64) -> Option<ThresholdPower> {
    if dof < 1.0 || n == 0 || m == 0 || level.is_nan() || level <= 0.0 {
        return None;
    }
    let n_eff = super::ks::effective_n(n as f64, m as f64);
    let critical = super::chi2::isf(level, dof).max(n_eff * deny);
    let reaches = |lambda: f64| noncentral_chi2_sf(critical, dof, lambda) >= power;
    let mut hi = critical.max(1.0);
    while !reaches(hi) {
        hi *= 2.0;
    }
    let hi = bisect(0.0, hi, reaches);
    Some(ThresholdPower {
        critical: critical / n_eff,
        effect: hi / n_eff,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_critical_count_is_the_first_that_blocks_on_both_conditions() {
        // Binomial(1000, 0.01) null at level 0.001: the tail first drops below at some k;
        // a deny threshold of 0.0475 raises it to 58 (0.058 - 0.01 >= 0.0475).
        let tail = |k| binomial_upper_tail(k, 1000, 0.01);
        let p = count(1000, 0.01, 0.0475, 0.001, 0.8, tail).unwrap();
        assert_eq!(p.critical, 58);
        assert!(tail(57) < 0.001);
        // Without the threshold, significance alone decides.
        let sig = count(1000, 0.01, 0.0, 0.001, 0.8, tail).unwrap();
        assert!(tail(sig.critical) < 0.001 && tail(sig.critical - 1) >= 0.001);
        assert!(sig.excess_share < p.excess_share);
    }

    #[test]
    fn the_detectable_effect_has_the_stated_power_and_no_less() {
        let tail = |k| binomial_upper_tail(k, 500, 0.02);
        let p = count(500, 0.02, 0.01, 0.0005, 0.8, tail).unwrap();
        let at = binomial_upper_tail(p.critical, 500, 0.02 + p.excess_share);
        assert!((at - 0.8).abs() < 1e-6, "{at}");
        assert!(binomial_upper_tail(p.critical, 500, 0.02 + p.excess_share - 1e-3) < 0.8);
    }

    #[test]
    fn a_batch_too_small_to_block_has_no_detectable_effect() {
        // Five rows cannot reach p < 1e-9 against a 10 % rate.
        let tail = |k| binomial_upper_tail(k, 5, 0.1);
        assert!(count(5, 0.1, 0.0, 1e-9, 0.8, tail).is_none());
        assert!(count(0, 0.1, 0.0, 0.01, 0.8, tail).is_none());
    }

    #[test]
    fn the_ks_distance_bound_is_the_critical_distance_plus_a_power_margin() {
        let p = ks(1_000, 20_000, 0.05, 0.001, 0.8).unwrap();
        // P(K > x) = 0.0005 at x = 2.03641 (scipy's kstwobign.isf); n_eff = 952.38.
        assert!(
            (p.critical - 2.03641 / 952.381f64.sqrt()).abs() < 1e-5,
            "{p:?}"
        );
        let sigma = 0.5 * (1.0 / 1_000.0 + 1.0 / 20_000.0f64).sqrt();
        assert!(
            (p.effect - p.critical - 0.8416 * sigma).abs() < 1e-4,
            "{p:?}"
        );
        // A deny threshold above the significance bound sets the critical distance.
        assert_eq!(ks(100_000, 100_000, 0.2, 0.001, 0.8).unwrap().critical, 0.2);
        // Two values cannot reach p < 1e-9.
        assert!(ks(2, 3, 0.0, 1e-9, 0.8).is_none());
    }

    #[test]
    fn a_location_shift_is_denied_by_the_more_sensitive_path() {
        // On a million rows each side the thresholds decide: the Wasserstein path from a
        // 0.2 sd shift, the KS path from the shift at distance 0.15 (0.378 sd).
        let (w, by_w) = location_shift(1_000_000, 1_000_000, 0.15, 0.2, 1e-3, 0.8).unwrap();
        assert!((by_w - 0.2).abs() < 0.01 && w.effect < 0.15, "{by_w} {w:?}");
        let (k, by_ks) = location_shift(1_000_000, 1_000_000, 0.15, 10.0, 1e-3, 0.8).unwrap();
        assert!(
            (by_ks - 0.378).abs() < 0.01 && (k.effect - 0.15).abs() < 0.005,
            "{by_ks}"
        );
        // Fewer rows need a larger shift.
        let (_, small) = location_shift(400, 20_000, 0.15, 0.4, 1e-4, 0.8).unwrap();
        assert!(small > by_ks, "{small}");
    }

    #[test]
    fn the_noncentral_chi2_tail_is_the_central_one_at_zero_and_grows() {
        assert!((noncentral_chi2_sf(3.84, 1.0, 0.0) - 0.05).abs() < 1e-3);
        assert!(noncentral_chi2_sf(10.0, 4.0, 5.0) > noncentral_chi2_sf(10.0, 4.0, 1.0));
        // With one degree of freedom the variable is (Z + sqrt(lambda))^2: at the 5% critical
        // value 1.96^2 and lambda = (1.96 + 0.8416)^2 the tail is P(Z > -0.8416) = 0.8 plus
        // P(Z < -1.96 - (1.96 + 0.8416)) = 9.6e-7.
        let z = 1.959_963_984_540_054_f64;
        let p = noncentral_chi2_sf(z * z, 1.0, (z + 0.841_621_233_572_914_3).powi(2));
        assert!((p - 0.800_000_96).abs() < 1e-7, "{p}");
    }

    #[test]
    fn the_chi2_detectable_shift_has_the_stated_power() {
        let p = chi2(5.0, 2_000, 20_000, 0.0, 0.001, 0.8).unwrap();
        let n_eff = 2_000.0 * 20_000.0 / 22_000.0;
        let at = noncentral_chi2_sf(p.critical * n_eff, 5.0, p.effect * n_eff);
        assert!((at - 0.8).abs() < 1e-6, "{at}");
        assert!(chi2(0.0, 2_000, 20_000, 0.0, 0.001, 0.8).is_none());
        // A PSI threshold above the significance bound raises both.
        let q = chi2(5.0, 2_000, 20_000, 0.1, 0.001, 0.8).unwrap();
        assert!((q.critical - 0.1).abs() < 1e-12 && q.effect > p.effect);
    }

    #[test]
    fn larger_batches_detect_smaller_effects() {
        let at = |n: u64| {
            count(n, 0.01, 0.0, 0.001, 0.8, |k| {
                binomial_upper_tail(k, n, 0.01)
            })
            .unwrap()
            .excess_share
        };
        assert!(at(200) > at(2_000) && at(2_000) > at(20_000));
    }
}
