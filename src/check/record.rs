//! The record of every test a check ran, whatever its outcome (`tests` in the report).
//!
//! A finding says what fired; an auditor also needs to see what ran and came out clean, and
//! what could not run and why. Every candidate of the decision becomes one [`TestRecord`]:
//! its effect statistics with both thresholds and the simulated clean-batch quantile where
//! one exists, the raw and the Holm-adjusted p-value, and the outcome after the policy.

use serde::{Deserialize, Serialize};

use crate::detect::Candidate;
pub use crate::detect::Detectable;
use crate::finding::{Severity, Subject, tidy};
use crate::policy::{Level, Policy};
use crate::stats::power;

/// What became of one test.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum TestOutcome {
    /// Blocks the batch.
    Deny,
    /// Reported, does not block.
    Warn,
    /// Ran and found nothing beyond noise or past a threshold.
    Pass,
    /// The policy waived what it found.
    Waived,
    /// Could not run (the reason says why).
    Skipped,
}

impl TestOutcome {
    /// Lowercase name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Deny => "deny",
            Self::Warn => "warn",
            Self::Pass => "pass",
            Self::Waived => "waived",
            Self::Skipped => "skipped",
        }
    }
}

/// One effect statistic of a test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestStatistic {
    /// Its name (`ks`, `psi`, `share`, `flip_share`, ...).
    pub name: String,
    /// Its value.
    pub value: f64,
    /// Threshold from which a significant result warns (after the null quantile).
    pub warn: f64,
    /// Threshold from which it denies (absent: never denies on its own).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub deny: Option<f64>,
    /// The `gate.null-level` quantile of the statistic over simulated clean batches of this
    /// size, when one was simulated.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub null_quantile: Option<f64>,
}

/// One test and its outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestRecord {
    /// The finding code the test can raise.
    pub code: String,
    /// What it tested.
    pub subject: Subject,
    /// Effect statistics (empty for structural checks).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub statistics: Vec<TestStatistic>,
    /// Raw p-value.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub p_value: Option<f64>,
    /// Holm-adjusted p-value (compared with `gate.alpha`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub adjusted_p: Option<f64>,
    /// Batch rows the test used.
    pub n: u64,
    /// pass, warn, deny, waived or skipped.
    pub outcome: TestOutcome,
    /// Why it was skipped or passed without a statistic.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    /// The smallest effect the test would have denied at this batch's size (count tests).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub detectable: Option<Detectable>,
}

impl TestRecord {
    /// The record of a candidate with its adjusted p-value and decided severity (before the
    /// policy's levels and exceptions, which [`with_policy`] applies).
    #[must_use]
    pub fn of(c: &Candidate, adjusted_p: Option<f64>, decided: Option<Severity>) -> Self {
        let statistics = c
            .effects
            .iter()
            .map(|e| TestStatistic {
                name: e.name.to_owned(),
                value: tidy(e.value),
                warn: tidy(e.warn),
                deny: e.deny.is_finite().then(|| tidy(e.deny)),
                null_quantile: c
                    .evidence
                    .get(&format!("null_{}", e.name))
                    .map(|v| tidy(*v)),
            })
            .collect();
        Self {
            code: c.code.to_owned(),
            subject: c.subject.clone(),
            statistics,
            p_value: c.p_value.map(tidy),
            adjusted_p: adjusted_p.map(tidy),
            n: c.n,
            outcome: match decided {
                Some(Severity::Deny) => TestOutcome::Deny,
                Some(Severity::Warn) => TestOutcome::Warn,
                None => TestOutcome::Pass,
            },
            reason: None,
            detectable: None,
        }
    }

    /// A test that ran with nothing to measure (no value past the baseline's rate, say).
    #[must_use]
    pub fn clean(code: &str, subject: Subject, n: u64, reason: &str) -> Self {
        Self {
            code: code.to_owned(),
            subject,
            statistics: Vec::new(),
            p_value: None,
            adjusted_p: None,
            n,
            outcome: TestOutcome::Pass,
            reason: Some(reason.to_owned()),
            detectable: None,
        }
    }

    /// A test that could not run.
    #[must_use]
    pub fn skipped(code: &str, subject: Subject, reason: &str) -> Self {
        Self {
            code: code.to_owned(),
            subject,
            statistics: Vec::new(),
            p_value: None,
            adjusted_p: None,
            n: 0,
            outcome: TestOutcome::Skipped,
            reason: Some(reason.to_owned()),
            detectable: None,
        }
    }

    /// Applies the policy's level and exceptions to the outcome, as
    /// [`super::apply_policy`] does to the finding.
    #[must_use]
    pub fn with_policy(mut self, policy: &Policy) -> Self {
        if !matches!(self.outcome, TestOutcome::Deny | TestOutcome::Warn) {
            return self;
        }
        if super::exception_for(policy, &self.code, self.subject.column.as_deref()).is_some() {
            self.outcome = TestOutcome::Waived;
            self.reason = Some("policy exception".to_owned());
            return self;
        }
        match policy.level(&self.code) {
            Level::Allow => {
                self.outcome = TestOutcome::Waived;
                self.reason = Some("policy level allow".to_owned());
            }
            Level::Warn => self.outcome = TestOutcome::Warn,
            Level::Deny => {}
        }
        self
    }
}

/// One line on what the tests could have seen: per code, the smallest detectable effect of
/// its tests (see [`Detectable`]). `None` when no test states one.
#[must_use]
pub fn detectable_summary(records: &[TestRecord]) -> Option<String> {
    let mut best: std::collections::BTreeMap<&str, &Detectable> = std::collections::BTreeMap::new();
    let key = |d: &Detectable| d.value.unwrap_or(f64::INFINITY);
    for r in records {
        // The line is about what denies; a test that only warns is stated on its own row.
        let Some(d) = r.detectable.as_ref().filter(|d| d.raises.is_none()) else {
            continue;
        };
        let slot = best.entry(r.code.as_str()).or_insert(d);
        if key(d) < key(slot) {
            *slot = d;
        }
    }
    if best.is_empty() {
        return None;
    }
    let power = power::POWER;
    let parts: Vec<String> = best
        .iter()
        .map(|(code, d)| format!("{code} {}", d.display()))
        .collect();
    Some(format!(
        "at this size each test denies with {:.0}% probability from: {}",
        100.0 * power,
        parts.join(", ")
    ))
}

/// Sorts records for the report: by outcome (deny first), then code and subject.
pub fn sort(records: &mut [TestRecord]) {
    records.sort_by(|a, b| (a.outcome, &a.code, &a.subject).cmp(&(b.outcome, &b.code, &b.subject)));
}

/// One column's distribution in the baseline and in the batch, over the same cells.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Distribution {
    /// The column.
    pub column: String,
    /// `numeric`, `categorical` or `label`.
    pub kind: String,
    /// Cell labels (bin ranges or category values; `other` and `null` last).
    pub cells: Vec<String>,
    /// Baseline share per cell.
    pub baseline: Vec<f64>,
    /// Batch share per cell.
    pub batch: Vec<f64>,
    /// Whether a finding names the column.
    pub flagged: bool,
}

/// Share of each count in its total (zeros when empty).
fn shares(counts: &[u64]) -> Vec<f64> {
    let total: u64 = counts.iter().sum();
    counts
        .iter()
        .map(|&c| {
            if total == 0 {
                0.0
            } else {
                tidy(c as f64 / total as f64)
            }
        })
        .collect()
}

/// Most cells drawn per column: numeric bins are merged into this many groups of about equal
/// trusted mass, categories beyond it go to `other`.
const CELLS: usize = 12;

/// The baseline's and the batch's distribution of every summarised column, flagged columns
/// (named by a finding) first, then in baseline order.
#[must_use]
pub fn distributions(
    baseline: &crate::baseline::Baseline,
    summary: &crate::summary::BatchSummary,
    findings: &[crate::finding::Finding],
) -> Vec<Distribution> {
    use crate::summary::ColumnSummary;
    let mut out = Vec::new();
    for col in &baseline.columns {
        let Some(cs) = summary.columns.get(&col.name) else {
            continue;
        };
        let flagged = findings
            .iter()
            .any(|f| f.subject.column.as_deref() == Some(col.name.as_str()));
        let is_label = baseline.label.as_deref() == Some(col.name.as_str());
        match (cs, &col.numeric, &col.categorical) {
            (ColumnSummary::Numeric(s), Some(p), _) => {
                let groups = crate::stats::binned::coarse_groups(&p.counts, CELLS);
                let g = groups.iter().copied().max().map_or(0, |m| m + 1);
                let (mut base, mut batch) = (vec![0u64; g + 1], vec![0u64; g + 1]);
                let mut lo = vec![f64::INFINITY; g];
                let mut hi = vec![f64::NEG_INFINITY; g];
                for (bin, &grp) in groups.iter().enumerate() {
                    base[grp] += p.counts.get(bin).copied().unwrap_or(0);
                    batch[grp] += s.bins.get(bin).copied().unwrap_or(0);
                    let from = if bin == 0 { p.min } else { p.edges[bin - 1] };
                    let to = p.edges.get(bin).copied().unwrap_or(p.max);
                    lo[grp] = lo[grp].min(from);
                    hi[grp] = hi[grp].max(to);
                }
                base[g] = col.nulls;
                batch[g] = s.nulls;
                let mut cells: Vec<String> = (0..g)
                    .map(|i| {
                        format!(
                            "{}..{}",
                            crate::finding::num(lo[i]),
                            crate::finding::num(hi[i])
                        )
                    })
                    .collect();
                cells.push("null".to_owned());
                out.push(Distribution {
                    column: col.name.clone(),
                    kind: "numeric".to_owned(),
                    cells,
                    baseline: shares(&base),
                    batch: shares(&batch),
                    flagged,
                });
            }
            (ColumnSummary::Categorical(s), _, Some(c)) => {
                let top: Vec<&str> = c.top.iter().take(CELLS).map(|t| t.value.as_str()).collect();
                let mut base: Vec<u64> = c.top.iter().take(CELLS).map(|t| t.count).collect();
                let in_top: u64 = base.iter().sum();
                base.push(col.count.saturating_sub(in_top));
                base.push(col.nulls);
                let mut batch: Vec<u64> = top.iter().map(|v| s.get(v)).collect();
                let batch_top: u64 = batch.iter().sum();
                batch.push(s.count.saturating_sub(batch_top));
                batch.push(s.nulls);
                let mut cells: Vec<String> = top.iter().map(|v| (*v).to_owned()).collect();
                cells.push("other".to_owned());
                cells.push("null".to_owned());
                out.push(Distribution {
                    column: col.name.clone(),
                    kind: if is_label { "label" } else { "categorical" }.to_owned(),
                    cells,
                    baseline: shares(&base),
                    batch: shares(&batch),
                    flagged,
                });
            }
            _ => {}
        }
    }
    // Flagged first, then the label, then baseline order (a stable sort keeps it).
    out.sort_by_key(|d| (!d.flagged, d.kind != "label"));
    out
}
