//! The likelihood-ratio test of label flipping behind `poison-label-inconsistency`.
//!
//! **Model.** Each labelled row `i` carries the reference model's calibrated class
//! probabilities `q_i` (out-of-fold calibration, [`super::label`]). Under the null the labels
//! follow `q_i` up to a *label shift*: the class prior may move by a bounded reweighting
//! `w` (`P(y | x) ∝ w_y q_iy`, the prior-shift correction of Saerens, Latinne & Decaestecker
//! 2002, *Neural Computation* 14(1)), bounded by the natural reweighting the gate tolerates
//! (DESIGN §5: up to 1.2) widened by the sampling error of the pinned prior. Under the
//! alternative a share `ε` of labels was flipped:
//!
//! - **random**: `P(y) = (1 − ε) q_y + ε (1 − q_y) / (K − 1)` (Frénay & Verleysen 2014,
//!   *IEEE TNNLS* 25(5), the noisy-completely-at-random model);
//! - **directed** `s → t`: a share `ε` of rows of class `s` relabelled `t`: `P(t) = q_t + ε
//!   q_s`, `P(s) = (1 − ε) q_s` (noisy at random, one transition).
//!
//! Both the prior's movement and the lower probability of the flipped labels enter one
//! likelihood, so two weak signals add up: on a weak model, 20 % random flips move the prior
//! toward uniform *and* put labels where `q` is lower, and neither alone is conclusive.
//!
//! **Test.** `LR = 2 (max_{w, ε} ℓ − max_{w, ε = 0} ℓ)`; with `ε ≥ 0` on the boundary of the
//! null, its null distribution is the chi-bar-square `½ χ²₀ + ½ χ²₁` (Self & Liang 1987, JASA
//! 82(398)), so `p = ½ P(χ²₁ > LR)`. Several alternatives are Bonferroni-combined. `ε̂` is
//! the maximum-likelihood flipped share of all labels, with a profile-likelihood 95 %
//! interval (`LR` drop of 3.84, `w` held at its fitted value).

use statrs::distribution::{ChiSquared, ContinuousCDF};

/// Probabilities are floored here: a label the model finds impossible is very unlikely, not
/// infinitely so (and a floor keeps one row from deciding the test).
pub(crate) const Q_FLOOR: f64 = 1e-4;
/// Largest flipped share considered.
const MAX_EPS: f64 = 0.5;

/// Which flips the alternative allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alternative {
    /// Any label flipped to a uniformly chosen other class.
    Random,
    /// Labels of class `from` relabelled `to`.
    Directed {
        /// Source class.
        from: usize,
        /// Target class.
        to: usize,
    },
}

/// The outcome of [`test`].
#[derive(Debug, Clone)]
pub struct LrResult {
    /// The alternative with the largest likelihood ratio.
    pub alternative: Alternative,
    /// Its likelihood-ratio statistic.
    pub lr: f64,
    /// Bonferroni-adjusted chi-bar-square p-value over every alternative tried.
    pub p_value: f64,
    /// ML estimate of the share of all labels that were flipped.
    pub epsilon: f64,
    /// 95 % profile-likelihood interval of `epsilon`.
    pub ci: (f64, f64),
    /// Alternatives tried.
    pub tried: usize,
    /// The prior weights of the null's fit (the label shift it absorbed).
    pub null_weights: Vec<f64>,
}

/// Rows and their probabilities, `probs[i * k + c]`.
#[derive(Debug, Clone, Copy)]
pub struct Data<'a> {
    /// Calibrated class probabilities, row-major.
    pub probs: &'a [f32],
    /// Given class per row.
    pub labels: &'a [u16],
    /// Classes.
    pub k: usize,
}

impl Data<'_> {
    fn n(&self) -> usize {
        self.labels.len()
    }

    /// Log-likelihood at prior weights `w` and flip share `eps` (of the source class for a
    /// directed alternative).
    fn loglik(&self, w: &[f64], eps: f64, alt: Alternative) -> f64 {
        let k = self.k;
        let mut total = 0.0;
        let mut q = vec![0f64; k];
        for (i, &y) in self.labels.iter().enumerate() {
            let row = &self.probs[i * k..(i + 1) * k];
            let mut z = 0.0;
            for c in 0..k {
                q[c] = w[c] * f64::from(row[c]).max(Q_FLOOR);
                z += q[c];
            }
            let y = usize::from(y);
            let qy = q[y] / z;
            let p = match alt {
                Alternative::Random => (1.0 - eps) * qy + eps * (1.0 - qy) / (k as f64 - 1.0),
                Alternative::Directed { from, to } => {
                    if y == to {
                        qy + eps * q[from] / z
                    } else if y == from {
                        (1.0 - eps) * qy
                    } else {
                        qy
                    }
                }
            };
            total += p.max(1e-300).ln();
        }
        total
    }

    /// Share of all labels flipped at `eps` under `alt` (for a directed alternative, `eps`
    /// times the mean probability of the source class).
    fn flipped_share(&self, w: &[f64], eps: f64, alt: Alternative) -> f64 {
        match alt {
            Alternative::Random => eps,
            Alternative::Directed { from, .. } => {
                let k = self.k;
                let mut s = 0.0;
                for i in 0..self.n() {
                    let row = &self.probs[i * k..(i + 1) * k];
                    let z: f64 = (0..k).map(|c| w[c] * f64::from(row[c]).max(Q_FLOOR)).sum();
                    s += w[from] * f64::from(row[from]).max(Q_FLOOR) / z;
                }
                eps * s / self.n().max(1) as f64
            }
        }
    }
}

/// Golden-section search for the maximum of a unimodal `f` on `[lo, hi]` (Kiefer 1953).
pub(crate) fn golden(lo: f64, hi: f64, iters: usize, f: impl Fn(f64) -> f64) -> (f64, f64) {
    const R: f64 = 0.618_033_988_749_895;
    let (mut a, mut b) = (lo, hi);
    let mut c = b - R * (b - a);
    let mut d = a + R * (b - a);
    let (mut fc, mut fd) = (f(c), f(d));
    for _ in 0..iters {
        if fc >= fd {
            b = d;
            d = c;
            fd = fc;
            c = b - R * (b - a);
            fc = f(c);
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + R * (b - a);
            fd = f(d);
        }
    }
    // The bounds themselves: the optimum of a boundary-constrained fit is often on them.
    let mut best = if fc >= fd { (c, fc) } else { (d, fd) };
    for x in [lo, hi] {
        let fx = f(x);
        if fx > best.1 {
            best = (x, fx);
        }
    }
    best
}

/// Maximises the log-likelihood over the prior weights (class 0 fixed at 1, the others in
/// `[1 / bound_c, bound_c]`, searched on the log scale) and, unless `fixed_eps` is given,
/// the flip share. Coordinate ascent, a few rounds.
fn fit(
    d: &Data<'_>,
    bounds: &[f64],
    alt: Alternative,
    fixed_eps: Option<f64>,
) -> (Vec<f64>, f64, f64) {
    ascend(bounds, fixed_eps, 1e-6, |w, eps| d.loglik(w, eps, alt))
}

/// Coordinate ascent of `loglik(w, eps)` over prior weights `w` (class 0 fixed at 1, class
/// `c` in `[1 / bounds[c], bounds[c]]` on the log scale) and, unless `fixed_eps` is given,
/// the flip share in `[0, MAX_EPS]`, until a round gains less than `tolerance`: the weights,
/// the share and the log-likelihood.
pub(crate) fn ascend(
    bounds: &[f64],
    fixed_eps: Option<f64>,
    tolerance: f64,
    loglik: impl Fn(&[f64], f64) -> f64,
) -> (Vec<f64>, f64, f64) {
    let k = bounds.len();
    let mut w = vec![1.0; k];
    let mut eps = fixed_eps.unwrap_or(0.0);
    let mut best = loglik(&w, eps);
    for _ in 0..4 {
        let before = best;
        for c in 1..k {
            let lb = bounds[c].max(1.0).ln();
            if lb <= 0.0 {
                continue;
            }
            let (x, v) = golden(-lb, lb, 24, |x| {
                let mut ww = w.clone();
                ww[c] = x.exp();
                loglik(&ww, eps)
            });
            if v > best {
                w[c] = x.exp();
                best = v;
            }
        }
        if fixed_eps.is_none() {
            let (x, v) = golden(0.0, MAX_EPS, 30, |e| loglik(&w, e));
            if v > best {
                eps = x;
                best = v;
            }
        }
        if best - before < tolerance {
            break;
        }
    }
    (w, eps, best)
}

/// Runs the test against every alternative in `alts` and keeps the strongest.
///
/// `bounds[c]` bounds the prior reweighting of class `c` (relative to class 0). `None` with
/// fewer than two classes or no rows.
#[must_use]
pub fn test(d: &Data<'_>, bounds: &[f64], alts: &[Alternative]) -> Option<LrResult> {
    if d.k < 2 || d.n() == 0 || alts.is_empty() || bounds.len() != d.k {
        return None;
    }
    let (w0, _, l0) = fit(d, bounds, Alternative::Random, Some(0.0));
    let chi1 = ChiSquared::new(1.0).ok()?;
    let mut best: Option<(Alternative, f64, Vec<f64>, f64, f64)> = None;
    for &alt in alts {
        let (w, eps, l1) = fit(d, bounds, alt, None);
        // The null's fit is nested in every alternative's: never below it.
        let l1 = l1.max(l0);
        let lr = (2.0 * (l1 - l0)).max(0.0);
        if best.as_ref().is_none_or(|b| lr > b.1) {
            best = Some((alt, lr, if l1 > l0 { w } else { w0.clone() }, eps, l1));
        }
    }
    let (alt, lr, w, eps, l1) = best?;
    let p = (0.5 * chi1.sf(lr) * alts.len() as f64).min(1.0);
    let p = if lr <= 0.0 { 1.0 } else { p };
    // Profile interval with `w` held: where the log-likelihood drops by 3.84 / 2.
    let drop = |e: f64| l1 - d.loglik(&w, e, alt) - 1.920_729;
    let bisect = |mut a: f64, mut b: f64| {
        // `drop(a) <= 0 < drop(b)` or the reverse; 40 halvings.
        let fa = drop(a) <= 0.0;
        for _ in 0..40 {
            let m = 0.5 * (a + b);
            if (drop(m) <= 0.0) == fa {
                a = m;
            } else {
                b = m;
            }
        }
        0.5 * (a + b)
    };
    let lo = if drop(0.0) <= 0.0 {
        0.0
    } else {
        bisect(eps, 0.0)
    };
    let hi = if drop(MAX_EPS) <= 0.0 {
        MAX_EPS
    } else {
        bisect(eps, MAX_EPS)
    };
    Some(LrResult {
        alternative: alt,
        lr,
        p_value: p,
        epsilon: d.flipped_share(&w, eps, alt),
        ci: (d.flipped_share(&w, lo, alt), d.flipped_share(&w, hi, alt)),
        tried: alts.len(),
        null_weights: w0.clone(),
    })
}

/// Temperature `T` that maximises the log-likelihood of `softmax(ln p / T)` on out-of-fold
/// probabilities (temperature scaling: Guo, Pleiss, Sun & Weinberger 2017, ICML), searched
/// on `[0.25, 8]` on the log scale. Boosted trees fitted on few rows are overconfident out of
/// sample; without this, clean labels look flipped.
#[must_use]
pub fn fit_temperature(probs: &[f32], labels: &[u16], k: usize) -> f64 {
    if labels.is_empty() || k < 2 {
        return 1.0;
    }
    let ll = |t: f64| {
        let mut total = 0.0;
        let mut row_ln = vec![0f64; k];
        for (i, &y) in labels.iter().enumerate() {
            let row = &probs[i * k..(i + 1) * k];
            let mut mx = f64::NEG_INFINITY;
            for c in 0..k {
                row_ln[c] = f64::from(row[c]).max(1e-12).ln() / t;
                mx = mx.max(row_ln[c]);
            }
            let z: f64 = row_ln.iter().map(|v| (v - mx).exp()).sum();
            total += row_ln[usize::from(y)] - mx - z.ln();
        }
        total
    };
    let (x, _) = golden(0.25f64.ln(), 8f64.ln(), 40, |x| ll(x.exp()));
    x.exp()
}

/// Applies temperature `t` to one row of probabilities in place.
pub fn apply_temperature(row: &mut [f32], t: f64) {
    if (t - 1.0).abs() < 1e-12 {
        return;
    }
    let mut mx = f64::NEG_INFINITY;
    let lns: Vec<f64> = row
        .iter()
        .map(|&p| {
            let v = f64::from(p).max(1e-12).ln() / t;
            mx = mx.max(v);
            v
        })
        .collect();
    let z: f64 = lns.iter().map(|v| (v - mx).exp()).sum();
    for (p, v) in row.iter_mut().zip(lns) {
        *p = ((v - mx).exp() / z) as f32;
    }
}

/// Tests of the labels *conditional on the features*: the count of rows whose label has a
/// probability below `cut`, and the summed surprise `−ln q_y`, each against its expectation
/// and variance given every row's probabilities (reweighted by the null's prior weights `w`).
///
/// Conditioning on `x` makes the tests blind to covariate shift by construction: rows that
/// moved into harder or easier regions change the expectation, not the verdict (a
/// Lindeberg–Feller normal approximation for sums of independent, non-identical terms).
/// Returns `(rate_z, surprise_z, excess_surprising_rows)`.
#[must_use]
pub fn conditional_z(d: &Data<'_>, w: &[f64], cut: f64) -> (f64, f64, f64) {
    let k = d.k;
    let (mut o1, mut e1, mut v1) = (0f64, 0f64, 0f64);
    let (mut o2, mut e2, mut v2) = (0f64, 0f64, 0f64);
    let mut q = vec![0f64; k];
    for (i, &y) in d.labels.iter().enumerate() {
        let row = &d.probs[i * k..(i + 1) * k];
        let mut z = 0.0;
        for c in 0..k {
            q[c] = w[c] * f64::from(row[c]).max(Q_FLOOR);
            z += q[c];
        }
        for v in &mut q {
            *v /= z;
        }
        let y = usize::from(y);
        let below: f64 = q.iter().filter(|&&p| p < cut).sum();
        o1 += f64::from(u8::from(q[y] < cut));
        e1 += below;
        v1 += below * (1.0 - below);
        let h: f64 = q.iter().map(|&p| -p * p.ln()).sum();
        let h2: f64 = q.iter().map(|&p| p * p.ln() * p.ln()).sum();
        o2 -= q[y].ln();
        e2 += h;
        v2 += (h2 - h * h).max(0.0);
    }
    let z1 = (o1 - e1) / v1.max(1e-12).sqrt();
    let z2 = (o2 - e2) / v2.max(1e-12).sqrt();
    (z1, z2, o1 - e1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Rows with a weak model: q(1 | x) uniform in [0.25, 0.55]; labels drawn from it, then
    /// a share `flip` flipped at random.
    fn draw(n: usize, flip: f64, seed: u64) -> (Vec<f32>, Vec<u16>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut probs = Vec::with_capacity(2 * n);
        let mut labels = Vec::with_capacity(n);
        for _ in 0..n {
            let q1: f64 = rng.random_range(0.25..0.55);
            probs.extend([(1.0 - q1) as f32, q1 as f32]);
            let mut y = u16::from(rng.random::<f64>() < q1);
            if rng.random::<f64>() < flip {
                y = 1 - y;
            }
            labels.push(y);
        }
        (probs, labels)
    }

    #[test]
    fn clean_labels_are_not_called_flipped_and_flips_are_found() {
        let bounds = [1.0, 1.2];
        let alts = [
            Alternative::Random,
            Alternative::Directed { from: 0, to: 1 },
            Alternative::Directed { from: 1, to: 0 },
        ];
        let mut false_alarms = 0;
        for seed in 0..200 {
            let (p, y) = draw(300, 0.0, seed);
            let r = test(
                &Data {
                    probs: &p,
                    labels: &y,
                    k: 2,
                },
                &bounds,
                &alts,
            )
            .unwrap();
            assert!((0.0..=1.0).contains(&r.p_value));
            false_alarms += usize::from(r.p_value < 0.01);
        }
        // At most about 1 % at the 0.01 level (binomial slack: 6 of 200).
        assert!(
            false_alarms <= 6,
            "{false_alarms} of 200 clean batches rejected"
        );
        let mut found = 0;
        for seed in 0..50 {
            let (p, y) = draw(3000, 0.2, 1000 + seed);
            let r = test(
                &Data {
                    probs: &p,
                    labels: &y,
                    k: 2,
                },
                &bounds,
                &alts,
            )
            .unwrap();
            found += usize::from(r.p_value < 0.01);
            assert!(r.ci.0 <= r.epsilon && r.epsilon <= r.ci.1);
        }
        assert!(found >= 45, "{found} of 50 flipped batches rejected");
        // The estimate is near the truth on a large batch, and the interval covers it.
        let (p, y) = draw(20_000, 0.2, 7);
        let r = test(
            &Data {
                probs: &p,
                labels: &y,
                k: 2,
            },
            &bounds,
            &alts,
        )
        .unwrap();
        assert!((r.epsilon - 0.2).abs() < 0.05, "{r:?}");
        assert!(r.ci.0 < 0.2 && 0.2 < r.ci.1, "{r:?}");
    }

    #[test]
    fn a_tolerated_prior_shift_is_not_a_flip() {
        // Reweight class 1 by 1.15 (inside the 1.2 tolerance): labels from the shifted prior.
        let mut false_alarms = 0;
        for seed in 0..100 {
            let mut rng = ChaCha8Rng::seed_from_u64(50_000 + seed);
            let (mut probs, mut labels) = (Vec::new(), Vec::new());
            for _ in 0..2000 {
                let q1: f64 = rng.random_range(0.1..0.6);
                let shifted = 1.15 * q1 / (1.15 * q1 + 1.0 - q1);
                probs.extend([(1.0 - q1) as f32, q1 as f32]);
                labels.push(u16::from(rng.random::<f64>() < shifted));
            }
            let r = test(
                &Data {
                    probs: &probs,
                    labels: &labels,
                    k: 2,
                },
                &[1.0, 1.2],
                &[Alternative::Random],
            )
            .unwrap();
            false_alarms += usize::from(r.p_value < 0.01);
        }
        assert!(false_alarms <= 4, "{false_alarms} of 100");
    }

    #[test]
    fn temperature_undoes_overconfidence() {
        // True q uniform in [0.3, 0.7]; the model reports q sharpened by temperature 0.5.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (mut probs, mut labels) = (Vec::new(), Vec::new());
        for _ in 0..20_000 {
            let q1: f64 = rng.random_range(0.3..0.7);
            let mut row = [(1.0 - q1) as f32, q1 as f32];
            apply_temperature(&mut row, 0.5);
            probs.extend(row);
            labels.push(u16::from(rng.random::<f64>() < q1));
        }
        let t = fit_temperature(&probs, &labels, 2);
        assert!((t - 2.0).abs() < 0.25, "temperature {t}");
    }
}
