//! The detectable flipped share of `poison-label-inconsistency`: the smallest share of
//! labels flipped at random in *this batch* that the test denies with the stated power.
//!
//! The test ([`super::inconsistency`]) denies when the smallest of its three p-values, times
//! three (Bonferroni), is below its level and the maximum-likelihood flipped share reaches the
//! deny threshold. All three statistics condition on each row's calibrated probabilities, so
//! their power depends on the rows (easy rows show a flip sooner than hard ones) and on the
//! labels the batch already has: clean labels that agree with the model more than its
//! calibration expects absorb part of a flip. So the power is that of flipping each of the
//! batch's own labels to another class with probability `ε`, computed from the same
//! probabilities and the same null the decision uses:
//!
//! - **Likelihood ratio.** Its noncentrality is the likelihood-ratio statistic of the
//!   *expected* data, every label replaced by its distribution after the flips (the
//!   "exemplary data" method of Self, Mauritsen & Ohara 1992, *Biometrics* 48(1), for
//!   likelihood-ratio tests), both sides fitted as the test fits them (bounded prior
//!   reweighting; the flip share on the alternative). The statistic is taken as noncentral
//!   chi-square with one degree of freedom against the test's chi-bar-square critical value
//!   with its Bonferroni factors.
//! - **Rate and surprise tests.** Sums of independent per-row terms: their mean and variance
//!   under the flips are exact, and the statistic is normal as the test assumes
//!   (Lindeberg–Feller).
//! - **The effect.** The estimate must reach the deny threshold: it is taken as normal around
//!   the expected data's estimate, with the standard error the noncentrality implies
//!   (`estimate / sqrt(λ)`, the curvature of the expected log-likelihood).
//!
//! The power is the largest of the three tests' (a lower bound on the power of their minimum)
//! capped by the effect's; the detectable share is found by bisection. The chi-square's
//! variance counts the labels' own sampling as well as the flips', so the statement is
//! conservative (planted on the bundled data, the stated share is denied in 77-87 % of
//! draws; `tests/cli/power.rs`). The sums run over cells of rows with the same label and
//! nearly the same probabilities, a few hundred at any batch size.

use super::flip_lr::{Q_FLOOR, ascend};
use crate::stats::proportion::normal_upper_tail;

/// Width of a cell of rows on each class's log-odds.
const CELL: f64 = 0.05;
/// Largest flipped share searched (the test's own bound on the share).
const MAX_EPS: f64 = 0.5;

/// What the detectable flipped share is computed from: the tested rows' probabilities and the
/// test's null.
#[derive(Debug, Clone, PartialEq)]
pub struct FlipNull {
    /// Classes.
    k: usize,
    /// Mean calibrated probabilities of each cell of the tested rows, row-major.
    probs: Vec<f32>,
    /// Their given labels.
    labels: Vec<u16>,
    /// Rows per cell.
    weights: Vec<f64>,
    /// Rows the tests ran on (the likelihood-ratio test's sample, at most
    /// [`super::LR_ROWS`]).
    pub tested: u64,
    /// Labelled rows the test judged (the share is of them).
    pub judged: u64,
    /// Bounds of the null's prior reweighting, per class (as the test's).
    bounds: Vec<f64>,
    /// The rate test's probability cut.
    cut: f64,
    /// Alternatives the likelihood-ratio test tries (its Bonferroni factor).
    alternatives: f64,
    /// Statistics the test's p-value is the Bonferroni minimum of.
    statistics: f64,
}

/// Per-row sums at one flipped share, from which the power at any size follows.
#[derive(Debug, Clone, Copy)]
struct Moments {
    /// Likelihood-ratio noncentrality per row.
    lambda: f64,
    /// The flip share the test estimates.
    estimate: f64,
    /// Rate test: mean excess of surprising rows per row, its null variance, its variance
    /// under the alternative.
    rate: (f64, f64, f64),
    /// Surprise test: the same for the summed surprise.
    surprise: (f64, f64, f64),
}

impl FlipNull {
    /// The null of a test on `probs` (row-major, `k` classes) and the given `labels`, with
    /// the likelihood-ratio test's prior bounds and alternatives, on `tested` of `judged` rows.
    #[must_use]
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        k: usize,
        probs: &[f32],
        labels: &[u16],
        judged: u64,
        bounds: &[f64],
        cut: f64,
        alternatives: usize,
        statistics: usize,
    ) -> Option<Self> {
        let n = labels.len();
        if k < 2 || n == 0 || probs.len() != n * k || bounds.len() != k {
            return None;
        }
        // Rows with the same label and nearly the same probabilities (a 0.05 step of each
        // class's log-odds) are one cell of the sums, weighted by its rows: every sum is then
        // over a few hundred cells at any batch size, and no row is left out.
        let mut cells: std::collections::BTreeMap<(u16, Vec<i32>), (f64, Vec<f64>)> =
            std::collections::BTreeMap::new();
        for (i, &y) in labels.iter().enumerate() {
            let row = &probs[i * k..(i + 1) * k];
            let key: Vec<i32> = row
                .iter()
                .map(|&p| {
                    let p = f64::from(p).clamp(Q_FLOOR, 1.0 - Q_FLOOR);
                    ((p / (1.0 - p)).ln() / CELL).round() as i32
                })
                .collect();
            let cell = cells.entry((y, key)).or_insert_with(|| (0.0, vec![0.0; k]));
            cell.0 += 1.0;
            cell.1
                .iter_mut()
                .zip(row)
                .for_each(|(a, &p)| *a += f64::from(p));
        }
        let (mut cell_probs, mut cell_labels, mut weights) = (Vec::new(), Vec::new(), Vec::new());
        for ((y, _), (count, sum)) in cells {
            cell_probs.extend(sum.iter().map(|v| (v / count) as f32));
            cell_labels.push(y);
            weights.push(count);
        }
        Some(Self {
            k,
            probs: cell_probs,
            labels: cell_labels,
            weights,
            tested: n as u64,
            judged,
            bounds: bounds.to_vec(),
            cut,
            alternatives: alternatives as f64,
            statistics: statistics as f64,
        })
    }

    fn rows(&self) -> usize {
        self.labels.len()
    }

    /// Row `i`'s probabilities reweighted by `w`, floored as the test floors them.
    fn reweighted(&self, i: usize, w: &[f64], out: &mut [f64]) {
        let row = &self.probs[i * self.k..(i + 1) * self.k];
        let mut z = 0.0;
        for c in 0..self.k {
            out[c] = w[c] * f64::from(row[c]).max(Q_FLOOR);
            z += out[c];
        }
        out.iter_mut().for_each(|v| *v /= z);
    }

    /// Row `i`'s label distribution once each label is flipped to another class at random
    /// with probability `eps`.
    fn flipped(&self, i: usize, eps: f64, out: &mut [f64]) {
        let y = usize::from(self.labels[i]);
        let other = eps / (self.k as f64 - 1.0);
        out.iter_mut().enumerate().for_each(|(c, t)| {
            *t = if c == y { 1.0 - eps } else { other };
        });
    }

    /// Expected log-likelihood, under labels flipped at `eps`, of the test's model at prior
    /// weights `w` and random-flip share `e` (`e = 0`: the null).
    fn loglik(&self, eps: f64, w: &[f64], e: f64) -> f64 {
        let (mut t, mut q) = (vec![0f64; self.k], vec![0f64; self.k]);
        let k = self.k as f64;
        let mut total = 0.0;
        for i in 0..self.rows() {
            self.flipped(i, eps, &mut t);
            self.reweighted(i, w, &mut q);
            total += self.weights[i]
                * t.iter()
                    .zip(&q)
                    .filter(|&(&a, _)| a > 0.0)
                    .map(|(a, &b)| a * ((1.0 - e) * b + e * (1.0 - b) / (k - 1.0)).max(1e-300).ln())
                    .sum::<f64>();
        }
        total
    }

    /// The test's fit to the expected data at `eps` (coordinate ascent over the bounded
    /// reweighting and, unless `null`, the flip share, as [`super::flip_lr`] fits them):
    /// weights, share and expected log-likelihood.
    fn fit(&self, eps: f64, null: bool) -> (Vec<f64>, f64, f64) {
        ascend(&self.bounds, null.then_some(0.0), 1e-9, |w, e| {
            self.loglik(eps, w, e)
        })
    }

    /// The per-row sums at flipped share `eps`.
    fn moments(&self, eps: f64) -> Moments {
        let (w, _, null) = self.fit(eps, true);
        let (_, estimate, alt) = self.fit(eps, false);
        let (mut t, mut q) = (vec![0f64; self.k], vec![0f64; self.k]);
        let (mut rate, mut surprise) = ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0));
        for i in 0..self.rows() {
            self.flipped(i, eps, &mut t);
            self.reweighted(i, &w, &mut q);
            // The rate test: is the given label's probability under the cut.
            let below: f64 = q.iter().filter(|&&p| p < self.cut).sum();
            let hit: f64 = q
                .iter()
                .zip(&t)
                .filter(|&(&p, _)| p < self.cut)
                .map(|(_, a)| a)
                .sum();
            let n = self.weights[i];
            rate.0 += n * (hit - below);
            rate.1 += n * below * (1.0 - below);
            rate.2 += n * hit * (1.0 - hit);
            // The surprise test: -ln q of the given label.
            let h: f64 = q.iter().map(|&p| -p * p.ln()).sum();
            let h2: f64 = q.iter().map(|&p| p * p.ln() * p.ln()).sum();
            let s: f64 = q.iter().zip(&t).map(|(&p, a)| -a * p.ln()).sum();
            let s2: f64 = q.iter().zip(&t).map(|(&p, a)| a * p.ln() * p.ln()).sum();
            surprise.0 += n * (s - h);
            surprise.1 += n * (h2 - h * h).max(0.0);
            surprise.2 += n * (s2 - s * s).max(0.0);
        }
        let n = self.tested.max(1) as f64;
        let per = |(a, b, c): (f64, f64, f64)| (a / n, b / n, c / n);
        Moments {
            lambda: (2.0 * (alt - null)).max(0.0) / n,
            estimate,
            rate: per(rate),
            surprise: per(surprise),
        }
    }

    /// The probability that the test denies the flips `m` was taken at, on `tested` rows at
    /// `level`, with deny threshold `deny` on the estimated share.
    fn power_of(&self, m: &Moments, tested: f64, deny: f64, level: f64) -> f64 {
        let each = level / self.statistics;
        // The normal tests: z = excess / sqrt(null variance) > z_crit.
        let zc = crate::stats::power::normal_quantile(1.0 - each);
        let normal = |(mean, null_var, alt_var): (f64, f64, f64)| {
            if null_var <= 0.0 || alt_var <= 0.0 {
                return 0.0;
            }
            let shift = tested * mean - zc * (tested * null_var).sqrt();
            normal_upper_tail(-shift / (tested * alt_var).sqrt())
        };
        // The likelihood ratio: p = alternatives / 2 * P(chi2_1 > LR) < each.
        let lambda = m.lambda * tested;
        let tail = (2.0 * each / self.alternatives).min(1.0);
        let lr = if tail >= 1.0 {
            1.0
        } else {
            let critical = crate::stats::chi2::isf(tail, 1.0);
            crate::stats::power::noncentral_chi2_sf(critical, 1.0, lambda)
        };
        let significant = normal(m.rate).max(normal(m.surprise)).max(lr);
        // The estimate reaches the deny threshold: normal around the expected data's
        // estimate, with the standard error the curvature implies (estimate / sqrt(lambda)).
        let e = m.estimate;
        let effect = if e <= 0.0 || lambda <= 0.0 {
            0.0
        } else {
            normal_upper_tail(-(e - deny) * lambda.sqrt() / e)
        };
        significant.min(effect)
    }

    /// The power against random flips of share `eps` as a function of the rows the test runs
    /// on (the sums are taken once).
    pub fn power_curve(&self, eps: f64, deny: f64, level: f64) -> impl Fn(u64) -> f64 + '_ {
        let m = self.moments(eps);
        move |tested| self.power_of(&m, tested as f64, deny, level)
    }

    /// The smallest share of randomly flipped labels denied with probability `power` at
    /// `level` on the rows the test ran on; `None` when no share up to the test's bound is.
    #[must_use]
    pub fn detectable(&self, deny: f64, level: f64, power: f64) -> Option<f64> {
        let tested = self.tested as f64;
        let at = |eps: f64| {
            let m = self.moments(eps);
            self.power_of(&m, tested, deny, level)
        };
        if at(MAX_EPS) < power {
            return None;
        }
        // The power grows with the share; 16 halvings resolve it to 8e-6 (a report prints
        // four significant digits of a share of a few percent).
        let (mut lo, mut hi) = (0.0, MAX_EPS);
        for _ in 0..16 {
            let mid = 0.5 * (lo + hi);
            if at(mid) >= power {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Some(hi)
    }
}
