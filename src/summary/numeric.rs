//! Numeric column summary: bins over the pinned edges plus shifted power sums.
//!
//! Sums are taken around the baseline mean (`sum (x - c)`, `sum (x - c)^2`), which keeps the
//! variance formula `(S2 - S1^2 / n) / (n - 1)` free of catastrophic cancellation when the
//! batch resembles the baseline (Chan, Golub & LeVeque 1983, "Algorithms for computing the
//! sample variance", The American Statistician 37(3), the shifted-data algorithm), and merges
//! by plain addition. NaN counts as null.

use polars_arrow::bitmap::Bitmap;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::stats::binned::BinLookup;
use crate::stats::exact::ExactSum;

/// What a numeric column is binned against.
#[derive(Debug, Clone)]
pub struct NumericPlan {
    /// The baseline's quantile edges.
    pub edges: Vec<f64>,
    /// Shift for the power sums (the baseline mean).
    pub center: f64,
    /// The baseline's observed minimum.
    pub min: f64,
    /// The baseline's observed maximum.
    pub max: f64,
    /// Below this a value is far outside the pinned range, not just past its minimum.
    pub far_min: f64,
    /// Above this a value is far outside the pinned range.
    pub far_max: f64,
    /// A hard domain `[lo, hi]` from the policy: every value outside it is counted.
    pub domain: Option<(f64, f64)>,
    /// Constant-time bin search over `edges`.
    pub lookup: BinLookup,
}

impl NumericPlan {
    /// A plan over `edges`, centred at `center`, with the pinned range (no tolerance band
    /// and no hard domain: see [`Self::with_tolerance`] and [`Self::with_domain`]).
    #[must_use]
    pub fn new(edges: Vec<f64>, center: f64, min: f64, max: f64) -> Self {
        let lookup = BinLookup::new(&edges);
        Self {
            edges,
            center,
            min,
            max,
            far_min: min,
            far_max: max,
            domain: None,
            lookup,
        }
    }

    /// Values below `far_min` or above `far_max` count as far outside the pinned range.
    #[must_use]
    pub fn with_tolerance(mut self, far_min: f64, far_max: f64) -> Self {
        self.far_min = far_min.min(self.min);
        self.far_max = far_max.max(self.max);
        self
    }

    /// Counts every value outside `[lo, hi]`.
    #[must_use]
    pub fn with_domain(mut self, lo: f64, hi: f64) -> Self {
        self.domain = Some((lo, hi));
        self
    }
}

/// Mergeable summary of a numeric column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumericSummary {
    /// Non-null, non-NaN values.
    pub count: u64,
    /// Nulls and NaNs.
    pub nulls: u64,
    /// The shift `c` of the power sums.
    pub center: f64,
    /// `sum (x - c)`, exact across blocks and merges ([`ExactSum`]).
    pub sum: ExactSum,
    /// `sum (x - c)^2`.
    pub sum_sq: ExactSum,
    /// Smallest value (`+inf` when empty; `null` in JSON, which has no infinities).
    #[serde(serialize_with = "finite_or_null", deserialize_with = "min_or_empty")]
    pub min: f64,
    /// Largest value (`-inf` when empty; `null` in JSON).
    #[serde(serialize_with = "finite_or_null", deserialize_with = "max_or_empty")]
    pub max: f64,
    /// Counts over the pinned bins (`edges + 1`).
    pub bins: Vec<u64>,
    /// Sum of values in the lower open bin.
    pub lower_tail_sum: ExactSum,
    /// Sum of values in the upper open bin.
    pub upper_tail_sum: ExactSum,
    /// Values below the baseline's minimum.
    pub below_range: u64,
    /// Values above the baseline's maximum.
    pub above_range: u64,
    /// Values below the plan's `far_min`.
    #[serde(default)]
    pub far_below: u64,
    /// Values above the plan's `far_max`.
    #[serde(default)]
    pub far_above: u64,
    /// Values outside the plan's hard domain.
    #[serde(default)]
    pub outside_domain: u64,
}

/// A summary of a unit whose column is all null has `min = +inf` and `max = -inf` (the
/// identities of min and max); serde_json would write them as `null` and then refuse to read
/// them back, so they are written as `null` on purpose and read back as those identities.
#[allow(clippy::trivially_copy_pass_by_ref)] // serde's `serialize_with` signature
fn finite_or_null<S: serde::Serializer>(v: &f64, s: S) -> std::result::Result<S::Ok, S::Error> {
    if v.is_finite() {
        s.serialize_f64(*v)
    } else {
        s.serialize_none()
    }
}

fn min_or_empty<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
}

fn max_or_empty<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NEG_INFINITY))
}

/// The values of `block` whose bit is set in `mask` (bit `i` for `block[i]`).
#[inline]
fn masked<T>(block: &[T], mask: u64) -> impl Iterator<Item = &T> {
    block
        .iter()
        .enumerate()
        .filter(move |(i, _)| (mask >> i) & 1 == 1)
        .map(|(_, v)| v)
}

impl NumericSummary {
    /// An empty summary for `plan`.
    #[must_use]
    pub fn new(plan: &NumericPlan) -> Self {
        Self {
            count: 0,
            nulls: 0,
            center: plan.center,
            sum: ExactSum::new(),
            sum_sq: ExactSum::new(),
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            bins: vec![0; plan.edges.len() + 1],
            lower_tail_sum: ExactSum::new(),
            upper_tail_sum: ExactSum::new(),
            below_range: 0,
            above_range: 0,
            far_below: 0,
            far_above: 0,
            outside_domain: 0,
        }
    }

    /// Folds one chunk of values in, skipping the nulls marked in `validity`.
    pub fn update(&mut self, plan: &NumericPlan, values: &[f64], validity: Option<&Bitmap>) {
        self.update_with(plan, values, validity, |&x| x);
    }

    /// As [`Self::update`] for any primitive chunk, converted to `f64` on the fly (integer
    /// columns are not copied into a float array first).
    pub fn update_with<T>(
        &mut self,
        plan: &NumericPlan,
        values: &[T],
        validity: Option<&Bitmap>,
        to_f64: impl Fn(&T) -> f64,
    ) {
        match validity {
            Some(valid) if valid.unset_bits() > 0 => {
                self.nulls += valid.unset_bits() as u64;
                // 64 values per validity word: whole words of valid values take the plain
                // loop, the rest test one bit per value.
                let mut words = valid.fast_iter_u64();
                let mut start = 0usize;
                for mask in words.by_ref() {
                    let block = &values[start..start + 64];
                    if mask == u64::MAX {
                        self.fold(plan, block.iter().map(&to_f64));
                    } else {
                        self.fold(plan, masked(block, mask).map(&to_f64));
                    }
                    start += 64;
                }
                // Up to 127 trailing values, described by two more words.
                let ([low, high], left) = words.remainder();
                let tail = &values[start..start + left];
                let (first, second) = tail.split_at(left.min(64));
                self.fold(
                    plan,
                    masked(first, low).chain(masked(second, high)).map(&to_f64),
                );
            }
            _ => self.fold(plan, values.iter().map(to_f64)),
        }
    }

    /// The hot loop: one pass, no allocation, rare branches only for NaN and the tail bins.
    #[inline]
    fn fold(&mut self, plan: &NumericPlan, values: impl Iterator<Item = f64>) {
        let last = plan.edges.len();
        let c = self.center;
        let (mut n, mut nan, mut s1, mut s2) = (0u64, 0u64, 0.0f64, 0.0f64);
        let (mut t_lo, mut t_hi) = (0.0f64, 0.0f64);
        let (mut lo, mut hi) = (self.min, self.max);
        let (dlo, dhi) = plan.domain.unwrap_or((f64::NEG_INFINITY, f64::INFINITY));
        let hard = plan.domain.is_some();
        for x in values {
            if x.is_nan() {
                nan += 1;
                continue;
            }
            n += 1;
            let d = x - c;
            s1 += d;
            s2 += d * d;
            // Plain compares (x is not NaN here): `f64::min` pays for NaN semantics.
            lo = if x < lo { x } else { lo };
            hi = if x > hi { x } else { hi };
            let b = plan.lookup.index(x);
            self.bins[b] += 1;
            // Values outside the pinned range can only sit in the open tail bins.
            if b == 0 || b == last {
                if b == 0 {
                    t_lo += x;
                } else {
                    t_hi += x;
                }
                self.below_range += u64::from(x < plan.min);
                self.above_range += u64::from(x > plan.max);
                self.far_below += u64::from(x < plan.far_min);
                self.far_above += u64::from(x > plan.far_max);
            }
            if hard {
                self.outside_domain += u64::from(x < dlo || x > dhi);
            }
        }
        self.count += n;
        self.nulls += nan;
        // One exact step per block of values: the block's own sum is a deterministic function
        // of the block, and adding it exactly makes the total independent of how blocks are
        // grouped into chunks, shards and merges.
        if n > 0 {
            self.sum.add(s1);
            self.sum_sq.add(s2);
        }
        if t_lo != 0.0 {
            self.lower_tail_sum.add(t_lo);
        }
        if t_hi != 0.0 {
            self.upper_tail_sum.add(t_hi);
        }
        self.min = lo;
        self.max = hi;
    }

    /// Adds another partial summary of the same plan.
    ///
    /// # Errors
    /// Summaries over different bins or centres.
    pub fn merge(&mut self, o: &Self) -> Result<()> {
        if o.bins.len() != self.bins.len() || o.center.to_bits() != self.center.to_bits() {
            return Err(Error::Internal(
                "merging numeric summaries of different plans".into(),
            ));
        }
        self.count += o.count;
        self.nulls += o.nulls;
        self.sum.merge(&o.sum);
        self.sum_sq.merge(&o.sum_sq);
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        for (a, b) in self.bins.iter_mut().zip(&o.bins) {
            *a += b;
        }
        self.lower_tail_sum.merge(&o.lower_tail_sum);
        self.upper_tail_sum.merge(&o.upper_tail_sum);
        self.below_range += o.below_range;
        self.above_range += o.above_range;
        self.far_below += o.far_below;
        self.far_above += o.far_above;
        self.outside_domain += o.outside_domain;
        Ok(())
    }

    /// Sample mean.
    #[must_use]
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            f64::NAN
        } else {
            self.center + self.sum.value() / self.count as f64
        }
    }

    /// Sample standard deviation (`n - 1` denominator).
    #[must_use]
    pub fn std(&self) -> f64 {
        if self.count < 2 {
            return f64::NAN;
        }
        let n = self.count as f64;
        let (s1, s2) = (self.sum.value(), self.sum_sq.value());
        ((s2 - s1 * s1 / n) / (n - 1.0)).max(0.0).sqrt()
    }

    /// Mean of the values in the lower open bin.
    #[must_use]
    pub fn lower_tail_mean(&self) -> f64 {
        self.lower_tail_sum.value() / self.bins[0] as f64
    }

    /// Mean of the values in the upper open bin.
    #[must_use]
    pub fn upper_tail_mean(&self) -> f64 {
        self.upper_tail_sum.value() / self.bins[self.bins.len() - 1] as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_summary_survives_json() {
        let plan = NumericPlan::new(vec![1.0, 2.0], 1.5, 0.0, 3.0);
        let empty = NumericSummary::new(&plan);
        let text = serde_json::to_string(&empty).unwrap();
        assert!(
            text.contains("\"min\":null") && text.contains("\"max\":null"),
            "{text}"
        );
        let back: NumericSummary = serde_json::from_str(&text).unwrap();
        assert_eq!(back.min, f64::INFINITY);
        assert_eq!(back.max, f64::NEG_INFINITY);
        let mut full = NumericSummary::new(&plan);
        full.update(&plan, &[0.5, 2.5], None);
        let back: NumericSummary =
            serde_json::from_str(&serde_json::to_string(&full).unwrap()).unwrap();
        assert_eq!((back.min, back.max), (0.5, 2.5));
    }

    fn plan() -> NumericPlan {
        NumericPlan::new(vec![1.0, 2.0, 3.0], 2.0, 0.5, 3.5)
    }

    #[test]
    fn merged_halves_equal_the_whole() {
        let p = plan();
        let values: Vec<f64> = (0..1000).map(|i| f64::from(i) / 250.0).collect();
        let mut whole = NumericSummary::new(&p);
        whole.update(&p, &values, None);
        let mut a = NumericSummary::new(&p);
        a.update(&p, &values[..400], None);
        let mut b = NumericSummary::new(&p);
        b.update(&p, &values[400..], None);
        a.merge(&b).unwrap();
        assert_eq!(a.bins, whole.bins);
        assert_eq!(a.count, whole.count);
        assert_eq!(
            (a.below_range, a.above_range),
            (whole.below_range, whole.above_range)
        );
        assert!((a.std() - whole.std()).abs() < 1e-12);
        assert!((a.mean() - whole.mean()).abs() < 1e-12);
    }

    #[test]
    fn validity_masks_skip_exactly_the_nulls() {
        // 200 values (three full words and a remainder), every seventh null.
        let p = plan();
        let values: Vec<f64> = (0..200).map(|i| f64::from(i) / 50.0).collect();
        let valid: Bitmap = (0..200).map(|i| i % 7 != 0).collect();
        let mut s = NumericSummary::new(&p);
        s.update(&p, &values, Some(&valid));
        let kept: Vec<f64> = values
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 7 != 0)
            .map(|(_, v)| *v)
            .collect();
        let mut want = NumericSummary::new(&p);
        want.update(&p, &kept, None);
        assert_eq!(
            (s.count, s.nulls),
            (kept.len() as u64, 200 - kept.len() as u64)
        );
        assert_eq!(s.bins, want.bins);
        assert!((s.sum.value() - want.sum.value()).abs() < 1e-9);
    }

    #[test]
    fn nan_counts_as_null_and_ranges_are_counted() {
        let p = plan();
        let mut s = NumericSummary::new(&p);
        s.update(&p, &[f64::NAN, 0.0, 4.0, 2.0], None);
        assert_eq!(
            (s.count, s.nulls, s.below_range, s.above_range),
            (3, 1, 1, 1)
        );
        assert_eq!(s.bins, vec![1, 1, 0, 1]);
    }
}
