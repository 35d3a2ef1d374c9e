//! `poison-point-mass`: one exact numeric value repeated far more often than the trusted data
//! allows.
//!
//! **What it detects.** Injected rows that share a stamped value (a trigger such as
//! `amount = 13.37`), default values written by a broken producer, and copy-paste floods
//! that vary other columns.
//!
//! **How.** The row pass counts every numeric feature's pinned frequent values exactly and
//! every other value in hashed buckets ([`ValueCounts`]); only the values that can pass the
//! test (a pinned value whose count does, or any value of a bucket whose count does) are
//! counted one by one, with their rows, in a second read of their columns, which a batch
//! without such a value never needs ([`super::values`]). The trusted
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

use serde::{Deserialize, Serialize};

use super::{Block, Pinned, PoisonProfile, RowSelector, Scan};
use crate::poison::BaselineView;
use crate::detect::registry::{CodeInfo, Family, Weight};
use crate::detect::{Accumulator, Candidate, Effect};
use crate::finding::{Subject, num};
use crate::poison::RowCode;
use crate::detect::rules::{RateRule, RowRule, RowRules};
use crate::rows::value_key;

/// `poison-point-mass`, as the registry describes it, with its policy defaults.
pub const CODE: RowCode = RowCode {
    info: CodeInfo {
        code: "poison-point-mass",
        family: Family::Row,
        weight: Weight::Shared,
        joint: false,
        doc: "docs/detectors.md#poison-point-mass",
        skip_phrase: "",
        summary: "One exact numeric value repeats far more often than the trusted data allows.",
        why: "Stamped trigger values, defaults written by a broken producer and copy-paste floods all show as an exact value repeated in many rows.",
        respond: "Look up where the value comes from (a default, a sentinel, a trigger); fix the producer or drop the rows listed in the quarantine.",
    },
    rule: RowRule::Rate(RULE),
};

/// `[checks.poison-point-mass]` when the policy leaves it out. Thresholds on a value's excess share of the batch.
pub const RULE: RateRule = RateRule::denying(0.002, 0.005);

/// The policy's `[checks.poison-point-mass]`.
#[must_use]
pub fn rule(rules: &RowRules) -> &RateRule {
    rules.rate(CODE.info.code, &RULE)
}

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

/// Buckets of one feature's hashed count of the values not pinned among its frequent ones.
pub const BUCKETS: usize = 1 << 15;

/// One numeric feature's exact value counts in the row pass: every pinned frequent value
/// one by one, and every other value in one of [`BUCKETS`] buckets chosen by a fixed hash of
/// its exact value.
///
/// Both are plain counts, so states over any split of the batch add up to the same state
/// (a linear sketch: the Count-Min sketch of Cormode & Muthukrishnan 2005 with one row). A
/// bucket's count bounds from above the count of every value hashed into it, so a value that
/// can pass [`heavy_values`]' pre-screen lies in a bucket whose count passes the same
/// threshold ("hot"); only hot buckets' values are counted one by one, in the value read
/// ([`super::values`]). A pinned frequent value is judged from its exact count here. With
/// 32,768 buckets a bucket of a column of distinct values holds `n / 32,768` rows on
/// average against a threshold of at least `n / 500`, so a clean batch over a few thousand
/// rows almost never has a hot bucket, and its value detectors need no second read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureCounts {
    /// Feature index in the poison profile.
    pub feature: usize,
    /// Rows per pinned frequent value, in the order of [`listed_keys`].
    pub listed: Vec<u64>,
    /// Rows of every other value, per bucket ([`bucket`]).
    pub buckets: Vec<u64>,
}

/// Every numeric feature's [`FeatureCounts`]: the row pass's state of `poison-point-mass`
/// (and of the numeric candidates of `poison-trigger`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueCounts {
    /// One per numeric feature, in profile order.
    pub features: Vec<FeatureCounts>,
}

/// The bucket of a value key: a fixed mix, so every process and shard agrees.
#[must_use]
pub fn bucket(key: u64) -> usize {
    (crate::rows::mix(key ^ 0x706f_696e_745f_6d61) as usize) & (BUCKETS - 1)
}

/// The distinct keys of a numeric column's pinned frequent values, sorted.
#[must_use]
pub fn listed_keys(p: &crate::pinned::NumericProfile) -> Vec<u64> {
    let mut keys: Vec<u64> = p.frequent.iter().map(|v| value_key(v.value)).collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// The numeric profile of feature `j`, when it has one.
fn numeric<'b>(
    baseline: &'b BaselineView<'b>,
    profile: &PoisonProfile,
    j: usize,
) -> Option<&'b crate::pinned::NumericProfile> {
    baseline.column(profile.features.get(j)?)?.numeric.as_ref()
}

impl Accumulator<Pinned<'_>, Block> for ValueCounts {
    fn new(p: &Pinned<'_>) -> Option<Self> {
        let features: Vec<FeatureCounts> = (0..p.profile.features.len())
            .filter_map(|j| {
                let num = numeric(&p.baseline, p.profile, j)?;
                Some(FeatureCounts {
                    feature: j,
                    listed: vec![0; listed_keys(num).len()],
                    buckets: vec![0; BUCKETS],
                })
            })
            .collect();
        (!features.is_empty()).then_some(Self { features })
    }

    fn update(&mut self, p: &Pinned<'_>, b: &Block) {
        for f in &mut self.features {
            let (Some(values), Some(num)) = (
                b.e.values.get(f.feature),
                numeric(&p.baseline, p.profile, f.feature),
            ) else {
                continue;
            };
            let keys = listed_keys(num);
            let slot: HashMap<u64, usize> = keys.iter().enumerate().map(|(i, &k)| (k, i)).collect();
            for &x in values {
                // Nulls are NaN in the encoded values; NaN is no value to count.
                if x.is_nan() {
                    continue;
                }
                let key = value_key(x);
                match slot.get(&key) {
                    Some(&i) => f.listed[i] += 1,
                    None => f.buckets[bucket(key)] += 1,
                }
            }
        }
    }

    fn merge(&mut self, _: &Pinned<'_>, other: Self) -> std::result::Result<(), String> {
        if self.features.len() != other.features.len() {
            return Err("value counts of different features".to_owned());
        }
        for (a, b) in self.features.iter_mut().zip(other.features) {
            if a.feature != b.feature || a.buckets.len() != b.buckets.len() {
                return Err("value counts of different features".to_owned());
            }
            crate::detect::add_counts(&mut a.listed, &b.listed)?;
            crate::detect::add_counts(&mut a.buckets, &b.buckets)?;
        }
        Ok(())
    }
}

impl super::Detector for ValueCounts {
    const CODES: &'static [RowCode] = &[super::trigger::CODE, CODE];

    /// The trigger test at the level it faces alone, whether or not a value was a candidate
    /// ([`super::trigger::reach`]).
    fn reach(
        profile: &PoisonProfile,
        rows: u64,
        trusted: u64,
        rules: &RowRules,
        level: &dyn Fn(&'static str) -> f64,
    ) -> crate::detect::reach::Reaches {
        let code = super::trigger::CODE.info.code;
        let deny = super::trigger::rule(rules).deny;
        super::trigger::reach(profile, rows, trusted, deny, level(code))
            .map(|r| (code, r))
            .into_iter()
            .collect()
    }

    /// None here: the candidates need the rows and labels of the values these counts find,
    /// which the value read brings ([`super::values`]).
    fn finish(&self, _: &Pinned<'_>, _: &Scan, _: &RowRules) -> Vec<super::Found> {
        Vec::new()
    }
}

/// What the value read must count in one numeric feature: the pinned frequent values whose
/// exact count passes the pre-screen, and every other value in a hot bucket.
#[derive(Debug, Clone, Default)]
pub struct Wanted {
    /// Feature index in the poison profile.
    pub feature: usize,
    /// Column name.
    pub column: String,
    /// Keys of the pinned frequent values to count.
    pub listed: Vec<u64>,
    /// Every pinned frequent key (these are never counted from a bucket).
    pub pinned: Vec<u64>,
    /// Hot buckets, one flag per bucket (empty when none is hot).
    pub hot: Vec<bool>,
}

impl Wanted {
    /// Whether the read must keep the rows of the value with this key.
    #[must_use]
    pub fn wants(&self, key: u64) -> bool {
        if self.pinned.binary_search(&key).is_ok() {
            self.listed.binary_search(&key).is_ok()
        } else {
            !self.hot.is_empty() && self.hot[bucket(key)]
        }
    }
}

/// Per numeric feature with something to count, what the value read must count: the values
/// that may pass [`heavy_values`]' pre-screen (at least three rows, [`MIN_SHARE`] of the
/// batch and [`MIN_RATIO`] times the value's trusted share), from the row pass's exact counts.
#[must_use]
pub fn wanted(baseline: &BaselineView<'_>, scan: &Scan) -> Vec<Wanted> {
    let (Some(profile), Some(counts)) = (&baseline.poison, &scan.states.values) else {
        return Vec::new();
    };
    let n = scan.n as f64;
    let least = (MIN_SHARE * n).max(3.0);
    let mut out = Vec::new();
    for f in &counts.features {
        let Some(num) = numeric(baseline, profile, f.feature) else {
            continue;
        };
        let shares = TrustedShares::new(num);
        // A hair below the test's threshold: rounding never drops a value it takes.
        let bar = |key: u64| least.max(MIN_RATIO * shares.share(key) * n) * (1.0 - 1e-9);
        let pinned = listed_keys(num);
        let listed: Vec<u64> = (pinned.iter().zip(&f.listed))
            .filter(|&(&k, &c)| c as f64 >= bar(k))
            .map(|(&k, _)| k)
            .collect();
        // Every key outside the pinned list has the same trusted share (the pinned bound).
        let cut = bar(u64::MAX);
        let mut hot = vec![false; BUCKETS];
        let mut any = false;
        for (h, &c) in hot.iter_mut().zip(&f.buckets) {
            *h = c as f64 >= cut;
            any |= *h;
        }
        if listed.is_empty() && !any {
            continue;
        }
        out.push(Wanted {
            feature: f.feature,
            column: profile.features[f.feature].clone(),
            listed,
            pinned,
            hot: if any { hot } else { Vec::new() },
        });
    }
    out
}

/// A numeric feature's trusted share of each exact value: its pinned count when it is among
/// the frequent values, the pinned bound on the others otherwise, with half a row of prior.
struct TrustedShares<'p> {
    trusted: f64,
    known: HashMap<u64, u64>,
    profile: &'p crate::pinned::NumericProfile,
}

impl<'p> TrustedShares<'p> {
    fn new(profile: &'p crate::pinned::NumericProfile) -> Self {
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

/// Exact values over-represented in every numeric feature, from the rows
/// [`resolve`] found.
#[must_use]
pub fn heavy_values(baseline: &BaselineView<'_>, scan: &Scan, exact: &[ValueRows]) -> Vec<HeavyValue> {
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
pub fn unlisted_null(baseline: &BaselineView<'_>, n: u64) -> Option<crate::detect::CountNull> {
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
    baseline: &BaselineView<'_>,
    values: &[HeavyValue],
    scan: &Scan,
    rules: &RowRules,
) -> Vec<(Candidate, RowSelector)> {
    let rule = rule(rules);
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
