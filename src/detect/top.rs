//! The rows a detector would list behind a finding, kept in the pass without keeping every
//! row: a bounded, mergeable top-k of (score, batch row).

use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Rows a [`TopRows`] keeps: enough for the rows behind any finding of a batch of millions of
/// rows (a finding lists at most its estimated excess), at 16 bytes a row (1 MiB).
pub const TOP_ROWS: usize = 65_536;

/// The [`TOP_ROWS`] highest-scoring rows offered, by score (highest first) then batch row
/// (lowest first), and how many rows were offered. The order is total, so the top-k of a
/// union is the top-k of the parts' top-k: merging is exact, commutative and associative,
/// and the kept rows are the same for every split of the batch. Rows are numbered from the
/// start of the rows the state covers; [`TopRows::shift`] renumbers them when states of
/// consecutive row ranges are put together.
#[derive(Debug, Clone, Default)]
pub struct TopRows {
    /// Rows offered.
    pub seen: u64,
    /// Kept rows as (score, row), in no order until [`TopRows::best`].
    rows: Vec<(f64, u64)>,
}

fn order(a: &(f64, u64), b: &(f64, u64)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

impl TopRows {
    /// Offers one row.
    pub fn offer(&mut self, score: f64, row: u64) {
        self.seen += 1;
        self.rows.push((score, row));
        self.trim(false);
    }

    /// Keeps the [`TOP_ROWS`] best once twice as many are held (amortised linear time), or
    /// always with `exact`.
    fn trim(&mut self, exact: bool) {
        if self.rows.len() > 2 * TOP_ROWS || (exact && self.rows.len() > TOP_ROWS) {
            self.rows.select_nth_unstable_by(TOP_ROWS, order);
            self.rows.truncate(TOP_ROWS);
        }
    }

    /// Adds the rows of another state.
    pub fn merge(&mut self, other: Self) {
        self.seen += other.seen;
        self.rows.extend(other.rows);
        self.trim(false);
    }

    /// Renumbers the rows: they follow `by` earlier rows.
    pub fn shift(&mut self, by: u64) {
        for r in &mut self.rows {
            r.1 += by;
        }
    }

    /// Whether every offered row is kept.
    #[must_use]
    pub fn complete(&self) -> bool {
        self.seen <= TOP_ROWS as u64
    }

    /// The `k` best rows in order (at most the kept ones), or `None` when more are asked for
    /// than were kept while more were offered.
    #[must_use]
    pub fn best(&self, k: usize) -> Option<Vec<(f64, u64)>> {
        let want = k.min(usize::try_from(self.seen).unwrap_or(usize::MAX));
        // Past the cap only the cap's worth is known.
        if want > TOP_ROWS {
            return None;
        }
        let mut all = self.rows.clone();
        all.sort_unstable_by(order);
        all.truncate(want);
        Some(all)
    }

    fn canonical(&self) -> Vec<(f64, u64)> {
        let mut all = self.rows.clone();
        all.sort_unstable_by(order);
        all.truncate(TOP_ROWS);
        all
    }
}

impl PartialEq for TopRows {
    fn eq(&self, other: &Self) -> bool {
        self.seen == other.seen
            && self
                .canonical()
                .iter()
                .map(|(s, r)| (s.to_bits(), *r))
                .eq(other.canonical().iter().map(|(s, r)| (s.to_bits(), *r)))
    }
}

/// The serialised form: rows offered, and the kept rows in order, packed as little-endian
/// (score bits, row) pairs in base64.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Packed {
    seen: u64,
    rows: String,
}

impl Serialize for TopRows {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::new();
        for (score, row) in self.canonical() {
            bytes.extend_from_slice(&score.to_bits().to_le_bytes());
            bytes.extend_from_slice(&row.to_le_bytes());
        }
        Packed {
            seen: self.seen,
            rows: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for TopRows {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let p = Packed::deserialize(d)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(p.rows)
            .map_err(|e| D::Error::custom(format!("top rows: {e}")))?;
        if bytes.len() % 16 != 0 || bytes.len() / 16 > TOP_ROWS {
            return Err(D::Error::custom("top rows: bad length"));
        }
        let word = |b: &[u8]| {
            let mut w = [0u8; 8];
            w.copy_from_slice(b);
            u64::from_le_bytes(w)
        };
        let rows: Vec<(f64, u64)> = bytes
            .chunks_exact(16)
            .map(|c| (f64::from_bits(word(&c[..8])), word(&c[8..])))
            .collect();
        if (rows.len() as u64) > p.seen || rows.iter().any(|r| r.0.is_nan()) {
            return Err(D::Error::custom(
                "top rows: more rows than offered, or a NaN score",
            ));
        }
        Ok(Self { seen: p.seen, rows })
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    #[test]
    fn top_rows_are_the_same_for_any_split_and_merge_order() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        // Many ties: scores from a small set.
        let all: Vec<f64> = (0..3 * TOP_ROWS + 11)
            .map(|_| f64::from(rng.random_range(0..500u32)) / 500.0)
            .collect();
        let mut one = TopRows::default();
        for (i, &s) in all.iter().enumerate() {
            one.offer(s, i as u64);
        }
        let want = one.best(TOP_ROWS).unwrap();
        assert_eq!(want.len(), TOP_ROWS);
        let mut naive: Vec<(f64, u64)> = all
            .iter()
            .enumerate()
            .map(|(i, &s)| (s, i as u64))
            .collect();
        naive.sort_by(order);
        naive.truncate(TOP_ROWS);
        assert_eq!(want, naive);
        for _ in 0..4 {
            let mut cuts: Vec<usize> = (0..rng.random_range(0..16))
                .map(|_| rng.random_range(0..=all.len()))
                .collect();
            cuts.extend([0, all.len()]);
            cuts.sort_unstable();
            // Each part numbers its rows from 0 and is shifted to its place.
            let mut pool: Vec<TopRows> = cuts
                .windows(2)
                .map(|w| {
                    let mut t = TopRows::default();
                    for (i, &s) in all[w[0]..w[1]].iter().enumerate() {
                        t.offer(s, i as u64);
                    }
                    t.shift(w[0] as u64);
                    t
                })
                .collect();
            while pool.len() > 1 {
                let a = pool.swap_remove(rng.random_range(0..pool.len()));
                let i = rng.random_range(0..pool.len());
                pool[i].merge(a);
            }
            let got = pool.pop().unwrap();
            assert_eq!(got, one);
            let json = serde_json::to_string(&got).unwrap();
            assert_eq!(json, serde_json::to_string(&one).unwrap());
            let back: TopRows = serde_json::from_str(&json).unwrap();
            assert_eq!(back, one);
        }
        // Asking for more than were kept, of more than were offered, is refused.
        assert!(one.best(TOP_ROWS + 1).is_none());
        assert_eq!(one.best(10).unwrap(), naive[..10].to_vec());
    }
}
