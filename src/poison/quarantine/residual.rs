//! What dropping the quarantined rows leaves of each finding that put rows in it.
//!
//! A re-check of the remaining rows alone cannot tell: the quarantine removed the rows that
//! carried the evidence, whatever they were, so the remaining rows look clean even when the
//! poison is still among them (a selection effect: the test's null assumes rows that were not
//! chosen by the test). Instead each finding's excess rows are set against the rows of the
//! quarantine expected to be part of that excess, and what is left is judged at the checked
//! batch's size, with the finding's own threshold.
//!
//! The expectation is the posterior of each quarantined row under the finding's own fitted
//! alternative. For `poison-label-inconsistency` that is the mixture behind its
//! likelihood-ratio test: a label is flipped with probability ε̂ (the maximum-likelihood
//! share), uniformly to another class, so a row whose label the reference model gives
//! probability `p` was flipped with posterior `ε̂ q / (ε̂ q + (1 - ε̂) p)`, `q = (1 - p) /
//! (K - 1)` (the E-step of EM for a two-component mixture; Dempster, Laird & Rubin 1977).
//! Every quarantined row counts, whichever finding put it there. With a weak model even the
//! most surprising rows are often genuine, so a quarantine of the estimated size may hold
//! well under the estimated flips, and the finding then stays.
//! `poison-segment-label-shift` uses the same posterior, at the segment's excess share, over the
//! rows it quarantined (its mean, times their number). `poison-stitched-rows` credits each
//! quarantined row with its posterior of being stitched under that test's mixture, from the
//! row's weight, and is judged from the upper end of the weights' estimate. For the other rate detectors
//! (outliers, duplicates, conflicts, triggers, point masses) a flagged row is part
//! of the excess with probability `excess / flagged` (the share of the flagged rows that the
//! trusted rate does not explain), at the upper end of the excess below.
//!
//! What is left is judged from the upper end of each finding's estimate, not its point
//! estimate: a dropped quarantine has to show that the poison is gone, and on a small batch the
//! estimate is too loose to show it. `poison-label-inconsistency` uses the upper end of its 95 %
//! profile-likelihood interval; the segment test the one-sided 95 % binomial bound on its
//! class's count; the other detectors the one-sided 95 % Poisson bound on their flagged rows,
//! capped at those rows.

use super::{QuarantineRow, row_facts_and_weights};
use crate::error::Result;
use crate::finding::{Finding, Severity};
use crate::lineage::Residual;
use crate::poison::BaselineView;
use crate::source::Rows as BatchRows;

/// One-sided 95 % normal quantile.
const Z95: f64 = 1.644_853_626_951_472_2;

/// The finding whose credit is each quarantined row's posterior of being stitched.
const STITCHED: &str = "poison-stitched-rows";

/// Findings whose credit is the flip posterior of their quarantined rows.
const LABEL_CODES: [&str; 2] = ["poison-label-inconsistency", "poison-segment-label-shift"];

/// The residual of every deny finding that put rows in the quarantine, in finding order.
///
/// # Errors
/// A batch that can no longer be read (the label finding reads the quarantined rows' labels
/// and model probabilities once).
pub fn residuals(
    baseline: &BaselineView<'_>,
    rows: BatchRows<'_>,
    findings: &[Finding],
    quarantine: &[QuarantineRow],
) -> Result<Vec<Residual>> {
    let quarantining =
        |f: &&Finding| f.severity == Severity::Deny && f.evidence.contains_key("rows_quarantined");
    let per_row = findings
        .iter()
        .filter(quarantining)
        .any(|f| LABEL_CODES.contains(&f.code.as_str()) || f.code == STITCHED);
    let read = if per_row {
        let wanted = quarantine
            .iter()
            .filter_map(|q| u32::try_from(q.row).ok())
            .collect();
        row_facts_and_weights(baseline, rows, wanted)?
    } else {
        foldhash::HashMap::default()
    };
    let facts: foldhash::HashMap<u32, super::RowFact> =
        read.iter().map(|(&r, &(f, _))| (r, f)).collect();
    let classes = baseline.poison.as_ref().map_or(2, |p| p.classes.max(2)) as f64;
    let mut out = Vec::new();
    for f in findings.iter().filter(quarantining) {
        let excess = (f.value * f.n as f64).max(0.0);
        let held = f.evidence.get("rows_quarantined").copied().unwrap_or(0.0);
        let (credited, high) = if f.code == "poison-label-inconsistency" {
            let eps = f
                .evidence
                .get("flip_share_ml")
                .copied()
                .unwrap_or(f.value)
                .clamp(0.0, 1.0);
            // Under the directed alternative only labels of its target class were flipped.
            let to = f.evidence.get("flipped_to").map(|&t| t as u16);
            let credited = facts
                .values()
                .filter(|(y, p, inside)| *inside && !p.is_nan() && to.is_none_or(|t| t == *y))
                .map(|&(_, p, _)| flip_posterior(eps, f64::from(p), classes))
                .sum();
            // The upper end of the test's 95 % profile-likelihood interval.
            let high = f
                .evidence
                .get("flip_share_high")
                .map_or(excess, |h| h * f.n as f64);
            (credited, high)
        } else if f.code == STITCHED {
            // Every quarantined row counts with its posterior of being stitched under the
            // test's mixture: a share ε of rows drawn from the product of the marginals, whose
            // density ratio to the trusted model is the row's weight `w`, so the posterior is
            // `ε w / (ε w + 1 − ε)` (the E-step, as for the label flips above).
            let eps = f.value.clamp(0.0, 1.0);
            let credited = read
                .values()
                .filter(|(_, w)| w.is_finite())
                .map(|&(_, w)| {
                    let w = f64::from(w);
                    let num = eps * w;
                    if num + (1.0 - eps) > 0.0 {
                        num / (num + (1.0 - eps))
                    } else {
                        0.0
                    }
                })
                .sum();
            let high = f
                .evidence
                .get("stitched_share_high")
                .map_or(excess, |h| h * f.n as f64);
            (credited, high)
        } else if f.code == "poison-segment-label-shift" {
            // The segment's quarantined rows are labels the model does not back: each is part
            // of the excess with its flip posterior at the segment's excess share.
            let eps = (f.value).clamp(0.0, 1.0);
            let posteriors: Vec<f64> = quarantine
                .iter()
                .filter(|q| q.codes.iter().any(|c| c == &f.code))
                .filter_map(|q| facts.get(&u32::try_from(q.row).ok()?))
                .filter(|(_, p, _)| !p.is_nan())
                .map(|&(_, p, _)| flip_posterior(eps, f64::from(p), classes))
                .collect();
            let credited = if posteriors.is_empty() {
                0.0
            } else {
                held * posteriors.iter().sum::<f64>() / posteriors.len() as f64
            };
            // The class's count in the segment is binomial: its one-sided 95 % upper bound.
            let share = f.evidence.get("class_share").copied().unwrap_or(0.5);
            let sd = (f.n as f64 * share * (1.0 - share)).sqrt();
            (credited, excess + Z95 * sd)
        } else {
            let flagged = f
                .evidence
                .get("rows_flagged")
                .copied()
                .unwrap_or(held)
                .max(held);
            // The flagged count is Poisson-like: its one-sided 95 % upper bound, but no more
            // than the rows flagged (rows the detector did not flag carry none of its
            // evidence, so a quarantine of every flagged row leaves none).
            let high = (excess + Z95 * flagged.sqrt()).min(flagged);
            let credited = if flagged > 0.0 {
                held * (high / flagged).min(1.0)
            } else {
                0.0
            };
            (credited, high)
        };
        out.push(Residual::new(f, credited, high));
    }
    Ok(out)
}

/// Posterior that a label the model gives probability `p` was flipped, when a share `eps` of
/// labels was flipped uniformly to one of the other `classes - 1`.
fn flip_posterior(eps: f64, p: f64, classes: f64) -> f64 {
    let p = p.clamp(1e-9, 1.0);
    let q = (1.0 - p) / (classes - 1.0);
    let flipped = eps * q;
    let kept = (1.0 - eps) * p;
    if flipped + kept > 0.0 {
        flipped / (flipped + kept)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::flip_posterior;

    #[test]
    fn the_posterior_is_the_mixture_responsibility() {
        // eps 0.1, p 0.1, binary: 0.1 * 0.9 / (0.1 * 0.9 + 0.9 * 0.1) = 0.5.
        assert!((flip_posterior(0.1, 0.1, 2.0) - 0.5).abs() < 1e-12);
        // A confident model: a label it gives 1% is a flip with posterior 0.917.
        assert!((flip_posterior(0.1, 0.01, 2.0) - 0.099 / 0.108).abs() < 1e-12);
        assert_eq!(flip_posterior(0.0, 0.2, 2.0), 0.0);
        // Three classes: the flip mass is shared by two wrong classes.
        let three = flip_posterior(0.2, 0.2, 3.0);
        assert!((three - 0.2 * 0.4 / (0.2 * 0.4 + 0.8 * 0.2)).abs() < 1e-12);
    }
}
