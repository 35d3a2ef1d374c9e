//! The `poison-` detectors: signals of deliberate tampering that per-column drift statistics
//! cannot see (DESIGN §4), and the class-conditional drift check that shares their pass.
//!
//! At `profile` time [`build`] encodes every trusted row ([`crate::rows`]) and pins what the
//! detectors need, without raw rows: a reference model of P(label | features) with its
//! out-of-fold calibration ([`label`]), per-feature class tables ([`segment`],
//! [`class_drift`]), the copula and histogram scores of normal rows ([`anomaly`]), and the
//! duplicate rates and a membership filter of (row, label) pairs ([`duplicates`]). Exact-value
//! frequencies for [`point_mass`] and [`trigger`] live in the column profiles.
//!
//! At `check` time [`scan`] encodes the batch in parallel slices and keeps a few bytes per
//! row (label probability, anomaly score, fingerprints); each detector turns that into
//! [`Candidate`]s that go through the same decision rule and multiplicity adjustment as the
//! drift checks. [`quarantine`] then lists the rows behind the findings that fired.

pub mod anomaly;
pub mod class_drift;
pub mod duplicates;
pub mod flip_lr;
pub mod gbdt;
pub mod label;
pub mod point_mass;
pub mod segment;
pub mod trigger;

use std::collections::BTreeMap;

use polars::prelude::DataFrame;
use serde::{Deserialize, Serialize};

use crate::baseline::Baseline;
use crate::detect::Candidate;
use crate::error::Result;
use crate::finding::{Finding, RowRef};
use crate::policy::Policy;
use crate::rows::{Encoded, Encoder, NO_CLASS};
use crate::source::Rows as BatchRows;
use crate::summary::BatchSummary;

pub use label::DEFAULT_MODEL_ROWS;

/// Most classes the row-level label detectors handle; more suggests an id-like label.
pub const MAX_MODEL_CLASSES: usize = 20;

/// What the detectors pinned from trusted data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PoisonProfile {
    /// Encoded features, in order; `check` runs row-level detectors only when the batch has
    /// every one of them.
    pub features: Vec<String>,
    /// Codes per feature (bins or top values, plus other and null).
    pub cardinality: Vec<usize>,
    /// Classes of the label (0 without a label).
    pub classes: usize,
    /// Per feature, trusted row counts by code and class (`code * classes + class`); empty
    /// without a label or with more than [`MAX_MODEL_CLASSES`] classes.
    pub tables: Vec<Vec<u64>>,
    /// The reference model of the label and its calibration.
    pub label_model: Option<label::LabelModel>,
    /// Anomaly scores of trusted rows.
    pub anomaly: Option<anomaly::AnomalyProfile>,
    /// Duplicate rates and the trusted membership filter.
    pub duplicates: duplicates::DuplicateProfile,
}

/// Per-feature class tables (`code * classes + class`) of rows given by their codes and
/// labels.
fn class_tables(
    cardinality: &[usize],
    classes: usize,
    codes: &[Vec<u8>],
    labels: &[u16],
) -> Vec<Vec<u64>> {
    cardinality
        .iter()
        .zip(codes)
        .map(|(&card, codes)| {
            let mut t = vec![0u64; card * classes];
            for (&c, &y) in codes.iter().zip(labels) {
                if y != NO_CLASS {
                    t[usize::from(c) * classes + usize::from(y)] += 1;
                }
            }
            t
        })
        .collect()
}

/// Most rows the likelihood-ratio label test is fitted on (an even stride through the
/// batch beyond): its standard error at this size is far below any flip share worth a
/// finding, and the fit stays a fraction of a second.
pub const LR_ROWS: usize = 50_000;

/// Every encoded row of a batch, concatenated in batch order.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    /// Rows.
    pub n: usize,
    /// Codes per feature.
    pub codes: Vec<Vec<u8>>,
    /// Raw values per feature (empty for categorical features).
    pub values: Vec<Vec<f64>>,
    /// Class per row.
    pub label: Vec<u16>,
    /// Exact fingerprints.
    pub fp_exact: Vec<u64>,
    /// Near fingerprints.
    pub fp_near: Vec<u64>,
}

impl Rows {
    fn append(&mut self, e: Encoded) {
        if self.codes.is_empty() {
            self.codes = vec![Vec::new(); e.codes.len()];
            self.values = vec![Vec::new(); e.values.len()];
        }
        self.n += e.n;
        for (a, b) in self.codes.iter_mut().zip(e.codes) {
            a.extend(b);
        }
        for (a, b) in self.values.iter_mut().zip(e.values) {
            if !b.is_empty() {
                a.extend(b);
            }
        }
        self.label.extend(e.label);
        self.fp_exact.extend(e.fp_exact);
        self.fp_near.extend(e.fp_near);
    }
}

/// Pins the detectors' profile from trusted frames; `baseline` already holds the column and
/// label profiles. `None` when no column can be encoded.
///
/// # Errors
/// A failure while encoding.
pub fn build(
    baseline: &Baseline,
    frames: &[DataFrame],
    model_rows: usize,
) -> Result<Option<PoisonProfile>> {
    let encoder = Encoder::new(baseline, None);
    if encoder.features.is_empty() {
        return Ok(None);
    }
    let mut rows = Rows::default();
    for e in encoder.for_each_slice(frames, |_, e| Ok(e))? {
        rows.append(e);
    }
    let cardinality: Vec<usize> = encoder
        .features
        .iter()
        .map(|f| f.code.cardinality())
        .collect();
    let classes = encoder.classes.len();
    let labelled = (2..=MAX_MODEL_CLASSES).contains(&classes);
    let tables = if labelled {
        class_tables(&cardinality, classes, &rows.codes, &rows.label)
    } else {
        Vec::new()
    };
    let label_model = if labelled {
        label::fit(&encoder, &rows, baseline.seed, model_rows)
    } else {
        None
    };
    let anomaly = anomaly::fit(baseline, &encoder, &rows, baseline.seed);
    let duplicates = duplicates::fit(&rows, baseline.seed);
    Ok(Some(PoisonProfile {
        features: encoder.features.iter().map(|f| f.name.clone()).collect(),
        cardinality,
        classes,
        tables,
        label_model,
        anomaly,
        duplicates,
    }))
}

impl PoisonProfile {
    /// Checks invariants a corrupted file could break.
    ///
    /// # Errors
    /// A description of the first broken invariant.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.features.len() != self.cardinality.len() {
            return Err("poison profile: features and cardinalities differ in length".into());
        }
        if !self.tables.is_empty()
            && (self.tables.len() != self.features.len()
                || self
                    .tables
                    .iter()
                    .zip(&self.cardinality)
                    .any(|(t, &c)| t.len() != c * self.classes))
        {
            return Err("poison profile: class tables do not fit the features".into());
        }
        if let Some(m) = &self.label_model {
            m.forest.validate(&self.cardinality)?;
            if m.forest.classes != self.classes {
                return Err("poison profile: model classes differ from the label's".into());
            }
            // The segment test indexes these tables by feature and code.
            let fits = |n: usize| n == self.features.len();
            let shaped = |lens: Vec<usize>| {
                lens.iter()
                    .zip(&self.cardinality)
                    .all(|(&l, &c)| l == c * self.classes)
            };
            if !fits(m.oof_expected.len())
                || m.oof_observed.len() != m.oof_expected.len()
                || !shaped(m.oof_expected.iter().map(Vec::len).collect())
                || !shaped(m.oof_observed.iter().map(Vec::len).collect())
            {
                return Err("poison profile: out-of-fold tables do not fit the features".into());
            }
            if (m.held_rows > 0) != (!m.held_expected.is_empty() || !m.held_observed.is_empty())
                || (m.held_rows > 0
                    && (!fits(m.held_expected.len())
                        || m.held_observed.len() != m.held_expected.len()
                        || !shaped(m.held_expected.iter().map(Vec::len).collect())
                        || !shaped(m.held_observed.iter().map(Vec::len).collect())))
            {
                return Err("poison profile: held-out tables do not fit the features".into());
            }
        }
        if let Some(a) = &self.anomaly {
            a.validate(self.features.len())?;
        }
        self.duplicates.validate()
    }
}

/// What the row-level pass over a batch kept.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// Encoded rows.
    pub rows: Rows,
    /// Probability the reference model gives each row's label (NaN without one).
    pub p_label: Vec<f32>,
    /// The model's most likely class per row.
    pub predicted: Vec<u16>,
    /// Anomaly score per row, in units of the trusted cut (above 1 is anomalous).
    pub anomaly: Vec<f32>,
    /// Extreme-value score per row, in units of the trusted cut (above 1 is past every
    /// trusted row's; see [`anomaly::fit`]).
    pub extreme: Vec<f32>,
    /// Per feature, the rows past the extreme-value cut whose largest excess it holds.
    pub extreme_by_feature: Vec<u64>,
    /// Per-feature class tables of the batch.
    pub tables: Vec<Vec<u64>>,
    /// Per-feature expected class counts by code under the reference model (empty without
    /// one).
    pub expected_tables: Vec<Vec<f64>>,
    /// Per row, whether every feature value lies inside the trusted support
    /// ([`label::Support`]); rows outside are left out of the label test.
    pub support: Vec<bool>,
    /// Per feature, the rows it put outside the support.
    pub outside_support: Vec<u64>,
    /// Per feature, the surprising rows ([`label::is_surprising`]) by code, predicted and
    /// given class (`(code * classes + predicted) * classes + given`); empty without a
    /// reference model. Where a (predicted, given) pair concentrates ([`label`]'s region)
    /// is read from here, so the pass keeps no feature codes per row.
    pub surprise_tables: Vec<Vec<u64>>,
    /// The likelihood-ratio sample while the pass runs: a bottom-k of labelled rows inside
    /// the support by a hash of their content and label ([`LrRow`]).
    pub lr_sample: Vec<LrRow>,
    /// The sample's labels, in key order (filled by [`ScanFold::finish`]).
    pub lr_labels: Vec<u16>,
    /// Their class probabilities under the reference model, row-major.
    pub lr_probs: Vec<f32>,
}

/// One row of the likelihood-ratio label test's sample.
///
/// The sample is the [`LR_ROWS`] eligible rows (labelled, inside the support) with the
/// smallest key, a hash of the row's exact values and label: a bottom-k sample (Cohen and
/// Kaplan, "Summarizing data using bottom-k sketches", PODC 2007). It merges exactly (the
/// bottom k of a union is the bottom k of the parts' bottom k), so every sharding and the
/// one-process pass draw the same rows, and it needs neither the batch's size in advance nor
/// the rows' positions. Rows with one key hold the same values and label, so they are
/// interchangeable. A batch with at most [`LR_ROWS`] eligible rows is tested on all of them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrRow {
    /// Sample key.
    pub key: u64,
    /// Class.
    pub label: u16,
    /// Class probabilities under the reference model, temperature applied (the first
    /// `classes` are used).
    pub probs: [f32; label::MAX_LR_CLASSES],
}

impl LrRow {
    fn order(a: &Self, b: &Self) -> std::cmp::Ordering {
        a.key.cmp(&b.key).then(a.label.cmp(&b.label)).then_with(|| {
            a.probs
                .iter()
                .map(|p| p.to_bits())
                .cmp(b.probs.iter().map(|p| p.to_bits()))
        })
    }
}

/// Keeps the [`LR_ROWS`] smallest rows of a sample once it holds twice as many (amortised
/// linear time), or always with `exact`.
fn trim_sample(sample: &mut Vec<LrRow>, exact: bool) {
    if sample.len() > 2 * LR_ROWS || (exact && sample.len() > LR_ROWS) {
        sample.select_nth_unstable_by(LR_ROWS, LrRow::order);
        sample.truncate(LR_ROWS);
    }
}

/// Adds `b` into `a` element by element (`a` takes `b` when empty).
fn add_tables(a: &mut Vec<Vec<u64>>, b: Vec<Vec<u64>>) {
    if a.is_empty() {
        *a = b;
    } else {
        for (all, part) in a.iter_mut().zip(b) {
            all.iter_mut().zip(part).for_each(|(x, y)| *x += y);
        }
    }
}

/// Scores every row of a batch in one pass. `None` when the baseline has no poison profile or
/// the batch lacks one of its features (that is already a schema finding).
///
/// # Errors
/// A failure while reading or encoding.
pub fn scan(baseline: &Baseline, usable: &[String], rows: BatchRows<'_>) -> Result<Option<Scan>> {
    let Some(mut fold) = ScanFold::new(baseline, usable) else {
        return Ok(None);
    };
    rows.for_each_window(None, &mut |blocks, first| fold.update(blocks, first))?;
    Ok(Some(fold.finish()))
}

/// The row pass as a fold over windows of blocks ([`crate::source::stream`]): each window is
/// encoded and scored in parallel, its few bytes per row appended in batch order, and its
/// tables added; nothing of the decoded rows is kept.
pub struct ScanFold<'a> {
    profile: &'a PoisonProfile,
    encoder: Encoder,
    scorer: Option<anomaly::Scorer>,
    support: Option<label::Support>,
    out: Scan,
    /// The model's expected class counts per feature and code, summed exactly block by block
    /// (so that merged shards give the same sums as one pass).
    expected: Vec<Vec<crate::stats::exact::ExactSum>>,
}

/// What one block contributes beside its per-row arrays.
struct BlockParts {
    e: Encoded,
    p: Vec<f32>,
    pred: Vec<u16>,
    expected: Vec<Vec<f64>>,
    inside: Vec<bool>,
    outside: Vec<u64>,
    anomaly: Vec<f32>,
    extreme: Vec<f32>,
    by_feature: Vec<u64>,
    tables: Vec<Vec<u64>>,
    surprise: Vec<Vec<u64>>,
    sample: Vec<LrRow>,
}

impl<'a> ScanFold<'a> {
    /// A fold for `baseline`'s poison profile, or `None` when it has none or `usable` lacks
    /// one of its features.
    #[must_use]
    pub fn new(baseline: &'a Baseline, usable: &[String]) -> Option<Self> {
        let profile = baseline.poison.as_ref()?;
        let encoder = Encoder::new(baseline, Some(usable));
        let names: Vec<&String> = encoder.features.iter().map(|f| &f.name).collect();
        if names.len() != profile.features.len()
            || names.iter().zip(&profile.features).any(|(a, b)| *a != b)
        {
            return None;
        }
        let scorer = profile
            .anomaly
            .as_ref()
            .map(|a| anomaly::Scorer::new(baseline, &encoder, a));
        let support = profile
            .label_model
            .as_ref()
            .map(|_| label::Support::new(baseline, profile, &encoder));
        let features = profile.features.len();
        let out = Scan {
            outside_support: vec![0; features],
            extreme_by_feature: vec![0; features],
            ..Scan::default()
        };
        Some(Self {
            profile,
            encoder,
            scorer,
            support,
            out,
            expected: Vec::new(),
        })
    }

    /// Reserves per-row state for `rows` more rows.
    pub fn reserve(&mut self, rows: usize) {
        let out = &mut self.out;
        out.rows.label.reserve_exact(rows);
        out.rows.fp_exact.reserve_exact(rows);
        out.rows.fp_near.reserve_exact(rows);
        out.p_label.reserve_exact(rows);
        out.predicted.reserve_exact(rows);
        out.anomaly.reserve_exact(rows);
        out.extreme.reserve_exact(rows);
        out.support.reserve_exact(rows);
    }

    fn block(&self, df: &DataFrame) -> Result<BlockParts> {
        let profile = self.profile;
        let features = profile.features.len();
        let e = self.encoder.encode(df)?;
        let (p, pred, expected, probs) = match &profile.label_model {
            Some(m) => label::score(m, &e, &profile.cardinality),
            None => (
                vec![f32::NAN; e.n],
                vec![NO_CLASS; e.n],
                Vec::new(),
                Vec::new(),
            ),
        };
        let (inside, outside) = match &self.support {
            Some(sup) => sup.mask(&e),
            None => (vec![true; e.n], vec![0; features]),
        };
        let (anomaly, (extreme, by_feature)) = match &self.scorer {
            Some(sc) => (sc.score(&e), sc.extreme(&e)),
            None => (vec![0.0; e.n], (vec![0.0; e.n], vec![0; features])),
        };
        let tables = if profile.tables.is_empty() {
            Vec::new()
        } else {
            class_tables(&profile.cardinality, profile.classes, &e.codes, &e.label)
        };
        let (surprise, sample) = match &profile.label_model {
            Some(m) => Self::label_parts(m, &profile.cardinality, &e, &p, &pred, &inside, &probs),
            None => (Vec::new(), Vec::new()),
        };
        Ok(BlockParts {
            surprise,
            sample,
            e,
            p,
            pred,
            expected,
            inside,
            outside,
            anomaly,
            extreme,
            by_feature,
            tables,
        })
    }

    /// A block's surprising rows by feature code and (predicted, given) class, and its rows
    /// eligible for the likelihood-ratio sample with their tempered class probabilities.
    #[allow(clippy::too_many_arguments)]
    fn label_parts(
        m: &label::LabelModel,
        cardinality: &[usize],
        e: &Encoded,
        p: &[f32],
        pred: &[u16],
        inside: &[bool],
        probs: &[f32],
    ) -> (Vec<Vec<u64>>, Vec<LrRow>) {
        let k = m.forest.classes;
        let mut surprise: Vec<Vec<u64>> = cardinality.iter().map(|&c| vec![0; c * k * k]).collect();
        let mut sample = Vec::new();
        let t = m.temperature.unwrap_or(1.0);
        for i in 0..e.n {
            let y = e.label[i];
            if y == NO_CLASS || !inside[i] {
                continue;
            }
            let pi = f64::from(p[i]);
            if !pi.is_nan() && pi < m.cut {
                let pair = usize::from(pred[i]) * k + usize::from(y);
                for (t, codes) in surprise.iter_mut().zip(&e.codes) {
                    t[usize::from(codes[i]) * k * k + pair] += 1;
                }
            }
            if k <= label::MAX_LR_CLASSES {
                let mut row = [0f32; label::MAX_LR_CLASSES];
                row[..k].copy_from_slice(&probs[i * k..(i + 1) * k]);
                flip_lr::apply_temperature(&mut row[..k], t);
                sample.push(LrRow {
                    key: crate::rows::mix(
                        e.fp_exact[i] ^ (u64::from(y) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                    ),
                    label: y,
                    probs: row,
                });
            }
        }
        (surprise, sample)
    }

    /// Folds one window of blocks (batch rows from `first` on) in.
    ///
    /// # Errors
    /// A failure while encoding.
    pub fn update(&mut self, blocks: &[DataFrame], first: usize) -> Result<()> {
        use rayon::prelude::*;
        if first != self.out.rows.n {
            return Err(crate::error::Error::Internal(format!(
                "row pass: window at row {first} after {} rows",
                self.out.rows.n
            )));
        }
        let parts: Vec<BlockParts> = blocks
            .par_iter()
            .map(|df| self.block(df))
            .collect::<Result<_>>()?;
        let out = &mut self.out;
        for b in parts {
            out.rows.n += b.e.n;
            add_tables(&mut out.surprise_tables, b.surprise);
            out.lr_sample.extend(b.sample);
            trim_sample(&mut out.lr_sample, false);
            out.rows.label.extend_from_slice(&b.e.label);
            out.rows.fp_exact.extend_from_slice(&b.e.fp_exact);
            out.rows.fp_near.extend_from_slice(&b.e.fp_near);
            out.p_label.extend(b.p);
            out.predicted.extend(b.pred);
            out.anomaly.extend(b.anomaly);
            out.extreme.extend(b.extreme);
            out.support.extend(b.inside);
            for (a, x) in out.extreme_by_feature.iter_mut().zip(b.by_feature) {
                *a += x;
            }
            for (a, x) in out.outside_support.iter_mut().zip(b.outside) {
                *a += x;
            }
            if self.expected.is_empty() {
                self.expected = b
                    .expected
                    .iter()
                    .map(|t| vec![crate::stats::exact::ExactSum::new(); t.len()])
                    .collect();
            }
            for (a, x) in self.expected.iter_mut().zip(b.expected) {
                a.iter_mut().zip(x).for_each(|(s, y)| s.add(y));
            }
            add_tables(&mut out.tables, b.tables);
        }
        Ok(())
    }

    /// The fold's state, to ship to a merge ([`crate::shard`]).
    #[must_use]
    pub fn into_state(self) -> ScanState {
        ScanState {
            scan: self.out,
            expected: self.expected,
        }
    }

    /// Appends a state that covers the rows right after this fold's (the next unit of the
    /// batch): per-row state is concatenated, counts added and sums merged exactly.
    ///
    /// # Errors
    /// A state whose shape does not fit this profile.
    pub fn absorb(&mut self, state: ScanState) -> std::result::Result<(), String> {
        let bad = |what: &str| {
            Err(format!(
                "its row-pass state does not fit the baseline ({what})"
            ))
        };
        let features = self.profile.features.len();
        let s = state.scan;
        let n = s.rows.n;
        if [
            s.rows.label.len(),
            s.rows.fp_exact.len(),
            s.rows.fp_near.len(),
            s.p_label.len(),
            s.predicted.len(),
            s.anomaly.len(),
            s.extreme.len(),
            s.support.len(),
        ]
        .iter()
        .any(|&l| l != n)
        {
            return bad("per-row arrays");
        }
        if s.outside_support.len() != features || s.extreme_by_feature.len() != features {
            return bad("per-feature counts");
        }
        let shape_ok = |t: &[Vec<u64>]| {
            t.is_empty()
                || (t.len() == features
                    && t.iter()
                        .zip(&self.profile.cardinality)
                        .all(|(t, &c)| t.len() == c * self.profile.classes))
        };
        if !shape_ok(&s.tables)
            || !(state.expected.is_empty()
                || (state.expected.len() == features
                    && state
                        .expected
                        .iter()
                        .zip(&self.profile.cardinality)
                        .all(|(t, &c)| t.len() == c * self.profile.classes)))
        {
            return bad("class tables");
        }
        let k = self.profile.classes;
        if !(s.surprise_tables.is_empty()
            || (s.surprise_tables.len() == features
                && s.surprise_tables
                    .iter()
                    .zip(&self.profile.cardinality)
                    .all(|(t, &c)| t.len() == c * k * k)))
            || s.lr_sample.len() > 2 * LR_ROWS
            || s.lr_sample.iter().any(|r| usize::from(r.label) >= k.max(1))
        {
            return bad("label-test state");
        }
        let out = &mut self.out;
        out.rows.n += n;
        add_tables(&mut out.surprise_tables, s.surprise_tables);
        out.lr_sample.extend(s.lr_sample);
        trim_sample(&mut out.lr_sample, false);
        out.rows.label.extend_from_slice(&s.rows.label);
        out.rows.fp_exact.extend_from_slice(&s.rows.fp_exact);
        out.rows.fp_near.extend_from_slice(&s.rows.fp_near);
        out.p_label.extend_from_slice(&s.p_label);
        out.predicted.extend_from_slice(&s.predicted);
        out.anomaly.extend_from_slice(&s.anomaly);
        out.extreme.extend_from_slice(&s.extreme);
        out.support.extend_from_slice(&s.support);
        for (a, x) in out.extreme_by_feature.iter_mut().zip(&s.extreme_by_feature) {
            *a += x;
        }
        for (a, x) in out.outside_support.iter_mut().zip(&s.outside_support) {
            *a += x;
        }
        add_tables(&mut out.tables, s.tables);
        if !state.expected.is_empty() {
            if self.expected.is_empty() {
                self.expected = state.expected;
            } else {
                for (all, part) in self.expected.iter_mut().zip(&state.expected) {
                    all.iter_mut().zip(part).for_each(|(a, x)| a.merge(x));
                }
            }
        }
        Ok(())
    }

    /// The scan: per-row state in batch order, and the likelihood-ratio sample in key
    /// order.
    #[must_use]
    pub fn finish(mut self) -> Scan {
        let out = &mut self.out;
        out.expected_tables = self
            .expected
            .iter()
            .map(|t| t.iter().map(crate::stats::exact::ExactSum::value).collect())
            .collect();
        let mut sample = std::mem::take(&mut out.lr_sample);
        trim_sample(&mut sample, true);
        sample.sort_unstable_by(LrRow::order);
        let k = self.profile.classes;
        out.lr_labels = sample.iter().map(|r| r.label).collect();
        out.lr_probs = sample
            .iter()
            .flat_map(|r| r.probs[..k.min(label::MAX_LR_CLASSES)].iter().copied())
            .collect();
        self.out
    }
}

/// The row pass's state over some rows of a batch: the per-row arrays and counts of a
/// [`Scan`] (without the likelihood-ratio sample, which is drawn from the whole batch), and
/// the exact sums of the model's expected class counts.
#[derive(Debug, Clone, Default)]
pub struct ScanState {
    /// Per-row state and counts.
    pub scan: Scan,
    /// Exact expected class counts per feature and code.
    pub expected: Vec<Vec<crate::stats::exact::ExactSum>>,
}

/// Which rows a fired finding points at.
#[derive(Debug, Clone)]
///
/// Rate detectors flag more rows than the attack changed (their trusted rate of flags comes
/// along); `limit` keeps the estimated excess, most suspicious first, so the quarantine holds
/// about as many rows as the finding says are extra.
pub enum RowSelector {
    /// Rows whose label the reference model finds surprising.
    Surprising {
        /// Rows to keep.
        limit: usize,
    },
    /// Rows with an anomaly score above the trusted cut.
    Anomalous {
        /// Rows to keep.
        limit: usize,
    },
    /// Rows with an extreme-value score above the trusted cut.
    Extreme {
        /// Rows to keep.
        limit: usize,
    },
    /// Repeated rows (second and later copies) of the exact or near fingerprint.
    Duplicates {
        /// Near (codes) rather than exact fingerprints.
        near: bool,
    },
    /// Rows matching a trusted row's cell with another label.
    Conflicting {
        /// Rows to keep.
        limit: usize,
    },
    /// Explicit rows (trigger and point-mass values).
    Listed(Vec<u32>),
    /// Rows of one segment of a feature labelled with one class that the reference model
    /// does not back (probability of the label below one half, or no model).
    Segment {
        /// Feature index.
        feature: usize,
        /// The segment's codes.
        codes: Vec<usize>,
        /// The class.
        class: u16,
        /// Rows to keep.
        limit: usize,
    },
}

/// Candidates of every detector, with the rows each one points at.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Candidates, in detector order.
    pub candidates: Vec<Candidate>,
    /// Per candidate index, its rows.
    pub selectors: Vec<Option<RowSelector>>,
    /// Detectors that could not run, and why.
    pub notes: Vec<String>,
}

impl Outcome {
    fn push(&mut self, c: Candidate, rows: Option<RowSelector>) {
        self.candidates.push(c);
        self.selectors.push(rows);
    }
}

/// The features with the largest nonzero counts, most first (ties by name), at most
/// `take` of them, as "`name` in COUNT{unit}"; and how many features had a nonzero count.
pub(crate) fn top_features(
    counts: &[u64],
    features: &[String],
    take: usize,
    unit: &str,
) -> (Vec<String>, usize) {
    let mut worst: Vec<(u64, &String)> = counts
        .iter()
        .zip(features)
        .filter(|(c, _)| **c > 0)
        .map(|(&c, f)| (c, f))
        .collect();
    worst.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    let list = worst
        .iter()
        .take(take)
        .map(|(c, f)| format!("`{f}` in {c}{unit}"))
        .collect();
    (list, worst.len())
}

/// Runs every detector on a scanned batch.
///
/// # Errors
/// A failure while re-reading a column for value detectors.
pub fn detect(
    baseline: &Baseline,
    policy: &Policy,
    summary: &BatchSummary,
    scan: &Scan,
    rows: BatchRows<'_>,
) -> Result<Outcome> {
    let mut out = Outcome::default();
    let Some(profile) = &baseline.poison else {
        return Ok(out);
    };
    if baseline.label.is_some() && profile.label_model.is_none() {
        out.notes.push(
            "no reference model of the label was pinned (fewer than 200 labelled trusted rows, fewer than two classes with 10 rows, or more than 20 classes): the label-consistency detector did not run".to_owned(),
        );
    }
    if baseline.label.is_some() && profile.tables.is_empty() {
        out.notes.push(
            "the label has more than 20 classes: the segment, trigger and class-conditional detectors did not run".to_owned(),
        );
    }
    let outside: u64 = scan
        .support
        .iter()
        .zip(&scan.rows.label)
        .filter(|&(&inside, &y)| !inside && y != NO_CLASS)
        .count() as u64;
    if profile.label_model.is_some() && outside > 0 {
        let labelled = scan.rows.label.iter().filter(|&&y| y != NO_CLASS).count();
        let (list, _) = top_features(&scan.outside_support, &profile.features, 3, " rows");
        out.notes.push(format!(
            "the label test judged {} of {labelled} labelled rows: {outside} hold a value outside the trusted support (a null, an unseen category or a number far outside the range: {}), where the reference model says nothing about the label",
            labelled as u64 - outside,
            list.join(", ")
        ));
    }
    // Three independent groups run side by side; their candidates are appended in a fixed
    // order, so the outcome does not depend on scheduling.
    type Found = Vec<(Candidate, Option<RowSelector>)>;
    let labels = || -> Found {
        let mut v: Found = Vec::new();
        if let Some(m) = &profile.label_model {
            v.extend(label::candidates(baseline, profile, m, scan, policy));
        }
        if !scan.tables.is_empty() {
            v.extend(segment::candidates(baseline, profile, scan, policy));
            v.extend(
                class_drift::candidates(baseline, profile, scan, policy)
                    .into_iter()
                    .map(|c| (c, None)),
            );
        }
        v
    };
    let per_row = || -> Found {
        let mut v: Found = Vec::new();
        if let Some(a) = &profile.anomaly {
            v.extend(
                anomaly::candidates(a, &profile.features, scan, policy)
                    .into_iter()
                    .map(|(c, s)| (c, Some(s))),
            );
        }
        v.extend(
            duplicates::candidates(&profile.duplicates, scan, policy)
                .into_iter()
                .map(|(c, s)| (c, Some(s))),
        );
        v
    };
    let values = || -> Result<Found> {
        let sketches = point_mass::sketch(baseline, profile, summary, rows)?;
        let exact = point_mass::resolve(baseline, scan, &sketches, rows)?;
        let heavy = point_mass::heavy_values(baseline, scan, &exact);
        let mut v: Found = point_mass::candidates(baseline, &heavy, scan, policy)
            .into_iter()
            .map(|(c, s)| (c, Some(s)))
            .collect();
        v.extend(
            trigger::candidates(baseline, profile, summary, &heavy, scan, rows, policy)?
                .into_iter()
                .map(|(c, s)| (c, Some(s))),
        );
        Ok(v)
    };
    let (a, (b, c)) = rayon::join(labels, || rayon::join(per_row, values));
    for (cand, sel) in a.into_iter().chain(b).chain(c?) {
        out.push(cand, sel);
    }
    Ok(out)
}

/// One row of the quarantine file.
#[derive(Debug, Clone, PartialEq)]
pub struct QuarantineRow {
    /// Row index in batch order.
    pub row: u64,
    /// The row's id, when an id column was pinned.
    pub id: Option<String>,
    /// Finding codes that flagged it, sorted.
    pub codes: Vec<String>,
    /// Suspicion score: per flagging finding, a score in (0, 1], summed.
    pub score: f64,
}

/// The per-row contribution of one selector, in (0, 1].
fn row_score(sel: &RowSelector, scan: &Scan, i: usize) -> f64 {
    match sel {
        RowSelector::Surprising { .. } | RowSelector::Segment { .. } => {
            let p = f64::from(scan.p_label[i]);
            if p.is_nan() {
                1.0
            } else {
                1.0 - p.clamp(0.0, 1.0)
            }
        }
        RowSelector::Anomalous { .. } => {
            let a = f64::from(scan.anomaly[i]);
            a / (1.0 + a)
        }
        RowSelector::Extreme { .. } => {
            let a = f64::from(scan.extreme[i]);
            a / (1.0 + a)
        }
        _ => 1.0,
    }
}

/// Rows a selector points at, in batch order, at most its limit (the most suspicious).
/// `listed` holds the rows of a segment selector, found by [`segment_rows`].
fn select(
    sel: &RowSelector,
    profile: &PoisonProfile,
    scan: &Scan,
    listed: Option<&Vec<u32>>,
) -> Vec<u32> {
    let mut rows = match (sel, listed) {
        (RowSelector::Segment { .. }, Some(rows)) => rows.clone(),
        _ => select_all(sel, profile, scan),
    };
    let limit = match sel {
        RowSelector::Surprising { limit }
        | RowSelector::Anomalous { limit }
        | RowSelector::Extreme { limit }
        | RowSelector::Conflicting { limit }
        | RowSelector::Segment { limit, .. } => *limit,
        _ => usize::MAX,
    };
    if rows.len() > limit {
        let mut scored: Vec<(f64, u32)> = rows
            .iter()
            .map(|&r| (row_score(sel, scan, r as usize), r))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        rows = scored[..limit].iter().map(|s| s.1).collect();
        rows.sort_unstable();
    }
    rows
}

fn select_all(sel: &RowSelector, profile: &PoisonProfile, scan: &Scan) -> Vec<u32> {
    let n = scan.rows.n;
    match sel {
        RowSelector::Surprising { .. } => match &profile.label_model {
            Some(m) => (0..n)
                .filter(|&i| label::is_surprising(m, scan, i))
                .map(|i| i as u32)
                .collect(),
            None => Vec::new(),
        },
        RowSelector::Anomalous { .. } => (0..n)
            .filter(|&i| scan.anomaly[i] > 1.0)
            .map(|i| i as u32)
            .collect(),
        RowSelector::Extreme { .. } => (0..n)
            .filter(|&i| scan.extreme[i] > 1.0)
            .map(|i| i as u32)
            .collect(),
        RowSelector::Duplicates { near } => duplicates::repeated_rows(scan, *near),
        RowSelector::Conflicting { .. } => duplicates::conflicting_rows(&profile.duplicates, scan),
        RowSelector::Listed(rows) => rows.clone(),
        // Found by a second read of the segment's column ([`segment_rows`]).
        RowSelector::Segment { .. } => Vec::new(),
    }
}

/// The rows of each segment selector among `wanted` (candidate index to selector): rows of
/// the segment's codes labelled with its class that the reference model does not back
/// (probability of the label below one half, or no model). The row pass keeps no feature
/// codes, so the segments' columns are read again, once for all of them, only when a segment
/// finding fired.
///
/// # Errors
/// A batch that can no longer be read.
fn segment_rows(
    baseline: &Baseline,
    scan: &Scan,
    wanted: &[(usize, &RowSelector)],
    rows_of: BatchRows<'_>,
) -> Result<BTreeMap<usize, Vec<u32>>> {
    let mut out: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
    let mut features: Vec<usize> = wanted
        .iter()
        .filter_map(|(_, s)| match s {
            RowSelector::Segment { feature, .. } => Some(*feature),
            _ => None,
        })
        .collect();
    features.sort_unstable();
    features.dedup();
    if features.is_empty() {
        return Ok(out);
    }
    let encoder = Encoder::new(baseline, None);
    let names: Vec<String> = features
        .iter()
        .filter_map(|&j| encoder.features.get(j).map(|f| f.name.clone()))
        .collect();
    let mut offset = 0usize;
    for_each_block(rows_of, &names, |df| {
        let mut codes: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
        for &j in &features {
            codes.insert(j, encoder.feature_codes(j, df)?);
        }
        for &(cand, sel) in wanted {
            let RowSelector::Segment {
                feature,
                codes: seg,
                class,
                ..
            } = sel
            else {
                continue;
            };
            let mut member = [false; 256];
            for &c in seg {
                if let Some(m) = member.get_mut(c) {
                    *m = true;
                }
            }
            let col = &codes[feature];
            let rows = out.entry(cand).or_default();
            for (i, &c) in col.iter().enumerate() {
                let r = offset + i;
                let (Some(&y), Some(&p)) = (scan.rows.label.get(r), scan.p_label.get(r)) else {
                    continue;
                };
                if member[usize::from(c)] && y == *class && (p.is_nan() || p < 0.5) {
                    rows.push(r as u32);
                }
            }
        }
        offset += df.height();
        Ok(())
    })?;
    if offset != scan.rows.n {
        return Err(crate::error::Error::Internal(format!(
            "segment rows: the batch read {offset} rows, the row pass {}",
            scan.rows.n
        )));
    }
    Ok(out)
}

/// Attaches the rows behind each fired poison finding: every row flagged by a deny finding
/// with its codes and score, and on each finding (deny or warn) its ten highest-scoring rows.
///
/// `fired` maps a candidate index to the index of its finding in `findings`.
///
/// # Errors
/// A batch that can no longer be read (for the rows of a segment finding).
pub fn quarantine(
    baseline: &Baseline,
    scan: &Scan,
    outcome: &Outcome,
    fired: &BTreeMap<usize, usize>,
    findings: &mut [Finding],
    rows_of: BatchRows<'_>,
) -> Result<Vec<QuarantineRow>> {
    let Some(profile) = &baseline.poison else {
        return Ok(Vec::new());
    };
    let wanted: Vec<(usize, &RowSelector)> = fired
        .keys()
        .filter_map(|&c| outcome.selectors.get(c)?.as_ref().map(|s| (c, s)))
        .collect();
    let listed = segment_rows(baseline, scan, &wanted, rows_of)?;
    let mut per_row: BTreeMap<u32, (Vec<String>, f64)> = BTreeMap::new();
    for (&cand, &finding) in fired {
        let Some(Some(sel)) = outcome.selectors.get(cand) else {
            continue;
        };
        let Some(f) = findings.get_mut(finding) else {
            continue;
        };
        let rows = select(sel, profile, scan, listed.get(&cand));
        let mut scored: Vec<(f64, u32)> = rows
            .iter()
            .map(|&r| (row_score(sel, scan, r as usize), r))
            .collect();
        // The quarantine holds what blocked; warnings still list their top rows below.
        if f.severity == crate::finding::Severity::Deny {
            for &(s, r) in &scored {
                let e = per_row.entry(r).or_default();
                if !e.0.contains(&f.code) {
                    e.0.push(f.code.clone());
                    e.1 += s;
                }
            }
        }
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        f.rows = scored
            .iter()
            .take(10)
            .map(|&(s, r)| RowRef {
                row: u64::from(r),
                id: None,
                score: crate::finding::tidy(s),
            })
            .collect();
        f.evidence.insert("rows_flagged".into(), rows.len() as f64);
    }
    Ok(per_row
        .into_iter()
        .map(|(row, (mut codes, score))| {
            codes.sort();
            QuarantineRow {
                row: u64::from(row),
                id: None,
                codes,
                score: crate::finding::tidy(score),
            }
        })
        .collect())
}

/// The text of the id column at the given rows (batch order), read in one pass over that
/// column alone.
///
/// # Errors
/// An id column that cannot be read as text, or a batch that can no longer be read.
pub fn ids_of(
    rows_of: BatchRows<'_>,
    id: &str,
    mut rows: Vec<u64>,
) -> Result<BTreeMap<u64, String>> {
    rows.sort_unstable();
    rows.dedup();
    let mut out = BTreeMap::new();
    if rows.is_empty() {
        return Ok(out);
    }
    let mut next = 0usize;
    let mut offset = 0u64;
    for_each_block(rows_of, &[id.to_owned()], |df| {
        let Ok(col) = df.column(id) else {
            offset += df.height() as u64;
            return Ok(());
        };
        crate::summary::for_each_str_chunk(col.as_materialized_series(), |arr| {
            let len = arr.len() as u64;
            while next < rows.len() && rows[next] < offset + len {
                let i = (rows[next] - offset) as usize;
                if let Some(v) = arr.get(i) {
                    out.insert(rows[next], v.to_owned());
                }
                next += 1;
            }
            offset += len;
        })
    })?;
    Ok(out)
}

/// Calls `f` on every block of the batch in batch order, with only `columns` read.
///
/// # Errors
/// A batch that can no longer be read, or an error `f` returns.
pub(crate) fn for_each_block(
    rows: BatchRows<'_>,
    columns: &[String],
    mut f: impl FnMut(&DataFrame) -> Result<()>,
) -> Result<()> {
    rows.for_each_window(Some(columns), &mut |blocks, _| {
        for df in blocks {
            f(df)?;
        }
        Ok(())
    })
}

/// File format of the quarantine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuarantineFormat {
    /// Apache Parquet.
    Parquet,
    /// CSV with a header.
    Csv,
}

impl QuarantineFormat {
    /// The format named by a path's extension.
    ///
    /// # Errors
    /// An extension other than `.parquet` or `.csv`.
    pub fn from_path(flag: &str, path: &std::path::Path) -> Result<Self> {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("parquet") => Ok(Self::Parquet),
            Some(e) if e.eq_ignore_ascii_case("csv") => Ok(Self::Csv),
            _ => Err(crate::Error::Usage(format!(
                "{flag} {} must end in .parquet or .csv",
                path.display()
            ))),
        }
    }
}

/// The quarantine as file bytes: columns `row` (u64), `id` (text, null without an id column),
/// `codes` (`;`-separated) and `score`.
///
/// # Errors
/// A failure of the writer (a bug).
pub fn render_quarantine(rows: &[QuarantineRow], format: QuarantineFormat) -> Result<Vec<u8>> {
    use polars::prelude::Column;
    frame_bytes(
        rows.len(),
        vec![
            Column::new(
                "row".into(),
                rows.iter().map(|r| r.row).collect::<Vec<u64>>(),
            ),
            Column::new(
                "id".into(),
                rows.iter()
                    .map(|r| r.id.clone())
                    .collect::<Vec<Option<String>>>(),
            ),
            Column::new(
                "codes".into(),
                rows.iter()
                    .map(|r| r.codes.join(";"))
                    .collect::<Vec<String>>(),
            ),
            Column::new(
                "score".into(),
                rows.iter().map(|r| r.score).collect::<Vec<f64>>(),
            ),
        ],
        format,
    )
}

/// Writes columns as Parquet or CSV (with a header) into memory.
fn frame_bytes(
    height: usize,
    columns: Vec<polars::prelude::Column>,
    format: QuarantineFormat,
) -> Result<Vec<u8>> {
    use polars::prelude::*;
    let internal = |e: PolarsError| crate::Error::Internal(format!("writing rows: {e}"));
    let mut df = DataFrame::new(height, columns).map_err(internal)?;
    let mut buf = Vec::new();
    match format {
        QuarantineFormat::Parquet => {
            ParquetWriter::new(&mut buf)
                .finish(&mut df)
                .map_err(internal)?;
        }
        QuarantineFormat::Csv => {
            CsvWriter::new(&mut buf)
                .include_header(true)
                .finish(&mut df)
                .map_err(internal)?;
        }
    }
    Ok(buf)
}

/// A suspicion score for every row, for ranking (`check --row-scores`): rows in the
/// quarantine score 1 plus their quarantine score; every row also gets half of `1 - P(label
/// | x)` under the reference model and half of `a / (1 + a)` for its anomaly score `a`, so
/// rows no finding flagged are still ordered by how unusual they are.
#[must_use]
pub fn row_scores(scan: &Scan, quarantine: &[QuarantineRow]) -> Vec<f64> {
    let mut out: Vec<f64> = (0..scan.rows.n)
        .map(|i| {
            let p = f64::from(scan.p_label[i]);
            let label = if p.is_nan() {
                0.0
            } else {
                1.0 - p.clamp(0.0, 1.0)
            };
            let a = f64::from(scan.anomaly[i]).max(0.0);
            0.5 * label + 0.5 * a / (1.0 + a)
        })
        .collect();
    for q in quarantine {
        if let Some(s) = out.get_mut(q.row as usize) {
            *s += 1.0 + q.score;
        }
    }
    // Every term comes from one row's own arithmetic, so the scores do not depend on how
    // the batch was sliced: no rounding pass is needed for byte-identical output.
    out
}

/// Every row's score as file bytes: columns `row`, `id` and `score`.
///
/// # Errors
/// A failure of the writer (a bug).
pub fn render_scores(
    scores: &[f64],
    ids: Option<&BTreeMap<u64, String>>,
    format: QuarantineFormat,
) -> Result<Vec<u8>> {
    use polars::prelude::Column;
    let n = scores.len();
    frame_bytes(
        n,
        vec![
            Column::new("row".into(), (0..n as u64).collect::<Vec<u64>>()),
            Column::new(
                "id".into(),
                (0..n as u64)
                    .map(|i| ids.and_then(|m| m.get(&i).cloned()))
                    .collect::<Vec<Option<String>>>(),
            ),
            Column::new("score".into(), scores.to_vec()),
        ],
        format,
    )
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    fn rows(n: usize, seed: u64) -> Vec<LrRow> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                // Few distinct keys among many rows: ties (identical rows) are common.
                let key = crate::rows::mix(rng.random_range(0..(n as u64 / 2)));
                let label = (key % 3) as u16;
                let mut probs = [0f32; label::MAX_LR_CLASSES];
                probs[usize::from(label)] = (key % 1000) as f32 / 1000.0;
                LrRow { key, label, probs }
            })
            .collect()
    }

    fn finished(mut sample: Vec<LrRow>) -> Vec<LrRow> {
        trim_sample(&mut sample, true);
        sample.sort_unstable_by(LrRow::order);
        sample
    }

    #[test]
    fn the_label_sample_is_the_same_for_any_split_and_merge_order() {
        let all = rows(3 * LR_ROWS + 17, 5);
        let one = finished({
            let mut s = Vec::new();
            for chunk in all.chunks(4096) {
                s.extend_from_slice(chunk);
                trim_sample(&mut s, false);
            }
            s
        });
        assert_eq!(one.len(), LR_ROWS);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        for _ in 0..4 {
            // Random cut points into 1-16 parts, including empty and one-row parts.
            let parts = rng.random_range(1..=16);
            let mut cuts: Vec<usize> = (0..parts - 1)
                .map(|_| rng.random_range(0..=all.len()))
                .collect();
            cuts.push(0);
            cuts.push(all.len());
            cuts.push(1);
            cuts.sort_unstable();
            let mut states: Vec<Vec<LrRow>> = cuts
                .windows(2)
                .map(|w| {
                    let mut s = all[w[0]..w[1]].to_vec();
                    trim_sample(&mut s, false);
                    s
                })
                .collect();
            // Merge in a random order, pairwise.
            while states.len() > 1 {
                let a = states.swap_remove(rng.random_range(0..states.len()));
                let i = rng.random_range(0..states.len());
                states[i].extend(a);
                trim_sample(&mut states[i], false);
            }
            assert_eq!(finished(states.pop().unwrap()), one);
        }
        // A batch with fewer eligible rows than the sample holds is tested on all of them.
        let few = rows(1000, 6);
        assert_eq!(finished(few.clone()).len(), few.len());
    }
}
