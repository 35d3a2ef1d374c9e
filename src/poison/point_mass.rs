//! `poison-point-mass`: one exact numeric value repeated far more often than the trusted data
//! allows.
//!
//! **What it detects.** Injected rows that share a stamped value (a trigger such as
//! `amount = 13.37`), default values written by a broken producer, and copy-paste floods
//! that vary other columns.
//!
//! **How.** Every numeric feature's exact values are summarised by a heavy-hitter sketch in
//! one read of those columns (any value holding more than 1/1,025 of the rows survives it),
//! and the survivors that could pass the test are counted exactly in a second. The trusted
//! frequency of a value is its pinned count among the column's most frequent values, or else
//! the largest count of any value not listed (an upper bound), so naturally discrete columns
//! (counts, ratings) are judged against their own repeats. A value is reported when it holds
//! at least 0.2% of the batch and three times its trusted share; the test is an exact binomial
//! upper tail, the effect the excess share.
//!
//! **False positives.** A new default or sentinel (0, -1, 9999) written upstream; rounding
//! that changed (values now stored with fewer decimals). The evidence names the value.

use std::collections::BTreeMap;

use foldhash::HashMap;

use super::{RowSelector, Scan};
use crate::baseline::Baseline;
use crate::detect::{Candidate, Effect};
use crate::error::{Error, Result};
use crate::finding::{Subject, num};
use crate::policy::Policy;
use crate::rows::value_key;
use crate::source::Rows;
use crate::summary::for_each_f64_chunk;
use polars::prelude::DataFrame;

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
    /// Their labels ([`crate::rows::NO_CLASS`] when unlabelled).
    pub labels: Vec<u16>,
    /// Its trusted share (or upper bound).
    pub trusted_share: f64,
    /// Trusted non-null rows.
    pub trusted_rows: u64,
    /// Whether the value is among the column's pinned frequent values (its trusted share is
    /// its own); otherwise the share is the bound on every value not listed.
    pub listed: bool,
}

/// Counters of one feature's values: a Misra–Gries heavy-hitter summary
/// (Misra & Gries 1982) with [`SKETCH_COUNTERS`] counters, mergeable across slices (Agarwal et
/// al. 2012, "Mergeable summaries"). Every value holding more than `total / (counters + 1)`
/// of the rows survives, and its count is under-estimated by at most that much; the
/// survivors are then counted exactly in a second pass over the column.
#[derive(Debug, Clone, Default)]
pub struct Sketch {
    /// Value key to (value, estimated count).
    pub counters: HashMap<u64, (f64, u64)>,
    /// Values summarised.
    pub total: u64,
}

/// Counters per sketch: enough that any value holding [`MIN_SHARE`] of the batch survives.
pub const SKETCH_COUNTERS: usize = 1024;

impl Sketch {
    fn add(&mut self, key: u64, x: f64) {
        self.total += 1;
        self.counters.entry(key).or_insert((x, 0)).1 += 1;
        if self.counters.len() > 2 * SKETCH_COUNTERS {
            self.prune();
        }
    }

    /// Subtracts the (k+1)-th largest count from every counter and drops those left at zero,
    /// k = [`SKETCH_COUNTERS`]: at least k+1 counters lose that much each time, so no count is
    /// under-estimated by more than `total / (k+1)` (Berinde et al. 2010, "Space-optimal
    /// heavy hitters with strong error bounds"; the batched form of Misra–Gries). Pruning at
    /// twice k keeps an update O(1) amortised on a column of distinct values.
    fn prune(&mut self) {
        if self.counters.len() <= SKETCH_COUNTERS {
            return;
        }
        let mut counts: Vec<u64> = self.counters.values().map(|c| c.1).collect();
        let (_, &mut cut, _) = counts.select_nth_unstable_by(SKETCH_COUNTERS, |a, b| b.cmp(a));
        self.counters.retain(|_, c| {
            c.1 = c.1.saturating_sub(cut);
            c.1 > 0
        });
    }

    /// Adds another slice's summary and prunes back to [`SKETCH_COUNTERS`] counters.
    pub fn merge(&mut self, other: Self) {
        self.total += other.total;
        // Sums do not depend on the order; sorting keeps the lint (and readers) sure of it.
        let mut incoming: Vec<(u64, (f64, u64))> = other.counters.into_iter().collect();
        incoming.sort_unstable_by_key(|e| e.0);
        for (k, (x, c)) in incoming {
            self.counters.entry(k).or_insert((x, 0)).1 += c;
        }
        self.prune();
    }

    /// Keys that may hold at least `least(key)` rows (the estimate plus the largest
    /// under-count).
    fn candidates(&self, least: impl Fn(u64) -> f64) -> HashMap<u64, f64> {
        let slack = self.total as f64 / (SKETCH_COUNTERS + 1) as f64;
        self.counters
            .iter()
            .filter(|(k, c)| c.1 as f64 + slack >= least(**k))
            .map(|(&k, c)| (k, c.0))
            .collect()
    }
}

/// Sketches of every numeric feature's values, filled in the value detectors' one read of
/// the batch (beside the trigger's categorical rows).
///
/// Every value is sketched, not only those in bins that gained rows: a trigger stamped on 8
/// rows of a 2,000-row batch at a value inside the trusted range adds 8 rows to a bin of
/// about 100, well inside the bin's sampling noise, and a search confined to such bins never
/// saw it (`docs/evasion.md`). The sketch's error bound does not depend on what else the
/// column holds, so naturally discrete columns cost nothing in what it guarantees.
#[derive(Debug, Default)]
pub struct Sketches {
    /// Per numeric feature: its index in the poison profile, its name and its sketch.
    features: Vec<(usize, String, Sketch)>,
    /// Features in the poison profile.
    all: usize,
}

impl Sketches {
    /// Empty sketches of every numeric feature of the poison profile.
    #[must_use]
    pub fn new(baseline: &Baseline, profile: &super::PoisonProfile) -> Self {
        let features = (profile.features.iter().enumerate())
            .filter(|(_, name)| baseline.column(name).is_some_and(|c| c.numeric.is_some()))
            .map(|(j, name)| (j, name.clone(), Sketch::default()))
            .collect();
        Self {
            features,
            all: profile.features.len(),
        }
    }

    /// The columns the read must bring.
    pub fn columns(&self) -> impl Iterator<Item = &String> {
        self.features.iter().map(|(_, n, _)| n)
    }

    /// Adds one block's values, the features side by side (each sketch sees its column's
    /// values in row order, so the result does not depend on the scheduling).
    ///
    /// # Errors
    /// A column missing from the block or not readable as numbers.
    pub fn update(&mut self, df: &DataFrame) -> Result<()> {
        use rayon::prelude::*;
        self.features
            .par_iter_mut()
            .try_for_each(|(_, name, sketch)| {
                for_each_f64_chunk(series_of(df, name)?, |v, valid| {
                    for (i, &x) in v.iter().enumerate() {
                        if !x.is_nan() && valid.is_none_or(|b| b.get_bit(i)) {
                            sketch.add(value_key(x), x);
                        }
                    }
                })
            })
    }

    /// The sketches, one per feature of the poison profile (empty for the others).
    #[must_use]
    pub fn finish(self) -> Vec<Sketch> {
        let mut out = vec![Sketch::default(); self.all];
        for (j, _, s) in self.features {
            out[j] = s;
        }
        out
    }
}

fn series_of<'a>(df: &'a DataFrame, name: &str) -> Result<&'a polars::prelude::Series> {
    Ok(df
        .column(name)
        .map_err(|e| Error::Internal(format!("column `{name}`: {e}")))?
        .as_materialized_series())
}

/// A numeric feature's trusted share of each exact value: its pinned count when it is among
/// the frequent values, the pinned bound on the others otherwise, with half a row of prior.
struct TrustedShares<'p> {
    trusted: f64,
    known: HashMap<u64, u64>,
    profile: &'p crate::baseline::NumericProfile,
}

impl<'p> TrustedShares<'p> {
    fn new(profile: &'p crate::baseline::NumericProfile) -> Self {
        Self {
            trusted: profile.counts.iter().sum::<u64>() as f64,
            known: profile
                .frequent
                .iter()
                .map(|v| (value_key(v.value), v.count))
                .collect(),
            profile,
        }
    }

    fn share(&self, key: u64) -> f64 {
        let tc = self
            .known
            .get(&key)
            .copied()
            .unwrap_or(self.profile.frequent_bound) as f64;
        (tc + 0.5) / (self.trusted + 1.0)
    }
}

/// Per feature: value key to (value, its rows in batch order, their labels).
pub type ValueRows = HashMap<u64, (f64, Vec<u32>, Vec<u16>)>;

/// Rows of the sketches' candidate values, counted exactly in one pass over their columns.
///
/// # Errors
/// A column that cannot be read as numbers.
pub fn resolve(
    baseline: &Baseline,
    scan: &Scan,
    sketches: &[Sketch],
    rows_of: Rows<'_>,
) -> Result<Vec<ValueRows>> {
    let Some(profile) = &baseline.poison else {
        return Ok(Vec::new());
    };
    let n = scan.n as f64;
    let least = (MIN_SHARE * n).max(3.0);
    // Only values that can pass [`heavy_values`]' test are counted (and their rows kept):
    // at least `least` rows and [`MIN_RATIO`] times their trusted share. A value as common
    // as in the trusted data (every value of a count column) is never resolved.
    let wanted: Vec<HashMap<u64, f64>> = (0..profile.features.len())
        .map(|j| {
            let Some(s) = sketches.get(j) else {
                return HashMap::default();
            };
            let Some(p) = baseline
                .column(&profile.features[j])
                .and_then(|c| c.numeric.as_ref())
            else {
                return s.candidates(|_| least);
            };
            let shares = TrustedShares::new(p);
            // A hair below the test's threshold: rounding never drops a value it takes.
            s.candidates(|key| least.max(MIN_RATIO * shares.share(key) * n) * (1.0 - 1e-9))
        })
        .collect();
    let mut out: Vec<ValueRows> = vec![HashMap::default(); profile.features.len()];
    let mut names: Vec<String> = profile
        .features
        .iter()
        .zip(&wanted)
        .filter(|(_, w)| !w.is_empty())
        .map(|(n, _)| n.clone())
        .collect();
    if names.is_empty() {
        return Ok(out);
    }
    // The labels of the values' rows come along in the same read (the trigger test counts
    // them; the row pass keeps nothing per row).
    let encoder = crate::rows::Encoder::new(baseline, None);
    names.extend(encoder.label.clone());
    let mut offset = 0u32;
    super::for_each_block(rows_of, &names, |df| {
        let labels = encoder.labels(df)?;
        for (j, name) in profile.features.iter().enumerate() {
            let want = &wanted[j];
            if want.is_empty() {
                continue;
            }
            let rows = &mut out[j];
            let mut at = offset;
            for_each_f64_chunk(series_of(df, name)?, |v, valid| {
                for (i, &x) in v.iter().enumerate() {
                    let key = value_key(x);
                    if let Some(&value) = want.get(&key)
                        && valid.is_none_or(|b| b.get_bit(i))
                        && !x.is_nan()
                    {
                        let e = rows.entry(key).or_insert((value, Vec::new(), Vec::new()));
                        e.1.push(at + i as u32);
                        e.2.push(labels[(at - offset) as usize + i]);
                    }
                }
                at += v.len() as u32;
            })?;
        }
        offset += df.height() as u32;
        Ok(())
    })?;
    Ok(out)
}

/// Exact values over-represented in every numeric feature, from the rows
/// [`resolve`] found.
#[must_use]
pub fn heavy_values(baseline: &Baseline, scan: &Scan, exact: &[ValueRows]) -> Vec<HeavyValue> {
    let mut out = Vec::new();
    let Some(profile) = &baseline.poison else {
        return out;
    };
    let n = scan.n as f64;
    for (j, name) in profile.features.iter().enumerate() {
        let Some(p) = baseline.column(name).and_then(|c| c.numeric.as_ref()) else {
            continue;
        };
        let Some(counts) = exact.get(j).filter(|v| !v.is_empty()) else {
            continue;
        };
        let shares = TrustedShares::new(p);
        let mut found: Vec<HeavyValue> = counts
            .values()
            .filter_map(|(x, rows, labels)| {
                let k = rows.len() as f64;
                if k < 3.0 || k / n < MIN_SHARE {
                    return None;
                }
                let key = value_key(*x);
                let share = shares.share(key);
                (k / n >= MIN_RATIO * share).then(|| HeavyValue {
                    listed: shares.known.contains_key(&key),
                    feature: j,
                    column: name.clone(),
                    value: *x,
                    rows: rows.clone(),
                    labels: labels.clone(),
                    trusted_share: share,
                    trusted_rows: shares.trusted as u64,
                })
            })
            .collect();
        found.sort_by(|a, b| a.value.total_cmp(&b.value));
        out.extend(found);
    }
    out
}

/// The null of a value none of the trusted rows' frequent values lists, in the numeric
/// feature where such a value is most common (the pinned bound is largest, so a stamped value
/// is hardest to tell from chance there), for a batch of `n` rows: what the test could have
/// seen when no value was a candidate. `None` without a numeric feature.
#[must_use]
pub fn unlisted_null(baseline: &Baseline, n: u64) -> Option<crate::detect::CountNull> {
    let profile = baseline.poison.as_ref()?;
    profile
        .features
        .iter()
        .filter_map(|name| {
            let col = baseline.column(name)?;
            let share = TrustedShares::new(col.numeric.as_ref()?).share(u64::MAX);
            Some((share, col.count.max(1)))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(share, m)| crate::detect::CountNull {
            selection: 1.0 / share.max(f64::MIN_POSITIVE),
            ..crate::detect::CountNull::predictive(n, share, share, m)
        })
}

/// The least excess share over a trusted share `share` that a value on `n` rows needs to pass
/// the pre-screen that makes it a candidate (three rows, [`MIN_SHARE`] of the batch,
/// [`MIN_RATIO`] times its trusted share).
#[must_use]
pub fn prescreen_excess(share: f64, n: u64) -> f64 {
    let least = (3.0 / n.max(1) as f64)
        .max(MIN_SHARE)
        .max(MIN_RATIO * share);
    least - share
}

/// One candidate per heavy value.
#[must_use]
pub fn candidates(
    baseline: &Baseline,
    values: &[HeavyValue],
    scan: &Scan,
    policy: &Policy,
) -> Vec<(Candidate, RowSelector)> {
    let rule = &policy.checks.poison_point_mass;
    let n = scan.n as u64;
    let nf = n as f64;
    values
        .iter()
        .map(|h| {
            let k = h.rows.len() as u64;
            let r = k as f64 / nf;
            // A value not among the pinned frequent ones is the most repeated of however many
            // unlisted values the batch holds, each with a trusted share of at most `b`: the
            // chance that *any* of them reaches `k` rows is at most `P(K >= k | b) / b`
            // (the tail over the share is increasing for k >= 2, and the shares sum to at
            // most 1), so its p-value carries that factor. Without it, three rows sharing a
            // value of a rounded continuous column blocked a clean 250-row batch.
            let null = crate::detect::CountNull {
                selection: if h.listed {
                    1.0
                } else {
                    1.0 / h.trusted_share.max(f64::MIN_POSITIVE)
                },
                ..crate::detect::CountNull::predictive(
                    n,
                    h.trusted_share,
                    h.trusted_share,
                    baseline.column(&h.column).map_or(1, |c| c.count.max(1)),
                )
            };
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
                    // The share was pinned from the column's trusted rows: predictive test.
                    p_value: Some(null.tail(k)),
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
                    power: Some(null.into()),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Misra–Gries guarantee: every value holding more than `total / (counters + 1)` rows
    /// survives any split into slices and merge, under-counted by at most that much.
    #[test]
    fn heavy_values_survive_slicing_and_merging() {
        let mut slices = Vec::new();
        let mut state = 7u64;
        for s in 0..8 {
            let mut sk = Sketch::default();
            for i in 0..20_000u64 {
                state = crate::rows::mix(state);
                // 0.5% of rows carry 4242.0 in some slices only; the rest are all distinct.
                let x = if s % 2 == 0 && i % 100 == 0 {
                    4242.0
                } else {
                    (state >> 11) as f64
                };
                sk.add(value_key(x), x);
            }
            slices.push(sk);
        }
        let mut all = Sketch::default();
        for s in slices {
            all.merge(s);
        }
        assert_eq!(all.total, 160_000);
        let heavy = all.candidates(|_| 400.0);
        assert_eq!(heavy.get(&value_key(4242.0)), Some(&4242.0));
        assert!(heavy.len() < 20, "{}", heavy.len());
    }

    #[test]
    fn batched_pruning_under_counts_by_at_most_total_over_k_plus_one() {
        // Zipf-like counts over 50,000 values: value v appears 1 + 5000 / (v + 1) times.
        let mut truth: Vec<(f64, u64)> = Vec::new();
        let mut stream: Vec<f64> = Vec::new();
        for v in 0..50_000u64 {
            let c = 1 + 5000 / (v + 1);
            truth.push((v as f64, c));
            stream.extend(std::iter::repeat_n(v as f64, c as usize));
        }
        // Interleave deterministically so that heavy values arrive throughout.
        let mut state = 11u64;
        for i in (1..stream.len()).rev() {
            state = crate::rows::mix(state);
            stream.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let mut sk = Sketch::default();
        for &x in &stream {
            sk.add(value_key(x), x);
        }
        let bound = sk.total / (SKETCH_COUNTERS as u64 + 1);
        assert!(sk.counters.len() <= 2 * SKETCH_COUNTERS);
        for (x, c) in truth {
            let est = sk.counters.get(&value_key(x)).map_or(0, |e| e.1);
            assert!(
                est <= c && c - est <= bound,
                "{x}: {est} of {c}, bound {bound}"
            );
        }
    }
}
