//! `verify --scan` on the committed corpus (`benches/scan/make_corpus.py` writes it and its
//! `truth.json`): every benign file passes, every hostile one is blocked naming each of
//! its callables, every malformed one is exit 2. No file is ever loaded.

use std::collections::BTreeMap;

use crate::common::{code, run, stderr, testdata};

#[derive(serde::Deserialize)]
struct Truth {
    expect: String,
    format: String,
    technique: String,
    callables: Vec<String>,
}

fn truth() -> BTreeMap<String, Truth> {
    let text = std::fs::read_to_string(testdata("models/truth.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn every_corpus_file_gets_its_known_verdict_and_every_callable_is_named() {
    let truth = truth();
    assert!(truth.len() >= 100, "{} corpus entries", truth.len());
    let mut wrong = Vec::new();
    for (rel, t) in &truth {
        let path = testdata(&format!("models/{rel}"));
        let out = run(&["verify", "--scan", path.to_str().unwrap()]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let want = match t.expect.as_str() {
            "safe" => 0,
            "unsafe" => 1,
            "error" => 2,
            other => panic!("{rel}: expect {other}"),
        };
        let got = code(&out);
        if got != want {
            wrong.push(format!(
                "{rel} ({}, {}): exit {got}, want {want}: {}{}",
                t.format,
                t.technique,
                stdout.trim(),
                stderr(&out).trim()
            ));
            continue;
        }
        for c in &t.callables {
            if want == 1 && !stdout.contains(&format!(" {c} (")) {
                wrong.push(format!("{rel}: {c} is not named: {}", stdout.trim()));
            }
        }
        if want == 2 {
            let err = stderr(&out);
            assert_eq!(
                err.lines()
                    .next()
                    .map(|l| l.contains(path.to_str().unwrap())),
                Some(true),
                "{rel}: {err}"
            );
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} wrong:\n{}",
        wrong.len(),
        truth.len(),
        wrong.join("\n")
    );
}

#[test]
fn the_pin_blocks_a_swap_that_adds_one_allowlisted_callable() {
    let dir = tempfile::tempdir().unwrap();
    let pin = dir.path().join("imports.json");
    let trusted = testdata("models/pin/trusted.joblib");
    let swapped = testdata("models/pin/swapped.joblib");
    let out = run(&[
        "verify",
        "--scan",
        "--pin-imports",
        pin.to_str().unwrap(),
        trusted.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let pinned: serde_json::Value = serde_json::from_slice(&std::fs::read(&pin).unwrap()).unwrap();
    assert_eq!(pinned["format"], "poisongate.model-imports/1");
    assert!(pinned["imports"].as_array().unwrap().len() > 3);
    // Both pass the allowlist alone.
    let out = run(&["verify", "--scan", swapped.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stdout));
    // The trusted model passes its own pin; the swapped one is blocked naming what it adds.
    let out = run(&[
        "verify",
        "--scan",
        "--imports",
        pin.to_str().unwrap(),
        trusted.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stdout));
    let json = dir.path().join("scan.json");
    let out = run(&[
        "verify",
        "--scan",
        "--imports",
        pin.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        swapped.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(code(&out), 1, "{stdout}");
    assert!(
        stdout.contains("integrity-model-imports: numpy.exp ("),
        "{stdout}"
    );
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["verdict"], "blocked");
    let findings = report["files"][0]["findings"].as_array().unwrap();
    assert!(
        findings
            .iter()
            .all(|f| f["code"] == "integrity-model-imports"),
        "{findings:?}"
    );
    // An unsafe artifact is never pinned.
    let hostile = testdata("models/hostile/os_system_p2.pkl");
    let refused = dir.path().join("refused.json");
    let out = run(&[
        "verify",
        "--scan",
        "--pin-imports",
        refused.to_str().unwrap(),
        hostile.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1);
    assert!(!refused.exists());
}

#[test]
fn allow_extends_the_list_and_bad_pins_and_missing_files_are_exit_2() {
    let hostile = testdata("models/hostile/os_system_p2.pkl");
    let out = run(&[
        "verify",
        "--scan",
        "--allow",
        "posix.system",
        hostile.to_str().unwrap(),
    ]);
    // Allowing the callable by name is the user's decision, and it is printed as allowed.
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stdout));
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("pin.json");
    std::fs::write(
        &bad,
        br#"{"format": "other", "sources": [], "imports": []}"#,
    )
    .unwrap();
    let out = run(&[
        "verify",
        "--scan",
        "--imports",
        bad.to_str().unwrap(),
        hostile.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("pin.json"), "{}", stderr(&out));
    let out = run(&[
        "verify",
        "--scan",
        dir.path().join("missing.pkl").to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("missing.pkl"));
    let empty = dir.path().join("empty.pkl");
    std::fs::write(&empty, b"").unwrap();
    let out = run(&["verify", "--scan", empty.to_str().unwrap()]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("empty file"), "{}", stderr(&out));
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, b"hello, not a model\n").unwrap();
    let out = run(&["verify", "--scan", text.to_str().unwrap()]);
    assert_eq!(code(&out), 2, "{}", String::from_utf8_lossy(&out.stdout));
}
