//! The band around a numeric column's pinned range beyond which a value is far outside
//! (`schema-out-of-range` denies there; the label test's support ends there).

/// The tolerance band around the pinned range: `(far_min, far_max)`, and per side the scale
/// of the tail used for the far-outside rate.
///
/// Just past the observed extremes is where fresh draws land all the time: of `n` new values
/// from the trusted distribution, the count above the maximum of `m` trusted ones is
/// `BetaBinomial(n, 1, m)` (the maximum sits at `F = U`, `U ~ Beta(m, 1)`; David & Nagaraja
/// 2003, *Order Statistics*, §2.1), about `n / (m + 1)` per side. A value is **far outside**
/// when it lies more than `2σ` past the extreme, with `σ` the mean excess over the outermost
/// pinned edge floored at a quarter standard deviation. How often fresh values land there is
/// judged with a deliberately heavy tail beyond the extreme: a generalised Pareto of shape
/// ξ = 1/2 and scale σ (peaks over threshold: Pickands 1975, Ann. Statist. 3(1); Davison &
/// Smith 1990, JRSS B 52(3)), `P = (1 + ξ · 2)^(-1/ξ) / (m + 1) = 1 / (4 (m + 1))` per side.
/// The shape is fixed, not fitted: a handful of trusted rows beyond the last edge cannot
/// estimate it, and a light-tailed guess turns a small baseline's real outliers into
/// findings (with 200 trusted rows, a few such values in a 200-row batch are ordinary; a few
/// percent of the batch, or values ten times the range away, are not).
#[must_use]
pub fn tolerance(p: &super::NumericProfile) -> Tolerance {
    let sd = if p.std.is_finite() && p.std > 0.0 {
        p.std
    } else {
        ((p.max - p.min).abs() * 0.1).max(1e-12)
    };
    // Mean excess beyond the outermost edges (the tail bins' means are pinned).
    let (first, last) = (
        p.edges.first().copied().unwrap_or(p.min),
        p.edges.last().copied().unwrap_or(p.max),
    );
    let lower = p.counts.first().copied().unwrap_or(0);
    let upper = p.counts.last().copied().unwrap_or(0);
    let scale = |excess: f64, rows: u64| {
        let floor = 0.25 * sd;
        if rows > 0 && excess.is_finite() {
            excess.max(floor)
        } else {
            floor
        }
    };
    let scale_lo = scale(first - p.lower_tail_mean, lower);
    let scale_hi = scale(p.upper_tail_mean - last, upper);
    let margin_lo = 2.0 * scale_lo;
    let margin_hi = 2.0 * scale_hi;
    Tolerance {
        far_min: p.min - margin_lo,
        far_max: p.max + margin_hi,
        scale_lo,
        scale_hi,
        margin_lo,
        margin_hi,
    }
}

/// See [`tolerance`].
#[derive(Debug, Clone, Copy)]
pub struct Tolerance {
    /// Below this a value is far outside.
    pub far_min: f64,
    /// Above this a value is far outside.
    pub far_max: f64,
    /// Tail scale below the first edge.
    pub scale_lo: f64,
    /// Tail scale above the last edge.
    pub scale_hi: f64,
    /// Band below the minimum.
    pub margin_lo: f64,
    /// Band above the maximum.
    pub margin_hi: f64,
}
