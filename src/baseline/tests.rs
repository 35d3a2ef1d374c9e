//! The streamed profile: any split of the rows, folded in any block sizes and merged in any
//! order, gives the same baseline byte for byte; sketched columns keep exact bin counts and
//! bounded quantiles; the sample is bounded and a function of the rows.

use polars::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::accumulate::{Limits, ProfileState};
use super::build::{ProfileOptions, default_calibration, finish, numeric_profile};
use super::to_json;
use crate::summary::{Kind, kind_of};

const ROWS: usize = 6_000;

/// Limits low enough that 6,000 rows reach every bounded path.
fn small() -> Limits {
    Limits {
        exact_values: 1_000,
        sample_rows: 1_500,
        distinct_values: 64,
    }
}

/// A seeded table: a continuous column with nulls and NaN, a count column of 21 values, a
/// wide integer column of 500 values, a category and a label with nulls.
fn table() -> DataFrame {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut x = Vec::with_capacity(ROWS);
    let (mut k, mut w, mut c, mut y) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..ROWS {
        let u: f64 = rng.random::<f64>();
        x.push(match i % 97 {
            0 => None,
            1 => Some(f64::NAN),
            _ => Some((u * 6.0 - 3.0).powi(3) + rng.random::<f64>()),
        });
        k.push(f64::from(rng.random_range(0..21u32)));
        w.push(i64::from(rng.random_range(0..500u32)));
        c.push(["red", "green", "blue", "teal", "plum"][rng.random_range(0..5usize)]);
        let label = if u > 0.6 { "yes" } else { "no" };
        y.push((i % 53 != 0).then_some(if i % 7 == 0 { "maybe" } else { label }));
    }
    df!("x" => x, "k" => k, "w" => w, "c" => c, "y" => y).unwrap()
}

/// The non-null, non-NaN values of a column, sorted.
fn sorted_values(df: &DataFrame, name: &str) -> Vec<f64> {
    let mut v = Vec::new();
    let series = df.column(name).unwrap().as_materialized_series();
    crate::summary::for_each_f64_chunk(series, |x, valid| {
        for (i, &x) in x.iter().enumerate() {
            if valid.is_none_or(|b| b.get_bit(i)) && !x.is_nan() {
                v.push(x);
            }
        }
    })
    .unwrap();
    v.sort_unstable_by(f64::total_cmp);
    v
}

fn opts() -> ProfileOptions {
    ProfileOptions {
        label: Some("y".into()),
        seed: 3,
        model_rows: Some(500),
        ..ProfileOptions::default()
    }
}

fn empty_state(df: &DataFrame, limits: Limits) -> ProfileState {
    let columns: Vec<_> = df
        .columns()
        .iter()
        .map(|c| {
            let kind = if c.name().as_str() == "y" {
                Kind::Categorical
            } else {
                kind_of(c.dtype())
            };
            (c.name().to_string(), c.dtype().clone(), kind)
        })
        .collect();
    ProfileState::with_limits(columns, Some(4), 3, limits)
}

/// The state of rows `[from, to)`, folded in blocks of random sizes.
fn fold(
    df: &DataFrame,
    from: usize,
    to: usize,
    rng: &mut ChaCha8Rng,
    limits: Limits,
) -> ProfileState {
    let mut state = empty_state(df, limits);
    let mut at = from;
    while at < to {
        let len = rng.random_range(1..=900).min(to - at);
        state
            .update(&df.slice(at as i64, len), 0, at as u64)
            .unwrap();
        at += len;
    }
    state
}

fn baseline_bytes(state: ProfileState) -> Vec<u8> {
    let b = finish(state, &opts(), Vec::new(), std::path::Path::new("t")).unwrap();
    to_json(&b).unwrap()
}

#[test]
fn any_split_and_merge_order_give_the_same_baseline() {
    let df = table();
    let limits = small();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let whole = baseline_bytes(fold(&df, 0, ROWS, &mut rng, limits));
    let text = String::from_utf8(whole.clone()).unwrap();
    // The bounded paths ran: a sampled poison profile (and so no membership filter).
    assert!(
        text.contains("\"sample_rows\""),
        "the poison profile was not sampled"
    );
    for trial in 0..6 {
        let parts = 1 + trial * 3;
        let mut cuts: Vec<usize> = (0..parts - 1).map(|_| rng.random_range(0..=ROWS)).collect();
        cuts.push(0);
        cuts.push(ROWS);
        cuts.sort_unstable();
        let mut states: Vec<ProfileState> = cuts
            .windows(2)
            .map(|w| fold(&df, w[0], w[1], &mut rng, limits))
            .collect();
        // A random merge tree: neighbours merge until one state is left.
        while states.len() > 1 {
            let i = rng.random_range(0..states.len() - 1);
            let right = states.remove(i + 1);
            states[i].merge(right).unwrap();
        }
        let merged = baseline_bytes(states.pop().unwrap());
        assert!(
            merged == whole,
            "split into {parts} parts gave another baseline"
        );
    }
}

#[test]
fn below_the_limits_every_column_is_exact_and_every_row_is_fitted() {
    let df = table();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let state = fold(&df, 0, ROWS, &mut rng, Limits::default());
    let b = finish(state, &opts(), Vec::new(), std::path::Path::new("t")).unwrap();
    let poison = b.poison.as_ref().unwrap();
    assert_eq!(poison.sample_rows, None);
    assert!(poison.duplicates.filter.is_some());
    let x = sorted_values(&df, "x");
    let exact = numeric_profile(&x, &default_calibration());
    assert_eq!(b.column("x").unwrap().numeric.as_ref().unwrap(), &exact);
}

#[test]
fn sketched_columns_keep_exact_bin_counts_and_bounded_quantiles() {
    let df = table();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let b = finish(
        fold(&df, 0, ROWS, &mut rng, small()),
        &opts(),
        Vec::new(),
        std::path::Path::new("t"),
    )
    .unwrap();
    let values = |name: &str| sorted_values(&df, name);
    let cal = default_calibration();
    for name in ["x", "k", "w"] {
        let v = values(name);
        let exact = numeric_profile(&v, &cal);
        let got = b.column(name).unwrap().numeric.clone().unwrap();
        assert_eq!(b.column(name).unwrap().count, v.len() as u64);
        // Bin counts are exact counts of `x <= edge` over the sketch's own edges.
        let mut prev = 0usize;
        for (e, &c) in got.edges.iter().zip(&got.counts) {
            let upto = v.partition_point(|&x| x <= *e);
            assert_eq!(c as usize, upto - prev, "{name}: bin count at edge {e}");
            prev = upto;
        }
        assert_eq!(*got.counts.last().unwrap() as usize, v.len() - prev);
        // Each quantile within its bucket's width: 2^-12 of its magnitude.
        for (k, q) in &exact.quantiles {
            let s = got.quantiles[k];
            assert!(
                (s - q).abs() <= 2.5e-4 * q.abs().max(s.abs()) + 1e-12,
                "{name} {k}: sketch {s} vs exact {q}"
            );
        }
        assert!((got.mean - exact.mean).abs() <= 1e-12 * (1.0 + exact.mean.abs()));
        assert!((got.std - exact.std).abs() <= 1e-9 * exact.std);
        assert_eq!((got.min, got.max), (exact.min, exact.max));
    }
    // Few distinct values: the frequent values are the exact path's.
    let k = values("k");
    let exact = numeric_profile(&k, &cal);
    let got = b.column("k").unwrap().numeric.clone().unwrap();
    assert_eq!(
        (got.frequent, got.frequent_bound),
        (exact.frequent, exact.frequent_bound)
    );
    // More distinct values than counted exactly: listed counts are exact and the bound
    // covers every value left out.
    let w = values("w");
    let got = b.column("w").unwrap().numeric.clone().unwrap();
    assert!(!got.frequent.is_empty());
    let count = |x: f64| w.iter().filter(|&&v| v == x).count() as u64;
    for f in &got.frequent {
        assert_eq!(f.count, count(f.value), "listed value {}", f.value);
    }
    for x in (0..500).map(f64::from) {
        if !got.frequent.iter().any(|f| f.value == x) {
            assert!(count(x) <= got.frequent_bound, "value {x} above the bound");
        }
    }
    // Per-class moments from exact sums agree with the shifted sums of the exact path.
    let exact_b = finish(
        fold(&df, 0, ROWS, &mut rng, Limits::default()),
        &opts(),
        Vec::new(),
        std::path::Path::new("t"),
    )
    .unwrap();
    let (lp, le) = (
        b.label_profile.as_ref().unwrap(),
        exact_b.label_profile.as_ref().unwrap(),
    );
    assert_eq!(lp.nulls, le.nulls);
    for (a, e) in lp.classes.iter().zip(&le.classes) {
        assert_eq!((&a.value, a.count), (&e.value, e.count));
        for (col, m) in &e.numeric {
            let s = &a.numeric[col];
            assert_eq!(s.count, m.count);
            assert!(
                (s.mean - m.mean).abs() <= 1e-9 * (1.0 + m.mean.abs()),
                "{col}"
            );
            assert!((s.std - m.std).abs() <= 1e-9 * (1.0 + m.std), "{col}");
        }
    }
}

#[test]
fn the_sample_is_bounded_and_holds_no_filter() {
    let df = table();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let state = fold(&df, 0, ROWS, &mut rng, small());
    let level = state.sample.level;
    let kept: usize = state.sample.frames.iter().map(DataFrame::height).sum();
    assert!(
        level >= 1 && kept <= 1_500 && kept > 1_500 / 4,
        "level {level}, {kept} rows"
    );
    let b = finish(state, &opts(), Vec::new(), std::path::Path::new("t")).unwrap();
    let poison = b.poison.as_ref().unwrap();
    assert_eq!(poison.sample_rows, Some(kept as u64));
    assert!(poison.duplicates.filter.is_none());
    assert_eq!(b.rows, ROWS as u64);
}

/// A state through the bytes of a profile part and back.
fn through_bytes(state: ProfileState) -> ProfileState {
    let part = super::part::ProfilePart {
        header: super::part::ProfilePartHeader {
            format: super::part::PROFILE_PART_FORMAT.into(),
            tool: "t".into(),
            manifest_sha256: String::new(),
            units_total: 1,
            units: vec![0],
            options: opts(),
            inputs: Vec::new(),
        },
        state: Some(state),
    };
    let bytes = part.to_bytes().unwrap();
    let path = std::path::Path::new("p");
    let back = super::part::ProfilePart::from_bytes(path, &bytes).unwrap();
    assert_eq!(back.header, part.header);
    // Truncated or extended bytes are refused, never misread.
    for cut in [MAGIC_LEN, bytes.len() / 2, bytes.len() - 1] {
        assert!(super::part::ProfilePart::from_bytes(path, &bytes[..cut]).is_err());
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(super::part::ProfilePart::from_bytes(path, &longer).is_err());
    back.state.unwrap()
}

const MAGIC_LEN: usize = "poisongate.profile-part/1\n".len();

#[test]
fn parts_written_and_read_back_merge_to_the_same_baseline() {
    let df = table();
    for limits in [small(), Limits::default()] {
        let mut rng = ChaCha8Rng::seed_from_u64(13);
        let whole = baseline_bytes(fold(&df, 0, ROWS, &mut rng, limits));
        let cuts = [0, 1_700, 1_701, 4_000, ROWS];
        let mut states = cuts
            .windows(2)
            .map(|w| through_bytes(fold(&df, w[0], w[1], &mut rng, limits)));
        let mut merged = states.next().unwrap();
        for s in states {
            merged.merge(s).unwrap();
        }
        assert!(baseline_bytes(through_bytes(merged)) == whole);
    }
}
