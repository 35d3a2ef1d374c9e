//! Building a baseline from trusted data (`poisongate profile`).
//!
//! Profiling is exact: each numeric column's non-null values are gathered and sorted once,
//! which gives exact quantiles, bin edges and bin counts in one pass over the sorted values
//! (a sort per column instead of one selection per quantile; see `../shared/NOTES.md`).

use std::collections::BTreeMap;

use polars::prelude::DataFrame;
use rayon::prelude::*;

use super::BASELINE_FORMAT;
use super::types::*;
use crate::error::{Error, Result};
use crate::source::Batch;
use crate::summary::{
    CategoricalPlan, CategoricalSummary, Kind, for_each_f64_chunk, for_each_str_chunk, kind_of,
};

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
#[derive(Debug, Clone, Default)]
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

/// Profiles a batch of trusted data into a baseline.
///
/// # Errors
/// A named column (label, id, ignored) that does not exist, or a label with too many classes.
pub fn profile(batch: &Batch, opts: &ProfileOptions) -> Result<Baseline> {
    let schema = batch.schema();
    let first = batch
        .inputs
        .first()
        .map(|m| std::path::PathBuf::from(&m.path))
        .unwrap_or_default();
    let names: Vec<&str> = schema.iter().map(|(n, _)| n.as_str()).collect();
    let require = |col: &str, what: &str| -> Result<()> {
        if names.contains(&col) {
            Ok(())
        } else {
            Err(Error::input(
                &first,
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
                &first,
                format!("--score column `{c}` has type {dtype}; scores must be numeric"),
            ));
        }
    }
    let calibration = default_calibration();
    let profiled: Vec<(String, polars::prelude::DataType)> = schema
        .into_iter()
        .filter(|(n, _)| Some(n) != opts.id.as_ref() && !opts.ignore.contains(n))
        .collect();
    let columns: Vec<ColumnProfile> = profiled
        .par_iter()
        .map(|(name, dtype)| {
            crate::fault::point("profile-worker");
            let kind = if Some(name) == opts.label.as_ref() || opts.predictions.contains(name) {
                Kind::Categorical
            } else {
                kind_of(dtype)
            };
            let mut col = profile_column(&batch.frames, name, dtype, kind, &calibration)?;
            if opts.predictions.contains(name) {
                col.role = Some(Role::Prediction);
            } else if opts.scores.contains(name) {
                col.role = Some(Role::Score);
            }
            Ok(col)
        })
        .collect::<Result<_>>()?;
    let label_profile = match &opts.label {
        Some(label) => Some(profile_label(&batch.frames, label, &columns, &first)?),
        None => None,
    };
    let mut baseline = Baseline {
        format: BASELINE_FORMAT.to_owned(),
        tool: Tool::current(),
        seed: opts.seed,
        rows: batch.rows(),
        inputs: batch.inputs.clone(),
        label: opts.label.clone(),
        id: opts.id.clone(),
        ignored: opts.ignore.clone(),
        calibration,
        columns,
        label_profile,
        poison: None,
    };
    baseline.poison = crate::poison::build(
        &baseline,
        &batch.frames,
        opts.model_rows.unwrap_or(crate::poison::DEFAULT_MODEL_ROWS),
    )?;
    Ok(baseline)
}

fn series<'a>(df: &'a DataFrame, name: &str) -> Result<&'a polars::prelude::Series> {
    df.column(name)
        .map(polars::prelude::Column::as_materialized_series)
        .map_err(|e| Error::Internal(format!("column `{name}`: {e}")))
}

fn profile_column(
    frames: &[DataFrame],
    name: &str,
    dtype: &polars::prelude::DataType,
    kind: Kind,
    cal: &Calibration,
) -> Result<ColumnProfile> {
    let rows: u64 = frames.iter().map(|f| f.height() as u64).sum();
    let mut profile = ColumnProfile {
        name: name.to_owned(),
        dtype: dtype.to_string(),
        kind,
        nullable: false,
        count: 0,
        nulls: 0,
        numeric: None,
        categorical: None,
        role: None,
    };
    match kind {
        Kind::Numeric => {
            let mut values = Vec::with_capacity(usize::try_from(rows).unwrap_or(0));
            for df in frames {
                for_each_f64_chunk(series(df, name)?, |v, valid| match valid {
                    Some(valid) => values.extend(
                        v.iter()
                            .zip(valid.iter())
                            .filter(|(x, ok)| *ok && !x.is_nan())
                            .map(|(x, _)| *x),
                    ),
                    None => values.extend(v.iter().filter(|x| !x.is_nan())),
                })?;
            }
            values.sort_unstable_by(f64::total_cmp);
            profile.count = values.len() as u64;
            profile.numeric = Some(numeric_profile(&values, cal));
        }
        Kind::Categorical => {
            let mut s = CategoricalSummary::default();
            let plan = CategoricalPlan::default();
            for df in frames {
                for_each_str_chunk(series(df, name)?, |arr| s.update(&plan, arr))?;
            }
            profile.count = s.count;
            profile.categorical = Some(categorical_profile(&s, cal));
        }
        Kind::Unsupported => {
            let nulls: u64 = frames
                .iter()
                .map(|df| series(df, name).map(|s| s.null_count() as u64))
                .sum::<Result<u64>>()?;
            profile.count = rows - nulls;
        }
    }
    profile.nulls = rows - profile.count;
    profile.nullable = profile.nulls > 0;
    Ok(profile)
}

/// Quantile by linear interpolation between order statistics (Hyndman & Fan 1996, type 7;
/// numpy's default).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

fn numeric_profile(sorted: &[f64], cal: &Calibration) -> NumericProfile {
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

/// Per-class counts and per-class numeric summaries, in one pass per numeric column.
fn profile_label(
    frames: &[DataFrame],
    label: &str,
    columns: &[ColumnProfile],
    first: &std::path::Path,
) -> Result<LabelProfile> {
    // Classes from the label's own profile (already counted), sorted by value.
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
    // Class of every row as an index into `classes`; NO_CLASS for nulls.
    const NO_CLASS: u32 = u32::MAX;
    let index: foldhash::HashMap<&str, u32> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i as u32))
        .collect();
    let mut row_class: Vec<u32> = Vec::new();
    for df in frames {
        for_each_str_chunk(series(df, label)?, |arr| {
            row_class.extend(
                arr.iter()
                    .map(|v| v.and_then(|s| index.get(s).copied()).unwrap_or(NO_CLASS)),
            );
        })?;
    }
    let mut counts = vec![0u64; classes.len()];
    for &c in &row_class {
        if c != NO_CLASS {
            counts[c as usize] += 1;
        }
    }
    let mut per_class: Vec<BTreeMap<String, MeanStd>> = vec![BTreeMap::new(); classes.len()];
    for col in columns
        .iter()
        .filter(|c| c.kind == Kind::Numeric && c.name != label)
    {
        let center = col.numeric.as_ref().map_or(0.0, |n| n.mean);
        // (count, sum of shifted values, sum of squared shifted values) per class.
        let mut acc = vec![(0u64, 0.0f64, 0.0f64); classes.len()];
        let mut row = 0usize;
        for df in frames {
            for_each_f64_chunk(series(df, &col.name)?, |v, valid| {
                for (i, &x) in v.iter().enumerate() {
                    let ok = valid.is_none_or(|b| b.get_bit(i)) && !x.is_nan();
                    let c = row_class.get(row + i).copied().unwrap_or(NO_CLASS);
                    if ok && c != NO_CLASS {
                        let d = x - center;
                        let a = &mut acc[c as usize];
                        a.0 += 1;
                        a.1 += d;
                        a.2 += d * d;
                    }
                }
                row += v.len();
            })?;
        }
        for (class, (n, s1, s2)) in acc.into_iter().enumerate() {
            let nf = n as f64;
            let mean = if n > 0 { center + s1 / nf } else { 0.0 };
            let std = if n > 1 {
                ((s2 - s1 * s1 / nf) / (nf - 1.0)).max(0.0).sqrt()
            } else {
                0.0
            };
            per_class[class].insert(
                col.name.clone(),
                MeanStd {
                    count: n,
                    mean,
                    std,
                },
            );
        }
    }
    Ok(LabelProfile {
        column: label.to_owned(),
        nulls: row_class.iter().filter(|&&c| c == NO_CLASS).count() as u64,
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
