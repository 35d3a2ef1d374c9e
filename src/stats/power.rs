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
fn first_count(n: u64, pred: impl Fn(u64) -> bool) -> Option<u64> {
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
        .is_some_and(|k| binomial_sf(k, n, (base + share).clamp(0.0, 1.0)) >= power)
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

/// `P(K >= k)` for `K ~ Binomial(n, q)`.
#[must_use]
pub fn binomial_sf(k: u64, n: u64, q: f64) -> f64 {
    super::proportion::binomial_upper_tail(k, n, q)
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
    let power_at = |q: f64| binomial_sf(critical, n, q);
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
    let (mut lo, mut hi) = (lo_q, 1.0f64);
    // 60 halvings resolve the rate far below any share a report prints.
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if power_at(mid) >= power {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(CountPower {
        critical,
        excess_share: hi - lo_q,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::proportion::binomial_upper_tail;

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
        let at = binomial_sf(p.critical, 500, 0.02 + p.excess_share);
        assert!((at - 0.8).abs() < 1e-6, "{at}");
        assert!(binomial_sf(p.critical, 500, 0.02 + p.excess_share - 1e-3) < 0.8);
    }

    #[test]
    fn a_batch_too_small_to_block_has_no_detectable_effect() {
        // Five rows cannot reach p < 1e-9 against a 10 % rate.
        let tail = |k| binomial_upper_tail(k, 5, 0.1);
        assert!(count(5, 0.1, 0.0, 1e-9, 0.8, tail).is_none());
        assert!(count(0, 0.1, 0.0, 0.01, 0.8, tail).is_none());
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
