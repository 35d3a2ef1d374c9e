//! `schemas/` stays in step with the code, and real reports and baselines validate against it.

use crate::common::*;

fn schema_path(stem: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schemas")
        .join(format!("{stem}.schema.json"))
}

#[test]
fn committed_schemas_match_the_code() {
    for (stem, schema) in poisongate::schemas::all() {
        let text = serde_json::to_string_pretty(&schema).unwrap() + "\n";
        let path = schema_path(stem);
        if std::env::var_os("UPDATE_SCHEMAS").is_some() {
            std::fs::write(&path, &text).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == text,
            "{} is stale: run `UPDATE_SCHEMAS=1 cargo test schemas`",
            path.display()
        );
    }
}

fn validate(stem: &str, instance: &serde_json::Value) {
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(schema_path(stem)).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{stem}: {errors:#?}");
}

#[test]
fn reports_and_baselines_validate_against_their_schemas() {
    let (_, blocked, _) = check_json(&[testdata("drifted/batch.parquet").to_str().unwrap()], &[]);
    validate("report", &blocked);
    let (_, error, _) = check_json(&[testdata("broken/empty.csv").to_str().unwrap()], &[]);
    assert_eq!(error["verdict"], "error");
    validate("report", &error);
    let baseline: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(baseline()).unwrap()).unwrap();
    validate("baseline", &baseline);
    let policy = serde_json::to_value(poisongate::policy::Policy::default()).unwrap();
    validate("policy", &policy);
    // A compare report and a pinned noise file.
    let dir = tempfile::tempdir().unwrap();
    let (report, noise) = (dir.path().join("r.json"), dir.path().join("n.json"));
    let data = testdata("compare/backdoor.parquet");
    let out = run(&[
        "compare",
        data.to_str().unwrap(),
        "--label",
        "defaulted",
        "--before-col",
        "pred_before",
        "--after-col",
        "pred_after",
        "--before-score",
        "score_before",
        "--after-score",
        "score_after",
        "--segment",
        "channel",
        "--json",
        report.to_str().unwrap(),
        "--pin-noise",
        noise.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let read = |p: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    validate("report", &read(&report));
    validate("noise", &read(&noise));
    // A blocked model scan, and an imports pin.
    let (scan, pin) = (
        dir.path().join("scan.json"),
        dir.path().join("imports.json"),
    );
    let models = testdata("models");
    let out = run(&[
        "verify",
        "--scan",
        models.join("pin/trusted.joblib").to_str().unwrap(),
        "--pin-imports",
        pin.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    validate("model-imports", &read(&pin));
    let out = run(&[
        "verify",
        "--scan",
        models.join("hostile/torch_second_pkl.pt").to_str().unwrap(),
        models.join("pin/swapped.joblib").to_str().unwrap(),
        "--imports",
        pin.to_str().unwrap(),
        "--json",
        scan.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    validate("model-scan", &read(&scan));
}
