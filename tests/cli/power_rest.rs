//! The simulations of `power.rs` for the tests it leaves out: the label-flip test with more
//! classes than its likelihood-ratio sample fits, the label-conflict count and the main score
//! of the anomaly count. Each states its detectable effect; batches planted with it are denied
//! in about the stated share of draws.

use polars::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use super::power::{
    TOLERANCE, assert_power, clean_checked, column_test, deny_rate_against, pinned,
    planted_deny_rate, planted_rate, read, set_utilization, write,
};
use crate::common::*;

/// Classes of the multiclass data: more than the likelihood-ratio test fits (five).
const CLASSES: i64 = 7;

/// `n` rows of four standard normal features, a categorical one (the first feature's sign)
/// and a label among [`CLASSES`] drawn from a fixed multinomial logit: each class scores a
/// linear function of the features plus Gumbel noise, the largest wins.
fn multiclass(n: usize, rng: &mut ChaCha8Rng) -> DataFrame {
    // The weights have their own seed: every draw shares the model.
    let mut weights = ChaCha8Rng::seed_from_u64(1);
    let w: Vec<f64> = (0..4 * CLASSES)
        .map(|_| 1.5 * weights.sample::<f64, _>(StandardNormal))
        .collect();
    let mut x: Vec<Vec<f64>> = (0..4).map(|_| Vec::with_capacity(n)).collect();
    let mut y = Vec::with_capacity(n);
    for _ in 0..n {
        let row: Vec<f64> = (0..4).map(|_| rng.sample(StandardNormal)).collect();
        let mut score = |c: i64| {
            let u: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
            let linear: f64 = (0..4)
                .map(|j| row[j] * w[j * CLASSES as usize + c as usize])
                .sum();
            linear - (-u.ln()).ln()
        };
        let scores: Vec<(f64, i64)> = (0..CLASSES).map(|c| (score(c), c)).collect();
        y.push(scores.iter().max_by(|a, b| a.0.total_cmp(&b.0)).unwrap().1);
        row.iter().zip(&mut x).for_each(|(v, col)| col.push(*v));
    }
    let side: Vec<&str> = x[0]
        .iter()
        .map(|&v| if v > 0.0 { "p" } else { "q" })
        .collect();
    df!(
        "a" => &x[0], "b" => &x[1], "c" => &x[2], "d" => &x[3], "side" => side, "y" => y
    )
    .unwrap()
}

/// `df` with each label moved to another class at random with probability `share`.
fn flipped(df: &DataFrame, share: f64, rng: &mut ChaCha8Rng) -> DataFrame {
    let y: Vec<i64> = df
        .column("y")
        .unwrap()
        .i64()
        .unwrap()
        .iter()
        .map(|y| {
            let y = y.unwrap();
            if rng.random::<f64>() < share {
                (y + rng.random_range(1..CLASSES)) % CLASSES
            } else {
                y
            }
        })
        .collect();
    let mut out = df.clone();
    out.replace("y", Column::new("y".into(), y)).unwrap();
    out
}

#[test]
fn the_stated_flip_share_with_many_classes_bounds_what_is_denied() {
    // With seven classes the label test runs its class-stratified rate and surprise tests
    // alone; its stated share takes the two tests' chances as independent (a lower bound on
    // the chance of both), so the share is denied at least about as often as stated, and a
    // share well under it (0.6 times) is denied less often than stated.
    let dir = tempfile::tempdir().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(300);
    let baseline = pinned(dir.path(), &mut multiclass(5_000, &mut rng), "y");
    let code_ = "poison-label-inconsistency";
    for n in [400usize, 1_500, 5_000] {
        let head = multiclass(n, &mut rng);
        let path = dir.path().join(format!("clean_{n}.parquet"));
        write(&mut head.clone(), &path);
        let (exit, report, _) = check_json_with(
            baseline.to_str().unwrap(),
            &[path.to_str().unwrap()],
            &[],
            run,
        );
        assert_eq!(exit, 0, "{report:#}");
        let d = &column_test(&report, code_, "y")["detectable"];
        assert_eq!(d["statistic"], "flip_share", "{d:#}");
        let effect = d["value"].as_f64().unwrap();
        assert!(effect > 0.0 && effect < 0.5, "{d:#}");
        let mut rate_at = |share: f64| {
            deny_rate_against(&baseline, dir.path(), n, code_, "y", || {
                flipped(&head, share, &mut rng)
            })
        };
        let rate = rate_at(effect);
        eprintln!("n = {n}: flip share {effect} ({CLASSES} classes), denied {rate}");
        assert!(
            rate >= 0.8 - TOLERANCE,
            "n = {n}: stated {effect} denied in {rate}"
        );
        let under = rate_at(0.6 * effect);
        eprintln!("n = {n}: flip share {}, denied {under}", 0.6 * effect);
        assert!(under < 0.8, "n = {n}: 0.6 x {effect} denied in {under}");
    }
}

#[test]
fn the_stated_label_conflict_and_anomalous_shares_are_detected_at_the_stated_power() {
    // Two count tests on the bundled batch's first n rows, each planted row by row with the
    // stated probability:
    // - `poison-label-conflict`: the row replaced by a random trusted row whose label is
    //   flipped (its values match a trusted row, its label no matching trusted row has);
    // - `poison-anomalous-rows` (the main score): `utilization` set far above every trusted
    //   value, past the score's cut.
    let clean = read(&testdata("clean/batch.parquet"));
    let trusted = read(&testdata("trusted/applications.parquet"));
    let dir = tempfile::tempdir().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(301);
    type Plant = fn(&DataFrame, &DataFrame, f64, &mut ChaCha8Rng) -> DataFrame;
    let conflict: Plant = |df, trusted, p, rng| {
        let n = df.height();
        let planted: Vec<bool> = (0..n).map(|_| rng.random::<f64>() < p).collect();
        let keep = BooleanChunked::from_iter_values("keep".into(), planted.iter().map(|&x| !x));
        let picks: Vec<IdxSize> = planted
            .iter()
            .filter(|&&x| x)
            .map(|_| rng.random_range(0..trusted.height() as IdxSize))
            .collect();
        let mut resent = trusted.take(&IdxCa::from_vec("idx".into(), picks)).unwrap();
        let relabelled: Vec<i64> = resent
            .column("defaulted")
            .unwrap()
            .i64()
            .unwrap()
            .iter()
            .map(|y| 1 - y.unwrap())
            .collect();
        resent
            .replace("defaulted", Column::new("defaulted".into(), relabelled))
            .unwrap();
        let mut out = df.filter(&keep).unwrap().vstack(&resent).unwrap();
        // Fresh ids, as a resubmitted row would get.
        let ids = df.column("application_id").unwrap().clone();
        out.replace("application_id", ids).unwrap();
        out
    };
    let extreme: Plant = |df, _, p, rng| set_utilization(df, p, rng, |_| 50.0);
    for (code_, plant) in [
        ("poison-label-conflict", conflict),
        ("poison-anomalous-rows", extreme),
    ] {
        // The stated effect is for a batch whose own count sits at the null's rate; these
        // heads of the bundled batch do (each within 1.7 rows of it, p >= 0.3), while the
        // whole batch sits 7.5 anomalous rows above it (p = 0.18), which a fixed batch carries
        // into every draw (98 % denied there).
        for n in [400usize, 1_500, 2_500] {
            let (head, report, _) = clean_checked(&clean, dir.path(), n);
            // The record without a subject value: the main score, not "extreme values".
            let t = report["tests"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["code"] == code_ && t["subject"]["value"].is_null())
                .unwrap_or_else(|| panic!("no {code_} test: {report:#}"))
                .clone();
            let d = &t["detectable"];
            assert_eq!(d["statistic"], "excess_share", "{t:#}");
            let effect = d["value"].as_f64().unwrap();
            let rate = planted_deny_rate(dir.path(), &head, (code_, "value", None), |df| {
                plant(df, &trusted, effect, &mut rng)
            });
            assert_power(n, &format!("{code_} excess_share {effect}"), rate);
        }
    }
}

#[test]
fn the_stated_share_just_outside_a_range_warns_at_the_stated_power() {
    // The count of values just outside a pinned range never denies; it states the share from
    // which it warns. Each row's `utilization` is set, with the stated probability, to a
    // distinct value a hair above the trusted maximum (inside the tolerance band, so not a
    // value far outside).
    let pinned: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(baseline()).unwrap()).unwrap();
    let max = pinned["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "utilization")
        .unwrap()["numeric"]["max"]
        .as_f64()
        .unwrap();
    let clean = read(&testdata("clean/batch.parquet"));
    let dir = tempfile::tempdir().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(302);
    let code_ = "schema-out-of-range";
    for n in [400usize, 1_500, 5_000] {
        let (head, _, _) = clean_checked(&clean, dir.path(), n);
        // The record exists only when a value lands just outside: plant one to read it.
        let mut probe = head.clone();
        let mut u: Vec<Option<f64>> = probe
            .column("utilization")
            .unwrap()
            .f64()
            .unwrap()
            .iter()
            .collect();
        u[0] = Some(max * (1.0 + 1e-9));
        probe
            .replace("utilization", Column::new("utilization".into(), u))
            .unwrap();
        let path = dir.path().join(format!("probe_{n}.parquet"));
        write(&mut probe, &path);
        let (_, report, _) = check_json(&[path.to_str().unwrap()], &[]);
        let t = report["tests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["code"] == code_ && t["subject"]["value"] == "just outside")
            .unwrap_or_else(|| panic!("no just-outside test: {report:#}"))
            .clone();
        let d = &t["detectable"];
        assert_eq!(
            (&d["statistic"], &d["raises"]),
            (&"share".into(), &"warn".into()),
            "{t:#}"
        );
        let effect = d["value"].as_f64().unwrap();
        let rate = planted_rate(
            dir.path(),
            &head,
            (code_, "value", Some("just outside")),
            "warn",
            |df| {
                set_utilization(df, effect, &mut rng, |rng| {
                    max * (1.0 + 1e-9 * (1.0 + rng.random::<f64>()))
                })
            },
        );
        assert_power(n, &format!("{code_} just outside, share {effect}"), rate);
    }
}

#[test]
fn every_test_that_ran_states_what_it_could_have_seen() {
    // At any size every test record but `evidence-insufficient` (which is about the others)
    // carries its detectable effect or was skipped with a reason. At 40 rows no segment and
    // no class holds enough rows to be tested: those records say so and state no effect.
    let clean = read(&testdata("clean/batch.parquet"));
    let dir = tempfile::tempdir().unwrap();
    for n in [40usize, 400, 5_000] {
        let (_, report, _) = clean_checked(&clean, dir.path(), n);
        for t in report["tests"].as_array().unwrap() {
            if t["outcome"] == "skipped" {
                assert!(t["reason"].is_string(), "n = {n}: {t:#}");
            } else if t["code"] != "evidence-insufficient" {
                assert!(t["detectable"]["statistic"].is_string(), "n = {n}: {t:#}");
            }
        }
        if n == 40 {
            for code_ in ["poison-segment-label-shift", "drift-class-conditional"] {
                let t = report["tests"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|t| t["code"] == code_)
                    .unwrap();
                assert!(t["detectable"]["value"].is_null(), "{t:#}");
                let reason = t["reason"].as_str().unwrap();
                assert!(
                    reason.contains("could be") && reason.contains("at this size"),
                    "{t:#}"
                );
            }
        }
    }
}
