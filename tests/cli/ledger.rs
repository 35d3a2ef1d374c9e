//! `check --ledger`: slow poisoning spread over many small batches, and a tampered ledger.

use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::common::*;

/// The bundled clean batch cut into `count` batches of 250 rows; in each, `flip_every`-th
/// rows (none for 0) get the other label.
pub fn batches(dir: &Path, count: usize, flip_every: usize) -> Vec<PathBuf> {
    let df = ParquetReader::new(std::fs::File::open(testdata("clean/batch.parquet")).unwrap())
        .finish()
        .unwrap();
    (0..count)
        .map(|k| {
            let mut part = df.slice((k * 250) as i64, 250);
            if flip_every > 0 {
                let y: Vec<Option<i64>> = part
                    .column("defaulted")
                    .unwrap()
                    .as_materialized_series()
                    .i64()
                    .unwrap()
                    .iter()
                    .enumerate()
                    .map(|(i, v)| v.map(|v| if i % flip_every == 7 { 1 - v } else { v }))
                    .collect();
                part.replace("defaulted", Series::new("defaulted".into(), y).into())
                    .unwrap();
            }
            let path = dir.join(format!("b{k:02}.parquet"));
            ParquetWriter::new(std::fs::File::create(&path).unwrap())
                .finish(&mut part)
                .unwrap();
            path
        })
        .collect()
}

fn pinned() -> Vec<String> {
    let base = baseline().to_str().unwrap().to_owned();
    let digest = std::fs::read_to_string(format!("{base}.sha256")).unwrap();
    vec![
        "--expect-baseline-sha256".into(),
        digest.split_whitespace().next().unwrap().to_owned(),
    ]
}

fn check_with(batch: &Path, ledger: Option<&Path>) -> (i32, serde_json::Value) {
    let mut extra: Vec<String> = pinned();
    if let Some(l) = ledger {
        extra.extend(["--ledger".to_owned(), l.to_str().unwrap().to_owned()]);
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let (code, report, out) = check_json(&[batch.to_str().unwrap()], &extra);
    assert!(code < 2, "{}", stderr(&out));
    (code, report)
}

fn window_findings(report: &serde_json::Value) -> Vec<&serde_json::Value> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["code"] == "integrity-ledger-window")
        .collect()
}

#[test]
fn flips_spread_over_twenty_small_batches_are_blocked_by_the_window() {
    let dir = tempfile::tempdir().unwrap();
    // 5 % of labels flipped in each 250-row batch: 12 or 13 rows, under what one batch can
    // show.
    let files = batches(dir.path(), 20, 20);
    let alone = files.iter().filter(|f| check_with(f, None).0 == 0).count();
    assert!(alone >= 15, "only {alone} of 20 pass on their own");
    let ledger = dir.path().join("ledger");
    let mut accepted = 0;
    let mut window_blocks = 0;
    for f in &files {
        let (code, report) = check_with(f, Some(&ledger));
        accepted += usize::from(code == 0);
        let found = window_findings(&report);
        if !found.is_empty() {
            window_blocks += 1;
            let message = found[0]["message"].as_str().unwrap();
            assert!(message.contains("#0 "), "{message}");
            assert_eq!(found[0]["severity"], "deny");
        }
    }
    assert!(
        window_blocks >= 3,
        "the window blocked {window_blocks} batches"
    );
    assert!(accepted < alone, "{accepted} accepted, {alone} pass alone");
    let lines = std::fs::read_to_string(ledger.join("ledger.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), accepted);
}

#[test]
fn clean_batches_are_accepted_in_turn_and_a_tampered_ledger_is_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let files = batches(dir.path(), 8, 0);
    let ledger = dir.path().join("ledger");
    let mut insufficient = Vec::new();
    for f in &files {
        let (code, report) = check_with(f, Some(&ledger));
        assert_eq!(code, 0, "{report:#}");
        assert!(window_findings(&report).is_empty());
        insufficient.push(
            report["findings"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["code"] == "evidence-insufficient")
                .map(|f| f["message"].as_str().unwrap().to_owned()),
        );
    }
    // What the tests could have seen is judged over the window: the first batch alone (a
    // trigger at 1 % is out of reach under 300 rows), then the window, whose 2,000 rows put
    // the trigger in reach and still not 5 % label flips.
    let first = insufficient[0].as_deref().unwrap();
    assert!(
        first.starts_with("at 250 rows") && first.contains("a trigger"),
        "{first}"
    );
    let last = insufficient[7].as_deref().unwrap();
    assert!(
        last.starts_with("over this batch and the 7 accepted before it")
            && last.contains("at 2000 rows")
            && !last.contains("a trigger"),
        "{last}"
    );
    let log = ledger.join("ledger.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.lines().count(), 8);
    let run_on = |what: &str| {
        let mut extra = pinned();
        extra.extend(["--ledger".to_owned(), ledger.to_str().unwrap().to_owned()]);
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let (code, _, out) = check_json(&[files[0].to_str().unwrap()], &extra);
        assert_eq!(code, 2, "{what}: {}", stderr(&out));
        stderr(&out)
    };
    // An edited entry.
    std::fs::write(&log, text.replacen("\"rows\":250", "\"rows\":249", 1)).unwrap();
    assert!(run_on("edited").contains("edited"));
    // A removed entry.
    let without: String = text.lines().skip(1).map(|l| format!("{l}\n")).collect();
    std::fs::write(&log, without).unwrap();
    assert!(run_on("removed").contains("ledger.jsonl"));
    // A changed summary.
    std::fs::write(&log, &text).unwrap();
    let part = ledger.join("parts").join("00000003.part");
    let mut bytes = std::fs::read(&part).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&part, bytes).unwrap();
    assert!(run_on("changed part").contains("changed"));
}
