//! Power of the likelihood-ratio flip test of `poison-label-inconsistency` as a function of
//! batch size and of the reference model's AUC: prints the tables of `docs/label-power.md`.
//!
//! `cargo run --release --example label_power` (or without `--release`; about a minute).
//!
//! Model: a binary label with prior 0.3 and a one-dimensional score `s ~ N(±d/2, 1)` per
//! class, so the Bayes model has AUC `Φ(d / √2)` and its probabilities are exactly
//! calibrated (the gate's reference model is calibrated out of fold, so this is its best
//! case: a real model is no better than the data allows). A share `ε` of a batch's labels is
//! flipped at random. A batch is called flipped when the test's p-value, Bonferroni-combined
//! with the two conditional tests as in `check` (×3), is below 0.01 and the estimated share
//! reaches the default deny threshold 0.03. The prior tolerance is the default 1.2, widened
//! by the sampling error of a prior pinned from 1,000 trusted rows.

use poisongate::poison::flip_lr::{Alternative, Data, test};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use statrs::distribution::{ContinuousCDF, Normal};

const PRIOR: f64 = 0.3;
const TRUSTED: f64 = 1000.0;
const REPS: usize = 100;

fn batch(rng: &mut ChaCha8Rng, n: usize, d: f64, eps: f64) -> (Vec<f32>, Vec<u16>) {
    let mut probs = Vec::with_capacity(2 * n);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let y = u16::from(rng.random::<f64>() < PRIOR);
        let z: f64 = StandardNormal.sample(rng);
        let s = z + if y == 1 { d / 2.0 } else { -d / 2.0 };
        // P(y = 1 | s) for two unit normals at ±d/2.
        let lo = (PRIOR / (1.0 - PRIOR)).ln() + d * s;
        let q1 = 1.0 / (1.0 + (-lo).exp());
        probs.extend([(1.0 - q1) as f32, q1 as f32]);
        let flip = rng.random::<f64>() < eps;
        labels.push(if flip { 1 - y } else { y });
    }
    (probs, labels)
}

fn main() {
    let normal = Normal::standard();
    let aucs = [0.55, 0.6, 0.7, 0.8, 0.9, 0.97];
    let sizes = [200usize, 300, 1000, 2000, 5000];
    let shares = [0.0, 0.02, 0.05, 0.1, 0.2];
    let x1 = TRUSTED * PRIOR;
    let x0 = TRUSTED - x1;
    let bounds = [1.0, 1.2 * (1.96 * (1.0 / x1 + 1.0 / x0).sqrt()).exp()];
    let alts = [
        Alternative::Random,
        Alternative::Directed { from: 0, to: 1 },
        Alternative::Directed { from: 1, to: 0 },
    ];
    println!("Share of {REPS} batches called flipped (ε = 0: the false-alarm rate).\n");
    let mut limits = Vec::new();
    for &auc in &aucs {
        let d = std::f64::consts::SQRT_2 * normal.inverse_cdf(auc);
        println!("### Reference model AUC {auc}\n");
        println!("| batch rows | ε = 0 | 0.02 | 0.05 | 0.10 | 0.20 |");
        println!("| --- | --- | --- | --- | --- | --- |");
        let mut row_limits = Vec::new();
        for &n in &sizes {
            let mut cells = Vec::new();
            let mut limit = None;
            for (si, &eps) in shares.iter().enumerate() {
                let mut rng = ChaCha8Rng::seed_from_u64(
                    (auc * 1000.0) as u64 * 1_000_003 + n as u64 * 101 + si as u64,
                );
                let mut hits = 0;
                for _ in 0..REPS {
                    let (p, y) = batch(&mut rng, n, d, eps);
                    let r = test(
                        &Data {
                            probs: &p,
                            labels: &y,
                            k: 2,
                        },
                        &bounds,
                        &alts,
                    )
                    .expect("two classes");
                    if (3.0 * r.p_value).min(1.0) < 0.01 && r.epsilon >= 0.03 {
                        hits += 1;
                    }
                }
                let rate = hits as f64 / REPS as f64;
                if eps > 0.0 && limit.is_none() && rate >= 0.9 {
                    limit = Some(eps);
                }
                cells.push(format!("{:.0}%", 100.0 * rate));
            }
            println!("| {n} | {} |", cells.join(" | "));
            row_limits.push(limit);
        }
        println!();
        limits.push((auc, row_limits));
    }
    println!("### Smallest random-flip share blocked in at least 90% of batches\n");
    println!(
        "| AUC | {} |",
        sizes
            .iter()
            .map(|n| format!("{n} rows"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("| --- |{}", " --- |".repeat(sizes.len()));
    for (auc, row) in limits {
        let cells: Vec<String> = row
            .iter()
            .map(|l| l.map_or("> 0.20".to_owned(), |e| format!("{e:.2}")))
            .collect();
        println!("| {auc} | {} |", cells.join(" | "));
    }
}
