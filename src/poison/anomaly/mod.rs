//! `poison-anomalous-rows`: more rows than the trusted data's own share score as anomalous.
//!
//! **What it detects.** Injected outliers (values far outside what was ever seen), and rows
//! stitched together from the columns of different rows, each value normal on its own but the
//! combination implausible.
//!
//! **How.** Two scores per row, both derived from the pinned profile:
//! - HBOS, the histogram-based outlier score (Goldstein & Dengel 2012): the sum over features
//!   of `-ln` of the value's normalised histogram height, with the pinned percentile bins for
//!   numeric features (values beyond the trusted range get the tail bin's score plus their
//!   distance in tenths of a standard deviation) and category frequencies for categorical ones;
//! - a Gaussian-copula Mahalanobis distance: each numeric value is mapped to a normal score
//!   through the pinned CDF (`Φ⁻¹(F(x))`, linear between the percentile edges), and `d² = zᵀ
//!   R⁻¹ z` with `R` the trusted normal-score correlation, shrunk 2% toward the identity
//!   (Ledoit & Wolf 2004) so that collinear features keep it invertible. This is the
//!   nonparanormal model of Liu, Lafferty & Wasserman (2009) used as a density score.
//!
//! Each score's cut is its 99.5th percentile over the trusted rows; a row is anomalous when
//! either passes its cut, and the trusted share of such rows (about 1%) is the rate a clean
//! batch should show. The batch test is a two-sample z-test of shares; the effect is the
//! excess share.
//!
//! **False positives.** A legitimate range extension (a new product with larger amounts)
//! raises the share too, together with `schema-out-of-range`; correlations that changed for
//! real (a new pricing rule) raise the copula score.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};

use super::Rows;
use crate::pinned::ColumnProfile;
use crate::poison::BaselineView;
use crate::rows::{Encoded, Encoder, FeatureCode};

mod fit;
pub use fit::fit;

/// Quantile of the trusted scores used as the cut.
const CUT_LEVEL: f64 = 0.995;
/// Shrinkage of the copula correlation toward the identity.
const SHRINK: f64 = 0.02;
/// Most features in the copula score (its cost grows with the square).
const MAX_COPULA: usize = 64;
/// Cap of one feature's HBOS term.
const MAX_TERM: f64 = 50.0;

/// What the anomaly scores pinned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AnomalyProfile {
    /// Features (indices into the poison profile's features) in the copula score.
    pub copula: Vec<usize>,
    /// Lower Cholesky factor of the shrunk normal-score correlation, row-major.
    pub cholesky: Vec<f64>,
    /// Cut of the HBOS score.
    pub cut_hbos: f64,
    /// Cut of the copula distance.
    pub cut_copula: f64,
    /// Share of trusted rows past either cut.
    pub rate: f64,
    /// Trusted rows scored.
    pub rows: u64,
    /// Trusted rows past either cut, out of fold (absent in baselines pinned before the cuts
    /// were cross-fitted: then `rate × rows`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flagged: Option<u64>,
    /// Shrinkage of the copula correlation toward the identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shrinkage: Option<f64>,
    /// Quantile of the out-of-fold scores used as each cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut_level: Option<f64>,
    /// Cut of the extreme-value score: the largest leave-one-out excess of a trusted row
    /// past the other trusted rows' extremes, in tail scales (absent in baselines pinned
    /// before the score existed: the test then does not run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut_extreme: Option<f64>,
    /// Per feature, the extreme-value tail scales below and above the trusted range (0 for
    /// categorical features; absent with `cut_extreme`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extreme_scales: Option<Vec<[f64; 2]>>,
}

impl AnomalyProfile {
    /// Checks shapes.
    ///
    /// # Errors
    /// A description of the problem.
    pub fn validate(&self, features: usize) -> Result<(), String> {
        let p = self.copula.len();
        if self.copula.iter().any(|&j| j >= features) || self.cholesky.len() != p * p {
            return Err("anomaly profile does not fit the features".into());
        }
        if !(self.rate >= 0.0 && self.rate <= 1.0) {
            return Err("anomaly rate out of range".into());
        }
        if self
            .cut_extreme
            .is_some_and(|c| !(c.is_finite() && c >= 0.0))
            || self.extreme_scales.as_ref().is_some_and(|s| {
                s.len() != features || s.iter().flatten().any(|x| !(x.is_finite() && *x >= 0.0))
            })
        {
            return Err("anomaly profile: extreme-value cut or scales out of range".into());
        }
        Ok(())
    }
}

/// Per-feature scoring tables derived from the column profiles.
#[derive(Debug, Clone)]
enum Table {
    Numeric {
        /// HBOS term per bin.
        hbos: Vec<f64>,
        /// Normal score at min, at each edge, at max.
        z: Vec<f64>,
        /// min, edges, max.
        knots: Vec<f64>,
        /// Per bin, the slope of the normal score (linear between knots).
        slope: Vec<f64>,
        /// Scale of the distance beyond the range.
        sd: f64,
        bins: usize,
        /// Pinned minimum and maximum, and the extreme-value tail scales below and above
        /// them (see [`loo_extreme`]).
        lo: f64,
        hi: f64,
        scale_lo: f64,
        scale_hi: f64,
    },
    Categorical {
        hbos: Vec<f64>,
    },
}

/// Row scorer built from a baseline.
#[derive(Debug, Clone)]
pub struct Scorer {
    tables: Vec<Table>,
    copula: Vec<usize>,
    chol: Vec<f64>,
    cut_hbos: f64,
    cut_copula: f64,
    /// Cut of the extreme-value score (infinite when the baseline pinned none).
    cut_extreme: f64,
}

fn hbos_terms(heights: &[f64]) -> Vec<f64> {
    let top = heights.iter().copied().fold(0.0, f64::max);
    heights
        .iter()
        .map(|&h| {
            if top <= 0.0 {
                0.0
            } else {
                (-(h / top).max(1e-300).ln()).min(MAX_TERM)
            }
        })
        .collect()
}

fn table(col: &ColumnProfile, code: &FeatureCode) -> Table {
    match (code, &col.numeric, &col.categorical) {
        (FeatureCode::Numeric { bins, .. }, Some(p), _) => {
            let mut knots = Vec::with_capacity(p.edges.len() + 2);
            knots.push(p.min);
            knots.extend_from_slice(&p.edges);
            knots.push(p.max);
            let span = (p.max - p.min).abs();
            let floor = (span * 1e-4).max(1e-12);
            let heights: Vec<f64> = p
                .counts
                .iter()
                .enumerate()
                .map(|(b, &c)| (c as f64 + 0.5) / (knots[b + 1] - knots[b]).max(floor))
                .collect();
            let mut hbos = hbos_terms(&heights);
            hbos.push(0.0); // null code
            let n = col.count.max(1) as f64;
            let normal = Normal::standard();
            let clamp = |q: f64| q.clamp(0.5 / n, 1.0 - 0.5 / n);
            let mut z = vec![normal.inverse_cdf(clamp(0.0))];
            let mut cum = 0u64;
            for &c in &p.counts[..p.counts.len() - 1] {
                cum += c;
                z.push(normal.inverse_cdf(clamp(cum as f64 / n)));
            }
            z.push(normal.inverse_cdf(clamp(1.0)));
            let sd = if p.std > 0.0 { p.std } else { floor };
            let slope = (0..knots.len() - 1)
                .map(|b| {
                    let w = knots[b + 1] - knots[b];
                    if w > 0.0 { (z[b + 1] - z[b]) / w } else { 0.0 }
                })
                .collect();
            Table::Numeric {
                hbos,
                z,
                knots,
                slope,
                sd,
                bins: *bins,
                lo: p.min,
                hi: p.max,
                // Set from the pinned extreme-value scales (`Scorer::new`).
                scale_lo: f64::INFINITY,
                scale_hi: f64::INFINITY,
            }
        }
        (FeatureCode::Categorical { other, .. }, _, Some(c)) => {
            let mut heights: Vec<f64> = c
                .top
                .iter()
                .take(usize::from(*other))
                .map(|t| t.count as f64)
                .collect();
            let rest = c.distinct.saturating_sub(heights.len() as u64).max(1) as f64;
            heights.push((c.other as f64 / rest).max(0.5));
            let mut hbos = hbos_terms(&heights);
            hbos.push(0.0);
            Table::Categorical { hbos }
        }
        _ => Table::Categorical {
            hbos: vec![0.0; code.cardinality()],
        },
    }
}

impl Table {
    /// HBOS term and (numeric) normal score of a value with code `c`.
    #[inline]
    fn score(&self, c: u8, x: f64) -> (f64, f64) {
        match self {
            Self::Categorical { hbos } => (hbos[usize::from(c)], 0.0),
            Self::Numeric {
                hbos,
                z,
                knots,
                slope,
                sd,
                bins,
                ..
            } => {
                let b = usize::from(c);
                if b >= *bins || x.is_nan() {
                    return (0.0, 0.0);
                }
                let last = knots.len() - 1;
                if x < knots[0] {
                    let d = (knots[0] - x) / sd;
                    return ((hbos[0] + 10.0 * d).min(MAX_TERM), z[0] - d);
                }
                if x > knots[last] {
                    let d = (x - knots[last]) / sd;
                    return ((hbos[b] + 10.0 * d).min(MAX_TERM), z[last] + d);
                }
                // In range, `x` lies in its bin's knots, so the line stays between them.
                let zb = if slope[b] == 0.0 {
                    z[b + 1]
                } else {
                    z[b] + (x - knots[b]) * slope[b]
                };
                (hbos[b], zb)
            }
        }
    }
}

impl Table {
    /// How far `x` lies past the pinned extremes, in units of the tail scale on that side
    /// (0 inside the range, for nulls and for categorical features).
    #[inline]
    fn excess(&self, x: f64) -> f64 {
        match self {
            Self::Numeric {
                lo,
                hi,
                scale_lo,
                scale_hi,
                ..
            } if !x.is_nan() => {
                if x > *hi {
                    (x - hi) / scale_hi
                } else if x < *lo {
                    (lo - x) / scale_lo
                } else {
                    0.0
                }
            }
            _ => 0.0,
        }
    }
}

impl Scorer {
    /// The scorer of a baseline's features; `profile` supplies the fitted copula and cuts.
    #[must_use]
    pub fn new(baseline: &BaselineView<'_>, encoder: &Encoder, profile: &AnomalyProfile) -> Self {
        let mut me = Self::tables_only(baseline, encoder);
        me.copula.clone_from(&profile.copula);
        me.chol.clone_from(&profile.cholesky);
        me.cut_hbos = profile.cut_hbos;
        me.cut_copula = profile.cut_copula;
        me.cut_extreme = f64::INFINITY;
        if let (Some(cut), Some(scales)) = (profile.cut_extreme, &profile.extreme_scales)
            && scales.len() == me.tables.len()
        {
            me.cut_extreme = cut;
            for (t, sc) in me.tables.iter_mut().zip(scales) {
                if let Table::Numeric {
                    scale_lo, scale_hi, ..
                } = t
                {
                    // 0: too few trusted values to measure a tail; never extreme.
                    *scale_lo = if sc[0] > 0.0 { sc[0] } else { f64::INFINITY };
                    *scale_hi = if sc[1] > 0.0 { sc[1] } else { f64::INFINITY };
                }
            }
        }
        me
    }

    fn tables_only(baseline: &BaselineView<'_>, encoder: &Encoder) -> Self {
        let tables = encoder
            .features
            .iter()
            .map(|f| match baseline.column(&f.name) {
                Some(col) => table(col, &f.code),
                None => Table::Categorical {
                    hbos: vec![0.0; f.code.cardinality()],
                },
            })
            .collect();
        Self {
            tables,
            copula: Vec::new(),
            chol: Vec::new(),
            cut_hbos: 0.0,
            cut_copula: 0.0,
            cut_extreme: f64::INFINITY,
        }
    }

    /// Raw (HBOS, copula d²) of each row.
    fn raw(&self, codes: &[Vec<u8>], values: &[Vec<f64>], n: usize) -> (Vec<f64>, Vec<f64>) {
        // Rows go in blocks small enough that the block's normal scores stay in cache; a
        // whole slice's score matrix would be megabytes allocated and zeroed per slice.
        const BLOCK: usize = 1024;
        let mut hbos = vec![0f64; n];
        let mut d2 = vec![0f64; n];
        let p = self.copula.len();
        let slots: Vec<Option<usize>> = (0..self.tables.len())
            .map(|j| self.copula.iter().position(|&c| c == j))
            .collect();
        let inv_diag: Vec<f64> = (0..p).map(|r| 1.0 / self.chol[r * p + r]).collect();
        let mut z = vec![0f64; BLOCK * p];
        let mut w = vec![0f64; p];
        let mut start = 0;
        while start < n {
            let len = BLOCK.min(n - start);
            for (j, t) in self.tables.iter().enumerate() {
                let vals = &values[j];
                let col = &codes[j][start..start + len];
                for (b, &c) in col.iter().enumerate() {
                    let x = vals.get(start + b).copied().unwrap_or(f64::NAN);
                    let (h, zi) = t.score(c, x);
                    hbos[start + b] += h;
                    if let Some(s) = slots[j] {
                        z[b * p + s] = zi;
                    }
                }
            }
            if p > 0 {
                for b in 0..len {
                    let zi = &z[b * p..(b + 1) * p];
                    // Forward substitution L w = z; d² = |w|².
                    let mut s2 = 0.0;
                    for r in 0..p {
                        let row = &self.chol[r * p..r * p + r];
                        let dot: f64 = row.iter().zip(&w[..r]).map(|(a, b)| a * b).sum();
                        w[r] = (zi[r] - dot) * inv_diag[r];
                        s2 += w[r] * w[r];
                    }
                    d2[start + b] = s2;
                }
            }
            start += len;
        }
        (hbos, d2)
    }

    /// Extreme-value score of each row over the pinned cut (above 1 is past every trusted
    /// row's leave-one-out score; see [`loo_extreme`]), and per feature the rows past the cut
    /// whose largest excess it holds. A baseline pinned without the cut gives 0.
    #[must_use]
    pub fn extreme(&self, e: &Encoded) -> (Vec<f32>, Vec<u64>) {
        let mut by_feature = vec![0u64; self.tables.len()];
        if !self.cut_extreme.is_finite() {
            return (vec![0.0; e.n], by_feature);
        }
        // A cut of 0 (no trusted value stands alone past the others): any excess counts.
        let cut = self.cut_extreme.max(1e-9);
        let mut best = vec![(0f64, 0usize); e.n];
        for (j, (t, vals)) in self.tables.iter().zip(&e.values).enumerate() {
            if !matches!(t, Table::Numeric { .. }) {
                continue;
            }
            for (b, &x) in best.iter_mut().zip(vals) {
                let d = t.excess(x);
                if d > b.0 {
                    *b = (d, j);
                }
            }
        }
        let scores = best
            .iter()
            .map(|&(d, j)| {
                let s = d / cut;
                if s > 1.0 {
                    by_feature[j] += 1;
                }
                s as f32
            })
            .collect();
        (scores, by_feature)
    }

    /// Anomaly score of each row of a slice: the larger of its two scores over their cuts.
    #[must_use]
    pub fn score(&self, e: &Encoded) -> Vec<f32> {
        let (h, d) = self.raw(&e.codes, &e.values, e.n);
        h.iter()
            .zip(&d)
            .map(|(&h, &d)| {
                let a = if self.cut_hbos > 0.0 {
                    h / self.cut_hbos
                } else {
                    0.0
                };
                let b = if self.cut_copula > 0.0 {
                    d / self.cut_copula
                } else {
                    0.0
                };
                a.max(b) as f32
            })
            .collect()
    }
}

fn quantile_of(mut v: Vec<f64>, q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * q) as usize).min(v.len() - 1)]
}

/// The squared Mahalanobis distance `zᵀ R⁻¹ z` of one vector, through the Cholesky factor
/// of `r` (`p × p`, row-major): the copula score's arithmetic, exposed for tests. `None` when
/// `r` is not positive definite.
#[must_use]
pub fn mahalanobis_sq(r: &[f64], p: usize, z: &[f64]) -> Option<f64> {
    let l = cholesky(r, p)?;
    let mut w = vec![0f64; p];
    let mut s2 = 0.0;
    for i in 0..p {
        let dot: f64 = l[i * p..i * p + i]
            .iter()
            .zip(&w[..i])
            .map(|(a, b)| a * b)
            .sum();
        w[i] = (z[i] - dot) / l[i * p + i];
        s2 += w[i] * w[i];
    }
    Some(s2)
}

/// Lower Cholesky factor of a symmetric positive-definite matrix (row-major), or `None`.
fn cholesky(a: &[f64], p: usize) -> Option<Vec<f64>> {
    let mut l = vec![0f64; p * p];
    for i in 0..p {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * p + k] * l[j * p + k]).sum();
            if i == j {
                let d = a[i * p + i] - s;
                if d <= 0.0 || !d.is_finite() {
                    return None;
                }
                l[i * p + j] = d.sqrt();
            } else {
                l[i * p + j] = (a[i * p + j] - s) / l[j * p + j];
            }
        }
    }
    Some(l)
}
