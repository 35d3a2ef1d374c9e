//! Batch summaries: everything `check` decides from, computed chunk by chunk.
//!
//! A [`BatchSummary`] holds, per column, counts over the baseline's bin edges, null and
//! out-of-range counts, shifted power sums and category counts. Every field merges exactly
//! across chunks and shards by addition (counts) or min/max, except the floating power sums,
//! which merge to within rounding; reports round statistics to 10 significant digits so that
//! chunking never shows. A streaming or sharded reader therefore only changes how chunks
//! arrive: [`BatchSummary::update`] one frame at a time, or [`BatchSummary::merge`] partials.
//! The serialised form is versioned (`poisongate.summary/1`).

mod categorical;
mod columns;
mod numeric;

pub use categorical::{CategoricalPlan, CategoricalSummary};
pub use columns::{
    Kind, for_each_f64_chunk, for_each_str_chunk, kind_of, summarise_categorical, summarise_numeric,
};
pub use numeric::{NumericPlan, NumericSummary};

use std::collections::BTreeMap;

use polars::prelude::DataFrame;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Serialised format tag of a batch summary.
pub const SUMMARY_FORMAT: &str = "poisongate.summary/1";

/// What to compute for each column, derived from the baseline.
#[derive(Debug, Clone)]
pub enum ColumnPlan {
    /// Bin against pinned edges.
    Numeric(NumericPlan),
    /// Count categories against the pinned domain.
    Categorical(CategoricalPlan),
}

/// The summary of one column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ColumnSummary {
    /// A numeric column.
    Numeric(Box<NumericSummary>),
    /// A categorical column.
    Categorical(CategoricalSummary),
}

impl ColumnSummary {
    fn merge(&mut self, other: &Self) -> Result<()> {
        match (self, other) {
            (Self::Numeric(a), Self::Numeric(b)) => a.merge(b),
            (Self::Categorical(a), Self::Categorical(b)) => a.merge(b),
            _ => Err(Error::Internal(
                "merging summaries of different column kinds".into(),
            )),
        }
    }
}

/// Mergeable summary of a batch against one baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchSummary {
    /// Always [`SUMMARY_FORMAT`].
    pub format: String,
    /// Rows seen.
    pub rows: u64,
    /// Per-column summaries, by column name.
    pub columns: BTreeMap<String, ColumnSummary>,
}

impl BatchSummary {
    /// An empty summary for the given plans.
    #[must_use]
    pub fn new(plans: &BTreeMap<String, ColumnPlan>) -> Self {
        let columns = plans
            .iter()
            .map(|(name, plan)| {
                let summary = match plan {
                    ColumnPlan::Numeric(p) => {
                        ColumnSummary::Numeric(Box::new(NumericSummary::new(p)))
                    }
                    ColumnPlan::Categorical(_) => {
                        ColumnSummary::Categorical(CategoricalSummary::default())
                    }
                };
                (name.clone(), summary)
            })
            .collect();
        Self {
            format: SUMMARY_FORMAT.to_owned(),
            rows: 0,
            columns,
        }
    }

    /// Folds one frame (a chunk) into the summary; columns are processed in parallel.
    ///
    /// # Errors
    /// A planned column missing from the frame, or a column that cannot be cast.
    pub fn update(&mut self, df: &DataFrame, plans: &BTreeMap<String, ColumnPlan>) -> Result<()> {
        self.rows += df.height() as u64;
        let updates: Vec<Result<(String, ColumnSummary)>> = plans
            .par_iter()
            .map(|(name, plan)| {
                crate::fault::point("summary-worker");
                let column = df
                    .column(name)
                    .map_err(|e| Error::Internal(format!("planned column `{name}`: {e}")))?;
                let series = column.as_materialized_series();
                let summary = match plan {
                    ColumnPlan::Numeric(p) => {
                        let mut s = NumericSummary::new(p);
                        summarise_numeric(series, p, &mut s)?;
                        ColumnSummary::Numeric(Box::new(s))
                    }
                    ColumnPlan::Categorical(p) => {
                        let mut s = CategoricalSummary::default();
                        summarise_categorical(series, p, &mut s)?;
                        ColumnSummary::Categorical(s)
                    }
                };
                Ok((name.clone(), summary))
            })
            .collect();
        for update in updates {
            let (name, summary) = update?;
            match self.columns.get_mut(&name) {
                Some(existing) => existing.merge(&summary)?,
                None => {
                    self.columns.insert(name, summary);
                }
            }
        }
        Ok(())
    }

    /// Adds another partial summary of the same plans (another chunk or shard).
    ///
    /// # Errors
    /// Summaries of different formats, columns or bin layouts.
    pub fn merge(&mut self, other: &Self) -> Result<()> {
        if other.format != self.format {
            return Err(Error::Internal(format!(
                "summary format {} vs {}",
                self.format, other.format
            )));
        }
        if other.columns.keys().ne(self.columns.keys()) {
            return Err(Error::Internal("summaries cover different columns".into()));
        }
        self.rows += other.rows;
        for (name, summary) in &other.columns {
            if let Some(mine) = self.columns.get_mut(name) {
                mine.merge(summary)?;
            }
        }
        Ok(())
    }
}
