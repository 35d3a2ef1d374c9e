//! The value read: `poison-point-mass` and `poison-trigger` after the row pass.
//!
//! The row pass leaves both detectors what they need to know whether any value can pass their
//! pre-screen: exact counts of every categorical value (the column summaries) and of every
//! numeric feature's pinned frequent values, and hashed bucket counts of the other numeric
//! values ([`super::point_mass::ValueCounts`]). When no value can, nothing is read again.
//! Otherwise one read of the columns concerned and the label brings the rows and labels of
//! exactly those values, and of nothing else, with the reference model's view of the rows of
//! each value small enough for the trigger's test of the model's chances (every feature is
//! read then, and only those rows are encoded and scored).

use foldhash::HashMap;
use polars::prelude::DataFrame;

use super::point_mass::{self, ValueRows, Wanted};
use super::{BlockScorer, Found, PoisonProfile, Scan, for_each_block, trigger};
use crate::detect::rules::RowRules;
use crate::error::{Error, Result};
use crate::poison::BaselineView;
use crate::rows::value_key;
use crate::source::Rows;
use crate::summary::{BatchSummary, for_each_f64_chunk};

/// The candidates of the two value detectors, in that order; `use_model` as in
/// [`trigger::candidates`]. Reads the batch again only when a value can pass the pre-screen.
///
/// # Errors
/// A failure while reading the batch again.
#[allow(clippy::too_many_arguments)] // the pinned inputs, the batch's, and one switch
pub fn candidates(
    baseline: &BaselineView<'_>,
    profile: &PoisonProfile,
    summary: &BatchSummary,
    scan: &Scan,
    rows: Rows<'_>,
    rules: &RowRules,
    use_model: bool,
) -> Result<Vec<Found>> {
    let numeric = point_mass::wanted(baseline, scan);
    let mut categorical = trigger::CategoricalRows::new(baseline, profile, summary, scan.n as f64);
    let mut exact: Vec<ValueRows> = vec![HashMap::default(); profile.features.len()];
    let mut facts = trigger::RowFacts::default();
    if !numeric.is_empty() || !categorical.is_empty() {
        // The trigger weighs a concentrated value's rows by the reference model, which needs
        // every feature of those rows: the read brings them all, and scores only the rows of
        // the values it keeps. Without every feature's values in this batch, or without a
        // model, the model's chances mean nothing and only the values' columns are read.
        let scorer = (use_model && profile.label_model.is_some() && profile.classes >= 2)
            .then(|| BlockScorer::new(baseline, None))
            .flatten();
        let encoder = crate::rows::Encoder::new(baseline, None);
        let mut names: Vec<String> = match &scorer {
            Some(s) => s.columns(),
            None => numeric.iter().map(|w| w.column.clone()).collect(),
        };
        for c in categorical.columns() {
            if !names.contains(c) {
                names.push(c.clone());
            }
        }
        if let Some(l) = &encoder.label
            && !names.contains(l)
        {
            names.push(l.clone());
        }
        let mut offset = 0u32;
        let mut kept: Vec<u32> = Vec::new();
        for_each_block(rows, &names, |df| {
            let labels = encoder.labels(df)?;
            kept.clear();
            for w in &numeric {
                collect(df, w, &labels, offset, &mut exact[w.feature], &mut kept)?;
            }
            if !categorical.is_empty() {
                categorical.update(df, &labels, offset, &mut kept)?;
            }
            if let Some(scorer) = &scorer {
                score_rows(scorer, df, offset, &mut kept, &mut facts)?;
            }
            offset += df.height() as u32;
            Ok(())
        })?;
    }
    let heavy = point_mass::heavy_values(baseline, scan, &exact);
    let mut out: Vec<Found> = point_mass::candidates(baseline, &heavy, scan, rules)
        .into_iter()
        .map(|(c, s)| (c, Some(s)))
        .collect();
    out.extend(
        trigger::candidates(
            baseline,
            profile,
            categorical,
            &heavy,
            scan,
            &facts,
            rules,
            use_model,
        )
        .into_iter()
        .map(|(c, s)| (c, Some(s))),
    );
    Ok(out)
}

/// The reference model's view (label, the probability of it, inside the support) of the
/// block's rows in `kept` (batch rows; the block's first is `offset`), encoded and scored
/// alone.
fn score_rows(
    scorer: &BlockScorer<'_>,
    df: &DataFrame,
    offset: u32,
    kept: &mut Vec<u32>,
    facts: &mut trigger::RowFacts,
) -> Result<()> {
    kept.sort_unstable();
    kept.dedup();
    if kept.is_empty() {
        return Ok(());
    }
    let b = super::quarantine::score_some(scorer, df, u64::from(offset), kept)?;
    for (i, &r) in kept.iter().enumerate() {
        facts.insert(r, (b.e.label[i], b.p[i], b.inside[i]));
    }
    Ok(())
}

/// Keeps the rows and labels of one block's wanted values of one numeric feature; the block's
/// first row is batch row `offset`. A value's rows also go to `kept` while it has at most
/// [`trigger::MAX_MODEL_ROWS`] of them.
fn collect(
    df: &DataFrame,
    w: &Wanted,
    labels: &[u16],
    offset: u32,
    rows: &mut ValueRows,
    kept: &mut Vec<u32>,
) -> Result<()> {
    let series = df
        .column(&w.column)
        .map_err(|e| Error::Internal(format!("column `{}`: {e}", w.column)))?
        .as_materialized_series();
    let mut at = 0usize;
    for_each_f64_chunk(series, |v, valid| {
        for (i, &x) in v.iter().enumerate() {
            if x.is_nan() || !valid.is_none_or(|b| b.get_bit(i)) {
                continue;
            }
            let key = value_key(x);
            if w.wants(key) {
                let row = offset + (at + i) as u32;
                let e = rows.entry(key).or_insert((x, Vec::new(), Vec::new()));
                e.1.push(row);
                e.2.push(labels[at + i]);
                if e.1.len() <= trigger::MAX_MODEL_ROWS {
                    kept.push(row);
                }
            }
        }
        at += v.len();
    })
}
