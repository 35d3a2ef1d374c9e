//! `poison-point-mass`: one exact numeric value repeated far more often than the trusted data
//! allows.
//!
//! **What it detects.** Injected rows that share a stamped value (a trigger such as
//! `amount = 13.37`), default values written by a broken producer, and copy-paste floods
//! that vary other columns.
//!
//! **How.** Only bins that gained rows are searched: a bin is a candidate when its batch
//! count exceeds its pinned share by three binomial standard deviations (plus three rows), and
//! within candidate bins exact values are counted. The trusted frequency of a value is its
//! pinned count among the column's most frequent values, or else the largest count of any
//! value not listed (an upper bound), so naturally discrete columns (counts, ratings) are
//! judged against their own repeats. A value is reported when it holds at least 0.2% of the
//! batch and three times its trusted share; the test is an exact binomial upper tail, the
//! effect the excess share.
//!
//! **False positives.** A new default or sentinel (0, -1, 9999) written upstream; rounding
//! that changed (values now stored with fewer decimals). The evidence names the value.

use std::collections::{BTreeMap, HashMap};

use polars::prelude::DataFrame;

use super::{RowSelector, Scan};
use crate::baseline::Baseline;
use crate::check::candidate::{Candidate, Effect};
use crate::error::Result;
use crate::finding::{Subject, num};
use crate::policy::Policy;
use crate::rows::value_key;
use crate::stats::proportion::binomial_upper_tail;
use crate::summary::BatchSummary;

/// Smallest batch share a heavy value must hold.
pub const MIN_SHARE: f64 = 0.002;
/// Least over-representation against the trusted share.
pub const MIN_RATIO: f64 = 3.0;

/// An exact value over-represented in the batch.
#[derive(Debug, Clone)]
pub struct HeavyValue {
    /// Feature index in the poison profile.
    pub feature: usize,
    /// Column name.
    pub column: String,
    /// The value.
    pub value: f64,
    /// Its rows, in batch order.
    pub rows: Vec<u32>,
    /// Its trusted share (or upper bound).
    pub trusted_share: f64,
    /// Trusted non-null rows.
    pub trusted_rows: u64,
}

/// Exact values over-represented in candidate bins of every numeric feature.
///
/// # Errors
/// Never at present; kept fallible for re-reads of the frames.
pub fn heavy_values(
    baseline: &Baseline,
    _summary: &BatchSummary,
    scan: &Scan,
    _frames: &[DataFrame],
) -> Result<Vec<HeavyValue>> {
    let mut out = Vec::new();
    let Some(profile) = &baseline.poison else {
        return Ok(out);
    };
    let n = scan.rows.n as f64;
    for (j, name) in profile.features.iter().enumerate() {
        let Some(p) = baseline.column(name).and_then(|c| c.numeric.as_ref()) else {
            continue;
        };
        let values = &scan.rows.values[j];
        let codes = &scan.rows.codes[j];
        if values.is_empty() {
            continue;
        }
        let trusted: f64 = p.counts.iter().sum::<u64>() as f64;
        if trusted <= 0.0 {
            continue;
        }
        let mut batch_bins = vec![0f64; p.counts.len() + 1];
        for &c in codes {
            batch_bins[usize::from(c)] += 1.0;
        }
        let hot: Vec<bool> = p
            .counts
            .iter()
            .enumerate()
            .map(|(b, &c)| {
                let e = n * c as f64 / trusted;
                batch_bins[b] > e + 3.0 * e.sqrt() + 3.0
            })
            .chain(std::iter::once(false))
            .collect();
        if !hot.iter().any(|&h| h) {
            continue;
        }
        let mut counts: HashMap<u64, (f64, Vec<u32>)> = HashMap::new();
        for (i, (&x, &c)) in values.iter().zip(codes).enumerate() {
            if hot[usize::from(c)] && !x.is_nan() {
                counts.entry(value_key(x)).or_insert((x, Vec::new())).1.push(i as u32);
            }
        }
        let known: HashMap<u64, u64> = p
            .frequent
            .iter()
            .map(|v| (value_key(v.value), v.count))
            .collect();
        let mut found: Vec<HeavyValue> = counts
            .into_values()
            .filter_map(|(x, rows)| {
                let k = rows.len() as f64;
                if k < 3.0 || k / n < MIN_SHARE {
                    return None;
                }
                let tc = known
                    .get(&value_key(x))
                    .copied()
                    .unwrap_or(p.frequent_bound) as f64;
                let share = (tc + 0.5) / (trusted + 1.0);
                (k / n >= MIN_RATIO * share).then(|| HeavyValue {
                    feature: j,
                    column: name.clone(),
                    value: x,
                    rows,
                    trusted_share: share,
                    trusted_rows: trusted as u64,
                })
            })
            .collect();
        found.sort_by(|a, b| a.value.total_cmp(&b.value));
        out.extend(found);
    }
    Ok(out)
}

/// One candidate per heavy value.
#[must_use]
pub fn candidates(
    _baseline: &Baseline,
    values: &[HeavyValue],
    scan: &Scan,
    policy: &Policy,
) -> Vec<(Candidate, RowSelector)> {
    let rule = &policy.checks.poison_point_mass;
    let n = scan.rows.n as u64;
    let nf = n as f64;
    values
        .iter()
        .map(|h| {
            let k = h.rows.len() as u64;
            let r = k as f64 / nf;
            let mut evidence = BTreeMap::new();
            evidence.insert("value".into(), h.value);
            evidence.insert("rows".into(), k as f64);
            evidence.insert("share".into(), r);
            evidence.insert("trusted_share".into(), h.trusted_share);
            (
                Candidate {
                    code: "poison-point-mass",
                    subject: Subject {
                        column: Some(h.column.clone()),
                        value: Some(num_exact(h.value)),
                        label: None,
                    },
                    p_value: Some(binomial_upper_tail(k, n, h.trusted_share)),
                    effects: vec![Effect {
                        name: "excess_share",
                        value: r - h.trusted_share,
                        warn: rule.warn,
                        deny: rule.deny,
                    }],
                    fixed: None,
                    n,
                    n_baseline: h.trusted_rows,
                    describe: format!(
                        "`{}` = {} in {k} rows ({}%) against at most {}% of trusted rows",
                        h.column,
                        num_exact(h.value),
                        num(100.0 * r),
                        num(100.0 * h.trusted_share)
                    ),
                    evidence,
                    tag: None,
                },
                RowSelector::Listed(h.rows.clone()),
            )
        })
        .collect()
}

/// A value exactly as Rust prints it (shortest text that reads back to the same `f64`).
#[must_use]
pub fn num_exact(x: f64) -> String {
    format!("{x}")
}
