//! Parquet, CSV, Arrow IPC and NDJSON copies of one batch give identical findings.

use polars::prelude::*;

use crate::common::*;

fn assert_same_findings(paths: &[std::path::PathBuf]) {
    let mut reports = Vec::new();
    for p in paths {
        let (code, report, out) = check_json(&[p.to_str().unwrap()], &[]);
        assert!(code == 0 || code == 1, "{}: {}", p.display(), stderr(&out));
        reports.push((p, code, report));
    }
    let (p0, c0, r0) = &reports[0];
    for (p, c, r) in &reports[1..] {
        assert_eq!(c, c0, "{} vs {}", p.display(), p0.display());
        assert_eq!(
            r["findings"],
            r0["findings"],
            "{} vs {}",
            p.display(),
            p0.display()
        );
        assert_eq!(r["counts"], r0["counts"]);
        assert_eq!(r["rows"], r0["rows"]);
    }
}

#[test]
fn bundled_clean_copies_in_four_formats_agree() {
    let paths: Vec<_> = ["parquet", "csv", "arrow", "ndjson"]
        .iter()
        .map(|e| testdata(&format!("clean/batch.{e}")))
        .collect();
    assert_same_findings(&paths);
}

#[test]
fn drifted_batch_written_in_four_formats_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let src = testdata("drifted/batch.parquet");
    let mut df = ParquetReader::new(std::fs::File::open(&src).unwrap())
        .finish()
        .unwrap();
    let csv = dir.path().join("b.csv");
    CsvWriter::new(std::fs::File::create(&csv).unwrap())
        .finish(&mut df)
        .unwrap();
    let ipc = dir.path().join("b.feather");
    IpcWriter::new(std::fs::File::create(&ipc).unwrap())
        .finish(&mut df)
        .unwrap();
    let nd = dir.path().join("b.jsonl");
    JsonWriter::new(std::fs::File::create(&nd).unwrap())
        .with_json_format(JsonFormat::JsonLines)
        .finish(&mut df)
        .unwrap();
    let (code, report, _) = check_json(&[src.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(report["findings"].as_array().unwrap().len() >= 3);
    assert_same_findings(&[src, csv, ipc, nd]);
}

#[test]
fn format_flag_overrides_the_extension() {
    let dir = tempfile::tempdir().unwrap();
    let odd = dir.path().join("batch.data");
    std::fs::copy(testdata("clean/batch.csv"), &odd).unwrap();
    let (code, _, out) = check_json(&[odd.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "unknown extension must not be guessed");
    assert!(stderr(&out).contains("unknown file extension"));
    let (code, report, _) = check_json(&[odd.to_str().unwrap()], &["--format", "csv"]);
    assert_eq!(code, 0);
    assert_eq!(report["inputs"][0]["format"], "csv");
}

/// A CSV header that names a column twice is ambiguous: exit 2 naming the column, for `check`
/// and for `profile`, and never a renamed `_duplicated_0` column that then looks missing.
#[test]
fn a_csv_header_that_repeats_a_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(testdata("clean/batch.csv")).unwrap();
    let (header, rest) = text.split_once('\n').unwrap();
    let repeated = header.replacen("age", "application_id", 1);
    assert_ne!(repeated, header);
    let csv = dir.path().join("repeated.csv");
    std::fs::write(&csv, format!("{repeated}\n{rest}")).unwrap();
    let path = csv.to_str().unwrap();
    let out = run(&["check", "--baseline", baseline().to_str().unwrap(), path]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("repeated.csv") && err.contains("`application_id` more than once"),
        "{err}"
    );
    assert!(!err.contains("_duplicated_"), "{err}");
    let base = dir.path().join("b.json");
    let out = run(&["profile", path, "-o", base.to_str().unwrap()]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(!base.exists());
    // A quoted comma is part of a name, not a second column.
    let quoted = dir.path().join("quoted.csv");
    std::fs::write(&quoted, "\"a,b\",a,\"say \"\"b\"\"\"\n1,2,3\n4,5,6\n").unwrap();
    let out = run(&[
        "profile",
        quoted.to_str().unwrap(),
        "-o",
        base.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}
