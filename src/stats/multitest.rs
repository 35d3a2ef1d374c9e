//! Multiple-testing corrections across the columns of one batch.
//!
//! - Holm 1979, "A simple sequentially rejective multiple test procedure", Scand. J. Statist.
//!   6(2): controls the family-wise error rate under any dependence.
//! - Benjamini & Hochberg 1995, J. R. Statist. Soc. B 57(1): controls the false discovery rate
//!   (independent or positively dependent tests), as `scipy.stats.false_discovery_control`.
//!
//! Both return adjusted p-values in the input order.

/// Holm step-down adjusted p-values.
#[must_use]
pub fn holm(p: &[f64]) -> Vec<f64> {
    let k = p.len();
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]).then(a.cmp(&b)));
    let mut out = vec![0.0; k];
    let mut running = 0.0f64;
    for (rank, &idx) in order.iter().enumerate() {
        let adj = ((k - rank) as f64 * p[idx]).min(1.0);
        running = running.max(adj);
        out[idx] = running;
    }
    out
}

/// Weighted Holm step-down adjusted p-values (Holm 1979, §5, the weighted procedure): with
/// positive weights `w`, hypotheses are ordered by `p_i / w_i`, and at each step the
/// remaining hypotheses share the level in proportion to their weights, so the adjusted
/// value of the `j`-th is `max_{i ≤ j} min(1, p_(i) · W_(i) / w_(i))` with `W_(i)` the total
/// weight not yet rejected. It controls the family-wise error rate like Holm for any weights;
/// equal weights give [`holm`] exactly.
///
/// The gate gives a detector that emits hundreds of candidate tests on one batch (every
/// segment of every feature) a bounded total weight, so that its candidate count does not
/// dilute the level of every other test of the batch.
#[must_use]
pub fn weighted_holm(p: &[f64], w: &[f64]) -> Vec<f64> {
    let k = p.len();
    assert_eq!(k, w.len(), "weighted_holm: one weight per p-value");
    let ratio = |i: usize| p[i] / w[i].max(f64::MIN_POSITIVE);
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&a, &b| ratio(a).total_cmp(&ratio(b)).then(a.cmp(&b)));
    let mut remaining: f64 = w.iter().sum();
    let mut out = vec![0.0; k];
    let mut running = 0.0f64;
    for &idx in &order {
        let adj = (ratio(idx) * remaining).min(1.0);
        running = running.max(adj);
        out[idx] = running;
        remaining -= w[idx];
    }
    out
}

/// Benjamini–Hochberg step-up adjusted p-values.
#[must_use]
pub fn benjamini_hochberg(p: &[f64]) -> Vec<f64> {
    let k = p.len();
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]).then(a.cmp(&b)));
    let mut out = vec![0.0; k];
    let mut running = 1.0f64;
    for (rank, &idx) in order.iter().enumerate().rev() {
        let adj = (k as f64 * p[idx] / (rank + 1) as f64).min(1.0);
        running = running.min(adj);
        out[idx] = running;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_holm_with_equal_weights_is_holm() {
        let p = [0.01, 0.04, 0.03, 0.2, 0.001];
        let a = holm(&p);
        let b = weighted_holm(&p, &[2.0; 5]);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-15, "{a:?} {b:?}");
        }
        // A heavy hypothesis gets a larger share of the level; the step-down keeps the
        // adjusted values monotone.
        let w = weighted_holm(&[0.004, 0.004], &[3.0, 1.0]);
        let first = 0.004 * 4.0 / 3.0;
        assert!(
            (w[0] - first).abs() < 1e-15 && (w[1] - first).abs() < 1e-15,
            "{w:?}"
        );
        // Many light hypotheses do not dilute a heavy one: 1 test of weight 1 beside 300 of
        // total weight 1 is adjusted as if there were two tests.
        let mut p = vec![0.5; 301];
        p[0] = 0.004;
        let mut w = vec![1.0 / 300.0; 301];
        w[0] = 1.0;
        assert!((weighted_holm(&p, &w)[0] - 0.008).abs() < 1e-12);
    }
}
