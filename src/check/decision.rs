//! The decision rule of DESIGN §5 lives in [`decide`]: a candidate becomes a finding only when
//! its multiplicity-adjusted p-value is below `alpha` (beyond sampling noise), and its severity
//! is the highest level at which one of its effect sizes reaches that level's threshold
//! (practical significance). Effect thresholds are already raised to the simulated clean-batch
//! null where one exists.

pub use crate::detect::{Candidate, Effect};
use crate::finding::{Finding, Severity, num, p_text};

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
    use std::collections::BTreeMap;

    use super::*;
    use crate::finding::Subject;

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
            power: None,
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
