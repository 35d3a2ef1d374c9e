//! `poison-anomalous-rows` at `check` time: how many rows pass the pinned anomaly cuts
//! (the scores and their calibration are in [`super::anomaly`]).
//!
//! The state ([`AnomalyState`]) is three counts, one count per feature, and the
//! [`crate::detect::TOP_ROWS`] highest-scoring rows past each cut (to list them behind a
//! finding without a second read), whatever the rows.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::anomaly::AnomalyProfile;
use super::scan::{Block, Pinned};
use super::{Detector, Found, RowSelector, Scan};
use crate::detect::registry::{CodeInfo, Family, Weight};
use crate::detect::{Accumulator, Candidate, Effect, TopRows, add_counts};
use crate::finding::{Subject, num};
use crate::poison::RowCode;
use crate::detect::rules::{RateRule, RowRule, RowRules};
use crate::stats::proportion::{beta_binomial_upper_tail, beta_binomial_upper_tail_ab};

/// `poison-anomalous-rows`, as the registry describes it, with its policy defaults.
pub const CODE: RowCode = RowCode {
    info: CodeInfo {
        code: "poison-anomalous-rows",
        family: Family::Row,
        weight: Weight::Detector,
        joint: true,
        doc: "docs/detectors.md#poison-anomalous-rows",
        skip_phrase: "",
        summary: "More rows than on the trusted data score as anomalous (histogram outlier score or copula Mahalanobis distance past the trusted 99.5th percentile).",
        why: "Injected outliers and rows stitched together from different rows pull decision boundaries; each value can look normal while the row is implausible.",
        respond: "Inspect the top rows in the report or the quarantine; drop injected rows, or fix the unit or join that produced them.",
    },
    rule: RowRule::Rate(RULE),
};

/// `[checks.poison-anomalous-rows]` when the policy leaves it out. Thresholds on the excess share of anomalous rows.
pub const RULE: RateRule = RateRule::denying(0.005, 0.01);

/// Rows past the anomaly cuts among the rows seen so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalyState {
    /// Rows.
    pub rows: u64,
    /// Rows whose anomaly score passes the trusted cut.
    pub anomalous: u64,
    /// Rows whose extreme-value score passes the trusted cut.
    pub extreme: u64,
    /// Per feature, the extreme rows whose largest excess it holds.
    pub extreme_by_feature: Vec<u64>,
    /// The highest-scoring rows past the anomaly cut.
    pub top_anomalous: TopRows,
    /// The highest-scoring rows past the extreme-value cut.
    pub top_extreme: TopRows,
}

impl Accumulator<Pinned<'_>, Block> for AnomalyState {
    fn new(p: &Pinned<'_>) -> Option<Self> {
        p.profile.anomaly.as_ref().map(|_| Self {
            rows: 0,
            anomalous: 0,
            extreme: 0,
            extreme_by_feature: vec![0; p.profile.features.len()],
            top_anomalous: TopRows::default(),
            top_extreme: TopRows::default(),
        })
    }

    fn update(&mut self, _: &Pinned<'_>, b: &Block) {
        self.rows += b.e.n as u64;
        for (i, (&a, &x)) in b.anomaly.iter().zip(&b.extreme).enumerate() {
            let row = b.first + i as u64;
            if a > 1.0 {
                self.anomalous += 1;
                self.top_anomalous.offer(super::quarantine::squash(a), row);
            }
            if x > 1.0 {
                self.extreme += 1;
                self.top_extreme.offer(super::quarantine::squash(x), row);
            }
        }
        // Shapes are fixed by the profile; a block always fits.
        let _ = add_counts(&mut self.extreme_by_feature, &b.extreme_by_feature);
    }

    fn merge(&mut self, _: &Pinned<'_>, o: Self) -> Result<(), String> {
        add_counts(&mut self.extreme_by_feature, &o.extreme_by_feature)?;
        self.rows += o.rows;
        self.anomalous += o.anomalous;
        self.extreme += o.extreme;
        self.top_anomalous.merge(o.top_anomalous);
        self.top_extreme.merge(o.top_extreme);
        Ok(())
    }

    fn shift_rows(&mut self, by: u64) {
        self.top_anomalous.shift(by);
        self.top_extreme.shift(by);
    }
}

impl Detector for AnomalyState {
    const CODES: &'static [RowCode] = &[CODE];

    /// The anomalous-rows candidates, when anomaly scores were pinned.
    fn finish(&self, p: &Pinned<'_>, scan: &Scan, rules: &RowRules) -> Vec<Found> {
        match &p.profile.anomaly {
            Some(a) => candidates(a, &p.profile.features, scan, rules)
                .into_iter()
                .map(|(c, s)| (c, Some(s)))
                .collect(),
            None => Vec::new(),
        }
    }
}

/// The anomalous-rows candidates of a scanned batch: rows past the anomaly cuts, and rows
/// with a value past every trusted row's extreme-value score.
#[must_use]
pub fn candidates(
    a: &AnomalyProfile,
    features: &[String],
    scan: &Scan,
    rules: &RowRules,
) -> Vec<(Candidate, RowSelector)> {
    let rule = rules.rate(CODE.info.code, &RULE);
    let Some(st) = &scan.states.anomaly else {
        return Vec::new();
    };
    let n = st.rows;
    if n < super::MIN_ROWS {
        return Vec::new();
    }
    let k = st.anomalous;
    let nf = n as f64;
    let r = k as f64 / nf;
    let x0 = a
        .flagged
        .unwrap_or_else(|| (a.rate * a.rows as f64).round() as u64);
    // The trusted rate was estimated from `rows` out-of-fold scores: predictive test.
    let p_value = beta_binomial_upper_tail(k, n, x0, a.rows);
    let mut evidence = BTreeMap::new();
    evidence.insert("anomalous_share".into(), r);
    evidence.insert("trusted_anomalous_share".into(), a.rate);
    evidence.insert("copula_features".into(), a.copula.len() as f64);
    if let Some(l) = a.shrinkage {
        evidence.insert("copula_shrinkage".into(), l);
    }
    let limit = (k as f64 - nf * a.rate).max(0.0).ceil() as usize;
    let mut out = vec![(
        Candidate {
            code: "poison-anomalous-rows",
            subject: Subject::default(),
            p_value: Some(p_value),
            effects: vec![Effect {
                name: "excess_share",
                value: r - a.rate,
                warn: rule.warn,
                deny: rule.deny,
            }],
            fixed: None,
            n,
            n_baseline: a.rows,
            describe: format!(
                "{k} of {n} rows ({}%) score as anomalous against {}% of trusted rows",
                num(100.0 * r),
                num(100.0 * a.rate)
            ),
            evidence,
            tag: None,
            power: Some(crate::detect::CountNull::seen(n, a.rate, x0, a.rows).into()),
        },
        RowSelector::Anomalous { limit },
    )];
    if let Some(cut) = a.cut_extreme {
        let k = st.extreme;
        let m = a.rows.max(1);
        let p0 = 1.0 / (m as f64 + 1.0);
        let r = k as f64 / nf;
        let mut evidence = BTreeMap::new();
        evidence.insert("extreme_share".into(), r);
        evidence.insert("expected_share_at_most".into(), p0);
        evidence.insert("cut_tail_scales".into(), cut);
        let (list, shown) = super::top_features(&st.extreme_by_feature, features, 5, "");
        let more = if shown > 5 {
            format!(" and {} more columns", shown - 5)
        } else {
            String::new()
        };
        out.push((
            Candidate {
                code: "poison-anomalous-rows",
                subject: Subject {
                    value: Some("extreme values".to_owned()),
                    ..Subject::default()
                },
                // Conformal: each fresh row passes the largest leave-one-out score of `m`
                // trusted rows with probability at most 1 / (m + 1); see `loo_extreme`.
                p_value: Some(beta_binomial_upper_tail_ab(k, n, 1.0, m as f64)),
                effects: vec![Effect {
                    name: "excess_share",
                    value: r - p0,
                    warn: rule.warn,
                    deny: rule.deny,
                }],
                fixed: None,
                n,
                n_baseline: a.rows,
                describe: if k == 0 {
                    format!(
                        "no row holds a value further past the trusted extremes than any trusted row does ({} tail scales)",
                        num(cut)
                    )
                } else {
                    format!(
                        "{k} of {n} rows ({}%) hold a value further past the trusted extremes than any of {m} trusted rows does against the rest (over {} tail scales; at most {}% of clean rows do): largest excess in {}{more}",
                        num(100.0 * r),
                        num(cut),
                        num(100.0 * p0),
                        list.join(", ")
                    )
                },
                evidence,
                tag: None,
                power: Some(crate::detect::CountNull {
                    trials: n,
                    base: p0,
                    alpha: 1.0,
                    beta: m as f64,
                    selection: 1.0,
                }.into()),
            },
            RowSelector::Extreme {
                limit: (k as f64 - nf * p0).max(0.0).ceil() as usize,
            },
        ));
    }
    out
}
