//! `check --after-quarantine`: a re-check of the rows left once a quarantine was dropped.
//!
//! Two findings can come of it. `integrity-quarantine-lineage`: the batch is not the parent
//! batch minus its quarantine (by the row-set hash of [`crate::lineage`]), so nothing the
//! parent found can be carried over and the claim of remediation is false.
//! `integrity-quarantine-residual`: a finding of the parent whose excess rows the quarantine
//! is not expected to hold (see `poison::quarantine::residuals`); its evidence, less what the
//! quarantine removed, is still at or above its threshold at the parent's size.

use crate::finding::{Finding, Severity, Subject, num};
use crate::lineage::{Remediation, RowSet};

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
    for r in parent.findings.iter().filter(|r| !r.clears) {
        let mut subject = r.subject.clone();
        let what = subject.value.take();
        subject.value = Some(match what {
            Some(v) => format!("{} {v}", r.code),
            None => r.code.clone(),
        });
        let mut f = finding(RESIDUAL, subject, &r.statistic, r.residual, r.threshold);
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
            num(r.threshold),
        );
        f.evidence.insert("excess_rows".into(), r.excess_rows);
        f.evidence.insert("credited_rows".into(), r.credited_rows);
        f.evidence.insert("parent_value".into(), r.value);
        out.push(f);
    }
    Ok(out)
}
