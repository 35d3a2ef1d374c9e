//! `check` streams its inputs window by window (src/source/stream.rs) and must decide exactly
//! as it does on the same batch held in memory: same findings, evidence, quarantine and row
//! scores, on clean, drifted and every attacked batch, and on batches split across files.

use poisongate::baseline;
use poisongate::check;
use poisongate::policy::Policy;
use poisongate::source::{self, Format, InputFile};

use crate::common::testdata;

fn same_decision(files: &[InputFile]) {
    let loaded = baseline::load(crate::common::baseline(), None).unwrap();
    let base = &loaded.baseline;
    let policy = Policy::default();
    let batch = source::read_batch(files).unwrap();
    let whole = check::check(base, &policy, &batch).unwrap();
    let (streamed, metas) = check::check_files(
        base,
        &policy,
        files,
        check::Extras {
            row_scores: true,
            quarantine: true,
        },
    )
    .unwrap();
    let name = files[0].path.display().to_string();
    assert_eq!(metas, batch.inputs, "{name}: provenance");
    assert_same(&whole, &streamed, &name);
    // Small batches are kept from the first pass; with nothing kept, the later reads open
    // the files again and must decide alike.
    let (reread, _) = check::check_files_keeping(
        base,
        &policy,
        files,
        check::Extras {
            row_scores: true,
            quarantine: true,
        },
        0,
    )
    .unwrap();
    assert_same(&reread, &streamed, &format!("{name}, read again"));
}

/// Two evaluations decide alike: findings, quarantine, tests, notes and row scores (as bits).
fn assert_same(a: &check::Evaluation, b: &check::Evaluation, what: &str) {
    let json = |e: &check::Evaluation| serde_json::to_string(&e.findings).unwrap();
    assert_eq!(json(a), json(b), "{what}: findings");
    assert_eq!(a.quarantine, b.quarantine, "{what}: quarantine");
    let bits = |e: &check::Evaluation| e.row_scores.iter().map(|s| s.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(a), bits(b), "{what}: row scores");
    assert_eq!(a.tests, b.tests, "{what}: tests");
    assert_eq!(a.notes, b.notes, "{what}: notes");
}

#[test]
fn streamed_check_decides_as_in_memory() {
    let mut denied = 0;
    for rel in [
        "clean/batch.parquet",
        "drifted/batch.parquet",
        "poison/flip10.parquet",
        "poison/duplicates.parquet",
        "poison/outliers.parquet",
        "poison/segment_north.parquet",
        "poison/trigger_channel.parquet",
        "poison/trigger_utilization.parquet",
        "poison/class_income.parquet",
    ] {
        let file = InputFile::local(testdata(rel), Format::Parquet);
        same_decision(std::slice::from_ref(&file));
        let loaded = baseline::load(crate::common::baseline(), None).unwrap();
        let (eval, _) = check::check_files(
            &loaded.baseline,
            &Policy::default(),
            &[file],
            check::Extras::default(),
        )
        .unwrap();
        denied += usize::from(
            eval.findings
                .iter()
                .any(|f| f.severity == poisongate::finding::Severity::Deny),
        );
    }
    // The comparison is not vacuous: every batch but the clean one blocks.
    assert_eq!(denied, 8);
}

#[test]
fn streamed_check_of_several_files_and_formats_decides_as_in_memory() {
    let shards = testdata("clean/shards");
    let mut parts: Vec<InputFile> = std::fs::read_dir(&shards)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| Format::from_path(&p).map(|f| InputFile::local(p, f)))
        .collect();
    parts.sort_by(|a, b| a.path.cmp(&b.path));
    assert!(parts.len() >= 2, "{}", shards.display());
    same_decision(&parts);
    for (rel, format) in [
        ("clean/batch.csv", Format::Csv),
        ("clean/batch.ndjson", Format::Ndjson),
        ("clean/batch.arrow", Format::Ipc),
    ] {
        same_decision(&[InputFile::local(testdata(rel), format)]);
    }
}
