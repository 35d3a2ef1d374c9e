//! `poison-duplicate-flood` and `poison-label-conflict`: copies beyond the trusted data's own
//! duplicate rate, and rows that match trusted rows but carry another label.
//!
//! **What it detects.** An attacker who cannot write many distinct poisoned rows repeats a
//! few, often with flipped labels, sometimes with a little noise to dodge exact matching; or
//! re-submits trusted rows with new labels.
//!
//! **How.** Each row has two fingerprints ([`crate::rows`]): of its exact values and of its
//! codes (same percentile bins and categories = near duplicate). The share of repeated rows in
//! a sample grows with its size (the birthday effect), so at pin time the trusted repeat share
//! is measured on nested random subsets of 1,000, 2,000, 4,000, … rows up to all of them, and
//! `check` reads the expected share at the batch's own size off that curve (log-linear
//! between points, a power law past the last one). The test is an exact binomial upper tail;
//! the effect is the excess share. Near duplicates are counted beyond the exact ones.
//!
//! Label conflicts use a Bloom filter (Bloom 1970; double hashing after Kirsch & Mitzenmacher
//! 2006) over the trusted (near fingerprint) and (near fingerprint, label) keys, 14.4 bits per
//! key for a 0.1% false-positive rate: membership only, no rows. The trusted conflict rate is
//! measured leave-one-out (a trusted row conflicts when another trusted row shares its cell
//! and none shares its label), plus the filter's false-positive rate.
//!
//! **False positives.** Data with few, coarse columns repeats naturally; the curve absorbs
//! that. Re-sent batches (a retry that appended the same file twice) are real duplicates and
//! should be fixed upstream. The filter lets anyone holding a candidate row test whether it
//! was in the trusted data; treat the baseline as confidential as the rows' existence.

use std::collections::BTreeMap;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use base64::Engine;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::scan::Pinned;
use super::{Found, RowSelector, Rows, Scan};
use crate::detect::registry::{CodeInfo, Family, Weight};
use crate::detect::{Candidate, Effect};
use crate::finding::{Subject, num};
use crate::poison::RowCode;
use crate::detect::rules::{RateRule, RowRule, RowRules};
use crate::rows::{NO_CLASS, mix};
use crate::stats::proportion::predictive_upper_tail;

mod state;
pub use state::{
    DuplicateCounts, DuplicateState, Group, Groups, MAX_GROUPS, RepeatedRows, conflicts,
};

/// `poison-duplicate-flood`, as the registry describes it, with its policy defaults.
pub const FLOOD: RowCode = RowCode {
    info: CodeInfo {
        code: "poison-duplicate-flood",
        family: Family::Row,
        weight: Weight::Detector,
        joint: true,
        doc: "docs/detectors.md#poison-duplicate-flood",
        skip_phrase: "",
        summary: "More rows repeat an earlier row (exactly, or in the same bins and categories) than the trusted data does at this batch size.",
        why: "Repeating a few poisoned rows many times multiplies their weight in training; near duplicates dodge exact de-duplication.",
        respond: "De-duplicate, and check the repeated rows' labels (evidence counts groups whose labels disagree); a re-sent file is the benign cause.",
    },
    rule: RowRule::Rate(FLOOD_RULE),
};

/// `[checks.poison-duplicate-flood]` when the policy leaves it out. Thresholds on the excess share of repeated rows.
pub const FLOOD_RULE: RateRule = RateRule::denying(0.005, 0.01);

/// `poison-label-conflict`, as the registry describes it, with its policy defaults.
pub const CONFLICT: RowCode = RowCode {
    info: CodeInfo {
        code: "poison-label-conflict",
        family: Family::Row,
        weight: Weight::Detector,
        joint: true,
        doc: "docs/detectors.md#poison-label-conflict",
        skip_phrase: "",
        summary: "Rows match trusted rows' values (same bins and categories) but carry a label that no matching trusted row has, more often than on the trusted data.",
        why: "Re-submitting trusted rows with new labels is a direct way to overwrite what the model learned.",
        respond: "Compare the listed rows with the trusted source; relabelled copies should be dropped and their origin investigated.",
    },
    rule: RowRule::Rate(CONFLICT_RULE),
};

/// `[checks.poison-label-conflict]` when the policy leaves it out. Thresholds on the excess share of rows that contradict trusted rows' labels.
pub const CONFLICT_RULE: RateRule = RateRule::denying(0.005, 0.01);

/// Hash functions of the filter.
const HASHES: u32 = 10;
/// Bits per key for about 0.1% false positives with [`HASHES`] functions.
const BITS_PER_KEY: f64 = 14.4;
/// Trusted rows beyond which no filter is pinned (it would pass 8 MiB).
const MAX_FILTER_ROWS: usize = 2_000_000;
const CELL_SALT: u64 = 0x6365_6c6c;
const LABEL_SALT: u64 = 0x6c61_6265_6c00;

/// A Bloom filter with a stable serialised form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Bloom {
    /// Bits.
    pub bits: u64,
    /// Hash functions.
    pub hashes: u32,
    /// Keys inserted.
    pub keys: u64,
    /// The bit words, little-endian, base64 (standard alphabet, padded).
    pub words: String,
    #[serde(skip)]
    #[schemars(skip)]
    cache: Vec<u64>,
}

impl Bloom {
    fn new(keys: usize) -> Self {
        let bits = ((keys.max(1) as f64 * BITS_PER_KEY).ceil() as u64).div_ceil(64) * 64;
        Self {
            bits,
            hashes: HASHES,
            keys: 0,
            words: String::new(),
            cache: vec![0; (bits / 64) as usize],
        }
    }

    #[inline]
    fn positions(&self, key: u64) -> impl Iterator<Item = u64> + '_ {
        let h1 = mix(key);
        let h2 = mix(h1) | 1;
        (0..u64::from(self.hashes)).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % self.bits)
    }

    fn insert(&mut self, key: u64) {
        let pos: Vec<u64> = self.positions(key).collect();
        for p in pos {
            self.cache[(p / 64) as usize] |= 1 << (p % 64);
        }
        self.keys += 1;
    }

    /// Whether the filter may hold `key` (after [`Self::unseal`]).
    #[must_use]
    pub fn contains(&self, key: u64) -> bool {
        // A sealed filter (no words decoded) holds nothing.
        self.positions(key).all(|p| {
            self.cache
                .get((p / 64) as usize)
                .is_some_and(|w| w & (1 << (p % 64)) != 0)
        })
    }

    fn seal(&mut self) {
        let bytes: Vec<u8> = self.cache.iter().flat_map(|w| w.to_le_bytes()).collect();
        self.words = base64::engine::general_purpose::STANDARD.encode(bytes);
        // The pinned form is the words; a loaded filter decodes them again.
        self.cache = Vec::new();
    }

    /// Decodes the words after loading.
    ///
    /// # Errors
    /// Words that are not base64 or do not hold `bits` bits.
    pub fn unseal(&mut self) -> Result<(), String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&self.words)
            .map_err(|e| format!("membership filter: {e}"))?;
        if bytes.len() as u64 * 8 != self.bits || self.bits == 0 || self.hashes == 0 {
            return Err("membership filter has the wrong size".into());
        }
        self.cache = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        Ok(())
    }

    /// Theoretical false-positive rate at the current load.
    #[must_use]
    pub fn false_positive_rate(&self) -> f64 {
        let k = f64::from(self.hashes);
        (1.0 - (-k * self.keys as f64 / self.bits as f64).exp()).powf(k)
    }
}

/// What the duplicate detectors pinned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DuplicateProfile {
    /// Trusted rows.
    pub rows: u64,
    /// (subset size, share of exact repeats) on nested random subsets.
    pub exact_curve: Vec<[f64; 2]>,
    /// (subset size, share of near repeats that are not exact repeats).
    pub near_curve: Vec<[f64; 2]>,
    /// Leave-one-out share of trusted rows whose cell holds only other labels.
    pub conflict_rate: f64,
    /// Trusted (cell) and (cell, label) keys; absent without a label, past 2M rows, or when
    /// the profile was fitted on a sample.
    pub filter: Option<Bloom>,
}

impl DuplicateProfile {
    /// The membership filter, decoded for lookups (`None` without one, or when its words
    /// do not decode; [`Self::validate`] refuses such a baseline at load).
    #[must_use]
    pub fn unsealed_filter(&self) -> Option<Bloom> {
        let mut f = self.filter.clone()?;
        f.unseal().ok()?;
        Some(f)
    }

    /// Checks shapes and decodes the filter.
    ///
    /// # Errors
    /// A description of the problem.
    pub fn validate(&self) -> Result<(), String> {
        let ok = |c: &[[f64; 2]]| {
            c.windows(2).all(|w| w[0][0] < w[1][0])
                && c.iter().all(|p| p[0] >= 1.0 && (0.0..=1.0).contains(&p[1]))
        };
        if !ok(&self.exact_curve) || !ok(&self.near_curve) {
            return Err("duplicate curve is malformed".into());
        }
        if let Some(f) = &self.filter {
            f.clone().unseal()?;
        }
        Ok(())
    }
}

fn cell_key(fp: u64) -> u64 {
    mix(fp ^ CELL_SALT)
}

fn pair_key(fp: u64, label: u16) -> u64 {
    mix(fp ^ mix(LABEL_SALT + u64::from(label)))
}

/// Pins the duplicate curves, the conflict rate and the filter. The filter needs every
/// trusted row: `complete` is false when `rows` are a sample, and no filter is pinned.
#[must_use]
pub fn fit(rows: &Rows, seed: u64, complete: bool) -> DuplicateProfile {
    let n = rows.n;
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x6475_7073));
    let mut checkpoints = Vec::new();
    let mut m = 1000usize;
    while m < n {
        checkpoints.push(m);
        m *= 2;
    }
    checkpoints.push(n);
    let mut exact = HashSet::with_capacity(n);
    let mut near = HashSet::with_capacity(n);
    let (mut dup_exact, mut dup_near) = (0usize, 0usize);
    let mut exact_curve = Vec::new();
    let mut near_curve = Vec::new();
    let mut next = 0;
    for (seen, &i) in order.iter().enumerate() {
        if !exact.insert(rows.fp_exact[i]) {
            dup_exact += 1;
        }
        if !near.insert(rows.fp_near[i]) {
            dup_near += 1;
        }
        if next < checkpoints.len() && seen + 1 == checkpoints[next] {
            let s = (seen + 1) as f64;
            exact_curve.push([s, dup_exact as f64 / s]);
            near_curve.push([s, (dup_near.saturating_sub(dup_exact)) as f64 / s]);
            next += 1;
        }
    }
    let labelled: Vec<usize> = (0..n).filter(|&i| rows.label[i] != NO_CLASS).collect();
    let (conflict_rate, filter) = if labelled.len() < 100 {
        (0.0, None)
    } else {
        let mut cells: HashMap<u64, u32> = HashMap::new();
        let mut pairs: HashMap<(u64, u16), u32> = HashMap::new();
        for &i in &labelled {
            *cells.entry(rows.fp_near[i]).or_insert(0) += 1;
            *pairs.entry((rows.fp_near[i], rows.label[i])).or_insert(0) += 1;
        }
        let conflicts = labelled
            .iter()
            .filter(|&&i| {
                cells[&rows.fp_near[i]] > 1 && pairs[&(rows.fp_near[i], rows.label[i])] == 1
            })
            .count();
        let filter = (complete && labelled.len() <= MAX_FILTER_ROWS).then(|| {
            let mut f = Bloom::new(cells.len() + pairs.len());
            let mut cell_keys: Vec<u64> = cells.keys().copied().collect();
            cell_keys.sort_unstable();
            for fp in cell_keys {
                f.insert(cell_key(fp));
            }
            let mut pair_keys: Vec<(u64, u16)> = pairs.keys().copied().collect();
            pair_keys.sort_unstable();
            for (fp, y) in pair_keys {
                f.insert(pair_key(fp, y));
            }
            f.seal();
            f
        });
        (conflicts as f64 / labelled.len() as f64, filter)
    };
    DuplicateProfile {
        rows: n as u64,
        exact_curve,
        near_curve,
        conflict_rate,
        filter,
    }
}

/// The trusted repeat share expected in a sample of `n` rows.
#[must_use]
pub fn expected_share(curve: &[[f64; 2]], n: f64) -> f64 {
    let Some(first) = curve.first() else {
        return 0.0;
    };
    if n <= first[0] {
        return first[1] * n / first[0];
    }
    for w in curve.windows(2) {
        let ([a, sa], [b, sb]) = (w[0], w[1]);
        if n <= b {
            let t = (n.ln() - a.ln()) / (b.ln() - a.ln());
            return sa + t * (sb - sa);
        }
    }
    let last = curve[curve.len() - 1];
    if curve.len() < 2 || last[1] <= 0.0 {
        return last[1];
    }
    let prev = curve[curve.len() - 2];
    let slope = if prev[1] > 0.0 {
        ((last[1] / prev[1]).ln() / (last[0] / prev[0]).ln()).clamp(0.0, 1.0)
    } else {
        1.0
    };
    (last[1] * (n / last[0]).powf(slope)).min(1.0)
}

impl super::Detector for DuplicateState {
    const CODES: &'static [RowCode] = &[FLOOD, CONFLICT];

    /// The duplicate-flood and label-conflict candidates.
    fn finish(&self, p: &Pinned<'_>, _: &Scan, rules: &RowRules) -> Vec<Found> {
        candidates(&p.profile.duplicates, self, rules)
            .into_iter()
            .map(|(c, s)| (c, Some(s)))
            .collect()
    }
}

/// Duplicate-flood and label-conflict candidates.
#[must_use]
pub fn candidates(
    profile: &DuplicateProfile,
    state: &DuplicateState,
    rules: &RowRules,
) -> Vec<(Candidate, RowSelector)> {
    let mut out = Vec::new();
    let n = state.rows;
    if n < crate::poison::MIN_ROWS {
        return out;
    }
    let nf = n as f64;
    let rule = rules.rate(FLOOD.info.code, &FLOOD_RULE);
    let counts = state.counts();
    let (exact, exact_mixed, near_all, near_mixed) = (
        counts.exact,
        counts.exact_mixed,
        counts.near_all,
        counts.near_mixed,
    );
    // Past the exact size the test runs on the sampled rows; the expected share is the
    // trusted curve's at the batch's own size, which the sample's share estimates.
    let ns = counts.sampled_rows;
    let sampled = state.level > 0;
    for near in [false, true] {
        // Every exact repeat is a near repeat too: near counts only the rest.
        let k = if near {
            near_all.saturating_sub(exact)
        } else {
            exact
        };
        let curve = if near {
            &profile.near_curve
        } else {
            &profile.exact_curve
        };
        let p0 = expected_share(curve, nf);
        let floor = 0.5 / (profile.rows as f64).max(nf);
        let r = k as f64 / (ns.max(1) as f64);
        let kind = if near { "near" } else { "exact" };
        let of = if sampled {
            format!("{k} of {ns} rows in a hash sample of the batch's {n}")
        } else {
            format!("{k} of {n} rows")
        };
        let mut evidence = BTreeMap::new();
        evidence.insert("repeated_share".into(), r);
        if sampled {
            evidence.insert("sampled_rows".into(), ns as f64);
            evidence.insert("sampled_cell_share".into(), 0.5f64.powi(state.level as i32));
        }
        evidence.insert("expected_share".into(), p0);
        evidence.insert(
            "rows_in_groups_with_mixed_labels".into(),
            (if near { near_mixed } else { exact_mixed }) as f64,
        );
        out.push((
            Candidate {
                code: "poison-duplicate-flood",
                subject: Subject {
                    column: None,
                    value: Some(kind.to_owned()),
                    label: None,
                },
                // The curve was measured on the trusted rows: predictive test at its size.
                p_value: Some(predictive_upper_tail(
                    k,
                    ns,
                    p0.max(floor),
                    profile.rows.max(1),
                )),
                effects: vec![Effect {
                    name: "excess_share",
                    value: r - p0,
                    warn: rule.warn,
                    deny: rule.deny,
                }],
                fixed: None,
                n,
                n_baseline: profile.rows,
                describe: format!(
                    "{of} ({}%) repeat an earlier row ({kind}) against {}% expected at this size from the trusted data",
                    num(100.0 * r),
                    num(100.0 * p0)
                ),
                evidence,
                tag: None,
                power: Some(crate::detect::CountNull::predictive(
                    ns,
                    p0,
                    p0.max(floor),
                    profile.rows.max(1),
                ).into()),
            },
            RowSelector::Duplicates { near },
        ));
    }
    if let Some(filter) = &profile.filter {
        let rule = rules.rate(CONFLICT.info.code, &CONFLICT_RULE);
        let (labelled, k) = (state.labelled, state.conflicting);
        if labelled >= 30 {
            let p0 = (profile.conflict_rate + filter.false_positive_rate()).min(1.0);
            let lf = labelled as f64;
            let r = k as f64 / lf;
            let mut evidence = BTreeMap::new();
            evidence.insert("conflict_share".into(), r);
            evidence.insert("trusted_conflict_share".into(), profile.conflict_rate);
            evidence.insert(
                "filter_false_positive_rate".into(),
                filter.false_positive_rate(),
            );
            out.push((
                Candidate {
                    code: "poison-label-conflict",
                    subject: Subject::default(),
                    p_value: Some(predictive_upper_tail(
                        k,
                        labelled,
                        p0,
                        profile.rows.max(1),
                    )),
                    effects: vec![Effect {
                        name: "excess_share",
                        value: r - p0,
                        warn: rule.warn,
                        deny: rule.deny,
                    }],
                    fixed: None,
                    n: labelled,
                    n_baseline: profile.rows,
                    describe: format!(
                        "{k} of {labelled} rows ({}%) match a trusted row's values but carry a label no matching trusted row has, against {}% expected",
                        num(100.0 * r),
                        num(100.0 * p0)
                    ),
                    evidence,
                    tag: None,
                    power: Some(crate::detect::CountNull::predictive(
                        labelled,
                        p0,
                        p0,
                        profile.rows.max(1),
                    ).into()),
                },
                RowSelector::Conflicting {
                    limit: (k as f64 - lf * p0).max(0.0).ceil() as usize,
                },
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_round_trips_and_has_no_false_negatives() {
        let mut f = Bloom::new(10_000);
        for k in 0..10_000u64 {
            f.insert(k);
        }
        f.seal();
        let mut g = f.clone();
        g.unseal().unwrap();
        assert!((0..10_000u64).all(|k| g.contains(k)));
        let fp = (1_000_000..1_100_000u64).filter(|&k| g.contains(k)).count();
        // 0.1% expected; allow sampling noise.
        assert!(fp < 200, "{fp}");
        assert!((g.false_positive_rate() - 0.001).abs() < 0.0005);
    }

    #[test]
    fn expected_share_interpolates_and_extrapolates() {
        let curve = [[1000.0, 0.01], [2000.0, 0.02], [4000.0, 0.04]];
        assert!((expected_share(&curve, 2000.0) - 0.02).abs() < 1e-12);
        assert!((expected_share(&curve, 8000.0) - 0.08).abs() < 1e-9);
        assert!((expected_share(&curve, 500.0) - 0.005).abs() < 1e-12);
        assert_eq!(expected_share(&[[1000.0, 0.0], [2000.0, 0.0]], 1e7), 0.0);
    }
}
