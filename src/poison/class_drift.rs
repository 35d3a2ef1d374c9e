//! `drift-class-conditional`: one class's feature distribution moved while the other classes'
//! did not.
//!
//! **What it detects.** Rows of one class replaced or edited (a clean-label attack that pushes
//! one class's features toward a trigger, or a broken join that affects only positives). An
//! ordinary covariate shift moves every class together and is left to `drift-numeric`; a
//! shift confined to one class changes P(label | features), which is what a model learns.
//!
//! **How.** Per feature and class, the batch's distribution over the pinned codes (percentile
//! bins or top categories) is compared with the trusted one: KS over the bins for numeric
//! features (asymptotic Kolmogorov p-value; Smirnov 1948) and total variation with a
//! chi-square homogeneity test for categorical ones. The effect is the class's distance minus
//! the largest distance among the other classes, so it is near zero when every class moved
//! alike. Classes with fewer than 50 rows on either side are not tested.

use std::collections::BTreeMap;

use super::{PoisonProfile, Scan};
use crate::detect::registry::{CodeInfo, Family, Weight};
use crate::detect::rules::{RateRule, RowRule, RowRules};
use crate::detect::{Candidate, Detectable, Effect, PowerModel, PowerNull};
use crate::finding::{Subject, num};
use crate::poison::BaselineView;
use crate::poison::RowCode;
use crate::stats::{binned, chi2, divergence, ks};

/// `drift-class-conditional`, as the registry describes it, with its policy defaults.
pub const CODE: RowCode = RowCode {
    info: CodeInfo {
        code: "drift-class-conditional",
        family: Family::Row,
        weight: Weight::One,
        joint: false,
        doc: "docs/detectors.md#drift-class-conditional",
        skip_phrase: "the segment, trigger and class-conditional detectors",
        summary: "One class's feature distribution moved while the other classes' did not.",
        why: "A shift confined to one class changes P(label | features), which is what the model learns; clean-label attacks and joins broken for one class look like this.",
        respond: "Compare the class's rows with the trusted ones on the named feature; find which source feeds that class before training.",
    },
    rule: RowRule::Rate(RULE),
};

/// `[checks.drift-class-conditional]` when the policy leaves it out. Thresholds on one class's distance beyond the other classes'.
pub const RULE: RateRule = RateRule::denying(0.1, 0.2);

pub(crate) const MIN_ROWS: u64 = 50;

/// At most one candidate per feature: its most moved class.
#[must_use]
pub fn candidates(
    baseline: &BaselineView<'_>,
    profile: &PoisonProfile,
    scan: &Scan,
    rules: &RowRules,
) -> Vec<Candidate> {
    let rule = rules.rate(CODE.info.code, &RULE);
    let k = profile.classes;
    let names: Vec<String> = baseline.class_names();
    let mut out = Vec::new();
    for (j, name) in profile.features.iter().enumerate() {
        // Codes without the null code (the last one).
        let card = profile.cardinality[j] - 1;
        let categorical = baseline
            .column(name)
            .is_some_and(|c| c.categorical.is_some());
        let column =
            |t: &[u64], c: usize| -> Vec<u64> { (0..card).map(|code| t[code * k + c]).collect() };
        // (distance, p-value, rows, trusted rows) per class.
        let per_class: Vec<Option<(f64, f64, u64, u64)>> = (0..k)
            .map(|c| {
                let a = column(&profile.tables[j], c);
                let b = column(&scan.tables[j], c);
                let (na, nb): (u64, u64) = (a.iter().sum(), b.iter().sum());
                if na < MIN_ROWS || nb < MIN_ROWS {
                    return None;
                }
                let (d, p) = if categorical {
                    (
                        divergence::total_variation(&a, &b),
                        chi2::homogeneity(&a, &b).p_value,
                    )
                } else {
                    let d = binned::ks(&a, &b);
                    (d, ks::asymptotic_p_value(na as f64, nb as f64, d))
                };
                Some((d, p, nb, na))
            })
            .collect();
        let tested: Vec<(usize, (f64, f64, u64, u64))> = per_class
            .iter()
            .enumerate()
            .filter_map(|(c, x)| x.map(|x| (c, x)))
            .collect();
        if tested.len() < 2 {
            continue;
        }
        let Some(&(c, (d, p, n, m))) = tested.iter().max_by(|a, b| a.1.0.total_cmp(&b.1.0)) else {
            continue;
        };
        let others = tested
            .iter()
            .filter(|(o, _)| *o != c)
            .map(|(_, x)| x.0)
            .fold(0.0, f64::max);
        let effect = d - others;
        let class = names.get(c).cloned().unwrap_or_else(|| c.to_string());
        let stat = if categorical { "total variation" } else { "KS" };
        let mut evidence = BTreeMap::new();
        evidence.insert("distance".into(), d);
        evidence.insert("other_classes_max_distance".into(), others);
        out.push(Candidate {
            code: "drift-class-conditional",
            subject: Subject {
                column: Some(name.clone()),
                value: None,
                label: Some(class.clone()),
            },
            p_value: Some(p),
            effects: vec![Effect {
                name: "class_specific_distance",
                value: effect,
                warn: rule.warn,
                deny: rule.deny,
            }],
            fixed: None,
            n,
            n_baseline: m,
            describe: format!(
                "`{name}` moved among rows labelled `{class}` ({stat} {}) while the other classes moved at most {}",
                num(d),
                num(others)
            ),
            evidence,
            tag: None,
            // What the test could have seen: a shift of a numeric feature by its KS path; for
            // a categorical one, the class's values moved between its two most common trusted
            // categories, judged exactly.
            power: if categorical {
                MoveNull::new(
                    column(&profile.tables[j], c),
                    column(&scan.tables[j], c),
                    others,
                )
                .map(|m| PowerNull::Model(std::sync::Arc::new(m)))
            } else {
                Some(PowerNull::ClassDrift {
                    batch: n,
                    baseline: m,
                    others,
                })
            },
        });
    }
    out
}

/// What a categorical feature's class-conditional test could have seen: values of the class
/// moved from its most common trusted category to the next, on top of the batch's own values.
///
/// The test denies when the class's total variation from its trusted mix, less the other
/// classes' largest distance, reaches the deny threshold and the chi-square homogeneity
/// p-value is below the level. Moving `j` values changes both deterministically, so the
/// decision is evaluated exactly at each `j` (the test's own computation), from the move past
/// which it only adds to the shift ([`super::segment::move_start`]); an attacker moving each
/// value of the category with probability `π` moves `Binomial(N, π)` of them
/// ([`crate::stats::power::moved`]). The detectable effect is the share of the class's values
/// moved, `π N / n`.
#[derive(Debug, Clone, PartialEq)]
pub struct MoveNull {
    trusted: Vec<u64>,
    batch: Vec<u64>,
    others: f64,
    from: usize,
    to: usize,
}

impl MoveNull {
    /// The null of a class with trusted counts `trusted` and batch counts `batch` by category,
    /// the other classes' largest distance being `others`; `None` with fewer than two trusted
    /// categories.
    #[must_use]
    pub fn new(trusted: Vec<u64>, batch: Vec<u64>, others: f64) -> Option<Self> {
        let mut order: Vec<usize> = (0..trusted.len()).filter(|&c| trusted[c] > 0).collect();
        order.sort_by(|&a, &b| trusted[b].cmp(&trusted[a]).then(a.cmp(&b)));
        let (&from, &to) = (order.first()?, order.get(1)?);
        Some(Self {
            trusted,
            batch,
            others,
            from,
            to,
        })
    }

    /// The class's batch values.
    #[must_use]
    pub fn rows(&self) -> u64 {
        self.batch.iter().sum()
    }

    fn denies(&self, moved: u64, deny: f64, level: f64) -> bool {
        let mut b = self.batch.clone();
        b[self.from] -= moved;
        b[self.to] += moved;
        // As `decide` applies them: the effect at the threshold, the p-value under the level.
        divergence::total_variation(&self.trusted, &b) - self.others >= deny
            && chi2::homogeneity(&self.trusted, &b).p_value < level
    }

    /// The fewest moved values that deny and the share of the class's values moved at random
    /// from the most common category that is denied with probability `power`.
    #[must_use]
    pub fn detectable(&self, deny: f64, level: f64, power: f64) -> Option<(u64, f64)> {
        let (n, available) = (self.rows(), self.batch[self.from]);
        if n == 0 || available == 0 {
            return None;
        }
        let total = self.trusted.iter().sum::<u64>().max(1) as f64;
        let expect: Vec<f64> = self.trusted.iter().map(|&x| x as f64 / total).collect();
        let batch: Vec<f64> = self.batch.iter().map(|&x| x as f64).collect();
        let start = super::segment::move_start(&batch, &expect, self.from, self.to);
        let (critical, pi) =
            crate::stats::power::moved(available, start, power, |j| self.denies(j, deny, level))?;
        Some((critical, pi * available as f64 / n as f64))
    }
}

impl PowerModel for MoveNull {
    // Stated as the share of the class's values moved between its two most common
    // categories, not as the distance the test measures.
    fn detectable(&self, _: &str, deny: f64, level: f64) -> Detectable {
        Detectable::moved(
            "moved_share",
            MoveNull::detectable(self, deny, level, crate::stats::power::POWER),
            self.rows(),
            level,
        )
    }
}
