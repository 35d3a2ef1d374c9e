//! Baseline types. Field order is the serialised order; maps are `BTreeMap` so that the same
//! data and seed give byte-identical files.

use serde::{Deserialize, Serialize};

pub use crate::pinned::{
    CategoricalProfile, CategoryCount, ClassProfile, ColumnProfile, LabelProfile, MeanStd,
    NumericProfile, Role, Trusted, ValueCount,
};
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

impl Baseline {
    /// What the checks read of it: the trusted data's column and label profiles.
    #[must_use]
    pub fn trusted(&self) -> Trusted<'_> {
        Trusted {
            columns: &self.columns,
            label: &self.label,
            label_profile: &self.label_profile,
            rows: self.rows,
            seed: self.seed,
        }
    }

    /// What the detectors read of it: [`Self::trusted`] and their pinned profile.
    #[must_use]
    pub fn view(&self) -> crate::poison::BaselineView<'_> {
        crate::poison::BaselineView {
            trusted: self.trusted(),
            poison: self.poison.as_ref(),
        }
    }

    /// The profile of `name`, if pinned.
    #[must_use]
    pub fn column(&self, name: &str) -> Option<&ColumnProfile> {
        self.trusted().column(name)
    }

    /// The label's class values in pinned order (empty without a label).
    #[must_use]
    pub fn class_names(&self) -> Vec<String> {
        self.trusted().class_names()
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
