//! `poison-segment-label-shift`: the class mix inside one segment (a category, or a numeric
//! decile) moved against the trusted data, beyond what the batch's overall class prior
//! explains.
//!
//! **What it detects.** Labels rewritten for every row that shares a value — a backdoor keyed
//! on a *common* value, which neither the trigger detector (the value is not rare) nor the
//! label prior (the overall shift is small) catches.
//!
//! **How.** Trusted and batch rows are tabulated by (segment, class). The trusted class mix of
//! each segment is re-weighted by the batch's class prior over the trusted prior (the
//! prior-shift correction of Saerens, Latinne & Decaestecker 2002), so that a legitimate
//! change of class balance moves every segment's expectation with it. The effect is the total
//! variation distance between the batch's mix and that expectation; the test is chi-square
//! homogeneity of the batch counts against the re-weighted trusted counts. Every segment is
//! one test in the batch's Holm family, which also controls the false discovery rate.
//!
//! **False positives.** A real change in how one segment behaves (a new product for one
//! region) looks the same. Check the segment's labelling source before re-pinning.

use std::collections::BTreeMap;

use super::label::segment_codes;
use super::{PoisonProfile, RowSelector, Scan};
use crate::baseline::Baseline;
use crate::check::candidate::{Candidate, Effect};
use crate::finding::{Subject, num};
use crate::policy::Policy;
use crate::stats::chi2;

/// Fewest rows a segment needs on each side to be tested.
const MIN_ROWS: f64 = 30.0;

/// Class totals of a table (`code * classes + class`).
fn class_totals(table: &[u64], classes: usize) -> Vec<f64> {
    let mut out = vec![0f64; classes];
    for (i, &c) in table.iter().enumerate() {
        out[i % classes] += c as f64;
    }
    out
}

/// One candidate per tested segment that moved at all.
#[must_use]
pub fn candidates(
    baseline: &Baseline,
    profile: &PoisonProfile,
    scan: &Scan,
    policy: &Policy,
) -> Vec<(Candidate, Option<RowSelector>)> {
    let rule = &policy.checks.poison_segment_label_shift;
    let k = profile.classes;
    let mut out = Vec::new();
    let names: Vec<String> = baseline
        .label_profile
        .as_ref()
        .map(|l| l.classes.iter().map(|c| c.value.clone()).collect())
        .unwrap_or_default();
    // Priors from the first feature's table (every labelled row appears once per table).
    let (Some(t0), Some(t1)) = (profile.tables.first(), scan.tables.first()) else {
        return out;
    };
    let prior0 = class_totals(t0, k);
    let prior1 = class_totals(t1, k);
    let (m0, m1): (f64, f64) = (prior0.iter().sum(), prior1.iter().sum());
    if m0 <= 0.0 || m1 <= 0.0 {
        return out;
    }
    let weight: Vec<f64> = (0..k)
        .map(|c| {
            let a = (prior1[c] + 0.5) / (m1 + 0.5 * k as f64);
            let b = (prior0[c] + 0.5) / (m0 + 0.5 * k as f64);
            a / b
        })
        .collect();
    for (j, name) in profile.features.iter().enumerate() {
        let Some(col) = baseline.column(name) else {
            continue;
        };
        for (label, codes) in segment_codes(col, profile.cardinality[j]) {
            let sum = |t: &[u64]| -> Vec<f64> {
                (0..k)
                    .map(|c| codes.iter().map(|&code| t[code * k + c] as f64).sum())
                    .collect()
            };
            let base = sum(&profile.tables[j]);
            let batch = sum(&scan.tables[j]);
            let (nb, na): (f64, f64) = (base.iter().sum(), batch.iter().sum());
            if nb < MIN_ROWS || na < MIN_ROWS {
                continue;
            }
            let mut expect: Vec<f64> = base.iter().zip(&weight).map(|(b, w)| b * w).collect();
            let z: f64 = expect.iter().sum();
            expect.iter_mut().for_each(|e| *e /= z);
            let tv = 0.5
                * batch
                    .iter()
                    .zip(&expect)
                    .map(|(a, e)| (a / na - e).abs())
                    .sum::<f64>();
            // Every tested segment stays in the family, so that the Holm adjustment counts
            // it even when its effect is too small to report.
            let reweighted: Vec<u64> = expect.iter().map(|e| (e * nb).round() as u64).collect();
            let observed: Vec<u64> = batch.iter().map(|&a| a as u64).collect();
            let test = chi2::homogeneity(&observed, &reweighted);
            let (rise, risen) = (0..k)
                .map(|c| (batch[c] / na - expect[c], c))
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .unwrap_or((0.0, 0));
            let class = names.get(risen).cloned().unwrap_or_else(|| risen.to_string());
            let mut evidence = BTreeMap::new();
            evidence.insert("segment_rows".into(), na);
            evidence.insert("trusted_segment_rows".into(), nb);
            evidence.insert("class_share".into(), batch[risen] / na);
            evidence.insert("expected_class_share".into(), expect[risen]);
            evidence.insert("chi2".into(), test.statistic);
            let subject = Subject {
                column: Some(name.clone()),
                value: Some(label.clone()),
                label: Some(class.clone()),
            };
            let rows: Vec<u32> = (0..scan.rows.n)
                .filter(|&i| {
                    codes.contains(&usize::from(scan.rows.codes[j][i]))
                        && usize::from(scan.rows.label[i]) == risen
                        && (scan.p_label[i].is_nan() || scan.p_label[i] < 0.5)
                })
                .map(|i| i as u32)
                .collect();
            out.push((
                Candidate {
                    code: "poison-segment-label-shift",
                    subject,
                    p_value: Some(test.p_value),
                    effects: vec![Effect {
                        name: "total_variation",
                        value: tv,
                        warn: rule.warn,
                        deny: rule.deny,
                    }],
                    fixed: None,
                    n: na as u64,
                    n_baseline: nb as u64,
                    describe: format!(
                        "Where `{name}` {label}, {}% of {} rows are labelled `{class}` against {}% expected from the trusted data at this batch's class prior (+{} points)",
                        num(100.0 * batch[risen] / na),
                        na,
                        num(100.0 * expect[risen]),
                        num(100.0 * rise)
                    ),
                    evidence,
                    tag: None,
                },
                Some(RowSelector::Listed(rows)),
            ));
        }
    }
    out
}
