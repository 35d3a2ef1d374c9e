//! Signed verdicts: `check --attest` writes a SLSA verification summary over the digests of
//! what it read; `verify --attestation` lets the training step go on only for those bytes.

use crate::common::{baseline, code, run, signing_file, stderr, stdout, testdata};

fn gate(batch: &str, att: &std::path::Path) -> i32 {
    let data = testdata(batch);
    let out = run(&[
        "check",
        "--baseline",
        baseline().to_str().unwrap(),
        data.to_str().unwrap(),
        "--attest",
        &signing_file("p256.pem"),
        "--attestation",
        att.to_str().unwrap(),
    ]);
    assert!(att.exists(), "no attestation written: {}", stderr(&out));
    code(&out)
}

fn verify(att: &std::path::Path, public: &str, files: &[&str]) -> std::process::Output {
    let files: Vec<String> = files
        .iter()
        .map(|f| testdata(f).to_str().unwrap().to_owned())
        .collect();
    verify_paths(att, public, &[], &files)
}

/// `verify --attestation` with `extra` flags over `files` given as paths.
fn verify_paths(
    att: &std::path::Path,
    public: &str,
    extra: &[&str],
    files: &[String],
) -> std::process::Output {
    let mut args = vec![
        "verify".to_owned(),
        "--attestation".into(),
        att.to_str().unwrap().into(),
        "--public-key".into(),
        signing_file(public),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args.extend(files.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&args)
}

#[test]
fn a_passed_batch_is_attested_and_only_its_bytes_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let att = tmp.path().join("verdict.sig");
    assert_eq!(gate("clean/batch.parquet", &att), 0);
    let bundle: serde_json::Value = serde_json::from_slice(&std::fs::read(&att).unwrap()).unwrap();
    let payload = poisongate::modelsign::bundle::decode_b64(
        bundle["dsseEnvelope"]["payload"].as_str().unwrap(),
    )
    .unwrap();
    let st: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(
        st["predicateType"],
        "https://slsa.dev/verification_summary/v1"
    );
    assert_eq!(st["predicate"]["verificationResult"], "PASSED");
    assert_eq!(st["predicate"]["poisongate"]["exitCode"], 0);
    let sha = poisongate::digest::sha256_file(&testdata("clean/batch.parquet"))
        .unwrap()
        .0;
    assert_eq!(st["subject"][0]["digest"]["sha256"], sha.as_str());
    assert_eq!(
        st["predicate"]["inputAttestations"][0]["digest"]["sha256"]
            .as_str()
            .unwrap()
            .len(),
        64
    );

    let out = verify(&att, "p256.pub", &["clean/batch.parquet"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    // Data the gate did not read: named, exit 1.
    let out = verify(
        &att,
        "p256.pub",
        &["clean/batch.parquet", "drifted/batch.parquet"],
    );
    assert_eq!(code(&out), 1);
    assert!(
        stdout(&out).contains("drifted/batch.parquet: FAILED: sha256"),
        "{}",
        stdout(&out)
    );
    // Another key, or an edited verdict: exit 1.
    assert_eq!(
        code(&verify(&att, "other.pub", &["clean/batch.parquet"])),
        1
    );
    let mut edited = bundle.clone();
    let text = String::from_utf8(payload)
        .unwrap()
        .replace("PASSED", "PASSED ");
    edited["dsseEnvelope"]["payload"] =
        poisongate::modelsign::bundle::encode_b64(text.as_bytes()).into();
    std::fs::write(&att, serde_json::to_vec(&edited).unwrap()).unwrap();
    let out = verify(&att, "p256.pub", &["clean/batch.parquet"]);
    assert_eq!(code(&out), 1);
    assert!(stdout(&out).contains("does not verify"), "{}", stdout(&out));
}

#[test]
fn a_blocked_batch_is_attested_failed_and_never_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let att = tmp.path().join("verdict.sig");
    assert_eq!(gate("drifted/batch.parquet", &att), 1);
    let out = verify(&att, "p256.pub", &["drifted/batch.parquet"]);
    assert_eq!(code(&out), 1);
    assert!(
        stdout(&out).contains("the verdict is FAILED (check, exit 1), not PASSED"),
        "{}",
        stdout(&out)
    );
    // A missing attestation, a key that is not a key, no DATA: exit 2.
    assert_eq!(
        code(&verify(
            &tmp.path().join("none.sig"),
            "p256.pub",
            &["drifted/batch.parquet"]
        )),
        2
    );
    assert_eq!(
        code(&verify(&att, "p256.pem", &["drifted/batch.parquet"])),
        2
    );
    assert_eq!(code(&verify(&att, "p256.pub", &[])), 2);
}

/// The statement inside a signed bundle.
fn statement_of(att: &std::path::Path) -> serde_json::Value {
    let bundle: serde_json::Value = serde_json::from_slice(&std::fs::read(att).unwrap()).unwrap();
    let payload = poisongate::modelsign::bundle::decode_b64(
        bundle["dsseEnvelope"]["payload"].as_str().unwrap(),
    )
    .unwrap();
    serde_json::from_slice(&payload).unwrap()
}

#[test]
fn a_profile_is_attested_over_its_trusted_inputs_and_names_the_baseline_it_wrote() {
    let tmp = tempfile::tempdir().unwrap();
    let att = tmp.path().join("profile.sig");
    let out_path = tmp.path().join("baseline.json");
    let profile = |data: &str| {
        run(&[
            "profile",
            testdata(data).to_str().unwrap(),
            "-o",
            out_path.to_str().unwrap(),
            "--label",
            "defaulted",
            "--attest",
            &signing_file("p384-pkcs8.pem"),
            "--attestation",
            att.to_str().unwrap(),
        ])
    };
    let out = profile("trusted/applications.parquet");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let st = statement_of(&att);
    assert_eq!(st["predicate"]["verificationResult"], "PASSED");
    assert_eq!(
        st["predicate"]["verifiedLevels"][0],
        "POISONGATE_PROFILE_PASSED"
    );
    let p = &st["predicate"]["poisongate"];
    assert_eq!(p["command"], "profile");
    assert_eq!(p["exitCode"], 0);
    assert!(p["rows"].as_u64().unwrap() > 0);
    // The baseline named is the one written, byte for byte.
    let written = poisongate::digest::sha256_file(&out_path).unwrap().0;
    assert_eq!(p["baseline"]["digest"]["sha256"], written.as_str());
    // The trusted file verifies against it as a profile verdict, never as a check verdict (a
    // profile judges nothing); a batch the profile did not read does not verify.
    let trusted = [testdata("trusted/applications.parquet")
        .to_str()
        .unwrap()
        .to_owned()];
    let out = verify_paths(&att, "p384.pub", &["--verdict-of", "profile"], &trusted);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let out = verify_paths(&att, "p384.pub", &[], &trusted);
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    assert!(
        stdout(&out).contains("a verdict of `profile`, not of `check`"),
        "{}",
        stdout(&out)
    );
    let other = [testdata("clean/batch.parquet").to_str().unwrap().to_owned()];
    let out = verify_paths(&att, "p384.pub", &["--verdict-of", "profile"], &other);
    assert_eq!(code(&out), 1, "{}", stdout(&out));

    // A profile that fails (an unreadable input) replaces the passing statement with a FAILED
    // one without subjects: a stale pass never survives a failed rerun.
    let out = profile("broken/truncated.parquet");
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let st = statement_of(&att);
    assert_eq!(st["predicate"]["verificationResult"], "FAILED");
    assert_eq!(st["subject"].as_array().map(Vec::len), Some(0));
    assert_eq!(st["predicate"]["poisongate"]["exitCode"], 2);
    let out = verify_paths(&att, "p384.pub", &["--verdict-of", "profile"], &trusted);
    assert_eq!(code(&out), 1, "{}", stdout(&out));

    // A sharded part is not a decision: --attest with --manifest is refused before any work.
    let out = run(&[
        "profile",
        "--manifest",
        "m.json",
        "--shard",
        "0/1",
        "-o",
        out_path.to_str().unwrap(),
        "--attest",
        &signing_file("p256.pem"),
        "--attestation",
        att.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("--summaries"), "{}", stderr(&out));
}

#[test]
fn the_files_must_be_exactly_the_subjects_and_a_directory_is_every_file_in_it() {
    let tmp = tempfile::tempdir().unwrap();
    let att = tmp.path().join("verdict.sig");
    assert_eq!(gate("clean/shards", &att), 0);
    let shards: Vec<String> = (0..3)
        .map(|i| {
            testdata(&format!("clean/shards/part-{i}.parquet"))
                .to_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let out = verify_paths(&att, "p256.pub", &[], &shards);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    // A file the gate read left out (rows dropped): named.
    let out = verify_paths(&att, "p256.pub", &[], &shards[..2]);
    assert_eq!(code(&out), 1);
    assert!(
        stdout(&out).contains("part-2.parquet: FAILED: read by the gate"),
        "{}",
        stdout(&out)
    );
    // A copy of the batch, with one file duplicated under a new name (its rows counted twice).
    let copy = tmp.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    for s in &shards {
        let p = std::path::Path::new(s);
        std::fs::copy(p, copy.join(p.file_name().unwrap())).unwrap();
    }
    let dir = [copy.to_str().unwrap().to_owned()];
    assert_eq!(code(&verify_paths(&att, "p256.pub", &[], &dir)), 0);
    std::fs::copy(&shards[0], copy.join("part-3.parquet")).unwrap();
    let out = verify_paths(&att, "p256.pub", &[], &dir);
    assert_eq!(code(&out), 1);
    assert!(
        stdout(&out).contains("more files given carry it than the gate read"),
        "{}",
        stdout(&out)
    );
    std::fs::remove_file(copy.join("part-3.parquet")).unwrap();
    // A file the gate could not have read (no data extension) that a reader of the directory
    // would load: not a subject. Hidden files and markers, which readers skip, are skipped.
    std::fs::write(copy.join("_SUCCESS"), b"").unwrap();
    std::fs::write(copy.join(".part-0.parquet.crc"), b"x").unwrap();
    assert_eq!(code(&verify_paths(&att, "p256.pub", &[], &dir)), 0);
    std::fs::write(copy.join("part-9.csv.gz"), b"late rows").unwrap();
    let out = verify_paths(&att, "p256.pub", &[], &dir);
    assert_eq!(code(&out), 1);
    assert!(
        stdout(&out).contains("part-9.csv.gz: FAILED: sha256"),
        "{}",
        stdout(&out)
    );
}
