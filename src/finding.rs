//! Findings: what a check concluded about a batch, with the evidence to audit it.
//!
//! A finding is data, not an error: poisoned or drifted data yields `Ok(findings)`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How serious a finding is. Ordered: `Deny` blocks.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Reported, does not block.
    Warn,
    /// Blocks the batch (exit 1).
    Deny,
}

impl Severity {
    /// Lowercase name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Warn => "warn",
            Self::Deny => "deny",
        }
    }
}

/// What a finding is about.
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    /// The column, when the finding is about one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub column: Option<String>,
    /// The value (a category, a segment, a label class), when the finding is about one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub value: Option<String>,
    /// The label class the finding is about (a trigger's target, a shifted class).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub label: Option<String>,
}

impl Subject {
    /// A column subject.
    #[must_use]
    pub fn column(name: &str) -> Self {
        Self {
            column: Some(name.to_owned()),
            value: None,
            label: None,
        }
    }

    /// Short text for tables.
    #[must_use]
    pub fn display(&self) -> String {
        let base = match (&self.column, &self.value) {
            (Some(c), Some(v)) => format!("{c}={v}"),
            (Some(c), None) => c.clone(),
            (None, Some(v)) => v.clone(),
            (None, None) => "-".to_owned(),
        };
        match &self.label {
            Some(l) => format!("{base} (label {l})"),
            None => base,
        }
    }
}

/// One conclusion of a check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Finding {
    /// Stable kebab-case code (`poisongate explain CODE`).
    pub code: String,
    /// Severity after the policy was applied.
    pub severity: Severity,
    /// What it is about.
    pub subject: Subject,
    /// The statistic that decided (e.g. `ks`, `psi`, `share`).
    pub statistic: String,
    /// Its value.
    pub value: f64,
    /// The threshold it was compared with at this severity.
    pub threshold: f64,
    /// Multiplicity-adjusted p-value, where one is meaningful.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub p_value: Option<f64>,
    /// Batch sample size behind the statistic.
    pub n: u64,
    /// Baseline sample size behind the statistic.
    pub n_baseline: u64,
    /// One sentence.
    pub message: String,
    /// Every other statistic computed for this subject.
    pub evidence: BTreeMap<String, f64>,
    /// The most suspicious rows behind the finding (row-level detectors), at most ten.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub rows: Vec<RowRef>,
    /// Which detector outcome produced it (not serialised).
    #[serde(skip)]
    #[schemars(skip)]
    pub tag: Option<usize>,
}

/// A row of the batch named by a finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RowRef {
    /// Row index in batch order (inputs in the order given, rows in file order), from 0.
    pub row: u64,
    /// The row's id (the `--id` column pinned at profile time), when there is one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub id: Option<String>,
    /// Suspicion score of the row.
    pub score: f64,
}

/// Rounds to 10 significant digits, so that floating-point noise from chunk order never shows
/// in a report, and maps non-finite values to 0 (JSON has no NaN).
#[must_use]
pub fn tidy(x: f64) -> f64 {
    if !x.is_finite() {
        return 0.0;
    }
    if x == 0.0 {
        return 0.0;
    }
    let digits = 10 - 1 - x.abs().log10().floor() as i32;
    if !(-300..=300).contains(&digits) {
        return x;
    }
    let scale = 10f64.powi(digits);
    let r = (x * scale).round() / scale;
    if r.is_finite() { r } else { x }
}

/// A number for messages: four significant digits, no exponent for everyday magnitudes.
#[must_use]
pub fn num(x: f64) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    let a = x.abs();
    if a == 0.0 {
        "0".to_owned()
    } else if !(1e-4..1e6).contains(&a) {
        format!("{x:.3e}")
    } else if a >= 1000.0 {
        format!("{x:.0}")
    } else {
        let decimals = (3 - a.log10().floor() as i32).clamp(0, 8) as usize;
        format!("{x:.decimals$}")
    }
}

/// A p-value for messages; exact zeros (underflow) read as "< 1e-300".
#[must_use]
pub fn p_text(p: f64) -> String {
    if p <= 0.0 {
        "< 1e-300".to_owned()
    } else {
        format!("{p:.2e}")
    }
}

impl Finding {
    /// Applies [`tidy`] to every number.
    pub fn tidy(&mut self) {
        self.value = tidy(self.value);
        self.threshold = tidy(self.threshold);
        self.p_value = self.p_value.map(tidy);
        for v in self.evidence.values_mut() {
            *v = tidy(*v);
        }
    }

    /// Sort key: deny first, then code, subject.
    #[must_use]
    pub fn sort_key(&self) -> (std::cmp::Reverse<Severity>, &str, &Subject) {
        (std::cmp::Reverse(self.severity), &self.code, &self.subject)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tidy_rounds_to_ten_significant_digits() {
        assert_eq!(tidy(0.123_456_789_012_3), 0.123_456_789_0);
        assert_eq!(tidy(123_456.789_012_345), 123_456.789_0);
        assert_eq!(tidy(f64::NAN), 0.0);
        assert_eq!(tidy(1e-30), 1e-30);
    }

    #[test]
    fn numbers_read_well_in_messages() {
        assert_eq!(num(60249.1287), "60249");
        assert_eq!(num(0.228_71), "0.2287");
        assert_eq!(num(40.98), "40.98");
        assert_eq!(num(-3.5e-7), "-3.500e-7");
        assert_eq!(p_text(0.0), "< 1e-300");
    }
}
