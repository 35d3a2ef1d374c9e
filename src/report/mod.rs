//! Reports: the verdict, the findings with their evidence, and the provenance of everything
//! read (`poisongate.report/1`). One type, rendered by one module per format.

pub mod html;
pub mod json;
pub mod junit;
pub mod markdown;
pub mod text;

use serde::{Deserialize, Serialize};

use crate::baseline::Tool;
use crate::check::{Evaluation, Waived};
use crate::finding::{Finding, Severity};
use crate::policy::{LoadedPolicy, Policy};
use crate::source::InputMeta;

/// Escapes text for XML and HTML content and attributes. Control characters that XML 1.0
/// forbids even when escaped become U+FFFD.
pub(crate) fn escape_markup(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// "N input(s), R rows; C columns checked, T tests; D deny, W warn, V waived".
pub(crate) fn batch_line(r: &Report) -> String {
    format!(
        "{} input(s), {} rows; {} columns checked, {} tests; {} deny, {} warn, {} waived",
        r.inputs.len(),
        r.rows,
        r.counts.columns_checked,
        r.counts.tests,
        r.counts.deny,
        r.counts.warn,
        r.counts.waived
    )
}

/// Format tag of reports.
pub const REPORT_FORMAT: &str = "poisongate.report/1";

/// The outcome of a run. Exit codes: pass 0, blocked 1, error 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Every required check ran on non-empty data and none denied.
    Pass,
    /// At least one finding at deny severity.
    Blocked,
    /// The batch could not be evaluated.
    Error,
}

impl Verdict {
    /// The process exit code. The only place the mapping lives.
    #[must_use]
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Pass => 0,
            Self::Blocked => 1,
            Self::Error => 2,
        }
    }

    /// Decides the verdict: blocked beats could-not-evaluate beats pass, and nothing passes
    /// without at least one column checked.
    #[must_use]
    pub fn decide(findings: &[Finding], columns_checked: usize) -> Self {
        if findings.iter().any(|f| f.severity == Severity::Deny) {
            Self::Blocked
        } else if columns_checked == 0 {
            Self::Error
        } else {
            Self::Pass
        }
    }
}

/// A referenced artifact and its digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArtifactRef {
    /// Where it was read from.
    pub path: String,
    /// SHA-256 of its bytes.
    pub sha256: String,
    /// Rows it describes.
    pub rows: u64,
    /// ETag, version id and encryption, when it was read from S3.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub object: Option<crate::source::ObjectRef>,
}

/// A file read besides the data and the baseline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// What it was read as: `policy`, `noise`, `baseline-signature` or `public-key`.
    pub role: String,
    /// Where it was read from.
    pub path: String,
    /// SHA-256 of its bytes.
    pub sha256: String,
}

impl Artifact {
    /// The artifact record of a local file.
    ///
    /// # Errors
    /// The file cannot be read.
    pub fn of(role: &str, path: &std::path::Path) -> crate::Result<Self> {
        let (sha256, _) = crate::digest::sha256_file(path)?;
        Ok(Self {
            role: role.to_owned(),
            path: path.display().to_string(),
            sha256,
        })
    }
}

/// The policy in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyRef {
    /// The file, or absent for the built-in defaults.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub path: Option<String>,
    /// SHA-256 of the effective policy's canonical JSON.
    pub sha256: String,
    /// The effective policy.
    pub effective: Policy,
}

/// Counts for a quick read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Counts {
    /// Findings at deny.
    pub deny: usize,
    /// Findings at warn.
    pub warn: usize,
    /// Findings waived by the policy.
    pub waived: usize,
    /// Columns summarised and tested.
    pub columns_checked: usize,
    /// Statistical tests run.
    pub tests: usize,
    /// Rows flagged by the poisoning findings (written with `--quarantine`).
    pub quarantined_rows: usize,
}

/// A `check` or `compare` report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// Always `poisongate.report/1`.
    pub format: String,
    /// The tool that wrote it.
    pub tool: Tool,
    /// The command (`check` or `compare`).
    pub command: String,
    /// pass, blocked or error.
    pub verdict: Verdict,
    /// The process exit code of this run.
    pub exit_code: u8,
    /// Why the batch could not be evaluated (verdict `error` only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    /// The baseline used (`check`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub baseline: Option<ArtifactRef>,
    /// Every input read, with digest and rows.
    pub inputs: Vec<InputMeta>,
    /// Every other file the run read (policy file, noise file, signature, public key), with
    /// its digest.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub artifacts: Vec<Artifact>,
    /// Rows in the batch.
    pub rows: u64,
    /// The policy in force.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub policy: Option<PolicyRef>,
    /// Counts.
    pub counts: Counts,
    /// Findings, deny first.
    pub findings: Vec<Finding>,
    /// Findings waived by the policy, with reasons.
    pub waived: Vec<Waived>,
    /// What did not run and why (for example the row-level detectors on a baseline without
    /// a label).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub notes: Vec<String>,
    /// Every test that ran or was skipped: statistics, thresholds, null quantiles,
    /// p-values and the outcome, including the ones that passed.
    #[serde(default)]
    pub tests: Vec<crate::check::record::TestRecord>,
    /// Per column, the baseline's and the batch's distribution over shared bins or top
    /// categories (drawn in the HTML report), flagged columns first.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub distributions: Vec<Distribution>,
    /// With `--quarantine`, what `check --after-quarantine` needs to re-check the remaining
    /// rows: the row sets and, per deny finding, what dropping the quarantine leaves of it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub quarantine: Option<crate::lineage::Remediation>,
}

pub use crate::check::record::Distribution;

impl Report {
    /// A pass under `evidence-insufficient`: nothing found, but the tests could not have seen
    /// every attack the policy names at this batch's size.
    #[must_use]
    pub fn limited_evidence(&self) -> bool {
        self.verdict == Verdict::Pass
            && self
                .findings
                .iter()
                .any(|f| f.code == crate::check::evidence::INSUFFICIENT)
    }

    /// A report of a completed evaluation.
    #[must_use]
    pub fn from_evaluation(
        command: &str,
        eval: Evaluation,
        baseline: Option<ArtifactRef>,
        inputs: Vec<InputMeta>,
        policy: &LoadedPolicy,
    ) -> Self {
        let verdict = Verdict::decide(&eval.findings, eval.columns_checked);
        let count = |s| eval.findings.iter().filter(|f| f.severity == s).count();
        let error = (verdict == Verdict::Error)
            .then(|| "no column of the baseline could be checked in this batch".to_owned());
        Self {
            format: REPORT_FORMAT.to_owned(),
            tool: Tool::current(),
            command: command.to_owned(),
            verdict,
            exit_code: verdict.exit_code(),
            error,
            baseline,
            rows: inputs.iter().map(|i| i.rows).sum(),
            inputs,
            policy: Some(PolicyRef {
                path: policy.path.clone(),
                sha256: policy.sha256.clone(),
                effective: policy.policy.clone(),
            }),
            counts: Counts {
                deny: count(Severity::Deny),
                warn: count(Severity::Warn),
                waived: eval.waived.len(),
                columns_checked: eval.columns_checked,
                tests: eval.tests,
                quarantined_rows: eval.quarantined_rows,
            },
            notes: eval.notes,
            artifacts: Vec::new(),
            findings: eval.findings,
            waived: eval.waived,
            tests: eval.records,
            distributions: eval.distributions,
            quarantine: None,
        }
    }

    /// A report of a run that could not evaluate.
    #[must_use]
    pub fn from_error(command: &str, error: &crate::Error) -> Self {
        Self {
            format: REPORT_FORMAT.to_owned(),
            tool: Tool::current(),
            command: command.to_owned(),
            verdict: Verdict::Error,
            exit_code: Verdict::Error.exit_code(),
            error: Some(error.to_string()),
            baseline: None,
            inputs: Vec::new(),
            rows: 0,
            policy: None,
            counts: Counts {
                deny: 0,
                warn: 0,
                waived: 0,
                columns_checked: 0,
                tests: 0,
                quarantined_rows: 0,
            },
            findings: Vec::new(),
            waived: Vec::new(),
            notes: Vec::new(),
            artifacts: Vec::new(),
            tests: Vec::new(),
            distributions: Vec::new(),
            quarantine: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::Subject;

    fn finding(severity: Severity) -> Finding {
        Finding {
            code: "drift-numeric".into(),
            severity,
            subject: Subject::column("x"),
            statistic: "ks".into(),
            value: 0.2,
            threshold: 0.15,
            p_value: Some(0.001),
            n: 1,
            n_baseline: 1,
            message: String::new(),
            evidence: std::collections::BTreeMap::new(),
            rows: Vec::new(),
            tag: None,
        }
    }

    #[test]
    fn markup_is_escaped_for_xml_and_html() {
        assert_eq!(
            escape_markup("<a href='x'>\"&\"</a>\u{1}"),
            "&lt;a href=&#39;x&#39;&gt;&quot;&amp;&quot;&lt;/a&gt;\u{FFFD}"
        );
    }

    #[test]
    fn verdict_precedence_table() {
        // (findings, columns checked) -> verdict
        assert_eq!(Verdict::decide(&[], 3), Verdict::Pass);
        assert_eq!(
            Verdict::decide(&[finding(Severity::Warn)], 3),
            Verdict::Pass
        );
        assert_eq!(
            Verdict::decide(&[finding(Severity::Deny)], 3),
            Verdict::Blocked
        );
        assert_eq!(Verdict::decide(&[], 0), Verdict::Error);
        assert_eq!(
            Verdict::decide(&[finding(Severity::Warn)], 0),
            Verdict::Error
        );
        assert_eq!(
            Verdict::decide(&[finding(Severity::Deny)], 0),
            Verdict::Blocked
        );
        assert_eq!(
            [Verdict::Pass, Verdict::Blocked, Verdict::Error].map(Verdict::exit_code),
            [0, 1, 2]
        );
    }
}
