//! The row pass: every block of a batch is encoded once and scored by the pinned models
//! ([`Block`]), and every row-level accumulator of the registry ([`super::States`]) folds it
//! in ([`ScanFold`]). Parts of a sharded check carry the fold's state ([`ScanState`]).
//!
//! Nothing is kept per row: the states are counts, tables, bounded samples and sketches. The
//! rows behind a finding that fired, and every row's score for `--row-scores`, come from a
//! second read that encodes and scores the rows again with the same [`BlockScorer`]
//! ([`super::second_pass`]).

use polars::prelude::DataFrame;

use super::inconsistency::MAX_LR_CLASSES;
use super::{PoisonProfile, States, anomaly, label};
use crate::error::Result;
use crate::poison::BaselineView;
use crate::rows::{Encoded, Encoder, NO_CLASS};
use crate::source::Rows as BatchRows;

/// Most rows the likelihood-ratio label test is fitted on (a bottom-k sample of the batch
/// beyond): its standard error at this size is far below any flip share worth a finding,
/// and the fit stays a fraction of a second.
pub const LR_ROWS: usize = 50_000;

/// What the row-level accumulators read of the baseline.
#[derive(Clone, Copy)]
pub struct Pinned<'a> {
    /// The baseline.
    pub baseline: BaselineView<'a>,
    /// Its row-level profile.
    pub profile: &'a PoisonProfile,
    /// The trusted membership filter of the duplicate detectors, decoded.
    pub filter: Option<&'a super::duplicates::Bloom>,
}

/// One block of rows, encoded and scored by the pinned models: what every row-level
/// accumulator reads.
#[derive(Debug, Clone)]
pub struct Block {
    /// Batch row of the first row (counted from the start of the rows a state covers).
    pub first: u64,
    /// The encoded rows.
    pub e: Encoded,
    /// Probability the reference model gives each row's label (NaN when unlabelled or
    /// without a model).
    pub p: Vec<f32>,
    /// The model's most likely class per row.
    pub pred: Vec<u16>,
    /// Every class's probability per row, row-major (empty without a model).
    pub probs: Vec<f32>,
    /// Per feature, the model's expected class counts by code over the labelled rows.
    pub expected: Vec<Vec<f64>>,
    /// Per row, whether every value lies inside the trusted support.
    pub inside: Vec<bool>,
    /// Per feature, the rows it put outside the support.
    pub outside: Vec<u64>,
    /// Anomaly score per row, in units of the trusted cut.
    pub anomaly: Vec<f32>,
    /// Extreme-value score per row, in units of the trusted cut.
    pub extreme: Vec<f32>,
    /// Per feature, the rows past the extreme-value cut whose largest excess it holds.
    pub extreme_by_feature: Vec<u64>,
    /// Stitched-rows weight per row (empty without the test).
    pub stitched: Vec<f32>,
    /// The weight a row must pass to be listed (infinite without the test).
    pub stitched_cut: f64,
    /// The largest key the label test's sample can still take (the largest key of the
    /// fold's bottom k once it is full; `u64::MAX` before): rows above it are not sampled,
    /// which changes nothing, as keys above it cannot enter the final bottom k.
    pub sample_below: u64,
}

/// What the row-level pass over a batch kept, ready for the detectors.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// Rows.
    pub n: usize,
    /// Every accumulator's merged state.
    pub states: States,
    /// Per-feature class tables of the batch (from [`super::tables::ClassTables`]; empty
    /// without them).
    pub tables: Vec<Vec<u64>>,
    /// Per-feature expected class counts by code under the reference model (empty without
    /// one).
    pub expected_tables: Vec<Vec<f64>>,
    /// The likelihood-ratio sample's labels, in key order.
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
    pub probs: [f32; MAX_LR_CLASSES],
}

impl LrRow {
    pub(crate) fn order(a: &Self, b: &Self) -> std::cmp::Ordering {
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
pub(crate) fn trim_sample(sample: &mut Vec<LrRow>, exact: bool) {
    if sample.len() > 2 * LR_ROWS || (exact && sample.len() > LR_ROWS) {
        sample.select_nth_unstable_by(LR_ROWS, LrRow::order);
        sample.truncate(LR_ROWS);
    }
}

/// Scores every row of a batch in one pass. `None` when the baseline has no poison profile or
/// the batch lacks one of its features (that is already a schema finding).
///
/// # Errors
/// A failure while reading or encoding.
pub fn scan(
    baseline: &BaselineView<'_>,
    usable: &[String],
    rows: BatchRows<'_>,
) -> Result<Option<Scan>> {
    let Some(mut fold) = ScanFold::new(baseline, usable) else {
        return Ok(None);
    };
    rows.for_each_window(None, &mut |blocks, first| fold.update(blocks, first))?;
    Ok(Some(fold.finish()))
}

/// Encodes and scores blocks of rows with the pinned models: the row pass's view of a
/// block, and the view of the later reads that list the rows behind a finding.
pub struct BlockScorer<'a> {
    profile: &'a PoisonProfile,
    encoder: Encoder,
    scorer: Option<anomaly::Scorer>,
    support: Option<label::Support>,
}

impl<'a> BlockScorer<'a> {
    /// A scorer for `baseline`'s poison profile, or `None` when it has none or `usable`
    /// (every baseline column when `None`) lacks one of its features.
    #[must_use]
    pub fn new(baseline: &BaselineView<'a>, usable: Option<&[String]>) -> Option<Self> {
        let profile = baseline.poison?;
        let encoder = Encoder::new(baseline, usable);
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
        Some(Self {
            profile,
            encoder,
            scorer,
            support,
        })
    }

    /// The columns a block must hold: every feature, and the label.
    #[must_use]
    pub fn columns(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .encoder
            .features
            .iter()
            .map(|f| f.name.clone())
            .collect();
        names.extend(self.encoder.label.clone());
        names
    }

    /// Encodes and scores one block whose first row is batch row `first`; `sample_below` as
    /// [`Block::sample_below`].
    ///
    /// # Errors
    /// A feature or the label missing from the block, or a column that cannot be cast.
    pub fn block(&self, df: &DataFrame, first: u64, sample_below: u64) -> Result<Block> {
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
        let (anomaly, (extreme, extreme_by_feature)) = match &self.scorer {
            Some(sc) => (sc.score(&e), sc.extreme(&e)),
            None => (vec![0.0; e.n], (vec![0.0; e.n], vec![0; features])),
        };
        let stitched = profile
            .stitched
            .as_ref()
            .map_or_else(Vec::new, |s| s.weights(&e));
        let stitched_cut = profile
            .stitched
            .as_ref()
            .map_or(f64::INFINITY, |s| s.row_cut);
        Ok(Block {
            stitched,
            stitched_cut,
            first,
            sample_below,
            e,
            p,
            pred,
            probs,
            expected,
            inside,
            outside,
            anomaly,
            extreme,
            extreme_by_feature,
        })
    }
}

/// The row pass as a fold over windows of blocks ([`crate::source::stream`]): each block is
/// encoded, scored and folded into fresh accumulator states in parallel, and the states are
/// merged in batch order; nothing of the decoded rows is kept, and the state does not grow
/// with the rows.
pub struct ScanFold<'a> {
    baseline: BaselineView<'a>,
    profile: &'a PoisonProfile,
    filter: Option<super::duplicates::Bloom>,
    scorer: BlockScorer<'a>,
    n: usize,
    states: States,
    /// See [`Block::sample_below`].
    sample_below: u64,
}

impl<'a> ScanFold<'a> {
    /// A fold for `baseline`'s poison profile, or `None` when it has none or `usable` lacks
    /// one of its features.
    #[must_use]
    pub fn new(baseline: &BaselineView<'a>, usable: &[String]) -> Option<Self> {
        let profile = baseline.poison?;
        let scorer = BlockScorer::new(baseline, Some(usable))?;
        let filter = profile.duplicates.unsealed_filter();
        let states = States::new(&Pinned {
            baseline: *baseline,
            profile,
            filter: filter.as_ref(),
        });
        Some(Self {
            baseline: *baseline,
            profile,
            filter,
            scorer,
            n: 0,
            states,
            sample_below: u64::MAX,
        })
    }

    /// What the accumulators read of the baseline.
    #[must_use]
    pub fn pinned(&self) -> Pinned<'_> {
        Pinned {
            baseline: self.baseline,
            profile: self.profile,
            filter: self.filter.as_ref(),
        }
    }

    /// Encodes and scores one block whose first row is batch row `first` (what every
    /// accumulator's `update` reads).
    ///
    /// # Errors
    /// A feature or the label missing from the block, or a column that cannot be cast.
    pub fn block(&self, df: &DataFrame, first: u64) -> Result<Block> {
        self.scorer.block(df, first, self.sample_below)
    }

    /// Folds one window of blocks (batch rows from `first` on) in.
    ///
    /// # Errors
    /// A failure while encoding.
    pub fn update(&mut self, blocks: &[DataFrame], first: usize) -> Result<()> {
        use rayon::prelude::*;
        if first != self.n {
            return Err(crate::error::Error::Internal(format!(
                "row pass: window at row {first} after {} rows",
                self.n
            )));
        }
        let pinned = Pinned {
            baseline: self.baseline,
            profile: self.profile,
            filter: self.filter.as_ref(),
        };
        let mut firsts = Vec::with_capacity(blocks.len());
        let mut at = first as u64;
        for df in blocks {
            firsts.push(at);
            at += df.height() as u64;
        }
        let parts: Vec<(usize, States)> = blocks
            .par_iter()
            .zip(firsts)
            .map(|(df, at)| {
                let b = self.block(df, at)?;
                let mut s = States::new(&pinned);
                s.update(&pinned, &b);
                Ok((b.e.n, s))
            })
            .collect::<Result<_>>()?;
        let mut merged = States::new(&pinned);
        for (n, s) in parts {
            self.n += n;
            merged
                .merge(&pinned, s)
                .map_err(crate::error::Error::Internal)?;
        }
        self.states
            .merge(&pinned, merged)
            .map_err(crate::error::Error::Internal)?;
        if let Some(l) = &self.states.label
            && l.sample.len() >= LR_ROWS
        {
            // The k-th smallest key so far: only rows at or below it can still enter.
            let mut keys: Vec<u64> = l.sample.iter().map(|r| r.key).collect();
            let (_, kth, _) = keys.select_nth_unstable(LR_ROWS - 1);
            self.sample_below = *kth;
        }
        Ok(())
    }

    /// A copy of the fold's state so far (for the ledger, before the fold is decided).
    #[must_use]
    pub fn state(&self) -> ScanState {
        ScanState {
            n: self.n,
            states: self.states.clone(),
        }
    }

    /// The fold's state, to ship to a merge ([`crate::shard`]).
    #[must_use]
    pub fn into_state(self) -> ScanState {
        ScanState {
            n: self.n,
            states: self.states,
        }
    }

    /// Merges a state that covers the rows right after this fold's (the next unit of the
    /// batch).
    ///
    /// # Errors
    /// A state whose shape does not fit this profile.
    pub fn absorb(&mut self, state: ScanState) -> std::result::Result<(), String> {
        let bad = |what: String| format!("its row-pass state does not fit the baseline ({what})");
        let pinned = Pinned {
            baseline: self.baseline,
            profile: self.profile,
            filter: self.filter.as_ref(),
        };
        let mut states = state.states;
        states.shift_rows(self.n as u64);
        self.states.merge(&pinned, states).map_err(bad)?;
        self.n += state.n;
        Ok(())
    }

    /// The scan: the row count, the merged states, and the likelihood-ratio sample in key
    /// order.
    #[must_use]
    pub fn finish(mut self) -> Scan {
        let k = self.profile.classes;
        let (mut lr_labels, mut lr_probs) = (Vec::new(), Vec::new());
        if let Some(l) = &mut self.states.label {
            let mut sample = std::mem::take(&mut l.sample);
            trim_sample(&mut sample, true);
            sample.sort_unstable_by(LrRow::order);
            lr_labels = sample.iter().map(|r| r.label).collect();
            lr_probs = sample
                .iter()
                .flat_map(|r| r.probs[..k.min(MAX_LR_CLASSES)].iter().copied())
                .collect();
            l.sample = sample;
        }
        let (tables, expected_tables) = match &self.states.tables {
            Some(t) => (t.tables.clone(), t.expected_values()),
            None => (Vec::new(), Vec::new()),
        };
        Scan {
            n: self.n,
            states: self.states,
            tables,
            expected_tables,
            lr_labels,
            lr_probs,
        }
    }
}

/// The row pass's state over some rows of a batch: its row count and the accumulators'
/// states, which do not grow with the rows.
#[derive(Debug, Clone, Default)]
pub struct ScanState {
    /// Rows.
    pub n: usize,
    /// Every accumulator's state.
    pub states: States,
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
                let mut probs = [0f32; MAX_LR_CLASSES];
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
