//! `poisongate verify` and `check --baseline-signature` against files made by the real tools:
//! `sha256sum` from coreutils and ECDSA P-256 signatures from `openssl`.

use crate::common::*;

#[test]
fn sha256sum_files_written_by_coreutils_verify_and_tampering_fails() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::copy(testdata("clean/batch.csv"), d.join("batch.csv")).unwrap();
    std::fs::copy(testdata("clean/batch.parquet"), d.join("batch.parquet")).unwrap();
    // Text mode for one file, binary mode (`*`) for the other, in one file of two entries.
    let mut sums = tool(d, "sha256sum", &["batch.csv"]);
    sums.extend(tool(d, "sha256sum", &["--binary", "batch.parquet"]));
    std::fs::write(d.join("SHA256SUMS"), &sums).unwrap();
    assert!(String::from_utf8_lossy(&sums).contains(" *batch.parquet"));
    let sums = d.join("SHA256SUMS");
    let s = sums.to_str().unwrap();
    // Every entry, names relative to the checksum file.
    let out = run(&["verify", "--sha256-file", s]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert_eq!(stdout(&out).matches(": OK").count(), 2, "{}", stdout(&out));
    // Named files, by path.
    let csv = d.join("batch.csv");
    let out = run(&["verify", csv.to_str().unwrap(), "--sha256-file", s]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // One changed byte: exit 1 naming the file.
    let mut bytes = std::fs::read(&csv).unwrap();
    let last = bytes.len() - 2;
    bytes[last] = if bytes[last] == b'1' { b'2' } else { b'1' };
    std::fs::write(&csv, &bytes).unwrap();
    let out = run(&["verify", "--sha256-file", s]);
    assert_eq!(code(&out), 1);
    assert!(
        stdout(&out).contains("batch.csv: FAILED"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("batch.parquet: OK"),
        "{}",
        stdout(&out)
    );
    // A listed file that is missing, or a file not listed: exit 2 with one line.
    std::fs::remove_file(d.join("batch.parquet")).unwrap();
    let out = run(&["verify", "--sha256-file", s]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).starts_with("error: ") && stderr(&out).contains("batch.parquet"));
    let other = testdata("drifted/missing_column.parquet");
    let out = run(&["verify", other.to_str().unwrap(), "--sha256-file", s]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("not listed"), "{}", stderr(&out));
    // A malformed checksum file.
    std::fs::write(&sums, "not a checksum line\n").unwrap();
    let out = run(&["verify", "--sha256-file", s]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("line 1"), "{}", stderr(&out));
}

#[test]
fn openssl_ecdsa_p256_signatures_verify_and_a_tampered_file_fails() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = d.join("model.bin");
    std::fs::write(&model, b"weights v1\x00\x01\x02").unwrap();
    sign(d, "model.bin", "model.bin.sig");
    let (m, sig, key) = (
        model.to_str().unwrap(),
        d.join("model.bin.sig"),
        d.join("pub.pem"),
    );
    let args = |f: &str| {
        vec![
            "verify".to_owned(),
            f.to_owned(),
            "--signature".to_owned(),
            sig.to_str().unwrap().to_owned(),
            "--public-key".to_owned(),
            key.to_str().unwrap().to_owned(),
        ]
    };
    let a = args(m);
    let out = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("signature verified"));
    std::fs::write(&model, b"weights v2\x00\x01\x02").unwrap();
    let out = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    assert!(stdout(&out).contains("model.bin: FAILED"));
    // A key that is not a public key, and a signature that is not one: exit 2.
    let bad = args(m)
        .into_iter()
        .map(|s| {
            if s.ends_with("pub.pem") {
                d.join("model.bin").to_str().unwrap().to_owned()
            } else {
                s
            }
        })
        .collect::<Vec<_>>();
    let out = run(&bad.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("public key"), "{}", stderr(&out));
    std::fs::write(&sig, "bm90IGEgc2lnbmF0dXJl\n").unwrap();
    let out = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("not an ECDSA signature"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn check_verifies_the_baseline_signature_before_using_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::copy(baseline(), d.join("baseline.json")).unwrap();
    sign(d, "baseline.json", "baseline.json.sig");
    let base = d.join("baseline.json");
    let data = testdata("clean/batch.parquet");
    let gate = || {
        run(&[
            "check",
            "--baseline",
            base.to_str().unwrap(),
            data.to_str().unwrap(),
            "--baseline-signature",
            d.join("baseline.json.sig").to_str().unwrap(),
            "--public-key",
            d.join("pub.pem").to_str().unwrap(),
        ])
    };
    let out = gate();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // The report records the digest of every file read: the signature and key among them.
    let (c, report, _) = check_json_with(
        base.to_str().unwrap(),
        &[data.to_str().unwrap()],
        &[
            "--baseline-signature",
            d.join("baseline.json.sig").to_str().unwrap(),
            "--public-key",
            d.join("pub.pem").to_str().unwrap(),
        ],
        run,
    );
    assert_eq!(c, 0);
    let artifacts = report["artifacts"].as_array().unwrap();
    let roles: Vec<&str> = artifacts
        .iter()
        .map(|a| a["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["baseline-signature", "public-key"]);
    let key_bytes = std::fs::read(d.join("pub.pem")).unwrap();
    assert_eq!(
        artifacts[1]["sha256"].as_str().unwrap(),
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&key_bytes))
    );
    // Same JSON meaning, one more space: the signature no longer matches and nothing is read.
    let mut bytes = std::fs::read(&base).unwrap();
    bytes.push(b' ');
    std::fs::write(&base, bytes).unwrap();
    let out = gate();
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("does not verify"), "{}", stderr(&out));
    // The two flags go together.
    let out = run(&[
        "check",
        "--baseline",
        base.to_str().unwrap(),
        data.to_str().unwrap(),
        "--baseline-signature",
        "x.sig",
    ]);
    assert_eq!(code(&out), 2);
}

fn severity_of(report: &serde_json::Value, code: &str) -> Option<String> {
    findings(report)
        .into_iter()
        .find(|f| f.0 == code)
        .map(|f| f.1)
}

#[test]
fn an_unpinned_baseline_warns_and_the_strict_profile_requires_both_pins() {
    let clean = testdata("clean/batch.parquet");
    let clean = clean.to_str().unwrap();
    let digest = baseline_digest();
    // Default profile: a warning, gone once the baseline is pinned.
    let (exit, report, _) = check_json(&[clean], &[]);
    assert_eq!(exit, 0);
    assert_eq!(
        severity_of(&report, "integrity-baseline-unpinned").as_deref(),
        Some("warn")
    );
    let (exit, report, _) = check_json(&[clean], &["--expect-baseline-sha256", &digest]);
    assert_eq!(exit, 0);
    assert_eq!(severity_of(&report, "integrity-baseline-unpinned"), None);
    assert_eq!(severity_of(&report, "integrity-policy-unpinned"), None);
    let policy_digest = report["policy"]["sha256"].as_str().unwrap().to_owned();
    // Strict: both pins or a block.
    let dir = tempfile::tempdir().unwrap();
    let strict = dir.path().join("strict.toml");
    std::fs::write(&strict, "[gate]\nprofile = \"strict\"\n").unwrap();
    let strict = strict.to_str().unwrap();
    let (exit, report, _) = check_json(&[clean], &["--policy", strict]);
    assert_eq!(exit, 1);
    assert_eq!(
        severity_of(&report, "integrity-baseline-unpinned").as_deref(),
        Some("deny")
    );
    assert_eq!(
        severity_of(&report, "integrity-policy-unpinned").as_deref(),
        Some("deny")
    );
    let strict_digest = report["policy"]["sha256"].as_str().unwrap().to_owned();
    assert_ne!(strict_digest, policy_digest);
    let (exit, report, out) = check_json(
        &[clean],
        &[
            "--policy",
            strict,
            "--expect-policy-sha256",
            &strict_digest,
            "--expect-baseline-sha256",
            &digest,
        ],
    );
    assert_eq!(exit, 0, "{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        findings(&report)
            .iter()
            .all(|f| !f.0.starts_with("integrity-")),
        "{report:#}"
    );
    // A policy pin that does not match is exit 2, naming both digests; the default
    // profile's digest did not change when the profile key was added.
    let (exit, _, out) = check_json(&[clean], &["--expect-policy-sha256", &strict_digest]);
    assert_eq!(exit, 2);
    let err = stderr(&out);
    assert!(
        err.contains("built-in defaults") && err.contains(&strict_digest),
        "{err}"
    );
    let (exit, _, _) = check_json(&[clean], &["--expect-policy-sha256", &policy_digest]);
    assert_eq!(exit, 0);
}
