//! HTML rendering: one self-contained page (no scripts, no external assets) for artifact
//! viewers and audit trails.

use std::fmt::Write as _;

use super::{Report, Verdict, escape_markup as esc};
use crate::finding::num;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;color:#222}\
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left;vertical-align:top}\
.deny{color:#b00020;font-weight:bold}.warn{color:#a15c00}.pass{color:#1b7f3b}.muted{color:#777}code{font-size:90%}\
.charts{display:flex;flex-wrap:wrap;gap:1rem}figure{margin:0}figcaption{font-size:85%}";

/// Renders the report as a standalone HTML page.
#[must_use]
pub fn render(r: &Report) -> String {
    let (class, verdict) = match r.verdict {
        Verdict::Pass if r.limited_evidence() => ("warn", "pass, with limited evidence"),
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
    if let Some(line) = crate::check::record::detectable_summary(&r.tests) {
        let _ = writeln!(s, "<li>Power: {}</li>", esc(&line));
    }
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
    distributions(&mut s, r);
    tests(&mut s, r);
    s.push_str("</body></html>\n");
    s
}

/// One small bar chart per column: the baseline's share per cell in grey, the batch's in
/// blue (red for a flagged column), drawn as inline SVG (no scripts, no external assets).
fn distributions(s: &mut String, r: &Report) {
    if r.distributions.is_empty() {
        return;
    }
    s.push_str("<h2>Distributions</h2>\n<p>Baseline (grey) against batch (blue; red where a finding names the column), share of rows per bin or category. Flagged columns first.</p>\n<div class=\"charts\">\n");
    for d in &r.distributions {
        let cells = d.cells.len().max(1);
        let (w, h, pad) = (320.0f64, 120.0f64, 18.0f64);
        let top = d
            .baseline
            .iter()
            .chain(&d.batch)
            .copied()
            .fold(0.0f64, f64::max)
            .max(1e-9);
        let slot = (w - 2.0 * pad) / cells as f64;
        let bar = (slot * 0.42).max(1.0);
        let color = if d.flagged { "#b00020" } else { "#1f5fbf" };
        let _ = write!(
            s,
            "<figure><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{col}\"><title>{col} ({kind}): baseline vs batch</title>",
            col = esc(&d.column),
            kind = esc(&d.kind)
        );
        let base_y = h - pad;
        let span = h - 2.0 * pad;
        for (i, cell) in d.cells.iter().enumerate() {
            let x = pad + i as f64 * slot;
            let b = d.baseline.get(i).copied().unwrap_or(0.0);
            let q = d.batch.get(i).copied().unwrap_or(0.0);
            let hb = span * b / top;
            let hq = span * q / top;
            let _ = write!(
                s,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{hb:.1}\" fill=\"#9e9e9e\"><title>{}: baseline {}</title></rect>\
                 <rect x=\"{:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{hq:.1}\" fill=\"{color}\"><title>{}: batch {}</title></rect>",
                x,
                base_y - hb,
                esc(cell),
                num(b),
                x + bar,
                base_y - hq,
                esc(cell),
                num(q)
            );
        }
        let _ = writeln!(
            s,
            "<line x1=\"{pad}\" y1=\"{base_y}\" x2=\"{:.1}\" y2=\"{base_y}\" stroke=\"#444\"/></svg><figcaption><code>{}</code> ({}){}</figcaption></figure>",
            w - pad,
            esc(&d.column),
            esc(&d.kind),
            if d.flagged {
                " <span class=\"deny\">flagged</span>"
            } else {
                ""
            }
        );
    }
    s.push_str("</div>\n");
}

/// Every test, including the ones that passed or could not run.
fn tests(s: &mut String, r: &Report) {
    if r.tests.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "<h2>Every test ({})</h2>\n<table><tr><th>outcome</th><th>code</th><th>subject</th><th>statistics (value / warn / deny / null quantile)</th><th>p</th><th>adjusted p</th><th>rows</th><th>detectable</th><th>reason</th></tr>",
        r.tests.len()
    );
    for t in &r.tests {
        let stats: Vec<String> = t
            .statistics
            .iter()
            .map(|x| {
                format!(
                    "{} {} / {} / {} / {}",
                    esc(&x.name),
                    num(x.value),
                    num(x.warn),
                    x.deny.map_or("-".to_owned(), num),
                    x.null_quantile.map_or("-".to_owned(), num)
                )
            })
            .collect();
        let class = match t.outcome.name() {
            "deny" => "deny",
            "warn" => "warn",
            "pass" => "pass",
            _ => "muted",
        };
        let _ = writeln!(
            s,
            "<tr><td class=\"{class}\">{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            t.outcome.name(),
            esc(&t.code),
            esc(&t.subject.display()),
            stats.join("<br>"),
            t.p_value.map_or("-".to_owned(), crate::finding::p_text),
            t.adjusted_p.map_or("-".to_owned(), crate::finding::p_text),
            t.n,
            esc(&t
                .detectable
                .as_ref()
                .map_or("-".to_owned(), |d| d.display())),
            esc(t.reason.as_deref().unwrap_or(""))
        );
    }
    s.push_str("</table>\n");
}
