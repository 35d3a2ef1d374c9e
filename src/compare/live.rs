//! Scoring the evaluation rows with both live models, so that an endpoint-based comparison
//! is the file-based one on the columns the models answered: the predictions (and, where
//! both models return them, the class probabilities) are appended to the rows as
//! [`BEFORE_COL`], [`AFTER_COL`] and `score@before:<class>`, `score@after:<class>`, and
//! every test of `compare` runs on them unchanged. `--save-predictions` writes that table,
//! so the same comparison can be replayed from the file.

use std::collections::BTreeSet;
use std::sync::Arc;

use polars::prelude::*;

use super::endpoint::{Answers, Client, Endpoint, Features};
use crate::error::{Error, Result};
use crate::source::Batch;

/// Column of the serving model's answers.
pub const BEFORE_COL: &str = "prediction@before";
/// Column of the retrained model's answers.
pub const AFTER_COL: &str = "prediction@after";

/// Both models and the rows they are asked about.
#[derive(Debug)]
pub struct Live {
    /// The client.
    pub client: Client,
    /// The serving model.
    pub before: Endpoint,
    /// The retrained model.
    pub after: Endpoint,
    /// The model inputs of the evaluation rows.
    pub features: Arc<Features>,
}

/// The columns the answers were written to.
#[derive(Debug, Clone, Default)]
pub struct Scored {
    /// Probability columns of the serving model, in class order (empty without them).
    pub before_scores: Vec<String>,
    /// Probability columns of the retrained model.
    pub after_scores: Vec<String>,
    /// What could not be used, for the report's notes.
    pub notes: Vec<String>,
}

/// Score column name of class `j`.
fn score_col(side: &str, class: &str) -> String {
    format!("score@{side}:{class}")
}

impl Live {
    /// Asks both models about every row and appends their answers to the batch.
    ///
    /// # Errors
    /// A model that is not ready or fails, or a batch that already holds the columns.
    pub fn score(&self, batch: &mut Batch, label: Option<&str>) -> Result<Scored> {
        self.client.ready(&self.before)?;
        self.client.ready(&self.after)?;
        let rows: Vec<usize> = (0..self.features.rows).collect();
        let before = self
            .client
            .predict(&self.before, &self.features, &rows, None)?;
        let after = self
            .client
            .predict(&self.after, &self.features, &rows, None)?;
        let integer = before
            .labels
            .iter()
            .chain(&after.labels)
            .all(|l| l.parse::<i64>().is_ok());
        let classes = classes(batch, label, &before, &after)?;
        let mut scored = Scored::default();
        for (role, ep, answers) in [
            ("serving", &self.before, &before),
            ("retrained", &self.after, &after),
        ] {
            scored.notes.push(format!(
                "{role} model: {} (answered as {})",
                ep.model_url,
                answers.model.as_deref().unwrap_or("an unnamed model")
            ));
        }
        let with_scores = if before.proba_classes == 0 || after.proba_classes == 0 {
            if before.proba_classes + after.proba_classes > 0 {
                scored.notes.push(
                    "only one endpoint returned class probabilities: score shift, loss and calibration were not tested"
                        .to_owned(),
                );
            }
            false
        } else if before.proba_classes != classes.len() || after.proba_classes != classes.len() {
            scored.notes.push(format!(
                "the endpoints return {} and {} class probabilities per row, but the rows hold {} classes ({}): probabilities not used",
                before.proba_classes,
                after.proba_classes,
                classes.len(),
                classes.join(", ")
            ));
            false
        } else {
            true
        };
        let mut start = 0usize;
        for (df, meta) in batch.frames.iter_mut().zip(&batch.inputs) {
            let h = df.height();
            let path = std::path::Path::new(&meta.path);
            let mut add = |col: Column| -> Result<()> {
                if df.column(col.name()).is_ok() {
                    return Err(Error::input(
                        path,
                        format!(
                            "column `{}` already exists; it is where the endpoints' answers go",
                            col.name()
                        ),
                    ));
                }
                df.with_column(col).map_err(|e| Error::input(path, e))?;
                Ok(())
            };
            for (name, answers) in [(BEFORE_COL, &before), (AFTER_COL, &after)] {
                let part = &answers.labels[start..start + h];
                let col = if integer {
                    Column::new(
                        name.into(),
                        part.iter()
                            .map(|l| l.parse::<i64>().unwrap_or_default())
                            .collect::<Vec<_>>(),
                    )
                } else {
                    Column::new(name.into(), part.to_vec())
                };
                add(col)?;
            }
            if with_scores {
                for (side, answers) in [("before", &before), ("after", &after)] {
                    let k = answers.proba_classes;
                    for (j, class) in classes.iter().enumerate() {
                        let v: Vec<f64> = (start..start + h)
                            .map(|r| answers.proba[r * k + j])
                            .collect();
                        add(Column::new(score_col(side, class).into(), v))?;
                    }
                }
            }
            start += h;
        }
        if with_scores {
            scored.before_scores = classes.iter().map(|c| score_col("before", c)).collect();
            scored.after_scores = classes.iter().map(|c| score_col("after", c)).collect();
        }
        Ok(scored)
    }
}

/// The classes in the comparison's order: the label's values (or else the predictions),
/// sorted as numbers when all are integers, as `compare` sorts them.
fn classes(
    batch: &Batch,
    label: Option<&str>,
    before: &Answers,
    after: &Answers,
) -> Result<Vec<String>> {
    let mut set = BTreeSet::new();
    match label {
        Some(l) => {
            for (df, meta) in batch.frames.iter().zip(&batch.inputs) {
                let path = std::path::Path::new(&meta.path);
                let col = df.column(l).map_err(|_| {
                    Error::input(path, format!("column `{l}` (--label) is missing"))
                })?;
                let s = col.as_materialized_series();
                let s = if s.dtype().is_float() {
                    s.cast(&DataType::Int64)
                        .map_err(|e| Error::input(path, e))?
                } else {
                    s.clone()
                };
                let t = s
                    .cast(&DataType::String)
                    .map_err(|e| Error::input(path, format!("column `{l}`: {e}")))?;
                let ca = t.str().map_err(|e| Error::input(path, e))?;
                set.extend(ca.iter().flatten().map(str::to_owned));
            }
        }
        None => {
            set.extend(before.labels.iter().cloned());
            set.extend(after.labels.iter().cloned());
        }
    }
    Ok(super::input::sort_classes(set))
}

/// The batch with the answers as one Parquet file.
///
/// # Errors
/// Frames that cannot be stacked or written.
pub fn parquet(batch: &Batch) -> Result<Vec<u8>> {
    let mut frames = batch.frames.iter();
    let mut all = frames
        .next()
        .cloned()
        .ok_or_else(|| Error::Internal("no frames to save".into()))?;
    for f in frames {
        all.vstack_mut(f)
            .map_err(|e| Error::Internal(format!("stacking the scored rows: {e}")))?;
    }
    let mut buf = Vec::new();
    ParquetWriter::new(&mut buf)
        .finish(&mut all)
        .map_err(|e| Error::Internal(format!("writing the scored rows: {e}")))?;
    Ok(buf)
}
