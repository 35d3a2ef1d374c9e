//! Criterion benchmarks of the hot kernels: profiling, summarising a batch against pinned
//! edges (numeric and categorical), the clean-batch null simulation, and the row-level pass
//! of the poisoning detectors (encoding, reference-model and anomaly scores) and their
//! decisions, the model comparison of `compare`, and the sharded path (a unit's summary, merging
//! summaries and parts, and completing a merged part).
//!
//! `cargo bench --bench kernels`; the end-to-end figure on 10M rows is `benches/e2e/run.sh`.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use poisongate::baseline::{self, ProfileOptions};
use poisongate::check;
use poisongate::source::Rows;
use poisongate::source::{Batch, Format, InputMeta};
use poisongate::summary::{
    BatchSummary, CategoricalPlan, CategoricalSummary, NumericPlan, NumericSummary,
    for_each_str_chunk,
};
use polars::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const ROWS: usize = 1_000_000;

fn frame(rows: usize, seed: u64) -> DataFrame {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut cols = Vec::new();
    for c in 0..4 {
        let v: Vec<f64> = (0..rows)
            .map(|_| rng.random::<f64>() * f64::from(c + 1))
            .collect();
        cols.push(Column::new(format!("n{c}").into(), v));
    }
    let cats: Vec<String> = (0..50).map(|k| format!("cat{k}")).collect();
    let v: Vec<&str> = (0..rows)
        .map(|_| cats[rng.random_range(0..50)].as_str())
        .collect();
    cols.push(Column::new("c0".into(), v));
    DataFrame::new(rows, cols).unwrap()
}

fn batch(df: DataFrame) -> Batch {
    let rows = df.height() as u64;
    let meta = InputMeta {
        path: "bench".into(),
        format: Format::Parquet,
        sha256: String::new(),
        bytes: 0,
        rows,
        object: None,
    };
    Batch {
        frames: vec![df],
        inputs: vec![meta],
    }
}

fn kernels(c: &mut Criterion) {
    let trusted = batch(frame(ROWS, 1));
    let base = baseline::profile(&trusted, &ProfileOptions::default()).unwrap();
    let current = frame(ROWS, 2);

    let mut g = c.benchmark_group("profile");
    g.throughput(Throughput::Elements(ROWS as u64));
    g.sample_size(10);
    g.bench_function("5 columns", |b| {
        b.iter(|| baseline::profile(black_box(&trusted), &ProfileOptions::default()).unwrap())
    });
    g.finish();

    let col = base.column("n0").unwrap().numeric.clone().unwrap();
    let plan = NumericPlan::new(col.edges.clone(), col.mean, col.min, col.max);
    let values: Vec<f64> = current
        .column("n0")
        .unwrap()
        .f64()
        .unwrap()
        .into_no_null_iter()
        .collect();
    let mut g = c.benchmark_group("summarise");
    g.throughput(Throughput::Elements(ROWS as u64));
    g.bench_function("numeric column, 99 edges", |b| {
        b.iter(|| {
            let mut s = NumericSummary::new(&plan);
            s.update(&plan, black_box(&values), None);
            s
        });
    });
    let cat = base.column("c0").unwrap().categorical.clone().unwrap();
    let cplan = CategoricalPlan {
        domain: cat.domain.iter().cloned().collect(),
        cap_unseen: true,
    };
    let series = current
        .column("c0")
        .unwrap()
        .as_materialized_series()
        .clone();
    g.bench_function("categorical column, 50 values", |b| {
        b.iter(|| {
            let mut s = CategoricalSummary::default();
            for_each_str_chunk(black_box(&series), |arr| s.update(&cplan, arr)).unwrap();
            s
        });
    });
    let usable: Vec<String> = base.columns.iter().map(|c| c.name.clone()).collect();
    let plans = check::plans(&base, &usable, &poisongate::policy::Policy::default());
    g.bench_function("whole frame, 5 columns", |b| {
        b.iter_batched(
            || BatchSummary::new(&plans),
            |mut s| {
                s.update(black_box(&current), &plans).unwrap();
                s
            },
            BatchSize::LargeInput,
        );
    });
    g.finish();

    let mut summary = BatchSummary::new(&plans);
    summary.update(&current, &plans).unwrap();
    let policy = poisongate::policy::Policy::default();
    let mut g = c.benchmark_group("decide");
    g.bench_function("5 columns incl. null simulation", |b| {
        b.iter(|| check::evaluate(&base, &policy, black_box(&summary), Vec::new()).unwrap());
    });
    g.finish();
}

/// `frame` plus a label that depends on two features (so the reference model has something to
/// learn).
fn labelled(rows: usize, seed: u64) -> DataFrame {
    let mut df = frame(rows, seed);
    let n0 = df.column("n0").unwrap().f64().unwrap().clone();
    let n1 = df.column("n1").unwrap().f64().unwrap().clone();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 99);
    let y: Vec<i64> = n0
        .into_no_null_iter()
        .zip(n1.into_no_null_iter())
        .map(|(a, b)| i64::from(a + 0.5 * b + 0.3 * rng.random::<f64>() > 1.0))
        .collect();
    df.with_column(Column::new("y".into(), y)).unwrap();
    df
}

/// `update` with one 65,536-row block and `merge` of two states, per accumulator of the
/// registry.
fn accumulators(c: &mut Criterion) {
    use poisongate::detect::Accumulator;
    use poisongate::poison::{
        Block, Pinned, ScanFold, duplicates::DuplicateState, inconsistency::LabelState,
        outliers::AnomalyState, point_mass::ValueCounts, tables::ClassTables,
    };
    fn one<S: for<'a> Accumulator<Pinned<'a>, Block> + Clone>(
        g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
        name: &str,
        pinned: &Pinned<'_>,
        block: &Block,
    ) {
        g.bench_function(format!("{name}: update, 65,536 rows"), |b| {
            b.iter_batched(
                || S::new(pinned).unwrap(),
                |mut s| {
                    s.update(pinned, black_box(block));
                    s
                },
                BatchSize::SmallInput,
            )
        });
        let mut full = S::new(pinned).unwrap();
        full.update(pinned, block);
        g.bench_function(format!("{name}: merge"), |b| {
            b.iter_batched(
                || (full.clone(), full.clone()),
                |(mut a, o)| {
                    a.merge(pinned, black_box(o)).unwrap();
                    a
                },
                BatchSize::SmallInput,
            )
        });
    }
    let opts = ProfileOptions {
        label: Some("y".into()),
        seed: 7,
        ..ProfileOptions::default()
    };
    let base = baseline::profile(&batch(labelled(200_000, 1)), &opts).unwrap();
    let usable: Vec<String> = base.columns.iter().map(|c| c.name.clone()).collect();
    let fold = ScanFold::new(&base.view(), &usable).unwrap();
    let block = fold.block(&labelled(65_536, 2), 0).unwrap();
    let pinned = fold.pinned();
    let mut g = c.benchmark_group("accumulators");
    g.throughput(Throughput::Elements(65_536));
    one::<LabelState>(&mut g, "label test", &pinned, &block);
    one::<ClassTables>(&mut g, "class tables", &pinned, &block);
    one::<AnomalyState>(&mut g, "anomaly counts", &pinned, &block);
    one::<DuplicateState>(
        &mut g,
        "duplicate groups and label conflicts",
        &pinned,
        &block,
    );
    one::<ValueCounts>(&mut g, "value counts", &pinned, &block);
    g.finish();
}

fn poison(c: &mut Criterion) {
    let opts = ProfileOptions {
        label: Some("y".into()),
        seed: 7,
        ..ProfileOptions::default()
    };
    let small = batch(labelled(100_000, 1));
    let mut g = c.benchmark_group("poison");
    g.sample_size(10);
    g.throughput(Throughput::Elements(100_000));
    g.bench_function("profile with reference model, 100k rows", |b| {
        b.iter(|| baseline::profile(black_box(&small), &opts).unwrap())
    });
    let trusted = batch(labelled(ROWS, 1));
    let base = baseline::profile(&trusted, &opts).unwrap();
    let current = labelled(ROWS, 2);
    let usable: Vec<String> = base.columns.iter().map(|c| c.name.clone()).collect();
    let plans = check::plans(&base, &usable, &poisongate::policy::Policy::default());
    let mut summary = BatchSummary::new(&plans);
    summary.update(&current, &plans).unwrap();
    let frames = vec![current];
    g.throughput(Throughput::Elements(ROWS as u64));
    g.bench_function("row pass, 5 features, 1M rows", |b| {
        b.iter(|| {
            poisongate::poison::scan(&base.view(), &usable, Rows::Frames(black_box(&frames)))
                .unwrap()
                .unwrap()
        })
    });
    let scan = poisongate::poison::scan(&base.view(), &usable, Rows::Frames(&frames))
        .unwrap()
        .unwrap();
    let policy = poisongate::policy::Policy::default();
    g.bench_function("detectors' decisions, 1M rows", |b| {
        b.iter(|| {
            poisongate::poison::detect(
                &base.view(),
                &policy.checks.rows,
                &summary,
                black_box(&scan),
                Rows::Frames(&frames),
                &[],
            )
            .unwrap()
        })
    });
    g.finish();
}

/// Evaluation rows scored by two models: a label, both predictions and scores, a categorical
/// and a numeric segment column. The retrained model differs on about 8% of rows.
fn scored(rows: usize, seed: u64) -> DataFrame {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut y, mut pb, mut pa, mut sb, mut sa, mut seg, mut x) = (
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
    );
    let cats: Vec<String> = (0..50).map(|k| format!("seg{k}")).collect();
    for _ in 0..rows {
        let p: f64 = rng.random();
        let q = (p + 0.2 * (rng.random::<f64>() - 0.5)).clamp(0.0, 1.0);
        y.push(i64::from(rng.random::<f64>() < p));
        pb.push(i64::from(p >= 0.5));
        pa.push(i64::from(q >= 0.5));
        sb.push(p);
        sa.push(q);
        seg.push(cats[rng.random_range(0..50)].as_str());
        x.push(rng.random::<f64>());
    }
    DataFrame::new(
        rows,
        vec![
            Column::new("y".into(), y),
            Column::new("pred_before".into(), pb),
            Column::new("pred_after".into(), pa),
            Column::new("score_before".into(), sb),
            Column::new("score_after".into(), sa),
            Column::new("seg".into(), seg),
            Column::new("x".into(), x),
        ],
    )
    .unwrap()
}

fn compare(c: &mut Criterion) {
    use poisongate::compare::{Spec, assemble, compare};
    let data = batch(scored(ROWS, 3));
    let spec = Spec {
        before: "pred_before".into(),
        after: "pred_after".into(),
        label: Some("y".into()),
        segments: vec!["seg".into(), "x".into()],
        before_scores: vec!["score_before".into()],
        after_scores: vec!["score_after".into()],
        ..Spec::default()
    };
    let policy = poisongate::policy::Policy::default();
    let mut g = c.benchmark_group("compare");
    g.sample_size(10);
    g.throughput(Throughput::Elements(ROWS as u64));
    g.bench_function("assemble columns, 1M rows", |b| {
        b.iter(|| assemble(&spec, black_box(&data), None).unwrap())
    });
    let table = assemble(&spec, &data, None).unwrap();
    g.bench_function("every test, 1M rows, 2 segment columns", |b| {
        b.iter(|| {
            compare(
                &spec,
                black_box(&table),
                &policy,
                None,
                poisongate::compare::Probes::Skipped("bench"),
            )
            .unwrap()
        })
    });
    g.finish();
}

/// The sharded path on 1M labelled rows in 8 Parquet units: `summarize` of one unit (the
/// streaming fold: read, summarise, encode, score), `BatchSummary::merge`, a part's encoding
/// and decoding, `Part::merge` of the 8 parts, and `Part::complete` (where the column
/// summaries of the units are merged).
fn shard(c: &mut Criterion) {
    use poisongate::shard::{PART_FORMAT, Part, PartHeader};
    const UNITS: usize = 8;
    let opts = ProfileOptions {
        label: Some("y".into()),
        seed: 7,
        ..ProfileOptions::default()
    };
    let base = baseline::profile(&batch(labelled(ROWS, 1)), &opts).unwrap();
    let policy = poisongate::policy::Policy::default();
    let dir = tempfile::tempdir().unwrap();
    let current = labelled(ROWS, 2);
    let files: Vec<poisongate::source::InputFile> = (0..UNITS)
        .map(|i| {
            let (a, b) = (i * ROWS / UNITS, (i + 1) * ROWS / UNITS);
            let mut part = current.slice(a as i64, b - a);
            let path = dir.path().join(format!("part-{i}.parquet"));
            ParquetWriter::new(std::fs::File::create(&path).unwrap())
                .finish(&mut part)
                .unwrap();
            poisongate::source::InputFile::local(path, Format::Parquet)
        })
        .collect();
    let mut g = c.benchmark_group("shard");
    g.sample_size(10);
    g.throughput(Throughput::Elements((ROWS / UNITS) as u64));
    g.bench_function("summarize one unit, 125k rows", |b| {
        b.iter(|| check::summarize_file(&base, &policy, black_box(&files[0])).unwrap())
    });
    let units: Vec<check::UnitSummary> = files
        .iter()
        .map(|f| check::summarize_file(&base, &policy, f).unwrap())
        .collect();
    g.throughput(Throughput::Elements(ROWS as u64));
    g.bench_function("BatchSummary::merge of 8 units", |b| {
        b.iter(|| {
            let mut m = units[0].summary.clone();
            for u in &units[1..] {
                m.merge(black_box(&u.summary)).unwrap();
            }
            m
        })
    });
    let header = |i: usize| PartHeader {
        format: PART_FORMAT.to_owned(),
        tool: "bench".into(),
        baseline_sha256: "b".into(),
        policy_sha256: "p".into(),
        manifest_sha256: "m".into(),
        units_total: UNITS,
        units: vec![i],
    };
    let bytes: Vec<Vec<u8>> = files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let u = check::summarize_file(&base, &policy, f).unwrap();
            Part::new(header(i), vec![(i, u)]).to_bytes().unwrap()
        })
        .collect();
    let path = std::path::Path::new("bench-part");
    g.bench_function("decode 8 parts", |b| {
        b.iter(|| {
            bytes
                .iter()
                .map(|x| Part::from_bytes(path, black_box(x)).unwrap())
                .collect::<Vec<_>>()
        })
    });
    let parts: Vec<Part> = bytes
        .iter()
        .map(|x| Part::from_bytes(path, x).unwrap())
        .collect();
    let names: Vec<String> = (0..UNITS).map(|i| format!("part-{i}")).collect();
    g.bench_function("Part::merge of 8 parts + encode", |b| {
        b.iter_batched(
            || parts.clone(),
            |p| Part::merge(p, &names).unwrap().to_bytes().unwrap(),
            BatchSize::LargeInput,
        )
    });
    let merged = Part::merge(parts.clone(), &names).unwrap();
    g.bench_function("Part::complete (merge the 8 summaries)", |b| {
        b.iter_batched(
            || merged.clone(),
            |m| m.complete(path, "b", "p").unwrap(),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, kernels, accumulators, poison, compare, shard);
criterion_main!(benches);
