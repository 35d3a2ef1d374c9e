//! Markdown rendering, for pull-request comments and job summaries (e.g. `$GITHUB_STEP_SUMMARY`).

use std::fmt::Write as _;

use super::{Report, Verdict};
use crate::finding::num;

/// Escapes the characters that would break a Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace('\n', " ")
}

/// Renders the report as Markdown.
#[must_use]
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let verdict = match r.verdict {
        Verdict::Pass if r.limited_evidence() => "✅ pass, with limited evidence",
        Verdict::Pass => "✅ pass",
        Verdict::Blocked => "⛔ blocked",
        Verdict::Error => "⚠️ could not evaluate",
    };
    let _ = writeln!(
        s,
        "## poisongate {}: {verdict} (exit {})\n",
        r.command, r.exit_code
    );
    if let Some(e) = &r.error {
        let _ = writeln!(s, "**Error:** {}\n", cell(e));
    }
    if let Some(b) = &r.baseline {
        let _ = writeln!(
            s,
            "- Baseline: `{}` ({} rows), sha256 `{}`",
            cell(&b.path),
            b.rows,
            b.sha256
        );
    }
    let _ = writeln!(s, "- Batch: {}", super::batch_line(r));
    if let Some(line) = crate::check::record::detectable_summary(&r.tests) {
        let _ = writeln!(s, "- Power: {}", cell(&line));
    }
    if let Some(p) = &r.policy {
        let _ = writeln!(
            s,
            "- Policy: {} (sha256 `{}`)",
            cell(p.path.as_deref().unwrap_or("built-in defaults")),
            p.sha256
        );
    }
    if !r.findings.is_empty() {
        s.push_str("\n| level | code | subject | statistic | value | threshold | message |\n");
        s.push_str("| --- | --- | --- | --- | ---: | ---: | --- |\n");
        for f in &r.findings {
            let _ = writeln!(
                s,
                "| {} | `{}` | {} | {} | {} | {} | {} |",
                f.severity.name(),
                f.code,
                cell(&f.subject.display()),
                f.statistic,
                num(f.value),
                num(f.threshold),
                cell(&f.message)
            );
        }
    }
    if !r.waived.is_empty() {
        s.push_str("\n**Waived by policy**\n\n");
        for w in &r.waived {
            let _ = writeln!(
                s,
                "- `{}` {}: {}",
                w.code,
                cell(&w.subject.display()),
                cell(&w.reason)
            );
        }
    }
    if r.counts.quarantined_rows > 0 || !r.notes.is_empty() {
        s.push('\n');
        if r.counts.quarantined_rows > 0 {
            let _ = writeln!(
                s,
                "- {} row(s) flagged by poisoning findings (`--quarantine` writes them)",
                r.counts.quarantined_rows
            );
        }
        for note in &r.notes {
            let _ = writeln!(s, "- note: {}", cell(note));
        }
    }
    if !r.inputs.is_empty() {
        // The S3 column appears only when an input came from S3.
        let s3 = r.inputs.iter().any(|i| i.object.is_some());
        s.push_str("\n<details><summary>Inputs</summary>\n\n| path | format | rows | sha256 |");
        s.push_str(if s3 {
            " S3 object |\n| --- | --- | ---: | --- | --- |\n"
        } else {
            "\n| --- | --- | ---: | --- |\n"
        });
        for i in &r.inputs {
            let _ = write!(
                s,
                "| `{}` | {} | {} | `{}` |",
                cell(&i.path),
                i.format.name(),
                i.rows,
                i.sha256
            );
            if s3 {
                let o = i
                    .object
                    .as_ref()
                    .map_or_else(String::new, |o| cell(&o.describe()));
                let _ = write!(s, " {o} |");
            }
            s.push('\n');
        }
        for a in &r.artifacts {
            let _ = writeln!(s, "\n{} `{}`, sha256 `{}`", a.role, cell(&a.path), a.sha256);
        }
        s.push_str("\n</details>\n");
    }
    if !r.tests.is_empty() {
        let _ = writeln!(
            s,
            "\n<details><summary>Every test ({})</summary>\n\n| outcome | code | subject | statistics (value / warn / deny / null quantile) | p | adjusted p | rows | detectable | reason |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            r.tests.len()
        );
        for t in &r.tests {
            let stats: Vec<String> = t
                .statistics
                .iter()
                .map(|x| {
                    format!(
                        "{} {} / {} / {} / {}",
                        x.name,
                        num(x.value),
                        num(x.warn),
                        x.deny.map_or("-".to_owned(), num),
                        x.null_quantile.map_or("-".to_owned(), num)
                    )
                })
                .collect();
            let _ = writeln!(
                s,
                "| {} | `{}` | {} | {} | {} | {} | {} | {} | {} |",
                t.outcome.name(),
                t.code,
                cell(&t.subject.display()),
                cell(&stats.join("; ")),
                t.p_value.map_or("-".to_owned(), crate::finding::p_text),
                t.adjusted_p.map_or("-".to_owned(), crate::finding::p_text),
                t.n,
                cell(
                    &t.detectable
                        .as_ref()
                        .map_or("-".to_owned(), |d| d.display())
                ),
                cell(t.reason.as_deref().unwrap_or(""))
            );
        }
        s.push_str("\n</details>\n");
    }
    s
}
