//! An exact sum of `f64` values in constant time per value: a long fixed-point accumulator
//! (Kulisch & Miranker 1981), held in chunks of 32 binary exponents with room for carries,
//! as in Neal's "large superaccumulator" (Neal 2015, "Fast exact summation using small and
//! large superaccumulators", arXiv:1505.05571). Adding a value is a shift and one 128-bit
//! addition; the sum converts to an [`ExactSum`] (the same exact value) only when it is read.
//! Where [`ExactSum`] loops over its partials for every value, this does not, which matters
//! when every value of a large column is summed.

use super::exact::ExactSum;

/// Chunks of 32 exponents covering every finite `f64` (biased exponents 1..=2046 and the
/// subnormals, 53-bit mantissas).
const CHUNKS: usize = 67;
/// Additions after which carries are propagated: each adds less than 2^85 in magnitude to a
/// chunk, so 2^40 of them stay far inside an `i128`.
const NORMALISE_EVERY: u64 = 1 << 40;

/// An exact running sum of `f64` values (see the module documentation).
#[derive(Debug, Clone)]
pub struct LongSum {
    chunks: Box<[i128; CHUNKS]>,
    /// The naive sum of non-finite values, which have no exact form.
    special: f64,
    nonfinite: bool,
    adds: u64,
}

impl Default for LongSum {
    fn default() -> Self {
        Self {
            chunks: Box::new([0; CHUNKS]),
            special: 0.0,
            nonfinite: false,
            adds: 0,
        }
    }
}

/// `2^k` for `k` in the normal range.
fn pow2(k: i32) -> f64 {
    debug_assert!((-1022..=1023).contains(&k));
    f64::from_bits(((k + 1023) as u64) << 52)
}

/// `x * 2^e`, exact whenever the result is representable (two power-of-two steps, each within
/// the normal range).
fn scale(x: f64, e: i32) -> f64 {
    let half = e / 2;
    x * pow2(half) * pow2(e - half)
}

impl LongSum {
    /// Adds `x` exactly.
    #[inline]
    pub fn add(&mut self, x: f64) {
        if !x.is_finite() {
            self.special += x;
            self.nonfinite = true;
            return;
        }
        let bits = x.to_bits();
        let biased = ((bits >> 52) & 0x7ff) as usize;
        let frac = bits & ((1 << 52) - 1);
        // x = m * 2^(pos - 1074), pos = max(biased, 1) - 1.
        let (m, pos) = if biased == 0 {
            (frac, 0)
        } else {
            (frac | (1 << 52), biased - 1)
        };
        if m == 0 {
            return;
        }
        let v = i128::from(m) << (pos % 32);
        let c = &mut self.chunks[pos / 32];
        if bits >> 63 == 1 {
            *c -= v;
        } else {
            *c += v;
        }
        self.adds += 1;
        if self.adds >= NORMALISE_EVERY {
            self.normalise();
        }
    }

    /// Propagates carries so that every chunk but the last holds under 32 bits of magnitude.
    /// The carry truncates toward zero, so a chunk keeps its sign and a small negative chunk
    /// does not turn into a chain of borrows up to the top of the range (whose pieces would
    /// not fit in an `f64`).
    fn normalise(&mut self) {
        for i in 0..CHUNKS - 1 {
            let carry = self.chunks[i] / (1i128 << 32);
            self.chunks[i] -= carry << 32;
            self.chunks[i + 1] += carry;
        }
        self.adds = 0;
    }

    /// Adds every value `other` holds: the result is exactly the sum of both.
    pub fn merge(&mut self, other: &Self) {
        if self.adds + other.adds >= NORMALISE_EVERY {
            self.normalise();
        }
        for (a, b) in self.chunks.iter_mut().zip(other.chunks.iter()) {
            *a += b;
        }
        self.adds += other.adds.max(1);
        if other.nonfinite {
            self.special += other.special;
            self.nonfinite = true;
        }
    }

    /// The same exact sum as an [`ExactSum`].
    #[must_use]
    pub fn to_exact(&self) -> ExactSum {
        let mut out = ExactSum::new();
        for (i, &c) in self.chunks.iter().enumerate() {
            if c == 0 {
                continue;
            }
            // |c| = a * 2^96 + b * 2^48 + d with 0 <= a, b, d < 2^48 (sign and magnitude, so
            // no piece is larger than the chunk): each piece is exact in f64.
            let mask = (1u128 << 48) - 1;
            let u = c.unsigned_abs();
            let sign = if c < 0 { -1.0 } else { 1.0 };
            let base = 32 * i as i32 - 1074;
            for (piece, shift) in [(u & mask, 0), ((u >> 48) & mask, 48), (u >> 96, 96)] {
                if piece != 0 {
                    out.add(sign * scale(piece as f64, base + shift));
                }
            }
        }
        if self.nonfinite {
            out.add(self.special);
        }
        out
    }

    /// A sum holding the exact value of `s`.
    #[must_use]
    pub fn from_exact(s: &ExactSum) -> Self {
        let mut out = Self::default();
        if !s.value().is_finite() {
            out.add(s.value());
            return out;
        }
        for p in s.canonical() {
            out.add(p);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn values(seed: u64, n: usize) -> Vec<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|i| {
                let m: f64 = rng.random::<f64>() - 0.5;
                match i % 7 {
                    0 => m * 1e300,
                    1 => m * 1e-300,
                    2 => m * f64::MIN_POSITIVE * 1e-10,
                    // Near the top of the range (thousands of them stay finite).
                    3 => f64::MAX * 1e-8 * m,
                    _ => m * 10f64.powi(rng.random_range(-20..20)),
                }
            })
            .collect()
    }

    #[test]
    fn equals_the_partials_sum_on_every_magnitude() {
        for seed in 0..20 {
            let v = values(seed, 2_000);
            let mut long = LongSum::default();
            let mut exact = ExactSum::new();
            for &x in &v {
                long.add(x);
                exact.add(x);
            }
            assert_eq!(long.to_exact(), exact, "seed {seed}");
            assert_eq!(long.to_exact().value().to_bits(), exact.value().to_bits());
            // Split and merged, and through an exact sum and back.
            let (mut a, mut b) = (LongSum::default(), LongSum::default());
            for (i, &x) in v.iter().enumerate() {
                if i % 3 == 0 { a.add(x) } else { b.add(x) }
            }
            b.normalise();
            a.merge(&LongSum::from_exact(&b.to_exact()));
            assert_eq!(a.to_exact(), exact, "seed {seed}, merged");
        }
    }

    #[test]
    fn cancellation_and_specials_are_exact() {
        let mut s = LongSum::default();
        for x in [1e308, 1.0, -1e308, 1e-320, -1e-320, 3.0] {
            s.add(x);
        }
        assert_eq!(s.to_exact().value(), 4.0);
        s.add(f64::INFINITY);
        assert_eq!(s.to_exact().value(), f64::INFINITY);
    }
}
