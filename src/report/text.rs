//! The human summary printed on stdout: verdict, a table of findings, what to do next.

use std::fmt::Write as _;

use super::{Report, Verdict};
use crate::finding::Severity;

fn short(hex: &str) -> &str {
    hex.get(..12).unwrap_or(hex)
}

/// Renders the summary.
#[must_use]
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let verdict = match r.verdict {
        Verdict::Pass if r.limited_evidence() => "PASS, with limited evidence",
        Verdict::Pass => "PASS",
        Verdict::Blocked => "BLOCKED",
        Verdict::Error => "ERROR",
    };
    let _ = writeln!(
        s,
        "poisongate {}: {verdict} (exit {})",
        r.command, r.exit_code
    );
    if let Some(e) = &r.error {
        let _ = writeln!(s, "error: {e}");
    }
    if let Some(b) = &r.baseline {
        let _ = writeln!(
            s,
            "baseline  {} (sha256 {}…, {} rows)",
            b.path,
            short(&b.sha256),
            b.rows
        );
    }
    let _ = writeln!(
        s,
        "batch     {} input(s), {} rows; {} columns checked, {} tests",
        r.inputs.len(),
        r.rows,
        r.counts.columns_checked,
        r.counts.tests
    );
    if let Some(p) = &r.policy {
        let _ = writeln!(
            s,
            "policy    {} (sha256 {}…)",
            p.path.as_deref().unwrap_or("built-in defaults"),
            short(&p.sha256)
        );
    }
    if let Some(line) = crate::check::record::detectable_summary(&r.tests) {
        let _ = writeln!(s, "power     {line}");
    }
    if r.findings.is_empty() {
        let _ = writeln!(s, "\nno findings.");
    } else {
        let rows: Vec<[String; 6]> = r
            .findings
            .iter()
            .map(|f| {
                [
                    f.severity.name().to_owned(),
                    f.code.clone(),
                    f.subject.display(),
                    f.statistic.clone(),
                    format!("{:.4}", f.value),
                    format!("{:.4}", f.threshold),
                ]
            })
            .collect();
        let header = [
            "LEVEL",
            "CODE",
            "SUBJECT",
            "STATISTIC",
            "VALUE",
            "THRESHOLD",
        ]
        .map(str::to_owned);
        let mut widths = header.clone().map(|h| h.chars().count());
        for row in &rows {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        s.push('\n');
        for row in std::iter::once(&header).chain(&rows) {
            let line: Vec<String> = row
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            let _ = writeln!(s, "{}", line.join("  ").trim_end());
        }
        s.push('\n');
        for f in &r.findings {
            let _ = writeln!(s, "{} {}: {}", f.severity.name(), f.code, f.message);
        }
    }
    if !r.waived.is_empty() {
        let _ = writeln!(s, "\nwaived by policy:");
        for w in &r.waived {
            let _ = writeln!(s, "  {} {} ({})", w.code, w.subject.display(), w.reason);
        }
    }
    if r.counts.quarantined_rows > 0 {
        let _ = writeln!(
            s,
            "\n{} row(s) flagged by poisoning findings (written with --quarantine)",
            r.counts.quarantined_rows
        );
    }
    if let Some(q) = &r.quarantine {
        let stays: Vec<_> = q.findings.iter().filter(|f| !f.clears).collect();
        if stays.is_empty() {
            let _ = writeln!(
                s,
                "dropping them is expected to clear every finding that put rows there; re-check the rest with `check --after-quarantine` and this run's JSON report"
            );
        } else {
            for f in stays {
                let _ = writeln!(
                    s,
                    "dropping them does not clear {} ({}): they are expected to hold {} of its {} excess rows, which leaves {} {} (threshold {}); a re-check with --after-quarantine will still block",
                    f.code,
                    f.subject.display(),
                    crate::finding::num(f.credited_rows),
                    crate::finding::num(f.excess_rows),
                    f.statistic,
                    crate::finding::num(f.residual),
                    crate::finding::num(f.threshold)
                );
            }
        }
    }
    for note in &r.notes {
        let _ = writeln!(s, "\nnote: {note}");
    }
    let _ = writeln!(s, "\n{}", next_step(r));
    s
}

fn next_step(r: &Report) -> String {
    let compare = r.command == "compare";
    match r.verdict {
        Verdict::Pass if r.limited_evidence() => "next: the batch may be used for training, but at its size a pass is limited evidence (evidence-insufficient above): check larger batches, or accumulate small ones with `check --ledger`.".to_owned(),
        Verdict::Pass if r.findings.iter().any(|f| f.severity == Severity::Warn) => {
            if compare {
                "next: the retrained model may be promoted; review the warnings above.".to_owned()
            } else {
                "next: the batch may be used for training; review the warnings above.".to_owned()
            }
        }
        Verdict::Pass if compare => "next: the retrained model may be promoted.".to_owned(),
        Verdict::Pass => "next: the batch may be used for training.".to_owned(),
        Verdict::Blocked => {
            let mut codes: Vec<&str> = r
                .findings
                .iter()
                .filter(|f| f.severity == Severity::Deny)
                .map(|f| f.code.as_str())
                .collect();
            codes.dedup();
            let first = codes.first().copied().unwrap_or("CODE");
            if compare {
                format!(
                    "next: keep the serving model. `poisongate explain {first}` says what each code means and how to respond; \
                     check the retrained model's training data, or pin the noise of a known-clean retrain (--pin-noise) if this task is noisier than the defaults assume."
                )
            } else {
                format!(
                    "next: do not train on this batch. `poisongate explain {first}` says what each code means and how to respond; \
                     fix the data upstream, or re-pin the baseline or add a policy exception with a reason if the change is expected."
                )
            }
        }
        Verdict::Error if compare => {
            "next: the models were not compared; fix the error above and run again.".to_owned()
        }
        Verdict::Error => {
            "next: the batch was not evaluated; fix the error above and run again.".to_owned()
        }
    }
}
