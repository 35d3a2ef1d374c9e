//! The clean-batch null distribution of binned statistics, by simulation from pinned counts.
//!
//! Under "the batch is drawn from the baseline's distribution", both the pinned baseline counts
//! (size `m`) and the batch counts (size `n`) are multinomial draws over the same cells. The
//! pinned shares `p` are the best estimate of the cell probabilities, so drawing `R` pairs
//! `(Multinomial(m, p), Multinomial(n, p))` and computing a statistic on each gives its
//! sampling distribution at exactly this batch size, including the discreteness of sparse cells
//! that asymptotic formulas miss (a parametric bootstrap: Efron & Tibshirani 1993, "An
//! Introduction to the Bootstrap", ch. 6). No raw baseline rows are needed.
//!
//! Multinomial draws use the conditional-binomial method (Davis 1993, "The computer generation
//! of multinomial random variates", Comput. Stat. Data Anal. 16).

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Binomial, Distribution};

/// Draws a multinomial count vector of `n` trials over the shares of `weights`.
pub fn multinomial(rng: &mut ChaCha8Rng, n: u64, weights: &[u64], out: &mut [u64]) {
    let mut remaining_n = n;
    let mut remaining_w: f64 = weights.iter().map(|&w| w as f64).sum();
    for (slot, &w) in out.iter_mut().zip(weights) {
        if remaining_n == 0 || remaining_w <= 0.0 {
            *slot = 0;
            continue;
        }
        let p = (w as f64 / remaining_w).clamp(0.0, 1.0);
        let draw = if p >= 1.0 {
            remaining_n
        } else {
            Binomial::new(remaining_n, p).map_or(0, |d| d.sample(rng))
        };
        *slot = draw;
        remaining_n -= draw;
        remaining_w -= w as f64;
    }
}

/// Simulates a statistic under the null and returns the `level` quantile of its draws.
///
/// `stat` receives `(baseline_draw, batch_draw)`. Deterministic for a given `seed`.
pub fn quantile<F>(
    baseline: &[u64],
    n: u64,
    draws: usize,
    level: f64,
    seed: u64,
    stat: F,
) -> Vec<f64>
where
    F: Fn(&[u64], &[u64]) -> Vec<f64>,
{
    let m: u64 = baseline.iter().sum();
    if m == 0 || n == 0 || draws == 0 {
        return Vec::new();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut a = vec![0u64; baseline.len()];
    let mut b = vec![0u64; baseline.len()];
    let mut samples: Vec<Vec<f64>> = Vec::new();
    for _ in 0..draws {
        multinomial(&mut rng, m, baseline, &mut a);
        multinomial(&mut rng, n, baseline, &mut b);
        let values = stat(&a, &b);
        if samples.is_empty() {
            samples = vec![Vec::with_capacity(draws); values.len()];
        }
        for (s, v) in samples.iter_mut().zip(values) {
            s.push(v);
        }
    }
    samples
        .into_iter()
        .map(|mut s| {
            s.sort_unstable_by(f64::total_cmp);
            // Nearest-rank quantile, rounded up: conservative for a threshold.
            let rank = ((level * s.len() as f64).ceil() as usize).clamp(1, s.len());
            s[rank - 1]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multinomial_draws_sum_to_n() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut out = [0u64; 4];
        multinomial(&mut rng, 1_000_000, &[1, 2, 3, 0], &mut out);
        assert_eq!(out.iter().sum::<u64>(), 1_000_000);
        assert_eq!(out[3], 0);
        // Shares near 1/6, 2/6, 3/6 at this size.
        assert!((out[2] as f64 / 1e6 - 0.5).abs() < 0.005);
    }

    #[test]
    fn null_quantile_is_deterministic_and_shrinks_with_n() {
        let base = [100u64; 10];
        let tv = |a: &[u64], b: &[u64]| vec![crate::stats::divergence::total_variation(a, b)];
        let small = quantile(&base, 1_000, 200, 0.99, 1, tv);
        let again = quantile(&base, 1_000, 200, 0.99, 1, tv);
        let large = quantile(&base, 1_000_000, 200, 0.99, 1, tv);
        assert_eq!(small, again);
        assert!(large[0] < small[0]);
    }
}
