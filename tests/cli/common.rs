//! Shared helpers: paths into testdata/, running the binary, pinning a baseline once.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use assert_cmd::Command;

pub fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(rel)
}

pub fn bin() -> Command {
    let mut cmd = Command::cargo_bin("poisongate").unwrap();
    cmd.env_remove("RUST_LOG");
    cmd
}

/// Runs the binary and returns its output.
pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

pub fn code(out: &Output) -> i32 {
    out.status.code().expect("exited by signal")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The trusted demo baseline, pinned once per test run into a temporary directory.
pub fn baseline() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("baseline.json");
        let trusted = testdata("trusted/applications.parquet");
        let out = run(&[
            "profile",
            trusted.to_str().unwrap(),
            "-o",
            path.to_str().unwrap(),
            "--label",
            "defaulted",
            "--id",
            "application_id",
            "--seed",
            "7",
        ]);
        assert_eq!(code(&out), 0, "profile failed: {}", stderr(&out));
        (dir, path)
    })
    .1
}

/// `check` of `data` against the demo baseline, writing the JSON report; returns (exit, report).
pub fn check_json(data: &[&str], extra: &[&str]) -> (i32, serde_json::Value, Output) {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let mut args = vec![
        "check",
        "--baseline",
        baseline().to_str().unwrap(),
        "--json",
        report.to_str().unwrap(),
    ];
    args.extend_from_slice(data);
    args.extend_from_slice(extra);
    let out = run(&args);
    let json = std::fs::read_to_string(&report).map_or(serde_json::Value::Null, |t| {
        serde_json::from_str(&t).unwrap()
    });
    (code(&out), json, out)
}

/// The `(code, severity, column)` triples of a report.
pub fn findings(report: &serde_json::Value) -> Vec<(String, String, String)> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["code"].as_str().unwrap().to_owned(),
                f["severity"].as_str().unwrap().to_owned(),
                f["subject"]["column"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}
