//! Walks the registry of codes: every code fires on a known-answer fixture and stays quiet on
//! the matching clean input. A code added to the registry without a fixture here fails the
//! test, so no check can exist that nothing shows firing.

use std::collections::BTreeSet;
use std::path::Path;

use crate::common::*;

/// The codes of a JSON report's findings (any severity).
fn codes(report: &serde_json::Value) -> BTreeSet<String> {
    // `verify --scan --json` reports findings per file.
    if let Some(files) = report["files"].as_array() {
        return files
            .iter()
            .flat_map(|f| f["findings"].as_array().unwrap().iter())
            .map(|f| f["code"].as_str().unwrap().to_owned())
            .collect();
    }
    report["findings"]
        .as_array()
        .unwrap_or_else(|| panic!("no report: {report:#}"))
        .iter()
        .map(|f| f["code"].as_str().unwrap().to_owned())
        .collect()
}

/// Runs a command that writes `--json REPORT` and returns the codes it found.
fn found(args: &[String]) -> BTreeSet<String> {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    all.extend_from_slice(&["--json", report.to_str().unwrap()]);
    let out = run(&all);
    assert!(
        code(&out) < 2,
        "{args:?} could not evaluate: {}",
        stderr(&out)
    );
    let text = std::fs::read_to_string(&report).unwrap();
    codes(&serde_json::from_str(&text).unwrap())
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|&x| x.to_owned()).collect()
}

fn path(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

fn td(rel: &str) -> String {
    path(&testdata(rel))
}

/// `check` of a batch against a baseline, with extra flags.
fn check(baseline: &str, batch: &str, extra: &[&str]) -> Vec<String> {
    let mut v = s(&["check", "--baseline", baseline, batch]);
    v.extend(s(extra));
    v
}

/// `check --ledger` of a 250-row batch after two accepted ones, all with every `flip_every`-th
/// label flipped (none for 0); the ledger is made in `dir`.
fn ledger_run(dir: &Path, flip_every: usize) -> Vec<String> {
    let sub = dir.join(format!("ledger-{flip_every}"));
    std::fs::create_dir_all(&sub).unwrap();
    let files = crate::ledger::batches(&sub, 3, flip_every);
    let ledger = path(&sub.join("ledger"));
    for f in &files[..2] {
        let out = run(&check(&path(baseline()), &path(f), &["--ledger", &ledger])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>());
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    check(&path(baseline()), &path(&files[2]), &["--ledger", &ledger])
}

/// `check --after-quarantine` of a poisoned fixture's remaining rows, made in `dir`.
fn after(dir: &Path, name: &str, child: crate::remedy::Child) -> Vec<String> {
    let sub = dir.join(format!("{name}-{}", child as u8));
    std::fs::create_dir_all(&sub).unwrap();
    let (parent, batch) = crate::remedy::remediated(&sub, name, child);
    check(&path(baseline()), &batch, &["--after-quarantine", &parent])
}

/// The compare flags of a scenario of `testdata/compare/truth.json`, paths made absolute.
fn compare(name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(testdata("compare/truth.json")).unwrap();
    let truth: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut v = s(&["compare", &td(&format!("compare/{name}.parquet"))]);
    v.extend(
        truth["scenarios"][name]["flags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap().to_owned()),
    );
    v
}

/// `compare` of the serving model against `after` through the live test endpoints
/// (`scripts/oip/`, started by `scripts/test.sh`).
fn endpoints(after: &str) -> Vec<String> {
    let url = std::env::var("POISONGATE_TEST_OIP_URL")
        .expect("POISONGATE_TEST_OIP_URL is not set: run the tests with `bash scripts/test.sh`");
    let dir = std::env::var("POISONGATE_TEST_OIP_DIR").expect("POISONGATE_TEST_OIP_DIR");
    s(&[
        "compare",
        "--features",
        &format!("{dir}/eval.parquet"),
        "--key",
        "application_id",
        "--label",
        "defaulted",
        "--before-endpoint",
        &format!("{url}/v2/models/serving"),
        "--after-endpoint",
        &format!("{url}/v2/models/{after}"),
        "--token-file",
        &format!("{dir}/valid.jwt"),
    ])
}

/// The clean CSV batch with one column more.
fn with_extra_column(dir: &Path) -> String {
    let text = std::fs::read_to_string(testdata("clean/batch.csv")).unwrap();
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        out.push_str(line);
        out.push_str(if i == 0 { ",note" } else { ",x" });
        out.push('\n');
    }
    let p = dir.join("extra.csv");
    std::fs::write(&p, out).unwrap();
    path(&p)
}

#[test]
fn every_registry_code_fires_on_its_fixture_and_stays_quiet_on_clean_data() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = path(baseline());
    let clean = td("clean/batch.parquet");
    let clean_csv = td("clean/batch.csv");
    // A baseline that pins model outputs: the clean retrain's scored evaluation rows.
    let outputs = path(&d.join("outputs.json"));
    let out = run(&[
        "profile",
        &td("compare/clean.parquet"),
        "-o",
        &outputs,
        "--prediction",
        "pred_after",
        "--score",
        "score_after",
        "--ignore",
        "pred_before",
        "--ignore",
        "score_before",
        "--label",
        "defaulted",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let policy = |name: &str, text: &str| {
        let p = d.join(name);
        std::fs::write(&p, text).unwrap();
        path(&p)
    };
    let domain = policy(
        "domain.toml",
        "[domains.region]\ncategories = [\"north\", \"south\", \"east\", \"west\", \"central\", \"islands\"]\n",
    );
    let waiver = policy(
        "waiver.toml",
        "[[exceptions]]\ncode = \"drift-numeric\"\ncolumn = \"age\"\nreason = \"a known seasonal shift\"\n",
    );
    let extra = with_extra_column(d);
    let base_digest = std::fs::read_to_string(format!("{base}.sha256")).unwrap();
    let base_digest = base_digest.split_whitespace().next().unwrap().to_owned();
    let strict = policy("strict.toml", "[gate]\nprofile = \"strict\"\n");
    let out = run(&["policy", "--dump", "--policy", &strict]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let strict_digest = {
        let (_, report, _) = check_json_with(&base, &[&clean], &["--policy", &strict], run);
        report["policy"]["sha256"].as_str().unwrap().to_owned()
    };
    let poison = |f: &str| check(&base, &td(&format!("poison/{f}.parquet")), &[]);
    let drifted = check(&base, &td("drifted/batch.parquet"), &[]);
    let clean_check = check(&base, &clean, &[]);
    // The first 40 rows of the clean batch: too few for the tests to see 2 % of outliers.
    let small = {
        let text = std::fs::read_to_string(&clean_csv).unwrap();
        let head: Vec<&str> = text.lines().take(41).collect();
        let p = d.join("small.csv");
        std::fs::write(&p, head.join("\n") + "\n").unwrap();
        path(&p)
    };
    // Data whose columns go together (the bundled data's barely do): see stitched.rs.
    let (st_base, st_clean, st_attacked, _) = crate::stitched::fixture(d);
    // The imports pin of the trusted model, for integrity-model-imports.
    let model_pin = path(&d.join("imports.json"));
    let out = run(&[
        "verify",
        "--scan",
        "--pin-imports",
        &model_pin,
        &td("models/pin/trusted.joblib"),
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // Per code: (a command that must report it, a clean command that must not).
    let cases: Vec<(&str, Vec<String>, Vec<String>)> = vec![
        (
            "schema-missing-column",
            check(&base, &td("drifted/missing_column.parquet"), &[]),
            clean_check.clone(),
        ),
        (
            "schema-extra-column",
            check(&base, &extra, &[]),
            check(&base, &clean_csv, &[]),
        ),
        (
            "schema-dtype-changed",
            check(&base, &td("drifted/dtype_changed.parquet"), &[]),
            clean_check.clone(),
        ),
        ("schema-null-rate", drifted.clone(), clean_check.clone()),
        (
            "schema-out-of-range",
            poison("outliers"),
            clean_check.clone(),
        ),
        (
            "schema-out-of-domain",
            check(&base, &td("drifted/batch.parquet"), &["--policy", &domain]),
            check(&base, &clean, &["--policy", &domain]),
        ),
        (
            "schema-unseen-category",
            drifted.clone(),
            clean_check.clone(),
        ),
        ("drift-numeric", drifted.clone(), clean_check.clone()),
        ("drift-categorical", drifted.clone(), clean_check.clone()),
        ("drift-label-prior", drifted.clone(), clean_check.clone()),
        (
            "drift-class-conditional",
            poison("class_income"),
            clean_check.clone(),
        ),
        (
            "poison-label-inconsistency",
            poison("flip10"),
            clean_check.clone(),
        ),
        (
            "poison-segment-label-shift",
            poison("segment_north"),
            clean_check.clone(),
        ),
        (
            "poison-trigger",
            poison("trigger_channel"),
            clean_check.clone(),
        ),
        (
            "poison-point-mass",
            poison("trigger_utilization"),
            clean_check.clone(),
        ),
        (
            "poison-anomalous-rows",
            poison("outliers"),
            clean_check.clone(),
        ),
        (
            "poison-stitched-rows",
            check(&path(&st_base), &path(&st_attacked), &[]),
            check(&path(&st_base), &path(&st_clean), &[]),
        ),
        (
            "poison-duplicate-flood",
            poison("duplicates"),
            clean_check.clone(),
        ),
        (
            "poison-label-conflict",
            poison("relabelled_trusted"),
            clean_check.clone(),
        ),
        (
            "output-prediction",
            check(&outputs, &td("compare/backdoor.parquet"), &[]),
            check(&outputs, &td("compare/clean2.parquet"), &[]),
        ),
        (
            "output-score",
            check(&outputs, &td("compare/backdoor.parquet"), &[]),
            check(&outputs, &td("compare/clean2.parquet"), &[]),
        ),
        ("compare-flip-rate", compare("backdoor"), compare("clean")),
        (
            "compare-targeted-flips",
            compare("backdoor"),
            compare("clean"),
        ),
        ("compare-accuracy", compare("backdoor"), compare("clean")),
        ("compare-loss", compare("flips20"), compare("clean")),
        (
            "compare-class-recall",
            compare("backdoor"),
            compare("clean"),
        ),
        ("compare-segment", compare("backdoor"), compare("clean")),
        ("compare-score-shift", compare("flips20"), compare("clean")),
        ("compare-calibration", compare("flips20"), compare("clean")),
        (
            "compare-trigger-response",
            endpoints("backdoor"),
            endpoints("clean"),
        ),
        (
            "integrity-sse-kms-missing",
            check(&base, &clean, &["--require-sse-kms"]),
            clean_check.clone(),
        ),
        (
            "integrity-baseline-unpinned",
            clean_check.clone(),
            check(&base, &clean, &["--expect-baseline-sha256", &base_digest]),
        ),
        (
            "integrity-policy-unpinned",
            check(&base, &clean, &["--policy", &strict]),
            check(
                &base,
                &clean,
                &[
                    "--policy",
                    &strict,
                    "--expect-policy-sha256",
                    &strict_digest,
                ],
            ),
        ),
        (
            "integrity-ledger-window",
            ledger_run(d, 20),
            ledger_run(d, 0),
        ),
        (
            "integrity-quarantine-lineage",
            after(d, "outliers", crate::remedy::Child::OneMore),
            after(d, "outliers", crate::remedy::Child::Dropped),
        ),
        (
            "integrity-quarantine-residual",
            after(d, "flip10", crate::remedy::Child::Dropped),
            after(d, "outliers", crate::remedy::Child::Dropped),
        ),
        (
            "integrity-model-unsafe",
            s(&["verify", "--scan", &td("models/hostile/os_system_p2.pkl")]),
            s(&[
                "verify",
                "--scan",
                &td("models/benign/sk_logistic_regression.joblib"),
            ]),
        ),
        (
            "integrity-model-imports",
            s(&[
                "verify",
                "--scan",
                "--imports",
                &model_pin,
                &td("models/pin/swapped.joblib"),
            ]),
            s(&[
                "verify",
                "--scan",
                "--imports",
                &model_pin,
                &td("models/pin/trusted.joblib"),
            ]),
        ),
        (
            "evidence-insufficient",
            check(&base, &small, &[]),
            clean_check.clone(),
        ),
        (
            "policy-unused-exception",
            check(&base, &clean, &["--policy", &waiver]),
            check(&base, &td("mild/batch.parquet"), &["--policy", &waiver]),
        ),
    ];
    let registry: BTreeSet<&str> = poisongate::codes::all().iter().map(|c| c.code).collect();
    let covered: BTreeSet<&str> = cases.iter().map(|c| c.0).collect();
    assert_eq!(
        covered, registry,
        "every registry code needs a known-answer fixture here"
    );
    let mut failures = Vec::new();
    for (code, attacked, quiet) in &cases {
        let fired = found(attacked);
        if !fired.contains(*code) {
            failures.push(format!("{code} did not fire on {attacked:?}: {fired:?}"));
        }
        let calm = found(quiet);
        if calm.contains(*code) {
            failures.push(format!("{code} fired on the clean {quiet:?}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
