//! Assembling a comparison table from the input frames: classes, predictions, labels, scores
//! and segments, with the optional join of evaluation features on a key.
//!
//! Everything a user can get wrong here is an input error (exit 2) naming the file and the
//! column: a missing column, a null prediction, scores that are not probabilities, classes of
//! different kinds, a key that repeats or that the two files do not share.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use polars::prelude::*;

use crate::error::{Error, Result};
use crate::finding::num;
use crate::source::Batch;

/// Label index of a row without a label.
pub const NO_LABEL: u16 = u16::MAX;

/// Most classes a comparison handles.
pub const MAX_CLASSES: usize = 1000;

/// Categories of a segment column kept by name; the rest pool into "other".
pub const SEGMENT_TOP: usize = 50;

/// Distinct values above which an integer segment column is cut into deciles.
pub const SEGMENT_CATEGORICAL_MAX: usize = 20;

/// What to compare.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    /// Prediction of the serving model.
    pub before: String,
    /// Prediction of the retrained model.
    pub after: String,
    /// True label, when known.
    pub label: Option<String>,
    /// Row key (unique), needed for `--join`.
    pub key: Option<String>,
    /// Segment columns (from the data or the joined file).
    pub segments: Vec<String>,
    /// Score columns of the serving model: one (positive class) or one per class.
    pub before_scores: Vec<String>,
    /// Score columns of the retrained model.
    pub after_scores: Vec<String>,
    /// The class a single score column is the probability of.
    pub positive_class: Option<String>,
    /// Column holding the serving model's probability of its predicted class (serving logs
    /// often keep only that).
    pub before_confidence: Option<String>,
    /// Column holding the retrained model's probability of its predicted class.
    pub after_confidence: Option<String>,
    /// Seed of the bootstrap behind the calibration test.
    pub seed: u64,
}

/// A segment column cut into named groups.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Column name.
    pub column: String,
    /// Group of each row.
    pub codes: Vec<u32>,
    /// Name of each group (a category, `null`, `other`, or a numeric interval).
    pub names: Vec<String>,
}

/// Everything the comparison needs, row-aligned.
#[derive(Debug, Clone)]
pub struct Table {
    /// Class names, sorted (as numbers when every class is an integer).
    pub classes: Vec<String>,
    /// Class index predicted by the serving model, per row.
    pub before: Vec<u16>,
    /// Class index predicted by the retrained model, per row.
    pub after: Vec<u16>,
    /// Label class index per row (`NO_LABEL` when null); empty without `--label`.
    pub label: Vec<u16>,
    /// Row-major class probabilities of the serving model (`rows x classes`); empty without
    /// scores.
    pub before_scores: Vec<f64>,
    /// Row-major class probabilities of the retrained model.
    pub after_scores: Vec<f64>,
    /// Probability of the predicted class, per row, of the serving model: given as
    /// `--before-confidence` for more than two classes (a binary task's confidence becomes
    /// its full scores); empty otherwise.
    pub before_confidence: Vec<f64>,
    /// Probability of the predicted class, per row, of the retrained model.
    pub after_confidence: Vec<f64>,
    /// Segment columns.
    pub segments: Vec<Segment>,
}

impl Table {
    /// Rows compared.
    #[must_use]
    pub fn rows(&self) -> usize {
        self.before.len()
    }

    /// Whether scores were given.
    #[must_use]
    pub fn has_scores(&self) -> bool {
        !self.before_scores.is_empty()
    }

    /// Whether only the predicted classes' probabilities were given (more than two classes).
    #[must_use]
    pub fn has_confidence(&self) -> bool {
        !self.before_confidence.is_empty()
    }
}

/// Kind of a class column: integer-like or text-like. Both models and the label must agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClassKind {
    Integer,
    Text,
}

fn first_path(batch: &Batch) -> &Path {
    batch
        .inputs
        .first()
        .map_or(Path::new("-"), |m| Path::new(&m.path))
}

/// The column `name` concatenated across the batch's frames.
fn gather(batch: &Batch, name: &str, flag: &str) -> Result<Series> {
    let mut out: Option<Series> = None;
    for (df, meta) in batch.frames.iter().zip(&batch.inputs) {
        let col = df.column(name).map_err(|_| {
            Error::input(
                Path::new(&meta.path),
                format!("column `{name}` ({flag}) is missing"),
            )
        })?;
        let s = col.as_materialized_series().clone();
        out = Some(match out {
            None => s,
            Some(mut acc) => {
                acc.append(&s)
                    .map_err(|e| Error::input(Path::new(&meta.path), e))?;
                acc
            }
        });
    }
    out.ok_or_else(|| Error::Usage("no DATA inputs given".into()))
}

/// Class values of a column as text, with the column's kind.
fn class_values(s: &Series, path: &Path, flag: &str) -> Result<(ClassKind, Vec<Option<String>>)> {
    let name = s.name().to_string();
    let dtype = s.dtype();
    if dtype.is_float() {
        // Floats are accepted when every value is integral (pandas writes int columns with
        // nulls as float64).
        let ca = s.f64().map_err(|e| Error::input(path, e))?;
        let mut out = Vec::with_capacity(s.len());
        for v in ca.iter() {
            match v {
                None => out.push(None),
                Some(x) if x.is_finite() && x.fract() == 0.0 && x.abs() < 9.0e15 => {
                    out.push(Some(format!("{}", x as i64)));
                }
                Some(x) => {
                    return Err(Error::input(
                        path,
                        format!(
                            "column `{name}` ({flag}) holds {x}, not a class; class columns must be integers or text"
                        ),
                    ));
                }
            }
        }
        return Ok((ClassKind::Integer, out));
    }
    let kind = if dtype.is_integer() {
        ClassKind::Integer
    } else if dtype.is_string() || dtype.is_bool() || matches!(dtype, DataType::Categorical(..)) {
        ClassKind::Text
    } else {
        return Err(Error::input(
            path,
            format!(
                "column `{name}` ({flag}) has type {dtype}; class columns must be integers or text"
            ),
        ));
    };
    let text = s
        .cast(&DataType::String)
        .map_err(|e| Error::input(path, format!("column `{name}`: {e}")))?;
    let ca = text.str().map_err(|e| Error::input(path, e))?;
    Ok((kind, ca.iter().map(|v| v.map(str::to_owned)).collect()))
}

/// Probabilities of a score column; nulls, NaN and values outside [0, 1] are errors.
fn score_values(s: &Series, path: &Path, flag: &str) -> Result<Vec<f64>> {
    let name = s.name().to_string();
    if !(s.dtype().is_float() || s.dtype().is_integer()) {
        return Err(Error::input(
            path,
            format!(
                "column `{name}` ({flag}) has type {}; scores must be numeric probabilities",
                s.dtype()
            ),
        ));
    }
    let f = s
        .cast(&DataType::Float64)
        .map_err(|e| Error::input(path, e))?;
    let ca = f.f64().map_err(|e| Error::input(path, e))?;
    let mut out = Vec::with_capacity(s.len());
    for (row, v) in ca.iter().enumerate() {
        match v {
            Some(x) if (0.0..=1.0).contains(&x) => out.push(x),
            Some(x) => {
                return Err(Error::input(
                    path,
                    format!(
                        "column `{name}` ({flag}) row {row} holds {x}, not a probability in [0, 1]"
                    ),
                ));
            }
            None => {
                return Err(Error::input(
                    path,
                    format!("column `{name}` ({flag}) row {row} is null; every row needs a score"),
                ));
            }
        }
    }
    Ok(out)
}

/// Sorted class names: numerically when every name is an integer, else as text.
pub(crate) fn sort_classes(set: BTreeSet<String>) -> Vec<String> {
    let mut classes: Vec<String> = set.into_iter().collect();
    if classes.iter().all(|c| c.parse::<i64>().is_ok()) {
        classes.sort_by_key(|c| c.parse::<i64>().unwrap_or(0));
    }
    classes
}

/// Reads the joined file's rows in the order of the data's keys. Every key must appear once
/// in each file.
fn align(batch: &Batch, join: &Batch, key: &str) -> Result<Vec<usize>> {
    let data_path = first_path(batch);
    let join_path = first_path(join);
    let keys_of = |b: &Batch, path: &Path| -> Result<Vec<String>> {
        let s = gather(b, key, "--key")?;
        let text = s
            .cast(&DataType::String)
            .map_err(|e| Error::input(path, format!("column `{key}`: {e}")))?;
        let ca = text.str().map_err(|e| Error::input(path, e))?;
        let v: Vec<Option<String>> = ca.iter().map(|v| v.map(str::to_owned)).collect();
        v.into_iter()
            .enumerate()
            .map(|(row, k)| {
                k.ok_or_else(|| {
                    Error::input(path, format!("key column `{key}` is null at row {row}"))
                })
            })
            .collect()
    };
    let data_keys = keys_of(batch, data_path)?;
    let join_keys = keys_of(join, join_path)?;
    let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
    if let Some(k) = data_keys.iter().find(|k| !seen.insert(k.as_str())) {
        return Err(Error::input(
            data_path,
            format!("key `{k}` of column `{key}` occurs more than once"),
        ));
    }
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(join_keys.len());
    for (row, k) in join_keys.iter().enumerate() {
        if index.insert(k.as_str(), row).is_some() {
            return Err(Error::input(
                join_path,
                format!("key `{k}` of column `{key}` occurs more than once"),
            ));
        }
    }
    let mut rows = Vec::with_capacity(data_keys.len());
    let mut missing = 0usize;
    let mut first_missing = None;
    for k in &data_keys {
        match index.get(k.as_str()) {
            Some(&r) => rows.push(r),
            None => {
                missing += 1;
                first_missing.get_or_insert_with(|| k.clone());
            }
        }
    }
    if let Some(k) = first_missing {
        return Err(Error::input(
            join_path,
            format!(
                "key mismatch: {missing} of {} keys of {} have no row here (first: `{k}`)",
                data_keys.len(),
                data_path.display()
            ),
        ));
    }
    if join_keys.len() != data_keys.len() {
        return Err(Error::input(
            join_path,
            format!(
                "key mismatch: {} rows here but {} in {}; each key must occur once in each file",
                join_keys.len(),
                data_keys.len(),
                data_path.display()
            ),
        ));
    }
    Ok(rows)
}

/// Assembles the comparison table.
///
/// # Errors
/// A missing column, a null prediction, a repeated key, a key mismatch with the joined file,
/// class columns of different kinds, predicted classes the label never takes, scores that are
/// not probabilities or whose count does not fit the classes.
pub fn assemble(spec: &Spec, batch: &Batch, join: Option<&Batch>) -> Result<Table> {
    let path = first_path(batch);
    let n = usize::try_from(batch.rows()).unwrap_or(usize::MAX);
    if n == 0 {
        return Err(Error::input(path, "no rows to compare"));
    }
    if spec.before == spec.after {
        return Err(Error::Usage(
            "--before-col and --after-col name the same column".into(),
        ));
    }
    if spec.before_confidence.is_some() != spec.after_confidence.is_some() {
        return Err(Error::Usage(
            "give both --before-confidence and --after-confidence, or neither".into(),
        ));
    }
    if spec.before_confidence.is_some() && !spec.before_scores.is_empty() {
        return Err(Error::Usage(
            "--before-confidence/--after-confidence replace --before-score/--after-score; give one kind".into(),
        ));
    }
    if spec.before_scores.len() != spec.after_scores.len() {
        return Err(Error::Usage(format!(
            "{} --before-score column(s) but {} --after-score column(s); give the same number",
            spec.before_scores.len(),
            spec.after_scores.len()
        )));
    }
    // Predictions and label.
    let (kb, before) = class_values(
        &gather(batch, &spec.before, "--before-col")?,
        path,
        "--before-col",
    )?;
    let (ka, after) = class_values(
        &gather(batch, &spec.after, "--after-col")?,
        path,
        "--after-col",
    )?;
    if kb != ka {
        return Err(Error::input(
            path,
            format!(
                "classes do not match: `{}` holds {} classes but `{}` holds {} classes",
                spec.before,
                kind_name(kb),
                spec.after,
                kind_name(ka)
            ),
        ));
    }
    let label = match &spec.label {
        Some(l) => {
            let (kl, values) = class_values(&gather(batch, l, "--label")?, path, "--label")?;
            if kl != kb {
                return Err(Error::input(
                    path,
                    format!(
                        "classes do not match: label `{l}` holds {} classes but the predictions hold {} classes",
                        kind_name(kl),
                        kind_name(kb)
                    ),
                ));
            }
            Some(values)
        }
        None => None,
    };
    for (name, values) in [(&spec.before, &before), (&spec.after, &after)] {
        if let Some(row) = values.iter().position(Option::is_none) {
            return Err(Error::input(
                path,
                format!(
                    "prediction column `{name}` is null at row {row}; every row needs a prediction"
                ),
            ));
        }
    }
    let mut set: BTreeSet<String> = BTreeSet::new();
    match &label {
        Some(values) => {
            set.extend(values.iter().flatten().cloned());
            if set.is_empty() {
                return Err(Error::input(
                    path,
                    format!(
                        "label column `{}` is null on every row",
                        spec.label.as_deref().unwrap_or_default()
                    ),
                ));
            }
            for (name, values) in [(&spec.before, &before), (&spec.after, &after)] {
                if let Some(v) = values.iter().flatten().find(|v| !set.contains(*v)) {
                    return Err(Error::input(
                        path,
                        format!(
                            "classes do not match: `{name}` predicts class `{v}`, which the label `{}` never takes",
                            spec.label.as_deref().unwrap_or_default()
                        ),
                    ));
                }
            }
        }
        None => {
            set.extend(before.iter().flatten().cloned());
            set.extend(after.iter().flatten().cloned());
        }
    }
    if set.len() > MAX_CLASSES {
        return Err(Error::input(
            path,
            format!("{} classes; at most {MAX_CLASSES} are supported", set.len()),
        ));
    }
    let classes = sort_classes(set);
    let index: HashMap<&str, u16> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i as u16))
        .collect();
    let to_index = |v: &Option<String>| {
        v.as_deref()
            .and_then(|v| index.get(v).copied())
            .unwrap_or(NO_LABEL)
    };
    let before_idx: Vec<u16> = before.iter().map(to_index).collect();
    let after_idx: Vec<u16> = after.iter().map(to_index).collect();
    let label_idx: Vec<u16> = label
        .as_ref()
        .map(|v| v.iter().map(to_index).collect())
        .unwrap_or_default();
    // Scores.
    let k = classes.len();
    let scores = |cols: &[String], flag: &str| -> Result<Vec<f64>> {
        if cols.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = vec![0.0; n * k];
        if cols.len() == 1 {
            if k != 2 {
                return Err(Error::Usage(format!(
                    "one {flag} column is the probability of the positive class, which needs exactly 2 classes; found {k} ({}); give one column per class in sorted class order",
                    classes.join(", ")
                )));
            }
            let positive = match &spec.positive_class {
                Some(p) => classes.iter().position(|c| c == p).ok_or_else(|| {
                    Error::Usage(format!(
                        "--positive-class `{p}` is not one of the classes ({})",
                        classes.join(", ")
                    ))
                })?,
                None => 1,
            };
            let p = score_values(&gather(batch, &cols[0], flag)?, path, flag)?;
            for (row, &x) in p.iter().enumerate() {
                out[row * k + positive] = x;
                out[row * k + (1 - positive)] = 1.0 - x;
            }
            return Ok(out);
        }
        if cols.len() != k {
            return Err(Error::Usage(format!(
                "{} {flag} columns for {k} classes ({}); give one column per class in sorted class order, or one column for a binary task",
                cols.len(),
                classes.join(", ")
            )));
        }
        for (j, col) in cols.iter().enumerate() {
            let p = score_values(&gather(batch, col, flag)?, path, flag)?;
            for (row, &x) in p.iter().enumerate() {
                out[row * k + j] = x;
            }
        }
        for row in 0..n {
            let sum: f64 = out[row * k..(row + 1) * k].iter().sum();
            if (sum - 1.0).abs() > 0.01 {
                return Err(Error::input(
                    path,
                    format!(
                        "the {flag} columns of row {row} sum to {}, not 1; they must be class probabilities",
                        num(sum)
                    ),
                ));
            }
        }
        Ok(out)
    };
    let mut before_scores = scores(&spec.before_scores, "--before-score")?;
    let mut after_scores = scores(&spec.after_scores, "--after-score")?;
    let (mut before_confidence, mut after_confidence) = (Vec::new(), Vec::new());
    if let (Some(bc), Some(ac)) = (&spec.before_confidence, &spec.after_confidence) {
        for (col, flag, predicted, full, top) in [
            (
                bc,
                "--before-confidence",
                &before_idx,
                &mut before_scores,
                &mut before_confidence,
            ),
            (
                ac,
                "--after-confidence",
                &after_idx,
                &mut after_scores,
                &mut after_confidence,
            ),
        ] {
            let c = score_values(&gather(batch, col, flag)?, path, flag)?;
            // The predicted class's probability is the largest of k: at least 1/k.
            let floor = 1.0 / k as f64 - 0.01;
            if let Some(row) = c.iter().position(|&x| x < floor) {
                return Err(Error::input(
                    path,
                    format!(
                        "column `{col}` ({flag}) row {row} holds {}, below 1/{k}: not the probability of the predicted class (for the probability of one class, use --before-score/--after-score)",
                        num(c[row])
                    ),
                ));
            }
            if k == 2 {
                // A binary task's confidence is its full scores.
                *full = vec![0.0; n * 2];
                for (r, (&x, &p)) in c.iter().zip(predicted.iter()).enumerate() {
                    let p = usize::from(p);
                    full[r * 2 + p] = x;
                    full[r * 2 + (1 - p)] = 1.0 - x;
                }
            } else {
                *top = c;
            }
        }
    }
    // Keys and the join.
    let aligned = match (join, &spec.key) {
        (Some(_), None) => {
            return Err(Error::Usage("--join needs --key to join on".into()));
        }
        (Some(j), Some(key)) => Some(align(batch, j, key)?),
        (None, Some(key)) => {
            let s = gather(batch, key, "--key")?;
            let dup = s
                .n_unique()
                .map_err(|e| Error::input(path, format!("column `{key}`: {e}")))?;
            if dup != n {
                return Err(Error::input(
                    path,
                    format!(
                        "key column `{key}` repeats: {} distinct keys in {n} rows; each row needs its own key",
                        dup
                    ),
                ));
            }
            if s.null_count() > 0 {
                return Err(Error::input(path, format!("key column `{key}` has nulls")));
            }
            None
        }
        (None, None) => None,
    };
    let mut segments = Vec::with_capacity(spec.segments.len());
    for col in &spec.segments {
        let in_data = batch
            .frames
            .first()
            .is_some_and(|df| df.column(col).is_ok());
        let series = match (in_data, join, &aligned) {
            (true, _, _) => gather(batch, col, "--segment")?,
            (false, Some(j), Some(rows)) => {
                let s = gather(j, col, "--segment")?;
                let idx =
                    IdxCa::from_vec("idx".into(), rows.iter().map(|&r| r as IdxSize).collect());
                s.take(&idx).map_err(|e| Error::input(first_path(j), e))?
            }
            _ => {
                return Err(Error::input(
                    path,
                    format!("column `{col}` (--segment) is missing"),
                ));
            }
        };
        segments.push(segment(&series, col)?);
    }
    Ok(Table {
        classes,
        before: before_idx,
        after: after_idx,
        label: label_idx,
        before_scores,
        after_scores,
        before_confidence,
        after_confidence,
        segments,
    })
}

fn kind_name(k: ClassKind) -> &'static str {
    match k {
        ClassKind::Integer => "integer",
        ClassKind::Text => "text",
    }
}

/// Cuts a segment column into groups: categories (the most frequent `SEGMENT_TOP`, then
/// "other") or, for numeric columns with many values, deciles of the column itself.
fn segment(s: &Series, column: &str) -> Result<Segment> {
    let err = |e: PolarsError| Error::Internal(format!("segment `{column}`: {e}"));
    let numeric = s.dtype().is_float()
        || (s.dtype().is_integer() && s.n_unique().map_err(err)? > SEGMENT_CATEGORICAL_MAX);
    if numeric {
        let f = s.cast(&DataType::Float64).map_err(err)?;
        let ca = f.f64().map_err(err)?;
        let mut values: Vec<f64> = ca.iter().flatten().filter(|x| !x.is_nan()).collect();
        values.sort_unstable_by(f64::total_cmp);
        let mut edges: Vec<f64> = (1..10)
            .filter_map(|q| {
                let i = (q * values.len()) / 10;
                values.get(i.min(values.len().saturating_sub(1))).copied()
            })
            .collect();
        edges.dedup();
        let mut names = Vec::with_capacity(edges.len() + 2);
        for b in 0..=edges.len() {
            let lo = if b == 0 {
                "-inf".to_owned()
            } else {
                num(edges[b - 1])
            };
            let hi = if b == edges.len() {
                "inf".to_owned()
            } else {
                num(edges[b])
            };
            names.push(format!("({lo}, {hi}]"));
        }
        let null_code = names.len() as u32;
        names.push("null".to_owned());
        let codes = ca
            .iter()
            .map(|v| match v {
                Some(x) if !x.is_nan() => edges.partition_point(|&e| e < x) as u32,
                _ => null_code,
            })
            .collect();
        return Ok(Segment {
            column: column.to_owned(),
            codes,
            names,
        });
    }
    let text = s.cast(&DataType::String).map_err(err)?;
    let ca = text.str().map_err(err)?;
    let mut counts: HashMap<&str, u64> = HashMap::new();
    for v in ca.iter().flatten() {
        *counts.entry(v).or_default() += 1;
    }
    let mut ranked: Vec<(&str, u64)> = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    ranked.truncate(SEGMENT_TOP);
    let mut names: Vec<String> = ranked.iter().map(|(v, _)| (*v).to_owned()).collect();
    let index: HashMap<String, u32> = names
        .iter()
        .enumerate()
        .map(|(i, v)| (v.clone(), i as u32))
        .collect();
    let other = names.len() as u32;
    names.push("other".to_owned());
    let null = names.len() as u32;
    names.push("null".to_owned());
    let codes = ca
        .iter()
        .map(|v| match v {
            Some(v) => index.get(v).copied().unwrap_or(other),
            None => null,
        })
        .collect();
    Ok(Segment {
        column: column.to_owned(),
        codes,
        names,
    })
}
