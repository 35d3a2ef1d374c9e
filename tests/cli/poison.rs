//! The `poison-` detectors on batches where the answer is known (scripts/make_poison_testdata.py):
//! each attack blocks with the detector's code, names what it should, and the quarantine lists
//! the attacked rows; the clean and mild batches raise none of them.

use std::collections::BTreeSet;

use crate::common::*;

fn truth(name: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(testdata("poison/truth.json")).unwrap();
    let all: serde_json::Value = serde_json::from_str(&text).unwrap();
    all[name]["attacked_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap().to_string())
        .collect()
}

/// Checks an attacked batch with a CSV quarantine; returns (exit, report, quarantined ids by
/// code).
fn check_attack(name: &str) -> (i32, serde_json::Value, Vec<(String, Vec<String>)>) {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q.csv");
    let data = testdata(&format!("poison/{name}.parquet"));
    let (code, report, out) = check_json(
        &[data.to_str().unwrap()],
        &["--quarantine", q.to_str().unwrap()],
    );
    assert!(code == 0 || code == 1, "{}", stderr(&out));
    let text = std::fs::read_to_string(&q).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("row,id,codes,score"));
    let rows = lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                f[1].to_owned(),
                f[2].split(';').map(str::to_owned).collect(),
            )
        })
        .collect();
    (code, report, rows)
}

fn denies(report: &serde_json::Value, code: &str) -> Vec<serde_json::Value> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["code"] == code && f["severity"] == "deny")
        .cloned()
        .collect()
}

/// Precision and recall of the quarantine's rows flagged by `code` against the attacked ids.
fn precision_recall(
    rows: &[(String, Vec<String>)],
    code: &str,
    attacked: &BTreeSet<String>,
) -> (f64, f64) {
    let flagged: BTreeSet<&String> = rows
        .iter()
        .filter(|(_, codes)| codes.iter().any(|c| c == code))
        .map(|(id, _)| id)
        .collect();
    let hit = flagged.iter().filter(|id| attacked.contains(**id)).count() as f64;
    (
        hit / flagged.len().max(1) as f64,
        hit / attacked.len().max(1) as f64,
    )
}

#[test]
fn clean_and_mild_batches_raise_no_poison_finding() {
    for batch in ["clean/batch.parquet", "mild/batch.parquet"] {
        let (code, report, _) = check_json(&[testdata(batch).to_str().unwrap()], &[]);
        assert_eq!(code, 0, "{batch}");
        let poison: Vec<_> = findings(&report)
            .into_iter()
            .filter(|f| f.0.starts_with("poison-") || f.0 == "drift-class-conditional")
            .collect();
        assert!(poison.is_empty(), "{batch}: {poison:?}");
    }
}

#[test]
fn random_label_flips_block_and_the_quarantine_ranks_flipped_rows() {
    let (code, report, rows) = check_attack("flip10");
    assert_eq!(code, 1);
    let f = &denies(&report, "poison-label-inconsistency")[0];
    let share = f["value"].as_f64().unwrap();
    // 10% flips; flips into the majority class are nearly invisible on this weak-signal
    // data, so the estimate is lower than the truth but well past the deny threshold.
    assert!(share > 0.05 && share < 0.15, "{share}");
    assert!(f["rows"].as_array().unwrap().len() == 10);
    // The quarantine keeps as many rows as the estimated flips, most surprising first: about
    // half of them flipped on this weak-signal data (flips into the majority class are nearly
    // invisible), which the report's quarantine section says (it does not clear the finding).
    let (precision, recall) =
        precision_recall(&rows, "poison-label-inconsistency", &truth("flip10"));
    assert!(precision > 0.5 && recall > 0.4, "{precision} {recall}");
}

#[test]
fn a_categorical_trigger_is_named_with_its_value_and_target_label() {
    let (code, report, rows) = check_attack("trigger_channel");
    assert_eq!(code, 1);
    let f = &denies(&report, "poison-trigger")[0];
    assert_eq!(f["subject"]["column"], "channel");
    assert_eq!(f["subject"]["value"], "kiosk");
    assert_eq!(f["subject"]["label"], "0");
    let (precision, recall) = precision_recall(&rows, "poison-trigger", &truth("trigger_channel"));
    assert_eq!((precision, recall), (1.0, 1.0));
}

#[test]
fn three_clean_rows_sharing_a_rounded_value_do_not_block() {
    // Rows 2,250-2,499 of the clean batch: three of them share `debt_ratio` = 0.4402, a value
    // of a rounded continuous column that the trusted rows hold at most 0.05 % of. It is the
    // most repeated of some 250 values, each that rare: the point-mass test must count the
    // selection, and the batch passes.
    use polars::prelude::{ParquetReader, SerReader};
    let clean = ParquetReader::new(std::fs::File::open(testdata("clean/batch.parquet")).unwrap())
        .finish()
        .unwrap();
    let mut slice = clean.slice(2_250, 250);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slice.parquet");
    polars::prelude::ParquetWriter::new(std::fs::File::create(&path).unwrap())
        .finish(&mut slice)
        .unwrap();
    let (code, report, _) = check_json(&[path.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{report:#}");
    let t = report["tests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["code"] == "poison-point-mass" && t["subject"]["column"] == "debt_ratio")
        .unwrap_or_else(|| panic!("{report:#}"));
    assert_eq!(t["subject"]["value"], "0.4402", "{t:#}");
    assert_eq!(t["outcome"], "pass", "{t:#}");
}

#[test]
fn a_numeric_trigger_shows_as_point_mass_and_trigger() {
    let (code, report, rows) = check_attack("trigger_utilization");
    assert_eq!(code, 1);
    let t = &denies(&report, "poison-trigger")[0];
    assert_eq!(t["subject"]["column"], "utilization");
    assert_eq!(t["subject"]["value"], "0.4242");
    assert_eq!(t["subject"]["label"], "1");
    let p = &denies(&report, "poison-point-mass")[0];
    assert_eq!(p["subject"]["value"], "0.4242");
    let attacked = truth("trigger_utilization");
    for code in ["poison-trigger", "poison-point-mass"] {
        let (precision, recall) = precision_recall(&rows, code, &attacked);
        assert!(
            precision >= 0.95 && recall == 1.0,
            "{code}: {precision} {recall}"
        );
    }
}

#[test]
fn injected_outliers_block_as_anomalous_rows() {
    let (code, report, rows) = check_attack("outliers");
    assert_eq!(code, 1);
    // Both tests deny: rows past the anomaly cuts, and rows with a value further past the
    // trusted extremes than any trusted row (the conformal extreme-value test).
    let fired: Vec<String> = denies(&report, "poison-anomalous-rows")
        .iter()
        .map(|f| f["subject"]["value"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(fired, ["", "extreme values"], "{fired:?}");
    let (precision, recall) = precision_recall(&rows, "poison-anomalous-rows", &truth("outliers"));
    // The trusted data's own 1% of anomalous rows share the quarantine with the outliers.
    assert!(recall == 1.0 && precision > 0.6, "{precision} {recall}");
}

#[test]
fn a_duplicate_flood_blocks_and_its_copies_are_quarantined() {
    let (code, report, rows) = check_attack("duplicates");
    assert_eq!(code, 1);
    let f = &denies(&report, "poison-duplicate-flood")[0];
    assert_eq!(f["subject"]["value"], "exact");
    assert!(
        f["evidence"]["rows_in_groups_with_mixed_labels"]
            .as_f64()
            .unwrap()
            >= 100.0
    );
    let (precision, recall) =
        precision_recall(&rows, "poison-duplicate-flood", &truth("duplicates"));
    // The first copy of each group is kept as the original; the other nine are flagged.
    assert!(precision > 0.8 && recall >= 0.8, "{precision} {recall}");
}

#[test]
fn trusted_rows_resubmitted_with_another_label_conflict_with_the_baseline() {
    let (code, report, rows) = check_attack("relabelled_trusted");
    assert_eq!(code, 1);
    assert_eq!(denies(&report, "poison-label-conflict").len(), 1);
    let (precision, recall) =
        precision_recall(&rows, "poison-label-conflict", &truth("relabelled_trusted"));
    assert!(precision > 0.95 && recall > 0.95, "{precision} {recall}");
}

#[test]
fn labels_rewritten_on_a_common_value_show_as_a_segment_shift() {
    let (code, report, _) = check_attack("segment_north");
    assert_eq!(code, 1);
    let shifted: Vec<String> = denies(&report, "poison-segment-label-shift")
        .iter()
        .map(|f| format!("{}{}", f["subject"]["column"], f["subject"]["value"]))
        .collect();
    assert_eq!(shifted, ["\"region\"\"= `north`\""]);
}

#[test]
fn one_class_moving_alone_is_class_conditional_drift() {
    let (code, report, _) = check_attack("class_income");
    assert_eq!(code, 1);
    let f = &denies(&report, "drift-class-conditional")[0];
    assert_eq!(f["subject"]["column"], "income");
    assert_eq!(f["subject"]["label"], "1");
}

#[test]
fn quarantine_is_deterministic_and_also_written_as_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let data = testdata("poison/trigger_channel.parquet");
    let mut bytes = Vec::new();
    for name in ["a.parquet", "b.parquet"] {
        let q = dir.path().join(name);
        let out = run(&[
            "check",
            "--baseline",
            baseline().to_str().unwrap(),
            data.to_str().unwrap(),
            "--quarantine",
            q.to_str().unwrap(),
        ]);
        assert_eq!(code(&out), 1);
        bytes.push(std::fs::read(&q).unwrap());
    }
    assert_eq!(bytes[0], bytes[1]);
    use polars::prelude::{ParquetReader, SerReader};
    let df = ParquetReader::new(std::io::Cursor::new(bytes.remove(0)))
        .finish()
        .unwrap();
    let names: Vec<String> = df
        .get_column_names()
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(names, ["row", "id", "codes", "score"]);
    assert!(df.height() >= 50);
}

#[test]
fn a_quarantine_path_without_a_known_extension_is_a_usage_error() {
    let out = run(&[
        "check",
        "--baseline",
        baseline().to_str().unwrap(),
        testdata("clean/batch.parquet").to_str().unwrap(),
        "--quarantine",
        "/tmp/q.txt",
    ]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("must end in .parquet or .csv"));
}

#[test]
fn row_scores_rank_every_row_and_put_quarantined_rows_first() {
    let dir = tempfile::tempdir().unwrap();
    let data = testdata("poison/trigger_channel.parquet");
    let (q, s) = (dir.path().join("q.csv"), dir.path().join("s.csv"));
    let (code, report, out) = check_json(
        &[data.to_str().unwrap()],
        &[
            "--quarantine",
            q.to_str().unwrap(),
            "--row-scores",
            s.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 1, "{}", stderr(&out));
    let rows = report["inputs"][0]["rows"].as_u64().unwrap() as usize;
    let text = std::fs::read_to_string(&s).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("row,id,score"));
    let scores: Vec<(u64, String, f64)> = lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                f[0].parse().unwrap(),
                f[1].to_owned(),
                f[2].parse().unwrap(),
            )
        })
        .collect();
    // One line per row, in batch order, each with its id.
    assert_eq!(scores.len(), rows);
    assert!(
        scores
            .iter()
            .enumerate()
            .all(|(i, r)| r.0 == i as u64 && !r.1.is_empty())
    );
    // Quarantined rows score above 1; every other row below.
    let quarantined: std::collections::BTreeSet<String> = std::fs::read_to_string(&q)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap().to_owned())
        .collect();
    assert!(!quarantined.is_empty());
    for (_, id, score) in &scores {
        assert_eq!(quarantined.contains(id), *score > 1.0, "{id}: {score}");
    }
    // Scores are computed only when asked; the decision does not depend on it.
    let (code, plain, _) = check_json(&[data.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert_eq!(plain["findings"], report["findings"]);
}

/// `rel` with the values of `column` replaced by nulls, written under `dir`.
fn nulled(dir: &std::path::Path, rel: &str, column: &str) -> String {
    use polars::prelude::*;
    let mut df = ParquetReader::new(std::fs::File::open(testdata(rel)).unwrap())
        .finish()
        .unwrap();
    let dtype = df.column(column).unwrap().dtype().clone();
    df.with_column(Column::full_null(column.into(), df.height(), &dtype))
        .unwrap();
    let path = dir.join(format!("nulled_{column}.parquet"));
    ParquetWriter::new(std::fs::File::create(&path).unwrap())
        .finish(&mut df)
        .unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn a_column_that_lost_its_values_makes_a_schema_finding_and_no_row_level_one() {
    let dir = tempfile::tempdir().unwrap();
    // `income` all null in the clean batch: before, the reference model read the nulls and
    // blocked with `poison-label-inconsistency` (8.7 % surprising labels) beside the schema
    // finding, and a segment shift warned.
    let clean = nulled(dir.path(), "clean/batch.parquet", "income");
    let (code, report, _) = check_json(&[&clean], &[]);
    assert_eq!(code, 1);
    let found = findings(&report);
    assert!(
        found
            .iter()
            .any(|(c, s, col)| c == "schema-null-rate" && s == "deny" && col == "income"),
        "{found:?}"
    );
    assert!(
        found.iter().all(|(c, _, _)| !c.starts_with("poison-")),
        "{found:?}"
    );
    let notes = report["notes"].to_string();
    assert!(
        notes.contains("`income` (its null share rose by"),
        "{notes}"
    );
    // The joint detectors are recorded as skipped, with the reason.
    for code in poisongate::codes::joint_codes() {
        let rec = report["tests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["code"] == code)
            .unwrap_or_else(|| panic!("{code} has no record"));
        assert_eq!(rec["outcome"], "skipped", "{rec}");
        assert!(
            rec["reason"].as_str().unwrap().contains("`income`"),
            "{rec}"
        );
    }
    // The detectors that look at one feature at a time still run on the others: a trigger
    // on `channel` is found with `income` gone.
    let trigger = nulled(dir.path(), "poison/trigger_channel.parquet", "income");
    let (code, report, _) = check_json(&[&trigger], &[]);
    assert_eq!(code, 1);
    let found = findings(&report);
    assert!(
        found
            .iter()
            .any(|(c, s, col)| c == "poison-trigger" && s == "deny" && col == "channel"),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .all(|(c, _, col)| col != "income" || !c.starts_with("poison-")),
        "{found:?}"
    );
}

/// A numeric trigger at a value inside the trusted range, on 0.4 % of the batch: 20 rows of
/// the majority class get `income = 52000` and the other label. They add 20 rows to a decile
/// of about 500, inside its sampling noise, so a search of only the bins that gained rows
/// never looked at them; every value is sketched now.
#[test]
fn a_numeric_trigger_inside_the_trusted_range_on_few_rows_is_found() {
    use polars::prelude::*;
    let dir = tempfile::tempdir().unwrap();
    let mut df = ParquetReader::new(std::fs::File::open(testdata("clean/batch.parquet")).unwrap())
        .finish()
        .unwrap();
    let labels: Vec<i64> = df
        .column("defaulted")
        .unwrap()
        .i64()
        .unwrap()
        .into_no_null_iter()
        .collect();
    let mut income: Vec<Option<f64>> = df.column("income").unwrap().f64().unwrap().iter().collect();
    let mut y = labels.clone();
    let k = df.height() * 4 / 1000;
    let stamped: Vec<usize> = (0..labels.len())
        .filter(|&i| labels[i] == 0)
        .step_by(97)
        .take(k)
        .collect();
    assert_eq!(stamped.len(), 20);
    for &i in &stamped {
        income[i] = Some(52_000.0);
        y[i] = 1;
    }
    df.with_column(Column::new("income".into(), income))
        .unwrap();
    df.with_column(Column::new("defaulted".into(), y)).unwrap();
    let path = dir.path().join("trigger_income.parquet");
    ParquetWriter::new(std::fs::File::create(&path).unwrap())
        .finish(&mut df)
        .unwrap();
    let (code, report, out) = check_json(&[path.to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{}", stderr(&out));
    let t = &denies(&report, "poison-trigger");
    assert!(
        t.iter().any(|f| f["subject"]["column"] == "income"
            && f["subject"]["value"] == "52000"
            && f["subject"]["label"] == "1"),
        "{t:?}"
    );
}
