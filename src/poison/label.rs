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
use super::{PoisonProfile, Rows};
use crate::finding::num;
use crate::poison::BaselineView;
use crate::rows::{Encoded, Encoder, NO_CLASS};
use crate::stats::binned;

/// Most trusted rows the model is fitted on by default (a seeded sample beyond; the rows
/// left out calibrate it, see [`LabelModel::held_expected`]).
pub const DEFAULT_MODEL_ROWS: usize = 100_000;
/// Folds of the out-of-fold calibration.
const FOLDS: usize = 5;
/// Probabilities are clipped here before taking logs.
pub(crate) const P_FLOOR: f64 = 1e-6;

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
pub(crate) const MIN_GAP: f64 = 0.05;

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

/// Segments of a feature: numeric deciles (by the trusted bin counts) or single categories,
/// each as (description, codes). Null and "other" codes are left out.
#[must_use]
pub fn segment_codes(col: &crate::pinned::ColumnProfile, card: usize) -> Vec<(String, Vec<usize>)> {
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
/// [`crate::pinned::tolerance::tolerance`]) meets a part of the model that no trusted row shaped:
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
    pub fn new(baseline: &BaselineView<'_>, profile: &PoisonProfile, encoder: &Encoder) -> Self {
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
                        let t = crate::pinned::tolerance::tolerance(p);
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
