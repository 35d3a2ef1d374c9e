//! `evidence-insufficient`: a pass on a batch too small for the tests to have shown the
//! attacks the policy names says so, names the size that would have sufficed, and blocks under
//! the strict profile.

use crate::common::*;

/// The first `n` rows of the bundled clean batch, written to `dir`.
fn head(dir: &std::path::Path, n: usize) -> String {
    clean_head(dir, n).to_str().unwrap().to_owned()
}

fn insufficient(report: &serde_json::Value) -> Option<&serde_json::Value> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "evidence-insufficient")
}

#[test]
fn a_one_row_batch_passes_only_with_limited_evidence_and_blocks_under_strict() {
    let dir = tempfile::tempdir().unwrap();
    let one = head(dir.path(), 1);
    let (exit, report, out) = check_json(&[&one], &[]);
    assert_eq!(exit, 0, "{}", stderr(&out));
    let f = insufficient(&report).unwrap_or_else(|| panic!("{report:#}"));
    assert_eq!(f["severity"], "warn");
    let message = f["message"].as_str().unwrap();
    assert!(
        message.contains("outliers") && message.contains("duplicates"),
        "{message}"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("poisongate check: PASS, with limited evidence (exit 0)"),
        "{text}"
    );
    assert!(text.contains("check --ledger"), "{text}");
    // The row-level tests say why they did not test anything.
    let anomalous = report["tests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["code"] == "poison-anomalous-rows")
        .unwrap();
    assert_eq!(anomalous["outcome"], "skipped", "{anomalous:#}");
    // Strict, with both pins: the only deny is the missing evidence.
    let strict = dir.path().join("strict.toml");
    std::fs::write(&strict, "[gate]\nprofile = \"strict\"\n").unwrap();
    let strict = strict.to_str().unwrap();
    let (_, report, _) = check_json(&[&one], &["--policy", strict]);
    let policy_digest = report["policy"]["sha256"].as_str().unwrap().to_owned();
    let digest = baseline_digest();
    let pins = [
        "--policy",
        strict,
        "--expect-policy-sha256",
        &policy_digest,
        "--expect-baseline-sha256",
        &digest,
    ];
    let (exit, report, _) = check_json(&[&one], &pins);
    assert_eq!(exit, 1, "{report:#}");
    let deny: Vec<String> = findings(&report)
        .into_iter()
        .filter(|f| f.1 == "deny")
        .map(|f| f.0)
        .collect();
    assert_eq!(deny, ["evidence-insufficient"]);
    // Attacks set to 0 are not asked about.
    let off = dir.path().join("off.toml");
    std::fs::write(
        &off,
        "[checks.evidence-insufficient]\noutliers = 0.0\nduplicates = 0.0\ntrigger = 0.0\nlabel-flips = 0.0\n",
    )
    .unwrap();
    let (exit, report, _) = check_json(&[&one], &["--policy", off.to_str().unwrap()]);
    assert_eq!(exit, 0);
    assert!(insufficient(&report).is_none(), "{report:#}");
}

#[test]
fn the_size_that_would_have_sufficed_does() {
    let dir = tempfile::tempdir().unwrap();
    let (exit, report, _) = check_json(&[&head(dir.path(), 120)], &[]);
    assert_eq!(exit, 0);
    let f = insufficient(&report).unwrap_or_else(|| panic!("{report:#}"));
    let needed = f["evidence"]["outliers_rows_needed"].as_f64().unwrap() as usize;
    let detectable = f["evidence"]["outliers_detectable"].as_f64().unwrap();
    assert!(detectable > 0.02, "{f:#}");
    assert!(needed > 120 && needed < 5_000, "{f:#}");
    // At the size named, the outlier test reaches the policy's 2 %; a row short of it, not
    // yet. (The test's rows scale with the batch; its null does not depend on the size.)
    let outliers_named = |n: usize| {
        let (_, report, _) = check_json(&[&head(dir.path(), n)], &[]);
        insufficient(&report).is_some_and(|f| f["evidence"].get("outliers_detectable").is_some())
    };
    assert!(!outliers_named(needed), "{needed} rows");
    assert!(outliers_named(needed - 1), "{} rows", needed - 1);
    // A trigger on 1 % of the rows: the detector needs three rows of a value (the baseline
    // pins a model, whose chances can make any labels unlikely, so only the count bounds it).
    let trigger_named = |n: usize| {
        let (_, report, _) = check_json(&[&head(dir.path(), n)], &[]);
        insufficient(&report).map(|f| f["evidence"]["trigger_rows_needed"].as_f64())
    };
    assert_eq!(trigger_named(250), Some(Some(300.0)));
    assert_eq!(trigger_named(299), Some(Some(300.0)));
    assert!(trigger_named(300).is_none_or(|needed| needed.is_none()));
    // The bundled 5,000-row batch is large enough for every named attack.
    let (_, report, _) = check_json(&[testdata("clean/batch.parquet").to_str().unwrap()], &[]);
    assert!(insufficient(&report).is_none(), "{report:#}");
}

#[test]
fn label_flips_out_of_reach_are_named_with_the_size_that_reaches_them() {
    // Random flips of 5 % of the labels: the label test's power comes from the batch's own
    // rows and labels, so the size named is an extrapolation of this batch (its rows' mix of
    // easy and hard ones) and is about right, not exact.
    let dir = tempfile::tempdir().unwrap();
    let flips = |n: usize| {
        let (exit, report, _) = check_json(&[&head(dir.path(), n)], &[]);
        assert_eq!(exit, 0, "{report:#}");
        insufficient(&report)
            .filter(|f| f["evidence"].get("label_flips_share").is_some())
            .cloned()
    };
    let f = flips(1_500).expect("5 % flips are out of reach at 1,500 rows");
    let message = f["message"].as_str().unwrap();
    assert!(
        message.contains(
            "labels flipped at random at 5.000% of rows (poison-label-inconsistency denies from"
        ),
        "{message}"
    );
    let detectable = f["evidence"]["label_flips_detectable"].as_f64().unwrap();
    let needed = f["evidence"]["label_flips_rows_needed"].as_f64().unwrap() as usize;
    assert!(detectable > 0.05 && detectable < 0.1, "{f:#}");
    assert!(needed > 1_500 && needed < 5_000, "{f:#}");
    // A quarter past the size named, the batch's own rows reach 5 %.
    assert!(flips(needed * 5 / 4).is_none(), "{needed} rows named");
    // On 300 rows, the smallest flip share the test denies is far above 5 %.
    let f = flips(300).unwrap();
    assert!(
        f["evidence"]["label_flips_detectable"].as_f64().unwrap() > 0.1,
        "{f:#}"
    );
}
