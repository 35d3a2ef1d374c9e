//! `poison-label-inconsistency`: labels that disagree with a reference model of
//! P(label | features) fitted on the trusted data, beyond the trusted data's own rate.
//!
//! **What it detects.** Random label flips, flips of the rows the model is most sure of,
//! one-directional flips inside a region, and label swaps chosen to keep the class counts and
//! every column's distribution unchanged: all of them put labels where the features say the
//! class is unlikely, which no per-column statistic can see.
//!
//! **How.** At pin time a boosted ensemble ([`super::gbdt`]) is fitted on the trusted rows and
//! calibrated out of fold (5 folds; Hastie, Tibshirani & Friedman 2009, §7.10): every trusted
//! row is scored by a model that did not see it, which gives the rate `r0` at which *clean*
//! rows look surprising (`P(label | x) < cut`) and the rate `r1` at which a randomly flipped
//! label does. The cut is the out-of-fold quantile that maximises `(r1 − r0) / sqrt(r0 (1 −
//! r0))`, the power of the rate test for a small flip share. This is the confident-learning
//! idea of comparing given labels with out-of-sample predicted probabilities (Northcutt, Jiang
//! & Chuang 2021), turned into a calibrated batch test: `check` counts surprising rows and
//! compares their share with `r0` (two-sample z-test with both sampling variances); the
//! effect is the estimated flipped share `(r − r0) / (r1 − r0)`.
//!
//! **Evidence.** The message names the most over-represented (predicted → given) class pair
//! and the feature region where surprising rows concentrate, so a targeted flip reads as
//! "class A relabelled B where income is in (52k, 60k]".
//!
//! **False positives.** A genuine change of the labelling process (a new annotation guideline)
//! or concept drift looks the same: the labels really do disagree with the trusted relation.
//! Re-pin the baseline once the change is confirmed legitimate.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::gbdt::{self, Forest, Params};
use super::{PoisonProfile, RowSelector, Rows, Scan};
use crate::baseline::Baseline;
use crate::detect::{Candidate, Effect};
use crate::finding::{Subject, num};
use crate::policy::Policy;
use crate::rows::{Encoded, Encoder, NO_CLASS};
use crate::stats::binned;

/// Most trusted rows the model is fitted on by default (a seeded sample beyond; the rows
/// left out calibrate it, see [`LabelModel::held_expected`]).
pub const DEFAULT_MODEL_ROWS: usize = 100_000;
/// Folds of the out-of-fold calibration.
const FOLDS: usize = 5;
/// Probabilities are clipped here before taking logs.
const P_FLOOR: f64 = 1e-6;

/// The pinned reference model and its out-of-fold calibration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelModel {
    /// The model.
    pub forest: Forest,
    /// Trusted rows scored out of fold.
    pub rows: u64,
    /// A row is surprising when the model gives its label a probability below this.
    pub cut: f64,
    /// Out-of-fold share of surprising trusted rows (`r0`).
    pub clean_rate: f64,
    /// Out-of-fold share of surprising rows after a random flip of their label (`r1`).
    pub flipped_rate: f64,
    /// Out-of-fold mean of `-ln P(label | x)`.
    pub mean_surprise: f64,
    /// Out-of-fold standard deviation of `-ln P(label | x)`.
    pub sd_surprise: f64,
    /// Out-of-fold accuracy of the most likely class.
    pub accuracy: f64,
    /// Out-of-fold surprising rows by (predicted, given) class, `predicted * classes + given`.
    pub transitions: Vec<u64>,
    /// Per class `c`: out-of-fold trusted rows labelled `c`.
    pub class_rows: Vec<u64>,
    /// Per class `c`: out-of-fold share of surprising rows among rows labelled `c`.
    pub class_clean_rate: Vec<f64>,
    /// Per class `c`: share of rows of other classes that would look surprising if
    /// relabelled `c` (how visible a flip *into* `c` is).
    pub class_flipped_rate: Vec<f64>,
    /// Per class `c`: out-of-fold mean of `-ln P(c | x)` over rows labelled `c`.
    pub class_mean_surprise: Vec<f64>,
    /// Per class `c`: its standard deviation.
    pub class_sd_surprise: Vec<f64>,
    /// Per class `c`: out-of-fold mean of `-ln P(c | x)` over rows of the other classes (the
    /// surprise of a flip into `c`).
    pub class_flipped_surprise: Vec<f64>,
    /// Per feature, the out-of-fold expected class counts by code (`code * classes + class`)
    /// over the scored trusted rows; with [`Self::oof_observed`] it recalibrates the model
    /// segment by segment.
    pub oof_expected: Vec<Vec<f64>>,
    /// Per feature, the observed class counts by code over the same rows.
    pub oof_observed: Vec<Vec<u64>>,
    /// Trusted labelled rows the model was *not* fitted on (those beyond the
    /// training sample), scored by the pinned model itself; 0 when every trusted
    /// row was in the sample.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub held_rows: u64,
    /// Per feature, the pinned model's expected class counts by code (`code * classes +
    /// class`) over the held-out trusted rows: what the model that `check` uses says about
    /// rows it never saw, so its bias on a segment is measured where it is used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_expected: Vec<Vec<f64>>,
    /// Per feature, the observed class counts by code over the same held-out rows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_observed: Vec<Vec<u64>>,
    /// Temperature that calibrates the model's probabilities out of fold (absent in
    /// baselines pinned before it was fitted: then 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
}

/// Least gap between a class's flipped and clean surprising rates for its rows to enter the
/// flipped-share estimate (below it, flips into the class are all but invisible).
const MIN_GAP: f64 = 0.05;

/// Labelled rows up to which the tree settings are chosen by out-of-fold log-loss.
const SMALL_ROWS: usize = 5_000;
/// Boosted stumps: an additive model, for small baselines.
const STUMPS: Params = Params {
    rounds: 150,
    depth: 1,
    learning_rate: 0.1,
    lambda: 5.0,
};
/// Depth-2 trees (pairwise interactions), for small baselines.
const PAIRS: Params = Params {
    rounds: 80,
    depth: 2,
    learning_rate: 0.1,
    lambda: 5.0,
};

/// Fits and calibrates the reference model on at most `model_rows` labelled rows (a seeded
/// sample; the others are held out and scored); `None` with too few labelled rows or classes.
#[must_use]
pub fn fit(encoder: &Encoder, rows: &Rows, seed: u64, model_rows: usize) -> Option<LabelModel> {
    let classes = encoder.classes.len();
    let mut idx: Vec<u32> = (0..rows.n as u32)
        .filter(|&i| rows.label[i as usize] != NO_CLASS)
        .collect();
    let mut per_class = vec![0usize; classes];
    for &i in &idx {
        per_class[usize::from(rows.label[i as usize])] += 1;
    }
    if idx.len() < 200 || per_class.iter().filter(|&&c| c >= 10).count() < 2 {
        return None;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6c61_6265_6c5f_6d6f);
    idx.shuffle(&mut rng);
    // Rows past the training sample are held out: the pinned model never sees them.
    let held: Vec<u32> = idx.split_off(model_rows.max(200).min(idx.len()));
    let n = idx.len();
    let cardinality: Vec<usize> = encoder
        .features
        .iter()
        .map(|f| f.code.cardinality())
        .collect();
    let categorical: Vec<bool> = encoder
        .features
        .iter()
        .map(|f| f.code.is_categorical())
        .collect();
    let take = |sel: &[u32]| -> (Vec<Vec<u8>>, Vec<u16>) {
        let codes = rows
            .codes
            .iter()
            .map(|col| sel.iter().map(|&i| col[i as usize]).collect())
            .collect();
        let y = sel.iter().map(|&i| rows.label[i as usize]).collect();
        (codes, y)
    };
    let fit_on = |sel: &[u32], params: Params| {
        let (codes, y) = take(sel);
        let refs: Vec<&[u8]> = codes.iter().map(Vec::as_slice).collect();
        gbdt::fit(&refs, &cardinality, &categorical, &y, classes, params)
    };
    let y: Vec<usize> = idx
        .iter()
        .map(|&i| usize::from(rows.label[i as usize]))
        .collect();
    // Out of fold: fold k holds the shuffled positions i with i % FOLDS == k.
    let oof_of = |params: Params| -> Vec<f32> {
        let parts: Vec<(Vec<usize>, Vec<f32>)> = (0..FOLDS)
            .into_par_iter()
            .map(|k| {
                let train: Vec<u32> = (0..n).filter(|i| i % FOLDS != k).map(|i| idx[i]).collect();
                let test_pos: Vec<usize> = (0..n).filter(|i| i % FOLDS == k).collect();
                let test: Vec<u32> = test_pos.iter().map(|&i| idx[i]).collect();
                let forest = fit_on(&train, params);
                let (codes, _) = take(&test);
                let refs: Vec<&[u8]> = codes.iter().map(Vec::as_slice).collect();
                (test_pos, forest.predict(&refs, test.len()))
            })
            .collect();
        let mut oof = vec![0f32; n * classes];
        for (pos, probs) in parts {
            for (r, &p) in pos.iter().enumerate() {
                oof[p * classes..(p + 1) * classes]
                    .copy_from_slice(&probs[r * classes..(r + 1) * classes]);
            }
        }
        oof
    };
    let log_loss = |oof: &[f32]| -> f64 {
        (0..n)
            .map(|i| -f64::from(oof[i * classes + y[i]]).max(P_FLOOR).ln())
            .sum::<f64>()
            / n as f64
    };
    // On small baselines the default trees (depth 5) overfit a few hundred rows: the
    // settings are chosen among three by out-of-fold log-loss, the additive model of boosted
    // stumps (Friedman, Hastie & Tibshirani 2000, Ann. Statist. 28(2), §4: boosting stumps
    // fits an additive logistic model) and depth-2 trees among them.
    let grid: &[Params] = if n <= SMALL_ROWS {
        &[Params::default(), STUMPS, PAIRS]
    } else {
        &[Params::default()]
    };
    let (params, oof) = grid
        .iter()
        .map(|&p| (p, oof_of(p)))
        .min_by(|a, b| log_loss(&a.1).total_cmp(&log_loss(&b.1)))
        .expect("the grid is not empty");
    let forest = fit_on(&idx, params);
    let (held_expected, held_observed) = held_out_tables(&forest, rows, &held, &cardinality);
    let p_true: Vec<f64> = (0..n).map(|i| f64::from(oof[i * classes + y[i]])).collect();
    let surprise: Vec<f64> = p_true.iter().map(|p| -p.max(P_FLOOR).ln()).collect();
    let nf = n as f64;
    let mean_surprise = surprise.iter().sum::<f64>() / nf;
    let sd_surprise = (surprise
        .iter()
        .map(|s| (s - mean_surprise).powi(2))
        .sum::<f64>()
        / (nf - 1.0))
        .sqrt();
    let accuracy = (0..n)
        .filter(|&i| argmax(&oof[i * classes..(i + 1) * classes]) == y[i])
        .count() as f64
        / nf;
    let mut sorted = p_true.clone();
    sorted.sort_by(f64::total_cmp);
    // Candidate cuts: out-of-fold quantiles of P(given label | x).
    let mut best: Option<(f64, f64, f64, f64)> = None; // (power, cut, r0, r1)
    for level in [0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3] {
        let cut = sorted[((nf * level) as usize).min(n - 1)];
        let r0 = p_true.iter().filter(|&&p| p < cut).count() as f64 / nf;
        if r0 <= 0.0 || r0 >= 1.0 {
            continue;
        }
        let r1 = (0..n)
            .map(|i| {
                let row = &oof[i * classes..(i + 1) * classes];
                let below = (0..classes)
                    .filter(|&c| c != y[i] && f64::from(row[c]) < cut)
                    .count();
                below as f64 / (classes - 1) as f64
            })
            .sum::<f64>()
            / nf;
        let power = (r1 - r0) / (r0 * (1.0 - r0)).sqrt();
        if best.is_none_or(|b| power > b.0) {
            best = Some((power, cut, r0, r1));
        }
    }
    let (_, cut, clean_rate, flipped_rate) = best?;
    let mut transitions = vec![0u64; classes * classes];
    let mut class_rows = vec![0u64; classes];
    let mut class_hits = vec![0u64; classes];
    let mut into_rows = vec![0u64; classes];
    let mut into_hits = vec![0u64; classes];
    for i in 0..n {
        class_rows[y[i]] += 1;
        if p_true[i] < cut {
            let pred = argmax(&oof[i * classes..(i + 1) * classes]);
            transitions[pred * classes + y[i]] += 1;
            class_hits[y[i]] += 1;
        }
        for c in (0..classes).filter(|&c| c != y[i]) {
            into_rows[c] += 1;
            into_hits[c] += u64::from(f64::from(oof[i * classes + c]) < cut);
        }
    }
    let share = |a: &[u64], b: &[u64]| -> Vec<f64> {
        a.iter()
            .zip(b)
            .map(|(&h, &r)| if r > 0 { h as f64 / r as f64 } else { 0.0 })
            .collect()
    };
    let class_clean_rate = share(&class_hits, &class_rows);
    let mut s1 = vec![0f64; classes];
    let mut s2 = vec![0f64; classes];
    let mut into = vec![0f64; classes];
    for i in 0..n {
        let s = surprise[i];
        s1[y[i]] += s;
        s2[y[i]] += s * s;
        for c in (0..classes).filter(|&c| c != y[i]) {
            into[c] -= f64::from(oof[i * classes + c]).max(P_FLOOR).ln();
        }
    }
    let class_mean_surprise: Vec<f64> = (0..classes)
        .map(|c| s1[c] / (class_rows[c].max(1) as f64))
        .collect();
    let class_sd_surprise: Vec<f64> = (0..classes)
        .map(|c| {
            let m = class_rows[c] as f64;
            if m < 2.0 {
                0.0
            } else {
                ((s2[c] - s1[c] * s1[c] / m) / (m - 1.0)).max(0.0).sqrt()
            }
        })
        .collect();
    let class_flipped_surprise: Vec<f64> = (0..classes)
        .map(|c| into[c] / (into_rows[c].max(1) as f64))
        .collect();
    let (mut oof_expected, mut oof_observed) = empty_tables(&cardinality, classes);
    tabulate(
        (&mut oof_expected, &mut oof_observed),
        n,
        |j, pos| rows.codes[j][idx[pos] as usize],
        |pos| y[pos],
        &oof,
        classes,
    );
    let class_flipped_rate = share(&into_hits, &into_rows);
    let y16: Vec<u16> = y.iter().map(|&c| c as u16).collect();
    let temperature = super::flip_lr::fit_temperature(&oof, &y16, classes);
    Some(LabelModel {
        forest,
        rows: n as u64,
        cut,
        clean_rate,
        flipped_rate,
        mean_surprise,
        sd_surprise,
        accuracy,
        transitions,
        class_rows,
        class_clean_rate,
        class_flipped_rate,
        class_mean_surprise,
        class_sd_surprise,
        class_flipped_surprise,
        oof_expected,
        oof_observed,
        held_rows: held.len() as u64,
        held_expected,
        held_observed,
        temperature: Some(crate::finding::tidy(temperature)),
    })
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Per feature, expected and observed class counts by code (`code * classes + class`).
type ClassTables = (Vec<Vec<f64>>, Vec<Vec<u64>>);

/// Zeroed per-feature class tables.
fn empty_tables(cardinality: &[usize], classes: usize) -> ClassTables {
    (
        cardinality
            .iter()
            .map(|&c| vec![0.0; c * classes])
            .collect(),
        cardinality.iter().map(|&c| vec![0; c * classes]).collect(),
    )
}

/// Adds `n` scored rows to per-feature class tables, feature by feature and row by row in
/// order (so the sums are the same every run): row `r` has code `code(j, r)` on feature `j`,
/// class `class(r)` and probabilities `probs[r * classes..(r + 1) * classes]`.
fn tabulate(
    (exp, obs): (&mut [Vec<f64>], &mut [Vec<u64>]),
    n: usize,
    code: impl Fn(usize, usize) -> u8,
    class: impl Fn(usize) -> usize,
    probs: &[f32],
    classes: usize,
) {
    for (j, (exp, obs)) in exp.iter_mut().zip(obs.iter_mut()).enumerate() {
        for r in 0..n {
            let base = usize::from(code(j, r)) * classes;
            obs[base + class(r)] += 1;
            for c in 0..classes {
                exp[base + c] += f64::from(probs[r * classes + c]);
            }
        }
    }
}

/// Rows scored at a time when the held-out rows are tabulated.
const HELD_CHUNK: usize = 1 << 16;

/// Per feature, the expected (the pinned model's probabilities) and observed class counts by
/// code over the held-out rows `held`, sorted into row order so the sums, and so the
/// baseline, do not depend on the shuffle; both empty without held-out rows.
///
/// The segment test compares a batch's class mix in a segment with the model's expectation
/// for the batch's rows, recalibrated by the trusted rows' observed-to-expected ratio in the
/// same segment. That ratio must be measured with the model `check` uses on rows it did not
/// fit: on its own training rows it hides the noise it learnt, and out-of-fold models learn
/// other noise. Held-out residuals are the calibration-by-held-out-data of Zadrozny & Elkan
/// (2002, KDD), per segment.
fn held_out_tables(
    forest: &Forest,
    rows: &Rows,
    held: &[u32],
    cardinality: &[usize],
) -> ClassTables {
    if held.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let classes = forest.classes;
    let mut sorted = held.to_vec();
    sorted.sort_unstable();
    // Chunks are scored in parallel and added up in chunk order: the same sums every run.
    let parts: Vec<ClassTables> = sorted
        .par_chunks(HELD_CHUNK)
        .map(|chunk| {
            let codes: Vec<Vec<u8>> = rows
                .codes
                .iter()
                .map(|col| chunk.iter().map(|&i| col[i as usize]).collect())
                .collect();
            let refs: Vec<&[u8]> = codes.iter().map(Vec::as_slice).collect();
            let probs = forest.predict(&refs, chunk.len());
            let (mut exp, mut obs) = empty_tables(cardinality, classes);
            tabulate(
                (&mut exp, &mut obs),
                chunk.len(),
                |j, r| codes[j][r],
                |r| usize::from(rows.label[chunk[r] as usize]),
                &probs,
                classes,
            );
            (exp, obs)
        })
        .collect();
    let (mut exp, mut obs) = empty_tables(cardinality, classes);
    for (e, o) in parts {
        for (a, b) in exp.iter_mut().zip(e) {
            a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        }
        for (a, b) in obs.iter_mut().zip(o) {
            a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        }
    }
    (exp, obs)
}

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (c, &p) in row.iter().enumerate() {
        if p > row[best] {
            best = c;
        }
    }
    best
}

/// Scores one encoded slice: the probability of each row's label, the most likely class, and
/// per feature the model's expected class counts by code (`code * classes + class`) over the
/// labelled rows.
#[must_use]
pub fn score(
    m: &LabelModel,
    e: &Encoded,
    cardinality: &[usize],
) -> (Vec<f32>, Vec<u16>, Vec<Vec<f64>>, Vec<f32>) {
    let classes = m.forest.classes;
    let refs: Vec<&[u8]> = e.codes.iter().map(Vec::as_slice).collect();
    let probs = m.forest.predict(&refs, e.n);
    let mut expected: Vec<Vec<f64>> = cardinality
        .iter()
        .map(|&c| vec![0.0; c * classes])
        .collect();
    for (t, codes) in expected.iter_mut().zip(&e.codes) {
        for (i, &code) in codes.iter().enumerate() {
            if e.label[i] == NO_CLASS {
                continue;
            }
            let base = usize::from(code) * classes;
            for c in 0..classes {
                t[base + c] += f64::from(probs[i * classes + c]);
            }
        }
    }
    let mut p = Vec::with_capacity(e.n);
    let mut pred = Vec::with_capacity(e.n);
    for i in 0..e.n {
        let row = &probs[i * classes..(i + 1) * classes];
        let y = e.label[i];
        p.push(if y == NO_CLASS {
            f32::NAN
        } else {
            row[usize::from(y)]
        });
        pred.push(argmax(row) as u16);
    }
    (p, pred, expected, probs)
}

/// Whether row `i` of a scan carries a surprising label.
#[must_use]
pub fn is_surprising(m: &LabelModel, scan: &Scan, i: usize) -> bool {
    let p = f64::from(scan.p_label[i]);
    !p.is_nan() && p < m.cut && scan.support.get(i).copied().unwrap_or(true)
}

/// The class-prior reweighting the label test treats as natural (DESIGN §5: "a class prior
/// reweighted by up to 1.2"); the pinned prior's own sampling error widens it.
const PRIOR_TOLERANCE: f64 = 1.2;
/// Most classes for which the likelihood-ratio test fits the prior reweighting.
pub const MAX_LR_CLASSES: usize = 5;

/// The likelihood-ratio test of flips ([`super::flip_lr`]) on the sampled rows of a scan.
/// `transitions` are the batch's surprising rows by (predicted, given), which rank the
/// directed alternatives when there are more than two classes.
fn lr_test(m: &LabelModel, scan: &Scan, transitions: &[u64]) -> Option<super::flip_lr::LrResult> {
    use super::flip_lr::{Alternative, Data, test};
    let k = m.forest.classes;
    if !(2..=MAX_LR_CLASSES).contains(&k) || scan.lr_labels.len() < 30 {
        return None;
    }
    let x0 = m.class_rows[0].max(1) as f64;
    let bounds: Vec<f64> = (0..k)
        .map(|c| {
            let xc = m.class_rows[c].max(1) as f64;
            PRIOR_TOLERANCE * (1.96 * (1.0 / xc + 1.0 / x0).sqrt()).exp()
        })
        .collect();
    let mut alts = vec![Alternative::Random];
    if k == 2 {
        alts.push(Alternative::Directed { from: 0, to: 1 });
        alts.push(Alternative::Directed { from: 1, to: 0 });
    } else {
        // The four (source -> target) pairs with the most surprising rows beyond the trusted
        // share; all of them count toward the Bonferroni factor.
        let mut pairs: Vec<(u64, usize, usize)> = (0..k)
            .flat_map(|s| (0..k).filter(move |&t| t != s).map(move |t| (s, t)))
            .map(|(s, t)| (transitions[s * k + t], s, t))
            .collect();
        pairs.sort_by(|a, b| b.0.cmp(&a.0).then((a.1, a.2).cmp(&(b.1, b.2))));
        alts.extend(
            pairs
                .iter()
                .take(4)
                .map(|&(_, from, to)| Alternative::Directed { from, to }),
        );
    }
    test(
        &Data {
            probs: &scan.lr_probs,
            labels: &scan.lr_labels,
            k,
        },
        &bounds,
        &alts,
    )
}

pub(crate) use crate::stats::proportion::normal_upper_tail as normal_sf;

/// The label-consistency candidate of a scanned batch.
#[must_use]
pub fn candidates(
    baseline: &Baseline,
    profile: &PoisonProfile,
    m: &LabelModel,
    scan: &Scan,
    policy: &Policy,
) -> Vec<(Candidate, Option<RowSelector>)> {
    let rule = &policy.checks.poison_label_inconsistency;
    let classes = m.forest.classes;
    let mut n = 0u64;
    let mut k = 0u64;
    let mut surprise = 0f64;
    let mut correct = 0u64;
    let mut transitions = vec![0u64; classes * classes];
    let mut class_n = vec![0u64; classes];
    let mut class_k = vec![0u64; classes];
    let mut class_s = vec![0f64; classes];
    let mut outside = 0u64;
    for i in 0..scan.rows.n {
        let p = f64::from(scan.p_label[i]);
        if p.is_nan() {
            continue;
        }
        if !scan.support.get(i).copied().unwrap_or(true) {
            outside += 1;
            continue;
        }
        n += 1;
        let s = -p.max(P_FLOOR).ln();
        surprise += s;
        class_s[usize::from(scan.rows.label[i])] += s;
        let y = usize::from(scan.rows.label[i]);
        let pred = usize::from(scan.predicted[i]);
        correct += u64::from(pred == y);
        class_n[y] += 1;
        if p < m.cut {
            k += 1;
            class_k[y] += 1;
            transitions[pred * classes + y] += 1;
        }
    }
    if n < 30 {
        return Vec::new();
    }
    let (nf, mf) = (n as f64, m.rows as f64);
    let r0 = m.clean_rate;
    let r = k as f64 / nf;
    // Stratified by given label: a flip into a class is judged against that class's own
    // clean rate, so a changed class balance does not read as flipping, and flips into the
    // class where they are visible are not diluted by the others. The variance carries the
    // trusted estimate's sampling error too (two-sample z-test).
    //
    // A second, continuous statistic uses every row's surprise `-ln P(label | x)`: its excess
    // over each class's trusted mean. It has more power when the model is weak and few flipped
    // labels pass the cut. The p-value is the Bonferroni combination of the two.
    //
    // Each excess divided by how visible a flip into its class is estimates the flips into
    // that class; classes where flips are nearly invisible are left out, and the sum is
    // scaled by the share of random flips that land in the visible classes, so the effect
    // reads as "the random-flip rate that explains what is visible".
    let (mut excess, mut var, mut rate_flips, mut rate_visible) = (0f64, 0f64, 0f64, 0f64);
    let (mut s_excess, mut s_var, mut mean_flips, mut mean_visible) = (0f64, 0f64, 0f64, 0f64);
    let k_f = classes as f64;
    for c in 0..classes {
        let (nc, mc) = (class_n[c] as f64, m.class_rows[c] as f64);
        if nc == 0.0 || mc == 0.0 {
            continue;
        }
        // Share of random flips that land in class `c`.
        let landing = (1.0 - nc / nf) / (k_f - 1.0);
        let rc = m.class_clean_rate[c].clamp(0.5 / mc, 1.0 - 0.5 / mc);
        let e = class_k[c] as f64 - nc * rc;
        excess += e;
        var += nc * rc * (1.0 - rc) * (1.0 + nc / mc);
        let gap = m.class_flipped_rate[c] - rc;
        if gap >= MIN_GAP {
            rate_flips += e / gap;
            rate_visible += landing;
        }
        let mu = m.class_mean_surprise[c];
        let sd = m.class_sd_surprise[c];
        let es = class_s[c] - nc * mu;
        s_excess += es;
        s_var += nc * sd * sd * (1.0 + nc / mc);
        let delta = m.class_flipped_surprise[c] - mu;
        if delta >= 0.2 {
            mean_flips += es / delta;
            mean_visible += landing;
        }
    }
    let mut z = excess / var.max(f64::MIN_POSITIVE).sqrt();
    let mut surprise_z = s_excess / s_var.max(f64::MIN_POSITIVE).sqrt();
    let lr = lr_test(m, scan, &transitions);
    // With the likelihood-ratio test's probabilities at hand, the rate and surprise tests
    // condition on each row's features (and on the null's fitted label shift) instead of
    // comparing with the trusted class rates: a covariate shift then moves their
    // expectation, not their verdict.
    let conditional = lr.as_ref().map(|r| {
        let d = super::flip_lr::Data {
            probs: &scan.lr_probs,
            labels: &scan.lr_labels,
            k: classes,
        };
        super::flip_lr::conditional_z(&d, &r.null_weights, m.cut)
    });
    if let Some((cz, cs, _)) = conditional {
        z = cz;
        surprise_z = cs;
    }
    // Bonferroni over the class-stratified rate and surprise tests (robust to any change of
    // the class balance) and the likelihood-ratio test (which also uses the prior's move
    // beyond the tolerated reweighting).
    let tests = if lr.is_some() { 3.0 } else { 2.0 };
    let p_min = normal_sf(z)
        .min(normal_sf(surprise_z))
        .min(lr.as_ref().map_or(1.0, |r| r.p_value));
    let p_value = (tests * p_min).min(1.0);
    let estimate = |flips: f64, visible: f64| {
        if visible > 0.0 {
            flips / visible / nf
        } else {
            0.0
        }
    };
    let flip_share = if surprise_z > z {
        estimate(mean_flips, mean_visible)
    } else {
        estimate(rate_flips, rate_visible)
    };
    // Conditional tests: the maximum-likelihood share is the effect (the class-rate
    // estimates above assume the trusted mix of easy and hard rows).
    let flip_share = match &lr {
        Some(r) => r.epsilon.max(if conditional.is_some() {
            0.0
        } else {
            flip_share
        }),
        None => flip_share,
    };
    let mean_surprise = surprise / nf;
    let names = &baseline.class_names();
    // The (predicted, given) pair with the most surprising rows beyond the trusted rate.
    let mut top: Option<(f64, usize, usize)> = None;
    for pred in 0..classes {
        for given in 0..classes {
            let j = pred * classes + given;
            let excess = transitions[j] as f64 - m.transitions[j] as f64 / mf * nf;
            if excess > 0.0 && top.is_none_or(|t| excess > t.0) {
                top = Some((excess, pred, given));
            }
        }
    }
    let mut describe = format!(
        "{k} of {n} labels ({}%) are surprising to the reference model against {}% of trusted labels out of fold; estimated flipped share {}",
        num(100.0 * r),
        num(100.0 * r0),
        num(flip_share)
    );
    if let Some(r) = &lr {
        let name = |c: usize| names.get(c).cloned().unwrap_or_else(|| c.to_string());
        let alt = match r.alternative {
            super::flip_lr::Alternative::Random => "random flips".to_owned(),
            super::flip_lr::Alternative::Directed { from, to } => {
                format!("`{}` relabelled `{}`", name(from), name(to))
            }
        };
        describe.push_str(&format!(
            "; the likelihood-ratio test fits {} of labels flipped (95% interval {} to {}) as {alt}",
            num(r.epsilon),
            num(r.ci.0),
            num(r.ci.1)
        ));
    }
    if outside > 0 {
        describe.push_str(&format!(
            "; {outside} labelled rows lie outside the trusted support and were not judged"
        ));
    }
    let mut subject = Subject::column(baseline.label.as_deref().unwrap_or("label"));
    if let Some((excess, pred, given)) = top {
        let name = |c: usize| names.get(c).cloned().unwrap_or_else(|| c.to_string());
        describe.push_str(&format!(
            "; most of the excess ({} rows) looks like `{}` but is labelled `{}`",
            num(excess),
            name(pred),
            name(given)
        ));
        subject.value = Some(format!("{} -> {}", name(pred), name(given)));
        subject.label = Some(name(given));
        if let Some(region) = region(baseline, profile, scan, pred, given) {
            describe.push_str(&format!(", concentrated where {region}"));
        }
    }
    let mut evidence = std::collections::BTreeMap::new();
    evidence.insert("surprising_share".into(), r);
    evidence.insert("trusted_surprising_share".into(), r0);
    evidence.insert("flipped_surprising_share".into(), m.flipped_rate);
    evidence.insert("probability_cut".into(), m.cut);
    evidence.insert("z".into(), z);
    evidence.insert(
        "conditional_tests".into(),
        f64::from(u8::from(conditional.is_some())),
    );
    evidence.insert("mean_surprise".into(), mean_surprise);
    evidence.insert("trusted_mean_surprise".into(), m.mean_surprise);
    evidence.insert("mean_surprise_z".into(), surprise_z);
    evidence.insert("accuracy".into(), correct as f64 / nf);
    evidence.insert("trusted_accuracy".into(), m.accuracy);
    evidence.insert("rows_judged".into(), nf);
    evidence.insert("rows_outside_support".into(), outside as f64);
    evidence.insert("temperature".into(), m.temperature.unwrap_or(1.0));
    if let Some(r) = &lr {
        evidence.insert("lr".into(), r.lr);
        evidence.insert("lr_p".into(), r.p_value);
        evidence.insert("lr_rows".into(), scan.lr_labels.len() as f64);
        evidence.insert("flip_share_ml".into(), r.epsilon);
        evidence.insert("flip_share_low".into(), r.ci.0);
        evidence.insert("flip_share_high".into(), r.ci.1);
    }
    let c = Candidate {
        code: "poison-label-inconsistency",
        subject,
        p_value: Some(p_value),
        effects: vec![Effect {
            name: "flip_share",
            value: flip_share,
            warn: rule.warn,
            deny: rule.deny,
        }],
        fixed: None,
        n,
        n_baseline: m.rows,
        describe,
        evidence,
        tag: None,
    };
    let excess = match conditional {
        // The class-rate excess still bounds how many surprising rows the quarantine keeps
        // when the finding fires; the conditional excess can be the larger of the two.
        Some((_, _, e)) => (e * nf / scan.lr_labels.len().max(1) as f64).max(excess),
        None => excess,
    };
    let limit = excess.max(0.0).ceil() as usize;
    vec![(c, Some(RowSelector::Surprising { limit }))]
}

/// Where the surprising rows of one (predicted, given) pair concentrate: the feature segment
/// (numeric decile or category) with the largest excess over an even spread, if it holds at
/// least a third of them and the excess is clear.
fn region(
    baseline: &Baseline,
    profile: &PoisonProfile,
    scan: &Scan,
    pred: usize,
    given: usize,
) -> Option<String> {
    let k = profile.classes;
    let pair = pred * k + given;
    // Per feature, this pair's surprising rows by code (every feature counts the same rows).
    let hits_of = |j: usize| -> Option<Vec<f64>> {
        let t = scan.surprise_tables.get(j)?;
        Some(
            (0..profile.cardinality[j])
                .map(|code| t.get(code * k * k + pair).copied().unwrap_or(0) as f64)
                .collect(),
        )
    };
    let m_hits: f64 = hits_of(0)?.iter().sum();
    if m_hits < 10.0 {
        return None;
    }
    let mut best: Option<(f64, String)> = None;
    for (j, name) in profile.features.iter().enumerate() {
        let col = baseline.column(name)?;
        let card = profile.cardinality[j];
        // Labelled rows per code, from the batch's class table.
        let table = scan.tables.get(j)?;
        let total: Vec<f64> = (0..card)
            .map(|code| table[code * k..(code + 1) * k].iter().sum::<u64>() as f64)
            .collect();
        let n: f64 = total.iter().sum();
        let hit = hits_of(j)?;
        let segments = segment_codes(col, card);
        for (label, codes) in segments {
            let h: f64 = codes.iter().map(|&c| hit[c]).sum();
            let t: f64 = codes.iter().map(|&c| total[c]).sum();
            // Excess of this pair's surprising rows over an even spread across the batch; a
            // region must hold a third of them, half again its share of rows, and be four
            // binomial standard deviations past an even spread (random flips have no region).
            let m = m_hits;
            let even = m * t / n;
            let excess = h - even;
            let z = excess / (even * (1.0 - t / n)).max(1e-9).sqrt();
            if h >= m / 3.0
                && h >= 1.5 * even
                && z >= 4.0
                && best.as_ref().is_none_or(|b| excess > b.0)
            {
                best = Some((excess, format!("`{name}` {label}")));
            }
        }
    }
    best.map(|b| b.1)
}

/// Segments of a feature: numeric deciles (by the trusted bin counts) or single categories,
/// each as (description, codes). Null and "other" codes are left out.
#[must_use]
pub fn segment_codes(
    col: &crate::baseline::ColumnProfile,
    card: usize,
) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    if let Some(p) = &col.numeric {
        let groups = binned::coarse_groups(&p.counts, 10);
        let mut by_group: Vec<Vec<usize>> = Vec::new();
        for (bin, &g) in groups.iter().enumerate() {
            if by_group.len() <= g {
                by_group.resize(g + 1, Vec::new());
            }
            by_group[g].push(bin);
        }
        for bins in by_group.into_iter().filter(|b| !b.is_empty()) {
            let lo = bins[0];
            let hi = bins[bins.len() - 1];
            let from = if lo == 0 {
                "-inf".to_owned()
            } else {
                num(p.edges[lo - 1])
            };
            let to = if hi >= p.edges.len() {
                "inf".to_owned()
            } else {
                num(p.edges[hi])
            };
            out.push((format!("in ({from}, {to}]"), bins));
        }
    } else if let Some(c) = &col.categorical {
        for (i, t) in c.top.iter().take(card.saturating_sub(2)).enumerate() {
            out.push((format!("= `{}`", t.value), vec![i]));
        }
    }
    out
}

/// Fewest trusted rows a categorical `other` or null code needs before the reference model's
/// answer for it means anything.
const MIN_SUPPORT_ROWS: u64 = 5;

/// Which rows the reference model can judge: every feature value inside the support of the
/// trusted rows it was fitted on.
///
/// A row with a null where the trusted rows had (almost) none, with a category value outside
/// every trusted one, or with a number far outside the pinned range (the tolerance band of
/// [`crate::baseline::tolerance::tolerance`]) meets a part of the model that no trusted row shaped:
/// its probabilities say nothing about its label. Such rows are left out of the label test
/// (and counted), so that a broken column reads as a broken column — a schema finding — and
/// not as flipped labels.
#[derive(Debug, Clone)]
pub struct Support {
    /// Per feature, per code: supported.
    ok: Vec<Vec<bool>>,
    /// Per numeric feature, the band beyond which a value is outside the support.
    far: Vec<Option<(f64, f64)>>,
}

impl Support {
    /// The support of a baseline's features, from the trusted rows per code.
    #[must_use]
    pub fn new(baseline: &Baseline, profile: &PoisonProfile, encoder: &Encoder) -> Self {
        let k = profile.classes.max(1);
        let mut ok = Vec::with_capacity(encoder.features.len());
        let mut far = Vec::with_capacity(encoder.features.len());
        for (j, f) in encoder.features.iter().enumerate() {
            let card = f.code.cardinality();
            let trusted = |code: usize| -> u64 {
                profile.tables.get(j).map_or(MIN_SUPPORT_ROWS, |t| {
                    t[code * k..(code + 1) * k].iter().sum()
                })
            };
            let null = usize::from(f.code.null_code());
            let mut v = vec![true; card];
            match &f.code {
                crate::rows::FeatureCode::Numeric { .. } => {
                    v[null] = trusted(null) >= MIN_SUPPORT_ROWS;
                }
                crate::rows::FeatureCode::Categorical { other, .. } => {
                    let other = usize::from(*other);
                    v[other] = trusted(other) >= MIN_SUPPORT_ROWS;
                    v[null] = trusted(null) >= MIN_SUPPORT_ROWS;
                }
            }
            ok.push(v);
            far.push(
                baseline
                    .column(&f.name)
                    .and_then(|c| c.numeric.as_ref())
                    .map(|p| {
                        let t = crate::baseline::tolerance::tolerance(p);
                        (t.far_min, t.far_max)
                    }),
            );
        }
        Self { ok, far }
    }

    /// Per row of a slice, whether it lies inside the support; and per feature, the rows it
    /// put outside.
    #[must_use]
    pub fn mask(&self, e: &Encoded) -> (Vec<bool>, Vec<u64>) {
        let mut inside = vec![true; e.n];
        let mut per_feature = vec![0u64; self.ok.len()];
        for (j, codes) in e.codes.iter().enumerate() {
            let ok = &self.ok[j];
            let vals = e.values.get(j).filter(|v| !v.is_empty());
            for (i, &c) in codes.iter().enumerate() {
                let mut good = ok.get(usize::from(c)).copied().unwrap_or(false);
                if good && let (Some((lo, hi)), Some(v)) = (self.far[j], vals) {
                    let x = v[i];
                    good = x.is_nan() || (x >= lo && x <= hi);
                }
                if !good {
                    per_feature[j] += 1;
                    inside[i] = false;
                }
            }
        }
        (inside, per_feature)
    }
}
