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
use crate::detect::reach::{self, Reach};
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
        bisect_share(
            |eps| {
                let m = self.moments(eps);
                self.power_of(&m, tested, deny, level)
            },
            power,
        )
    }
}

/// Least gap between a class's flipped and clean mean surprise for its rows to enter the
/// surprise test's flipped-share estimate (as [`super::inconsistency::candidates`] uses it).
pub(crate) const MIN_SURPRISE_GAP: f64 = 0.2;

/// The detectable flipped share of `poison-label-inconsistency` when the test runs without
/// the likelihood-ratio sample (more than [`super::inconsistency::MAX_LR_CLASSES`] classes):
/// its class-stratified rate and surprise z-tests against the pinned per-class rates.
///
/// As for [`FlipNull`], the flips are applied to *this batch's* labels: each label moves to
/// another class at random with probability `ε`. A row that keeps its label keeps what the
/// batch observed of it (its class's surprising count and summed surprise, which the state
/// holds per class); a row moved into class `c` is surprising with the pinned out-of-fold
/// *flipped* rate of `c` and carries its flipped mean surprise. Each class's excess is then a
/// sum of independent terms over the rows (kept or not, moved in or not), with an exact mean
/// and variance; two quantities the state does not hold are taken from the pin: the spread of
/// the kept rows' surprise (the trusted class's standard deviation) and that of a moved row's
/// (the same). Each statistic is normal as the test assumes (Lindeberg–Feller), against the
/// test's own null variance, which also carries the trusted rates' sampling error. The
/// estimate the test reports is, per visible class, the excess divided by the flipped-to-clean
/// gap, so it is normal with the mean and variance those ratios add up to. The power is the
/// larger of the two tests' capped by the estimate's chance of reaching the deny threshold
/// (the estimate of the test with the larger expected z, the one the decision reports).
#[derive(Debug, Clone, PartialEq)]
pub struct ClassFlipNull {
    /// Per class: its share of the judged rows, what the batch observed of it and its pins.
    classes: Vec<ClassPin>,
    /// Labelled rows the test judged.
    pub judged: u64,
    /// Statistics the test's p-value is the Bonferroni minimum of.
    statistics: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct ClassPin {
    /// Share of the judged rows labelled with the class.
    share: f64,
    /// Share of them that are surprising, and their mean surprise.
    surprising: f64,
    surprise: f64,
    /// Pinned: trusted rows, clean and flipped surprising rates, clean and flipped mean
    /// surprise, and the surprise's standard deviation.
    trusted: f64,
    clean: f64,
    flipped: f64,
    mean: f64,
    flipped_mean: f64,
    sd: f64,
}

/// One z-test's sums: mean excess, null variance, variance under the flips, and for the
/// estimate the flips it sees, their variance and the share of random flips that land where
/// they are visible.
#[derive(Debug, Default, Clone, Copy)]
struct ClassSums {
    mean: f64,
    null_var: f64,
    alt_var: f64,
    seen: f64,
    seen_var: f64,
    visible: f64,
}

impl ClassSums {
    /// Adds one class's excess (`mean`, variance `var` under the flips, null variance
    /// `null_var`), visible to the estimate through `gap` when it reaches `min_gap`.
    #[allow(clippy::too_many_arguments)]
    fn add(&mut self, mean: f64, var: f64, null_var: f64, gap: f64, min_gap: f64, landing: f64) {
        self.mean += mean;
        self.null_var += null_var;
        self.alt_var += var;
        if gap >= min_gap {
            self.seen += mean / gap;
            self.seen_var += var / (gap * gap);
            self.visible += landing;
        }
    }
}

impl ClassFlipNull {
    /// The null of the class-stratified test on the batch's judged rows per class
    /// (`class_n`), their surprising counts (`class_k`) and summed surprise (`class_s`), with
    /// the model's pinned per-class rates; `None` when the model pinned none or no row was
    /// judged.
    #[must_use]
    pub fn new(
        m: &super::label::LabelModel,
        class_n: &[u64],
        class_k: &[u64],
        class_s: &[f64],
        statistics: usize,
    ) -> Option<Self> {
        let k = m.forest.classes;
        let judged: u64 = class_n.iter().sum();
        let lengths = [
            m.class_rows.len(),
            m.class_clean_rate.len(),
            m.class_flipped_rate.len(),
            m.class_mean_surprise.len(),
            m.class_flipped_surprise.len(),
            m.class_sd_surprise.len(),
            class_n.len(),
            class_k.len(),
            class_s.len(),
        ];
        if k < 2 || judged == 0 || lengths.iter().any(|&l| l != k) {
            return None;
        }
        let classes = (0..k)
            .map(|c| {
                let trusted = m.class_rows[c] as f64;
                let nc = class_n[c].max(1) as f64;
                ClassPin {
                    share: class_n[c] as f64 / judged as f64,
                    surprising: class_k[c] as f64 / nc,
                    surprise: class_s[c] / nc,
                    trusted,
                    // As the test clamps it.
                    clean: m.class_clean_rate[c]
                        .clamp(0.5 / trusted.max(1.0), 1.0 - 0.5 / trusted.max(1.0)),
                    flipped: m.class_flipped_rate[c].clamp(0.0, 1.0),
                    mean: m.class_mean_surprise[c],
                    flipped_mean: m.class_flipped_surprise[c],
                    sd: m.class_sd_surprise[c],
                }
            })
            .collect();
        Some(Self {
            classes,
            judged,
            statistics: statistics as f64,
        })
    }

    /// The rate and surprise tests' sums at flipped share `eps` on `n` judged rows (the
    /// batch's per-class shares and rates at that size).
    fn sums(&self, eps: f64, n: f64) -> (ClassSums, ClassSums) {
        let k = self.classes.len() as f64;
        // Each row of another class moves into a given class with this probability.
        let q = eps / (k - 1.0);
        let (mut rate, mut surprise) = (ClassSums::default(), ClassSums::default());
        for c in &self.classes {
            let nc = c.share * n;
            if c.trusted <= 0.0 {
                continue;
            }
            let others = n - nc;
            let labelled = nc * (1.0 - eps) + others * q;
            let landing = (1.0 - labelled / n) / (k - 1.0);
            let spread = 1.0 + labelled / c.trusted;
            // Rate test: the surprising count less the clean rate of the labelled rows. A
            // kept row adds (x - r0), x its observed 0/1; a moved-in row (h - r0), h drawn at
            // the flipped rate.
            let (r0, r1) = (c.clean, c.flipped);
            let kept_sq = nc * (c.surprising * (1.0 - r0).powi(2) + (1.0 - c.surprising) * r0 * r0);
            let moved_sq = r1 * (1.0 - r0).powi(2) + (1.0 - r1) * r0 * r0;
            rate.add(
                (1.0 - eps) * nc * (c.surprising - r0) + others * q * (r1 - r0),
                eps * (1.0 - eps) * kept_sq + others * (q * moved_sq - (q * (r1 - r0)).powi(2)),
                labelled * r0 * (1.0 - r0) * spread,
                r1 - r0,
                super::label::MIN_GAP,
                landing,
            );
            // Surprise test: the same with each row's surprise less the trusted mean.
            let (mu, sd2) = (c.mean, c.sd * c.sd);
            let kept_sq = nc * (sd2 + (c.surprise - mu).powi(2));
            let moved_sq = sd2 + (c.flipped_mean - mu).powi(2);
            surprise.add(
                (1.0 - eps) * nc * (c.surprise - mu) + others * q * (c.flipped_mean - mu),
                eps * (1.0 - eps) * kept_sq
                    + others * (q * moved_sq - (q * (c.flipped_mean - mu)).powi(2)),
                labelled * sd2 * spread,
                c.flipped_mean - mu,
                MIN_SURPRISE_GAP,
                landing,
            );
        }
        (rate, surprise)
    }

    /// The probability that the test denies random flips of share `eps` on `n` judged rows.
    fn power_at(&self, eps: f64, n: f64, deny: f64, level: f64) -> f64 {
        let (rate, surprise) = self.sums(eps, n);
        let zc = crate::stats::power::normal_quantile(1.0 - level / self.statistics);
        let significant = |s: &ClassSums| {
            if s.null_var <= 0.0 || s.alt_var <= 0.0 {
                return 0.0;
            }
            normal_upper_tail((zc * s.null_var.sqrt() - s.mean) / s.alt_var.sqrt())
        };
        let reaches = |s: &ClassSums| {
            if s.visible <= 0.0 || s.seen_var <= 0.0 {
                return 0.0;
            }
            let scale = s.visible * n;
            normal_upper_tail((deny - s.seen / scale) / (s.seen_var.sqrt() / scale))
        };
        // The test reports the estimate of whichever z is larger: weigh each test's chance
        // of reaching the threshold by its chance of being the larger (the two z's taken as
        // independent, which spreads the weights toward one half).
        let z = |s: &ClassSums| {
            let sd = s.null_var.max(f64::MIN_POSITIVE).sqrt();
            (s.mean / sd, s.alt_var / (sd * sd))
        };
        let ((zr, vr), (zs, vs)) = (z(&rate), z(&surprise));
        let surprise_reported = if vr + vs > 0.0 {
            normal_upper_tail((zr - zs) / (vr + vs).sqrt())
        } else {
            f64::from(u8::from(zs > zr))
        };
        let reach =
            surprise_reported * reaches(&surprise) + (1.0 - surprise_reported) * reaches(&rate);
        // Both must hold; they rise together with the flips, so the product bounds the
        // chance of both from below.
        significant(&rate).max(significant(&surprise)) * reach
    }

    /// The power against random flips of share `eps` as a function of the judged rows.
    pub fn power_curve(&self, eps: f64, deny: f64, level: f64) -> impl Fn(u64) -> f64 + '_ {
        move |n| self.power_at(eps, n as f64, deny, level)
    }

    /// The smallest share of randomly flipped labels denied with probability `power` at
    /// `level` on the judged rows; `None` when no share up to the test's bound is.
    #[must_use]
    pub fn detectable(&self, deny: f64, level: f64, power: f64) -> Option<f64> {
        let n = self.judged as f64;
        bisect_share(|eps| self.power_at(eps, n, deny, level), power)
    }
}

/// The smallest share in (0, [`MAX_EPS`]] at which `power_at` reaches `power` (it grows with
/// the share); `None` when even the largest does not.
fn bisect_share(power_at: impl Fn(f64) -> f64, power: f64) -> Option<f64> {
    if power_at(MAX_EPS) < power {
        return None;
    }
    // 16 halvings resolve it to 8e-6 (a report prints four significant digits of a share of
    // a few percent).
    let (mut lo, mut hi) = (0.0, MAX_EPS);
    for _ in 0..16 {
        let mid = 0.5 * (lo + hi);
        if power_at(mid) >= power {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

/// The label-flip test's two nulls, as its power model and its answer to
/// `evidence-insufficient` use them.
trait FlipCurve: std::fmt::Debug + Send + Sync + 'static {
    /// The detectable flipped share ([`FlipNull::detectable`], [`ClassFlipNull::detectable`]).
    fn share(&self, deny: f64, level: f64, power: f64) -> Option<f64>;
    /// Labelled rows the test judged.
    fn judged(&self) -> u64;
    /// The smallest batch size, from `rows` up, from which random flips of `share` of the
    /// labels are denied with the stated power.
    fn sufficient_rows(&self, rows: u64, share: f64, deny: f64, level: f64) -> Option<u64>;
}

impl FlipCurve for FlipNull {
    fn share(&self, deny: f64, level: f64, power: f64) -> Option<f64> {
        self.detectable(deny, level, power)
    }

    fn judged(&self) -> u64 {
        self.judged
    }

    /// The test runs on the batch's judged rows up to the likelihood-ratio sample, so past
    /// the size that fills the sample no size helps.
    fn sufficient_rows(&self, rows: u64, share: f64, deny: f64, level: f64) -> Option<u64> {
        let lr_rows = super::LR_ROWS as u64;
        let power_at = self.power_curve(share, deny, level);
        let per_row = self.tested as f64 / rows.max(1) as f64;
        let tested = |at: u64| ((at as f64 * per_row).round() as u64).min(lr_rows);
        let full = (super::LR_ROWS as f64 / per_row.max(f64::MIN_POSITIVE)).ceil() as u64;
        if power_at(lr_rows) < crate::stats::power::POWER {
            return None;
        }
        reach::first_sufficient(rows, reach::WINDOW / 4, |at| {
            at >= full || power_at(tested(at)) >= crate::stats::power::POWER
        })
    }
}

impl FlipCurve for ClassFlipNull {
    fn share(&self, deny: f64, level: f64, power: f64) -> Option<f64> {
        self.detectable(deny, level, power)
    }

    fn judged(&self) -> u64 {
        self.judged
    }

    /// Every judged row counts, with the batch's share of judged rows.
    fn sufficient_rows(&self, rows: u64, share: f64, deny: f64, level: f64) -> Option<u64> {
        let power_at = self.power_curve(share, deny, level);
        let per_row = self.judged as f64 / rows.max(1) as f64;
        reach::first_sufficient(rows, reach::WINDOW / 4, |at| {
            power_at((at as f64 * per_row).round() as u64) >= crate::stats::power::POWER
        })
    }
}

/// The label-flip test's answer to `evidence-insufficient`: its null, deny threshold, the
/// level it faces alone and its detectable share at the batch's size.
#[derive(Debug)]
struct FlipReach<N> {
    null: std::sync::Arc<N>,
    deny: f64,
    level: f64,
    detectable: Option<f64>,
}

impl<N: FlipCurve> Reach for FlipReach<N> {
    fn detectable(&self, _rows: u64) -> Option<f64> {
        self.detectable
    }

    fn sufficient_rows(&self, rows: u64, share: f64) -> Option<u64> {
        self.null
            .sufficient_rows(rows, share, self.deny, self.level)
    }
}

/// The power model of each null: the detectable flipped share, and the answer to
/// `evidence-insufficient`.
macro_rules! flip_power_model {
    ($null:ty) => {
        impl crate::detect::PowerModel for $null {
            fn detectable(
                &self,
                statistic: &str,
                deny: f64,
                level: f64,
            ) -> crate::detect::Detectable {
                crate::detect::Detectable::flipped(
                    statistic,
                    self.share(deny, level, crate::stats::power::POWER),
                    self.judged(),
                    level,
                )
            }

            fn reach(
                self: std::sync::Arc<Self>,
                deny: f64,
                level: f64,
                detectable: Option<f64>,
            ) -> Option<Box<dyn Reach>> {
                Some(Box::new(FlipReach {
                    null: self,
                    deny,
                    level,
                    detectable,
                }))
            }
        }
    };
}
flip_power_model!(FlipNull);
flip_power_model!(ClassFlipNull);

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Seven equal classes: clean surprising rate 2 %, flipped 40 %; the batch observed
    /// exactly the clean rate.
    fn seven() -> ClassFlipNull {
        let pin = ClassPin {
            share: 1.0 / 7.0,
            surprising: 0.02,
            surprise: 0.5,
            trusted: 1_000.0,
            clean: 0.02,
            flipped: 0.4,
            mean: 0.5,
            flipped_mean: 3.0,
            sd: 0.8,
        };
        ClassFlipNull {
            classes: vec![pin; 7],
            judged: 2_100,
            statistics: 2.0,
        }
    }

    #[test]
    fn the_rate_tests_mean_and_variance_under_flips_match_a_simulation() {
        // Rows with fixed observed surprise flags at the clean rate; each label moves to a
        // uniform other class with probability eps, a moved row is surprising at the flipped
        // rate. The excess sum over classes of (surprising - labelled x clean rate) has the
        // mean and variance `sums` states.
        let null = seven();
        let (n, eps, k) = (2_100usize, 0.05, 7usize);
        let (rate, _) = null.sums(eps, n as f64);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let labels: Vec<usize> = (0..n).map(|i| i % k).collect();
        // Exactly 2 % of each class observed surprising.
        let flags: Vec<bool> = (0..n).map(|i| (i / k) % 50 == 0).collect();
        let draws = 4_000;
        let excess: Vec<f64> = (0..draws)
            .map(|_| {
                let mut surprising = vec![0f64; k];
                let mut labelled = vec![0f64; k];
                for (&y, &x) in labels.iter().zip(&flags) {
                    if rng.random::<f64>() < eps {
                        let to = (y + rng.random_range(1..k)) % k;
                        labelled[to] += 1.0;
                        surprising[to] += f64::from(u8::from(rng.random::<f64>() < 0.4));
                    } else {
                        labelled[y] += 1.0;
                        surprising[y] += f64::from(u8::from(x));
                    }
                }
                (0..k).map(|c| surprising[c] - 0.02 * labelled[c]).sum()
            })
            .collect();
        let mean = excess.iter().sum::<f64>() / draws as f64;
        let var = excess.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / (draws - 1) as f64;
        // Standard errors of the simulated mean and variance: about 0.1 and 3 %.
        assert!((mean - rate.mean).abs() < 0.5, "{mean} vs {}", rate.mean);
        assert!(
            (var / rate.alt_var - 1.0).abs() < 0.1,
            "{var} vs {}",
            rate.alt_var
        );
    }

    #[test]
    fn power_rises_with_the_share_and_the_detectable_share_falls_with_rows() {
        let null = seven();
        let (deny, level) = (0.03, 0.001);
        let curve = |eps| null.power_at(eps, 2_100.0, deny, level);
        assert_eq!(curve(0.0), 0.0);
        let powers: Vec<f64> = [0.01, 0.02, 0.04, 0.08].iter().map(|&e| curve(e)).collect();
        assert!(powers.windows(2).all(|w| w[0] <= w[1]), "{powers:?}");
        assert!(powers[3] > 0.99, "{powers:?}");
        let at = |judged| ClassFlipNull { judged, ..seven() }.detectable(deny, level, 0.8);
        let (small, large) = (at(400).unwrap(), at(5_000).unwrap());
        assert!(small > large && large > 0.0, "{small} {large}");
    }
}
