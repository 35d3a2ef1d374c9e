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

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A file of testdata/modelsign/ (keys and certificates), as an argument.
pub fn signing_file(name: &str) -> String {
    testdata(&format!("modelsign/{name}"))
        .to_str()
        .unwrap()
        .to_owned()
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
    check_json_with(baseline().to_str().unwrap(), data, extra, run)
}

/// `check --baseline baseline` of `data` through `runner`, writing the JSON report; returns
/// (exit, report, output). The report is `Null` when none was written.
pub fn check_json_with(
    baseline: &str,
    data: &[&str],
    extra: &[&str],
    runner: impl Fn(&[&str]) -> Output,
) -> (i32, serde_json::Value, Output) {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let mut args = vec![
        "check",
        "--baseline",
        baseline,
        "--json",
        report.to_str().unwrap(),
    ];
    args.extend_from_slice(data);
    args.extend_from_slice(extra);
    let out = runner(&args);
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

/// Runs a system tool in `dir`, asserting success.
pub fn tool(dir: &Path, program: &str, args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program} is needed for this test: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A P-256 key pair and a base64 DER signature of `file`, made by openssl.
pub fn sign(d: &Path, file: &str, sig: &str) {
    if !d.join("key.pem").exists() {
        tool(
            d,
            "openssl",
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                "key.pem",
            ],
        );
        tool(
            d,
            "openssl",
            &["ec", "-in", "key.pem", "-pubout", "-out", "pub.pem"],
        );
    }
    let der = tool(d, "openssl", &["dgst", "-sha256", "-sign", "key.pem", file]);
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    std::fs::write(d.join(sig), format!("{b64}\n")).unwrap();
}

/// The digest `profile` wrote beside the shared baseline.
pub fn baseline_digest() -> String {
    let sidecar = format!("{}.sha256", baseline().display());
    std::fs::read_to_string(sidecar)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// The first `n` rows of the bundled clean batch, written to `dir` as Parquet.
pub fn clean_head(dir: &Path, n: usize) -> PathBuf {
    use polars::prelude::{ParquetReader, ParquetWriter, SerReader};
    let clean = ParquetReader::new(std::fs::File::open(testdata("clean/batch.parquet")).unwrap())
        .finish()
        .unwrap();
    let path = dir.join(format!("head_{n}.parquet"));
    ParquetWriter::new(std::fs::File::create(&path).unwrap())
        .finish(&mut clean.slice(0, n))
        .unwrap();
    path
}
