//! The detector anatomy: every row-level accumulator of the registry gives the same state,
//! and so the same candidates, whatever the split of the batch into parts (1 to 16, with
//! empty, one-row, all-null and skewed parts) and whatever the order and tree in which the
//! parts' states are merged.

use poisongate::baseline::{self, Baseline, ProfileOptions};
use poisongate::poison::{Pinned, Scan, ScanFold, ScanState, States, duplicates::Bloom};
use poisongate::policy::Policy;
use poisongate::source::{self, read_batch};
use polars::prelude::*;
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
    let mut f = ScanFold::new(base, usable).unwrap();
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
        baseline: base,
        profile,
        filter,
    };
    format!(
        "{:?}",
        scan.states.candidates(&pinned, scan, &Policy::default())
    )
}

fn finish(base: &Baseline, usable: &[String], state: ScanState) -> Scan {
    let mut f = ScanFold::new(base, usable).unwrap();
    f.absorb(state).unwrap();
    f.finish()
}

#[test]
fn every_accumulator_gives_one_state_for_any_split_and_merge_tree() {
    let base = baseline();
    let profile = base.poison.as_ref().unwrap();
    let filter = profile.duplicates.unsealed_filter();
    let pinned = Pinned {
        baseline: &base,
        profile,
        filter: filter.as_ref(),
    };
    let df = batch();
    let usable = columns(&df);
    let one = fold(&base, &usable, &df, 65_536);
    let one_json = serde_json::to_string(&one.states).unwrap();
    // Every detector of the registry holds a state on this baseline.
    let v: serde_json::Value = serde_json::from_str(&one_json).unwrap();
    for field in ["label", "tables", "anomaly", "duplicates"] {
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
                fold(&base, &usable, &part, block)
            })
            .collect();
        // The per-row log is concatenated in batch order; the accumulators merge in a random
        // tree (pairs picked at random until one state is left).
        let mut rows = ScanState::default();
        for s in &states {
            rows.rows.append(s.rows.clone()).unwrap();
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
        // (Debug text, as unlabelled rows hold NaN, which is not equal to itself.)
        assert!(
            format!("{:?}", rows.rows) == format!("{:?}", one.rows),
            "round {round}: per-row logs differ"
        );
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
    let mut f = ScanFold::new(&base, &usable).unwrap();
    let e = f.absorb(state).unwrap_err();
    assert!(e.contains("tables"), "{e}");
    let mut state = fold(&base, &usable, &df.slice(0, 100), 100);
    state.states.anomaly = None;
    let mut f = ScanFold::new(&base, &usable).unwrap();
    assert!(f.absorb(state).unwrap_err().contains("anomaly"));
}
