//! The duplicate detectors' state at `check` time ([`DuplicateState`]): the groups of
//! identical rows, exact up to [`MAX_GROUPS`] distinct rows and a hash sample of them beyond,
//! and the rows that contradict a trusted row's label.

use foldhash::{HashMap, HashMapExt};
use serde::{Deserialize, Serialize};

use super::{Bloom, cell_key, pair_key};
use crate::detect::{Accumulator, TopRows};
use crate::poison::scan::{Block, Pinned};
use crate::rows::{NO_CLASS, mix};

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
