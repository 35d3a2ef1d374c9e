//! Row-level encoding shared by `profile` and `check` for the poisoning detectors.
//!
//! Per-column summaries cannot see labels that disagree with features, duplicated rows or rows
//! whose columns are each normal but jointly implausible; those need whole rows. This module
//! turns a frame, in slices of [`CHUNK_ROWS`], into compact columnar codes:
//!
//! - every numeric feature becomes its bin over the pinned percentile edges (`0..=k`, nulls
//!   `k + 1`), and its raw value is kept for point-mass and copula scores;
//! - every categorical feature becomes the index of its value among the pinned top values,
//!   `top.len()` for any other value and `top.len() + 1` for null;
//! - the label becomes the index of its class among the pinned classes;
//! - each row gets two 64-bit fingerprints: of its exact feature values (exact duplicates) and
//!   of its codes (near duplicates: the same bins and categories).
//!
//! Fingerprints use xxh3 for text and the splitmix64 finaliser (Steele, Lea & Flood 2014) to
//! mix values, both fixed algorithms, so a fingerprint pinned in a baseline means the same in
//! every later build.

use foldhash::{HashMap, HashMapExt};
use polars::prelude::*;
use polars_arrow::array::{Array, Utf8ViewArray, View};

use crate::error::{Error, Result};
use crate::pinned::{ColumnProfile, Trusted};
use crate::stats::binned::BinLookup;
use crate::summary::{Kind, for_each_f64_chunk, for_each_str_chunk};

pub use crate::source::stream::CHUNK_ROWS;

/// Label index of a row whose label is null or not a pinned class.
pub const NO_CLASS: u16 = u16::MAX;

/// Key mixed for a null value.
const NULL_KEY: u64 = 0x6e75_6c6c_6e75_6c6c;
/// Salt of integer-typed categorical values (their key need not match their text's: every
/// input of one batch shares one schema).
const INT_SALT: u64 = 0x696e_7465_6765_7200;

/// The splitmix64 finaliser: a bijective 64-bit mixer.
#[inline]
#[must_use]
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Folds a value key into a row fingerprint: a multiply-rotate step per value (as in
/// FxHash), finalised once per row by [`mix`].
#[inline]
fn fold(acc: u64, key: u64, column: usize) -> u64 {
    (acc ^ key.wrapping_add((column as u64).wrapping_mul(0x2545_f491_4f6c_dd1d)))
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .rotate_left(29)
}

/// The stable key of an exact numeric value (−0 and 0 agree; every NaN is null).
#[inline]
#[must_use]
pub fn value_key(x: f64) -> u64 {
    if x.is_nan() {
        NULL_KEY
    } else if x == 0.0 {
        0
    } else {
        x.to_bits()
    }
}

/// How one feature is encoded.
#[derive(Debug, Clone)]
pub enum FeatureCode {
    /// Binned over the pinned edges.
    Numeric {
        /// Bin lookup.
        lookup: BinLookup,
        /// Bins (`edges + 1`); the null code is this value.
        bins: usize,
    },
    /// Coded by the pinned top values.
    Categorical {
        /// Value to code.
        codes: HashMap<String, u8>,
        /// Code of any other value; the null code is `other + 1`.
        other: u8,
    },
}

impl FeatureCode {
    /// Distinct codes, the null code included.
    #[must_use]
    pub fn cardinality(&self) -> usize {
        match self {
            Self::Numeric { bins, .. } => bins + 1,
            Self::Categorical { other, .. } => usize::from(*other) + 2,
        }
    }

    /// The code of null.
    #[must_use]
    pub fn null_code(&self) -> u8 {
        match self {
            Self::Numeric { bins, .. } => *bins as u8,
            Self::Categorical { other, .. } => other + 1,
        }
    }

    /// Whether this is a categorical feature.
    #[must_use]
    pub fn is_categorical(&self) -> bool {
        matches!(self, Self::Categorical { .. })
    }
}

/// A feature: a profiled column other than the label.
#[derive(Debug, Clone)]
pub struct Feature {
    /// Column name.
    pub name: String,
    /// Encoding.
    pub code: FeatureCode,
}

/// Encodes frames against a baseline's features and classes.
#[derive(Debug, Clone)]
pub struct Encoder {
    /// Features, in the baseline's column order.
    pub features: Vec<Feature>,
    /// Label column.
    pub label: Option<String>,
    /// Class values, sorted as pinned.
    pub classes: Vec<String>,
    class_index: HashMap<String, u16>,
}

/// One encoded slice of rows.
#[derive(Debug, Clone, Default)]
pub struct Encoded {
    /// Rows.
    pub n: usize,
    /// Codes per feature (column-major).
    pub codes: Vec<Vec<u8>>,
    /// Raw values per feature; empty for categorical features; NaN for null.
    pub values: Vec<Vec<f64>>,
    /// Class index per row, [`NO_CLASS`] when absent.
    pub label: Vec<u16>,
    /// Fingerprint of the exact feature values.
    pub fp_exact: Vec<u64>,
    /// Fingerprint of the codes.
    pub fp_near: Vec<u64>,
}

/// Top-value codes of a categorical profile (at most 250, so a code fits a byte).
fn top_codes(col: &ColumnProfile) -> HashMap<String, u8> {
    col.categorical
        .as_ref()
        .map(|c| {
            c.top
                .iter()
                .take(250)
                .enumerate()
                .map(|(i, t)| (t.value.clone(), i as u8))
                .collect()
        })
        .unwrap_or_default()
}

impl Encoder {
    /// The encoder for a baseline's numeric and categorical columns; `usable` limits it to the
    /// columns the batch has with a usable type.
    #[must_use]
    pub fn new(baseline: &Trusted<'_>, usable: Option<&[String]>) -> Self {
        let label = baseline.label.clone();
        let mut features = Vec::new();
        for col in baseline.columns {
            if Some(&col.name) == label.as_ref()
                || col.role.is_some()
                || usable.is_some_and(|u| !u.contains(&col.name))
            {
                continue;
            }
            let code = match (col.kind, &col.numeric) {
                (Kind::Numeric, Some(n)) if n.edges.len() < 250 => FeatureCode::Numeric {
                    lookup: BinLookup::new(&n.edges),
                    bins: n.edges.len() + 1,
                },
                (Kind::Categorical, _) => {
                    let codes = top_codes(col);
                    let other = codes.len() as u8;
                    FeatureCode::Categorical { codes, other }
                }
                _ => continue,
            };
            features.push(Feature {
                name: col.name.clone(),
                code,
            });
        }
        let classes: Vec<String> = baseline.class_names();
        let class_index = classes
            .iter()
            .enumerate()
            .map(|(i, c)| (c.clone(), i as u16))
            .collect();
        Self {
            features,
            label,
            classes,
            class_index,
        }
    }

    /// Encodes every row of `df` (which should hold at most a few [`CHUNK_ROWS`]).
    ///
    /// # Errors
    /// A feature or the label missing from the frame, or a column that cannot be cast.
    pub fn encode(&self, df: &DataFrame) -> Result<Encoded> {
        let n = df.height();
        let mut out = Encoded {
            n,
            codes: Vec::with_capacity(self.features.len()),
            values: Vec::with_capacity(self.features.len()),
            label: vec![NO_CLASS; n],
            fp_exact: vec![0; n],
            fp_near: vec![0; n],
        };
        for (j, f) in self.features.iter().enumerate() {
            let series = column(df, &f.name)?;
            let mut codes = Vec::with_capacity(n);
            let mut values = Vec::new();
            match &f.code {
                FeatureCode::Numeric { lookup, bins } => {
                    values.reserve(n);
                    let null = *bins as u8;
                    for_each_f64_chunk(series, |v, valid| match valid {
                        Some(b) if b.unset_bits() > 0 => {
                            for (i, &x) in v.iter().enumerate() {
                                if b.get_bit(i) && !x.is_nan() {
                                    codes.push(lookup.index(x) as u8);
                                    values.push(x);
                                } else {
                                    codes.push(null);
                                    values.push(f64::NAN);
                                }
                            }
                        }
                        _ => {
                            codes.extend(v.iter().map(|&x| {
                                if x.is_nan() {
                                    null
                                } else {
                                    lookup.index(x) as u8
                                }
                            }));
                            values.extend_from_slice(v);
                        }
                    })?;
                    for (i, &x) in values.iter().enumerate() {
                        out.fp_exact[i] = fold(out.fp_exact[i], value_key(x), j);
                    }
                }
                FeatureCode::Categorical { codes: map, other } => {
                    let mut keys = Vec::with_capacity(n);
                    categorical_codes(series, map, *other, &mut codes, &mut keys)?;
                    for (i, &k) in keys.iter().enumerate() {
                        out.fp_exact[i] = fold(out.fp_exact[i], k, j);
                    }
                }
            }
            for (i, &c) in codes.iter().enumerate() {
                out.fp_near[i] = fold(out.fp_near[i], u64::from(c), j);
            }
            out.codes.push(codes);
            out.values.push(values);
        }
        for fp in out.fp_exact.iter_mut().chain(out.fp_near.iter_mut()) {
            *fp = mix(*fp);
        }
        self.fill_labels(df, &mut out.label)?;
        Ok(out)
    }

    /// The class index of every row of a block holding the label column ([`NO_CLASS`] when
    /// absent or unknown; every row [`NO_CLASS`] without a pinned label), as
    /// [`Encoder::encode`] gives them.
    ///
    /// # Errors
    /// The label missing from the block, or a label that cannot be cast.
    pub fn labels(&self, df: &DataFrame) -> Result<Vec<u16>> {
        let mut out = vec![NO_CLASS; df.height()];
        self.fill_labels(df, &mut out)?;
        Ok(out)
    }

    fn fill_labels(&self, df: &DataFrame, out: &mut [u16]) -> Result<()> {
        if let Some(label) = &self.label {
            let series = column(df, label)?;
            if series.dtype().is_integer() {
                let ints: HashMap<i64, u16> = self
                    .class_index
                    .iter()
                    .filter_map(|(k, &v)| k.parse::<i64>().ok().map(|i| (i, v)))
                    .collect();
                let wide = series
                    .cast(&DataType::Int64)
                    .map_err(|e| Error::Internal(format!("label `{label}`: {e}")))?;
                let ca = wide
                    .i64()
                    .map_err(|e| Error::Internal(format!("label `{label}`: {e}")))?;
                for (slot, v) in out
                    .iter_mut()
                    .zip(ca.downcast_iter().flat_map(|a| a.iter()))
                {
                    *slot = v.and_then(|i| ints.get(i).copied()).unwrap_or(NO_CLASS);
                }
                return Ok(());
            }
            let mut row = 0usize;
            let mut cache: HashMap<u128, u16> = HashMap::new();
            for_each_str_chunk(series, |arr| {
                for i in 0..arr.len() {
                    if arr.is_valid(i) {
                        let view = arr.views()[i];
                        out[row + i] = if view.length <= View::MAX_INLINE_SIZE {
                            *cache.entry(view.as_u128()).or_insert_with(|| {
                                self.class_index
                                    .get(arr.value(i))
                                    .copied()
                                    .unwrap_or(NO_CLASS)
                            })
                        } else {
                            self.class_index
                                .get(arr.value(i))
                                .copied()
                                .unwrap_or(NO_CLASS)
                        };
                    }
                }
                row += arr.len();
            })?;
        }
        Ok(())
    }

    /// The codes of feature `j` in one block holding its column, as [`Encoder::encode`]
    /// gives them: for a pass that needs one feature's codes again without keeping every
    /// row's codes from the first pass.
    ///
    /// # Errors
    /// The column missing from the block, or a column that cannot be cast.
    pub fn feature_codes(&self, j: usize, df: &DataFrame) -> Result<Vec<u8>> {
        let f = self
            .features
            .get(j)
            .ok_or_else(|| Error::Internal(format!("no feature {j}")))?;
        let series = column(df, &f.name)?;
        let mut codes = Vec::with_capacity(df.height());
        match &f.code {
            FeatureCode::Numeric { lookup, bins } => {
                let null = *bins as u8;
                for_each_f64_chunk(series, |v, valid| {
                    codes.extend(v.iter().enumerate().map(|(i, &x)| {
                        if x.is_nan() || valid.is_some_and(|b| !b.get_bit(i)) {
                            null
                        } else {
                            lookup.index(x) as u8
                        }
                    }));
                })?;
            }
            FeatureCode::Categorical { codes: map, other } => {
                let mut keys = Vec::with_capacity(df.height());
                categorical_codes(series, map, *other, &mut codes, &mut keys)?;
            }
        }
        Ok(codes)
    }

    /// Encodes a list of frames slice by slice, in parallel, and calls `f` on each slice with
    /// the index of its first row in batch order. Results come back in batch order.
    ///
    /// # Errors
    /// Any encoding error, or the first error `f` returns.
    pub fn for_each_slice<T: Send>(
        &self,
        frames: &[DataFrame],
        f: impl Fn(usize, Encoded) -> Result<T> + Sync,
    ) -> Result<Vec<T>> {
        use rayon::prelude::*;
        slices(frames)
            .par_iter()
            .map(|s| f(s.first, self.encode_slice(frames, s)?))
            .collect()
    }

    /// Encodes one slice of a batch.
    ///
    /// # Errors
    /// As [`Self::encode`].
    pub fn encode_slice(&self, frames: &[DataFrame], s: &Slice) -> Result<Encoded> {
        self.encode(&frames[s.frame].slice(s.offset as i64, s.len))
    }
}

/// A run of at most [`CHUNK_ROWS`] rows of one frame.
#[derive(Debug, Clone, Copy)]
pub struct Slice {
    /// Frame index.
    pub frame: usize,
    /// First row in the frame.
    pub offset: usize,
    /// Rows.
    pub len: usize,
    /// First row in batch order.
    pub first: usize,
}

/// The slices of a batch, in batch order.
#[must_use]
pub fn slices(frames: &[DataFrame]) -> Vec<Slice> {
    let mut out = Vec::new();
    let mut start = 0usize;
    for (frame, df) in frames.iter().enumerate() {
        let mut offset = 0usize;
        while offset < df.height() {
            let len = CHUNK_ROWS.min(df.height() - offset);
            out.push(Slice {
                frame,
                offset,
                len,
                first: start + offset,
            });
            offset += len;
        }
        start += df.height();
    }
    out
}

fn column<'a>(df: &'a DataFrame, name: &str) -> Result<&'a Series> {
    df.column(name)
        .map(Column::as_materialized_series)
        .map_err(|e| Error::Internal(format!("column `{name}`: {e}")))
}

/// Codes and exact-value keys of a categorical column.
fn categorical_codes(
    series: &Series,
    map: &HashMap<String, u8>,
    other: u8,
    codes: &mut Vec<u8>,
    keys: &mut Vec<u64>,
) -> Result<()> {
    let null = other + 1;
    let lookup = |s: &str| map.get(s).copied().unwrap_or(other);
    if series.dtype().is_integer() {
        let wide = series
            .cast(&DataType::Int64)
            .map_err(|e| Error::Internal(format!("column `{}`: {e}", series.name())))?;
        let ints: HashMap<i64, u8> = map
            .iter()
            .filter_map(|(k, &v)| k.parse::<i64>().ok().map(|i| (i, v)))
            .collect();
        let ca = wide
            .i64()
            .map_err(|e| Error::Internal(format!("column `{}`: {e}", series.name())))?;
        for v in ca.downcast_iter().flat_map(|a| a.iter()) {
            match v.copied() {
                Some(i) => {
                    codes.push(ints.get(&i).copied().unwrap_or(other));
                    keys.push(mix(i as u64 ^ INT_SALT));
                }
                None => {
                    codes.push(null);
                    keys.push(NULL_KEY);
                }
            }
        }
        return Ok(());
    }
    for_each_str_chunk(series, |arr: &Utf8ViewArray| {
        let mut cache: HashMap<u128, (u8, u64)> = HashMap::new();
        let views = arr.views();
        for i in 0..arr.len() {
            if !arr.is_valid(i) {
                codes.push(null);
                keys.push(NULL_KEY);
                continue;
            }
            let view = views[i];
            let (c, k) = if view.length <= View::MAX_INLINE_SIZE {
                *cache.entry(view.as_u128()).or_insert_with(|| {
                    let s = arr.value(i);
                    (lookup(s), text_key(s.as_bytes()))
                })
            } else {
                let s = arr.value(i);
                (lookup(s), text_key(s.as_bytes()))
            };
            codes.push(c);
            keys.push(k);
        }
    })
}

/// The stable key of a text value.
#[inline]
#[must_use]
pub fn text_key(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixer_is_the_published_splitmix64() {
        // First outputs of splitmix64 seeded with 0 (Vigna's reference implementation).
        assert_eq!(mix(0), 0xe220_a839_7b1d_cdaf);
        assert_eq!(value_key(-0.0), value_key(0.0));
        assert_eq!(value_key(f64::NAN), NULL_KEY);
    }
}
