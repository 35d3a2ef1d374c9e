//! The detector anatomy: every row-level accumulator of the registry gives the same state,
//! and so the same candidates, whatever the split of the batch into parts (1 to 16, with
//! empty, one-row, all-null and skewed parts) and whatever the order and tree in which the
//! parts' states are merged.

use foldhash::{HashMap, HashMapExt};
use poisongate::baseline::{self, Baseline, ProfileOptions};
use poisongate::detect::Accumulator;
use poisongate::poison::duplicates::{Bloom, DuplicateState};
use poisongate::poison::{Block, Pinned, Scan, ScanFold, ScanState, States};
use poisongate::policy::Policy;
use poisongate::rows::mix;
use poisongate::source::{self, read_batch};
use polars::prelude::*;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::common::testdata;

fn baseline() -> Baseline {
    let files = source::resolve(
        &[testdata("trusted/applications.parquet")
            .to_str()
            .unwrap()
            .to_owned()],
        None,
    )
    .unwrap();
    let batch = read_batch(&files).unwrap();
    let opts = ProfileOptions {
        label: Some("defaulted".into()),
        id: Some("application_id".into()),
        seed: 7,
        ..ProfileOptions::default()
    };
    baseline::profile(&batch, &opts).unwrap()
}

/// An attacked batch (relabelled segment, so every detector has something to count), with
/// 50 all-null rows and one row of the clean batch appended.
fn batch() -> DataFrame {
    let read = |rel: &str| {
        let files = source::resolve(&[testdata(rel).to_str().unwrap().to_owned()], None).unwrap();
        read_batch(&files).unwrap().frames.remove(0)
    };
    let attacked = read("poison/segment_north.parquet");
    let clean = read("clean/batch.parquet");
    let nulls = DataFrame::new(
        50,
        attacked
            .columns()
            .iter()
            .map(|c| Column::full_null(c.name().clone(), 50, c.dtype()))
            .collect(),
    )
    .unwrap();
    let mut all = attacked.vstack(&nulls).unwrap();
    all = all.vstack(&clean.slice(0, 1)).unwrap();
    all.rechunk_mut();
    all
}

fn columns(df: &DataFrame) -> Vec<String> {
    df.get_column_names()
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// The fold of some rows, as one window of blocks of at most `block` rows.
fn fold(base: &Baseline, usable: &[String], df: &DataFrame, block: usize) -> ScanState {
    let mut f = ScanFold::new(&base.view(), usable).unwrap();
    let blocks: Vec<DataFrame> = (0..df.height())
        .step_by(block.max(1))
        .map(|o| df.slice(o as i64, block.min(df.height() - o)))
        .collect();
    if !blocks.is_empty() {
        f.update(&blocks, 0).unwrap();
    }
    f.into_state()
}

/// The candidates of the registry's detectors on a finished scan, as text.
fn candidates(base: &Baseline, filter: Option<&Bloom>, scan: &Scan) -> String {
    let profile = base.poison.as_ref().unwrap();
    let pinned = Pinned {
        baseline: base.view(),
        profile,
        filter,
    };
    format!(
        "{:?}",
        scan.states
            .candidates(&pinned, scan, &Policy::default().checks.rows)
    )
}

fn finish(base: &Baseline, usable: &[String], state: ScanState) -> Scan {
    let mut f = ScanFold::new(&base.view(), usable).unwrap();
    f.absorb(state).unwrap();
    f.finish()
}

#[test]
fn every_accumulator_gives_one_state_for_any_split_and_merge_tree() {
    let base = baseline();
    let profile = base.poison.as_ref().unwrap();
    let filter = profile.duplicates.unsealed_filter();
    let pinned = Pinned {
        baseline: base.view(),
        profile,
        filter: filter.as_ref(),
    };
    let df = batch();
    let usable = columns(&df);
    let one = fold(&base, &usable, &df, 65_536);
    let one_json = serde_json::to_string(&one.states).unwrap();
    // Every detector of the registry holds a state on this baseline.
    let v: serde_json::Value = serde_json::from_str(&one_json).unwrap();
    for field in ["label", "tables", "anomaly", "duplicates", "values"] {
        assert!(v.get(field).is_some(), "{field} has no state: {one_json}");
    }
    let want = candidates(&base, filter.as_ref(), &finish(&base, &usable, one.clone()));
    assert!(
        want.contains("poison-segment-label-shift"),
        "the fixture should give candidates: {want}"
    );
    let mut rng = ChaCha8Rng::seed_from_u64(25);
    let n = df.height();
    for round in 0..12 {
        // 1 to 16 parts at random cuts; an empty part and a one-row part in every round,
        // block sizes from one row to the whole part.
        let parts = rng.random_range(1..=16usize);
        let mut cuts: Vec<usize> = (0..parts.saturating_sub(1))
            .map(|_| rng.random_range(0..=n))
            .collect();
        cuts.extend([0, 1, n, n]);
        cuts.sort_unstable();
        let states: Vec<ScanState> = cuts
            .windows(2)
            .map(|w| {
                let part = df.slice(w[0] as i64, w[1] - w[0]);
                let block = rng.random_range(1..=part.height().max(1));
                // Each part numbers its rows from 0; its state is renumbered to its place.
                let mut s = fold(&base, &usable, &part, block);
                s.states.shift_rows(w[0] as u64);
                s
            })
            .collect();
        // Nothing is kept per row: the row counts add up, and the accumulators merge in a
        // random tree (pairs picked at random until one state is left).
        let mut rows = ScanState::default();
        for s in &states {
            rows.n += s.n;
        }
        let mut pool: Vec<States> = states.into_iter().map(|s| s.states).collect();
        while pool.len() > 1 {
            let a = pool.swap_remove(rng.random_range(0..pool.len()));
            let i = rng.random_range(0..pool.len());
            pool[i].merge(&pinned, a).unwrap();
        }
        let merged = pool.pop().unwrap();
        assert_eq!(
            serde_json::to_string(&merged).unwrap(),
            one_json,
            "round {round}: {parts} parts at {cuts:?}"
        );
        // The label test's sample is a set until the pass finishes (it is kept in key
        // order then); it is not part of the JSON state (a part stores it as binary).
        let sample = |s: &States| {
            let mut v: Vec<(u64, u16)> = s
                .label
                .as_ref()
                .map(|l| l.sample.iter().map(|r| (r.key, r.label)).collect())
                .unwrap_or_default();
            v.sort_unstable();
            v
        };
        assert!(
            sample(&merged) == sample(&one.states),
            "round {round}: samples differ"
        );
        rows.states = merged;
        assert_eq!(rows.n, one.n, "round {round}: row counts differ");
        let got = candidates(&base, filter.as_ref(), &finish(&base, &usable, rows));
        assert!(
            got == want,
            "round {round}: candidates differ:\n{got}\n{want}"
        );
    }
}

#[test]
fn a_state_of_another_shape_is_refused() {
    let base = baseline();
    let df = batch();
    let usable = columns(&df);
    let mut state = fold(&base, &usable, &df.slice(0, 100), 100);
    state.states.tables.as_mut().unwrap().tables[0].push(1);
    let mut f = ScanFold::new(&base.view(), &usable).unwrap();
    let e = f.absorb(state).unwrap_err();
    assert!(e.contains("tables"), "{e}");
    let mut state = fold(&base, &usable, &df.slice(0, 100), 100);
    state.states.anomaly = None;
    let mut f = ScanFold::new(&base.view(), &usable).unwrap();
    assert!(f.absorb(state).unwrap_err().contains("anomaly"));
}

/// A block of rows given by (near, exact, label); only what the state reads is set.
fn block(rows: &[(u64, u64, u16)]) -> Block {
    let e = poisongate::rows::Encoded {
        n: rows.len(),
        label: rows.iter().map(|r| r.2).collect(),
        fp_near: rows.iter().map(|r| r.0).collect(),
        fp_exact: rows.iter().map(|r| r.1).collect(),
        ..Default::default()
    };
    Block {
        first: 0,
        e,
        p: Vec::new(),
        pred: Vec::new(),
        probs: Vec::new(),
        expected: Vec::new(),
        inside: Vec::new(),
        outside: Vec::new(),
        anomaly: Vec::new(),
        extreme: Vec::new(),
        extreme_by_feature: Vec::new(),
        stitched: Vec::new(),
        stitched_cut: f64::INFINITY,
        sample_below: u64::MAX,
    }
}

fn fold_dups(rows: &[(u64, u64, u16)], cap: usize, p: &Pinned<'_>) -> DuplicateState {
    let mut s = DuplicateState::with_cap(cap);
    for chunk in rows.chunks(97) {
        s.update(p, &block(chunk));
    }
    s
}

/// Rows with repeats: near cells of 1-4 exact variants, copies of 1-3, mixed labels.
fn rows(n: usize, seed: u64) -> Vec<(u64, u64, u16)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let near = mix(rng.random::<u64>());
        for v in 0..rng.random_range(1..=4u64) {
            let exact = mix(near ^ v);
            for _ in 0..rng.random_range(1..=3) {
                out.push((near, exact, rng.random_range(0..2u16)));
            }
        }
    }
    out.truncate(n);
    out.shuffle(&mut rng);
    out
}

#[test]
fn duplicate_state_is_exact_then_a_split_invariant_sample() {
    let base = baseline();
    let p = Pinned {
        baseline: base.view(),
        profile: base.poison.as_ref().unwrap(),
        filter: None,
    };
    let all = rows(20_000, 3);
    // Exact below the cap: the counts are those of a plain count of every row.
    let exact = fold_dups(&all, 1 << 20, &p);
    assert_eq!(exact.level, 0);
    let mut by_exact: HashMap<u64, (u64, Vec<u16>)> = HashMap::new();
    let mut by_near: HashMap<u64, u64> = HashMap::new();
    for &(near, ex, y) in &all {
        let e = by_exact.entry(ex).or_default();
        e.0 += 1;
        e.1.push(y);
        *by_near.entry(near).or_default() += 1;
    }
    let c = exact.counts();
    assert_eq!(c.sampled_rows, all.len() as u64);
    assert_eq!(c.exact, by_exact.values().map(|v| v.0 - 1).sum::<u64>());
    assert_eq!(c.near_all, by_near.values().map(|v| v - 1).sum::<u64>());
    let mixed: u64 = by_exact
        .values()
        .filter(|v| v.1.iter().any(|&y| y != v.1[0]))
        .map(|v| v.0)
        .sum();
    assert_eq!(c.exact_mixed, mixed);
    // Past a small cap: a sample whose state is the same for any split and merge order.
    let cap = 1000;
    let one = fold_dups(&all, cap, &p);
    assert!(one.level > 0 && one.groups.len() <= cap, "{}", one.level);
    let one_json = serde_json::to_string(&one).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    for _ in 0..6 {
        let parts = rng.random_range(1..=16usize);
        let mut cuts: Vec<usize> = (0..parts)
            .map(|_| rng.random_range(0..=all.len()))
            .collect();
        cuts.extend([0, all.len()]);
        cuts.sort_unstable();
        let mut pool: Vec<DuplicateState> = cuts
            .windows(2)
            .map(|w| fold_dups(&all[w[0]..w[1]], cap, &p))
            .collect();
        while pool.len() > 1 {
            let a = pool.swap_remove(rng.random_range(0..pool.len()));
            let i = rng.random_range(0..pool.len());
            pool[i].merge(&p, a).unwrap();
        }
        assert_eq!(serde_json::to_string(&pool[0]).unwrap(), one_json);
    }
    // The sample's repeated share estimates the batch's.
    let s = one.counts();
    let share = |k: u64, n: u64| k as f64 / n as f64;
    assert!(
        (share(s.exact, s.sampled_rows) - share(c.exact, c.sampled_rows)).abs() < 0.03,
        "{s:?} {c:?}"
    );
    // The flood test of a sampled state says so, and tests the sampled rows.
    let found = poisongate::poison::duplicates::candidates(
        &base.poison.as_ref().unwrap().duplicates,
        &one,
        &Policy::default().checks.rows,
    );
    let flood = &found[0].0;
    assert_eq!(flood.code, "poison-duplicate-flood");
    assert!(
        flood
            .describe
            .contains("in a hash sample of the batch's 20000"),
        "{}",
        flood.describe
    );
    assert_eq!(flood.evidence["sampled_rows"], s.sampled_rows as f64);
    assert_eq!(flood.n, 20_000);
    // A state round-trips through its serialised form, and another cap is refused.
    let back: DuplicateState = serde_json::from_str(&one_json).unwrap();
    assert_eq!(back, one);
    let mut other = DuplicateState::with_cap(cap + 1);
    assert!(other.merge(&p, one).is_err());
}

fn read(rel: &str) -> DataFrame {
    let files = source::resolve(&[testdata(rel).to_str().unwrap().to_owned()], None).unwrap();
    let mut df = read_batch(&files).unwrap().frames.remove(0);
    df.rechunk_mut();
    df
}

/// Value key to (value, rows), in key order.
type Counts = std::collections::BTreeMap<u64, (f64, u64)>;

/// Per numeric feature of the profile, every value's exact count in `df`, by brute force.
fn exact_counts(base: &Baseline, df: &DataFrame) -> Vec<(usize, Counts)> {
    let profile = base.poison.as_ref().unwrap();
    let mut out = Vec::new();
    for (j, name) in profile.features.iter().enumerate() {
        if base.column(name).and_then(|c| c.numeric.as_ref()).is_none() {
            continue;
        }
        let s = df.column(name).unwrap().cast(&DataType::Float64).unwrap();
        let mut m = Counts::new();
        for x in s.f64().unwrap().iter().flatten() {
            if !x.is_nan() {
                m.entry(poisongate::rows::value_key(x)).or_insert((x, 0)).1 += 1;
            }
        }
        out.push((j, m));
    }
    out
}

/// The row pass's value counts call for a second read exactly when some numeric value can
/// pass the point-mass pre-screen: never on the clean batch, and always for every such value
/// (checked against brute-force counts of every value) on batches with a stamped value.
#[test]
fn value_counts_ask_for_every_value_that_can_pass_and_nothing_on_a_clean_batch() {
    use poisongate::poison::point_mass::{MIN_RATIO, MIN_SHARE, wanted};
    let base = baseline();
    for (rel, planted) in [
        ("clean/batch.parquet", None),
        ("poison/trigger_utilization.parquet", Some("utilization")),
        ("poison/duplicates.parquet", None),
        ("poison/outliers.parquet", None),
    ] {
        let df = read(rel);
        let usable = columns(&df);
        let scan = finish(&base, &usable, fold(&base, &usable, &df, 4096));
        let want = wanted(&base.view(), &scan);
        let n = df.height() as f64;
        let mut passing = 0;
        for (j, counts) in exact_counts(&base, &df) {
            let name = &base.poison.as_ref().unwrap().features[j];
            let p = base.column(name).unwrap().numeric.as_ref().unwrap();
            let trusted = p.counts.iter().sum::<u64>() as f64;
            for (&key, &(x, k)) in &counts {
                let tc = p
                    .frequent
                    .iter()
                    .rev()
                    .find(|v| poisongate::rows::value_key(v.value) == key)
                    .map_or(p.frequent_bound, |v| v.count);
                let share = (tc as f64 + 0.5) / (trusted + 1.0);
                let kf = k as f64;
                if kf >= 3.0 && kf / n >= MIN_SHARE && kf / n >= MIN_RATIO * share {
                    passing += 1;
                    let w = want.iter().find(|w| w.feature == j);
                    assert!(
                        w.is_some_and(|w| w.wants(key)),
                        "{rel}: `{name}` = {x} ({k} rows) can pass but is not read"
                    );
                }
            }
        }
        match planted {
            None if rel.starts_with("clean") => {
                assert!(
                    want.is_empty(),
                    "{rel}: a clean batch asks for a second read"
                );
            }
            Some(col) => {
                assert!(passing > 0, "{rel}: the fixture has no stamped value");
                assert!(
                    want.iter().any(|w| w.column == col),
                    "{rel}: {col} not read"
                );
            }
            None => {}
        }
    }
}

/// The `crate::` modules that a Rust file under `dir` names in code (comments left out).
fn imports(dir: &std::path::Path, out: &mut Vec<(String, String)>) {
    let entries = if dir.is_dir() {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    } else {
        vec![dir.to_path_buf()]
    };
    for path in entries {
        if path.is_dir() {
            imports(&path, out);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            for (i, _) in code.match_indices("crate::") {
                let module: String = code[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                out.push((path.display().to_string(), module));
            }
        }
    }
}

/// The layering the detector anatomy promises: the detectors read their pinned data
/// (`pinned`, `poison::BaselineView`) and their policy sections (`detect::rules`) without
/// importing the baseline artifact, the policy, the decision layer or the CLI; and what every
/// check shares (`detect`, `pinned`, `rows`) imports no detector either.
#[test]
fn no_import_runs_from_the_detectors_up() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let above = [
        "baseline", "policy", "check", "cli", "report", "compare", "ledger", "shard", "output",
    ];
    let mut seen = Vec::new();
    imports(&src.join("poison"), &mut seen);
    let detectors = seen.len();
    for low in ["detect", "pinned", "rows.rs"] {
        imports(&src.join(low), &mut seen);
    }
    assert!(detectors > 50, "the walk found the detectors' imports");
    let upward: Vec<&(String, String)> = seen
        .iter()
        .enumerate()
        .filter(|(i, (_, m))| above.contains(&m.as_str()) || (*i >= detectors && m == "poison"))
        .map(|(_, x)| x)
        .collect();
    assert!(upward.is_empty(), "imports running upward: {upward:?}");
}
