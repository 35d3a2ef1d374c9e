//! `poisongate compare` on real before/after predictions with known answers
//! (scripts/make_compare_testdata.py, testdata/compare/truth.json): clean retrains pass,
//! poisoned retrains block and name what they should, bad inputs exit 2.

use crate::common::*;

fn truth() -> serde_json::Value {
    let text = std::fs::read_to_string(testdata("compare/truth.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The flags of a scenario, with paths made absolute.
fn flags(name: &str) -> Vec<String> {
    truth()["scenarios"][name]["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let s = v.as_str().unwrap();
            match s.strip_prefix("testdata/") {
                Some(rel) => testdata(rel).to_str().unwrap().to_owned(),
                None => s.to_owned(),
            }
        })
        .collect()
}

/// Runs `compare` on a file with extra flags; returns (exit, JSON report, output).
fn compare(
    file: &str,
    flags: &[String],
    extra: &[&str],
) -> (i32, serde_json::Value, std::process::Output) {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let data = if std::path::Path::new(file).is_absolute() {
        std::path::PathBuf::from(file)
    } else {
        testdata(&format!("compare/{file}"))
    };
    let mut args: Vec<&str> = vec!["compare", data.to_str().unwrap()];
    args.extend(flags.iter().map(String::as_str));
    args.extend_from_slice(&["--json", report.to_str().unwrap()]);
    args.extend_from_slice(extra);
    let out = run(&args);
    let json = std::fs::read_to_string(&report).map_or(serde_json::Value::Null, |t| {
        serde_json::from_str(&t).unwrap()
    });
    (code(&out), json, out)
}

fn scenario(name: &str, extra: &[&str]) -> (i32, serde_json::Value, std::process::Output) {
    compare(&format!("{name}.parquet"), &flags(name), extra)
}

/// Deny findings as (code, subject column, subject value, subject label).
fn denies(report: &serde_json::Value) -> Vec<(String, String, String, String)> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == "deny")
        .map(|f| {
            let s = |k: &str| f["subject"][k].as_str().unwrap_or("").to_owned();
            (
                f["code"].as_str().unwrap().to_owned(),
                s("column"),
                s("value"),
                s("label"),
            )
        })
        .collect()
}

#[test]
fn every_scenario_gets_its_expected_verdict() {
    let truth = truth();
    for (name, s) in truth["scenarios"].as_object().unwrap() {
        let (code, report, out) = scenario(name, &[]);
        let want = match s["expected"].as_str().unwrap() {
            "pass" => 0,
            "block" => 1,
            _ => 2,
        };
        assert_eq!(code, want, "{name}: {}\n{report:#}", stderr(&out));
        assert_eq!(report["exit_code"], want, "{name}");
        if want == 2 {
            let err = stderr(&out);
            assert_eq!(
                err.lines().filter(|l| l.starts_with("error: ")).count(),
                1,
                "{err}"
            );
            assert!(err.contains(&format!("compare/{name}.parquet")), "{err}");
        } else {
            assert_eq!(report["command"], "compare");
            assert_eq!(
                report["rows"],
                3000u64.min(report["rows"].as_u64().unwrap())
            );
        }
    }
}

#[test]
fn a_backdoor_is_named_by_segment_value_and_target_class() {
    let (code, report, _) = scenario("backdoor", &[]);
    assert_eq!(code, 1);
    let d = denies(&report);
    assert!(
        d.contains(&(
            "compare-segment".into(),
            "channel".into(),
            "partner".into(),
            "1".into()
        )),
        "{d:?}"
    );
    // No other channel is blamed for the shift: the rest moved, they did not.
    assert!(
        !d.iter()
            .any(|f| f.0 == "compare-segment" && f.1 == "channel" && f.2 != "partner"),
        "{d:?}"
    );
    let (code, report, _) = scenario("multiclass_backdoor", &[]);
    assert_eq!(code, 1);
    let d = denies(&report);
    assert!(
        d.contains(&(
            "compare-segment".into(),
            "vineyard".into(),
            "v2".into(),
            "barbera".into()
        )),
        "{d:?}"
    );
}

#[test]
fn label_attacks_block_with_their_signature() {
    // The targeted retrain predicts `1` on low-income rows, some of which are `1`: 143 of its
    // 216 flips into `1` are wrong. It blocks on accuracy, and the pull toward `1` is named
    // (false-share-shift 0.045: warn 0.02, deny 0.05).
    let (code, report, _) = scenario("targeted", &[]);
    assert_eq!(code, 1, "{report}");
    let d = denies(&report);
    assert!(d.iter().any(|f| f.0 == "compare-accuracy"), "{d:?}");
    let pulled = report["findings"].as_array().unwrap().iter().any(|f| {
        f["code"] == "compare-targeted-flips"
            && f["subject"]["label"] == "1"
            && f["severity"] == "warn"
    });
    assert!(pulled, "{report}");
    // Without the label, the predicted share alone (7.2 % -> 13.7 %) denies.
    let unlabelled: Vec<String> = {
        let f = flags("targeted");
        let at = f.iter().position(|a| a == "--label").unwrap();
        f[..at].iter().chain(&f[at + 2..]).cloned().collect()
    };
    let (code, report, _) = compare("targeted.parquet", &unlabelled, &[]);
    assert_eq!(code, 1, "{report}");
    assert!(
        denies(&report)
            .iter()
            .any(|f| f.0 == "compare-targeted-flips" && f.3 == "1"),
        "{report}"
    );
    let (_, report, _) = scenario("flips20", &[]);
    let d = denies(&report);
    assert!(d.iter().any(|f| f.0 == "compare-loss"), "{d:?}");
    assert!(d.iter().any(|f| f.0 == "compare-score-shift"), "{d:?}");
    let (_, report, _) = scenario("confident", &[]);
    let d = denies(&report);
    assert!(d.iter().any(|f| f.0 == "compare-accuracy"), "{d:?}");
    // Accuracy finding carries McNemar evidence consistent with the paired counts.
    let acc = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "compare-accuracy")
        .unwrap();
    let m = &truth()["scenarios"]["confident"]["metrics"];
    let ev = &acc["evidence"];
    assert!(
        (ev["accuracy-before"].as_f64().unwrap() - m["accuracy_before"].as_f64().unwrap()).abs()
            < 1e-6
    );
    assert!(
        (ev["accuracy-after"].as_f64().unwrap() - m["accuracy_after"].as_f64().unwrap()).abs()
            < 1e-6
    );
}

#[test]
fn clean_retrains_raise_no_deny_and_reports_are_deterministic() {
    for name in ["clean", "clean2", "multiclass_clean"] {
        let (code, a, _) = scenario(name, &[]);
        assert_eq!(code, 0, "{name}: {a:#}");
        assert!(denies(&a).is_empty());
        let (_, b, _) = scenario(name, &[]);
        assert_eq!(a, b, "{name}: reports differ between runs");
    }
}

#[test]
fn joined_features_give_the_same_findings_as_inline_ones() {
    let mut inline = flags("clean");
    inline.extend([
        "--segment".into(),
        "age".into(),
        "--segment".into(),
        "income".into(),
    ]);
    let (c1, a, _) = compare("clean.parquet", &inline, &[]);
    let feats = testdata("compare/features.parquet");
    let mut joined = flags("clean");
    joined.extend([
        "--segment".into(),
        "age".into(),
        "--segment".into(),
        "income".into(),
        "--join".into(),
        feats.to_str().unwrap().to_owned(),
    ]);
    let (c2, b, out) = compare("preds_only.parquet", &joined, &[]);
    assert_eq!((c1, c2), (0, 0), "{}", stderr(&out));
    assert_eq!(a["findings"], b["findings"]);
    assert_eq!(a["counts"], b["counts"]);
    assert_eq!(
        b["inputs"].as_array().unwrap().len(),
        2,
        "both files are recorded"
    );
}

#[test]
fn bad_inputs_exit_2_with_one_line_naming_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.csv");
    std::fs::write(&other, "application_id,region\n1,north\n2,south\n").unwrap();
    let base = flags("clean");
    let cases: Vec<(Vec<String>, &str, &str)> = vec![
        (
            [
                base.clone(),
                vec!["--join".into(), other.to_str().unwrap().into()],
            ]
            .concat(),
            "preds_only.parquet",
            "key mismatch",
        ),
        (
            [base.clone(), vec!["--segment".into(), "nope".into()]].concat(),
            "clean.parquet",
            "column `nope` (--segment) is missing",
        ),
        (
            base.iter()
                .map(|f| {
                    if f == "pred_after" {
                        "pred_later".to_owned()
                    } else {
                        f.clone()
                    }
                })
                .collect(),
            "clean.parquet",
            "column `pred_later` (--after-col) is missing",
        ),
        (
            [
                base.clone(),
                vec!["--after-score".into(), "score_before".into()],
            ]
            .concat(),
            "clean.parquet",
            "--before-score",
        ),
        (
            flags("multiclass_clean")
                .into_iter()
                .filter(|f| f != "p_before_barolo" && f != "p_after_barolo")
                .collect::<Vec<_>>()
                .windows(2)
                .filter(|w| !(w[0].ends_with("-score") && w[1].ends_with("-score")))
                .map(|w| w[0].clone())
                .chain(std::iter::once("vineyard".to_owned()))
                .collect(),
            "multiclass_clean.parquet",
            "columns for 3 classes",
        ),
        (
            [base.clone(), vec!["--positive-class".into(), "9".into()]].concat(),
            "clean.parquet",
            "--positive-class `9`",
        ),
    ];
    for (args, file, needle) in cases {
        let (code, report, out) = compare(file, &args, &[]);
        let err = stderr(&out);
        assert_eq!(code, 2, "{needle}: {err}");
        assert!(
            err.lines().next().unwrap().contains(needle),
            "{needle}: {err}"
        );
        assert_eq!(report["verdict"], "error", "{needle}");
    }
}

#[test]
fn pinned_noise_gates_later_retrains() {
    let dir = tempfile::tempdir().unwrap();
    let noise = dir.path().join("noise.json");
    let noise2 = dir.path().join("noise2.json");
    let (code, _, out) = scenario("clean2", &["--pin-noise", noise.to_str().unwrap()]);
    assert_eq!(code, 0, "{}", stderr(&out));
    scenario("clean2", &["--pin-noise", noise2.to_str().unwrap()]);
    let text = std::fs::read(&noise).unwrap();
    assert_eq!(
        text,
        std::fs::read(&noise2).unwrap(),
        "noise pins are deterministic"
    );
    let pinned: serde_json::Value = serde_json::from_slice(&text).unwrap();
    assert_eq!(pinned["format"], "poisongate.noise/1");
    assert!(
        pinned["entries"]["compare-flip-rate|pred_after|flip-rate"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    let n = noise.to_str().unwrap();
    let (code, report, _) = scenario("clean", &["--noise", n]);
    assert_eq!(code, 0, "{report:#}");
    // A retrain that moves exactly as much as the pinned one passes (each threshold is the
    // pinned value plus half the policy threshold), while the clean pin still blocks it.
    let own = dir.path().join("own.json");
    let (code, _, _) = scenario("backdoor", &["--pin-noise", own.to_str().unwrap()]);
    assert_eq!(code, 1);
    let (code, relaxed, _) = scenario("backdoor", &["--noise", own.to_str().unwrap()]);
    assert_eq!(code, 0, "{relaxed:#}");
    let (_, plain, _) = scenario("backdoor", &["--noise", n]);
    let partner = |r: &serde_json::Value| {
        r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["code"] == "compare-segment" && f["subject"]["value"] == "partner")
    };
    assert!(partner(&plain) && !partner(&relaxed));
    for name in ["targeted", "flips20", "confident"] {
        assert_eq!(scenario(name, &["--noise", n]).0, 1, "{name}");
    }
    // A pin for other classes is refused.
    let (code, _, out) = scenario("multiclass_clean", &["--noise", n]);
    assert_eq!(code, 2);
    assert!(
        stderr(&out).contains("pinned for classes"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn policy_levels_apply_to_compare_codes() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.toml");
    std::fs::write(
        &policy,
        "[checks.compare-segment]\nlevel = \"warn\"\n[checks.compare-accuracy]\nlevel = \"allow\"\n",
    )
    .unwrap();
    let (_, report, _) = scenario("backdoor", &["--policy", policy.to_str().unwrap()]);
    let d = denies(&report);
    assert!(
        !d.iter()
            .any(|f| f.0 == "compare-segment" || f.0 == "compare-accuracy"),
        "{d:?}"
    );
    assert!(
        report["waived"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["code"] == "compare-accuracy")
    );
}

#[test]
fn check_reports_output_drift_of_pinned_prediction_and_score_columns() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("outputs.json");
    let trusted = testdata("compare/clean.parquet");
    let out = run(&[
        "profile",
        trusted.to_str().unwrap(),
        "-o",
        base.to_str().unwrap(),
        "--label",
        "defaulted",
        "--id",
        "application_id",
        "--prediction",
        "pred_after",
        "--score",
        "score_after",
        "--ignore",
        "pred_before",
        "--ignore",
        "score_before",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let pinned: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&base).unwrap()).unwrap();
    let role = |name: &str| {
        pinned["columns"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["role"].clone())
            .unwrap()
    };
    assert_eq!(
        (role("pred_after"), role("score_after")),
        ("prediction".into(), "score".into())
    );
    let gate = |name: &str| {
        let dir = tempfile::tempdir().unwrap();
        let report = dir.path().join("r.json");
        let data = testdata(&format!("compare/{name}.parquet"));
        let out = run(&[
            "check",
            "--baseline",
            base.to_str().unwrap(),
            data.to_str().unwrap(),
            "--json",
            report.to_str().unwrap(),
        ]);
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
        (code(&out), json)
    };
    // Same rows scored by another clean retrain: the outputs barely move.
    let (c, clean) = gate("clean2");
    assert_eq!(c, 0, "{clean:#}");
    // Same rows scored by a model trained on 20% flipped labels: its scores moved.
    let (c, flipped) = gate("flips20");
    assert_eq!(c, 1);
    let d = denies(&flipped);
    assert!(
        d.iter()
            .any(|f| f.0 == "output-score" && f.1 == "score_after"),
        "{d:?}"
    );
    assert!(
        !d.iter().any(|f| f.0.starts_with("drift-")),
        "features did not move: {d:?}"
    );
    // A score must be numeric.
    let out = run(&[
        "profile",
        trusted.to_str().unwrap(),
        "-o",
        base.to_str().unwrap(),
        "--score",
        "region",
    ]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("--score column `region`"),
        "{}",
        stderr(&out)
    );
}

/// A copy of a fixture with `conf_before`/`conf_after`: each model's probability of its own
/// predicted class (the largest of its class probabilities), as a serving log keeps it.
fn with_confidence(file: &str, dir: &std::path::Path) -> std::path::PathBuf {
    use polars::prelude::*;
    let path = testdata(&format!("compare/{file}"));
    let mut df = ParquetReader::new(std::fs::File::open(&path).unwrap())
        .finish()
        .unwrap();
    for side in ["before", "after"] {
        let cols: Vec<String> = df
            .get_column_names()
            .iter()
            .map(|c| c.to_string())
            .filter(|c| c.starts_with(&format!("p_{side}_")) || *c == format!("score_{side}"))
            .collect();
        let n = df.height();
        let conf: Vec<f64> = (0..n)
            .map(|r| {
                let v: Vec<f64> = cols
                    .iter()
                    .map(|c| df.column(c).unwrap().f64().unwrap().get(r).unwrap())
                    .collect();
                if v.len() == 1 {
                    v[0].max(1.0 - v[0])
                } else {
                    v.iter().copied().fold(0.0, f64::max)
                }
            })
            .collect();
        df.with_column(Column::new(format!("conf_{side}").into(), conf))
            .unwrap();
    }
    let out = dir.join(file);
    ParquetWriter::new(std::fs::File::create(&out).unwrap())
        .finish(&mut df)
        .unwrap();
    out
}

/// A scenario's flags with confidence columns in place of the scores.
fn confidence_flags(name: &str, before: &str) -> Vec<String> {
    let mut args = without_scores(&flags(name));
    args.extend(
        [
            "--before-confidence",
            before,
            "--after-confidence",
            "conf_after",
        ]
        .map(String::from),
    );
    args
}

/// `flags` without the score columns.
fn without_scores(flags: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = flags.iter();
    while let Some(f) = it.next() {
        if f == "--before-score" || f == "--after-score" {
            it.next();
        } else {
            out.push(f.clone());
        }
    }
    out
}

#[test]
fn confidence_columns_stand_in_for_scores() {
    let dir = tempfile::tempdir().unwrap();
    let stats = |report: &serde_json::Value, code: &str| -> Vec<String> {
        report["tests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["code"] == code)
            .map(|t| format!("{} {}", t["statistics"], t["outcome"]))
            .collect()
    };
    // Three classes: the top-label calibration equals the one computed from every class's
    // probability, the score shift is on the confidence, loss is said to be untested; the
    // verdicts stay what they are with full scores.
    for (name, want) in [("multiclass_backdoor", 1), ("multiclass_clean", 0)] {
        let file = with_confidence(&format!("{name}.parquet"), dir.path());
        let args = confidence_flags(name, "conf_before");
        let (code_conf, conf, out) = compare(file.to_str().unwrap(), &args, &[]);
        assert_eq!(code_conf, want, "{name}: {}", stderr(&out));
        let (_, full, _) = scenario(name, &[]);
        assert_eq!(
            stats(&conf, "compare-calibration"),
            stats(&full, "compare-calibration"),
            "{name}"
        );
        assert_eq!(stats(&conf, "compare-score-shift").len(), 1, "{name}");
        assert!(stats(&conf, "compare-loss").is_empty());
        assert!(
            conf["notes"].to_string().contains("log-loss and Brier"),
            "{name}"
        );
    }
    // Two classes: the confidence is the full scores, so every statistic matches.
    for name in ["backdoor", "clean"] {
        let file = with_confidence(&format!("{name}.parquet"), dir.path());
        let args = confidence_flags(name, "conf_before");
        let (c1, conf, out) = compare(file.to_str().unwrap(), &args, &[]);
        let (c2, full, _) = scenario(name, &[]);
        assert_eq!(c1, c2, "{name}: {}", stderr(&out));
        for code in ["compare-loss", "compare-calibration"] {
            assert_eq!(stats(&conf, code), stats(&full, code), "{name} {code}");
        }
    }
    // A column that is not the predicted class's probability is refused.
    let file = with_confidence("multiclass_clean.parquet", dir.path());
    let args = confidence_flags("multiclass_clean", "p_before_barbera");
    let (code, _, out) = compare(file.to_str().unwrap(), &args, &[]);
    assert_eq!(code, 2);
    assert!(
        stderr(&out).contains("not the probability of the predicted class"),
        "{}",
        stderr(&out)
    );
}

/// A 3,000-row comparison in which only the rows of one segment (`seg = s_small` of `small`
/// rows) change: `newly_wrong` of them become wrong and `newly_right` become right; every row
/// of the other segments is right under both models.
fn one_segment_moves(
    dir: &std::path::Path,
    small: usize,
    newly_wrong: usize,
    newly_right: usize,
) -> String {
    use std::fmt::Write as _;
    let mut csv = String::from("id,seg,label,before,after\n");
    for i in 0..3000 {
        let (seg, before, after) = if i < small {
            let label = 1;
            let (b, a) = if i < newly_wrong {
                (label, 0)
            } else if i < newly_wrong + newly_right {
                (0, label)
            } else {
                (label, label)
            };
            ("s_small", b, a)
        } else {
            (["s_a", "s_b", "s_c"][i % 3], i % 2, i % 2)
        };
        let label = if i < small { 1 } else { i % 2 };
        writeln!(csv, "{i},{seg},{label},{before},{after}").unwrap();
    }
    let path = dir.join("one_segment.csv");
    std::fs::write(&path, csv).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn a_small_segments_thresholds_rise_with_its_rarity() {
    let dir = tempfile::tempdir().unwrap();
    let flags: Vec<String> = [
        "--key",
        "id",
        "--label",
        "label",
        "--before-col",
        "before",
        "--after-col",
        "after",
        "--segment",
        "seg",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let small_deny = |report: &serde_json::Value| {
        denies(report)
            .iter()
            .any(|f| f.0 == "compare-segment" && f.2 == "s_small")
    };
    // The shape of a clean retrain of a weak model: 58 rows, 16 newly wrong and 3 newly right
    // (accuracy down 22 points, the rest unmoved). Flat thresholds deny it; the allowance
    // (deny 0.10 + 2/sqrt(58) = 0.36) does not.
    let file = one_segment_moves(dir.path(), 58, 16, 3);
    let (code, report, _) = compare(&file, &flags, &[]);
    assert!(!small_deny(&report), "{report}");
    assert_eq!(code, 0, "{report}");
    // The report's test record carries the raised threshold.
    let deny = report["tests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| {
            t["code"] == "compare-segment"
                && t["subject"]["value"] == "s_small"
                && t["subject"]["label"].is_null()
        })
        .map(|t| t["statistics"][0]["deny"].as_f64().unwrap())
        .unwrap();
    assert!((deny - (0.1 + 2.0 / 58f64.sqrt())).abs() < 1e-9, "{deny}");
    let flat = dir.path().join("flat.toml");
    std::fs::write(&flat, "[checks.compare-segment]\nsmall-allowance = 0.0\n").unwrap();
    let (code, report, _) = compare(&file, &flags, &["--policy", flat.to_str().unwrap()]);
    assert_eq!(code, 1, "{report}");
    assert!(small_deny(&report), "{report}");
    // A backdoor on the same 58 rows (45 newly wrong: accuracy down 78 points) still denies.
    let file = one_segment_moves(dir.path(), 58, 45, 0);
    let (code, report, _) = compare(&file, &flags, &[]);
    assert_eq!(code, 1, "{report}");
    assert!(small_deny(&report), "{report}");
    let said = report["findings"].as_array().unwrap().iter().any(|f| {
        f["code"] == "compare-segment"
            && f["subject"]["label"].is_null()
            && f["message"]
                .as_str()
                .unwrap()
                .contains("thresholds raised for a segment of 58 rows (deny 0.36 rather than 0.10)")
    });
    assert!(said, "{report}");
}

/// The log-loss increase is scikit-learn's (`log_loss`, recorded in truth.json by
/// scripts/make_compare_testdata.py) wherever no true-class probability is below the floor
/// of 1/(rows + 2); the multi-class backdoor's retrain puts probabilities of 0 on some rows,
/// so its increase is lower than scikit-learn's and still denies.
#[test]
fn the_log_loss_is_scikit_learns_above_its_floor() {
    for name in [
        "clean",
        "clean2",
        "flips20",
        "confident",
        "targeted",
        "backdoor",
        "multiclass_clean",
        "multiclass_backdoor",
    ] {
        let m = &truth()["scenarios"][name]["metrics"];
        let sklearn =
            m["log_loss_after"].as_f64().unwrap() - m["log_loss_before"].as_f64().unwrap();
        let (_, report, _) = scenario(name, &[]);
        let ours = report["tests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["code"] == "compare-loss" && t["subject"]["value"] == "log-loss")
            .map(|t| t["statistics"][0]["value"].as_f64().unwrap())
            .unwrap();
        if name == "multiclass_backdoor" {
            assert!(
                ours < sklearn - 0.05 && ours > 0.05,
                "{name}: {ours} vs {sklearn}"
            );
        } else {
            // truth.json rounds each mean to 6 decimals.
            assert!((ours - sklearn).abs() < 2e-6, "{name}: {ours} vs {sklearn}");
        }
    }
}

/// A 3,000-row comparison in which the retrain predicts class 1 on the first `moved` rows
/// that the serving model predicted 0, every other row unchanged and right. Of the moved rows,
/// every second one is labelled 1 when `half_right` (a decision threshold that moved: as many
/// rows become right as wrong), none otherwise (a targeted flip).
fn threshold_moves(dir: &std::path::Path, moved: usize, half_right: bool) -> String {
    use std::fmt::Write as _;
    let mut csv = String::from("id,label,before,after\n");
    for i in 0..3000 {
        let (label, before, after) = if i < moved {
            (usize::from(half_right && i % 2 == 1), 0, 1)
        } else {
            let label = usize::from(i % 5 == 0);
            (label, label, label)
        };
        writeln!(csv, "{i},{label},{before},{after}").unwrap();
    }
    let path = dir.join(format!("threshold_{moved}_{half_right}.csv"));
    std::fs::write(&path, csv).unwrap();
    path.to_str().unwrap().to_owned()
}

/// The targeted-flips record of class 1: (statistic, value, outcome).
fn targeted_to_1(report: &serde_json::Value) -> (String, f64, String) {
    let t = report["tests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["code"] == "compare-targeted-flips" && t["subject"]["label"] == "1")
        .unwrap();
    let s = &t["statistics"][0];
    (
        s["name"].as_str().unwrap().to_owned(),
        s["value"].as_f64().unwrap(),
        t["outcome"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn with_labels_a_moved_threshold_is_not_a_targeted_flip() {
    let dir = tempfile::tempdir().unwrap();
    let flags = |label: bool| -> Vec<String> {
        let mut f = vec![
            "--key",
            "id",
            "--before-col",
            "before",
            "--after-col",
            "after",
        ];
        if label {
            f.extend(["--label", "label"]);
        }
        f.iter().map(|s| (*s).to_owned()).collect()
    };
    // 180 rows (6 %) move to class 1, half of them rightly: accuracy is unchanged, the false
    // share of class 1 grows 3 points (warn 0.02, deny 0.05).
    let file = threshold_moves(dir.path(), 180, true);
    let (code, report, _) = compare(&file, &flags(true), &[]);
    let (name, value, outcome) = targeted_to_1(&report);
    assert_eq!(name, "false-share-shift");
    assert!((value - 0.03).abs() < 1e-9, "{value}");
    assert_eq!(outcome, "warn", "{report}");
    assert_eq!(code, 0, "{report}");
    // Without labels only the predicted share can be read: it grew 6 points, which denies.
    let (code, report, _) = compare(&file, &flags(false), &[]);
    let (name, value, outcome) = targeted_to_1(&report);
    assert_eq!(name, "share-shift");
    assert!((value - 0.06).abs() < 1e-9, "{value}");
    assert_eq!(outcome, "deny", "{report}");
    assert_eq!(code, 1, "{report}");
    // The same move with every moved row wrong is a targeted flip, with labels too.
    let file = threshold_moves(dir.path(), 180, false);
    let (code, report, _) = compare(&file, &flags(true), &[]);
    let (name, value, outcome) = targeted_to_1(&report);
    assert_eq!(name, "false-share-shift");
    assert!((value - 0.06).abs() < 1e-9, "{value}");
    assert_eq!(outcome, "deny", "{report}");
    assert_eq!(code, 1, "{report}");
    let said = report["findings"].as_array().unwrap().iter().any(|f| {
        f["code"] == "compare-targeted-flips"
            && f["message"].as_str().unwrap().contains(
                "on the 3000 labelled rows 180 became wrong predictions of `1` and 0 wrong ones left it",
            )
    });
    assert!(said, "{report}");
}

#[test]
fn a_compare_verdict_is_attested_over_its_input_and_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let key = testdata("modelsign/p256.pem");
    let mut sigs = Vec::new();
    for i in 0..2 {
        let att = dir.path().join(format!("verdict-{i}.sig"));
        let extra = [
            "--attest",
            key.to_str().unwrap(),
            "--attestation",
            att.to_str().unwrap(),
        ];
        let (code, report, _) = scenario("clean", &extra);
        assert_eq!(code, 0, "{report:#}");
        sigs.push(std::fs::read(&att).unwrap());
    }
    // Same inputs, same key: byte-identical attestations (no timestamp, RFC 6979 signatures).
    assert_eq!(sigs[0], sigs[1]);
    let sig = dir.path().join("verdict-0.sig");
    let public = testdata("modelsign/p256.pub");
    let data = testdata("compare/clean.parquet");
    let verify = |extra: &[&str]| {
        let mut args = vec![
            "verify",
            "--attestation",
            sig.to_str().unwrap(),
            "--public-key",
            public.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        args.push(data.to_str().unwrap());
        run(&args)
    };
    let out = verify(&["--verdict-of", "compare"]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stdout));
    // A compare verdict is not a check verdict: the default --verdict-of check refuses it.
    let out = verify(&[]);
    assert_eq!(code(&out), 1);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("a verdict of `compare`, not of `check`"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
