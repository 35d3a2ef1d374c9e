//! Distances between two discrete distributions given as counts over the same cells.
//!
//! - Population stability index, `PSI = sum (q - p) ln(q / p)` with each share clipped below at
//!   `eps` so that empty cells stay finite (Siddiqi 2006, "Credit Risk Scorecards", ch. 8;
//!   Yurdakul 2018, "Statistical properties of population stability index", Western Michigan
//!   University). It is the symmetrised Kullback–Leibler divergence (Jeffreys divergence).
//! - Jensen–Shannon distance, the square root of the Jensen–Shannon divergence with natural
//!   logarithms (Lin 1991, IEEE Trans. Inf. Theory 37(1); Endres & Schindelin 2003), as
//!   `scipy.spatial.distance.jensenshannon`. Bounded by `sqrt(ln 2)`.
//! - Total variation distance, half the sum of `|q - p|`: the largest share of rows any set of
//!   cells gained or lost.

/// The default clip for shares in PSI: one in ten thousand.
pub const PSI_EPS: f64 = 1e-4;

fn shares(counts: &[u64]) -> Vec<f64> {
    let total: f64 = counts.iter().map(|&x| x as f64).sum();
    if total == 0.0 {
        return vec![0.0; counts.len()];
    }
    counts.iter().map(|&x| x as f64 / total).collect()
}

/// PSI of `actual` against `expected`, shares clipped below at `eps`.
#[must_use]
pub fn psi(expected: &[u64], actual: &[u64], eps: f64) -> f64 {
    let p = shares(expected);
    let q = shares(actual);
    p.iter()
        .zip(&q)
        .map(|(&p, &q)| {
            let (p, q) = (p.max(eps), q.max(eps));
            (q - p) * (q / p).ln()
        })
        .sum()
}

/// Jensen–Shannon distance (natural log) between two count vectors.
#[must_use]
pub fn jensen_shannon(p: &[u64], q: &[u64]) -> f64 {
    let p = shares(p);
    let q = shares(q);
    let rel = |x: f64, m: f64| if x > 0.0 { x * (x / m).ln() } else { 0.0 };
    let js: f64 = p
        .iter()
        .zip(&q)
        .map(|(&p, &q)| {
            let m = 0.5 * (p + q);
            0.5 * (rel(p, m) + rel(q, m))
        })
        .sum();
    js.max(0.0).sqrt()
}

/// Total variation distance between two count vectors.
#[must_use]
pub fn total_variation(p: &[u64], q: &[u64]) -> f64 {
    let p = shares(p);
    let q = shares(q);
    0.5 * p.iter().zip(&q).map(|(a, b)| (a - b).abs()).sum::<f64>()
}
