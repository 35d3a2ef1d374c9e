//! `poisongate check`: compare a batch with the pinned baseline and decide.
//!
//! Steps: structural schema checks on the batch's schema; plans (what to bin or count per
//! column) from the baseline; one summarising pass over the batch ([`crate::summary`]); rate
//! and drift candidates per column; Holm adjustment across every test of the batch; the
//! decision rule ([`decision::decide`]); and last the policy's levels and exceptions.

pub mod decision;
mod evaluate;
pub use evaluate::{add_findings, evaluate};
pub(crate) use evaluate::{apply_policy, exception_for};
pub mod drift;
pub mod evidence;
pub mod record;
pub mod remedy;
mod rows;
pub mod schema;
use rows::decide_rows;

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::baseline::{Baseline, Role};
use crate::detect::Candidate;
use crate::error::{Error, Result};
use crate::finding::{Finding, Severity, Subject};
use crate::policy::{Level, Policy};
use crate::source::{Batch, InputFile, InputMeta, Rows};
use crate::stats::multitest::weighted_holm;
use crate::summary::{BatchSummary, CategoricalPlan, ColumnPlan, ColumnSummary, NumericPlan};
use decision::decide;

/// A finding removed by the policy, kept for the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Waived {
    /// Its code.
    pub code: String,
    /// Its subject.
    pub subject: Subject,
    /// The severity it would have had.
    pub severity: Severity,
    /// Why it was waived (the exception's reason, or the level `allow`).
    pub reason: String,
}

/// What `check` concluded.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Findings after the policy, sorted (deny first).
    pub findings: Vec<Finding>,
    /// Findings the policy waived.
    pub waived: Vec<Waived>,
    /// Columns summarised and tested.
    pub columns_checked: usize,
    /// Statistical tests run (before multiplicity adjustment).
    pub tests: usize,
    /// Rows flagged by the poisoning findings that fired, in batch order.
    pub quarantine: Vec<crate::poison::QuarantineRow>,
    /// Rows the quarantine holds (its rows are listed only with `--quarantine` or
    /// `--row-scores`).
    pub quarantined_rows: usize,
    /// What did not run, and why.
    pub notes: Vec<String>,
    /// A suspicion score per row in batch order (empty when the row-level detectors did not
    /// run).
    pub row_scores: Vec<f64>,
    /// Every test that ran or was skipped, with its outcome.
    pub records: Vec<record::TestRecord>,
    /// Per column, the baseline's and the batch's distributions (for the HTML report).
    pub distributions: Vec<record::Distribution>,
    /// The sum of the Holm weights of the tests (the level of a test that had no candidate
    /// is `alpha * w / (total_weight + w)`).
    pub total_weight: f64,
}

/// What a check computes beyond the decision.
#[derive(Debug, Clone, Copy, Default)]
pub struct Extras {
    /// Every row's suspicion score (`--row-scores`), 8 bytes a row: computed only when asked.
    pub row_scores: bool,
    /// Every row behind the findings (`--quarantine`): without it, a finding with more rows
    /// than the row pass keeps lists the kept ones, and the batch is not read again for them.
    pub quarantine: bool,
}

/// Checks a batch read into memory against a baseline (every row's score included).
///
/// # Errors
/// The pinned label column missing from the batch, or a failure while summarising.
pub fn check(baseline: &Baseline, policy: &Policy, batch: &Batch) -> Result<Evaluation> {
    let first = batch
        .inputs
        .first()
        .map(|m| m.path.clone())
        .unwrap_or_default();
    let mut pass = Pass::new(baseline, policy, &batch.schema(), &first)?;
    pass.extras.row_scores = true;
    pass.extras.quarantine = true;
    let rows = Rows::Frames(&batch.frames);
    rows.for_each_window(None, &mut |blocks, at| pass.update(blocks, at))?;
    pass.finish(rows)
}

/// Checks a batch streamed from its files, one window of blocks at a time
/// ([`crate::source::stream`]): only the summaries and bounded row-pass state are held, and
/// the decoded blocks while they fit in [`KEEP_DECODED_BYTES`] (a batch that fits is read
/// once; a larger one is read again for the value read and the rows behind a finding).
/// Returns the evaluation and the inputs' provenance.
///
/// # Errors
/// Any unreadable, empty or mismatched input; the pinned label column missing from the
/// batch; a failure while summarising.
pub fn check_files(
    baseline: &Baseline,
    policy: &Policy,
    files: &[InputFile],
    extras: Extras,
) -> Result<(Evaluation, Vec<InputMeta>)> {
    check_files_keeping(baseline, policy, files, extras, KEEP_DECODED_BYTES)
}

/// As [`check_files`], keeping at most `keep_bytes` of decoded blocks (0: every later read
/// opens the files again). The decision is the same whatever `keep_bytes`.
///
/// # Errors
/// As [`check_files`].
pub fn check_files_keeping(
    baseline: &Baseline,
    policy: &Policy,
    files: &[InputFile],
    extras: Extras,
    keep_bytes: usize,
) -> Result<(Evaluation, Vec<InputMeta>)> {
    let (mut pass, _, metas, kept) = stream_pass(baseline, policy, files, keep_bytes)?;
    pass.extras = extras;
    let eval = pass.finish(kept.rows(files, &metas))?;
    Ok((eval, metas))
}

/// As [`check_files`], with the batch's own summary for the ledger: its column summaries and
/// row-pass state as one unit, whose provenance stands for all the inputs.
///
/// # Errors
/// As [`check_files`].
pub fn check_files_kept(
    baseline: &Baseline,
    policy: &Policy,
    files: &[InputFile],
    extras: Extras,
) -> Result<(Evaluation, Vec<InputMeta>, UnitSummary)> {
    let (mut pass, schema, metas, decoded) =
        stream_pass(baseline, policy, files, KEEP_DECODED_BYTES)?;
    pass.extras = extras;
    let kept = UnitSummary {
        meta: batch_meta(&metas),
        schema,
        summary: pass.summary.clone(),
        scan: pass.scan.as_ref().map(crate::poison::ScanFold::state),
        range: None,
    };
    let eval = pass.finish(decoded.rows(files, &metas))?;
    Ok((eval, metas, kept))
}

/// One provenance for a batch of inputs: the first input's path and format, the SHA-256 of
/// the inputs' digests in order, and their bytes and rows summed.
#[must_use]
pub fn batch_meta(metas: &[InputMeta]) -> InputMeta {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for m in metas {
        h.update(m.sha256.as_bytes());
        h.update(b"\n");
    }
    let first = metas.first();
    InputMeta {
        path: match metas.len() {
            1 => first.map(|m| m.path.clone()).unwrap_or_default(),
            n => format!(
                "{} and {} more",
                first.map_or("", |m| m.path.as_str()),
                n - 1
            ),
        },
        format: first.map_or(crate::source::Format::Parquet, |m| m.format),
        sha256: hex::encode(h.finalize()),
        bytes: metas.iter().map(|m| m.bytes).sum(),
        rows: metas.iter().map(|m| m.rows).sum(),
        object: None,
    }
}

/// Decides from kept summaries alone, with no rows to read again: the ledger's window of past
/// batches. `scans` are in batch order; the detectors that count values in a second read do
/// not run (a note and skipped records say so), and no rows are listed.
///
/// # Errors
/// Row-pass states that do not fit the baseline or the policy.
pub fn decide_kept(
    baseline: &Baseline,
    policy: &Policy,
    schema: &[(String, polars::prelude::DataType)],
    summary: BatchSummary,
    scans: Vec<Option<crate::poison::ScanState>>,
) -> Result<Evaluation> {
    decide_with(
        baseline,
        policy,
        schema,
        summary,
        scans,
        Rows::Absent,
        Extras::default(),
    )
}

type Schema = Vec<(String, polars::prelude::DataType)>;

/// Decoded bytes of a batch that the first pass keeps for the reads that come after it (the
/// value read, the rows behind a finding): a batch up to this size is opened once, whatever
/// its verdict. A million rows of the benchmark generator's 21 columns (14 numeric, 6 short
/// strings, the label) decode to 151 MiB; the window the pass decodes anyway is half of that.
pub const KEEP_DECODED_BYTES: usize = 256 << 20;

/// The blocks of the first pass, while they fit in `budget` bytes.
#[derive(Default)]
struct Decoded {
    blocks: Vec<polars::prelude::DataFrame>,
    bytes: usize,
    budget: usize,
    over: bool,
}

impl Decoded {
    fn keep(&mut self, blocks: &[polars::prelude::DataFrame]) {
        if self.over {
            return;
        }
        self.bytes += blocks
            .iter()
            .map(polars::prelude::DataFrame::estimated_size)
            .sum::<usize>();
        if self.bytes > self.budget {
            self.over = true;
            self.blocks = Vec::new();
        } else {
            self.blocks.extend_from_slice(blocks);
        }
    }

    /// The batch's rows for the later reads: the kept blocks, or the files read again.
    fn rows<'r>(&'r self, files: &'r [InputFile], metas: &'r [InputMeta]) -> Rows<'r> {
        if self.over {
            Rows::Files(files, metas)
        } else {
            Rows::Frames(&self.blocks)
        }
    }
}

/// The first pass over files: every window folded into one [`Pass`]; with the batch's schema,
/// the inputs' provenance, and the decoded blocks when the batch is small enough to keep
/// (`keep_bytes`).
fn stream_pass<'a>(
    baseline: &'a Baseline,
    policy: &'a Policy,
    files: &[InputFile],
    keep_bytes: usize,
) -> Result<(Pass<'a>, Schema, Vec<InputMeta>, Decoded)> {
    let first = files.first().map(InputFile::name).unwrap_or_default();
    let mut pass: Option<(Pass<'a>, Schema)> = None;
    // A unit of a sharded check is not read again here: it keeps nothing (0). A batch larger
    // on disk than the budget keeps nothing from the start rather than holding the budget
    // until it overflows. Parquet and IPC bytes are compressed, so such a batch decodes to
    // more than the budget anyway; CSV or NDJSON text may decode smaller, and is then read
    // again although it would have fitted, which costs a read and never changes a decision.
    let on_disk: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(&f.path).ok())
        .map(|m| m.len())
        .sum();
    let mut decoded = Decoded {
        budget: keep_bytes,
        over: keep_bytes == 0 || on_disk > keep_bytes as u64,
        ..Decoded::default()
    };
    let metas = crate::source::stream::first_pass(files, &mut |schema, blocks, at| {
        decoded.keep(blocks);
        if pass.is_none() {
            let columns: Schema = schema
                .iter()
                .map(|(n, t)| (n.to_string(), t.clone()))
                .collect();
            let p = Pass::new(baseline, policy, &columns, &first)?;
            pass = Some((p, columns));
        }
        match pass.as_mut() {
            Some((p, _)) => p.update(blocks, at.row),
            None => Err(Error::Internal("check: no pass".into())),
        }
    })?;
    match pass {
        Some((pass, schema)) => Ok((pass, schema, metas, decoded)),
        None => Err(Error::input(std::path::Path::new(&first), "no rows")),
    }
}

/// What one unit (file) of a sharded batch contributes: its provenance and schema, its column
/// summaries and its row-pass state ([`crate::shard`]).
#[derive(Debug)]
pub struct UnitSummary {
    /// Provenance.
    pub meta: InputMeta,
    /// Column names and dtypes.
    pub schema: Vec<(String, polars::prelude::DataType)>,
    /// Column summaries.
    pub summary: BatchSummary,
    /// Row-pass state, when the row-level detectors run.
    pub scan: Option<crate::poison::ScanState>,
    /// The rows of the file it covers, for a unit smaller than its file.
    pub range: Option<[u64; 2]>,
}

/// Summarises one unit of a sharded batch with the same pass as [`check_files`].
///
/// # Errors
/// As [`check_files`].
pub fn summarize_file(
    baseline: &Baseline,
    policy: &Policy,
    file: &InputFile,
) -> Result<UnitSummary> {
    let (pass, schema, mut metas, _) =
        stream_pass(baseline, policy, std::slice::from_ref(file), 0)?;
    let Some(meta) = metas.pop() else {
        return Err(Error::input(std::path::Path::new(&file.name()), "no rows"));
    };
    Ok(UnitSummary {
        meta,
        schema,
        summary: pass.summary,
        scan: pass.scan.map(crate::poison::ScanFold::into_state),
        range: file.range.as_ref().map(|r| [r.start as u64, r.end as u64]),
    })
}

/// Decides from merged unit summaries exactly as [`check_files`] decides from the files:
/// `summary` is the merge of every unit's column summary, `scans` the units' row-pass states
/// in batch order. `units` (the files with the provenance the shards recorded) are re-read
/// only by the detectors that count a few candidate values exactly and for the ids of
/// flagged rows.
///
/// # Errors
/// Row-pass states that do not fit the baseline or the policy; a failure of a second pass.
pub fn decide_summaries(
    baseline: &Baseline,
    policy: &Policy,
    schema: &[(String, polars::prelude::DataType)],
    summary: BatchSummary,
    scans: Vec<Option<crate::poison::ScanState>>,
    units: (&[InputFile], &[InputMeta]),
    extras: Extras,
) -> Result<Evaluation> {
    let (files, metas) = units;
    decide_with(
        baseline,
        policy,
        schema,
        summary,
        scans,
        Rows::Files(files, metas),
        extras,
    )
}

fn decide_with(
    baseline: &Baseline,
    policy: &Policy,
    schema: &[(String, polars::prelude::DataType)],
    summary: BatchSummary,
    scans: Vec<Option<crate::poison::ScanState>>,
    rows: Rows<'_>,
    extras: Extras,
) -> Result<Evaluation> {
    let first = match rows {
        Rows::Files(files, _) => files.first().map(InputFile::name).unwrap_or_default(),
        _ => String::new(),
    };
    let mut pass = Pass::new(baseline, policy, schema, &first)?;
    pass.extras = extras;
    let shown = std::path::Path::new("merged summary");
    match &mut pass.scan {
        Some(fold) => {
            for state in scans {
                let Some(state) = state else {
                    return Err(Error::summary(
                        shown,
                        "a unit has no row-pass state, but the row-level detectors run",
                    ));
                };
                fold.absorb(state).map_err(|e| Error::summary(shown, e))?;
            }
        }
        None => {
            if scans.iter().any(Option::is_some) {
                return Err(Error::summary(
                    shown,
                    "units carry row-pass state, but the row-level detectors do not run",
                ));
            }
        }
    }
    if summary.columns.keys().ne(pass.summary.columns.keys()) {
        return Err(Error::summary(
            shown,
            "its column summaries do not match the baseline's plans for this schema",
        ));
    }
    pass.summary = summary;
    pass.finish(rows)
}

/// The state of one check while the batch streams past: the structural findings, the column
/// summaries and the row pass.
struct Pass<'a> {
    baseline: &'a Baseline,
    policy: &'a Policy,
    candidates: Vec<Candidate>,
    plans: BTreeMap<String, ColumnPlan>,
    summary: BatchSummary,
    scan: Option<crate::poison::ScanFold<'a>>,
    skipped: Option<String>,
    extras: Extras,
}

impl<'a> Pass<'a> {
    fn new(
        baseline: &'a Baseline,
        policy: &'a Policy,
        schema: &[(String, polars::prelude::DataType)],
        first: &str,
    ) -> Result<Self> {
        if let Some(label) = &baseline.label
            && !schema.iter().any(|(n, _)| n == label)
        {
            return Err(Error::input(
                std::path::Path::new(first),
                format!("label column `{label}` pinned in the baseline is missing from the batch"),
            ));
        }
        for (name, d) in &policy.domains {
            let Some(col) = baseline.column(name) else {
                return Err(Error::Usage(format!(
                    "the policy's domains.{name} names no column of the baseline"
                )));
            };
            if d.categories.is_some() && col.categorical.is_none() {
                return Err(Error::Usage(format!(
                    "the policy's domains.{name} lists categories, but `{name}` is numeric in the baseline"
                )));
            }
            if (d.min.is_some() || d.max.is_some()) && col.numeric.is_none() {
                return Err(Error::Usage(format!(
                    "the policy's domains.{name} sets min/max, but `{name}` is categorical in the baseline"
                )));
            }
        }
        let mut candidates = Vec::new();
        let usable = schema::structure(baseline, schema, &mut candidates);
        let plans = plans(baseline, &usable, policy);
        let summary = BatchSummary::new(&plans);
        let all_allowed = crate::codes::row_codes().all(|c| policy.level(c) == Level::Allow);
        let scan = if all_allowed {
            None
        } else {
            crate::poison::ScanFold::new(&baseline.view(), &usable)
        };
        let skipped = match (&baseline.poison, &scan) {
            (None, _) => Some("the baseline pins no row-level profile".to_owned()),
            (Some(_), None) if all_allowed => {
                Some("the policy sets every row-level code to allow".to_owned())
            }
            (Some(_), None) => {
                Some("the batch lacks a pinned feature (see the schema findings)".to_owned())
            }
            _ => None,
        };
        Ok(Self {
            baseline,
            policy,
            candidates,
            plans,
            summary,
            scan,
            skipped,
            extras: Extras::default(),
        })
    }

    /// Folds one window of blocks in: the column summaries and the row pass side by side.
    fn update(&mut self, blocks: &[polars::prelude::DataFrame], at: usize) -> Result<()> {
        let (summary, plans, scan) = (&mut self.summary, &self.plans, &mut self.scan);
        let (a, b) = rayon::join(
            || blocks.iter().try_for_each(|df| summary.update(df, plans)),
            || match scan {
                Some(fold) => fold.update(blocks, at),
                None => Ok(()),
            },
        );
        a.and(b)
    }

    /// Decides, with `rows` for the few detectors that count candidate values exactly in a
    /// second pass over their columns, and for the ids of flagged rows.
    fn finish(self, rows: Rows<'_>) -> Result<Evaluation> {
        let Pass {
            baseline,
            policy,
            candidates,
            summary,
            scan,
            skipped,
            extras,
            ..
        } = self;
        let Some(scan) = scan.map(crate::poison::ScanFold::finish) else {
            let mut eval = evaluate(baseline, policy, &summary, candidates)?;
            if let Some(why) = &skipped {
                for code in crate::codes::row_codes() {
                    eval.records
                        .push(record::TestRecord::skipped(code, Subject::default(), why));
                }
                record::sort(&mut eval.records);
            }
            eval.notes.extend(
                skipped.map(|why| format!("row-level poisoning detectors did not run: {why}")),
            );
            return Ok(eval);
        };
        decide_rows(baseline, policy, &summary, candidates, &scan, rows, extras)
    }
}

/// What to compute per usable column.
#[must_use]
pub fn plans(
    baseline: &Baseline,
    usable: &[String],
    policy: &Policy,
) -> BTreeMap<String, ColumnPlan> {
    let mut out = BTreeMap::new();
    for col in baseline.columns.iter().filter(|c| usable.contains(&c.name)) {
        let plan = match (&col.numeric, &col.categorical) {
            (Some(n), _) => {
                let tol = schema::tolerance(n);
                let mut plan = NumericPlan::new(n.edges.clone(), n.mean, n.min, n.max)
                    .with_tolerance(tol.far_min, tol.far_max);
                if let Some(d) = policy.domains.get(&col.name)
                    && (d.min.is_some() || d.max.is_some())
                {
                    plan = plan.with_domain(
                        d.min.unwrap_or(f64::NEG_INFINITY),
                        d.max.unwrap_or(f64::INFINITY),
                    );
                }
                ColumnPlan::Numeric(plan)
            }
            (None, Some(c)) => ColumnPlan::Categorical(CategoricalPlan {
                domain: c.domain.iter().cloned().collect::<HashSet<_>>(),
                cap_unseen: true,
            }),
            (None, None) => continue,
        };
        out.insert(col.name.clone(), plan);
    }
    out
}
