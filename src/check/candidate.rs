//! A finding before the decision: its evidence, raw p-value and effect sizes.
//!
//! The decision rule of DESIGN §5 lives in [`decide`]: a candidate becomes a finding only when
//! its multiplicity-adjusted p-value is below `alpha` (beyond sampling noise), and its severity
//! is the highest level at which one of its effect sizes reaches that level's threshold
//! (practical significance). Effect thresholds are already raised to the simulated clean-batch
//! null where one exists.

use std::collections::BTreeMap;

use crate::finding::{Finding, Severity, Subject, num, p_text};

/// An effect size and the thresholds it is compared with.
#[derive(Debug, Clone)]
pub struct Effect {
    /// Statistic name (`ks`, `psi`, `share`, ...).
    pub name: &'static str,
    /// Its value.
    pub value: f64,
    /// Threshold from which it warns.
    pub warn: f64,
    /// Threshold from which it denies.
    pub deny: f64,
}

/// A finding in the making.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Finding code.
    pub code: &'static str,
    /// Subject.
    pub subject: Subject,
    /// Raw p-value; `None` for structural findings that need no test.
    pub p_value: Option<f64>,
    /// Effect sizes, in order of preference for reporting.
    pub effects: Vec<Effect>,
    /// Severity of a structural finding (used when `effects` is empty).
    pub fixed: Option<Severity>,
    /// Batch sample size.
    pub n: u64,
    /// Baseline sample size.
    pub n_baseline: u64,
    /// Start of the message: what changed, in words and numbers.
    pub describe: String,
    /// Everything else computed.
    pub evidence: BTreeMap<String, f64>,
    /// Index of the detector outcome that produced it (rows for the quarantine).
    pub tag: Option<usize>,
}

impl Candidate {
    /// A structural candidate (missing column and the like).
    #[must_use]
    pub fn structural(
        code: &'static str,
        subject: Subject,
        severity: Severity,
        describe: String,
    ) -> Self {
        Self {
            code,
            subject,
            p_value: None,
            effects: Vec::new(),
            fixed: Some(severity),
            n: 0,
            n_baseline: 0,
            describe,
            evidence: BTreeMap::new(),
            tag: None,
        }
    }
}

/// Picks the deciding effect at a severity: the one furthest past its threshold.
fn deciding(effects: &[Effect], severity: Severity) -> Option<&Effect> {
    let thr = |e: &Effect| match severity {
        Severity::Deny => e.deny,
        Severity::Warn => e.warn,
    };
    effects
        .iter()
        .filter(|e| e.value >= thr(e) && e.value > 0.0)
        .max_by(|a, b| {
            let ra = a.value / thr(a).max(f64::MIN_POSITIVE);
            let rb = b.value / thr(b).max(f64::MIN_POSITIVE);
            ra.total_cmp(&rb)
        })
}

/// Turns a candidate with its adjusted p-value into a finding, or nothing.
#[must_use]
pub fn decide(c: Candidate, adjusted_p: Option<f64>, alpha: f64) -> Option<Finding> {
    if let Some(severity) = c.fixed {
        return Some(Finding {
            code: c.code.to_owned(),
            severity,
            subject: c.subject,
            statistic: "presence".to_owned(),
            value: 1.0,
            threshold: 1.0,
            p_value: None,
            n: c.n,
            n_baseline: c.n_baseline,
            message: format!("{}.", c.describe),
            evidence: c.evidence,
            rows: Vec::new(),
            tag: c.tag,
        });
    }
    if adjusted_p.is_some_and(|p| p.is_nan() || p >= alpha) {
        return None;
    }
    let (severity, effect) = if let Some(e) = deciding(&c.effects, Severity::Deny) {
        (Severity::Deny, e)
    } else if let Some(e) = deciding(&c.effects, Severity::Warn) {
        (Severity::Warn, e)
    } else {
        return None;
    };
    let threshold = match severity {
        Severity::Deny => effect.deny,
        Severity::Warn => effect.warn,
    };
    let p = adjusted_p.map_or(String::new(), |p| format!(", adjusted p {}", p_text(p)));
    let message = format!(
        "{}: {} {} reaches the {} threshold {}{}.",
        c.describe,
        effect.name,
        num(effect.value),
        severity.name(),
        num(threshold),
        p
    );
    Some(Finding {
        code: c.code.to_owned(),
        severity,
        subject: c.subject,
        statistic: effect.name.to_owned(),
        value: effect.value,
        threshold,
        p_value: adjusted_p,
        n: c.n,
        n_baseline: c.n_baseline,
        message,
        evidence: c.evidence,
        rows: Vec::new(),
        tag: c.tag,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(value: f64, p: f64) -> (Candidate, Option<f64>) {
        let c = Candidate {
            code: "drift-numeric",
            subject: Subject::column("x"),
            p_value: Some(p),
            effects: vec![Effect {
                name: "ks",
                value,
                warn: 0.05,
                deny: 0.15,
            }],
            fixed: None,
            n: 100,
            n_baseline: 100,
            describe: "x moved".into(),
            evidence: BTreeMap::new(),
            tag: None,
        };
        (c, Some(p))
    }

    #[test]
    fn large_effect_without_significance_does_not_fire() {
        let (c, p) = cand(0.5, 0.2);
        assert!(decide(c, p, 0.01).is_none());
    }

    #[test]
    fn significant_small_effect_does_not_fire() {
        let (c, p) = cand(0.01, 1e-30);
        assert!(decide(c, p, 0.01).is_none());
    }

    #[test]
    fn severity_follows_the_effect_size() {
        let (c, p) = cand(0.1, 1e-6);
        assert_eq!(decide(c, p, 0.01).unwrap().severity, Severity::Warn);
        let (c, p) = cand(0.2, 1e-6);
        let f = decide(c, p, 0.01).unwrap();
        assert_eq!((f.severity, f.threshold), (Severity::Deny, 0.15));
    }
}
