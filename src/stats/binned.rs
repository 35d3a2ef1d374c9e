//! Statistics computed from counts over fixed bin edges instead of raw values.
//!
//! Bins are right-closed over the baseline's quantile edges `e_0 < ... < e_{k-1}`:
//! bin 0 is `(-inf, e_0]`, bin `i` is `(e_{i-1}, e_i]`, bin `k` is `(e_{k-1}, inf)`, i.e. the
//! index of `x` is the number of edges strictly below it (`numpy.searchsorted(side="left")`).
//! Counts merge exactly by addition across chunks and shards.
//!
//! Approximation error, which the decision thresholds must dominate (DESIGN §5):
//! - KS evaluated at the edges never exceeds the exact statistic and falls short of it by at
//!   most the largest bin's share of either sample (about 1% with percentile edges).
//! - W1 assumes a linear CDF inside interior bins and a point mass at the observed mean inside
//!   the two open tail bins; `tests` bound the error against scipy on real draws.

/// Index of the bin holding `x` (see the module docs). NaN is the caller's business.
#[inline]
#[must_use]
pub fn bin_index(edges: &[f64], x: f64) -> usize {
    edges.partition_point(|&e| e < x)
}

/// Constant-time bin lookup, replacing a branchy binary search per value in the hot loop of
/// `check`. A uniform grid of cells over `[e_0, e_last]` stores, per cell, how many edges lie in
/// earlier cells and the edges inside it. The same float expression maps edges (at build time)
/// and values (at lookup) to cells, and it is monotone, so `#edges < x` is exactly the count of
/// earlier cells plus the edges of `x`'s own cell below `x`: usually zero or one branch-free
/// compare. The result always equals [`bin_index`].
#[derive(Debug, Clone)]
pub struct BinLookup {
    edges: Vec<f64>,
    lo: f64,
    scale: f64,
    /// Per cell: edges in earlier cells (low 16 bits) and edges inside it (high 16 bits); four
    /// bytes a cell keeps the table in L1 cache.
    cells: Vec<u32>,
}

/// Grid cells per lookup table (4 bytes each).
const CELLS: usize = 4096;

impl BinLookup {
    /// Builds the table for `edges` (strictly increasing, finite).
    #[must_use]
    pub fn new(edges: &[f64]) -> Self {
        let (lo, hi) = match (edges.first(), edges.last()) {
            (Some(&lo), Some(&hi)) => (lo, hi),
            _ => (0.0, 0.0),
        };
        let width = hi - lo;
        let scale = if width > 0.0 && width.is_finite() {
            CELLS as f64 / width
        } else {
            0.0
        };
        let mut me = Self {
            edges: edges.to_vec(),
            lo,
            scale,
            cells: vec![0; CELLS],
        };
        if edges.len() >= usize::from(u16::MAX) {
            // Far beyond the 99 percentile edges poisongate pins; keep the table empty and
            // let `index` fall back to binary search.
            me.scale = f64::NAN;
            return me;
        }
        let mut counts = vec![0u32; CELLS];
        for &e in edges {
            counts[me.cell(e)] += 1;
        }
        let mut before = 0u32;
        for (cell, count) in me.cells.iter_mut().zip(counts) {
            *cell = before | (count << 16);
            before += count;
        }
        me
    }

    #[inline]
    fn cell(&self, x: f64) -> usize {
        // Truncation toward zero; negative and NaN map to 0, overflow clamps to the last cell.
        (((x - self.lo) * self.scale) as usize).min(CELLS - 1)
    }

    /// The bin of `x` (not NaN).
    #[inline]
    #[must_use]
    pub fn index(&self, x: f64) -> usize {
        let k = self.edges.len();
        if k == 0 || x <= self.lo {
            return 0;
        }
        if x > self.edges[k - 1] {
            return k;
        }
        if self.scale.is_nan() {
            return bin_index(&self.edges, x);
        }
        let cell = self.cells[self.cell(x)];
        let before = (cell & 0xFFFF) as usize;
        match cell >> 16 {
            0 => before,
            1 => before + usize::from(self.edges[before] < x),
            n => {
                let inside = &self.edges[before..before + n as usize];
                before + inside.partition_point(|&e| e < x)
            }
        }
    }
}

/// One sample summarised over the bins of `edges`.
#[derive(Debug, Clone, Copy)]
pub struct Binned<'a> {
    /// `edges.len() + 1` counts.
    pub counts: &'a [u64],
    /// Mean of the values in the lower open bin (ignored when it is empty).
    pub lower_tail_mean: f64,
    /// Mean of the values in the upper open bin (ignored when it is empty).
    pub upper_tail_mean: f64,
}

fn total(counts: &[u64]) -> f64 {
    counts.iter().map(|&c| c as f64).sum()
}

/// KS statistic at the bin edges: `max_i |F_a(e_i) - F_b(e_i)|`.
#[must_use]
pub fn ks(a: &[u64], b: &[u64]) -> f64 {
    let (ta, tb) = (total(a), total(b));
    if ta == 0.0 || tb == 0.0 {
        return 0.0;
    }
    let (mut ca, mut cb, mut d) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        ca += x as f64;
        cb += y as f64;
        d = d.max((ca / ta - cb / tb).abs());
    }
    d
}

/// Integral of `|d|` over an interval of `width` where `d` runs linearly from `d0` to `d1`.
fn linear_abs_integral(d0: f64, d1: f64, width: f64) -> f64 {
    if d0 * d1 >= 0.0 {
        width * 0.5 * (d0.abs() + d1.abs())
    } else {
        width * (d0 * d0 + d1 * d1) / (2.0 * (d0.abs() + d1.abs()))
    }
}

/// Integral of `|F_a - F_b|` over a tail where each sample's mass sits at one point.
///
/// `before_*` is each CDF's value before its point, `mass_*` the point's mass, the tail runs
/// from `start` to `end` and the points are clamped into it.
fn tail_integral(
    before: (f64, f64),
    mass: (f64, f64),
    at: (f64, f64),
    start: f64,
    end: f64,
) -> f64 {
    let at_a = if mass.0 > 0.0 {
        at.0.clamp(start, end)
    } else {
        start
    };
    let at_b = if mass.1 > 0.0 {
        at.1.clamp(start, end)
    } else {
        start
    };
    let (first, second) = (at_a.min(at_b), at_a.max(at_b));
    let mut acc = (before.0 - before.1).abs() * (first - start);
    let (fa, fb) = (
        before.0 + if at_a <= first { mass.0 } else { 0.0 },
        before.1 + if at_b <= first { mass.1 } else { 0.0 },
    );
    acc += (fa - fb).abs() * (second - first);
    acc += (before.0 + mass.0 - before.1 - mass.1).abs() * (end - second);
    acc
}

/// Approximate W1 between two binned samples over the same `edges`.
#[must_use]
pub fn wasserstein(edges: &[f64], a: &Binned<'_>, b: &Binned<'_>) -> f64 {
    let (ta, tb) = (total(a.counts), total(b.counts));
    if ta == 0.0 || tb == 0.0 || edges.is_empty() {
        return 0.0;
    }
    let k = edges.len();
    let share = |c: &[u64], t: f64, i: usize| c[i] as f64 / t;
    let (a0, b0) = (share(a.counts, ta, 0), share(b.counts, tb, 0));
    // Lower tail: from the lowest point mass up to e_0, where both CDFs start at zero.
    let lo_start = [a.lower_tail_mean, b.lower_tail_mean, edges[0]]
        .into_iter()
        .filter(|x| x.is_finite())
        .fold(edges[0], f64::min);
    let mut acc = tail_integral(
        (0.0, 0.0),
        (a0, b0),
        (a.lower_tail_mean, b.lower_tail_mean),
        lo_start,
        edges[0],
    );
    let (mut ca, mut cb) = (a0, b0);
    for i in 1..k {
        let (na, nb) = (ca + share(a.counts, ta, i), cb + share(b.counts, tb, i));
        acc += linear_abs_integral(ca - cb, na - nb, edges[i] - edges[i - 1]);
        ca = na;
        cb = nb;
    }
    let hi_end = [a.upper_tail_mean, b.upper_tail_mean, edges[k - 1]]
        .into_iter()
        .filter(|x| x.is_finite())
        .fold(edges[k - 1], f64::max);
    acc += tail_integral(
        (ca, cb),
        (share(a.counts, ta, k), share(b.counts, tb, k)),
        (a.upper_tail_mean, b.upper_tail_mean),
        edges[k - 1],
        hi_end,
    );
    acc
}

/// Groups adjacent fine bins into about `target` coarse bins of roughly equal baseline share.
///
/// Returns the coarse group of every fine bin. PSI and Jensen–Shannon use the coarse bins:
/// their sampling noise grows with the number of cells, and the customary thresholds (PSI 0.1 /
/// 0.25) were set for about ten bins.
#[must_use]
pub fn coarse_groups(baseline: &[u64], target: usize) -> Vec<usize> {
    let t = total(baseline);
    let mut groups = Vec::with_capacity(baseline.len());
    let (mut group, mut cum) = (0usize, 0.0f64);
    let step = 1.0 / target.max(1) as f64;
    for &c in baseline {
        groups.push(group);
        cum += if t > 0.0 { c as f64 / t } else { 0.0 };
        if cum >= step * (group + 1) as f64 - 1e-12 {
            group += 1;
        }
    }
    // A trailing group that received no bin would be empty: fold the tail into the last one.
    let last = groups.last().copied().unwrap_or(0);
    for g in &mut groups {
        *g = (*g).min(last);
    }
    groups
}

/// Sums fine counts into the coarse groups of [`coarse_groups`].
#[must_use]
pub fn regroup(counts: &[u64], groups: &[usize]) -> Vec<u64> {
    let n = groups.iter().copied().max().map_or(0, |g| g + 1);
    let mut out = vec![0u64; n];
    for (&c, &g) in counts.iter().zip(groups) {
        out[g] += c;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bin_index_is_right_closed() {
        let edges = [0.0, 1.0, 2.0];
        assert_eq!(bin_index(&edges, -5.0), 0);
        assert_eq!(bin_index(&edges, 0.0), 0);
        assert_eq!(bin_index(&edges, 0.5), 1);
        assert_eq!(bin_index(&edges, 2.0), 2);
        assert_eq!(bin_index(&edges, 2.1), 3);
    }

    #[test]
    fn lookup_table_agrees_with_binary_search() {
        // Clustered, heavy-tailed and tied edges, probed at, between and beyond every edge.
        let mut edges: Vec<f64> = (1..100).map(|i| (f64::from(i) / 10.0).exp()).collect();
        edges.extend([3e4, 3.000_000_1e4, 1e9]);
        for edges in [edges, vec![5.0], vec![], vec![0.0, 1e-300, 1.0]] {
            let lut = BinLookup::new(&edges);
            let mut probes = vec![f64::NEG_INFINITY, f64::INFINITY, -1.0, 0.0, 1e12];
            for w in edges.windows(2) {
                probes.extend([
                    w[0],
                    w[1],
                    0.5 * (w[0] + w[1]),
                    w[0].next_up(),
                    w[1].next_down(),
                ]);
            }
            probes.extend(edges.iter().copied());
            for x in probes {
                assert_eq!(lut.index(x), bin_index(&edges, x), "x = {x:e}");
            }
        }
    }

    #[test]
    fn identical_counts_have_zero_distance() {
        let edges = [0.0, 1.0, 2.0];
        let c = [5, 10, 10, 5];
        let a = Binned {
            counts: &c,
            lower_tail_mean: -1.0,
            upper_tail_mean: 3.0,
        };
        assert_eq!(ks(&c, &c), 0.0);
        assert!(wasserstein(&edges, &a, &a).abs() < 1e-12);
    }

    #[test]
    fn a_shifted_point_mass_moves_by_its_distance() {
        // All mass in the upper tail at 10 vs at 12: W1 = 2 exactly.
        let edges = [0.0, 1.0];
        let (ca, cb) = ([0, 0, 4], [0, 0, 4]);
        let a = Binned {
            counts: &ca,
            lower_tail_mean: f64::NAN,
            upper_tail_mean: 10.0,
        };
        let b = Binned {
            counts: &cb,
            lower_tail_mean: f64::NAN,
            upper_tail_mean: 12.0,
        };
        assert!((wasserstein(&edges, &a, &b) - 2.0).abs() < 1e-12);
    }

    #[test]
    fn coarse_groups_cover_all_bins_in_order() {
        let g = coarse_groups(&[1; 100], 10);
        assert_eq!(g.len(), 100);
        assert_eq!(*g.last().unwrap(), 9);
        assert!(g.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(regroup(&[1; 100], &g), vec![10; 10]);
    }
}
