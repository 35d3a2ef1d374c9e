//! `profile` as a fold over blocks: each column's state, the label's per-class sums and the
//! sample the poison detectors are fitted on grow by block and never hold the batch.
//!
//! Up to [`EXACT_VALUES`] non-null values of a numeric column are kept as they are, and the
//! column is profiled exactly (sorted values, type-7 quantiles); past that the column turns
//! into a [`Sketch`]: counts, minimum and maximum per bucket of a fixed grid over the `f64`
//! order (the top [`BUCKET_BITS`] bits of the value's order-preserving key: sign, exponent and
//! 12 mantissa bits, so a bucket spans at most 2⁻¹² of its values' magnitude), exact sums of
//! the values and their squares ([`ExactSum`]), and the exact count of each distinct value
//! while there are at most [`DISTINCT_VALUES`]. Every part of it is a count, an extreme or an
//! exact sum, so it is the same whatever the order of the rows. The bin edges are then the
//! largest value of the bucket that holds each quantile's rank, which makes the pinned bin
//! counts exact counts of `x <= edge`; a quantile is off by at most its bucket's width, and a
//! tail mean by at most half of it (the rank-error guarantee of a fixed-grid histogram, as in
//! DDSketch: Masson, Rim & Lee 2019, PVLDB 12(12), with its log-spaced buckets taken from the
//! float format itself).
//!
//! The poison profile (reference model, anomaly cuts, duplicate curves, pair tables) is
//! fitted on every row up to [`SAMPLE_ROWS`] rows, and past that on a sample chosen by a hash
//! of each row's place (its input and its row there) and the seed (adaptive threshold sampling: a row is kept while the top
//! `level` bits of its hash are zero, and `level` grows by one whenever more than
//! [`SAMPLE_ROWS`] rows are kept; Gibbons 2001, "Distinct sampling for highly-accurate answers
//! to distinct values queries", VLDB), so the sample is a function of the rows alone.

use polars::prelude::{BooleanChunked, DataFrame, DataType, NewChunkedArray};
use rayon::prelude::*;

pub use super::sketch::Sketch;
use super::types::MeanStd;
use crate::error::{Error, Result};
use crate::rows::mix;
use crate::summary::{
    CategoricalPlan, CategoricalSummary, Kind, for_each_f64_chunk, for_each_str_chunk,
};

/// Non-null values of a numeric column profiled exactly; past this the column is sketched.
pub const EXACT_VALUES: usize = 2_000_000;
/// Rows the poison profile is fitted on; past this, a hash-selected sample of at most as many.
pub const SAMPLE_ROWS: usize = 2_000_000;
/// Distinct values of a sketched column counted exactly (for its most frequent values).
pub const DISTINCT_VALUES: usize = 1 << 16;

/// The bounds of a [`ProfileState`] ([`EXACT_VALUES`], [`SAMPLE_ROWS`], [`DISTINCT_VALUES`]
/// by default; tests lower them to reach the bounded paths on small data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Non-null values of a numeric column profiled exactly.
    pub exact_values: usize,
    /// Rows the poison profile is fitted on.
    pub sample_rows: usize,
    /// Distinct values of a sketched column counted exactly.
    pub distinct_values: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            exact_values: EXACT_VALUES,
            sample_rows: SAMPLE_ROWS,
            distinct_values: DISTINCT_VALUES,
        }
    }
}
/// Salt of the sample's row hash.
const SAMPLE_SALT: u64 = 0x7361_6d70_6c65_0000;
/// A row without a label (null).
pub const NO_LABEL: u32 = u32::MAX;

/// A numeric column's values: kept while few, sketched past [`EXACT_VALUES`].
#[derive(Debug, Clone)]
pub enum Values {
    /// Every non-null value in row order, with the label id of its row when there is a label.
    Exact {
        /// The values.
        values: Vec<f64>,
        /// Label id per value (empty without a label).
        labels: Vec<u32>,
    },
    /// The bounded state.
    Sketched(Box<Sketch>),
}

impl Values {
    fn sketch(&mut self, limits: &Limits) -> &mut Sketch {
        if let Self::Exact { values, labels } = self {
            let mut s = Sketch::new();
            for (i, &x) in values.iter().enumerate() {
                s.add(x, labels.get(i).copied(), limits.distinct_values);
            }
            *self = Self::Sketched(Box::new(s));
        }
        match self {
            Self::Sketched(s) => s,
            Self::Exact { .. } => unreachable!("sketched above"),
        }
    }

    fn update(
        &mut self,
        series: &polars::prelude::Series,
        labels: Option<&[u32]>,
        limits: &Limits,
    ) -> Result<()> {
        let mut row = 0usize;
        for_each_f64_chunk(series, |v, valid| {
            for (i, &x) in v.iter().enumerate() {
                if x.is_nan() || !valid.is_none_or(|b| b.get_bit(i)) {
                    continue;
                }
                let label = labels.map(|l| l[row + i]);
                match self {
                    Self::Exact { values, labels } if values.len() < limits.exact_values => {
                        values.push(x);
                        if let Some(l) = label {
                            labels.push(l);
                        }
                    }
                    _ => self.sketch(limits).add(x, label, limits.distinct_values),
                }
            }
            row += v.len();
        })
    }

    fn merge(&mut self, o: Self, remap: &[u32], limits: &Limits) {
        // Ids past the last class name (a label with too many values, refused when the profile
        // is finished) stay past it.
        let relabel = |l: u32| {
            if l == NO_LABEL {
                l
            } else {
                remap
                    .get(l as usize)
                    .copied()
                    .unwrap_or(MAX_LABEL_IDS as u32)
            }
        };
        match o {
            Self::Exact { values, labels } => {
                if let Self::Exact {
                    values: a,
                    labels: al,
                } = self
                    && a.len() + values.len() <= limits.exact_values
                {
                    a.extend(values);
                    al.extend(labels.into_iter().map(relabel));
                    return;
                }
                let s = self.sketch(limits);
                for (i, x) in values.into_iter().enumerate() {
                    s.add(
                        x,
                        labels.get(i).map(|&l| relabel(l)),
                        limits.distinct_values,
                    );
                }
            }
            Self::Sketched(mut b) => {
                b.relabel(remap);
                self.sketch(limits).merge(*b, limits.distinct_values);
            }
        }
    }
}

/// The state of one profiled column.
#[derive(Debug, Clone)]
pub enum ColumnState {
    /// A numeric column.
    Numeric(Values),
    /// A categorical column (the label and predictions too).
    Categorical(CategoricalSummary),
    /// A column of another type: its nulls only.
    Unsupported {
        /// Null cells.
        nulls: u64,
    },
}

/// The label's classes in order of first appearance, with their rows.
#[derive(Debug, Clone, Default)]
pub struct LabelState {
    pub(super) ids: foldhash::HashMap<String, u32>,
    /// Class names by id.
    pub names: Vec<String>,
    /// Null labels.
    pub nulls: u64,
}

/// Label ids past which a label is no classification target (its profile then fails).
pub(super) const MAX_LABEL_IDS: usize = 1_001;

impl LabelState {
    /// The label id of every row of `series`; rows past [`MAX_LABEL_IDS`] distinct values
    /// share the last id.
    fn ids(&mut self, series: &polars::prelude::Series) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(series.len());
        for_each_str_chunk(series, |arr| {
            for v in arr {
                out.push(match v {
                    None => {
                        self.nulls += 1;
                        NO_LABEL
                    }
                    Some(s) => self.id(s),
                });
            }
        })?;
        Ok(out)
    }

    fn id(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.ids.get(s) {
            return i;
        }
        let i = self.names.len().min(MAX_LABEL_IDS) as u32;
        if self.names.len() < MAX_LABEL_IDS {
            self.names.push(s.to_owned());
            self.ids.insert(s.to_owned(), i);
        }
        i
    }

    /// Takes `o`'s classes in; returns where each of `o`'s ids went.
    fn merge(&mut self, o: Self) -> Vec<u32> {
        self.nulls += o.nulls;
        o.names.iter().map(|s| self.id(s)).collect()
    }
}

/// The rows the poison profile is fitted on (see the module documentation).
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Bits of the row hash that must be zero.
    pub level: u32,
    /// Kept rows, in batch order.
    pub frames: Vec<DataFrame>,
    /// The hash of every kept row, parallel to `frames`.
    pub(super) rows: Vec<Vec<u64>>,
    /// No rows, the columns of the blocks (so an empty sample still has a schema).
    pub(super) empty: Option<DataFrame>,
}

impl Sample {
    /// The hash of row `row` of input `input`: its place, not its content, so that copies
    /// of a row are sampled independently.
    fn hash(seed: u64, input: u64, row: u64) -> u64 {
        mix(mix(seed ^ SAMPLE_SALT ^ input.wrapping_mul(0x9e37_79b9_7f4a_7c15)).wrapping_add(row))
    }

    fn keeps(level: u32, hash: u64) -> bool {
        level == 0 || hash >> (64 - level) == 0
    }

    pub(super) fn kept(&self) -> usize {
        self.rows.iter().map(Vec::len).sum()
    }

    /// Keeps the rows of `df` (rows from `first` of input `input`) that the current level
    /// keeps.
    fn push(&mut self, seed: u64, df: &DataFrame, input: u64, first: u64) -> Result<()> {
        if self.empty.is_none() {
            self.empty = Some(df.clear());
        }
        let rows: Vec<u64> = (first..first + df.height() as u64)
            .map(|r| Self::hash(seed, input, r))
            .collect();
        self.push_rows(df.clone(), rows)
    }

    fn push_rows(&mut self, df: DataFrame, rows: Vec<u64>) -> Result<()> {
        let (df, rows) = Self::thin(self.level, df, rows)?;
        if !rows.is_empty() {
            self.frames.push(df);
            self.rows.push(rows);
        }
        Ok(())
    }

    /// The rows of `df` (row hashes `rows`) that `level` keeps.
    fn thin(level: u32, df: DataFrame, rows: Vec<u64>) -> Result<(DataFrame, Vec<u64>)> {
        let keep: Vec<bool> = rows.iter().map(|&h| Self::keeps(level, h)).collect();
        if keep.iter().all(|&k| k) {
            return Ok((df, rows));
        }
        let mask = BooleanChunked::from_iter_values("sample".into(), keep.iter().copied());
        let df = df
            .filter(&mask)
            .map_err(|e| Error::Internal(format!("sampling rows: {e}")))?;
        let mut k = keep.iter();
        let mut rows = rows;
        rows.retain(|_| *k.next().unwrap_or(&false));
        Ok((df, rows))
    }

    /// Thins every kept frame to `level` (at least the current one).
    fn raise(&mut self, level: u32) -> Result<()> {
        if level <= self.level {
            return Ok(());
        }
        self.level = level;
        let frames = std::mem::take(&mut self.frames);
        let rows = std::mem::take(&mut self.rows);
        for (df, r) in frames.into_iter().zip(rows) {
            self.push_rows(df, r)?;
        }
        Ok(())
    }

    /// Raises the level until at most `cap` rows are kept.
    fn settle(&mut self, cap: usize) -> Result<()> {
        while self.kept() > cap && self.level < 64 {
            self.raise(self.level + 1)?;
        }
        Ok(())
    }

    /// Takes in the sample of the rows that follow this one's.
    fn merge(&mut self, o: Self, cap: usize) -> Result<()> {
        if self.empty.is_none() {
            self.empty = o.empty.clone();
        }
        let level = self.level.max(o.level);
        self.raise(level)?;
        for (df, r) in o.frames.into_iter().zip(o.rows) {
            self.push_rows(df, r)?;
        }
        self.settle(cap)
    }
}

/// A profiled column: its name, dtype and how it is profiled.
pub type Profiled = (String, DataType, Kind);

/// Everything `profile` folds over the blocks of a batch.
#[derive(Debug, Clone)]
pub struct ProfileState {
    /// Profiled columns (name, dtype, kind), in schema order.
    pub columns: Vec<(String, DataType, Kind)>,
    /// One state per profiled column.
    pub states: Vec<ColumnState>,
    /// The label's classes, when there is a label.
    pub label: Option<(usize, LabelState)>,
    /// Rows folded.
    pub rows: u64,
    /// The poison profile's rows.
    pub sample: Sample,
    pub(super) seed: u64,
    pub(super) limits: Limits,
}

impl ProfileState {
    /// An empty state over `columns`; `label` is the index of the label among them.
    #[must_use]
    pub fn new(columns: Vec<Profiled>, label: Option<usize>, seed: u64) -> Self {
        Self::with_limits(columns, label, seed, Limits::default())
    }

    /// An empty state with other bounds than the default ones.
    #[must_use]
    pub fn with_limits(
        columns: Vec<Profiled>,
        label: Option<usize>,
        seed: u64,
        limits: Limits,
    ) -> Self {
        let states = columns
            .iter()
            .map(|(_, _, kind)| match kind {
                Kind::Numeric => ColumnState::Numeric(Values::Exact {
                    values: Vec::new(),
                    labels: Vec::new(),
                }),
                Kind::Categorical => ColumnState::Categorical(CategoricalSummary::default()),
                Kind::Unsupported => ColumnState::Unsupported { nulls: 0 },
            })
            .collect();
        Self {
            columns,
            states,
            label: label.map(|i| (i, LabelState::default())),
            rows: 0,
            sample: Sample::default(),
            seed,
            limits,
        }
    }

    /// A state read back from its parts (see [`super::part`]).
    #[must_use]
    pub(super) fn restore(
        columns: Vec<Profiled>,
        states: Vec<ColumnState>,
        label: Option<(usize, LabelState)>,
        rows: u64,
        sample: Sample,
        seed: u64,
        limits: Limits,
    ) -> Self {
        Self {
            columns,
            states,
            label,
            rows,
            sample,
            seed,
            limits,
        }
    }

    /// Folds one block whose first row is row `first` of input `input` (blocks arrive in
    /// batch order).
    ///
    /// # Errors
    /// A column the block lacks or cannot be cast.
    pub fn update(&mut self, block: &DataFrame, input: u64, first: u64) -> Result<()> {
        let column = |name: &str| {
            block
                .column(name)
                .map(polars::prelude::Column::as_materialized_series)
                .map_err(|e| Error::Internal(format!("column `{name}`: {e}")))
        };
        let labels = match &mut self.label {
            Some((i, state)) => Some(state.ids(column(&self.columns[*i].0)?)?),
            None => None,
        };
        let plan = CategoricalPlan::default();
        let limits = self.limits;
        self.states.par_iter_mut().zip(&self.columns).try_for_each(
            |(state, (name, _, _))| -> Result<()> {
                crate::fault::point("profile-worker");
                let series = column(name)?;
                match state {
                    ColumnState::Numeric(v) => v.update(series, labels.as_deref(), &limits)?,
                    ColumnState::Categorical(s) => {
                        for_each_str_chunk(series, |arr| s.update(&plan, arr))?;
                    }
                    ColumnState::Unsupported { nulls } => *nulls += series.null_count() as u64,
                }
                Ok(())
            },
        )?;
        self.rows += block.height() as u64;
        self.sample.push(self.seed, block, input, first)?;
        self.sample.settle(self.limits.sample_rows)
    }

    /// Takes in the state of the rows that follow this one's.
    ///
    /// # Errors
    /// Two states over different columns, or summaries that do not merge.
    pub fn merge(&mut self, o: Self) -> Result<()> {
        if self.columns != o.columns || self.seed != o.seed || self.limits != o.limits {
            return Err(Error::Internal(
                "profile states of different columns or seeds".into(),
            ));
        }
        let remap = match (&mut self.label, o.label) {
            (Some((_, a)), Some((_, b))) => a.merge(b),
            _ => Vec::new(),
        };
        for (a, b) in self.states.iter_mut().zip(o.states) {
            match (a, b) {
                (ColumnState::Numeric(a), ColumnState::Numeric(b)) => {
                    a.merge(b, &remap, &self.limits);
                }
                (ColumnState::Categorical(a), ColumnState::Categorical(b)) => a.merge(&b)?,
                (ColumnState::Unsupported { nulls: a }, ColumnState::Unsupported { nulls: b }) => {
                    *a += b;
                }
                _ => return Err(Error::Internal("profile column states differ".into())),
            }
        }
        self.rows += o.rows;
        self.sample.merge(o.sample, self.limits.sample_rows)
    }
}

/// Per class (by label id), the mean and standard deviation of a numeric column's values.
///
/// Exact values are summed as deviations from `center` (the column mean) in row order
/// (Chan, Golub & LeVeque 1983, the shifted-data algorithm); sketched ones come from exact
/// sums.
#[must_use]
pub fn class_moments(values: &Values, center: f64, classes: usize) -> Vec<MeanStd> {
    match values {
        Values::Exact { values, labels } => {
            let mut acc = vec![(0u64, 0.0f64, 0.0f64); classes];
            for (&x, &l) in values.iter().zip(labels) {
                if let Some(a) = acc.get_mut(l as usize) {
                    let d = x - center;
                    a.0 += 1;
                    a.1 += d;
                    a.2 += d * d;
                }
            }
            acc.into_iter()
                .map(|(n, s1, s2)| {
                    let nf = n as f64;
                    MeanStd {
                        count: n,
                        mean: if n > 0 { center + s1 / nf } else { 0.0 },
                        std: if n > 1 {
                            ((s2 - s1 * s1 / nf) / (nf - 1.0)).max(0.0).sqrt()
                        } else {
                            0.0
                        },
                    }
                })
                .collect()
        }
        Values::Sketched(s) => s.class_moments(classes),
    }
}

/// Non-null values a column state counted.
#[must_use]
pub fn counted(state: &ColumnState, rows: u64) -> u64 {
    match state {
        ColumnState::Numeric(Values::Exact { values, .. }) => values.len() as u64,
        ColumnState::Numeric(Values::Sketched(s)) => s.count,
        ColumnState::Categorical(s) => s.count,
        ColumnState::Unsupported { nulls } => rows - nulls,
    }
}
