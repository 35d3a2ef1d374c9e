//! `poison-stitched-rows`: rows stitched together from the values of different rows.
//!
//! **What it detects.** Rows whose every value is ordinary but whose combination is not: each
//! column copied from another row (a crude synthetic or "mixed" row, or a label-flip attack
//! that re-pairs features). The histogram and extreme-value scores of
//! `poison-anomalous-rows` see nothing in such a row, and its copula score sees it only
//! through strong linear dependence between numeric features.
//!
//! **How.** At `profile` time, each feature's codes are grouped into at most seven cells (six
//! ordered groups of bins, or the five most frequent values and the rest, and null), and the
//! pairs of features with the most mutual information (at most [`MAX_PAIRS`], each with a
//! Miller–Madow-corrected information above its noise; Miller 1955) keep their smoothed
//! pointwise mutual information table. A row's score is `S = Σ_pairs ln p(a,b) / (p(a) p(b))`,
//! and its weight `w = min(e^(−S), W_MAX)`: the ratio of the row's density with every value
//! drawn independently to its density in the trusted joint model (pairwise, the Chow–Liu
//! style of approximation; Chow & Liu 1968). When a share `ε` of the batch is stitched, the
//! batch's mean weight is `(1 − ε) μ₀ + ε μ₁`: its mean is the score statistic of that mixture
//! at `ε = 0`, the locally most powerful test of it (Rao 1948), with the weight capped so that
//! one row cannot decide. `μ₀` and `σ₀` come from five-fold cross-fitted scores of the trusted
//! rows (tables fitted without the row's fold), and `μ₁` from the same rows with each column
//! shuffled on its own within the fold, so both are measured on rows the tables never saw.
//!
//! The weights' test is one-sided, `z = (w̄ − μ₀) / (σ₀ √(1/n + 1/N))` for `n` batch and `N`
//! trusted rows, with the stitched share `ε̂ = (w̄ − μ₀) / (μ₁ − μ₀)`. The weights also rise
//! when one column's values shift (rows land in cells their partners rarely meet), so a second
//! test reads the batch's own pair tables: stitching a share ε scales each pair's dependence
//! by about `(1 − ε)²`, so the summed Miller–Madow information `I` of the batch's tables falls
//! from the trusted `I₀` (`ε̂ = 1 − √(I / I₀)`); by the delta method its standard error is the
//! cross-fitted spread of a row's summed pointwise information over `√n`. A shifted column
//! moves the tables with it and leaves `I` about where it was; a changed class mix moves `I`
//! but not the weights. The finding needs both (an intersection–union test, Berger 1982): its
//! p-value is the larger and its effect the smaller of the two. The state is integers (rows,
//! the fixed-point sums of the weights, the pair tables), so it merges exactly, and the rows
//! with the highest weights.
//!
//! **False positives.** A real change in how features go together (a new pricing rule ties
//! two columns differently) raises the weights too; so does a strong covariate shift into
//! combinations the trusted rows hold rarely. The drift findings on the same columns then say
//! which.

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::scan::{Block, Pinned};
use super::{Detector, Found, RowSelector, Rows, Scan};
use crate::detect::registry::{CodeInfo, Family, Weight};
use crate::detect::{Accumulator, Candidate, Effect, PowerNull, TopRows};
use crate::finding::{Subject, num};
use crate::poison::RowCode;
use crate::detect::rules::{RateRule, RowRule, RowRules};
use crate::rows::{Encoded, Encoder, FeatureCode};
use crate::stats::proportion::normal_upper_tail;

/// `poison-stitched-rows`, as the registry describes it, with its policy defaults.
pub const CODE: RowCode = RowCode {
    info: CodeInfo {
        code: "poison-stitched-rows",
        family: Family::Row,
        weight: Weight::Detector,
        joint: true,
        doc: "docs/detectors.md#poison-stitched-rows",
        skip_phrase: "",
        summary: "Rows go together less than trusted rows do: the mean ratio of each row's density with its values drawn independently to its density in the trusted pairwise model is above the trusted rows' own, as if a share of rows were stitched from other rows' values.",
        why: "Rows assembled column by column from different rows (crude synthetic rows, re-paired features) look ordinary value by value; they teach a model combinations that never occur, and their labels carry no signal.",
        respond: "Inspect the listed rows (highest weight first) against the named feature pairs; find the join, generator or producer that assembled them.",
    },
    rule: RowRule::Rate(RULE),
};

/// `[checks.poison-stitched-rows]` when the policy leaves it out. Thresholds on the estimated share of rows stitched together from other rows' values.
pub const RULE: RateRule = RateRule::denying(0.01, 0.02);

/// Most feature pairs scored.
pub const MAX_PAIRS: usize = 24;
/// Ordered groups of a numeric feature's bins (plus one for null).
const GROUPS: usize = 6;
/// Cap of one row's weight.
const W_MAX: f64 = 50.0;
/// Folds of the cross-fitted null.
const FOLDS: usize = 5;
/// Most trusted rows the test is fitted on (a seeded sample beyond).
const MAX_FIT_ROWS: usize = 100_000;
/// Most features searched for pairs.
const MAX_FEATURES: usize = 64;
/// Fewest trusted rows to pin the test on.
const MIN_ROWS: usize = 200;
/// Fewest batch rows to test.
const MIN_BATCH: u64 = 50;
/// Least Miller–Madow-corrected mutual information of a pair kept (nats).
const MIN_INFORMATION: f64 = 0.005;
/// One-sided 95 % normal quantile.
const Z95: f64 = 1.644_853_626_951_472_2;
/// Fixed-point scale of the weights in the state: exact sums whatever the split.
const SCALE: f64 = (1u64 << 26) as f64;
/// Quantile of the trusted weights a listed row must reach (the 99th percentile is often
/// the cap itself).
const ROW_LEVEL: f64 = 0.9;

/// What the stitched-rows test pinned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StitchedProfile {
    /// Per feature, the cell of each code (its last code is null).
    pub cells: Vec<Vec<u8>>,
    /// The scored pairs of features (indices into the profile's features).
    pub pairs: Vec<[usize; 2]>,
    /// Per pair, the pointwise mutual information of each cell pair, row-major
    /// (`cell_a * cells_b + cell_b`).
    pub pmi: Vec<Vec<f64>>,
    /// Mean weight of trusted rows, cross-fitted.
    pub mean: f64,
    /// Standard deviation of the weight of trusted rows, cross-fitted.
    pub sd: f64,
    /// Mean weight of trusted rows with every column shuffled on its own, cross-fitted.
    pub mean_stitched: f64,
    /// The weight a listed row must reach (the trusted weights' 90th percentile).
    pub row_cut: f64,
    /// The pairs' summed mutual information in the trusted rows (Miller–Madow corrected).
    pub information: f64,
    /// Standard deviation of a trusted row's summed pointwise information, cross-fitted.
    pub score_sd: f64,
    /// Trusted rows scored.
    pub rows: u64,
}

impl StitchedProfile {
    /// Checks shapes.
    ///
    /// # Errors
    /// A description of the problem.
    pub fn validate(&self, cardinality: &[usize]) -> Result<(), String> {
        let bad = || Err("stitched-rows profile does not fit the features".to_owned());
        if self.cells.len() != cardinality.len()
            || self
                .cells
                .iter()
                .zip(cardinality)
                .any(|(c, &k)| c.len() != k)
            || self.pairs.len() != self.pmi.len()
        {
            return bad();
        }
        let width = |j: usize| self.cells[j].iter().map(|&c| usize::from(c) + 1).max();
        for (&[a, b], t) in self.pairs.iter().zip(&self.pmi) {
            if a >= self.cells.len() || b >= self.cells.len() || a == b {
                return bad();
            }
            if width(a).zip(width(b)).map(|(x, y)| x * y) != Some(t.len())
                || t.iter().any(|v| !v.is_finite())
            {
                return bad();
            }
        }
        if ![
            self.mean,
            self.sd,
            self.mean_stitched,
            self.row_cut,
            self.information,
            self.score_sd,
        ]
        .iter()
        .all(|v| v.is_finite() && *v >= 0.0)
        {
            return Err("stitched-rows profile: null out of range".into());
        }
        Ok(())
    }

    /// Cells of feature `j`.
    fn width(&self, j: usize) -> usize {
        self.cells[j]
            .iter()
            .map(|&c| usize::from(c) + 1)
            .max()
            .unwrap_or(1)
    }

    /// The weight of each row of `e`.
    #[must_use]
    pub fn weights(&self, e: &Encoded) -> Vec<f32> {
        let mut s = vec![0f64; e.n];
        for (&[a, b], t) in self.pairs.iter().zip(&self.pmi) {
            let wb = self.width(b);
            let (ca, cb) = (&self.cells[a], &self.cells[b]);
            for (i, (&x, &y)) in e.codes[a].iter().zip(&e.codes[b]).enumerate() {
                let (Some(&u), Some(&v)) = (ca.get(usize::from(x)), cb.get(usize::from(y))) else {
                    continue;
                };
                s[i] += t[usize::from(u) * wb + usize::from(v)];
            }
        }
        s.into_iter().map(|s| weight(s) as f32).collect()
    }
}

fn weight(score: f64) -> f64 {
    (-score).exp().min(W_MAX)
}

/// The cells of a feature's codes: ordered groups of numeric bins, or the five most frequent
/// values and the rest; null last.
fn cells_of(code: &FeatureCode) -> Vec<u8> {
    match code {
        FeatureCode::Numeric { bins, .. } => {
            let mut c: Vec<u8> = (0..*bins)
                .map(|b| (b * GROUPS / (*bins).max(1)) as u8)
                .collect();
            c.push(GROUPS as u8);
            c
        }
        FeatureCode::Categorical { other, .. } => {
            let other = usize::from(*other);
            let mut c: Vec<u8> = (0..=other).map(|k| k.min(GROUPS - 1) as u8).collect();
            c.push(GROUPS as u8);
            c
        }
    }
}

/// Joint counts of two features' cells (`cells[j][r]`) over the rows `keep` selects.
fn joint(cells: &[Vec<u8>], a: usize, b: usize, keep: &dyn Fn(usize) -> bool) -> Vec<f64> {
    let wb = GROUPS + 1;
    let mut t = vec![0f64; (GROUPS + 1) * wb];
    for (r, (&u, &v)) in cells[a].iter().zip(&cells[b]).enumerate() {
        if keep(r) {
            t[usize::from(u) * wb + usize::from(v)] += 1.0;
        }
    }
    t
}

/// Entropy of a feature's cells (nats).
fn entropy(cells: &[u8]) -> f64 {
    let mut counts = [0f64; GROUPS + 1];
    for &c in cells {
        counts[usize::from(c)] += 1.0;
    }
    let n = cells.len().max(1) as f64;
    counts
        .iter()
        .filter(|&&c| c > 0.0)
        .map(|&c| -(c / n) * (c / n).ln())
        .sum()
}

/// Smoothed pointwise mutual information of a joint count table (add one half to each cell).
fn pmi_table(t: &[f64], wa: usize, wb: usize) -> Vec<f64> {
    let total: f64 = t.iter().sum::<f64>() + 0.5 * (wa * wb) as f64;
    let p: Vec<f64> = t.iter().map(|&c| (c + 0.5) / total).collect();
    let pa: Vec<f64> = (0..wa)
        .map(|u| p[u * wb..(u + 1) * wb].iter().sum())
        .collect();
    let pb: Vec<f64> = (0..wb)
        .map(|v| (0..wa).map(|u| p[u * wb + v]).sum())
        .collect();
    (0..wa * wb)
        .map(|k| (p[k] / (pa[k / wb] * pb[k % wb])).ln())
        .collect()
}

/// Mutual information of a count table, less the Miller–Madow bias `(r − 1)(c − 1) / 2N` over
/// its occupied rows and columns (Miller 1955), in nats.
fn information(t: &[f64], wa: usize, wb: usize) -> f64 {
    let n: f64 = t.iter().sum();
    if n <= 0.0 {
        return 0.0;
    }
    let ra: Vec<f64> = (0..wa)
        .map(|u| t[u * wb..(u + 1) * wb].iter().sum())
        .collect();
    let rb: Vec<f64> = (0..wb)
        .map(|v| (0..wa).map(|u| t[u * wb + v]).sum())
        .collect();
    let mut mi = 0.0;
    for (k, &c) in t.iter().enumerate() {
        if c > 0.0 {
            mi += c / n * (c * n / (ra[k / wb] * rb[k % wb])).ln();
        }
    }
    let occupied = |v: &[f64]| v.iter().filter(|&&x| x > 0.0).count().max(1) as f64;
    mi - (occupied(&ra) - 1.0) * (occupied(&rb) - 1.0) / (2.0 * n)
}

/// Fits the test on the trusted rows (a seeded sample of at most [`MAX_FIT_ROWS`]), or
/// `None` when they are too few or no pair of features carries information past its noise.
#[must_use]
pub fn fit(encoder: &Encoder, rows: &Rows, seed: u64) -> Option<StitchedProfile> {
    let f = encoder.features.len();
    if rows.n < MIN_ROWS || f < 2 {
        return None;
    }
    let map: Vec<Vec<u8>> = encoder.features.iter().map(|x| cells_of(&x.code)).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x7374_6974_6368_6564);
    let mut sample: Vec<usize> = (0..rows.n).collect();
    if rows.n > MAX_FIT_ROWS {
        sample.shuffle(&mut rng);
        sample.truncate(MAX_FIT_ROWS);
        sample.sort_unstable();
    }
    let n = sample.len();
    // Each feature's cell per sampled row.
    let cells: Vec<Vec<u8>> = (0..f)
        .map(|j| {
            sample
                .iter()
                .map(|&i| {
                    map[j]
                        .get(usize::from(rows.codes[j][i]))
                        .copied()
                        .unwrap_or(0)
                })
                .collect()
        })
        .collect();
    // With many features, pairs among the [`MAX_FEATURES`] of highest entropy (the cost of
    // the search grows with the square of the features).
    let mut candidates: Vec<usize> = (0..f).collect();
    if f > MAX_FEATURES {
        let h: Vec<f64> = cells.iter().map(|c| entropy(c)).collect();
        candidates.sort_by(|&a, &b| h[b].total_cmp(&h[a]).then(a.cmp(&b)));
        candidates.truncate(MAX_FEATURES);
        candidates.sort_unstable();
    }
    let wb = GROUPS + 1;
    let all = |_: usize| true;
    // The noise floor of a pair's corrected information grows with its cells over the rows.
    let floor = MIN_INFORMATION.max(3.0 * (GROUPS * GROUPS) as f64 / (2.0 * n as f64));
    let mut scored: Vec<(f64, usize, usize)> = Vec::new();
    for (x, &a) in candidates.iter().enumerate() {
        for &b in &candidates[x + 1..] {
            let mi = information(&joint(&cells, a, b, &all), wb, wb);
            if mi > floor {
                scored.push((mi, a, b));
            }
        }
    }
    scored.sort_by(|x, y| y.0.total_cmp(&x.0).then((x.1, x.2).cmp(&(y.1, y.2))));
    scored.truncate(MAX_PAIRS);
    if scored.is_empty() {
        return None;
    }
    let pairs: Vec<[usize; 2]> = scored.iter().map(|&(_, a, b)| [a, b]).collect();
    // Folds: a seeded shuffle, so that sorted files split evenly.
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    let mut fold = vec![0usize; n];
    for (k, &r) in order.iter().enumerate() {
        fold[r] = k % FOLDS;
    }
    let (mut real, mut stitched) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut scores: Vec<f64> = Vec::with_capacity(n);
    for k in 0..FOLDS {
        let members: Vec<usize> = (0..n).filter(|&r| fold[r] == k).collect();
        // Each column of the fold's rows shuffled on its own: rows drawn from the product of
        // the marginals.
        let shuffled: Vec<Vec<usize>> = (0..f)
            .map(|_| {
                let mut m = members.clone();
                m.shuffle(&mut rng);
                m
            })
            .collect();
        let (mut s_real, mut s_stitched) = (vec![0f64; members.len()], vec![0f64; members.len()]);
        for &[a, b] in &pairs {
            let pmi = pmi_table(&joint(&cells, a, b, &|r| fold[r] != k), wb, wb);
            let at = |u: u8, v: u8| pmi[usize::from(u) * wb + usize::from(v)];
            for (x, &r) in members.iter().enumerate() {
                s_real[x] += at(cells[a][r], cells[b][r]);
                s_stitched[x] += at(cells[a][shuffled[a][x]], cells[b][shuffled[b][x]]);
            }
        }
        scores.extend_from_slice(&s_real);
        real.extend(s_real.into_iter().map(weight));
        stitched.extend(s_stitched.into_iter().map(weight));
    }
    let nf = n as f64;
    let mean = real.iter().sum::<f64>() / nf;
    let sd = (real.iter().map(|w| (w - mean).powi(2)).sum::<f64>() / (nf - 1.0)).sqrt();
    let mean_stitched = stitched.iter().sum::<f64>() / nf;
    let score_mean = scores.iter().sum::<f64>() / nf;
    let score_sd =
        (scores.iter().map(|s| (s - score_mean).powi(2)).sum::<f64>() / (nf - 1.0)).sqrt();
    let information = scored.iter().map(|&(mi, _, _)| mi).sum();
    let mut sorted = real;
    sorted.sort_by(f64::total_cmp);
    let row_cut = sorted[((ROW_LEVEL * nf) as usize).min(sorted.len() - 1)];
    let pmi = pairs
        .iter()
        .map(|&[a, b]| pmi_table(&joint(&cells, a, b, &all), wb, wb))
        .collect();
    Some(StitchedProfile {
        cells: map,
        pairs,
        pmi,
        mean,
        sd,
        mean_stitched,
        row_cut,
        information,
        score_sd,
        rows: n as u64,
    })
}

/// The sums of the weights of the rows seen so far (fixed point) and the highest-weight rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StitchedState {
    /// Rows.
    pub rows: u64,
    /// Sum of the weights, times 2^26 (each rounded to an integer first).
    pub sum: u128,
    /// Sum of the squared fixed-point weights.
    pub sum_sq: u128,
    /// Per pair, the batch's joint counts of the two features' cells (row-major).
    pub tables: Vec<Vec<u64>>,
    /// The highest-weight rows at or past the row cut.
    pub top: TopRows,
}

impl Accumulator<Pinned<'_>, Block> for StitchedState {
    fn new(p: &Pinned<'_>) -> Option<Self> {
        p.profile.stitched.as_ref().map(|s| Self {
            rows: 0,
            sum: 0,
            sum_sq: 0,
            tables: s
                .pairs
                .iter()
                .map(|&[a, b]| vec![0; s.width(a) * s.width(b)])
                .collect(),
            top: TopRows::default(),
        })
    }

    fn update(&mut self, p: &Pinned<'_>, b: &Block) {
        let cut = b.stitched_cut;
        self.rows += b.e.n as u64;
        if let Some(s) = &p.profile.stitched {
            for (&[x, y], t) in s.pairs.iter().zip(self.tables.iter_mut()) {
                let wb = s.width(y);
                let (cx, cy) = (&s.cells[x], &s.cells[y]);
                for (&u, &v) in b.e.codes[x].iter().zip(&b.e.codes[y]) {
                    if let (Some(&u), Some(&v)) = (cx.get(usize::from(u)), cy.get(usize::from(v)))
                        && let Some(c) = t.get_mut(usize::from(u) * wb + usize::from(v))
                    {
                        *c += 1;
                    }
                }
            }
        }
        for (i, &w) in b.stitched.iter().enumerate() {
            let q = (f64::from(w) * SCALE).round() as u128;
            self.sum += q;
            self.sum_sq += q * q;
            if f64::from(w) >= cut {
                // The selector's score, in (0, 1) like every other (the order is the weights').
                self.top
                    .offer(f64::from(w) / (1.0 + f64::from(w)), b.first + i as u64);
            }
        }
    }

    fn merge(&mut self, _: &Pinned<'_>, o: Self) -> Result<(), String> {
        crate::detect::add_tables(&mut self.tables, &o.tables)?;
        self.rows += o.rows;
        self.sum += o.sum;
        self.sum_sq += o.sum_sq;
        self.top.merge(o.top);
        Ok(())
    }

    fn shift_rows(&mut self, by: u64) {
        self.top.shift(by);
    }
}

impl Detector for StitchedState {
    const CODES: &'static [RowCode] = &[CODE];

    /// The stitched-rows candidate of a scanned batch.
    fn finish(&self, p: &Pinned<'_>, _: &Scan, rules: &RowRules) -> Vec<Found> {
        let st = self;
        let Some(s) = &p.profile.stitched else {
            return Vec::new();
        };
        if st.rows < MIN_BATCH {
            return Vec::new();
        }
        let rule = rules.rate(CODE.info.code, &RULE);
        let n = st.rows as f64;
        let big_n = s.rows.max(1) as f64;
        // The weights: the score test of the mixture.
        let mean = st.sum as f64 / SCALE / n;
        let z_weight = (mean - s.mean) / (s.sd.max(1e-12) * (1.0 / n + 1.0 / big_n).sqrt());
        let gap = s.mean_stitched - s.mean;
        let se_weight = s.sd.max(1e-12) * (1.0 / n + 1.0 / big_n).sqrt();
        let (share_weight, share_weight_high) = if gap > 0.0 {
            (
                ((mean - s.mean) / gap).clamp(0.0, 1.0),
                ((mean - s.mean + Z95 * se_weight) / gap).clamp(0.0, 1.0),
            )
        } else {
            (0.0, 0.0)
        };
        // The batch's own tables: how much the pairs' information dropped. Stitching a share ε
        // scales each pair's dependence by about (1 − ε)², and a shift of one column's values,
        // which moves the weights, moves the batch's own tables with it.
        let information: f64 = st
            .tables
            .iter()
            .zip(&s.pairs)
            .map(|(t, &[a, b])| {
                let t: Vec<f64> = t.iter().map(|&c| c as f64).collect();
                information(&t, s.width(a), s.width(b))
            })
            .sum();
        let z_information = (s.information - information)
            / (s.score_sd.max(1e-12) * (1.0 / n + 1.0 / big_n).sqrt());
        let share_information = if s.information > 0.0 {
            (1.0 - (information.max(0.0) / s.information).sqrt()).clamp(0.0, 1.0)
        } else {
            0.0
        };
        // Both must show it (an intersection–union test; Berger 1982): the weights alone also
        // move when a column shifts, and the information alone when the class mix changes.
        let (z, share) = (
            z_weight.min(z_information),
            share_weight.min(share_information),
        );
        let mut evidence = BTreeMap::new();
        evidence.insert("mean_weight".into(), mean);
        evidence.insert("trusted_mean_weight".into(), s.mean);
        evidence.insert("stitched_mean_weight".into(), s.mean_stitched);
        evidence.insert("stitched_share_weight".into(), share_weight);
        // The upper end of the weights' share (one-sided 95 %), for what a dropped quarantine
        // leaves (`quarantine::residuals`).
        evidence.insert("stitched_share_high".into(), share_weight_high.max(share));
        evidence.insert("information".into(), information);
        evidence.insert("trusted_information".into(), s.information);
        evidence.insert("stitched_share_information".into(), share_information);
        evidence.insert("z_weight".into(), z_weight);
        evidence.insert("z_information".into(), z_information);
        evidence.insert("pairs".into(), s.pairs.len() as f64);
        let names = |k: usize| {
            s.pairs
                .iter()
                .take(k)
                .map(|&[a, b]| format!("{} × {}", p.profile.features[a], p.profile.features[b]))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let limit = (share * n).ceil() as usize;
        vec![(
            Candidate {
                code: "poison-stitched-rows",
                subject: Subject::default(),
                p_value: Some(normal_upper_tail(z)),
                effects: vec![Effect {
                    name: "stitched_share",
                    value: share,
                    warn: rule.warn,
                    deny: rule.deny,
                }],
                fixed: None,
                n: st.rows,
                n_baseline: s.rows,
                describe: format!(
                    "rows go together less than trusted rows do: mean independence weight {} against {} (trusted) and {} (columns shuffled), and the pairs' information {} against {} nats, as if {}% of the rows were stitched from other rows' values (pairs: {})",
                    num(mean),
                    num(s.mean),
                    num(s.mean_stitched),
                    num(information),
                    num(s.information),
                    num(100.0 * share),
                    names(3)
                ),
                evidence,
                tag: None,
                power: Some(PowerNull::Stitched(crate::stats::power::StitchedNull {
                    rows: st.rows,
                    trusted: s.rows,
                    mean: s.mean,
                    sd: s.sd,
                    stitched: s.mean_stitched,
                    information: s.information,
                    score_sd: s.score_sd,
                })),
            },
            Some(RowSelector::Stitched { limit }),
        )]
    }
}
