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

use super::scan::{Block, Pinned};
use super::{Found, RowSelector, Rows, Scan};
use crate::detect::{Accumulator, Candidate, Effect, TopRows};
use crate::finding::{Subject, num};
use crate::policy::Policy;
use crate::rows::{NO_CLASS, mix};
use crate::stats::proportion::predictive_upper_tail;

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
    /// Trusted (cell) and (cell, label) keys; absent without a label or past 2M rows.
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

/// Pins the duplicate curves, the conflict rate and the filter.
#[must_use]
pub fn fit(rows: &Rows, seed: u64) -> DuplicateProfile {
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
        let filter = (labelled.len() <= MAX_FILTER_ROWS).then(|| {
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

/// Most (near fingerprint, exact fingerprint) groups a [`DuplicateState`] holds. Up to this
/// many distinct rows the duplicate counts are exact; beyond, they come from a hash sample of
/// the near cells (see [`DuplicateState`]). At 27 bytes a group in a part, a few MB.
pub const MAX_GROUPS: usize = 1 << 17;
const SAMPLE_SALT: u64 = 0x7361_6d70_6c65;

/// Whether the near cell `near` is in the sample at `level` (the top `level` bits of its
/// hash are zero: one cell in `2^level`).
#[inline]
fn sampled(level: u32, near: u64) -> bool {
    level == 0 || (level < 64 && mix(near ^ SAMPLE_SALT) >> (64 - level) == 0)
}

/// The rows of one group of identical rows (one exact fingerprint within a near cell).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Group {
    /// Rows.
    pub count: u64,
    /// The smallest label among them ([`NO_CLASS`] for unlabelled rows).
    pub label: u16,
    /// Whether the rows carry more than one label.
    pub mixed: bool,
}

impl Group {
    fn absorb(&mut self, o: Self) {
        self.count += o.count;
        self.mixed |= o.mixed || o.label != self.label;
        self.label = self.label.min(o.label);
    }
}

/// Groups of identical rows keyed by (near fingerprint, exact fingerprint).
pub type Groups = HashMap<(u64, u64), Group>;

/// `poison-duplicate-flood` and `poison-label-conflict` over the rows seen so far: the groups
/// of identical rows, and the labelled rows that contradict a trusted row's label.
///
/// **Bounded, exact up to a size, then a hash sample.** The groups are exact while the batch
/// has at most `cap` ([`MAX_GROUPS`]) distinct rows. Past that, only the near cells whose hash
/// falls in the first `2^-level` of the hash space are kept, `level` the smallest that leaves
/// at most `cap` groups (distinct sampling, Gibbons, "Distinct sampling for highly-accurate
/// answers to distinct values queries and event reports", VLDB 2001). Every copy of a row,
/// and every near variant of it, lands in the same cell, so within the sample the repeats
/// are counted exactly, and the sample's repeated share estimates the batch's: a cluster
/// sample of cells, its standard error about `sqrt(r (1 - r) / n_s)` for a share `r` on `n_s`
/// sampled rows when groups are small. The level depends only on the set of distinct rows,
/// never on the order or the split of the rows, so every sharding gives the same state byte
/// for byte. A hash table rather than HyperLogLog: the flood test needs the repeated share
/// to a fraction of a percent, which a sketch of this size gives only as a sample of cells.
/// The limit of the sample: a flood made of few rows copied very many times falls in the
/// sample with a chance of `2^-level`; the point-mass detector sees those values instead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DuplicateState {
    /// Rows.
    pub rows: u64,
    /// Labelled rows.
    pub labelled: u64,
    /// Labelled rows whose cell is in the trusted filter while their (cell, label) is not.
    pub conflicting: u64,
    /// The first of those rows (every one scores 1), to list them without a second read.
    pub top_conflicting: TopRows,
    /// Most groups kept.
    pub cap: u64,
    /// Sample level: a near cell is kept when the top `level` bits of its hash are zero.
    pub level: u32,
    /// The groups of the sampled cells, packed (sorted by key; 27 bytes each,
    /// little-endian, base64).
    #[serde(with = "packed")]
    pub groups: Groups,
}

impl DuplicateState {
    /// An empty state that keeps at most `cap` groups.
    #[must_use]
    pub fn with_cap(cap: usize) -> Self {
        Self {
            rows: 0,
            labelled: 0,
            conflicting: 0,
            top_conflicting: TopRows::default(),
            cap: cap.max(1) as u64,
            level: 0,
            groups: Groups::default(),
        }
    }

    /// Raises the level until at most `cap` groups are left.
    fn shrink(&mut self) {
        while self.groups.len() as u64 > self.cap && self.level < 64 {
            self.level += 1;
            let level = self.level;
            self.groups.retain(|k, _| sampled(level, k.0));
        }
    }

    /// The counts the flood test reads.
    // Integer sums: the order of the table does not change them.
    #[allow(clippy::iter_over_hash_type)]
    #[must_use]
    pub fn counts(&self) -> DuplicateCounts {
        let mut cells: HashMap<u64, (u64, u16, bool)> = HashMap::with_capacity(self.groups.len());
        let mut c = DuplicateCounts {
            sampled_rows: 0,
            exact: 0,
            exact_mixed: 0,
            near_all: 0,
            near_mixed: 0,
        };
        for (&(near, _), g) in &self.groups {
            c.sampled_rows += g.count;
            c.exact += g.count - 1;
            if g.mixed {
                c.exact_mixed += g.count;
            }
            let cell = cells.entry(near).or_insert((0, g.label, false));
            cell.0 += g.count;
            cell.2 |= g.mixed || cell.1 != g.label;
        }
        for (rows, _, mixed) in cells.values() {
            c.near_all += rows - 1;
            if *mixed {
                c.near_mixed += rows;
            }
        }
        c
    }

    /// Rows in each sampled near cell (to list the rows of near repeats).
    #[allow(clippy::iter_over_hash_type)] // integer sums per key
    #[must_use]
    pub fn cell_rows(&self) -> HashMap<u64, u64> {
        let mut cells: HashMap<u64, u64> = HashMap::with_capacity(self.groups.len());
        for (&(near, _), g) in &self.groups {
            *cells.entry(near).or_default() += g.count;
        }
        cells
    }
}

/// What the flood test counts over the sampled rows ([`DuplicateState::counts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DuplicateCounts {
    /// Rows of the sampled cells (every row while the state is exact).
    pub sampled_rows: u64,
    /// Rows that repeat an earlier row exactly.
    pub exact: u64,
    /// Rows in exact groups whose labels disagree.
    pub exact_mixed: u64,
    /// Rows that repeat an earlier row's near fingerprint (exact repeats included).
    pub near_all: u64,
    /// Rows in near cells whose labels disagree.
    pub near_mixed: u64,
}

/// Serde of [`Groups`] as sorted, packed little-endian records in base64.
mod packed {
    use base64::Engine;
    use foldhash::HashMapExt;
    use serde::{Deserialize, Deserializer, Serializer};

    use super::{Group, Groups};

    const RECORD: usize = 8 + 8 + 8 + 2 + 1;

    pub fn serialize<S: Serializer>(g: &Groups, s: S) -> Result<S::Ok, S::Error> {
        let mut keys: Vec<(&(u64, u64), &Group)> = g.iter().collect();
        keys.sort_unstable_by_key(|(k, _)| **k);
        let mut bytes = Vec::with_capacity(keys.len() * RECORD);
        for ((near, exact), v) in keys {
            bytes.extend_from_slice(&near.to_le_bytes());
            bytes.extend_from_slice(&exact.to_le_bytes());
            bytes.extend_from_slice(&v.count.to_le_bytes());
            bytes.extend_from_slice(&v.label.to_le_bytes());
            bytes.push(u8::from(v.mixed));
        }
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Groups, D::Error> {
        use serde::de::Error;
        let text = String::deserialize(d)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| D::Error::custom(format!("duplicate groups: {e}")))?;
        if bytes.len() % RECORD != 0 {
            return Err(D::Error::custom("duplicate groups: truncated record"));
        }
        let mut out = Groups::with_capacity(bytes.len() / RECORD);
        let u64_at = |b: &[u8], i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(w)
        };
        for r in bytes.chunks_exact(RECORD) {
            let mixed = match r[26] {
                0 => false,
                1 => true,
                _ => return Err(D::Error::custom("duplicate groups: bad flag")),
            };
            let g = Group {
                count: u64_at(r, 16),
                label: u16::from_le_bytes([r[24], r[25]]),
                mixed,
            };
            if g.count == 0 || out.insert((u64_at(r, 0), u64_at(r, 8)), g).is_some() {
                return Err(D::Error::custom(
                    "duplicate groups: empty or repeated group",
                ));
            }
        }
        Ok(out)
    }
}

/// Rows of repeated groups, in a read of the rows: every row whose exact group holds more
/// than one row, or (near) whose near cell does while its exact group does not. The first
/// copy of a group is included: which of identical rows is the original cannot be told from
/// the batch (a flood's copies are often shuffled in front of it), and a reviewer needs the
/// whole group. The finding's count is of repeats beyond the first. Past the state's exact
/// size, only the rows of the sampled cells can be named.
pub struct RepeatedRows<'s> {
    state: &'s DuplicateState,
    cells: HashMap<u64, u64>,
}

impl<'s> RepeatedRows<'s> {
    /// The lister for a merged state.
    #[must_use]
    pub fn new(state: &'s DuplicateState) -> Self {
        Self {
            state,
            cells: state.cell_rows(),
        }
    }

    /// Whether the row with these fingerprints is in a repeated group (exact or near only).
    #[must_use]
    pub fn repeated(&self, near: bool, fp_near: u64, fp_exact: u64) -> bool {
        let Some(g) = self.state.groups.get(&(fp_near, fp_exact)) else {
            return false;
        };
        if near {
            g.count == 1 && self.cells.get(&fp_near).is_some_and(|&c| c > 1)
        } else {
            g.count > 1
        }
    }
}

/// Whether a row conflicts with the trusted filter: its cell is in it while its (cell, label)
/// is not.
#[must_use]
pub fn conflicts(filter: &Bloom, fp_near: u64, label: u16) -> bool {
    label != NO_CLASS
        && filter.contains(cell_key(fp_near))
        && !filter.contains(pair_key(fp_near, label))
}

impl Accumulator<Pinned<'_>, Block> for DuplicateState {
    fn new(_: &Pinned<'_>) -> Option<Self> {
        Some(Self::with_cap(MAX_GROUPS))
    }

    fn update(&mut self, p: &Pinned<'_>, b: &Block) {
        let e = &b.e;
        self.rows += e.n as u64;
        for (i, &y) in e.label.iter().enumerate() {
            let near = e.fp_near[i];
            if y != NO_CLASS {
                self.labelled += 1;
                if p.filter.is_some_and(|f| conflicts(f, near, y)) {
                    self.conflicting += 1;
                    self.top_conflicting.offer(1.0, b.first + i as u64);
                }
            }
            if sampled(self.level, near) {
                let one = Group {
                    count: 1,
                    label: y,
                    mixed: false,
                };
                self.groups
                    .entry((near, e.fp_exact[i]))
                    .and_modify(|g| g.absorb(one))
                    .or_insert(one);
                if self.groups.len() as u64 > self.cap {
                    self.shrink();
                }
            }
        }
    }

    // Each group is absorbed by key, which commutes: the order of the table does not matter.
    #[allow(clippy::iter_over_hash_type)]
    fn merge(&mut self, _: &Pinned<'_>, o: Self) -> Result<(), String> {
        if o.cap != self.cap {
            return Err(format!(
                "duplicate groups capped at {} and {}",
                self.cap, o.cap
            ));
        }
        self.rows += o.rows;
        self.labelled += o.labelled;
        self.conflicting += o.conflicting;
        self.top_conflicting.merge(o.top_conflicting);
        let level = self.level.max(o.level);
        if level > self.level {
            self.level = level;
            self.groups.retain(|k, _| sampled(level, k.0));
        }
        // Fold the smaller table into the larger.
        let (mut into, from) = if o.groups.len() > self.groups.len() {
            (o.groups, std::mem::take(&mut self.groups))
        } else {
            (std::mem::take(&mut self.groups), o.groups)
        };
        for (k, g) in from {
            if sampled(level, k.0) {
                into.entry(k).and_modify(|a| a.absorb(g)).or_insert(g);
            }
        }
        self.groups = into;
        self.shrink();
        Ok(())
    }

    fn shift_rows(&mut self, by: u64) {
        self.top_conflicting.shift(by);
    }
}

/// The duplicate-flood and label-conflict candidates.
#[must_use]
pub fn finish(p: &Pinned<'_>, _: &Scan, state: &DuplicateState, policy: &Policy) -> Vec<Found> {
    candidates(&p.profile.duplicates, state, policy)
        .into_iter()
        .map(|(c, s)| (c, Some(s)))
        .collect()
}

/// Duplicate-flood and label-conflict candidates.
#[must_use]
pub fn candidates(
    profile: &DuplicateProfile,
    state: &DuplicateState,
    policy: &Policy,
) -> Vec<(Candidate, RowSelector)> {
    let mut out = Vec::new();
    let n = state.rows;
    if n < 30 {
        return out;
    }
    let nf = n as f64;
    let rule = &policy.checks.poison_duplicate_flood;
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
                describe: if sampled {
                    format!(
                        "{k} of {ns} rows in a hash sample of the batch's {n} ({}%) repeat an earlier row ({kind}) against {}% expected at this size from the trusted data",
                        num(100.0 * r),
                        num(100.0 * p0)
                    )
                } else {
                    format!(
                        "{k} of {n} rows ({}%) repeat an earlier row ({kind}) against {}% expected at this size from the trusted data",
                        num(100.0 * r),
                        num(100.0 * p0)
                    )
                },
                evidence,
                tag: None,
            },
            RowSelector::Duplicates { near },
        ));
    }
    if let Some(filter) = &profile.filter {
        let rule = &policy.checks.poison_label_conflict;
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
