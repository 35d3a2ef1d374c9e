//! The pinned profiles of trusted data's columns and label: the types a baseline carries
//! (`poisongate.baseline/1` serialises them in field order) and [`Trusted`], what every check
//! and detector reads of a baseline. This module sits below the detectors, the baseline
//! artifact and the decision layer, so that the detectors read pinned data without importing
//! the artifact that holds it (the baseline module depends on the detectors, never back).

pub mod tolerance;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::summary::Kind;

/// What the checks read of a baseline: the trusted data's column and label profiles, its
/// size and its seed ([`crate::baseline::Baseline::trusted`]).
#[derive(Debug, Clone, Copy)]
pub struct Trusted<'a> {
    /// Every profiled column in input order (the label included, the id and ignored ones not).
    pub columns: &'a [ColumnProfile],
    /// Label column, if any.
    pub label: &'a Option<String>,
    /// Label distribution and per-class summaries.
    pub label_profile: &'a Option<LabelProfile>,
    /// Rows profiled.
    pub rows: u64,
    /// Seed of every random choice made from the baseline.
    pub seed: u64,
}

impl<'a> Trusted<'a> {
    /// The profile of `name`, if pinned.
    #[must_use]
    pub fn column(&self, name: &str) -> Option<&'a ColumnProfile> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The label's class values in pinned order (empty without a label).
    #[must_use]
    pub fn class_names(&self) -> Vec<String> {
        self.label_profile
            .as_ref()
            .map(|l| l.classes.iter().map(|c| c.value.clone()).collect())
            .unwrap_or_default()
    }
}

/// A column's schema and summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ColumnProfile {
    /// Column name.
    pub name: String,
    /// Data type as polars names it (e.g. `i64`, `f64`, `str`).
    pub dtype: String,
    /// How the column is treated.
    pub kind: Kind,
    /// Whether any null was seen.
    pub nullable: bool,
    /// Non-null values.
    pub count: u64,
    /// Nulls (NaN included for floats).
    pub nulls: u64,
    /// Numeric summary, for numeric columns.
    pub numeric: Option<NumericProfile>,
    /// Categorical summary, for categorical columns.
    pub categorical: Option<CategoricalProfile>,
    /// A model output (`--prediction`, `--score`) rather than a feature: its drift is
    /// reported as `output-` and the poisoning detectors leave it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
}

/// What a model-output column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A predicted class (profiled as categorical).
    Prediction,
    /// A numeric score (profiled as numeric).
    Score,
}

/// Numeric summary of trusted data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NumericProfile {
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Mean.
    pub mean: f64,
    /// Standard deviation (`n - 1`).
    pub std: f64,
    /// Quantiles by level, keys like `p01`, `p50`, `p99` (linear interpolation, numpy's
    /// default).
    pub quantiles: BTreeMap<String, f64>,
    /// Bin edges: the quantiles at the calibration's levels, de-duplicated.
    pub edges: Vec<f64>,
    /// Trusted counts over the `edges.len() + 1` right-closed bins.
    pub counts: Vec<u64>,
    /// Mean of the values in the lower open bin (0 when empty).
    pub lower_tail_mean: f64,
    /// Mean of the values in the upper open bin (0 when empty).
    pub upper_tail_mean: f64,
    /// The most frequent exact values with their counts (values seen at least twice), most
    /// frequent first.
    #[serde(default)]
    pub frequent: Vec<ValueCount>,
    /// Count of the most frequent value not in `frequent` (an upper bound for any other value).
    #[serde(default)]
    pub frequent_bound: u64,
}

/// An exact numeric value and its count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ValueCount {
    /// The value.
    pub value: f64,
    /// Rows holding it.
    pub count: u64,
}

/// Categorical summary of trusted data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CategoricalProfile {
    /// Distinct values seen.
    pub distinct: u64,
    /// Values seen exactly once (for the Good–Turing estimate of unseen mass).
    pub singletons: u64,
    /// Whether `domain` lists every value seen.
    pub domain_complete: bool,
    /// The most frequent values (up to the domain cap), sorted.
    pub domain: Vec<String>,
    /// Rows holding a value in `domain`.
    pub domain_rows: u64,
    /// The `top_k` most frequent values with counts, most frequent first.
    pub top: Vec<CategoryCount>,
    /// Rows holding any other value.
    pub other: u64,
}

/// A value and its count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CategoryCount {
    /// The value.
    pub value: String,
    /// Rows holding it.
    pub count: u64,
}

/// The label column's distribution and what each class looks like.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelProfile {
    /// The label column.
    pub column: String,
    /// Rows with a null label.
    pub nulls: u64,
    /// One entry per class, sorted by value.
    pub classes: Vec<ClassProfile>,
}

/// One class of the label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassProfile {
    /// The label value, as text.
    pub value: String,
    /// Rows of this class.
    pub count: u64,
    /// Per numeric feature: count, mean and standard deviation within the class.
    pub numeric: BTreeMap<String, MeanStd>,
}

/// Count, mean and standard deviation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MeanStd {
    /// Non-null values.
    pub count: u64,
    /// Mean (0 when empty).
    pub mean: f64,
    /// Standard deviation (0 with fewer than two values).
    pub std: f64,
}
