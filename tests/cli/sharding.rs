//! Batch summaries merge exactly: summarising a batch whole, frame by frame, or as shards
//! merged afterwards gives the same counts, and therefore the same findings (DESIGN §6).

use poisongate::baseline;
use poisongate::check;
use poisongate::policy::Policy;
use poisongate::source::{self, Format, InputFile};
use poisongate::summary::{BatchSummary, ColumnSummary};

use crate::common::testdata;

fn read(rel: &str) -> source::Batch {
    let file = InputFile::local(testdata(rel), Format::Parquet);
    source::read_batch(&[file]).unwrap()
}

#[test]
fn shard_summaries_merge_to_the_whole() {
    let loaded = baseline::load(crate::common::baseline(), None).unwrap();
    let base = &loaded.baseline;
    let batch = read("drifted/batch.parquet");
    let usable: Vec<String> = base.columns.iter().map(|c| c.name.clone()).collect();
    let plans = check::plans(base, &usable, &poisongate::policy::Policy::default());

    let mut whole = BatchSummary::new(&plans);
    whole.update(&batch.frames[0], &plans).unwrap();

    let df = &batch.frames[0];
    let (a, b) = (df.slice(0, 1234), df.slice(1234, df.height()));
    let mut left = BatchSummary::new(&plans);
    left.update(&a, &plans).unwrap();
    let mut right = BatchSummary::new(&plans);
    right.update(&b, &plans).unwrap();
    // Through the serialised form, as a shard's partial summary would travel.
    let right: BatchSummary =
        serde_json::from_str(&serde_json::to_string(&right).unwrap()).unwrap();
    left.merge(&right).unwrap();

    assert_eq!(left.rows, whole.rows);
    for (name, w) in &whole.columns {
        match (w, &left.columns[name]) {
            (ColumnSummary::Numeric(w), ColumnSummary::Numeric(m)) => {
                assert_eq!(
                    (&w.bins, w.count, w.nulls),
                    (&m.bins, m.count, m.nulls),
                    "{name}"
                );
                assert_eq!(
                    (w.below_range, w.above_range, w.min, w.max),
                    (m.below_range, m.above_range, m.min, m.max)
                );
                assert!(
                    (w.mean() - m.mean()).abs() <= 1e-9 * w.mean().abs().max(1.0),
                    "{name}"
                );
            }
            (ColumnSummary::Categorical(w), ColumnSummary::Categorical(m)) => {
                assert_eq!(w, m, "{name}")
            }
            _ => panic!("{name}: kinds differ"),
        }
    }
    let policy = Policy::default();
    let one = check::evaluate(base, &policy, &whole, Vec::new()).unwrap();
    let two = check::evaluate(base, &policy, &left, Vec::new()).unwrap();
    assert_eq!(one.findings, two.findings);
    assert!(!one.findings.is_empty());
}

/// Writes `df` split into `parts` Parquet files under `dir`; returns their paths.
fn split_into(df: &polars::prelude::DataFrame, parts: usize, dir: &std::path::Path) -> Vec<String> {
    use polars::prelude::*;
    let n = df.height();
    (0..parts)
        .map(|i| {
            let (a, b) = (i * n / parts, (i + 1) * n / parts);
            let mut part = df.slice(a as i64, b - a);
            let path = dir.join(format!("part-{i}.parquet"));
            ParquetWriter::new(std::fs::File::create(&path).unwrap())
                .finish(&mut part)
                .unwrap();
            path.display().to_string()
        })
        .collect()
}

/// `summarize` of the shards in `order` (each `i` of `n`) against `manifest`, each into
/// `part(i)`; the part paths, in that order.
fn summarize_shards(
    base: &str,
    manifest: &str,
    n: usize,
    order: impl IntoIterator<Item = usize>,
    part: impl Fn(usize) -> String,
) -> Vec<String> {
    order
        .into_iter()
        .map(|i| {
            let path = part(i);
            let shard = format!("{i}/{n}");
            ok(&[
                "summarize",
                "--baseline",
                base,
                "--manifest",
                manifest,
                "--shard",
                &shard,
                "-o",
                &path,
            ]);
            path
        })
        .collect()
}

fn ok(args: &[&str]) -> std::process::Output {
    let out = crate::common::run(args);
    assert_eq!(
        crate::common::code(&out),
        0,
        "{args:?}: {}",
        crate::common::stderr(&out)
    );
    out
}

/// `plan`, `summarize` of every shard, `merge` in any order and tree, then `check --summaries`:
/// the same report, byte for byte, the same exit code and the same quarantine as `check` on
/// the files; a lost or duplicated part, or a file changed since `plan`, is exit 2.
#[test]
fn sharded_check_is_byte_identical_to_check() {
    use crate::common::{code, run, stderr};
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).display().to_string();
    let attacked = read("poison/trigger_channel.parquet");
    let files = split_into(&attacked.frames[0], 5, dir.path());
    let base = crate::common::baseline().to_str().unwrap();
    let mut direct = vec!["check", "--baseline", base];
    direct.extend(files.iter().map(String::as_str));
    let (direct_json, direct_q) = (d("direct.json"), d("direct-q.csv"));
    direct.extend(["--json", &direct_json, "--quarantine", &direct_q]);
    let out = run(&direct);
    assert_eq!(code(&out), 1, "{}", stderr(&out));

    let manifest = d("manifest.json");
    let mut plan = vec!["plan"];
    plan.extend(files.iter().map(String::as_str));
    plan.extend(["-o", &manifest]);
    ok(&plan);
    let parts = summarize_shards(base, &manifest, 3, 0..3, |i| d(&format!("p{i}.part")));
    // Two merge trees: ((0 1) 2) and (2 (1 0)).
    let (m01, m012, m10, m210) = (d("m01"), d("m012"), d("m10"), d("m210"));
    ok(&["merge", &parts[0], &parts[1], "-o", &m01]);
    ok(&["merge", &m01, &parts[2], "-o", &m012]);
    ok(&["merge", &parts[1], &parts[0], "-o", &m10]);
    ok(&["merge", &parts[2], &m10, "-o", &m210]);
    assert_eq!(std::fs::read(&m012).unwrap(), std::fs::read(&m210).unwrap());
    // A directory of parts (an Argo fan-in hands one over) merges like the files.
    let parts_dir = dir.path().join("parts");
    std::fs::create_dir(&parts_dir).unwrap();
    for (i, part) in parts.iter().enumerate() {
        std::fs::copy(part, parts_dir.join(format!("part-{i}"))).unwrap();
    }
    std::fs::write(parts_dir.join(".hidden"), b"not a part").unwrap();
    let m_dir = d("m_dir");
    ok(&["merge", parts_dir.to_str().unwrap(), "-o", &m_dir]);
    assert_eq!(
        std::fs::read(&m012).unwrap(),
        std::fs::read(&m_dir).unwrap()
    );
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = run(&["merge", empty.to_str().unwrap(), "-o", &d("m_empty")]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("no parts"), "{}", stderr(&out));

    let (sharded_json, sharded_q) = (d("sharded.json"), d("sharded-q.csv"));
    let out = run(&[
        "check",
        "--baseline",
        base,
        "--summaries",
        &m012,
        "--json",
        &sharded_json,
        "--quarantine",
        &sharded_q,
    ]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let direct_report = std::fs::read_to_string(&direct_json).unwrap();
    assert!(direct_report.contains("poison-trigger"));
    assert_eq!(
        direct_report,
        std::fs::read_to_string(&sharded_json).unwrap()
    );
    let q = std::fs::read_to_string(&direct_q).unwrap();
    assert!(q.lines().count() > 10, "{q}");
    assert_eq!(q, std::fs::read_to_string(&sharded_q).unwrap());

    // A lost shard, a duplicated one, another policy: exit 2 with one line naming the cause.
    let out = run(&["check", "--baseline", base, "--summaries", &m01]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("not covered"), "{}", stderr(&out));
    let out = run(&["merge", &m012, &parts[1], "-o", &d("dup")]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("covered twice"), "{}", stderr(&out));
    let policy = d("policy.toml");
    std::fs::write(&policy, "[gate]\nalpha = 0.02\n").unwrap();
    let out = run(&[
        "check",
        "--baseline",
        base,
        "--summaries",
        &m012,
        "--policy",
        &policy,
    ]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("policy"), "{}", stderr(&out));
    // A unit rewritten after `plan` is refused by its shard.
    std::fs::write(&files[0], std::fs::read(&files[1]).unwrap()).unwrap();
    let out = run(&[
        "summarize",
        "--baseline",
        base,
        "--manifest",
        &manifest,
        "--shard",
        "0/3",
        "-o",
        &d("stale"),
    ]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("changed since `plan`"),
        "{}",
        stderr(&out)
    );
    // A corrupt part is exit 2, not a panic.
    let mut bytes = std::fs::read(&m012).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(d("cut"), &bytes).unwrap();
    let out = run(&["check", "--baseline", base, "--summaries", &d("cut")]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("cannot use summary"),
        "{}",
        stderr(&out)
    );
}

/// Property: for random splits of an attacked batch into 1–16 files (uneven, with one-row
/// and skewed parts, and a part where a feature is all null), random shard counts and random
/// merge trees, `check --summaries` gives the report of `check` on the files, byte for byte,
/// and every merge tree gives the same merged part. Seeded, so a failure reproduces.
#[test]
fn random_splits_and_merge_trees_give_the_same_report() {
    use polars::prelude::*;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};

    let base = crate::common::baseline().to_str().unwrap();
    let attacked = read("poison/trigger_channel.parquet");
    let df = attacked.frames[0].clone();
    let n = df.height();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x5eed_0012);
    for case in 0..12 {
        let dir = tempfile::tempdir().unwrap();
        let d = |name: &str| dir.path().join(name).display().to_string();
        let parts = rng.random_range(1..=16usize);
        // Cut points: mostly random, plus a one-row part and a skewed split where possible.
        let mut cuts: Vec<usize> = (1..parts).map(|_| rng.random_range(1..n)).collect();
        if parts >= 3 {
            cuts[0] = 1; // the first part holds one row
            cuts[1] = 2;
        }
        cuts.sort_unstable();
        cuts.dedup();
        let mut bounds = vec![0];
        bounds.extend(cuts);
        bounds.push(n);
        let null_part = (bounds.len() > 3).then(|| rng.random_range(0..bounds.len() - 1));
        let mut files = Vec::new();
        for (i, w) in bounds.windows(2).enumerate() {
            let mut part = df.slice(w[0] as i64, w[1] - w[0]);
            if Some(i) == null_part {
                // A part whose `utilization` is all null (same dtype, so one schema).
                let col = part.column("utilization").unwrap();
                let nulls = Series::full_null("utilization".into(), part.height(), col.dtype());
                part.replace("utilization", nulls.into()).unwrap();
            }
            let path = dir.path().join(format!("part-{i:02}.parquet"));
            ParquetWriter::new(std::fs::File::create(&path).unwrap())
                .finish(&mut part)
                .unwrap();
            files.push(path.display().to_string());
        }

        let direct = d("direct.json");
        let mut args = vec!["check", "--baseline", base];
        args.extend(files.iter().map(String::as_str));
        args.extend(["--json", &direct]);
        let want_code = crate::common::code(&crate::common::run(&args));
        assert!(
            want_code == 0 || want_code == 1,
            "case {case}: exit {want_code}"
        );

        let manifest = d("manifest.json");
        let mut plan = vec!["plan"];
        plan.extend(files.iter().map(String::as_str));
        plan.extend(["-o", &manifest]);
        ok(&plan);
        let shards = rng.random_range(1..=files.len() + 2);
        let mut pending =
            summarize_shards(base, &manifest, shards, 0..shards, |i| d(&format!("s{i}")));
        // Two random merge trees over the same parts.
        let mut merged = Vec::new();
        for tree in 0..2 {
            let mut level = pending.clone();
            level.shuffle(&mut rng);
            let mut step = 0;
            while level.len() > 1 {
                let take = rng.random_range(2..=level.len().min(3));
                let at = rng.random_range(0..=level.len() - take);
                let group: Vec<String> = level.drain(at..at + take).collect();
                let out = d(&format!("t{tree}-{step}"));
                let mut args = vec!["merge"];
                args.extend(group.iter().map(String::as_str));
                args.extend(["-o", &out]);
                ok(&args);
                level.insert(at, out);
                step += 1;
            }
            merged.push(level.pop().unwrap());
        }
        let bytes: Vec<Vec<u8>> = merged.iter().map(|m| std::fs::read(m).unwrap()).collect();
        if shards > 1 {
            assert_eq!(bytes[0], bytes[1], "case {case}: merge trees differ");
        }
        let sharded = d("sharded.json");
        let out = crate::common::run(&[
            "check",
            "--baseline",
            base,
            "--summaries",
            &merged[0],
            "--json",
            &sharded,
        ]);
        assert_eq!(
            crate::common::code(&out),
            want_code,
            "case {case}: {}",
            crate::common::stderr(&out)
        );
        assert_eq!(
            std::fs::read_to_string(&direct).unwrap(),
            std::fs::read_to_string(&sharded).unwrap(),
            "case {case}: {} files, {shards} shards: reports differ",
            files.len()
        );
        pending.clear();
    }
}

/// `plan --unit-rows` cuts one Parquet file into row ranges (block-aligned, across row groups
/// that are not): any shard count and merge order gives the report of `check` on the file,
/// byte for byte, and the manifest's units carry their ranges.
#[test]
fn row_range_units_of_one_file_give_the_same_report() {
    use polars::prelude::*;
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).display().to_string();
    let base = crate::common::baseline().to_str().unwrap();
    // 200,000 rows of the trusted data with every tenth row's label flipped, in row groups
    // of 30,000 rows (not a multiple of a 65,536-row block).
    let trusted = read("trusted/applications.parquet").frames[0].clone();
    let mut big = trusted.clone();
    for _ in 1..10 {
        big.vstack_mut(&trusted).unwrap();
    }
    let n = big.height();
    let label: Vec<i64> = big
        .column("defaulted")
        .unwrap()
        .i64()
        .unwrap()
        .into_no_null_iter()
        .enumerate()
        .map(|(i, y)| if i % 10 == 3 { 1 - y } else { y })
        .collect();
    big.replace("defaulted", Series::new("defaulted".into(), label).into())
        .unwrap();
    let file = d("big.parquet");
    ParquetWriter::new(std::fs::File::create(&file).unwrap())
        .with_row_group_size(Some(30_000))
        .finish(&mut big)
        .unwrap();
    let direct = d("direct.json");
    let out = crate::common::run(&["check", "--baseline", base, &file, "--json", &direct]);
    let want = crate::common::code(&out);
    assert_eq!(want, 1, "{}", crate::common::stderr(&out));

    for (unit_rows, units, shards) in [("65536", 4, 3), ("100000", 2, 2), ("1", 4, 5)] {
        let manifest = d(&format!("manifest-{unit_rows}.json"));
        ok(&["plan", &file, "--unit-rows", unit_rows, "-o", &manifest]);
        let m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
        let got = m["units"].as_array().unwrap();
        assert_eq!(got.len(), units, "{unit_rows}: {m}");
        assert_eq!(got[0]["range"][0], 0);
        assert_eq!(got[units - 1]["range"][1], n as u64);
        let parts = summarize_shards(base, &manifest, shards, (0..shards).rev(), |i| {
            d(&format!("p-{unit_rows}-{i}"))
        });
        let merged = d(&format!("merged-{unit_rows}"));
        let mut args = vec!["merge"];
        args.extend(parts.iter().map(String::as_str));
        args.extend(["-o", &merged]);
        ok(&args);
        let sharded = d(&format!("sharded-{unit_rows}.json"));
        let out = crate::common::run(&[
            "check",
            "--baseline",
            base,
            "--summaries",
            &merged,
            "--json",
            &sharded,
        ]);
        assert_eq!(
            crate::common::code(&out),
            want,
            "{}",
            crate::common::stderr(&out)
        );
        assert_eq!(
            std::fs::read_to_string(&direct).unwrap(),
            std::fs::read_to_string(&sharded).unwrap(),
            "--unit-rows {unit_rows}: reports differ"
        );
    }
    // Without --unit-rows the file is one unit.
    let manifest = d("whole.json");
    ok(&["plan", &file, "-o", &manifest]);
    assert!(
        !std::fs::read_to_string(&manifest)
            .unwrap()
            .contains("\"range\"")
    );
}

/// A sharded `profile` (`plan`, `profile --manifest --shard` per shard, `profile
/// --summaries`) writes the baseline of `profile` on the files, byte for byte: several files,
/// one of them cut into row ranges across row groups, any shard count and part order. Parts
/// that are missing, repeated or made with other options are exit 2 and write nothing.
#[test]
fn sharded_profile_is_byte_identical_to_profile() {
    use polars::prelude::*;
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).display().to_string();
    let trusted = read("trusted/applications.parquet").frames[0].clone();
    let mut big = trusted.clone();
    for _ in 1..8 {
        big.vstack_mut(&trusted).unwrap();
    }
    let big_file = d("big.parquet");
    ParquetWriter::new(std::fs::File::create(&big_file).unwrap())
        .with_row_group_size(Some(30_000))
        .finish(&mut big)
        .unwrap();
    let small = testdata("clean/batch.parquet").display().to_string();
    let opts = [
        "--label",
        "defaulted",
        "--id",
        "application_id",
        "--seed",
        "9",
    ];
    let direct = d("direct.json");
    let mut args = vec!["profile", &small, &big_file, &small, "-o", &direct];
    args.extend(opts);
    ok(&args);
    let want = std::fs::read(&direct).unwrap();
    let manifest = d("manifest.json");
    ok(&[
        "plan",
        &small,
        &big_file,
        &small,
        "--unit-rows",
        "65536",
        "-o",
        &manifest,
    ]);
    for shards in [1usize, 2, 5] {
        let parts: Vec<String> = (0..shards)
            .rev()
            .map(|i| {
                let part = d(&format!("p{shards}-{i}"));
                let shard = format!("{i}/{shards}");
                let mut args = vec![
                    "profile",
                    "--manifest",
                    &manifest,
                    "--shard",
                    &shard,
                    "-o",
                    &part,
                ];
                args.extend(opts);
                ok(&args);
                part
            })
            .collect();
        let sharded = d(&format!("sharded-{shards}.json"));
        let mut args = vec!["profile", "--summaries"];
        args.extend(parts.iter().map(String::as_str));
        args.extend(["-o", &sharded]);
        args.extend(opts);
        ok(&args);
        assert!(
            std::fs::read(&sharded).unwrap() == want,
            "{shards} shards: the baseline differs"
        );
        if shards == 5 {
            let refused = |extra: &[&str], parts: &[&String], why: &str| {
                let out_file = d("refused.json");
                let mut args = vec!["profile", "--summaries"];
                args.extend(parts.iter().map(|p| p.as_str()));
                args.extend(["-o", &out_file]);
                args.extend(extra);
                let out = crate::common::run(&args);
                assert_eq!(crate::common::code(&out), 2, "{why}");
                let err = crate::common::stderr(&out);
                assert!(err.contains(why), "{why}: {err}");
                assert!(!std::path::Path::new(&out_file).exists());
            };
            refused(
                &opts,
                &parts[1..].iter().collect::<Vec<_>>(),
                "no part covers unit",
            );
            let twice: Vec<&String> = parts.iter().chain(&parts[..1]).collect();
            refused(&opts, &twice, "is in another part too");
            let other = [
                "--label",
                "defaulted",
                "--id",
                "application_id",
                "--seed",
                "8",
            ];
            refused(&other, &parts.iter().collect::<Vec<_>>(), "other options");
        }
    }
}
