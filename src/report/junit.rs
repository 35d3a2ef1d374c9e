//! JUnit XML rendering, for CI systems that show test reports (GitLab, Jenkins, Tekton,
//! Azure Pipelines). One test case per finding (deny findings fail, warnings pass with their
//! message as output), plus a `gate` case carrying the verdict; an evaluation error is an
//! `<error>` of the `gate` case.

use std::fmt::Write as _;

use super::{Report, Verdict, escape_markup as esc};
use crate::finding::Severity;

/// Renders the report as JUnit XML.
#[must_use]
pub fn render(r: &Report) -> String {
    let failures = r
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Deny)
        .count()
        + usize::from(r.verdict == Verdict::Blocked);
    let errors = usize::from(r.verdict == Verdict::Error);
    let tests = r.findings.len() + 1;
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        s,
        "<testsuites name=\"poisongate\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\">"
    );
    let _ = writeln!(
        s,
        "  <testsuite name=\"poisongate {}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\">",
        esc(&r.command)
    );
    for f in &r.findings {
        let _ = writeln!(
            s,
            "    <testcase classname=\"{}\" name=\"{}\">",
            esc(&f.code),
            esc(&f.subject.display())
        );
        match f.severity {
            Severity::Deny => {
                let _ = writeln!(
                    s,
                    "      <failure type=\"deny\" message=\"{}\"/>",
                    esc(&f.message)
                );
            }
            Severity::Warn => {
                let _ = writeln!(
                    s,
                    "      <system-out>warn: {}</system-out>",
                    esc(&f.message)
                );
            }
        }
        s.push_str("    </testcase>\n");
    }
    s.push_str("    <testcase classname=\"poisongate\" name=\"gate\">\n");
    match r.verdict {
        Verdict::Pass => {}
        Verdict::Blocked => {
            let what = if r.command == "compare" {
                "keep the serving model"
            } else {
                "do not train on this batch"
            };
            let _ = writeln!(
                s,
                "      <failure type=\"blocked\" message=\"{} deny finding(s): {what}\"/>",
                r.counts.deny
            );
        }
        Verdict::Error => {
            let msg = r.error.as_deref().unwrap_or("could not evaluate");
            let _ = writeln!(s, "      <error type=\"error\" message=\"{}\"/>", esc(msg));
        }
    }
    s.push_str("    </testcase>\n  </testsuite>\n</testsuites>\n");
    s
}
