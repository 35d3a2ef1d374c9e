//! Range findings that mean something on small baselines: a 3 % rescale warns at most, values
//! far outside deny, a policy's hard domain denies any value outside it, and the report lists
//! the range tests that passed.

use std::fmt::Write as _;
use std::path::Path;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal, Normal};

use crate::common::*;

/// `rows` rows of a lognormal `amount`, a normal `score` and a category, as CSV; `f` edits
/// each row's amount.
fn table(path: &Path, rows: usize, seed: u64, f: impl Fn(usize, f64) -> f64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let amount = LogNormal::new(3.0, 0.4).unwrap();
    let score = Normal::new(0.0, 1.0).unwrap();
    let mut s = String::from("amount,score,kind\n");
    for i in 0..rows {
        let a = f(i, amount.sample(&mut rng));
        let z: f64 = score.sample(&mut rng);
        let kind = ["a", "b", "c"][i % 3];
        let _ = writeln!(s, "{a:.4},{z:.4},{kind}");
    }
    std::fs::write(path, s).unwrap();
}

fn range_findings(report: &serde_json::Value) -> Vec<(String, String)> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["code"].as_str().unwrap().starts_with("schema-out-of"))
        .map(|f| {
            (
                f["severity"].as_str().unwrap().to_owned(),
                f["subject"]["value"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_three_percent_rescale_on_a_small_baseline_passes_and_far_values_deny() {
    let dir = tempfile::tempdir().unwrap();
    let trusted = dir.path().join("trusted.csv");
    table(&trusted, 250, 1, |_, a| a);
    let base = dir.path().join("baseline.json");
    let out = run(&[
        "profile",
        trusted.to_str().unwrap(),
        "-o",
        base.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let base = base.to_str().unwrap();
    let mut warned = 0;
    for seed in 0..20 {
        let batch = dir.path().join(format!("rescaled-{seed}.csv"));
        table(&batch, 300, 100 + seed, |_, a| 1.03 * a);
        let (exit, report, out) = check_json_with(base, &[batch.to_str().unwrap()], &[], run);
        assert_eq!(
            exit,
            0,
            "seed {seed}: {:?} {}",
            findings(&report),
            stderr(&out)
        );
        let ranges = range_findings(&report);
        assert!(ranges.iter().all(|(sev, _)| sev == "warn"), "{ranges:?}");
        let tests = report["tests"].as_array().unwrap();
        // The rescale does push values just past the trusted maximum (a test ran on them).
        warned += usize::from(tests.iter().any(|t| {
            t["code"] == "schema-out-of-range"
                && t["subject"]["column"] == "amount"
                && t["subject"]["value"] == "just outside"
        }));
        // Every column's range test is in the report, fired or not.
        assert!(
            tests
                .iter()
                .any(|t| t["code"] == "schema-out-of-range" && t["subject"]["column"] == "score"),
            "no range test recorded for `score`"
        );
    }
    assert!(
        warned >= 10,
        "only {warned} of 20 rescaled batches went past the maximum"
    );

    // 5 % of the rows at three times the trusted scale: far outside, denied.
    let batch = dir.path().join("far.csv");
    table(&batch, 300, 7, |i, a| {
        if i % 20 == 0 { 3.0 * a + 200.0 } else { a }
    });
    let (exit, report, _) = check_json_with(base, &[batch.to_str().unwrap()], &[], run);
    assert_eq!(exit, 1);
    // The far values fire the range test of `amount`, and the row-level extreme-value test
    // (conformal, so stronger than the column's distribution-free bound) denies and names
    // the column.
    let tests = report["tests"].as_array().unwrap();
    let far = tests
        .iter()
        .find(|t| {
            t["code"] == "schema-out-of-range"
                && t["subject"]["column"] == "amount"
                && t["subject"]["value"] == "far outside"
        })
        .expect("a far-outside range test of `amount`");
    assert!(far["p_value"].as_f64().unwrap() < 1e-3, "{far}");
    let extreme = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "poison-anomalous-rows" && f["subject"]["value"] == "extreme values")
        .expect("an extreme-values finding");
    assert_eq!(extreme["severity"], "deny");
    assert!(
        extreme["message"]
            .as_str()
            .unwrap()
            .contains("`amount` in 15"),
        "{extreme}"
    );
}

#[test]
fn a_hard_domain_denies_any_value_outside_it_and_must_name_a_column() {
    let dir = tempfile::tempdir().unwrap();
    let trusted = dir.path().join("trusted.csv");
    table(&trusted, 400, 2, |_, a| a);
    let base = dir.path().join("baseline.json");
    assert_eq!(
        code(&run(&[
            "profile",
            trusted.to_str().unwrap(),
            "-o",
            base.to_str().unwrap()
        ])),
        0
    );
    let base = base.to_str().unwrap();
    // One negative amount in 300 rows: inside any tolerance, outside the domain.
    let batch = dir.path().join("batch.csv");
    table(&batch, 300, 3, |i, a| if i == 5 { -1.0 } else { a });
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[domains.amount]\nmin = 0\n\n[domains.kind]\ncategories = [\"a\", \"b\", \"c\"]\n",
    )
    .unwrap();
    let p = ["--policy", policy.to_str().unwrap()];
    let (exit, report, _) = check_json_with(base, &[batch.to_str().unwrap()], &p, run);
    assert_eq!(exit, 1);
    let f: Vec<_> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["code"] == "schema-out-of-domain")
        .collect();
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0]["subject"]["column"], "amount");
    assert_eq!(f[0]["evidence"]["rows_flagged"], 1.0);
    // Without the policy the same batch passes.
    let (exit, _, _) = check_json_with(base, &[batch.to_str().unwrap()], &[], run);
    assert_eq!(exit, 0);
    // A domain for a column the baseline lacks, or of the wrong kind, is exit 2.
    for bad in [
        "[domains.nope]\nmin = 0\n",
        "[domains.amount]\ncategories = [\"x\"]\n",
        "[domains.kind]\nmax = 3\n",
        "[domains.amount]\nmin = 5\nmax = 1\n",
    ] {
        std::fs::write(&policy, bad).unwrap();
        let (exit, _, out) = check_json_with(base, &[batch.to_str().unwrap()], &p, run);
        assert_eq!(exit, 2, "{bad}: {}", stderr(&out));
        assert!(stderr(&out).contains("domains."), "{}", stderr(&out));
    }
}
