//! S3 inputs against a real S3-compatible server: moto's, which `scripts/test.sh` (the README's
//! test command) starts on loopback and names in `POISONGATE_TEST_S3_ENDPOINT`.
//!
//! Every test makes its own bucket, so the tests run in parallel on one server.

use std::path::Path;
use std::process::Output;
use std::sync::OnceLock;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use polars::prelude::*;

use crate::common::*;

/// A secret that must never appear in any output.
const SECRET: &str = "pgSecretKey0123456789NeverPrinted";
const KEY_A: &str = "arn:aws:kms:us-east-1:111122223333:key/aaaa-1111";
const KEY_B: &str = "arn:aws:kms:us-east-1:111122223333:key/bbbb-2222";

struct Store {
    endpoint: String,
    client: Client,
    runtime: tokio::runtime::Runtime,
}

fn store() -> &'static Store {
    static STORE: OnceLock<Store> = OnceLock::new();
    STORE.get_or_init(|| {
        let endpoint = std::env::var("POISONGATE_TEST_S3_ENDPOINT").expect(
            "POISONGATE_TEST_S3_ENDPOINT is not set: run the tests with `bash scripts/test.sh`, \
             which starts an S3-compatible server for them",
        );
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .credentials_provider(Credentials::new("testing", SECRET, None, None, "tests"))
            .region(Region::new("us-east-1"))
            .endpoint_url(&endpoint)
            .force_path_style(true)
            .build();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Store {
            endpoint,
            client: Client::from_conf(config),
            runtime,
        }
    })
}

#[derive(Clone, Copy)]
enum Sse {
    None,
    Aes256,
    Kms(&'static str),
}

impl Store {
    fn bucket(&self, name: &str) -> String {
        self.runtime
            .block_on(self.client.create_bucket().bucket(name).send())
            .unwrap_or_else(|e| panic!("create bucket {name}: {e:?}"));
        name.to_owned()
    }

    fn put(&self, bucket: &str, key: &str, bytes: Vec<u8>, sse: Sse) {
        self.put_many(bucket, vec![(key.to_owned(), bytes)], sse);
    }

    /// Uploads objects, up to 16 at a time.
    fn put_many(&self, bucket: &str, objects: Vec<(String, Vec<u8>)>, sse: Sse) {
        self.runtime.block_on(async {
            let mut set = tokio::task::JoinSet::new();
            let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(16));
            for (key, bytes) in objects {
                let mut req = self
                    .client
                    .put_object()
                    .bucket(bucket)
                    .key(&key)
                    .body(ByteStream::from(bytes));
                req = match sse {
                    Sse::None => req,
                    Sse::Aes256 => req.server_side_encryption(ServerSideEncryption::Aes256),
                    Sse::Kms(k) => req
                        .server_side_encryption(ServerSideEncryption::AwsKms)
                        .ssekms_key_id(k),
                };
                let gate = std::sync::Arc::clone(&gate);
                set.spawn(async move {
                    let _permit = gate.acquire_owned().await;
                    req.send()
                        .await
                        .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
                });
            }
            while let Some(r) = set.join_next().await {
                r.unwrap();
            }
        });
    }

    fn put_file(&self, bucket: &str, key: &str, local: &Path, sse: Sse) {
        self.put(bucket, key, std::fs::read(local).unwrap(), sse);
    }
}

/// Runs the binary with credentials in the environment and nothing from the host's AWS setup.
fn s3_run(args: &[&str]) -> Output {
    bin()
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", &store().endpoint)
        .env("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/aws-credentials",
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_ENDPOINT_URL_S3")
        .output()
        .unwrap()
}

fn out_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `check` with a JSON report and the S3 environment; returns (exit, report, output).
fn check(baseline: &str, data: &[&str], extra: &[&str]) -> (i32, serde_json::Value, Output) {
    check_json_with(baseline, data, extra, s3_run)
}

fn profile(data: &str, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "profile",
        data,
        "-o",
        out.to_str().unwrap(),
        "--label",
        "defaulted",
        "--id",
        "application_id",
        "--seed",
        "7",
    ];
    args.extend_from_slice(extra);
    s3_run(&args)
}

/// The baseline without its `inputs` (which name where the data was read from).
fn without_inputs(path: &Path) -> serde_json::Value {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("inputs");
    v
}

#[test]
fn s3_copies_give_the_findings_and_verdicts_of_local_copies() {
    let s = store();
    let b = s.bucket("pg-local-vs-s3");
    let batches = [
        ("clean/batch.parquet", 0),
        ("clean/batch.csv", 0),
        ("clean/batch.ndjson", 0),
        ("clean/batch.arrow", 0),
        ("mild/batch.parquet", 0),
        ("drifted/batch.parquet", 1),
        ("poison/flip10.parquet", 1),
        ("poison/trigger_channel.parquet", 1),
    ];
    s.put_file(
        &b,
        "trusted/applications.parquet",
        &testdata("trusted/applications.parquet"),
        Sse::None,
    );
    for (rel, _) in batches {
        s.put_file(&b, rel, &testdata(rel), Sse::None);
    }
    // The baseline pinned from S3 is the baseline pinned from the local file.
    let dir = tempfile::tempdir().unwrap();
    let from_s3 = dir.path().join("s3.json");
    let local = dir.path().join("local.json");
    let uri = format!("s3://{b}/trusted/applications.parquet");
    let out = profile(&uri, &from_s3, &[]);
    assert_eq!(code(&out), 0, "{}", out_text(&out));
    let trusted = testdata("trusted/applications.parquet");
    let out = profile(trusted.to_str().unwrap(), &local, &[]);
    assert_eq!(code(&out), 0, "{}", out_text(&out));
    assert_eq!(without_inputs(&from_s3), without_inputs(&local));
    let pinned: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&from_s3).unwrap()).unwrap();
    let input = &pinned["inputs"][0];
    assert_eq!(input["path"], uri.as_str());
    assert_eq!(
        input["sha256"].as_str().unwrap(),
        sha256_hex(&std::fs::read(&trusted).unwrap())
    );
    assert!(
        input["object"]["etag"]
            .as_str()
            .is_some_and(|e| !e.is_empty())
    );

    let base = local.to_str().unwrap();
    for (rel, want) in batches {
        let local_path = testdata(rel);
        let (lc, lr, lo) = check(base, &[local_path.to_str().unwrap()], &[]);
        let uri = format!("s3://{b}/{rel}");
        let (sc, sr, so) = check(base, &[&uri], &[]);
        assert_eq!(lc, want, "{rel} local: {}", out_text(&lo));
        assert_eq!(sc, want, "{rel} s3: {}", out_text(&so));
        assert_eq!(lr["findings"], sr["findings"], "{rel}: findings differ");
        assert_eq!(lr["verdict"], sr["verdict"]);
        assert_eq!(lr["counts"], sr["counts"]);
        let (li, si) = (&lr["inputs"][0], &sr["inputs"][0]);
        assert_eq!(si["path"], uri.as_str());
        assert_eq!(
            li["sha256"], si["sha256"],
            "{rel}: the digest of what was read"
        );
        assert_eq!(li["bytes"], si["bytes"]);
        assert_eq!(li["rows"], si["rows"]);
        assert!(si["object"]["etag"].is_string(), "{rel}: no ETag recorded");
    }

    // compare reads S3 too.
    s.put_file(
        &b,
        "compare/backdoor.parquet",
        &testdata("compare/backdoor.parquet"),
        Sse::None,
    );
    let cmp = [
        "--key",
        "application_id",
        "--label",
        "defaulted",
        "--before-col",
        "pred_before",
        "--after-col",
        "pred_after",
        "--segment",
        "channel",
    ];
    let local_cmp = testdata("compare/backdoor.parquet");
    let mut a = vec!["compare", local_cmp.to_str().unwrap(), "--format", "json"];
    a.extend_from_slice(&cmp);
    let lo = s3_run(&a);
    let uri = format!("s3://{b}/compare/backdoor.parquet");
    let mut a = vec!["compare", &uri, "--format", "json"];
    a.extend_from_slice(&cmp);
    let so = s3_run(&a);
    assert_eq!(code(&lo), 1, "{}", out_text(&lo));
    assert_eq!(code(&so), 1, "{}", out_text(&so));
    let lj: serde_json::Value = serde_json::from_slice(&lo.stdout).unwrap();
    let sj: serde_json::Value = serde_json::from_slice(&so.stdout).unwrap();
    assert_eq!(lj["findings"], sj["findings"]);
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// 1,050 Parquet shards of the clean batch: more than one page of `ListObjectsV2` (1,000 keys).
fn shards(n: usize) -> Vec<(String, Vec<u8>)> {
    let file = std::fs::File::open(testdata("clean/batch.parquet")).unwrap();
    let df = ParquetReader::new(file).finish().unwrap();
    let rows = df.height();
    (0..n)
        .map(|i| {
            let (from, to) = (i * rows / n, (i + 1) * rows / n);
            let mut part = df.slice(from as i64, to - from);
            let mut bytes = Vec::new();
            ParquetWriter::new(&mut bytes).finish(&mut part).unwrap();
            (format!("part-{i:05}.parquet"), bytes)
        })
        .collect()
}

#[test]
fn a_prefix_of_more_than_a_thousand_objects_is_read_in_full() {
    let s = store();
    let b = s.bucket("pg-pagination");
    let parts = shards(1050);
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("shards");
    std::fs::create_dir(&local).unwrap();
    for (name, bytes) in &parts {
        std::fs::write(local.join(name), bytes).unwrap();
    }
    let mut objects: Vec<(String, Vec<u8>)> = parts
        .into_iter()
        .map(|(name, bytes)| (format!("batch/dt=2026-11-27/{name}"), bytes))
        .collect();
    // Markers, hidden files and other formats are not data, as on disk.
    objects.push(("batch/dt=2026-11-27/_SUCCESS".into(), Vec::new()));
    objects.push(("batch/dt=2026-11-27/.part.crc".into(), b"x".to_vec()));
    objects.push(("batch/dt=2026-11-27/README.txt".into(), b"notes".to_vec()));
    objects.push((
        "batch/_temporary/part-0.parquet".into(),
        b"half-written".to_vec(),
    ));
    s.put_many(&b, objects, Sse::None);

    let base = baseline().to_str().unwrap();
    let (lc, lr, lo) = check(base, &[local.to_str().unwrap()], &[]);
    assert_eq!(lc, 0, "{}", out_text(&lo));
    for uri in [format!("s3://{b}/batch/"), format!("s3://{b}/batch")] {
        let (sc, sr, so) = check(base, &[&uri], &[]);
        assert_eq!(sc, 0, "{uri}: {}", out_text(&so));
        let inputs = sr["inputs"].as_array().unwrap();
        assert_eq!(inputs.len(), 1050, "{uri}: every page listed");
        assert_eq!(sr["rows"], 5000);
        assert_eq!(
            inputs[1049]["path"],
            format!("s3://{b}/batch/dt=2026-11-27/part-01049.parquet").as_str()
        );
        assert_eq!(lr["findings"], sr["findings"]);
        assert_eq!(lr["counts"], sr["counts"]);
    }
}

#[test]
fn s3_baselines_are_held_to_their_digest() {
    let s = store();
    let b = s.bucket("pg-baseline");
    s.put_file(&b, "pins/baseline.json", baseline(), Sse::Kms(KEY_A));
    s.put_file(
        &b,
        "batch.parquet",
        &testdata("clean/batch.parquet"),
        Sse::Kms(KEY_A),
    );
    let digest = sha256_hex(&std::fs::read(baseline()).unwrap());
    let uri = format!("s3://{b}/pins/baseline.json");
    let data = format!("s3://{b}/batch.parquet");
    let (c, report, out) = check(&uri, &[&data], &["--expect-baseline-sha256", &digest]);
    assert_eq!(c, 0, "{}", out_text(&out));
    assert_eq!(report["baseline"]["path"], uri.as_str());
    assert_eq!(report["baseline"]["sha256"], digest.as_str());
    assert_eq!(report["baseline"]["object"]["sse"], "aws:kms");
    // The baseline object is held to --require-sse-kms as well.
    let (c, _, out) = check(&uri, &[&data], &["--require-sse-kms=aaaa-1111"]);
    assert_eq!(c, 0, "{}", out_text(&out));
    let wrong = "0".repeat(64);
    let (c, report, out) = check(&uri, &[&data], &["--expect-baseline-sha256", &wrong]);
    assert_eq!(c, 2, "{}", out_text(&out));
    let err = stderr(&out);
    assert!(
        err.lines().next().unwrap().contains(&uri) && err.contains("SHA-256 mismatch"),
        "{err}"
    );
    assert_eq!(report["verdict"], "error");
}

#[test]
fn require_sse_kms_denies_objects_without_the_key() {
    let s = store();
    let b = s.bucket("pg-sse");
    let clean = testdata("clean/batch.parquet");
    s.put_file(&b, "kms-a/batch.parquet", &clean, Sse::Kms(KEY_A));
    s.put_file(&b, "kms-b/batch.parquet", &clean, Sse::Kms(KEY_B));
    s.put_file(&b, "aes/batch.parquet", &clean, Sse::Aes256);
    s.put_file(&b, "plain/batch.parquet", &clean, Sse::None);
    let base = baseline().to_str().unwrap();
    let sse_findings = |report: &serde_json::Value| -> Vec<String> {
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["code"] == "integrity-sse-kms-missing")
            .map(|f| {
                assert_eq!(f["severity"], "deny");
                f["subject"]["value"].as_str().unwrap().to_owned()
            })
            .collect()
    };
    let a = format!("s3://{b}/kms-a/batch.parquet");
    let bb = format!("s3://{b}/kms-b/batch.parquet");
    let aes = format!("s3://{b}/aes/batch.parquet");
    let plain = format!("s3://{b}/plain/batch.parquet");
    // Any KMS key.
    for ok in [&a, &bb] {
        let (c, r, out) = check(base, &[ok], &["--require-sse-kms"]);
        assert_eq!(c, 0, "{ok}: {}", out_text(&out));
        assert!(sse_findings(&r).is_empty());
        assert_eq!(r["inputs"][0]["object"]["sse"], "aws:kms");
    }
    // One key, by ARN or by key id.
    let (c, _, out) = check(base, &[&a], &[&format!("--require-sse-kms={KEY_A}")]);
    assert_eq!(c, 0, "{}", out_text(&out));
    let (c, r, out) = check(base, &[&a, &bb], &["--require-sse-kms=aaaa-1111"]);
    assert_eq!(c, 1, "{}", out_text(&out));
    assert_eq!(sse_findings(&r), std::slice::from_ref(&bb));
    assert!(String::from_utf8_lossy(&out.stdout).contains("integrity-sse-kms-missing"));
    // SSE-S3 and no encryption are not SSE-KMS; each object is named.
    let (c, r, _) = check(base, &[&aes, &plain, &a], &["--require-sse-kms"]);
    assert_eq!(c, 1);
    let mut named = sse_findings(&r);
    named.sort();
    assert_eq!(named, [aes.clone(), plain.clone()]);
    let messages: Vec<&str> = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["message"].as_str())
        .collect();
    assert!(
        messages.iter().any(|m| m.contains("AES256")),
        "{messages:?}"
    );
    // A local file cannot prove encryption at rest: the requirement fails closed.
    let (c, r, _) = check(base, &[clean.to_str().unwrap()], &["--require-sse-kms"]);
    assert_eq!(c, 1);
    assert_eq!(sse_findings(&r).len(), 1);
    // Without the flag nothing is required.
    let (c, _, _) = check(base, &[&plain], &[]);
    assert_eq!(c, 0);
    // The strict profile holds every S3 object to SSE-KMS without the flag; local files are
    // pinned by digest instead.
    let strict_dir = tempfile::tempdir().unwrap();
    let strict = strict_dir.path().join("strict.toml");
    std::fs::write(&strict, "[gate]\nprofile = \"strict\"\n").unwrap();
    let strict = strict.to_str().unwrap();
    let (_, r, _) = check(base, &[&a], &["--policy", strict]);
    let strict_digest = r["policy"]["sha256"].as_str().unwrap().to_owned();
    let base_digest = std::fs::read_to_string(format!("{base}.sha256")).unwrap();
    let base_digest = base_digest.split_whitespace().next().unwrap().to_owned();
    let pins = [
        "--policy",
        strict,
        "--expect-policy-sha256",
        &strict_digest,
        "--expect-baseline-sha256",
        &base_digest,
    ];
    let (c, r, out) = check(base, &[&a], &pins);
    assert_eq!(c, 0, "{}", out_text(&out));
    assert!(sse_findings(&r).is_empty());
    let (c, r, _) = check(base, &[&plain, &a], &pins);
    assert_eq!(c, 1);
    assert_eq!(sse_findings(&r), std::slice::from_ref(&plain));
    let (c, r, _) = check(base, &[clean.to_str().unwrap()], &pins);
    assert_eq!(c, 0);
    assert!(sse_findings(&r).is_empty());
    // The policy can lower the level (with the usual audit trail).
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[checks.integrity-sse-kms-missing]\nlevel = \"warn\"\n",
    )
    .unwrap();
    let (c, r, _) = check(
        base,
        &[&plain],
        &["--require-sse-kms", "--policy", policy.to_str().unwrap()],
    );
    assert_eq!(c, 0);
    assert_eq!(r["findings"][0]["severity"], "warn");

    // compare: a clean retrain read from an unencrypted object is blocked, and its noise is
    // not pinned.
    s.put_file(
        &b,
        "compare/clean.parquet",
        &testdata("compare/clean.parquet"),
        Sse::None,
    );
    let noise = dir.path().join("noise.json");
    let cmp_uri = format!("s3://{b}/compare/clean.parquet");
    let compare = |extra: &[&str]| {
        let mut a = vec![
            "compare",
            cmp_uri.as_str(),
            "--label",
            "defaulted",
            "--before-col",
            "pred_before",
            "--after-col",
            "pred_after",
            "--format",
            "json",
        ];
        a.extend_from_slice(extra);
        s3_run(&a)
    };
    let out = compare(&["--pin-noise", noise.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", out_text(&out));
    std::fs::remove_file(&noise).unwrap();
    let out = compare(&["--require-sse-kms", "--pin-noise", noise.to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{}", out_text(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sse_findings(&r), std::slice::from_ref(&cmp_uri));
    assert!(
        !noise.exists(),
        "noise pinned from inputs that failed --require-sse-kms"
    );

    // profile refuses to pin data that fails the requirement, and writes nothing.
    let out_path = dir.path().join("baseline.json");
    s.put_file(
        &b,
        "trusted/applications.parquet",
        &testdata("trusted/applications.parquet"),
        Sse::None,
    );
    let out = profile(
        &format!("s3://{b}/trusted/applications.parquet"),
        &out_path,
        &["--require-sse-kms"],
    );
    assert_eq!(code(&out), 1, "{}", out_text(&out));
    assert!(out_text(&out).contains("integrity-sse-kms-missing"));
    assert!(!out_path.exists());
    s.put_file(
        &b,
        "trusted-kms/applications.parquet",
        &testdata("trusted/applications.parquet"),
        Sse::Kms(KEY_A),
    );
    let out = profile(
        &format!("s3://{b}/trusted-kms/"),
        &out_path,
        &["--require-sse-kms=aaaa-1111"],
    );
    assert_eq!(code(&out), 0, "{}", out_text(&out));
    assert!(out_path.exists());
}

#[test]
fn unreadable_s3_inputs_exit_2_naming_the_uri_and_never_the_secret() {
    let s = store();
    let b = s.bucket("pg-errors");
    s.put(&b, "empty/README.txt", b"no data here".to_vec(), Sse::None);
    s.put(
        &b,
        "junk.parquet",
        b"not parquet at all".to_vec(),
        Sse::None,
    );
    let base = baseline().to_str().unwrap();
    let cases: Vec<(String, Vec<String>, &str)> = vec![
        (
            format!("s3://{b}/missing.parquet"),
            vec![],
            "no such object",
        ),
        (
            "s3://pg-no-such-bucket/batch.parquet".to_owned(),
            vec![],
            "no such bucket",
        ),
        (
            "s3://pg-no-such-bucket/prefix/".to_owned(),
            vec![],
            "no such bucket",
        ),
        (
            format!("s3://{b}/empty/"),
            vec![],
            "no .parquet, .csv, .arrow, .ipc, .feather, .ndjson or .jsonl objects",
        ),
        (
            format!("s3://{b}/junk.parquet"),
            vec![],
            "not valid parquet",
        ),
        (
            format!("s3://{b}/empty/README.txt"),
            vec![],
            "unknown file extension",
        ),
        (
            format!("s3://{b}/junk.parquet"),
            vec!["--s3-endpoint".to_owned(), "http://127.0.0.1:9".to_owned()],
            "cannot connect to `http://127.0.0.1:9`",
        ),
    ];
    for (uri, extra, cause) in cases {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let (c, report, out) = check(base, &[&uri], &extra);
        let err = stderr(&out);
        assert_eq!(c, 2, "{uri}: {}", out_text(&out));
        let first = err.lines().next().unwrap_or_default();
        assert!(
            first.contains(&uri) && first.contains(cause),
            "{uri}: expected `{cause}` in {first}"
        );
        assert_eq!(report["verdict"], "error");
        let everything = format!("{}{report}", out_text(&out));
        assert!(
            !everything.contains(SECRET),
            "the secret leaked: {everything}"
        );
    }
    // No region (an empty AWS_REGION counts as none) and an invalid one, against AWS itself:
    // one readable line each, with no debug dump of the SDK's error.
    for (region, cause) in [
        ("", "no AWS region configured"),
        ("not a region!", "region was not a valid DNS name"),
    ] {
        let out = bin()
            .args(["check", "--baseline", base, "s3://pg-errors/x.parquet"])
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            .env("AWS_REGION", region)
            .env("AWS_CONFIG_FILE", "/nonexistent/aws-config")
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                "/nonexistent/aws-credentials",
            )
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("AWS_ENDPOINT_URL_S3")
            .env_remove("AWS_DEFAULT_REGION")
            .env_remove("AWS_PROFILE")
            .output()
            .unwrap();
        assert_eq!(code(&out), 2, "{}", out_text(&out));
        let first = stderr(&out).lines().next().unwrap_or_default().to_owned();
        assert!(
            first.contains(cause) && !first.contains("DispatchFailure {"),
            "{first}"
        );
    }
    // A missing baseline object, too.
    let (c, _, out) = check(
        &format!("s3://{b}/baseline.json"),
        &[testdata("clean/batch.parquet").to_str().unwrap()],
        &[],
    );
    assert_eq!(c, 2);
    assert!(stderr(&out).contains(&format!("s3://{b}/baseline.json")));
}

#[test]
fn verify_checks_bucket_objects_against_sha256sum_and_signatures() {
    let s = store();
    let b = s.bucket("pg-verify");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::copy(testdata("clean/batch.csv"), d.join("batch.csv")).unwrap();
    std::fs::copy(baseline(), d.join("baseline.json")).unwrap();
    let mut sums = tool(d, "sha256sum", &["batch.csv"]);
    sums.extend(tool(d, "sha256sum", &["--binary", "baseline.json"]));
    s.put_file(
        &b,
        "release/batch.csv",
        &d.join("batch.csv"),
        Sse::Kms(KEY_A),
    );
    s.put_file(
        &b,
        "release/baseline.json",
        &d.join("baseline.json"),
        Sse::Kms(KEY_A),
    );
    s.put(&b, "release/SHA256SUMS", sums, Sse::Kms(KEY_A));
    let sums_uri = format!("s3://{b}/release/SHA256SUMS");
    // Every entry, relative to the checksum object's prefix.
    let out = s3_run(&["verify", "--sha256-file", &sums_uri, "--require-sse-kms"]);
    assert_eq!(code(&out), 0, "{}", out_text(&out));
    assert!(out_text(&out).contains(&format!("s3://{b}/release/batch.csv: OK")));
    // A swapped object fails, naming it.
    let mut bytes = std::fs::read(d.join("batch.csv")).unwrap();
    bytes.extend_from_slice(b"1,2,3\n");
    s.put(&b, "release/batch.csv", bytes, Sse::None);
    let obj = format!("s3://{b}/release/batch.csv");
    let out = s3_run(&["verify", &obj, "--sha256-file", &sums_uri]);
    assert_eq!(code(&out), 1, "{}", out_text(&out));
    assert!(out_text(&out).contains(&format!("{obj}: FAILED")));
    // Its lost encryption is a failure of its own under --require-sse-kms.
    let out = s3_run(&[
        "verify",
        &format!("s3://{b}/release/baseline.json"),
        &obj,
        "--sha256-file",
        &sums_uri,
        "--require-sse-kms",
    ]);
    assert_eq!(code(&out), 1);
    assert!(out_text(&out).contains("integrity-sse-kms-missing"));

    // An openssl ECDSA P-256 signature of the baseline object verifies; check uses it.
    sign(d, "baseline.json", "baseline.sig");
    let sig = d.join("baseline.sig");
    let key = d.join("pub.pem");
    let base_uri = format!("s3://{b}/release/baseline.json");
    let out = s3_run(&[
        "verify",
        &base_uri,
        "--signature",
        sig.to_str().unwrap(),
        "--public-key",
        key.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", out_text(&out));
    let clean = testdata("clean/batch.parquet");
    let signed = [
        "--baseline-signature",
        sig.to_str().unwrap(),
        "--public-key",
        key.to_str().unwrap(),
    ];
    let gate = || check(&base_uri, &[clean.to_str().unwrap()], &signed);
    let (c, _, out) = gate();
    assert_eq!(c, 0, "{}", out_text(&out));
    // A tampered baseline object is refused before it is parsed.
    let mut tampered = std::fs::read(baseline()).unwrap();
    tampered.push(b' ');
    s.put(&b, "release/baseline.json", tampered, Sse::Kms(KEY_A));
    let (c, _, out) = gate();
    assert_eq!(c, 2, "{}", out_text(&out));
    assert!(stderr(&out).contains("does not verify"));
}

/// A scripted S3 endpoint on loopback for the failures a well-behaved server does not produce:
/// throttling, a body cut mid-stream, access denied and expired credentials. Each request gets
/// the next scripted response for its path; every request line and header block is logged.
struct Scripted {
    endpoint: String,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

fn scripted(body: Vec<u8>) -> Scripted {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = std::sync::Arc::clone(&log);
    std::thread::spawn(move || {
        let mut flaky = 0;
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).to_lowercase();
            seen.lock().unwrap().push(head.clone());
            let error = |status: &str, code: &str| {
                let xml = format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>scripted</Message><RequestId>r</RequestId></Error>"
                );
                format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{xml}",
                    xml.len()
                )
                .into_bytes()
            };
            let ok = |cut: usize| {
                let mut r = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nETag: \"scripted-etag\"\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                r.extend_from_slice(&body[..cut]);
                r
            };
            let response = if head.contains("/denied.parquet") {
                error("403 Forbidden", "AccessDenied")
            } else if head.contains("/expired.parquet") {
                error("400 Bad Request", "ExpiredToken")
            } else if head.contains("/flaky.parquet") {
                flaky += 1;
                match flaky {
                    1 => error("503 Slow Down", "SlowDown"),
                    2 => ok(body.len() / 2),
                    _ => ok(body.len()),
                }
            } else {
                error("404 Not Found", "NoSuchKey")
            };
            let _ = stream.write_all(&response);
            let _ = stream.flush();
        }
    });
    Scripted { endpoint, log }
}

#[test]
fn throttling_and_a_cut_body_are_retried_and_auth_failures_exit_2() {
    let local = testdata("clean/batch.parquet");
    let bytes = std::fs::read(&local).unwrap();
    let server = scripted(bytes.clone());
    let base = baseline().to_str().unwrap();
    let ep = server.endpoint.clone();
    // 503 SlowDown (retried by the SDK), then a body cut at half its length (read again,
    // pinned to the ETag), then the whole object: the findings of the local file.
    let (c, report, out) = check(
        base,
        &["s3://scripted/flaky.parquet"],
        &["--s3-endpoint", &ep],
    );
    assert_eq!(c, 0, "{}", out_text(&out));
    let (_, local_report, _) = check(base, &[local.to_str().unwrap()], &[]);
    assert_eq!(report["findings"], local_report["findings"]);
    assert_eq!(report["inputs"][0]["sha256"], sha256_hex(&bytes).as_str());
    assert_eq!(report["inputs"][0]["object"]["etag"], "scripted-etag");
    let log = server.log.lock().unwrap().clone();
    let flaky: Vec<&String> = log
        .iter()
        .filter(|h| h.contains("/flaky.parquet"))
        .collect();
    assert_eq!(flaky.len(), 3, "{log:?}");
    assert!(
        flaky[0].starts_with("get /scripted/flaky.parquet"),
        "path-style: {}",
        flaky[0]
    );
    assert!(!flaky[1].contains("if-match"));
    assert!(
        flaky[2].contains("if-match: \"scripted-etag\""),
        "{}",
        flaky[2]
    );

    for (key, cause) in [
        ("denied.parquet", "access denied (HTTP 403)"),
        ("expired.parquet", "the AWS credentials have expired"),
    ] {
        let uri = format!("s3://scripted/{key}");
        let (c, _, out) = check(base, &[&uri], &["--s3-endpoint", &ep]);
        assert_eq!(c, 2, "{}", out_text(&out));
        let first = stderr(&out).lines().next().unwrap_or_default().to_owned();
        assert!(first.contains(&uri) && first.contains(cause), "{first}");
        assert!(!out_text(&out).contains(SECRET));
    }
}

#[test]
fn versioned_buckets_record_the_version_read() {
    use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
    let s = store();
    let b = s.bucket("pg-versioned");
    s.runtime
        .block_on(
            s.client
                .put_bucket_versioning()
                .bucket(&b)
                .versioning_configuration(
                    VersioningConfiguration::builder()
                        .status(BucketVersioningStatus::Enabled)
                        .build(),
                )
                .send(),
        )
        .unwrap();
    // Two versions: the report names the one it read (the latest), with its digest.
    s.put_file(
        &b,
        "batch.parquet",
        &testdata("drifted/batch.parquet"),
        Sse::None,
    );
    let clean = testdata("clean/batch.parquet");
    s.put_file(&b, "batch.parquet", &clean, Sse::None);
    let latest = s
        .runtime
        .block_on(
            s.client
                .head_object()
                .bucket(&b)
                .key("batch.parquet")
                .send(),
        )
        .unwrap();
    let want = latest
        .version_id()
        .expect("moto versions the object")
        .to_owned();
    let dir = tempfile::tempdir().unwrap();
    let (md, html) = (dir.path().join("r.md"), dir.path().join("r.html"));
    let att = dir.path().join("verdict.sig");
    let (c, r, out) = check(
        baseline().to_str().unwrap(),
        &[&format!("s3://{b}/batch.parquet")],
        &[
            "--markdown",
            md.to_str().unwrap(),
            "--html",
            html.to_str().unwrap(),
            "--attest",
            &signing_file("p256.pem"),
            "--attestation",
            att.to_str().unwrap(),
        ],
    );
    assert_eq!(c, 0, "{}", out_text(&out));
    assert_eq!(r["inputs"][0]["object"]["version_id"], want.as_str());
    // The signed verdict names the object version and ETag it read, and the training step's
    // check of the same object passes.
    let bundle: serde_json::Value = serde_json::from_slice(&std::fs::read(&att).unwrap()).unwrap();
    let payload = poisongate::modelsign::bundle::decode_b64(
        bundle["dsseEnvelope"]["payload"].as_str().unwrap(),
    )
    .unwrap();
    let st: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    let subject = &st["subject"][0];
    assert_eq!(subject["annotations"]["s3VersionId"], want.as_str());
    assert_eq!(
        subject["annotations"]["s3ETag"],
        r["inputs"][0]["object"]["etag"]
    );
    let out = s3_run(&[
        "verify",
        "--attestation",
        att.to_str().unwrap(),
        "--public-key",
        &signing_file("p256.pub"),
        &format!("s3://{b}/batch.parquet"),
    ]);
    assert_eq!(code(&out), 0, "{}", out_text(&out));
    // The human reports show what was read, for an auditor.
    for page in [&md, &html] {
        let text = std::fs::read_to_string(page).unwrap();
        assert!(text.contains("S3 object"), "{text}");
        assert!(text.contains(&format!("version {want}")), "{text}");
        assert!(
            text.contains("no server-side encryption reported"),
            "{text}"
        );
    }
    assert_eq!(
        r["inputs"][0]["sha256"],
        sha256_hex(&std::fs::read(&clean).unwrap()).as_str()
    );
}

#[test]
fn verify_scan_judges_bucket_objects_as_local_files() {
    let s = store();
    let b = s.bucket("pg-scan");
    let models = testdata("models");
    s.put_file(
        &b,
        "models/benign.joblib",
        &models.join("benign/sk_pipeline_column_transformer_xz.joblib"),
        Sse::Kms(KEY_A),
    );
    s.put_file(
        &b,
        "models/hostile.pt",
        &models.join("hostile/torch_second_pkl.pt"),
        Sse::None,
    );
    let benign = format!("s3://{b}/models/benign.joblib");
    let hostile = format!("s3://{b}/models/hostile.pt");
    let out = s3_run(&["verify", "--scan", &benign, "--require-sse-kms"]);
    assert_eq!(code(&out), 0, "{}", out_text(&out));
    assert!(out_text(&out).contains(&format!("{benign}: OK: joblib (xz)")));
    let out = s3_run(&["verify", "--scan", &hostile]);
    assert_eq!(code(&out), 1, "{}", out_text(&out));
    let text = out_text(&out);
    assert!(text.contains(&format!("{hostile}: UNSAFE")), "{text}");
    assert!(
        text.contains("runpy._run_code (member archive/extra_state.pkl"),
        "{text}"
    );
    // A safe model stored without the required key is refused all the same, and the
    // summary line and the JSON verdict say so.
    s.put_file(
        &b,
        "models/plain.joblib",
        &models.join("benign/sk_pipeline_column_transformer_xz.joblib"),
        Sse::None,
    );
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("scan.json");
    let plain = format!("s3://{b}/models/plain.joblib");
    let out = s3_run(&[
        "verify",
        "--scan",
        &plain,
        "--require-sse-kms",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1, "{}", out_text(&out));
    let text = out_text(&out);
    assert!(text.contains("FAILED: integrity-sse-kms-missing"), "{text}");
    assert!(
        text.contains("BLOCKED (exit 1) (0 of 1 file(s) unsafe, 1 other refusal(s))"),
        "{text}"
    );
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["verdict"], "blocked");
    assert_eq!(report["refused"].as_array().unwrap().len(), 1);
    let out = s3_run(&["verify", "--scan", &format!("s3://{b}/models/missing.pkl")]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("missing.pkl"), "{}", stderr(&out));
}
