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
