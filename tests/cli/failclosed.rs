//! The fail-closed audit: every way a run can end other than a clean pass or a real block is
//! exit 2 (or the process's death by a signal), never 0, and leaves no output file behind.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use crate::common::*;

fn exe() -> PathBuf {
    assert_cmd::cargo::cargo_bin("poisongate")
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

fn td(rel: &str) -> String {
    s(&testdata(rel))
}

/// Each command in a form that passes (exit 0), with the files it writes.
fn passing(dir: &Path) -> Vec<(&'static str, Vec<String>, Vec<PathBuf>)> {
    let base = s(baseline());
    let report = dir.join("report.json");
    let pinned = dir.join("pinned.json");
    let manifest = dir.join("manifest.json");
    let sums = dir.join("SHA256SUMS");
    let batch = dir.join("batch.csv");
    std::fs::copy(testdata("clean/batch.csv"), &batch).unwrap();
    let digest = tool(dir, "sha256sum", &["batch.csv"]);
    std::fs::write(&sums, digest).unwrap();
    let truth: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(testdata("compare/truth.json")).unwrap())
            .unwrap();
    let mut compare = vec!["compare".to_owned(), td("compare/clean.parquet")];
    compare.extend(
        truth["scenarios"]["clean"]["flags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap().to_owned()),
    );
    let v = |a: &[&str]| a.iter().map(|&x| x.to_owned()).collect::<Vec<_>>();
    vec![
        (
            "check",
            v(&[
                "check",
                "--baseline",
                &base,
                &td("clean/batch.parquet"),
                "--json",
                &s(&report),
            ]),
            vec![report.clone()],
        ),
        (
            "profile",
            v(&["profile", &td("clean/batch.parquet"), "-o", &s(&pinned)]),
            vec![pinned],
        ),
        ("compare", compare, vec![]),
        (
            "verify",
            v(&["verify", &s(&batch), "--sha256-file", &s(&sums)]),
            vec![],
        ),
        (
            "plan",
            v(&["plan", &td("clean/shards"), "-o", &s(&manifest)]),
            vec![manifest],
        ),
        ("explain", v(&["explain", "--list"]), vec![]),
        ("policy", v(&["policy", "--init"]), vec![]),
    ]
}

fn died_or_two(status: ExitStatus) -> bool {
    status.code() == Some(2) || status.signal().is_some()
}

#[test]
fn every_command_passes_here_and_fails_closed_when_nobody_can_read_its_stdout() {
    let dir = tempfile::tempdir().unwrap();
    for (name, args, _) in passing(dir.path()) {
        let out = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(code(&out), 0, "{name} should pass here: {}", stderr(&out));
        // The reader is gone before the command starts: a closed pipe (EPIPE; SIGPIPE is
        // ignored by Rust programs) must not leave exit 0.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let status = Command::new(exe())
            .args(&args)
            .stdout(writer)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(
            died_or_two(status),
            "{name} with a closed stdout ended with {status}"
        );
    }
}

#[test]
fn a_panic_in_a_worker_thread_is_exit_2_with_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("summary-worker", "check"),
        ("hash-thread", "check"),
        ("profile-worker", "profile"),
    ];
    for (point, command) in cases {
        let (_, args, outputs) = passing(dir.path())
            .into_iter()
            .find(|c| c.0 == command)
            .unwrap();
        for o in &outputs {
            let _ = std::fs::remove_file(o);
        }
        let out = bin()
            .args(&args)
            .env("POISONGATE_FAULT", point)
            .output()
            .unwrap();
        assert_eq!(code(&out), 2, "{point}: {}", stderr(&out));
        // The worker's own panic message, or (for the hashing thread, joined by the reader)
        // that it panicked: either way one line on stderr.
        let err = stderr(&out);
        assert!(
            err.contains(&format!("injected fault at {point}")) || err.contains("thread panicked"),
            "{point}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{point}: {err}");
        // Nothing but the JSON report of the failure itself (verdict `error`, exit 2), which
        // `--json` promises on errors the run catches.
        for o in &outputs {
            if let Ok(text) = std::fs::read_to_string(o) {
                let report: serde_json::Value = serde_json::from_str(&text).unwrap();
                assert_eq!(report["verdict"], "error", "{point}: {}", o.display());
                assert_eq!(report["exit_code"], 2);
            }
        }
    }
}

#[test]
fn outputs_that_cannot_be_written_are_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let nowhere = dir.path().join("no-such-dir");
    let base = s(baseline());
    let poisoned = td("poison/trigger_channel.parquet");
    for (what, args) in [
        (
            "quarantine",
            vec![
                "check",
                "--baseline",
                &base,
                &poisoned,
                "--quarantine",
                &s(&nowhere.join("q.csv")),
            ],
        ),
        (
            "json report",
            vec![
                "check",
                "--baseline",
                &base,
                &poisoned,
                "--json",
                &s(&nowhere.join("r.json")),
            ],
        ),
        (
            "row scores",
            vec![
                "check",
                "--baseline",
                &base,
                &poisoned,
                "--row-scores",
                &s(&nowhere.join("s.csv")),
            ],
        ),
        (
            "baseline",
            vec!["profile", &poisoned, "-o", &s(&nowhere.join("b.json"))],
        ),
    ] {
        let out = run(&args);
        assert_eq!(code(&out), 2, "{what}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("no-such-dir"),
            "{what}: {}",
            stderr(&out)
        );
    }
    assert!(!nowhere.exists());
}

#[test]
fn a_full_disk_while_writing_the_report_never_passes_and_leaves_no_report() {
    // RLIMIT_FSIZE stands in for a full disk: the first write past 4 KiB fails (SIGXFSZ,
    // whose default action ends the process, or EFBIG where it is ignored).
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let status = Command::new("prlimit")
        .arg("--fsize=4096")
        .arg("--")
        .arg(exe())
        .args([
            "check",
            "--baseline",
            &s(baseline()),
            &td("clean/batch.parquet"),
            "--json",
            &s(&report),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(died_or_two(status), "ended with {status}");
    assert!(!report.exists(), "a report was left behind");
}

#[test]
fn a_signal_mid_run_ends_the_run_without_a_pass_or_a_report() {
    // An S3 endpoint that accepts connections and never answers keeps the run mid-read.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let mut open = Vec::new();
        for stream in listener.incoming().take(8) {
            open.push(stream);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let mut child = Command::new(exe())
        .args([
            "check",
            "--baseline",
            &s(baseline()),
            "--s3-endpoint",
            &format!("http://127.0.0.1:{port}"),
            "s3://bucket/batch.parquet",
            "--json",
            &s(&report),
        ])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(child.try_wait().unwrap().is_none(), "the run ended early");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(15), "ended with {status}");
    assert!(!report.exists());
    drop(held);
}
