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
use crate::source::Batch;

mod keys;
mod scores;

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

/// Sorted class names: numerically when every name is an integer, else as text.
pub(crate) fn sort_classes(set: BTreeSet<String>) -> Vec<String> {
    let mut classes: Vec<String> = set.into_iter().collect();
    if classes.iter().all(|c| c.parse::<i64>().is_ok()) {
        classes.sort_by_key(|c| c.parse::<i64>().unwrap_or(0));
    }
    classes
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
    check_flags(spec)?;
    let Classes {
        names: classes,
        before,
        after,
        label,
    } = classes_of(spec, batch, path)?;
    let mut before_scores = scores::matrix(
        spec,
        batch,
        &spec.before_scores,
        "--before-score",
        &classes,
        n,
    )?;
    let mut after_scores = scores::matrix(
        spec,
        batch,
        &spec.after_scores,
        "--after-score",
        &classes,
        n,
    )?;
    let (before_confidence, after_confidence) = scores::confidences(
        spec,
        batch,
        classes.len(),
        n,
        (&before, &mut before_scores),
        (&after, &mut after_scores),
    )?;
    let aligned = keys::key_rows(spec, batch, join, n)?;
    let segments = keys::segments(spec, batch, join, aligned.as_deref())?;
    Ok(Table {
        classes,
        before,
        after,
        label,
        before_scores,
        after_scores,
        before_confidence,
        after_confidence,
        segments,
    })
}

/// Refuses flags that contradict each other.
fn check_flags(spec: &Spec) -> Result<()> {
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
    Ok(())
}

/// The sorted classes and each row's class index under both models and the label
/// (`NO_LABEL` where the label is null; no label: empty).
struct Classes {
    names: Vec<String>,
    before: Vec<u16>,
    after: Vec<u16>,
    label: Vec<u16>,
}

/// Reads the prediction and label columns into [`Classes`], refusing classes of different
/// kinds, null predictions and predicted classes the label never takes.
fn classes_of(spec: &Spec, batch: &Batch, path: &Path) -> Result<Classes> {
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
    Ok(Classes {
        names: classes,
        before: before_idx,
        after: after_idx,
        label: label_idx,
    })
}

fn kind_name(k: ClassKind) -> &'static str {
    match k {
        ClassKind::Integer => "integer",
        ClassKind::Text => "text",
    }
}
