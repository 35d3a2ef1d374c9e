//! The rows behind the findings that fired: the quarantine file, the rows listed on each
//! finding, every row's suspicion score, and the ids of those rows.

use std::collections::BTreeMap;

use polars::prelude::DataFrame;

use super::{Outcome, PoisonProfile, Scan, duplicates};
use crate::baseline::Baseline;
use crate::error::Result;
use crate::finding::{Finding, RowRef};
use crate::rows::Encoder;
use crate::source::Rows as BatchRows;

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

/// The per-row contribution of one selector, in (0, 1].
fn row_score(sel: &RowSelector, scan: &Scan, i: usize) -> f64 {
    match sel {
        RowSelector::Surprising { .. } | RowSelector::Segment { .. } => {
            let p = f64::from(scan.rows.p_label[i]);
            if p.is_nan() {
                1.0
            } else {
                1.0 - p.clamp(0.0, 1.0)
            }
        }
        _ => 1.0,
    }
}

/// Score of an anomaly score `a` as a selector's contribution, in (0, 1).
fn squash(a: f32) -> f64 {
    let a = f64::from(a);
    a / (1.0 + a)
}

/// Rows a selector points at with their scores, in batch order, at most its limit (the
/// most suspicious). `listed` holds the rows the second read found for a segment, anomalous
/// or extreme selector ([`second_pass`]).
fn select(
    sel: &RowSelector,
    profile: &PoisonProfile,
    scan: &Scan,
    listed: Option<&Vec<(u32, f64)>>,
) -> Vec<(f64, u32)> {
    let sparse = |v: &[(u32, f32)]| v.iter().map(|&(r, a)| (squash(a), r)).collect();
    let mut scored: Vec<(f64, u32)> = match (sel, listed) {
        (_, Some(rows)) => rows.iter().map(|&(r, s)| (s, r)).collect(),
        (RowSelector::Anomalous { .. }, None) => sparse(&scan.rows.anomalous),
        (RowSelector::Extreme { .. }, None) => sparse(&scan.rows.extreme),
        _ => select_all(sel, profile, scan)
            .into_iter()
            .map(|r| (row_score(sel, scan, r as usize), r))
            .collect(),
    };
    let limit = match sel {
        RowSelector::Surprising { limit }
        | RowSelector::Anomalous { limit }
        | RowSelector::Extreme { limit }
        | RowSelector::Conflicting { limit }
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

fn select_all(sel: &RowSelector, profile: &PoisonProfile, scan: &Scan) -> Vec<u32> {
    let n = scan.rows.n;
    match sel {
        RowSelector::Surprising { .. } => match &profile.label_model {
            Some(m) => (0..n)
                .filter(|&i| super::inconsistency::is_surprising(m, scan, i))
                .map(|i| i as u32)
                .collect(),
            None => Vec::new(),
        },
        // Scored from the rows past the cuts the pass kept ([`select`]).
        RowSelector::Anomalous { .. } | RowSelector::Extreme { .. } => Vec::new(),
        RowSelector::Duplicates { near } => duplicates::repeated_rows(scan, *near),
        RowSelector::Conflicting { .. } => duplicates::conflicting_rows(&profile.duplicates, scan),
        RowSelector::Listed(rows) => rows.clone(),
        // Found by the second read ([`second_pass`]).
        RowSelector::Segment { .. } => Vec::new(),
    }
}

/// What the second read of a batch found.
#[derive(Debug, Default)]
pub struct SecondPass {
    /// Per segment selector (by candidate index), its rows in batch order with their
    /// scores.
    pub listed: BTreeMap<usize, Vec<(u32, f64)>>,
    /// Every row's anomaly score, when asked for (`--row-scores`).
    pub anomaly: Option<Vec<f32>>,
}

/// Reads the batch a second time for what the row pass does not keep per row: the rows of
/// a fired segment finding (the row pass keeps no feature codes; only the segments' columns
/// are read), and every row's anomaly score for `--row-scores` (which re-encodes and
/// re-scores every row, exactly as the first read did). Nothing is read when neither is
/// wanted, as for a batch that passes.
///
/// # Errors
/// A batch that can no longer be read, or that changed since the first read.
pub fn second_pass(
    baseline: &Baseline,
    scan: &Scan,
    wanted: &[(usize, &RowSelector)],
    all_anomaly: bool,
    rows_of: BatchRows<'_>,
) -> Result<SecondPass> {
    let mut out = SecondPass::default();
    let Some(profile) = &baseline.poison else {
        return Ok(out);
    };
    let rescore = all_anomaly;
    let mut features: Vec<usize> = wanted
        .iter()
        .filter_map(|(_, s)| match s {
            RowSelector::Segment { feature, .. } => Some(*feature),
            _ => None,
        })
        .collect();
    features.sort_unstable();
    features.dedup();
    let encoder = Encoder::new(baseline, None);
    let scorer = match (&profile.anomaly, rescore) {
        (Some(a), true) => Some(super::anomaly::Scorer::new(baseline, &encoder, a)),
        _ => None,
    };
    let mut names: Vec<String> = if scorer.is_some() {
        encoder.features.iter().map(|f| f.name.clone()).collect()
    } else {
        features
            .iter()
            .filter_map(|&j| encoder.features.get(j).map(|f| f.name.clone()))
            .collect()
    };
    if names.is_empty() {
        return Ok(out);
    }
    if scorer.is_some() {
        names.extend(encoder.label.clone());
    }
    if all_anomaly && scorer.is_some() {
        out.anomaly = Some(Vec::with_capacity(scan.rows.n));
    }
    let mut offset = 0usize;
    for_each_block(rows_of, &names, |df| {
        let encoded = match &scorer {
            Some(_) => Some(encoder.encode(df)?),
            None => None,
        };
        let anomaly = match (&scorer, &encoded) {
            (Some(sc), Some(e)) => sc.score(e),
            _ => Vec::new(),
        };
        let mut codes: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
        for &j in &features {
            let c = match &encoded {
                Some(e) => e.codes.get(j).cloned().unwrap_or_default(),
                None => encoder.feature_codes(j, df)?,
            };
            codes.insert(j, c);
        }
        for &(cand, sel) in wanted {
            let RowSelector::Segment {
                feature,
                codes: seg,
                class,
                ..
            } = sel
            else {
                continue;
            };
            let mut member = [false; 256];
            for &c in seg {
                if let Some(m) = member.get_mut(c) {
                    *m = true;
                }
            }
            let rows = out.listed.entry(cand).or_default();
            for (i, &c) in codes[feature].iter().enumerate() {
                let r = offset + i;
                let (Some(&y), Some(&p)) = (scan.rows.label.get(r), scan.rows.p_label.get(r))
                else {
                    continue;
                };
                if member[usize::from(c)] && y == *class && (p.is_nan() || p < 0.5) {
                    rows.push((r as u32, row_score(sel, scan, r)));
                }
            }
        }
        if let Some(all) = &mut out.anomaly {
            all.extend_from_slice(&anomaly);
        }
        offset += df.height();
        Ok(())
    })?;
    if offset != scan.rows.n {
        return Err(crate::error::Error::Internal(format!(
            "second read: the batch read {offset} rows, the row pass {}",
            scan.rows.n
        )));
    }
    Ok(out)
}

/// Attaches the rows behind each fired poison finding: every row flagged by a deny finding
/// with its codes and score, and on each finding (deny or warn) its ten highest-scoring rows.
///
/// `fired` maps a candidate index to the index of its finding in `findings`; `second` is
/// what [`second_pass`] found for them.
#[must_use]
pub fn quarantine(
    baseline: &Baseline,
    scan: &Scan,
    outcome: &Outcome,
    fired: &BTreeMap<usize, usize>,
    findings: &mut [Finding],
    second: &SecondPass,
) -> Vec<QuarantineRow> {
    let Some(profile) = &baseline.poison else {
        return Vec::new();
    };
    let listed = &second.listed;
    let mut per_row: BTreeMap<u32, (Vec<String>, f64)> = BTreeMap::new();
    for (&cand, &finding) in fired {
        let Some(Some(sel)) = outcome.selectors.get(cand) else {
            continue;
        };
        let Some(f) = findings.get_mut(finding) else {
            continue;
        };
        let mut scored = select(sel, profile, scan, listed.get(&cand));
        let flagged = scored.len();
        // The quarantine holds what blocked; warnings still list their top rows below.
        if f.severity == crate::finding::Severity::Deny {
            for &(s, r) in &scored {
                let e = per_row.entry(r).or_default();
                if !e.0.contains(&f.code) {
                    e.0.push(f.code.clone());
                    e.1 += s;
                }
            }
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
    per_row
        .into_iter()
        .map(|(row, (mut codes, score))| {
            codes.sort();
            QuarantineRow {
                row: u64::from(row),
                id: None,
                codes,
                score: crate::finding::tidy(score),
            }
        })
        .collect()
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
        let Ok(col) = df.column(id) else {
            offset += df.height() as u64;
            return Ok(());
        };
        crate::summary::for_each_str_chunk(col.as_materialized_series(), |arr| {
            let len = arr.len() as u64;
            while next < rows.len() && rows[next] < offset + len {
                let i = (rows[next] - offset) as usize;
                if let Some(v) = arr.get(i) {
                    out.insert(rows[next], v.to_owned());
                }
                next += 1;
            }
            offset += len;
        })
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

/// File format of the quarantine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuarantineFormat {
    /// Apache Parquet.
    Parquet,
    /// CSV with a header.
    Csv,
}

impl QuarantineFormat {
    /// The format named by a path's extension.
    ///
    /// # Errors
    /// An extension other than `.parquet` or `.csv`.
    pub fn from_path(flag: &str, path: &std::path::Path) -> Result<Self> {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("parquet") => Ok(Self::Parquet),
            Some(e) if e.eq_ignore_ascii_case("csv") => Ok(Self::Csv),
            _ => Err(crate::Error::Usage(format!(
                "{flag} {} must end in .parquet or .csv",
                path.display()
            ))),
        }
    }
}

/// The quarantine as file bytes: columns `row` (u64), `id` (text, null without an id column),
/// `codes` (`;`-separated) and `score`.
///
/// # Errors
/// A failure of the writer (a bug).
pub fn render_quarantine(rows: &[QuarantineRow], format: QuarantineFormat) -> Result<Vec<u8>> {
    use polars::prelude::Column;
    frame_bytes(
        rows.len(),
        vec![
            Column::new(
                "row".into(),
                rows.iter().map(|r| r.row).collect::<Vec<u64>>(),
            ),
            Column::new(
                "id".into(),
                rows.iter()
                    .map(|r| r.id.clone())
                    .collect::<Vec<Option<String>>>(),
            ),
            Column::new(
                "codes".into(),
                rows.iter()
                    .map(|r| r.codes.join(";"))
                    .collect::<Vec<String>>(),
            ),
            Column::new(
                "score".into(),
                rows.iter().map(|r| r.score).collect::<Vec<f64>>(),
            ),
        ],
        format,
    )
}

/// Writes columns as Parquet or CSV (with a header) into memory.
fn frame_bytes(
    height: usize,
    columns: Vec<polars::prelude::Column>,
    format: QuarantineFormat,
) -> Result<Vec<u8>> {
    use polars::prelude::*;
    let internal = |e: PolarsError| crate::Error::Internal(format!("writing rows: {e}"));
    let mut df = DataFrame::new(height, columns).map_err(internal)?;
    let mut buf = Vec::new();
    match format {
        QuarantineFormat::Parquet => {
            ParquetWriter::new(&mut buf)
                .finish(&mut df)
                .map_err(internal)?;
        }
        QuarantineFormat::Csv => {
            CsvWriter::new(&mut buf)
                .include_header(true)
                .finish(&mut df)
                .map_err(internal)?;
        }
    }
    Ok(buf)
}

/// A suspicion score for every row, for ranking (`check --row-scores`): rows in the
/// quarantine score 1 plus their quarantine score; every row also gets half of `1 - P(label
/// | x)` under the reference model and half of `a / (1 + a)` for its anomaly score `a`, so
/// rows no finding flagged are still ordered by how unusual they are.
#[must_use]
pub fn row_scores(scan: &Scan, anomaly: &[f32], quarantine: &[QuarantineRow]) -> Vec<f64> {
    let mut out: Vec<f64> = (0..scan.rows.n)
        .map(|i| {
            let p = f64::from(scan.rows.p_label[i]);
            let label = if p.is_nan() {
                0.0
            } else {
                1.0 - p.clamp(0.0, 1.0)
            };
            let a = f64::from(anomaly.get(i).copied().unwrap_or(0.0)).max(0.0);
            0.5 * label + 0.5 * a / (1.0 + a)
        })
        .collect();
    for q in quarantine {
        if let Some(s) = out.get_mut(q.row as usize) {
            *s += 1.0 + q.score;
        }
    }
    // Every term comes from one row's own arithmetic, so the scores do not depend on how
    // the batch was sliced: no rounding pass is needed for byte-identical output.
    out
}

/// Every row's score as file bytes: columns `row`, `id` and `score`.
///
/// # Errors
/// A failure of the writer (a bug).
pub fn render_scores(
    scores: &[f64],
    ids: Option<&BTreeMap<u64, String>>,
    format: QuarantineFormat,
) -> Result<Vec<u8>> {
    use polars::prelude::Column;
    let n = scores.len();
    frame_bytes(
        n,
        vec![
            Column::new("row".into(), (0..n as u64).collect::<Vec<u64>>()),
            Column::new(
                "id".into(),
                (0..n as u64)
                    .map(|i| ids.and_then(|m| m.get(&i).cloned()))
                    .collect::<Vec<Option<String>>>(),
            ),
            Column::new("score".into(), scores.to_vec()),
        ],
        format,
    )
}
