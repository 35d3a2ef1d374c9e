//! Categorical column summary: exact counts per value.
//!
//! Values of the pinned domain are always counted exactly. Values outside it are counted
//! exactly up to [`MAX_UNSEEN_DISTINCT`] distinct values; past that they add to `overflow`,
//! so that an identifier-like column cannot exhaust memory. Merging adds counts.

use std::collections::{BTreeMap, HashSet};

use polars_arrow::array::Utf8ViewArray;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Distinct values outside the pinned domain tracked one by one.
pub const MAX_UNSEEN_DISTINCT: usize = 100_000;

/// What a categorical column is counted against.
#[derive(Debug, Clone, Default)]
pub struct CategoricalPlan {
    /// The baseline's domain (possibly capped).
    pub domain: HashSet<String>,
    /// Whether to cap distinct values outside `domain` (off when profiling).
    pub cap_unseen: bool,
}

/// Mergeable summary of a categorical column.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CategoricalSummary {
    /// Non-null values.
    pub count: u64,
    /// Nulls.
    pub nulls: u64,
    /// Count per value.
    pub counts: BTreeMap<String, u64>,
    /// Rows whose value is outside the domain and past the distinct cap.
    pub overflow: u64,
}

impl CategoricalSummary {
    /// Folds one chunk in.
    pub fn update(&mut self, plan: &CategoricalPlan, arr: &Utf8ViewArray) {
        // Count into a borrowed-key map first: one allocation per distinct value per chunk.
        let mut local: foldhash::HashMap<&str, u64> = foldhash::HashMap::default();
        for v in arr.iter() {
            match v {
                Some(s) => *local.entry(s).or_insert(0) += 1,
                None => self.nulls += 1,
            }
        }
        // Visit in sorted order so that which values pass the cap is deterministic.
        let mut local: Vec<(&str, u64)> = local.into_iter().collect();
        local.sort_unstable();
        for (value, n) in local {
            self.count += n;
            if let Some(c) = self.counts.get_mut(value) {
                *c += n;
            } else if !plan.cap_unseen
                || plan.domain.contains(value)
                || self.counts.len() < plan.domain.len() + MAX_UNSEEN_DISTINCT
            {
                self.counts.insert(value.to_owned(), n);
            } else {
                self.overflow += n;
            }
        }
    }

    /// Adds another partial summary.
    ///
    /// # Errors
    /// Never at present; kept fallible like the other merges.
    pub fn merge(&mut self, o: &Self) -> Result<()> {
        self.count += o.count;
        self.nulls += o.nulls;
        self.overflow += o.overflow;
        for (k, v) in &o.counts {
            *self.counts.entry(k.clone()).or_insert(0) += v;
        }
        Ok(())
    }
}
