//! Categorical column summary: exact counts per value.
//!
//! Values of the pinned domain are always counted exactly. Values outside it are counted
//! exactly up to [`MAX_UNSEEN_DISTINCT`] distinct values: the summary keeps the smallest
//! values (in byte order) and adds the rows of the rest to `overflow`, so that an
//! identifier-like column cannot exhaust memory. Keeping the `k` smallest values is a
//! bottom-k sample on a total order, which merges exactly: a value among the `k` smallest of
//! the whole batch is among the `k` smallest of every part that holds it, so no part ever
//! drops it and its count is exact, and every other value ends in `overflow`. A batch cut into
//! any blocks or shards therefore gives the same summary, and the cap holds for the batch, not
//! per block.

use std::collections::{BTreeMap, HashSet};

use polars_arrow::array::{Array, Utf8ViewArray, View};
use polars_arrow::bitmap::Bitmap;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Distinct values outside the pinned domain tracked one by one.
pub const MAX_UNSEEN_DISTINCT: usize = 100_000;

/// What a categorical column is counted against.
#[derive(Debug, Clone, Default)]
pub struct CategoricalPlan {
    /// The baseline's domain (possibly capped).
    pub domain: HashSet<String>,
    /// Whether to cap distinct values outside `domain` (off when profiling).
    pub cap_unseen: bool,
}

/// Mergeable summary of a categorical column.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CategoricalSummary {
    /// Non-null values.
    pub count: u64,
    /// Nulls.
    pub nulls: u64,
    /// Count per value of the pinned domain (per value, when there is no cap: `profile`).
    pub counts: BTreeMap<String, u64>,
    /// Count per value outside the domain, under the cap: the [`MAX_UNSEEN_DISTINCT`]
    /// smallest such values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unseen: BTreeMap<String, u64>,
    /// Rows whose value is outside the domain and past the distinct cap.
    pub overflow: u64,
}

impl CategoricalSummary {
    /// Folds one chunk in.
    ///
    /// Strings of up to 12 bytes live inline in their 16-byte Arrow view, zero padded, so the
    /// view itself is the key: counting hashes one `u128` per row instead of a string. Longer
    /// strings are counted by their text.
    pub fn update(&mut self, plan: &CategoricalPlan, arr: &Utf8ViewArray) {
        // (count, index of one occurrence, to recover the text once per distinct value)
        let mut short: foldhash::HashMap<u128, (u64, usize)> = foldhash::HashMap::default();
        let mut long: foldhash::HashMap<&str, u64> = foldhash::HashMap::default();
        let views = arr.views();
        let mut visit = |i: usize| {
            let view = views[i];
            if view.length <= View::MAX_INLINE_SIZE {
                short.entry(view.as_u128()).or_insert((0, i)).0 += 1;
            } else {
                *long.entry(arr.value(i)).or_insert(0) += 1;
            }
        };
        match arr.validity() {
            Some(valid) if valid.unset_bits() > 0 => {
                self.nulls += valid.unset_bits() as u64;
                valid
                    .iter()
                    .enumerate()
                    .filter(|(_, ok)| *ok)
                    .for_each(|(i, _)| visit(i));
            }
            _ => (0..views.len()).for_each(visit),
        }
        let named = short.into_values().map(|(n, i)| (arr.value(i), n));
        self.add_counts(plan, named.chain(long));
    }

    /// Folds one chunk of an integer-typed column in; values are named by their decimal text,
    /// exactly as a cast to strings would name them.
    pub fn update_ints(
        &mut self,
        plan: &CategoricalPlan,
        values: &[i64],
        validity: Option<&Bitmap>,
    ) {
        let mut local: foldhash::HashMap<i64, u64> = foldhash::HashMap::default();
        match validity {
            Some(valid) if valid.unset_bits() > 0 => {
                self.nulls += valid.unset_bits() as u64;
                for (v, _) in values.iter().zip(valid.iter()).filter(|(_, ok)| *ok) {
                    *local.entry(*v).or_insert(0) += 1;
                }
            }
            _ => {
                for v in values {
                    *local.entry(*v).or_insert(0) += 1;
                }
            }
        }
        let named: Vec<(String, u64)> =
            local.into_iter().map(|(v, n)| (v.to_string(), n)).collect();
        self.add_counts(plan, named.iter().map(|(v, n)| (v.as_str(), *n)));
    }

    /// Adds per-value counts.
    fn add_counts<'a>(
        &mut self,
        plan: &CategoricalPlan,
        counts: impl Iterator<Item = (&'a str, u64)>,
    ) {
        for (value, n) in counts {
            self.count += n;
            let map = if !plan.cap_unseen || plan.domain.contains(value) {
                &mut self.counts
            } else {
                &mut self.unseen
            };
            match map.get_mut(value) {
                Some(c) => *c += n,
                None => {
                    map.insert(value.to_owned(), n);
                }
            }
        }
        self.trim();
    }

    /// Keeps the [`MAX_UNSEEN_DISTINCT`] smallest values outside the domain; the rows of the
    /// others go to `overflow`.
    fn trim(&mut self) {
        while self.unseen.len() > MAX_UNSEEN_DISTINCT {
            if let Some((_, n)) = self.unseen.pop_last() {
                self.overflow += n;
            }
        }
    }

    /// The rows holding `value`.
    #[must_use]
    pub fn get(&self, value: &str) -> u64 {
        self.counts
            .get(value)
            .or_else(|| self.unseen.get(value))
            .copied()
            .unwrap_or(0)
    }

    /// Every value counted one by one with its rows: the domain's, then the tracked values
    /// outside it (the two never share a value).
    pub fn values(&self) -> impl Iterator<Item = (&String, u64)> {
        self.counts.iter().chain(&self.unseen).map(|(v, &n)| (v, n))
    }

    /// Adds another partial summary.
    ///
    /// # Errors
    /// Never at present; kept fallible like the other merges.
    ///
    /// Merging is exact (see the module's note on the distinct cap).
    pub fn merge(&mut self, o: &Self) -> Result<()> {
        self.count += o.count;
        self.nulls += o.nulls;
        self.overflow += o.overflow;
        for (k, v) in &o.counts {
            *self.counts.entry(k.clone()).or_insert(0) += v;
        }
        for (k, v) in &o.unseen {
            *self.unseen.entry(k.clone()).or_insert(0) += v;
        }
        self.trim();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn array(values: &[Option<&str>]) -> Utf8ViewArray {
        Utf8ViewArray::from_slice(values)
    }

    #[test]
    fn short_and_long_values_are_counted_by_text() {
        let plan = CategoricalPlan::default();
        let long = "a value longer than twelve bytes";
        let mut s = CategoricalSummary::default();
        s.update(
            &plan,
            &array(&[
                Some("web"),
                Some(long),
                None,
                Some("web"),
                Some(long),
                Some(""),
            ]),
        );
        assert_eq!((s.count, s.nulls), (5, 1));
        assert_eq!(s.counts["web"], 2);
        assert_eq!(s.counts[long], 2);
        assert_eq!(s.counts[""], 1);
    }

    #[test]
    fn unseen_values_past_the_cap_overflow_but_domain_values_never_do() {
        let plan = CategoricalPlan {
            domain: ["kept".to_owned()].into_iter().collect(),
            cap_unseen: true,
        };
        let values: Vec<String> = (0..MAX_UNSEEN_DISTINCT + 10)
            .map(|i| format!("id{i}"))
            .collect();
        let mut arr: Vec<Option<&str>> = values.iter().map(|v| Some(v.as_str())).collect();
        arr.push(Some("kept"));
        let mut s = CategoricalSummary::default();
        s.update(&plan, &array(&arr));
        assert_eq!(s.count, arr.len() as u64);
        assert_eq!(s.counts["kept"], 1);
        assert_eq!(s.overflow, 10);
        assert_eq!(s.unseen.len(), MAX_UNSEEN_DISTINCT);
        // The smallest values are kept: "id99999" sorts after every "id1000xx".
        assert_eq!(s.get("id99999"), 0);
        assert_eq!(s.get("id0"), 1);
    }

    #[test]
    fn the_distinct_cap_holds_for_the_batch_and_any_split_gives_the_same_summary() {
        let plan = CategoricalPlan {
            domain: ["d1".to_owned(), "d2".to_owned()].into_iter().collect(),
            cap_unseen: true,
        };
        // 250,000 distinct unseen values (two rows each for a tenth of them) and domain rows.
        let values: Vec<String> = (0..275_000usize)
            .map(|i| match i % 11 {
                0 => "d1".to_owned(),
                1 => "d2".to_owned(),
                _ => format!("v{:06}", (i * 7919) % 250_000),
            })
            .collect();
        let rows: Vec<Option<&str>> = values.iter().map(|v| Some(v.as_str())).collect();
        let summarise = |cuts: &[usize]| {
            let mut total = CategoricalSummary::default();
            let mut from = 0;
            for &to in cuts.iter().chain(std::iter::once(&rows.len())) {
                let mut part = CategoricalSummary::default();
                part.update(&plan, &array(&rows[from..to]));
                total.merge(&part).unwrap();
                from = to;
            }
            total
        };
        let whole = summarise(&[]);
        assert_eq!(whole.unseen.len(), MAX_UNSEEN_DISTINCT);
        assert_eq!(whole.count, rows.len() as u64);
        assert_eq!(
            whole.values().map(|(_, n)| n).sum::<u64>() + whole.overflow,
            whole.count
        );
        assert_eq!(whole.get("d1") + whole.get("d2"), 50_000);
        for cuts in [
            &[1][..],
            &[65_536, 131_072, 196_608],
            &[137_000],
            &[10, 20, 270_000],
        ] {
            assert_eq!(summarise(cuts), whole, "cut at {cuts:?}");
        }
    }

    #[test]
    fn integer_values_are_named_like_a_string_cast() {
        let plan = CategoricalPlan::default();
        let mut s = CategoricalSummary::default();
        s.update_ints(&plan, &[0, 1, 1, -3], None);
        assert_eq!(s.counts["1"], 2);
        assert_eq!(s.counts["-3"], 1);
    }
}
