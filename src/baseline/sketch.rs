//! The bounded state of a numeric column with many values: a fixed grid of buckets over the
//! `f64` order, exact sums, and exact counts of its values while they are few (see
//! [`super::accumulate`] for where it is used and what it guarantees).

use serde::{Deserialize, Serialize};

use super::accumulate::{MAX_LABEL_IDS, NO_LABEL};
use super::types::{MeanStd, NumericProfile, ValueCount};
use crate::rows::value_key;
use crate::stats::exact::ExactSum;
use crate::stats::long_sum::LongSum;

/// Bits of a value's order-preserving key that name its bucket.
const BUCKET_BITS: u32 = 24;
/// The key of `x` whose unsigned order is the order of the values (−0 and 0 agree).
fn order_key(x: f64) -> u64 {
    let b = if x == 0.0 { 0 } else { x.to_bits() };
    if b >> 63 == 1 { !b } else { b | (1 << 63) }
}

/// The grid bucket of `x`.
fn bucket_of(x: f64) -> u32 {
    (order_key(x) >> (64 - BUCKET_BITS)) as u32
}

/// One bucket of a [`Sketch`].
#[derive(Debug, Clone, Copy)]
struct Bucket {
    count: u64,
    min: f64,
    max: f64,
}

/// Per label id: non-null values, their exact sum and the exact sum of their squares.
#[derive(Debug, Clone, Default)]
struct ClassSums {
    count: u64,
    sum: LongSum,
    squares: LongSum,
}

/// The bounded state of a numeric column past [`EXACT_VALUES`] values.
#[derive(Debug, Clone, Default)]
pub struct Sketch {
    pub(super) count: u64,
    buckets: foldhash::HashMap<u32, Bucket>,
    sum: LongSum,
    squares: LongSum,
    /// Count per value key while at most [`DISTINCT_VALUES`] distinct values were seen.
    distinct: Option<foldhash::HashMap<u64, (f64, u64)>>,
    /// Per label id.
    classes: Vec<ClassSums>,
}

impl Sketch {
    pub(super) fn new() -> Self {
        Self {
            distinct: Some(foldhash::HashMap::default()),
            ..Self::default()
        }
    }

    pub(super) fn add(&mut self, x: f64, label: Option<u32>, distinct: usize) {
        self.count += 1;
        let b = self.buckets.entry(bucket_of(x)).or_insert(Bucket {
            count: 0,
            min: x,
            max: x,
        });
        b.count += 1;
        if x.total_cmp(&b.min).is_lt() {
            b.min = x;
        }
        if x.total_cmp(&b.max).is_gt() {
            b.max = x;
        }
        self.sum.add(x);
        self.squares.add(x * x);
        if let Some(d) = &mut self.distinct {
            let key = value_key(x);
            let e = d.entry(key).or_insert((if x == 0.0 { 0.0 } else { x }, 0));
            e.1 += 1;
            if d.len() > distinct {
                self.distinct = None;
            }
        }
        if let Some(id) = label.filter(|&l| l != NO_LABEL) {
            let id = id as usize;
            if self.classes.len() <= id {
                self.classes.resize_with(id + 1, ClassSums::default);
            }
            let c = &mut self.classes[id];
            c.count += 1;
            c.sum.add(x);
            c.squares.add(x * x);
        }
    }

    // Counts add and extremes are kept per key: the order of the keys does not matter.
    #[allow(clippy::iter_over_hash_type)]
    pub(super) fn merge(&mut self, o: Self, distinct: usize) {
        self.count += o.count;
        for (k, b) in o.buckets {
            self.buckets
                .entry(k)
                .and_modify(|a| {
                    a.count += b.count;
                    if b.min.total_cmp(&a.min).is_lt() {
                        a.min = b.min;
                    }
                    if b.max.total_cmp(&a.max).is_gt() {
                        a.max = b.max;
                    }
                })
                .or_insert(b);
        }
        self.sum.merge(&o.sum);
        self.squares.merge(&o.squares);
        self.distinct = match (self.distinct.take(), o.distinct) {
            (Some(mut a), Some(b)) => {
                for (k, (v, n)) in b {
                    a.entry(k).or_insert((v, 0)).1 += n;
                }
                (a.len() <= distinct).then_some(a)
            }
            _ => None,
        };
        if self.classes.len() < o.classes.len() {
            self.classes
                .resize_with(o.classes.len(), ClassSums::default);
        }
        for (a, b) in self.classes.iter_mut().zip(o.classes) {
            a.count += b.count;
            a.sum.merge(&b.sum);
            a.squares.merge(&b.squares);
        }
    }

    /// The profile of the sketched column, with `edge_levels` and `reported` as the exact
    /// path uses them.
    #[must_use]
    pub fn profile(&self, edge_levels: &[f64], reported: &[(f64, &str)]) -> NumericProfile {
        let mut grid: Vec<(u32, Bucket)> = self.buckets.iter().map(|(&k, &b)| (k, b)).collect();
        grid.sort_unstable_by_key(|&(k, _)| k);
        let n = self.count;
        // Rows up to and including each bucket.
        let mut upto = Vec::with_capacity(grid.len());
        let mut acc = 0u64;
        for (_, b) in &grid {
            acc += b.count;
            upto.push(acc);
        }
        let at_rank = |rank: u64| upto.partition_point(|&u| u <= rank).min(grid.len() - 1);
        let position = |q: f64| (n - 1) as f64 * q;
        let mut edges: Vec<f64> = edge_levels
            .iter()
            .map(|&q| grid[at_rank(position(q).floor() as u64)].1.max)
            .collect();
        edges.dedup();
        let mut counts = Vec::with_capacity(edges.len() + 1);
        let mut prev = 0u64;
        for &e in &edges {
            let i = grid.partition_point(|(_, b)| b.max <= e);
            let through = if i == 0 { 0 } else { upto[i - 1] };
            counts.push(through - prev);
            prev = through;
        }
        counts.push(n - prev);
        // The order statistic of a rank, placed inside its bucket by rank between the
        // bucket's extremes (exact for a bucket's first and last rank and for one value).
        let order_stat = |rank: u64| {
            let i = at_rank(rank);
            let b = grid[i].1;
            let start = if i == 0 { 0 } else { upto[i - 1] };
            let within = if b.count > 1 {
                ((rank - start) as f64 / (b.count - 1) as f64).clamp(0.0, 1.0)
            } else {
                0.0
            };
            b.min + within * (b.max - b.min)
        };
        // Type 7 between the two order statistics around the position, as the exact path.
        let quantile = |q: f64| {
            let h = position(q);
            let lo = h.floor() as u64;
            let hi = (lo + 1).min(n - 1);
            let (a, b) = (order_stat(lo), order_stat(hi));
            a + (h - lo as f64) * (b - a)
        };
        // Tail means by bucket midpoints: within half a bucket's width of the exact mean.
        let tail = |buckets: &[(u32, Bucket)]| {
            let rows: u64 = buckets.iter().map(|(_, b)| b.count).sum();
            if rows == 0 {
                return 0.0;
            }
            let mut s = ExactSum::new();
            for (_, b) in buckets {
                s.add(b.count as f64 * (0.5 * b.min + 0.5 * b.max));
            }
            s.value() / rows as f64
        };
        let lower = grid.partition_point(|(_, b)| edges.first().is_some_and(|&e| b.max <= e));
        let upper = grid.partition_point(|(_, b)| edges.last().is_none_or(|&e| b.max <= e));
        let nf = n as f64;
        let mean = self.sum.to_exact().value() / nf;
        let (frequent, frequent_bound) = self.frequent();
        NumericProfile {
            min: grid[0].1.min,
            max: grid[grid.len() - 1].1.max,
            mean,
            std: sketched_std(n, &self.sum, &self.squares),
            quantiles: reported
                .iter()
                .map(|&(q, k)| (k.to_owned(), quantile(q)))
                .collect(),
            lower_tail_mean: tail(&grid[..lower]),
            upper_tail_mean: tail(&grid[upper..]),
            edges,
            counts,
            frequent,
            frequent_bound,
        }
    }

    /// The most frequent exact values: from the exact counts while the column has at most
    /// [`DISTINCT_VALUES`] distinct values, else from the buckets that hold a single value;
    /// the bound then also covers every value of a bucket holding several.
    /// Moves the class sums of label id `i` to `remap[i]` (the ids of a merged state).
    pub(super) fn relabel(&mut self, remap: &[u32]) {
        let mut classes = Vec::new();
        for (id, c) in std::mem::take(&mut self.classes).into_iter().enumerate() {
            let to = remap.get(id).map_or(MAX_LABEL_IDS, |&t| t as usize);
            if classes.len() <= to {
                classes.resize_with(to + 1, ClassSums::default);
            }
            classes[to] = c;
        }
        self.classes = classes;
    }

    /// Per label id below `classes`, the mean and standard deviation from the exact sums.
    #[must_use]
    pub fn class_moments(&self, classes: usize) -> Vec<MeanStd> {
        (0..classes)
            .map(|id| match self.classes.get(id) {
                Some(c) if c.count > 0 => MeanStd {
                    count: c.count,
                    mean: c.sum.to_exact().value() / c.count as f64,
                    std: sketched_std(c.count, &c.sum, &c.squares),
                },
                _ => MeanStd {
                    count: 0,
                    mean: 0.0,
                    std: 0.0,
                },
            })
            .collect()
    }

    // The runs are sorted by (count, value) afterwards, a total order over distinct values.
    #[allow(clippy::iter_over_hash_type)]
    fn frequent(&self) -> (Vec<ValueCount>, u64) {
        let (mut runs, mixed): (Vec<(u64, f64)>, u64) = match &self.distinct {
            Some(d) => (d.values().map(|&(v, n)| (n, v)).collect(), 0),
            None => {
                let mut single = Vec::new();
                let mut mixed = 0u64;
                for b in self.buckets.values() {
                    if value_key(b.min) == value_key(b.max) {
                        single.push((b.count, b.min));
                    } else {
                        mixed = mixed.max(b.count);
                    }
                }
                (single, mixed)
            }
        };
        let (frequent, bound) = super::build::most_frequent(&mut runs);
        (frequent, bound.max(mixed))
    }
}

/// Standard deviation (`n - 1`) from exact sums of the values and of their squares.
fn sketched_std(n: u64, sum: &LongSum, squares: &LongSum) -> f64 {
    if n < 2 {
        return 0.0;
    }
    let nf = n as f64;
    let s1 = sum.to_exact().value();
    ((squares.to_exact().value() - s1 * (s1 / nf)) / (nf - 1.0))
        .max(0.0)
        .sqrt()
}

/// A [`Sketch`] as it travels in a profile part: buckets and distinct values sorted by key,
/// every `f64` as its bits (infinities included).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SketchWire {
    count: u64,
    /// (bucket, count, bits of the minimum, bits of the maximum).
    buckets: Vec<(u32, u64, u64, u64)>,
    sum: ExactSum,
    squares: ExactSum,
    /// (value key, bits of the value, count).
    distinct: Option<Vec<(u64, u64, u64)>>,
    /// Per label id: (count, sum, sum of squares).
    classes: Vec<(u64, ExactSum, ExactSum)>,
}

impl Sketch {
    /// The sketch as it is written to a part.
    #[must_use]
    pub fn to_wire(&self) -> SketchWire {
        let mut buckets: Vec<(u32, u64, u64, u64)> = self
            .buckets
            .iter()
            .map(|(&k, b)| (k, b.count, b.min.to_bits(), b.max.to_bits()))
            .collect();
        buckets.sort_unstable();
        let distinct = self.distinct.as_ref().map(|d| {
            let mut v: Vec<(u64, u64, u64)> =
                d.iter().map(|(&k, &(x, n))| (k, x.to_bits(), n)).collect();
            v.sort_unstable();
            v
        });
        SketchWire {
            count: self.count,
            buckets,
            sum: self.sum.to_exact(),
            squares: self.squares.to_exact(),
            distinct,
            classes: self
                .classes
                .iter()
                .map(|c| (c.count, c.sum.to_exact(), c.squares.to_exact()))
                .collect(),
        }
    }

    /// A sketch read from a part.
    ///
    /// # Errors
    /// Counts that do not add up, a bucket whose extremes lie outside it, or too many classes.
    pub fn from_wire(w: SketchWire) -> Result<Self, String> {
        let mut buckets = foldhash::HashMap::default();
        let mut total = 0u64;
        for (k, count, min, max) in w.buckets {
            let (min, max) = (f64::from_bits(min), f64::from_bits(max));
            if count == 0 || bucket_of(min) != k || bucket_of(max) != k || min > max {
                return Err("a sketch bucket is malformed".into());
            }
            total = total.checked_add(count).ok_or("sketch counts overflow")?;
            buckets.insert(k, Bucket { count, min, max });
        }
        if total != w.count {
            return Err("sketch bucket counts do not add up".into());
        }
        if w.classes.len() > MAX_LABEL_IDS + 1 {
            return Err("a sketch holds more classes than a label may".into());
        }
        Ok(Self {
            count: w.count,
            buckets,
            sum: LongSum::from_exact(&w.sum),
            squares: LongSum::from_exact(&w.squares),
            distinct: w.distinct.map(|v| {
                v.into_iter()
                    .map(|(k, x, n)| (k, (f64::from_bits(x), n)))
                    .collect()
            }),
            classes: w
                .classes
                .into_iter()
                .map(|(count, sum, squares)| ClassSums {
                    count,
                    sum: LongSum::from_exact(&sum),
                    squares: LongSum::from_exact(&squares),
                })
                .collect(),
        })
    }
}
