//! Building a baseline from trusted data (`poisongate profile`).
//!
//! The batch is read once, block by block, into the mergeable state of
//! [`super::accumulate`]. Up to its exact limit a numeric column's non-null values are kept
//! and sorted once at the end, which gives exact quantiles, bin edges and bin counts in one
//! pass over the sorted values (a sort per column instead of one selection per quantile; see
//! `../shared/NOTES.md`); past it the column is sketched with exact bin counts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use polars::prelude::{DataFrame, DataType};
use rayon::prelude::*;

use super::BASELINE_FORMAT;
use super::accumulate::{
    ColumnState, LabelState, ProfileState, Profiled, Values, class_moments, counted,
};
use super::types::*;
use crate::error::{Error, Result};
use crate::source::{Batch, InputFile};
use crate::summary::{CategoricalSummary, Kind, kind_of};

/// Quantile levels stored in every numeric profile.
const REPORTED_LEVELS: [(f64, &str); 9] = [
    (0.01, "p01"),
    (0.05, "p05"),
    (0.10, "p10"),
    (0.25, "p25"),
    (0.50, "p50"),
    (0.75, "p75"),
    (0.90, "p90"),
    (0.95, "p95"),
    (0.99, "p99"),
];

/// Most label classes poisongate profiles; more suggests a regression target or an id.
const MAX_CLASSES: usize = 1_000;

/// What `profile` was asked to do.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileOptions {
    /// Label column.
    pub label: Option<String>,
    /// Row-id column.
    pub id: Option<String>,
    /// Columns to leave out.
    pub ignore: Vec<String>,
    /// Seed recorded in the baseline.
    pub seed: u64,
    /// Model prediction columns (pinned as outputs).
    pub predictions: Vec<String>,
    /// Model score columns (pinned as outputs).
    pub scores: Vec<String>,
    /// Most labelled rows the reference model is fitted on (a seeded sample beyond; the rest
    /// calibrate it); `None` for [`crate::poison::DEFAULT_MODEL_ROWS`].
    pub model_rows: Option<usize>,
}

/// The default calibration: percentile edges, ten coarse bins, top 50 categories, a domain of
/// up to 10,000 values.
#[must_use]
pub fn default_calibration() -> Calibration {
    Calibration {
        edge_levels: (1..100).map(|i| f64::from(i) / 100.0).collect(),
        coarse_bins: 10,
        top_k: 50,
        domain_cap: 10_000,
    }
}

/// The profiled columns of a schema (name, dtype, kind) and the index of the label among
/// them, once the options are checked against it.
fn plan(
    schema: &[(String, DataType)],
    opts: &ProfileOptions,
    first: &Path,
) -> Result<(Vec<Profiled>, Option<usize>)> {
    let names: Vec<&str> = schema.iter().map(|(n, _)| n.as_str()).collect();
    let require = |col: &str, what: &str| -> Result<()> {
        if names.contains(&col) {
            Ok(())
        } else {
            Err(Error::input(
                first,
                format!(
                    "{what} column `{col}` not found; columns are: {}",
                    names.join(", ")
                ),
            ))
        }
    };
    if let Some(l) = &opts.label {
        require(l, "label")?;
    }
    if let Some(i) = &opts.id {
        require(i, "id")?;
    }
    for c in &opts.ignore {
        require(c, "ignored")?;
    }
    if opts.id.is_some() && opts.id == opts.label {
        return Err(Error::Usage("--id and --label name the same column".into()));
    }
    for (flag, cols) in [
        ("--prediction", &opts.predictions),
        ("--score", &opts.scores),
    ] {
        for c in cols {
            require(c, "output")?;
            if Some(c) == opts.label.as_ref()
                || Some(c) == opts.id.as_ref()
                || opts.ignore.contains(c)
            {
                return Err(Error::Usage(format!(
                    "{flag} `{c}` is also the label, the id or an ignored column"
                )));
            }
        }
    }
    if let Some(c) = opts.predictions.iter().find(|c| opts.scores.contains(c)) {
        return Err(Error::Usage(format!(
            "`{c}` is given both as --prediction and as --score"
        )));
    }
    for c in &opts.scores {
        if let Some((_, dtype)) = schema.iter().find(|(n, _)| n == c)
            && kind_of(dtype) != Kind::Numeric
        {
            return Err(Error::input(
                first,
                format!("--score column `{c}` has type {dtype}; scores must be numeric"),
            ));
        }
    }
    let columns: Vec<Profiled> = schema
        .iter()
        .filter(|(n, _)| Some(n) != opts.id.as_ref() && !opts.ignore.contains(n))
        .map(|(name, dtype)| {
            let kind = if Some(name) == opts.label.as_ref() || opts.predictions.contains(name) {
                Kind::Categorical
            } else {
                kind_of(dtype)
            };
            (name.clone(), dtype.clone(), kind)
        })
        .collect();
    let label = opts
        .label
        .as_ref()
        .and_then(|l| columns.iter().position(|(n, _, _)| n == l));
    Ok((columns, label))
}

/// Profiles a batch of trusted data held in memory into a baseline.
///
/// # Errors
/// A named column (label, id, ignored) that does not exist, or a label with too many classes.
pub fn profile(batch: &Batch, opts: &ProfileOptions) -> Result<Baseline> {
    let first = batch
        .inputs
        .first()
        .map(|m| PathBuf::from(&m.path))
        .unwrap_or_default();
    let (columns, label) = plan(&batch.schema(), opts, &first)?;
    let mut state = ProfileState::new(columns, label, opts.seed);
    for (input, df) in batch.frames.iter().enumerate() {
        crate::source::Rows::Frames(std::slice::from_ref(df))
            .for_each_window(None, &mut |blocks, at| {
                fold_window(&mut state, blocks, input as u64, at as u64)
            })?;
    }
    finish(state, opts, batch.inputs.clone(), &first)
}

/// Profiles trusted files into a baseline in one streamed read (each file decoded a window
/// at a time and hashed as it is read, as `check` reads a batch).
///
/// # Errors
/// Any unreadable, empty or corrupt input; inputs of different schemas; a named column
/// (label, id, ignored) that does not exist, or a label with too many classes.
pub fn profile_files(files: &[InputFile], opts: &ProfileOptions) -> Result<Baseline> {
    let first = files
        .first()
        .map(|f| PathBuf::from(f.name()))
        .unwrap_or_default();
    let places: Vec<u64> = (0..files.len() as u64).collect();
    let (state, inputs) = fold_files(files, &places, opts)?;
    finish(state, opts, inputs, &first)
}

/// Folds files into a profile state in one streamed read; `places[i]` is the position of
/// `files[i]` among the inputs of the whole batch (which seeds the sample's row hash).
///
/// # Errors
/// As [`profile_files`].
pub fn fold_files(
    files: &[InputFile],
    places: &[u64],
    opts: &ProfileOptions,
) -> Result<(ProfileState, Vec<crate::source::InputMeta>)> {
    let first = files
        .first()
        .map(|f| PathBuf::from(f.name()))
        .unwrap_or_default();
    let mut state: Option<ProfileState> = None;
    let inputs = crate::source::stream::first_pass(files, &mut |schema, blocks, at| {
        let state = match &mut state {
            Some(s) => s,
            None => {
                let schema: Vec<(String, DataType)> = schema
                    .iter()
                    .map(|(n, d)| (n.to_string(), d.clone()))
                    .collect();
                let (columns, label) = plan(&schema, opts, &first)?;
                state.insert(ProfileState::new(columns, label, opts.seed))
            }
        };
        let input = places.get(at.input).copied().unwrap_or(at.input as u64);
        fold_window(state, blocks, input, at.input_row as u64)
    })?;
    let state = state.ok_or_else(|| Error::input(&first, "no rows"))?;
    Ok((state, inputs))
}

/// Folds a window's blocks in order; the first is row `row` of input `input`.
fn fold_window(state: &mut ProfileState, blocks: &[DataFrame], input: u64, row: u64) -> Result<()> {
    let mut row = row;
    for block in blocks {
        state.update(block, input, row)?;
        row += block.height() as u64;
    }
    Ok(())
}

/// Turns the folded state into the baseline, fitting the poison profile on its sample.
pub(super) fn finish(
    state: ProfileState,
    opts: &ProfileOptions,
    inputs: Vec<crate::source::InputMeta>,
    first: &Path,
) -> Result<Baseline> {
    let calibration = default_calibration();
    let rows = state.rows;
    let columns: Vec<ColumnProfile> = state
        .columns
        .par_iter()
        .zip(&state.states)
        .map(|((name, dtype, kind), st)| {
            let mut col = profile_column(name, dtype, *kind, st, rows, &calibration);
            if opts.predictions.contains(name) {
                col.role = Some(Role::Prediction);
            } else if opts.scores.contains(name) {
                col.role = Some(Role::Score);
            }
            col
        })
        .collect();
    let label_profile = match (&opts.label, &state.label) {
        (Some(label), Some((_, ids))) => Some(profile_label(label, &columns, &state, ids, first)?),
        _ => None,
    };
    let sampled = (state.sample.level > 0).then(|| {
        state
            .sample
            .frames
            .iter()
            .map(|f| f.height() as u64)
            .sum::<u64>()
    });
    let mut baseline = Baseline {
        format: BASELINE_FORMAT.to_owned(),
        tool: Tool::current(),
        seed: opts.seed,
        rows,
        inputs,
        label: opts.label.clone(),
        id: opts.id.clone(),
        ignored: opts.ignore.clone(),
        calibration,
        columns,
        label_profile,
        poison: None,
    };
    drop(state.states);
    baseline.poison = crate::poison::build(
        &baseline.view(),
        &state.sample.frames,
        opts.model_rows.unwrap_or(crate::poison::DEFAULT_MODEL_ROWS),
        sampled,
    )?;
    Ok(baseline)
}

fn profile_column(
    name: &str,
    dtype: &DataType,
    kind: Kind,
    state: &ColumnState,
    rows: u64,
    cal: &Calibration,
) -> ColumnProfile {
    let mut profile = ColumnProfile {
        name: name.to_owned(),
        dtype: dtype.to_string(),
        kind,
        nullable: false,
        count: counted(state, rows),
        nulls: 0,
        numeric: None,
        categorical: None,
        role: None,
    };
    match state {
        ColumnState::Numeric(Values::Exact { values, .. }) => {
            let mut sorted = values.clone();
            sorted.sort_unstable_by(f64::total_cmp);
            profile.numeric = Some(numeric_profile(&sorted, cal));
        }
        ColumnState::Numeric(Values::Sketched(s)) => {
            profile.numeric = Some(s.profile(&cal.edge_levels, &REPORTED_LEVELS));
        }
        ColumnState::Categorical(s) => {
            profile.categorical = Some(categorical_profile(s, cal));
        }
        ColumnState::Unsupported { .. } => {}
    }
    profile.nulls = rows - profile.count;
    profile.nullable = profile.nulls > 0;
    profile
}

/// Quantile by linear interpolation between order statistics (Hyndman & Fan 1996, type 7;
/// numpy's default).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

pub(super) fn numeric_profile(sorted: &[f64], cal: &Calibration) -> NumericProfile {
    if sorted.is_empty() {
        return NumericProfile {
            min: 0.0,
            max: 0.0,
            mean: 0.0,
            std: 0.0,
            quantiles: BTreeMap::new(),
            edges: Vec::new(),
            counts: vec![0],
            lower_tail_mean: 0.0,
            upper_tail_mean: 0.0,
            frequent: Vec::new(),
            frequent_bound: 0,
        };
    }
    let n = sorted.len() as f64;
    let mean = sorted.iter().sum::<f64>() / n;
    let var = if sorted.len() > 1 {
        sorted.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    let mut edges: Vec<f64> = cal
        .edge_levels
        .iter()
        .map(|&q| quantile(sorted, q))
        .collect();
    edges.dedup();
    let mut counts = Vec::with_capacity(edges.len() + 1);
    let mut prev = 0usize;
    for &e in &edges {
        let upto = sorted.partition_point(|&x| x <= e);
        counts.push((upto - prev) as u64);
        prev = upto;
    }
    counts.push((sorted.len() - prev) as u64);
    let tail_mean = |s: &[f64]| {
        if s.is_empty() {
            0.0
        } else {
            s.iter().sum::<f64>() / s.len() as f64
        }
    };
    let (frequent, frequent_bound) = frequent_values(sorted);
    let lower = usize::try_from(counts[0]).unwrap_or(0);
    let upper = usize::try_from(counts[counts.len() - 1]).unwrap_or(0);
    NumericProfile {
        min: sorted[0],
        max: sorted[sorted.len() - 1],
        mean,
        std: var.sqrt(),
        quantiles: REPORTED_LEVELS
            .iter()
            .map(|&(q, k)| (k.to_owned(), quantile(sorted, q)))
            .collect(),
        lower_tail_mean: tail_mean(&sorted[..lower]),
        upper_tail_mean: tail_mean(&sorted[sorted.len() - upper..]),
        edges,
        counts,
        frequent,
        frequent_bound,
    }
}

/// Exact values kept with their counts for the point-mass detector.
const FREQUENT_VALUES: usize = 32;

/// The most frequent exact values of sorted data (runs of at least two), and the count of
/// the most frequent value left out.
fn frequent_values(sorted: &[f64]) -> (Vec<ValueCount>, u64) {
    let mut runs: Vec<(u64, f64)> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let j = i + sorted[i..].partition_point(|&x| x <= sorted[i]);
        runs.push(((j - i) as u64, sorted[i]));
        i = j.max(i + 1);
    }
    most_frequent(&mut runs)
}

/// The [`FREQUENT_VALUES`] largest of `(count, value)` runs seen at least twice, most
/// frequent first (ties by value), and the count of the largest run left out.
pub(super) fn most_frequent(runs: &mut [(u64, f64)]) -> (Vec<ValueCount>, u64) {
    runs.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.total_cmp(&b.1)));
    let keep = runs
        .iter()
        .take(FREQUENT_VALUES)
        .filter(|r| r.0 >= 2)
        .count();
    let bound = runs.get(keep).map_or(0, |r| r.0);
    let frequent = runs[..keep]
        .iter()
        .map(|&(count, value)| ValueCount { value, count })
        .collect();
    (frequent, bound)
}

fn categorical_profile(s: &CategoricalSummary, cal: &Calibration) -> CategoricalProfile {
    let mut by_count: Vec<(&String, u64)> = s.values().collect();
    by_count.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let top: Vec<CategoryCount> = by_count
        .iter()
        .take(cal.top_k)
        .map(|(v, c)| CategoryCount {
            value: (*v).clone(),
            count: *c,
        })
        .collect();
    let top_rows: u64 = top.iter().map(|t| t.count).sum();
    let kept = &by_count[..by_count.len().min(cal.domain_cap)];
    let mut domain: Vec<String> = kept.iter().map(|(v, _)| (*v).clone()).collect();
    domain.sort();
    CategoricalProfile {
        distinct: by_count.len() as u64,
        singletons: by_count.iter().filter(|(_, c)| *c == 1).count() as u64,
        domain_complete: by_count.len() <= cal.domain_cap,
        domain_rows: kept.iter().map(|(_, c)| c).sum(),
        domain,
        top,
        other: s.count - top_rows,
    }
}

/// Per-class counts and per-class numeric summaries, from the folded state.
fn profile_label(
    label: &str,
    columns: &[ColumnProfile],
    state: &ProfileState,
    ids: &LabelState,
    first: &Path,
) -> Result<LabelProfile> {
    let label_col = columns
        .iter()
        .find(|c| c.name == label)
        .and_then(|c| c.categorical.as_ref())
        .ok_or_else(|| Error::Internal(format!("label `{label}` was not profiled")))?;
    if label_col.distinct > MAX_CLASSES as u64 {
        return Err(Error::unusable(
            first,
            format!(
                "label column `{label}` has {} distinct values; a classification label is expected (at most {MAX_CLASSES} classes)",
                label_col.distinct
            ),
            "a continuous target (regression) is not supported yet: profile without --label, or pass --ignore COL to leave the target out",
        ));
    }
    let mut classes: Vec<String> = label_col.domain.clone();
    classes.sort();
    // The label id (order of first appearance) of each class.
    let id_of: Vec<usize> = classes
        .iter()
        .map(|c| {
            ids.names
                .iter()
                .position(|n| n == c)
                .ok_or_else(|| Error::Internal(format!("class `{c}` has no label id")))
        })
        .collect::<Result<_>>()?;
    let Some(ColumnState::Categorical(summary)) = state
        .columns
        .iter()
        .position(|(n, _, _)| n == label)
        .map(|i| &state.states[i])
    else {
        return Err(Error::Internal(format!("label `{label}` was not counted")));
    };
    let counts: Vec<u64> = classes
        .iter()
        .map(|c| summary.counts.get(c).copied().unwrap_or(0))
        .collect();
    let mut per_class: Vec<BTreeMap<String, MeanStd>> = vec![BTreeMap::new(); classes.len()];
    for (col, st) in columns.iter().zip(&state.states) {
        let ColumnState::Numeric(values) = st else {
            continue;
        };
        if col.kind != Kind::Numeric || col.name == label {
            continue;
        }
        let center = col.numeric.as_ref().map_or(0.0, |n| n.mean);
        let moments = class_moments(values, center, ids.names.len());
        for (class, &id) in id_of.iter().enumerate() {
            per_class[class].insert(col.name.clone(), moments[id]);
        }
    }
    Ok(LabelProfile {
        column: label.to_owned(),
        nulls: ids.nulls,
        classes: classes
            .into_iter()
            .zip(counts)
            .zip(per_class)
            .map(|((value, count), numeric)| ClassProfile {
                value,
                count,
                numeric,
            })
            .collect(),
    })
}
