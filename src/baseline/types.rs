//! Baseline types. Field order is the serialised order; maps are `BTreeMap` so that the same
//! data and seed give byte-identical files.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::source::InputMeta;
use crate::summary::Kind;

/// The tool that wrote an artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tool {
    /// Always `poisongate`.
    pub name: String,
    /// Its version.
    pub version: String,
}

impl Tool {
    /// This build.
    #[must_use]
    pub fn current() -> Self {
        Self {
            name: "poisongate".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

/// The pinned profile of trusted data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// Always `poisongate.baseline/1`.
    pub format: String,
    /// The tool that pinned it.
    pub tool: Tool,
    /// Seed of every random choice made from this baseline.
    pub seed: u64,
    /// Rows profiled.
    pub rows: u64,
    /// The trusted inputs, with digests.
    pub inputs: Vec<InputMeta>,
    /// Label column, if any.
    pub label: Option<String>,
    /// Row-id column, if any (carried, never profiled).
    pub id: Option<String>,
    /// Columns excluded with `--ignore`.
    pub ignored: Vec<String>,
    /// How statistics were binned and capped.
    pub calibration: Calibration,
    /// Every profiled column in input order (the label included, the id and ignored ones not).
    pub columns: Vec<ColumnProfile>,
    /// Label distribution and per-class summaries.
    pub label_profile: Option<LabelProfile>,
    /// What the poisoning detectors pinned (reference model, calibrations, filters).
    #[serde(default)]
    pub poison: Option<crate::poison::PoisonProfile>,
}

/// Binning and caps used at pin time; `check` reuses them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// Quantile levels of the numeric bin edges (before de-duplication).
    pub edge_levels: Vec<f64>,
    /// Target number of coarse bins for PSI and Jensen–Shannon.
    pub coarse_bins: usize,
    /// Most frequent categories kept with their counts; the rest pool into "other".
    pub top_k: usize,
    /// Most categories stored in a column's domain.
    pub domain_cap: usize,
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

impl Baseline {
    /// The profile of `name`, if pinned.
    #[must_use]
    pub fn column(&self, name: &str) -> Option<&ColumnProfile> {
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

    /// Checks invariants a hand-edited or corrupted file could break.
    ///
    /// # Errors
    /// A description of the first broken invariant.
    pub fn validate(&self) -> Result<(), String> {
        if self.rows == 0 {
            return Err("zero rows profiled".into());
        }
        if self.columns.is_empty() {
            return Err("no columns".into());
        }
        for c in &self.columns {
            if c.count + c.nulls != self.rows {
                return Err(format!("column `{}`: counts do not add up to rows", c.name));
            }
            match (c.kind, &c.numeric, &c.categorical) {
                (Kind::Numeric, Some(n), None) => {
                    if n.counts.len() != n.edges.len() + 1 {
                        return Err(format!(
                            "column `{}`: {} counts for {} edges",
                            c.name,
                            n.counts.len(),
                            n.edges.len()
                        ));
                    }
                    if !n.edges.windows(2).all(|w| w[0] < w[1])
                        || n.edges.iter().any(|e| !e.is_finite())
                    {
                        return Err(format!(
                            "column `{}`: edges not strictly increasing",
                            c.name
                        ));
                    }
                    if n.counts.iter().sum::<u64>() != c.count {
                        return Err(format!("column `{}`: bin counts do not add up", c.name));
                    }
                }
                (Kind::Categorical, None, Some(cat)) => {
                    let top: u64 = cat.top.iter().map(|t| t.count).sum();
                    if top + cat.other != c.count {
                        return Err(format!(
                            "column `{}`: category counts do not add up",
                            c.name
                        ));
                    }
                }
                (Kind::Unsupported, None, None) => {}
                _ => return Err(format!("column `{}`: summary does not match kind", c.name)),
            }
        }
        if let Some(label) = &self.label
            && self
                .column(label)
                .is_none_or(|c| c.kind != Kind::Categorical)
        {
            return Err(format!("label column `{label}` has no categorical profile"));
        }
        if let Some(p) = &self.poison {
            p.validate()?;
        }
        Ok(())
    }
}
