//! The row pass: every block of a batch is encoded once and scored by the pinned models, and
//! each detector's state is folded in ([`ScanFold`]); parts of a sharded check carry the
//! fold's state ([`ScanState`]).

use polars::prelude::DataFrame;

use super::{PoisonProfile, Rows, anomaly, class_tables, flip_lr, label};
use crate::baseline::Baseline;
use crate::error::Result;
use crate::rows::{Encoded, Encoder, NO_CLASS};
use crate::source::Rows as BatchRows;

/// Most rows the likelihood-ratio label test is fitted on (an even stride through the
/// batch beyond): its standard error at this size is far below any flip share worth a
/// finding, and the fit stays a fraction of a second.
pub const LR_ROWS: usize = 50_000;

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
