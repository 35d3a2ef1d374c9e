//! The rows behind the findings that fired: the quarantine file, the rows listed on each
//! finding, every row's suspicion score, and the ids of those rows.

use std::collections::BTreeMap;

use polars::prelude::DataFrame;

use super::{Block, BlockScorer, Outcome, Scan, duplicates};
use crate::error::Result;
use crate::finding::{Finding, RowRef};
use crate::poison::BaselineView;
use crate::source::Rows as BatchRows;

mod render;
mod residual;
pub use render::{QuarantineFormat, render_quarantine, render_scores};
pub use residual::residuals;

/// Which rows a fired finding points at.
#[derive(Debug, Clone)]
///
/// Rate detectors flag more rows than the attack changed (their trusted rate of flags comes
/// along); `limit` keeps the estimated excess, most suspicious first, so the quarantine holds
/// about as many rows as the finding says are extra.
pub enum RowSelector {
    /// Rows whose label the reference model finds surprising.
    Surprising {
        /// Rows to keep.
        limit: usize,
        /// With a directed alternative (`from` relabelled `to`), only rows labelled `to`: the
        /// flips it estimates are there, not among the most surprising rows overall.
        to: Option<u16>,
    },
    /// Rows with an anomaly score above the trusted cut.
    Anomalous {
        /// Rows to keep.
        limit: usize,
    },
    /// Rows with an extreme-value score above the trusted cut.
    Extreme {
        /// Rows to keep.
        limit: usize,
    },
    /// Repeated rows (second and later copies) of the exact or near fingerprint.
    Duplicates {
        /// Near (codes) rather than exact fingerprints.
        near: bool,
    },
    /// Rows matching a trusted row's cell with another label.
    Conflicting {
        /// Rows to keep.
        limit: usize,
    },
    /// Rows whose stitched-rows weight reaches the trusted rows' 90th percentile.
    Stitched {
        /// Rows to keep.
        limit: usize,
    },
    /// Explicit rows (trigger and point-mass values).
    Listed(Vec<u32>),
    /// Rows of one segment of a feature labelled with one class that the reference model
    /// does not back (probability of the label below one half, or no model).
    Segment {
        /// Feature index.
        feature: usize,
        /// The segment's codes.
        codes: Vec<usize>,
        /// The class.
        class: u16,
        /// Rows to keep.
        limit: usize,
    },
}

/// One row of the quarantine file.
#[derive(Debug, Clone, PartialEq)]
pub struct QuarantineRow {
    /// Row index in batch order.
    pub row: u64,
    /// The row's id, when an id column was pinned.
    pub id: Option<String>,
    /// Finding codes that flagged it, sorted.
    pub codes: Vec<String>,
    /// Suspicion score: per flagging finding, a score in (0, 1], summed.
    pub score: f64,
}

/// Score of an anomaly score `a` as a selector's contribution, in (0, 1).
pub(crate) fn squash(a: f32) -> f64 {
    let a = f64::from(a);
    a / (1.0 + a)
}

/// Score of the label's probability `p` as a selector's contribution: `1 - p`, or 1 without
/// a model.
pub(crate) fn surprise(p: f32) -> f64 {
    let p = f64::from(p);
    if p.is_nan() {
        1.0
    } else {
        1.0 - p.clamp(0.0, 1.0)
    }
}

/// Rows a selector points at with their scores, in batch order, at most its limit (the
/// most suspicious). `listed` holds the rows the second read found for it ([`second_pass`]).
fn select(sel: &RowSelector, listed: Option<&Vec<(u32, f64)>>) -> Vec<(f64, u32)> {
    let mut scored: Vec<(f64, u32)> = match (sel, listed) {
        (RowSelector::Listed(rows), _) => rows.iter().map(|&r| (1.0, r)).collect(),
        (_, Some(rows)) => rows.iter().map(|&(r, s)| (s, r)).collect(),
        (_, None) => Vec::new(),
    };
    let limit = match sel {
        RowSelector::Surprising { limit, .. }
        | RowSelector::Anomalous { limit }
        | RowSelector::Extreme { limit }
        | RowSelector::Conflicting { limit }
        | RowSelector::Stitched { limit }
        | RowSelector::Segment { limit, .. } => *limit,
        _ => usize::MAX,
    };
    if scored.len() > limit {
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        scored.truncate(limit);
        scored.sort_unstable_by_key(|s| s.1);
    }
    scored
}

/// What the second read of a batch found.
#[derive(Debug, Default)]
pub struct SecondPass {
    /// Per selector (by candidate index) other than [`RowSelector::Listed`], its rows in
    /// batch order with their scores.
    pub listed: BTreeMap<usize, Vec<(u32, f64)>>,
    /// Every row's base score (`--row-scores`): half of `1 - P(label | x)` and half of
    /// `a / (1 + a)` for its anomaly score `a`.
    pub base: Option<Vec<f64>>,
    /// The ids of the listed and named rows, by batch row (with an id column).
    pub ids: BTreeMap<u64, String>,
    /// Per selector listed only in part (by candidate index), how many rows it flags.
    pub partial: BTreeMap<usize, usize>,
}

/// The rows a selector points at, from the highest-scoring rows the pass kept
/// ([`crate::detect::TopRows`]), in batch order with their scores: `None` when the pass did
/// not keep them all (more rows than it keeps, or a selector it keeps none for).
fn from_states(sel: &RowSelector, scan: &Scan) -> Option<Vec<(u32, f64)>> {
    let (top, limit) = top_of(sel, scan)?;
    Some(in_row_order(top.best(limit)?))
}

/// The kept rows as (row, score) in batch order.
fn in_row_order(best: Vec<(f64, u64)>) -> Vec<(u32, f64)> {
    let mut rows: Vec<(u32, f64)> = best
        .into_iter()
        .map(|(score, r)| (u32::try_from(r).unwrap_or(u32::MAX), score))
        .collect();
    rows.sort_unstable_by_key(|r| r.0);
    rows
}

/// The pass's kept rows for a selector, and the selector's limit.
fn top_of<'s>(sel: &RowSelector, scan: &'s Scan) -> Option<(&'s crate::detect::TopRows, usize)> {
    let s = &scan.states;
    Some(match sel {
        // The kept rows are the most surprising of any label: a directed selector reads.
        RowSelector::Surprising { limit, to: None } => (&s.label.as_ref()?.top_surprising, *limit),
        RowSelector::Anomalous { limit } => (&s.anomaly.as_ref()?.top_anomalous, *limit),
        RowSelector::Extreme { limit } => (&s.anomaly.as_ref()?.top_extreme, *limit),
        RowSelector::Conflicting { limit } => (&s.duplicates.as_ref()?.top_conflicting, *limit),
        RowSelector::Stitched { limit } => (&s.stitched.as_ref()?.top, *limit),
        _ => return None,
    })
}

/// Whether the row `i` of a scored block is one a selector points at, and its score.
fn pick(
    sel: &RowSelector,
    b: &Block,
    i: usize,
    repeated: Option<&duplicates::RepeatedRows<'_>>,
    filter: Option<&duplicates::Bloom>,
) -> Option<f64> {
    let (y, p) = (b.e.label[i], b.p[i]);
    match sel {
        RowSelector::Surprising { to, .. } => {
            (!p.is_nan() && b.inside[i] && to.is_none_or(|t| t == y)).then(|| surprise(p))
        }
        RowSelector::Anomalous { .. } => (b.anomaly[i] > 1.0).then(|| squash(b.anomaly[i])),
        RowSelector::Extreme { .. } => (b.extreme[i] > 1.0).then(|| squash(b.extreme[i])),
        RowSelector::Duplicates { near } => repeated
            .is_some_and(|r| r.repeated(*near, b.e.fp_near[i], b.e.fp_exact[i]))
            .then_some(1.0),
        RowSelector::Conflicting { .. } => filter
            .is_some_and(|f| duplicates::conflicts(f, b.e.fp_near[i], y))
            .then_some(1.0),
        RowSelector::Segment {
            feature,
            codes,
            class,
            ..
        } => {
            let c = usize::from(*b.e.codes.get(*feature)?.get(i)?);
            (codes.contains(&c) && y == *class && (p.is_nan() || p < 0.5)).then(|| surprise(p))
        }
        RowSelector::Stitched { .. } => {
            let w = f64::from(*b.stitched.get(i)?);
            (w >= b.stitched_cut).then(|| w / (1.0 + w))
        }
        RowSelector::Listed(_) => None,
    }
}

/// Reads the batch a second time to list the rows behind the findings that fired, their
/// ids, and every row's base score for `--row-scores`: the row pass keeps nothing per row,
/// so the rows are encoded and scored again, exactly as the first read did ([`BlockScorer`]).
/// Rows the pass kept already are not looked for again: the trigger's and the point mass's,
/// and the highest-scoring surprising, anomalous, extreme and conflicting rows (up to
/// [`crate::detect::TOP_ROWS`] of each). Then only the id column is read, when there is
/// one, and nothing at all for a batch that passes.
///
/// `id` names the id column: the ids of every listed row (before each finding's limit) and
/// of the rows the findings name are read in the same pass. Without `list_all` (no
/// `--quarantine` or `--row-scores`), a finding with more rows than the pass kept lists the
/// kept ones, the most suspicious, without a read ([`SecondPass::partial`]).
///
/// # Errors
/// A batch that can no longer be read, or that changed since the first read.
pub fn second_pass(
    baseline: &BaselineView<'_>,
    scan: &Scan,
    wanted: &[(usize, &RowSelector)],
    row_scores: bool,
    list_all: bool,
    id: Option<&str>,
    rows_of: BatchRows<'_>,
) -> Result<SecondPass> {
    use rayon::prelude::*;
    let mut out = SecondPass::default();
    let mut named: Vec<u32> = Vec::new();
    let mut rest: Vec<(usize, &RowSelector)> = Vec::new();
    for &(c, sel) in wanted {
        let found = match sel {
            RowSelector::Listed(rows) => {
                named.extend_from_slice(rows);
                continue;
            }
            _ => from_states(sel, scan).or_else(|| {
                // Not asked to list every row: the kept rows stand for the rest.
                let (top, limit) = top_of(sel, scan).filter(|_| !list_all)?;
                let rows = in_row_order(top.best(crate::detect::TOP_ROWS)?);
                let all = usize::try_from(top.seen).unwrap_or(usize::MAX).min(limit);
                out.partial.insert(c, all);
                Some(rows)
            }),
        };
        match found {
            Some(rows) => {
                named.extend(rows.iter().map(|r| r.0));
                out.listed.insert(c, rows);
            }
            None => rest.push((c, sel)),
        }
    }
    if id.is_none() {
        named.clear();
    }
    named.sort_unstable();
    named.dedup();
    let wanted = rest;
    if matches!(rows_of, BatchRows::Absent) {
        // No rows to read again (a decision from kept summaries): the kept rows are listed,
        // the others not.
        return Ok(out);
    }
    let scoring = !wanted.is_empty() || row_scores;
    let Some(profile) = &baseline.poison else {
        return Ok(out);
    };
    let scorer = if scoring {
        BlockScorer::new(baseline, None)
    } else {
        None
    };
    if scorer.is_none() && named.is_empty() {
        return Ok(out);
    }
    let repeated = scan
        .states
        .duplicates
        .as_ref()
        .filter(|_| {
            wanted
                .iter()
                .any(|(_, s)| matches!(s, RowSelector::Duplicates { .. }))
        })
        .map(duplicates::RepeatedRows::new);
    let filter = profile.duplicates.unsealed_filter();
    if scorer.is_some() {
        for &(c, _) in &wanted {
            out.listed.insert(c, Vec::new());
        }
        if row_scores {
            out.base = Some(Vec::with_capacity(scan.n));
        }
    }
    let mut columns = scorer
        .as_ref()
        .map(BlockScorer::columns)
        .unwrap_or_default();
    if let Some(id) = id
        && !columns.iter().any(|c| c == id)
    {
        columns.push(id.to_owned());
    }
    let mut next_named = 0usize;
    let mut offset = 0usize;
    rows_of.for_each_window(Some(&columns), &mut |blocks, _| {
        let scored: Vec<Option<Block>> = blocks
            .par_iter()
            .map(|df| {
                scorer
                    .as_ref()
                    .map(|s| s.block(df, 0, u64::MAX))
                    .transpose()
            })
            .collect::<Result<_>>()?;
        for (df, b) in blocks.iter().zip(&scored) {
            let h = df.height();
            // Block rows whose id is wanted.
            let mut want_id: Vec<usize> = Vec::new();
            while next_named < named.len() && (named[next_named] as usize) < offset + h {
                want_id.push(named[next_named] as usize - offset);
                next_named += 1;
            }
            if let Some(b) = b {
                for &(c, sel) in &wanted {
                    let list = out.listed.entry(c).or_default();
                    for i in 0..b.e.n {
                        if let Some(s) = pick(sel, b, i, repeated.as_ref(), filter.as_ref()) {
                            list.push(((offset + i) as u32, s));
                            want_id.push(i);
                        }
                    }
                }
                if let Some(base) = &mut out.base {
                    base.extend((0..b.e.n).map(|i| {
                        let label = if b.p[i].is_nan() {
                            0.0
                        } else {
                            surprise(b.p[i])
                        };
                        let a = f64::from(b.anomaly[i]).max(0.0);
                        0.5 * label + 0.5 * a / (1.0 + a)
                    }));
                }
            }
            if let Some(id) = id
                && !want_id.is_empty()
            {
                want_id.sort_unstable();
                want_id.dedup();
                read_ids(df, id, &want_id, offset as u64, &mut out.ids)?;
            }
            offset += h;
        }
        Ok(())
    })?;
    if offset != scan.n {
        return Err(crate::error::Error::Internal(format!(
            "second read: the batch read {offset} rows, the row pass {}",
            scan.n
        )));
    }
    Ok(out)
}

/// The ids of rows `local` (sorted) of one block, as text, into `out` by batch row.
fn read_ids(
    df: &DataFrame,
    id: &str,
    local: &[usize],
    offset: u64,
    out: &mut BTreeMap<u64, String>,
) -> Result<()> {
    let Ok(col) = df.column(id) else {
        return Ok(());
    };
    let mut next = 0usize;
    let mut at = 0usize;
    crate::summary::for_each_str_chunk(col.as_materialized_series(), |arr| {
        while next < local.len() && local[next] < at + arr.len() {
            if let Some(v) = arr.get(local[next] - at) {
                out.insert(offset + local[next] as u64, v.to_owned());
            }
            next += 1;
        }
        at += arr.len();
    })
}

/// A row's label, the reference model's probability of it, and whether it lies inside the
/// trusted support.
pub type RowFact = (u16, f32, bool);

/// Per wanted row (batch index), its [`RowFact`] and its stitched-rows weight (NaN without
/// that test): one read of the features and the label, where only the wanted rows of each
/// block are encoded and scored. Nothing is read for no rows.
///
/// # Errors
/// A batch that can no longer be read.
pub fn row_facts_and_weights(
    baseline: &BaselineView<'_>,
    rows_of: BatchRows<'_>,
    wanted: Vec<u32>,
) -> Result<foldhash::HashMap<u32, (RowFact, f32)>> {
    let mut out = foldhash::HashMap::default();
    visit_rows(baseline, rows_of, wanted, |r, b, i| {
        let w = b.stitched.get(i).copied().unwrap_or(f32::NAN);
        out.insert(r, ((b.e.label[i], b.p[i], b.inside[i]), w));
    })?;
    Ok(out)
}

/// Encodes and scores only the `wanted` rows of each block (one read of the features and the
/// label) and hands each to `visit` with its block and its index there.
fn visit_rows(
    baseline: &BaselineView<'_>,
    rows_of: BatchRows<'_>,
    mut wanted: Vec<u32>,
    mut visit: impl FnMut(u32, &Block, usize),
) -> Result<()> {
    wanted.sort_unstable();
    wanted.dedup();
    if wanted.is_empty() {
        return Ok(());
    }
    let Some(scorer) = BlockScorer::new(baseline, None) else {
        return Ok(());
    };
    let columns = scorer.columns();
    let mut next = 0usize;
    let mut offset = 0u64;
    for_each_block(rows_of, &columns, |df| {
        let end = offset + df.height() as u64;
        let start = next;
        while next < wanted.len() && u64::from(wanted[next]) < end {
            next += 1;
        }
        if next > start {
            let b = score_some(&scorer, df, offset, &wanted[start..next])?;
            for (i, &r) in wanted[start..next].iter().enumerate() {
                visit(r, &b, i);
            }
        }
        offset = end;
        Ok(())
    })
}

/// Encodes and scores the rows `sorted` (batch rows, ascending, inside the block) of a block
/// whose first row is batch row `offset`, alone: row `i` of the result is `sorted[i]`.
///
/// # Errors
/// Rows the block does not hold, or a block that cannot be encoded.
pub(crate) fn score_some(
    scorer: &BlockScorer<'_>,
    df: &DataFrame,
    offset: u64,
    sorted: &[u32],
) -> Result<Block> {
    use polars::prelude::{IdxCa, IdxSize};
    let local: Vec<IdxSize> = sorted
        .iter()
        .map(|&r| (u64::from(r) - offset) as IdxSize)
        .collect();
    let taken = df
        .take(&IdxCa::from_vec("rows".into(), local))
        .map_err(|e| crate::error::Error::Internal(format!("taking rows: {e}")))?;
    scorer.block(&taken, 0, u64::MAX)
}

/// Attaches the rows behind each fired poison finding: every row flagged by a deny finding
/// with its codes and score, and on each finding (deny or warn) its ten highest-scoring rows.
///
/// `fired` maps a candidate index to the index of its finding in `findings`; `second` is
/// what [`second_pass`] found for them. Returns how many rows the quarantine holds and,
/// with `materialize`, its rows.
#[must_use]
pub fn quarantine(
    baseline: &BaselineView<'_>,
    outcome: &Outcome,
    fired: &BTreeMap<usize, usize>,
    findings: &mut [Finding],
    second: &SecondPass,
    materialize: bool,
) -> (usize, Vec<QuarantineRow>) {
    if baseline.poison.is_none() {
        return (0, Vec::new());
    }
    let listed = &second.listed;
    // (row, candidate, finding, score) of every row a deny finding flags: 24 bytes each, no
    // allocation per row, so counting the quarantine of a large batch stays cheap.
    let mut flags: Vec<(u32, u32, u32, f64)> = Vec::new();
    for (&cand, &finding) in fired {
        let Some(Some(sel)) = outcome.selectors.get(cand) else {
            continue;
        };
        let Some(f) = findings.get_mut(finding) else {
            continue;
        };
        let mut scored = select(sel, listed.get(&cand));
        let flagged = second.partial.get(&cand).copied().unwrap_or(scored.len());
        // The quarantine holds what blocked; warnings still list their top rows below.
        if f.severity == crate::finding::Severity::Deny {
            f.evidence
                .insert("rows_quarantined".into(), scored.len() as f64);
            flags.extend(
                scored
                    .iter()
                    .map(|&(s, r)| (r, cand as u32, finding as u32, s)),
            );
        }
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        f.rows = scored
            .iter()
            .take(10)
            .map(|&(s, r)| RowRef {
                row: u64::from(r),
                id: None,
                score: crate::finding::tidy(s),
            })
            .collect();
        f.evidence.insert("rows_flagged".into(), flagged as f64);
    }
    // Per row, in candidate order, each code once (its first finding's score).
    flags.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut count = 0usize;
    let mut out = Vec::new();
    for group in flags.chunk_by(|a, b| a.0 == b.0) {
        count += 1;
        if !materialize {
            continue;
        }
        let mut codes: Vec<String> = Vec::new();
        let mut score = 0.0;
        for &(_, _, finding, s) in group {
            let code = &findings[finding as usize].code;
            if !codes.contains(code) {
                codes.push(code.clone());
                score += s;
            }
        }
        codes.sort();
        out.push(QuarantineRow {
            row: u64::from(group[0].0),
            id: None,
            codes,
            score: crate::finding::tidy(score),
        });
    }
    (count, out)
}

/// The text of the id column at the given rows (batch order), read in one pass over that
/// column alone.
///
/// # Errors
/// An id column that cannot be read as text, or a batch that can no longer be read.
pub fn ids_of(
    rows_of: BatchRows<'_>,
    id: &str,
    mut rows: Vec<u64>,
) -> Result<BTreeMap<u64, String>> {
    rows.sort_unstable();
    rows.dedup();
    let mut out = BTreeMap::new();
    if rows.is_empty() {
        return Ok(out);
    }
    let mut next = 0usize;
    let mut offset = 0u64;
    for_each_block(rows_of, &[id.to_owned()], |df| {
        let end = offset + df.height() as u64;
        let mut local = Vec::new();
        while next < rows.len() && rows[next] < end {
            local.push((rows[next] - offset) as usize);
            next += 1;
        }
        if !local.is_empty() {
            read_ids(df, id, &local, offset, &mut out)?;
        }
        offset = end;
        Ok(())
    })?;
    Ok(out)
}

/// Calls `f` on every block of the batch in batch order, with only `columns` read.
///
/// # Errors
/// A batch that can no longer be read, or an error `f` returns.
pub(crate) fn for_each_block(
    rows: BatchRows<'_>,
    columns: &[String],
    mut f: impl FnMut(&DataFrame) -> Result<()>,
) -> Result<()> {
    rows.for_each_window(Some(columns), &mut |blocks, _| {
        for df in blocks {
            f(df)?;
        }
        Ok(())
    })
}

/// A suspicion score for every row, for ranking (`check --row-scores`): rows in the
/// quarantine score 1 plus their quarantine score; every row also gets its base score from
/// the second read (half of `1 - P(label | x)` under the reference model and half of
/// `a / (1 + a)` for its anomaly score `a`), so rows no finding flagged are still ordered by
/// how unusual they are.
#[must_use]
pub fn row_scores(base: &[f64], quarantine: &[QuarantineRow]) -> Vec<f64> {
    let mut out = base.to_vec();
    for q in quarantine {
        if let Some(s) = out.get_mut(q.row as usize) {
            *s += 1.0 + q.score;
        }
    }
    // Every term comes from one row's own arithmetic, so the scores do not depend on how
    // the batch was sliced: no rounding pass is needed for byte-identical output.
    out
}
