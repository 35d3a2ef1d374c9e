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
    /// The value (a category, a label class), when the finding is about one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub value: Option<String>,
}

impl Subject {
    /// A column subject.
    #[must_use]
    pub fn column(name: &str) -> Self {
        Self {
            column: Some(name.to_owned()),
            value: None,
        }
    }

    /// Short text for tables.
    #[must_use]
    pub fn display(&self) -> String {
        match (&self.column, &self.value) {
            (Some(c), Some(v)) => format!("{c}={v}"),
            (Some(c), None) => c.clone(),
            (None, Some(v)) => v.clone(),
            (None, None) => "-".to_owned(),
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
}
