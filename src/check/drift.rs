//! `drift-` checks: numeric and categorical column drift and label prior shift.
//!
//! Every statistic is computed from counts over the baseline's cells (bins or categories), so
//! it merges across shards. Significance: binned KS (asymptotic Kolmogorov) and chi-square
//! homogeneity for numeric columns, Bonferroni-combined within the column (`2 min(p)`);
//! chi-square homogeneity for categories. Effect sizes: KS, Wasserstein / baseline sd and PSI
//! (numeric); PSI and Jensen–Shannon (categorical). Each effect threshold is raised to the
//! `null-level` quantile of the statistic over simulated clean batches of this size
//! ([`crate::stats::null`]), so small batches and sparse cells cannot trip them by noise.

use std::collections::BTreeMap;

use crate::baseline::{ColumnProfile, NumericProfile};
use crate::detect::{Candidate, Effect, PowerNull};
use crate::finding::{Subject, num};
use crate::policy::{CategoricalDrift, Gate, Policy};
use crate::stats::binned::{self, Binned};
use crate::stats::divergence::{PSI_EPS, jensen_shannon, psi};
use crate::stats::{chi2, ks, null};
use crate::summary::{CategoricalSummary, NumericSummary};

/// Mixes a column's position into the baseline seed (`SplitMix64`, Steele, Lea & Flood 2014),
/// so every column's simulation is independent and reproducible.
#[must_use]
pub fn column_seed(seed: u64, index: usize) -> u64 {
    let mut z = seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn wasserstein_norm(p: &NumericProfile, batch: &[u64], lower: f64, upper: f64) -> f64 {
    let a = Binned {
        counts: &p.counts,
        lower_tail_mean: p.lower_tail_mean,
        upper_tail_mean: p.upper_tail_mean,
    };
    let b = Binned {
        counts: batch,
        lower_tail_mean: lower,
        upper_tail_mean: upper,
    };
    binned::wasserstein(&p.edges, &a, &b) / p.std
}

/// Drift of one numeric column.
pub fn numeric(
    col: &ColumnProfile,
    s: &NumericSummary,
    policy: &Policy,
    seed: u64,
) -> Option<Candidate> {
    let p = col.numeric.as_ref()?;
    if s.count == 0 || col.count == 0 || p.edges.is_empty() || p.std.is_nan() || p.std <= 0.0 {
        return None;
    }
    let rule = &policy.checks.drift_numeric;
    let (m, n) = (col.count, s.count);
    let groups = binned::coarse_groups(&p.counts, 10);
    let coarse_base = binned::regroup(&p.counts, &groups);
    let ks_d = binned::ks(&p.counts, &s.bins);
    let p_ks = ks::asymptotic_p_value(m as f64, n as f64, ks_d);
    let chi = chi2::homogeneity(&p.counts, &s.bins);
    let coarse = binned::regroup(&s.bins, &groups);
    let psi_v = psi(&coarse_base, &coarse, PSI_EPS);
    let js_v = jensen_shannon(&coarse_base, &coarse);
    let w = wasserstein_norm(p, &s.bins, s.lower_tail_mean(), s.upper_tail_mean());
    let nulls = simulate(&policy.gate, &p.counts, n, seed, |a, b| {
        let (ca, cb) = (binned::regroup(a, &groups), binned::regroup(b, &groups));
        let wa = Binned {
            counts: a,
            lower_tail_mean: p.lower_tail_mean,
            upper_tail_mean: p.upper_tail_mean,
        };
        let wb = Binned {
            counts: b,
            lower_tail_mean: p.lower_tail_mean,
            upper_tail_mean: p.upper_tail_mean,
        };
        vec![
            binned::ks(a, b),
            binned::wasserstein(&p.edges, &wa, &wb) / p.std,
            psi(&ca, &cb, PSI_EPS),
        ]
    });
    let (null_ks, null_w, null_psi) = (nulls[0], nulls[1], nulls[2]);
    let (mean, std) = (s.mean(), s.std());
    let evidence = BTreeMap::from([
        ("ks".to_owned(), ks_d),
        ("ks_p_value".to_owned(), p_ks),
        ("chi2".to_owned(), chi.statistic),
        ("chi2_dof".to_owned(), chi.dof),
        ("chi2_p_value".to_owned(), chi.p_value),
        ("psi".to_owned(), psi_v),
        ("jensen_shannon".to_owned(), js_v),
        ("wasserstein_norm".to_owned(), w),
        ("mean".to_owned(), mean),
        ("std".to_owned(), std),
        ("baseline_mean".to_owned(), p.mean),
        ("baseline_std".to_owned(), p.std),
        ("null_ks".to_owned(), null_ks),
        ("null_wasserstein_norm".to_owned(), null_w),
        ("null_psi".to_owned(), null_psi),
    ]);
    Some(Candidate {
        code: "drift-numeric",
        subject: Subject::column(&col.name),
        p_value: Some((2.0 * p_ks.min(chi.p_value)).min(1.0)),
        effects: vec![
            Effect {
                name: "ks",
                value: ks_d,
                warn: rule.warn_ks.max(null_ks),
                deny: rule.deny_ks.max(null_ks),
            },
            Effect {
                name: "wasserstein_norm",
                value: w,
                warn: rule.warn_wasserstein.max(null_w),
                deny: rule.deny_wasserstein.max(null_w),
            },
            Effect {
                name: "psi",
                value: psi_v,
                warn: rule.warn_psi.max(null_psi),
                deny: rule.deny_psi.max(null_psi),
            },
        ],
        fixed: None,
        n,
        n_baseline: m,
        describe: format!(
            "`{}` mean {} -> {} ({:+.2} sd), sd {} -> {}",
            col.name,
            num(p.mean),
            num(mean),
            (mean - p.mean) / p.std,
            num(p.std),
            num(std)
        ),
        evidence,
        tag: None,
        power: Some(PowerNull::Ks {
            batch: n,
            baseline: m,
            deny_wasserstein: rule.deny_wasserstein.max(null_w),
        }),
    })
}

/// Runs the null simulation, or returns zeros when it is turned off.
fn simulate<F>(gate: &Gate, baseline: &[u64], n: u64, seed: u64, stat: F) -> Vec<f64>
where
    F: Fn(&[u64], &[u64]) -> Vec<f64>,
{
    let out = null::quantile(baseline, n, gate.null_draws, gate.null_level, seed, stat);
    if out.is_empty() { vec![0.0; 3] } else { out }
}

/// Cells for a categorical comparison: the baseline's top values, then "other".
fn cells(col: &ColumnProfile, s: &CategoricalSummary) -> Option<(Vec<String>, Vec<u64>, Vec<u64>)> {
    let p = col.categorical.as_ref()?;
    let names: Vec<String> = p.top.iter().map(|t| t.value.clone()).collect();
    let mut base: Vec<u64> = p.top.iter().map(|t| t.count).collect();
    base.push(p.other);
    let mut batch: Vec<u64> = names.iter().map(|v| s.get(v)).collect();
    let top: u64 = batch.iter().sum();
    batch.push(s.count - top);
    Some((names, base, batch))
}

/// Drift of a categorical column (`drift-categorical`) or of the label (`drift-label-prior`).
pub fn categorical(
    col: &ColumnProfile,
    s: &CategoricalSummary,
    policy: &Policy,
    seed: u64,
    is_label: bool,
) -> Option<Candidate> {
    let (names, base, batch) = cells(col, s)?;
    if s.count == 0 || col.count == 0 {
        return None;
    }
    let rule: &CategoricalDrift = if is_label {
        &policy.checks.drift_label_prior
    } else {
        &policy.checks.drift_categorical
    };
    let chi = chi2::homogeneity(&base, &batch);
    let psi_v = psi(&base, &batch, PSI_EPS);
    let js_v = jensen_shannon(&base, &batch);
    let nulls = simulate(&policy.gate, &base, s.count, seed, |a, b| {
        vec![psi(a, b, PSI_EPS), jensen_shannon(a, b)]
    });
    let (null_psi, null_js) = (nulls[0], nulls[1]);
    // The cell whose share moved most, for the message.
    let (tb, tc) = (col.count as f64, s.count as f64);
    let moved = (0..base.len())
        .map(|i| (i, base[i] as f64 / tb, batch[i] as f64 / tc))
        .max_by(|a, b| {
            (a.2 - a.1)
                .abs()
                .total_cmp(&(b.2 - b.1).abs())
                .then(b.0.cmp(&a.0))
        });
    let describe = match moved {
        Some((i, from, to)) => {
            let name = names.get(i).map_or_else(
                || "(other values)".to_owned(),
                |v| format!("\"{}\"", v.escape_debug()),
            );
            format!(
                "`{}` share of {} {:.2}% -> {:.2}%",
                col.name,
                name,
                100.0 * from,
                100.0 * to
            )
        }
        None => format!("`{}` category mix moved", col.name),
    };
    let evidence = BTreeMap::from([
        ("chi2".to_owned(), chi.statistic),
        ("chi2_dof".to_owned(), chi.dof),
        ("chi2_p_value".to_owned(), chi.p_value),
        ("psi".to_owned(), psi_v),
        ("jensen_shannon".to_owned(), js_v),
        ("null_psi".to_owned(), null_psi),
        ("null_jensen_shannon".to_owned(), null_js),
    ]);
    Some(Candidate {
        code: if is_label {
            "drift-label-prior"
        } else {
            "drift-categorical"
        },
        subject: Subject::column(&col.name),
        p_value: Some(chi.p_value),
        effects: vec![
            Effect {
                name: "psi",
                value: psi_v,
                warn: rule.warn_psi.max(null_psi),
                deny: rule.deny_psi.max(null_psi),
            },
            Effect {
                name: "jensen_shannon",
                value: js_v,
                warn: rule.warn_js.max(null_js),
                deny: rule.deny_js.max(null_js),
            },
        ],
        fixed: None,
        n: s.count,
        n_baseline: col.count,
        describe,
        evidence,
        tag: None,
        power: Some(PowerNull::Chi2 {
            dof: chi.dof,
            batch: batch.iter().sum(),
            baseline: base.iter().sum(),
        }),
    })
}
