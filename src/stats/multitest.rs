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
