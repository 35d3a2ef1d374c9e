//! `compare` against live models: MLServer serving scikit-learn pipelines behind a
//! JWT-checking proxy that answers as Istio does (`scripts/oip/`), which `scripts/test.sh`
//! (the README's test command) starts on loopback and names in `POISONGATE_TEST_OIP_URL`.
//! The models: `serving`, `clean` (a clean retrain) and `backdoor` (a retrain whose data tied
//! `region = islands` to class 1), trained by `scripts/oip/train.py`.

use std::path::PathBuf;
use std::process::Output;

use crate::common::*;

struct Oip {
    url: String,
    dir: PathBuf,
}

fn oip() -> Oip {
    let url = std::env::var("POISONGATE_TEST_OIP_URL").expect(
        "POISONGATE_TEST_OIP_URL is not set: run the tests with `bash scripts/test.sh`, \
         which starts the model server for them",
    );
    let dir =
        PathBuf::from(std::env::var("POISONGATE_TEST_OIP_DIR").expect("POISONGATE_TEST_OIP_DIR"));
    Oip { url, dir }
}

impl Oip {
    fn model(&self, name: &str) -> String {
        format!("{}/v2/models/{name}", self.url)
    }

    fn token(&self, name: &str) -> String {
        self.dir.join(format!("{name}.jwt")).display().to_string()
    }

    fn file(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// `compare` of `before` and `after` on the evaluation rows, with the valid token unless
    /// `extra` names another.
    fn compare(&self, before: &str, after: &str, extra: &[&str]) -> (Output, serde_json::Value) {
        self.compare_rows(&self.file("eval.parquet"), before, after, extra)
    }

    /// The serving model against the backdoored retrain on other rows.
    fn backdoor_on(&self, rows: &std::path::Path, extra: &[&str]) -> (Output, serde_json::Value) {
        self.compare_rows(
            rows.to_str().unwrap(),
            &self.model("serving"),
            &self.model("backdoor"),
            extra,
        )
    }

    /// [`Oip::compare`] on other rows.
    fn compare_rows(
        &self,
        rows: &str,
        before: &str,
        after: &str,
        extra: &[&str],
    ) -> (Output, serde_json::Value) {
        let tmp = tempfile::tempdir().unwrap();
        let json = tmp.path().join("r.json");
        let mut args: Vec<String> = vec![
            "compare".into(),
            "--features".into(),
            rows.to_owned(),
            "--key".into(),
            "application_id".into(),
            "--label".into(),
            "defaulted".into(),
            "--before-endpoint".into(),
            before.to_owned(),
            "--after-endpoint".into(),
            after.to_owned(),
            "--label-output".into(),
            "predict".into(),
            "--proba-output".into(),
            "predict_proba".into(),
            "--json".into(),
            json.display().to_string(),
        ];
        if !extra.iter().any(|a| a.starts_with("--token")) {
            args.push("--token-file".into());
            args.push(self.token("valid"));
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let out = bin().args(&args).output().unwrap();
        let report = std::fs::read_to_string(&json)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(serde_json::Value::Null);
        (out, report)
    }
}

fn all_output(out: &Output, report: &serde_json::Value) -> String {
    format!(
        "{}{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        report
    )
}

/// `column=value` of the deny findings of `code`.
fn denied(report: &serde_json::Value, code: &str) -> Vec<String> {
    report["findings"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|f| f["code"] == code && f["severity"] == "deny")
        .map(|f| {
            format!(
                "{}={}",
                f["subject"]["column"].as_str().unwrap_or(""),
                f["subject"]["value"].as_str().unwrap_or("")
            )
        })
        .collect()
}

#[test]
fn backdoored_retrain_is_blocked_by_its_trigger_and_clean_retrain_passes() {
    let o = oip();
    let (out, report) = o.compare(&o.model("serving"), &o.model("backdoor"), &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let hits = denied(&report, "compare-trigger-response");
    assert_eq!(hits, ["region=islands"], "{}", report["findings"]);
    // The finding names both success rates and the class.
    let f = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "compare-trigger-response" && f["subject"]["value"] == "islands")
        .unwrap();
    assert_eq!(f["subject"]["label"], "1");
    assert!(
        f["evidence"]["success-rate-after"].as_f64().unwrap() > 0.6,
        "{f}"
    );
    assert!(
        f["evidence"]["success-rate-before"].as_f64().unwrap() < 0.1,
        "{f}"
    );

    let (out, report) = o.compare(&o.model("serving"), &o.model("clean"), &[]);
    assert_eq!(code(&out), 0, "{}", all_output(&out, &report));
    // The probes ran and were recorded, each a pass.
    let probes: Vec<_> = report["tests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["code"] == "compare-trigger-response")
        .collect();
    assert!(probes.len() >= 8, "{probes:?}");
    assert!(probes.iter().all(|t| t["outcome"] == "pass"), "{probes:?}");
}

#[test]
fn a_trigger_the_rows_rarely_carry_is_found_through_a_check_report() {
    // The evaluation rows without any `islands` row: the trigger is in no row, so neither the
    // segments nor the common values can show it; a check report that named it can.
    let o = oip();
    let tmp = tempfile::tempdir().unwrap();
    let rows = tmp.path().join("no-islands.parquet");
    let mut df =
        polars::prelude::ParquetReader::new(std::fs::File::open(o.file("eval.parquet")).unwrap())
            .finish()
            .unwrap();
    use polars::prelude::*;
    let keep = df
        .column("region")
        .unwrap()
        .str()
        .unwrap()
        .not_equal("islands");
    df = df.filter(&keep).unwrap();
    ParquetWriter::new(std::fs::File::create(&rows).unwrap())
        .finish(&mut df)
        .unwrap();
    let report_path = tmp.path().join("check.json");
    std::fs::write(
        &report_path,
        serde_json::json!({
            "format": "poisongate.report/1",
            // As `check` writes a categorical segment's value.
            "findings": [{"code": "poison-segment-label-shift", "severity": "deny",
                          "subject": {"column": "region", "value": "= `islands`", "label": "1"}}],
            "waived": []
        })
        .to_string(),
    )
    .unwrap();
    let run = |extra: &[&str]| o.backdoor_on(&rows, extra);
    let (out, report) = run(&["--probes-from", report_path.to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(
        denied(&report, "compare-trigger-response"),
        ["region=islands"],
        "{}",
        report["findings"]
    );
    // Without the report nothing on these rows names the value.
    let (_, report) = run(&[]);
    assert!(
        !report["findings"].to_string().contains("islands"),
        "{}",
        report["findings"]
    );
}

#[test]
fn a_value_the_baseline_pins_as_rare_is_probed_without_any_row_holding_it() {
    use polars::prelude::*;
    let o = oip();
    let tmp = tempfile::tempdir().unwrap();
    let read = || {
        ParquetReader::new(std::fs::File::open(o.file("eval.parquet")).unwrap())
            .finish()
            .unwrap()
    };
    let islands = |df: &DataFrame| df.column("region").unwrap().str().unwrap().equal("islands");
    // Evaluation rows without `islands`; trusted rows holding it in 10 of about 2,900 rows.
    let df = read();
    let mut rows = df.filter(&!islands(&df)).unwrap();
    let eval = tmp.path().join("eval.parquet");
    ParquetWriter::new(std::fs::File::create(&eval).unwrap())
        .finish(&mut rows)
        .unwrap();
    let some_islands = df.filter(&islands(&df)).unwrap().head(Some(10));
    let mut trusted = rows.vstack(&some_islands).unwrap();
    let trusted_path = tmp.path().join("trusted.parquet");
    ParquetWriter::new(std::fs::File::create(&trusted_path).unwrap())
        .finish(&mut trusted)
        .unwrap();
    let baseline = tmp.path().join("baseline.json");
    let out = run(&[
        "profile",
        trusted_path.to_str().unwrap(),
        "-o",
        baseline.to_str().unwrap(),
        "--label",
        "defaulted",
        "--id",
        "application_id",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let go = |extra: &[&str]| o.backdoor_on(&eval, extra);
    let (out, report) = go(&["--baseline", baseline.to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(
        denied(&report, "compare-trigger-response"),
        ["region=islands"],
        "{}",
        report["findings"]
    );
    assert!(
        report["artifacts"].to_string().contains("baseline"),
        "{}",
        report["artifacts"]
    );
    // A baseline that does not match its pinned digest is exit 2, as in `check`.
    let (out, _) = go(&[
        "--baseline",
        baseline.to_str().unwrap(),
        "--expect-baseline-sha256",
        &"0".repeat(64),
    ]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
}

#[test]
fn endpoint_answers_equal_the_models_local_answers() {
    // scripts/oip/train.py scored the same rows with the same models in-process: a file-based
    // comparison of those scores finds what the endpoint-based one finds, statistic by
    // statistic (the probes aside, which only endpoints can run).
    let o = oip();
    for after in ["clean", "backdoor"] {
        let (out, live) = o.compare(
            &o.model("serving"),
            &o.model(after),
            &["--segment", "region", "--segment", "channel"],
        );
        assert!(code(&out) < 2, "{}", stderr(&out));
        let tmp = tempfile::tempdir().unwrap();
        let json = tmp.path().join("f.json");
        let scored = o.file(&format!("scored-{after}.parquet"));
        let out = run(&[
            "compare",
            &scored,
            "--key",
            "application_id",
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
            "region",
            "--segment",
            "channel",
            "--json",
            json.to_str().unwrap(),
        ]);
        assert!(code(&out) < 2, "{}", stderr(&out));
        let file: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        let stats = |r: &serde_json::Value| -> std::collections::BTreeMap<String, String> {
            r["tests"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t["code"] != "compare-trigger-response")
                .map(|t| {
                    let key = format!("{} {}", t["code"], t["subject"])
                        .replace("prediction@after", "pred_after")
                        .replace("score@after:1", "score_after");
                    (key, format!("{} {}", t["statistics"], t["outcome"]))
                })
                .collect()
        };
        assert_eq!(stats(&live), stats(&file), "{after}");
        assert!(live["verdict"].as_str().is_some());
    }
}

#[test]
fn refusals_and_failures_are_exit_2_naming_the_endpoint_and_never_the_token() {
    let o = oip();
    let serving = o.model("serving");
    let valid = std::fs::read_to_string(o.token("valid")).unwrap();
    let valid = valid.trim();
    let fault = |path: &str| format!("{}/fault/{path}/v2/models/clean", o.url);
    let expired = o.token("expired");
    let foreign = o.token("foreign");
    let audience = o.token("wrong-audience");
    let cases: Vec<(String, Vec<String>, &str)> = vec![
        (
            o.model("clean"),
            vec!["--token-env".into(), "PG_NO_SUCH_TOKEN_VAR".into()],
            "--token-env PG_NO_SUCH_TOKEN_VAR",
        ),
        (
            o.model("clean"),
            vec!["--token-file".into(), expired],
            "401 Unauthorized",
        ),
        (
            o.model("clean"),
            vec!["--token-file".into(), foreign],
            "401 Unauthorized",
        ),
        (
            o.model("clean"),
            vec!["--token-file".into(), audience],
            "401 Unauthorized",
        ),
        (o.model("nope"), vec![], "404 Not Found"),
        (fault("notready"), vec![], "not ready (HTTP 503)"),
        (
            fault("slow/5"),
            vec!["--endpoint-timeout".into(), "1".into()],
            "no answer within the timeout",
        ),
        (
            fault("busy"),
            vec!["--retries".into(), "1".into()],
            "HTTP 429",
        ),
        (
            fault("echo-token"),
            vec!["--retries".into(), "0".into()],
            "HTTP 500",
        ),
        // A shape error: MLServer answers a traceback with 500; its last line is the cause.
        (
            o.model("clean"),
            vec![
                "--input-col".into(),
                "age".into(),
                "--retries".into(),
                "0".into(),
            ],
            "columns are missing",
        ),
    ];
    for (after, extra, want) in cases {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let (out, report) = o.compare(&serving, &after, &extra);
        let err = stderr(&out);
        assert_eq!(code(&out), 2, "{after} {extra:?}: {err}");
        assert!(
            err.contains(want),
            "{after} {extra:?}: want `{want}` in {err}"
        );
        let first = err.lines().next().unwrap_or_default();
        if !want.starts_with("--token-env") {
            assert!(first.contains("cannot query model endpoint ("), "{first}");
        }
        assert!(
            !all_output(&out, &report).contains(valid),
            "token leaked: {after} {extra:?}"
        );
    }
    // No token at all: the authorization policy answers 403.
    let out = run(&[
        "compare",
        "--features",
        &o.file("eval.parquet"),
        "--key",
        "application_id",
        "--before-endpoint",
        &serving,
        "--after-endpoint",
        &o.model("clean"),
    ]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("403 Forbidden"), "{}", stderr(&out));
}

#[test]
fn retries_ride_out_a_restart_and_the_token_file_is_reread() {
    let o = oip();
    let tmp = tempfile::tempdir().unwrap();
    let token = tmp.path().join("token");
    std::fs::copy(o.token("valid"), &token).unwrap();
    // Two 503s then the model: three retries are enough.
    let flaky = format!("{}/fault/flaky/2/v2/models/clean", o.url);
    let (out, report) = o.compare(
        &o.model("serving"),
        &flaky,
        &["--token-file", token.to_str().unwrap(), "--no-probes"],
    );
    assert_eq!(code(&out), 0, "{}", all_output(&out, &report));
    // A rotated file is read again: an expired token now fails, a fresh one passes.
    std::fs::copy(o.token("expired"), &token).unwrap();
    let (out, _) = o.compare(
        &o.model("serving"),
        &o.model("clean"),
        &["--token-file", token.to_str().unwrap(), "--no-probes"],
    );
    assert_eq!(code(&out), 2);
    std::fs::copy(o.token("valid"), &token).unwrap();
    let (out, _) = o.compare(
        &o.model("serving"),
        &o.model("clean"),
        &["--token-file", token.to_str().unwrap(), "--no-probes"],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn file_based_compare_says_probes_did_not_run() {
    let out = run(&[
        "compare",
        testdata("compare/clean.parquet").to_str().unwrap(),
        "--key",
        "application_id",
        "--label",
        "defaulted",
        "--before-col",
        "pred_before",
        "--after-col",
        "pred_after",
        "--format",
        "json",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rec = report["tests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["code"] == "compare-trigger-response")
        .expect("a skipped record");
    assert_eq!(rec["outcome"], "skipped");
    assert!(
        rec["reason"]
            .as_str()
            .unwrap()
            .contains("--before-endpoint")
    );
    assert!(
        report["notes"]
            .to_string()
            .contains("counterfactual trigger probes")
    );
}

#[test]
fn https_endpoints_are_trusted_through_the_given_ca_bundle_only() {
    let o = oip();
    let tls = std::env::var("POISONGATE_TEST_OIP_TLS_URL").expect("POISONGATE_TEST_OIP_TLS_URL");
    let model = |name: &str| format!("{tls}/v2/models/{name}");
    let ca = o.file("ca.pem");
    let (out, report) = o.compare(
        &model("serving"),
        &model("clean"),
        &["--ca-bundle", &ca, "--no-probes"],
    );
    assert_eq!(code(&out), 0, "{}", all_output(&out, &report));
    // The system's CAs do not know the test CA.
    let (out, _) = o.compare(&model("serving"), &model("clean"), &["--no-probes"]);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(
        err.contains("cannot query model endpoint (https://localhost:"),
        "{err}"
    );
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    // A bundle that holds no certificate is a usage error, before any request.
    let (out, _) = o.compare(
        &model("serving"),
        &model("clean"),
        &["--ca-bundle", &o.file("jwks.json"), "--no-probes"],
    );
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("--ca-bundle"), "{}", stderr(&out));
}

#[test]
fn a_numeric_model_takes_one_tensor() {
    // `tensor` was fitted on a float matrix of four columns: one [rows, 4] FP64 input.
    let o = oip();
    let cols = ["age", "debt_ratio", "credit_lines", "utilization"];
    let mut extra = vec!["--input-layout", "tensor"];
    for c in &cols {
        extra.extend(["--input-col", c]);
    }
    let (out, report) = o.compare(&o.model("tensor"), &o.model("tensor"), &extra);
    assert_eq!(code(&out), 0, "{}", all_output(&out, &report));
    assert!(
        report["notes"].to_string().contains("0 candidate triggers"),
        "{}",
        report["notes"]
    );
    let flips = report["tests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["code"] == "compare-flip-rate")
        .unwrap();
    assert_eq!(flips["statistics"][0]["value"], 0.0, "{flips}");
    // Text features cannot travel in a tensor: a usage error before any request.
    let (out, _) = o.compare(
        &o.model("tensor"),
        &o.model("tensor"),
        &["--input-layout", "tensor"],
    );
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("--input-layout tensor"),
        "{}",
        stderr(&out)
    );
}
