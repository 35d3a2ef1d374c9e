//! `check --after-quarantine`: the re-check of a batch once its quarantine was dropped.

use std::path::Path;

use polars::prelude::*;

use crate::common::*;

/// How the child batch is made from the parent.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Child {
    /// The parent minus exactly its quarantined rows.
    Dropped,
    /// One more row dropped than the quarantine holds.
    OneMore,
    /// The right rows, but one label changed.
    Relabelled,
}

/// Checks `testdata/poison/{name}.parquet` with `--quarantine` and `--json`, then writes the
/// child batch; returns (parent report, child batch) paths.
pub fn remediated(dir: &Path, name: &str, child: Child) -> (String, String) {
    remediated_file(
        dir,
        &testdata(&format!("poison/{name}.parquet")),
        name,
        child,
    )
}

/// [`remediated`] for the batch at `batch`.
pub fn remediated_file(dir: &Path, batch: &Path, name: &str, child: Child) -> (String, String) {
    let report = dir.join(format!("{name}.report.json"));
    let quarantine = dir.join(format!("{name}.quarantine.csv"));
    let out = run(&[
        "check",
        "--baseline",
        baseline().to_str().unwrap(),
        batch.to_str().unwrap(),
        "--quarantine",
        quarantine.to_str().unwrap(),
        "--json",
        report.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1, "{name} should block: {}", stderr(&out));
    let text = std::fs::read_to_string(&quarantine).unwrap();
    let mut dropped: Vec<usize> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    assert!(!dropped.is_empty());
    let mut df = ParquetReader::new(std::fs::File::open(batch).unwrap())
        .finish()
        .unwrap();
    if child == Child::OneMore {
        let extra = (0..df.height()).find(|r| !dropped.contains(r)).unwrap();
        dropped.push(extra);
    }
    let keep: BooleanChunked = (0..df.height()).map(|r| !dropped.contains(&r)).collect();
    let mut kept = df.filter(&keep).unwrap();
    if child == Child::Relabelled {
        let label = kept
            .column("defaulted")
            .unwrap()
            .as_materialized_series()
            .clone();
        let mut values: Vec<Option<i64>> = label
            .cast(&DataType::Int64)
            .unwrap()
            .i64()
            .unwrap()
            .iter()
            .collect();
        values[0] = Some(1 - values[0].unwrap_or(0));
        let changed = Series::new("defaulted".into(), values)
            .cast(label.dtype())
            .unwrap();
        kept.replace("defaulted", changed.into()).unwrap();
    }
    df = kept;
    let path = dir.join(format!("{name}.child.parquet"));
    ParquetWriter::new(std::fs::File::create(&path).unwrap())
        .finish(&mut df)
        .unwrap();
    (
        report.to_str().unwrap().to_owned(),
        path.to_str().unwrap().to_owned(),
    )
}

fn recheck(parent: &str, child: &str) -> (i32, serde_json::Value, std::process::Output) {
    check_json(&[child], &["--after-quarantine", parent])
}

fn deny_codes(report: &serde_json::Value) -> Vec<String> {
    findings(report)
        .into_iter()
        .filter(|f| f.1 == "deny")
        .map(|f| f.0)
        .collect()
}

#[test]
fn dropping_a_quarantine_that_holds_the_attack_passes_and_one_that_does_not_still_blocks() {
    let dir = tempfile::tempdir().unwrap();
    // Outliers: the quarantine holds every injected row; the rest is the clean batch.
    let (parent, child) = remediated(dir.path(), "outliers", Child::Dropped);
    let (exit, report, out) = recheck(&parent, &child);
    assert_eq!(exit, 0, "{}", String::from_utf8_lossy(&out.stdout));
    assert!(has_note(&report, "re-checked as"), "{report:#}");
    // Ten per cent random flips: the reference model cannot tell most flipped labels from
    // genuine surprises, so the quarantine of the estimated size holds about half of them;
    // a fresh check of the rest passes (the drop took the evidence with it), the carried
    // finding does not.
    let (parent, child) = remediated(dir.path(), "flip10", Child::Dropped);
    let parent_report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&parent).unwrap()).unwrap();
    let residual = &parent_report["quarantine"]["findings"][0];
    assert_eq!(residual["code"], "poison-label-inconsistency");
    assert_eq!(residual["clears"], false, "{residual:#}");
    let fresh = check_json(&[&child], &[]);
    assert_eq!(
        fresh.0, 0,
        "the selection effect this guards against is gone?"
    );
    let (exit, report, _) = recheck(&parent, &child);
    assert_eq!(exit, 1);
    let denied = deny_codes(&report);
    assert!(
        denied.contains(&"integrity-quarantine-residual".to_owned()),
        "{denied:?}"
    );
}

#[test]
fn a_batch_that_is_not_the_parent_minus_its_quarantine_is_blocked() {
    let dir = tempfile::tempdir().unwrap();
    for child in [Child::OneMore, Child::Relabelled] {
        let (parent, batch) = remediated(dir.path(), "outliers", child);
        let (exit, report, _) = recheck(&parent, &batch);
        assert_eq!(exit, 1, "{report:#}");
        assert!(
            deny_codes(&report).contains(&"integrity-quarantine-lineage".to_owned()),
            "{report:#}"
        );
    }
}

#[test]
fn a_parent_report_without_a_quarantine_or_of_another_baseline_cannot_be_used() {
    let dir = tempfile::tempdir().unwrap();
    let clean = testdata("clean/batch.parquet");
    let clean = clean.to_str().unwrap();
    let (_, plain, _) = check_json(&[clean], &[]);
    let plain_path = dir.path().join("plain.json");
    std::fs::write(&plain_path, plain.to_string()).unwrap();
    let (exit, _, out) = recheck(plain_path.to_str().unwrap(), clean);
    assert_eq!(exit, 2);
    assert!(
        stderr(&out).contains("records no quarantine"),
        "{}",
        stderr(&out)
    );
    let (parent, child) = remediated(dir.path(), "outliers", Child::Dropped);
    let text = std::fs::read_to_string(&parent).unwrap();
    let mut report: serde_json::Value = serde_json::from_str(&text).unwrap();
    report["baseline"]["sha256"] = serde_json::json!("0".repeat(64));
    let other = dir.path().join("other.json");
    std::fs::write(&other, report.to_string()).unwrap();
    let (exit, _, out) = recheck(other.to_str().unwrap(), &child);
    assert_eq!(exit, 2);
    assert!(
        stderr(&out).contains("another baseline"),
        "{}",
        stderr(&out)
    );
    std::fs::write(&other, "{not json").unwrap();
    let (exit, _, out) = recheck(other.to_str().unwrap(), &child);
    assert_eq!(exit, 2);
    assert!(
        stderr(&out).contains("not a poisongate JSON report"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn after_a_block_on_flipped_labels_the_label_tests_block_on_significance_alone() {
    let dir = tempfile::tempdir().unwrap();
    // 40 % of the `north` rows relabelled: the quarantine holds part of them. The remaining
    // segment shift is below the deny threshold (0.1) of a batch nobody suspected, so a fresh
    // check does not deny it; after the parent's block it must be insignificant to pass.
    let (parent, child) = remediated(dir.path(), "segment_north", Child::Dropped);
    let parent_report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&parent).unwrap()).unwrap();
    let residuals = parent_report["quarantine"]["findings"].as_array().unwrap();
    let segment = residuals
        .iter()
        .find(|r| r["code"] == "poison-segment-label-shift")
        .unwrap();
    // A label finding's residual is held to the code's warn threshold, not its deny one.
    assert_eq!(segment["threshold"], 0.05, "{segment:#}");
    let fresh = check_json(&[&child], &[]);
    assert!(
        !deny_codes(&fresh.1).contains(&"poison-segment-label-shift".to_owned()),
        "{:?}",
        deny_codes(&fresh.1)
    );
    let (exit, report, _) = recheck(&parent, &child);
    assert_eq!(exit, 1);
    let tight: Vec<_> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| {
            f["code"] == "poison-segment-label-shift"
                && f["severity"] == "deny"
                && f["threshold"] == 0.0
        })
        .collect();
    assert!(!tight.is_empty(), "{report:#}");
    // Trusted rows resubmitted with the other label: every flip has a trusted twin, the
    // quarantine holds them all, and the rest passes the stricter re-check.
    let (parent, child) = remediated(dir.path(), "relabelled_trusted", Child::Dropped);
    let (exit, report, out) = recheck(&parent, &child);
    assert_eq!(exit, 0, "{}", String::from_utf8_lossy(&out.stdout));
    assert!(has_note(&report, "significance alone"), "{report:#}");
}

#[test]
fn flips_beside_a_decoy_do_not_pass_once_the_decoy_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    // Outliers draw the block and fill the quarantine; 8 % of the `north` rows relabelled
    // beside them only warn. Dropping the quarantine leaves every flip.
    let (parent, child) = remediated(dir.path(), "decoy_outliers", Child::Dropped);
    let parent_report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&parent).unwrap()).unwrap();
    assert!(
        !deny_codes(&parent_report)
            .iter()
            .any(|c| c.starts_with("poison-label") || c == "poison-segment-label-shift"),
        "{:?}",
        deny_codes(&parent_report)
    );
    // Checked as a fresh batch, the rest passes: the flips alone are under the thresholds.
    let (exit, _, out) = check_json(&[&child], &[]);
    assert_eq!(exit, 0, "{}", String::from_utf8_lossy(&out.stdout));
    // As the re-check of a blocked parent, the segment shift blocks on its significance.
    let (exit, report, _) = recheck(&parent, &child);
    assert_eq!(exit, 1, "{report:#}");
    assert!(
        deny_codes(&report).contains(&"poison-segment-label-shift".to_owned()),
        "{report:#}"
    );
    assert!(has_note(&report, "significance alone"), "{report:#}");
}

#[test]
fn a_recheck_too_small_to_show_the_rows_clean_is_blocked() {
    let dir = tempfile::tempdir().unwrap();
    // The first 400 rows of the decoy batch: outliers block and fill the quarantine, and at
    // 400 rows no label test could have seen flips at 5 %, so the rest cannot be shown clean.
    let mut df =
        ParquetReader::new(std::fs::File::open(testdata("poison/decoy_outliers.parquet")).unwrap())
            .finish()
            .unwrap()
            .slice(0, 400);
    let small = dir.path().join("small.parquet");
    ParquetWriter::new(std::fs::File::create(&small).unwrap())
        .finish(&mut df)
        .unwrap();
    let (parent, child) = remediated_file(dir.path(), &small, "small", Child::Dropped);
    let insufficient = |report: &serde_json::Value| {
        findings(report)
            .into_iter()
            .find(|f| f.0 == "evidence-insufficient")
            .map(|f| f.1)
    };
    // A fresh check of the rest passes, saying its evidence is limited.
    let (exit, report, out) = check_json(&[&child], &[]);
    assert_eq!(exit, 0, "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(insufficient(&report).as_deref(), Some("warn"), "{report:#}");
    // The re-check of the blocked parent does not.
    let (exit, report, _) = recheck(&parent, &child);
    assert_eq!(exit, 1, "{report:#}");
    assert_eq!(deny_codes(&report), ["evidence-insufficient"], "{report:#}");
    let message = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "evidence-insufficient")
        .unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("re-check after a quarantine"), "{message}");
}

fn has_note(report: &serde_json::Value, text: &str) -> bool {
    report["notes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n.as_str().unwrap().contains(text))
}
