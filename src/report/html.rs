//! HTML rendering: one self-contained page (no scripts, no external assets) for artifact
//! viewers and audit trails.

use std::fmt::Write as _;

use super::{Report, Verdict, escape_markup as esc};
use crate::finding::num;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;color:#222}\
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left;vertical-align:top}\
.deny{color:#b00020;font-weight:bold}.warn{color:#a15c00}.pass{color:#1b7f3b}code{font-size:90%}";

/// Renders the report as a standalone HTML page.
#[must_use]
pub fn render(r: &Report) -> String {
    let (class, verdict) = match r.verdict {
        Verdict::Pass => ("pass", "pass"),
        Verdict::Blocked => ("deny", "blocked"),
        Verdict::Error => ("deny", "could not evaluate"),
    };
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>poisongate {cmd}: {verdict}</title>\
         <style>{STYLE}</style></head><body>\n<h1>poisongate {cmd}: <span class=\"{class}\">{verdict}</span> (exit {code})</h1>\n",
        cmd = esc(&r.command),
        code = r.exit_code
    );
    if let Some(e) = &r.error {
        let _ = writeln!(s, "<p class=\"deny\">Error: {}</p>", esc(e));
    }
    s.push_str("<ul>\n");
    if let Some(b) = &r.baseline {
        let _ = writeln!(
            s,
            "<li>Baseline <code>{}</code>, {} rows, sha256 <code>{}</code></li>",
            esc(&b.path),
            b.rows,
            esc(&b.sha256)
        );
    }
    let _ = writeln!(s, "<li>Batch: {}</li>", super::batch_line(r));
    if let Some(p) = &r.policy {
        let _ = writeln!(
            s,
            "<li>Policy {} (sha256 <code>{}</code>)</li>",
            esc(p.path.as_deref().unwrap_or("built-in defaults")),
            esc(&p.sha256)
        );
    }
    s.push_str("</ul>\n");
    if !r.findings.is_empty() {
        s.push_str("<table><tr><th>level</th><th>code</th><th>subject</th><th>statistic</th><th>value</th><th>threshold</th><th>message</th></tr>\n");
        for f in &r.findings {
            let _ = writeln!(
                s,
                "<tr><td class=\"{lvl}\">{lvl}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&f.code),
                esc(&f.subject.display()),
                esc(&f.statistic),
                num(f.value),
                num(f.threshold),
                esc(&f.message),
                lvl = f.severity.name()
            );
        }
        s.push_str("</table>\n");
    }
    if !r.waived.is_empty() {
        s.push_str("<h2>Waived by policy</h2><ul>\n");
        for w in &r.waived {
            let _ = writeln!(
                s,
                "<li><code>{}</code> {}: {}</li>",
                esc(&w.code),
                esc(&w.subject.display()),
                esc(&w.reason)
            );
        }
        s.push_str("</ul>\n");
    }
    if r.counts.quarantined_rows > 0 || !r.notes.is_empty() {
        s.push_str("<ul>\n");
        if r.counts.quarantined_rows > 0 {
            let _ = writeln!(
                s,
                "<li>{} row(s) flagged by poisoning findings (<code>--quarantine</code> writes them)</li>",
                r.counts.quarantined_rows
            );
        }
        for note in &r.notes {
            let _ = writeln!(s, "<li>note: {}</li>", esc(note));
        }
        s.push_str("</ul>\n");
    }
    if !r.inputs.is_empty() {
        let s3 = r.inputs.iter().any(|i| i.object.is_some());
        s.push_str(
            "<h2>Inputs</h2><table><tr><th>path</th><th>format</th><th>rows</th><th>sha256</th>",
        );
        s.push_str(if s3 {
            "<th>S3 object</th></tr>\n"
        } else {
            "</tr>\n"
        });
        for i in &r.inputs {
            let _ = write!(
                s,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td><code>{}</code></td>",
                esc(&i.path),
                i.format.name(),
                i.rows,
                esc(&i.sha256)
            );
            if s3 {
                let o = i
                    .object
                    .as_ref()
                    .map_or_else(String::new, |o| esc(&o.describe()));
                let _ = write!(s, "<td>{o}</td>");
            }
            s.push_str("</tr>\n");
        }
        s.push_str("</table>\n");
        if !r.artifacts.is_empty() {
            s.push_str("<ul>\n");
            for a in &r.artifacts {
                let _ = writeln!(
                    s,
                    "<li>{} <code>{}</code>, sha256 <code>{}</code></li>",
                    esc(&a.role),
                    esc(&a.path),
                    esc(&a.sha256)
                );
            }
            s.push_str("</ul>\n");
        }
    }
    s.push_str("</body></html>\n");
    s
}
