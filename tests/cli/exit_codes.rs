//! Every exit-code path on real files: 0 pass, 1 blocked, 2 could not evaluate.

use crate::common::*;

fn td(rel: &str) -> String {
    testdata(rel).to_str().unwrap().to_owned()
}

fn has(report: &serde_json::Value, code: &str, severity: &str, column: &str) -> bool {
    findings(report)
        .iter()
        .any(|(c, s, col)| c == code && s == severity && col == column)
}

/// Asserts exit 2 with one `error:` line naming `needle`.
fn assert_could_not_evaluate(out: &std::process::Output, needle: &str) {
    let err = stderr(out);
    assert_eq!(code(out), 2, "stderr: {err}");
    let first = err.lines().next().unwrap_or_default();
    assert!(first.starts_with("error: "), "stderr: {err}");
    assert!(first.contains(needle), "`{needle}` not in: {first}");
    assert!(err.lines().count() <= 2, "more than error + hint: {err}");
}

#[test]
fn clean_parquet_exits_pass() {
    let (code, report, out) = check_json(&[&td("clean/batch.parquet")], &[]);
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(report["verdict"], "pass");
    assert_eq!(report["exit_code"], 0);
    assert_eq!(report["rows"], 5000);
    assert!(report["counts"]["columns_checked"].as_u64().unwrap() >= 8);
}

#[test]
fn clean_shards_as_directory_and_glob_exit_pass() {
    let (code, report, _) = check_json(&[&td("clean/shards")], &[]);
    assert_eq!(code, 0);
    assert_eq!(report["inputs"].as_array().unwrap().len(), 3);
    let glob = format!("{}/part-*.parquet", td("clean/shards"));
    let (code, report2, _) = check_json(&[&glob], &[]);
    assert_eq!(code, 0);
    assert_eq!(report["findings"], report2["findings"]);
}

#[test]
fn mild_natural_drift_exits_pass() {
    let (code, report, out) = check_json(&[&td("mild/batch.parquet")], &[]);
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(report["counts"]["deny"], 0);
}

#[test]
fn drifted_batch_exits_blocked_naming_each_problem() {
    let (code, report, out) = check_json(&[&td("drifted/batch.parquet")], &[]);
    assert_eq!(code, 1);
    assert_eq!(report["verdict"], "blocked");
    assert!(
        has(&report, "drift-numeric", "deny", "income"),
        "{report:#}"
    );
    assert!(
        has(&report, "schema-unseen-category", "deny", "region"),
        "{report:#}"
    );
    assert!(
        has(&report, "schema-null-rate", "deny", "employment"),
        "{report:#}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("poisongate check: BLOCKED (exit 1)"),
        "{stdout}"
    );
    assert!(stdout.contains("offshore"), "{stdout}");
}

#[test]
fn missing_column_exits_blocked() {
    let (code, report, _) = check_json(&[&td("drifted/missing_column.parquet")], &[]);
    assert_eq!(code, 1);
    assert!(has(&report, "schema-missing-column", "deny", "channel"));
}

#[test]
fn dtype_change_exits_blocked() {
    let (code, report, _) = check_json(&[&td("drifted/dtype_changed.parquet")], &[]);
    assert_eq!(code, 1);
    assert!(has(&report, "schema-dtype-changed", "deny", "age"));
}

#[test]
fn broken_inputs_exit_could_not_evaluate_naming_the_file() {
    for (file, cause) in [
        ("broken/truncated.parquet", "not valid parquet"),
        ("broken/empty.parquet", "file is empty"),
        ("broken/empty.csv", "file is empty"),
        ("broken/header_only.csv", "no rows"),
        ("broken/zero_rows.parquet", "no rows"),
        ("broken/garbage.csv", "garbage.csv"),
        ("broken/not_json.ndjson", "not valid ndjson"),
        ("does/not/exist.parquet", "no such file"),
    ] {
        let (code, report, out) = check_json(&[&td(file)], &[]);
        assert_could_not_evaluate(&out, cause);
        assert!(
            stderr(&out).contains(file.rsplit('/').next().unwrap()),
            "{file}: {}",
            stderr(&out)
        );
        assert_eq!(code, 2);
        assert_eq!(report["verdict"], "error", "{file}");
    }
}

#[test]
fn inputs_with_different_schemas_exit_could_not_evaluate_naming_both() {
    let out = run(&[
        "check",
        "--baseline",
        baseline().to_str().unwrap(),
        &td("broken/mismatch/a.parquet"),
        &td("broken/mismatch/b.parquet"),
    ]);
    assert_could_not_evaluate(&out, "a.parquet");
    assert!(stderr(&out).contains("b.parquet"));
    assert!(stderr(&out).contains("region"));
}

#[test]
fn baseline_problems_exit_could_not_evaluate() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(baseline()).unwrap();
    let corrupt = dir.path().join("corrupt.json");
    std::fs::write(&corrupt, &text[..text.len() / 2]).unwrap();
    let future = dir.path().join("future.json");
    std::fs::write(
        &future,
        text.replace("poisongate.baseline/1", "poisongate.baseline/9"),
    )
    .unwrap();
    let clean = td("clean/batch.parquet");
    for (path, cause) in [
        (&corrupt, "not valid JSON"),
        (&future, "unknown format version"),
    ] {
        let out = run(&["check", "--baseline", path.to_str().unwrap(), &clean]);
        assert_could_not_evaluate(&out, cause);
    }
    let wrong = "0".repeat(64);
    let out = run(&[
        "check",
        "--baseline",
        baseline().to_str().unwrap(),
        "--expect-baseline-sha256",
        &wrong,
        &clean,
    ]);
    assert_could_not_evaluate(&out, "SHA-256 mismatch");
    let sidecar = std::fs::read_to_string(format!("{}.sha256", baseline().display())).unwrap();
    let right = sidecar.split_whitespace().next().unwrap();
    let out = run(&[
        "check",
        "--baseline",
        baseline().to_str().unwrap(),
        "--expect-baseline-sha256",
        right,
        &clean,
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn bad_policies_exit_could_not_evaluate() {
    let dir = tempfile::tempdir().unwrap();
    let clean = td("clean/batch.parquet");
    for (text, cause) in [
        ("[checks.drift-numeric]\ndeny-kss = 0.2\n", "unknown field"),
        ("[gate]\nalpha = 2.0\n", "gate.alpha"),
        (
            "[[exceptions]]\ncode = \"drift-numeric\"\nreason = \"\"\n",
            "reason",
        ),
        ("not toml at all [", "invalid policy"),
    ] {
        let path = dir.path().join("p.toml");
        std::fs::write(&path, text).unwrap();
        let out = run(&[
            "check",
            "--baseline",
            baseline().to_str().unwrap(),
            "--policy",
            path.to_str().unwrap(),
            &clean,
        ]);
        assert_could_not_evaluate(&out, cause);
        assert!(stderr(&out).contains("p.toml"));
    }
}

#[test]
fn a_label_column_absent_exits_could_not_evaluate() {
    let dir = tempfile::tempdir().unwrap();
    let csv = std::fs::read_to_string(testdata("clean/batch.csv")).unwrap();
    // Drop the last column (the label) from every line.
    let cut: String = csv
        .lines()
        .map(|l| format!("{}\n", &l[..l.rfind(',').unwrap()]))
        .collect();
    let path = dir.path().join("nolabel.csv");
    std::fs::write(&path, cut).unwrap();
    let out = run(&[
        "check",
        "--baseline",
        baseline().to_str().unwrap(),
        path.to_str().unwrap(),
    ]);
    assert_could_not_evaluate(&out, "label column `defaulted`");
    let out = run(&[
        "profile",
        &td("clean/batch.parquet"),
        "-o",
        dir.path().join("b.json").to_str().unwrap(),
        "--label",
        "nope",
    ]);
    assert_could_not_evaluate(&out, "label column `nope` not found");
}

/// A numeric target with thousands of values is not a classification label: the hint names
/// the cause and what to do, not file formats.
#[test]
fn a_continuous_label_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&[
        "profile",
        &td("trusted/applications.parquet"),
        "-o",
        dir.path().join("b.json").to_str().unwrap(),
        "--label",
        "income",
    ]);
    assert_could_not_evaluate(&out, "a classification label is expected");
    let err = stderr(&out);
    assert!(err.contains("hint: a continuous target"), "{err}");
    assert!(err.contains("--ignore"), "{err}");
    assert!(!err.contains("--format"), "{err}");
    assert!(!dir.path().join("b.json").exists());
}

#[test]
fn a_failed_run_leaves_no_partial_output() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("baseline.json");
    let out = run(&[
        "profile",
        &td("broken/truncated.parquet"),
        "-o",
        out_path.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 2);
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn usage_errors_exit_could_not_evaluate() {
    assert_eq!(code(&run(&["check"])), 2);
    assert_eq!(code(&run(&["frobnicate"])), 2);
    assert_eq!(code(&run(&["explain", "no-such-code"])), 2);
    assert_eq!(code(&run(&["--version"])), 0);
}

#[test]
fn the_same_inputs_give_byte_identical_reports() {
    let (_, a, _) = check_json(&[&td("drifted/batch.parquet")], &[]);
    let (_, b, _) = check_json(&[&td("drifted/batch.parquet")], &[]);
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&b).unwrap()
    );
}

#[test]
fn policy_levels_and_exceptions_change_the_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(
        &path,
        "[checks.drift-numeric]\nlevel = \"warn\"\n[checks.drift-categorical]\nlevel = \"warn\"\n[checks.poison-anomalous-rows]\nlevel = \"warn\"\n[checks.poison-label-inconsistency]\nlevel = \"warn\"\n[checks.schema-unseen-category]\nlevel = \"allow\"\n\
         [[exceptions]]\ncode = \"schema-null-rate\"\ncolumn = \"employment\"\nreason = \"known outage, INC-42\"\n",
    )
    .unwrap();
    let (code, report, _) = check_json(
        &[&td("drifted/batch.parquet")],
        &["--policy", path.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{report:#}");
    assert!(has(&report, "drift-numeric", "warn", "income"));
    let waived = report["waived"].as_array().unwrap();
    assert!(waived.iter().any(|w| w["reason"] == "known outage, INC-42"));
    assert!(
        report["policy"]["path"]
            .as_str()
            .unwrap()
            .ends_with("p.toml")
    );
}

#[test]
fn explain_and_policy_init_work() {
    let out = run(&["explain", "drift-numeric"]);
    assert_eq!(code(&out), 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains("What to do"));
    let out = run(&["policy", "--init"]);
    assert_eq!(code(&out), 0);
    let text = String::from_utf8_lossy(&out.stdout);
    let parsed: poisongate::policy::Policy = toml::from_str(&text).unwrap();
    assert_eq!(parsed, poisongate::policy::Policy::default());
}

#[test]
fn json_on_stdout_is_the_report() {
    let out = run(&[
        "check",
        "--baseline",
        baseline().to_str().unwrap(),
        &td("drifted/batch.parquet"),
        "--format",
        "json",
    ]);
    assert_eq!(code(&out), 1);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["verdict"], "blocked");
    assert_eq!(report["exit_code"], 1);
}

#[test]
fn ignored_and_id_columns_are_left_out_of_the_checks() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("b.json");
    let out = run(&[
        "profile",
        &td("trusted/applications.parquet"),
        "-o",
        base.to_str().unwrap(),
        "--id",
        "application_id",
        "--ignore",
        "channel",
        "--label",
        "defaulted",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let pinned: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&base).unwrap()).unwrap();
    let names: Vec<&str> = pinned["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(
        !names.contains(&"channel") && !names.contains(&"application_id"),
        "{names:?}"
    );
    assert_eq!(pinned["id"], "application_id");
    // Without `channel` pinned, a batch missing it passes; the id column is never "extra".
    let out = run(&[
        "check",
        "--baseline",
        base.to_str().unwrap(),
        &td("drifted/missing_column.parquet"),
    ]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn markdown_html_and_junit_reports_carry_the_verdict_and_findings() {
    let dir = tempfile::tempdir().unwrap();
    let (md, xml, html) = (
        dir.path().join("r.md"),
        dir.path().join("r.xml"),
        dir.path().join("r.html"),
    );
    let out = run(&[
        "check",
        "--baseline",
        baseline().to_str().unwrap(),
        &td("drifted/batch.parquet"),
        "--markdown",
        md.to_str().unwrap(),
        "--junit",
        xml.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1);
    let html = std::fs::read_to_string(&html).unwrap();
    assert!(
        html.contains("<span class=\"deny\">blocked</span> (exit 1)"),
        "{html}"
    );
    assert!(html.contains("&quot;offshore&quot;") && !html.contains("\"offshore\""));
    let md = std::fs::read_to_string(&md).unwrap();
    assert!(
        md.starts_with("## poisongate check: ⛔ blocked (exit 1)"),
        "{md}"
    );
    assert!(
        md.contains("| deny | `schema-unseen-category` | region=offshore |"),
        "{md}"
    );
    let xml = std::fs::read_to_string(&xml).unwrap();
    assert!(xml.starts_with(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"poisongate\""
    ));
    assert!(
        xml.contains(
            "<testcase classname=\"drift-numeric\" name=\"income\">\n      <failure type=\"deny\""
        ),
        "{xml}"
    );
    assert!(
        xml.contains("name=\"gate\">\n      <failure type=\"blocked\""),
        "{xml}"
    );
    // Every element opened is closed: a cheap well-formedness check on this flat document.
    assert_eq!(
        xml.matches("<testcase ").count(),
        xml.matches("</testcase>").count()
    );
    assert!(!xml.contains("\"offshore\"") && xml.contains("&quot;offshore&quot;"));

    let err_xml = dir.path().join("e.xml");
    let out = run(&[
        "check",
        "--baseline",
        baseline().to_str().unwrap(),
        &td("broken/empty.csv"),
        "--junit",
        err_xml.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 2);
    let xml = std::fs::read_to_string(&err_xml).unwrap();
    assert!(
        xml.contains("errors=\"1\"")
            && xml.contains("<error type=\"error\" message=\"cannot read input"),
        "{xml}"
    );
}

/// The synopsis under "## Commands" in the README names exactly the options each command's
/// `--help` lists (short forms count as their long names), so the two cannot drift apart.
#[test]
fn the_readme_synopsis_matches_every_commands_help() {
    use std::collections::{BTreeMap, BTreeSet};
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    let block = readme
        .split_once("## Commands")
        .and_then(|(_, rest)| rest.split('`').nth(3))
        .expect("a code block under ## Commands");
    let flags = |text: &str| -> Vec<String> {
        text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .filter(|w| w.starts_with('-') && w.len() > 1 && !w.starts_with("---"))
            .map(str::to_owned)
            .collect()
    };
    let mut synopsis: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in block.lines() {
        if let Some(rest) = line.strip_prefix("poisongate ") {
            current = rest.split_whitespace().next().map(str::to_owned);
        }
        if let Some(cmd) = &current {
            synopsis
                .entry(cmd.clone())
                .or_default()
                .extend(flags(line.split('#').next().unwrap_or_default()));
        }
    }
    assert!(
        synopsis.len() >= 9,
        "commands in the synopsis: {synopsis:?}"
    );
    for (cmd, written) in &synopsis {
        let out = run(&[cmd, "--help"]);
        assert_eq!(code(&out), 0, "{cmd} --help");
        let help = String::from_utf8_lossy(&out.stdout).to_string();
        let mut short = BTreeMap::new();
        let mut listed = BTreeSet::new();
        for line in help.lines().map(str::trim_start) {
            let words: Vec<&str> = line
                .split([' ', ',', '=', '['])
                .filter(|w| !w.is_empty())
                .collect();
            match words.as_slice() {
                [s, l, ..] if s.len() == 2 && s.starts_with('-') && l.starts_with("--") => {
                    short.insert((*s).to_owned(), (*l).to_owned());
                    listed.insert((*l).to_owned());
                }
                [l, ..] if l.starts_with("--") => {
                    listed.insert((*l).to_owned());
                }
                _ => {}
            }
        }
        listed.retain(|f| f != "--help" && f != "--version");
        let written: BTreeSet<String> = written
            .iter()
            .map(|f| short.get(f).cloned().unwrap_or_else(|| f.clone()))
            .collect();
        assert_eq!(
            &written, &listed,
            "README synopsis of `{cmd}` (left) differs from `poisongate {cmd} --help` (right)"
        );
    }
}
