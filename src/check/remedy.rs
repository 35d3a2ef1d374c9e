//! `check --after-quarantine`: a re-check of the rows left once a quarantine was dropped.
//!
//! Two findings can come of it. `integrity-quarantine-lineage`: the batch is not the parent
//! batch minus its quarantine (by the row-set hash of [`crate::lineage`]), so nothing the
//! parent found can be carried over and the claim of remediation is false.
//! `integrity-quarantine-residual`: a finding of the parent whose excess rows the quarantine
//! is not expected to hold (see `poison::quarantine::residuals`); its evidence, less what the
//! quarantine removed, is still at or above its threshold at the parent's size.

use std::path::Path;

use crate::baseline::Baseline;
use crate::error::{Error, Result};
use crate::finding::{Finding, Severity, Subject, num};
use crate::lineage::{QUARANTINE_FORMAT, Remediation, Residual, RowSet};
use crate::policy::Policy;
use crate::source::Rows;

/// Code of a batch that is not its parent minus the quarantine.
pub const LINEAGE: &str = "integrity-quarantine-lineage";
/// Code of a parent finding that the quarantine does not clear.
pub const RESIDUAL: &str = "integrity-quarantine-residual";
/// Code of a finding over the ledger's window of accepted batches (`check --ledger`).
pub const LEDGER_WINDOW: &str = "integrity-ledger-window";

fn finding(code: &str, subject: Subject, statistic: &str, value: f64, threshold: f64) -> Finding {
    Finding {
        code: code.to_owned(),
        severity: Severity::Deny,
        subject,
        statistic: statistic.to_owned(),
        value,
        threshold,
        p_value: None,
        n: 0,
        n_baseline: 0,
        message: String::new(),
        evidence: std::collections::BTreeMap::new(),
        rows: Vec::new(),
        tag: None,
    }
}

/// The findings of a batch that claims to be `parent` (the report at `parent_name`) minus
/// its quarantine, given the batch's own row set.
///
/// # Errors
/// A parent report whose quarantined row set cannot be decoded.
pub fn after_quarantine(
    parent: &Remediation,
    parent_name: &str,
    batch: &RowSet,
    policy: &Policy,
) -> std::result::Result<Vec<Finding>, String> {
    let quarantined = RowSet::decode(&parent.quarantined_set)?;
    let mut out = Vec::new();
    let mut restored = batch.clone();
    restored.merge(&quarantined);
    let expected = parent.rows.saturating_sub(parent.quarantined_rows);
    if restored.rows != parent.rows || restored.digest() != parent.batch_set {
        let mut f = finding(
            LINEAGE,
            Subject {
                column: None,
                value: Some(parent_name.to_owned()),
                label: None,
            },
            "rows",
            batch.rows as f64,
            expected as f64,
        );
        f.n = batch.rows;
        f.message = if batch.rows == expected {
            format!(
                "the batch has the {expected} rows expected, but they are not the rows of {parent_name} minus its {} quarantined rows: rows were changed, swapped or added",
                parent.quarantined_rows
            )
        } else {
            format!(
                "the batch has {} rows, but {parent_name} minus its {} quarantined rows leaves {expected}: it is not that batch with the quarantine dropped",
                batch.rows, parent.quarantined_rows
            )
        };
        f.message
            .push_str("; nothing the parent found can be carried forward.");
        out.push(f);
        return Ok(out);
    }
    for r in parent
        .findings
        .iter()
        .filter(|r| r.residual >= residual_bar(policy, r, &parent.findings))
    {
        let threshold = residual_bar(policy, r, &parent.findings);
        let mut subject = r.subject.clone();
        let what = subject.value.take();
        subject.value = Some(match what {
            Some(v) => format!("{} {v}", r.code),
            None => r.code.clone(),
        });
        let mut f = finding(RESIDUAL, subject, &r.statistic, r.residual, threshold);
        f.n = r.n;
        f.message = format!(
            "{parent_name} blocked with {} ({} {} over {} rows, about {} excess rows); the {} dropped rows are expected to hold {} of them, which leaves {} {} at the parent's size, at or above the threshold {}: the quarantine did not remove what this finding saw, and the remaining rows cannot be re-tested on their own (the drop chose them for looking clean).",
            r.code,
            r.statistic,
            num(r.value),
            r.n,
            num(r.excess_rows),
            parent.quarantined_rows,
            num(r.credited_rows),
            r.statistic,
            num(r.residual),
            num(threshold),
        );
        f.evidence.insert("excess_rows".into(), r.excess_rows);
        f.evidence.insert("credited_rows".into(), r.credited_rows);
        f.evidence.insert("parent_value".into(), r.value);
        out.push(f);
    }
    Ok(out)
}

/// The level a parent finding's residual must fall below for its quarantine to clear it: the
/// finding's deny threshold, and for a label finding, when every finding that filled the
/// quarantine is a label finding, the code's warn threshold. The parent then showed the batch
/// was attacked through its labels alone (see [`recheck_policy`]), and a segment test on a weak
/// reference model credits the dropped rows so little that half the relabelled rows of a
/// common segment left a residual just under the deny threshold (`benches/eval`: Fair, 3
/// batches). Beside a trigger, duplicate, outlier or stitched-row finding, the label finding
/// is mostly that attack's shadow, and the deny threshold stands (the warn one there refused
/// 133 more of the 1,731 remediations that left under a fifth of the poison).
fn residual_bar(policy: &Policy, r: &Residual, all: &[Residual]) -> f64 {
    if !all.iter().all(|a| FLIP_CODES.contains(&a.code.as_str())) {
        return r.threshold;
    }
    match policy.checks.rows.get(&r.code) {
        Some(crate::policy::RowRule::Rate(rule)) => rule.warn.min(r.threshold),
        _ => r.threshold,
    }
}

/// What a `check --quarantine` report pins for a re-check of the remaining rows: the row sets
/// of the batch and of the quarantined rows (one more read of the batch) and each deny
/// finding's residual. `None` for an empty quarantine.
///
/// # Errors
/// A batch that can no longer be read.
pub fn remediation(
    baseline: &Baseline,
    policy: &Policy,
    rows: Rows<'_>,
    findings: &[Finding],
    quarantine: &[crate::poison::QuarantineRow],
) -> Result<Option<Remediation>> {
    if quarantine.is_empty() {
        return Ok(None);
    }
    let picked: Vec<u64> = quarantine.iter().map(|q| q.row).collect();
    let (all, held) = crate::lineage::row_sets(rows, &picked)?;
    let mut findings = crate::poison::residuals(&baseline.view(), rows, findings, quarantine)?;
    let bars: Vec<f64> = findings
        .iter()
        .map(|r| residual_bar(policy, r, &findings))
        .collect();
    for (r, bar) in findings.iter_mut().zip(bars) {
        r.threshold = bar;
        r.clears = r.residual < bar;
    }
    Ok(Some(Remediation {
        format: QUARANTINE_FORMAT.to_owned(),
        rows: all.rows,
        quarantined_rows: held.rows,
        batch_set: all.digest(),
        quarantined_set: held.encode(),
        findings,
    }))
}

/// The fields of a parent JSON report that a re-check reads (the rest is ignored).
#[derive(serde::Deserialize)]
struct ParentReport {
    command: String,
    #[serde(default)]
    baseline: Option<ParentBaseline>,
    #[serde(default)]
    quarantine: Option<Remediation>,
}

#[derive(serde::Deserialize)]
struct ParentBaseline {
    sha256: String,
}

/// The quarantine section of the parent's JSON report at `path`, checked against this run's
/// baseline.
///
/// # Errors
/// An unreadable file, not a `check` report, no quarantine section, another baseline.
pub fn read_parent(path: &Path, baseline_sha256: &str) -> Result<Remediation> {
    let bad = |cause: String| Error::input(path, cause);
    let bytes =
        std::fs::read(path).map_err(|e| bad(format!("cannot read the parent report: {e}")))?;
    let parent: ParentReport = serde_json::from_slice(&bytes)
        .map_err(|e| bad(format!("not a poisongate JSON report: {e}")))?;
    if parent.command != "check" {
        return Err(bad(format!(
            "a `{}` report, not a `check` report",
            parent.command
        )));
    }
    let Some(remediation) = parent.quarantine else {
        return Err(bad(
            "the report records no quarantine: the parent check must block with --quarantine and --json"
                .into(),
        ));
    };
    if remediation.format != QUARANTINE_FORMAT {
        return Err(bad(format!(
            "unknown quarantine format `{}`",
            remediation.format
        )));
    }
    let parent_baseline = parent.baseline.map(|b| b.sha256).unwrap_or_default();
    if parent_baseline != baseline_sha256 {
        let short = |hex: &str| hex.get(..12).unwrap_or(hex).to_owned();
        return Err(bad(format!(
            "the parent was checked against another baseline (sha256 {}), not this one ({})",
            short(&parent_baseline),
            short(baseline_sha256)
        )));
    }
    Ok(remediation)
}

/// The codes whose evidence is of flipped labels.
pub const FLIP_CODES: [&str; 3] = [
    "poison-label-inconsistency",
    "poison-segment-label-shift",
    "poison-label-conflict",
];

/// The policy a re-check decides with. Once the parent blocked on a row-level finding, each
/// of [`FLIP_CODES`] blocks the remaining rows on significance alone (warn and deny thresholds
/// 0, the level kept): the parent showed the batch was attacked, so what is left must show no
/// significant sign of flips, not merely fewer than would block a batch nobody suspected.
/// Two ways round the usual thresholds are closed by it. A label test sees only part of an
/// attack (`poison-label-conflict` only the rows with a trusted twin), and dropping the rows it
/// saw could leave half the flips below every threshold (`benches/eval`'s drop-and-recheck loop
/// found 12 such batches on ANES). And a decoy (a trigger, outliers) that draws the block and
/// fills the quarantine can sit beside flips too few to block on their own: the small suite
/// passed two re-checks that way with every flipped row still in the batch. Significance
/// needs rows, though: on 200 rows of Fair, ten swapped labels beside a chance trigger left
/// every label test's p-value between 0.11 and 0.99. So `evidence-insufficient` denies in a
/// re-check: rows too few for the tests to have seen the policy's attacks cannot show that
/// the drop removed them. `None` when the parent recorded no row-level finding.
#[must_use]
pub fn recheck_policy(policy: &Policy, parent: &Remediation) -> Option<Policy> {
    if parent.findings.is_empty() {
        return None;
    }
    let mut tight = policy.clone();
    tight.gate.insufficient_denies = true;
    for code in FLIP_CODES {
        if let Some(rule) = tight.checks.rows.rate_mut(code) {
            rule.warn = 0.0;
            rule.deny = 0.0;
        }
    }
    Some(tight)
}

/// `check --after-quarantine PARENT`: hashes the batch's rows (one more read) and adds the
/// lineage and residual findings of `remediation` (the parent report's, read by
/// [`read_parent`]) to `eval`, with a note.
///
/// # Errors
/// A parent whose quarantined row set cannot be decoded; a batch that can no longer be read.
pub fn recheck(
    policy: &Policy,
    eval: &mut super::Evaluation,
    parent: &Path,
    remediation: &Remediation,
    rows: Rows<'_>,
) -> Result<()> {
    let (set, _) = crate::lineage::row_sets(rows, &[])?;
    let name = parent.display().to_string();
    let extra =
        after_quarantine(remediation, &name, &set, policy).map_err(|c| Error::input(parent, c))?;
    eval.notes.push(format!(
        "re-checked as {name} minus its {} quarantined rows ({} of its findings carried forward, {} cleared by the quarantine)",
        remediation.quarantined_rows,
        remediation.findings.len(),
        remediation.findings.iter().filter(|r| r.clears).count()
    ));
    super::add_findings(policy, eval, extra);
    Ok(())
}
