//! The detectable effect the report states for a count test, checked against the detection
//! rate measured by simulation on the bundled clean batch: at three batch sizes, batches
//! carrying the stated effect are blocked by that test in about the stated share of draws.

use polars::prelude::*;
use rand::{Rng, SeedableRng};
use rand_distr::{Binomial, Distribution};

use crate::common::*;

/// Draws of the simulation per size. At power 0.8 the measured rate's standard error is
/// 0.8 × 0.2 / 60 under the square root, 0.052; the tolerance is 3 of them.
const DRAWS: usize = 60;
const TOLERANCE: f64 = 0.16;

fn write(df: &mut DataFrame, path: &std::path::Path) {
    ParquetWriter::new(std::fs::File::create(path).unwrap())
        .finish(df)
        .unwrap();
}

/// The first `n` rows of the clean batch, with `copies` of its rows replaced by exact copies
/// of other rows (the id column kept, as a resubmitted row would get a fresh id).
fn flooded(clean: &DataFrame, n: usize, copies: usize, rng: &mut impl Rng) -> DataFrame {
    let mut idx: Vec<IdxSize> = (0..n as IdxSize).collect();
    let mut order: Vec<usize> = (0..n).collect();
    for i in 0..copies {
        let j = rng.random_range(i..n);
        order.swap(i, j);
    }
    let (targets, sources) = order.split_at(copies);
    for &t in targets {
        idx[t] = sources[rng.random_range(0..sources.len())] as IdxSize;
    }
    let head = clean.slice(0, n);
    let mut out = head.take(&IdxCa::from_vec("idx".into(), idx)).unwrap();
    let ids = head.column("application_id").unwrap().clone();
    out.replace("application_id", ids).unwrap();
    out
}

fn detectable(report: &serde_json::Value, code: &str, subject: &str) -> (f64, u64) {
    let t = report["tests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["code"] == code && t["subject"]["value"] == subject)
        .unwrap_or_else(|| panic!("no {code} {subject} test: {report:#}"));
    let d = &t["detectable"];
    (
        d["value"].as_f64().unwrap(),
        d["critical_rows"].as_u64().unwrap(),
    )
}

#[test]
fn the_stated_duplicate_flood_effect_is_detected_at_the_stated_power() {
    let clean = ParquetReader::new(std::fs::File::open(testdata("clean/batch.parquet")).unwrap())
        .finish()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(28);
    for n in [400usize, 1_500, 5_000] {
        let path = dir.path().join(format!("clean_{n}.parquet"));
        write(&mut clean.slice(0, n), &path);
        let (exit, report, _) = check_json(&[path.to_str().unwrap()], &[]);
        assert_eq!(exit, 0, "{report:#}");
        let (effect, critical) = detectable(&report, "poison-duplicate-flood", "exact");
        assert!(effect > 0.0 && effect < 0.5, "{effect}");
        // Rows repeated under the stated effect: Binomial(n, effect) of them (the clean
        // rows of this batch repeat none).
        let draws = Binomial::new(n as u64, effect).unwrap();
        let mut blocked = 0;
        for d in 0..DRAWS {
            let copies = draws.sample(&mut rng) as usize;
            let path = dir.path().join(format!("flood_{n}_{d}.parquet"));
            write(&mut flooded(&clean, n, copies, &mut rng), &path);
            let (exit, report, _) = check_json(&[path.to_str().unwrap()], &[]);
            let denied = report["findings"].as_array().unwrap().iter().any(|f| {
                f["code"] == "poison-duplicate-flood"
                    && f["subject"]["value"] == "exact"
                    && f["severity"] == "deny"
            });
            // A flood that reaches the critical count must block (and block with this test).
            if copies as u64 >= critical {
                assert!(denied && exit == 1, "{copies} >= {critical}: {report:#}");
            }
            blocked += usize::from(denied);
        }
        let rate = blocked as f64 / DRAWS as f64;
        eprintln!(
            "n = {n}: effect {effect}, critical {critical} rows, blocked {blocked} of {DRAWS}"
        );
        assert!(
            (rate - 0.8).abs() <= TOLERANCE,
            "n = {n}: stated effect {effect} (critical {critical} rows) blocked {blocked} of {DRAWS}"
        );
    }
}

#[test]
fn the_schema_rate_tests_state_their_detectable_effect_even_when_nothing_rose() {
    let (exit, report, _) = check_json(&[testdata("clean/batch.parquet").to_str().unwrap()], &[]);
    assert_eq!(exit, 0);
    let mut seen = 0;
    for t in report["tests"].as_array().unwrap() {
        let code = t["code"].as_str().unwrap();
        if code != "schema-null-rate" && code != "schema-unseen-category" {
            continue;
        }
        // No candidate on clean data: the test passed without a statistic, yet says what it
        // would have denied (at least its deny threshold, as a share of its rows).
        let d = &t["detectable"];
        let value = d["value"]
            .as_f64()
            .unwrap_or_else(|| panic!("{code}: {t:#}"));
        let deny = if code == "schema-null-rate" {
            0.1
        } else {
            0.05
        };
        assert!(value >= deny && value < 0.2, "{code}: {t:#}");
        assert!(d["critical_rows"].as_u64().unwrap() > 0, "{t:#}");
        seen += 1;
    }
    // Nine columns' null rates, four categorical columns' unseen values.
    assert_eq!(seen, 13, "{report:#}");
}
