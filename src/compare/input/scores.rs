//! The models' probabilities: score columns (one per class, or one for a binary task's
//! positive class) and the predicted class's confidence that serving logs often keep alone.

use std::path::Path;

use polars::prelude::*;

use super::{Batch, Spec, first_path, gather};
use crate::error::{Error, Result};
use crate::finding::num;

/// The row-major class probabilities (`rows x classes`) from the score columns `cols` of
/// `flag`: one column of a binary task's positive class, or one column per class in sorted
/// class order; none: empty.
pub(super) fn matrix(
    spec: &Spec,
    batch: &Batch,
    cols: &[String],
    flag: &str,
    classes: &[String],
    n: usize,
) -> Result<Vec<f64>> {
    let path = first_path(batch);
    let k = classes.len();
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
}

/// The probability of each row's predicted class, from `--before-confidence` and
/// `--after-confidence` (each model's predicted class indices beside the score matrix it
/// fills): a binary task's confidence becomes its full scores (and the returned vectors
/// stay empty); with more classes it is returned as is. Neither flag: empty.
pub(super) fn confidences(
    spec: &Spec,
    batch: &Batch,
    k: usize,
    n: usize,
    (before_idx, before_scores): (&[u16], &mut Vec<f64>),
    (after_idx, after_scores): (&[u16], &mut Vec<f64>),
) -> Result<(Vec<f64>, Vec<f64>)> {
    let path = first_path(batch);
    let (mut before_confidence, mut after_confidence) = (Vec::new(), Vec::new());
    if let (Some(bc), Some(ac)) = (&spec.before_confidence, &spec.after_confidence) {
        for (col, flag, predicted, full, top) in [
            (
                bc,
                "--before-confidence",
                before_idx,
                before_scores,
                &mut before_confidence,
            ),
            (
                ac,
                "--after-confidence",
                after_idx,
                after_scores,
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
    Ok((before_confidence, after_confidence))
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
