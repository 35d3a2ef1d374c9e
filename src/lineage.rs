//! Which rows a batch holds, as one digest that can be added to and subtracted from: the
//! proof that a re-checked batch is its parent minus the quarantined rows.
//!
//! Each row is hashed over its canonical values (columns in name order; numbers as `f64`
//! whatever their width, so a Parquet `int64` and a CSV column read as floats agree; anything
//! else as text; nulls marked), keyed by the batch's column names. The row set is the
//! lattice hash LtHash of those rows: each row is expanded to 1,024 16-bit lanes and the lanes
//! are summed modulo 2^16 (Bellare & Micciancio, "A new paradigm for collision-free hashing",
//! EUROCRYPT 1997; the parameters of Lewi, Kim, Maykov & Weis, "Securing update propagation
//! with homomorphic hashing", IACR ePrint 2019/227, which give about 200 bits of security
//! against finding two row multisets with the same sum). A plain sum of 256-bit digests would
//! not do: Wagner's generalized birthday attack (CRYPTO 2002) finds colliding sets of rows in
//! far fewer steps. The expansion is BLAKE3's extendable output.
//!
//! The sum is order-independent and mergeable, so `parent = child + quarantined` is checked
//! without keeping any row: a state is 2 KiB whatever the batch size.

use base64::Engine as _;
use polars::prelude::{DataFrame, DataType};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::source::Rows;
use crate::summary::{Kind, for_each_f64_chunk, for_each_str_chunk, kind_of};

/// Lanes of the lattice hash.
pub const LANES: usize = 1024;

/// A multiset of rows: how many, and the lane-wise sum of their expanded hashes.
#[derive(Clone, PartialEq, Eq)]
pub struct RowSet {
    /// Rows added minus rows removed.
    pub rows: u64,
    lanes: Box<[u16; LANES]>,
}

impl std::fmt::Debug for RowSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RowSet({} rows, {})", self.rows, &self.digest()[..12])
    }
}

impl Default for RowSet {
    fn default() -> Self {
        Self {
            rows: 0,
            lanes: Box::new([0; LANES]),
        }
    }
}

impl RowSet {
    fn add_expanded(&mut self, bytes: &[u8; 2 * LANES]) {
        for (lane, pair) in self.lanes.iter_mut().zip(bytes.chunks_exact(2)) {
            *lane = lane.wrapping_add(u16::from_le_bytes([pair[0], pair[1]]));
        }
        self.rows += 1;
    }

    /// Adds another set (the union of multisets).
    pub fn merge(&mut self, other: &Self) {
        for (a, b) in self.lanes.iter_mut().zip(other.lanes.iter()) {
            *a = a.wrapping_add(*b);
        }
        self.rows += other.rows;
    }

    /// The SHA-256 of the row count and the lanes, in hex: what a report pins.
    #[must_use]
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"poisongate.rowset/1");
        h.update(self.rows.to_le_bytes());
        for lane in self.lanes.iter() {
            h.update(lane.to_le_bytes());
        }
        hex::encode(h.finalize())
    }

    /// The state as base64 (row count, then the lanes, little-endian).
    #[must_use]
    pub fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(8 + 2 * LANES);
        bytes.extend_from_slice(&self.rows.to_le_bytes());
        for lane in self.lanes.iter() {
            bytes.extend_from_slice(&lane.to_le_bytes());
        }
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    /// Reads a state written by [`RowSet::encode`].
    ///
    /// # Errors
    /// Text that is not base64 of the right length.
    pub fn decode(text: &str) -> std::result::Result<Self, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| format!("row set is not base64: {e}"))?;
        if bytes.len() != 8 + 2 * LANES {
            return Err(format!(
                "row set has {} bytes, not {}",
                bytes.len(),
                8 + 2 * LANES
            ));
        }
        let mut set = Self::default();
        let mut count = [0u8; 8];
        count.copy_from_slice(&bytes[..8]);
        set.rows = u64::from_le_bytes(count);
        for (lane, pair) in set.lanes.iter_mut().zip(bytes[8..].chunks_exact(2)) {
            *lane = u16::from_le_bytes([pair[0], pair[1]]);
        }
        Ok(set)
    }
}

/// Format of [`Remediation`].
pub const QUARANTINE_FORMAT: &str = "poisongate.quarantine/1";

/// What a report with a quarantine pins so that a re-check of the remaining rows can prove
/// its lineage and carry the findings forward (`check --after-quarantine REPORT`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Remediation {
    /// Always `poisongate.quarantine/1`.
    pub format: String,
    /// Rows of the checked batch.
    pub rows: u64,
    /// Rows the quarantine holds.
    pub quarantined_rows: u64,
    /// [`RowSet::digest`] of every row of the batch.
    pub batch_set: String,
    /// [`RowSet::encode`] of the quarantined rows (2 KiB of lanes, whatever their number).
    pub quarantined_set: String,
    /// Per deny finding of a row-level detector, what dropping the quarantine leaves of it.
    pub findings: Vec<Residual>,
}

/// What dropping the quarantined rows leaves of one finding, at the checked batch's size.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Residual {
    /// The finding's code.
    pub code: String,
    /// Its subject.
    pub subject: crate::finding::Subject,
    /// Its statistic (an excess share of `n` rows).
    pub statistic: String,
    /// The statistic's value.
    pub value: f64,
    /// The level its residual must fall below: the deny threshold the finding reached, or
    /// for a label finding (flips) the code's warn threshold.
    pub threshold: f64,
    /// Rows behind the statistic.
    pub n: u64,
    /// Excess rows the finding estimates (`value * n`).
    pub excess_rows: f64,
    /// The upper end of that estimate (see `poison::quarantine::residuals`).
    pub excess_rows_high: f64,
    /// Of them, how many the quarantine is expected to hold (see
    /// `poison::quarantine::residuals`).
    pub credited_rows: f64,
    /// `(excess_rows_high - credited_rows) / n`: the statistic once the quarantine is
    /// dropped, at the upper end of the estimate.
    pub residual: f64,
    /// Whether the residual is below the threshold.
    pub clears: bool,
}

impl Residual {
    /// The residual of `finding` when the quarantine is expected to hold `credited` of its
    /// excess rows, judged from `high`, the upper end of its estimate of those rows.
    #[must_use]
    pub fn new(finding: &crate::finding::Finding, credited: f64, high: f64) -> Self {
        let n = finding.n.max(1) as f64;
        let excess = (finding.value * n).max(0.0);
        let high = high.max(excess);
        let credited = crate::finding::tidy(credited.clamp(0.0, high));
        let residual = crate::finding::tidy(((high - credited) / n).max(0.0));
        Self {
            code: finding.code.clone(),
            subject: finding.subject.clone(),
            statistic: finding.statistic.clone(),
            value: finding.value,
            threshold: finding.threshold,
            n: finding.n,
            excess_rows: crate::finding::tidy(excess),
            excess_rows_high: crate::finding::tidy(high),
            credited_rows: credited,
            residual,
            clears: residual < finding.threshold,
        }
    }
}

/// The hashing key of a batch's columns: their sorted names and canonical kinds, so that a
/// renamed or re-typed column gives other row hashes.
fn schema_key(columns: &[(String, bool)]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("poisongate row set v1 schema");
    for (name, numeric) in columns {
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(&[u8::from(*numeric)]);
    }
    *h.finalize().as_bytes()
}

/// The canonical columns of a frame: (name, numeric), sorted by name.
fn canonical_columns(df: &DataFrame) -> Vec<(String, bool)> {
    let mut cols: Vec<(String, bool)> = df
        .columns()
        .iter()
        .map(|c| {
            let numeric = kind_of(c.dtype()) == Kind::Numeric && !c.dtype().is_temporal();
            (c.name().to_string(), numeric)
        })
        .collect();
    cols.sort();
    cols
}

/// Appends each row's canonical bytes for one column to `rows`.
fn column_bytes(df: &DataFrame, name: &str, numeric: bool, rows: &mut [Vec<u8>]) -> Result<()> {
    let series = df
        .column(name)
        .map_err(|e| Error::Internal(format!("column `{name}`: {e}")))?
        .as_materialized_series();
    let mut at = 0usize;
    if numeric {
        for_each_f64_chunk(series, |values, valid| {
            for (i, &x) in values.iter().enumerate() {
                let buf = &mut rows[at + i];
                if valid.is_some_and(|v| !v.get_bit(i)) {
                    buf.push(0);
                } else {
                    // One zero and one NaN: -0.0 == 0.0 and every NaN are the same value.
                    let x = if x == 0.0 {
                        0.0
                    } else if x.is_nan() {
                        f64::NAN
                    } else {
                        x
                    };
                    buf.push(1);
                    buf.extend_from_slice(&x.to_bits().to_le_bytes());
                }
            }
            at += values.len();
        })
    } else {
        let cast;
        // Temporal values are compared as their text (ISO 8601), whatever their unit.
        let series = if series.dtype().is_temporal() {
            cast = series
                .cast(&DataType::String)
                .map_err(|e| Error::Internal(format!("column `{name}`: {e}")))?;
            &cast
        } else {
            series
        };
        for_each_str_chunk(series, |arr| {
            for (i, v) in arr.iter().enumerate() {
                let buf = &mut rows[at + i];
                match v {
                    None => buf.push(0),
                    Some(s) => {
                        buf.push(2);
                        buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
                        buf.extend_from_slice(s.as_bytes());
                    }
                }
            }
            at += arr.len();
        })
    }
}

/// Adds every row of `df` to `all`, and the rows whose batch index (`first` + local index)
/// is in `picked` (sorted) to `chosen`.
fn add_block(
    df: &DataFrame,
    first: u64,
    picked: &[u64],
    all: &mut RowSet,
    chosen: &mut RowSet,
) -> Result<()> {
    let columns = canonical_columns(df);
    let key = schema_key(&columns);
    let mut rows: Vec<Vec<u8>> = vec![Vec::with_capacity(16 * columns.len()); df.height()];
    for (name, numeric) in &columns {
        column_bytes(df, name, *numeric, &mut rows)?;
    }
    let start = picked.partition_point(|&r| r < first);
    let mut next = start;
    let mut expanded = [0u8; 2 * LANES];
    for (i, bytes) in rows.iter().enumerate() {
        let mut h = blake3::Hasher::new_keyed(&key);
        h.update(bytes);
        h.finalize_xof().fill(&mut expanded);
        all.add_expanded(&expanded);
        if picked.get(next) == Some(&(first + i as u64)) {
            chosen.add_expanded(&expanded);
            next += 1;
        }
    }
    Ok(())
}

/// The row set of a whole batch and of the rows `picked` (batch indices, any order): one read
/// of every column.
///
/// # Errors
/// A batch that can no longer be read (or changed since the first pass).
pub fn row_sets(rows: Rows<'_>, picked: &[u64]) -> Result<(RowSet, RowSet)> {
    let mut picked = picked.to_vec();
    picked.sort_unstable();
    picked.dedup();
    let mut all = RowSet::default();
    let mut chosen = RowSet::default();
    rows.for_each_window(None, &mut |blocks, first| {
        let mut at = first as u64;
        for df in blocks {
            add_block(df, at, &picked, &mut all, &mut chosen)?;
            at += df.height() as u64;
        }
        Ok(())
    })?;
    Ok((all, chosen))
}

#[cfg(test)]
mod tests {
    use super::*;
    use polars::prelude::*;

    fn frame(ids: &[i64], names: &[Option<&str>]) -> DataFrame {
        df!("id" => ids, "name" => names).unwrap()
    }

    fn set(df: &DataFrame, picked: &[u64]) -> (RowSet, RowSet) {
        row_sets(Rows::Frames(std::slice::from_ref(df)), picked).unwrap()
    }

    #[test]
    fn a_parent_is_its_child_plus_the_removed_rows_in_any_order() {
        let parent = frame(&[1, 2, 3, 4], &[Some("a"), None, Some("c"), Some("a")]);
        let (all, removed) = set(&parent, &[3, 1]);
        let child = frame(&[3, 1], &[Some("c"), Some("a")]);
        let (mut rest, _) = set(&child, &[]);
        assert_ne!(rest.digest(), all.digest());
        rest.merge(&removed);
        assert_eq!(rest.rows, 4);
        assert_eq!(rest.digest(), all.digest());
    }

    #[test]
    fn a_changed_value_a_swapped_row_or_another_column_name_changes_the_set() {
        let parent = frame(&[1, 2], &[Some("a"), Some("b")]);
        let (all, _) = set(&parent, &[]);
        let changed = frame(&[1, 2], &[Some("a"), Some("c")]);
        assert_ne!(set(&changed, &[]).0.digest(), all.digest());
        // A null is not the empty string.
        let nulled = frame(&[1, 2], &[Some("a"), None]);
        let empty = frame(&[1, 2], &[Some("a"), Some("")]);
        assert_ne!(set(&nulled, &[]).0.digest(), set(&empty, &[]).0.digest());
        let renamed = df!("key" => [1i64, 2], "name" => ["a", "b"]).unwrap();
        assert_ne!(set(&renamed, &[]).0.digest(), all.digest());
        // Values moved between rows: the same multiset of cells, other rows.
        let moved = frame(&[1, 2], &[Some("b"), Some("a")]);
        assert_ne!(set(&moved, &[]).0.digest(), all.digest());
    }

    #[test]
    fn integers_read_as_floats_and_reordered_columns_give_the_same_set() {
        let ints = frame(&[1, 2], &[Some("a"), Some("b")]);
        let floats = df!("name" => ["b", "a"], "id" => [2.0f64, 1.0]).unwrap();
        assert_eq!(set(&ints, &[]).0.digest(), set(&floats, &[]).0.digest());
    }

    #[test]
    fn a_state_survives_encoding_and_a_repeated_row_counts_twice() {
        let twice = frame(&[1, 1], &[Some("a"), Some("a")]);
        let (all, one) = set(&twice, &[0]);
        assert_eq!(RowSet::decode(&all.encode()).unwrap(), all);
        let mut doubled = one.clone();
        doubled.merge(&one);
        assert_eq!(doubled.digest(), all.digest());
        assert_ne!(one.digest(), all.digest());
        assert!(RowSet::decode("AAAA").is_err());
    }
}
