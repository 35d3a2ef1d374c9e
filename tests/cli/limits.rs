//! The resource caps of `poisongate::limits`: a hostile file past one is refused with exit 2
//! and the cap named, under a 3 GiB address-space limit (so an attempt to decode it whole
//! would fail here rather than pass), and before the work the cap bounds.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use poisongate::limits;
use polars::prelude::*;

use crate::common::{baseline, testdata};

/// `poisongate ARGS` under `prlimit --as=3GiB`; (exit code, stderr).
fn capped(args: &[&str]) -> (i32, String) {
    let out = Command::new("prlimit")
        .arg("--as=3221225472")
        .arg("--")
        .arg(assert_cmd::cargo::cargo_bin("poisongate"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn check(file: &Path) -> (i32, String) {
    capped(&[
        "check",
        "--baseline",
        baseline().to_str().unwrap(),
        file.to_str().unwrap(),
    ])
}

fn profile(file: &Path, dir: &Path) -> (i32, String) {
    let out = dir.join("baseline.json");
    capped(&[
        "profile",
        file.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ])
}

/// Both commands that read data refuse `file` with exit 2, naming it and `cause`, and
/// `profile` writes nothing.
fn refused(file: &Path, cause: &str) {
    let dir = tempfile::tempdir().unwrap();
    for (what, (code, err)) in [
        ("check", check(file)),
        ("profile", profile(file, dir.path())),
    ] {
        assert_eq!(code, 2, "{what}: {err}");
        assert!(err.contains(cause), "{what}: {err}");
        assert!(err.contains(file.to_str().unwrap()), "{what}: {err}");
        assert_eq!(err.trim_end().lines().count(), 2, "{what}: {err}"); // error + hint
    }
    assert!(!dir.path().join("baseline.json").exists());
}

#[test]
fn a_csv_wider_than_the_column_cap_is_refused_from_its_header() {
    let dir = tempfile::tempdir().unwrap();
    let n = limits::MAX_COLUMNS + 1;
    let path = dir.path().join("wide.csv");
    let names: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
    let ones = vec!["1"; n];
    std::fs::write(&path, format!("{}\n{}\n", names.join(","), ones.join(","))).unwrap();
    refused(&path, &format!("{n} columns, more than the cap of 10000"));
    // A header of a million columns is longer than the header cap: refused, not mistaken for
    // a repeated name (its first MiB ends in a partial name).
    let names: Vec<String> = (0..1_000_000).map(|i| format!("c{i}")).collect();
    std::fs::write(&path, format!("{}\n1\n", names.join(","))).unwrap();
    refused(&path, "the CSV header is longer than 1 MiB");
}

#[test]
fn a_parquet_file_wider_than_the_column_cap_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wide.parquet");
    let columns: Vec<Column> = (0..=limits::MAX_COLUMNS)
        .map(|i| Column::new(format!("c{i}").into(), [1i32, 2]))
        .collect();
    let mut df = DataFrame::new_infer_height(columns).unwrap();
    ParquetWriter::new(std::fs::File::create(&path).unwrap())
        .finish(&mut df)
        .unwrap();
    refused(&path, "10001 columns, more than the cap of 10000");
}

#[test]
fn a_two_gigabyte_line_is_refused_at_the_line_cap_without_being_decoded() {
    // The CSV decoder takes time in the square of a line's length (about 15 minutes for this
    // one). The file is sparse: 2 GB of NUL bytes after a header, with no line end.
    let dir = tempfile::tempdir().unwrap();
    for (name, head) in [
        ("line.csv", &b"application_id,age\n1,"[..]),
        ("line.ndjson", &b"{\"application_id\": \""[..]),
    ] {
        let path = dir.path().join(name);
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(head).unwrap();
        f.set_len(2_000_000_000).unwrap();
        drop(f);
        refused(&path, "a line is longer than 8 MiB");
    }
}

#[test]
fn ndjson_nested_past_the_depth_cap_is_refused_before_the_decoder_overflows_its_stack() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deep.ndjson");
    let deep = format!(
        "{{\"a\": {}{}}}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    std::fs::write(&path, deep).unwrap();
    refused(&path, "JSON nested more than 64 levels deep");
    // Brackets inside strings are text, and 64 levels are allowed.
    let ok = format!(
        "{{\"a\": \"{}\", \"b\": {}1{}}}\n",
        "[".repeat(1000),
        "[".repeat(63),
        "]".repeat(63)
    );
    std::fs::write(&path, ok).unwrap();
    let (code, err) = profile(&path, dir.path());
    assert!(!err.contains("nested"), "{err}");
    assert_ne!(code, 101, "{err}");
}

#[test]
fn a_parquet_cell_past_the_cell_cap_is_refused() {
    // A dictionary page hands one 9 MiB value to every row: a small file, a large decode.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cell.parquet");
    let long = "x".repeat(limits::MAX_CELL_BYTES + 1);
    let mut df =
        df!("application_id" => [1i64, 2, 3], "note" => [long.as_str(), &long, &long]).unwrap();
    ParquetWriter::new(std::fs::File::create(&path).unwrap())
        .finish(&mut df)
        .unwrap();
    refused(&path, "column `note` holds a value longer than 8 MiB");
}

#[test]
fn a_baseline_past_the_size_cap_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baseline.json");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(limits::MAX_BASELINE_BYTES + 1)
        .unwrap();
    let data = testdata("clean/batch.parquet");
    let (code, err) = capped(&[
        "check",
        "--baseline",
        path.to_str().unwrap(),
        data.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("more than the cap of 1024 MiB on a baseline"),
        "{err}"
    );
}
