//! Exact floating-point summation, so that merged summaries do not depend on how a batch was
//! split or in which order its parts were combined.
//!
//! The sum is held as a list of non-overlapping partials whose exact (real) total is the sum of
//! every value added, and is rounded once, correctly, when read: Shewchuk's adaptive-precision
//! addition (J. R. Shewchuk 1997, "Adaptive Precision Floating-Point Arithmetic and Fast Robust
//! Geometric Predicates", Discrete & Computational Geometry 18, the grow-expansion algorithm)
//! with the final round-half-even correction of CPython's `math.fsum` (R. Hettinger's recipe,
//! `Modules/mathmodule.c`). Because the rounded value is a function of the exact sum alone, it
//! is the same whatever the order of the additions and merges.
//!
//! Values are added at block granularity (one partial sum per block of at most a few thousand
//! values), so the cost is one expansion step per block, not per value.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Most partials kept before the expansion is compacted (it rarely exceeds a handful).
const COMPACT_AT: usize = 64;

/// An exact running sum of `f64` values.
#[derive(Debug, Clone, Default)]
pub struct ExactSum {
    /// Non-overlapping partials, increasing in magnitude.
    partials: Vec<f64>,
    /// The naive sum of non-finite values (infinities and NaN), which have no exact form.
    special: f64,
    /// Whether a non-finite value, or an overflow, was seen.
    nonfinite: bool,
}

impl ExactSum {
    /// An empty sum (zero).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `x` exactly.
    pub fn add(&mut self, x: f64) {
        if !x.is_finite() {
            self.special += x;
            self.nonfinite = true;
            return;
        }
        let mut x = x;
        let mut i = 0;
        for j in 0..self.partials.len() {
            let mut y = self.partials[j];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            let lo = y - (hi - x);
            if lo != 0.0 {
                self.partials[i] = lo;
                i += 1;
            }
            x = hi;
        }
        if !x.is_finite() {
            // The exact sum left the range of f64: it is +-inf, whatever the partials hold.
            self.special += x;
            self.nonfinite = true;
            self.partials.clear();
            return;
        }
        self.partials.truncate(i);
        // As in CPython's msum: a zero partial is dropped, which keeps the final rounding's
        // look at the next partial correct.
        if x != 0.0 {
            self.partials.push(x);
        }
        if self.partials.len() > COMPACT_AT {
            *self = Self::from_parts(&self.canonical(), self.special, self.nonfinite);
        }
    }

    /// Adds every partial of `other`: the result is exactly the sum of both.
    pub fn merge(&mut self, other: &Self) {
        for &p in &other.partials {
            self.add(p);
        }
        if other.nonfinite {
            self.special += other.special;
            self.nonfinite = true;
        }
    }

    /// The exact sum, correctly rounded to the nearest `f64` (ties to even).
    #[must_use]
    pub fn value(&self) -> f64 {
        if self.nonfinite {
            return self.special + self.partials.iter().sum::<f64>();
        }
        let p = &self.partials;
        let Some(&last) = p.last() else {
            return 0.0;
        };
        let mut n = p.len() - 1;
        let mut hi = last;
        let mut lo = 0.0;
        while n > 0 {
            let x = hi;
            n -= 1;
            let y = p[n];
            hi = x + y;
            let yr = hi - x;
            lo = y - yr;
            if lo != 0.0 {
                break;
            }
        }
        // Round half to even: when the remainder is exactly half an ulp and the partials below
        // push the same way, the naive rounding went the wrong way.
        if n > 0 && ((lo < 0.0 && p[n - 1] < 0.0) || (lo > 0.0 && p[n - 1] > 0.0)) {
            let y = lo * 2.0;
            let x = hi + y;
            let yr = x - hi;
            if y == yr {
                hi = x;
            }
        }
        hi
    }

    /// A canonical expansion of the same exact sum: the rounded value, then the rounded
    /// remainder, and so on. Two sums with the same exact value have the same canonical form,
    /// whatever their partials, so serialised summaries are byte-identical across merge orders.
    #[must_use]
    pub fn canonical(&self) -> Vec<f64> {
        let mut rest = Self {
            partials: self.partials.clone(),
            special: 0.0,
            nonfinite: false,
        };
        let mut out = Vec::new();
        // Each step removes at least 53 bits of the exact sum; 40 steps cover the whole
        // exponent range of f64.
        for _ in 0..40 {
            if rest.partials.is_empty() {
                break;
            }
            let v = rest.value();
            out.push(v);
            rest.add(-v);
        }
        out
    }

    fn from_parts(parts: &[f64], special: f64, nonfinite: bool) -> Self {
        let mut s = Self {
            partials: Vec::with_capacity(parts.len()),
            special,
            nonfinite,
        };
        for &p in parts {
            s.add(p);
        }
        s
    }
}

impl PartialEq for ExactSum {
    fn eq(&self, other: &Self) -> bool {
        self.nonfinite == other.nonfinite
            && (!self.nonfinite || self.special.to_bits() == other.special.to_bits())
            && self.canonical() == other.canonical()
    }
}

/// Serialised as its canonical expansion (finite sums) or as the one non-finite value.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Wire {
    Parts(Vec<f64>),
    Special(String),
}

impl Serialize for ExactSum {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.nonfinite {
            Wire::Special(format!("{}", self.value())).serialize(s)
        } else {
            Wire::Parts(self.canonical()).serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for ExactSum {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Wire::deserialize(d)? {
            Wire::Parts(parts) => {
                if parts.iter().any(|p| !p.is_finite()) {
                    return Err(serde::de::Error::custom("non-finite partial"));
                }
                Ok(Self::from_parts(&parts, 0.0, false))
            }
            Wire::Special(text) => {
                let v: f64 = match text.as_str() {
                    "inf" => f64::INFINITY,
                    "-inf" => f64::NEG_INFINITY,
                    "NaN" => f64::NAN,
                    _ => return Err(serde::de::Error::custom("unknown special sum")),
                };
                Ok(Self {
                    partials: Vec::new(),
                    special: v,
                    nonfinite: true,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(values: &[f64]) -> f64 {
        let mut s = ExactSum::new();
        values.iter().for_each(|&v| s.add(v));
        s.value()
    }

    #[test]
    fn cancellation_is_exact() {
        assert_eq!(
            sum(&[1e100, 1.0, -1e100, 1e-100, 1e50, -1.0, -1e50]),
            1e-100
        );
        assert_eq!(sum(&[0.1; 10]), 1.0);
        assert_eq!(sum(&[]), 0.0);
        // Half-way case: 1 + 2^-53 + 2^-106 rounds up, 1 + 2^-53 alone to even (down).
        let h = 2f64.powi(-53);
        assert_eq!(sum(&[1.0, h]), 1.0);
        assert_eq!(sum(&[1.0, h, h * h]), 1.0 + 2.0 * h);
    }

    #[test]
    fn order_and_merge_tree_do_not_matter() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state = crate::rows::mix(state.wrapping_add(0x9e37_79b9_7f4a_7c15));
            state
        };
        let values: Vec<f64> = (0..2000)
            .map(|_| {
                let m = (next() >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
                m * 10f64.powi((next() % 40) as i32 - 20)
            })
            .collect();
        let whole = sum(&values);
        let mut rev = values.clone();
        rev.reverse();
        assert_eq!(whole.to_bits(), sum(&rev).to_bits());
        // Parts summed separately, then merged in a different order.
        let parts: Vec<ExactSum> = values
            .chunks(97)
            .map(|c| {
                let mut s = ExactSum::new();
                c.iter().for_each(|&v| s.add(v));
                s
            })
            .collect();
        let mut merged = ExactSum::new();
        for p in parts.iter().rev() {
            merged.merge(p);
        }
        assert_eq!(whole.to_bits(), merged.value().to_bits());
        let wire = serde_json::to_string(&merged).unwrap();
        let mut forward = ExactSum::new();
        for p in &parts {
            forward.merge(p);
        }
        assert_eq!(wire, serde_json::to_string(&forward).unwrap());
        let back: ExactSum = serde_json::from_str(&wire).unwrap();
        assert_eq!(back, merged);
    }

    /// Against CPython's `math.fsum` (`scripts/reference_fsum.py`).
    #[test]
    fn matches_python_fsum() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/reference/fsum.json");
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let cases = doc["cases"].as_array().unwrap();
        assert!(cases.len() >= 8);
        for (i, c) in cases.iter().enumerate() {
            let values: Vec<f64> = c["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let want = c["fsum"].as_f64().unwrap();
            assert_eq!(sum(&values).to_bits(), want.to_bits(), "case {i}");
        }
    }

    #[test]
    fn non_finite_values_propagate() {
        assert_eq!(sum(&[1.0, f64::INFINITY]), f64::INFINITY);
        assert!(sum(&[f64::INFINITY, f64::NEG_INFINITY]).is_nan());
        assert_eq!(sum(&[f64::MAX, f64::MAX]), f64::INFINITY);
        let mut s = ExactSum::new();
        s.add(f64::NEG_INFINITY);
        let back: ExactSum = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back.value(), f64::NEG_INFINITY);
    }
}
